//! Everything that touches rmcp's client side: the handshake (with era
//! detection), the client handler, the requests, and the translation of
//! rmcp's errors into [`UpstreamError`]. rmcp changes often; its client API
//! is used only here, so an upgrade touches this file.

// Sampling, logging and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::sync::Arc;

use std::collections::HashMap;
use std::sync::Mutex;

use std::future::Future;

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotificationParam,
    ClientCapabilities, ClientConfig, ClientRequest, CompleteRequest, CompleteRequestParams,
    CompleteResult, CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams,
    ElicitResult, ElicitationCapability, ErrorCode, ErrorData, FormElicitationCapability,
    GetExtensions, GetPromptRequest, GetPromptRequestParams, GetPromptResponse, Implementation,
    InputResponses, JsonRpcError, PaginatedRequestParams, Prompt, ProtocolVersion,
    ReadResourceRequest, ReadResourceRequestParams, ReadResourceResponse, RequestId,
    RequestMetaObject, Resource, ResourceTemplate, ResourceUpdatedNotificationParam,
    SamplingCapability, ServerJsonRpcMessage, ServerNotification, ServerResult, SubscribeRequest,
    SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequest, UnsubscribeRequestParams,
    UrlElicitationCapability,
};
use rmcp::service::{
    ClientInitializeError, ClientLifecycleMode, ClientServiceExt, InboundStreamOrigin,
    NotificationContext, Peer, PeerRequestOptions, QuitReason, RequestContext, RunningService,
    ServiceError,
};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClientTransportConfig, StreamableHttpError,
};
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, Transport};
use rmcp::{ClientHandler, RoleClient};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::changes::{ChangeKind, ListChanged};
use crate::client_credentials::ClientCredentials;
use crate::direct_call::Direct;
use crate::error::UpstreamError;
use crate::in_flight::InFlight;
use crate::input_rounds::{MAX_INPUT_ROUNDS, ask_caller};
use crate::line_cap::{TOO_LARGE_CODE, TOO_LARGE_MARKER};
use crate::relay::{CallContext, NotAsked, Relay, Relayed};

/// The protocol revision preferred: 2026-07-28 (stateless, `server/discover`),
/// falling back to 2025-11-25 (`initialize`, sessions) when the server
/// answers discovery with an error, as the 2026-07-28 backward-compatibility
/// rules describe.
/// `pinned` (the entry's `protocol_version`, validated) speaks that
/// revision only.
fn lifecycle(pinned: Option<&str>) -> ClientLifecycleMode {
    match pinned {
        // The version itself is in the client's `initialize` (`get_info`).
        Some("2025-11-25") => ClientLifecycleMode::Initialize,
        Some("2026-07-28") => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
        _ => ClientLifecycleMode::Auto {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_11_25],
            legacy_version: Some(ProtocolVersion::V_2025_11_25),
        },
    }
}

/// The upstream's transport, read by the gateway first: progress and log
/// messages are relayed as they arrive, in the order they came. rmcp hands
/// notifications to the handler on tasks of their own, which could run
/// after the answer that followed them had ended the call.
struct Tap<T> {
    inner: T,
    in_flight: Arc<InFlight>,
    upstream: Arc<str>,
    /// Replaced in every message before anything reads it.
    secrets: SentSecrets,
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Tap<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let rmcp::model::JsonRpcMessage::Request(request) = &item {
            self.in_flight.on_the_wire(&request.id, &request.request);
        }
        self.inner.send(item)
    }

    // The trait asks for a `Send` future, which `async fn` cannot promise.
    #[allow(clippy::manual_async_fn)]
    fn receive(
        &mut self,
    ) -> impl Future<Output = Option<rmcp::service::RxJsonRpcMessage<RoleClient>>> + Send {
        async move {
            let message = loop {
                let message = self.inner.receive().await?;
                if let Some(message) = self.secrets.scrub_message(&self.upstream, message) {
                    break message;
                }
            };
            match &message {
                rmcp::model::JsonRpcMessage::Notification(notification) => {
                    self.in_flight.relay(&notification.notification);
                }
                rmcp::model::JsonRpcMessage::Response(response) => {
                    self.in_flight.answered(&response.id);
                }
                rmcp::model::JsonRpcMessage::Error(error) => {
                    if let Some(id) = &error.id {
                        self.in_flight.answered(id);
                    }
                }
                rmcp::model::JsonRpcMessage::Request(_) => {}
            }
            Some(message)
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// Tells the upstream to stop a request nobody waits for any more (the
/// caller cancelled, or the call timed out), unless disarmed.
pub(crate) struct Abandoned {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
}

impl Abandoned {
    pub(crate) fn new(peer: Peer<RoleClient>, id: RequestId) -> Abandoned {
        Abandoned { peer, id: Some(id) }
    }

    /// Answered (or never sent): nothing to tell the upstream.
    pub(crate) fn disarm(&mut self) {
        self.id = None;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let (Some(id), Ok(runtime)) = (self.id.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let peer = self.peer.clone();
        runtime.spawn(async move {
            let params =
                CancelledNotificationParam::new(Some(id), Some("cancelled by the caller".into()));
            let _ = peer.notify_cancelled(params).await;
        });
    }
}

fn refused(message: String) -> ErrorData {
    ErrorData::new(ErrorCode::METHOD_NOT_FOUND, message, None)
}

/// Puts an upstream's question to the caller and waits for the answer. A
/// question the upstream gives up on (`cancelled`: its request cancelled)
/// gives its place back at once, not when the caller answers.
async fn put_to_caller<T>(
    relay: &Relay,
    question: Relayed,
    answer: tokio::sync::oneshot::Receiver<Result<T, ErrorData>>,
    cancelled: &tokio_util::sync::CancellationToken,
) -> Result<T, ErrorData> {
    let asked = async {
        let _place = relay.ask(question).await.map_err(not_asked)?;
        answer
            .await
            .map_err(|_| refused("the call has ended".into()))?
    };
    tokio::select! {
        answered = asked => answered,
        () = cancelled.cancelled() => Err(refused("the upstream cancelled the request".into())),
    }
}

fn not_asked(why: NotAsked) -> ErrorData {
    refused(
        match why {
            NotAsked::Ended => "the call has ended",
            NotAsked::TooMany => {
                "too many requests of this call already wait for the caller's answer"
            }
        }
        .into(),
    )
}

/// Receives the upstream's notifications and requests.
#[derive(Clone)]
pub(crate) struct Handler {
    upstream: Arc<str>,
    /// The tenant of this connection, when the upstream has one per tenant.
    tenant: Option<Arc<str>>,
    changes: broadcast::Sender<ListChanged>,
    in_flight: Arc<InFlight>,
    /// The entry's `protocol_version`, when it pins one.
    pinned: Option<String>,
}

impl Handler {
    pub(crate) fn new(
        upstream: Arc<str>,
        tenant: Option<Arc<str>>,
        changes: broadcast::Sender<ListChanged>,
        pinned: Option<String>,
        call_timeout: std::time::Duration,
    ) -> Handler {
        Handler {
            upstream,
            tenant,
            changes,
            // A call the gateway abandons may go on at the upstream for as
            // long as a call may take.
            in_flight: Arc::new(InFlight::new(call_timeout)),
            pinned,
        }
    }

    /// The relay of the call an upstream's request was sent during. Over
    /// Streamable HTTP the request arrives on the response stream of that
    /// call (rmcp marks it); otherwise (stdio, the standalone stream) it is
    /// attributed only when one request is in flight. A request nobody can
    /// be sure about is refused: it must never reach another caller.
    fn requester(
        &self,
        context: &RequestContext<RoleClient>,
        what: &str,
    ) -> Result<Relay, ErrorData> {
        let relay = match context.extensions.get::<InboundStreamOrigin>() {
            Some(InboundStreamOrigin::OutboundRequest(id)) => self.in_flight.by_id(id).ok_or(1),
            _ => self.in_flight.only(),
        };
        match relay {
            Ok(Some(relay)) => Ok(relay),
            Ok(None) => Err(refused(format!(
                "the gateway cannot relay {what} for this request"
            ))),
            Err(calls) => {
                tracing::debug!(upstream = %self.upstream, calls, what, "cannot tell which call an upstream request belongs to");
                Err(refused(format!(
                    "the gateway relays {what} only during the call it belongs to"
                )))
            }
        }
    }

    /// The requests in flight on this handler's connection.
    pub(crate) fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    fn changed(&self, kind: ChangeKind) {
        tracing::debug!(upstream = %self.upstream, ?kind, "upstream list changed");
        // Nobody listening is fine: the catalogue is refreshed on demand.
        let _ = self.changes.send(ListChanged {
            upstream: self.upstream.clone(),
            kind,
            uri: None,
            tenant: self.tenant.clone(),
        });
    }

    /// A notification that came on the direct path's stream, where rmcp's
    /// service loop (which calls the `on_…` methods below) does not see it.
    pub(crate) fn notified(&self, notification: ServerNotification) {
        match notification {
            ServerNotification::ToolListChangedNotification(_) => self.changed(ChangeKind::Tools),
            ServerNotification::PromptListChangedNotification(_) => {
                self.changed(ChangeKind::Prompts)
            }
            ServerNotification::ResourceListChangedNotification(_) => {
                self.changed(ChangeKind::Resources)
            }
            ServerNotification::ResourceUpdatedNotification(updated) => {
                self.resource_updated(updated.params.uri)
            }
            _ => {}
        }
    }

    /// A resource the gateway subscribed to changed; the gateway tells
    /// whoever watches it and may see it.
    fn resource_updated(&self, uri: String) {
        let _ = self.changes.send(ListChanged {
            upstream: self.upstream.clone(),
            kind: ChangeKind::ResourceUpdated,
            uri: Some(uri.into()),
            tenant: self.tenant.clone(),
        });
    }
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        // Sampling and elicitation are relayed to the client whose call
        // the upstream is serving, when that client declared them (else the
        // upstream's request is refused). Roots are not relayed: the
        // gateway's clients' file systems are not the upstream's business.
        let mut capabilities = ClientCapabilities::default();
        capabilities.sampling = Some(SamplingCapability::default());
        capabilities.elicitation = Some(
            ElicitationCapability::new()
                .with_form(FormElicitationCapability::default())
                .with_url(UrlElicitationCapability::default()),
        );
        let config = ClientConfig::new(
            capabilities,
            Implementation::new("gatehouse", env!("CARGO_PKG_VERSION")),
        );
        match self.pinned.as_deref() {
            Some("2025-11-25") => config.with_protocol_version(ProtocolVersion::V_2025_11_25),
            _ => config,
        }
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let relay = self.requester(&context, "sampling")?;
        if !relay.accepts.sampling {
            return Err(refused(
                "the calling client does not accept sampling requests".into(),
            ));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        put_to_caller(
            &relay,
            Relayed::sampling(params, reply),
            answer,
            &context.ct,
        )
        .await
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let relay = self.requester(&context, "elicitation")?;
        if !relay.accepts.elicitation {
            return Err(refused(
                "the calling client does not accept elicitation requests".into(),
            ));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        put_to_caller(
            &relay,
            Relayed::Elicitation { params, reply },
            answer,
            &context.ct,
        )
        .await
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed(ChangeKind::Tools);
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed(ChangeKind::Prompts);
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed(ChangeKind::Resources);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.resource_updated(params.uri);
    }
}

/// The secret values a connection sends (a static token or header, a
/// child's secret environment) and, with the client-credentials grant,
/// every token the grant obtains later: an upstream may echo any of them in
/// an error, and none may reach a caller or a log.
#[derive(Clone, Default)]
pub(crate) struct SentSecrets {
    fixed: Vec<String>,
    grant: Option<Arc<ClientCredentials>>,
}

impl SentSecrets {
    pub(crate) fn fixed(values: Vec<String>) -> SentSecrets {
        SentSecrets {
            fixed: values,
            grant: None,
        }
    }

    pub(crate) fn granted(grant: Arc<ClientCredentials>) -> SentSecrets {
        SentSecrets {
            fixed: Vec::new(),
            grant: Some(grant),
        }
    }

    /// Whether `secret` is the credential these values were made from: the
    /// fixed header's value, or the client secret the grant last used.
    pub(crate) fn made_with(&self, secret: &str) -> bool {
        match &self.grant {
            Some(grant) => grant.last_used_secret_is(secret),
            None => self.fixed.iter().any(|value| {
                use subtle::ConstantTimeEq as _;
                bool::from(value.as_bytes().ct_eq(secret.as_bytes()))
            }),
        }
    }

    /// The values as they are now.
    pub(crate) fn values(&self) -> Vec<String> {
        let mut values = self.fixed.clone();
        if let Some(grant) = &self.grant {
            values.extend(grant.issued());
        }
        values
    }
}

impl SentSecrets {
    /// A message from the upstream with every secret this connection sends
    /// replaced, before anything reads it: results, errors, log messages
    /// and the questions the upstream asks reach callers, logs and audit
    /// records, and an upstream may echo a request header in any of them.
    /// A message that cannot be read with a secret replaced is withheld;
    /// an answer then becomes an error answer to its request, so the call
    /// ends rather than waits.
    pub(crate) fn scrub_message(
        &self,
        upstream: &str,
        message: ServerJsonRpcMessage,
    ) -> Option<ServerJsonRpcMessage> {
        let secrets = self.values();
        if secrets.is_empty() {
            return Some(message);
        }
        let answers = match &message {
            rmcp::model::JsonRpcMessage::Response(response) => Some(response.id.clone()),
            rmcp::model::JsonRpcMessage::Error(error) => error.id.clone(),
            _ => None,
        };
        if let Some(scrubbed) = crate::scrub::scrub_message(message, &secrets) {
            return Some(scrubbed);
        }
        tracing::warn!(
            upstream,
            "a message from the upstream held Gatehouse's credential for it where it could not be \
             replaced; withheld"
        );
        answers.map(|id| {
            ServerJsonRpcMessage::Error(JsonRpcError::new(
                Some(id),
                ErrorData::internal_error(
                    "the upstream's answer held Gatehouse's credential for it and was withheld",
                    None,
                ),
            ))
        })
    }
}

/// One established MCP connection, shared by the calls that use it.
pub(crate) struct Connection {
    pub(crate) upstream: Arc<str>,
    pub(crate) peer: Peer<RoleClient>,
    /// Shared with the connection's handler, which attributes the
    /// upstream's messages to these requests.
    pub(crate) in_flight: Arc<InFlight>,
    protocol_version: String,
    /// 2026-07-28 or later: no session, every request self-contained.
    pub(crate) modern: bool,
    /// The secrets this connection sends, scrubbed from error texts.
    pub(crate) secrets: SentSecrets,
    /// Receives what the watch streams below carry, and what the upstream
    /// sends on the direct path's streams.
    pub(crate) handler: Handler,
    /// HTTP: posts `tools/call` without rmcp's client (`direct_call.rs`).
    pub(crate) direct: Option<Direct>,
    /// 2026-07-28: one `subscriptions/listen` stream per resource the
    /// gateway subscribed to (the revision has no `resources/subscribe`).
    watches: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let watches = self
            .watches
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, task) in watches.drain() {
            task.abort();
        }
    }
}

/// The parts of a connection its owner (the supervisor) keeps.
pub(crate) struct Established {
    pub(crate) connection: Arc<Connection>,
    /// Ends when the connection ends.
    pub(crate) ended: JoinHandle<()>,
    stop: Option<rmcp::service::RunningServiceCancellationToken>,
    listener: Option<JoinHandle<()>>,
}

impl Established {
    /// Closes the connection (for stdio: closes the child's stdin).
    pub(crate) async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            stop.cancel();
        }
        // The supervisor may already have seen it end (a finished handle
        // must not be polled again).
        if !self.ended.is_finished() {
            let _ = (&mut self.ended).await;
        }
    }
}

impl Drop for Established {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

/// Runs the handshake over `transport` and returns the connection.
pub(crate) async fn handshake<T, E, A>(
    upstream: &Arc<str>,
    handler: Handler,
    transport: T,
    secrets: SentSecrets,
    direct: Option<Direct>,
) -> Result<Established, UpstreamError>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let in_flight = handler.in_flight.clone();
    let transport = Tap {
        inner: transport.into_transport(),
        in_flight: in_flight.clone(),
        upstream: upstream.clone(),
        secrets: secrets.clone(),
    };
    let running: RunningService<RoleClient, Handler> = handler
        .clone()
        .serve_with_lifecycle(transport, lifecycle(handler.pinned.as_deref()))
        .await
        .map_err(|e| init_error(upstream, e).scrubbed(&secrets.values()))?;
    let peer = running.peer().clone();
    let info = peer.peer_info();
    let protocol_version = info
        .as_ref()
        .map(|i| i.protocol_version.to_string())
        .unwrap_or_default();
    let modern = info
        .as_ref()
        .is_some_and(|i| !i.protocol_version.has_initialize());
    tracing::info!(upstream = %upstream, protocol_version, "upstream connected");
    let filter = info
        .filter(|i| !i.protocol_version.has_initialize())
        .and_then(|i| listen_filter(&i.capabilities));
    let watch_handler = handler.clone();
    let listener = filter.map(|filter| {
        let (acknowledged, subscribed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(listen(
            upstream.clone(),
            peer.clone(),
            filter,
            handler,
            acknowledged,
        ));
        (task, subscribed)
    });
    // Subscribed before the connection counts as ready, so no change made
    // after that is missed; but only for a moment: a server whose listen
    // stream never acknowledges must not keep the connection from being used.
    let listener = match listener {
        Some((task, subscribed)) => {
            if tokio::time::timeout(LISTEN_ACK_WAIT, subscribed)
                .await
                .is_err()
            {
                tracing::debug!(upstream = %upstream, "subscriptions/listen not acknowledged yet; going on without waiting");
            }
            Some(task)
        }
        None => None,
    };
    let stop = running.cancellation_token();
    let ended = tokio::spawn(async move {
        match running.waiting().await {
            Ok(QuitReason::Closed) | Ok(QuitReason::Cancelled) => {}
            Ok(reason) => tracing::debug!(?reason, "upstream connection ended"),
            Err(e) => tracing::warn!(error = %e, "upstream connection task failed"),
        }
    });
    Ok(Established {
        connection: Arc::new(Connection {
            upstream: upstream.clone(),
            peer,
            in_flight,
            protocol_version,
            modern,
            secrets,
            handler: watch_handler,
            direct,
            watches: Mutex::default(),
        }),
        ended,
        stop: Some(stop),
        listener,
    })
}

/// A capped child stdout and its stdin as an rmcp transport.
pub(crate) fn stdio_transport<R, W>(
    read: R,
    write: W,
    limit: usize,
) -> impl Transport<RoleClient> + use<R, W>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    // The line cap in front already cut longer lines; this is a backstop.
    AsyncRwTransport::<RoleClient, R, W>::new_client(read, write)
        .with_max_line_length(limit.saturating_add(1024))
}

/// rmcp's Streamable HTTP client over our capped reqwest client.
pub(crate) fn http_transport(
    client: crate::http_client::CappedClient,
    url: &str,
    headers: std::collections::HashMap<http::HeaderName, http::HeaderValue>,
    limit: usize,
) -> impl Transport<RoleClient> + use<> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url)
        .custom_headers(headers)
        .max_sse_event_size(limit);
    // Some 2025 servers answer without a session id; accept that.
    config.allow_stateless = true;
    StreamableHttpClientTransport::with_client(client, config)
}

/// 2026-07-28 servers send list-changed notifications only on a
/// `subscriptions/listen` stream that asked for them.
fn listen_filter(capabilities: &rmcp::model::ServerCapabilities) -> Option<SubscriptionFilter> {
    let tools = capabilities
        .tools
        .as_ref()
        .is_some_and(|t| t.list_changed == Some(true));
    let prompts = capabilities
        .prompts
        .as_ref()
        .is_some_and(|p| p.list_changed == Some(true));
    let resources = capabilities
        .resources
        .as_ref()
        .is_some_and(|r| r.list_changed == Some(true));
    if !(tools || prompts || resources) {
        return None;
    }
    let mut builder = SubscriptionFilter::builder();
    if tools {
        builder = builder.tools_list_changed();
    }
    if prompts {
        builder = builder.prompts_list_changed();
    }
    if resources {
        builder = builder.resources_list_changed();
    }
    Some(builder.build())
}

/// How long the handshake waits for a `subscriptions/listen` stream to be
/// acknowledged before the connection is used anyway.
const LISTEN_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the `subscriptions/listen` stream, says when it is acknowledged
/// (or failed), then forwards its notifications.
async fn listen(
    upstream: Arc<str>,
    peer: Peer<RoleClient>,
    filter: SubscriptionFilter,
    handler: Handler,
    acknowledged: tokio::sync::oneshot::Sender<()>,
) {
    let subscription = peer.listen(filter).await;
    let _ = acknowledged.send(());
    match subscription {
        Ok(subscription) => forward_changes(subscription, handler).await,
        Err(e) => {
            tracing::debug!(upstream = %upstream, error = %e, "no subscriptions/listen stream");
        }
    }
}

async fn forward_changes(mut subscription: rmcp::service::Subscription, handler: Handler) {
    while let Ok(Some(notification)) = subscription.next().await {
        match notification {
            ServerNotification::ToolListChangedNotification(_) => {
                handler.changed(ChangeKind::Tools)
            }
            ServerNotification::PromptListChangedNotification(_) => {
                handler.changed(ChangeKind::Prompts)
            }
            ServerNotification::ResourceListChangedNotification(_) => {
                handler.changed(ChangeKind::Resources)
            }
            ServerNotification::ResourceUpdatedNotification(update) => {
                handler.resource_updated(update.params.uri)
            }
            _ => {}
        }
    }
}

/// `_meta` keys a caller may not set: the protocol's own, and the progress
/// token (rmcp assigns its own per request).
fn caller_meta(meta: Option<Map<String, Value>>) -> Option<RequestMetaObject> {
    let meta: Map<String, Value> = meta?
        .into_iter()
        .filter(|(k, _)| k != "progressToken" && !k.starts_with("io.modelcontextprotocol/"))
        .collect();
    if meta.is_empty() {
        return None;
    }
    serde_json::from_value(Value::Object(meta)).ok()
}

/// A listing page: the items and the cursor of the next page.
pub(crate) type Page<T> = (Vec<T>, Option<String>);

fn page_params(cursor: Option<String>) -> Option<PaginatedRequestParams> {
    Some(PaginatedRequestParams::default().with_cursor(cursor))
}

impl Connection {
    /// Whether `secret` is the credential this connection sends (see
    /// [`SentSecrets::made_with`]).
    pub(crate) fn made_with(&self, secret: &str) -> bool {
        self.secrets.made_with(secret)
    }

    pub(crate) fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.peer.is_transport_closed()
    }

    pub(crate) fn fail(&self, error: ServiceError) -> UpstreamError {
        service_error(&self.upstream, error).scrubbed(&self.secrets.values())
    }

    fn unexpected(&self, what: &str) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.upstream.clone(),
            reason: format!("{what}, which the gateway does not relay"),
        }
    }

    pub(crate) async fn tools_page(
        &self,
        cursor: Option<String>,
    ) -> Result<Page<Tool>, UpstreamError> {
        let page = self
            .peer
            .list_tools(page_params(cursor))
            .await
            .map_err(|e| self.fail(e))?;
        Ok((page.tools, page.next_cursor))
    }

    pub(crate) async fn prompts_page(
        &self,
        cursor: Option<String>,
    ) -> Result<Page<Prompt>, UpstreamError> {
        let page = self
            .peer
            .list_prompts(page_params(cursor))
            .await
            .map_err(|e| self.fail(e))?;
        Ok((page.prompts, page.next_cursor))
    }

    pub(crate) async fn resources_page(
        &self,
        cursor: Option<String>,
    ) -> Result<Page<Resource>, UpstreamError> {
        let page = self
            .peer
            .list_resources(page_params(cursor))
            .await
            .map_err(|e| self.fail(e))?;
        Ok((page.resources, page.next_cursor))
    }

    pub(crate) async fn resource_templates_page(
        &self,
        cursor: Option<String>,
    ) -> Result<Page<ResourceTemplate>, UpstreamError> {
        let page = self
            .peer
            .list_resource_templates(page_params(cursor))
            .await
            .map_err(|e| self.fail(e))?;
        Ok((page.resource_templates, page.next_cursor))
    }

    /// Sends one request and waits for its answer, relaying what the
    /// upstream sends about it meanwhile to `call`'s relay, and telling the
    /// upstream to stop when the caller cancels (or the call is dropped).
    async fn send(
        &self,
        mut request: ClientRequest,
        call: &CallContext,
    ) -> Result<ServerResult, UpstreamError> {
        let mut options = PeerRequestOptions::no_options();
        // A 2026-07-28 request carries its client's capabilities, and the
        // upstream decides what to ask for by them: the caller's own (what
        // it can answer itself), not Gatehouse's. A session's were fixed at
        // `initialize`.
        if let Some(capabilities) = &call.capabilities
            && self.modern
        {
            let mut declared = ClientCapabilities::default();
            declared.sampling = capabilities.sampling.clone();
            declared.elicitation = capabilities.elicitation.clone();
            declared.roots = capabilities.roots.clone();
            let mut meta = RequestMetaObject::new();
            meta.set_client_capabilities(declared);
            options.meta = Some(meta);
        }
        let mut ticket = self.in_flight.ticket(call.relay.clone());
        request.extensions_mut().insert(ticket.tag());
        let handle = self
            .peer
            .send_request_with_option(request, options)
            .await
            .map_err(|e| self.fail(e))?;
        let mut abandoned = Abandoned {
            peer: self.peer.clone(),
            id: Some(handle.id.clone()),
        };
        let result = tokio::select! {
            result = handle.await_response() => result.map_err(|e| self.fail(e)),
            () = call.cancel.cancelled() => return Err(UpstreamError::Cancelled {
                upstream: self.upstream.clone(),
            }),
        };
        // Answered, or the connection is gone: nothing more will come
        // about this request.
        ticket.answered();
        abandoned.id = None;
        result
    }

    /// `tools/call`. An upstream's `InputRequiredResult` (2026-07-28) is
    /// returned as it came, for the caller to answer and call again with
    /// `input_responses` and `request_state`.
    pub(crate) async fn call_tool(
        &self,
        name: String,
        arguments: Option<Map<String, Value>>,
        meta: Option<Map<String, Value>>,
        input: UpstreamInput,
        call: &CallContext,
    ) -> Result<CallToolResponse, UpstreamError> {
        let mut params = CallToolRequestParams::new(name);
        params.arguments = arguments;
        params.meta = caller_meta(meta);
        params.input_responses = input.input_responses;
        params.request_state = input.request_state;
        for _ in 0..MAX_INPUT_ROUNDS {
            let answer = match self.call_direct(&params, call).await {
                Some(answer) => answer?,
                None => {
                    let request =
                        ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
                    self.send(request, call).await?
                }
            };
            match answer {
                ServerResult::CallToolResult(result) => {
                    return Ok(CallToolResponse::Complete(result));
                }
                ServerResult::InputRequiredResult(result) if call.takes_input_required => {
                    return Ok(CallToolResponse::InputRequired(result));
                }
                ServerResult::InputRequiredResult(result) => {
                    let input = ask_caller(&self.upstream, result, call).await?;
                    params.input_responses = input.input_responses;
                    params.request_state = input.request_state;
                }
                ServerResult::CreateTaskResult(_) => {
                    return Err(self.unexpected("the upstream started a task"));
                }
                _ => return Err(self.unexpected("the upstream answered with an unknown result")),
            }
        }
        Err(self.input_rounds_exceeded())
    }

    fn input_rounds_exceeded(&self) -> UpstreamError {
        UpstreamError::InputNotGiven {
            upstream: self.upstream.clone(),
            reason: format!("the upstream asked for input more than {MAX_INPUT_ROUNDS} times"),
        }
    }

    /// An input-required result for a caller that cannot take one and
    /// cannot be asked during this request (prompts and resources get no
    /// relay).
    fn cannot_ask(&self, call: &CallContext) -> Option<UpstreamError> {
        (!call.takes_input_required).then(|| UpstreamError::InputNotGiven {
            upstream: self.upstream.clone(),
            reason: "the caller cannot be asked during this request".into(),
        })
    }

    pub(crate) async fn get_prompt(
        &self,
        name: String,
        arguments: Option<Map<String, Value>>,
        meta: Option<Map<String, Value>>,
        input: UpstreamInput,
        call: &CallContext,
    ) -> Result<GetPromptResponse, UpstreamError> {
        let mut params = GetPromptRequestParams::new(name);
        params.arguments = arguments;
        params.meta = caller_meta(meta);
        params.input_responses = input.input_responses;
        params.request_state = input.request_state;
        let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(params));
        match self.send(request, call).await? {
            ServerResult::GetPromptResult(result) => Ok(GetPromptResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => match self.cannot_ask(call) {
                Some(error) => Err(error),
                None => Ok(GetPromptResponse::InputRequired(result)),
            },
            _ => Err(self.unexpected("the upstream answered with an unknown result")),
        }
    }

    pub(crate) async fn read_resource(
        &self,
        uri: String,
        meta: Option<Map<String, Value>>,
        input: UpstreamInput,
        call: &CallContext,
    ) -> Result<ReadResourceResponse, UpstreamError> {
        let mut params = ReadResourceRequestParams::new(uri);
        params.meta = caller_meta(meta);
        params.input_responses = input.input_responses;
        params.request_state = input.request_state;
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(params));
        match self.send(request, call).await? {
            ServerResult::ReadResourceResult(result) => Ok(ReadResourceResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => match self.cannot_ask(call) {
                Some(error) => Err(error),
                None => Ok(ReadResourceResponse::InputRequired(result)),
            },
            _ => Err(self.unexpected("the upstream answered with an unknown result")),
        }
    }

    /// `completion/complete`, with the reference already in the upstream's names.
    pub(crate) async fn complete(
        &self,
        params: CompleteRequestParams,
    ) -> Result<CompleteResult, UpstreamError> {
        let request = ClientRequest::CompleteRequest(CompleteRequest::new(params));
        match self.send(request, &CallContext::default()).await? {
            ServerResult::CompleteResult(result) => Ok(result),
            _ => Err(self.unexpected("the upstream answered with an unknown result")),
        }
    }

    /// `resources/subscribe` (`subscribe = true`) or `resources/unsubscribe`;
    /// on a 2026-07-28 connection, a `subscriptions/listen` stream for the
    /// resource opened or ended.
    pub(crate) async fn subscription(
        &self,
        uri: String,
        subscribe: bool,
    ) -> Result<(), UpstreamError> {
        if self.modern {
            return self.watch(uri, subscribe).await;
        }
        let request = if subscribe {
            ClientRequest::SubscribeRequest(SubscribeRequest::new(SubscribeRequestParams::new(uri)))
        } else {
            ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(
                UnsubscribeRequestParams::new(uri),
            ))
        };
        match self.send(request, &CallContext::default()).await? {
            ServerResult::EmptyResult(_) => Ok(()),
            _ => Err(self.unexpected("the upstream answered with an unknown result")),
        }
    }
}

impl Connection {
    fn watches(&self) -> std::sync::MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.watches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens (or ends) the listen stream that carries `uri`'s updates.
    async fn watch(&self, uri: String, subscribe: bool) -> Result<(), UpstreamError> {
        if !subscribe {
            if let Some(task) = self.watches().remove(&uri) {
                task.abort();
            }
            return Ok(());
        }
        if self.watches().contains_key(&uri) {
            return Ok(());
        }
        let filter = SubscriptionFilter::builder()
            .resource_subscription(uri.clone())
            .build();
        let subscription = self.peer.listen(filter).await.map_err(|e| self.fail(e))?;
        let accepted = subscription
            .acknowledged()
            .resource_subscriptions
            .as_ref()
            .is_some_and(|uris| uris.contains(&uri));
        if !accepted {
            return Err(self.unexpected("the upstream does not send updates of this resource"));
        }
        let task = tokio::spawn(forward_changes(subscription, self.handler.clone()));
        if let Some(earlier) = self.watches().insert(uri, task) {
            earlier.abort();
        }
        Ok(())
    }
}

/// A 2026-07-28 caller's answers to an upstream's `InputRequiredResult`,
/// passed back to the upstream as they came.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInput {
    pub input_responses: Option<InputResponses>,
    pub request_state: Option<String>,
}

fn service_error(upstream: &Arc<str>, error: ServiceError) -> UpstreamError {
    let upstream = upstream.clone();
    match error {
        ServiceError::McpError(e) => {
            let ours = e.code.0 == TOO_LARGE_CODE
                && e.data
                    .as_ref()
                    .is_some_and(|d| d.get(TOO_LARGE_MARKER).is_some());
            if ours {
                let limit = e
                    .data
                    .as_ref()
                    .and_then(|d| d.get(TOO_LARGE_MARKER))
                    .and_then(Value::as_u64)
                    .unwrap_or_default();
                return UpstreamError::MessageTooLarge {
                    upstream,
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                };
            }
            UpstreamError::Rpc {
                upstream,
                code: e.code.0,
                message: e.message.into_owned(),
                data: e.data,
            }
        }
        ServiceError::TransportClosed | ServiceError::Cancelled { .. } => {
            UpstreamError::Disconnected { upstream }
        }
        ServiceError::Timeout { timeout } => UpstreamError::Timeout { upstream, timeout },
        ServiceError::TransportSend(e) => transport_error(upstream, &*e.error),
        other => UpstreamError::Protocol {
            upstream,
            reason: other.to_string(),
        },
    }
}

fn init_error(upstream: &Arc<str>, error: ClientInitializeError) -> UpstreamError {
    let upstream = upstream.clone();
    match error {
        ClientInitializeError::TransportError { error, .. } => {
            transport_error(upstream, &*error.error)
        }
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => {
            init_error(&upstream, *fallback)
        }
        ClientInitializeError::JsonRpcError(e) => UpstreamError::Rpc {
            upstream,
            code: e.code.0,
            message: e.message.into_owned(),
            data: e.data,
        },
        ClientInitializeError::ConnectionClosed(_) | ClientInitializeError::Cancelled => {
            UpstreamError::Unavailable {
                upstream,
                reason: "the connection closed during the handshake".into(),
            }
        }
        other => UpstreamError::Protocol {
            upstream,
            reason: other.to_string(),
        },
    }
}

type HttpError = StreamableHttpError<reqwest::Error>;

/// Classifies a transport failure by walking its error chain.
/// A failure of the direct path's own posting (`direct_call.rs`), read as
/// rmcp's would be.
pub(crate) fn transport_failure(upstream: &Arc<str>, error: &HttpError) -> UpstreamError {
    http_error(upstream.clone(), error)
}

fn transport_error(
    upstream: Arc<str>,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) -> UpstreamError {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<HttpError>() {
            return http_error(upstream, http);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return UpstreamError::Unavailable {
                upstream,
                reason: io.to_string(),
            };
        }
        current = e.source();
    }
    UpstreamError::Protocol {
        upstream,
        reason: error.to_string(),
    }
}

fn http_error(upstream: Arc<str>, error: &HttpError) -> UpstreamError {
    let text = error.to_string();
    match error {
        StreamableHttpError::ResponseBodyTooLarge { max_size } => UpstreamError::MessageTooLarge {
            upstream,
            limit: *max_size,
        },
        StreamableHttpError::Sse(_) if text.contains("maximum size") => {
            UpstreamError::MessageTooLarge { upstream, limit: 0 }
        }
        StreamableHttpError::Client(e) if e.is_timeout() => UpstreamError::Unavailable {
            upstream,
            reason: format!("HTTP timeout: {}", without_url(e)),
        },
        StreamableHttpError::Client(e) => UpstreamError::Unavailable {
            upstream,
            reason: without_url(e),
        },
        StreamableHttpError::HttpStatus(_)
        | StreamableHttpError::AuthRequired(_)
        | StreamableHttpError::InsufficientScope(_) => UpstreamError::Unavailable {
            upstream,
            reason: text,
        },
        StreamableHttpError::SessionExpired | StreamableHttpError::TransportChannelClosed => {
            UpstreamError::Disconnected { upstream }
        }
        _ => UpstreamError::Protocol {
            upstream,
            reason: text,
        },
    }
}

/// reqwest's text names the URL; ours is in the configuration already, and
/// an operator may have put a token in its query.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<upstream url>");
    }
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of the upstream's holding Gatehouse's credential where no
    /// other text can stand (here, a message's role) is not dropped (the
    /// upstream would wait for its answer until the call's timeout): with
    /// the credential replaced it reads as a request of a method nobody
    /// handles, which the client side answers "method not found".
    #[test]
    fn a_request_that_held_the_credential_is_still_answered() {
        let secrets = SentSecrets::fixed(vec!["assistant".into()]);
        let message: ServerJsonRpcMessage = serde_json::from_value(serde_json::json!({
            "jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage",
            "params": {"messages": [{"role": "assistant",
                "content": {"type": "text", "text": "hi"}}], "maxTokens": 10}
        }))
        .unwrap();
        let Some(ServerJsonRpcMessage::Request(request)) = secrets.scrub_message("crm", message)
        else {
            panic!("not a request");
        };
        assert_eq!(request.id, RequestId::Number(7));
        let rmcp::model::ServerRequest::CustomRequest(custom) = request.request else {
            panic!("still a sampling request");
        };
        assert!(
            !serde_json::to_string(&custom.params)
                .unwrap()
                .contains("assistant")
        );
    }
}
