//! Operation tokens: the second gate for tools marked `approval = true`.
//!
//! A call without a token creates (or reuses) a pending approval bound to
//! (tenant, agent, credential, task grant, tool, SHA-256 of the canonical
//! arguments). A human decides it on the approval page or with
//! `gatehouse approvals approve`; approving mints a single-use operation
//! token, valid for minutes, stored only as a keyed hash. The agent retries
//! the same call with the token in `params._meta`; redemption is one
//! conditional update that also compares the binding, so different
//! arguments, another tool, another principal, reuse or expiry all fail.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_audit::{EventBuilder, REDACTED, is_listed_field};
use gatehouse_authn::Pepper;
use gatehouse_core::{AuditEvent, AuditKind, Outcome, Principal, Timestamp};
use gatehouse_store::{
    AccountSeen, ApprovalCall, ApprovalDecision, ApprovalRecord, ApprovalRequester, ApprovalStatus,
    OperationBinding, Store, StoreError,
};
use serde_json::Value;

use gatehouse_policy::canonical_json;

/// Prefix of approval ids.
pub const APPROVAL_PREFIX: &str = "apr_";
/// Prefix of operation tokens.
pub const OPERATION_TOKEN_PREFIX: &str = "gho_";
/// The `params._meta` key an agent puts its operation token under.
pub const OPERATION_TOKEN_META: &str = "io.gatehouse/operation_token";
/// Approvals one requester (a person, else an agent) may have pending
/// in a tenant at once.
pub const MAX_PENDING_PER_REQUESTER: u32 = 32;

/// How long approvals and tokens live.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// A pending approval nobody decided expires after this.
    pub pending_ttl_ms: i64,
    /// An operation token must be redeemed within this (default 5 min).
    pub token_ttl_ms: i64,
    /// Base of approval URLs (`<issuer>/approvals/`), when the approval
    /// page is served.
    pub page_base: Option<String>,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        ApprovalSettings {
            pending_ttl_ms: 15 * 60 * 1000,
            token_ttl_ms: 5 * 60 * 1000,
            page_base: None,
        }
    }
}

/// Who decides an approval.
#[derive(Debug, Clone)]
pub enum Decider {
    /// A human logged in at the authorization server.
    User {
        username: String,
        tenant: String,
        /// Holds an admin role (of the policy) in that tenant.
        admin: bool,
        /// The account as the decision saw it: the decision counts only
        /// while it is still so (see `GatingStore::decide_approval`).
        account: AccountSeen,
    },
    /// Someone with shell access to the server (`gatehouse approvals`).
    Operator { name: String },
}

impl Decider {
    pub fn name(&self) -> &str {
        match self {
            Decider::User { username, .. } => username,
            Decider::Operator { name } => name,
        }
    }

    /// Only the human the call is made for, an admin of the same tenant,
    /// or the operator may decide. A user signed in here is the human of a
    /// call only when no external issuer named that human: an issuer's
    /// subject `alice` is not the local user `alice`.
    pub fn may_decide(&self, approval: &ApprovalRecord) -> bool {
        match self {
            Decider::Operator { .. } => true,
            Decider::User {
                username,
                tenant,
                admin,
                ..
            } => {
                *tenant == approval.tenant
                    && (*admin
                        || approval.human_issuer.is_none()
                            && approval.human.as_deref() == Some(username.as_str()))
            }
        }
    }

    /// Whether this decider may see the approval at all (list, page).
    pub fn may_see(&self, approval: &ApprovalRecord) -> bool {
        self.may_decide(approval)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no such approval")]
    NotFound,
    /// Not the human the call is for, nor an admin of its tenant.
    #[error("you may not decide this approval")]
    Forbidden,
    #[error("the approval was already decided or has expired")]
    NotPending,
    /// The deciding user's password or roles changed, or they were
    /// disabled, while they decided: nothing was decided.
    #[error("your account changed while you decided; sign in again")]
    AccountChanged,
    /// The requester has this many approvals pending already.
    #[error("{max} approvals asked for by this requester are still pending")]
    TooManyPending { max: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no randomness available: {0}")]
    Random(String),
}

/// Why a presented operation token was not accepted. `code()` goes to the
/// client and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    #[error("the operation token is not valid")]
    Invalid,
    #[error("the operation token was already used")]
    Used,
    #[error("the operation token has expired")]
    Expired,
    #[error("the operation token was issued for another call")]
    Mismatch,
}

impl TokenRefusal {
    pub fn code(self) -> &'static str {
        match self {
            TokenRefusal::Invalid => "operation_token_invalid",
            TokenRefusal::Used => "operation_token_used",
            TokenRefusal::Expired => "operation_token_expired",
            TokenRefusal::Mismatch => "operation_token_mismatch",
        }
    }
}

/// The audit record of a human's decision on an approval; `source` says
/// where it was made (the browser's address for the approval page, `cli`
/// for the command line). A decision is a success, so it has no error text.
pub fn decision_event(
    approval: &ApprovalRecord,
    decided_by: &str,
    approve: bool,
    source: Option<String>,
    now: Timestamp,
) -> AuditEvent {
    EventBuilder::new(AuditKind::Grant, Outcome::Success, now)
        .tenant(&approval.tenant)
        .human(decided_by)
        .agent(&approval.agent)
        .credential(Some(approval.credential_id.clone()))
        .session(approval.task_grant.clone())
        .tool(&approval.tool)
        .args_sha256(Some(approval.arguments_hash.clone()))
        .approval(&approval.id)
        .source(source)
        .decision(if approve { "approve" } else { "deny" })
        .reason(if approve {
            "approval_granted"
        } else {
            "approval_denied"
        })
        .build()
}

/// What the arguments hash is keyed with, apart from the pepper's other
/// uses (credential hashes).
const ARGUMENTS_DOMAIN: &str = "gatehouse-arguments\u{1f}";
/// What a masked field's fingerprint is keyed with.
const MASKED_DOMAIN: &str = "gatehouse-masked\u{1f}";

/// A decided approval and, when approved, the operation token (shown once).
pub struct Decided {
    pub approval: ApprovalRecord,
    pub token: Option<String>,
}

impl std::fmt::Debug for Decided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decided")
            .field("approval", &self.approval.id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Locks that requesters' filings are spread over.
const FILING_SHARDS: usize = 64;

pub struct Approvals {
    store: Arc<dyn Store>,
    pepper: Pepper,
    settings: ApprovalSettings,
    /// Held from a requester's count of pending approvals to the insert of
    /// a new one: concurrent requests would otherwise all count below the
    /// cap and all insert. One lock per requester's shard, so that one
    /// requester's burst delays few others; across instances sharing a
    /// database, each keeps the cap on its own.
    filing: Vec<tokio::sync::Mutex<()>>,
}

fn random_text(bytes: usize) -> Result<String, ApprovalError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| ApprovalError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The binding fields of a call, shared by the request and the redemption.
struct CallBinding {
    tenant: String,
    agent: String,
    credential_id: String,
    task_grant: Option<String>,
    arguments_hash: String,
}

impl Approvals {
    /// The hash an operation token is bound to and the audit records of a
    /// call needing approval carry (`args_sha256`): HMAC-SHA256, keyed with
    /// the pepper, of the canonical JSON of the exact arguments. Keyed, so
    /// that a reader of the audit trail, who sees every argument but the
    /// redacted ones, cannot recover a redacted PIN or password by hashing
    /// guesses (a plain SHA-256 let them).
    pub fn arguments_hash(&self, arguments: &Value) -> String {
        self.pepper
            .hash(format!("{ARGUMENTS_DOMAIN}{}", canonical_json(arguments)).as_bytes())
    }

    fn binding_of(&self, principal: &Principal, arguments: &Value) -> CallBinding {
        CallBinding {
            tenant: principal.tenant.clone(),
            agent: principal.agent.clone(),
            credential_id: principal.credential.id.clone(),
            task_grant: principal.task.as_ref().map(|t| t.id.clone()),
            arguments_hash: self.arguments_hash(arguments),
        }
    }

    /// The fingerprint of the masked field `name` of approval `id` with
    /// `value`: what the approval page and `approvals list` show for it.
    pub fn masked_fingerprint(&self, id: &str, name: &str, value: &Value) -> String {
        let keyed = format!(
            "{MASKED_DOMAIN}{id}\u{1f}{name}\u{1f}{}",
            canonical_json(value)
        );
        self.pepper.hash(keyed.as_bytes())
    }

    /// The arguments as the approver of approval `id` sees them, and the
    /// masked ones.
    ///
    /// The approver is entitled to see exactly what the operation token
    /// will run, so nothing is redacted by the audit heuristics here (they
    /// would let an agent hide a random-looking path or recipient). Only
    /// the top-level fields the policy marks `redact` are masked: their
    /// value reads `[REDACTED]`, and the map gives each one's fingerprint,
    /// keyed with the pepper and bound to the approval and the field, so
    /// that two fields or two approvals can be told apart or matched by
    /// someone holding the pepper, and a guessed value cannot be tried
    /// against it by anyone else.
    fn shown_arguments(
        &self,
        id: &str,
        arguments: &Value,
        redact_fields: &[String],
    ) -> (Value, BTreeMap<String, String>) {
        let mut shown = arguments.clone();
        let mut masked = BTreeMap::new();
        if let Value::Object(map) = &mut shown {
            for (name, value) in map.iter_mut() {
                if is_listed_field(name, redact_fields) && !value.is_null() {
                    masked.insert(name.clone(), self.masked_fingerprint(id, name, value));
                    *value = Value::String(REDACTED.into());
                }
            }
        }
        (shown, masked)
    }

    pub fn new(store: Arc<dyn Store>, pepper: Pepper, settings: ApprovalSettings) -> Self {
        Approvals {
            store,
            pepper,
            settings,
            filing: (0..FILING_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The lock a requester's filings take (its shard's).
    async fn filing_lock(
        &self,
        tenant: &str,
        requester: &ApprovalRequester<'_>,
    ) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tenant.hash(&mut hasher);
        match requester {
            ApprovalRequester::Human { name, issuer } => ("human", name, issuer).hash(&mut hasher),
            ApprovalRequester::Agent { id, issuer } => ("agent", id, issuer).hash(&mut hasher),
        }
        let shard = usize::try_from(hasher.finish() % FILING_SHARDS as u64).unwrap_or(0);
        self.filing[shard].lock().await
    }

    /// The page where a human decides this approval, if one is served.
    pub fn url(&self, id: &str) -> Option<String> {
        self.settings
            .page_base
            .as_ref()
            .map(|base| format!("{base}{id}"))
    }

    /// A pending approval for this exact call: an existing one when the
    /// agent asks again for the same call, else a new one. The record
    /// holds the arguments as [`shown_arguments`] gives them for the tool's
    /// `redact_fields`: everything but those is stored as called.
    pub async fn request(
        &self,
        principal: &Principal,
        tool: &str,
        arguments: &Value,
        redact_fields: &[String],
        now: Timestamp,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let call = self.binding_of(principal, arguments);
        let asked = ApprovalCall {
            tenant: &call.tenant,
            agent: &call.agent,
            credential_id: &call.credential_id,
            task_grant: call.task_grant.as_deref(),
            tool,
            arguments_hash: &call.arguments_hash,
        };
        // Each pending approval holds its call's arguments (up to the body
        // limit) and is listed to every approver of the tenant: one
        // requester may not file them without end.
        let requester = match &principal.human {
            Some(name) => ApprovalRequester::Human {
                name,
                issuer: principal.issuer.as_deref(),
            },
            None => ApprovalRequester::Agent {
                id: &call.agent,
                issuer: principal.issuer.as_deref(),
            },
        };
        let _filing = self.filing_lock(&call.tenant, &requester).await;
        if let Some(existing) = self.store.pending_approval_for(&asked, now).await? {
            return Ok(existing);
        }
        let pending = self
            .store
            .count_pending_approvals(&call.tenant, &requester, now)
            .await?;
        if pending >= u64::from(MAX_PENDING_PER_REQUESTER) {
            return Err(ApprovalError::TooManyPending {
                max: MAX_PENDING_PER_REQUESTER,
            });
        }
        let id = format!("{APPROVAL_PREFIX}{}", random_text(16)?);
        let (shown, masked_fields) = self.shown_arguments(&id, arguments, redact_fields);
        let record = ApprovalRecord {
            id,
            tenant: call.tenant,
            human: principal.human.clone(),
            human_issuer: principal.issuer.clone(),
            agent: call.agent,
            credential_id: call.credential_id,
            task_grant: call.task_grant,
            task: principal.task.as_ref().map(|t| t.task.clone()),
            tool: tool.to_string(),
            arguments_hash: call.arguments_hash,
            arguments: canonical_json(&shown),
            masked_fields,
            status: ApprovalStatus::Pending,
            created_at: now,
            expires_at: now.plus_millis(self.settings.pending_ttl_ms),
            decided_by: None,
            decided_at: None,
            token_hash: None,
            token_expires_at: None,
            redeemed_at: None,
        };
        self.store.insert_approval(&record).await?;
        Ok(record)
    }

    /// The approval, if the decider may see it. An approval of another
    /// tenant answers `NotFound`, so its existence is not revealed.
    pub async fn get(&self, id: &str, decider: &Decider) -> Result<ApprovalRecord, ApprovalError> {
        match self.store.approval(id).await? {
            Some(approval) if decider.may_see(&approval) => Ok(approval),
            Some(approval) if matches!(decider, Decider::User { tenant, .. } if *tenant == approval.tenant) => {
                Err(ApprovalError::Forbidden)
            }
            _ => Err(ApprovalError::NotFound),
        }
    }

    /// Pending approvals the decider may decide, newest first.
    pub async fn pending(
        &self,
        decider: &Decider,
        now: Timestamp,
    ) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        let tenant = match decider {
            Decider::User { tenant, .. } => Some(tenant.as_str()),
            Decider::Operator { .. } => None,
        };
        Ok(self
            .store
            .list_approvals(tenant, true, now)
            .await?
            .into_iter()
            .filter(|a| decider.may_see(a))
            .collect())
    }

    /// Every approval (all states) the operator can see, newest first.
    pub async fn all(&self, now: Timestamp) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        Ok(self.store.list_approvals(None, false, now).await?)
    }

    /// Approves or denies. Approving mints the operation token, returned
    /// here once and stored only as a keyed hash.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        decider: &Decider,
        now: Timestamp,
    ) -> Result<Decided, ApprovalError> {
        let approval = self.get(id, decider).await?;
        if !decider.may_decide(&approval) {
            return Err(ApprovalError::Forbidden);
        }
        let (decision, token) = if approve {
            let token = format!("{OPERATION_TOKEN_PREFIX}{}", random_text(32)?);
            let decision = ApprovalDecision::Approve {
                token_hash: self.pepper.hash(token.as_bytes()),
                token_expires_at: now.plus_millis(self.settings.token_ttl_ms),
            };
            (decision, Some(token))
        } else {
            (ApprovalDecision::Deny, None)
        };
        let account = match decider {
            Decider::User { account, .. } => Some(account),
            Decider::Operator { .. } => None,
        };
        let Some(decided) = self
            .store
            .decide_approval(id, &decision, decider.name(), account, now)
            .await?
        else {
            // A user's decision on an approval still pending: their account
            // changed (password, roles, disabled) while they decided.
            if account.is_none() {
                return Err(ApprovalError::NotPending);
            }
            return match self.store.approval(id).await? {
                Some(a) if a.status == ApprovalStatus::Pending && now < a.expires_at => {
                    Err(ApprovalError::AccountChanged)
                }
                _ => Err(ApprovalError::NotPending),
            };
        };
        Ok(Decided {
            approval: decided,
            token,
        })
    }

    /// Redeems `token` for this exact call, once. On refusal nothing
    /// changes, and the reason says why (for the client and the audit log).
    pub async fn redeem(
        &self,
        principal: &Principal,
        tool: &str,
        arguments: &Value,
        token: &str,
        now: Timestamp,
    ) -> Result<Result<ApprovalRecord, TokenRefusal>, StoreError> {
        if !token.starts_with(OPERATION_TOKEN_PREFIX) {
            return Ok(Err(TokenRefusal::Invalid));
        }
        let token_hash = self.pepper.hash(token.as_bytes());
        let call = self.binding_of(principal, arguments);
        let binding = OperationBinding {
            token_hash: token_hash.clone(),
            tenant: call.tenant,
            agent: call.agent,
            credential_id: call.credential_id,
            task_grant: call.task_grant,
            tool: tool.to_string(),
            arguments_hash: call.arguments_hash,
        };
        if let Some(redeemed) = self.store.redeem_operation_token(&binding, now).await? {
            return Ok(Ok(redeemed));
        }
        let refusal = match self.store.approval_by_token(&token_hash).await? {
            None => TokenRefusal::Invalid,
            Some(a) if a.status == ApprovalStatus::Redeemed => TokenRefusal::Used,
            Some(a) if a.token_expires_at.is_none_or(|at| now >= at) => TokenRefusal::Expired,
            // Another tenant's token says nothing more than an unknown one.
            Some(a) if a.tenant != principal.tenant => TokenRefusal::Invalid,
            Some(_) => TokenRefusal::Mismatch,
        };
        Ok(Err(refusal))
    }
}

#[cfg(test)]
#[path = "approvals_tests.rs"]
mod tests;
