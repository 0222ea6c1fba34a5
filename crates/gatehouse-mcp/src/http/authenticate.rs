//! Gate 1 for HTTP, and the binding of MCP sessions to their principal.
//! What gate 2 decides before the SDK runs is in `admission.rs`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use gatehouse_authn::presented_credential;

use gatehouse_core::TaskGrant;

use super::errors::{audit_unavailable, gate1_failure, jsonrpc_refusal, refusal};
use super::listener::PeerAddr;
use super::request_id::RequestId;
use super::router::AppState;
use super::session_stream;
use super::sessions::SessionCheck;
use crate::Caller;
use crate::gate1::{self, RequestOrigin};
use crate::stream_credential::StreamCredential;

const SESSION_HEADER: &str = "mcp-session-id";

/// The anomaly code of a request naming another principal's session (a
/// leaked or guessed session id).
pub const FOREIGN_SESSION: &str = "foreign_session";

fn session_not_found() -> Response {
    jsonrpc_refusal(StatusCode::NOT_FOUND, "Not Found: Session not found")
}

fn session_id(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A task granted at `initialize`, handed from admission to the session
/// binding in the response's extensions.
#[derive(Clone)]
pub struct DeclaredTask(pub TaskGrant);

/// The task grant the request's session is bound to, handed to admission
/// in the request's extensions.
#[derive(Clone)]
pub struct SessionGrant(pub TaskGrant);

/// Ends in the SDK the sessions the bindings forgot for idleness (asked
/// where sessions start, the only place they are forgotten). Not awaited:
/// the request that made room goes on.
pub(super) fn end_forgotten_sessions(state: &AppState) {
    let forgotten = state.sessions.take_forgotten();
    if forgotten.is_empty() {
        return;
    }
    let sdk = state.sdk_sessions.clone();
    tokio::spawn(async move {
        for session in forgotten {
            sdk.close(&session).await;
        }
    });
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
    let owner = principal.session_owner_key();
    let counted_as = principal.limit_key();
    let caller = Caller {
        principal: Arc::new(principal),
        session: session.clone(),
        source,
        request_id: request
            .extensions()
            .get::<RequestId>()
            .map(|id| Arc::clone(&id.0)),
    };
    // A session's GET stream is held to the credential that opens it
    // (`session_stream.rs`).
    let mut stream_credential = None;
    if let Some(id) = &session {
        // Noted with the session, to be checked again when credentials
        // change while its stream stays open (`session_rechecks.rs`).
        let credential = presented_credential(request.headers(), request.uri().query())
            .ok()
            .flatten();
        if let Some(credential) = credential.filter(|_| request.method() == Method::GET) {
            stream_credential = Some(StreamCredential::new(
                Arc::clone(&state.authenticator),
                Arc::clone(state.gateway.clock()),
                credential.to_string(),
                Arc::clone(&caller.principal),
            ));
        }
        let presented = credential.map(|c| (c, &caller.principal));
        match state.sessions.check(id, &owner, presented) {
            SessionCheck::Owned(grant) => {
                if let Some(grant) = grant {
                    request.extensions_mut().insert(SessionGrant(grant));
                }
            }
            // Answered as an unknown session (nothing says it exists), but
            // someone holds another principal's session id: an anomaly.
            SessionCheck::Foreign => {
                let detail = "a request named a session of another principal".to_string();
                if state
                    .gateway
                    .record_anomaly(&caller, FOREIGN_SESSION, detail)
                    .await
                    .is_err()
                {
                    return audit_unavailable();
                }
                return session_not_found();
            }
            SessionCheck::Unbound => return session_not_found(),
        }
    }

    let is_delete = request.method() == Method::DELETE;
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    if let Some(credential) = stream_credential
        && session_stream::is_event_stream(response.status(), response.headers())
    {
        response = session_stream::end_when_lapsed(
            response,
            credential,
            Arc::clone(&state.gateway),
            caller.clone(),
        );
    }

    match (&session, session_id(response.headers().get(SESSION_HEADER))) {
        // A new session was created for this principal, with the task it
        // declared at initialize, if any. The body layer checked there was
        // room; a concurrent initialize may have taken it meanwhile.
        (None, Some(created)) => {
            let grant = response
                .extensions()
                .get::<DeclaredTask>()
                .map(|d| d.0.clone());
            let bound = state.sessions.bind(&created, &owner, &counted_as, grant);
            end_forgotten_sessions(&state);
            if let Err(refused) = bound {
                // Unbound, the session would be unreachable but alive.
                state.sdk_sessions.close(&created).await;
                let refused = state.sessions.refusal_for(refused);
                let detail = format!("session refused after initialize: {refused}");
                if state
                    .gateway
                    .record_anomaly(&caller, refused.code(), detail)
                    .await
                    .is_err()
                {
                    return audit_unavailable();
                }
                return refusal(
                    &refused,
                    serde_json::Value::Null,
                    &state.urls.resource_metadata,
                );
            }
        }
        // An ended session: the SDK unbound it as it closed it
        // (`sdk/stream_pauses.rs`). rmcp answers 202; clients (the Python
        // SDK among them) expect 200 or 204.
        (Some(_), _) if is_delete && response.status() == StatusCode::ACCEPTED => {
            let mut ended = Response::new(axum::body::Body::empty());
            *ended.status_mut() = StatusCode::NO_CONTENT;
            return ended;
        }
        // rmcp answers 404 for a session it no longer has, and also for
        // an unknown method of a request it serves statelessly (a
        // 2026-07-28 request ignores the session id it names). Unbinding a
        // session the SDK still holds would leave it alive, uncounted and
        // unchecked when credentials change: only a session the SDK let go
        // is unbound.
        (Some(unknown), _)
            if response.status() == StatusCode::NOT_FOUND
                && !state.sdk_sessions.holds(unknown).await =>
        {
            state.sessions.unbind(unknown);
        }
        _ => {}
    }
    response
}
