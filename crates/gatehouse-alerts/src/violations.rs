//! Policy violations that add up to an incident: calls refused by role or
//! outside a task grant's allowlist, counted per grant, per session (a
//! caller without a grant), and per principal across all of its grants,
//! sessions and tokens (so that starting a new session or asking for a new
//! grant every few refusals does not keep every count under the
//! threshold). The call that reaches a threshold makes the incident; the
//! caller (the gateway) decides the response. Also: task grants used past
//! their task's expected duration, reported once each.
//!
//! Counted in memory by each instance. A grant's calls may reach several
//! instances; each counts its own, so a grant spread over them can take
//! more refusals before one instance revokes it (it is revoked on every
//! instance then).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use gatehouse_core::Timestamp;

/// The refusal reasons that count toward an incident: a role that may not
/// call the tool, a tool outside the task grant.
pub const VIOLATION_REASONS: [&str; 2] = ["role_not_allowed", "outside_task"];

/// Scopes tracked at most; beyond it the oldest are forgotten.
const MAX_SCOPES: usize = 100_000;

/// What an incident is counted in, and what its response revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IncidentScope {
    /// A task grant (`tg_…`): revoked.
    Grant(String),
    /// An MCP session without a grant: ended.
    Session(String),
    /// A principal across its grants, sessions and tokens: only reported;
    /// revoking its credential is for a person to decide. `key` tells
    /// principals apart (`Principal::subject_key`); `name` is for people.
    Principal { key: String, name: String },
}

impl fmt::Display for IncidentScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IncidentScope::Grant(id) => write!(f, "grant {id}"),
            IncidentScope::Session(id) => write!(f, "session {id}"),
            IncidentScope::Principal { name, .. } => write!(f, "caller {name}"),
        }
    }
}

struct Count {
    first: i64,
    count: u32,
}

pub struct Violations {
    threshold: u32,
    window_ms: i64,
    counts: Mutex<HashMap<IncidentScope, Count>>,
}

impl Violations {
    /// `threshold` 0 switches the detector off.
    pub fn new(threshold: u32, window: Duration) -> Violations {
        Violations {
            threshold,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one violation in `scope`; `Some(count)` when this one makes
    /// the incident (exactly once per scope and window).
    pub fn violated(&self, scope: &IncidentScope, at: Timestamp) -> Option<u32> {
        if self.threshold == 0 {
            return None;
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_SCOPES && !counts.contains_key(scope) {
            let window_start = at.0.saturating_sub(self.window_ms);
            counts.retain(|_, c| c.first > window_start);
            if counts.len() >= MAX_SCOPES {
                // Still full of live scopes: drop the oldest one.
                if let Some(oldest) = counts
                    .iter()
                    .min_by_key(|(_, c)| c.first)
                    .map(|(k, _)| k.clone())
                {
                    counts.remove(&oldest);
                }
            }
        }
        let count = counts.entry(scope.clone()).or_insert(Count {
            first: at.0,
            count: 0,
        });
        if at.0.saturating_sub(count.first) > self.window_ms {
            *count = Count {
                first: at.0,
                count: 0,
            };
        }
        count.count = count.count.saturating_add(1);
        (count.count == self.threshold).then_some(count.count)
    }
}

/// Task grants reported as overrun, so each is reported once per instance
/// (the alert list then shows one per instance that saw it overrun).
#[derive(Default)]
pub struct Overruns {
    reported: Mutex<HashSet<String>>,
}

impl Overruns {
    /// Whether `grant` has just overrun (`issued_at + expected < now`) and
    /// was not reported yet; marks it reported.
    pub fn first_overrun(
        &self,
        grant: &str,
        issued_at: Timestamp,
        expected: Duration,
        now: Timestamp,
    ) -> bool {
        let expected_ms = i64::try_from(expected.as_millis()).unwrap_or(i64::MAX);
        if now.0.saturating_sub(issued_at.0) <= expected_ms {
            return false;
        }
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        if reported.len() >= MAX_SCOPES {
            // Grants live at most an hour; an old report is not needed to
            // keep quiet about a grant that has expired.
            reported.clear();
        }
        reported.insert(grant.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_violation_in_a_grant_is_the_incident_and_only_it() {
        let violations = Violations::new(5, Duration::from_secs(3600));
        let grant = IncidentScope::Grant("tg_1".into());
        let other = IncidentScope::Grant("tg_2".into());
        for t in 0..4 {
            assert_eq!(violations.violated(&grant, Timestamp(t)), None);
            assert_eq!(violations.violated(&other, Timestamp(t)), None);
        }
        assert_eq!(violations.violated(&grant, Timestamp(5)), Some(5));
        assert_eq!(violations.violated(&grant, Timestamp(6)), None);
        assert_eq!(violations.violated(&other, Timestamp(6)), Some(5));
    }

    #[test]
    fn violations_older_than_the_window_start_again() {
        let violations = Violations::new(2, Duration::from_secs(60));
        let session = IncidentScope::Session("s1".into());
        assert_eq!(violations.violated(&session, Timestamp(0)), None);
        assert_eq!(violations.violated(&session, Timestamp(61_000)), None);
        assert_eq!(violations.violated(&session, Timestamp(62_000)), Some(2));
    }

    #[test]
    fn a_threshold_of_zero_is_off() {
        let violations = Violations::new(0, Duration::from_secs(60));
        let scope = IncidentScope::Principal {
            key: "gk_1".into(),
            name: "gk_1".into(),
        };
        for t in 0..10 {
            assert_eq!(violations.violated(&scope, Timestamp(t)), None);
        }
    }

    #[test]
    fn an_overrun_is_reported_once_and_not_before_its_time() {
        let overruns = Overruns::default();
        let expected = Duration::from_secs(900);
        assert!(!overruns.first_overrun("tg_1", Timestamp(0), expected, Timestamp(900_000)));
        assert!(overruns.first_overrun("tg_1", Timestamp(0), expected, Timestamp(900_001)));
        assert!(!overruns.first_overrun("tg_1", Timestamp(0), expected, Timestamp(1_000_000)));
        assert!(overruns.first_overrun("tg_2", Timestamp(0), expected, Timestamp(1_000_000)));
    }
}
