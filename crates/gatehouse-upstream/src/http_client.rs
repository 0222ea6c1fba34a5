//! The HTTP client under rmcp's Streamable HTTP transport.
//!
//! rmcp's reqwest integration sends exactly the headers it is given, so the
//! outbound headers are fixed here, per connection: the transport's own
//! (`Accept`, `Mcp-Session-Id`, `MCP-Protocol-Version`, `Mcp-Method`…) and
//! the configured credential. No cookie store, no redirects (a redirect
//! could carry the credential to another host), no caller headers: the call
//! API has no way to pass any.
//!
//! Size: SSE events are bounded by the configured limit inside rmcp; plain
//! JSON answers are bounded by rmcp at 16 MiB while reading, then checked
//! against the configured limit here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetMeta, RequestId};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::Sse;

use crate::client_credentials::ClientCredentials;
use crate::in_flight::InFlight;
use gatehouse_core::json_len;
use gatehouse_core::secret_ref::TenantSecrets;

/// Builds the reqwest client of one upstream. No proxy from the
/// environment (`HTTPS_PROXY`, `ALL_PROXY`): the upstream's credential
/// would go to whichever host the environment names, in clear for a
/// plain-http loopback upstream.
pub(crate) fn build_reqwest(connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Where a connection's access token comes from, when the upstream wants
/// one from its own authorization server.
#[derive(Clone)]
pub(crate) struct TokenSource {
    pub(crate) grant: Arc<ClientCredentials>,
    pub(crate) tenants: Option<Arc<dyn TenantSecrets>>,
}

/// What rmcp's transport last sent with a message of the established
/// session: its id and the headers (the configured credential headers and
/// the negotiated `MCP-Protocol-Version`). The direct path
/// (`direct_call.rs`) sends its requests with the same.
#[derive(Clone)]
pub(crate) struct SessionHeaders {
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) headers: HashMap<HeaderName, HeaderValue>,
}

/// Shared by the clones of one connection's client.
pub(crate) type SeenSession = Arc<std::sync::Mutex<Option<SessionHeaders>>>;

#[derive(Clone)]
pub(crate) struct CappedClient {
    pub(crate) inner: reqwest::Client,
    pub(crate) limit: usize,
    token: Option<TokenSource>,
    /// The connection's requests in flight, told when the upstream closes
    /// a request's response stream before answering it.
    in_flight: Option<Arc<InFlight>>,
    seen: SeenSession,
}

impl CappedClient {
    pub(crate) fn new(
        inner: reqwest::Client,
        limit: usize,
        token: Option<TokenSource>,
    ) -> CappedClient {
        CappedClient {
            inner,
            limit,
            token,
            in_flight: None,
            seen: SeenSession::default(),
        }
    }

    /// The session rmcp's transport last used, once it has sent a message
    /// after `initialize`.
    pub(crate) fn seen(&self) -> SeenSession {
        self.seen.clone()
    }

    fn remember(
        &self,
        message: &ClientJsonRpcMessage,
        session_id: &Option<Arc<str>>,
        headers: &HashMap<HeaderName, HeaderValue>,
    ) {
        let initialize = matches!(
            message,
            ClientJsonRpcMessage::Request(request)
                if matches!(request.request, ClientRequest::InitializeRequest(_))
        );
        if initialize {
            return;
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let same = seen
            .as_ref()
            .is_some_and(|s| &s.session_id == session_id && &s.headers == headers);
        if !same {
            *seen = Some(SessionHeaders {
                session_id: session_id.clone(),
                headers: headers.clone(),
            });
        }
    }

    /// Tells `in_flight` of every response stream the upstream closes
    /// before answering.
    pub(crate) fn watching(mut self, in_flight: Arc<InFlight>) -> CappedClient {
        self.in_flight = Some(in_flight);
        self
    }

    /// The bearer token for one request: the grant's current one (renewed
    /// before it expires), else what the transport was given.
    pub(crate) async fn bearer(
        &self,
        given: Option<String>,
    ) -> Result<Option<String>, StreamableHttpError<reqwest::Error>> {
        let Some(source) = &self.token else {
            return Ok(given);
        };
        match source.grant.token(source.tenants.as_deref()).await {
            Ok(token) => Ok(Some(token.expose().to_owned())),
            Err(e) => Err(StreamableHttpError::Io(std::io::Error::other(
                e.to_string(),
            ))),
        }
    }

    /// Request `id`'s response stream, watched for an end before its answer
    /// when the connection's requests are tracked (`Watched`).
    pub(crate) fn watched(
        &self,
        stream: BoxStream<'static, Result<Sse, SseError>>,
        id: RequestId,
    ) -> BoxStream<'static, Result<Sse, SseError>> {
        match &self.in_flight {
            Some(in_flight) => Box::pin(Watched {
                inner: stream,
                id,
                answered: false,
                in_flight: in_flight.clone(),
            }),
            None => stream,
        }
    }

    /// The upstream refused the token: the next request asks for a new one.
    pub(crate) async fn refused<T>(
        &self,
        result: Result<T, StreamableHttpError<reqwest::Error>>,
    ) -> Result<T, StreamableHttpError<reqwest::Error>> {
        if let (Err(StreamableHttpError::AuthRequired(_)), Some(source)) = (&result, &self.token) {
            source.grant.forget().await;
        }
        result
    }
}

/// The W3C trace context a call carries in `_meta` (SEP-414; the gateway
/// puts its own span there) is repeated as HTTP headers, for an upstream or
/// a proxy in front of it that reads the transport's. Only well-formed
/// values of the two names, so a caller's `_meta` adds no other header.
pub(crate) fn with_trace_headers(
    message: &ClientJsonRpcMessage,
    mut headers: HashMap<HeaderName, HeaderValue>,
) -> HashMap<HeaderName, HeaderValue> {
    let ClientJsonRpcMessage::Request(request) = message else {
        return headers;
    };
    let ClientRequest::CallToolRequest(call) = &request.request else {
        return headers;
    };
    // In the parameters as the gateway sets it; in the extensions once rmcp
    // has parsed a message.
    let meta = match &call.params.meta {
        Some(meta) => &meta.0.0,
        None => &request.request.get_meta().0.0,
    };
    let value = |name: &str| meta.get(name).and_then(serde_json::Value::as_str);
    let Some(parent) = value("traceparent").filter(|v| is_traceparent(v)) else {
        return headers;
    };
    if let Ok(parent) = HeaderValue::from_str(parent) {
        headers.insert(HeaderName::from_static("traceparent"), parent);
        if let Some(state) = value("tracestate").filter(|v| v.len() <= 512)
            && let Ok(state) = HeaderValue::from_str(state)
        {
            headers.insert(HeaderName::from_static("tracestate"), state);
        }
    }
    headers
}

/// `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex (W3C Trace Context, version 00).
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

impl StreamableHttpClient for CappedClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.post_message_with_max_sse_event_size(
            uri,
            message,
            session_id,
            auth_header,
            custom_headers,
            self.limit,
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let auth_header = self.bearer(auth_header).await?;
        self.remember(&message, &session_id, &custom_headers);
        let custom_headers = with_trace_headers(&message, custom_headers);
        let request = match &message {
            ClientJsonRpcMessage::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        let response = self
            .refused(
                self.inner
                    .post_message_with_max_sse_event_size(
                        uri,
                        message,
                        session_id,
                        auth_header,
                        custom_headers,
                        max_sse_event_size.min(self.limit),
                    )
                    .await,
            )
            .await?;
        if let StreamableHttpPostResponse::Json(message, _) = &response
            && json_len(message) > self.limit
        {
            return Err(StreamableHttpError::ResponseBodyTooLarge {
                max_size: self.limit,
            });
        }
        Ok(match (response, request) {
            (StreamableHttpPostResponse::Sse(stream, session), Some(id)) => {
                StreamableHttpPostResponse::Sse(self.watched(stream, id), session)
            }
            (response, _) => response,
        })
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        let auth_header = self.bearer(auth_header).await?;
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            self.limit,
        )
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let auth_header = self.bearer(auth_header).await?;
        let stream = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size.min(self.limit),
            )
            .await;
        self.refused(stream).await
    }
}

/// A request's response stream, watched for its end: an end before the
/// answer is the upstream closing the stream mid-call (SEP-1699), which
/// rmcp resumes with `Last-Event-ID`; the call's caller is told.
struct Watched {
    inner: BoxStream<'static, Result<Sse, SseError>>,
    id: RequestId,
    answered: bool,
    in_flight: Arc<InFlight>,
}

impl futures::Stream for Watched {
    type Item = Result<Sse, SseError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = this.inner.as_mut().poll_next(cx);
        match &next {
            std::task::Poll::Ready(Some(Ok(event))) if !this.answered => {
                this.answered = answers(event, &this.id);
            }
            std::task::Poll::Ready(None) if !this.answered => {
                // Told once: a stream is not polled after its end.
                this.answered = true;
                this.in_flight.paused(&this.id);
            }
            _ => {}
        }
        next
    }
}

/// Whether an SSE event is the answer (result or error) to request `id`.
fn answers(event: &Sse, id: &RequestId) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        id: Option<RequestId>,
        result: Option<serde::de::IgnoredAny>,
        error: Option<serde::de::IgnoredAny>,
    }
    let Some(data) = event.data.as_deref() else {
        return false;
    };
    match serde_json::from_str::<Answer>(data) {
        Ok(answer) => {
            answer.id.as_ref() == Some(id) && (answer.result.is_some() || answer.error.is_some())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_trace_context_becomes_headers() {
        let call = |meta: serde_json::Value| -> ClientJsonRpcMessage {
            serde_json::from_value(serde_json::json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "t", "arguments": {}, "_meta": meta},
            }))
            .unwrap()
        };
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = with_trace_headers(
            &call(serde_json::json!({"traceparent": parent, "tracestate": "k=v", "x": "y"})),
            HashMap::new(),
        );
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(headers[&HeaderName::from_static("traceparent")], parent);
        assert_eq!(headers[&HeaderName::from_static("tracestate")], "k=v");
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
            "garbage",
        ] {
            let headers = with_trace_headers(
                &call(serde_json::json!({"traceparent": bad, "tracestate": "k=v"})),
                HashMap::new(),
            );
            assert!(headers.is_empty(), "{bad}: {headers:?}");
        }
    }

    use crate::relay::{Accepts, Relay, Relayed};
    use futures::StreamExt;

    fn event(data: &str) -> Result<Sse, SseError> {
        Ok(Sse {
            event: None,
            data: Some(data.to_string()),
            id: Some("1".into()),
            retry: None,
        })
    }

    /// Reads a watched stream of `events` for request 3 to its end; says
    /// whether the call was told the stream paused.
    async fn paused(events: Vec<Result<Sse, SseError>>) -> bool {
        let in_flight = Arc::new(InFlight::new(Duration::from_secs(30)));
        let (relay, mut relayed) = Relay::channel(Accepts::default());
        let _tracked = in_flight.track(RequestId::Number(3), relay);
        let mut watched = Watched {
            inner: Box::pin(futures::stream::iter(events)),
            id: RequestId::Number(3),
            answered: false,
            in_flight,
        };
        while watched.next().await.is_some() {}
        matches!(relayed.try_recv(), Ok(Relayed::Paused))
    }

    #[tokio::test]
    async fn a_stream_closed_before_its_answer_pauses_the_call() {
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#;
        assert!(paused(vec![event(""), event(progress)]).await);
        // Another request's answer is not this one's.
        let other = r#"{"jsonrpc":"2.0","id":4,"result":{}}"#;
        assert!(paused(vec![event(""), event(other)]).await);
    }

    #[tokio::test]
    async fn a_stream_that_carried_its_answer_is_simply_done() {
        let answer = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#;
        assert!(!paused(vec![event(""), event(answer)]).await);
        let error = r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#;
        assert!(!paused(vec![event(error)]).await);
    }

    #[test]
    fn the_session_is_remembered_from_any_message_but_initialize() {
        let client = CappedClient::new(build_reqwest(Duration::from_secs(1)).unwrap(), 1024, None);
        let message = |value: serde_json::Value| -> ClientJsonRpcMessage {
            serde_json::from_value(value).unwrap()
        };
        let initialize = message(serde_json::json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}}));
        let initialized =
            message(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        let mut headers = HashMap::new();
        headers.insert(
            HeaderName::from_static("mcp-protocol-version"),
            HeaderValue::from_static("2025-11-25"),
        );
        client.remember(&initialize, &None, &HashMap::new());
        assert!(client.seen().lock().unwrap().is_none());
        client.remember(&initialized, &Some("s-1".into()), &headers);
        let seen = client.seen().lock().unwrap().clone().unwrap();
        assert_eq!(seen.session_id.as_deref(), Some("s-1"));
        assert_eq!(seen.headers, headers);
        // A new session (rmcp started over after a 404) replaces it.
        client.remember(&initialized, &Some("s-2".into()), &headers);
        let seen = client.seen().lock().unwrap().clone().unwrap();
        assert_eq!(seen.session_id.as_deref(), Some("s-2"));
    }
}
