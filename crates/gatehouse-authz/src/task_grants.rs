//! Issuing and revoking task grants: the allowlist (role ∩ task) an agent
//! receives for a declared task, stored so it can be listed and revoked by
//! id on every instance.
//!
//! Both ways in — token exchange at the authorization server and a task
//! declared at MCP `initialize` — go through [`TaskGrants::grant`], so the
//! rules and the audit records are the same.

use std::sync::Arc;

use gatehouse_audit::{AuditError, AuditLog, EventBuilder};
use gatehouse_core::{AuditKind, Outcome, Principal, TaskGrant, Timestamp};
use gatehouse_store::{Store, StoreError, TaskGrantRecord};

use crate::{Policy, TaskRefusal};

/// Prefix of task grant ids.
pub const TASK_GRANT_PREFIX: &str = "tg_";
/// The `params._meta` key of MCP `initialize` that declares a task.
pub const TASK_META: &str = "io.gatehouse/task";

#[derive(Debug, thiserror::Error)]
pub enum TaskGrantError {
    /// The task may not be granted; recorded as an anomaly.
    #[error(transparent)]
    Refused(#[from] TaskRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Where a grant request came from, for the audit record.
#[derive(Debug, Clone, Default)]
pub struct GrantOrigin {
    /// `token_exchange` or `initialize`.
    pub via: &'static str,
    pub source: Option<String>,
    /// The MCP session a declared task binds to.
    pub session: Option<String>,
}

pub struct TaskGrants {
    store: Arc<dyn Store>,
    audit: AuditLog,
}

/// The grant as gate 2 sees it, from its stored record.
pub fn grant_of(record: &TaskGrantRecord) -> TaskGrant {
    TaskGrant {
        id: record.id.clone(),
        task: record.task.clone(),
        tools: record.tools.clone(),
        expires_at: record.expires_at,
        issued_at: Some(record.created_at),
    }
}

fn random_id() -> Result<String, TaskGrantError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| TaskGrantError::Random(e.to_string()))?;
    Ok(format!("{TASK_GRANT_PREFIX}{}", hex::encode(bytes)))
}

impl TaskGrants {
    pub fn new(store: Arc<dyn Store>, audit: AuditLog) -> Self {
        TaskGrants { store, audit }
    }

    /// Grants `task` to `principal`: the allowlist is fixed now, the grant
    /// lives at most the task's maximum (≤ 1 h) and never beyond the
    /// credential it was derived from. A refusal is recorded as an anomaly.
    pub async fn grant(
        &self,
        policy: &Policy,
        principal: &Principal,
        task: &str,
        origin: GrantOrigin,
        now: Timestamp,
    ) -> Result<TaskGrantRecord, TaskGrantError> {
        let tools = match policy.task_allowlist(principal, task) {
            Ok(tools) => tools,
            Err(refusal) => {
                self.audit
                    .record(
                        EventBuilder::new(AuditKind::Anomaly, Outcome::Denied, now)
                            .principal(principal)
                            .session(origin.session.clone())
                            .source(origin.source.clone())
                            .decision("deny")
                            .reason(refusal.code())
                            .error(format!("task grant via {}: {refusal}", origin.via))
                            .build(),
                    )
                    .await?;
                return Err(refusal.into());
            }
        };
        let max_ms = i64::try_from(policy.task_max_duration(task).as_millis()).unwrap_or(i64::MAX);
        let mut expires_at = now.plus_millis(max_ms);
        if let Some(credential_expiry) = principal.expires_at {
            expires_at = expires_at.min(credential_expiry);
        }
        let record = TaskGrantRecord {
            id: random_id()?,
            tenant: principal.tenant.clone(),
            human: principal.human.clone(),
            agent: principal.agent.clone(),
            credential_kind: principal.credential.kind.as_str().to_string(),
            credential_id: principal.credential.id.clone(),
            task: task.to_string(),
            tools,
            session_id: origin.session.clone(),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.store.insert_task_grant(&record).await?;
        self.audit
            .record(
                EventBuilder::new(AuditKind::Grant, Outcome::Success, now)
                    .principal(principal)
                    .session(Some(record.id.clone()))
                    .source(origin.source)
                    .decision("allow")
                    .reason("task_granted")
                    .error(format!(
                        "task {} granted via {} with tools {}",
                        record.task,
                        origin.via,
                        record.tools.join(", ")
                    ))
                    .build(),
            )
            .await?;
        Ok(record)
    }

    /// A live grant (unexpired, unrevoked), for binding a session to it.
    pub async fn live(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<TaskGrantRecord>, StoreError> {
        Ok(self
            .store
            .task_grant(id)
            .await?
            .filter(|grant| grant.is_live(now)))
    }

    /// Revokes a grant; its tokens and sessions stop on the next request,
    /// on every instance (the id goes on the revocation list).
    pub async fn revoke(&self, id: &str, by: &str, now: Timestamp) -> Result<bool, TaskGrantError> {
        let revoked = self.store.revoke_task_grant(id, now).await?;
        if revoked {
            self.audit
                .record(
                    EventBuilder::new(AuditKind::Grant, Outcome::Success, now)
                        .session(Some(id.to_string()))
                        .human(by)
                        .decision("revoke")
                        .reason("task_grant_revoked")
                        .build(),
                )
                .await?;
        }
        Ok(revoked)
    }
}

#[cfg(test)]
#[path = "task_grants_tests.rs"]
mod tests;
