//! Everything that touches rmcp's client side: the handshake (with era
//! detection), the client handler, the requests, and the translation of
//! rmcp's errors into [`UpstreamError`]. rmcp changes often; its client API
//! is used only here, so an upgrade touches this file.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    GetPromptRequestParams, GetPromptResponse, GetPromptResult, Implementation,
    PaginatedRequestParams, Prompt, ProtocolVersion, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, RequestMetaObject, Resource, ResourceTemplate,
    ServerNotification, SubscriptionFilter, Tool,
};
use rmcp::service::{
    ClientInitializeError, ClientLifecycleMode, ClientServiceExt, NotificationContext, Peer,
    QuitReason, RunningService, ServiceError,
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
use crate::error::UpstreamError;
use crate::line_cap::{TOO_LARGE_CODE, TOO_LARGE_MARKER};

/// The protocol revision preferred: 2026-07-28 (stateless, `server/discover`),
/// falling back to 2025-11-25 (`initialize`, sessions) when the server
/// answers discovery with an error, as the 2026-07-28 backward-compatibility
/// rules describe.
fn lifecycle() -> ClientLifecycleMode {
    ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28, ProtocolVersion::V_2025_11_25],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    }
}

/// Receives the upstream's notifications.
#[derive(Clone)]
pub(crate) struct Handler {
    upstream: Arc<str>,
    changes: broadcast::Sender<ListChanged>,
}

impl Handler {
    pub(crate) fn new(upstream: Arc<str>, changes: broadcast::Sender<ListChanged>) -> Handler {
        Handler { upstream, changes }
    }

    fn changed(&self, kind: ChangeKind) {
        tracing::debug!(upstream = %self.upstream, ?kind, "upstream list changed");
        // Nobody listening is fine: the catalogue is refreshed on demand.
        let _ = self.changes.send(ListChanged {
            upstream: self.upstream.clone(),
            kind,
        });
    }
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        // No sampling, roots or elicitation: the gateway does not relay
        // server-to-client requests, so it must not advertise them.
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("gatehouse", env!("CARGO_PKG_VERSION")),
        )
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
}

/// One established MCP connection, shared by the calls that use it.
pub(crate) struct Connection {
    upstream: Arc<str>,
    peer: Peer<RoleClient>,
    protocol_version: String,
    /// Values of the secrets this connection sent, scrubbed from error texts.
    secrets: Vec<String>,
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
    secrets: Vec<String>,
) -> Result<Established, UpstreamError>
where
    T: IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let running: RunningService<RoleClient, Handler> = handler
        .clone()
        .serve_with_lifecycle(transport, lifecycle())
        .await
        .map_err(|e| init_error(upstream, e).scrubbed(&secrets))?;
    let peer = running.peer().clone();
    let info = peer.peer_info();
    let protocol_version = info
        .as_ref()
        .map(|i| i.protocol_version.to_string())
        .unwrap_or_default();
    tracing::info!(upstream = %upstream, protocol_version, "upstream connected");
    let filter = info
        .filter(|i| !i.protocol_version.has_initialize())
        .and_then(|i| listen_filter(&i.capabilities));
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
            protocol_version,
            secrets,
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
    pub(crate) fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.peer.is_transport_closed()
    }

    fn fail(&self, error: ServiceError) -> UpstreamError {
        service_error(&self.upstream, error).scrubbed(&self.secrets)
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

    pub(crate) async fn call_tool(
        &self,
        name: String,
        arguments: Option<Map<String, Value>>,
        meta: Option<Map<String, Value>>,
    ) -> Result<CallToolResult, UpstreamError> {
        let mut params = CallToolRequestParams::new(name);
        params.arguments = arguments;
        params.meta = caller_meta(meta);
        match self
            .peer
            .call_tool_once(params)
            .await
            .map_err(|e| self.fail(e))?
        {
            CallToolResponse::Complete(result) => Ok(result),
            CallToolResponse::InputRequired(_) => {
                Err(self.unexpected("the upstream asked for input"))
            }
            CallToolResponse::Task(_) => Err(self.unexpected("the upstream started a task")),
            _ => Err(self.unexpected("the upstream answered with an unknown result")),
        }
    }

    pub(crate) async fn get_prompt(
        &self,
        name: String,
        arguments: Option<Map<String, Value>>,
        meta: Option<Map<String, Value>>,
    ) -> Result<GetPromptResult, UpstreamError> {
        let mut params = GetPromptRequestParams::new(name);
        params.arguments = arguments;
        params.meta = caller_meta(meta);
        match self
            .peer
            .get_prompt_once(params)
            .await
            .map_err(|e| self.fail(e))?
        {
            GetPromptResponse::Complete(result) => Ok(result),
            _ => Err(self.unexpected("the upstream asked for input")),
        }
    }

    pub(crate) async fn read_resource(
        &self,
        uri: String,
        meta: Option<Map<String, Value>>,
    ) -> Result<ReadResourceResult, UpstreamError> {
        let mut params = ReadResourceRequestParams::new(uri);
        params.meta = caller_meta(meta);
        match self
            .peer
            .read_resource_once(params)
            .await
            .map_err(|e| self.fail(e))?
        {
            ReadResourceResponse::Complete(result) => Ok(result),
            _ => Err(self.unexpected("the upstream asked for input")),
        }
    }
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
