//! Operator actions in the audit trail. What `gatehouse keys`, `clients`,
//! `users` and `secrets` change (a credential issued, rotated, revoked or
//! unlocked, a user added, disabled or given a new password, a tenant
//! secret stored or deleted) is as much a security event as a refused
//! call: a SIEM must be able to see who made the admin key. Each is one
//! record of kind `operator`, written after the change (and after a new
//! key, secret or password is shown, so a failing sink cannot lose it);
//! a command whose record cannot be written fails. It names the command's
//! user, never a secret.

use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_audit::{AuditLog, EventBuilder};
use gatehouse_core::{AuditEvent, AuditKind, Outcome, Timestamp};
use gatehouse_store::Store;

use crate::context::Context;

/// The `agent` of an operator record: the command line...
pub const CLI_AGENT: &str = "gatehouse-cli";
/// ...or the server's first start (its admin key and user).
pub const FIRST_START_AGENT: &str = "gatehouse-first-start";

/// Who runs the command, as audit records and approvals name them:
/// `operator:<account>`, the system account of the process's real user id.
/// `$USER` is whatever the shell was given (`USER=alice gatehouse keys
/// revoke …` would put the change on alice), so it only annotates the
/// account when it names another one: `operator:root (USER=alice)`. So
/// does `SUDO_USER`, which is just as easy to set (`operator:root
/// (SUDO_USER=alice)`). An id `/etc/passwd` does not name (a container's
/// bare uid, an LDAP account): `operator:uid-1000`. Off Linux, where the
/// id is not read, `$USER` is all there is.
pub fn operator_name() -> String {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    describe_operator(
        os_account().as_deref(),
        env("USER").as_deref(),
        env("SUDO_USER").as_deref(),
    )
}

fn describe_operator(account: Option<&str>, user: Option<&str>, sudo_user: Option<&str>) -> String {
    let Some(account) = account else {
        // No way to know the account: the claim is all there is.
        return format!("operator:{}", user.unwrap_or("operator"));
    };
    match (sudo_user, user) {
        (Some(by), _) if by != account => format!("operator:{account} (SUDO_USER={by})"),
        (_, Some(claimed)) if claimed != account => format!("operator:{account} (USER={claimed})"),
        _ => format!("operator:{account}"),
    }
}

/// The name `/etc/passwd` gives the real user id, or `uid-N`.
#[cfg(target_os = "linux")]
fn os_account() -> Option<String> {
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?;
        (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
    });
    Some(name.unwrap_or_else(|| format!("uid-{uid}")))
}

#[cfg(not(target_os = "linux"))]
fn os_account() -> Option<String> {
    None
}

/// One change an operator made.
pub struct OperatorAction {
    /// The command, as `tool` in the record: `keys/revoke`, `users/add`, ...
    pub command: &'static str,
    /// A stable code for what happened (`api_key_revoked`, ...).
    pub reason: &'static str,
    /// The credential (key id, client id, username, secret name) acted on.
    pub subject: String,
    pub tenant: Option<String>,
    /// What changed, for a person reading the record (never a secret).
    pub detail: String,
}

impl OperatorAction {
    /// The audit record, as `who` made the change through `agent` at `now`.
    pub fn event(&self, who: &str, agent: &str, now: Timestamp) -> AuditEvent {
        let verb = self
            .command
            .rsplit_once('/')
            .map_or(self.command, |(_, verb)| verb);
        let mut event = EventBuilder::new(AuditKind::Operator, Outcome::Success, now)
            .agent(agent)
            .human(who)
            .credential(Some(self.subject.clone()))
            .tool(self.command)
            .decision(verb)
            .reason(self.reason)
            .error(self.detail.clone());
        if let Some(tenant) = &self.tenant {
            event = event.tenant(tenant);
        }
        event.build()
    }

    /// Writes the record to a starting server's audit log (a credential
    /// made on the first start). A failure is logged, not returned: the
    /// server starts anyway (and refuses calls while its audit sink is
    /// down), so the credential it prints is not lost.
    pub async fn record_in(&self, audit: &AuditLog, now: Timestamp) {
        if let Err(e) = audit
            .record(self.event(&operator_name(), FIRST_START_AGENT, now))
            .await
        {
            tracing::error!(error = %e, "{}", self.unrecorded());
        }
    }

    /// Writes the record from a command, through the command's own audit
    /// log (the database, the JSON-lines file and syslog when configured),
    /// and waits until it is written and its chain signed.
    pub async fn record(
        &self,
        ctx: &Context,
        store: &Arc<dyn Store>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        record_all(ctx, store, std::slice::from_ref(self), now).await
    }

    fn unrecorded(&self) -> String {
        format!(
            "{} {} was done, but its audit record could not be written",
            self.command, self.subject
        )
    }
}

/// Writes the records of one command's changes, in order, in one chain;
/// stops at the first that cannot be written.
pub async fn record_all(
    ctx: &Context,
    store: &Arc<dyn Store>,
    actions: &[OperatorAction],
    now: Timestamp,
) -> anyhow::Result<()> {
    let unrecorded = || {
        actions
            .first()
            .map(OperatorAction::unrecorded)
            .unwrap_or_default()
    };
    let (audit, writer) = ctx
        .command_audit_log(Arc::clone(store))
        .with_context(unrecorded)?;
    let who = operator_name();
    let mut written = Ok(());
    for action in actions {
        written = audit
            .record(action.event(&who, CLI_AGENT, now))
            .await
            .with_context(|| action.unrecorded());
        if written.is_err() {
            break;
        }
    }
    ctx.close_command_audit_log(store, audit, writer).await;
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_named_and_a_different_claim_only_annotates_it() {
        assert_eq!(
            describe_operator(Some("alice"), Some("alice"), None),
            "operator:alice"
        );
        assert_eq!(
            describe_operator(Some("alice"), None, None),
            "operator:alice"
        );
        assert_eq!(
            describe_operator(Some("mallory"), Some("alice"), None),
            "operator:mallory (USER=alice)"
        );
        assert_eq!(
            describe_operator(Some("root"), Some("root"), Some("alice")),
            "operator:root (SUDO_USER=alice)"
        );
        assert_eq!(
            describe_operator(Some("uid-1000"), None, None),
            "operator:uid-1000"
        );
        assert_eq!(
            describe_operator(None, Some("alice"), None),
            "operator:alice"
        );
        assert_eq!(describe_operator(None, None, None), "operator:operator");
    }

    #[test]
    fn the_record_names_the_command_the_operator_and_the_subject() {
        let action = OperatorAction {
            command: "keys/revoke",
            reason: "api_key_revoked",
            subject: "7hq2c0k1m3xv".into(),
            tenant: Some("acme".into()),
            detail: "API key 7hq2c0k1m3xv revoked".into(),
        };
        let event = action.event("operator:alice", CLI_AGENT, Timestamp(1_000));
        assert_eq!(event.kind, AuditKind::Operator);
        assert_eq!(event.outcome, Outcome::Success);
        assert_eq!(event.agent.as_deref(), Some(CLI_AGENT));
        assert_eq!(event.human.as_deref(), Some("operator:alice"));
        assert_eq!(event.tool.as_deref(), Some("keys/revoke"));
        assert_eq!(event.decision.as_deref(), Some("revoke"));
        assert_eq!(event.reason.as_deref(), Some("api_key_revoked"));
        assert_eq!(event.credential.as_deref(), Some("7hq2c0k1m3xv"));
        assert_eq!(event.tenant.as_deref(), Some("acme"));
    }
}
