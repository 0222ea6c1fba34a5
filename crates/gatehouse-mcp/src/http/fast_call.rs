//! A stateless `tools/call`, of a built-in or an upstream tool, answered
//! here rather than by the MCP SDK.
//!
//! For such a call the SDK adds only framing — a second parse of the body,
//! a task per request, its stateless session machinery — and that is a
//! large share of the call's cost (see bench/PROFILE.md). The call itself is
//! the same: `Gateway::call_tool` decides, runs and audits it, as for every
//! other path, and the answer is built by the same functions the SDK
//! handler uses (`tool_result`, `call_error`).
//!
//! Only the plainest request is taken: MCP 2026-07-28 without a session,
//! every header present and matching the body, no progress token, no
//! capability that lets the server ask the client anything (sampling,
//! elicitation), nothing but `name`, `arguments` and `_meta` in `params`.
//! Everything else goes to the SDK, which answers edge cases (a mismatched
//! header, an old protocol version) with its own errors.
//!
//! An upstream's call gets what the SDK gives such a caller: a relay that
//! takes nothing (no progress token, no sampling or elicitation declared,
//! and a JSON answer cannot carry log messages), so the upstream's
//! requests are refused as they would be; an input-required result of a
//! 2026-07-28 upstream goes back to the caller; and a caller that goes
//! away cancels the call at the upstream, as the SDK's request token does.

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_upstream::{Accepts, CallContext, Relay, UpstreamInput};
use rmcp::model::{CallToolResponse, ClientCapabilities, ErrorCode, ErrorData, ServerResult};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::admission::Message;
use super::router::AppState;
use crate::param_headers::ParamHeaders;
use crate::sdk::{call_error, in_request_scope, request_scope, tool_result};
use crate::{CallResult, Caller};

/// The protocol version whose requests carry everything in themselves.
const STATELESS: &str = "2026-07-28";
const PROTOCOL_META: &str = "io.modelcontextprotocol/protocolVersion";
const CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";

/// A call the fast path answers.
pub(super) struct FastCall {
    id: Value,
    name: String,
    arguments: Option<Map<String, Value>>,
    meta: Map<String, Value>,
    /// What the caller declared in `_meta`, for a 2026-07-28 upstream.
    capabilities: Option<ClientCapabilities>,
}

/// The header's value, when it is named exactly once. A header named twice
/// is the SDK's to refuse (400): read here, the first value would decide,
/// while a proxy in front may have routed or filtered on the other.
pub(super) fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    let mut values = parts.headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok()
}

/// Whether an `Accept` header names `media` without refusing it (`q=0`).
/// Wildcards are left to the SDK: the fast path takes only the plain
/// header every client sends.
pub(super) fn accepts(accept: &str, media: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        parts.next().is_some_and(|m| m.eq_ignore_ascii_case(media))
            && !parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            })
    })
}

/// A `tools/call` with nothing but a name, arguments and `_meta` (no task,
/// no other member), as both fast paths take it.
pub(super) struct PlainCall<'a> {
    pub name: &'a str,
    pub arguments: Option<Map<String, Value>>,
    pub meta: Option<&'a Map<String, Value>>,
}

pub(super) fn plain_call(message: &Message) -> Option<PlainCall<'_>> {
    // An id the SDK would read differently (`1.0`) or refuse goes to it.
    if !message.is_plain()
        || message.method() != Some("tools/call")
        || !matches!(message.id(), Value::String(_))
            && !matches!(message.id(), Value::Number(n) if n.is_i64())
    {
        return None;
    }
    let params = message.params()?;
    if !params
        .keys()
        .all(|k| matches!(k.as_str(), "name" | "arguments" | "_meta"))
    {
        return None;
    }
    let arguments = match params.get("arguments") {
        None => None,
        Some(Value::Object(arguments)) => Some(arguments.clone()),
        Some(_) => return None,
    };
    let meta = match params.get("_meta") {
        None => None,
        Some(Value::Object(meta)) => Some(meta),
        Some(_) => return None,
    };
    Some(PlainCall {
        name: params.get("name")?.as_str()?,
        arguments,
        meta,
    })
}

/// The call, when this request is one the fast path answers exactly as the
/// SDK would; `None` sends it to the SDK.
pub(super) fn eligible(parts: &Parts, message: &Message, caller: &Caller) -> Option<FastCall> {
    if caller.session.is_some()
        || header(parts, "mcp-protocol-version") != Some(STATELESS)
        || header(parts, "mcp-method") != Some("tools/call")
        || !header(parts, header::ACCEPT.as_str()).is_some_and(|a| accepts(a, "application/json"))
    {
        return None;
    }
    let PlainCall {
        name,
        arguments,
        meta,
    } = plain_call(message)?;
    if header(parts, "mcp-name") != Some(name) {
        return None;
    }
    let meta = meta?;
    let declared = meta.get(CAPABILITIES_META)?;
    let keys = declared.as_object()?;
    if meta.get(PROTOCOL_META).and_then(Value::as_str) != Some(STATELESS)
        || meta.contains_key("progressToken")
        || keys.contains_key("sampling")
        || keys.contains_key("elicitation")
    {
        return None;
    }
    // The SDK reads them leniently too: what it cannot read, it ignores.
    let capabilities = ClientCapabilities::deserialize(declared).ok();
    Some(FastCall {
        id: message.id().clone(),
        name: name.to_string(),
        arguments,
        meta: meta.clone(),
        capabilities,
    })
}

/// Runs the call and answers it as the SDK would.
pub(super) async fn answer(
    state: &AppState,
    parts: &Parts,
    caller: Caller,
    call: FastCall,
) -> Response {
    let scope = request_scope(Some(parts), &call.meta);
    let gateway = state.gateway.clone();
    let FastCall {
        id,
        name,
        arguments,
        meta,
        capabilities,
    } = call;
    // A relay that takes nothing (see the module's comment); its receiving
    // end lives as long as the call, so nothing sent to it fails.
    let (relay, relayed) = Relay::channel(Accepts::default());
    let cancel = CancellationToken::new();
    // Dropped with this future when the client goes away: the upstream is
    // told to stop, as the SDK tells it when its request is dropped.
    let _cancel_on_drop = cancel.clone().drop_guard();
    let context = CallContext {
        relay: Some(relay),
        cancel,
        capabilities,
        takes_input_required: true,
        tenant_share: None,
        caller_share: None,
        param_headers: Some(ParamHeaders::of_request(&parts.headers).map(|headers| headers.0)),
    };
    // A task of its own, like the SDK's handlers: a client that goes away
    // mid-call does not cut the call short between its decision and its
    // outcome record.
    //
    // The call's future is boxed where it is made: it is large (~13 KB),
    // and a spawned future is moved whole, several times (and past 16 KB
    // boxed by Tokio itself) — memmove was 8 % of the worker's time. The
    // task's own future stays small; the call is written to the heap once.
    let task = tokio::spawn(in_request_scope(scope, async move {
        let result = Box::pin(gateway.call_tool(
            &caller,
            &name,
            arguments,
            Some(&meta),
            UpstreamInput::default(),
            context,
        ))
        .await;
        drop(relayed);
        result
    }));
    match task.await {
        Ok(Ok(CallResult::Builtin(result))) => {
            // Serialized straight into the answer's bytes: no tree of
            // `Value`s built and dropped for each call.
            // `tool_result` says `resultType: "complete"` itself (a second
            // one, from a wrapper, made a key appear twice).
            json_response(&Answer {
                jsonrpc: "2.0",
                id: &id,
                result: tool_result(result),
            })
        }
        // As it came (rmcp's own serialisation, an input-required result
        // included), straight into the answer's bytes.
        Ok(Ok(CallResult::Upstream(answer))) => match upstream_result(answer) {
            Some(result) => json_response(&Answer {
                jsonrpc: "2.0",
                id: &id,
                result,
            }),
            None => internal(id),
        },
        Ok(Err(error)) => {
            let error = call_error(error, false);
            let status = error_status(error.code);
            let mut response = json_response(&Failure {
                jsonrpc: "2.0",
                id: &id,
                error,
            });
            *response.status_mut() = status;
            response
        }
        Err(join) => {
            tracing::error!(error = %join, "a tool call's task failed");
            internal(id)
        }
    }
}

/// The HTTP status the SDK gives a 2026-07-28 request's JSON-RPC error
/// (an upstream's error passes through with its code, so any may come).
fn error_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// An upstream's answer as the SDK puts it on the wire for a 2026-07-28
/// caller: the result as it came, an input-required result included.
fn upstream_result(answer: CallToolResponse) -> Option<ServerResult> {
    // The gateway refuses a task result from an upstream (the caller never
    // declared the tasks extension), so none arrives here.
    if matches!(answer, CallToolResponse::Task(_)) {
        return None;
    }
    Some(ServerResult::from(answer))
}

/// A JSON-RPC answer with a result.
#[derive(Serialize)]
pub(super) struct Answer<'a, R: Serialize> {
    pub jsonrpc: &'static str,
    pub id: &'a Value,
    pub result: R,
}

/// A JSON-RPC answer with an error.
#[derive(Serialize)]
pub(super) struct Failure<'a> {
    pub jsonrpc: &'static str,
    pub id: &'a Value,
    pub error: ErrorData,
}

pub(super) fn json_response(body: &impl Serialize) -> Response {
    // Straight into bytes (`to_string` goes through `fmt::Write`, piece by
    // piece); what is answered here always serializes.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (StatusCode::OK, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn internal(id: Value) -> Response {
    json_response(&json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32603, "message": "internal error"},
    }))
}

#[cfg(test)]
mod tests {
    /// `resultType` was written twice (once by the result, once by a
    /// wrapper): a JSON object with a key twice.
    #[test]
    fn a_built_in_tools_answer_names_each_key_once() {
        let result = crate::sdk::tool_result(Ok(gatehouse_tools::ToolOutput {
            text: "hi".into(),
            structured: None,
        }));
        let bytes = serde_json::to_vec(&super::Answer {
            jsonrpc: "2.0",
            id: &serde_json::json!(1),
            result,
        })
        .unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.matches("\"resultType\"").count(), 1, "{text}");
        assert!(text.contains("\"resultType\":\"complete\""), "{text}");
    }

    #[test]
    fn a_header_named_twice_is_not_read() {
        let request = axum::http::Request::builder()
            .header("mcp-name", "write_file")
            .header("mcp-name", "whoami")
            .header("mcp-method", "tools/call")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        assert_eq!(super::header(&parts, "mcp-name"), None);
        assert_eq!(super::header(&parts, "mcp-method"), Some("tools/call"));
        assert_eq!(super::header(&parts, "mcp-protocol-version"), None);
    }

    use super::accepts;

    #[test]
    fn accept_is_read_by_media_type_and_quality() {
        assert!(accepts(
            "application/json, text/event-stream",
            "application/json"
        ));
        assert!(accepts(
            "text/event-stream;q=0.5, Application/JSON",
            "application/json"
        ));
        assert!(!accepts(
            "application/json;q=0, text/event-stream",
            "application/json"
        ));
        assert!(!accepts("application/json-seq", "application/json"));
        // Wildcards are left to the SDK.
        assert!(!accepts("*/*", "application/json"));
    }
}
