//! One upstream: its connections (supervised, restarted with backoff),
//! and the calls made over them (bounded in time, in number, and by a
//! circuit breaker).
//!
//! An upstream with a static credential (or none) has one connection. One
//! whose credential is `tenant:` has one per tenant, opened on first use:
//! each tenant's calls travel with that tenant's credential, never another's.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rmcp::model::{
    CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, GetPromptResponse,
    GetPromptResult, Prompt, ReadResourceResponse, ReadResourceResult, Resource, ResourceTemplate,
    Tool,
};
use serde_json::{Map, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::breaker::{Breaker, BreakerState};
use crate::changes::{ChangeKind, ListChanged};
use crate::child::{self, Child};
use crate::client_credentials::ClientCredentials;
use crate::config::{TransportKind, UpstreamAuth, UpstreamConfig};
use crate::direct_call::Direct;
use crate::error::UpstreamError;
use crate::health::{Health, HealthState, LastError};
use crate::http_client::{CappedClient, TokenSource, build_reqwest};
use crate::line_cap::LineCap;
use crate::relay::CallContext;
use crate::sdk::{self, Connection, Established, Handler, Page, SentSecrets, UpstreamInput};
use crate::slot_shares::{ShareSlot, SlotShares};
use crate::stderr_log;
use gatehouse_core::secret_ref::{Secret, TenantSecrets};

/// Listing more pages than this is refused: a server that never stops
/// paginating must not keep the gateway busy.
pub const MAX_PAGES: usize = 100;
/// A listing with more items than this is refused: pages are bounded in
/// size, but 100 pages of tiny entries would still be millions of them,
/// each held in memory, sent to every caller who lists, and (tools) pinned
/// with a store write and an audit record.
pub const MAX_LISTED_ITEMS: usize = 10_000;
/// A listing larger than this (its items as JSON, over all its pages) is
/// refused: each page is bounded by the message limit, but a hundred of
/// them would be hundreds of megabytes held for every caller who lists.
pub const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;
/// How long a child has to exit after its stdin closed (and again after
/// SIGTERM) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Arguments and `_meta` of a request, as JSON objects.
pub type JsonObject = Map<String, Value>;

#[derive(Clone)]
enum SlotState {
    Connecting,
    Ready(Arc<Connection>),
    Failing(UpstreamError),
    Stopped,
}

struct Slot {
    state: watch::Receiver<SlotState>,
    task: JoinHandle<()>,
    /// Ends this slot's connection (a child of the shutdown token).
    stop: CancellationToken,
    /// The tenant secrets' generation at which the secret this slot's
    /// connection was made with was last found unchanged
    /// (`Upstream::secret_changed`).
    checked: Option<u64>,
}

#[derive(Default)]
struct Status {
    state: Option<HealthState>,
    last_error: Option<LastError>,
    restarts: u64,
    protocol_version: Option<String>,
    pid: Option<u32>,
}

/// What the connection supervisors share.
struct Shared {
    name: Arc<str>,
    config: UpstreamConfig,
    tenants: Option<Arc<dyn TenantSecrets>>,
    http: Option<reqwest::Client>,
    changes: broadcast::Sender<ListChanged>,
    status: Mutex<Status>,
    shutdown: CancellationToken,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the upstream down with it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn set_state(&self, state: HealthState) {
        lock(&self.status).state = Some(state);
    }

    fn failed(&self, error: &UpstreamError) {
        tracing::warn!(upstream = %self.name, code = error.code(), error = %error, "upstream connection failed");
        let mut status = lock(&self.status);
        status.state = Some(HealthState::Failing);
        status.last_error = Some(LastError {
            code: error.code(),
            message: error.to_string(),
        });
        status.pid = None;
    }

    fn connected(&self, protocol_version: &str, pid: Option<u32>, reconnect: bool) {
        let mut status = lock(&self.status);
        status.state = Some(HealthState::Ready);
        status.protocol_version = Some(protocol_version.to_owned());
        status.pid = pid;
        if reconnect {
            status.restarts += 1;
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            upstream: self.name.clone(),
            reason: reason.into(),
        }
    }

    fn credentials(&self, reason: impl ToString) -> UpstreamError {
        UpstreamError::Credentials {
            upstream: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(
        &self,
        tenant: Option<&str>,
    ) -> Result<(Established, Option<Child>), UpstreamError> {
        let handler = Handler::new(
            self.name.clone(),
            tenant.map(Arc::from),
            self.changes.clone(),
            self.config.protocol_version.clone(),
            self.config.call_timeout,
        );
        let limit = self.config.max_message_bytes;
        match self.config.transport() {
            TransportKind::Stdio { command } => {
                let mut secret_env = Vec::new();
                for (key, reference) in &self.config.secret_env {
                    let secret = reference
                        .resolve(None, None)
                        .await
                        .map_err(|e| self.credentials(format!("secret_env.{key}: {e}")))?;
                    secret_env.push((key.clone(), secret));
                }
                let values: Vec<String> = secret_env
                    .iter()
                    .map(|(_, s)| s.expose().to_owned())
                    .collect();
                let secrets = SentSecrets::fixed(values.clone());
                let spawned = child::spawn(&self.name, &self.config, command, &secret_env)
                    .map_err(|e| self.unavailable(format!("cannot start {command:?}: {e}")))?;
                tokio::spawn(stderr_log::forward(
                    self.name.clone(),
                    spawned.stderr,
                    values,
                ));
                let transport =
                    sdk::stdio_transport(LineCap::new(spawned.stdout, limit), spawned.stdin, limit);
                let established =
                    sdk::handshake(&self.name, handler, transport, secrets, None).await?;
                Ok((established, Some(spawned.child)))
            }
            TransportKind::Http { url } => {
                let http = self
                    .http
                    .clone()
                    .ok_or_else(|| self.unavailable("no HTTP client"))?;
                let (headers, secrets, token) = match &self.config.auth {
                    UpstreamAuth::OAuth { .. } => {
                        let source = self.token_source(http.clone(), url, tenant).await?;
                        let secrets = SentSecrets::granted(Arc::clone(&source.grant));
                        (HashMap::new(), secrets, Some(source))
                    }
                    _ => {
                        let (headers, secrets) = self.auth_headers(tenant).await?;
                        (headers, SentSecrets::fixed(secrets), None)
                    }
                };
                let client = CappedClient::new(http, limit, token).watching(handler.in_flight());
                let direct = Direct::new(&client, url);
                let transport = sdk::http_transport(client, url, headers, limit);
                let established =
                    sdk::handshake(&self.name, handler, transport, secrets, Some(direct)).await?;
                Ok((established, None))
            }
        }
    }

    /// The client-credentials grant of this connection. Its first token is
    /// got now, so a wrong secret or an unreachable authorization server
    /// fails the connection with a credentials error (the grant remembers
    /// it, for scrubbing).
    async fn token_source(
        &self,
        http: reqwest::Client,
        url: &str,
        tenant: Option<&str>,
    ) -> Result<TokenSource, UpstreamError> {
        let UpstreamAuth::OAuth {
            client_id,
            client_secret,
            scope,
            issuer,
        } = &self.config.auth
        else {
            return Err(self.credentials("not an OAuth upstream"));
        };
        let resource = url::Url::parse(url).map_err(|e| self.credentials(e))?;
        let grant = Arc::new(ClientCredentials::new(
            http,
            resource,
            client_id.clone(),
            client_secret.clone(),
            scope.clone(),
            issuer.clone(),
            tenant.map(str::to_owned),
        ));
        grant
            .token(self.tenants.as_deref())
            .await
            .map_err(|e| self.credentials(e))?;
        Ok(TokenSource {
            grant,
            tenants: self.tenants.clone(),
        })
    }

    async fn auth_headers(
        &self,
        tenant: Option<&str>,
    ) -> Result<(HashMap<http::HeaderName, http::HeaderValue>, Vec<String>), UpstreamError> {
        let (name, reference, bearer) = match &self.config.auth {
            UpstreamAuth::None | UpstreamAuth::OAuth { .. } => {
                return Ok((HashMap::new(), Vec::new()));
            }
            UpstreamAuth::Bearer(r) => (http::header::AUTHORIZATION, r, true),
            UpstreamAuth::Header { name, value } => (
                http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| self.credentials(format!("{name:?} is not a header name")))?,
                value,
                false,
            ),
        };
        let secret: Secret = reference
            .resolve(tenant, self.tenants.as_deref())
            .await
            .map_err(|e| self.credentials(e))?;
        let text = if bearer {
            format!("Bearer {}", secret.expose())
        } else {
            secret.expose().to_owned()
        };
        let mut value = http::HeaderValue::from_str(&text).map_err(|_| {
            self.credentials(format!(
                "the secret from {reference} is not a valid header value"
            ))
        })?;
        value.set_sensitive(true);
        Ok((
            HashMap::from([(name, value)]),
            vec![secret.expose().to_owned()],
        ))
    }
}

/// Keeps one connection up until `stop` (shutdown, or the slot ended):
/// connects, waits for the end, stops what is left of it, waits (0.5 s
/// doubling to 30 s), connects again.
async fn supervise(
    shared: Arc<Shared>,
    tenant: Option<String>,
    state: watch::Sender<SlotState>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        state.send_replace(SlotState::Connecting);
        shared.set_state(HealthState::Connecting);
        let connect_timeout = shared.config.connect_timeout;
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(connect_timeout, shared.connect(tenant.as_deref())) => attempt,
            () = stop.cancelled() => break,
        };
        let lived = match attempt {
            Ok(Ok((mut established, mut child))) => {
                let started = Instant::now();
                let connection = established.connection.clone();
                let pid = child.as_ref().and_then(Child::id);
                shared.connected(connection.protocol_version(), pid, connected_before);
                state.send_replace(SlotState::Ready(connection));
                if connected_before {
                    let _ = shared.changes.send(ListChanged {
                        upstream: shared.name.clone(),
                        kind: ChangeKind::Reconnected,
                        uri: None,
                        tenant: tenant.as_deref().map(Arc::from),
                    });
                }
                connected_before = true;
                let stopping = tokio::select! {
                    _ = &mut established.ended => false,
                    () = stop.cancelled() => true,
                };
                let lost = UpstreamError::Disconnected {
                    upstream: shared.name.clone(),
                };
                state.send_replace(if stopping {
                    SlotState::Stopped
                } else {
                    SlotState::Failing(lost.clone())
                });
                established.close().await;
                if let Some(child) = child.as_mut() {
                    let status = child.stop(STOP_GRACE).await;
                    tracing::info!(upstream = %shared.name, ?status, "upstream process ended");
                }
                if stopping {
                    break;
                }
                shared.failed(&lost);
                Some(started.elapsed())
            }
            Ok(Err(error)) => {
                shared.failed(&error);
                state.send_replace(SlotState::Failing(error));
                None
            }
            Err(_) => {
                let error = UpstreamError::Timeout {
                    upstream: shared.name.clone(),
                    timeout: connect_timeout,
                };
                shared.failed(&error);
                state.send_replace(SlotState::Failing(error));
                None
            }
        };
        let delay = backoff.next_delay(lived);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => break,
        }
    }
    state.send_replace(SlotState::Stopped);
}

/// A breaker's connection (`slots`' key) and the tenant whose share of
/// the slots its calls take (`None`: calls without one).
type BreakerKey = (Option<String>, Option<String>);

/// Who makes a request, for the limits it waits in (`request_as`).
#[derive(Clone, Copy, Default)]
struct Asker<'a> {
    /// The tenant whose share of the slots it takes; `None`: no tenant's.
    tenant_share: Option<&'a str>,
    /// The caller whose share it takes (and whose breaker its timeouts
    /// open); `None`: the gateway's own request, or a listing.
    caller_share: Option<&'a str>,
    /// The caller's cancellation: it stops waiting for a slot.
    cancel: Option<&'a CancellationToken>,
}

impl<'a> Asker<'a> {
    fn tenant(tenant_share: Option<&'a str>) -> Asker<'a> {
        Asker {
            tenant_share,
            ..Asker::default()
        }
    }

    fn call(call: &'a CallContext) -> Asker<'a> {
        Asker {
            tenant_share: call.tenant_share.as_deref(),
            caller_share: call.caller_share.as_deref(),
            cancel: Some(&call.cancel),
        }
    }
}

/// Which breakers a request is the half-open trial of.
#[derive(Clone, Copy)]
struct Trials {
    shared: bool,
    caller: bool,
}

/// The slots one request holds, given back when dropped.
struct Slots {
    _caller: Option<ShareSlot>,
    _tenant: Option<ShareSlot>,
    _upstream: OwnedSemaphorePermit,
}

/// A caller's breaker: its connection's key and its share's name.
type CallerBreakerKey = (Option<String>, Arc<str>);

/// Callers' breakers kept at once. Only a caller whose calls timed out
/// has one (a success removes it), so this is reached only by many
/// callers timing out together; past it, the closed ones are forgotten.
const MAX_CALLER_BREAKERS: usize = 4096;

struct Inner {
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    /// Each tenant's part of `permits` (`slot_shares.rs`).
    tenant_shares: Arc<SlotShares>,
    /// Each caller's part of `permits`.
    caller_shares: Arc<SlotShares>,
    /// One per connection (keyed like `slots`: with a credential per tenant
    /// each tenant has its own connection, and one tenant's failures (a
    /// missing secret, a refused grant) must not shut the upstream for the
    /// others) and, with tenancy on, per tenant calling through it: one
    /// tenant's calls that time out (a flood of calls that never answer)
    /// open its own breaker, not everyone's.
    breakers: Mutex<HashMap<BreakerKey, Breaker>>,
    /// A caller's calls that time out open a breaker of the caller's own:
    /// how long a call takes depends on what it asks (a slow tool, a big
    /// query), so one caller's slow calls must not shut the upstream for
    /// everyone. What only the upstream causes (a connection lost or
    /// refused, an invalid message) opens the shared ones above.
    caller_breakers: Mutex<HashMap<CallerBreakerKey, Breaker>>,
    slots: Mutex<HashMap<Option<String>, Slot>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A handle on one upstream; cheap to clone. Dropping the last handle
/// stops its connections (and kills its child), as does [`Upstream::shutdown`].
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

impl Upstream {
    /// Starts connecting at once (a `tenant:` upstream: at the first call
    /// of each tenant). `config` should have passed [`crate::validate`].
    /// Must be called within a Tokio runtime.
    pub fn start(
        config: UpstreamConfig,
        tenants: Option<Arc<dyn TenantSecrets>>,
        changes: broadcast::Sender<ListChanged>,
    ) -> Upstream {
        let http = match config.transport() {
            TransportKind::Http { .. } => match build_reqwest(config.connect_timeout) {
                Ok(client) => Some(client),
                Err(e) => {
                    tracing::error!(upstream = %config.name, error = %e, "cannot build the HTTP client");
                    None
                }
            },
            TransportKind::Stdio { .. } => None,
        };
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            tenants,
            http,
            changes,
            status: Mutex::new(Status::default()),
            shutdown: CancellationToken::new(),
            config,
        });
        let upstream = Upstream {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(shared.config.max_concurrent_calls)),
                tenant_shares: SlotShares::new(shared.config.tenant_share()),
                caller_shares: SlotShares::new(shared.config.caller_share()),
                breakers: Mutex::new(HashMap::new()),
                caller_breakers: Mutex::new(HashMap::new()),
                slots: Mutex::new(HashMap::new()),
                shared,
            }),
        };
        let shared = &upstream.inner.shared;
        if !shared.config.enabled {
            shared.set_state(HealthState::Disabled);
        } else if !shared.config.needs_tenant() {
            let _ = upstream.slot(None);
        }
        upstream
    }

    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.inner.shared.config
    }

    /// Catalogue changes of this upstream (and of every other upstream
    /// sharing the channel).
    pub fn subscribe(&self) -> broadcast::Receiver<ListChanged> {
        self.inner.shared.changes.subscribe()
    }

    pub fn health(&self) -> Health {
        let shared = &self.inner.shared;
        let status = lock(&shared.status);
        let state = if !shared.config.enabled || shared.shutdown.is_cancelled() {
            HealthState::Disabled
        } else {
            status.state.unwrap_or(HealthState::Connecting)
        };
        Health {
            name: shared.name.to_string(),
            state,
            last_error: status.last_error.clone(),
            restarts: status.restarts,
            protocol_version: status.protocol_version.clone(),
            breaker: self.breaker_state(),
            in_flight: shared
                .config
                .max_concurrent_calls
                .saturating_sub(self.inner.permits.available_permits()),
            pid: status.pid,
        }
    }

    /// Stops every connection: closes the child's stdin, then SIGTERM,
    /// then SIGKILL (each after a grace period); in-flight calls fail.
    pub async fn shutdown(&self) {
        self.inner.shared.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = lock(&self.inner.slots)
            .drain()
            .map(|(_, slot)| slot.task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        self.inner.shared.set_state(HealthState::Disabled);
    }

    /// The breaker state shown in health: the most severe of the
    /// connections' (one tenant's open breaker shows).
    fn breaker_state(&self) -> BreakerState {
        let now = std::time::Instant::now();
        let breakers = lock(&self.inner.breakers);
        let states: Vec<BreakerState> = breakers.values().map(|b| b.state(now)).collect();
        if states.contains(&BreakerState::Open) {
            BreakerState::Open
        } else if states.contains(&BreakerState::HalfOpen) {
            BreakerState::HalfOpen
        } else {
            BreakerState::Closed
        }
    }

    /// The key of a tenant's connection: the tenant for an upstream whose
    /// credential is per tenant, else the one shared connection's.
    fn slot_key(&self, tenant: Option<&str>) -> Result<Option<String>, UpstreamError> {
        let shared = &self.inner.shared;
        if !shared.config.needs_tenant() {
            return Ok(None);
        }
        tenant.map(|t| Some(t.to_owned())).ok_or_else(|| {
            shared
                .credentials("this upstream's credential is per tenant, and the call has no tenant")
        })
    }

    fn slot(&self, tenant: Option<&str>) -> Result<watch::Receiver<SlotState>, UpstreamError> {
        let shared = &self.inner.shared;
        if !shared.config.enabled {
            return Err(UpstreamError::Disabled {
                upstream: shared.name.clone(),
            });
        }
        if shared.shutdown.is_cancelled() {
            return Err(shared.unavailable("shut down"));
        }
        let key = self.slot_key(tenant)?;
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get(&key) {
            return Ok(slot.state.clone());
        }
        let (sender, receiver) = watch::channel(SlotState::Connecting);
        let stop = shared.shutdown.child_token();
        let task = tokio::spawn(supervise(shared.clone(), key.clone(), sender, stop.clone()));
        slots.insert(
            key,
            Slot {
                state: receiver.clone(),
                task,
                stop,
                checked: None,
            },
        );
        Ok(receiver)
    }

    /// Whether the tenant's secret is no longer the one `connection` was
    /// made with: rotated (`gatehouse secrets set`), deleted, or unreadable
    /// now. Read again only when the tenant secrets' generation moved
    /// since it was last found unchanged (or the generation is unknown).
    async fn secret_changed(
        &self,
        tenant: Option<&str>,
        connection: &Connection,
    ) -> Result<bool, UpstreamError> {
        let shared = &self.inner.shared;
        let (Some(tenants), Some(reference)) = (&shared.tenants, shared.config.auth.secret())
        else {
            return Ok(false);
        };
        if !reference.is_tenant() {
            return Ok(false);
        }
        let key = self.slot_key(tenant)?;
        let generation = tenants.generation();
        let checked = lock(&self.inner.slots).get(&key).and_then(|s| s.checked);
        if generation.is_some() && checked == generation {
            return Ok(false);
        }
        let changed = match reference.resolve(tenant, Some(tenants.as_ref())).await {
            Ok(secret) => !connection.made_with(secret.expose()),
            // Deleted, or not readable now: no call goes out on a
            // credential that may have been withdrawn.
            Err(_) => true,
        };
        if !changed && let Some(slot) = lock(&self.inner.slots).get_mut(&key) {
            slot.checked = generation;
        }
        Ok(changed)
    }

    /// Ends the slot of `tenant` if it still holds `connection` (another
    /// call may have replaced it already): its connection is closed, and
    /// the next call makes a new one.
    fn end_slot(
        &self,
        tenant: Option<&str>,
        connection: &Arc<Connection>,
    ) -> Result<(), UpstreamError> {
        let key = self.slot_key(tenant)?;
        let mut slots = lock(&self.inner.slots);
        let holds = slots.get(&key).is_some_and(|slot| {
            matches!(&*slot.state.borrow(), SlotState::Ready(c) if Arc::ptr_eq(c, connection))
        });
        if holds && let Some(slot) = slots.remove(&key) {
            slot.stop.cancel();
        }
        Ok(())
    }

    /// The connection to use, waiting for one being established (at most
    /// `connect_timeout`, and not past `deadline`). A tenant's connection
    /// made with a secret the tenant no longer has is ended first, and a new
    /// one made: a rotated or deleted upstream credential is used no more
    /// from the next call on.
    async fn connection(
        &self,
        tenant: Option<&str>,
        deadline: Instant,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let connection = self.settled_connection(tenant, deadline).await?;
        if !self.secret_changed(tenant, &connection).await? {
            return Ok(connection);
        }
        tracing::info!(upstream = %self.inner.shared.name, "the tenant's secret for this upstream changed: connecting again");
        self.end_slot(tenant, &connection)?;
        self.settled_connection(tenant, deadline).await
    }

    async fn settled_connection(
        &self,
        tenant: Option<&str>,
        deadline: Instant,
    ) -> Result<Arc<Connection>, UpstreamError> {
        let shared = &self.inner.shared;
        let mut state = self.slot(tenant)?;
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(shared.config.connect_timeout);
        let settled = tokio::time::timeout(
            wait,
            state.wait_for(|s| !matches!(s, SlotState::Connecting)),
        )
        .await;
        match settled {
            Ok(Ok(state)) => match &*state {
                SlotState::Ready(connection) if !connection.is_closed() => Ok(connection.clone()),
                SlotState::Ready(_) => Err(UpstreamError::Disconnected {
                    upstream: shared.name.clone(),
                }),
                SlotState::Failing(error) => Err(shared.unavailable(error.to_string())),
                SlotState::Connecting | SlotState::Stopped => Err(shared.unavailable("stopped")),
            },
            Ok(Err(_)) => Err(shared.unavailable("stopped")),
            Err(_) => Err(shared.unavailable("still connecting")),
        }
    }

    /// Runs one request under the breakers, the concurrency limits and the
    /// call timeout. A caller's request takes one of its caller's slots
    /// (`caller`), then one of its tenant's (`share`), then one of the
    /// upstream's (`slot_shares.rs`); the gateway's own requests take only
    /// the upstream's. The timeout covers everything, waiting for slots and
    /// for the connection included.
    async fn request_as<T, F, Fut>(
        &self,
        tenant: Option<&str>,
        asker: Asker<'_>,
        op: F,
    ) -> Result<T, UpstreamError>
    where
        F: FnOnce(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        let shared = &self.inner.shared;
        let timeout = shared.config.call_timeout;
        let deadline = Instant::now() + timeout;
        if !shared.config.enabled {
            return Err(UpstreamError::Disabled {
                upstream: shared.name.clone(),
            });
        }
        let connection_key = self.slot_key(tenant)?;
        let key = (
            connection_key.clone(),
            asker.tenant_share.map(str::to_owned),
        );
        let caller_key = asker
            .caller_share
            .map(|caller| (connection_key, Arc::<str>::from(caller)));
        // A caller who cancels stops waiting for a slot (and frees its
        // place in the queue for the others).
        let waiting = self.take_slots(&asker, deadline);
        let _slots = match asker.cancel {
            Some(cancel) => tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    return Err(UpstreamError::Cancelled {
                        upstream: shared.name.clone(),
                    });
                }
                slots = waiting => slots?,
            },
            None => waiting.await?,
        };
        // The breakers only once it holds its slots: a request that waits
        // for a slot, or never gets one, must not hold a half-open
        // breaker's one trial meanwhile (refusing everyone else).
        let trials = self.admit(&key, caller_key.as_ref())?;
        let result = async {
            let connection = self.connection(tenant, deadline).await?;
            // Boxed where it is made: the request's future is large (a
            // whole upstream call), and `timeout_at` takes it by value. When
            // the compiler did not inline it, the future was copied twice
            // per call, ~18,000 instructions (bench/PROFILE.md).
            match tokio::time::timeout_at(deadline, Box::pin(op(connection))).await {
                Ok(result) => result,
                Err(_) => Err(UpstreamError::Timeout {
                    upstream: shared.name.clone(),
                    timeout,
                }),
            }
        }
        .await;
        self.record_outcome(&result, key, caller_key, trials);
        result
    }

    /// The breakers' leave for one request: the caller's own first, then
    /// the shared one (a trial of the caller's is given back when the
    /// shared one refuses).
    fn admit(
        &self,
        key: &BreakerKey,
        caller_key: Option<&CallerBreakerKey>,
    ) -> Result<Trials, UpstreamError> {
        let now = std::time::Instant::now();
        let shared = &self.inner.shared;
        let caller = match caller_key {
            Some(caller_key) => {
                let admitted = lock(&self.inner.caller_breakers)
                    .get_mut(caller_key)
                    .map(|breaker| breaker.admit(now));
                match admitted {
                    Some(Ok(trial)) => trial,
                    Some(Err(remaining)) => {
                        return Err(shared.unavailable(format!(
                            "this caller's calls timed out repeatedly; next try in {}s",
                            remaining.as_secs().max(1)
                        )));
                    }
                    None => false,
                }
            }
            None => false,
        };
        let admitted = lock(&self.inner.breakers)
            .entry(key.clone())
            .or_insert_with(|| self.new_breaker())
            .admit(now);
        match admitted {
            Ok(trial) => Ok(Trials {
                shared: trial,
                caller,
            }),
            Err(remaining) => {
                if caller
                    && let Some(caller_key) = caller_key
                    && let Some(breaker) = lock(&self.inner.caller_breakers).get_mut(caller_key)
                {
                    breaker.release_trial(now);
                }
                Err(shared.unavailable(format!(
                    "circuit breaker open after repeated failures; next try in {}s",
                    remaining.as_secs().max(1)
                )))
            }
        }
    }

    /// A caller's slot, then its tenant's, then the upstream's: the
    /// narrowest first, so that a caller (or tenant) whose share is taken
    /// waits without holding a wider share's slot meanwhile.
    async fn take_slots(
        &self,
        asker: &Asker<'_>,
        deadline: Instant,
    ) -> Result<Slots, UpstreamError> {
        let name = &self.inner.shared.name;
        let callers = &self.inner.caller_shares;
        let caller = match asker.caller_share {
            Some(caller) => Some(callers.acquire(caller, deadline).await.ok_or_else(|| {
                UpstreamError::CallerBusy {
                    upstream: name.clone(),
                    limit: callers.share(),
                }
            })?),
            None => None,
        };
        let tenants = &self.inner.tenant_shares;
        let tenant = match asker.tenant_share {
            Some(tenant) => Some(tenants.acquire(tenant, deadline).await.ok_or_else(|| {
                UpstreamError::TenantBusy {
                    upstream: name.clone(),
                    limit: tenants.share(),
                }
            })?),
            None => None,
        };
        let Ok(Ok(upstream)) =
            tokio::time::timeout_at(deadline, self.inner.permits.clone().acquire_owned()).await
        else {
            return Err(UpstreamError::Busy {
                upstream: name.clone(),
                limit: self.inner.shared.config.max_concurrent_calls,
            });
        };
        Ok(Slots {
            _caller: caller,
            _tenant: tenant,
            _upstream: upstream,
        })
    }

    fn new_breaker(&self) -> Breaker {
        let config = &self.inner.shared.config;
        Breaker::new(config.breaker_failures, config.breaker_cooldown)
    }

    /// Tells the breakers how a request ended: a caller's timeout counts
    /// against the caller's own breaker, any other failure of the upstream
    /// against the shared one; a request that got an answer closes both;
    /// one that never reached the upstream (no slot, cancelled, no
    /// credential) says nothing about it.
    fn record_outcome<T>(
        &self,
        result: &Result<T, UpstreamError>,
        key: BreakerKey,
        caller_key: Option<CallerBreakerKey>,
        trials: Trials,
    ) {
        let now = std::time::Instant::now();
        match result {
            Err(error) if error.is_upstream_failure() => {
                {
                    let mut status = lock(&self.inner.shared.status);
                    status.last_error = Some(LastError {
                        code: error.code(),
                        message: error.to_string(),
                    });
                }
                let counted_for_the_caller = match (error, caller_key) {
                    (UpstreamError::Timeout { .. }, Some(caller_key)) => {
                        self.caller_failed(caller_key, now)
                    }
                    _ => false,
                };
                if !counted_for_the_caller
                    && let Some(breaker) = lock(&self.inner.breakers).get_mut(&key)
                {
                    breaker.record_failure(now);
                }
            }
            Err(error) if !error.reached_upstream() => {
                if trials.shared
                    && let Some(breaker) = lock(&self.inner.breakers).get_mut(&key)
                {
                    breaker.release_trial(now);
                }
                if trials.caller
                    && let Some(caller_key) = &caller_key
                    && let Some(breaker) = lock(&self.inner.caller_breakers).get_mut(caller_key)
                {
                    breaker.release_trial(now);
                }
            }
            _ => {
                if let Some(breaker) = lock(&self.inner.breakers).get_mut(&key) {
                    breaker.record_success();
                }
                if let Some(caller_key) = caller_key {
                    lock(&self.inner.caller_breakers).remove(&caller_key);
                }
            }
        }
    }

    /// Counts a caller's timeout against its own breaker; false when there
    /// is no room for one more caller's breaker (every one of them open
    /// now), and the shared breaker must count it instead. Breakers that
    /// are not open make room: a half-open one whose caller never came back
    /// would otherwise stay for ever.
    fn caller_failed(&self, caller_key: CallerBreakerKey, now: std::time::Instant) -> bool {
        let mut breakers = lock(&self.inner.caller_breakers);
        if breakers.len() >= MAX_CALLER_BREAKERS && !breakers.contains_key(&caller_key) {
            breakers.retain(|_, b| b.state(now) == BreakerState::Open);
            if breakers.len() >= MAX_CALLER_BREAKERS {
                return false;
            }
        }
        breakers
            .entry(caller_key)
            .or_insert_with(|| self.new_breaker())
            .record_failure(now);
        true
    }

    /// Every page of a listing, as one request taking one of `share`'s
    /// slots (a caller's listing waits for its tenant's slot like its
    /// calls; the gateway's own listings take none).
    async fn paginate<T, F, Fut>(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
        page: F,
    ) -> Result<Vec<T>, UpstreamError>
    where
        T: serde::Serialize,
        F: Fn(Arc<Connection>, Option<String>) -> Fut,
        Fut: Future<Output = Result<Page<T>, UpstreamError>>,
    {
        let name = self.inner.shared.name.clone();
        self.request_as(tenant, Asker::tenant(share), |connection| async move {
            let mut items = Vec::new();
            let mut cursor = None;
            let mut seen = HashSet::new();
            let mut bytes = 0usize;
            for _ in 0..MAX_PAGES {
                let (mut batch, next) = page(connection.clone(), cursor.take()).await?;
                bytes = bytes.saturating_add(batch.iter().map(gatehouse_core::json_len).sum());
                if bytes > MAX_LISTING_BYTES {
                    return Err(UpstreamError::Protocol {
                        upstream: name,
                        reason: format!("the listing is larger than {MAX_LISTING_BYTES} bytes"),
                    });
                }
                items.append(&mut batch);
                if items.len() > MAX_LISTED_ITEMS {
                    return Err(UpstreamError::Protocol {
                        upstream: name,
                        reason: format!("the listing has more than {MAX_LISTED_ITEMS} items"),
                    });
                }
                match next {
                    None => return Ok(items),
                    Some(next) if !seen.insert(next.clone()) => {
                        return Err(UpstreamError::Protocol {
                            upstream: name,
                            reason: "the listing repeats a cursor".into(),
                        });
                    }
                    Some(next) => cursor = Some(next),
                }
            }
            Err(UpstreamError::Protocol {
                upstream: name,
                reason: format!("the listing has more than {MAX_PAGES} pages"),
            })
        })
        .await
    }

    /// Every tool, all pages (at most [`MAX_PAGES`]) within one call
    /// timeout. `share` is the calling tenant's (see `paginate`).
    pub async fn list_tools(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
    ) -> Result<Vec<Tool>, UpstreamError> {
        self.paginate(tenant, share, |c, cursor| async move {
            c.tools_page(cursor).await
        })
        .await
    }

    pub async fn list_prompts(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
    ) -> Result<Vec<Prompt>, UpstreamError> {
        self.paginate(tenant, share, |c, cursor| async move {
            c.prompts_page(cursor).await
        })
        .await
    }

    pub async fn list_resources(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
    ) -> Result<Vec<Resource>, UpstreamError> {
        self.paginate(tenant, share, |c, cursor| async move {
            c.resources_page(cursor).await
        })
        .await
    }

    pub async fn list_resource_templates(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
    ) -> Result<Vec<ResourceTemplate>, UpstreamError> {
        self.paginate(tenant, share, |c, cursor| async move {
            c.resource_templates_page(cursor).await
        })
        .await
    }

    /// [`Upstream::call_tool_with`] without a caller to relay to: the
    /// final result only.
    pub async fn call_tool(
        &self,
        tenant: Option<&str>,
        name: &str,
        arguments: Option<JsonObject>,
        meta: Option<JsonObject>,
    ) -> Result<CallToolResult, UpstreamError> {
        let answer = self
            .call_tool_with(
                tenant,
                name,
                arguments,
                meta,
                UpstreamInput::default(),
                CallContext::default(),
            )
            .await?;
        match answer {
            CallToolResponse::Complete(result) => Ok(result),
            _ => Err(self.asked_for_input()),
        }
    }

    pub async fn get_prompt(
        &self,
        tenant: Option<&str>,
        name: &str,
        arguments: Option<JsonObject>,
        meta: Option<JsonObject>,
    ) -> Result<GetPromptResult, UpstreamError> {
        let answer = self
            .get_prompt_with(
                tenant,
                name,
                arguments,
                meta,
                UpstreamInput::default(),
                CallContext::default(),
            )
            .await?;
        match answer {
            GetPromptResponse::Complete(result) => Ok(result),
            _ => Err(self.asked_for_input()),
        }
    }

    pub async fn read_resource(
        &self,
        tenant: Option<&str>,
        uri: &str,
        meta: Option<JsonObject>,
    ) -> Result<ReadResourceResult, UpstreamError> {
        let answer = self
            .read_resource_with(
                tenant,
                uri,
                meta,
                UpstreamInput::default(),
                CallContext::default(),
            )
            .await?;
        match answer {
            ReadResourceResponse::Complete(result) => Ok(result),
            _ => Err(self.asked_for_input()),
        }
    }

    fn asked_for_input(&self) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.inner.shared.name.clone(),
            reason: "the upstream asked for input, and there is nobody to ask".into(),
        }
    }

    /// Calls `name` (the upstream's own name, without prefix). `meta` is
    /// the request's `_meta`; protocol keys (`io.modelcontextprotocol/…`)
    /// and `progressToken` are dropped (the upstream gets a token of the
    /// gateway's own, unique on its connection, and `call`'s relay gets the
    /// progress). Nothing else of the caller's request reaches the
    /// upstream: no headers, no credential.
    pub async fn call_tool_with(
        &self,
        tenant: Option<&str>,
        name: &str,
        arguments: Option<JsonObject>,
        meta: Option<JsonObject>,
        input: UpstreamInput,
        call: CallContext,
    ) -> Result<CallToolResponse, UpstreamError> {
        let name = name.to_owned();
        let call = &call;
        self.request_as(tenant, Asker::call(call), |c| async move {
            c.call_tool(name, arguments, meta, input, call).await
        })
        .await
    }

    pub async fn get_prompt_with(
        &self,
        tenant: Option<&str>,
        name: &str,
        arguments: Option<JsonObject>,
        meta: Option<JsonObject>,
        input: UpstreamInput,
        call: CallContext,
    ) -> Result<GetPromptResponse, UpstreamError> {
        let name = name.to_owned();
        let call = &call;
        self.request_as(tenant, Asker::call(call), |c| async move {
            c.get_prompt(name, arguments, meta, input, call).await
        })
        .await
    }

    pub async fn read_resource_with(
        &self,
        tenant: Option<&str>,
        uri: &str,
        meta: Option<JsonObject>,
        input: UpstreamInput,
        call: CallContext,
    ) -> Result<ReadResourceResponse, UpstreamError> {
        let uri = uri.to_owned();
        let call = &call;
        self.request_as(tenant, Asker::call(call), |c| async move {
            c.read_resource(uri, meta, input, call).await
        })
        .await
    }

    /// `completion/complete`, in `share`'s and `caller`'s slots (see
    /// [`CallContext::tenant_share`] and [`CallContext::caller_share`]);
    /// `params` names the prompt or resource as the upstream does.
    pub async fn complete(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
        caller: Option<&str>,
        params: CompleteRequestParams,
    ) -> Result<CompleteResult, UpstreamError> {
        let asker = Asker {
            tenant_share: share,
            caller_share: caller,
            cancel: None,
        };
        self.request_as(tenant, asker, |c| async move { c.complete(params).await })
            .await
    }

    /// `resources/subscribe` (`subscribe`) or `resources/unsubscribe`, in
    /// `share`'s slots when a caller's request makes it (the gateway's own,
    /// when the last watcher goes or the upstream reconnects, take none).
    pub async fn subscription(
        &self,
        tenant: Option<&str>,
        share: Option<&str>,
        uri: &str,
        subscribe: bool,
    ) -> Result<(), UpstreamError> {
        let uri = uri.to_owned();
        self.request_as(tenant, Asker::tenant(share), |c| async move {
            c.subscription(uri, subscribe).await
        })
        .await
    }
}
