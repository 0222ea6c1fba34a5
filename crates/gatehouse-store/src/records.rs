use gatehouse_core::{AuditEvent, AuditKind, Outcome, Timestamp};

/// An API key as stored: the secret itself is never stored, only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id, also embedded in the key string.
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub role: String,
    pub scopes: Option<Vec<String>>,
    /// The human who owns the key, when one was named.
    pub owner: Option<String>,
    /// Hex of HMAC-SHA256(pepper, secret).
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    /// Id of the key that replaced this one.
    pub rotated_to: Option<String>,
}

impl ApiKeyRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// Filter for audit queries. Every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since: Option<Timestamp>,
    /// Only records with a sequence number above this one (for `tail`).
    pub after_seq: Option<i64>,
    /// Matches the human, the agent or the credential id.
    pub principal: Option<String>,
    pub tenant: Option<String>,
    pub tool: Option<String>,
    pub kind: Option<AuditKind>,
    pub outcome: Option<Outcome>,
    /// Only the records of one HTTP request (its `X-Request-Id`).
    pub request_id: Option<String>,
    /// Only the records of callers this external identity provider named.
    pub issuer: Option<String>,
    /// Maximum number of rows; the newest rows are kept when the limit cuts.
    pub limit: Option<u32>,
}

/// An audit event with its storage sequence number (monotonic per store).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub event: AuditEvent,
}

/// A signed statement of one audit chain's head: record `seq` of `chain`
/// has hash `hash`. A chain rewritten after the checkpoint no longer
/// matches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    pub ts: Timestamp,
    /// Compact JWS of the checkpoint's claims, by the authorization
    /// server's signing key.
    pub jws: String,
}

/// An OAuth client: registered by an operator (`gatehouse clients create`)
/// or dynamically (RFC 7591). Only the keyed hash of its secret is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    /// Tenant and role of the client itself, for the client-credentials
    /// grant. Tokens a user authorizes carry the user's tenant and roles.
    pub tenant: String,
    pub role: String,
    pub scopes: Option<Vec<String>>,
    /// Hex of HMAC-SHA256(pepper, secret); `None` for public clients.
    pub secret_hash: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// `none`, `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub auth_method: String,
    /// `operator` or `dynamic`.
    pub registered_by: String,
    pub last_used_at: Option<Timestamp>,
    /// May introspect tokens issued to other clients (of its own tenant):
    /// `gatehouse clients create --introspect`. Without it a client learns
    /// only about its own tokens.
    pub may_introspect: bool,
    /// For `private_key_jwt`: the client's public keys (a JWKS document)...
    pub jwks: Option<String>,
    /// ...or where to fetch them.
    pub jwks_uri: Option<String>,
    /// When the current secret was issued, if it was rotated since the
    /// client was created (`None`: at `created_at`). Set only by
    /// `Store::rotate_client_secret`.
    pub secret_issued_at: Option<Timestamp>,
    /// The secret the current one replaced, still accepted during the
    /// rotation overlap. Set only by `Store::rotate_client_secret`.
    pub previous_secret: Option<PreviousSecret>,
    /// Access tokens the client obtained for itself (client credentials,
    /// `sub` = its id) issued before this are refused: set when a leaked
    /// secret is rotated with its tokens revoked.
    pub machine_tokens_not_before: Option<Timestamp>,
}

/// A client's replaced secret, accepted until `valid_until` so its holders
/// can switch to the new one without a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    /// Hex of HMAC-SHA256(pepper, secret), like `ClientRecord::secret_hash`.
    pub hash: String,
    pub valid_until: Timestamp,
}

impl ClientRecord {
    /// When the secret it authenticates with now was issued.
    pub fn secret_issued_at(&self) -> Timestamp {
        self.secret_issued_at.unwrap_or(self.created_at)
    }

    /// The replaced secret's hash while it is still accepted at `now`.
    pub fn previous_secret_hash(&self, now: Timestamp) -> Option<&str> {
        self.previous_secret
            .as_ref()
            .filter(|p| now < p.valid_until)
            .map(|p| p.hash.as_str())
    }

    /// No secret and no key: anyone may claim to be it.
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none() && !self.signs_assertions()
    }

    /// Authenticates with `private_key_jwt` (RFC 7523).
    pub fn signs_assertions(&self) -> bool {
        self.auth_method == "private_key_jwt"
    }

    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }
}

/// A token-signing key; the private key is stored sealed under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub sealed_pkcs8: Vec<u8>,
    /// The public key as a JWK (JSON), so verifiers need no master key.
    pub public_jwk: String,
    pub created_at: Timestamp,
    /// When it starts signing; published in the JWKS before that.
    pub activates_at: Timestamp,
    /// Set by `gatehouse keys revoke-signing` to withdraw a key at once:
    /// it never signs, verifies or is published again. (When a replaced
    /// key retires is computed from the schedule, see `signing_schedule`.)
    pub revoked_at: Option<Timestamp>,
}
