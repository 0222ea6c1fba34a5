//! What gate 1 (authentication) produces: the identity behind a request.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The tenant every principal belongs to when tenants are not configured.
pub const DEFAULT_TENANT: &str = "default";

/// Which kind of credential authenticated the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiKey,
    /// A bearer JWT from the embedded authorization server.
    AccessToken,
    /// A bearer JWT from an external issuer (`[[issuers]]`).
    ExternalToken,
    /// Authentication is switched off (`auth.mode = "none"`): a fixed local principal.
    Anonymous,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::AccessToken => "access_token",
            CredentialKind::ExternalToken => "external_token",
            CredentialKind::Anonymous => "anonymous",
        }
    }
}

/// A reference to the credential that was presented; never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialRef {
    pub kind: CredentialKind,
    /// Public identifier of the credential (an API key id, for example).
    pub id: String,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub tenant: String,
    /// The human who authorized this caller, when one is known.
    pub human: Option<String>,
    /// The client or agent that is calling.
    pub agent: String,
    pub credential: CredentialRef,
    pub roles: Vec<String>,
    /// Scopes that narrow the roles. `None` means the roles alone decide.
    pub scopes: Option<Vec<String>>,
    pub expires_at: Option<Timestamp>,
    /// The task grant the caller works under: it may call only the grant's
    /// tools, whatever its roles allow.
    #[serde(default)]
    pub task: Option<TaskGrant>,
    /// The external issuer (`[[issuers]]`) whose token named this caller:
    /// the same subject at two identity providers is two principals (an
    /// account at a weaker provider must not pass for one at another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// A task grant as gate 2 sees it: an allowlist (role ∩ task) fixed when
/// the grant was made and bound to the principal that asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskGrant {
    /// `tg_…`: the grant's id, revocable with `gatehouse grants revoke`.
    pub id: String,
    /// The task's name in the policy.
    pub task: String,
    pub tools: Vec<String>,
    pub expires_at: Timestamp,
    /// When it was granted, when known: a grant used past its task's
    /// expected duration raises an alert.
    #[serde(default)]
    pub issued_at: Option<Timestamp>,
}

impl TaskGrant {
    pub fn allows(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }
}

impl Principal {
    /// A stable key naming this principal, used to bind sessions to it and
    /// to count its sessions, calls and violations. Fields are separated by
    /// a control character that the names cannot contain (credential and
    /// claim values with one are refused at gate 1).
    pub fn subject_key(&self) -> String {
        let mut key = format!(
            "{}\u{1f}{}\u{1f}{}",
            self.tenant,
            self.human.as_deref().unwrap_or(""),
            self.agent
        );
        if let Some(issuer) = &self.issuer {
            key.push('\u{1f}');
            key.push_str(issuer);
        }
        key
    }

    /// Who owns the sessions this principal starts: the principal, and for
    /// a task token also its task grant. A task token carries its base
    /// credential's person and agent, so without the grant it could use
    /// (resume, cancel, answer, end) its base's sessions and those of its
    /// base's other task tokens, none of which its grant narrows.
    pub fn session_owner_key(&self) -> String {
        let mut key = self.subject_key();
        if let Some(task) = &self.task {
            key.push_str("\u{1f}task\u{1f}");
            key.push_str(&task.id);
        }
        key
    }

    /// Who a per-caller limit counts (rate limits, sessions, `initialize`,
    /// listen streams): the person, across every agent (OAuth client, key)
    /// and task token acting for them; else the principal itself. A person
    /// who registers another client (open to anyone) or mints task tokens
    /// would otherwise get another budget with each. (A task token's person
    /// is Gatehouse's own: external providers' tokens are not exchanged.)
    pub fn limit_key(&self) -> String {
        match &self.human {
            Some(human) => {
                let mut key = format!("{}\u{1f}{human}\u{1f}", self.tenant);
                if let Some(issuer) = &self.issuer {
                    key.push('\u{1f}');
                    key.push_str(issuer);
                }
                key
            }
            None => self.subject_key(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(tenant: &str, human: Option<&str>, agent: &str) -> Principal {
        Principal {
            tenant: tenant.into(),
            human: human.map(Into::into),
            agent: agent.into(),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: agent.into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        }
    }

    /// A person's limits are theirs across agents; an agent without a
    /// person counts on its own; people of two issuers stay apart.
    #[test]
    fn limits_count_the_person_across_agents() {
        let desktop = principal("default", Some("alice"), "ghc_desktop");
        let vscode = principal("default", Some("alice"), "ghc_vscode");
        assert_eq!(desktop.limit_key(), vscode.limit_key());
        assert_ne!(desktop.subject_key(), vscode.subject_key());
        let bot = principal("default", None, "ghk_bot");
        let other_bot = principal("default", None, "ghk_other");
        assert_ne!(bot.limit_key(), other_bot.limit_key());
        let mut elsewhere = desktop.clone();
        elsewhere.issuer = Some("https://weak-idp.example".into());
        assert_ne!(desktop.limit_key(), elsewhere.limit_key());
        let other_tenant = principal("globex", Some("alice"), "ghc_desktop");
        assert_ne!(desktop.limit_key(), other_tenant.limit_key());
    }

    /// The same subject named by two identity providers is two principals.
    #[test]
    fn the_issuer_is_part_of_the_subject() {
        let mut one = principal("default", Some("victim@corp.example"), "vscode");
        let mut two = one.clone();
        one.issuer = Some("https://login.corp.example".into());
        two.issuer = Some("https://weak-idp.example".into());
        assert_ne!(one.subject_key(), two.subject_key());
        // Without an issuer (API keys, Gatehouse's own tokens) as before.
        let three = principal("default", Some("victim@corp.example"), "vscode");
        assert_eq!(
            three.subject_key(),
            "default\u{1f}victim@corp.example\u{1f}vscode"
        );
    }

    /// A task token carries its base's person and agent: its sessions are
    /// its own, and those of another grant of the same base are not.
    #[test]
    fn a_task_tokens_sessions_are_owned_apart_from_its_base() {
        let base = principal("default", Some("alice"), "ghc_desktop");
        let grant = |id: &str| TaskGrant {
            id: id.into(),
            task: "research".into(),
            tools: vec!["whoami".into()],
            expires_at: crate::Timestamp(1),
            issued_at: None,
        };
        let mut one = base.clone();
        one.task = Some(grant("tg_1"));
        let mut two = base.clone();
        two.task = Some(grant("tg_2"));
        assert_eq!(base.subject_key(), one.subject_key());
        assert_ne!(base.session_owner_key(), one.session_owner_key());
        assert_ne!(one.session_owner_key(), two.session_owner_key());
        assert_eq!(base.session_owner_key(), base.subject_key());
        // Their limits are the person's: minting task tokens (or clients)
        // gives no budget of its own.
        assert_eq!(one.limit_key(), base.limit_key());
        assert_eq!(two.limit_key(), base.limit_key());
    }

    #[test]
    fn subject_key_separates_fields_unambiguously() {
        // "a" + "bc" must not collide with "ab" + "c".
        let one = principal("a", Some("bc"), "x");
        let two = principal("ab", Some("c"), "x");
        assert_ne!(one.subject_key(), two.subject_key());
    }
}
