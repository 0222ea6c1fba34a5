//! The gate in front of every admin HTTP endpoint (`/admin/...`), after
//! gate 1: the caller must be an admin of its tenant, outside any task
//! grant, and a scoped credential must hold the admin scope
//! ([`gatehouse_authz::ADMIN_SCOPE`]). Every admin request, admitted or
//! refused, leaves one `tool_decision` record whose tool is the endpoint's
//! path, with the reason.
//!
//! The record is written once the endpoint has answered and before the
//! answer leaves; if it cannot be written the caller gets 503 instead. That
//! is enough because the admin endpoints only read; an endpoint that
//! changes state must record its decision before acting.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome};

use super::errors::{admin_forbidden, admin_refusal, audit_unavailable};
use super::router::AppState;
use crate::Caller;

/// Set on a response by an admin endpoint that refuses the request itself
/// (a bad body, another tenant), so the record names the reason.
#[derive(Debug, Clone)]
pub struct AdminRefused {
    pub reason: &'static str,
    pub message: String,
}

/// What an admitted request is recorded with when the endpoint answered.
const ALLOWED_REASON: &str = "admin";

pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // Gate 1 runs first and always hands on a caller. Without one (a
    // router that lost gate 1) nothing is served: fail closed.
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        tracing::error!("an admin request reached the admin gate without a caller; refused");
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let endpoint = request.uri().path().to_string();
    // A tenant the policy does not declare reaches no admin endpoint, as
    // it reaches nothing at /mcp (the refusal is an anomaly record too).
    let tenant = match state.gateway.admit_caller(&caller).await {
        Ok(tenant) => tenant,
        Err(_) => return audit_unavailable(),
    };
    let refused_here = match tenant {
        Err(refusal) => {
            let refused = AdminRefused {
                reason: refusal.code(),
                message: refusal.to_string(),
            };
            Some((admin_forbidden(refused.reason, &refused.message), refused))
        }
        Ok(()) => state
            .gateway
            .policy()
            .admin_api_access(&caller.principal)
            .err()
            .map(|refusal| {
                let refused = AdminRefused {
                    reason: refusal.code(),
                    message: refusal.to_string(),
                };
                (
                    admin_refusal(refusal, &state.urls.resource_metadata),
                    refused,
                )
            }),
    };
    let (response, refused) = match refused_here {
        Some((response, refused)) => (response, Some(refused)),
        None => {
            let response = next.run(request).await;
            let refused = response.extensions().get::<AdminRefused>().cloned();
            (response, refused)
        }
    };
    let event = EventBuilder::new(
        AuditKind::ToolDecision,
        if refused.is_some() {
            Outcome::Denied
        } else {
            Outcome::Success
        },
        state.gateway.clock().now(),
    )
    .principal(&caller.principal)
    .session(caller.session.clone())
    .source(caller.source.clone())
    .tool(&endpoint);
    let event = match refused {
        Some(refused) => event
            .decision("deny")
            .reason(refused.reason)
            .error(refused.message),
        None => event.decision("allow").reason(ALLOWED_REASON),
    };
    if state.gateway.audit().record(event.build()).await.is_err() {
        return audit_unavailable();
    }
    response
}
