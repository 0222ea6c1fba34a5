//! The HTTP exchange of a call the gateway posts itself (`direct_call.rs`),
//! without rmcp's `post_message`.
//!
//! rmcp's reqwest client parses the URL again for every request, writes the
//! body through `RequestBuilder::json`, and reads a JSON answer into its
//! untagged message types (serde buffers the answer and tries the variants
//! of `ServerResult` in turn); the gateway then wrote the message again to
//! measure it. Together that was 12–15 % of an upstream call's CPU in the
//! gateway benchmark (bench/PROFILE.md). Here the URL is parsed once per
//! connection, a JSON answer is bounded while it is read, and the answer to
//! a `tools/call` is read straight into a `CallToolResult` (any other
//! message still goes through rmcp's types).
//!
//! Everything else is answered as rmcp's client answers it, so the
//! gateway's reading of failures does not change: 401 and 403 with a
//! challenge, 202 and 204, 404 in a session, 429 and 5xx, a JSON-RPC error
//! in a failure's JSON body, an SSE answer (each event bounded by the size
//! limit), an unexpected content type.

use std::borrow::Cow;

use futures::StreamExt;
use futures::stream::BoxStream;
use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use rmcp::model::{
    CallToolResult, ClientJsonRpcMessage, JsonRpcMessage, JsonRpcResponse, JsonRpcVersion2_0,
    RequestId, ServerJsonRpcMessage, ServerResult,
};
use rmcp::transport::streamable_http_client::{
    AuthRequiredError, HttpStatusError, InsufficientScopeError, SseError, StreamableHttpError,
    StreamableHttpPostResponse,
};
use serde::Deserialize;
use sse_stream::{Sse, SseStream};

use crate::http_client::{CappedClient, SessionHeaders, with_trace_headers};

type HttpError = StreamableHttpError<reqwest::Error>;

const SESSION_HEADER: &str = "mcp-session-id";
const JSON: &str = "application/json";
const EVENT_STREAM: &str = "text/event-stream";
/// A failure's JSON body is read up to this size, for its JSON-RPC error.
const MAX_ERROR_BODY: usize = 64 * 1024;

impl CappedClient {
    /// Posts `message`, a request of the established `session`, to `url`.
    pub(crate) async fn post_direct(
        &self,
        url: &reqwest::Url,
        message: &ClientJsonRpcMessage,
        session: &SessionHeaders,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let exchanged = self.exchange(url, message, session).await;
        self.refused(exchanged).await
    }

    async fn exchange(
        &self,
        url: &reqwest::Url,
        message: &ClientJsonRpcMessage,
        session: &SessionHeaders,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let bearer = self.bearer(None).await?;
        let body = serde_json::to_vec(message)?;
        let mut request = self
            .inner
            .post(url.clone())
            .header(ACCEPT, "text/event-stream, application/json")
            .header(CONTENT_TYPE, JSON);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        // The headers rmcp's transport sent in this session (the configured
        // credential, the protocol version), and the call's trace context.
        for (name, value) in with_trace_headers(message, session.headers.clone()) {
            request = request.header(name, value);
        }
        if let Some(id) = &session.session_id {
            request = request.header(SESSION_HEADER, id.as_ref());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = response.status();
        let challenge = || {
            response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if status == reqwest::StatusCode::UNAUTHORIZED
            && let Some(header) = challenge()
        {
            return Err(StreamableHttpError::AuthRequired(AuthRequiredError::new(
                header,
            )));
        }
        if status == reqwest::StatusCode::FORBIDDEN
            && let Some(header) = challenge()
        {
            return Err(StreamableHttpError::InsufficientScope(
                InsufficientScopeError::new(header, None),
            ));
        }
        if matches!(
            status,
            reqwest::StatusCode::ACCEPTED | reqwest::StatusCode::NO_CONTENT
        ) {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == reqwest::StatusCode::NOT_FOUND && session.session_id.is_some() {
            return Err(StreamableHttpError::SessionExpired);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let is = |media: &str| {
            content_type
                .as_deref()
                .is_some_and(|ct| ct.as_bytes().starts_with(media.as_bytes()))
        };
        let (json, event_stream) = (is(JSON), is(EVENT_STREAM));
        let session_id = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !status.is_success() {
            return failure(status, json, response, session_id).await;
        }
        if event_stream {
            let stream = bounded_events(response, self.limit);
            let stream = match message {
                ClientJsonRpcMessage::Request(request) => self.watched(stream, request.id.clone()),
                _ => stream,
            };
            return Ok(StreamableHttpPostResponse::Sse(stream, session_id));
        }
        if json {
            let body = bounded_body(response, self.limit).await?;
            let message = read_answer(&body).map_err(|e| {
                StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!(
                    "the answer is not a JSON-RPC message: {e}"
                )))
            })?;
            return Ok(StreamableHttpPostResponse::Json(message, session_id));
        }
        Err(StreamableHttpError::UnexpectedContentType(content_type))
    }
}

/// A response with a failure status, read as rmcp's client reads it: 429,
/// and a 5xx without a JSON body, as the status (and `Retry-After`); a
/// JSON-RPC error in a failure's JSON body as that error; anything else as
/// an unexpected response, named by its status only (a body may quote the
/// request, credential and all).
async fn failure(
    status: reqwest::StatusCode,
    json: bool,
    response: reqwest::Response,
    session_id: Option<String>,
) -> Result<StreamableHttpPostResponse, HttpError> {
    let as_status = || {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        StreamableHttpError::HttpStatus(HttpStatusError::new(status.as_u16(), retry_after))
    };
    let status_error = (status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error())
    .then(as_status);
    let auth = matches!(
        status,
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN
    );
    if json
        && !auth
        && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        && let Ok(body) = bounded_body(response, MAX_ERROR_BODY).await
        && let Ok(message @ JsonRpcMessage::Error(_)) =
            serde_json::from_slice::<ServerJsonRpcMessage>(&body)
    {
        return Ok(StreamableHttpPostResponse::Json(message, session_id));
    }

    Err(status_error.unwrap_or_else(|| {
        StreamableHttpError::UnexpectedServerResponse(Cow::Owned(format!("HTTP {status}")))
    }))
}

/// The body, refused once it is longer than `limit`.
async fn bounded_body(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, HttpError> {
    let too_large = StreamableHttpError::ResponseBodyTooLarge { max_size: limit };
    let announced = response.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(too_large);
    }
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(StreamableHttpError::Client)?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A JSON answer. The answer to a `tools/call` (a response whose result is
/// an object) is read straight into a `CallToolResult`; anything else, and
/// anything that does not read that way, through rmcp's message types.
fn read_answer(body: &[u8]) -> Result<ServerJsonRpcMessage, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CallAnswer {
        #[allow(dead_code)]
        jsonrpc: JsonRpcVersion2_0,
        id: RequestId,
        result: CallToolResult,
    }
    if let Ok(answer) = serde_json::from_slice::<CallAnswer>(body) {
        return Ok(ServerJsonRpcMessage::Response(JsonRpcResponse {
            jsonrpc: JsonRpcVersion2_0,
            id: answer.id,
            result: ServerResult::CallToolResult(answer.result),
        }));
    }
    serde_json::from_slice(body)
}

/// The response's SSE events, each bounded by `limit` bytes: an upstream
/// cannot make the gateway buffer an endless event.
fn bounded_events(
    response: reqwest::Response,
    limit: usize,
) -> BoxStream<'static, Result<Sse, SseError>> {
    let mut size = EventSize::new(limit);
    let bytes = response.bytes_stream().map(move |chunk| match chunk {
        Ok(chunk) if size.fits(&chunk) => Ok(chunk),
        Ok(_) => Err(EventError::TooLarge(limit)),
        Err(e) => Err(EventError::Body(e)),
    });
    SseStream::from_bytes_stream(bytes).boxed()
}

#[derive(Debug, thiserror::Error)]
enum EventError {
    // "maximum size" is what the gateway reads as a message too large.
    #[error("an SSE event exceeded the maximum size of {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Body(reqwest::Error),
}

/// Counts the bytes of the SSE event being received: an event ends at a
/// blank line (its line ends `\n`, `\r\n` or `\r`).
struct EventSize {
    limit: usize,
    in_event: usize,
    at_line_start: bool,
    after_cr: bool,
    exceeded: bool,
}

impl EventSize {
    fn new(limit: usize) -> EventSize {
        EventSize {
            limit,
            in_event: 0,
            at_line_start: true,
            after_cr: false,
            exceeded: false,
        }
    }

    /// Whether the event so far, with `chunk`, is within the limit (once
    /// not, never again: the stream is broken).
    fn fits(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            if self.exceeded {
                break;
            }
            if std::mem::take(&mut self.after_cr) && byte == b'\n' {
                // The `\n` of a `\r\n`: the line already ended.
                continue;
            }
            match byte {
                b'\r' | b'\n' => {
                    if self.at_line_start {
                        self.in_event = 0;
                    }
                    self.at_line_start = true;
                    self.after_cr = byte == b'\r';
                }
                _ => {
                    self.at_line_start = false;
                    self.in_event += 1;
                    self.exceeded = self.in_event > self.limit;
                }
            }
        }
        !self.exceeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_answer_is_read_as_a_call_result_and_anything_else_as_before() {
        let answer = br#"{"jsonrpc":"2.0","id":"gatehouse-7","result":{"content":[{"type":"text","text":"hi"}],"isError":false}}"#;
        let Ok(ServerJsonRpcMessage::Response(response)) = read_answer(answer) else {
            panic!("not a response");
        };
        assert_eq!(response.id, RequestId::String("gatehouse-7".into()));
        let ServerResult::CallToolResult(result) = response.result else {
            panic!("not a call result");
        };
        assert_eq!(result.is_error, Some(false));
        // The same as rmcp's own reading of it.
        let theirs: ServerJsonRpcMessage = serde_json::from_slice(answer).unwrap();
        assert_eq!(
            serde_json::to_value(read_answer(answer).unwrap()).unwrap(),
            serde_json::to_value(theirs).unwrap()
        );
        let error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}"#;
        assert!(matches!(
            read_answer(error),
            Ok(ServerJsonRpcMessage::Error(_))
        ));
        let request = br#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
        assert!(matches!(
            read_answer(request),
            Ok(ServerJsonRpcMessage::Request(_))
        ));
        assert!(read_answer(b"[1,2]").is_err());
    }

    #[test]
    fn each_event_is_bounded_not_the_stream() {
        let mut size = EventSize::new(10);
        // Many small events, whatever their line ends, fit.
        for _ in 0..100 {
            assert!(size.fits(b"data: 12\n\n"));
            assert!(size.fits(b"data: 12\r\n\r\n"));
            assert!(size.fits(b"data: 12\r\r"));
        }
        // An event split across chunks counts as one.
        assert!(size.fits(b"data: 1"));
        assert!(size.fits(b"23\n"));
        assert!(!size.fits(b"data: 4\n"));
        // Once broken, always broken.
        assert!(!size.fits(b"\n\n"));
    }
}
