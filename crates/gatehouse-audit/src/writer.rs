//! One task owns the audit sinks and writes records in batches (group
//! commit). A caller that awaits `record` knows its record — and every record
//! enqueued before it — is in the database and the JSON-lines file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_core::AuditEvent;
use gatehouse_store::Store;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Records waiting to be written before new ones apply back-pressure.
const QUEUE_CAPACITY: usize = 8192;
/// Records written in one batch at most (the store writes up to 500 in a
/// single statement).
const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log could not be written: {0}")]
    WriteFailed(String),
    #[error("the audit queue is full")]
    Overloaded,
    #[error("the audit writer has stopped")]
    Stopped,
}

struct Job {
    event: AuditEvent,
    ack: Option<oneshot::Sender<Result<(), AuditError>>>,
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
}

/// Finishes when every `AuditLog` clone is dropped and the queue is drained.
pub struct AuditWriterHandle(JoinHandle<()>);

impl AuditWriterHandle {
    pub async fn wait(self) {
        let _ = self.0.await;
    }
}

/// The JSON-lines shape: the event plus a readable time.
#[derive(Serialize)]
struct FileLine<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a AuditEvent,
}

struct Sinks {
    store: Arc<dyn Store>,
    file: Option<std::fs::File>,
    fsync: bool,
}

impl Sinks {
    async fn write(&mut self, batch: Vec<AuditEvent>) -> Result<(), AuditError> {
        if let Some(file) = &mut self.file {
            let mut buf = Vec::with_capacity(batch.len() * 256);
            for event in &batch {
                let line = FileLine {
                    time: event.ts.to_rfc3339(),
                    event,
                };
                serde_json::to_writer(&mut buf, &line)
                    .map_err(|e| AuditError::WriteFailed(e.to_string()))?;
                buf.push(b'\n');
            }
            // One write per batch: with O_APPEND, lines from several
            // processes sharing the file never interleave within a line.
            file.write_all(&buf)
                .map_err(|e| AuditError::WriteFailed(format!("audit file: {e}")))?;
            if self.fsync {
                file.sync_data()
                    .map_err(|e| AuditError::WriteFailed(format!("audit file sync: {e}")))?;
            }
        }
        self.store
            .append_audit(batch)
            .await
            .map_err(|e| AuditError::WriteFailed(format!("audit store: {e}")))
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| AuditError::WriteFailed(format!("{}: {e}", parent.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(|e| AuditError::WriteFailed(format!("{}: {e}", path.display())))
}

impl AuditLog {
    /// Starts the writer task. `file` is the JSON-lines file (appended to).
    pub fn start(
        store: Arc<dyn Store>,
        file: Option<PathBuf>,
        fsync: bool,
    ) -> Result<(AuditLog, AuditWriterHandle), AuditError> {
        let file = file.as_deref().map(open_append).transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let sinks = Sinks { store, file, fsync };
        let handle = tokio::spawn(run_writer(rx, sinks));
        Ok((AuditLog { tx }, AuditWriterHandle(handle)))
    }

    /// Records `event` and waits until it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job {
                event,
                ack: Some(ack),
            })
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    /// Enqueues `event` without waiting. It is durable no later than any
    /// record enqueued after it and awaited with `record`.
    pub fn enqueue(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.tx
            .try_send(Job { event, ack: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => AuditError::Stopped,
            })
    }
}

async fn run_writer(mut rx: mpsc::Receiver<Job>, mut sinks: Sinks) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        for job in jobs.drain(..) {
            batch.push(job.event);
            acks.extend(job.ack);
        }
        let records = batch.len();
        let result = sinks.write(std::mem::take(&mut batch)).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, records, "audit write failed; the affected calls are refused");
        }
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventBuilder;
    use gatehouse_core::{AuditKind, Outcome, Timestamp};
    use gatehouse_store::{AuditQuery, SqliteStore};

    fn event(n: i64) -> AuditEvent {
        EventBuilder::new(AuditKind::ToolDecision, Outcome::Success, Timestamp(n))
            .tool("read_file")
            .build()
    }

    #[tokio::test]
    async fn awaited_records_are_in_store_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let path = dir.path().join("audit/audit.jsonl");
        let (log, handle) = AuditLog::start(Arc::clone(&store), Some(path.clone()), true).unwrap();
        log.enqueue(event(1)).unwrap();
        log.record(event(2)).await.unwrap();
        // The enqueued record is durable once a later one was acknowledged.
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["tool"], "read_file");
        assert_eq!(lines[1]["time"], "1970-01-01T00:00:00.002Z");
        drop(log);
        handle.wait().await;
    }

    #[tokio::test]
    async fn many_concurrent_records_are_all_written() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (log, handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|n| {
                let log = log.clone();
                tokio::spawn(async move { log.record(event(n)).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        drop(log);
        handle.wait().await;
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 300);
    }

    #[tokio::test]
    async fn a_failing_sink_fails_the_caller() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (log, _handle) = AuditLog::start(store, None, false).unwrap();
        let e = event(5);
        log.record(e.clone()).await.unwrap();
        // The same id again violates the unique key: the write fails and the
        // caller must learn it.
        assert!(matches!(
            log.record(e).await,
            Err(AuditError::WriteFailed(_))
        ));
    }
}
