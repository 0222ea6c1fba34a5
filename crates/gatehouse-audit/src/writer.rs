//! One task owns the audit sinks and writes records in batches (group
//! commit). A caller that awaits `record` knows its record — and every record
//! enqueued before it — is in the database and the JSON-lines file. The
//! file is written (and synced) by a thread of its own, so a slow disk
//! delays only the records waiting for it, never other tasks. (A thread
//! that lives as long as the log costs less per batch than a hop to
//! Tokio's blocking pool, which the writer would take twice per call.)
//! The file and the database are written at the same time: a batch waits
//! for the slower of the two, not for both in turn.
//!
//! The writer also links every record into the instance's hash chain
//! (`chain.rs`) as it writes it, in the order written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gatehouse_core::AuditEvent;
use gatehouse_store::{AuditCheckpoint, Store};

use crate::chain::Chain;
use crate::observer::{AuditObserver, ObserverSlot};
use crate::rotation::{AuditFile, Rotation};
use crate::syslog::{SyslogSettings, SyslogSink};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Records waiting to be written before new ones apply back-pressure.
const QUEUE_CAPACITY: usize = 8192;
/// Records written in one batch at most (the store writes up to 500 in a
/// single statement).
const MAX_BATCH: usize = 500;
/// How long a record nobody waits for may wait for company before it is
/// written anyway.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log could not be written: {0}")]
    WriteFailed(String),
    #[error("the audit queue is full")]
    Overloaded,
    #[error("the audit writer has stopped")]
    Stopped,
}

type Ack = oneshot::Sender<Result<(), AuditError>>;

/// The chain's durable head: its id, the last seq and its hash.
pub type ChainHead = (String, u64, String);

// Records are nearly every job and the hot path: boxing them would cost an
// allocation per record to save queue space for the rare small variants.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// A record; `ack` is told once it is durable.
    Record { event: AuditEvent, ack: Option<Ack> },
    /// A signed checkpoint, written after the records before it.
    Checkpoint {
        checkpoint: AuditCheckpoint,
        ack: Ack,
    },
    /// Asks for the chain's head once everything before is durable.
    Head(oneshot::Sender<Result<ChainHead, AuditError>>),
}

impl Job {
    /// Whether somebody waits for this job (then the batch is written
    /// without lingering).
    fn awaited(&self) -> bool {
        !matches!(self, Job::Record { ack: None, .. })
    }
}

/// Where and how the log writes.
pub struct AuditOptions {
    /// The JSON-lines file (appended to).
    pub file: Option<PathBuf>,
    /// `sync_data` the file after every batch.
    pub fsync: bool,
    /// The chain the records are linked into.
    pub chain: Chain,
    /// When the file is rotated (`None`: never, as for commands that
    /// append to the server's file).
    pub rotation: Option<Rotation>,
    /// Also send every record to this syslog receiver.
    pub syslog: Option<SyslogSettings>,
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    /// Whether the last batch reached every sink.
    healthy: Arc<AtomicBool>,
    /// Sees every record as it is queued (the alert detectors).
    observer: ObserverSlot,
}

/// See [`AuditLog::queue_probe`].
#[derive(Clone)]
pub struct AuditQueueProbe(mpsc::WeakSender<Job>);

impl AuditQueueProbe {
    /// Records waiting to be written; 0 once the writer has stopped.
    pub fn depth(&self) -> usize {
        self.0
            .upgrade()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }
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

/// A checkpoint's line in the JSON-lines file.
#[derive(Serialize)]
struct CheckpointLine<'a> {
    time: String,
    checkpoint: CheckpointFields<'a>,
}

#[derive(Serialize)]
struct CheckpointFields<'a> {
    chain: &'a str,
    seq: u64,
    hash: &'a str,
    jws: &'a str,
}

struct Sinks {
    store: Arc<dyn Store>,
    /// RFC 5424 messages to a syslog receiver (SIEM).
    syslog: Option<SyslogSink>,
    /// A slow disk or a `sync_data` must never hold up a runtime worker.
    file: Option<FileWriter>,
}

/// One batch of lines for the file thread, and where to say it is written.
type FileJob = (Vec<u8>, oneshot::Sender<Result<(), AuditError>>);

/// The thread that owns the JSON-lines file. It ends when the writer (the
/// only sender) is dropped.
struct FileWriter {
    jobs: std::sync::mpsc::Sender<FileJob>,
}

impl FileWriter {
    fn start(mut file: AuditFile, fsync: bool) -> Result<FileWriter, AuditError> {
        let (jobs, incoming) = std::sync::mpsc::channel::<FileJob>();
        std::thread::Builder::new()
            .name("gatehouse-audit-file".into())
            .spawn(move || {
                for (lines, done) in incoming {
                    let _ = done.send(file.append(&lines, fsync));
                }
            })
            .map_err(|e| AuditError::WriteFailed(format!("audit file thread: {e}")))?;
        Ok(FileWriter { jobs })
    }

    async fn write(&self, lines: Vec<u8>) -> Result<(), AuditError> {
        let stopped = || AuditError::WriteFailed("audit file: the file thread has stopped".into());
        let (done, written) = oneshot::channel();
        self.jobs.send((lines, done)).map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

impl Sinks {
    /// Both sinks hold the batch when this returns `Ok`. The two are
    /// written at the same time. `Err` names whether the store has the
    /// batch (a chain must not go on past records the store lacks).
    async fn write(
        &mut self,
        batch: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
    ) -> Result<(), (AuditError, bool)> {
        let Sinks {
            store,
            syslog,
            file,
        } = self;
        let lines = match file {
            Some(_) => Some(file_lines(&batch, checkpoints).map_err(|e| (e, false))?),
            None => None,
        };
        let to_file = async {
            match (&*file, lines) {
                (Some(file), Some(lines)) if !lines.is_empty() => file.write(lines).await,
                _ => Ok(()),
            }
        };
        let rendered = match syslog {
            Some(syslog) => Some(syslog.render(&batch).map_err(|e| (e, false))?),
            None => None,
        };
        let to_syslog = async {
            match (syslog, rendered) {
                (Some(syslog), Some(rendered)) => syslog.send(rendered).await,
                _ => Ok(()),
            }
        };
        let to_store = async {
            store
                .append_audit(batch)
                .await
                .map_err(|e| AuditError::WriteFailed(format!("audit store: {e}")))?;
            for checkpoint in checkpoints {
                store
                    .append_audit_checkpoint(checkpoint)
                    .await
                    .map_err(|e| AuditError::WriteFailed(format!("audit checkpoint: {e}")))?;
            }
            Ok::<(), AuditError>(())
        };
        let (file, syslog, store) = tokio::join!(to_file, to_syslog, to_store);
        match (file.and(syslog), store) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), Ok(())) => Err((e, true)),
            (_, Err(e)) => Err((e, false)),
        }
    }
}

/// The batch's lines for the JSON-lines file.
fn file_lines(
    batch: &[AuditEvent],
    checkpoints: &[AuditCheckpoint],
) -> Result<Vec<u8>, AuditError> {
    let mut buf = Vec::with_capacity(batch.len() * 384);
    for event in batch {
        let line = FileLine {
            time: event.ts.to_rfc3339(),
            event,
        };
        serde_json::to_writer(&mut buf, &line)
            .map_err(|e| AuditError::WriteFailed(e.to_string()))?;
        buf.push(b'\n');
    }
    for checkpoint in checkpoints {
        let line = CheckpointLine {
            time: checkpoint.ts.to_rfc3339(),
            checkpoint: CheckpointFields {
                chain: &checkpoint.chain,
                seq: checkpoint.seq,
                hash: &checkpoint.hash,
                jws: &checkpoint.jws,
            },
        };
        serde_json::to_writer(&mut buf, &line)
            .map_err(|e| AuditError::WriteFailed(e.to_string()))?;
        buf.push(b'\n');
    }
    Ok(buf)
}

impl AuditLog {
    /// Starts the writer task. `file` is the JSON-lines file (appended to).
    /// The records form a chain of their own (a command's records); a
    /// server continues its instance's chain with [`AuditLog::start_with`].
    pub fn start(
        store: Arc<dyn Store>,
        file: Option<PathBuf>,
        fsync: bool,
    ) -> Result<(AuditLog, AuditWriterHandle), AuditError> {
        AuditLog::start_with(
            store,
            AuditOptions {
                file,
                fsync,
                chain: Chain::for_run(),
                rotation: None,
                syslog: None,
            },
        )
    }

    /// Starts the writer task with these options.
    pub fn start_with(
        store: Arc<dyn Store>,
        options: AuditOptions,
    ) -> Result<(AuditLog, AuditWriterHandle), AuditError> {
        let file = options
            .file
            .as_deref()
            .map(|path| AuditFile::open(path, options.rotation))
            .transpose()?
            .map(|f| FileWriter::start(f, options.fsync))
            .transpose()?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let sinks = Sinks {
            store,
            syslog: options.syslog.map(SyslogSink::new),
            file,
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let handle = tokio::spawn(run_writer(rx, sinks, options.chain, Arc::clone(&healthy)));
        Ok((
            AuditLog {
                tx,
                healthy,
                observer: ObserverSlot::default(),
            },
            AuditWriterHandle(handle),
        ))
    }

    /// The chain's head once every record enqueued before is durable.
    pub async fn durable_head(&self) -> Result<ChainHead, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Head(ack))
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    /// Writes a signed checkpoint after the records enqueued before it.
    pub async fn record_checkpoint(&self, checkpoint: AuditCheckpoint) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Checkpoint { checkpoint, ack })
            .await
            .map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    /// Whether the last batch reached every sink (a sink that is down makes
    /// new requests wait outside: 503 until a batch goes through again).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.tx.is_closed()
    }

    /// Installs the observer that sees every record recorded through this
    /// log and its clones from now on. Once: false if one was installed.
    pub fn set_observer(&self, observer: Arc<dyn AuditObserver>) -> bool {
        self.observer.set(observer)
    }

    /// Whether the writer still takes records (it stops only when every
    /// sender is gone or it panicked).
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Reads the queue's depth (for metrics) without keeping the writer
    /// open: the log still closes when every `AuditLog` is dropped.
    pub fn queue_probe(&self) -> AuditQueueProbe {
        AuditQueueProbe(self.tx.downgrade())
    }

    /// Records `event` and waits until it is durable.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.observer.observe(&event, self);
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Record {
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
        self.observer.observe(&event, self);
        self.tx
            .try_send(Job::Record { event, ack: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => AuditError::Stopped,
            })
    }
}

async fn run_writer(
    mut rx: mpsc::Receiver<Job>,
    mut sinks: Sinks,
    mut chain: Chain,
    healthy: Arc<AtomicBool>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    let mut checkpoints = Vec::new();
    let mut heads = Vec::new();
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        gather_until_awaited(&mut rx, &mut jobs).await;
        // Linked in the order enqueued, which is the order written.
        let before = chain.clone();
        for job in jobs.drain(..) {
            match job {
                Job::Record { mut event, ack } => {
                    chain.link(&mut event);
                    batch.push(event);
                    acks.extend(ack);
                }
                Job::Checkpoint { checkpoint, ack } => {
                    checkpoints.push(checkpoint);
                    acks.push(ack);
                }
                Job::Head(ack) => heads.push(ack),
            }
        }
        let records = batch.len();
        let result = match sinks.write(std::mem::take(&mut batch), &checkpoints).await {
            Ok(()) => Ok(()),
            Err((e, stored)) => {
                tracing::error!(error = %e, records, "audit write failed; the affected calls are refused");
                // Records the store does not have are not part of the
                // chain: the next batch links to the last stored one.
                if !stored {
                    chain = before;
                }
                Err(e)
            }
        };
        healthy.store(result.is_ok(), Ordering::Relaxed);
        checkpoints.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(result.clone());
        }
        for ack in heads.drain(..) {
            let (seq, hash) = chain.head();
            let head = (chain.id().to_string(), seq, hash.to_string());
            let _ = ack.send(result.clone().map(|()| head));
        }
    }
    if let Some(syslog) = &mut sinks.syslog {
        syslog.close().await;
    }
}

/// Records nobody waits for (a request's authentication record) need not be
/// written alone: they wait, at most `LINGER`, for a record somebody awaits
/// (the same request's tool decision, usually microseconds later) and go into
/// its batch: one write to each sink instead of two. Order is kept, so an
/// awaited record still covers everything enqueued before it.
async fn gather_until_awaited(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    let awaited = |jobs: &[Job]| jobs.iter().any(Job::awaited);
    if awaited(jobs) {
        return;
    }
    let deadline = tokio::time::sleep(LINGER);
    tokio::pin!(deadline);
    while !awaited(jobs) && jobs.len() < MAX_BATCH {
        tokio::select! {
            () = &mut deadline => return,
            received = rx.recv_many(jobs, MAX_BATCH - jobs.len()) => {
                // Every sender is gone: write what there is.
                if received == 0 {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Chain, EventBuilder};
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

    /// A record nobody awaits waits for company only so long: it is
    /// written on its own while the log stays open.
    #[tokio::test]
    async fn a_record_nobody_awaits_is_written_on_its_own() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (log, _handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        log.enqueue(event(1)).unwrap();
        let mut written = 0;
        for _ in 0..1000 {
            written = store
                .query_audit(&AuditQuery::default())
                .await
                .unwrap()
                .len();
            if written == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(written, 1, "the enqueued record was never written");
        drop(log);
    }

    /// Closing the log writes what waits, awaited or not.
    #[tokio::test]
    async fn records_waiting_for_company_are_written_at_shutdown() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (log, handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        for n in 0..3 {
            log.enqueue(event(n)).unwrap();
        }
        drop(log);
        handle.wait().await;
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 3);
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

    /// Issue 9 item 16: the file is written on a thread of its own, so a slow
    /// disk (here a FIFO nobody reads yet) stalls only the records waiting
    /// for it, never the other tasks of the runtime — even a runtime with
    /// one thread.
    #[cfg(unix)]
    #[test]
    fn a_stalled_audit_file_does_not_block_a_current_thread_runtime() {
        use std::sync::mpsc as std_mpsc;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // The read end is opened (so the writer's open returns) but read
        // only when told.
        let (drain, drain_now) = std_mpsc::channel::<()>();
        let reader = std::thread::spawn({
            let fifo = fifo.clone();
            move || {
                let mut file = std::fs::File::open(&fifo).unwrap();
                let _ = drain_now.recv();
                let mut all = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut all).unwrap();
                all.len()
            }
        });
        let (progress, progress_rx) = std_mpsc::channel::<&'static str>();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
                let (log, handle) = AuditLog::start(store, Some(fifo), false).unwrap();
                // Larger than a pipe's buffer: the write waits for the reader.
                let big =
                    EventBuilder::new(AuditKind::ToolDecision, Outcome::Success, Timestamp(1))
                        .arguments(serde_json::json!({"blob": "x".repeat(256 * 1024)}))
                        .build();
                let writing = tokio::spawn({
                    let log = log.clone();
                    async move { log.record(big).await }
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = progress.send("another task ran");
                writing.await.unwrap().unwrap();
                let _ = progress.send("the record was written");
                drop(log);
                handle.wait().await;
            });
        });
        assert_eq!(
            progress_rx.recv_timeout(Duration::from_secs(10)),
            Ok("another task ran"),
            "the audit file write blocked the runtime"
        );
        drain.send(()).unwrap();
        assert_eq!(
            progress_rx.recv_timeout(Duration::from_secs(10)),
            Ok("the record was written")
        );
        runtime.join().unwrap();
        assert!(reader.join().unwrap() > 256 * 1024);
    }

    /// Records are linked into the chain as written, in the store and the
    /// file alike; the instance's chain goes on after a restart; a
    /// checkpoint lands after the records before it.
    #[tokio::test]
    async fn records_are_chained_in_store_and_file_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let path = dir.path().join("audit.jsonl");
        let id_file = dir.path().join("audit-chain");
        for run in 0..2 {
            let chain = Chain::for_instance(store.as_ref(), &id_file).await.unwrap();
            let options = AuditOptions {
                file: Some(path.clone()),
                fsync: false,
                chain,
                rotation: None,
                syslog: None,
            };
            let (log, handle) = AuditLog::start_with(Arc::clone(&store), options).unwrap();
            log.enqueue(event(run * 10 + 1)).unwrap();
            log.record(event(run * 10 + 2)).await.unwrap();
            let (chain, seq, hash) = log.durable_head().await.unwrap();
            assert_eq!(seq, 2 * (run as u64 + 1));
            log.record_checkpoint(AuditCheckpoint {
                chain,
                seq,
                hash,
                ts: Timestamp(run),
                jws: "h.p.s".into(),
            })
            .await
            .unwrap();
            drop(log);
            handle.wait().await;
        }
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        let mut verifier = crate::Verifier::from_start();
        for row in &rows {
            verifier.check(&row.event).unwrap();
        }
        assert_eq!(verifier.counts(), (4, 0));
        assert_eq!(verifier.heads().len(), 1, "one chain across restarts");
        assert_eq!(store.audit_checkpoints().await.unwrap().len(), 2);
        // The file holds the same records, chained, and the checkpoint lines.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[2]["checkpoint"]["seq"], 2);
        let events: Vec<AuditEvent> = [0, 1, 3, 4]
            .iter()
            .map(|&i| serde_json::from_value(lines[i].clone()).unwrap())
            .collect();
        let mut verifier = crate::Verifier::from_start();
        for event in &events {
            verifier.check(event).unwrap();
        }
        assert_eq!(events[3].link.as_ref().unwrap().seq, 4);
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
        assert!(!log.is_healthy(), "a failed batch leaves the log unhealthy");
        log.record(event(6)).await.unwrap();
        assert!(
            log.is_healthy(),
            "the next batch that goes through heals it"
        );
    }
}
