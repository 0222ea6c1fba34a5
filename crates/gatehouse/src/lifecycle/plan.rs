//! What the lifecycle policy does to one credential, and when: a pure
//! function of the credential's dates, its thresholds and `now`, shared by
//! the housekeeping pass (what is due now) and the listings (what comes
//! next).

use gatehouse_core::Timestamp;

use crate::lifecycle::policy::{CredentialKind, Thresholds};

/// Stable reason codes, in audit records and `--json` output.
pub const CREDENTIAL_EXPIRING: &str = "credential_expiring";
pub const CREDENTIAL_UNUSED: &str = "credential_unused";
pub const REVOKED_MAX_AGE: &str = "credential_revoked_max_age";
pub const REVOKED_UNUSED: &str = "credential_revoked_unused";
pub const SIGNING_KEY_ROTATED: &str = "signing_key_rotated";

/// What the lifecycle knows about one live credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub kind: CredentialKind,
    pub id: String,
    /// `None` for signing keys.
    pub tenant: Option<String>,
    /// The person behind it: an API key's owner, a grant's user.
    pub human: Option<String>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

impl Subject {
    /// The last use, or the creation for a credential never used: a
    /// credential created and never used is unused from its creation on.
    pub fn last_use(&self) -> Timestamp {
        self.last_used_at
            .map_or(self.created_at, |used| used.max(self.created_at))
    }
}

/// One thing the policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A `credential_expiring` warning, once per credential.
    WarnExpiring { expires_at: Timestamp },
    /// A `credential_unused` alert, once per period of disuse (`since`).
    AlertUnused { since: Timestamp },
    /// Revocation at the maximum age.
    RevokeMaxAge,
    /// Revocation after `unused_revoke` without use.
    RevokeUnused { since: Timestamp },
    /// A signing key's successor, published now, signing from `activates_at`.
    Rotate { activates_at: Timestamp },
}

impl Step {
    /// The stable code of the step (the audit record's reason).
    pub fn code(self) -> &'static str {
        match self {
            Step::WarnExpiring { .. } => CREDENTIAL_EXPIRING,
            Step::AlertUnused { .. } => CREDENTIAL_UNUSED,
            Step::RevokeMaxAge => REVOKED_MAX_AGE,
            Step::RevokeUnused { .. } => REVOKED_UNUSED,
            Step::Rotate { .. } => SIGNING_KEY_ROTATED,
        }
    }

    /// `warn`, `alert`, `revoke` or `rotate`.
    pub fn action(self) -> &'static str {
        match self {
            Step::WarnExpiring { .. } => "warn",
            Step::AlertUnused { .. } => "alert",
            Step::RevokeMaxAge | Step::RevokeUnused { .. } => "revoke",
            Step::Rotate { .. } => "rotate",
        }
    }
}

fn at(base: Timestamp, offset: Option<i64>) -> Option<Timestamp> {
    offset.map(|ms| base.plus_millis(ms))
}

/// Every step the policy has for `subject`, each with the time it falls
/// due, in time order. Signing keys are handled by `signing_key_steps`.
fn timeline(subject: &Subject, t: &Thresholds) -> Vec<(Timestamp, Step)> {
    let mut steps = Vec::new();
    let last_use = subject.last_use();
    if let Some(expires_at) = at(subject.created_at, t.max_age) {
        steps.push((
            expires_at
                .plus_millis(-t.warn_before)
                .max(subject.created_at),
            Step::WarnExpiring { expires_at },
        ));
        steps.push((expires_at, Step::RevokeMaxAge));
    }
    if let Some(due) = at(last_use, t.unused_alert) {
        steps.push((due, Step::AlertUnused { since: last_use }));
    }
    if let Some(due) = at(last_use, t.unused_revoke) {
        steps.push((due, Step::RevokeUnused { since: last_use }));
    }
    steps.sort_by_key(|(due, step)| (*due, revocation_first(*step)));
    steps
}

/// At the same instant a revocation outranks a warning about it.
fn revocation_first(step: Step) -> u8 {
    match step {
        Step::RevokeMaxAge => 0,
        Step::RevokeUnused { .. } => 1,
        _ => 2,
    }
}

/// The steps due at `now` for an API key, client secret or grant. A due
/// revocation is the only step (nothing to warn about any more); the
/// maximum age outranks disuse as the reason.
pub fn due_steps(subject: &Subject, t: &Thresholds, now: Timestamp) -> Vec<Step> {
    let due: Vec<Step> = timeline(subject, t)
        .into_iter()
        .filter(|(at, _)| *at <= now)
        .map(|(_, step)| step)
        .collect();
    if due.contains(&Step::RevokeMaxAge) {
        return vec![Step::RevokeMaxAge];
    }
    if let Some(unused) = due.iter().find(|s| matches!(s, Step::RevokeUnused { .. })) {
        return vec![*unused];
    }
    due
}

/// What the policy does next to `subject`, and when: a revocation already
/// due (the next pass does it), else the first step that is still to come
/// or due and not yet done. `given`: the warnings due now that were given
/// already (they are not repeated).
pub fn next_step(
    subject: &Subject,
    t: &Thresholds,
    now: Timestamp,
    given: &[Step],
) -> Option<(Timestamp, Step)> {
    let steps = timeline(subject, t);
    steps
        .iter()
        .find(|(at, step)| {
            *at <= now && matches!(step, Step::RevokeMaxAge | Step::RevokeUnused { .. })
        })
        .or_else(|| {
            steps
                .iter()
                .find(|(at, step)| *at > now || !given.contains(step))
        })
        .copied()
}

/// The steps due at `now` for the signing key that signs now (`active`),
/// given whether a successor is already published (`next` key). Its
/// successor is published `rotation_overlap` before the maximum age and
/// signs from the maximum age on, or from `rotation_overlap` after now when
/// the pass comes late: relying parties always get the overlap to fetch
/// the new key.
pub fn signing_key_steps(
    active: &Subject,
    has_successor: bool,
    t: &Thresholds,
    now: Timestamp,
) -> Vec<Step> {
    if has_successor {
        return Vec::new();
    }
    let Some(expires_at) = at(active.created_at, t.max_age) else {
        return Vec::new();
    };
    if now >= expires_at.plus_millis(-t.rotation_overlap) {
        return vec![Step::Rotate {
            activates_at: expires_at.max(now.plus_millis(t.rotation_overlap)),
        }];
    }
    if now >= expires_at.plus_millis(-t.warn_before) {
        return vec![Step::WarnExpiring { expires_at }];
    }
    Vec::new()
}

/// When the lifecycle replaces the signing key that signs now: its
/// successor is published at `(at)` and signs from `activates_at`. `None`
/// when a successor is already published or the rule is off.
pub fn signing_key_rotation(
    active: &Subject,
    has_successor: bool,
    t: &Thresholds,
) -> Option<(Timestamp, Step)> {
    if has_successor {
        return None;
    }
    let expires_at = at(active.created_at, t.max_age)?;
    Some((
        expires_at.plus_millis(-t.rotation_overlap),
        Step::Rotate {
            activates_at: expires_at,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn thresholds() -> Thresholds {
        Thresholds::defaults(CredentialKind::ApiKey)
    }

    fn key(created_day: i64, used_day: Option<i64>) -> Subject {
        Subject {
            kind: CredentialKind::ApiKey,
            id: "k1".into(),
            tenant: Some("default".into()),
            human: None,
            created_at: Timestamp(created_day * DAY),
            last_used_at: used_day.map(|d| Timestamp(d * DAY)),
        }
    }

    fn day(d: i64) -> Timestamp {
        Timestamp(d * DAY)
    }

    #[test]
    fn a_key_in_daily_use_is_warned_at_76_days_and_revoked_at_90() {
        let t = thresholds();
        assert!(due_steps(&key(0, Some(75)), &t, day(75)).is_empty());
        assert_eq!(
            due_steps(&key(0, Some(76)), &t, day(76)),
            [Step::WarnExpiring {
                expires_at: day(90)
            }]
        );
        assert_eq!(
            due_steps(&key(0, Some(89)), &t, Timestamp(90 * DAY - 1)),
            [Step::WarnExpiring {
                expires_at: day(90)
            }]
        );
        assert_eq!(
            due_steps(&key(0, Some(90)), &t, day(90)),
            [Step::RevokeMaxAge]
        );
    }

    #[test]
    fn an_idle_key_is_alerted_at_15_days_and_revoked_at_30() {
        let t = thresholds();
        assert!(due_steps(&key(0, Some(10)), &t, Timestamp(25 * DAY - 1)).is_empty());
        assert_eq!(
            due_steps(&key(0, Some(10)), &t, day(25)),
            [Step::AlertUnused { since: day(10) }]
        );
        assert_eq!(
            due_steps(&key(0, Some(10)), &t, day(40)),
            [Step::RevokeUnused { since: day(10) }]
        );
        // Never used: unused since its creation.
        assert_eq!(
            due_steps(&key(5, None), &t, day(20)),
            [Step::AlertUnused { since: day(5) }]
        );
    }

    #[test]
    fn warnings_come_together_and_the_maximum_age_outranks_disuse() {
        let t = thresholds();
        assert_eq!(
            due_steps(&key(0, Some(60)), &t, day(80)),
            [
                Step::AlertUnused { since: day(60) },
                Step::WarnExpiring {
                    expires_at: day(90)
                },
            ]
        );
        assert_eq!(
            due_steps(&key(0, Some(60)), &t, day(95)),
            [Step::RevokeMaxAge]
        );
    }

    #[test]
    fn off_switches_a_rule_off_and_zero_applies_at_once() {
        let mut t = thresholds();
        t.max_age = None;
        t.unused_revoke = None;
        assert_eq!(
            due_steps(&key(0, None), &t, day(1000)),
            [Step::AlertUnused { since: day(0) }]
        );
        t.unused_alert = None;
        assert!(due_steps(&key(0, None), &t, day(1000)).is_empty());
        assert_eq!(next_step(&key(0, None), &t, day(1000), &[]), None);
        let zero = Thresholds {
            max_age: Some(0),
            warn_before: 0,
            rotation_overlap: 0,
            unused_alert: Some(0),
            unused_revoke: Some(0),
        };
        assert_eq!(
            due_steps(&key(3, None), &zero, day(3)),
            [Step::RevokeMaxAge]
        );
    }

    #[test]
    fn next_step_names_what_comes_and_when() {
        let t = thresholds();
        // Fresh: the unused alert comes first.
        assert_eq!(
            next_step(&key(0, None), &t, day(1), &[]),
            Some((day(15), Step::AlertUnused { since: day(0) }))
        );
        // In use: the warning before the maximum age.
        assert_eq!(
            next_step(&key(0, Some(70)), &t, day(70), &[]),
            Some((
                day(76),
                Step::WarnExpiring {
                    expires_at: day(90)
                }
            ))
        );
        // A warning due and not yet given is next, now; once given, the
        // revocation.
        let warning = Step::WarnExpiring {
            expires_at: day(90),
        };
        assert_eq!(
            next_step(&key(0, Some(80)), &t, day(80), &[]),
            Some((day(76), warning))
        );
        assert_eq!(
            next_step(&key(0, Some(80)), &t, day(80), &[warning]),
            Some((day(90), Step::RevokeMaxAge))
        );
        // A revocation due and not yet done is what comes next.
        assert_eq!(
            next_step(&key(0, Some(10)), &t, day(50), &[]),
            Some((day(40), Step::RevokeUnused { since: day(10) }))
        );
    }

    #[test]
    fn a_signing_key_is_warned_then_succeeded_with_the_overlap() {
        let t = Thresholds::defaults(CredentialKind::SigningKey);
        let active = Subject {
            kind: CredentialKind::SigningKey,
            ..key(0, None)
        };
        assert!(signing_key_steps(&active, false, &t, day(75)).is_empty());
        assert_eq!(
            signing_key_steps(&active, false, &t, day(76)),
            [Step::WarnExpiring {
                expires_at: day(90)
            }]
        );
        // One overlap before the maximum age the successor is published,
        // to sign at the maximum age.
        assert_eq!(
            signing_key_steps(&active, false, &t, day(89)),
            [Step::Rotate {
                activates_at: day(90)
            }]
        );
        // A late pass still gives relying parties the whole overlap.
        assert_eq!(
            signing_key_steps(&active, false, &t, day(100)),
            [Step::Rotate {
                activates_at: day(101)
            }]
        );
        // A successor already published (by hand or an earlier pass): nothing.
        assert!(signing_key_steps(&active, true, &t, day(100)).is_empty());
        // What the listing shows.
        assert_eq!(
            signing_key_rotation(&active, false, &t),
            Some((
                day(89),
                Step::Rotate {
                    activates_at: day(90)
                }
            ))
        );
        assert_eq!(signing_key_rotation(&active, true, &t), None);
    }
}
