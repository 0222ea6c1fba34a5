//! One alert, before it is raised.

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditEvent, AuditKind, Outcome, Timestamp};

use crate::AlertCode;

/// What an alert says: its code, what it is about (`subject`, e.g.
/// `credential gk_…`, `source 203.0.113.7`, `grant tg_…`), what happened
/// (`detail`, for people), and whatever of the caller is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub code: AlertCode,
    pub subject: String,
    pub detail: String,
    pub tenant: Option<String>,
    pub human: Option<String>,
    pub agent: Option<String>,
    pub credential: Option<String>,
    pub session: Option<String>,
    pub source: Option<String>,
    /// The tool it concerns (a changed definition), or the lifecycle's
    /// `lifecycle/<kind>`.
    pub tool: Option<String>,
}

impl Alert {
    pub fn new(code: AlertCode, subject: impl Into<String>, detail: impl Into<String>) -> Alert {
        Alert {
            code,
            subject: subject.into(),
            detail: detail.into(),
            tenant: None,
            human: None,
            agent: None,
            credential: None,
            session: None,
            source: None,
            tool: None,
        }
    }

    /// The audit record: kind `alert`, the code as `reason`, subject and
    /// detail as `error` (the record's text field).
    pub fn event(&self, now: Timestamp) -> AuditEvent {
        let mut event = EventBuilder::new(AuditKind::Alert, Outcome::Failure, now)
            .decision("alert")
            .reason(self.code.as_str())
            .credential(self.credential.clone())
            .session(self.session.clone())
            .source(self.source.clone())
            .error(format!("{}: {}", self.subject, self.detail));
        if let Some(tenant) = &self.tenant {
            event = event.tenant(tenant);
        }
        if let Some(human) = &self.human {
            event = event.human(human);
        }
        if let Some(agent) = &self.agent {
            event = event.agent(agent);
        }
        if let Some(tool) = &self.tool {
            event = event.tool(tool);
        }
        event.build()
    }
}
