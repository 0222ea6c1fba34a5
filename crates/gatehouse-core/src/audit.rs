//! The audit record: one per authentication outcome, per tool-call decision
//! and per tool-call outcome.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A credential was checked (success or failure).
    Authentication,
    /// Gate 2 decided on a tool call.
    ToolDecision,
    /// A permitted tool call finished.
    ToolOutcome,
    /// A user granted or refused a client access (consent, device approval).
    Authorization,
    /// A client was registered or changed (dynamic registration).
    Registration,
    /// Something a well-behaved caller never does: claiming a second task
    /// inside a task grant, a task its role does not allow, a locked-out
    /// credential. Recorded for review and alerting.
    Anomaly,
    /// A task grant was issued or revoked, or an approval was requested,
    /// decided or redeemed.
    Grant,
    /// An upstream server's catalogue: a tool definition was pinned on
    /// first sight, or an operator approved a changed one. (A changed
    /// definition itself is an `Alert`.)
    Upstream,
    /// The credential lifecycle acted on its own: it revoked a credential
    /// (maximum age, unused) or rotated a signing key. (Its warnings, a
    /// credential nearing its maximum age or unused, are `Alert`s.)
    Lifecycle,
    /// An operator changed a credential or a secret from the command line:
    /// an API key or client issued, rotated or revoked, a lock cleared, a
    /// user added, disabled, enabled or given a new password, a tenant
    /// secret stored or deleted. `human` names who ran the command; no
    /// secret is ever in the record.
    Operator,
    /// Something the security team should look at, raised by Gatehouse's
    /// detectors (a burst of failed authentications, repeated policy
    /// violations, a task overrunning, an unused or expiring credential, a
    /// changed tool definition), with a stable code in `reason`. Also in
    /// `gatehouse alerts list`, on /metrics and, when configured, sent to a
    /// webhook.
    Alert,
    /// A server saw another process's audit chain (a command's, or a
    /// `gatehouse stdio` run's) signed up to a record: `arguments` holds
    /// that checkpoint's chain, seq and hash. Such a chain ends with its
    /// process, so without this nothing would show that it existed once
    /// it was deleted whole, checkpoints included.
    Witness,
}

impl AuditKind {
    /// Every kind, in declaration order.
    pub const ALL: [AuditKind; 12] = [
        AuditKind::Authentication,
        AuditKind::ToolDecision,
        AuditKind::ToolOutcome,
        AuditKind::Authorization,
        AuditKind::Registration,
        AuditKind::Anomaly,
        AuditKind::Grant,
        AuditKind::Upstream,
        AuditKind::Lifecycle,
        AuditKind::Operator,
        AuditKind::Alert,
        AuditKind::Witness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Authentication => "authentication",
            AuditKind::ToolDecision => "tool_decision",
            AuditKind::ToolOutcome => "tool_outcome",
            AuditKind::Authorization => "authorization",
            AuditKind::Registration => "registration",
            AuditKind::Anomaly => "anomaly",
            AuditKind::Grant => "grant",
            AuditKind::Upstream => "upstream",
            AuditKind::Lifecycle => "lifecycle",
            AuditKind::Operator => "operator",
            AuditKind::Alert => "alert",
            AuditKind::Witness => "witness",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authentication" => Some(AuditKind::Authentication),
            "tool_decision" => Some(AuditKind::ToolDecision),
            "tool_outcome" => Some(AuditKind::ToolOutcome),
            "authorization" => Some(AuditKind::Authorization),
            "registration" => Some(AuditKind::Registration),
            "anomaly" => Some(AuditKind::Anomaly),
            "grant" => Some(AuditKind::Grant),
            "upstream" => Some(AuditKind::Upstream),
            "lifecycle" => Some(AuditKind::Lifecycle),
            "operator" => Some(AuditKind::Operator),
            "alert" => Some(AuditKind::Alert),
            "witness" => Some(AuditKind::Witness),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Authentication succeeded, or the tool call was permitted / completed.
    Success,
    /// Authentication failed.
    Failure,
    /// Gate 2 refused the call.
    Denied,
    /// The permitted tool ran and reported an error.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            "error" => Some(Outcome::Error),
            _ => None,
        }
    }
}

/// One audit record. Arguments are stored already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Time-ordered unique id (UUID v7).
    pub id: String,
    pub ts: Timestamp,
    pub kind: AuditKind,
    pub tenant: Option<String>,
    pub human: Option<String>,
    pub agent: Option<String>,
    /// Public id of the credential (never the secret).
    pub credential: Option<String>,
    /// The external identity provider (`[[issuers]]`) whose token named
    /// the human and the agent; absent for Gatehouse's own users, keys and
    /// clients. Its `alice` is not the local user `alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub session: Option<String>,
    /// Where the request came from: a peer address, or `stdio`.
    pub source: Option<String>,
    pub tool: Option<String>,
    pub arguments: Option<serde_json::Value>,
    /// Hex SHA-256 of the canonical JSON of the exact arguments (before
    /// redaction), the value an operation token is bound to: set on the
    /// records of calls that need approval, so an investigator can prove
    /// which arguments were approved and ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// The approval (`apr_…`) a record is about: the refusal that filed it,
    /// the human's decision on it, and the call its operation token ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// `allow` or `deny` for decisions.
    pub decision: Option<String>,
    /// A stable machine-readable reason code (`missing_credential`, `role_not_allowed`, …).
    pub reason: Option<String>,
    pub outcome: Outcome,
    /// Human-readable error text; never contains a secret.
    pub error: Option<String>,
    pub latency_us: Option<u64>,
    pub result_bytes: Option<u64>,
    /// The HTTP request the record belongs to: the id its log lines and its
    /// `X-Request-Id` response header show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Where the record sits in its instance's hash chain; set by the audit
    /// writer as it writes the record (`None` for records written before
    /// the chain existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<ChainLink>,
}

/// What a NUL character in a record is written as: U+2400, the visible
/// symbol for it.
pub const NUL_SHOWN_AS: char = '\u{2400}';

/// The longest text a record keeps of any one field (a tool name, a user
/// name, an error; arguments have their own bound, in the audit crate's
/// redactor). Callers choose much of what a record holds: a user name
/// typed at the login page, a grant type or client id at the token
/// endpoint, a tool name were stored whole, so a request of a megabyte
/// (the body limit) made a record of two.
pub const MAX_RECORDED_TEXT_BYTES: usize = 4 * 1024;

/// `text`, cut at `max` bytes (on a character boundary) with what was
/// left out said; unchanged when it fits.
pub fn cut_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let left_out = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("… [{left_out} more bytes not recorded]"));
}

impl AuditEvent {
    /// Makes the record storable by every sink, the same in each:
    /// - every NUL character (U+0000) in its texts and arguments (keys and
    ///   strings) becomes [`NUL_SHOWN_AS`]: PostgreSQL can store no NUL in
    ///   a text or JSON column, and one such record failed the whole batch
    ///   it was written in, and with it other callers' records and calls;
    /// - every text field is cut at [`MAX_RECORDED_TEXT_BYTES`].
    ///
    /// The audit log applies this to every record as it is recorded, before
    /// its observers, the chain and the sinks see it, so
    /// every sink holds the same text and the chain still verifies.
    pub fn make_storable(&mut self) {
        replace_nul(&mut self.id);
        cut_text(&mut self.id, MAX_RECORDED_TEXT_BYTES);
        for text in [
            &mut self.tenant,
            &mut self.human,
            &mut self.agent,
            &mut self.credential,
            &mut self.issuer,
            &mut self.session,
            &mut self.source,
            &mut self.tool,
            &mut self.args_sha256,
            &mut self.approval,
            &mut self.decision,
            &mut self.reason,
            &mut self.error,
            &mut self.request_id,
        ]
        .into_iter()
        .flatten()
        {
            replace_nul(text);
            cut_text(text, MAX_RECORDED_TEXT_BYTES);
        }
        if let Some(arguments) = &mut self.arguments {
            replace_nul_in_value(arguments);
        }
    }
}

fn replace_nul(text: &mut String) {
    if text.contains('\0') {
        *text = text.replace('\0', &NUL_SHOWN_AS.to_string());
    }
}

fn replace_nul_in_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(text) => replace_nul(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(replace_nul_in_value),
        serde_json::Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (mut key, mut item) in entries {
                    replace_nul(&mut key);
                    replace_nul_in_value(&mut item);
                    map.insert(key, item);
                }
            } else {
                map.values_mut().for_each(replace_nul_in_value);
            }
        }
        _ => {}
    }
}

/// A record's place in the hash chain of the instance that wrote it: each
/// record carries the hash of the one before, so an edited, deleted,
/// reordered or inserted record breaks the chain (`gatehouse audit verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// The chain (one per instance, named by a random id kept in its data
    /// directory).
    pub chain: String,
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// Hex SHA-256 of the record before (64 zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record: chain, seq, prev_hash and the record's
    /// other fields (see `gatehouse_audit::chain`).
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(kind));
        }
        let names: std::collections::HashSet<_> =
            AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), AuditKind::ALL.len());
    }

    #[test]
    fn every_text_field_is_cut_at_the_bound() {
        let long = "é".repeat(MAX_RECORDED_TEXT_BYTES);
        let mut event = AuditEvent {
            id: "id".into(),
            ts: crate::Timestamp(1),
            kind: AuditKind::Authentication,
            tenant: None,
            human: Some(long.clone()),
            agent: Some(long.clone()),
            credential: None,
            issuer: None,
            session: None,
            source: None,
            tool: Some("short".into()),
            arguments: None,
            args_sha256: None,
            approval: None,
            decision: None,
            reason: None,
            outcome: Outcome::Failure,
            error: Some(long.clone()),
            latency_us: None,
            result_bytes: None,
            request_id: None,
            link: None,
        };
        event.make_storable();
        for text in [&event.human, &event.agent, &event.error] {
            let text = text.as_deref().unwrap();
            assert!(text.len() < MAX_RECORDED_TEXT_BYTES + 64, "{}", text.len());
            assert!(
                text.ends_with(&format!(
                    "… [{} more bytes not recorded]",
                    long.len() - MAX_RECORDED_TEXT_BYTES
                )),
                "{}",
                &text[text.len() - 50..]
            );
        }
        assert_eq!(event.tool.as_deref(), Some("short"));
    }

    #[test]
    fn nul_characters_are_replaced_everywhere_callers_reach() {
        let mut event = AuditEvent {
            id: "id".into(),
            ts: crate::Timestamp(1),
            kind: AuditKind::ToolDecision,
            tenant: None,
            human: Some("a\0b".into()),
            agent: Some("agent".into()),
            credential: None,
            issuer: None,
            session: Some("s\0".into()),
            source: None,
            tool: Some("x\0".into()),
            arguments: Some(serde_json::json!({"k\0": ["v\0", {"n": "\0"}], "plain": 1})),
            args_sha256: None,
            approval: None,
            decision: Some("deny".into()),
            reason: None,
            outcome: Outcome::Denied,
            error: Some("unknown tool x\0".into()),
            latency_us: None,
            result_bytes: None,
            request_id: None,
            link: None,
        };
        event.make_storable();
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("\\u0000"), "{text}");
        assert_eq!(event.human.as_deref(), Some("a\u{2400}b"));
        assert_eq!(event.tool.as_deref(), Some("x\u{2400}"));
        assert_eq!(
            event.arguments.unwrap(),
            serde_json::json!({"k\u{2400}": ["v\u{2400}", {"n": "\u{2400}"}], "plain": 1})
        );
    }
}
