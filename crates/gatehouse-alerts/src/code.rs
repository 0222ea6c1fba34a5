//! The stable codes of alerts: in the audit record's `reason`, the alert
//! list, the webhook payload and the `gatehouse_alerts_total` label.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCode {
    /// More failed authentications than allowed within the window, for one
    /// credential, user or source.
    AuthFailureBurst,
    /// Repeated calls outside a task grant's allowlist or refused by role
    /// within one grant or session: the grant (or session) was revoked, or
    /// only reported (`on_incident = "alert"`).
    PolicyIncident,
    /// A task grant still used after its task's expected duration.
    TaskOverrun,
    /// A credential not used for `unused_alert` (lifecycle).
    CredentialUnused,
    /// A credential nearing its maximum age (lifecycle).
    CredentialExpiring,
    /// An upstream changed a pinned tool definition.
    ToolDefinitionChanged,
    /// An upstream offers tools it did not offer in its first catalogue
    /// (served as the policy covers them: a new tool with a poisoned
    /// description is the other way to pull the rug).
    UpstreamToolAdded,
}

impl AlertCode {
    pub const ALL: [AlertCode; 7] = [
        AlertCode::AuthFailureBurst,
        AlertCode::PolicyIncident,
        AlertCode::TaskOverrun,
        AlertCode::CredentialUnused,
        AlertCode::CredentialExpiring,
        AlertCode::ToolDefinitionChanged,
        AlertCode::UpstreamToolAdded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertCode::AuthFailureBurst => "auth_failure_burst",
            AlertCode::PolicyIncident => "policy_incident",
            AlertCode::TaskOverrun => "task_overrun",
            AlertCode::CredentialUnused => "credential_unused",
            AlertCode::CredentialExpiring => "credential_expiring",
            AlertCode::ToolDefinitionChanged => "tool_definition_changed",
            AlertCode::UpstreamToolAdded => "upstream_tool_added",
        }
    }

    pub fn parse(code: &str) -> Option<AlertCode> {
        AlertCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_their_serde_names() {
        for code in AlertCode::ALL {
            assert_eq!(AlertCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::String(code.as_str().into())
            );
        }
        assert_eq!(AlertCode::parse("nope"), None);
    }
}
