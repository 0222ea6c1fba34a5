use gatehouse_core::{AuditEvent, AuditKind, Outcome, Principal, Timestamp};
use serde_json::Value;

/// Builds an `AuditEvent` step by step, so call sites name only what they know.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: AuditEvent,
}

fn time_ordered_id(ts: Timestamp) -> String {
    let millis = u64::try_from(ts.as_millis()).unwrap_or(0);
    let uuid_ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        millis / 1000,
        u32::try_from((millis % 1000) * 1_000_000).unwrap_or(0),
    );
    uuid::Uuid::new_v7(uuid_ts).to_string()
}

impl EventBuilder {
    pub fn new(kind: AuditKind, outcome: Outcome, ts: Timestamp) -> Self {
        EventBuilder {
            event: AuditEvent {
                id: time_ordered_id(ts),
                ts,
                kind,
                tenant: None,
                human: None,
                agent: None,
                credential: None,
                issuer: None,
                session: None,
                source: None,
                tool: None,
                arguments: None,
                args_sha256: None,
                approval: None,
                decision: None,
                reason: None,
                outcome,
                error: None,
                latency_us: None,
                result_bytes: None,
                request_id: crate::current_request_id().map(|id| id.to_string()),
                link: None,
            },
        }
    }

    pub fn principal(mut self, principal: &Principal) -> Self {
        self.event.tenant = Some(principal.tenant.clone());
        self.event.human = principal.human.clone();
        self.event.agent = Some(principal.agent.clone());
        self.event.credential = Some(principal.credential.id.clone());
        self.event.issuer = principal.issuer.clone();
        self
    }

    /// The calling client, when there is no full principal (e.g. at the
    /// token endpoint).
    pub fn agent(mut self, agent: &str) -> Self {
        self.event.agent = Some(agent.to_string());
        self
    }

    /// The human a request acts for, when known without a full principal
    /// (a login, a consent, a token issued from a user's grant).
    pub fn human(mut self, human: &str) -> Self {
        self.event.human = Some(human.to_string());
        self
    }

    /// The tenant, when known without a full principal.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.event.tenant = Some(tenant.to_string());
        self
    }

    /// The public id of a credential that failed to authenticate.
    pub fn credential(mut self, id: Option<String>) -> Self {
        self.event.credential = id;
        self
    }

    pub fn session(mut self, session: Option<String>) -> Self {
        self.event.session = session;
        self
    }

    pub fn source(mut self, source: Option<String>) -> Self {
        self.event.source = source;
        self
    }

    pub fn tool(mut self, tool: &str) -> Self {
        self.event.tool = Some(tool.to_string());
        self
    }

    /// Arguments must already be redacted.
    pub fn arguments(mut self, redacted: Value) -> Self {
        self.event.arguments = Some(redacted);
        self
    }

    /// The SHA-256 of the canonical exact arguments (see `AuditEvent`).
    pub fn args_sha256(mut self, hash: Option<String>) -> Self {
        self.event.args_sha256 = hash;
        self
    }

    /// The approval the record is about (see `AuditEvent`).
    pub fn approval(mut self, id: &str) -> Self {
        self.event.approval = Some(id.to_string());
        self
    }

    pub fn decision(mut self, decision: &str) -> Self {
        self.event.decision = Some(decision.to_string());
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.event.reason = Some(reason.to_string());
        self
    }

    pub fn error(mut self, error: String) -> Self {
        self.event.error = Some(error);
        self
    }

    pub fn latency_us(mut self, micros: u64) -> Self {
        self.event.latency_us = Some(micros);
        self
    }

    pub fn result_bytes(mut self, bytes: u64) -> Self {
        self.event.result_bytes = Some(bytes);
        self
    }

    /// The request the record belongs to, when the task making it does
    /// not serve that request itself (see `request_scope`). `None` keeps
    /// the id of the request the task serves.
    pub fn request_id(mut self, id: Option<&str>) -> Self {
        if let Some(id) = id {
            self.event.request_id = Some(id.to_string());
        }
        self
    }

    pub fn build(self) -> AuditEvent {
        self.event
    }
}
