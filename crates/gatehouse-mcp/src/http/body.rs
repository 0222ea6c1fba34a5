//! Reads the request body completely before a handler sees it, so a slow
//! or oversized body gets its own status (408, 413) instead of surfacing as
//! an internal error: `read_whole` on every route outside /mcp, `buffer` on
//! /mcp, which hands the message, parsed once, to gate 2's admission
//! (`admission.rs`) and answers a body the SDK cannot read with the
//! JSON-RPC error (-32700 / -32600).

use std::error::Error;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use tower_http::timeout::TimeoutError;

use std::sync::Arc;

use axum::extract::State;
use serde_json::Value;

use super::admission::{Message, admit};
use super::authenticate::SessionGrant;
use super::errors::{header_mismatch, jsonrpc_refusal, malformed_message, not_admitted};
use super::fast_call;
use super::in_flight::hold_then;
use super::router::AppState;
use super::session_call;
use super::sessions::{MAX_SDK_REQUESTS_PER_SESSION, SdkRequest, SdkRequestRefusal};
use crate::Caller;
use crate::param_headers::{ParamHeaders, mirrors_arguments};
use crate::sdk::{MalformedMessage, inspect_message};
use crate::session_lane::request_key;

/// The longest string a request id may be (a number is short anyway).
pub(super) const MAX_REQUEST_ID_BYTES: usize = 256;

fn caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Why a request body could not be read: the layers around the router cut
/// it off (deadline, size cap) or the connection failed.
fn unreadable(error: &axum::Error) -> (StatusCode, &'static str) {
    if caused_by::<TimeoutError>(error) {
        (
            StatusCode::REQUEST_TIMEOUT,
            "request body was not received in time",
        )
    } else if caused_by::<LengthLimitError>(error) {
        (StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
    } else {
        (StatusCode::BAD_REQUEST, "request body could not be read")
    }
}

/// Every route outside /mcp: the body is read in full (under the size cap
/// and deadline of the layers around the router) before the handler runs,
/// so a slow or oversized body gets 408 or 413 whatever the handler.
pub async fn read_whole(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            let (status, description) = unreadable(&error);
            let mut response = (
                status,
                axum::Json(serde_json::json!({
                    "error": "invalid_request",
                    "error_description": description,
                })),
            )
                .into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// A POST of JSON: the only requests whose body the SDK reads.
fn is_json_post(parts: &axum::http::request::Parts) -> bool {
    parts.method == axum::http::Method::POST
        && parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn malformed(error: MalformedMessage) -> Response {
    match error {
        MalformedMessage::NotJson => malformed_message(
            true,
            Value::Null,
            "Parse error: the request body is not valid JSON",
        ),
        MalformedMessage::NotJsonRpc { id, batch } => malformed_message(
            false,
            id,
            if batch {
                "Invalid Request: JSON-RPC batches are not supported; send one message per request"
            } else {
                "Invalid Request: the body is not a JSON-RPC 2.0 request, notification or response"
            },
        ),
    }
}

/// A session's request refused before the SDK sees it.
fn sdk_request_refused(refused: SdkRequestRefusal, id: &Value) -> Response {
    match refused {
        SdkRequestRefusal::IdInFlight => malformed_message(
            false,
            id.clone(),
            "Invalid Request: a request of this session with this id is still being handled; use \
             another id",
        ),
        SdkRequestRefusal::TooMany => {
            let mut answer = malformed_message(
                false,
                id.clone(),
                &format!(
                    "Invalid Request: this session has {MAX_SDK_REQUESTS_PER_SESSION} requests in \
                     flight, the most it may; wait for some to finish"
                ),
            );
            *answer.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            answer
        }
    }
}

pub async fn buffer(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // The size cap and the deadline are enforced by the layers around the
    // router; this only collects what they let through.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let json_post = is_json_post(&parts);
            // Gate 1 ran before this layer; without its caller, fail closed.
            let Some(caller) = parts.extensions.remove::<Caller>() else {
                return jsonrpc_refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request was not authenticated",
                );
            };
            let session_grant = parts.extensions.remove::<SessionGrant>().map(|g| g.0);
            // Parsed once, for every decision admission makes.
            let message = if json_post {
                Message::parse(&bytes)
            } else {
                None
            };
            // An id is the client's to choose and a session keeps it while
            // the request is handled (and a while after an answer nobody
            // read): one of a megabyte was kept as such.
            if let Some(message) = &message
                && message
                    .id()
                    .as_str()
                    .is_some_and(|id| id.len() > MAX_REQUEST_ID_BYTES)
            {
                return malformed_message(
                    false,
                    Value::Null,
                    &format!(
                        "Invalid Request: a request id may be at most {MAX_REQUEST_ID_BYTES} bytes"
                    ),
                );
            }
            // Headers a filter in front may route on, each sent once and
            // readable, or the request is not taken (each is held to its
            // argument once the tool's schema is known: the gateway).
            if let Some(message) = &message
                && message.method() == Some("tools/call")
                && mirrors_arguments(&parts.headers)
                && let Err(why) = ParamHeaders::of_request(&parts.headers)
            {
                return header_mismatch(message.id().clone(), &why);
            }
            let admitted = match admit(&state, caller, session_grant, message.as_ref()).await {
                Ok(admitted) => admitted,
                Err(refused) => return not_admitted(refused, &state.urls.resource_metadata),
            };
            // A plain tool call needs nothing of the SDK: answered here,
            // without a session (`fast_call.rs`) or in one
            // (`session_call.rs`).
            if let Some(message) = &message {
                if let Some(call) = fast_call::eligible(&parts, message, &admitted.caller) {
                    return fast_call::answer(&state, &parts, admitted.caller, call).await;
                }
                if let Some(session) = &admitted.caller.session
                    && let Some(lane) = state.sessions.lane(session)
                {
                    if let Some(call) = session_call::eligible(&parts, message, Arc::clone(&lane)) {
                        return session_call::answer(&state, &parts, admitted.caller, call).await;
                    }
                    // The client initializes its session again: what it
                    // declares now is the SDK's to know, not the lane's.
                    if message.method() == Some("initialize") {
                        lane.close();
                    }
                    // The SDK cancels the calls it runs; the lane, those
                    // answered here.
                    if message.method() == Some("notifications/cancelled")
                        && let Some(id) = message.params().and_then(|p| p.get("requestId"))
                    {
                        lane.cancel(id);
                    }
                }
            }
            let session = admitted.caller.session.clone();
            // A session's request goes to the SDK only under an id none of
            // its requests there holds (held until its answer is sent).
            let sdk_request = match (&session, &message) {
                (Some(session), Some(message)) if message.method().is_some() => {
                    match request_key(message.id()) {
                        Some(key) => match state.sessions.start_sdk_request(session, key) {
                            Ok(taken) => taken,
                            Err(refused) => return sdk_request_refused(refused, message.id()),
                        },
                        None => None,
                    }
                }
                _ => None,
            };
            parts.extensions.insert(admitted.caller);
            let mut response = next
                .run(Request::from_parts(parts, Body::from(bytes.clone())))
                .await;

            // The SDK ends a session it has not seen for a while
            // (`sessions.rs`); one it refused before its session saw the
            // request (406, 400) does not count.
            if let Some(session) = &session
                && response.status().is_success()
            {
                state.sessions.sdk_saw(session);
            }
            // The SDK answers a JSON body it cannot read with 415 and its
            // deserializer's text: answer with the JSON-RPC error instead.
            // (Checking every body here first would parse it a third time.)
            if json_post
                && response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
                && let Err(error) = inspect_message(&bytes)
            {
                // The SDK never took the request: its id is free.
                if let Some(taken) = sdk_request {
                    taken.sent();
                }
                return malformed(error);
            }
            if let Some(taken) = sdk_request {
                response = hold_then(response, taken, SdkRequest::sent);
            }
            if let Some(task) = admitted.declared {
                response.extensions_mut().insert(task);
            }
            response
        }
        Err(error) => {
            let (status, message) = unreadable(&error);
            jsonrpc_refusal(status, message)
        }
    }
}
