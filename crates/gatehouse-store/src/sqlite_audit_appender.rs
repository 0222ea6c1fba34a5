//! The audit log's own connection to a SQLite database file, used
//! synchronously by the audit writer's thread.
//!
//! Why not sqlx here: sqlx runs every SQLite connection on a thread of its
//! own and talks to it through channels, so each audit batch cost two
//! thread hand-offs on top of the writer's, and a multi-row INSERT whose
//! text changes with the batch size (a statement prepared again for most
//! batches). The writer already has a thread of its own; owning the
//! connection there makes a batch one transaction of a prepared single-row
//! INSERT, with no hand-off at all (bench/PROFILE.md).

use std::path::Path;

use gatehouse_core::AuditEvent;
use rusqlite::{Connection, params};

use crate::sqlite::{AUDIT_EVENT_COLUMNS, arguments_json, saturating_i64};
use crate::sqlite_sync::{self, unavailable};
use crate::{AuditAppender, AuditCheckpoint, StoreError, StoreResult};

const INSERT_CHECKPOINT: &str =
    "INSERT INTO audit_checkpoints (chain, seq, hash, ts, jws) VALUES (?1, ?2, ?3, ?4, ?5)";

/// One connection to the store's database file, for the audit writer only.
pub struct SqliteAuditAppender {
    connection: Connection,
    /// The single-row INSERT of a record (built once; prepared once, then
    /// taken from the connection's statement cache).
    insert_event: String,
}

impl SqliteAuditAppender {
    /// Opens a connection of its own to the database file the store
    /// opened (`sqlite_sync::open`).
    pub fn open(path: &Path) -> StoreResult<Self> {
        let placeholders: Vec<String> = (1..=AUDIT_EVENT_COLUMNS.split(',').count())
            .map(|n| format!("?{n}"))
            .collect();
        Ok(SqliteAuditAppender {
            connection: sqlite_sync::open(path)?,
            insert_event: format!(
                "INSERT INTO audit_events ({AUDIT_EVENT_COLUMNS}) VALUES ({})",
                placeholders.join(", ")
            ),
        })
    }
}

impl AuditAppender for SqliteAuditAppender {
    fn append(
        &mut self,
        events: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
    ) -> StoreResult<()> {
        if events.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        // Immediate: the write lock is taken at BEGIN, so a busy database
        // waits (busy timeout) there rather than failing half-way.
        let tx = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(store_error)?;
        {
            let mut insert = tx.prepare_cached(&self.insert_event).map_err(store_error)?;
            for event in events {
                let arguments = arguments_json(&event)?;
                let link = event.link.as_ref();
                insert
                    .execute(params![
                        event.id,
                        event.ts.0,
                        event.kind.as_str(),
                        event.tenant,
                        event.human,
                        event.agent,
                        event.credential,
                        event.session,
                        event.source,
                        event.tool,
                        arguments,
                        event.args_sha256,
                        event.approval,
                        event.decision,
                        event.reason,
                        event.outcome.as_str(),
                        event.error,
                        event.latency_us.map(saturating_i64),
                        event.result_bytes.map(saturating_i64),
                        event.request_id,
                        link.map(|l| l.chain.as_str()),
                        link.map(|l| saturating_i64(l.seq)),
                        link.map(|l| l.prev_hash.as_str()),
                        link.map(|l| l.hash.as_str()),
                        event.issuer,
                    ])
                    .map_err(store_error)?;
            }
            let mut insert = tx.prepare_cached(INSERT_CHECKPOINT).map_err(store_error)?;
            for checkpoint in checkpoints {
                insert
                    .execute(params![
                        checkpoint.chain,
                        saturating_i64(checkpoint.seq),
                        checkpoint.hash,
                        checkpoint.ts.0,
                        checkpoint.jws,
                    ])
                    .map_err(store_error)?;
            }
        }
        // Dropped without commit (an error above), the transaction rolls
        // back: a batch is stored whole or not at all.
        tx.commit().map_err(store_error)
    }
}

/// A unique-key violation is a `Conflict`, as sqlx's errors map.
fn store_error(err: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, _) = &err
        && matches!(
            failure.extended_code,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        )
    {
        return StoreError::Conflict;
    }
    unavailable(err)
}
