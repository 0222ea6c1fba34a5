//! Everything that touches rmcp, the MCP SDK: the server handler, the
//! Streamable HTTP service and the stdio transport.

// Logging, sampling and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_authz::{
    Access, Deny, DenyReason, Kind, OPERATION_TOKEN_META, Policy, TASK_META, Target, TaskGrantError,
};
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use gatehouse_tools::{ToolError, ToolOutput};
use gatehouse_upstream::{
    Accepts, CallContext, ChangeKind, ListChanged, Relay, Relayed, UpstreamError, UpstreamInput,
};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities,
    ClientJsonRpcMessage, ClientNotification, CompleteRequestParams, CompleteResult, ContentBlock,
    CustomNotification, ErrorCode, ErrorData, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeRequestParams, InitializeResult, InputRequiredResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParams, ProgressToken,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, RequestId,
    ResourceUpdatedNotificationParam, ServerCapabilities, ServerConfig, ServerJsonRpcMessage,
    SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{
    NotificationContext, Peer, RequestContext, SubscriptionContext, SubscriptionSendError,
    SubscriptionSink,
};
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId, SessionManager,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::json;
use std::collections::HashMap;
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bound_grant::GrantRefused;
use crate::gateway::PendingApproval;
use crate::held_calls::{HELD_STATE_PREFIX, HeldCall, HeldCalls, Incoming, Owner, ResumeError};
use crate::http::SessionBindings;
use crate::http::{RequestId as HttpRequestId, RequestSpan};
use crate::param_headers::{ParamHeaders, mirrors_arguments};
use crate::refusal::Refusal;
use crate::session_lane::{LogLevel, LogSink, SessionLane};
use crate::stream_credential::{LapsedStream, StreamCredential};
use crate::trace_context;
use crate::{CallError, CallResult, Caller, Gateway};
use crate::{Gate1Error, StdioAuthenticator};
use gatehouse_authn::{Authenticator, AuthnError};
use tracing::Instrument;

mod audience;
mod errors;
mod held;
mod listen_slots;
mod stream_pauses;
mod upstream_changes;

use audience::{Listener, MAX_WATCHES, SessionPeers, SessionWatch, too_many_watches};
pub(crate) use errors::{call_error, tool_result};
use errors::{client_failed, internal_error, refusal_error, resource_error};
pub use stream_pauses::SdkSessions;
use stream_pauses::{PausableSessions, StreamPauses};
use upstream_changes::follow_upstream_changes;

/// Protocol revisions Gatehouse serves (2026-07-28 statelessly, the older
/// ones with `initialize` and sessions).
pub const PROTOCOL_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// JSON-RPC error code for a call refused by gate 2 (server-defined range).
pub const DENIED_ERROR_CODE: i32 = -32001;
/// JSON-RPC error code when the request cannot be authenticated (stdio).
pub const UNAUTHENTICATED_ERROR_CODE: i32 = -32002;
/// MCP 2025-11-25 `URLElicitationRequiredError`: the client should open a
/// URL (the approval page) and retry afterwards.
pub const URL_ELICITATION_REQUIRED_CODE: i32 = -32042;

/// How the handler learns who is calling.
#[derive(Clone)]
enum Identity {
    /// Gate 1 ran in the HTTP middleware and left a `Caller` in the request;
    /// its authenticator checks a long-lived stream's credential again.
    Http(Arc<Authenticator>),
    /// stdio: the key from the environment is checked again on every request,
    /// so a revocation takes effect on the next call.
    Stdio(Arc<StdioAuthenticator>),
}

#[derive(Clone)]
struct McpHandler {
    gateway: Arc<Gateway>,
    identity: Identity,
    sessions: SessionPeers,
    /// The level `logging/setLevel` set for this session (each session
    /// gets its own handler): upstream log messages below it are not
    /// relayed. Gatehouse does not pass the level on: one upstream
    /// connection serves every caller, so one caller's level would become
    /// everybody's.
    log_level: LogLevel,
    /// The session bindings (HTTP only), where a session's lane for the
    /// fast path is opened.
    bindings: Option<Arc<SessionBindings>>,
    /// The response streams of session requests (HTTP only), to close one
    /// mid-call as its upstream did.
    pauses: Option<StreamPauses>,
    /// Names this handler's session among the resource watches of all
    /// sessions (each session gets its own handler).
    session: Arc<()>,
    /// Whether this session was added to those told of catalogue changes:
    /// once, however often its client repeats `notifications/initialized`
    /// (each repetition added it again, so one client could make every
    /// change be sent to it thousands of times, ahead of everyone else).
    announced: Arc<std::sync::atomic::AtomicBool>,
    /// Upstream calls waiting for a 2026-07-28 caller's answers.
    held: HeldCalls,
    /// The open `subscriptions/listen` streams, counted per person.
    listen_slots: listen_slots::ListenSlots,
}

impl McpHandler {
    /// A handler; with upstreams, its sessions hear of catalogue changes.
    fn new(
        gateway: Arc<Gateway>,
        identity: Identity,
        pauses: Option<StreamPauses>,
        bindings: Option<Arc<SessionBindings>>,
    ) -> McpHandler {
        let sessions = SessionPeers::default();
        follow_upstream_changes(&gateway, sessions.clone());
        McpHandler {
            gateway,
            identity,
            sessions,
            log_level: LogLevel::default(),
            bindings,
            pauses,
            session: Arc::default(),
            announced: Arc::default(),
            held: HeldCalls::default(),
            listen_slots: listen_slots::ListenSlots::default(),
        }
    }

    /// The same handler for a new session, with its own log level.
    fn for_session(&self) -> McpHandler {
        McpHandler {
            gateway: self.gateway.clone(),
            identity: self.identity.clone(),
            sessions: self.sessions.clone(),
            log_level: LogLevel::default(),
            bindings: self.bindings.clone(),
            pauses: self.pauses.clone(),
            session: Arc::default(),
            announced: Arc::default(),
            held: self.held.clone(),
            listen_slots: self.listen_slots.clone(),
        }
    }

    fn logs(&self, level: LoggingLevel) -> bool {
        self.log_level.admits(level)
    }

    /// Opens the fast path's lane for this session (see `session_lane.rs`),
    /// unless its client may be asked something mid-call, which only the
    /// SDK's streams can carry.
    fn open_lane(&self, context: &NotificationContext<RoleServer>) {
        let Some(bindings) = &self.bindings else {
            return;
        };
        let Some(session) = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|value| value.to_str().ok())
        else {
            return;
        };
        let Some(info) = context.peer.peer_info() else {
            return;
        };
        let declared = &info.capabilities;
        if declared.sampling.is_some() || declared.elicitation.is_some() {
            return;
        }
        bindings.open_lane(
            session,
            SessionLane::new(
                info.protocol_version.as_str().to_string(),
                declared.clone(),
                self.log_level.clone(),
                Box::new(SessionLogs(context.peer.clone())),
            ),
        );
    }

    /// Whether the client can answer requests during its call: a session
    /// (stdio, or Streamable HTTP with `Mcp-Session-Id`). A 2026-07-28
    /// request stands alone, and its stream takes no answers.
    fn in_session(&self, context: &RequestContext<RoleServer>) -> bool {
        match self.identity {
            Identity::Stdio(_) => true,
            Identity::Http(_) => context
                .extensions
                .get::<http::request::Parts>()
                .is_some_and(|parts| parts.headers.contains_key("mcp-session-id")),
        }
    }

    /// What this client takes during a call, and its progress token.
    fn relay_for(
        &self,
        context: &RequestContext<RoleServer>,
        declared: &ClientCapabilities,
    ) -> (
        Relay,
        tokio::sync::mpsc::Receiver<Relayed>,
        Option<ProgressToken>,
    ) {
        let token = context.meta.get_progress_token();
        // A session's client is asked mid-call; a 2026-07-28 caller by an
        // input-required result (see `held_calls`).
        let asks = self.in_session(context) || takes_input_required(context);
        let accepts = Accepts {
            progress: token.is_some(),
            logs: true,
            sampling: asks && declared.sampling.is_some(),
            elicitation: asks && declared.elicitation.is_some(),
        };
        let (relay, relayed) = Relay::channel(accepts);
        (relay, relayed, token)
    }

    /// Runs `work` (a call at an upstream) while forwarding what the
    /// upstream sends during it to this client. Forwarded from within the
    /// request's own task, so a Streamable HTTP response carries them on
    /// the request's stream.
    async fn relaying<T>(
        &self,
        work: impl Future<Output = T>,
        mut relayed: tokio::sync::mpsc::Receiver<Relayed>,
        context: &RequestContext<RoleServer>,
        token: Option<ProgressToken>,
    ) -> T {
        let mut work = std::pin::pin!(work);
        let mut answers = FuturesUnordered::new();
        loop {
            tokio::select! {
                result = &mut work => {
                    // Progress and log messages that came just before the
                    // answer are queued already.
                    while let Ok(message) = relayed.try_recv() {
                        self.notify(message, context, token.as_ref()).await;
                    }
                    return result;
                }
                Some(message) = relayed.recv() => match message {
                    // An upstream cannot pile up questions (each waits for
                    // the client, holding up to a message's size): past
                    // a few at once, it is told no at once.
                    Relayed::Sampling { reply, .. } if answers.len() >= MAX_QUESTIONS_AT_ONCE => {
                        let _ = reply.send(Err(too_many_questions()));
                    }
                    Relayed::Elicitation { reply, .. } if answers.len() >= MAX_QUESTIONS_AT_ONCE => {
                        let _ = reply.send(Err(too_many_questions()));
                    }
                    Relayed::Sampling { params, reply } => {
                        let peer = context.peer.clone();
                        answers.push(Box::pin(async move {
                            let answer = peer.create_message(params).await.map_err(client_failed);
                            let _ = reply.send(answer);
                        }) as futures::future::BoxFuture<'static, ()>);
                    }
                    Relayed::Elicitation { params, reply } => {
                        let peer = context.peer.clone();
                        answers.push(Box::pin(async move {
                            let answer = peer.create_elicitation(params).await.map_err(client_failed);
                            let _ = reply.send(answer);
                        }));
                    }
                    Relayed::Paused => self.pause(context),
                    other => self.notify(other, context, token.as_ref()).await,
                },
                Some(()) = answers.next(), if !answers.is_empty() => {}
            }
        }
    }
}

/// Questions (sampling, elicitation) one upstream call may have waiting for
/// the client at once.
const MAX_QUESTIONS_AT_ONCE: usize = 4;

fn too_many_questions() -> ErrorData {
    ErrorData::new(
        ErrorCode::INVALID_REQUEST,
        format!(
            "the gateway relays at most {MAX_QUESTIONS_AT_ONCE} questions of one call at a time; \
             ask again once one is answered"
        ),
        None,
    )
}

impl McpHandler {
    /// The upstream closed its response stream mid-call (SEP-1699): this
    /// session request's stream to the client is closed likewise, so that
    /// the client resumes it with `Last-Event-ID` and gets the rest (the
    /// SDK keeps what is sent meanwhile). A 2026-07-28 request has no
    /// session to resume in: its stream stays open.
    fn pause(&self, context: &RequestContext<RoleServer>) {
        let session = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|value| value.to_str().ok());
        if let (Some(pauses), Some(session)) = (&self.pauses, session) {
            pauses.pause(session, &context.id);
            // Its request runs on in the SDK: its id stays taken.
            if let (Some(bindings), Ok(id)) = (&self.bindings, serde_json::to_value(&context.id))
                && let Some(key) = crate::session_lane::request_key(&id)
            {
                bindings.request_paused(session, key);
            }
        }
    }
}

impl McpHandler {
    /// Forwards a progress or log message to this client (requests are
    /// answered in `relaying`; one left at the end of the call is dropped,
    /// which fails it at the upstream).
    async fn notify(
        &self,
        message: Relayed,
        context: &RequestContext<RoleServer>,
        token: Option<&ProgressToken>,
    ) {
        match message {
            Relayed::Progress(mut progress) => {
                if let Some(token) = token {
                    // The caller's own token, never the one the upstream saw.
                    progress.progress_token = token.clone();
                    let _ = context.peer.notify_progress(progress).await;
                }
            }
            Relayed::Log(message) if self.logs(message.level) => {
                let _ = context.peer.notify_logging_message(message).await;
            }
            _ => {}
        }
    }
}

/// A session's log messages, sent as the handler sends them (`notify`).
#[derive(Debug)]
struct SessionLogs(Peer<RoleServer>);

impl LogSink for SessionLogs {
    fn send(&self, message: LoggingMessageNotificationParam) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            // A session that has ended takes nothing; the call goes on.
            let _ = self.0.notify_logging_message(message).await;
        })
    }
}

/// The capabilities the client declared: in the request's `_meta`
/// (2026-07-28), else at `initialize`.
fn declared_capabilities(context: &RequestContext<RoleServer>) -> Option<ClientCapabilities> {
    context.meta.client_capabilities().or_else(|| {
        context
            .peer
            .peer_info()
            .map(|info| info.capabilities.clone())
    })
}

/// How a call made by this request reaches back to its caller: `relay`
/// (only `tools/call` has one), cancelled with the request.
fn call_context(context: &RequestContext<RoleServer>, relay: Option<Relay>) -> CallContext {
    CallContext {
        relay,
        cancel: context.ct.clone(),
        capabilities: declared_capabilities(context),
        takes_input_required: takes_input_required(context),
        // The gateway sets it, from the policy's tenancy.
        tenant_share: None,
        caller_share: None,
        param_headers: context
            .extensions
            .get::<http::request::Parts>()
            .filter(|parts| mirrors_arguments(&parts.headers))
            .map(|parts| ParamHeaders::of_request(&parts.headers).map(|headers| headers.0)),
    }
}

/// Whether the caller speaks 2026-07-28 or later, and so answers an
/// upstream's input-required result itself (a 2025-11-25 caller is asked
/// by the gateway, mid-call).
fn takes_input_required(context: &RequestContext<RoleServer>) -> bool {
    // ISO dates compare as strings.
    context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

fn server_config() -> ServerConfig {
    let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
    info.server_info = Implementation::new("gatehouse", env!("CARGO_PKG_VERSION"));
    info.with_instructions(
        "Gatehouse authenticates, authorizes and audits every tool call. \
         tools/list shows only the tools your credential may call.",
    )
}

/// A tool's description as `tools/list` shows it: saying so when a call
/// needs a human's approval first.
fn described(description: &str, access: Access) -> String {
    match access {
        Access::NeedsApproval => {
            format!("{description} Requires a human-approved operation token.")
        }
        _ => description.to_string(),
    }
}

/// The span of a `tools/call`: a child of its HTTP request's span (none on
/// stdio), or of the remote span its `_meta.traceparent` names (SEP-414),
/// and the request's id for its audit records.
fn call_scope(context: &RequestContext<RoleServer>) -> (tracing::Span, Option<Arc<str>>) {
    request_scope(
        context.extensions.get::<http::request::Parts>(),
        &context.meta.0.0,
    )
}

/// `call_scope` from the HTTP request's parts and the call's `_meta` (the
/// HTTP fast path has no SDK context).
pub(crate) fn request_scope(
    parts: Option<&http::request::Parts>,
    meta: &serde_json::Map<String, serde_json::Value>,
) -> (tracing::Span, Option<Arc<str>>) {
    let request_id = parts
        .and_then(|parts| parts.extensions.get::<HttpRequestId>())
        .map(|id| Arc::clone(&id.0));
    let parent = parts.and_then(|parts| parts.extensions.get::<RequestSpan>());
    let span = match parent {
        Some(parent) => tracing::info_span!(
            parent: &parent.0,
            "tools/call",
            trace_id = tracing::field::Empty
        ),
        None => tracing::info_span!("tools/call", trace_id = tracing::field::Empty),
    };
    if let Some(trace_id) = trace_context::adopt_from_meta(&span, meta) {
        span.record("trace_id", trace_id);
    }
    (span, request_id)
}

/// Runs a handler as part of its HTTP request: rmcp spawns each handler as
/// a task of its own, which would lose the request's span (its log lines'
/// `request_id`, the trace) and the id its audit records carry (approvals,
/// grants).
pub(crate) async fn in_request_scope<F: Future>(
    (span, request_id): (tracing::Span, Option<Arc<str>>),
    work: F,
) -> F::Output {
    let work = work.instrument(span);
    match request_id {
        Some(id) => gatehouse_audit::in_request(id, work).await,
        None => work.await,
    }
}

/// The task a client declares with `initialize` (`_meta`, which rmcp
/// moves from the parameters into the context as it dispatches).
fn declared_task(
    request: &InitializeRequestParams,
    context: &RequestContext<RoleServer>,
) -> Option<String> {
    let in_params = request.meta.as_ref().and_then(|m| m.0.0.get(TASK_META));
    in_params
        .or_else(|| context.meta.0.0.get(TASK_META))?
        .as_str()
        .map(str::to_owned)
}

impl McpHandler {
    /// The caller of a request other than `initialize`. Over stdio, a task
    /// named in the request's `_meta` must be the one the connection holds:
    /// naming another (or one without having declared it at `initialize`)
    /// is an attempt to switch tasks, refused and recorded as over HTTP
    /// (`http/admission.rs`), not ignored.
    async fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        let caller = self.transport_caller(context).await?;
        if let Identity::Stdio(_) = &self.identity
            && let Some(task) = context.meta.0.0.get(TASK_META)
        {
            let current = caller.principal.task.as_ref().map(|t| t.task.as_str());
            if current != task.as_str() {
                let detail = format!(
                    "a request named task {task} while holding {}",
                    current.map_or("no task grant".to_string(), |t| format!("task {t:?}"))
                );
                let refusal = Refusal::TaskSwitch;
                if self
                    .gateway
                    .record_anomaly(&caller, refusal.code(), detail)
                    .await
                    .is_err()
                {
                    return Err(internal_error(
                        "the audit log is unavailable, so the request was not run",
                    ));
                }
                return Err(refusal_error(&refusal));
            }
        }
        Ok(caller)
    }

    /// The credential an HTTP request was authenticated with, to check it
    /// again while its stream is open (`stream_credential.rs`).
    fn stream_credential(
        &self,
        context: &RequestContext<RoleServer>,
        caller: &Caller,
    ) -> Option<StreamCredential> {
        let Identity::Http(authenticator) = &self.identity else {
            return None;
        };
        let parts = context.extensions.get::<http::request::Parts>()?;
        StreamCredential::presented(
            Arc::clone(authenticator),
            Arc::clone(self.gateway.clock()),
            parts,
            Arc::clone(&caller.principal),
        )
    }

    /// The authenticated caller as the transport knows it: HTTP's from gate
    /// 1's layer; stdio's from the environment's key, admitted and bound to
    /// the task declared at `initialize`.
    async fn transport_caller(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<Caller, ErrorData> {
        match &self.identity {
            Identity::Http(_) => context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Caller>())
                .cloned()
                // Fail closed: a request that bypassed gate 1 is refused.
                .ok_or_else(|| internal_error("request was not authenticated")),
            Identity::Stdio(auth) => {
                let caller = auth.caller().await.map_err(|e| {
                    let mut data = json!({ "reason": e.code() });
                    if let Gate1Error::Authn(AuthnError::Locked { retry_after_secs }) = &e {
                        data["retry_after"] = json!(retry_after_secs);
                    }
                    ErrorData::new(
                        ErrorCode(UNAUTHENTICATED_ERROR_CODE),
                        format!("authentication failed: {e}"),
                        Some(data),
                    )
                })?;
                // The admission HTTP requests get in `http/admission.rs`,
                // as far as it applies without sessions or tokens.
                let unaudited =
                    || internal_error("the audit log is unavailable, so the request was not run");
                if !self.gateway.audit().is_healthy() {
                    return Err(unaudited());
                }
                match self.gateway.admit_caller(&caller).await {
                    Ok(Ok(())) => {}
                    Ok(Err(refusal)) => return Err(refusal_error(&refusal)),
                    Err(_) => return Err(unaudited()),
                }
                // A task declared at `initialize` binds every later request.
                match auth.under_declared_task(caller).await {
                    Ok(caller) => Ok(caller),
                    Err(GrantRefused::Refused(refusal)) => Err(refusal_error(&refusal)),
                    Err(GrantRefused::Unavailable(e)) => Err(ErrorData::new(
                        ErrorCode(UNAUTHENTICATED_ERROR_CODE),
                        format!("authentication failed: {e}"),
                        Some(json!({ "reason": e.code() })),
                    )),
                    Err(GrantRefused::AuditUnavailable) => Err(unaudited()),
                }
            }
        }
    }
}

// The gateway's futures are boxed in these handlers: rmcp spawns every
// request's handler future as a task, and a future holds the state of all it
// awaits inline, so an unboxed gateway call (policy, audit, upstream client)
// made every spawn copy kilobytes (measured: 4.7 % of the CPU of an upstream
// call, bench/README.md). A box costs one allocation.
// Every handler's body is boxed: rmcp spawns each request's handler future
// as a task, and that future is as large as the largest handler's state
// (it was ~19 KB, copied twice per request: bench/profile.sh).
impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        let mut info = server_config();
        // Upstreams may serve prompts; Gatehouse itself has none. Their
        // catalogue changes are told to 2025-11-25 sessions and to
        // 2026-07-28 `subscriptions/listen` streams.
        if self.gateway.has_upstreams() {
            let offered = ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_resources()
                .enable_resources_list_changed()
                .enable_resources_subscribe()
                .enable_completions()
                .enable_logging()
                .build();
            info.capabilities.tools = offered.tools;
            info.capabilities.prompts = offered.prompts;
            info.capabilities.resources = offered.resources;
            info.capabilities.completions = offered.completions;
            info.capabilities.logging = offered.logging;
        }
        info
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        Box::pin(async move {
            // Over stdio, a task declared here binds the connection (over
            // HTTP admission binds the session before the SDK runs).
            if let Identity::Stdio(auth) = &self.identity
                && let Some(task) = declared_task(&request, &context)
            {
                let caller = self.transport_caller(&context).await?;
                auth.declare_task(&caller, &task)
                    .await
                    .map_err(|e| match e {
                        // Recorded as an anomaly by the grants.
                        TaskGrantError::Refused(refusal) => refusal_error(&Refusal::Task(refusal)),
                        TaskGrantError::Audit(_) => internal_error(
                            "the audit log is unavailable, so the request was not run",
                        ),
                        other => {
                            tracing::error!(error = %other, "task grant failed");
                            internal_error("task grants are unavailable")
                        }
                    })?;
            }
            context.peer.set_peer_info(request.clone());
            // A session hears of the upstreams' catalogue changes
            // (`on_initialized` registers it; `get_info` says so) and of the
            // resources it subscribed to.
            self.negotiate_initialize(&request)
        })
        .await
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        Box::pin(async move {
            self.open_lane(&context);
            if self.gateway.has_upstreams()
                && !self
                    .announced
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let tenant = match &self.identity {
                    Identity::Http(_) => context
                        .extensions
                        .get::<http::request::Parts>()
                        .and_then(|parts| parts.extensions.get::<Caller>())
                        .map(|caller| Arc::from(caller.principal.tenant.as_str())),
                    Identity::Stdio(auth) => auth
                        .caller()
                        .await
                        .ok()
                        .map(|caller| Arc::from(caller.principal.tenant.as_str())),
                };
                self.sessions.add(context.peer, tenant);
            }
        })
        .await
    }

    /// 2026-07-28 `subscriptions/listen`: the upstreams' list changes, as
    /// 2025-11-25 sessions get them, and updates of the upstream resources
    /// named (see `listen`). Without upstreams nothing changes, and the
    /// method is not offered.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        if !self.gateway.has_upstreams() {
            return None;
        }
        // rmcp narrows this to what was requested and `get_info` offers.
        // Resources are accepted as asked and pass gate 2 in `listen`,
        // where the caller is known.
        let mut accepted = SubscriptionFilter::builder()
            .tools_list_changed()
            .prompts_list_changed()
            .resources_list_changed()
            .build();
        accepted.resource_subscriptions = requested.resource_subscriptions.clone();
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        Box::pin(async move {
            let caller = self.caller(context.request_context()).await?;
            if context
                .accepted()
                .resource_subscriptions
                .as_ref()
                .is_some_and(|uris| uris.len() > MAX_WATCHES)
            {
                return Err(too_many_watches());
            }
            // Held until the stream ends.
            let _slot = self.listen_slots.take(caller.principal.limit_key())?;
            // Each resource is watched under the gate of reading it; one the
            // caller may not read ends the stream with the refusal (the
            // acknowledgement went first: rmcp sends it before this runs).
            let mut watches = Vec::new();
            for uri in context.accepted().resource_subscriptions.iter().flatten() {
                let watch = self
                    .gateway
                    .watch_resource(&caller, uri)
                    .await
                    .map_err(|e| resource_error(e, uri))?;
                watches.push(watch);
            }
            let open = CancellationToken::new();
            // Forgotten by `SessionPeers` as soon as this returns; the watches
            // end with it. `SessionPeers` cancels it too, for a stream that
            // does not take its notifications (`audience::not_taken`).
            let ended = open.clone();
            let _open = open.clone().drop_guard();
            self.sessions.add_listener(Listener {
                sink: context.sink().clone(),
                open,
                principal: caller.principal.clone(),
                watched: watches
                    .iter()
                    .map(|watch| (watch.upstream().clone(), watch.uri().to_string()))
                    .collect(),
            });
            let lapsed = match self.stream_credential(context.request_context(), &caller) {
                Some(credential) => tokio::select! {
                    () = context.cancelled() => None,
                    () = ended.cancelled() => None,
                    lapse = credential.lapsed() => Some(lapse),
                },
                None => {
                    tokio::select! {
                        () = context.cancelled() => {}
                        () = ended.cancelled() => {}
                    }
                    None
                }
            };
            drop(watches);
            let Some(lapse) = lapsed else {
                return Ok(());
            };
            self.gateway
                .record_stream_lapsed(&caller, LapsedStream::ListenStream, lapse)
                .await;
            Err(ErrorData::new(
                ErrorCode(UNAUTHENTICATED_ERROR_CODE),
                format!(
                    "the credential this stream was opened with no longer holds ({lapse}); \
                     connect again"
                ),
                Some(json!({ "reason": lapse })),
            ))
        })
        .await
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Box::pin(async move {
            self.caller(&context).await?;
            self.log_level.set(request.level);
            Ok(())
        })
        .await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            Box::pin(self.gateway.complete(&caller, request))
                .await
                .map_err(|e| call_error(e, false))
        })
        .await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            if !self.sessions.session_may_watch(&self.session, &request.uri) {
                return Err(too_many_watches());
            }
            let watch = Box::pin(self.gateway.watch_resource(&caller, &request.uri))
                .await
                .map_err(|e| resource_error(e, &request.uri))?;
            self.sessions.add_session_watch(SessionWatch {
                session: self.session.clone(),
                peer: context.peer.clone(),
                principal: caller.principal.clone(),
                watch,
            })
        })
        .await
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        Box::pin(async move {
            // Authenticated like every request; ending one's own watch needs
            // no permission (and a watch that does not exist is no error).
            self.caller(&context).await?;
            self.sessions
                .remove_session_watch(&self.session, &request.uri);
            Ok(())
        })
        .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            let resources = Box::pin(self.gateway.list_upstream_resources(&caller)).await;
            // The list depends on who asks: it must never be shared between users.
            Ok(
                ListResourcesResult::with_all_items(resources)
                    .with_cache_scope(CacheScope::Private),
            )
        })
        .await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            let templates = Box::pin(self.gateway.list_upstream_resource_templates(&caller)).await;
            Ok(ListResourceTemplatesResult::with_all_items(templates)
                .with_cache_scope(CacheScope::Private))
        })
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            let input = UpstreamInput {
                input_responses: request.input_responses,
                request_state: request.request_state,
            };
            let call = call_context(&context, None);
            Box::pin(
                self.gateway
                    .read_resource(&caller, &request.uri, input, call),
            )
            .await
            .map_err(|e| resource_error(e, &request.uri))
        })
        .await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            let prompts = Box::pin(self.gateway.list_upstream_prompts(&caller)).await;
            // The list depends on who asks: it must never be shared between users.
            Ok(ListPromptsResult::with_all_items(prompts).with_cache_scope(CacheScope::Private))
        })
        .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            let input = UpstreamInput {
                input_responses: request.input_responses,
                request_state: request.request_state,
            };
            let call = call_context(&context, None);
            Box::pin(self.gateway.get_prompt(
                &caller,
                &request.name,
                request.arguments,
                input,
                call,
            ))
            .await
            .map_err(|e| call_error(e, false))
        })
        .await
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Box::pin(async move {
            let caller = self.caller(&context).await?;
            let tools = self
                .gateway
                .list_tools(&caller.principal)
                .into_iter()
                .map(|listed| {
                    let description = described(listed.definition.description, listed.access);
                    let schema = match listed.definition.input_schema {
                        serde_json::Value::Object(map) => map,
                        _ => serde_json::Map::new(),
                    };
                    let mut tool = Tool::new(listed.definition.name, description, Arc::new(schema));
                    tool.title = Some(listed.definition.title.to_string());
                    tool
                })
                .chain(
                    Box::pin(self.gateway.list_upstream_tools(&caller))
                        .await
                        .into_iter()
                        .map(|listed| {
                            let mut tool = listed.tool;
                            // A description the upstream left out stays out,
                            // unless there is something to say.
                            if listed.access == Access::NeedsApproval {
                                let description = tool.description.as_deref().unwrap_or_default();
                                tool.description =
                                    Some(described(description, listed.access).into());
                            }
                            tool
                        }),
                )
                .collect();
            // The list depends on who asks: it must never be shared between users.
            Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
        })
        .await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let scope = call_scope(&context);
        let work = Box::pin(async move {
            let caller = self.caller(&context).await?;
            let url_elicitation = context.peer.peer_info().is_some_and(|info| {
                info.capabilities
                    .elicitation
                    .as_ref()
                    .is_some_and(|e| e.url.is_some())
            });
            let declared = declared_capabilities(&context).unwrap_or_default();
            let resumes = request
                .request_state
                .as_deref()
                .is_some_and(|state| state.starts_with(HELD_STATE_PREFIX));
            if takes_input_required(&context)
                && (resumes || declared.sampling.is_some() || declared.elicitation.is_some())
            {
                return Box::pin(self.call_tool_held(
                    caller,
                    request,
                    &context,
                    &declared,
                    url_elicitation,
                ))
                .await;
            }
            // rmcp moves a request's `_meta` into the context as it dispatches.
            let meta = request
                .meta
                .as_ref()
                .map(|m| &m.0.0)
                .or(Some(&context.meta.0.0));
            let input = UpstreamInput {
                input_responses: request.input_responses,
                request_state: request.request_state,
            };
            let (relay, relayed, token) = self.relay_for(&context, &declared);
            let call = call_context(&context, Some(relay));
            let work = Box::pin(self.gateway.call_tool(
                &caller,
                &request.name,
                request.arguments,
                meta,
                input,
                call,
            ));
            let result = self
                .relaying(work, relayed, &context, token)
                .await
                .map_err(|e| call_error(e, url_elicitation))?;
            Ok(match result {
                CallResult::Builtin(result) => tool_result(result).into(),
                CallResult::Upstream(answer) => answer,
            })
        });
        in_request_scope(scope, work).await
    }
}

/// Why a request body is not a message the SDK can take. The SDK would
/// answer either with HTTP 415 and its deserializer's text; the transport
/// answers with the JSON-RPC error instead.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MalformedMessage {
    /// Not JSON at all: JSON-RPC -32700 Parse error.
    NotJson,
    /// JSON, but not one JSON-RPC 2.0 message (-32600 Invalid Request);
    /// `id` is the request's id when one could be read, else null.
    NotJsonRpc { id: serde_json::Value, batch: bool },
}

/// Reads a POSTed body as the SDK does. The SDK answers a body it cannot
/// read with HTTP 415 and its deserializer's text; the transport calls
/// this (only then) to answer with the JSON-RPC error instead.
pub(crate) fn inspect_message(bytes: &[u8]) -> Result<(), MalformedMessage> {
    match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        Ok(_) => Ok(()),
        Err(_) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Err(_) => Err(MalformedMessage::NotJson),
            Ok(value) => Err(MalformedMessage::NotJsonRpc {
                // JSON-RPC 2.0 §5: the id when it can be read, else null.
                id: value
                    .get("id")
                    .filter(|id| id.is_string() || id.is_number())
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
                batch: value.is_array(),
            }),
        },
    }
}

/// How long the SDK keeps a finished request's stream for a late resume.
const COMPLETED_STREAM_KEPT: Duration = Duration::from_secs(5);

/// Settings of the Streamable HTTP endpoint.
pub struct HttpServiceOptions {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub session_idle_timeout: Duration,
    pub shutdown: CancellationToken,
    /// Where the sessions' lanes for the fast path are kept.
    pub bindings: Arc<SessionBindings>,
    /// Gate 1's, to check a listen stream's credential while it is open.
    pub authenticator: Arc<Authenticator>,
}

/// rmcp's Streamable HTTP service, shared. Its `call` clones the whole
/// service (the host and origin lists of its configuration included), and
/// axum clones the route's service for every request as well: behind an
/// `Arc` both clones are a reference count (measured: 4 % of the CPU of an
/// upstream call, bench/README.md).
#[derive(Clone)]
pub struct McpService(Arc<StreamableHttpService<McpHandler, PausableSessions>>);

impl tower::Service<axum::extract::Request> for McpService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move {
            let response = service.handle(request).await;
            Ok(response.map(axum::body::Body::new))
        })
    }
}

/// The tower service answering `/mcp` (gate 1 must run before it), and a
/// handle on its sessions.
pub fn streamable_http_service(
    gateway: Arc<Gateway>,
    options: HttpServiceOptions,
) -> (McpService, SdkSessions) {
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.allowed_hosts)
        .with_allowed_origins(options.allowed_origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(options.max_body_bytes)
        .with_json_response(true)
        .with_cancellation_token(options.shutdown);
    config.sse_keep_alive = Some(Duration::from_secs(15));
    let mut sessions = LocalSessionManager::default();
    let mut session_config = SessionConfig::default();
    session_config.keep_alive = Some(options.session_idle_timeout);
    // A finished request's stream (its answer, which an upstream may make
    // as large as a message may be) is kept for a client resuming it late:
    // seconds, not the SDK's minute, so that a session's memory follows
    // what it is doing now rather than what it did in the last minute.
    session_config.completed_cache_ttl = COMPLETED_STREAM_KEPT;
    sessions.session_config = session_config;
    let pauses = StreamPauses::default();
    let sessions = Arc::new(PausableSessions {
        inner: sessions,
        pauses: pauses.clone(),
        bindings: Arc::clone(&options.bindings),
    });
    let handler = McpHandler::new(
        gateway,
        Identity::Http(options.authenticator),
        Some(pauses),
        Some(options.bindings),
    );
    (
        McpService(Arc::new(StreamableHttpService::new(
            move || Ok(handler.for_session()),
            Arc::clone(&sessions),
            config,
        ))),
        SdkSessions(sessions),
    )
}

/// Serves MCP over stdin/stdout until the client closes the stream. A
/// message longer than `max_message_bytes` (the server's body cap, as over
/// HTTP) is dropped unread (the SDK's default would take 16 MiB).
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    authenticator: Arc<StdioAuthenticator>,
    max_message_bytes: usize,
) -> Result<(), std::io::Error> {
    let handler = McpHandler::new(gateway, Identity::Stdio(authenticator), None, None);
    let (stdin, stdout) = rmcp::transport::stdio();
    let transport = rmcp::transport::async_rw::AsyncRwTransport::new_server(stdin, stdout)
        .with_max_line_length(max_message_bytes);
    let running = handler
        .serve(transport)
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(reason: DenyReason) -> CallError {
        let target = Target {
            kind: Kind::Resource,
            name: "memo://gone",
            upstream: None,
        };
        CallError::Denied(Deny::new(&target, reason))
    }

    #[test]
    fn a_resource_nothing_serves_is_not_found_with_its_uri() {
        let error = resource_error(denied(DenyReason::UnknownTool), "memo://gone");
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        let data = error.data.unwrap_or_default();
        assert_eq!(data["uri"], "memo://gone");
        assert_eq!(data["reason"], "unknown_tool");

        let error = resource_error(
            CallError::Upstream(UpstreamError::Unknown("memo://gone".into())),
            "memo://gone",
        );
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(error.data.unwrap_or_default()["uri"], "memo://gone");
    }

    /// Told apart, "not in your tenant" confirmed that another tenant's
    /// upstream lists the URI.
    #[test]
    fn a_resource_of_another_tenant_reads_as_one_nothing_serves() {
        let unknown = resource_error(denied(DenyReason::UnknownTool), "memo://x");
        let foreign = resource_error(denied(DenyReason::NotInTenant), "memo://x");
        assert_eq!(foreign, unknown);
    }

    #[test]
    fn a_resource_the_role_may_not_read_stays_a_refusal() {
        let reason = DenyReason::RoleNotAllowed {
            roles: vec!["reader".into()],
        };
        let error = resource_error(denied(reason), "memo://gone");
        assert_eq!(error.code, ErrorCode(DENIED_ERROR_CODE));
        let data = error.data.unwrap_or_default();
        assert_eq!(data["reason"], "role_not_allowed");
        assert!(data.get("uri").is_none(), "{data}");
    }
}
