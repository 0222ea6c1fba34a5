//! A point-in-time view of one upstream, for status pages and checks.

use serde::Serialize;

use crate::breaker::BreakerState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Starting, or reconnecting after a failure.
    Connecting,
    Ready,
    /// The last attempt failed; the next one is scheduled (with backoff).
    Failing,
    /// `enabled = false`, or stopped.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// [`UpstreamError::code`](crate::UpstreamError::code).
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub name: String,
    pub state: HealthState,
    pub last_error: Option<LastError>,
    /// Connections that ended and were re-established (for stdio: restarts
    /// of the child).
    pub restarts: u64,
    /// What the handshake agreed, e.g. `2026-07-28` or `2025-11-25`.
    pub protocol_version: Option<String>,
    pub breaker: BreakerState,
    pub in_flight: usize,
    /// stdio: the child's process id.
    pub pid: Option<u32>,
}
