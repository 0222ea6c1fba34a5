//! The audit log writes records in batches (group commit). A caller that
//! awaits `record` knows its record — and every record enqueued before it —
//! is in the database and the JSON-lines file.
//!
//! Two parts: a Tokio task gathers the queued records into a batch, and a
//! thread writes it. The task runs on the runtime's workers, so while they
//! are busy with requests, records pile up and go out together: one
//! hand-off to the thread per batch, not per record. The thread does the
//! blocking work itself: it appends the file and, on a SQLite database
//! file, writes through a connection of its own (`Store::audit_appender`),
//! so a batch costs one hand-off and one back, where a task that handed the
//! file to a thread and the insert to sqlx's connection thread cost two
//! round trips more (bench/PROFILE.md). A slow disk or a `sync_data`
//! delays only the records waiting for it, never a runtime worker. What
//! exists only as async code (the PostgreSQL store, a syslog receiver) the
//! thread runs with the runtime's handle (`Handle::block_on`).
//!
//! The writer also links every record into the instance's hash chain
//! (`chain.rs`) as it writes it, in the order written.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_core::AuditEvent;
use gatehouse_store::{AuditAppender, AuditCheckpoint, Store};

use crate::chain::Chain;
use crate::observer::{AuditObserver, ObserverSlot};
use crate::rotation::{AuditFile, Rotation};
use crate::syslog::{Rendered, SyslogSettings, SyslogSink};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// Records waiting to be written before new ones apply back-pressure.
const QUEUE_CAPACITY: usize = 8192;
/// Records written in one batch at most.
const MAX_BATCH: usize = 500;
/// How long a record nobody waits for may wait for company before it is
/// written anyway.
const LINGER: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("the audit log could not be written: {0}")]
    WriteFailed(String),
    #[error("the audit queue is full")]
    Overloaded,
    #[error("the audit writer has stopped")]
    Stopped,
    /// Another process holds the instance's audit chain (the server's lock
    /// file beside its id file is locked): another server runs on this data
    /// directory.
    #[error(
        "another Gatehouse server is running on this data directory (it holds the lock beside \
         the audit chain file {0}); each instance needs a data directory of its own"
    )]
    ChainInUse(String),
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
    /// Records written in one batch, in this order, all or none; `ack` is
    /// told once they are durable.
    Records { events: Vec<AuditEvent>, ack: Ack },
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
pub struct AuditWriterHandle(oneshot::Receiver<()>);

impl AuditWriterHandle {
    pub async fn wait(self) {
        // The thread drops the sender as it ends (or unwinds).
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

/// Where the records are stored.
enum StoreSink {
    /// The writer's own connection, used on its thread (a SQLite file).
    Own(Box<dyn AuditAppender>),
    /// The store's async API, run on the writer's thread with the
    /// runtime's handle (PostgreSQL, an in-memory SQLite database).
    Shared(Arc<dyn Store>),
}

impl StoreSink {
    fn append(
        &mut self,
        batch: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
        runtime: &Handle,
    ) -> Result<(), AuditError> {
        let failed = |what: &str, e: gatehouse_store::StoreError| {
            AuditError::WriteFailed(format!("audit {what}: {e}"))
        };
        match self {
            StoreSink::Own(appender) => appender
                .append(batch, checkpoints)
                .map_err(|e| failed("store", e)),
            StoreSink::Shared(store) => runtime
                .block_on(store.append_audit_batch(batch, checkpoints))
                .map_err(|e| failed("store", e)),
        }
    }

    /// Whether a write that failed may have been stored all the same. A
    /// database across a network can commit and lose the connection before
    /// it answers; the writer's own SQLite connection knows.
    fn may_have_kept_a_failed_write(&self) -> bool {
        matches!(self, StoreSink::Shared(_))
    }

    /// The last record of `chain` the store holds.
    fn stored_head(
        &self,
        chain: &str,
        runtime: &Handle,
    ) -> Result<Option<(u64, String)>, AuditError> {
        let StoreSink::Shared(store) = self else {
            return Err(AuditError::WriteFailed(
                "audit store: the writer's own connection is not asked for its head".into(),
            ));
        };
        runtime
            .block_on(store.audit_chain_head(chain))
            .map_err(|e| AuditError::WriteFailed(format!("audit chain {chain}: {e}")))
    }
}

struct Sinks {
    store: StoreSink,
    /// RFC 5424 messages to a syslog receiver (SIEM).
    syslog: Option<SyslogSink>,
    /// The JSON-lines file.
    file: Option<AuditFile>,
    /// `sync_data` the file after every batch.
    fsync: bool,
    runtime: Handle,
    /// What the last batch a shared store refused owes the file and
    /// syslog, should the store turn out to have kept it.
    owed: Option<Owed>,
}

/// A batch's lines for the file and its messages for syslog.
struct Owed {
    lines: Option<Vec<u8>>,
    rendered: Option<Rendered>,
}

impl Sinks {
    /// Every sink holds the batch when this returns `Ok`. The store is
    /// written first, then the file, then syslog. `Err` names whether the
    /// store has the batch (a chain must not go on past records the store
    /// lacks).
    fn write(
        &mut self,
        batch: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
    ) -> Result<(), (AuditError, bool)> {
        let lines = match self.file {
            Some(_) => Some(file_lines(&batch, checkpoints).map_err(|e| (e, false))?),
            None => None,
        };
        let rendered = match &self.syslog {
            Some(syslog) => Some(syslog.render(&batch).map_err(|e| (e, false))?),
            None => None,
        };
        if let Err(e) = self.store.append(batch, checkpoints, &self.runtime) {
            if self.store.may_have_kept_a_failed_write() {
                self.owed = Some(Owed { lines, rendered });
            }
            return Err((e, false));
        }
        self.deliver(Owed { lines, rendered })
            .map_err(|e| (e, true))
    }

    /// The file's lines and syslog's messages of a batch the store has.
    fn deliver(&mut self, owed: Owed) -> Result<(), AuditError> {
        let to_file = match (&mut self.file, owed.lines) {
            (Some(file), Some(lines)) if !lines.is_empty() => file.append(&lines, self.fsync),
            _ => Ok(()),
        };
        let to_syslog = match (&mut self.syslog, owed.rendered) {
            (Some(syslog), Some(rendered)) => self.runtime.block_on(syslog.send(rendered)),
            _ => Ok(()),
        };
        to_file.and(to_syslog)
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
    /// Starts the writer. `file` is the JSON-lines file (appended to).
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

    /// Starts the writer (its task and its thread) with these options.
    /// Must be called within a Tokio runtime.
    pub fn start_with(
        store: Arc<dyn Store>,
        options: AuditOptions,
    ) -> Result<(AuditLog, AuditWriterHandle), AuditError> {
        let runtime = Handle::try_current()
            .map_err(|e| AuditError::WriteFailed(format!("audit writer: {e}")))?;
        let file = options
            .file
            .as_deref()
            .map(|path| AuditFile::open(path, options.rotation))
            .transpose()?;
        let store = match store.audit_appender() {
            Ok(Some(appender)) => StoreSink::Own(appender),
            Ok(None) => StoreSink::Shared(store),
            Err(e) => return Err(AuditError::WriteFailed(format!("audit store: {e}"))),
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (batches, to_write) = std::sync::mpsc::channel::<Batch>();
        runtime.spawn(gather_batches(rx, batches));
        let sinks = Sinks {
            store,
            syslog: options.syslog.map(SyslogSink::new),
            file,
            fsync: options.fsync,
            runtime,
            owed: None,
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let (finished, finished_rx) = oneshot::channel::<()>();
        let chain = options.chain;
        let thread_healthy = Arc::clone(&healthy);
        std::thread::Builder::new()
            .name("gatehouse-audit".into())
            .spawn(move || {
                let _finished = finished;
                write_batches(to_write, sinks, chain, &thread_healthy);
            })
            .map_err(|e| AuditError::WriteFailed(format!("audit writer thread: {e}")))?;
        Ok((
            AuditLog {
                tx,
                healthy,
                observer: ObserverSlot::default(),
            },
            AuditWriterHandle(finished_rx),
        ))
    }

    /// The chain's head once every record enqueued before is durable.
    pub async fn durable_head(&self) -> Result<ChainHead, AuditError> {
        let (ack, done) = oneshot::channel();
        self.send_and_wait(Job::Head(ack), done).await
    }

    /// Writes a signed checkpoint after the records enqueued before it.
    pub async fn record_checkpoint(&self, checkpoint: AuditCheckpoint) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.send_and_wait(Job::Checkpoint { checkpoint, ack }, done)
            .await
    }

    /// Whether the last batch reached every sink (a sink that is down makes
    /// new requests wait outside: 503 until a batch goes through again).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.is_running()
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
    pub async fn record(&self, mut event: AuditEvent) -> Result<(), AuditError> {
        // Made storable before anyone sees it: observers (the burst
        // detector keys its counts by a record's user name) hold what the
        // sinks hold, not a megabyte a caller typed.
        event.make_storable();
        self.observer.observe(&event, self);
        let (ack, done) = oneshot::channel();
        let job = Job::Record {
            event,
            ack: Some(ack),
        };
        self.send_and_wait(job, done).await
    }

    /// Queues `job` (waiting for room) and waits for the writer's answer.
    async fn send_and_wait<T>(
        &self,
        job: Job,
        done: oneshot::Receiver<Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        self.tx.send(job).await.map_err(|_| AuditError::Stopped)?;
        done.await.map_err(|_| AuditError::Stopped)?
    }

    /// Records `events` in this order, all in one batch (so all or none
    /// of them), and waits until they are durable.
    pub async fn record_all(&self, mut events: Vec<AuditEvent>) -> Result<(), AuditError> {
        for event in &mut events {
            event.make_storable();
            self.observer.observe(event, self);
        }
        let (ack, done) = oneshot::channel();
        self.send_and_wait(Job::Records { events, ack }, done).await
    }

    /// Enqueues `event` without waiting. It is durable no later than any
    /// record enqueued after it and awaited with `record`.
    pub fn enqueue(&self, mut event: AuditEvent) -> Result<(), AuditError> {
        event.make_storable();
        self.observer.observe(&event, self);
        self.tx
            .try_send(Job::Record { event, ack: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => AuditError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => AuditError::Stopped,
            })
    }
}

/// A batch for the thread, and where it says the batch is done.
type Batch = (Vec<Job>, oneshot::Sender<()>);

/// The task: gathers what is queued into a batch, hands it to the thread
/// and waits until it is written before gathering the next (meanwhile the
/// queue fills: the next batch is larger when the disk is slow). Ends when
/// every sender is gone and the queue is drained, or the thread is gone.
async fn gather_batches(mut rx: mpsc::Receiver<Job>, batches: std::sync::mpsc::Sender<Batch>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        gather_until_awaited(&mut rx, &mut jobs).await;
        let (done, written) = oneshot::channel();
        let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
        if batches.send((batch, done)).is_err() {
            return;
        }
        // Err: the thread ended (or panicked) with the batch.
        if written.await.is_err() {
            return;
        }
    }
}

/// The thread: writes each batch, answers its callers. Ends when the task
/// is gone.
fn write_batches(
    batches: std::sync::mpsc::Receiver<Batch>,
    mut sinks: Sinks,
    mut chain: Chain,
    healthy: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    let mut checkpoints = Vec::new();
    let mut heads = Vec::new();
    // After a failed write to a shared store, the chain goes on from what
    // the store holds, read before the next batch is linked: assumed not
    // stored, a batch the database committed before its connection dropped
    // would be followed by records of the same seq numbers, a fork that
    // `audit verify` reports for ever.
    let mut ask_the_store = false;
    // The last seq of the batch the store refused: if the store holds it
    // after all, so must the file and syslog.
    let mut refused_up_to = 0;
    for (mut jobs, done) in batches {
        if ask_the_store {
            match sinks.store.stored_head(chain.id(), &sinks.runtime) {
                Ok(last) => {
                    let owed = sinks.owed.take();
                    if let Some(owed) = owed
                        && last.as_ref().is_some_and(|(seq, _)| *seq == refused_up_to)
                        && let Err(e) = sinks.deliver(owed)
                    {
                        tracing::error!(error = %e, "audit records the store kept after a failed write could not be written to the file or syslog");
                    }
                    chain = chain.resumed_at(last);
                    ask_the_store = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit chain head unknown; the affected calls are refused");
                    healthy.store(false, Ordering::Relaxed);
                    refuse(jobs, &e);
                    let _ = done.send(());
                    continue;
                }
            }
        }
        // Linked in the order enqueued, which is the order written.
        let before = chain.clone();
        for job in jobs.drain(..) {
            match job {
                // Made storable when it was recorded (`record`, `enqueue`).
                Job::Record { mut event, ack } => {
                    chain.link(&mut event);
                    batch.push(event);
                    acks.extend(ack);
                }
                Job::Records { events, ack } => {
                    for mut event in events {
                        chain.link(&mut event);
                        batch.push(event);
                    }
                    acks.push(ack);
                }
                Job::Checkpoint { checkpoint, ack } => {
                    checkpoints.push(checkpoint);
                    acks.push(ack);
                }
                Job::Head(ack) => heads.push(ack),
            }
        }
        let records = batch.len();
        let result = match sinks.write(std::mem::take(&mut batch), &checkpoints) {
            Ok(()) => Ok(()),
            Err((e, stored)) => {
                tracing::error!(error = %e, records, "audit write failed; the affected calls are refused");
                // Records the store does not have are not part of the
                // chain: the next batch links to the last stored one.
                if !stored {
                    refused_up_to = chain.head().0;
                    chain = before;
                    ask_the_store = sinks.store.may_have_kept_a_failed_write();
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
        let _ = done.send(());
    }
    if let Some(syslog) = &mut sinks.syslog {
        sinks.runtime.block_on(syslog.close());
    }
}

/// Answers every job of a batch that cannot be written with `error`.
fn refuse(jobs: Vec<Job>, error: &AuditError) {
    for job in jobs {
        match job {
            Job::Record { ack, .. } => {
                if let Some(ack) = ack {
                    let _ = ack.send(Err(error.clone()));
                }
            }
            Job::Records { ack, .. } | Job::Checkpoint { ack, .. } => {
                let _ = ack.send(Err(error.clone()));
            }
            Job::Head(ack) => {
                let _ = ack.send(Err(error.clone()));
            }
        }
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

    /// Observers (the burst detector keys a table by a record's user name)
    /// see what the sinks keep, not a megabyte a caller typed: a record is
    /// made storable before anyone sees it, whichever way it is recorded.
    #[tokio::test]
    async fn observers_see_records_cut_as_they_are_stored() {
        struct Longest(std::sync::Mutex<usize>);
        impl AuditObserver for Longest {
            fn observe(&self, event: &AuditEvent, _: &AuditLog) {
                let len = event.human.as_deref().map_or(0, str::len);
                let mut longest = self.0.lock().unwrap();
                *longest = (*longest).max(len);
            }
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (log, handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        let longest = Arc::new(Longest(std::sync::Mutex::new(0)));
        assert!(log.set_observer(longest.clone()));
        let long = |n| {
            EventBuilder::new(AuditKind::Authentication, Outcome::Failure, Timestamp(n))
                .human(&"x".repeat(100_000))
                .build()
        };
        log.enqueue(long(1)).unwrap();
        log.record(long(2)).await.unwrap();
        log.record_all(vec![long(3), long(4)]).await.unwrap();
        let seen = *longest.0.lock().unwrap();
        assert!(
            seen > 0 && seen < gatehouse_core::MAX_RECORDED_TEXT_BYTES + 64,
            "an observer saw {seen} bytes"
        );
        // Cut once: what is stored is what the observer saw.
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(rows.len(), 4);
        for row in rows {
            assert_eq!(row.event.human.as_deref().map_or(0, str::len), seen);
        }
        drop(log);
        handle.wait().await;
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
            let seq = two_records_and_a_checkpoint(&log, run * 10).await;
            assert_eq!(seq, 2 * (run as u64 + 1));
            drop(log);
            handle.wait().await;
        }
        let verifier = verified(store.as_ref()).await;
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
        a_failing_store_fails_the_caller(store).await;
    }

    /// On a database file the writer stores through a connection of its
    /// own (`Store::audit_appender`): the same records, the same chain,
    /// the same refusal of a batch the store rejects.
    #[tokio::test]
    async fn on_a_database_file_the_writer_uses_its_own_connection() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("g.db")).await.unwrap());
        assert!(store.audit_appender().unwrap().is_some());
        let (log, handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        two_records_and_a_checkpoint(&log, 0).await;
        drop(log);
        handle.wait().await;
        assert_eq!(verified(store.as_ref()).await.counts(), (2, 0));
        assert_eq!(store.audit_checkpoints().await.unwrap().len(), 1);
        a_failing_store_fails_the_caller(store).await;
    }

    async fn a_failing_store_fails_the_caller(store: Arc<dyn Store>) {
        let (log, _handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
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
        // The refused record took no place in the chain: no gap after it.
        verified(store.as_ref()).await;
    }

    /// A database that commits a batch and loses the connection before it
    /// answers: the writer refuses the batch's calls, and the next batch
    /// goes on from what the store holds rather than taking the same seq
    /// numbers again (a fork `audit verify` would report for ever).
    #[tokio::test]
    async fn a_batch_kept_whose_answer_was_lost_is_not_linked_over() {
        let lost = Arc::new(gatehouse_store::testing::AuditAnswerLost::new(2));
        let store: Arc<dyn Store> = lost.clone();
        let (log, handle) = AuditLog::start(store, None, false).unwrap();
        log.record(event(1)).await.unwrap();
        assert!(log.record(event(2)).await.is_err());
        log.record(event(3)).await.unwrap();
        drop(log);
        handle.wait().await;
        let kept = lost.kept();
        let seqs: Vec<u64> = kept.iter().map(|e| e.link.as_ref().unwrap().seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let mut verifier = crate::Verifier::from_start();
        for event in &kept {
            verifier.check(event).unwrap();
        }
    }

    /// The same, with a JSON-lines file: the batch the store kept is
    /// written to the file too, so the file's chain has no gap either.
    #[tokio::test]
    async fn a_batch_kept_whose_answer_was_lost_reaches_the_file_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let lost = Arc::new(gatehouse_store::testing::AuditAnswerLost::new(2));
        let store: Arc<dyn Store> = lost.clone();
        let (log, handle) = AuditLog::start(store, Some(path.clone()), false).unwrap();
        log.record(event(1)).await.unwrap();
        assert!(log.record(event(2)).await.is_err());
        log.record(event(3)).await.unwrap();
        drop(log);
        handle.wait().await;
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<u64> = text
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["link"]["seq"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3], "{text}");
    }

    /// Records written together land next to each other, in their order,
    /// or not at all: one that the store refuses takes the other with it.
    #[tokio::test]
    async fn records_written_together_are_written_all_or_none() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (log, handle) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        let stored = event(1);
        log.record(stored.clone()).await.unwrap();
        log.record_all(vec![event(2), event(3)]).await.unwrap();
        // The second one's id is taken: neither goes in, and the caller learns it.
        let refused = log.record_all(vec![event(4), stored]).await;
        assert!(matches!(refused, Err(AuditError::WriteFailed(_))));
        drop(log);
        handle.wait().await;
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        let times: Vec<i64> = rows.iter().map(|r| r.event.ts.0).collect();
        assert_eq!(times, [1, 2, 3]);
        let seqs: Vec<u64> = rows
            .iter()
            .map(|r| r.event.link.as_ref().unwrap().seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
        verified(store.as_ref()).await;
    }

    /// An enqueued and an awaited record (`ts` after `base`), then a
    /// checkpoint of the durable head; returns the head's seq.
    async fn two_records_and_a_checkpoint(log: &AuditLog, base: i64) -> u64 {
        log.enqueue(event(base + 1)).unwrap();
        log.record(event(base + 2)).await.unwrap();
        let (chain, seq, hash) = log.durable_head().await.unwrap();
        log.record_checkpoint(AuditCheckpoint {
            chain,
            seq,
            hash,
            ts: Timestamp(base + 3),
            jws: "h.p.s".into(),
        })
        .await
        .unwrap();
        seq
    }

    /// Checks every stored record's link (panics at the first bad one).
    async fn verified(store: &dyn Store) -> crate::Verifier {
        let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
        let mut verifier = crate::Verifier::from_start();
        for row in &rows {
            verifier.check(&row.event).unwrap();
        }
        verifier
    }
}
