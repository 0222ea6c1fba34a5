//! Gate 1 for HTTP, and the binding of MCP sessions to their principal.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use gatehouse_authn::presented_credential;

use gatehouse_core::{Principal, TaskGrant};

use super::errors::{audit_unavailable, gate1_failure, gate2_refusal, jsonrpc_refusal};
use super::listener::PeerAddr;
use super::router::AppState;
use super::session_start::session_refusal;
use super::sessions::SessionCheck;
use crate::Caller;
use crate::gate1::{self, RequestOrigin};

const SESSION_HEADER: &str = "mcp-session-id";

fn session_id(value: Option<&HeaderValue>) -> Option<String> {
    value.and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A task granted at `initialize`, handed from the body layer to the
/// session binding in the response's extensions.
#[derive(Clone)]
pub struct DeclaredTask(pub TaskGrant);

/// A session declared with a task runs under its grant while the grant is
/// live; a revoked or expired grant ends the session's use.
async fn session_grant(
    state: &AppState,
    principal: &Principal,
    grant: &TaskGrant,
) -> Result<(), Response> {
    let now = state.gateway.clock().now();
    if principal.task.as_ref().is_some_and(|t| t.id != grant.id) {
        return Err(gate2_refusal(
            serde_json::Value::Null,
            "task_escalation",
            "this session is bound to another task grant",
        ));
    }
    if now >= grant.expires_at {
        return Err(gate2_refusal(
            serde_json::Value::Null,
            "task_grant_expired",
            "the task grant of this session has expired; start a new session",
        ));
    }
    match state.authenticator.is_revoked(&grant.id, now).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(gate2_refusal(
            serde_json::Value::Null,
            "task_grant_revoked",
            "the task grant of this session was revoked",
        )),
        // Fail closed: without the revocation list the grant cannot be trusted.
        Err(e) => Err(gate1_failure(
            &crate::Gate1Error::Authn(e),
            &state.urls.resource_metadata,
        )),
    }
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

    let mut principal = principal;
    // With tenants declared, a principal of any other tenant (a token
    // without the claim among them) is refused outright.
    let policy = state.gateway.policy();
    if policy.tenancy_enabled() && !policy.tenant_allowed(&principal.tenant) {
        let caller = Caller {
            principal: Arc::new(principal),
            session: session.clone(),
            source: source.clone(),
        };
        let detail = format!(
            "tenant {:?} is not declared in the policy",
            caller.principal.tenant
        );
        if state
            .gateway
            .record_anomaly(&caller, "unknown_tenant", detail)
            .await
            .is_err()
        {
            return audit_unavailable();
        }
        return gate2_refusal(
            serde_json::Value::Null,
            "unknown_tenant",
            "this credential's tenant is not served here",
        );
    }

    // Authentication runs on every request (sessions are not credentials);
    // the session must also belong to this principal. Every session Gatehouse
    // created is bound, so an unbound id is unknown or expired.
    let subject = principal.subject_key();
    if let Some(id) = &session {
        let SessionCheck::Owned(grant) = state.sessions.check(id, &subject) else {
            return jsonrpc_refusal(StatusCode::NOT_FOUND, "Not Found: Session not found");
        };
        if let Some(grant) = grant {
            if let Err(refusal) = session_grant(&state, &principal, &grant).await {
                return refusal;
            }
            principal.task = Some(grant);
        }
    }

    let is_delete = request.method() == Method::DELETE;
    let caller = Caller {
        principal: Arc::new(principal),
        session: session.clone(),
        source,
    };
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;

    match (&session, session_id(response.headers().get(SESSION_HEADER))) {
        // A new session was created for this principal, with the task it
        // declared at initialize, if any. The body layer checked there was
        // room; a concurrent initialize may have taken it meanwhile.
        (None, Some(created)) => {
            let grant = response
                .extensions()
                .get::<DeclaredTask>()
                .map(|d| d.0.clone());
            if let Err(refusal) = state.sessions.bind(&created, &subject, grant) {
                // Unbound, the session would be unreachable but alive.
                state.sdk_sessions.close(&created).await;
                let (reason, answer) = session_refusal(&state, refusal, serde_json::Value::Null);
                let detail = format!("session refused after initialize: {reason}");
                if state
                    .gateway
                    .record_anomaly(&caller, reason, detail)
                    .await
                    .is_err()
                {
                    return audit_unavailable();
                }
                return answer;
            }
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
