//! Every way gate 2 refuses a whole request before the SDK sees it, as one
//! type. Its `code()` is the reason the audit record carries and the client
//! reads in `error.data.reason`; `http/errors.rs` is the one place that
//! turns a refusal into an HTTP answer.

use std::time::Duration;

use gatehouse_authz::{Deny, TaskRefusal};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Tenants are declared and the caller's is not one of them.
    #[error("this credential's tenant is not served here")]
    UnknownTenant,
    /// The session runs under another task grant than the credential's.
    #[error("this session is bound to another task grant")]
    SessionOfAnotherTask,
    #[error("the task grant of this session has expired; start a new session")]
    TaskGrantExpired,
    #[error("the task grant of this session was revoked")]
    TaskGrantRevoked,
    /// A task named after `initialize`, or in a session: an attempt to
    /// switch tasks.
    #[error("a task is declared once, at initialize; to work on another task start a new session")]
    TaskSwitch,
    /// The task declared at `initialize` may not be granted.
    #[error("{0}")]
    Task(TaskRefusal),
    /// The principal holds its most sessions already.
    #[error(
        "this credential already has {limit} open MCP sessions, the most allowed: end one \
         (HTTP DELETE with its Mcp-Session-Id) or let one expire ({} min without requests) \
         before starting another",
        .idle_timeout.as_secs().div_ceil(60)
    )]
    TooManySessions {
        limit: usize,
        idle_timeout: Duration,
    },
    /// Too many `initialize` requests from one principal.
    #[error("too many sessions started with this credential; try again in {retry_after_secs} s")]
    SessionStartsLimited { retry_after_secs: u64 },
    /// The whole session table is full (every principal together).
    #[error("too many sessions")]
    SessionTableFull,
    /// An access token without the scope a tool needs: the client may step
    /// up (MCP authorization: 403 with `insufficient_scope`).
    #[error("{}", .0.message())]
    InsufficientScope(Deny),
}

impl Refusal {
    /// The stable reason code: in the audit record and in the answer.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::SessionOfAnotherTask | Refusal::TaskSwitch => "task_escalation",
            Refusal::TaskGrantExpired => "task_grant_expired",
            Refusal::TaskGrantRevoked => "task_grant_revoked",
            Refusal::Task(refusal) => refusal.code(),
            Refusal::TooManySessions { .. } => "too_many_sessions",
            Refusal::SessionStartsLimited { .. } => "rate_limited",
            Refusal::SessionTableFull => "session_table_full",
            Refusal::InsufficientScope(deny) => deny.reason.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_authz::DenyReason;

    #[test]
    fn codes_are_the_audit_reason_codes() {
        let cases = [
            (Refusal::UnknownTenant, "unknown_tenant"),
            (Refusal::SessionOfAnotherTask, "task_escalation"),
            (Refusal::TaskSwitch, "task_escalation"),
            (Refusal::TaskGrantExpired, "task_grant_expired"),
            (Refusal::TaskGrantRevoked, "task_grant_revoked"),
            (
                Refusal::Task(TaskRefusal::NotAllowed { task: "t".into() }),
                "task_not_allowed",
            ),
            (
                Refusal::TooManySessions {
                    limit: 16,
                    idle_timeout: Duration::from_secs(1800),
                },
                "too_many_sessions",
            ),
            (
                Refusal::SessionStartsLimited {
                    retry_after_secs: 3,
                },
                "rate_limited",
            ),
            (Refusal::SessionTableFull, "session_table_full"),
            (
                Refusal::InsufficientScope(Deny::tool(
                    "write_file",
                    DenyReason::MissingScope {
                        scope: "tools:write".into(),
                    },
                )),
                "insufficient_scope",
            ),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code(), code, "{refusal}");
        }
    }

    #[test]
    fn the_session_cap_says_how_to_get_a_session() {
        let text = Refusal::TooManySessions {
            limit: 16,
            idle_timeout: Duration::from_secs(1800),
        }
        .to_string();
        assert!(text.contains("16 open MCP sessions"), "{text}");
        assert!(text.contains("30 min"), "{text}");
    }
}
