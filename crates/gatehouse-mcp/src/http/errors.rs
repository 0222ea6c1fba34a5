//! The one place where gate-1 failures and gate-2 refusals at the transport
//! become HTTP responses.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_authn::AuthnError;
use gatehouse_authz::{AdminRefusal, Deny};
use serde_json::json;

use super::admission::NotAdmitted;
use crate::Gate1Error;
use crate::refusal::Refusal;

fn quoted(value: &str) -> String {
    // Values here are fixed sentences and URLs; strip quotes defensively.
    value.replace(['"', '\\'], "")
}

/// The `WWW-Authenticate` challenge. RFC 6750 §3.1: no `error` when the
/// request carried no credential at all.
pub fn challenge(resource_metadata: &str, error: Option<(&str, &str)>) -> String {
    challenge_with_scope(resource_metadata, error, None)
}

fn challenge_with_scope(
    resource_metadata: &str,
    error: Option<(&str, &str)>,
    scope: Option<&str>,
) -> String {
    let mut value = String::from("Bearer realm=\"gatehouse\"");
    if let Some((code, description)) = error {
        value.push_str(&format!(
            ", error=\"{}\", error_description=\"{}\"",
            quoted(code),
            quoted(description)
        ));
    }
    if let Some(scope) = scope {
        value.push_str(&format!(", scope=\"{}\"", quoted(scope)));
    }
    value.push_str(&format!(
        ", resource_metadata=\"{}\"",
        quoted(resource_metadata)
    ));
    value
}

fn with_challenge(status: StatusCode, challenge: String, body: serde_json::Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

pub fn gate1_failure(error: &Gate1Error, resource_metadata: &str) -> Response {
    match error {
        Gate1Error::Audit(_) => audit_unavailable(),
        Gate1Error::Authn(e) => authn_failure(e, resource_metadata),
    }
}

fn authn_failure(error: &AuthnError, resource_metadata: &str) -> Response {
    let description = error.to_string();
    match error {
        AuthnError::Missing => with_challenge(
            StatusCode::UNAUTHORIZED,
            challenge(resource_metadata, None),
            json!({"error": "unauthorized", "error_description": "this endpoint needs a credential: Authorization: Bearer <key> or X-API-Key: <key>"}),
        ),
        AuthnError::InQuery | AuthnError::Ambiguous => with_challenge(
            StatusCode::BAD_REQUEST,
            challenge(resource_metadata, Some(("invalid_request", &description))),
            json!({"error": "invalid_request", "error_description": description}),
        ),
        AuthnError::Locked { retry_after_secs } => {
            too_many_attempts(*retry_after_secs, &description)
        }
        AuthnError::Unavailable(_) | AuthnError::Internal(_) => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "temporarily_unavailable", "error_description": description})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        AuthnError::Malformed
        | AuthnError::Unknown
        | AuthnError::BadSecret
        | AuthnError::Revoked
        | AuthnError::Expired
        | AuthnError::InvalidToken(_)
        | AuthnError::TokenNotAccepted(_) => with_challenge(
            StatusCode::UNAUTHORIZED,
            challenge(resource_metadata, Some(("invalid_token", &description))),
            json!({"error": "invalid_token", "error_description": description}),
        ),
    }
}

/// Too many failed attempts with this credential or from this address:
/// 429 with `Retry-After`, and the JSON-RPC error a stdio client gets. No
/// challenge: a new credential would not help before the lock ends.
fn too_many_attempts(retry_after_secs: u64, message: &str) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": crate::UNAUTHENTICATED_ERROR_CODE,
                "message": message,
                "data": {"reason": "locked", "retry_after": retry_after_secs}
            }
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

/// MCP step-up (RS10): the access token lacks the scope the tool needs.
/// The body is the same JSON-RPC denial the client would otherwise get.
pub fn insufficient_scope(deny: &Deny, resource_metadata: &str, id: serde_json::Value) -> Response {
    let scope = deny.required_scope().unwrap_or_default();
    with_challenge(
        StatusCode::FORBIDDEN,
        challenge_with_scope(
            resource_metadata,
            Some(("insufficient_scope", &deny.message())),
            Some(scope),
        ),
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": crate::DENIED_ERROR_CODE,
                "message": deny.message(),
                "data": {"reason": deny.reason.code(), "tool": deny.tool, "required_scope": scope}
            }
        }),
    )
}

/// The admin API refused the caller (see `admin.rs`): 403, and for a
/// missing scope the step-up challenge naming the scope to ask for.
pub fn admin_refusal(refusal: AdminRefusal, resource_metadata: &str) -> Response {
    let description = refusal.to_string();
    match refusal.required_scope() {
        Some(scope) => with_challenge(
            StatusCode::FORBIDDEN,
            challenge_with_scope(
                resource_metadata,
                Some(("insufficient_scope", &description)),
                Some(scope),
            ),
            json!({"error": "insufficient_scope", "error_description": description, "scope": scope}),
        ),
        None => admin_forbidden(refusal.code(), &description),
    }
}

/// An admin endpoint refused for a reason no scope would change.
pub fn admin_forbidden(reason: &str, description: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"error": "forbidden", "error_description": description, "reason": reason})),
    )
        .into_response()
}

/// Nothing runs without its audit record: answer 503 and let the client retry.
pub fn audit_unavailable() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "temporarily_unavailable", "error_description": "the audit log is unavailable"})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A JSON-RPC error without an id, as the transport spec allows for
/// HTTP-level refusals.
pub fn jsonrpc_refusal(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32600, "message": message}
        })),
    )
        .into_response()
}

/// JSON-RPC 2.0 §5.1: -32700 for a body that is not JSON, -32600 for JSON
/// that is not a JSON-RPC message. HTTP 400 either way.
pub fn malformed_message(parse_error: bool, id: serde_json::Value, message: &str) -> Response {
    bad_request(id, if parse_error { -32700 } else { -32600 }, message)
}

/// HTTP 400 with a JSON-RPC error of `code`.
fn bad_request(id: serde_json::Value, code: i64, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": code, "message": message}
        })),
    )
        .into_response()
}

/// A 2026-07-28 request whose headers cannot mirror its body (SEP-2243):
/// HTTP 400 with JSON-RPC -32020, as the SDK answers a mismatched
/// `Mcp-Name`.
pub(super) fn header_mismatch(id: serde_json::Value, message: &str) -> Response {
    bad_request(id, -32020, message)
}

/// The answer to a request admission did not let through.
pub(super) fn not_admitted(refused: NotAdmitted, resource_metadata: &str) -> Response {
    match refused {
        NotAdmitted::Refused { refusal: r, id } => refusal(&r, id, resource_metadata),
        NotAdmitted::Gate1(error) => gate1_failure(&error, resource_metadata),
        NotAdmitted::AuditUnavailable => audit_unavailable(),
        NotAdmitted::Unavailable(message) => {
            jsonrpc_refusal(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

/// A JSON-RPC error answer with the refusal's code in `data.reason`.
fn denied(
    status: StatusCode,
    id: serde_json::Value,
    message: &str,
    data: serde_json::Value,
) -> Response {
    (
        status,
        Json(json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": crate::DENIED_ERROR_CODE, "message": message, "data": data}
        })),
    )
        .into_response()
}

/// The one place a refusal of gate 2 at the transport becomes an HTTP
/// answer: its status, headers and JSON-RPC error. `id` is the request's,
/// when it is known.
pub fn refusal(refusal: &Refusal, id: serde_json::Value, resource_metadata: &str) -> Response {
    let message = refusal.to_string();
    let reason = refusal.code();
    match refusal {
        // A step-up challenge: the client may ask for the scope.
        Refusal::InsufficientScope(deny) => insufficient_scope(deny, resource_metadata, id),
        Refusal::TooManySessions { limit, .. } => denied(
            StatusCode::TOO_MANY_REQUESTS,
            id,
            &message,
            json!({"reason": reason, "limit": limit}),
        ),
        Refusal::SessionStartsLimited { retry_after_secs } => {
            let mut response = denied(
                StatusCode::TOO_MANY_REQUESTS,
                id,
                &message,
                json!({"reason": reason, "retry_after": retry_after_secs}),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            response
        }
        // Nobody's fault but the server's capacity: no reason to share.
        Refusal::SessionTableFull => jsonrpc_refusal(StatusCode::SERVICE_UNAVAILABLE, &message),
        Refusal::UnknownTenant
        | Refusal::SessionOfAnotherTask
        | Refusal::TaskGrantExpired
        | Refusal::TaskGrantRevoked
        | Refusal::TaskSwitch
        | Refusal::Task(_) => denied(
            StatusCode::FORBIDDEN,
            id,
            &message,
            json!({"reason": reason}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRM: &str = "http://127.0.0.1:8787/.well-known/oauth-protected-resource/mcp";

    #[test]
    fn challenge_without_credential_has_no_error() {
        assert_eq!(
            challenge(PRM, None),
            format!("Bearer realm=\"gatehouse\", resource_metadata=\"{PRM}\"")
        );
    }

    #[test]
    fn challenge_for_bad_token_names_the_error() {
        let value = challenge(PRM, Some(("invalid_token", "the credential has expired")));
        assert_eq!(
            value,
            format!(
                "Bearer realm=\"gatehouse\", error=\"invalid_token\", error_description=\"the credential has expired\", resource_metadata=\"{PRM}\""
            )
        );
    }

    #[test]
    fn statuses_follow_rfc_6750() {
        let status = |e: AuthnError| authn_failure(&e, PRM).status();
        assert_eq!(status(AuthnError::Missing), StatusCode::UNAUTHORIZED);
        assert_eq!(status(AuthnError::Revoked), StatusCode::UNAUTHORIZED);
        assert_eq!(status(AuthnError::InQuery), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(AuthnError::Unavailable("db".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(AuthnError::Locked {
                retry_after_secs: 30
            }),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn a_missing_admin_scope_names_the_scope_to_ask_for() {
        let response = admin_refusal(AdminRefusal::MissingScope, PRM);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(challenge.contains("error=\"insufficient_scope\""));
        assert!(challenge.contains("scope=\"tools:admin\""));
        let other = admin_refusal(AdminRefusal::NotAdmin, PRM);
        assert_eq!(other.status(), StatusCode::FORBIDDEN);
        assert!(!other.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn a_lockout_says_when_to_retry() {
        let response = authn_failure(
            &AuthnError::Locked {
                retry_after_secs: 42,
            },
            PRM,
        );
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
