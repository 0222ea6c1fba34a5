//! Bursts of failed authentications: more than `threshold` failures within
//! the window for one credential, one user or one source raise one alert
//! (and no more for that subject while the burst goes on within the
//! window). Lockout is separate and unchanged: this is for people to look.
//!
//! Counted in memory by each instance, from the audit records of failed
//! authentications wherever they are made (MCP requests, the sign-in form,
//! the token endpoint). With several instances behind a balancer each
//! counts what it sees.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use gatehouse_audit::{AuditLog, AuditObserver};
use gatehouse_core::{AuditEvent, AuditKind, OneByOne, OneByOneLimit, Outcome, Timestamp};

use crate::{Alert, AlertCode, Alerts};

/// Failure reasons that are not a caller guessing: no credential at all
/// (every MCP client's first request, to discover the authorization
/// server), a device-flow client polling as it must, the notices of a lock
/// being set, requests refused while a lock holds (the burst that set it
/// was alerted; counting the refusals would name whoever retries, the
/// locked key's owner too), Gatehouse's own trouble, and an open stream or
/// session ended because its credential was revoked or changed (one
/// revocation ends all of a key's sessions at once: no guessing).
pub const BENIGN_FAILURES: [&str; 13] = [
    "missing_credential",
    "authorization_pending",
    "slow_down",
    "credential_locked",
    "source_locked",
    "name_locked",
    "locked",
    "store_unavailable",
    "internal_error",
    "introspection_unavailable",
    "jwks_unavailable",
    "issuer_keys_unavailable",
    CREDENTIAL_LAPSED,
];

/// The reason of the record of a stream or session ended because the
/// credential it was opened with no longer holds (the why is in its text).
pub const CREDENTIAL_LAPSED: &str = "credential_lapsed";

/// Subjects tracked at most: beyond it (a spray from very many sources),
/// subjects whose failures are all older than the window are dropped, and
/// failures of new subjects are counted together under
/// [`UNTRACKED_SUBJECTS`] until there is room.
const MAX_SUBJECTS: usize = 100_000;

/// Where failures of subjects that find no room are counted: a spray over
/// more subjects than the detector follows (which would otherwise hide a
/// real burst among them) is itself a burst, and its alert says so.
pub const UNTRACKED_SUBJECTS: &str = "untracked subjects (more credentials, users or sources fail at once than the detector follows)";

struct Track {
    /// Times of the latest failures, at most `threshold + 1`.
    failures: VecDeque<i64>,
    /// No second alert for this subject before this time.
    quiet_until: i64,
}

/// The counting, apart from where failures come from (unit-testable with
/// any timestamps).
pub struct AuthBursts {
    threshold: u32,
    window_ms: i64,
    capacity: usize,
    subjects: Mutex<HashMap<String, Track>>,
}

/// A subject whose failures passed the threshold, and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    pub subject: String,
    pub failures: usize,
}

impl AuthBursts {
    /// `threshold` 0 switches the detector off.
    pub fn new(threshold: u32, window: Duration) -> AuthBursts {
        AuthBursts::with_capacity(threshold, window, MAX_SUBJECTS)
    }

    fn with_capacity(threshold: u32, window: Duration, capacity: usize) -> AuthBursts {
        AuthBursts {
            threshold,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            capacity,
            subjects: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one failure against each subject; returns those that passed
    /// the threshold with it.
    pub fn failed(&self, subjects: &[String], at: Timestamp) -> Vec<Burst> {
        if self.threshold == 0 || subjects.is_empty() {
            return Vec::new();
        }
        let keep = usize::try_from(self.threshold).unwrap_or(usize::MAX - 1) + 1;
        let mut map = self.subjects.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.capacity {
            let oldest_kept = at.0.saturating_sub(self.window_ms);
            map.retain(|_, track| {
                track.quiet_until > at.0 || track.failures.back().is_some_and(|t| *t > oldest_kept)
            });
        }
        let mut bursts = Vec::new();
        let mut counted_untracked = false;
        for subject in subjects {
            let subject = if map.contains_key(subject) || map.len() < self.capacity {
                subject.as_str()
            } else if counted_untracked {
                continue;
            } else {
                // Counted once per failure, whatever it names; kept even
                // when the table is full.
                counted_untracked = true;
                UNTRACKED_SUBJECTS
            };
            let track = map.entry(subject.to_string()).or_insert_with(|| Track {
                failures: VecDeque::new(),
                quiet_until: i64::MIN,
            });
            track.failures.push_back(at.0);
            while track.failures.len() > keep {
                track.failures.pop_front();
            }
            let window_start = at.0.saturating_sub(self.window_ms);
            let within = track.failures.iter().filter(|t| **t > window_start).count();
            if within >= keep && at.0 >= track.quiet_until {
                track.quiet_until = at.0.saturating_add(self.window_ms);
                bursts.push(Burst {
                    subject: subject.to_string(),
                    failures: within,
                });
            }
        }
        bursts
    }
}

/// What a failed authentication counts against: its credential, its user
/// and its source (an IPv6 address by its /64). A key id that names no key
/// (`unknown_credential`) is the caller's invention, not a credential: a
/// fresh id per request would otherwise be a fresh subject, and an alert,
/// every four requests.
pub fn subjects_of(event: &AuditEvent) -> Vec<String> {
    let mut subjects = Vec::new();
    if let Some(credential) = &event.credential
        && event.reason.as_deref() != Some("unknown_credential")
    {
        subjects.push(format!("credential {}", short(credential)));
    }
    if let Some(human) = &event.human {
        subjects.push(format!("user {}", short(human)));
    }
    if let Some(network) = event
        .source
        .as_deref()
        .and_then(gatehouse_core::source_network)
    {
        subjects.push(format!("source {network}"));
    }
    subjects
}

/// The longest credential or user name a subject keeps: what a caller
/// typed (a user name at the sign-in form) is a key of the detector's table
/// and the subject of its alert. Names cut alike count together.
const MAX_SUBJECT_NAME_BYTES: usize = 256;

fn short(name: &str) -> String {
    let mut name = name.to_string();
    gatehouse_core::cut_text(&mut name, MAX_SUBJECT_NAME_BYTES);
    name
}

/// Burst alerts raised one by one per minute (each instance): many sources
/// failing at once (a spray from a whole IPv6 /48) would otherwise be as
/// many alerts, rows and webhook deliveries, and the alerts that matter
/// would wait behind them.
pub const BURST_ALERTS_PER_MINUTE: u32 = 20;

/// What to do with one more burst: raise it (`Each`), raise one alert
/// saying that further bursts this minute are not (`FirstPastLimit`), or
/// nothing (`Past`).
pub type BurstAlert = OneByOne;

/// Counts the burst alerts of each minute.
pub struct BurstAlertBudget(OneByOneLimit);

impl Default for BurstAlertBudget {
    fn default() -> Self {
        BurstAlertBudget(OneByOneLimit::new(BURST_ALERTS_PER_MINUTE, 60_000, 1))
    }
}

impl BurstAlertBudget {
    pub fn take(&self, now: Timestamp) -> BurstAlert {
        self.0.take("bursts", now)
    }
}

/// Watches the audit log for failed authentications.
pub struct AuthBurstObserver {
    bursts: AuthBursts,
    alerts: Alerts,
    window_secs: u64,
    /// Sources are cheap to have many of (an IPv6 /48 holds 65,536 /64s),
    /// and so are user names (any name can be typed at the sign-in form);
    /// credentials (real keys and tokens: a made-up key id is no subject)
    /// are not. Each kind has its own budget, so a spray of cheap bursts
    /// cannot use up the minute's alerts for a real key.
    cheap_subjects_budget: BurstAlertBudget,
    credentials_budget: BurstAlertBudget,
}

impl AuthBurstObserver {
    pub fn new(bursts: AuthBursts, alerts: Alerts, window: Duration) -> AuthBurstObserver {
        AuthBurstObserver {
            bursts,
            alerts,
            window_secs: window.as_secs(),
            cheap_subjects_budget: BurstAlertBudget::default(),
            credentials_budget: BurstAlertBudget::default(),
        }
    }
}

impl AuditObserver for AuthBurstObserver {
    fn observe(&self, event: &AuditEvent, log: &AuditLog) {
        if event.kind != AuditKind::Authentication || event.outcome != Outcome::Failure {
            return;
        }
        if event
            .reason
            .as_deref()
            .is_some_and(|reason| BENIGN_FAILURES.contains(&reason))
        {
            return;
        }
        for burst in self.bursts.failed(&subjects_of(event), event.ts) {
            let mut text = format!(
                "{} failed authentications within {} s (the latest: {})",
                burst.failures,
                self.window_secs,
                event.reason.as_deref().unwrap_or("unknown reason")
            );
            let cheap = burst.subject.starts_with("source ")
                || burst.subject.starts_with("user ")
                || burst.subject == UNTRACKED_SUBJECTS;
            let budget = if cheap {
                &self.cheap_subjects_budget
            } else {
                &self.credentials_budget
            };
            match budget.take(event.ts) {
                BurstAlert::Each => {}
                BurstAlert::FirstPastLimit => text.push_str(&format!(
                    "; more than {BURST_ALERTS_PER_MINUTE} bursts within a minute: the rest of \
                     this minute's are not raised one by one (see the authentication failures \
                     in the audit trail and on /metrics)"
                )),
                BurstAlert::Past => continue,
            }
            let mut alert = Alert::new(AlertCode::AuthFailureBurst, burst.subject.clone(), text);
            alert.tenant = event.tenant.clone();
            alert.human = event.human.clone();
            alert.agent = event.agent.clone();
            alert.credential = event.credential.clone();
            alert.source = event.source.clone();
            alert.tool = event.tool.clone();
            self.alerts
                .raise_in_background(log.clone(), alert, event.ts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_fourth_failure_within_the_window_alerts_once() {
        let bursts = AuthBursts::new(3, Duration::from_secs(60));
        let key = subjects(&["credential gk_1"]);
        for t in [0, 10_000, 20_000] {
            assert!(bursts.failed(&key, Timestamp(t)).is_empty());
        }
        assert_eq!(
            bursts.failed(&key, Timestamp(30_000)),
            vec![Burst {
                subject: "credential gk_1".into(),
                failures: 4
            }]
        );
        // The burst goes on: no second alert within the window.
        assert!(bursts.failed(&key, Timestamp(31_000)).is_empty());
        assert!(bursts.failed(&key, Timestamp(89_000)).is_empty());
        // A window after the alert, four more within 60 s: another alert.
        let later: usize = [90_000, 91_000, 92_000]
            .iter()
            .map(|t| bursts.failed(&key, Timestamp(*t)).len())
            .sum();
        assert_eq!(later, 1);
    }

    #[test]
    fn an_invented_key_id_is_no_subject_and_refusals_under_a_lock_are_benign() {
        let mut event = gatehouse_audit::EventBuilder::new(
            AuditKind::Authentication,
            Outcome::Failure,
            Timestamp(1),
        )
        .credential(Some("random123".into()))
        .source(Some("192.0.2.9".into()))
        .reason("unknown_credential")
        .build();
        assert_eq!(subjects_of(&event), ["source 192.0.2.9"]);
        event.reason = Some("invalid_secret".into());
        assert_eq!(
            subjects_of(&event),
            ["credential random123", "source 192.0.2.9"]
        );
        assert!(BENIGN_FAILURES.contains(&"locked"));
    }

    #[test]
    fn a_long_name_is_cut_before_it_becomes_a_subject() {
        let event = gatehouse_audit::EventBuilder::new(
            AuditKind::Authentication,
            Outcome::Failure,
            Timestamp(1),
        )
        .human(&"x".repeat(3_000))
        .build();
        let subjects = subjects_of(&event);
        assert_eq!(subjects.len(), 1);
        assert!(subjects[0].starts_with("user xxx"), "{}", subjects[0]);
        assert!(subjects[0].len() < 320, "{} bytes", subjects[0].len());
    }

    #[test]
    fn past_twenty_bursts_a_minute_one_alert_says_so_then_none() {
        let budget = BurstAlertBudget::default();
        let t = Timestamp(1_000_000);
        for _ in 0..BURST_ALERTS_PER_MINUTE {
            assert_eq!(budget.take(t), BurstAlert::Each);
        }
        assert_eq!(budget.take(t), BurstAlert::FirstPastLimit);
        assert_eq!(budget.take(t), BurstAlert::Past);
        assert_eq!(budget.take(t.plus_millis(60_000)), BurstAlert::Each);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_alert() {
        let bursts = AuthBursts::new(3, Duration::from_secs(60));
        let key = subjects(&["user alice"]);
        for t in (0..20).map(|i| i * 21_000) {
            assert!(bursts.failed(&key, Timestamp(t)).is_empty(), "at {t}");
        }
    }

    #[test]
    fn each_subject_counts_on_its_own() {
        let bursts = AuthBursts::new(3, Duration::from_secs(60));
        // One source trying four keys: the source alerts, no key does.
        let mut alerted = Vec::new();
        for (i, t) in [0, 1, 2, 3].iter().enumerate() {
            let subjects = vec![format!("credential gk_{i}"), "source 192.0.2.1".into()];
            alerted.extend(bursts.failed(&subjects, Timestamp(*t)));
        }
        assert_eq!(alerted.len(), 1);
        assert_eq!(alerted[0].subject, "source 192.0.2.1");
    }

    #[test]
    fn a_spray_over_more_subjects_than_are_followed_is_a_burst_itself() {
        let bursts = AuthBursts::with_capacity(3, Duration::from_secs(60), 4);
        let mut alerted = Vec::new();
        // Each failure from a new source with a new key: the table fills,
        // then every further failure counts under one subject.
        for i in 0..10 {
            let subjects = vec![format!("credential gk_{i}"), format!("source 192.0.2.{i}")];
            alerted.extend(bursts.failed(&subjects, Timestamp(i)));
        }
        assert_eq!(alerted.len(), 1, "{alerted:?}");
        assert_eq!(alerted[0].subject, UNTRACKED_SUBJECTS);
        assert_eq!(alerted[0].failures, 4);
        // Subjects already followed still count on their own.
        let tracked = subjects(&["credential gk_0"]);
        let mut again = Vec::new();
        for t in 10..13 {
            again.extend(bursts.failed(&tracked, Timestamp(t)));
        }
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].subject, "credential gk_0");
    }

    #[test]
    fn a_threshold_of_zero_is_off() {
        let bursts = AuthBursts::new(0, Duration::from_secs(60));
        let key = subjects(&["credential gk_1"]);
        for t in 0..10 {
            assert!(bursts.failed(&key, Timestamp(t)).is_empty());
        }
    }

    #[test]
    fn subjects_are_the_credential_the_user_and_the_network() {
        let event = gatehouse_audit::EventBuilder::new(
            AuditKind::Authentication,
            Outcome::Failure,
            Timestamp(1),
        )
        .credential(Some("gk_1".into()))
        .human("alice")
        .source(Some("2001:db8:1:2:3:4:5:6".into()))
        .build();
        assert_eq!(
            subjects_of(&event),
            ["credential gk_1", "user alice", "source 2001:db8:1:2::/64"]
        );
        let stdio = gatehouse_audit::EventBuilder::new(
            AuditKind::Authentication,
            Outcome::Failure,
            Timestamp(1),
        )
        .source(Some("stdio".into()))
        .build();
        assert!(subjects_of(&stdio).is_empty());
    }
}
