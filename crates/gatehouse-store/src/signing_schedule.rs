//! Where each token-signing key stands at a moment, computed from the
//! stored keys and `now` alone, so every instance sharing a store agrees
//! without a background writer.
//!
//! Keys take over from each other in the order of `activates_at`. A key
//! signs from its `activates_at` until the next key takes over; after that
//! it keeps verifying (and stays published) until every token it can have
//! signed has expired, then it retires. A revoked key is withdrawn at once.
//! A replaced key never signs again, even when its successor is revoked:
//! then nothing signs until a new key is added (`keys revoke-signing`
//! refuses to leave that state; `--force` adds the new key first).

use gatehouse_core::Timestamp;

use crate::SigningKeyRecord;

/// Where a signing key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyState {
    /// Published ahead; it signs from its `activates_at`.
    Next,
    /// Signs new tokens now.
    Active,
    /// Replaced; verifies the tokens it signed until they have expired.
    Retiring,
    /// Replaced, and every token it signed has expired: trusted no more.
    Retired,
    /// Withdrawn by an operator: trusted no more.
    Revoked,
}

impl SigningKeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningKeyState::Next => "next",
            SigningKeyState::Active => "active",
            SigningKeyState::Retiring => "retiring",
            SigningKeyState::Retired => "retired",
            SigningKeyState::Revoked => "revoked",
        }
    }

    /// Whether tokens signed by the key verify, and the JWKS publishes it.
    pub fn is_trusted(self) -> bool {
        matches!(
            self,
            SigningKeyState::Next | SigningKeyState::Active | SigningKeyState::Retiring
        )
    }
}

/// One key's place in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledKey<'a> {
    pub record: &'a SigningKeyRecord,
    pub state: SigningKeyState,
    /// When the next key takes (or took) over; `None` while no later key is
    /// scheduled, and for a key revoked before it ever signed.
    pub replaced_at: Option<Timestamp>,
    /// When it stops verifying once replaced: `replaced_at` plus the
    /// longest a token lives (with leeway). `None` for a revoked key, which
    /// verifies nothing already.
    pub retires_at: Option<Timestamp>,
}

/// Which signing keys do what at a moment in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningSchedule<'a> {
    /// The key that signs new tokens now.
    pub signer: Option<&'a SigningKeyRecord>,
    /// Keys that verify tokens and are published: the signer, keys that
    /// will sign next, and replaced keys until every token they signed has
    /// expired. In the order they take over.
    pub published: Vec<&'a SigningKeyRecord>,
    /// Every stored key with its state, in the order they take over.
    pub keys: Vec<ScheduledKey<'a>>,
    /// The first moment after `now` at which the schedule changes by
    /// itself (a key activates or retires). Until then, and until the
    /// stored keys change, it holds.
    pub changes_at: Option<Timestamp>,
}

/// A key revoked before its `activates_at` never signed anything.
fn ever_signs(key: &SigningKeyRecord) -> bool {
    key.revoked_at.is_none_or(|at| at > key.activates_at)
}

/// Works out the schedule from the stored keys. `retire_after_ms` is how
/// long a replaced key keeps verifying: the longest an access token lives
/// plus the verifier's clock-skew leeway.
pub fn signing_schedule(
    keys: &[SigningKeyRecord],
    now: Timestamp,
    retire_after_ms: i64,
) -> SigningSchedule<'_> {
    let mut ordered: Vec<&SigningKeyRecord> = keys.iter().collect();
    ordered.sort_by(|a, b| {
        (a.activates_at, a.created_at, &a.kid).cmp(&(b.activates_at, b.created_at, &b.kid))
    });
    // Each key that ever signs takes over from the one before it.
    let takes_over: Vec<&SigningKeyRecord> =
        ordered.iter().copied().filter(|k| ever_signs(k)).collect();
    let replaced_at = |key: &SigningKeyRecord| -> Option<Timestamp> {
        let i = takes_over.iter().position(|k| std::ptr::eq(*k, key))?;
        takes_over.get(i + 1).map(|next| next.activates_at)
    };
    let scheduled: Vec<ScheduledKey<'_>> = ordered
        .iter()
        .map(|key| {
            let replaced_at = replaced_at(key);
            let retires_at = replaced_at
                .filter(|_| key.revoked_at.is_none())
                .map(|at| at.plus_millis(retire_after_ms));
            let state = if key.revoked_at.is_some() {
                SigningKeyState::Revoked
            } else if key.activates_at > now {
                SigningKeyState::Next
            } else {
                match (replaced_at, retires_at) {
                    (Some(replaced), _) if replaced > now => SigningKeyState::Active,
                    (None, _) => SigningKeyState::Active,
                    (_, Some(retires)) if now < retires => SigningKeyState::Retiring,
                    _ => SigningKeyState::Retired,
                }
            };
            ScheduledKey {
                record: key,
                state,
                replaced_at,
                retires_at,
            }
        })
        .collect();
    let changes_at = scheduled
        .iter()
        .filter(|k| k.state != SigningKeyState::Revoked)
        .flat_map(|k| [Some(k.record.activates_at), k.retires_at])
        .flatten()
        .filter(|at| *at > now)
        .min();
    SigningSchedule {
        signer: scheduled
            .iter()
            .find(|k| k.state == SigningKeyState::Active)
            .map(|k| k.record),
        published: scheduled
            .iter()
            .filter(|k| k.state.is_trusted())
            .map(|k| k.record)
            .collect(),
        keys: scheduled,
        changes_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SigningKeyState::*;

    const HOUR: i64 = 3_600_000;

    fn key(kid: &str, activates: i64) -> SigningKeyRecord {
        SigningKeyRecord {
            kid: kid.into(),
            sealed_pkcs8: Vec::new(),
            public_jwk: String::new(),
            created_at: Timestamp(activates),
            activates_at: Timestamp(activates),
            revoked_at: None,
        }
    }

    fn revoked(kid: &str, activates: i64, at: i64) -> SigningKeyRecord {
        SigningKeyRecord {
            revoked_at: Some(Timestamp(at)),
            ..key(kid, activates)
        }
    }

    /// (signer, published, every key's state)
    type Seen = (Option<String>, Vec<String>, Vec<(String, SigningKeyState)>);

    fn at(keys: &[SigningKeyRecord], now: i64) -> Seen {
        let schedule = signing_schedule(keys, Timestamp(now), HOUR);
        (
            schedule.signer.map(|k| k.kid.clone()),
            schedule.published.iter().map(|k| k.kid.clone()).collect(),
            schedule
                .keys
                .iter()
                .map(|k| (k.record.kid.clone(), k.state))
                .collect(),
        )
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn states(v: &[(&str, SigningKeyState)]) -> Vec<(String, SigningKeyState)> {
        v.iter().map(|(k, s)| (k.to_string(), *s)).collect()
    }

    #[test]
    fn a_replaced_key_retires_once_every_token_it_signed_has_expired() {
        let keys = vec![key("new", 10 * HOUR), key("old", 0)];
        // Before the rotation takes effect: old signs, new is published.
        assert_eq!(
            at(&keys, 9 * HOUR),
            (
                Some("old".into()),
                s(&["old", "new"]),
                states(&[("old", Active), ("new", Next)])
            )
        );
        // New signs; old verifies while its tokens may live.
        assert_eq!(
            at(&keys, 10 * HOUR),
            (
                Some("new".into()),
                s(&["old", "new"]),
                states(&[("old", Retiring), ("new", Active)])
            )
        );
        assert_eq!(at(&keys, 11 * HOUR - 1).2[0].1, Retiring);
        // Every token of the old key has expired: trusted no more.
        assert_eq!(
            at(&keys, 11 * HOUR),
            (
                Some("new".into()),
                s(&["new"]),
                states(&[("old", Retired), ("new", Active)])
            )
        );
        assert_eq!(at(&keys, 1000 * HOUR).2[0].1, Retired);
    }

    #[test]
    fn the_schedule_says_when_it_changes_next() {
        let keys = vec![key("old", 0), key("new", 10 * HOUR)];
        let changes = |now| signing_schedule(&keys, Timestamp(now), HOUR).changes_at;
        assert_eq!(changes(5 * HOUR), Some(Timestamp(10 * HOUR)));
        assert_eq!(changes(10 * HOUR), Some(Timestamp(11 * HOUR)));
        assert_eq!(changes(11 * HOUR), None);
        let schedule = signing_schedule(&keys, Timestamp(5 * HOUR), HOUR);
        assert_eq!(schedule.keys[0].replaced_at, Some(Timestamp(10 * HOUR)));
        assert_eq!(schedule.keys[0].retires_at, Some(Timestamp(11 * HOUR)));
        assert_eq!(schedule.keys[1].replaced_at, None);
    }

    #[test]
    fn a_key_revoked_before_it_signs_never_signs_and_replaces_nothing() {
        let keys = vec![key("good", 0), revoked("bad", 5, 3)];
        assert_eq!(
            at(&keys, 10),
            (
                Some("good".into()),
                s(&["good"]),
                states(&[("good", Active), ("bad", Revoked)])
            )
        );
    }

    #[test]
    fn revoking_the_signer_never_brings_back_the_key_it_replaced() {
        let keys = vec![key("a", 0), revoked("b", 5, 6)];
        // a stopped signing when b took over at 5; it only verifies the
        // tokens it signed before, and retires on time.
        assert_eq!(
            at(&keys, 10),
            (None, s(&["a"]), states(&[("a", Retiring), ("b", Revoked)]))
        );
        let schedule = signing_schedule(&keys, Timestamp(10), HOUR);
        assert_eq!(schedule.keys[1].replaced_at, None);
        assert_eq!(schedule.keys[1].retires_at, None);
        assert_eq!(schedule.changes_at, Some(Timestamp(5 + HOUR)));
        assert_eq!(at(&keys, 5 + HOUR).2[0].1, Retired);
    }

    #[test]
    fn a_forced_revocation_hands_over_to_the_new_key_at_once() {
        // revoke-signing --force at 20: c added to sign from 20, b revoked.
        let keys = vec![key("a", 0), revoked("b", 5, 20), key("c", 20)];
        assert_eq!(
            at(&keys, 20),
            (
                Some("c".into()),
                s(&["a", "c"]),
                states(&[("a", Retiring), ("b", Revoked), ("c", Active)])
            )
        );
    }

    #[test]
    fn no_active_key_means_no_signer() {
        let keys = vec![key("future", 100)];
        assert_eq!(
            at(&keys, 10),
            (None, s(&["future"]), states(&[("future", Next)]))
        );
    }

    #[test]
    fn keys_activating_together_are_ordered_by_creation_then_kid() {
        let mut first = key("z", 10);
        first.created_at = Timestamp(1);
        let mut second = key("a", 10);
        second.created_at = Timestamp(2);
        assert_eq!(
            at(&[second, first], 10),
            (
                Some("a".into()),
                s(&["z", "a"]),
                states(&[("z", Retiring), ("a", Active)])
            )
        );
    }
}
