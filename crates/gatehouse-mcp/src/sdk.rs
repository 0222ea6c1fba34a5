//! Everything that touches rmcp, the MCP SDK: the server handler, the
//! Streamable HTTP service and the stdio transport.

// Logging, sampling and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_authz::{Access, Deny, DenyReason, Kind, OPERATION_TOKEN_META, Policy, Target};
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use gatehouse_tools::{ToolError, ToolOutput};
use gatehouse_upstream::{
    Accepts, CallContext, ChangeKind, ListChanged, Relay, Relayed, UpstreamError, UpstreamInput,
};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ClientJsonRpcMessage,
    CompleteRequestParams, CompleteResult, ContentBlock, ErrorCode, ErrorData,
    GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams,
    InitializeResult, InputRequiredResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, PaginatedRequestParams, ProgressToken,
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

use crate::gateway::PendingApproval;
use crate::held_calls::{HELD_STATE_PREFIX, HeldCall, HeldCalls, Incoming, Owner, ResumeError};
use crate::refusal::Refusal;
use crate::{CallError, CallResult, Caller, Gateway};
use crate::{Gate1Error, StdioAuthenticator};
use gatehouse_authn::AuthnError;

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
    /// Gate 1 ran in the HTTP middleware and left a `Caller` in the request.
    Http,
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
    log_level: Arc<Mutex<Option<LoggingLevel>>>,
    /// The response streams of session requests (HTTP only), to close one
    /// mid-call as its upstream did.
    pauses: Option<StreamPauses>,
    /// Names this handler's session among the resource watches of all
    /// sessions (each session gets its own handler).
    session: Arc<()>,
    /// Upstream calls waiting for a 2026-07-28 caller's answers.
    held: HeldCalls,
}

/// Who is told when an upstream's catalogue changed
/// (`notifications/*/list_changed`): the clients of live 2025-11-25
/// sessions, and the open 2026-07-28 `subscriptions/listen` streams (each
/// gets the kinds its filter accepted). The notice carries nothing but
/// "list again", so everyone gets it; each then lists what it may see.
/// A resource's update (`notifications/resources/updated`) names the
/// resource: it goes only to the listen streams and the sessions watching
/// it whose principal the policy (as it is now) lets see it.
#[derive(Clone, Default)]
struct SessionPeers(Arc<std::sync::Mutex<Audience>>);

#[derive(Default)]
struct Audience {
    peers: Vec<Peer<RoleServer>>,
    listeners: Vec<Listener>,
    session_watches: Vec<SessionWatch>,
}

/// Resources one session, or one listen stream, may watch at once. Each
/// watch costs a gate-2 decision, an audit record and possibly an upstream
/// subscription: without a bound, one caller could make the gateway hold
/// any number of them.
const MAX_WATCHES: usize = 64;

fn too_many_watches() -> ErrorData {
    ErrorData::invalid_params(
        format!("at most {MAX_WATCHES} resources may be watched by one session or listen stream"),
        Some(json!({"reason": "too_many_subscriptions"})),
    )
}

/// A 2025-11-25 session's `resources/subscribe`, admitted by gate 2; the
/// gateway's subscription at the upstream lasts while any watch does.
struct SessionWatch {
    session: Arc<()>,
    peer: Peer<RoleServer>,
    /// Who subscribed, for the policy's say on each update.
    principal: Arc<gatehouse_core::Principal>,
    watch: crate::gateway::ResourceWatch,
}

/// One open `subscriptions/listen` stream.
#[derive(Clone)]
struct Listener {
    sink: SubscriptionSink,
    /// Cancelled when the stream ends (its `listen` returns).
    open: CancellationToken,
    /// Who listens, for the policy's say on each resource update.
    principal: Arc<gatehouse_core::Principal>,
    /// The upstream resources it watches (upstream, URI), admitted by gate 2.
    watched: Vec<(Arc<str>, String)>,
}

impl SessionPeers {
    fn live(&self) -> std::sync::MutexGuard<'_, Audience> {
        let mut audience = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        audience.peers.retain(|peer| !peer.is_transport_closed());
        audience
            .listeners
            .retain(|listener| !listener.open.is_cancelled());
        // An ended session's watches end with it.
        audience
            .session_watches
            .retain(|watch| !watch.peer.is_transport_closed());
        audience
    }

    /// Whether `session` may subscribe to `uri`: it watches it already, or
    /// fewer than `MAX_WATCHES` resources.
    fn session_may_watch(&self, session: &Arc<()>, uri: &str) -> bool {
        let audience = self.live();
        let mine: Vec<_> = audience
            .session_watches
            .iter()
            .filter(|w| Arc::ptr_eq(&w.session, session))
            .collect();
        mine.len() < MAX_WATCHES || mine.iter().any(|w| w.watch.uri() == uri)
    }

    /// Adds a session's watch; a second `resources/subscribe` of the same
    /// resource by the same session changes nothing. Refused beyond
    /// `MAX_WATCHES` (checked again here: subscriptions may run at once).
    fn add_session_watch(&self, watch: SessionWatch) -> Result<(), ErrorData> {
        let mut audience = self.live();
        let mut count = 0;
        for w in audience
            .session_watches
            .iter()
            .filter(|w| Arc::ptr_eq(&w.session, &watch.session))
        {
            if w.watch.upstream() == watch.watch.upstream() && w.watch.uri() == watch.watch.uri() {
                return Ok(());
            }
            count += 1;
        }
        if count >= MAX_WATCHES {
            return Err(too_many_watches());
        }
        audience.session_watches.push(watch);
        Ok(())
    }

    /// Ends a session's watch of `uri` (its `resources/unsubscribe`).
    fn remove_session_watch(&self, session: &Arc<()>, uri: &str) {
        self.live()
            .session_watches
            .retain(|w| !(Arc::ptr_eq(&w.session, session) && w.watch.uri() == uri));
    }

    fn add(&self, peer: Peer<RoleServer>) {
        self.live().peers.push(peer);
    }

    /// Adds a listen stream, told of changes until its `open` is cancelled.
    fn add_listener(&self, listener: Listener) {
        self.live().listeners.push(listener);
    }

    async fn announce(&self, change: &ListChanged, policy: &Policy) {
        if change.kind == ChangeKind::ResourceUpdated {
            if let Some(uri) = &change.uri {
                self.resource_updated(&change.upstream, uri, policy).await;
            }
            return;
        }
        let kind = change.kind;
        let (peers, listeners) = {
            let audience = self.live();
            (audience.peers.clone(), audience.listeners.clone())
        };
        for peer in peers {
            let sent = match kind {
                ChangeKind::Tools => peer.notify_tool_list_changed().await,
                ChangeKind::Prompts => peer.notify_prompt_list_changed().await,
                ChangeKind::Resources => peer.notify_resource_list_changed().await,
                ChangeKind::Reconnected => {
                    let tools = peer.notify_tool_list_changed().await;
                    let prompts = peer.notify_prompt_list_changed().await;
                    tools
                        .and(prompts)
                        .and(peer.notify_resource_list_changed().await)
                }
                ChangeKind::ResourceUpdated => Ok(()),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "could not tell a session that a list changed");
            }
        }
        for listener in listeners {
            let (tools, prompts, resources) = match kind {
                ChangeKind::Tools => (true, false, false),
                ChangeKind::Prompts => (false, true, false),
                ChangeKind::Resources => (false, false, true),
                ChangeKind::Reconnected => (true, true, true),
                ChangeKind::ResourceUpdated => (false, false, false),
            };
            let sink = &listener.sink;
            let accepted = sink.accepted();
            // The sink refuses what its filter did not accept; asked only
            // for what it did.
            if tools && accepted.tools_list_changed == Some(true) {
                listened(sink.notify_tool_list_changed().await);
            }
            if prompts && accepted.prompts_list_changed == Some(true) {
                listened(sink.notify_prompt_list_changed().await);
            }
            if resources && accepted.resources_list_changed == Some(true) {
                listened(sink.notify_resource_list_changed().await);
            }
        }
    }
}

impl SessionPeers {
    /// Tells the listen streams watching `uri` of `upstream` that it
    /// changed, each only if the policy lets its principal see it now (a
    /// reloaded policy may have taken it away since the stream began).
    async fn resource_updated(&self, upstream: &Arc<str>, uri: &str, policy: &Policy) {
        let (listeners, sessions) = {
            let audience = self.live();
            let sessions: Vec<_> = audience
                .session_watches
                .iter()
                .filter(|w| w.watch.upstream() == upstream && w.watch.uri() == uri)
                .map(|w| (w.peer.clone(), w.principal.clone()))
                .collect();
            (audience.listeners.clone(), sessions)
        };
        let target = Target::upstream(Kind::Resource, uri, upstream);
        for (peer, principal) in sessions {
            if policy.visibility(&principal, &target) == Access::Allow
                && let Err(e) = peer
                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(uri))
                    .await
            {
                tracing::debug!(error = %e, "could not tell a session that a resource changed");
            }
        }
        for listener in listeners {
            let watching = listener
                .watched
                .iter()
                .any(|(from, watched)| from == upstream && watched == uri);
            if watching && policy.visibility(&listener.principal, &target) == Access::Allow {
                listened(listener.sink.notify_resource_updated(uri).await);
            }
        }
    }
}

/// Logs a notification a listen stream could not take (it may just have
/// ended: it is forgotten at the next change).
fn listened(sent: Result<(), SubscriptionSendError>) {
    if let Err(e) = sent {
        tracing::debug!(error = %e, "could not notify a listen stream");
    }
}

impl McpHandler {
    /// A handler; with upstreams, its sessions hear of catalogue changes.
    fn new(gateway: Arc<Gateway>, identity: Identity, pauses: Option<StreamPauses>) -> McpHandler {
        let sessions = SessionPeers::default();
        follow_upstream_changes(&gateway, sessions.clone());
        McpHandler {
            gateway,
            identity,
            sessions,
            log_level: Arc::default(),
            pauses,
            session: Arc::default(),
            held: HeldCalls::default(),
        }
    }

    /// The same handler for a new session, with its own log level.
    fn for_session(&self) -> McpHandler {
        McpHandler {
            gateway: self.gateway.clone(),
            identity: self.identity.clone(),
            sessions: self.sessions.clone(),
            log_level: Arc::default(),
            pauses: self.pauses.clone(),
            session: Arc::default(),
            held: self.held.clone(),
        }
    }

    fn logs(&self, level: LoggingLevel) -> bool {
        let wanted = *self
            .log_level
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Variants run from Debug to Emergency.
        wanted.is_none_or(|wanted| level as u8 >= wanted as u8)
    }

    /// Whether the client can answer requests during its call: a session
    /// (stdio, or Streamable HTTP with `Mcp-Session-Id`). A 2026-07-28
    /// request stands alone, and its stream takes no answers.
    fn in_session(&self, context: &RequestContext<RoleServer>) -> bool {
        match self.identity {
            Identity::Stdio(_) => true,
            Identity::Http => context
                .extensions
                .get::<http::request::Parts>()
                .is_some_and(|parts| parts.headers.contains_key("mcp-session-id")),
        }
    }

    /// What this client takes during a call, and its progress token.
    fn relay_for(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> (
        Relay,
        tokio::sync::mpsc::Receiver<Relayed>,
        Option<ProgressToken>,
    ) {
        let token = context.meta.get_progress_token();
        // A session's client is asked mid-call; a 2026-07-28 caller by an
        // input-required result (see `held_calls`).
        let asks = self.in_session(context) || takes_input_required(context);
        let declared = declared_capabilities(context).unwrap_or_default();
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

/// What happened first while a held call ran.
enum HeldEvent {
    Done(Result<Result<CallResult, CallError>, tokio::task::JoinError>),
    Message(Relayed),
    CallerGone,
}

impl McpHandler {
    /// `tools/call` of a 2026-07-28 caller that can answer questions. The
    /// call runs on its own task; a question the upstream asks mid-call (a
    /// 2025-11-25 upstream) is answered by an input-required result, and
    /// the call is held open until the caller calls again with the answers
    /// and the request state (see `held_calls`).
    async fn call_tool_held(
        &self,
        caller: Caller,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        url_elicitation: bool,
    ) -> Result<CallToolResponse, ErrorData> {
        let owner = Owner::of(&caller.principal);
        let token = context.meta.get_progress_token();
        let resumed = request
            .request_state
            .as_deref()
            .filter(|state| state.starts_with(HELD_STATE_PREFIX));
        let mut held = match resumed {
            Some(state) => {
                let mut held =
                    self.held
                        .resume(state, &owner, &request.name)
                        .map_err(|e| match e {
                            ResumeError::Unknown => ErrorData::invalid_params(
                                "unknown or expired request state: call the tool again without it",
                                None,
                            ),
                            ResumeError::OtherTool => ErrorData::invalid_params(
                                "the request state belongs to a call of another tool",
                                None,
                            ),
                        })?;
                held.answer(request.input_responses.as_ref());
                held
            }
            None => {
                let (relay, relayed, _) = self.relay_for(context);
                // The call outlives this request: its own token stops it.
                let cancel = CancellationToken::new();
                let call = CallContext {
                    relay: Some(relay),
                    cancel: cancel.clone(),
                    capabilities: declared_capabilities(context),
                    takes_input_required: true,
                };
                let input = UpstreamInput {
                    input_responses: request.input_responses,
                    request_state: request.request_state,
                };
                // rmcp moves a request's `_meta` into the context as it dispatches.
                let meta = request
                    .meta
                    .as_ref()
                    .map(|m| m.0.0.clone())
                    .or_else(|| Some(context.meta.0.0.clone()));
                let gateway = self.gateway.clone();
                let name = request.name.to_string();
                let arguments = request.arguments;
                let work = tokio::spawn(async move {
                    gateway
                        .call_tool(&caller, &name, arguments, meta.as_ref(), input, call)
                        .await
                });
                HeldCall::new(owner, &request.name, work, relayed, cancel)
            }
        };
        loop {
            let event = tokio::select! {
                joined = &mut held.work => HeldEvent::Done(joined),
                Some(message) = held.relayed.recv() => HeldEvent::Message(message),
                () = context.ct.cancelled() => HeldEvent::CallerGone,
            };
            match event {
                HeldEvent::Done(joined) => {
                    while let Ok(message) = held.relayed.try_recv() {
                        self.notify(message, context, token.as_ref()).await;
                    }
                    let result = joined.map_err(|e| {
                        tracing::error!(error = %e, "a held upstream call failed");
                        ErrorData::internal_error("the call failed", None)
                    })?;
                    return match result.map_err(|e| call_error(e, url_elicitation))? {
                        CallResult::Builtin(result) => Ok(tool_result(result).into()),
                        CallResult::Upstream(answer) => Ok(answer),
                    };
                }
                // The caller cancelled: dropping the held call stops the
                // upstream's (audited as cancelled).
                HeldEvent::CallerGone => {
                    return Err(ErrorData::new(
                        ErrorCode::INTERNAL_ERROR,
                        "the request was cancelled",
                        None,
                    ));
                }
                HeldEvent::Message(message) => match Incoming::of(message) {
                    Incoming::Question(question) => {
                        held.ask(question);
                        // Questions asked together are answered together.
                        while let Ok(message) = held.relayed.try_recv() {
                            match Incoming::of(message) {
                                Incoming::Question(question) => held.ask(question),
                                Incoming::Notice(other) => {
                                    self.notify(other, context, token.as_ref()).await;
                                }
                            }
                        }
                        let requests = held.input_requests();
                        match self.held.hold(held) {
                            Ok(state) => {
                                return Ok(CallToolResponse::InputRequired(
                                    InputRequiredResult::new(Some(requests), Some(state)),
                                ));
                            }
                            Err(refused) => {
                                held = *refused;
                                held.refuse("the gateway holds too many calls of this caller open");
                            }
                        }
                    }
                    // A 2026-07-28 request has no session stream to resume.
                    Incoming::Notice(Relayed::Paused) => {}
                    Incoming::Notice(other) => self.notify(other, context, token.as_ref()).await,
                },
            }
        }
    }
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
        }
    }
}

/// Follows the upstreams' catalogue changes for as long as the gateway
/// lives: refreshes what the gateway knows (pins), then tells the sessions.
fn follow_upstream_changes(gateway: &Arc<Gateway>, sessions: SessionPeers) {
    let Some(mut changes) = gateway.upstream_changes() else {
        return;
    };
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                // Changes were missed: anything may have changed.
                Err(broadcast::error::RecvError::Lagged(_)) => ListChanged {
                    upstream: Arc::from(""),
                    kind: ChangeKind::Reconnected,
                    uri: None,
                },
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let Some(gateway) = gateway.upgrade() else {
                break;
            };
            gateway.upstream_changed(&change).await;
            sessions.announce(&change, &gateway.policy()).await;
        }
    });
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

/// The capabilities the client declared: in the request's `_meta`
/// (2026-07-28), else at `initialize`.
fn declared_capabilities(
    context: &RequestContext<RoleServer>,
) -> Option<rmcp::model::ClientCapabilities> {
    context.meta.client_capabilities().or_else(|| {
        context
            .peer
            .peer_info()
            .map(|info| info.capabilities.clone())
    })
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

/// The client's failure to answer a relayed request, as the upstream gets it.
fn client_failed(error: rmcp::service::ServiceError) -> ErrorData {
    match error {
        rmcp::service::ServiceError::McpError(error) => error,
        other => ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            format!("the client did not answer: {other}"),
            None,
        ),
    }
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

fn internal_error(message: &'static str) -> ErrorData {
    ErrorData::new(ErrorCode::INTERNAL_ERROR, message, None)
}

/// The JSON-RPC form of a refusal (stdio; HTTP answers in `http/errors.rs`).
fn refusal_error(refusal: &Refusal) -> ErrorData {
    ErrorData::new(
        ErrorCode(DENIED_ERROR_CODE),
        refusal.to_string(),
        Some(json!({ "reason": refusal.code() })),
    )
}

/// The JSON-RPC error for a refused call: names the reason so the client
/// (and its user) can see why.
fn deny_error(deny: &Deny) -> ErrorData {
    let mut data = json!({
        "reason": deny.reason.code(),
        "tool": deny.tool,
    });
    if let Some(scope) = deny.required_scope() {
        data["required_scope"] = json!(scope);
    }
    // The JSON-RPC form of HTTP 429's Retry-After.
    if let DenyReason::RateLimited { retry_after_secs } = deny.reason {
        data["retry_after"] = json!(retry_after_secs);
    }
    ErrorData::new(ErrorCode(DENIED_ERROR_CODE), deny.message(), Some(data))
}

/// The refusal of a call that needs a human's approval. Every client gets
/// the approval id and URL in `data`; a client that declared URL-mode
/// elicitation gets the MCP error that asks it to open the URL.
fn approval_error(pending: &PendingApproval, url_elicitation: bool) -> ErrorData {
    let expires_at = pending.expires_at.as_secs();
    let mut data = json!({
        "reason": pending.deny.reason.code(),
        "tool": pending.deny.tool,
        "approval_id": pending.approval_id,
        "approval_url": pending.url,
        "expires_at": expires_at,
        "operation_token_meta": OPERATION_TOKEN_META,
    });
    let message = format!(
        "tool '{}' needs a human's approval: open {} to approve, then retry the same call with \
         the operation token in params._meta[\"{OPERATION_TOKEN_META}\"]",
        pending.deny.tool,
        pending
            .url
            .as_deref()
            .unwrap_or("`gatehouse approvals list`"),
    );
    match (&pending.url, url_elicitation) {
        (Some(url), true) => {
            data["elicitations"] = json!([{
                "mode": "url",
                "elicitationId": pending.approval_id,
                "url": url,
                "message": format!("Approve the call of {} in your browser.", pending.deny.tool),
            }]);
            ErrorData::new(
                ErrorCode(URL_ELICITATION_REQUIRED_CODE),
                message,
                Some(data),
            )
        }
        _ => ErrorData::new(ErrorCode(DENIED_ERROR_CODE), message, Some(data)),
    }
}

fn call_error(error: CallError, url_elicitation: bool) -> ErrorData {
    match error {
        CallError::Denied(deny) => deny_error(&deny),
        CallError::ApprovalRequired(pending) => approval_error(&pending, url_elicitation),
        CallError::Unavailable(e) => {
            tracing::error!(error = %e, "tool call refused: approvals unavailable");
            internal_error("approvals are unavailable, so the call was not run")
        }
        CallError::PinsUnavailable(e) => {
            tracing::error!(error = %e, "tool call refused: tool pins unavailable");
            internal_error(
                "the upstream tool could not be checked against its pinned definition, so the call was not run",
            )
        }
        CallError::Audit(e) => {
            tracing::error!(error = %e, "tool call refused: audit unavailable");
            internal_error("the audit log is unavailable, so the call was not run")
        }
        // The upstream's own JSON-RPC error is its answer to the caller's
        // request: relayed as it came (code, message, data).
        CallError::Upstream(UpstreamError::Rpc {
            code,
            message,
            data,
            ..
        }) => ErrorData::new(ErrorCode(code), message, data),
        // The upstream's failure with the audit record's reason code, said
        // without internal reasons (the record and the log have those).
        CallError::Upstream(e) => ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            e.public_message(),
            Some(json!({ "reason": e.code() })),
        ),
    }
}

/// The error of a request about one resource. A resource nothing serves,
/// or that the policy does not cover (the same to the caller: neither is
/// listed), is not found (SEP-2164): -32602 with the URI in `data`, and
/// Gatehouse's reason kept beside it. Any other refusal is as for a tool.
fn resource_error(error: CallError, uri: &str) -> ErrorData {
    let not_found = match &error {
        CallError::Denied(deny) => deny.reason == DenyReason::UnknownTool,
        CallError::Upstream(UpstreamError::Unknown(_)) => true,
        _ => false,
    };
    let mut answer = call_error(error, false);
    if not_found {
        answer.code = ErrorCode::INVALID_PARAMS;
        let mut data = match answer.data.take() {
            Some(serde_json::Value::Object(data)) => data,
            _ => serde_json::Map::new(),
        };
        data.insert("uri".into(), json!(uri));
        answer.data = Some(serde_json::Value::Object(data));
    }
    answer
}

fn tool_result(result: Result<ToolOutput, ToolError>) -> CallToolResult {
    match result {
        Ok(output) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(output.text)]);
            result.structured_content = output.structured;
            result
        }
        // The error's text already starts with what went wrong ("refused: …").
        Err(error) => CallToolResult::error(vec![ContentBlock::text(error.to_string())]),
    }
}

impl McpHandler {
    async fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        match &self.identity {
            Identity::Http => context
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
                match self.gateway.admit_caller(&caller).await {
                    Ok(Ok(())) => Ok(caller),
                    Ok(Err(refusal)) => Err(refusal_error(&refusal)),
                    Err(_) => Err(internal_error(
                        "the audit log is unavailable, so the request was not run",
                    )),
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
        context.peer.set_peer_info(request.clone());
        // A session hears of the upstreams' catalogue changes
        // (`on_initialized` registers it; `get_info` says so) and of the
        // resources it subscribed to.
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        if self.gateway.has_upstreams() {
            self.sessions.add(context.peer);
        }
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
        let caller = self.caller(context.request_context()).await?;
        if context
            .accepted()
            .resource_subscriptions
            .as_ref()
            .is_some_and(|uris| uris.len() > MAX_WATCHES)
        {
            return Err(too_many_watches());
        }
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
        // end with it.
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
        context.cancelled().await;
        drop(watches);
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.caller(&context).await?;
        *self
            .log_level
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(request.level);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let caller = self.caller(&context).await?;
        Box::pin(self.gateway.complete(&caller, request))
            .await
            .map_err(|e| call_error(e, false))
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
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
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        // Authenticated like every request; ending one's own watch needs
        // no permission (and a watch that does not exist is no error).
        self.caller(&context).await?;
        self.sessions
            .remove_session_watch(&self.session, &request.uri);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self.caller(&context).await?;
        let resources = Box::pin(self.gateway.list_upstream_resources(&caller)).await;
        // The list depends on who asks: it must never be shared between users.
        Ok(ListResourcesResult::with_all_items(resources).with_cache_scope(CacheScope::Private))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let caller = self.caller(&context).await?;
        let templates = Box::pin(self.gateway.list_upstream_resource_templates(&caller)).await;
        Ok(ListResourceTemplatesResult::with_all_items(templates)
            .with_cache_scope(CacheScope::Private))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = self.caller(&context).await?;
        let input = UpstreamInput {
            input_responses: request.input_responses,
            request_state: request.request_state,
        };
        let call = CallContext {
            relay: None,
            cancel: context.ct.clone(),
            capabilities: declared_capabilities(&context),
            takes_input_required: takes_input_required(&context),
        };
        Box::pin(
            self.gateway
                .read_resource(&caller, &request.uri, input, call),
        )
        .await
        .map_err(|e| resource_error(e, &request.uri))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = self.caller(&context).await?;
        let prompts = Box::pin(self.gateway.list_upstream_prompts(&caller)).await;
        // The list depends on who asks: it must never be shared between users.
        Ok(ListPromptsResult::with_all_items(prompts).with_cache_scope(CacheScope::Private))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let caller = self.caller(&context).await?;
        let input = UpstreamInput {
            input_responses: request.input_responses,
            request_state: request.request_state,
        };
        let call = CallContext {
            relay: None,
            cancel: context.ct.clone(),
            capabilities: declared_capabilities(&context),
            takes_input_required: takes_input_required(&context),
        };
        Box::pin(
            self.gateway
                .get_prompt(&caller, &request.name, request.arguments, input, call),
        )
        .await
        .map_err(|e| call_error(e, false))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
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
                            tool.description = Some(described(description, listed.access).into());
                        }
                        tool
                    }),
            )
            .collect();
        // The list depends on who asks: it must never be shared between users.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
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
            return Box::pin(self.call_tool_held(caller, request, &context, url_elicitation)).await;
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
        let (relay, relayed, token) = self.relay_for(&context);
        let call = CallContext {
            relay: Some(relay),
            cancel: context.ct.clone(),
            capabilities: declared_capabilities(&context),
            takes_input_required: takes_input_required(&context),
        };
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

/// The response streams of session requests still open, by session and
/// JSON-RPC request id: each can be closed mid-call (SEP-1699) while its
/// request runs on.
#[derive(Clone, Default)]
struct StreamPauses(Arc<Mutex<PauseTable>>);

/// The sender that closes each open stream, by session and request id.
type PauseTable = HashMap<(SessionId, RequestId), oneshot::Sender<()>>;

impl StreamPauses {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseTable> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a request's stream; the entry leaves with the stream.
    fn open(&self, session: SessionId, request: RequestId) -> (oneshot::Receiver<()>, PauseEntry) {
        let (pause, paused) = oneshot::channel();
        let key = (session, request);
        self.lock().insert(key.clone(), pause);
        (
            paused,
            PauseEntry {
                pauses: self.clone(),
                key,
            },
        )
    }

    /// Closes the stream of `request` in `session`, if it is still open.
    fn pause(&self, session: &str, request: &RequestId) {
        let key = (SessionId::from(session), request.clone());
        if let Some(pause) = self.lock().remove(&key) {
            let _ = pause.send(());
        }
    }
}

/// Removes its stream from [`StreamPauses`] when the stream ends.
struct PauseEntry {
    pauses: StreamPauses,
    key: (SessionId, RequestId),
}

impl Drop for PauseEntry {
    fn drop(&mut self) {
        self.pauses.lock().remove(&self.key);
    }
}

/// A request's response stream that ends early when paused.
struct Pausable<S> {
    inner: std::pin::Pin<Box<S>>,
    paused: Option<oneshot::Receiver<()>>,
    _entry: Option<PauseEntry>,
}

impl<S: futures::Stream> futures::Stream for Pausable<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = self.get_mut();
        if let Some(paused) = this.paused.as_mut() {
            match std::pin::Pin::new(paused).poll(cx) {
                std::task::Poll::Ready(Ok(())) => return std::task::Poll::Ready(None),
                // Never paused now: read on.
                std::task::Poll::Ready(Err(_)) => this.paused = None,
                std::task::Poll::Pending => {}
            }
        }
        this.inner.as_mut().poll_next(cx)
    }
}

/// rmcp's local sessions, with request streams that can be closed mid-call
/// (rmcp keeps what is sent on a closed stream for the client's
/// resumption with `Last-Event-ID`, and answers that resumption).
pub(crate) struct PausableSessions {
    inner: LocalSessionManager,
    pauses: StreamPauses,
}

type LocalError = <LocalSessionManager as SessionManager>::Error;
type LocalTransport = <LocalSessionManager as SessionManager>::Transport;

impl SessionManager for PausableSessions {
    type Error = LocalError;
    type Transport = LocalTransport;

    async fn create_session(&self) -> Result<(SessionId, LocalTransport), LocalError> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, LocalError> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, LocalError> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), LocalError> {
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, LocalError>
    {
        // Registered before the request reaches the handler, which may
        // pause it at once.
        let (paused, entry) = match &message {
            rmcp::model::JsonRpcMessage::Request(request) => {
                let (paused, entry) = self.pauses.open(id.clone(), request.id.clone());
                (Some(paused), Some(entry))
            }
            _ => (None, None),
        };
        let stream = self.inner.create_stream(id, message).await?;
        Ok(Pausable {
            inner: Box::pin(stream),
            paused,
            _entry: entry,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), LocalError> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, LocalError>
    {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, LocalError>
    {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<LocalTransport>, LocalError> {
        self.inner.restore_session(id).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

/// The SDK's sessions, so that the transport can end one it refused to
/// bind to a principal (a refused session must not live on unbound).
#[derive(Clone)]
pub struct SdkSessions(Arc<PausableSessions>);

impl SdkSessions {
    pub async fn close(&self, id: &str) {
        if let Err(e) = self.0.close_session(&Arc::from(id)).await {
            tracing::warn!(error = %e, "could not end a refused MCP session");
        }
    }

    /// Sessions the SDK holds (for tests).
    #[cfg(test)]
    pub async fn count(&self) -> usize {
        self.0.inner.sessions.read().await.len()
    }
}

/// Settings of the Streamable HTTP endpoint.
pub struct HttpServiceOptions {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub session_idle_timeout: Duration,
    pub shutdown: CancellationToken,
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
    sessions.session_config = session_config;
    let pauses = StreamPauses::default();
    let sessions = Arc::new(PausableSessions {
        inner: sessions,
        pauses: pauses.clone(),
    });
    let handler = McpHandler::new(gateway, Identity::Http, Some(pauses));
    (
        McpService(Arc::new(StreamableHttpService::new(
            move || Ok(handler.for_session()),
            Arc::clone(&sessions),
            config,
        ))),
        SdkSessions(sessions),
    )
}

/// Serves MCP over stdin/stdout until the client closes the stream.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    authenticator: Arc<StdioAuthenticator>,
) -> Result<(), std::io::Error> {
    let handler = McpHandler::new(gateway, Identity::Stdio(authenticator), None);
    let running = handler
        .serve(rmcp::transport::stdio())
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

    #[tokio::test]
    async fn a_paused_request_stream_ends_and_the_others_go_on() {
        use futures::StreamExt;
        let pauses = StreamPauses::default();
        let stream = |request: i64| {
            let (paused, entry) = pauses.open(SessionId::from("s1"), RequestId::Number(request));
            Pausable {
                inner: Box::pin(futures::stream::iter([1, 2]).chain(futures::stream::pending())),
                paused: Some(paused),
                _entry: Some(entry),
            }
        };
        let mut first = stream(1);
        let mut second = stream(2);
        assert_eq!(first.next().await, Some(1));
        pauses.pause("s1", &RequestId::Number(1));
        assert_eq!(first.next().await, None);
        // Another session's request of the same id, or another request, is
        // not this one.
        pauses.pause("s2", &RequestId::Number(2));
        assert_eq!(second.next().await, Some(1));
        assert_eq!(second.next().await, Some(2));
        // A stream forgets its entry when it goes.
        drop(second);
        assert!(pauses.lock().is_empty());
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
