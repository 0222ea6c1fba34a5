//! The SQLite store: one file, WAL mode, shared safely by a running server
//! and the CLI.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gatehouse_core::{AuditEvent, AuditKind, ChainLink, Outcome, Timestamp};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use crate::generation::CredentialGeneration;
use crate::sqlite_audit_appender::SqliteAuditAppender;
use crate::sqlite_checkpointer::Checkpointer;
use crate::sqlite_sync;
use crate::{
    ApiKeyRecord, AuditAppender, AuditCheckpoint, AuditQuery, AuditRow, ClientRecord,
    PreviousSecret, SigningKeyRecord, Store, StoreError, StoreResult,
};

/// 25 bound values per row; SQLite allows 32766 per statement.
const AUDIT_ROWS_PER_INSERT: usize = 500;

/// Schema migrations, applied in order, each once. The SQL is embedded so the
/// binary needs no files next to it.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_oauth.sql")),
    (
        3,
        include_str!("../migrations/sqlite/0003_authorization.sql"),
    ),
    (4, include_str!("../migrations/sqlite/0004_gating.sql")),
    (5, include_str!("../migrations/sqlite/0005_identity.sql")),
    (
        6,
        include_str!("../migrations/sqlite/0006_signing_key_revocation_and_introspection.sql"),
    ),
    (
        7,
        include_str!("../migrations/sqlite/0007_exact_approval_arguments.sql"),
    ),
    (
        8,
        include_str!("../migrations/sqlite/0008_upstream_tool_pins.sql"),
    ),
    (
        9,
        include_str!("../migrations/sqlite/0009_client_keys_and_used_assertions.sql"),
    ),
    (
        10,
        include_str!("../migrations/sqlite/0010_federated_identities.sql"),
    ),
    (
        11,
        include_str!("../migrations/sqlite/0011_credential_lifecycle.sql"),
    ),
    (
        12,
        include_str!("../migrations/sqlite/0012_audit_chain.sql"),
    ),
    (
        13,
        include_str!("../migrations/sqlite/0013_audit_request_id.sql"),
    ),
    (14, include_str!("../migrations/sqlite/0014_alerts.sql")),
    (
        15,
        include_str!("../migrations/sqlite/0015_client_secret_rotation.sql"),
    ),
    (
        16,
        include_str!("../migrations/sqlite/0016_roles_claims_issued_at.sql"),
    ),
    (
        17,
        include_str!("../migrations/sqlite/0017_audit_checkpoints_by_time.sql"),
    ),
    (
        18,
        include_str!("../migrations/sqlite/0018_approval_human_issuer.sql"),
    ),
    (
        19,
        include_str!("../migrations/sqlite/0019_approvals_by_requester.sql"),
    ),
    (
        20,
        include_str!("../migrations/sqlite/0020_grants_by_client.sql"),
    ),
    (
        21,
        include_str!("../migrations/sqlite/0021_auth_locks_by_end.sql"),
    ),
    (
        22,
        include_str!("../migrations/sqlite/0022_clients_in_sign_in_and_owners.sql"),
    ),
    (
        23,
        include_str!("../migrations/sqlite/0023_audit_issuer.sql"),
    ),
];

/// Versions may leave gaps (a branch numbers its migration ahead of one
/// still in review): a database is newer than this binary only when it has
/// a version above every version listed here.
const NEWEST_MIGRATION: i64 = newest_migration(MIGRATIONS);

pub(crate) const fn newest_migration(migrations: &[(i64, &str)]) -> i64 {
    let mut newest = 0;
    let mut i = 0;
    while i < migrations.len() {
        if migrations[i].0 > newest {
            newest = migrations[i].0;
        }
        i += 1;
    }
    newest
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// The database file (`None`: a private in-memory database). The audit
    /// writer opens a connection of its own to it (`audit_appender`):
    /// always the same connection, so its page cache stays warm from one
    /// batch to the next, used on the writer's own thread.
    path: Option<PathBuf>,
    generation: Arc<CredentialGeneration>,
    /// Checkpoints the write-ahead log off the request path while any
    /// clone of the store lives (a file database only).
    _checkpoints: Option<Arc<Checkpointer>>,
}

/// Empties the write-ahead log into the database and truncates it, so no
/// old page lingers in it. A `TRUNCATE` checkpoint cannot run beside
/// another one (the store's own, every 20 ms) nor while a reader is in
/// the log: it says "busy" then and is tried again, for up to two seconds.
async fn truncate_wal(connection: &mut sqlx::SqliteConnection) -> StoreResult<()> {
    for _ in 0..100 {
        let (busy, _log, _checkpointed): (i64, i64, i64) =
            sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut *connection)
                .await?;
        if busy == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(StoreError::Unavailable(
        "the write-ahead log stayed busy: it could not be truncated after replacing a secret"
            .into(),
    ))
}

/// Moves the credential generation. When the marker can be neither moved
/// nor removed, other processes keep stale caches: logged as an error.
fn bump(generation: &CredentialGeneration) {
    if let Err(e) = generation.bump() {
        tracing::error!(
            error = %e,
            "cannot announce a credential change to other processes: they may keep \
             accepting what it revoked until the next change; restart them"
        );
    }
}

/// See [`SqliteStore::announce_change`].
pub(crate) struct ChangeAnnouncement<'a> {
    store: &'a SqliteStore,
    /// Neither `announce`d nor `nothing_changed`: the write failed, or the
    /// caller's future was dropped while the driver may still be writing.
    pending: bool,
}

/// After a write whose caller went away, the change is announced again
/// this long after (the driver's worker finishes it meanwhile, fsync and
/// busy waits included): a cache that read the database between the first
/// announcement and the commit would otherwise keep the old state under
/// the new generation.
const ANNOUNCE_AGAIN_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(11)];

impl ChangeAnnouncement<'_> {
    /// Announces now (the change is committed).
    pub(crate) fn announce(mut self) {
        self.pending = false;
        self.store.bump_generation();
    }

    /// The write changed nothing: no announcement.
    pub(crate) fn nothing_changed(mut self) {
        self.pending = false;
    }
}

impl Drop for ChangeAnnouncement<'_> {
    fn drop(&mut self) {
        if !self.pending {
            return;
        }
        self.store.bump_generation();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let generation = Arc::clone(&self.store.generation);
            runtime.spawn(async move {
                for wait in ANNOUNCE_AGAIN_AFTER {
                    tokio::time::sleep(wait).await;
                    bump(&generation);
                }
            });
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit of credential state is on stable storage before
            // it is answered: with NORMAL, a power loss or an OS crash could
            // undo the last commits, and with them a redeemed operation
            // token, a used code or a rotated refresh token (single use
            // again after the reboot). Requests read here; they write only
            // rarely (last use at most once a minute per key). The audit
            // writer's own connection keeps NORMAL: `audit.fsync` is its
            // durability setting.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // SQLite checkpoints the log inside the commit that fills it:
            // every thousandth audit write (and the call awaiting it) would
            // wait for the copy and its fsync, several milliseconds. A
            // thread of the store's own does it instead (`Checkpointer`).
            .pragma("wal_autocheckpoint", "0")
            // A log that grew long (a burst) is cut back to this size when
            // it starts over, rather than keeping its largest size on disk.
            .pragma("journal_size_limit", sqlite_sync::JOURNAL_SIZE_LIMIT)
            .foreign_keys(true);
        let mut store = Self::connect(options, 8, CredentialGeneration::for_database(path)).await?;
        store.path = Some(path.to_path_buf());
        store._checkpoints = Some(Arc::new(Checkpointer::start(path)?));
        if store.generation.current().is_none() {
            store.bump_generation();
        }
        Ok(store)
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to `:memory:` is its own database.
        Self::connect(options, 1, CredentialGeneration::in_memory()).await
    }

    async fn connect(
        options: SqliteConnectOptions,
        max_connections: u32,
        generation: CredentialGeneration,
    ) -> StoreResult<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // A connection to a local file does not go stale between uses;
            // pinging it on every acquire cost each query (an audit insert
            // among them) an extra round trip to its thread.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let store = SqliteStore {
            pool,
            path: None,
            generation: Arc::new(generation),
            _checkpoints: None,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A credential change about to be written: announced (the generation
    /// moved) when the returned value is dropped or `announce`d, unless
    /// `nothing_changed` says so. A write whose caller's future is dropped
    /// mid-way (a client that disconnects while its refresh token's reuse
    /// revokes the grant) may still be completed by the driver's worker;
    /// an announcement too many only makes caches read the database again,
    /// one too few would keep a revoked credential accepted everywhere.
    pub(crate) fn announce_change(&self) -> ChangeAnnouncement<'_> {
        ChangeAnnouncement {
            store: self,
            pending: true,
        }
    }

    /// After a committed key change.
    pub(crate) fn bump_generation(&self) {
        bump(&self.generation);
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?;
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(newest) = applied.iter().max()
            && *newest > NEWEST_MIGRATION
        {
            return Err(StoreError::Corrupt(format!(
                "database schema version {newest} is newer than this Gatehouse understands"
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Audit rows ready to bind: each event with its arguments as JSON text.
fn audit_rows(events: Vec<AuditEvent>) -> StoreResult<Vec<(AuditEvent, Option<String>)>> {
    let mut rows = Vec::with_capacity(events.len());
    for mut event in events {
        let arguments = arguments_json(&event)?;
        event.arguments = None;
        rows.push((event, arguments));
    }
    Ok(rows)
}

pub(crate) fn opt_ts(row: &SqliteRow, column: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(Timestamp))
}

fn api_key_from_row(row: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    let scopes = parse_scopes(row.try_get("scopes")?, "api_keys.scopes")?;
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        role: row.try_get("role")?,
        scopes,
        owner: row.try_get("owner")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: opt_ts(row, "expires_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
        last_used_at: opt_ts(row, "last_used_at")?,
        rotated_to: row.try_get("rotated_to")?,
    })
}

fn parse_scopes(text: Option<String>, column: &str) -> StoreResult<Option<Vec<String>>> {
    text.map(|t| {
        serde_json::from_str::<Vec<String>>(&t)
            .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
    })
    .transpose()
}

pub(crate) fn json_list(text: &str, column: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str::<Vec<String>>(text)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn list_json(list: &[String]) -> StoreResult<String> {
    serde_json::to_string(list).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Both columns, or no previous secret.
pub(crate) fn previous_secret(
    hash: Option<String>,
    valid_until: Option<Timestamp>,
) -> Option<PreviousSecret> {
    match (hash, valid_until) {
        (Some(hash), Some(valid_until)) if !hash.is_empty() => {
            Some(PreviousSecret { hash, valid_until })
        }
        _ => None,
    }
}

fn client_from_row(row: &SqliteRow) -> StoreResult<ClientRecord> {
    let secret_hash: String = row.try_get("secret_hash")?;
    Ok(ClientRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        role: row.try_get("role")?,
        scopes: parse_scopes(row.try_get("scopes")?, "oauth_clients.scopes")?,
        // Public clients are stored with an empty hash, which no secret matches.
        secret_hash: Some(secret_hash).filter(|h| !h.is_empty()),
        created_at: Timestamp(row.try_get("created_at")?),
        revoked_at: opt_ts(row, "revoked_at")?,
        redirect_uris: json_list(
            &row.try_get::<String, _>("redirect_uris")?,
            "oauth_clients.redirect_uris",
        )?,
        grant_types: json_list(
            &row.try_get::<String, _>("grant_types")?,
            "oauth_clients.grant_types",
        )?,
        auth_method: row.try_get("auth_method")?,
        registered_by: row.try_get("registered_by")?,
        last_used_at: opt_ts(row, "last_used_at")?,
        may_introspect: row.try_get("may_introspect")?,
        jwks: row.try_get("jwks")?,
        jwks_uri: row.try_get("jwks_uri")?,
        secret_issued_at: opt_ts(row, "secret_issued_at")?,
        previous_secret: previous_secret(
            row.try_get("previous_secret_hash")?,
            opt_ts(row, "previous_secret_valid_until")?,
        ),
        machine_tokens_not_before: opt_ts(row, "machine_tokens_not_before")?,
    })
}

fn audit_from_row(row: &SqliteRow) -> StoreResult<AuditRow> {
    let kind: String = row.try_get("kind")?;
    let outcome: String = row.try_get("outcome")?;
    let arguments: Option<String> = row.try_get("arguments")?;
    let arguments = match arguments {
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("audit_events.arguments: {e}")))?,
        ),
        None => None,
    };
    let latency: Option<i64> = row.try_get("latency_us")?;
    let result_bytes: Option<i64> = row.try_get("result_bytes")?;
    Ok(AuditRow {
        seq: row.try_get("seq")?,
        event: AuditEvent {
            id: row.try_get("id")?,
            ts: Timestamp(row.try_get("ts")?),
            kind: AuditKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown audit kind {kind:?}")))?,
            tenant: row.try_get("tenant")?,
            human: row.try_get("human")?,
            agent: row.try_get("agent")?,
            credential: row.try_get("credential")?,
            issuer: row.try_get("issuer")?,
            session: row.try_get("session")?,
            source: row.try_get("source")?,
            tool: row.try_get("tool")?,
            arguments,
            args_sha256: row.try_get("args_sha256")?,
            approval: row.try_get("approval")?,
            decision: row.try_get("decision")?,
            reason: row.try_get("reason")?,
            outcome: Outcome::parse(&outcome)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown outcome {outcome:?}")))?,
            error: row.try_get("error")?,
            latency_us: latency.map(|v| v.max(0) as u64),
            result_bytes: result_bytes.map(|v| v.max(0) as u64),
            request_id: row.try_get("request_id")?,
            link: audit_link(row)?,
        },
    })
}

/// A record's place in its hash chain; `None` for records written before
/// the chain existed. A row with a chain but no seq or hash reads as seq 0
/// or an empty hash, which `audit verify` reports.
fn audit_link(row: &SqliteRow) -> StoreResult<Option<ChainLink>> {
    let Some(chain) = row.try_get::<Option<String>, _>("chain")? else {
        return Ok(None);
    };
    let seq: Option<i64> = row.try_get("chain_seq")?;
    Ok(Some(ChainLink {
        chain,
        seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
        prev_hash: row
            .try_get::<Option<String>, _>("prev_hash")?
            .unwrap_or_default(),
        hash: row
            .try_get::<Option<String>, _>("hash")?
            .unwrap_or_default(),
    }))
}

fn scopes_json(scopes: &Option<Vec<String>>) -> StoreResult<Option<String>> {
    scopes
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The insert of a signing key (the operator's and the lifecycle's).
pub(crate) fn signing_key_insert(
    key: &SigningKeyRecord,
) -> sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, sealed_pkcs8, public_jwk, created_at, activates_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.kid)
    .bind(&key.sealed_pkcs8)
    .bind(&key.public_jwk)
    .bind(key.created_at.0)
    .bind(key.activates_at.0)
    .bind(key.revoked_at.map(|t| t.0))
}

/// The columns an audit record is inserted into, in the order both of its
/// writers bind them (`audit_insert`, `SqliteAuditAppender`).
pub(crate) const AUDIT_EVENT_COLUMNS: &str = "id, ts, kind, tenant, human, agent, credential, \
     session, source, tool, arguments, args_sha256, approval, decision, reason, outcome, error, \
     latency_us, result_bytes, request_id, chain, chain_seq, prev_hash, hash, issuer";

/// A record's arguments as stored: JSON text.
pub(crate) fn arguments_json(event: &AuditEvent) -> StoreResult<Option<String>> {
    event
        .arguments
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// SQLite integers are signed: a count beyond `i64::MAX` is stored as it.
pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A multi-row INSERT of audit events (with their serialized arguments).
fn audit_insert(rows: Vec<(AuditEvent, Option<String>)>) -> QueryBuilder<sqlx::Sqlite> {
    let mut insert = QueryBuilder::<sqlx::Sqlite>::new(format!(
        "INSERT INTO audit_events ({AUDIT_EVENT_COLUMNS}) "
    ));
    insert.push_values(rows, |mut row, (event, arguments)| {
        row.push_bind(event.id)
            .push_bind(event.ts.0)
            .push_bind(event.kind.as_str())
            .push_bind(event.tenant)
            .push_bind(event.human)
            .push_bind(event.agent)
            .push_bind(event.credential)
            .push_bind(event.session)
            .push_bind(event.source)
            .push_bind(event.tool)
            .push_bind(arguments)
            .push_bind(event.args_sha256)
            .push_bind(event.approval)
            .push_bind(event.decision)
            .push_bind(event.reason)
            .push_bind(event.outcome.as_str())
            .push_bind(event.error)
            .push_bind(event.latency_us.map(saturating_i64))
            .push_bind(event.result_bytes.map(saturating_i64))
            .push_bind(event.request_id)
            .push_bind(event.link.as_ref().map(|l| l.chain.clone()))
            .push_bind(event.link.as_ref().map(|l| saturating_i64(l.seq)))
            .push_bind(event.link.as_ref().map(|l| l.prev_hash.clone()))
            .push_bind(event.link.map(|l| l.hash))
            .push_bind(event.issuer);
    });
    insert
}

const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, name, tenant, role, scopes, owner, secret_hash, \
     created_at, expires_at, revoked_at, last_used_at, rotated_to) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

fn bind_api_key<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    key: &'q ApiKeyRecord,
    scopes: Option<String>,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    query
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.tenant)
        .bind(&key.role)
        .bind(scopes)
        .bind(&key.owner)
        .bind(&key.secret_hash)
        .bind(key.created_at.0)
        .bind(key.expires_at.map(|t| t.0))
        .bind(key.revoked_at.map(|t| t.0))
        .bind(key.last_used_at.map(|t| t.0))
        .bind(&key.rotated_to)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let scopes = scopes_json(&key.scopes)?;
        bind_api_key(sqlx::query(INSERT_API_KEY), key, scopes)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn api_keys_page(&self, after: &str, limit: u32) -> StoreResult<Vec<ApiKeyRecord>> {
        // Keyset paging on the primary key: each page is one index range,
        // however many keys there are.
        let rows = sqlx::query("SELECT * FROM api_keys WHERE id > $1 ORDER BY id LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await?;
        Ok(count.max(0) as u64)
    }

    async fn revoke_api_key(&self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let change = self.announce_change();
        let result =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at.0)
                .bind(id)
                .execute(&self.pool)
                .await?;
        change.announce();
        Ok(result.rows_affected() == 1)
    }

    async fn rotate_api_key(
        &self,
        old_id: &str,
        new_key: &ApiKeyRecord,
        old_valid_until: Timestamp,
    ) -> StoreResult<bool> {
        let change = self.announce_change();
        let scopes = scopes_json(&new_key.scopes)?;
        let mut tx = self.pool.begin().await?;
        // The conditional update is the atomic step: of two concurrent
        // rotations of one key, only one matches `rotated_to IS NULL`.
        let updated = sqlx::query(
            "UPDATE api_keys SET rotated_to = $1, \
             expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $2 ELSE expires_at END \
             WHERE id = $3 AND revoked_at IS NULL AND rotated_to IS NULL",
        )
        .bind(&new_key.id)
        .bind(old_valid_until.0)
        .bind(old_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            tx.rollback().await?;
            change.nothing_changed();
            return Ok(false);
        }
        bind_api_key(sqlx::query(INSERT_API_KEY), new_key, scopes)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        change.announce();
        Ok(true)
    }

    async fn touch_api_key(&self, id: &str, at: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at.0)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn credential_generation(&self) -> Option<u64> {
        self.generation.current()
    }

    async fn insert_client(&self, client: &ClientRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_clients (id, name, tenant, role, scopes, secret_hash, created_at, revoked_at, \
             redirect_uris, grant_types, auth_method, registered_by, last_used_at, may_introspect, \
             jwks, jwks_uri) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.tenant)
        .bind(&client.role)
        .bind(scopes_json(&client.scopes)?)
        .bind(client.secret_hash.as_deref().unwrap_or(""))
        .bind(client.created_at.0)
        .bind(client.revoked_at.map(|t| t.0))
        .bind(list_json(&client.redirect_uris)?)
        .bind(list_json(&client.grant_types)?)
        .bind(&client.auth_method)
        .bind(&client.registered_by)
        .bind(client.last_used_at.map(|t| t.0))
        .bind(client.may_introspect)
        .bind(&client.jwks)
        .bind(&client.jwks_uri)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_client_within_limit(
        &self,
        client: &ClientRecord,
        max: u64,
    ) -> StoreResult<bool> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let result = sqlx::query(
            "INSERT INTO oauth_clients (id, name, tenant, role, scopes, secret_hash, created_at, revoked_at, \
             redirect_uris, grant_types, auth_method, registered_by, last_used_at, jwks, jwks_uri) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $16 \
             WHERE (SELECT COUNT(*) FROM oauth_clients \
                    WHERE registered_by = $12 AND revoked_at IS NULL) < $14",
        )
        .bind(&client.id)
        .bind(&client.name)
        .bind(&client.tenant)
        .bind(&client.role)
        .bind(scopes_json(&client.scopes)?)
        .bind(client.secret_hash.as_deref().unwrap_or(""))
        .bind(client.created_at.0)
        .bind(client.revoked_at.map(|t| t.0))
        .bind(list_json(&client.redirect_uris)?)
        .bind(list_json(&client.grant_types)?)
        .bind(&client.auth_method)
        .bind(&client.registered_by)
        .bind(client.last_used_at.map(|t| t.0))
        .bind(max)
        .bind(&client.jwks)
        .bind(&client.jwks_uri)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn client(&self, id: &str) -> StoreResult<Option<ClientRecord>> {
        let row = sqlx::query("SELECT * FROM oauth_clients WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        let rows = sqlx::query("SELECT * FROM oauth_clients ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(client_from_row).collect()
    }

    async fn revoke_client(&self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let change = self.announce_change();
        let result = sqlx::query(
            "UPDATE oauth_clients SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(at.0)
        .bind(id)
        .execute(&self.pool)
        .await?;
        change.announce();
        Ok(result.rows_affected() == 1)
    }

    async fn rotate_client_secret(
        &self,
        id: &str,
        expected_hash: &str,
        new_hash: &str,
        at: Timestamp,
        old_valid_until: Timestamp,
        machine_tokens_not_before: Option<Timestamp>,
    ) -> StoreResult<bool> {
        if expected_hash.is_empty() {
            return Ok(false);
        }
        let change = self.announce_change();
        // One conditional update: the right-hand sides read the row as it
        // was, so the old hash moves to `previous_secret_hash` as the new
        // one takes its place.
        let result = sqlx::query(
            "UPDATE oauth_clients SET previous_secret_hash = secret_hash, \
             previous_secret_valid_until = $1, secret_hash = $2, secret_issued_at = $3, \
             machine_tokens_not_before = CASE WHEN machine_tokens_not_before IS NULL \
             OR machine_tokens_not_before < $6 THEN $6 ELSE machine_tokens_not_before END \
             WHERE id = $4 AND revoked_at IS NULL AND secret_hash = $5",
        )
        .bind(old_valid_until.0)
        .bind(new_hash)
        .bind(at.0)
        .bind(id)
        .bind(expected_hash)
        .bind(machine_tokens_not_before.map(|t| t.0))
        .execute(&self.pool)
        .await?;
        let rotated = result.rows_affected() == 1;
        if rotated && machine_tokens_not_before.is_some() {
            // Token caches on every instance look at the client again.
            change.announce();
        } else {
            change.nothing_changed();
        }
        Ok(rotated)
    }

    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let change = self.announce_change();
        let mut tx = self.pool.begin().await?;
        // Entries past their token's acceptance protect nothing any more.
        sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(now.0 - crate::REVOCATION_GRACE_MS - crate::TRIM_CLOCK_SKEW_MS)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        change.announce();
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT jti FROM revoked_tokens WHERE expires_at > $1 ORDER BY jti")
                .bind(now.0 - crate::REVOCATION_GRACE_MS)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        let change = self.announce_change();
        signing_key_insert(key).execute(&self.pool).await?;
        change.announce();
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SigningKeyRecord {
                    kid: row.try_get("kid")?,
                    sealed_pkcs8: row.try_get("sealed_pkcs8")?,
                    public_jwk: row.try_get("public_jwk")?,
                    created_at: Timestamp(row.try_get("created_at")?),
                    activates_at: Timestamp(row.try_get("activates_at")?),
                    revoked_at: opt_ts(row, "revoked_at")?,
                })
            })
            .collect()
    }

    async fn revoke_signing_key(&self, kid: &str, at: Timestamp) -> StoreResult<bool> {
        let change = self.announce_change();
        let result = sqlx::query(
            "UPDATE signing_keys SET revoked_at = $1 WHERE kid = $2 AND revoked_at IS NULL",
        )
        .bind(at.0)
        .bind(kid)
        .execute(&self.pool)
        .await?;
        change.announce();
        Ok(result.rows_affected() == 1)
    }

    async fn audit_page(&self, after_seq: i64, limit: u32) -> StoreResult<Vec<AuditRow>> {
        let rows = sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_chain_head(&self, chain: &str) -> StoreResult<Option<(u64, String)>> {
        let row = sqlx::query(
            // No index on the chain: every audit insert would pay for it,
            // while this runs once, at start-up, and finds the instance's
            // own last record near the end of the table.
            "SELECT chain_seq, hash FROM audit_events WHERE chain = $1 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let seq: i64 = row.try_get("chain_seq")?;
        let seq = u64::try_from(seq)
            .map_err(|_| StoreError::Corrupt(format!("audit chain {chain}: seq {seq}")))?;
        Ok(Some((seq, row.try_get("hash")?)))
    }

    async fn append_audit_batch(
        &self,
        events: Vec<AuditEvent>,
        checkpoints: &[AuditCheckpoint],
    ) -> StoreResult<()> {
        if events.is_empty() && checkpoints.is_empty() {
            return Ok(());
        }
        let rows = audit_rows(events)?;
        // One multi-row INSERT per chunk: a round trip per record to the
        // database would dominate the cost of a tool call. A single
        // statement is atomic by itself, so the common case (records only,
        // one chunk) needs no explicit transaction and costs one round trip.
        if checkpoints.is_empty() && rows.len() <= AUDIT_ROWS_PER_INSERT {
            audit_insert(rows).build().execute(&self.pool).await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(AUDIT_ROWS_PER_INSERT).collect();
            audit_insert(chunk).build().execute(&mut *tx).await?;
        }
        for checkpoint in checkpoints {
            sqlx::query(crate::INSERT_AUDIT_CHECKPOINT)
                .bind(&checkpoint.chain)
                .bind(saturating_i64(checkpoint.seq))
                .bind(&checkpoint.hash)
                .bind(checkpoint.ts.0)
                .bind(&checkpoint.jws)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn audit_appender(&self) -> StoreResult<Option<Box<dyn AuditAppender>>> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        Ok(Some(Box::new(SqliteAuditAppender::open(path)?)))
    }

    async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
        let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY chain, seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn audit_checkpoints_since(
        &self,
        since: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>> {
        let rows = sqlx::query(
            "SELECT * FROM audit_checkpoints WHERE ts >= $1 ORDER BY ts, chain, seq LIMIT $2",
        )
        .bind(since.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn audit_last_checkpoint(&self, chain: &str) -> StoreResult<Option<AuditCheckpoint>> {
        let row = sqlx::query(
            "SELECT * FROM audit_checkpoints WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn query_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        let mut sql = QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(since) = query.since {
            sql.push(" AND ts >= ").push_bind(since.0);
        }
        if let Some(after) = query.after_seq {
            sql.push(" AND seq > ").push_bind(after);
        }
        if let Some(principal) = &query.principal {
            sql.push(" AND (human = ")
                .push_bind(principal.clone())
                .push(" OR agent = ")
                .push_bind(principal.clone())
                .push(" OR credential = ")
                .push_bind(principal.clone())
                .push(")");
        }
        if let Some(tenant) = &query.tenant {
            sql.push(" AND tenant = ").push_bind(tenant.clone());
        }
        if let Some(tool) = &query.tool {
            sql.push(" AND tool = ").push_bind(tool.clone());
        }
        if let Some(kind) = query.kind {
            sql.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(outcome) = query.outcome {
            sql.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(request_id) = &query.request_id {
            sql.push(" AND request_id = ").push_bind(request_id.clone());
        }
        if let Some(issuer) = &query.issuer {
            sql.push(" AND issuer = ").push_bind(issuer.clone());
        }
        // Newest first inside the limit, then returned oldest first.
        sql.push(" ORDER BY seq DESC");
        if let Some(limit) = query.limit {
            sql.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = sql.build().fetch_all(&self.pool).await?;
        let mut out = rows
            .iter()
            .map(audit_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    async fn put_secret(&self, tenant: &str, name: &str, value: &str) -> StoreResult<()> {
        let change = self.announce_change();
        sqlx::query(
            "INSERT INTO tenant_secrets (tenant, name, value) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant)
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        // An upstream connection made with the old value ends (a tenant's
        // secret is an upstream credential).
        change.announce();
        Ok(())
    }

    async fn secret(&self, tenant: &str, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM tenant_secrets WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn secret_names(&self, tenant: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM tenant_secrets WHERE tenant = $1 ORDER BY name")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> StoreResult<bool> {
        let change = self.announce_change();
        let result = sqlx::query("DELETE FROM tenant_secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        let deleted = result.rows_affected() == 1;
        if deleted {
            change.announce();
        } else {
            change.nothing_changed();
        }
        Ok(deleted)
    }

    async fn unsealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT tenant, name, value FROM tenant_secrets \
             WHERE substr(value, 1, length($1)) <> $1 ORDER BY tenant, name",
        )
        .bind(gatehouse_core::SEALED_PREFIX)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn sealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT tenant, name, value FROM tenant_secrets \
             WHERE substr(value, 1, length($1)) = $1 ORDER BY tenant, name",
        )
        .bind(gatehouse_core::SEALED_PREFIX)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn replace_secret(
        &self,
        tenant: &str,
        name: &str,
        expected: &str,
        value: &str,
    ) -> StoreResult<bool> {
        // The old value must not linger in the file's free space.
        let mut connection = self.pool.acquire().await?;
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *connection)
            .await?;
        let result = sqlx::query(
            "UPDATE tenant_secrets SET value = $4 WHERE tenant = $1 AND name = $2 AND value = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(expected)
        .bind(value)
        .execute(&mut *connection)
        .await;
        sqlx::query("PRAGMA secure_delete = OFF")
            .execute(&mut *connection)
            .await?;
        // Nor in the write-ahead log.
        if result.as_ref().is_ok_and(|r| r.rows_affected() == 1) {
            truncate_wal(&mut connection).await?;
        }
        Ok(result?.rows_affected() == 1)
    }

    async fn put_setting(&self, tenant: &str, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO runtime_settings (tenant, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn setting(&self, tenant: &str, key: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM runtime_settings WHERE tenant = $1 AND key = $2")
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn settings(&self, tenant: &str) -> StoreResult<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT key, value FROM runtime_settings WHERE tenant = $1 ORDER BY key")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key")?, row.try_get("value")?)))
            .collect()
    }
}

fn checkpoint_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<AuditCheckpoint> {
    let seq: i64 = row.try_get("seq")?;
    Ok(AuditCheckpoint {
        chain: row.try_get("chain")?,
        seq: u64::try_from(seq)
            .map_err(|_| StoreError::Corrupt(format!("audit checkpoint seq {seq}")))?,
        hash: row.try_get("hash")?,
        ts: Timestamp(row.try_get("ts")?),
        jws: row.try_get("jws")?,
    })
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sqlite_authorization_tests.rs"]
mod authorization_tests;
