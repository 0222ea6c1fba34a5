//! Gate 1 for HTTP, and the binding of MCP sessions to their principal.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use gatehouse_authn::presented_credential;

use super::errors::{gate1_failure, jsonrpc_refusal};
use super::listener::PeerAddr;
use super::router::AppState;
use super::sessions::SessionCheck;
use crate::Caller;
use crate::gate1::{self, RequestOrigin};

const SESSION_HEADER: &str = "mcp-session-id";

fn session_id(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_string)
}

pub async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let source = request
        .extensions()
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip().to_string());
    let session = session_id(request.headers().get(SESSION_HEADER));
    let presented = presented_credential(request.headers(), request.uri().query());
    let principal = match gate1::authenticate(
        &state.authenticator,
        state.gateway.audit(),
        state.gateway.clock(),
        presented,
        RequestOrigin {
            source: source.clone(),
            session: session.clone(),
        },
    )
    .await
    {
        Ok(principal) => principal,
        Err(error) => return gate1_failure(&error, &state.urls.resource_metadata),
    };

    // Authentication runs on every request (sessions are not credentials);
    // the session must also belong to this principal. Every session Gatehouse
    // created is bound, so an unbound id is unknown or expired.
    let subject = principal.subject_key();
    if let Some(id) = &session
        && state.sessions.check(id, &subject) != SessionCheck::Owned
    {
        return jsonrpc_refusal(StatusCode::NOT_FOUND, "Not Found: Session not found");
    }

    let is_delete = request.method() == Method::DELETE;
    request.extensions_mut().insert(Caller {
        principal: Arc::new(principal),
        session: session.clone(),
        source,
    });
    let response = next.run(request).await;

    match (&session, session_id(response.headers().get(SESSION_HEADER))) {
        // A new session was created for this principal.
        (None, Some(created)) if !state.sessions.bind(&created, &subject) => {
            tracing::warn!("session table full; refusing new session");
            return jsonrpc_refusal(StatusCode::SERVICE_UNAVAILABLE, "too many sessions");
        }
        (Some(ended), _) if is_delete && response.status().is_success() => {
            state.sessions.unbind(ended);
            // rmcp answers 202; clients (the Python SDK among them) expect
            // 200 or 204 for an ended session.
            if response.status() == StatusCode::ACCEPTED {
                let mut ended = Response::new(axum::body::Body::empty());
                *ended.status_mut() = StatusCode::NO_CONTENT;
                return ended;
            }
        }
        (Some(unknown), _) if response.status() == StatusCode::NOT_FOUND => {
            state.sessions.unbind(unknown);
        }
        _ => {}
    }
    response
}
