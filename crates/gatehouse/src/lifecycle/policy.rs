//! The lifecycle policy in force, resolved from `[lifecycle]`: thresholds
//! in milliseconds per credential kind and tenant.

use std::collections::BTreeMap;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The kinds of credential the lifecycle watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CredentialKind {
    ApiKey,
    /// An OAuth client that authenticates with a secret we issued.
    ClientSecret,
    /// A user's grant: the family of tokens issued from one authorization.
    Grant,
    /// A token-signing key of the embedded authorization server.
    SigningKey,
}

impl CredentialKind {
    /// The stable name in audit records, notices and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::ClientSecret => "client_secret",
            CredentialKind::Grant => "grant",
            CredentialKind::SigningKey => "signing_key",
        }
    }

    /// Its section under `[lifecycle]`.
    pub fn section(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_keys",
            CredentialKind::ClientSecret => "client_secrets",
            CredentialKind::Grant => "grants",
            CredentialKind::SigningKey => "signing_keys",
        }
    }
}

/// One kind's thresholds for one tenant, in milliseconds. `None`: off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub max_age: Option<i64>,
    pub warn_before: i64,
    pub rotation_overlap: i64,
    pub unused_alert: Option<i64>,
    pub unused_revoke: Option<i64>,
}

impl Thresholds {
    /// The built-in defaults: maximum age 90 days with a warning 14 days
    /// before it, a 24-hour rotation overlap, an alert after 15 days
    /// without use and revocation after 30 (signing keys are in use by
    /// definition, so they have no unused rules).
    pub fn defaults(kind: CredentialKind) -> Thresholds {
        let unused = kind != CredentialKind::SigningKey;
        Thresholds {
            max_age: Some(90 * DAY_MS),
            warn_before: 14 * DAY_MS,
            rotation_overlap: DAY_MS,
            unused_alert: unused.then_some(15 * DAY_MS),
            unused_revoke: unused.then_some(30 * DAY_MS),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecyclePolicy {
    pub api_keys: Thresholds,
    pub client_secrets: Thresholds,
    pub grants: Thresholds,
    pub signing_keys: Thresholds,
    /// Per tenant: API keys, client secrets and grants, in that order.
    pub tenants: BTreeMap<String, [Thresholds; 3]>,
}

impl LifecyclePolicy {
    /// The thresholds for a credential of `kind` belonging to `tenant`.
    pub fn thresholds(&self, kind: CredentialKind, tenant: &str) -> Thresholds {
        let own = self.tenants.get(tenant);
        match kind {
            CredentialKind::ApiKey => own.map_or(self.api_keys, |t| t[0]),
            CredentialKind::ClientSecret => own.map_or(self.client_secrets, |t| t[1]),
            CredentialKind::Grant => own.map_or(self.grants, |t| t[2]),
            CredentialKind::SigningKey => self.signing_keys,
        }
    }
}
