//! A `tools/call` posted straight to a 2025-11-25 HTTP upstream, without
//! rmcp's client in between.
//!
//! rmcp's client takes each request through its service loop, its
//! transport worker and the channels between them: at one connection that
//! is most of the ~250 µs an upstream call spent in dispatch, for an
//! upstream that answers in 11 µs (bench/README.md). Once the session is
//! established (rmcp did the handshake, and its transport has sent a message
//! in the session), the gateway posts a call itself, with the session's id
//! and headers, through the same capped client (credential, trace headers,
//! size limits), and reads the answer: plain JSON, or an SSE stream, resumed
//! with `Last-Event-ID` when the upstream closes it before answering
//! (SEP-1699), as rmcp does.
//!
//! What the upstream sends on that stream meanwhile is handled as rmcp's
//! client handles it: notifications are relayed (progress, logs) and given
//! to the same handler (list changes, resource updates); its requests go to
//! the same handler, tagged with the call's request id, so sampling and
//! elicitation reach the caller exactly as on rmcp's path, and the answer is
//! posted back. The call is registered in the connection's `InFlight` like
//! rmcp's requests, so what the upstream says about it on its other stream
//! finds it too. A caller who goes away gets the upstream told
//! (`notifications/cancelled`, through rmcp).
//!
//! rmcp's path remains for everything else: stdio, 2026-07-28 upstreams
//! (per-request `_meta` and headers), prompts, resources and listings, a
//! connection whose session is not known yet, and a session the upstream
//! no longer knows (404: nothing was done, rmcp starts a new session).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rmcp::Service;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, GetExtensions,
    GetMeta, JsonRpcError, JsonRpcResponse, JsonRpcVersion2_0, NumberOrString, ProgressToken,
    RequestId, ServerJsonRpcMessage, ServerResult,
};
use rmcp::service::{InboundStreamOrigin, RequestContext, ServiceError};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::Sse;

use crate::error::UpstreamError;
use crate::http_client::{CappedClient, SeenSession, SessionHeaders};
use crate::relay::CallContext;
use crate::sdk::{Abandoned, Connection, transport_failure};

/// How many times one call's response stream is resumed after the
/// upstream closed it unanswered.
const MAX_RESUMES: usize = 16;
/// The longest wait before resuming that an upstream's `retry` may ask for.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// What a connection needs to post calls itself.
pub(crate) struct Direct {
    client: CappedClient,
    uri: Arc<str>,
    /// `uri`, parsed once (`direct_post.rs`).
    url: Option<reqwest::Url>,
    seen: SeenSession,
    next: AtomicU64,
}

impl Direct {
    pub(crate) fn new(client: &CappedClient, uri: &str) -> Direct {
        Direct {
            client: client.clone(),
            uri: uri.into(),
            url: reqwest::Url::parse(uri).ok(),
            seen: client.seen(),
            next: AtomicU64::new(1),
        }
    }

    /// Posts the call itself (`direct_post.rs`).
    async fn post_call(
        &self,
        message: ClientJsonRpcMessage,
        session: &SessionHeaders,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>> {
        match &self.url {
            Some(url) => self.client.post_direct(url, &message, session).await,
            None => self.post(message, session).await,
        }
    }

    fn session(&self) -> Option<SessionHeaders> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Posts `message` in `session`, as rmcp's transport posts its own.
    async fn post(
        &self,
        message: ClientJsonRpcMessage,
        session: &SessionHeaders,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>> {
        self.client
            .post_message(
                self.uri.clone(),
                message,
                session.session_id.clone(),
                None,
                session.headers.clone(),
            )
            .await
    }
}

/// How reading the call's response went.
enum Read {
    Answered(Box<Result<ServerResult, UpstreamError>>),
    /// The stream ended unanswered; resumable after this event id.
    Ended(Option<String>, Option<Duration>),
}

impl Connection {
    /// `tools/call` posted by the gateway itself; `None` when this call
    /// goes through rmcp (see the module's comment). Nothing has reached
    /// the upstream when `None` is returned.
    pub(crate) async fn call_direct(
        &self,
        params: &CallToolRequestParams,
        call: &CallContext,
    ) -> Option<Result<ServerResult, UpstreamError>> {
        let direct = self.direct.as_ref()?;
        if self.modern {
            return None;
        }
        let session = direct.session()?;
        let number = direct.next.fetch_add(1, Ordering::Relaxed);
        // rmcp numbers its requests and progress tokens; a string cannot be
        // taken for one of them. The request's id serves as its token too.
        let id: RequestId = NumberOrString::String(format!("gatehouse-{number}").into());
        let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(params.clone()));
        request
            .get_meta_mut()
            .set_progress_token(ProgressToken(id.clone()));
        let mut ticket = self.in_flight.ticket(call.relay.clone());
        request.extensions_mut().insert(ticket.tag());
        self.in_flight.on_the_wire(&id, &request);
        let message = ClientJsonRpcMessage::request(request, id.clone());
        let mut abandoned = Abandoned::new(self.peer.clone(), id.clone());
        let exchange = async {
            match direct.post_call(message, &session).await {
                Err(StreamableHttpError::SessionExpired) => None,
                Err(e) => Some(Err(self.transport_failed(&e))),
                Ok(response) => Some(self.answer(direct, &session, &id, response).await),
            }
        };
        let result = tokio::select! {
            result = exchange => result,
            () = call.cancel.cancelled() => Some(Err(UpstreamError::Cancelled {
                upstream: self.upstream.clone(),
            })),
        };
        // Cancelled: the upstream is told (the guard), and the request stays
        // known, abandoned, in case it goes on. Otherwise it was answered,
        // its stream failed for good, or it never reached the upstream (the
        // session is gone, and rmcp takes the call): nothing more will come.
        if !matches!(result, Some(Err(UpstreamError::Cancelled { .. }))) {
            abandoned.disarm();
            ticket.answered();
        }
        result
    }

    fn transport_failed(&self, error: &StreamableHttpError<reqwest::Error>) -> UpstreamError {
        transport_failure(&self.upstream, error).scrubbed(&self.secrets.values())
    }

    /// The call's answer, from the POST's response and, when the upstream
    /// closes its stream early, from the resumed streams.
    async fn answer(
        &self,
        direct: &Direct,
        session: &SessionHeaders,
        id: &RequestId,
        response: StreamableHttpPostResponse,
    ) -> Result<ServerResult, UpstreamError> {
        let mut stream = match response {
            StreamableHttpPostResponse::Json(message, _) => {
                return match self.take(direct, session, id, message).await {
                    Some(result) => result,
                    None => {
                        Err(self.unanswered("answered with JSON that is not the call's answer"))
                    }
                };
            }
            StreamableHttpPostResponse::Accepted => {
                return Err(self.unanswered("accepted the call without answering it"));
            }
            StreamableHttpPostResponse::Sse(stream, _) => stream,
            _ => return Err(self.unanswered("answered in a way the gateway does not read")),
        };
        let mut resumes = 0;
        loop {
            match self.read(direct, session, id, &mut stream).await {
                Read::Answered(result) => return *result,
                Read::Ended(Some(last), retry) if resumes < MAX_RESUMES => {
                    resumes += 1;
                    if let Some(wait) = retry {
                        tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
                    }
                    stream = direct
                        .client
                        .get_stream(
                            direct.uri.clone(),
                            session.session_id.clone(),
                            Some(last),
                            None,
                            session.headers.clone(),
                        )
                        .await
                        .map_err(|e| self.transport_failed(&e))?;
                }
                Read::Ended(..) => {
                    return Err(UpstreamError::Disconnected {
                        upstream: self.upstream.clone(),
                    });
                }
            }
        }
    }

    /// Reads one response stream until the call's answer or its end.
    async fn read(
        &self,
        direct: &Direct,
        session: &SessionHeaders,
        id: &RequestId,
        stream: &mut BoxStream<'static, Result<Sse, SseError>>,
    ) -> Read {
        let mut last = None;
        let mut retry = None;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    return Read::Answered(Box::new(Err(UpstreamError::Protocol {
                        upstream: self.upstream.clone(),
                        reason: format!("the response stream broke: {e}"),
                    }
                    .scrubbed(&self.secrets.values()))));
                }
            };
            if let Some(event_id) = event.id.filter(|i| !i.is_empty()) {
                last = Some(event_id);
            }
            if let Some(ms) = event.retry {
                retry = Some(Duration::from_millis(ms));
            }
            let Some(data) = event.data.filter(|d| !d.trim().is_empty()) else {
                // A priming event: an id to resume from, no message.
                continue;
            };
            let message = match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                Ok(message) => message,
                Err(e) => {
                    // serde's text may quote what the upstream sent.
                    return Read::Answered(Box::new(Err(UpstreamError::Protocol {
                        upstream: self.upstream.clone(),
                        reason: format!("an event of the response stream is not a message: {e}"),
                    }
                    .scrubbed(&self.secrets.values()))));
                }
            };
            if let Some(result) = self.take(direct, session, id, message).await {
                return Read::Answered(Box::new(result));
            }
        }
        Read::Ended(last, retry)
    }

    /// One message of the call's response: the answer (`Some`), or
    /// something the upstream says or asks meanwhile, handled as rmcp's
    /// client would.
    async fn take(
        &self,
        direct: &Direct,
        session: &SessionHeaders,
        id: &RequestId,
        message: ServerJsonRpcMessage,
    ) -> Option<Result<ServerResult, UpstreamError>> {
        // Withheld whole: nothing of it is read, and the call waits on.
        let message = self.secrets.scrub_message(&self.upstream, message)?;
        match message {
            ServerJsonRpcMessage::Response(response) if &response.id == id => {
                Some(Ok(response.result))
            }
            ServerJsonRpcMessage::Error(error) if error.id.as_ref() == Some(id) => {
                Some(Err(self.fail(ServiceError::McpError(error.error))))
            }
            ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_) => {
                tracing::debug!(upstream = %self.upstream, "an answer to another request on a call's stream; ignored");
                None
            }
            ServerJsonRpcMessage::Notification(notification) => {
                self.in_flight.relay(&notification.notification);
                self.handler.notified(notification.notification);
                None
            }
            ServerJsonRpcMessage::Request(request) => {
                let mut context = RequestContext::new(request.id.clone(), self.peer.clone());
                context
                    .extensions
                    .insert(InboundStreamOrigin::OutboundRequest(id.clone()));
                let reply = match self.handler.handle_request(request.request, context).await {
                    Ok(result) => ClientJsonRpcMessage::Response(JsonRpcResponse {
                        jsonrpc: JsonRpcVersion2_0,
                        id: request.id,
                        result,
                    }),
                    Err(error) => {
                        ClientJsonRpcMessage::Error(JsonRpcError::new(Some(request.id), error))
                    }
                };
                if let Err(e) = direct.post(reply, session).await {
                    tracing::debug!(upstream = %self.upstream, error = %self.transport_failed(&e), "could not answer the upstream's request");
                }
                None
            }
        }
    }

    fn unanswered(&self, what: &str) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.upstream.clone(),
            reason: format!("the upstream {what}"),
        }
    }
}
