//! Whether a principal may start another MCP session (2025-11-25 and
//! earlier), asked when its `initialize` arrives, before the SDK makes the
//! session: a budget of `initialize` requests per minute, then the
//! per-principal cap of the session table. The binding after the SDK
//! answered asks the table again (`authenticate.rs`).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::errors::{
    audit_unavailable, jsonrpc_refusal, session_starts_limited, too_many_sessions,
};
use super::router::AppState;
use super::sessions::SessionRefusal;
use crate::Caller;
use crate::sdk::inspect_message;

/// The id of the `initialize` request in the body, if it is one. Only a
/// body that mentions `"initialize"`, or has a `\u` escape that could
/// spell it, is parsed: most bodies have neither.
pub(super) fn initialize_id(bytes: &[u8]) -> Option<Value> {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !contains(b"\"initialize\"") && !contains(b"\\u") {
        return None;
    }
    inspect_message(bytes).ok()?.initialize
}

/// Before the SDK makes a session: the principal's `initialize` budget,
/// then its session cap. Refusals are audited.
pub(super) async fn may_start_session(
    state: &AppState,
    caller: &Caller,
    id: Value,
) -> Result<(), Response> {
    let subject = caller.principal.subject_key();
    let now = state.gateway.clock().now();
    let (reason, refusal) = match state.session_starts.attempt(&subject, now) {
        Err(wait_ms) => (
            "initialize_rate_limited",
            session_starts_limited(id, gatehouse_core::retry_after_secs(wait_ms)),
        ),
        Ok(()) => match state.sessions.may_start(&subject) {
            Ok(()) => return Ok(()),
            Err(refusal) => session_refusal(state, refusal, id),
        },
    };
    let detail = format!("initialize refused: {reason}");
    if state
        .gateway
        .record_anomaly(caller, reason, detail)
        .await
        .is_err()
    {
        return Err(audit_unavailable());
    }
    Err(refusal)
}

/// The answer to a session that cannot be had, and its audit reason.
pub(super) fn session_refusal(
    state: &AppState,
    refusal: SessionRefusal,
    id: Value,
) -> (&'static str, Response) {
    match refusal {
        SessionRefusal::PrincipalFull { limit } => (
            "too_many_sessions",
            too_many_sessions(id, limit, state.sessions.limits().idle_timeout),
        ),
        SessionRefusal::TableFull => {
            tracing::warn!("session table full; refusing new session");
            (
                "session_table_full",
                jsonrpc_refusal(StatusCode::SERVICE_UNAVAILABLE, "too many sessions"),
            )
        }
    }
}
