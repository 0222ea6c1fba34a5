//! Storage for Gatehouse: one `Store` trait, implemented for SQLite (the
//! embedded default) and PostgreSQL (shared by several instances). Every single-use or conditional change is one SQL
//! statement or one transaction, so it stays atomic when several Gatehouse
//! processes (a server and the CLI) share one database.

mod alerts;
mod authorization;
mod gating;
mod generation;
mod lifecycle;
#[cfg(test)]
mod migration_files;
mod pins;
mod postgres;
mod postgres_authorization;
mod postgres_gating;
mod postgres_lifecycle;
mod postgres_pins;
mod records;
mod signing_schedule;
mod sqlite;
mod sqlite_audit_appender;
mod sqlite_authorization;
mod sqlite_checkpointer;
mod sqlite_gating;
mod sqlite_lifecycle;
mod sqlite_pins;
mod sqlite_sync;
#[cfg(test)]
mod store_conformance_tests;
#[cfg(feature = "testing")]
pub mod testing;

use async_trait::async_trait;
use gatehouse_core::{AuditEvent, Timestamp};

/// One audit checkpoint row, on either back end.
pub(crate) const INSERT_AUDIT_CHECKPOINT: &str =
    "INSERT INTO audit_checkpoints (chain, seq, hash, ts, jws) VALUES ($1, $2, $3, $4, $5)";

pub use alerts::{AckOutcome, AlertRecord, AlertStore, DeliveryResult, DeliveryState};
pub use authorization::{
    AuthCodeRecord, AuthorizationStore, CodeRedemption, DeviceDecision, DevicePoll, DeviceRecord,
    DeviceStatus, GrantRecord, LoginCounter, LoginThrottle, NewGrant, RefreshRotation,
    RefreshTokenRecord, RolesChange, UserRecord,
};
pub use gating::{
    AccountSeen, ApprovalCall, ApprovalDecision, ApprovalRecord, ApprovalRequester, ApprovalStatus,
    AuthLock, GatingStore, OperationBinding, TaskGrantRecord,
};
pub use lifecycle::{GRANT_TOUCH_INTERVAL_MS, GrantUse, LifecycleStore, SIGNING_KEY_ROTATED};
pub use pins::{PendingDefinition, PinStore, ToolDefinitionRecord, ToolPinRecord};
pub use postgres::PostgresStore;
pub use records::{
    ApiKeyRecord, AuditCheckpoint, AuditQuery, AuditRow, ClientRecord, PreviousSecret,
    SigningKeyRecord,
};
pub use signing_schedule::{ScheduledKey, SigningKeyState, SigningSchedule, signing_schedule};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with an error. Callers
    /// must fail closed on this.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("a record with this id already exists")]
    Conflict,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err
            && db.is_unique_violation()
        {
            return StoreError::Conflict;
        }
        StoreError::Unavailable(err.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// How long a revoked token stays on the revocation list after it expires.
/// Tokens are accepted up to the verifier's clock-skew leeway past `exp`
/// (at most 60 s), so a revocation dropped at `exp` would let a revoked
/// token back in for that long, once a cache re-reads the list. Issued
/// tokens are remembered as long, so revoking a grant lists them too.
pub const REVOCATION_GRACE_MS: i64 = 60_000;

/// How much longer entries are kept before they are trimmed (revoked and
/// issued tokens, used assertion ids): instances sharing a PostgreSQL
/// database check against their own clocks, and one running ahead would
/// otherwise trim an entry that another still needs (a revoked token
/// accepted again there, an assertion replayed there). Reads use the exact
/// times; only trimming waits.
pub const TRIM_CLOCK_SKEW_MS: i64 = 5 * 60_000;

/// Writes audit batches synchronously, on the thread of the one writer
/// that owns it (see [`Store::audit_appender`]).
pub trait AuditAppender: Send {
    /// Stores the events, then the checkpoints, atomically: all or none.
    fn append(
        &mut self,
        events: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
    ) -> StoreResult<()>;
}

#[async_trait]
pub trait Store:
    AuthorizationStore + GatingStore + PinStore + LifecycleStore + AlertStore + Send + Sync + 'static
{
    // --- API keys -------------------------------------------------------
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Up to `limit` keys whose id sorts after `after` (`""`: from the
    /// first), in id order: every key once, page by page, for a pass over
    /// all keys that should not hold them all at once.
    async fn api_keys_page(&self, after: &str, limit: u32) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn count_api_keys(&self) -> StoreResult<u64>;
    /// Marks the key revoked. Returns false when it does not exist or was
    /// already revoked.
    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> StoreResult<bool>;
    /// Inserts `new_key` and limits the old key's life to `old_valid_until`,
    /// atomically. Returns false (and changes nothing) when the old key does
    /// not exist, is revoked, or was already rotated.
    async fn rotate_api_key(
        &self,
        old_id: &str,
        new_key: &ApiKeyRecord,
        old_valid_until: Timestamp,
    ) -> StoreResult<bool>;
    async fn touch_api_key(&self, id: &str, at: Timestamp) -> StoreResult<()>;
    /// Changes whenever a key is revoked or rotated, by any process sharing
    /// this store. Called on every request, so it must be cheap. `None`
    /// means unknown: callers must then not use cached key records.
    fn credential_generation(&self) -> Option<u64>;

    // --- OAuth clients ---------------------------------------------------
    async fn insert_client(&self, client: &ClientRecord) -> StoreResult<()>;
    /// Inserts the client when fewer than `max` unrevoked clients with its
    /// `registered_by` exist, in one statement; false (and nothing
    /// inserted) when there are that many. `Conflict` when the id exists.
    /// A size cap, not an exact count: on PostgreSQL inserts racing each
    /// other may each see room and pass it by as many.
    async fn insert_client_within_limit(
        &self,
        client: &ClientRecord,
        max: u64,
    ) -> StoreResult<bool>;
    async fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>>;
    /// Returns false when the client does not exist or was already revoked.
    /// Moves the credential generation, like a key revocation.
    async fn revoke_client(&self, id: &str, at: Timestamp) -> StoreResult<bool>;
    /// Replaces a confidential client's secret: `new_hash` becomes its
    /// secret, issued `at`, and the one it replaces is still accepted until
    /// `old_valid_until` (an older previous secret stops at once). With
    /// `machine_tokens_not_before`, the client-credentials tokens it
    /// obtained before then are refused (moves the credential generation).
    /// Only
    /// when the current secret's hash is still `expected_hash`, so of two
    /// concurrent rotations one wins. Returns false (and changes nothing)
    /// when the client does not exist, is revoked, has no secret, or its
    /// secret changed meanwhile.
    async fn rotate_client_secret(
        &self,
        id: &str,
        expected_hash: &str,
        new_hash: &str,
        at: Timestamp,
        old_valid_until: Timestamp,
        machine_tokens_not_before: Option<Timestamp>,
    ) -> StoreResult<bool>;

    /// Adds an access token's id to the revocation list until it would have
    /// expired anyway. Moves the credential generation.
    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Ids of revoked tokens that may still be accepted: not expired, or
    /// expired less than [`REVOCATION_GRACE_MS`] ago.
    async fn revoked_tokens(&self, now: Timestamp) -> StoreResult<Vec<String>>;
    /// A round trip to the database, for readiness probes.
    async fn ping(&self) -> StoreResult<()>;

    // --- Token-signing keys ----------------------------------------------
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// All keys, oldest first (retired and revoked ones included).
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Withdraws a signing key at once. Returns false when it does not
    /// exist or was already revoked. Moves the credential generation, so
    /// every instance drops the key (and tokens it validated) at once.
    async fn revoke_signing_key(&self, kid: &str, at: Timestamp) -> StoreResult<bool>;

    // --- Audit ----------------------------------------------------------
    /// Appends all events atomically: either all are stored or none. Takes
    /// the events by value so they are moved, not copied, into the statement.
    async fn append_audit(&self, events: Vec<AuditEvent>) -> StoreResult<()> {
        self.append_audit_batch(events, &[]).await
    }
    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>>;
    /// Up to `limit` records after `after_seq`, oldest first: the whole
    /// trail page by page (`audit verify`).
    async fn audit_page(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRow>>;
    /// The seq and hash of the last record of `chain`, to go on from.
    async fn audit_chain_head(&self, chain: &str) -> StoreResult<Option<(u64, String)>>;
    async fn append_audit_checkpoint(&self, checkpoint: &AuditCheckpoint) -> StoreResult<()> {
        self.append_audit_batch(Vec::new(), std::slice::from_ref(checkpoint))
            .await
    }
    /// Appends `events` and `checkpoints` in one transaction: all or none.
    /// The audit writer's batches (a checkpoint signs the head of records
    /// that may be in the same batch): stored apart, records could be kept
    /// while the writer, told of the checkpoint's failure, linked the next
    /// batch as if they were not, forking its chain.
    async fn append_audit_batch(
        &self,
        events: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
    ) -> StoreResult<()>;
    /// Every checkpoint, by chain and seq.
    async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>>;
    /// Up to `limit` checkpoints stored with a time at or after `since`,
    /// oldest first (then by chain and seq): what a server witnesses.
    async fn audit_checkpoints_since(
        &self,
        since: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>>;
    /// The checkpoint of `chain` with the highest seq.
    async fn audit_last_checkpoint(&self, chain: &str) -> StoreResult<Option<AuditCheckpoint>>;
    /// A connection of the audit writer's own that it uses synchronously
    /// on its thread, where the store has one (a SQLite database file);
    /// `None`: the writer goes through `append_audit` and
    /// `append_audit_checkpoint`. Opened at start-up (a blocking call).
    fn audit_appender(&self) -> StoreResult<Option<Box<dyn AuditAppender>>> {
        Ok(None)
    }

    // --- Tenant secrets (read by tools at call time) --------------------
    async fn put_secret(&self, tenant: &str, name: &str, value: &str) -> StoreResult<()>;
    async fn secret(&self, tenant: &str, name: &str) -> StoreResult<Option<String>>;
    async fn secret_names(&self, tenant: &str) -> StoreResult<Vec<String>>;
    async fn delete_secret(&self, tenant: &str, name: &str) -> StoreResult<bool>;
    /// Secrets stored before secrets were sealed (a value without
    /// `gatehouse_core::SEALED_PREFIX`), as (tenant, name, value): sealed
    /// at start-up.
    async fn unsealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>>;
    /// The sealed secrets, as (tenant, name, value): a master key that
    /// opens one is the servers' key.
    async fn sealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>>;
    /// Stores `value` only if the stored value is still `expected` (an
    /// operator may have set the secret meanwhile): whether it did.
    async fn replace_secret(
        &self,
        tenant: &str,
        name: &str,
        expected: &str,
        value: &str,
    ) -> StoreResult<bool>;

    // --- Runtime settings (changed by `modify_mcp_config`) ---------------
    async fn put_setting(&self, tenant: &str, key: &str, value: &str) -> StoreResult<()>;
    async fn setting(&self, tenant: &str, key: &str) -> StoreResult<Option<String>>;
    async fn settings(&self, tenant: &str) -> StoreResult<Vec<(String, String)>>;
}
