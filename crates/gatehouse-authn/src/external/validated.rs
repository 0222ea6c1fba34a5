//! Recently validated external access tokens, so a client that sends the
//! same token on every request costs one signature check per minute rather
//! than one per request (an ES256 verification costs more than the rest of
//! gate 1 together).
//!
//! An entry is keyed by the whole token (compared in full: a lookup by a
//! digest or by the signature alone would cost as much as it saves, or let
//! another payload borrow a signature) in a map with a randomly keyed hash,
//! and is looked up before the token is even parsed. It holds the principal
//! the token mapped to, until the earlier of a minute after the check and
//! the token's `exp`, and only while its issuer's keys are the ones it was
//! checked with: every successful key-set fetch (a rotation, a removed key)
//! starts that issuer's tokens over. The map lives in process memory only,
//! like the request that carried the token.

use std::collections::HashMap;
use std::sync::Mutex;

use gatehouse_core::{Principal, Timestamp};

/// How long a validation is reused at most.
const REUSE_MS: i64 = 60_000;
/// Most tokens remembered; beyond it the expired ones go, then all.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    principal: Principal,
    until_ms: i64,
    issuer: String,
    /// The issuer's key-set version the token was checked with.
    keys: u64,
}

#[derive(Default)]
pub(crate) struct ValidatedTokens {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

impl ValidatedTokens {
    /// The principal of `token` if it was validated recently, with the key
    /// set its issuer holds now (`keys_of` tells that issuer's version).
    pub(crate) fn get(
        &self,
        token: &str,
        now: Timestamp,
        keys_of: impl Fn(&str) -> Option<u64>,
    ) -> Option<Principal> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(token)
            .filter(|e| now.as_millis() < e.until_ms && keys_of(&e.issuer) == Some(e.keys))
            .map(|e| e.principal.clone())
    }

    pub(crate) fn put(
        &self,
        token: &str,
        issuer: &str,
        principal: &Principal,
        keys: u64,
        now: Timestamp,
    ) {
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
            token.into(),
            Entry {
                principal: principal.clone(),
                until_ms,
                issuer: issuer.to_owned(),
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
            issuer: None,
        }
    }

    #[test]
    fn a_validation_is_reused_for_a_minute_with_the_same_keys_and_never_past_exp() {
        let cache = ValidatedTokens::default();
        let t0 = Timestamp::from_secs(1_000);
        let seven = |_: &str| Some(7);
        cache.put("long-lived", "https://idp", &principal(10_000), 7, t0);
        assert!(
            cache
                .get("long-lived", Timestamp::from_secs(1_059), seven)
                .is_some()
        );
        assert!(
            cache
                .get("long-lived", Timestamp::from_secs(1_060), seven)
                .is_none()
        );
        // Other keys now, or an issuer no longer configured: checked again.
        assert!(
            cache
                .get("long-lived", Timestamp::from_secs(1_001), |_| Some(8))
                .is_none()
        );
        assert!(
            cache
                .get("long-lived", Timestamp::from_secs(1_001), |_| None)
                .is_none()
        );
        // Expiring in 10 s: reused for 10 s only.
        cache.put("short-lived", "https://idp", &principal(1_010), 7, t0);
        assert!(
            cache
                .get("short-lived", Timestamp::from_secs(1_009), seven)
                .is_some()
        );
        assert!(
            cache
                .get("short-lived", Timestamp::from_secs(1_010), seven)
                .is_none()
        );
        // Only the very same token.
        assert!(cache.get("long-live", t0, seven).is_none());
        assert!(cache.get("long-lived2", t0, seven).is_none());
    }
}
