//! `POST /admin/policy/check`: the HTTP form of `gatehouse policy check`.
//! An admin asks how the policy in force would decide a call for a given
//! role set, tenant, scopes and task; nothing runs and nothing is granted.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_core::{CredentialKind, CredentialRef, Principal};
use serde::Deserialize;
use serde_json::{Value, json};

use super::admin::AdminRefused;
use super::router::AppState;
use crate::Caller;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    tool: String,
    #[serde(default)]
    args: Option<Value>,
    roles: Vec<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Defaults to the asking admin's tenant.
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    task: Option<String>,
}

/// A refusal by this endpoint, marked with its reason for the admin gate's
/// audit record.
fn error(status: StatusCode, code: &str, reason: &'static str, description: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response();
    response.extensions_mut().insert(AdminRefused {
        reason,
        message: description.to_string(),
    });
    response
}

pub async fn check(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    body: Bytes,
) -> Response {
    // Only admins get here: the admin gate in front of this route checked
    // role, task grant and scope (and audits the request).
    let Some(Extension(caller)) = caller else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unauthenticated",
            "authenticate first",
        );
    };
    let request: CheckRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "invalid_request",
                &format!("expected {{tool, args, roles, scopes?, tenant?, task?}}: {e}"),
            );
        }
    };
    let args = request.args.unwrap_or_else(|| json!({}));
    if !args.is_object() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "invalid_request",
            "args must be a JSON object",
        );
    }
    let tenant = request
        .tenant
        .unwrap_or_else(|| caller.principal.tenant.clone());
    // Another tenant's policy questions are not this admin's to ask.
    if tenant != caller.principal.tenant {
        return error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "other_tenant",
            "an admin may explain decisions for their own tenant only",
        );
    }
    let policy = state.gateway.policy();
    let principal = Principal {
        tenant,
        human: None,
        agent: "policy-check".into(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "policy-check".into(),
        },
        roles: request.roles,
        scopes: request.scopes,
        expires_at: None,
        task: None,
        issuer: None,
    };
    // The same answer as `gatehouse policy check --json`.
    let now = state.gateway.clock().now();
    Json(policy.check_routed(
        principal,
        &request.tool,
        state.gateway.tool_upstream(&request.tool),
        &args,
        request.task.as_deref(),
        now,
    ))
    .into_response()
}
