//! Checkpoints the write-ahead log of a database file, often and in small
//! steps, on a thread of its own.
//!
//! No commit checkpoints the log itself (`wal_autocheckpoint = 0`): the
//! commit that filled it would wait for the copy and its syncs, and so
//! would the call awaiting that audit record. This thread does it instead,
//! every `CHECKPOINT_EVERY`, so each copy is small: copying a second's
//! worth of pages at once took the one core a Gatehouse server may have
//! for tens of milliseconds, the tail of the call latency
//! (bench/PROFILE.md). It uses a connection of its own rather than sqlx's
//! pool: no pool connection is taken fifty times a second, and its waits
//! for locks are fine-grained (`sqlite_sync::open`).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use crate::sqlite_sync;
use crate::{StoreError, StoreResult};

/// How often the log is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Above this many frames in the log (16 MiB of 4 KiB pages) a checkpoint
/// makes it start over (`RESTART`).
///
/// A `PASSIVE` checkpoint copies what it can without waiting for anyone,
/// but under a steady stream of writes the log rarely starts over by
/// itself: that happens only when a write begins with everything copied
/// and no reader in the log, and the next audit batch is usually already
/// there. The log file would grow without bound (2.6 GB after 100 s at
/// saturation: bench/PROFILE.md). So once the log is long, a `RESTART`
/// waits for the readers in it to finish and holds writers back meanwhile
/// (what is left to copy is small: the passive checkpoints copied the
/// rest), and the next write starts the log over. Kept short, the log
/// stays in the page cache and is never cut back (`JOURNAL_SIZE_LIMIT` is
/// larger), so its blocks are rewritten rather than allocated again.
pub(crate) const RESTART_ABOVE_FRAMES: i64 = 4096;

/// Stops its thread when dropped (with the last clone of the store).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path) -> StoreResult<Checkpointer> {
        let connection = sqlite_sync::open(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("gatehouse-wal".into())
            .spawn(move || {
                let mut failing = false;
                // Ends when the sender is dropped (`Disconnected`).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    match checkpoint(&connection) {
                        Ok(_) if failing => {
                            failing = false;
                            tracing::info!("the database's write-ahead log is checkpointed again");
                        }
                        Ok(_) => {}
                        // Once, not fifty times a second.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "cannot checkpoint the database's write-ahead log");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("checkpoint thread: {e}")))?;
        Ok(Checkpointer { _stop: stop })
    }
}

/// One step: a `PASSIVE` checkpoint, and a `RESTART` when the log is long.
/// Returns the frames in the log and how many of them are copied.
pub(crate) fn checkpoint(connection: &Connection) -> rusqlite::Result<(i64, i64)> {
    let (log, checkpointed) = run(connection, "PRAGMA wal_checkpoint(PASSIVE)")?;
    if log > RESTART_ABOVE_FRAMES {
        return run(connection, "PRAGMA wal_checkpoint(RESTART)");
    }
    Ok((log, checkpointed))
}

fn run(connection: &Connection, pragma: &str) -> rusqlite::Result<(i64, i64)> {
    connection.query_row(pragma, [], |row| Ok((row.get(1)?, row.get(2)?)))
}
