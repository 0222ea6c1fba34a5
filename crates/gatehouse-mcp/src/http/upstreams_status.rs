//! `GET /admin/upstreams`: each upstream server's health, for operators
//! (behind the admin gate, audited like every admin request).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::router::AppState;

/// Names, states and error codes, never error texts: those may name
/// another tenant (a missing `tenant:` secret) to an admin of this one.
pub async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let upstreams: Vec<Value> = state
        .gateway
        .upstream_health()
        .into_iter()
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
