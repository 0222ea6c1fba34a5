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
//! for locks are fine-grained (`sqlite_sync::open`). While nothing is
//! written it looks less and less often (up to `IDLE_WAIT_AT_MOST`).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use crate::sqlite_sync;
use crate::{StoreError, StoreResult};

/// How often the log is checkpointed while the database is written.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// The longest wait between two looks while nothing is written: the
/// thread does not wake fifty times a second on an idle server. Short
/// enough that the log cannot outgrow `RESTART_ABOVE_FRAMES` before the
/// first look after the writes resume (a quarter of a second of audit
/// batches at saturation is ~14 MB of log; bench/PROFILE.md).
const IDLE_WAIT_AT_MOST: Duration = Duration::from_millis(250);

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
                let mut wait = CHECKPOINT_EVERY;
                let mut seen = None;
                // Ends when the sender is dropped (`Disconnected`).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    // Whether another connection committed since the last
                    // look (`None`: cannot tell, so checkpoint anyway).
                    let version = data_version(&connection).ok();
                    let written = version.is_none() || version != seen;
                    seen = version;
                    wait = next_wait(wait, written);
                    if !written {
                        continue;
                    }
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

/// Changes whenever another connection commits (SQLite's
/// `data_version`: read from the log's shared index, no disk read).
fn data_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// The wait before the next look: `CHECKPOINT_EVERY` after a write,
/// doubling while nothing is written, up to `IDLE_WAIT_AT_MOST`.
fn next_wait(wait: Duration, written: bool) -> Duration {
    if written {
        CHECKPOINT_EVERY
    } else {
        (wait * 2).min(IDLE_WAIT_AT_MOST)
    }
}

fn run(connection: &Connection, pragma: &str) -> rusqlite::Result<(i64, i64)> {
    connection.query_row(pragma, [], |row| Ok((row.get(1)?, row.get(2)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_database_is_looked_at_less_and_less_often_and_a_write_brings_it_back() {
        let mut wait = CHECKPOINT_EVERY;
        let mut waits = Vec::new();
        for _ in 0..6 {
            wait = next_wait(wait, false);
            waits.push(wait.as_millis());
        }
        assert_eq!(waits, [40, 80, 160, 250, 250, 250]);
        assert_eq!(next_wait(wait, true), CHECKPOINT_EVERY);
    }

    #[test]
    fn another_connections_commit_changes_the_data_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let setup = Connection::open(&path).unwrap();
        setup
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER)")
            .unwrap();
        let watcher = sqlite_sync::open(&path).unwrap();
        let writer = sqlite_sync::open(&path).unwrap();
        let before = data_version(&watcher).unwrap();
        assert_eq!(
            data_version(&watcher).unwrap(),
            before,
            "nothing was written"
        );
        // Its own checkpoint is no write of another connection.
        checkpoint(&watcher).unwrap();
        assert_eq!(data_version(&watcher).unwrap(), before);
        writer.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        assert_ne!(data_version(&watcher).unwrap(), before);
    }
}
