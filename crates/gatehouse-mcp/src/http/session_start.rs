//! Whether a principal may start another MCP session (2025-11-25 and
//! earlier), asked when its `initialize` arrives, before the SDK makes the
//! session: a budget of `initialize` requests per minute, then the
//! per-principal cap of the session table. The binding after the SDK
//! answered asks the table again (`authenticate.rs`).

use axum::response::Response;
use serde_json::Value;

use super::errors::{audit_unavailable, refusal as refusal_answer};
use super::router::AppState;
use super::sessions::SessionRefusal;
use crate::Caller;
use crate::refusal::Refusal;
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
    let refusal = match state.session_starts.attempt(&subject, now) {
        Err(wait_ms) => Refusal::SessionStartsLimited {
            retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
        },
        Ok(()) => match state.sessions.may_start(&subject) {
            Ok(()) => return Ok(()),
            Err(refusal) => session_refusal(state, refusal),
        },
    };
    let detail = format!("initialize refused: {refusal}");
    if state
        .gateway
        .record_anomaly(caller, refusal.code(), detail)
        .await
        .is_err()
    {
        return Err(audit_unavailable());
    }
    Err(refusal_answer(&refusal, id, &state.urls.resource_metadata))
}

/// Why a session cannot be had.
pub(super) fn session_refusal(state: &AppState, refusal: SessionRefusal) -> Refusal {
    match refusal {
        SessionRefusal::PrincipalFull { limit } => Refusal::TooManySessions {
            limit,
            idle_timeout: state.sessions.limits().idle_timeout,
        },
        SessionRefusal::TableFull => {
            tracing::warn!("session table full; refusing new session");
            Refusal::SessionTableFull
        }
    }
}
