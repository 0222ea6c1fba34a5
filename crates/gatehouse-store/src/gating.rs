//! Storage for gate 2's state: task grants (session-scoped allowlists),
//! approvals with their operation tokens, and lockouts after repeated
//! authentication failures.
//!
//! Deciding an approval and redeeming its operation token are each one
//! conditional SQL statement, so two concurrent attempts cannot both
//! succeed, on SQLite and on PostgreSQL alike.

use std::collections::BTreeMap;

use async_trait::async_trait;
use gatehouse_core::Timestamp;

use crate::{StoreError, StoreResult};

/// A task grant: the allowlist (role ∩ task) an agent received for one
/// declared task, bound to the principal that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskGrantRecord {
    /// `tg_…`; also the `jti` of the task token issued for it, so revoking
    /// the grant puts it on the revocation list every instance reads.
    pub id: String,
    pub tenant: String,
    pub human: Option<String>,
    pub agent: String,
    /// The credential the grant was derived from (`api_key`, `access_token`).
    pub credential_kind: String,
    pub credential_id: String,
    pub task: String,
    /// The tools of the grant, fixed for its lifetime.
    pub tools: Vec<String>,
    /// The MCP session the grant is bound to, when declared at `initialize`.
    pub session_id: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl TaskGrantRecord {
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Waiting for a human.
    Pending,
    /// A human approved it; its operation token may be redeemed once.
    Approved,
    Denied,
    /// The operation token was used.
    Redeemed,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::Redeemed => "redeemed",
        }
    }

    pub fn parse(text: &str) -> Option<ApprovalStatus> {
        match text {
            "pending" => Some(ApprovalStatus::Pending),
            "approved" => Some(ApprovalStatus::Approved),
            "denied" => Some(ApprovalStatus::Denied),
            "redeemed" => Some(ApprovalStatus::Redeemed),
            _ => None,
        }
    }
}

/// One call asking for approval, as a pending approval for it is found.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalCall<'a> {
    pub tenant: &'a str,
    pub agent: &'a str,
    pub credential_id: &'a str,
    pub task_grant: Option<&'a str>,
    pub tool: &'a str,
    pub arguments_hash: &'a str,
}

/// Whose pending approvals are counted: a person's (with the issuer that
/// named them, if any), whatever agent or credential asked; else, with no
/// person, one agent's (an API key, an OAuth client), whatever credential
/// (each access token is one) it asked with.
#[derive(Debug, Clone, Copy)]
pub enum ApprovalRequester<'a> {
    Human {
        name: &'a str,
        issuer: Option<&'a str>,
    },
    Agent {
        id: &'a str,
        /// The external issuer that vouched for it, if any: another
        /// issuer's client of the same name is another agent.
        issuer: Option<&'a str>,
    },
}

/// A request for a human to approve one call of a tool that needs an
/// operation token, and (once approved) that token's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// `apr_…`, shown to the agent and in the approval URL.
    pub id: String,
    pub tenant: String,
    /// The human the caller acts for; the only non-admin who may decide.
    pub human: Option<String>,
    /// The external issuer (`[[issuers]]`) that named `human`, if any: such
    /// a human is not the local user of the same name.
    pub human_issuer: Option<String>,
    pub agent: String,
    pub credential_id: String,
    /// The task grant the call was made under, if any.
    pub task_grant: Option<String>,
    pub task: Option<String>,
    pub tool: String,
    /// Hex SHA-256 of the canonical JSON arguments.
    pub arguments_hash: String,
    /// The arguments as the approver sees them (JSON): exactly as called,
    /// except the fields the policy marks `redact`, whose values read
    /// `[REDACTED]` and are not stored (see `masked_fields`).
    pub arguments: String,
    /// The masked fields: name → hex SHA-256 of the canonical JSON of its
    /// value, so an approver who knows the value can check it.
    pub masked_fields: BTreeMap<String, String>,
    pub status: ApprovalStatus,
    pub created_at: Timestamp,
    /// A pending approval expires at this time.
    pub expires_at: Timestamp,
    pub decided_by: Option<String>,
    pub decided_at: Option<Timestamp>,
    /// Keyed hash of the operation token, set on approval.
    pub token_hash: Option<String>,
    pub token_expires_at: Option<Timestamp>,
    pub redeemed_at: Option<Timestamp>,
}

/// `approvals.masked_fields` as stored: a JSON object of hex hashes.
pub(crate) fn masked_fields_json(fields: &BTreeMap<String, String>) -> StoreResult<String> {
    serde_json::to_string(fields).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn masked_fields_from_json(text: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("approvals.masked_fields: {e}")))
}

impl ApprovalRecord {
    /// The state as people see it: a pending approval past its deadline,
    /// or an approved one whose token ran out, reads `expired`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        match self.status {
            ApprovalStatus::Pending if now >= self.expires_at => "expired",
            ApprovalStatus::Approved if self.token_expires_at.is_none_or(|t| now >= t) => "expired",
            other => other.as_str(),
        }
    }
}

/// A human's decision on a pending approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalDecision {
    Approve {
        token_hash: String,
        token_expires_at: Timestamp,
    },
    Deny,
}

/// Everything an operation token is bound to; redemption succeeds only
/// when every field matches the approved record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationBinding {
    pub token_hash: String,
    pub tenant: String,
    pub agent: String,
    pub credential_id: String,
    pub task_grant: Option<String>,
    pub tool: String,
    pub arguments_hash: String,
}

/// A lock after repeated authentication failures, for one subject
/// (`key:<id>` for a credential, `source:<address>` for a source address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLock {
    pub subject: String,
    pub failures: u32,
    pub locked_until: Timestamp,
}

/// A user's account as a decision made by them saw it (their browser
/// session's user, read when the decision was posted).
#[derive(Clone, PartialEq, Eq)]
pub struct AccountSeen {
    pub password_hash: String,
    pub roles: Vec<String>,
}

impl std::fmt::Debug for AccountSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSeen")
            .field("password_hash", &"[redacted]")
            .field("roles", &self.roles)
            .finish()
    }
}

#[async_trait]
pub trait GatingStore: Send + Sync {
    // --- Task grants ------------------------------------------------------
    async fn insert_task_grant(&self, grant: &TaskGrantRecord) -> StoreResult<()>;
    async fn task_grant(&self, id: &str) -> StoreResult<Option<TaskGrantRecord>>;
    /// Unexpired, unrevoked grants, newest first; all tenants when `None`.
    async fn list_task_grants(
        &self,
        tenant: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<TaskGrantRecord>>;
    /// Revokes the grant and, in the same transaction, puts its id on the
    /// token revocation list (until the grant's expiry) and moves the
    /// credential generation. Returns false when unknown or already revoked.
    async fn revoke_task_grant(&self, id: &str, now: Timestamp) -> StoreResult<bool>;

    // --- Approvals and operation tokens -----------------------------------
    async fn insert_approval(&self, approval: &ApprovalRecord) -> StoreResult<()>;
    async fn approval(&self, id: &str) -> StoreResult<Option<ApprovalRecord>>;
    /// Newest first; all tenants when `None`; only pending, unexpired ones
    /// when `pending_only`.
    async fn list_approvals(
        &self,
        tenant: Option<&str>,
        pending_only: bool,
        now: Timestamp,
    ) -> StoreResult<Vec<ApprovalRecord>>;
    /// The newest approval pending at `now` for exactly this call.
    async fn pending_approval_for(
        &self,
        call: &ApprovalCall<'_>,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>>;
    /// How many approvals are pending at `now` in `tenant` for `requester`.
    async fn count_pending_approvals(
        &self,
        tenant: &str,
        requester: &ApprovalRequester<'_>,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// Decides a pending, unexpired approval (one conditional update) and
    /// returns it as decided; `None` when it was not pending any more, or
    /// when the deciding user (`account`, for a user named `decided_by`)
    /// no longer has the password hash and roles the decision saw, or was
    /// disabled meanwhile: a `users passwd` or `users disable` that commits
    /// while the decision is made ends its operation token too.
    async fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
        decided_by: &str,
        account: Option<&AccountSeen>,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>>;
    /// Marks the approval whose token and binding match, approved and
    /// unexpired, as redeemed (one conditional update) and returns it.
    /// `None` for every other case; nothing changes then.
    async fn redeem_operation_token(
        &self,
        binding: &OperationBinding,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>>;
    /// The approval a token was issued for, whatever its state: to say why
    /// a redemption failed.
    async fn approval_by_token(&self, token_hash: &str) -> StoreResult<Option<ApprovalRecord>>;

    // --- Authentication lockouts ------------------------------------------
    /// Counts a failure for the subject and returns the count; failures
    /// older than `window_ms` are forgotten first.
    async fn record_auth_failure(
        &self,
        subject: &str,
        now: Timestamp,
        window_ms: i64,
    ) -> StoreResult<u32>;
    async fn lock_auth(&self, subject: &str, until: Timestamp) -> StoreResult<()>;
    /// Locks still in force at `now`.
    async fn auth_locks(&self, now: Timestamp) -> StoreResult<Vec<AuthLock>>;
    /// Forgets failures and lock of the subject and of its per-source forms
    /// (`<subject>@<source>`: a key id's locks from each address); false
    /// when there were none.
    async fn clear_auth_lock(&self, subject: &str) -> StoreResult<bool>;
}
