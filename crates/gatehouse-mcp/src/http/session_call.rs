//! A plain `tools/call` inside a session (MCP 2025-11-25 and earlier),
//! answered here rather than by the MCP SDK, as `fast_call.rs` answers one
//! without a session.
//!
//! In a session the SDK adds more than framing: a task per request, the
//! session's worker and its channels, the untagged parse, and an SSE answer
//! in several writes; a call costs ~90 µs more than the same call without a
//! session (bench/PROFILE.md). The call itself is the same:
//! `Gateway::call_tool` decides, runs and audits it, and the answer is
//! built as the SDK builds it for such a session.
//!
//! Only what the fast path can answer exactly as the SDK would is taken:
//! - a session whose lane is open (`session_lane.rs`): its client declared
//!   neither sampling nor elicitation, so nothing is asked of it mid-call;
//! - the version the client asked for in `MCP-Protocol-Version`, and an
//!   `Accept` naming both answers a POST may get;
//! - no progress token, and nothing but `name`, `arguments` and `_meta` in
//!   `params` (no task).
//!
//! Everything else goes to the SDK. The answer is JSON (a POST may get
//! either); an upstream's log messages go where the SDK sends them, through
//! the session's peer to its standalone stream. A `notifications/cancelled`
//! for the call reaches it through the lane (`body.rs`); a client that goes
//! away cancels it too. The call is answered even when cancelled (the SDK
//! sends nothing then; a client ignores an answer to a request it
//! cancelled).

use std::sync::Arc;

use axum::http::header::ACCEPT;
use axum::http::request::Parts;
use axum::response::Response;
use gatehouse_upstream::{Accepts, CallContext, Relay, Relayed, UpstreamInput};
use rmcp::model::{CallToolResponse, ErrorData, ServerResult};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::admission::Message;
use super::fast_call::{Answer, Failure, PlainCall, accepts, header, json_response, plain_call};
use super::router::AppState;
use crate::sdk::{call_error, in_request_scope, request_scope, tool_result};
use crate::session_lane::{InFlight, SessionLane};
use crate::{CallError, CallResult, Caller};

/// A session's call the fast path answers.
pub(super) struct SessionCall {
    id: Value,
    name: String,
    arguments: Option<Map<String, Value>>,
    meta: Map<String, Value>,
    lane: Arc<SessionLane>,
    in_flight: InFlight,
}

/// The call, when this request is one the fast path answers exactly as the
/// SDK would in the session of `lane`; `None` sends it to the SDK.
pub(super) fn eligible(
    parts: &Parts,
    message: &Message,
    lane: Arc<SessionLane>,
) -> Option<SessionCall> {
    let accept = header(parts, ACCEPT.as_str())?;
    if header(parts, "mcp-protocol-version") != Some(lane.protocol_version())
        || !accepts(accept, "application/json")
        || !accepts(accept, "text/event-stream")
    {
        return None;
    }
    let PlainCall {
        name,
        arguments,
        meta,
    } = plain_call(message)?;
    let meta = meta.cloned().unwrap_or_default();
    // A progress token, or a later protocol's request metadata (which the
    // SDK checks against the session's version).
    if meta
        .keys()
        .any(|k| k == "progressToken" || k.starts_with("io.modelcontextprotocol/"))
    {
        return None;
    }
    let in_flight = lane.start(message.id())?;
    Some(SessionCall {
        id: message.id().clone(),
        name: name.to_string(),
        arguments,
        meta,
        lane,
        in_flight,
    })
}

/// Runs the call and answers it as the SDK would in the session.
pub(super) async fn answer(
    state: &AppState,
    parts: &Parts,
    caller: Caller,
    call: SessionCall,
) -> Response {
    let scope = request_scope(Some(parts), &call.meta);
    let gateway = state.gateway.clone();
    let SessionCall {
        id,
        name,
        arguments,
        meta,
        lane,
        in_flight,
    } = call;
    // Log messages are relayed; progress has no token to go under, and the
    // client declared nothing it could be asked.
    let (relay, relayed) = Relay::channel(Accepts {
        logs: true,
        ..Accepts::default()
    });
    let cancel = in_flight.token();
    // Dropped with this future when the client goes away: the call is
    // cancelled, as the SDK cancels it.
    let _cancel_on_drop = cancel.clone().drop_guard();
    let context = CallContext {
        relay: Some(relay),
        cancel,
        capabilities: Some(lane.capabilities().clone()),
        takes_input_required: false,
        tenant_share: None,
        caller_share: None,
        // A 2025-11-25 session: its headers mirror nothing.
        param_headers: None,
    };
    // A task of its own, like the SDK's handlers (see `fast_call.rs`); the
    // call's future boxed where it is made, for the same reason.
    let session = caller.session.clone();
    keep_sdk_session(state, session.as_deref()).await;
    let task = tokio::spawn(in_request_scope(scope, async move {
        let _in_flight = in_flight;
        let call = Box::pin(gateway.call_tool(
            &caller,
            &name,
            arguments,
            Some(&meta),
            UpstreamInput::default(),
            context,
        ));
        relay_logs(call, relayed, &lane).await
    }));
    let answer = final_answer(task.await, &id);
    // A call's answer is an event for the SDK's session as well.
    keep_sdk_session(state, session.as_deref()).await;
    answer
}

/// Shows the SDK the session when it is due (`sessions.rs`), so that the
/// SDK does not end a session the fast path keeps busy.
async fn keep_sdk_session(state: &AppState, session: Option<&str>) {
    if let Some(session) = session
        && state.sessions.touch_due(session)
    {
        state.sdk_sessions.touch(session).await;
    }
}

/// Runs `call`, sending the upstream's log messages to the session; every
/// one sent during the call goes before the call's result is returned.
async fn relay_logs<T>(
    call: impl Future<Output = T>,
    mut relayed: mpsc::Receiver<Relayed>,
    lane: &SessionLane,
) -> T {
    let mut call = std::pin::pin!(call);
    loop {
        tokio::select! {
            result = &mut call => {
                while let Ok(message) = relayed.try_recv() {
                    relay_log(message, lane).await;
                }
                return result;
            }
            Some(message) = relayed.recv() => relay_log(message, lane).await,
        }
    }
}

async fn relay_log(message: Relayed, lane: &SessionLane) {
    // Nothing else is accepted from the upstream (see `answer`); a request
    // dropped here fails at the upstream.
    if let Relayed::Log(message) = message {
        lane.log(message).await;
    }
}

/// The call's answer as the SDK puts it for a 2025-11-25 session.
fn final_answer(
    joined: Result<Result<CallResult, CallError>, tokio::task::JoinError>,
    id: &Value,
) -> Response {
    let error = |error: ErrorData| {
        json_response(&Failure {
            jsonrpc: "2.0",
            id,
            error,
        })
    };
    match joined {
        Ok(Ok(result)) => {
            let response: CallToolResponse = match result {
                CallResult::Builtin(result) => tool_result(result).into(),
                CallResult::Upstream(answer) => answer,
            };
            let mut result = ServerResult::from(response);
            if matches!(result, ServerResult::InputRequiredResult(_)) {
                // The SDK's words for a result this protocol lacks.
                return error(ErrorData::invalid_request(
                    "InputRequiredResult requires negotiated protocol version 2026-07-28 or newer",
                    None,
                ));
            }
            // Older protocols have no `resultType`.
            result.strip_result_type_for_legacy_peer();
            json_response(&Answer {
                jsonrpc: "2.0",
                id,
                result,
            })
        }
        Ok(Err(failure)) => error(call_error(failure, false)),
        Err(join) => {
            tracing::error!(error = %join, "a tool call's task failed");
            error(ErrorData::internal_error("internal error", None))
        }
    }
}
