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
    /// Maximum number of rows; the newest rows are kept when the limit cuts.
    pub limit: Option<u32>,
}

/// An audit event with its storage sequence number (monotonic per store).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub event: AuditEvent,
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
    /// `none`, `client_secret_basic` or `client_secret_post`.
    pub auth_method: String,
    /// `operator` or `dynamic`.
    pub registered_by: String,
    pub last_used_at: Option<Timestamp>,
}

impl ClientRecord {
    pub fn is_public(&self) -> bool {
        self.secret_hash.is_none()
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
    /// Set by an operator to withdraw a key at once (never published again).
    pub retired_at: Option<Timestamp>,
}

/// Which signing keys do what at a moment in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningSchedule<'a> {
    /// The key that signs new tokens now.
    pub signer: Option<&'a SigningKeyRecord>,
    /// Keys to publish: the signer, keys that will sign next, and replaced
    /// keys until every token they signed has expired.
    pub published: Vec<&'a SigningKeyRecord>,
}

/// Works out the schedule from the stored keys. A key signs from its
/// `activates_at` until the next key activates; after that it stays
/// published for `max_token_lifetime_ms`, the longest a token lives.
pub fn signing_schedule(
    keys: &[SigningKeyRecord],
    now: Timestamp,
    max_token_lifetime_ms: i64,
) -> SigningSchedule<'_> {
    let mut usable: Vec<&SigningKeyRecord> =
        keys.iter().filter(|k| k.retired_at.is_none()).collect();
    usable.sort_by_key(|k| (k.activates_at, k.created_at));
    let signer_index = usable.iter().rposition(|k| k.activates_at <= now);
    let published = usable
        .iter()
        .enumerate()
        .filter(|(i, key)| {
            if key.activates_at > now || Some(*i) == signer_index {
                return true;
            }
            // Replaced: published until its last tokens have expired.
            match usable.get(i + 1) {
                Some(next) => now < next.activates_at.plus_millis(max_token_lifetime_ms),
                None => true,
            }
        })
        .map(|(_, key)| *key)
        .collect();
    SigningSchedule {
        signer: signer_index.and_then(|i| usable.get(i).copied()),
        published,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn key(kid: &str, activates: i64) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: kid.into(),
            sealed_pkcs8: Vec::new(),
            public_jwk: String::new(),
            created_at: Timestamp(activates),
            activates_at: Timestamp(activates),
            retired_at: None,
        }
    }

    fn kids(schedule: &SigningSchedule<'_>) -> (Option<String>, Vec<String>) {
        (
            schedule.signer.map(|k| k.kid.clone()),
            schedule.published.iter().map(|k| k.kid.clone()).collect(),
        )
    }

    #[test]
    fn the_next_key_is_published_before_it_signs_and_the_old_one_after() {
        let keys = vec![key("old", 0), key("new", 10 * HOUR)];
        let at = |t| kids(&signing_schedule(&keys, Timestamp(t), HOUR));
        // Before the rotation takes effect: old signs, new is already published.
        assert_eq!(
            at(9 * HOUR),
            (Some("old".into()), vec!["old".into(), "new".into()])
        );
        // New signs; old stays published while its tokens may live.
        assert_eq!(
            at(10 * HOUR),
            (Some("new".into()), vec!["old".into(), "new".into()])
        );
        assert_eq!(
            at(11 * HOUR - 1),
            (Some("new".into()), vec!["old".into(), "new".into()])
        );
        // Every token of the old key has expired.
        assert_eq!(at(11 * HOUR), (Some("new".into()), vec!["new".into()]));
    }

    #[test]
    fn retired_keys_are_never_used_or_published() {
        let mut retired = key("bad", 5);
        retired.retired_at = Some(Timestamp(6));
        let keys = vec![key("good", 0), retired];
        assert_eq!(
            kids(&signing_schedule(&keys, Timestamp(10), HOUR)),
            (Some("good".into()), vec!["good".into()])
        );
    }

    #[test]
    fn no_active_key_means_no_signer() {
        let keys = vec![key("future", 100)];
        assert_eq!(
            kids(&signing_schedule(&keys, Timestamp(10), HOUR)),
            (None, vec!["future".into()])
        );
    }
}
