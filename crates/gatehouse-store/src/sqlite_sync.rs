//! Connections to the SQLite database file that threads of the store own
//! and use synchronously (rusqlite): the audit writer's
//! (`sqlite_audit_appender.rs`) and the checkpointer's
//! (`sqlite_checkpointer.rs`). rusqlite links the same bundled SQLite as
//! sqlx (one `libsqlite3-sys`), so these connections and sqlx's pool see
//! the same locks on the same file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::{StoreError, StoreResult};

/// Opens the database file the store opened (and migrated), with the
/// settings of the store's own connections: WAL (a property of the file,
/// checked), `synchronous = NORMAL`, no checkpoint inside a commit, the
/// write-ahead log cut back to `JOURNAL_SIZE_LIMIT` when it starts over,
/// and a fine-grained wait for locks (`wait_for_lock`).
pub(crate) fn open(path: &Path) -> StoreResult<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unavailable)?;
    connection
        .busy_handler(Some(wait_for_lock))
        .map_err(unavailable)?;
    for (pragma, value) in [
        ("synchronous", "NORMAL"),
        ("wal_autocheckpoint", "0"),
        ("journal_size_limit", JOURNAL_SIZE_LIMIT),
        ("foreign_keys", "ON"),
    ] {
        connection
            .pragma_update(None, pragma, value)
            .map_err(unavailable)?;
    }
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(unavailable)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "the database's journal mode is {mode}, not WAL"
        )));
    }
    Ok(connection)
}

/// What a write-ahead log that grew longer is cut back to when it starts
/// over (bytes; the store's pool uses the same).
pub(crate) const JOURNAL_SIZE_LIMIT: &str = "33554432";

/// SQLite's own busy timeout sleeps 1, 2, 5, 10 … ms between tries: an
/// audit batch held back for 200 µs by a checkpoint that holds writers back
/// (`RESTART`) would wait a millisecond or more, each time, and so would
/// the calls waiting for it. Here: a try every 100 µs for the first 10 ms,
/// then every millisecond, for about 10 s in all (the pool's busy timeout).
fn wait_for_lock(tries: i32) -> bool {
    let pause = match tries {
        0..100 => Duration::from_micros(100),
        100..10_090 => Duration::from_millis(1),
        _ => return false,
    };
    std::thread::sleep(pause);
    true
}

pub(crate) fn unavailable(err: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("database: {err}"))
}
