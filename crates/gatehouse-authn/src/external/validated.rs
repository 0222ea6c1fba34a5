//! Recently validated external access tokens, so a client that sends the
//! same token on every request costs one signature check per minute rather
//! than one per request (an ES256 verification costs more than the rest of
//! gate 1 together).
//!
//! An entry is keyed by the token's SHA-256 (never the token itself) and
//! holds the principal it mapped to, until the earlier of a minute after the
//! check and the token's `exp`, and only while the issuer's keys are the
//! ones it was checked with: every successful key-set fetch (a rotation, a
//! removed key) starts the issuer's tokens over.

use std::collections::HashMap;
use std::sync::Mutex;

use gatehouse_core::{Principal, Timestamp};
use sha2::{Digest, Sha256};

/// How long a validation is reused at most.
const REUSE_MS: i64 = 60_000;
/// Most tokens remembered; beyond it the expired ones go, then all.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    principal: Principal,
    until_ms: i64,
    /// The issuer's key-set version the token was checked with.
    keys: u64,
}

#[derive(Default)]
pub(crate) struct ValidatedTokens {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ValidatedTokens {
    /// The principal of a token validated recently with key-set version
    /// `keys`, if still good at `now`.
    pub(crate) fn get(&self, digest: &[u8; 32], keys: u64, now: Timestamp) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(digest)
            .filter(|e| e.keys == keys && now.as_millis() < e.until_ms)
            .map(|e| e.principal.clone())
    }

    pub(crate) fn put(&self, digest: [u8; 32], principal: &Principal, keys: u64, now: Timestamp) {
        let now_ms = now.as_millis();
        let exp_ms = principal.expires_at.map_or(i64::MAX, |exp| exp.as_millis());
        let until_ms = now_ms.saturating_add(REUSE_MS).min(exp_ms);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now_ms < e.until_ms);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                principal: principal.clone(),
                until_ms,
                keys,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{CredentialKind, CredentialRef};

    fn principal(exp_secs: i64) -> Principal {
        Principal {
            tenant: "default".into(),
            human: Some("alice".into()),
            agent: "app".into(),
            credential: CredentialRef {
                kind: CredentialKind::ExternalToken,
                id: "t".into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: Some(Timestamp::from_secs(exp_secs)),
            task: None,
        }
    }

    #[test]
    fn a_validation_is_reused_for_a_minute_with_the_same_keys_and_never_past_exp() {
        let cache = ValidatedTokens::default();
        let t0 = Timestamp::from_secs(1_000);
        let long = digest("long-lived");
        cache.put(long, &principal(10_000), 7, t0);
        assert!(cache.get(&long, 7, Timestamp::from_secs(1_059)).is_some());
        assert!(cache.get(&long, 7, Timestamp::from_secs(1_060)).is_none());
        // Other keys now: checked again.
        assert!(cache.get(&long, 8, Timestamp::from_secs(1_001)).is_none());
        // Expiring in 10 s: reused for 10 s only.
        let short = digest("short-lived");
        cache.put(short, &principal(1_010), 7, t0);
        assert!(cache.get(&short, 7, Timestamp::from_secs(1_009)).is_some());
        assert!(cache.get(&short, 7, Timestamp::from_secs(1_010)).is_none());
        assert!(cache.get(&digest("never seen"), 7, t0).is_none());
    }
}
