//! `GET /admin/upstreams`: each upstream server's health, for operators
//! (behind the admin gate, audited like every admin request).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::router::AppState;
use crate::Caller;

/// Names, states and error codes, never error texts: those may name
/// another tenant (a missing `tenant:` secret) to an admin of this one.
/// An admin sees only the upstreams its tenant may use.
pub async fn status(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let tenant = caller.principal.tenant.as_str();
    let upstreams: Vec<Value> = state
        .gateway
        .upstream_health()
        .into_iter()
        .filter(|health| state.gateway.tenant_uses_upstream(tenant, &health.name))
        .map(|health| {
            json!({
                "name": health.name,
                "state": health.state,
                "last_error": health.last_error.map(|e| e.code),
                "restarts": health.restarts,
                "protocol_version": health.protocol_version,
                "breaker": health.breaker,
                "in_flight": health.in_flight,
            })
        })
        .collect();
    Json(json!({ "upstreams": upstreams }))
}
