//! Reads the request body completely before the MCP layer sees it, so a
//! slow or oversized body gets its own status (408, 413) instead of
//! surfacing as an internal error inside the SDK.

use std::error::Error;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::LengthLimitError;
use tower_http::timeout::TimeoutError;

use std::sync::Arc;

use axum::extract::State;
use serde_json::{Map, Value};

use super::errors::{audit_unavailable, insufficient_scope, jsonrpc_refusal};
use super::router::AppState;
use crate::Caller;
use gatehouse_core::CredentialKind;

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

/// What the body of a `tools/call` request names.
struct ToolCall {
    id: Value,
    name: String,
    arguments: Option<Map<String, Value>>,
}

/// The tool call in a request body, if the body is one.
fn tool_call(bytes: &[u8]) -> Option<ToolCall> {
    let message: Value = serde_json::from_slice(bytes).ok()?;
    if message.get("method")?.as_str()? != "tools/call" {
        return None;
    }
    let params = message.get("params")?;
    let name = params.get("name")?.as_str()?.to_string();
    let arguments = params.get("arguments").and_then(|a| a.as_object()).cloned();
    Some(ToolCall {
        id: message.get("id").cloned().unwrap_or(Value::Null),
        name,
        arguments,
    })
}

pub async fn buffer(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // The size cap and the deadline are enforced by the layers around the
    // router; this only collects what they let through.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            // A token without the tool's scope gets an HTTP 403 challenge, so
            // OAuth clients can step up (MCP authorization, RS10).
            // Only token callers can step up, so only their bodies are parsed here.
            let token_caller = parts
                .extensions
                .get::<Caller>()
                .filter(|c| c.principal.credential.kind == CredentialKind::AccessToken);
            if let Some(caller) = token_caller
                && let Some(call) = tool_call(&bytes)
            {
                match state
                    .gateway
                    .scope_denial(caller, &call.name, call.arguments.as_ref())
                    .await
                {
                    Ok(Some(deny)) => {
                        return insufficient_scope(&deny, &state.urls.resource_metadata, call.id);
                    }
                    Ok(None) => {}
                    Err(_) => return audit_unavailable(),
                }
            }
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            if caused_by::<TimeoutError>(&error) {
                jsonrpc_refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body was not received in time",
                )
            } else if caused_by::<LengthLimitError>(&error) {
                jsonrpc_refusal(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
            } else {
                jsonrpc_refusal(StatusCode::BAD_REQUEST, "request body could not be read")
            }
        }
    }
}
