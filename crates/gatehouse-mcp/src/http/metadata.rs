//! RFC 9728 protected resource metadata.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::Arc;

use super::router::AppState;

fn document(resource: &str, state: &AppState) -> serde_json::Value {
    let mut doc = json!({
        "resource": resource,
        "resource_name": "Gatehouse",
        "bearer_methods_supported": ["header"],
        "scopes_supported": state.gateway.policy().scopes(),
    });
    // The embedded authorization server first, then every external issuer,
    // so an MCP client can discover any of them.
    let servers: Vec<&str> = state
        .authorization_server
        .iter()
        .map(String::as_str)
        .chain(
            state
                .authenticator
                .external_issuers()
                .iter()
                .map(String::as_str),
        )
        .collect();
    if !servers.is_empty() {
        doc["authorization_servers"] = json!(servers);
    }
    doc
}

/// For the MCP endpoint: `resource` is the endpoint URI itself.
pub async fn for_mcp(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(document(&state.urls.resource, &state))
}

/// Root form: `resource` is the origin the well-known URI was built from.
pub async fn for_origin(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(document(&state.urls.origin, &state))
}
