//! The PostgreSQL store, for several Gatehouse instances behind a load
//! balancer. Runs at READ COMMITTED: every single-use or conditional change
//! is one conditional statement (PostgreSQL re-checks the WHERE clause of an
//! UPDATE/DELETE against the newest row version after waiting for a
//! concurrent writer), or a transaction that locks the row it depends on.
//!
//! Credential changes bump a one-row counter in the same transaction and
//! `NOTIFY gatehouse_credentials`; each store follows the counter with a
//! `LISTEN` connection, so `credential_generation()` is an atomic load.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatehouse_core::{AuditEvent, AuditKind, ChainLink, Outcome, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, QueryBuilder, Row};
use tokio::task::JoinHandle;

use crate::sqlite::{json_list, list_json, newest_migration, previous_secret};
use crate::{
    ApiKeyRecord, AuditCheckpoint, AuditQuery, AuditRow, ClientRecord, SigningKeyRecord, Store,
    StoreError, StoreResult,
};

/// Schema migrations, applied in order, each once, embedded in the binary.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_initial.sql")),
    (2, include_str!("../migrations/postgres/0002_oauth.sql")),
    (
        3,
        include_str!("../migrations/postgres/0003_authorization.sql"),
    ),
    (4, include_str!("../migrations/postgres/0004_gating.sql")),
    (5, include_str!("../migrations/postgres/0005_identity.sql")),
    (
        6,
        include_str!("../migrations/postgres/0006_signing_key_revocation_and_introspection.sql"),
    ),
    (
        7,
        include_str!("../migrations/postgres/0007_exact_approval_arguments.sql"),
    ),
    (
        8,
        include_str!("../migrations/postgres/0008_upstream_tool_pins.sql"),
    ),
    (
        9,
        include_str!("../migrations/postgres/0009_client_keys_and_used_assertions.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_federated_identities.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_credential_lifecycle.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_audit_chain.sql"),
    ),
    (
        13,
        include_str!("../migrations/postgres/0013_audit_request_id.sql"),
    ),
    (14, include_str!("../migrations/postgres/0014_alerts.sql")),
    (
        15,
        include_str!("../migrations/postgres/0015_client_secret_rotation.sql"),
    ),
    (
        16,
        include_str!("../migrations/postgres/0016_roles_claims_issued_at.sql"),
    ),
    (
        17,
        include_str!("../migrations/postgres/0017_audit_checkpoints_by_time.sql"),
    ),
    (
        18,
        include_str!("../migrations/postgres/0018_approval_human_issuer.sql"),
    ),
    (
        19,
        include_str!("../migrations/postgres/0019_approvals_by_requester.sql"),
    ),
    (
        20,
        include_str!("../migrations/postgres/0020_grants_by_client.sql"),
    ),
    (
        21,
        include_str!("../migrations/postgres/0021_auth_locks_by_end.sql"),
    ),
    (
        22,
        include_str!("../migrations/postgres/0022_clients_in_sign_in_and_owners.sql"),
    ),
    (
        23,
        include_str!("../migrations/postgres/0023_audit_issuer.sql"),
    ),
];

/// See `sqlite::NEWEST_MIGRATION`: versions may leave gaps.
const NEWEST_MIGRATION: i64 = newest_migration(MIGRATIONS);

/// 25 bound values per row; PostgreSQL allows 65535 per statement.
const AUDIT_ROWS_PER_INSERT: usize = 2_000;

/// The channel every instance listens on for credential changes.
const CHANNEL: &str = "gatehouse_credentials";

/// First half of the advisory lock key that serializes migrations (the
/// second half is the schema), so instances starting together do not race.
const MIGRATION_LOCK: i32 = 0x6761_7465; // "gate"

/// How long the listener may stay silent before it re-reads the counter;
/// this also detects a connection that died without a word.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A re-read slower than this counts as a lost listener.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// How long after the listener last read the counter it is trusted. A
/// connection that died without a word (a partition) is otherwise noticed
/// only when the next read times out, `HEARTBEAT + HEARTBEAT_TIMEOUT` later,
/// and revocations made meanwhile on other instances would be missed.
const TRUSTED_FOR: Duration = Duration::from_secs(2);

/// The generation as last seen by this store's listener. 0 means unknown:
/// the counter in the database starts at 1 and only grows.
#[derive(Debug)]
struct GenerationState {
    value: AtomicU64,
    /// Backend pid of the listening connection (0 while down); lets tests
    /// cut the connection.
    listener_pid: AtomicI32,
    /// When the listener last read the counter, in milliseconds since
    /// `started` (monotonic).
    confirmed_ms: AtomicU64,
    started: Instant,
    /// The highest value ever seen: caches may hold entries stamped with
    /// it, so the counter must never again take a value at or below it.
    highest: AtomicU64,
}

impl Default for GenerationState {
    fn default() -> Self {
        GenerationState {
            value: AtomicU64::new(0),
            listener_pid: AtomicI32::new(0),
            confirmed_ms: AtomicU64::new(0),
            started: Instant::now(),
            highest: AtomicU64::new(0),
        }
    }
}

impl GenerationState {
    fn current(&self) -> Option<u64> {
        self.current_at(Instant::now())
    }

    /// Unknown also when the listener has not read the counter within
    /// `TRUSTED_FOR`: it may be cut off without knowing it yet.
    fn current_at(&self, now: Instant) -> Option<u64> {
        let value = Some(self.value.load(Ordering::SeqCst)).filter(|v| *v != 0)?;
        let confirmed = self.confirmed_ms.load(Ordering::SeqCst);
        let age = self.millis_at(now).saturating_sub(confirmed);
        (u128::from(age) <= TRUSTED_FOR.as_millis()).then_some(value)
    }

    fn millis_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// The listener read the counter (it is connected and was answered).
    fn confirm_at(&self, at: Instant) {
        self.confirmed_ms
            .store(self.millis_at(at), Ordering::SeqCst);
    }

    fn set_unknown(&self) {
        self.value.store(0, Ordering::SeqCst);
        self.listener_pid.store(0, Ordering::SeqCst);
    }

    /// Raises a known generation; leaves an unknown one unknown, because
    /// only the listener knows whether it missed changes.
    fn advance(&self, seen: i64) {
        let seen = u64::try_from(seen).unwrap_or(0);
        self.highest.fetch_max(seen, Ordering::SeqCst);
        let _ = self
            .value
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |current| {
                (current != 0 && seen > current).then_some(seen)
            });
    }

    /// The listener is (back) up and has read the counter after LISTEN.
    fn resume(&self, value: i64, pid: i32, at: Instant) {
        let value = u64::try_from(value).unwrap_or(0);
        self.highest.fetch_max(value, Ordering::SeqCst);
        self.listener_pid.store(pid, Ordering::SeqCst);
        self.confirm_at(at);
        self.value.store(value, Ordering::SeqCst);
    }

    /// The highest value seen so far. Taken before a read of the counter:
    /// every value seen was committed, so a read that starts later and
    /// returns less means the counter went back (a failover that lost
    /// commits, a restored backup).
    fn highest(&self) -> i64 {
        i64::try_from(self.highest.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
    }
}

/// Stops the listener task when the last clone of the store is dropped.
#[derive(Debug)]
struct ListenerTask(JoinHandle<()>);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(crate) pool: PgPool,
    generation: Arc<GenerationState>,
    _listener: Arc<ListenerTask>,
}

impl PostgresStore {
    /// Connects, brings the schema up to date and starts following
    /// credential changes. Needs a tokio runtime.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?).await
    }

    /// Like [`PostgresStore::connect`], with options built by the caller
    /// (for instance a `search_path` to keep Gatehouse in its own schema).
    pub async fn connect_with(options: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        migrate(&pool).await?;
        let generation = Arc::new(GenerationState::default());
        // Subscribe before returning, so a fresh store knows its generation.
        let listener = subscribe(&options, &generation).await?;
        let task = tokio::spawn(follow_generation(
            options,
            Arc::clone(&generation),
            listener,
        ));
        Ok(PostgresStore {
            pool,
            generation,
            _listener: Arc::new(ListenerTask(task)),
        })
    }

    #[cfg(test)]
    pub(crate) fn listener_pid(&self) -> i32 {
        self.generation.listener_pid.load(Ordering::SeqCst)
    }

    /// Called after a transaction that bumped the counter committed: this
    /// store sees its own change at once, before the NOTIFY comes back.
    pub(crate) fn note_bump(&self, value: i64) {
        self.generation.advance(value);
    }
}

/// Audit rows ready to bind: each event with its arguments as JSON text.
fn audit_rows(events: Vec<AuditEvent>) -> StoreResult<Vec<(AuditEvent, Option<String>)>> {
    let mut rows = Vec::with_capacity(events.len());
    for mut event in events {
        let arguments = event
            .arguments
            .take()
            .map(|a| serde_json::to_string(&a))
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        rows.push((event, arguments));
    }
    Ok(rows)
}

async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    // Held until commit: a second instance waits here, then finds the
    // migrations applied. Keyed by schema, so schemas do not wait on each other.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
        .execute(&mut *tx)
        .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(&mut *tx)
        .await?;
    if let Some(newest) = applied.iter().max()
        && *newest > NEWEST_MIGRATION
    {
        return Err(StoreError::Corrupt(format!(
            "database schema version {newest} is newer than this Gatehouse understands"
        )));
    }
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
    tx.commit().await?;
    Ok(())
}

/// Bumps the credential counter inside the caller's transaction and queues
/// the NOTIFY, which PostgreSQL delivers only if the transaction commits.
/// Call it last: the counter row stays locked until commit.
pub(crate) async fn bump_generation(conn: &mut PgConnection) -> StoreResult<i64> {
    let value: i64 = sqlx::query_scalar(
        "UPDATE credential_generation SET value = value + 1 WHERE id RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(value.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(value)
}

/// Opens a listening connection and reads the counter after LISTEN, so no
/// change can fall between the two. A fresh one-connection pool each time,
/// so a connection that died silently is never handed back.
async fn subscribe(
    options: &PgConnectOptions,
    state: &GenerationState,
) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    // A lost connection is handled here (by starting over), not inside.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    let highest = state.highest();
    let row = sqlx::query("SELECT value, pg_backend_pid() AS pid FROM credential_generation")
        .fetch_one(&mut listener)
        .await?;
    let mut value: i64 = row.try_get("value")?;
    if value < highest {
        // Caches here (and on other instances) hold entries stamped with
        // values the counter would reach again, and would trust them after
        // the revocations that bring it there. Above all of them, and told.
        tracing::warn!(
            read = value,
            highest,
            "the credential counter went back (a failover or a restored database?); moving it above every value seen"
        );
        value = sqlx::query_scalar(
            "UPDATE credential_generation SET value = GREATEST(value, $1) + 1 WHERE id RETURNING value",
        )
        .bind(highest)
        .fetch_one(&mut listener)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(value.to_string())
            .execute(&mut listener)
            .await?;
    }
    state.resume(value, row.try_get("pid")?, Instant::now());
    Ok(listener)
}

/// Follows the counter until the store is dropped. While the listener is
/// down the generation is unknown (`None`), so callers read the store
/// instead of trusting caches that may have missed a revocation.
async fn follow_generation(
    options: PgConnectOptions,
    state: Arc<GenerationState>,
    mut listener: PgListener,
) {
    loop {
        let reason = listen_until_lost(&mut listener, &state).await;
        state.set_unknown();
        tracing::warn!(%reason, "credential change listener lost its connection; reconnecting");
        drop(listener);
        let mut delay = Duration::from_millis(100);
        listener = loop {
            match subscribe(&options, &state).await {
                Ok(listener) => break listener,
                Err(e) => {
                    tracing::warn!(error = %e, "credential change listener cannot reconnect");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                }
            }
        };
        tracing::info!("credential change listener reconnected");
    }
}

/// Returns why the listener stopped working.
async fn listen_until_lost(listener: &mut PgListener, state: &GenerationState) -> String {
    loop {
        // Waiting for a message is cancel-safe in sqlx, so the heartbeat
        // may interrupt it.
        match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
            Ok(Ok(Some(_))) => {
                // Notifications from other schemas on the same database use
                // the same channel, so the payload is not trusted: the
                // counter is re-read below, once for a burst.
                while listener.next_buffered().is_some() {}
            }
            Ok(Ok(None)) => return "connection closed".into(),
            Ok(Err(e)) => return e.to_string(),
            Err(_heartbeat) => {}
        }
        let highest = state.highest();
        let read = sqlx::query_scalar::<_, i64>("SELECT value FROM credential_generation");
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, read.fetch_one(&mut *listener)).await {
            Ok(Ok(value)) if value < highest => {
                return "the credential counter went back".into();
            }
            Ok(Ok(value)) => {
                state.confirm_at(Instant::now());
                state.advance(value);
            }
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return "the database did not answer in time".into(),
        }
    }
}

pub(crate) fn opt_ts(row: &PgRow, column: &str) -> StoreResult<Option<Timestamp>> {
    Ok(row.try_get::<Option<i64>, _>(column)?.map(Timestamp))
}

fn parse_scopes(text: Option<String>, column: &str) -> StoreResult<Option<Vec<String>>> {
    text.map(|t| json_list(&t, column)).transpose()
}

fn scopes_json(scopes: &Option<Vec<String>>) -> StoreResult<Option<String>> {
    scopes.as_deref().map(list_json).transpose()
}

fn api_key_from_row(row: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        role: row.try_get("role")?,
        scopes: parse_scopes(row.try_get("scopes")?, "api_keys.scopes")?,
        owner: row.try_get("owner")?,
        secret_hash: row.try_get("secret_hash")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: opt_ts(row, "expires_at")?,
        revoked_at: opt_ts(row, "revoked_at")?,
        last_used_at: opt_ts(row, "last_used_at")?,
        rotated_to: row.try_get("rotated_to")?,
    })
}

fn client_from_row(row: &PgRow) -> StoreResult<ClientRecord> {
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

fn audit_from_row(row: &PgRow) -> StoreResult<AuditRow> {
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
fn audit_link(row: &PgRow) -> StoreResult<Option<ChainLink>> {
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

/// The insert of a signing key (the operator's and the lifecycle's).
pub(crate) fn signing_key_insert(
    key: &SigningKeyRecord,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

/// A multi-row INSERT of audit events (with their serialized arguments).
fn audit_insert(rows: Vec<(AuditEvent, Option<String>)>) -> QueryBuilder<sqlx::Postgres> {
    let mut insert = QueryBuilder::<sqlx::Postgres>::new(
        "INSERT INTO audit_events (id, ts, kind, tenant, human, agent, credential, session, \
         source, tool, arguments, args_sha256, approval, decision, reason, outcome, error, \
         latency_us, result_bytes, request_id, chain, chain_seq, prev_hash, hash, issuer) ",
    );
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
            .push_bind(
                event
                    .latency_us
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            )
            .push_bind(
                event
                    .result_bytes
                    .map(|v| i64::try_from(v).unwrap_or(i64::MAX)),
            )
            .push_bind(event.request_id)
            .push_bind(event.link.as_ref().map(|l| l.chain.clone()))
            .push_bind(
                event
                    .link
                    .as_ref()
                    .map(|l| i64::try_from(l.seq).unwrap_or(i64::MAX)),
            )
            .push_bind(event.link.as_ref().map(|l| l.prev_hash.clone()))
            .push_bind(event.link.map(|l| l.hash))
            .push_bind(event.issuer);
    });
    insert
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, name, tenant, role, scopes, owner, secret_hash, \
     created_at, expires_at, revoked_at, last_used_at, rotated_to) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

fn bind_api_key<'q>(
    query: PgQuery<'q>,
    key: &'q ApiKeyRecord,
    scopes: Option<String>,
) -> PgQuery<'q> {
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
impl Store for PostgresStore {
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
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id COLLATE \"C\"")
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
        let mut tx = self.pool.begin().await?;
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at.0)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        if !changed {
            return Ok(false);
        }
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(true)
    }

    async fn rotate_api_key(
        &self,
        old_id: &str,
        new_key: &ApiKeyRecord,
        old_valid_until: Timestamp,
    ) -> StoreResult<bool> {
        let scopes = scopes_json(&new_key.scopes)?;
        let mut tx = self.pool.begin().await?;
        // The conditional update is the atomic step: a concurrent rotation
        // waits for the row lock, then no longer matches `rotated_to IS NULL`.
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
            return Ok(false);
        }
        bind_api_key(sqlx::query(INSERT_API_KEY), new_key, scopes)
            .execute(&mut *tx)
            .await?;
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
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
        let rows = sqlx::query("SELECT * FROM oauth_clients ORDER BY created_at, id COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(client_from_row).collect()
    }

    async fn revoke_client(&self, id: &str, at: Timestamp) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE oauth_clients SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(at.0)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            return Ok(false);
        }
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(true)
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
        // One conditional update: the right-hand sides read the row as it
        // was, so the old hash moves to `previous_secret_hash` as the new
        // one takes its place.
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE oauth_clients SET previous_secret_hash = secret_hash, \
             previous_secret_valid_until = $1, secret_hash = $2, secret_issued_at = $3, \
             machine_tokens_not_before = GREATEST(machine_tokens_not_before, $6) \
             WHERE id = $4 AND revoked_at IS NULL AND secret_hash = $5",
        )
        .bind(old_valid_until.0)
        .bind(new_hash)
        .bind(at.0)
        .bind(id)
        .bind(expected_hash)
        .bind(machine_tokens_not_before.map(|t| t.0))
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        // Token caches on every instance look at the client again.
        let generation = if machine_tokens_not_before.is_some() {
            Some(bump_generation(&mut tx).await?)
        } else {
            None
        };
        tx.commit().await?;
        if let Some(generation) = generation {
            self.note_bump(generation);
        }
        Ok(true)
    }

    async fn revoke_token(
        &self,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
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
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn revoked_tokens(&self, now: Timestamp) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT jti FROM revoked_tokens WHERE expires_at > $1 ORDER BY jti COLLATE \"C\"",
        )
        .bind(now.0 - crate::REVOCATION_GRACE_MS)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        signing_key_insert(key).execute(&mut *tx).await?;
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid COLLATE \"C\"")
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
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE signing_keys SET revoked_at = $1 WHERE kid = $2 AND revoked_at IS NULL",
        )
        .bind(at.0)
        .bind(kid)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !changed {
            return Ok(false);
        }
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(true)
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
                .bind(i64::try_from(checkpoint.seq).unwrap_or(i64::MAX))
                .bind(&checkpoint.hash)
                .bind(checkpoint.ts.0)
                .bind(&checkpoint.jws)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
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
        let mut sql = QueryBuilder::<sqlx::Postgres>::new("SELECT * FROM audit_events WHERE TRUE");
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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO tenant_secrets (tenant, name, value) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
        )
        .bind(tenant)
        .bind(name)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        // An upstream connection made with the old value ends, on every
        // instance (a tenant's secret is an upstream credential).
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
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
        Ok(sqlx::query_scalar(
            "SELECT name FROM tenant_secrets WHERE tenant = $1 ORDER BY name COLLATE \"C\"",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query("DELETE FROM tenant_secrets WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(true)
    }

    async fn unsealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT tenant, name, value FROM tenant_secrets \
             WHERE NOT starts_with(value, $1) ORDER BY tenant COLLATE \"C\", name COLLATE \"C\"",
        )
        .bind(gatehouse_core::SEALED_PREFIX)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn sealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT tenant, name, value FROM tenant_secrets \
             WHERE starts_with(value, $1) ORDER BY tenant COLLATE \"C\", name COLLATE \"C\"",
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
        let result = sqlx::query(
            "UPDATE tenant_secrets SET value = $4 WHERE tenant = $1 AND name = $2 AND value = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(expected)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
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
        let rows = sqlx::query(
            "SELECT key, value FROM runtime_settings WHERE tenant = $1 ORDER BY key COLLATE \"C\"",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key")?, row.try_get("value")?)))
            .collect()
    }
}

fn checkpoint_from_row(row: &sqlx::postgres::PgRow) -> StoreResult<AuditCheckpoint> {
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
#[path = "postgres_tests.rs"]
mod tests;
