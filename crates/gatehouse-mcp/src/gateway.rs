//! Gate 2, dispatch and audit for one tool call, independent of the
//! transport it arrived on.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use gatehouse_audit::{AuditError, AuditLog, EventBuilder, Redactor};
use gatehouse_authz::{
    Access, ApprovalError, ApprovalNeeded, Approvals, Decision, Deny, DenyReason, GrantOrigin,
    Kind, OPERATION_TOKEN_META, Permit, Policy, SharedPolicy, Target, TaskGrantError, TaskGrants,
};
use gatehouse_core::{
    AuditEvent, AuditKind, Clock, CredentialKind, Outcome, Principal, Timestamp, json_len,
};
use gatehouse_metrics::{Metrics, NO_REASON, Stage};
use gatehouse_store::{StoreError, TaskGrantRecord};
use gatehouse_tools::{BuiltinTools, ToolDefinition, ToolError, ToolOutput};
use gatehouse_upstream::model::{
    CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, GetPromptResponse,
    Prompt, ReadResourceResponse, Resource, ResourceTemplate, Tool,
};
use gatehouse_upstream::{CallContext, UpstreamError, UpstreamInput, UpstreamSet};
use serde_json::{Map, Value};

use crate::Caller;
use crate::call_limits::CallLimits;
use crate::identity::{IDENTITY_META, IdentityClaims, IdentitySigner, IdentitySlot};
use crate::incidents::Incidents;
use crate::param_headers::{ParamAnnotations, ParamHeaders};
use crate::refusal::Refusal;
use crate::resource_routes::{self, ResourceRoutes};
use crate::stream_credential::LapsedStream;
use crate::tool_pins::{PinError, PinVerdict, ToolPins};

/// A tool as `tools/list` shows it to one principal.
#[derive(Debug, Clone)]
pub struct ListedTool {
    pub definition: ToolDefinition,
    pub access: Access,
}

/// An upstream's tool as `tools/list` shows it to one principal: its
/// definition as the upstream gave it, under the gateway's name.
#[derive(Debug, Clone)]
pub struct ListedUpstreamTool {
    pub tool: Tool,
    pub access: Access,
}

/// What a permitted call produced.
#[derive(Debug)]
pub enum CallResult {
    /// A built-in tool's output, or its failure as a tool result.
    Builtin(Result<ToolOutput, ToolError>),
    /// An upstream's answer, passed through as it came (content,
    /// structured content, `isError`; or, 2026-07-28, the input it needs
    /// before it can answer).
    Upstream(CallToolResponse),
}

/// The `_meta` keys that are Gatehouse's own (operation token, task) and
/// never leave it.
const GATEHOUSE_META_PREFIX: &str = "io.gatehouse/";

/// Why the pins stop a call of an upstream tool.
enum PinRefusal {
    /// Changed since reviewed, or not listed: refused with this reason.
    Refused(DenyReason, String),
    /// The upstream could not list its tools, so the definition could not
    /// be checked (and the call could not have run).
    Unreachable(UpstreamError),
}

/// A call refused until a human approves it: where to send the human.
#[derive(Debug, Clone)]
pub struct PendingApproval {
    pub deny: Deny,
    pub approval_id: String,
    /// The approval page, when the authorization server serves one.
    pub url: Option<String>,
    pub expires_at: Timestamp,
}

/// The arguments of one call: as the tool gets them, and as every audit
/// record of the call shows them.
struct CallArgs<'a> {
    exact: &'a Value,
    /// The tool's `redact` list in the policy: masked in the audit log and
    /// for the approver.
    redact_fields: &'a [String],
    /// Redacted for the audit log.
    redacted: Value,
    /// The keyed hash of the canonical exact arguments (`gatehouse
    /// approvals hash` computes it), for a call that needs approval (the
    /// value its operation token is bound to, so the record proves which
    /// arguments were approved and ran) and for one whose record does not
    /// hold the arguments as they are (a string cut at 16 KiB: what was
    /// left out could be what the call sent; a NUL). Left out elsewhere: it
    /// would cost every call, and would let a redacted secret be guessed.
    sha256: Option<String>,
}

/// Why a call produced no tool result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{}", .0.message())]
    Denied(Deny),
    #[error("{}", .0.deny.message())]
    ApprovalRequired(PendingApproval),
    /// Approvals or the operation-token store could not be reached: the
    /// call is refused (fail closed).
    #[error("approvals are unavailable: {0}")]
    Unavailable(String),
    /// No record could be written, so the call is refused: no audit, no call.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The tool ran (it may have had its effect) and its outcome record
    /// could not be written: its answer is withheld, and the caller is told
    /// it ran, so that it does not retry as if nothing had happened.
    #[error("the call ran, but its outcome could not be recorded: {0}")]
    OutcomeUnrecorded(AuditError),
    /// The upstream serving the tool failed (down, slow, garbage); the
    /// call was permitted and audited with this error's code.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The pinned tool definitions could not be read: upstream tools are
    /// refused (fail closed).
    #[error("{0}")]
    PinsUnavailable(String),
}

pub struct Gateway {
    /// Replaced as a whole when the policy file changes; each request takes
    /// one snapshot, so a reload never mixes two policies in one decision.
    policy: Arc<SharedPolicy>,
    tools: BuiltinTools,
    /// Operation tokens; without them an `approval` tool is always refused.
    approvals: Option<Arc<Approvals>>,
    /// Tasks declared at `initialize`.
    task_grants: Option<Arc<TaskGrants>>,
    audit: AuditLog,
    redactor: Redactor,
    clock: Arc<dyn Clock>,
    limits: CallLimits,
    /// MCP servers whose tools the gateway serves beside its own.
    upstreams: Option<Arc<UpstreamSet>>,
    /// Their tools' pinned definitions; without them nothing is pinned.
    pins: Option<Arc<ToolPins>>,
    /// The upstream resources watched by `subscriptions/listen` streams.
    watches: ResourceWatches,
    /// Which upstream serves which resource URI, kept for a moment.
    resource_routes: ResourceRoutes,
    /// Signs the identity JWT for upstreams with `forward_identity`.
    identity: IdentitySlot,
    /// Decisions, outcomes and the latency of each stage, for /metrics.
    metrics: Arc<Metrics>,
    /// Violations adding up to incidents, task grants overrunning.
    incidents: Option<Arc<Incidents>>,
}

/// JSON-RPC's "method not found".
const METHOD_NOT_FOUND: i32 = -32601;

/// An upstream and what it listed, or `Err(())` when its listing failed.
type ListedOrFailed<'a, T> = (&'a gatehouse_upstream::Upstream, Result<Vec<T>, ()>);

/// Enabled upstreams in the order names are routed: prefixed ones before
/// one without a prefix (see `UpstreamSet::route`).
fn routing_order(upstreams: &UpstreamSet) -> Vec<&gatehouse_upstream::Upstream> {
    let mut ordered: Vec<_> = upstreams.iter().filter(|u| u.config().enabled).collect();
    ordered.sort_by_key(|u| u.config().effective_prefix().is_empty());
    ordered
}

/// An upstream's request state that reads as one of Gatehouse's held
/// calls would send the caller's next call (the one bringing the answers)
/// to Gatehouse's held calls, refused there as replaying or probing, and
/// recorded against the caller: the upstream's answer is refused instead.
fn not_posing_as_a_held_call(
    upstream: &str,
    answer: CallToolResponse,
) -> Result<CallToolResponse, UpstreamError> {
    match &answer {
        CallToolResponse::InputRequired(asked)
            if asked
                .request_state
                .as_deref()
                .is_some_and(|state| state.starts_with(crate::held_calls::HELD_STATE_PREFIX)) =>
        {
            Err(UpstreamError::Protocol {
                upstream: Arc::from(upstream),
                reason: "its request state begins as Gatehouse's own held calls do".into(),
            })
        }
        _ => Ok(answer),
    }
}

/// An upstream's answer without the protocol keys of its own `_meta` (its
/// `serverInfo`): the client talks to Gatehouse, not to the upstream.
fn without_upstream_protocol_meta(mut answer: CallToolResult) -> CallToolResult {
    if let Some(meta) = answer.meta.as_mut() {
        meta.0
            .retain(|key, _| !key.starts_with("io.modelcontextprotocol/"));
        if meta.0.is_empty() {
            answer.meta = None;
        }
    }
    answer
}

/// The tenant whose share of an upstream's slots a call of `caller` takes
/// (`slot_shares.rs` in gatehouse-upstream): its own with tenancy on;
/// with tenancy off every caller is in the one tenant, and only the
/// upstream's limit applies.
fn tenant_share(policy: &Policy, caller: &Caller) -> Option<Arc<str>> {
    policy
        .tenancy_enabled()
        .then(|| Arc::from(caller.principal.tenant.as_str()))
}

/// The caller whose share of an upstream's slots a call of `caller` takes
/// (`slot_shares.rs` in gatehouse-upstream): the person behind it, across
/// their agents and credentials, else the agent; each as named by its
/// issuer, in its tenant. Each part is prefixed with its length, so that
/// no two callers share a key whatever their names hold. `None` with
/// authentication off: every client is the one anonymous caller, and a
/// share of its own would only cap the whole deployment.
fn caller_share(caller: &Caller) -> Option<Arc<str>> {
    let principal = &caller.principal;
    if principal.credential.kind == gatehouse_core::CredentialKind::Anonymous {
        return None;
    }
    let (kind, name) = match &principal.human {
        Some(human) => ('h', human.as_str()),
        None => ('a', principal.agent.as_str()),
    };
    let tenant = &principal.tenant;
    let issuer = principal.issuer.as_deref().unwrap_or("");
    Some(Arc::from(format!(
        "{}:{tenant}{}:{issuer}{kind}{}:{name}",
        tenant.len(),
        issuer.len(),
        name.len()
    )))
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn result_size(output: &ToolOutput) -> u64 {
    let structured = output.structured.as_ref().map_or(0, json_len);
    u64::try_from(output.text.len() + structured).unwrap_or(u64::MAX)
}

/// One upstream resource, as one connection to the upstream (one tenant's)
/// subscribes to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WatchKey {
    upstream: Arc<str>,
    tenant: Option<String>,
    uri: Arc<str>,
}

type SettlingLocks = std::collections::HashMap<WatchKey, Arc<tokio::sync::Mutex<()>>>;

/// How many watches each upstream resource has, and one lock per resource
/// held across each subscribe or unsubscribe at the upstream: a second
/// watcher counts on the first's subscription only once it is settled (and
/// subscribes itself if it failed), and an unsubscribe never overtakes a
/// later subscribe. Other resources and upstreams do not wait.
#[derive(Clone, Default)]
struct ResourceWatches {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<WatchKey, usize>>>,
    settling: Arc<std::sync::Mutex<SettlingLocks>>,
}

/// The right to change one resource's subscription at its upstream.
struct Settling {
    key: WatchKey,
    watches: ResourceWatches,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Settling {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Clones of a lock are made only under this mutex: one left only in
        // the map has nobody waiting for it.
        let mut locks = self.watches.settling_locks();
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

impl ResourceWatches {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<WatchKey, usize>> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn settling_locks(&self) -> std::sync::MutexGuard<'_, SettlingLocks> {
        self.settling
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until nobody else changes `key`'s subscription.
    async fn settling(&self, key: &WatchKey) -> Settling {
        let lock = Arc::clone(self.settling_locks().entry(key.clone()).or_default());
        let guard = lock.lock_owned().await;
        Settling {
            key: key.clone(),
            watches: self.clone(),
            guard: Some(guard),
        }
    }

    /// The resources of `upstream` watched now.
    fn keys_of(&self, upstream: &str) -> Vec<WatchKey> {
        self.lock()
            .keys()
            .filter(|key| &*key.upstream == upstream)
            .cloned()
            .collect()
    }

    /// Counts a watch; true for the first (the gateway subscribes then).
    fn acquire(&self, key: &WatchKey) -> bool {
        let mut watches = self.lock();
        let count = watches.entry(key.clone()).or_insert(0);
        *count += 1;
        *count == 1
    }

    /// Counts a watch off; true for the last (the gateway unsubscribes then).
    fn release(&self, key: &WatchKey) -> bool {
        let mut watches = self.lock();
        let Some(count) = watches.get_mut(key) else {
            return false;
        };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return false;
        }
        watches.remove(key);
        true
    }
}

/// One listen stream's watch of one upstream resource; the last one to go
/// ends the gateway's subscription at the upstream.
pub struct ResourceWatch {
    key: WatchKey,
    watches: ResourceWatches,
    upstreams: Arc<UpstreamSet>,
}

impl ResourceWatch {
    /// The upstream whose resource is watched.
    pub fn upstream(&self) -> &Arc<str> {
        &self.key.upstream
    }

    pub fn uri(&self) -> &str {
        &self.key.uri
    }
}

impl Drop for ResourceWatch {
    fn drop(&mut self) {
        // Without a runtime the process is ending: nothing to unsubscribe.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let watches = self.watches.clone();
        let upstreams = self.upstreams.clone();
        let key = self.key.clone();
        runtime.spawn(async move {
            let _settling = watches.settling(&key).await;
            if !watches.release(&key) {
                return;
            }
            let Ok(upstream) = upstreams.get(&key.upstream) else {
                return;
            };
            if let Err(e) = upstream
                .subscription(key.tenant.as_deref(), None, &key.uri, false)
                .await
            {
                tracing::debug!(upstream = %key.upstream, reason = e.code(), "could not unsubscribe from an upstream resource nobody watches");
            }
        });
    }
}

impl Gateway {
    pub fn new(
        policy: Arc<SharedPolicy>,
        tools: BuiltinTools,
        audit: AuditLog,
        redactor: Redactor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Gateway {
            policy,
            tools,
            approvals: None,
            task_grants: None,
            audit,
            redactor,
            clock,
            limits: CallLimits::default(),
            upstreams: None,
            pins: None,
            watches: ResourceWatches::default(),
            resource_routes: ResourceRoutes::default(),
            identity: IdentitySlot::default(),
            metrics: Arc::default(),
            incidents: None,
        }
    }

    /// Counts decisions, outcomes and stage latencies in `metrics` (shared
    /// with gate 1 and /metrics) instead of a registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Watches refusals and task grants for alerts (`[alerts]`).
    pub fn with_incidents(mut self, incidents: Arc<Incidents>) -> Self {
        self.incidents = Some(incidents);
        self
    }

    pub fn incidents(&self) -> Option<&Arc<Incidents>> {
        self.incidents.as_ref()
    }

    /// The keyed hash of `exact` when its record does not hold it as it
    /// is (see `CallArgs::sha256`): a string was cut, or a NUL is shown
    /// otherwise. Not for a redacted value: a password or a one-time code
    /// is few enough guesses for whoever holds the pepper to find it from
    /// the hash and the rest of the record.
    fn digest_unless_whole(&self, exact: &Value) -> Option<String> {
        let approvals = self.approvals.as_ref()?;
        gatehouse_audit::is_recorded_otherwise(exact).then(|| approvals.arguments_hash(exact))
    }

    /// After a refusal is recorded: a violation may make an incident.
    async fn watch_refusal(&self, caller: &Caller, reason: &str) {
        if let Some(incidents) = &self.incidents {
            incidents
                .refused(
                    &self.audit,
                    self.task_grants.as_deref(),
                    caller,
                    reason,
                    self.clock.now(),
                )
                .await;
        }
    }

    /// After a permit is recorded: a task grant may have overrun.
    async fn watch_permit(&self, caller: &Caller, policy: &Policy) {
        if let Some(incidents) = &self.incidents
            && caller.principal.task.is_some()
        {
            incidents
                .permitted(&self.audit, policy, caller, self.clock.now())
                .await;
        }
    }

    /// Writes an audit record and counts it: decisions, outcomes and
    /// anomalies by reason code, and the time spent waiting for the record
    /// to be durable. Every record of the gateway goes through here.
    async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.count(&event);
        let started = Instant::now();
        let written = self.audit.record(event).await;
        self.metrics.observe(Stage::Audit, started.elapsed());
        written
    }

    /// Writes records together, in this order, all or none (see `record`).
    async fn record_all(&self, events: Vec<AuditEvent>) -> Result<(), AuditError> {
        for event in &events {
            self.count(event);
        }
        let started = Instant::now();
        let written = self.audit.record_all(events).await;
        self.metrics.observe(Stage::Audit, started.elapsed());
        written
    }

    /// Counts a record in the metrics, by kind, outcome and reason.
    fn count(&self, event: &AuditEvent) {
        let reason = event.reason.as_deref().unwrap_or(NO_REASON);
        match event.kind {
            AuditKind::ToolDecision if event.outcome == Outcome::Success => {
                // The reason of a permit is the rule's text (it can name an
                // approval id): never a label.
                let reason = if event.approval.is_some() {
                    "approved"
                } else {
                    "permitted"
                };
                self.metrics.decision("allow", reason);
            }
            AuditKind::ToolDecision => self.metrics.decision("deny", reason),
            AuditKind::ToolOutcome => self.metrics.tool_outcome(event.outcome.as_str(), reason),
            AuditKind::Anomaly => self.metrics.anomaly(reason),
            _ => {}
        }
    }

    /// Signs the identity JWTs of `forward_identity` upstreams (set once,
    /// when the authorization server holding the keys has started).
    pub fn set_identity_signer(&self, signer: Arc<dyn IdentitySigner>) {
        self.identity.set(signer);
    }

    /// `meta` with the caller's identity JWT for `upstream` added, when the
    /// upstream asks for it. `Err`: it could not be signed (the call must
    /// not go without it).
    async fn with_identity(
        &self,
        upstream: &gatehouse_upstream::Upstream,
        principal: &Principal,
        meta: Option<Map<String, Value>>,
    ) -> Result<Option<Map<String, Value>>, UpstreamError> {
        if !upstream.config().forward_identity {
            return Ok(meta);
        }
        let signed = async {
            let signer = self.identity.get().ok_or(
                "no signing key: forward_identity needs the embedded authorization server",
            )?;
            let now = self.clock.now();
            let claims = IdentityClaims::new(
                signer.issuer(),
                upstream.config().identity_audience(),
                principal,
                now,
            )?;
            signer.sign(&claims, now).await
        };
        match signed.await {
            Ok(token) => {
                let mut meta = meta.unwrap_or_default();
                meta.insert(IDENTITY_META.to_string(), Value::String(token));
                Ok(Some(meta))
            }
            Err(reason) => {
                tracing::error!(upstream = upstream.name(), error = %reason, "cannot sign the caller's identity; the request is not sent");
                Err(UpstreamError::Credentials {
                    upstream: Arc::from(upstream.name()),
                    reason: format!("cannot sign the caller's identity: {reason}"),
                })
            }
        }
    }

    /// Pins the definitions of the upstreams' tools (see `tool_pins`).
    pub fn with_tool_pins(mut self, pins: Arc<ToolPins>) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Serves the tools of these upstream servers beside the built-in ones.
    pub fn with_upstreams(mut self, upstreams: Arc<UpstreamSet>) -> Self {
        self.upstreams = Some(upstreams);
        self
    }

    /// What the policy decides on for a tool: an upstream's tool under its
    /// upstream (whose section may cover it), else a built-in tool.
    fn tool_target<'a>(
        name: &'a str,
        route: Option<(&'a gatehouse_upstream::Upstream, &'a str)>,
    ) -> Target<'a> {
        match route {
            Some((upstream, _)) => Target::upstream(Kind::Tool, name, upstream.name()),
            None => Target::tool(name),
        }
    }

    /// Where a tool name leads: a built-in tool (they win over an upstream
    /// without a prefix), or an upstream and the tool's name there.
    fn route<'a>(&'a self, name: &'a str) -> Option<(&'a gatehouse_upstream::Upstream, &'a str)> {
        if BuiltinTools::definition(name).is_some() {
            return None;
        }
        self.upstreams.as_deref()?.route(name)
    }

    /// The upstream a tool name leads to, as calls are routed (`None`: a
    /// built-in tool, or one no upstream serves), for the policy check.
    pub fn tool_upstream<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.route(name).map(|(upstream, _)| upstream.name())
    }

    /// Whether a tenant may use an upstream at all: always without
    /// tenancy, never for an undeclared tenant, and for a tenant limited to
    /// a list of tools only when one of them is that upstream's.
    pub fn tenant_uses_upstream(&self, tenant: &str, upstream: &str) -> bool {
        let policy = self.policy();
        if !policy.tenant_allowed(tenant) {
            return false;
        }
        let Some(tools) = policy.tenant_tool_list(tenant) else {
            return true;
        };
        let Some(config) = self
            .upstreams
            .as_deref()
            .and_then(|set| set.get(upstream).ok())
            .map(|u| u.config())
        else {
            return false;
        };
        // Its prefix (enabled or not), or where the name is routed now.
        tools.iter().any(|tool| {
            config.own_name(tool).is_some()
                || self.route(tool).is_some_and(|(u, _)| u.name() == upstream)
        })
    }

    /// Whether calls of `name` go to `upstream`.
    fn routes_to(&self, name: &str, upstream: &gatehouse_upstream::Upstream) -> bool {
        BuiltinTools::definition(name).is_none()
            && self
                .upstreams
                .as_deref()
                .is_some_and(|set| set.routes_to(name, upstream))
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Enables operation tokens for `approval` tools.
    pub fn with_approvals(mut self, approvals: Arc<Approvals>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Enables tasks declared at MCP `initialize`.
    pub fn with_task_grants(mut self, grants: Arc<TaskGrants>) -> Self {
        self.task_grants = Some(grants);
        self
    }

    /// The current policy: one snapshot per request.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// The policy holder, shared with the authorization server.
    pub fn shared_policy(&self) -> &Arc<SharedPolicy> {
        &self.policy
    }

    /// Installs a new policy for every request that starts afterwards.
    pub fn replace_policy(&self, policy: Policy) {
        self.policy.replace(policy);
    }

    /// Grants the task an MCP client declared at `initialize`; a refusal
    /// is recorded as an anomaly and returned.
    pub async fn declare_task(
        &self,
        caller: &Caller,
        task: &str,
    ) -> Result<TaskGrantRecord, TaskGrantError> {
        let Some(grants) = &self.task_grants else {
            return Err(TaskGrantError::Store(StoreError::Unavailable(
                "task grants are not enabled".into(),
            )));
        };
        let origin = GrantOrigin {
            via: "initialize",
            source: caller.source.clone(),
            session: caller.session.clone(),
        };
        grants
            .grant(
                &self.policy(),
                &caller.principal,
                task,
                origin,
                self.clock.now(),
            )
            .await
    }

    /// Gate 2 for a caller, before anything it asks, on every transport:
    /// with tenants declared, a principal of another tenant is refused
    /// outright (audited as an anomaly). `Ok(Err(_))`: refused.
    pub async fn admit_caller(&self, caller: &Caller) -> Result<Result<(), Refusal>, AuditError> {
        let policy = self.policy();
        if policy.tenancy_enabled() && !policy.tenant_allowed(&caller.principal.tenant) {
            let refusal = Refusal::UnknownTenant;
            let detail = format!(
                "tenant {:?} is not declared in the policy",
                caller.principal.tenant
            );
            self.record_anomaly(caller, refusal.code(), detail).await?;
            return Ok(Err(refusal));
        }
        Ok(Ok(()))
    }

    /// Records an anomaly seen by the transport (e.g. a session that tries
    /// to switch to another task).
    pub async fn record_anomaly(
        &self,
        caller: &Caller,
        reason: &str,
        detail: String,
    ) -> Result<(), AuditError> {
        self.record(
            EventBuilder::new(AuditKind::Anomaly, Outcome::Denied, self.clock.now())
                .request_id(caller.request_id.as_deref())
                .principal(&caller.principal)
                .session(caller.session.clone())
                .source(caller.source.clone())
                .decision("deny")
                .reason(reason)
                .error(detail)
                .build(),
        )
        .await
    }

    /// Records that a long-lived stream (`what`) was ended because the
    /// credential it was opened with no longer holds (`lapse`).
    /// A record that cannot be written is logged: the stream ends anyway.
    pub async fn record_stream_lapsed(&self, caller: &Caller, what: LapsedStream, lapse: &str) {
        let written = self
            .record(
                EventBuilder::new(
                    AuditKind::Authentication,
                    Outcome::Failure,
                    self.clock.now(),
                )
                .request_id(caller.request_id.as_deref())
                .principal(&caller.principal)
                .session(caller.session.clone())
                .source(caller.source.clone())
                .decision("deny")
                .reason(gatehouse_alerts::CREDENTIAL_LAPSED)
                .error(format!(
                    "{} was ended: the credential it was opened with no longer holds ({lapse})",
                    what.described()
                ))
                .build(),
            )
            .await;
        if written.is_err() {
            tracing::error!(
                reason = lapse,
                session = caller.session.is_some(),
                "a stream or session ended, and its record could not be written"
            );
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The tools the principal may call, with their definitions.
    pub fn list_tools(&self, principal: &Principal) -> Vec<ListedTool> {
        self.policy()
            .visible_tools(principal)
            .into_iter()
            .filter_map(|(name, access)| {
                BuiltinTools::definition(name).map(|definition| ListedTool { definition, access })
            })
            .collect()
    }

    /// What every enabled upstream lists now, in routing order (prefixed
    /// upstreams first), for the caller's tenant. An upstream that cannot
    /// list now is left out and logged: one server down must not break a
    /// list.
    async fn listed_by_upstreams<'a, T>(
        &'a self,
        what: &'static str,
        list: impl Fn(&'a gatehouse_upstream::Upstream) -> BoxFuture<'a, Result<Vec<T>, UpstreamError>>,
    ) -> Vec<(&'a gatehouse_upstream::Upstream, Vec<T>)> {
        self.listed_or_failed(what, list)
            .await
            .into_iter()
            .filter_map(|(upstream, listed)| listed.ok().map(|items| (upstream, items)))
            .collect()
    }

    /// Each enabled upstream (in routing order) with what it listed, or
    /// `Err(())` when it could not (logged).
    async fn listed_or_failed<'a, T>(
        &'a self,
        what: &'static str,
        list: impl Fn(&'a gatehouse_upstream::Upstream) -> BoxFuture<'a, Result<Vec<T>, UpstreamError>>,
    ) -> Vec<ListedOrFailed<'a, T>> {
        let Some(upstreams) = &self.upstreams else {
            return Vec::new();
        };
        let mut all = Vec::new();
        for upstream in routing_order(upstreams) {
            match list(upstream).await {
                Ok(items) => all.push((upstream, Ok(items))),
                // A server without resources (or prompts) answers their
                // listing with "method not found": it offers none. Any other
                // error is a failed listing (what it listed before stands).
                Err(UpstreamError::Rpc {
                    code: METHOD_NOT_FOUND,
                    ..
                }) => {
                    tracing::debug!(upstream = upstream.name(), "an upstream has no {what}");
                    all.push((upstream, Ok(Vec::new())));
                }
                // No credential for this caller's tenant: the upstream serves
                // it nothing, now or later (until the secret is set).
                Err(e @ UpstreamError::Credentials { .. }) => {
                    tracing::warn!(upstream = upstream.name(), error = %e, "no credential for an upstream: it serves this caller nothing");
                    all.push((upstream, Ok(Vec::new())));
                }
                Err(e) => {
                    tracing::warn!(upstream = upstream.name(), reason = e.code(), error = %e, "cannot list the {what} of an upstream");
                    all.push((upstream, Err(())));
                }
            }
        }
        all
    }

    /// An upstream's tools, without those its pins withhold. Pins that
    /// cannot be read withhold every tool of the upstream (fail closed).
    async fn reviewed_tools(
        &self,
        upstream: &gatehouse_upstream::Upstream,
        tenant: Option<&str>,
        share: Option<&str>,
    ) -> Result<Vec<Tool>, UpstreamError> {
        let Some(pins) = &self.pins else {
            return upstream.list_tools(tenant, share).await;
        };
        let listing = pins.listing(upstream, tenant);
        let tools = upstream.list_tools(tenant, share).await?;
        match pins.review(upstream, &listing, tools).await {
            Ok(served) => Ok(served),
            Err(e) => {
                tracing::error!(upstream = upstream.name(), error = %e, "cannot check the upstream's tools against their pins; withholding them");
                Ok(Vec::new())
            }
        }
    }

    /// Whether the pins let a call of an upstream tool through: the verdict
    /// on the definition this instance last reviewed, or (none yet) on the
    /// one the upstream lists now. Let through, with that definition's
    /// `x-mcp-header` annotations (`None`: not pinned, none known).
    async fn pinned(
        &self,
        upstream: &gatehouse_upstream::Upstream,
        tool: &str,
        tenant: Option<&str>,
        share: Option<&str>,
    ) -> Result<Result<Option<Arc<ParamAnnotations>>, PinRefusal>, PinError> {
        let Some(pins) = &self.pins else {
            return Ok(Ok(None));
        };
        if upstream.config().pin == gatehouse_upstream::PinMode::Off {
            return Ok(Ok(None));
        }
        let verdict = match pins.verdict_and_annotations(upstream, tenant, tool) {
            Some(verdict) => Some(verdict),
            // Not in a listing reviewed moments ago: refused as unlisted.
            None if pins.recently_reviewed(upstream, tenant) => None,
            None => {
                let listing = pins.listing(upstream, tenant);
                match upstream.list_tools(tenant, share).await {
                    Ok(tools) => {
                        pins.review(upstream, &listing, tools).await?;
                        pins.verdict_and_annotations(upstream, tenant, tool)
                    }
                    Err(e) => return Ok(Err(PinRefusal::Unreachable(e))),
                }
            }
        };
        let name = upstream.name();
        Ok(match verdict {
            Some((PinVerdict::Serve, annotations)) => Ok(Some(annotations)),
            Some((PinVerdict::Withhold, _)) => Err(PinRefusal::Refused(
                DenyReason::ToolDefinitionChanged,
                format!(
                    "the definition of {tool:?} at upstream {name:?} differs from the pinned one; \
                     review it with `gatehouse upstreams diff {name}`"
                ),
            )),
            None => Err(PinRefusal::Refused(
                DenyReason::ToolDefinitionUnreviewed,
                format!("upstream {name:?} does not list {tool:?}"),
            )),
        })
    }

    /// The upstreams' tools the principal may call, under the gateway's
    /// names.
    pub async fn list_upstream_tools(&self, caller: &Caller) -> Vec<ListedUpstreamTool> {
        let tenant = Some(caller.principal.tenant.as_str());
        let policy = self.policy();
        // A caller's listings wait for its tenant's share, as its calls do.
        let share = tenant_share(&policy, caller);
        let share = share.as_deref();
        let mut listed = Vec::new();
        let mut seen = HashSet::new();
        for (upstream, tools) in self
            .listed_by_upstreams("tools", |u| Box::pin(self.reviewed_tools(u, tenant, share)))
            .await
        {
            for mut tool in tools {
                let name = UpstreamSet::tool_name(upstream, &tool.name);
                // Listed only where calls of the name go: not when a built-in
                // tool has it, nor (for an upstream without a prefix) when it
                // carries another upstream's prefix.
                if !self.routes_to(&name, upstream) {
                    continue;
                }
                let target = Target::upstream(Kind::Tool, &name, upstream.name());
                let access = policy.visibility(&caller.principal, &target);
                // Two upstreams offering one name: the one calls are routed
                // to (listed first) is shown, never both.
                if access == Access::Deny || !seen.insert(name.clone()) {
                    continue;
                }
                tool.name = name.into();
                listed.push(ListedUpstreamTool { tool, access });
            }
        }
        listed
    }

    /// The upstreams' catalogue changes, when there are upstreams.
    /// The names of the configured upstreams.
    pub fn upstream_names(&self) -> Vec<Arc<str>> {
        self.upstreams
            .as_deref()
            .map(|set| set.iter().map(|u| Arc::from(u.name())).collect())
            .unwrap_or_default()
    }

    pub fn upstream_changes(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<gatehouse_upstream::ListChanged>> {
        self.upstreams.as_deref().map(UpstreamSet::subscribe)
    }

    /// An upstream's catalogue changed (or it reconnected): its tools are
    /// reviewed against their pins at once, so a changed definition is
    /// recorded when it appears, not when someone next lists. An upstream
    /// whose credential is per tenant is reviewed at each tenant's next
    /// listing instead.
    pub async fn upstream_changed(&self, change: &gatehouse_upstream::ListChanged) {
        use gatehouse_upstream::ChangeKind;
        if matches!(change.kind, ChangeKind::Resources | ChangeKind::Reconnected) {
            self.resource_routes.forget();
        }
        if change.kind == ChangeKind::Reconnected {
            self.resubscribe(&change.upstream).await;
        }
        if !matches!(change.kind, ChangeKind::Tools | ChangeKind::Reconnected)
            || self.pins.is_none()
        {
            return;
        }
        let Some(upstream) = self
            .upstreams
            .as_deref()
            .and_then(|set| set.get(&change.upstream).ok())
        else {
            return;
        };
        // A tool the upstream just added is listed again at its first call,
        // not refused as unlisted for the next moments.
        if let Some(pins) = &self.pins {
            pins.forget_review(upstream, change.tenant.as_deref());
        }
        if !upstream.config().enabled || upstream.config().needs_tenant() {
            return;
        }
        if let Err(e) = self.reviewed_tools(upstream, None, None).await {
            tracing::warn!(upstream = upstream.name(), reason = e.code(), error = %e, "cannot list the tools of an upstream that changed");
        }
    }

    /// A reconnected upstream (a restarted child, a new session) has
    /// forgotten the gateway's subscriptions: every resource still watched
    /// is subscribed to again, or its watchers would wait for updates that
    /// never come.
    async fn resubscribe(&self, name: &str) {
        let Some(upstream) = self.upstreams.as_deref().and_then(|set| set.get(name).ok()) else {
            return;
        };
        for key in self.watches.keys_of(name) {
            let _settling = self.watches.settling(&key).await;
            // Its last watcher may have gone meanwhile.
            if !self.watches.lock().contains_key(&key) {
                continue;
            }
            if let Err(e) = upstream
                .subscription(key.tenant.as_deref(), None, &key.uri, true)
                .await
            {
                tracing::warn!(upstream = name, reason = e.code(), error = %e, "could not subscribe again to a watched resource after the upstream reconnected");
            }
        }
    }

    /// The health of each upstream server, for readiness.
    pub fn upstream_health(&self) -> Vec<gatehouse_upstream::Health> {
        self.upstreams
            .as_deref()
            .map(UpstreamSet::health)
            .unwrap_or_default()
    }

    /// Whether upstream servers are configured (then prompts and resources
    /// are offered).
    pub fn has_upstreams(&self) -> bool {
        self.upstreams.is_some()
    }

    /// The upstreams' prompts the principal may get, under the gateway's
    /// names (prefixed like tools).
    pub async fn list_upstream_prompts(&self, caller: &Caller) -> Vec<Prompt> {
        let tenant = Some(caller.principal.tenant.as_str());
        let policy = self.policy();
        let share = tenant_share(&policy, caller);
        let share = share.as_deref();
        let mut listed = Vec::new();
        let mut seen = HashSet::new();
        for (upstream, prompts) in self
            .listed_by_upstreams("prompts", |u| Box::pin(u.list_prompts(tenant, share)))
            .await
        {
            for mut prompt in prompts {
                let name = UpstreamSet::tool_name(upstream, &prompt.name);
                // Listed only where requests for the name go (see `routes_to`).
                let routed = self
                    .upstreams
                    .as_deref()
                    .is_some_and(|set| set.routes_to(&name, upstream));
                let target = Target::upstream(Kind::Prompt, &name, upstream.name());
                // Prompts are got outright or not at all (see `read_only`).
                if !routed
                    || policy.visibility(&caller.principal, &target) != Access::Allow
                    || !seen.insert(name.clone())
                {
                    continue;
                }
                prompt.name = name;
                listed.push(prompt);
            }
        }
        listed
    }

    /// The upstreams' resources the principal may read; URIs keep their
    /// scheme (they are routed by which upstream lists them).
    pub async fn list_upstream_resources(&self, caller: &Caller) -> Vec<Resource> {
        let tenant = Some(caller.principal.tenant.as_str());
        let policy = self.policy();
        let share = tenant_share(&policy, caller);
        let share = share.as_deref();
        let mut listed = Vec::new();
        for (upstream, resources) in self
            .listed_by_upstreams("resources", |u| Box::pin(u.list_resources(tenant, share)))
            .await
        {
            listed.extend(resources.into_iter().filter(|resource| {
                let target = Target::upstream(Kind::Resource, &resource.uri, upstream.name());
                policy.visibility(&caller.principal, &target) == Access::Allow
            }));
        }
        listed
    }

    /// The upstreams' resource templates, shown when the policy lets the
    /// principal read what the template names (its section or an entry
    /// for the template itself).
    pub async fn list_upstream_resource_templates(&self, caller: &Caller) -> Vec<ResourceTemplate> {
        let tenant = Some(caller.principal.tenant.as_str());
        let policy = self.policy();
        let share = tenant_share(&policy, caller);
        let share = share.as_deref();
        let mut listed = Vec::new();
        for (upstream, templates) in self
            .listed_by_upstreams("resource templates", |u| {
                Box::pin(u.list_resource_templates(tenant, share))
            })
            .await
        {
            listed.extend(templates.into_iter().filter(|template| {
                let target =
                    Target::upstream(Kind::Resource, &template.uri_template, upstream.name());
                policy.visibility(&caller.principal, &target) == Access::Allow
            }));
        }
        listed
    }

    /// Gate 2 and audit for a request that only reads (a prompt, a
    /// resource), like a tool call: the decision (allowed outright or
    /// refused — there are no side effects to approve one by one, so a role
    /// allowed only with approval gets `approval_required` and no approval
    /// is filed), the rate limits, the decision recorded before `fetch`
    /// runs and its outcome after. `policy` is the snapshot `decision` was
    /// made under: one request is decided under one policy.
    #[allow(clippy::too_many_arguments)]
    async fn read_only<R>(
        &self,
        caller: &Caller,
        policy: &Policy,
        target: &Target<'_>,
        args: &CallArgs<'_>,
        decision: Decision,
        started: Instant,
        fetch: impl Future<Output = Result<R, UpstreamError>>,
    ) -> Result<R, CallError> {
        let name = target.name;
        let permit = match decision {
            Decision::Permit(permit) => permit,
            Decision::Deny(deny) => {
                return Err(self.refuse(caller, name, args, deny, None, started).await);
            }
            Decision::NeedsApproval(_) => {
                let deny = Deny::new(target, DenyReason::ApprovalRequired);
                let detail = Some(format!(
                    "{} '{name}' is not approved one use at a time: allow the role outright or not at all",
                    target.kind.as_str()
                ));
                return Err(self.refuse(caller, name, args, deny, detail, started).await);
            }
        };
        if let Err(retry_after_secs) =
            self.limits
                .check(policy, &caller.principal, target, self.clock.now())
        {
            let deny = Deny::new(target, DenyReason::RateLimited { retry_after_secs });
            return Err(self.refuse(caller, name, args, deny, None, started).await);
        }
        self.metrics.observe(Stage::Authorize, started.elapsed());
        self.record(
            self.tool_event(
                caller,
                name,
                args,
                AuditKind::ToolDecision,
                Outcome::Success,
            )
            .decision("allow")
            .reason(permit.rule())
            .build(),
        )
        .await?;
        self.watch_permit(caller, policy).await;
        let dispatched = Instant::now();
        let result = fetch.await;
        self.metrics.observe(Stage::Dispatch, dispatched.elapsed());
        let outcome = match &result {
            Ok(_) => self.tool_event(caller, name, args, AuditKind::ToolOutcome, Outcome::Success),
            Err(error) => self.upstream_failure(
                self.tool_event(caller, name, args, AuditKind::ToolOutcome, Outcome::Error),
                error,
            ),
        };
        self.record(outcome.latency_us(micros_since(started)).build())
            .await
            .map_err(CallError::OutcomeUnrecorded)?;
        result.map_err(CallError::Upstream)
    }

    /// The outcome record of a call an upstream failed: its code, and its
    /// text redacted.
    fn upstream_failure(&self, event: EventBuilder, error: &UpstreamError) -> EventBuilder {
        event
            .reason(error.code())
            .error(self.redactor.redact_text(&error.to_string()))
    }

    /// The upstream serving a resource URI: the one that lists it or has a
    /// template naming it. A URI that more than one upstream claims is
    /// refused, not routed to the first: an upstream must not be able to
    /// take over another's resources (and the caller's identity sent with
    /// the read) by listing their URIs. `Unknown` when none serves it. The
    /// listings are kept for a moment (`resource_routes.rs`).
    async fn resource_upstream<'a>(
        &'a self,
        caller: &'a Caller,
        uri: &str,
    ) -> Result<&'a gatehouse_upstream::Upstream, UpstreamError> {
        // Refused by the policy before anything else (`uri_too_long`): no
        // upstream is listed for it.
        if uri.len() > gatehouse_authz::MAX_RESOURCE_URI_BYTES {
            return Err(UpstreamError::Unknown(String::new()));
        }
        let tenant = caller.principal.tenant.as_str();
        let share = tenant_share(&self.policy(), caller);
        let listing = self
            .resource_routes
            .listing(tenant, |before| {
                self.routing_listing(tenant, share.as_deref(), before)
            })
            .await;
        let upstreams = self.upstreams.as_deref();
        // An upstream that could not list yet may serve this URI too: no
        // other upstream gets the read meanwhile (it may copy the URI, or
        // have a template broad enough to name it).
        if let Some(unknown) = listing
            .unknown
            .iter()
            .find(|name| self.tenant_uses_upstream(tenant, name))
        {
            return Err(UpstreamError::Unavailable {
                upstream: Arc::from(unknown.as_str()),
                reason: format!(
                    "its resources could not be listed yet, so which upstream serves {uri:?} \
                     is not known"
                ),
            });
        }
        // Only upstreams this tenant may use: another tenant's upstream
        // neither serves this tenant's reads nor makes them ambiguous (its
        // claims would tell which URIs it lists).
        let claims = listing.claims(uri, |name| self.tenant_uses_upstream(tenant, name));
        match claims.as_slice() {
            [] => Err(UpstreamError::Unknown(uri.to_string())),
            [one] => upstreams
                .ok_or_else(|| UpstreamError::Unknown(uri.to_string()))?
                .get(one),
            several => Err(UpstreamError::Ambiguous {
                uri: uri.to_string(),
                upstreams: several.iter().map(|name| Arc::from(*name)).collect(),
            }),
        }
    }

    /// Every upstream's resource URIs and templates, for routing; one
    /// whose listing fails keeps what `before` says it listed.
    async fn routing_listing(
        &self,
        tenant: &str,
        share: Option<&str>,
        before: Option<Arc<resource_routes::Listing>>,
    ) -> resource_routes::Listing {
        let tenant = Some(tenant);
        let resources = self
            .listed_or_failed("resources", |u| Box::pin(u.list_resources(tenant, share)))
            .await
            .into_iter()
            .map(|(upstream, listed)| {
                let uris = listed.map(|all| all.into_iter().map(|r| r.uri.to_string()).collect());
                (upstream.name().to_string(), uris)
            })
            .collect();
        let templates = self
            .listed_or_failed("resource templates", |u| {
                Box::pin(u.list_resource_templates(tenant, share))
            })
            .await
            .into_iter()
            .map(|(upstream, listed)| {
                let names = listed.map(|all| {
                    all.into_iter()
                        .map(|t| t.uri_template.to_string())
                        .collect()
                });
                (upstream.name().to_string(), names)
            })
            .collect();
        let (resources, mut unknown) =
            resource_routes::merged(resources, before.as_ref().map(|b| &b.resources[..]));
        let (templates, unknown_templates) =
            resource_routes::merged(templates, before.as_ref().map(|b| &b.templates[..]));
        for name in unknown_templates {
            if !unknown.contains(&name) {
                unknown.push(name);
            }
        }
        resource_routes::Listing {
            resources,
            templates,
            unknown,
        }
    }

    /// Gate 2 and audit for a request about one upstream resource (read,
    /// subscribe, unsubscribe), as for reading it (see `read_only`); `fetch`
    /// runs at the upstream that lists the resource (or a template naming it).
    async fn resource_request<'a, R, Fut>(
        &'a self,
        caller: &'a Caller,
        uri: &'a str,
        fetch: impl FnOnce(&'a gatehouse_upstream::Upstream) -> Fut,
    ) -> Result<R, CallError>
    where
        Fut: Future<Output = Result<R, UpstreamError>>,
    {
        let started = Instant::now();
        let serving = self.resource_upstream(caller, uri).await;
        let target = Target {
            kind: Kind::Resource,
            name: uri,
            upstream: serving.as_ref().ok().map(|u| u.name()),
        };
        let none = Value::Object(Map::new());
        let args = CallArgs {
            exact: &none,
            redact_fields: &[],
            redacted: none.clone(),
            sha256: None,
        };
        // Refused for what it is, whatever the policy would say: the read
        // cannot go to either claimant, or (an upstream that has not listed
        // yet may serve it) which upstream serves it is not known.
        if let Err(
            unroutable @ (UpstreamError::Ambiguous { .. } | UpstreamError::Unavailable { .. }),
        ) = serving
        {
            let refused = self
                .tool_event(caller, uri, &args, AuditKind::ToolDecision, Outcome::Denied)
                .decision("deny")
                .reason(unroutable.code())
                .error(unroutable.to_string())
                .build();
            self.record(refused).await?;
            return Err(CallError::Upstream(unroutable));
        }
        let policy = self.policy();
        let decision = policy.authorize_target(&caller.principal, &target);
        let fetch = async {
            match serving {
                Ok(upstream) => fetch(upstream).await,
                // Named in the policy, but no upstream serves it.
                Err(e) => Err(e),
            }
        };
        self.read_only(caller, &policy, &target, &args, decision, started, fetch)
            .await
    }

    /// Authorizes and audits `resources/read` and reads the resource from
    /// the upstream that lists it (or a template of which names it).
    pub async fn read_resource(
        &self,
        caller: &Caller,
        uri: &str,
        input: UpstreamInput,
        mut call: CallContext,
    ) -> Result<ReadResourceResponse, CallError> {
        let tenant = Some(caller.principal.tenant.as_str());
        call.tenant_share = tenant_share(&self.policy(), caller);
        call.caller_share = caller_share(caller);
        self.resource_request(caller, uri, |upstream| async move {
            let meta = self
                .with_identity(upstream, &caller.principal, None)
                .await?;
            upstream
                .read_resource_with(tenant, uri, meta, input, call)
                .await
        })
        .await
    }

    /// Watches an upstream resource for a `subscriptions/listen` stream or
    /// a session's `resources/subscribe`:
    /// under the same gate 2 and audit as reading it (a caller who may not
    /// read it may not watch it either). The gateway subscribes at the
    /// upstream for the first watcher; the subscription ends with the last
    /// (the returned watch ends when dropped).
    pub async fn watch_resource(
        &self,
        caller: &Caller,
        uri: &str,
    ) -> Result<ResourceWatch, CallError> {
        let tenant = Some(caller.principal.tenant.as_str());
        // The caller's subscription waits for its tenant's share, as its
        // reads do.
        let share = tenant_share(&self.policy(), caller);
        let share = share.as_deref();
        self.resource_request(caller, uri, |upstream| async move {
            let Some(upstreams) = self.upstreams.clone() else {
                return Err(UpstreamError::Unknown(uri.to_string()));
            };
            // Counted per connection, as the upstream sees subscriptions:
            // on a connection tenants share (a credential of its own, not
            // per tenant), one tenant's last watch ending must not
            // unsubscribe a resource another tenant still watches.
            let key = WatchKey {
                upstream: upstream.name().into(),
                tenant: upstream
                    .config()
                    .needs_tenant()
                    .then(|| tenant.map(str::to_string))
                    .flatten(),
                uri: uri.into(),
            };
            let _settling = self.watches.settling(&key).await;
            if self.watches.acquire(&key)
                && let Err(e) = upstream.subscription(tenant, share, uri, true).await
            {
                self.watches.release(&key);
                return Err(e);
            }
            Ok(ResourceWatch {
                key,
                watches: self.watches.clone(),
                upstreams,
            })
        })
        .await
    }

    /// `completion/complete` for a prompt's or a resource template's
    /// argument: under the same gate 2 and audit as getting the prompt or
    /// reading the resource, at the upstream that serves it (under its
    /// own name for the prompt).
    pub async fn complete(
        &self,
        caller: &Caller,
        mut params: CompleteRequestParams,
    ) -> Result<CompleteResult, CallError> {
        use gatehouse_upstream::model::Reference;
        let started = Instant::now();
        let tenant = Some(caller.principal.tenant.as_str());
        // The caller's `_meta` stays here, as for every request.
        params.meta = None;
        let (kind, name, upstream) = match &mut params.r#ref {
            Reference::Prompt(prompt) => {
                let name = prompt.name.clone();
                let route = self
                    .upstreams
                    .as_deref()
                    .and_then(|u| u.route(&name))
                    .map(|(upstream, upstream_name)| (upstream, upstream_name.to_string()));
                let upstream = match route {
                    Some((upstream, upstream_name)) => {
                        prompt.name = upstream_name;
                        Ok(upstream)
                    }
                    None => Err(UpstreamError::Unknown(name.clone())),
                };
                (Kind::Prompt, name, upstream)
            }
            Reference::Resource(resource) => {
                let uri = resource.uri.clone();
                let upstream = self.resource_upstream(caller, &uri).await;
                (Kind::Resource, uri, upstream)
            }
            _ => {
                return Err(CallError::Upstream(UpstreamError::Unknown(
                    "a completion reference of an unknown kind".into(),
                )));
            }
        };
        let target = Target {
            kind,
            name: &name,
            upstream: upstream.as_ref().ok().map(|u| u.name()),
        };
        let none = Value::Object(Map::new());
        let args = CallArgs {
            exact: &none,
            redact_fields: &[],
            redacted: none.clone(),
            sha256: None,
        };
        let policy = self.policy();
        let mut decision = policy.authorize_target(&caller.principal, &target);
        // The resolved values the upstream is asked to complete from are
        // held to the prompt's argument constraints, as `prompts/get` holds
        // them; the partly typed value cannot be (`py` is not yet one of
        // `["python", "rust"]`), so what the upstream suggests for it is
        // (below): a completion of `path` must not list what the constraint
        // keeps the caller from.
        if !matches!(decision, Decision::Deny(_)) {
            let context: Map<String, Value> = params
                .context
                .as_ref()
                .and_then(|c| c.arguments.as_ref())
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect()
                })
                .unwrap_or_default();
            if let Err(v) = policy.check_given_arguments(&target, &context) {
                decision = Decision::Deny(Deny::new(
                    &target,
                    DenyReason::ConstraintViolated {
                        argument: v.argument,
                        rule: v.rule,
                    },
                ));
            }
        }
        let share = tenant_share(&policy, caller);
        let completed = params.argument.name.clone();
        let fetch = async {
            match upstream {
                Ok(upstream) => {
                    let caller = caller_share(caller);
                    upstream
                        .complete(tenant, share.as_deref(), caller.as_deref(), params)
                        .await
                }
                Err(e) => Err(e),
            }
        };
        let mut result = self
            .read_only(caller, &policy, &target, &args, decision, started, fetch)
            .await?;
        let suggested = result.completion.values.len();
        if target.kind == Kind::Resource && policy.has_entries_within(&name) {
            // Entries within the template may keep some of the names it
            // completes from this caller: none is passed on.
            result.completion.values.clear();
            result.completion.has_more = None;
        }
        result.completion.values.retain(|value| {
            let mut one = Map::new();
            one.insert(completed.clone(), Value::String(value.clone()));
            policy.check_given_arguments(&target, &one).is_ok()
        });
        if result.completion.values.len() != suggested {
            result.completion.total = None;
        }
        Ok(result)
    }

    /// Authorizes and audits `prompts/get` (see `read_only`) and gets the
    /// prompt from the upstream that serves it.
    pub async fn get_prompt(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Option<Map<String, Value>>,
        input: UpstreamInput,
        mut call: CallContext,
    ) -> Result<GetPromptResponse, CallError> {
        let started = Instant::now();
        let route = self.upstreams.as_deref().and_then(|u| u.route(name));
        let target = Target {
            kind: Kind::Prompt,
            name,
            upstream: route.map(|(upstream, _)| upstream.name()),
        };
        let policy = self.policy();
        let arguments = arguments.unwrap_or_default();
        let as_value = Value::Object(arguments.clone());
        let redact_fields = policy.redact_fields_for(&target);
        let redacted = self.redactor.redact_arguments(&as_value, redact_fields);
        let args = CallArgs {
            exact: &as_value,
            redact_fields,
            sha256: self.digest_unless_whole(&as_value),
            redacted,
        };
        let decision = policy.authorize_target_call(&caller.principal, &target, &as_value);
        let tenant = Some(caller.principal.tenant.as_str());
        call.tenant_share = tenant_share(&policy, caller);
        call.caller_share = caller_share(caller);
        let fetch = async {
            match route {
                Some((upstream, upstream_name)) => {
                    let meta = self
                        .with_identity(upstream, &caller.principal, None)
                        .await?;
                    upstream
                        .get_prompt_with(tenant, upstream_name, Some(arguments), meta, input, call)
                        .await
                }
                // Named in the policy, but no upstream serves it.
                None => Err(UpstreamError::Unknown(name.to_string())),
            }
        };
        self.read_only(caller, &policy, &target, &args, decision, started, fetch)
            .await
    }

    /// The fields every record of one tool call shares.
    fn tool_event(
        &self,
        caller: &Caller,
        name: &str,
        args: &CallArgs<'_>,
        kind: AuditKind,
        outcome: Outcome,
    ) -> EventBuilder {
        // The grant is the revocable handle; a declared task's session is
        // recorded on the grant itself.
        let session_or_grant = match &caller.principal.task {
            Some(grant) => Some(grant.id.clone()),
            None => caller.session.clone(),
        };
        EventBuilder::new(kind, outcome, self.clock.now())
            .request_id(caller.request_id.as_deref())
            .principal(&caller.principal)
            .session(session_or_grant)
            .source(caller.source.clone())
            .tool(name)
            .arguments(args.redacted.clone())
            .args_sha256(args.sha256.clone())
    }

    /// The record of a refused call; the same wherever the refusal surfaces.
    /// The decision record of a call refused because it could not be
    /// checked (its upstream or the pin store unreachable): `reason` is the
    /// code, `error` the text, redacted.
    fn unchecked_event(
        &self,
        caller: &Caller,
        name: &str,
        args: &CallArgs<'_>,
        reason: &str,
        error: &str,
        started: Instant,
    ) -> gatehouse_core::AuditEvent {
        self.tool_event(caller, name, args, AuditKind::ToolDecision, Outcome::Denied)
            .decision("deny")
            .reason(reason)
            .error(self.redactor.redact_text(error))
            .latency_us(micros_since(started))
            .build()
    }

    fn denial_event(
        &self,
        caller: &Caller,
        name: &str,
        args: &CallArgs<'_>,
        deny: &Deny,
    ) -> EventBuilder {
        self.tool_event(caller, name, args, AuditKind::ToolDecision, Outcome::Denied)
            .decision("deny")
            .reason(deny.reason.code())
            .error(deny.message())
    }

    /// For a caller holding an OAuth access token: if the token lacks the
    /// scope the tool needs, records the denial and returns it, so the HTTP
    /// layer can answer 403 with a step-up challenge. Every other decision is
    /// left to `call_tool` (and recorded there, once).
    pub async fn scope_denial(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Option<&Map<String, Value>>,
    ) -> Result<Option<Deny>, AuditError> {
        if caller.principal.credential.kind != CredentialKind::AccessToken {
            return Ok(None);
        }
        let policy = self.policy();
        // The rule `call_tool` will apply: an upstream tool's section, not
        // the built-in tools' rule for an unnamed tool.
        let target = Self::tool_target(name, self.route(name));
        let Decision::Deny(deny) = policy.authorize_target(&caller.principal, &target) else {
            return Ok(None);
        };
        if deny.required_scope().is_none() {
            return Ok(None);
        }
        let exact = Value::Object(arguments.cloned().unwrap_or_default());
        let redact_fields = policy.redact_fields_for(&target);
        let redacted = self.redactor.redact_arguments(&exact, redact_fields);
        let args = CallArgs {
            exact: &exact,
            redact_fields,
            sha256: self.digest_unless_whole(&exact),
            redacted,
        };
        self.record(self.denial_event(caller, name, &args, &deny).build())
            .await?;
        Ok(Some(deny))
    }

    async fn refuse(
        &self,
        caller: &Caller,
        name: &str,
        args: &CallArgs<'_>,
        deny: Deny,
        detail: Option<String>,
        started: Instant,
    ) -> CallError {
        self.refuse_about(caller, name, args, deny, detail, None, started)
            .await
    }

    /// `refuse`, for a refusal about an approval (recorded with its id).
    #[allow(clippy::too_many_arguments)]
    async fn refuse_about(
        &self,
        caller: &Caller,
        name: &str,
        args: &CallArgs<'_>,
        deny: Deny,
        detail: Option<String>,
        approval: Option<&str>,
        started: Instant,
    ) -> CallError {
        self.metrics.observe(Stage::Authorize, started.elapsed());
        let mut event = self
            .denial_event(caller, name, args, &deny)
            .latency_us(micros_since(started));
        if let Some(detail) = detail {
            event = event.error(detail);
        }
        if let Some(approval) = approval {
            event = event.approval(approval);
        }
        match self.record(event.build()).await {
            Ok(()) => {
                self.watch_refusal(caller, deny.reason.code()).await;
                CallError::Denied(deny)
            }
            Err(e) => CallError::Audit(e),
        }
    }

    /// A call that needs an operation token: redeems the one in `_meta`
    /// (returning the permit and the approval's id), or files an approval
    /// request and refuses with where to approve it.
    async fn approve(
        &self,
        caller: &Caller,
        needed: ApprovalNeeded,
        args: &CallArgs<'_>,
        meta: Option<&Map<String, Value>>,
        started: Instant,
    ) -> Result<(Permit, String), CallError> {
        let name = needed.tool().to_string();
        let approval_required = Deny::tool(&name, DenyReason::ApprovalRequired);
        let Some(approvals) = &self.approvals else {
            return Err(self
                .refuse(caller, &name, args, approval_required, None, started)
                .await);
        };
        let now = self.clock.now();
        let token = meta
            .and_then(|m| m.get(OPERATION_TOKEN_META))
            .and_then(Value::as_str);
        let Some(token) = token else {
            let pending = match approvals
                .request(
                    &caller.principal,
                    &name,
                    args.exact,
                    args.redact_fields,
                    now,
                )
                .await
            {
                Ok(pending) => pending,
                Err(ApprovalError::TooManyPending { max }) => {
                    let deny = Deny::tool(&name, DenyReason::TooManyPendingApprovals { max });
                    return Err(self.refuse(caller, &name, args, deny, None, started).await);
                }
                Err(e) => return Err(CallError::Unavailable(e.to_string())),
            };
            let detail = format!("{} (approval {})", approval_required.message(), pending.id);
            return match self
                .refuse_about(
                    caller,
                    &name,
                    args,
                    approval_required,
                    Some(detail),
                    Some(&pending.id),
                    started,
                )
                .await
            {
                CallError::Denied(deny) => Err(CallError::ApprovalRequired(PendingApproval {
                    deny,
                    url: approvals.url(&pending.id),
                    approval_id: pending.id,
                    expires_at: pending.expires_at,
                })),
                other => Err(other),
            };
        };
        match approvals
            .redeem(&caller.principal, &name, args.exact, token, now)
            .await
            .map_err(|e| CallError::Unavailable(e.to_string()))?
        {
            Ok(approval) => Ok((needed.into_permit(&approval.id), approval.id)),
            Err(refusal) => {
                let deny = Deny::tool(
                    &name,
                    DenyReason::OperationTokenRefused {
                        code: refusal.code(),
                    },
                );
                Err(self
                    .refuse(
                        caller,
                        &name,
                        args,
                        deny,
                        Some(refusal.to_string()),
                        started,
                    )
                    .await)
            }
        }
    }

    /// Authorizes, records the decision, runs the tool (built-in, or at the
    /// upstream that serves it) and records the outcome. A tool failure is
    /// a tool result, not a protocol error. `meta` is the request's `_meta`
    /// (operation token). `input` carries a 2026-07-28 caller's answers to
    /// the upstream's earlier `InputRequiredResult`; `call` relays what the
    /// upstream sends during the call and carries the caller's cancellation.
    pub async fn call_tool(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Option<Map<String, Value>>,
        meta: Option<&Map<String, Value>>,
        input: UpstreamInput,
        call: CallContext,
    ) -> Result<CallResult, CallError> {
        let started = Instant::now();
        let route = self.route(name);
        let target = Self::tool_target(name, route);
        // One snapshot for the whole call: a reload in between cannot mix policies.
        let policy = self.policy();
        let mut call = call;
        call.tenant_share = tenant_share(&policy, caller);
        call.caller_share = caller_share(caller);
        let arguments = arguments.unwrap_or_default();
        let as_value = Value::Object(arguments.clone());
        let decision = policy.authorize_target_call(&caller.principal, &target, &as_value);
        let redact_fields = policy.redact_fields_for(&target);
        let redacted = self.redactor.redact_arguments(&as_value, redact_fields);
        let args = CallArgs {
            exact: &as_value,
            redact_fields,
            sha256: match (&decision, &self.approvals) {
                (Decision::NeedsApproval(_), Some(approvals)) => {
                    Some(approvals.arguments_hash(&as_value))
                }
                _ => self.digest_unless_whole(&as_value),
            },
            redacted,
        };
        // A grant an incident revoked while the store could not take it:
        // revoked all the same (and, once the store answers, in the store).
        // Asked without awaiting first, and the rare wait boxed: its state
        // held in this future made every call's future larger, and moving
        // it cost ~19,000 instructions a call (bench/PROFILE.md).
        if let Some(incidents) = &self.incidents
            && let Some(task) = &caller.principal.task
            && incidents.owes_revocation(&task.id)
            && Box::pin(incidents.settle_owed(
                &self.audit,
                self.task_grants.as_deref(),
                caller,
                self.clock.now(),
            ))
            .await
        {
            let deny = Deny::new(&target, DenyReason::GrantRevoked);
            return Err(self.refuse(caller, name, &args, deny, None, started).await);
        }
        // `Ok`: permitted; `Err`: permitted once a human has approved.
        let permitted = match decision {
            Decision::Deny(deny) => {
                return Err(self.refuse(caller, name, &args, deny, None, started).await);
            }
            Decision::Permit(permit) => Ok(permit),
            Decision::NeedsApproval(needed) => Err(needed),
        };
        // Limits count before an operation token is spent, so a limited
        // retry does not burn the human's approval, and before the pins,
        // whose check may list the upstream: a limited caller costs it
        // nothing.
        if let Err(retry_after_secs) =
            self.limits
                .check(&policy, &caller.principal, &target, self.clock.now())
        {
            let deny = Deny::new(&target, DenyReason::RateLimited { retry_after_secs });
            return Err(self.refuse(caller, name, &args, deny, None, started).await);
        }
        // A tool whose definition changed since it was reviewed is not run,
        // whoever asks.
        if let Some((upstream, upstream_name)) = route {
            let tenant = Some(caller.principal.tenant.as_str());
            let share = call.tenant_share.as_deref();
            match self.pinned(upstream, upstream_name, tenant, share).await {
                // The headers a filter in front of Gatehouse reads must say
                // what the upstream is called with.
                Ok(Ok(Some(annotations)))
                    if !annotations.is_empty()
                        && let Some(sent) = &call.param_headers
                        && let Err(detail) = sent.clone().and_then(|sent| {
                            ParamHeaders(sent).check(&annotations, &arguments)
                        }) =>
                {
                    let deny = Deny::new(&target, DenyReason::HeaderMismatch { detail });
                    return Err(self.refuse(caller, name, &args, deny, None, started).await);
                }
                Ok(Ok(_)) => {}
                Ok(Err(PinRefusal::Refused(reason, detail))) => {
                    let deny = Deny::new(&target, reason);
                    return Err(self
                        .refuse(caller, name, &args, deny, Some(detail), started)
                        .await);
                }
                // The call could not have run either: refused with the
                // upstream's own reason.
                Ok(Err(PinRefusal::Unreachable(error))) => {
                    let event = self.unchecked_event(
                        caller,
                        name,
                        &args,
                        error.code(),
                        &error.to_string(),
                        started,
                    );
                    self.record(event).await?;
                    return Err(CallError::Upstream(error));
                }
                Err(PinError::Audit(e)) => return Err(CallError::Audit(e)),
                // Refused like any other call that cannot be checked, and
                // audited: the file sink takes the record even when the
                // database behind the pins is what failed.
                Err(e @ PinError::Store(_)) => {
                    let event = self.unchecked_event(
                        caller,
                        name,
                        &args,
                        "pins_unavailable",
                        &e.to_string(),
                        started,
                    );
                    self.record(event).await?;
                    return Err(CallError::PinsUnavailable(e.to_string()));
                }
            }
        }
        let (permit, approval) = match permitted {
            Ok(permit) => (permit, None),
            Err(needed) => {
                let (permit, id) = self.approve(caller, needed, &args, meta, started).await?;
                (permit, Some(id))
            }
        };
        // The records of an approved call name the approval whose token ran it.
        let event = |kind, outcome| {
            let event = self.tool_event(caller, name, &args, kind, outcome);
            match &approval {
                Some(id) => event.approval(id),
                None => event,
            }
        };
        // The decision is durable before the tool has any effect. A
        // built-in tool whose only effect is its answer has none before the
        // answer is sent: its decision is written with its outcome, in one
        // batch (both or neither), one wait instead of two.
        self.metrics.observe(Stage::Authorize, started.elapsed());
        let decision = event(AuditKind::ToolDecision, Outcome::Success)
            .decision("allow")
            .reason(permit.rule())
            .build();
        let decision = if route.is_none() && BuiltinTools::is_answer_only(name) {
            Some(decision)
        } else {
            self.record(decision).await?;
            None
        };
        self.watch_permit(caller, &policy).await;
        let Some((upstream, upstream_name)) = route else {
            let dispatched = Instant::now();
            let result = self.tools.call(&permit, arguments).await;
            self.metrics.observe(Stage::Dispatch, dispatched.elapsed());
            let outcome = match &result {
                Ok(output) => event(AuditKind::ToolOutcome, Outcome::Success)
                    .result_bytes(result_size(output)),
                Err(error) => event(AuditKind::ToolOutcome, Outcome::Error)
                    .reason(error.code())
                    .error(self.redactor.redact_text(&error.to_string())),
            };
            let outcome = outcome.latency_us(micros_since(started)).build();
            match decision {
                // Written together before the answer: nothing of the call
                // reached anyone, so "not run" is what the caller is told.
                Some(decision) => self.record_all(vec![decision, outcome]).await?,
                None => self
                    .record(outcome)
                    .await
                    .map_err(CallError::OutcomeUnrecorded)?,
            }
            return Ok(CallResult::Builtin(result));
        };
        // With Gatehouse's own credential for the caller's tenant, never the
        // caller's; Gatehouse's `_meta` keys stay here.
        let mut forwarded = meta.map(|m| {
            m.iter()
                .filter(|(k, _)| !k.starts_with(GATEHOUSE_META_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<String, Value>>()
        });
        // The upstream's work is a child of this call's span (when spans
        // are exported): W3C trace context in its `_meta` (SEP-414).
        {
            let mut with_trace = forwarded.take().unwrap_or_default();
            crate::trace_context::inject_into_meta(&mut with_trace);
            forwarded = (!with_trace.is_empty()).then_some(with_trace);
        }
        let dispatched = Instant::now();
        let result = async {
            let forwarded = self
                .with_identity(upstream, &caller.principal, forwarded)
                .await?;
            upstream
                .call_tool_with(
                    Some(&caller.principal.tenant),
                    upstream_name,
                    Some(arguments),
                    forwarded,
                    input,
                    call,
                )
                .await
        }
        .await
        .and_then(|answer| not_posing_as_a_held_call(upstream.name(), answer));
        self.metrics.observe(Stage::Dispatch, dispatched.elapsed());
        let outcome = match &result {
            Ok(CallToolResponse::Complete(answer)) if answer.is_error == Some(true) => {
                event(AuditKind::ToolOutcome, Outcome::Error).reason("upstream_tool_error")
            }
            Ok(CallToolResponse::Complete(answer)) => {
                event(AuditKind::ToolOutcome, Outcome::Success)
                    .result_bytes(u64::try_from(json_len(answer)).unwrap_or(u64::MAX))
            }
            // The upstream needs the caller's input first; the call that
            // brings it is decided and recorded again.
            Ok(_) => event(AuditKind::ToolOutcome, Outcome::Success).reason("input_required"),
            Err(error) => {
                self.upstream_failure(event(AuditKind::ToolOutcome, Outcome::Error), error)
            }
        };
        self.record(outcome.latency_us(micros_since(started)).build())
            .await
            .map_err(CallError::OutcomeUnrecorded)?;
        result
            .map(|answer| match answer {
                CallToolResponse::Complete(answer) => CallResult::Upstream(
                    CallToolResponse::Complete(without_upstream_protocol_meta(answer)),
                ),
                other => CallResult::Upstream(other),
            })
            .map_err(CallError::Upstream)
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
