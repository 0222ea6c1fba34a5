//! The detectors' thresholds (`[alerts]` in the configuration).

use std::time::Duration;

/// What happens when a grant or session reaches the violation threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnIncident {
    /// Revoke the task grant (its tokens and sessions stop on every
    /// instance) or end the session, and raise the alert.
    #[default]
    Revoke,
    /// Only raise the alert.
    Alert,
}

impl OnIncident {
    pub fn as_str(self) -> &'static str {
        match self {
            OnIncident::Revoke => "revoke",
            OnIncident::Alert => "alert",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertSettings {
    /// An alert when one credential, user or source fails to authenticate
    /// more than this many times within `auth_failure_window`. 0: off.
    pub auth_failures: u32,
    pub auth_failure_window: Duration,
    /// Calls refused by role or outside a task's allowlist that make an
    /// incident, within one grant, session or (neither) principal. 0: off.
    pub violations: u32,
    /// How long refusals count toward an incident (a grant lives at most an
    /// hour; a session or a principal without either could live longer).
    pub violation_window: Duration,
    pub on_incident: OnIncident,
    /// An alert when a task grant is used after its task's
    /// `expected_duration` (tasks without one are never overrun).
    pub task_overrun: bool,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            auth_failures: 3,
            auth_failure_window: Duration::from_secs(60),
            violations: 5,
            violation_window: Duration::from_secs(60 * 60),
            on_incident: OnIncident::Revoke,
            task_overrun: true,
        }
    }
}
