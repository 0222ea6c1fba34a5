//! Reads the request body completely before a handler sees it, so a slow
//! or oversized body gets its own status (408, 413) instead of surfacing as
//! an internal error: `read_whole` on every route outside /mcp, `buffer` on
//! /mcp, where the body also decides a task declaration, a step-up
//! challenge and whether a new session may start, and where a body the SDK
//! cannot read gets the JSON-RPC error (-32700 / -32600).

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
use serde_json::{Map, Value};

use super::authenticate::DeclaredTask;
use super::errors::{audit_unavailable, jsonrpc_refusal, malformed_message, refusal};
use super::router::AppState;
use super::session_start::{initialize_id, may_start_session};
use crate::Caller;
use crate::refusal::Refusal;
use crate::sdk::{MalformedMessage, inspect_message};
use gatehouse_authz::{TASK_META, TaskGrantError, grant_of};
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

/// The task a request names in `params._meta["io.gatehouse/task"]`, with
/// the request's method and id.
struct TaskDeclaration {
    method: String,
    id: Value,
    task: String,
}

fn task_declaration(bytes: &[u8]) -> Option<TaskDeclaration> {
    // Most requests declare nothing: a scan for the key is much cheaper
    // than parsing every body a second time. (A key spelled with JSON
    // escapes is not found, and then not honoured either: rmcp never sees
    // it, and no grant results.)
    let key = TASK_META.as_bytes();
    if !bytes.windows(key.len()).any(|w| w == key) {
        return None;
    }
    let message: Value = serde_json::from_slice(bytes).ok()?;
    let task = message
        .get("params")?
        .get("_meta")?
        .get(TASK_META)?
        .as_str()?
        .to_string();
    Some(TaskDeclaration {
        method: message.get("method")?.as_str()?.to_string(),
        id: message.get("id").cloned().unwrap_or(Value::Null),
        task,
    })
}

/// What a declared task means for this request: `Ok(Some(grant))` when
/// `initialize` declared a task that was granted, `Err` with the answer
/// when the declaration is refused.
async fn declared_task(
    state: &AppState,
    caller: &Caller,
    declaration: TaskDeclaration,
) -> Result<Option<DeclaredTask>, Response> {
    let in_session = caller.session.is_some();
    if declaration.method != "initialize" || in_session {
        // Naming a task later, or in a session, is only fine when it is the
        // task already held; anything else is an attempt to switch.
        let current = caller.principal.task.as_ref().map(|t| t.task.as_str());
        if current == Some(declaration.task.as_str()) {
            return Ok(None);
        }
        let detail = format!(
            "{} named task {:?} while holding {}",
            declaration.method,
            declaration.task,
            current.map_or("no task grant".to_string(), |t| format!("task {t:?}"))
        );
        let refused = Refusal::TaskSwitch;
        if state
            .gateway
            .record_anomaly(caller, refused.code(), detail)
            .await
            .is_err()
        {
            return Err(audit_unavailable());
        }
        return Err(refusal(
            &refused,
            declaration.id,
            &state.urls.resource_metadata,
        ));
    }
    match state.gateway.declare_task(caller, &declaration.task).await {
        Ok(record) => Ok(Some(DeclaredTask(grant_of(&record)))),
        Err(TaskGrantError::Refused(refused)) => Err(refusal(
            &Refusal::Task(refused),
            declaration.id,
            &state.urls.resource_metadata,
        )),
        Err(TaskGrantError::Audit(_)) => Err(audit_unavailable()),
        Err(e) => {
            tracing::error!(error = %e, "task grant failed");
            Err(jsonrpc_refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "task grants are unavailable",
            ))
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

pub async fn buffer(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // The size cap and the deadline are enforced by the layers around the
    // router; this only collects what they let through.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let json_post = is_json_post(&parts);
            if json_post
                && let Some(caller) = parts
                    .extensions
                    .get::<Caller>()
                    .filter(|c| c.session.is_none())
                && let Some(id) = initialize_id(&bytes)
                && let Err(refusal) = may_start_session(&state, caller, id).await
            {
                return refusal;
            }
            let mut declared = None;
            if let Some(declaration) = task_declaration(&bytes)
                && let Some(caller) = parts.extensions.get::<Caller>().cloned()
            {
                match declared_task(&state, &caller, declaration).await {
                    Ok(None) => {}
                    Ok(Some(task)) => {
                        // The initialize request itself already runs under the grant.
                        let mut principal = (*caller.principal).clone();
                        principal.task = Some(task.0.clone());
                        parts.extensions.insert(Caller {
                            principal: Arc::new(principal),
                            ..caller
                        });
                        declared = Some(task);
                    }
                    Err(answer) => return answer,
                }
            }
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
                        return refusal(
                            &Refusal::InsufficientScope(deny),
                            call.id,
                            &state.urls.resource_metadata,
                        );
                    }
                    Ok(None) => {}
                    Err(_) => return audit_unavailable(),
                }
            }
            let mut response = next
                .run(Request::from_parts(parts, Body::from(bytes.clone())))
                .await;
            // The SDK answers a JSON body it cannot read with 415 and its
            // deserializer's text: answer with the JSON-RPC error instead.
            // (Reading every body here first would parse it twice.)
            if json_post
                && response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE
                && let Err(error) = inspect_message(&bytes)
            {
                return malformed(error);
            }
            if let Some(task) = declared {
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
