//! Lockout of the login page after failed passwords, per name and source.
//!
//! A name is counted twice: per (name, source) and per name from every
//! source. Five failures from one source lock that source out of the name;
//! only a hundred failures of the name within the window lock it for
//! everyone. So one guesser anywhere can no longer keep the admin out of
//! the browser: it locks only itself out. The price is that a guesser with
//! many addresses gets up to a hundred guesses per name per window before
//! the name locks (and can then keep it locked while it keeps failing from
//! many addresses); with Argon2id and passwords of at least 12 characters
//! that is far from enough to find one. Unknown names are counted and
//! locked exactly like real ones, so a lock reveals nothing. The
//! per-address rate limit of the login form stays on top.

use gatehouse_authn::LockSubject;
use gatehouse_core::Timestamp;
use gatehouse_store::{AuthorizationStore, LoginCounter, StoreResult};

/// Failures count within this window, from the first one.
pub const FAILURE_WINDOW_MS: i64 = 15 * 60_000;
/// Failures of one name from one source before that source is locked out
/// of the name.
pub const SOURCE_LOCK_AFTER_FAILURES: u32 = 5;
/// Failures of one name from every source before the name is locked for
/// everyone.
pub const NAME_LOCK_AFTER_FAILURES: u32 = 100;
const FIRST_LOCK_MS: i64 = 30_000;
const MAX_LOCK_MS: i64 = 15 * 60_000;

/// How long to lock after `failures` failures: nothing below `threshold`,
/// then 30 s doubling per further failure, at most 15 minutes.
pub fn lockout_ms(failures: u32, threshold: u32) -> i64 {
    if failures < threshold {
        return 0;
    }
    let doublings = (failures - threshold).min(10);
    (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS)
}

/// The counted source of a login: an IPv4 address or an IPv6 /64 (as the
/// credential lockout counts them), or `unknown` without an address.
pub fn login_source(source: Option<&str>) -> String {
    match source.and_then(LockSubject::source) {
        Some(LockSubject::Source(text)) => text,
        _ => "unknown".to_string(),
    }
}

/// A lock in force for a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginLock {
    /// This source is locked out of the name.
    Source { retry_after_secs: u64 },
    /// The name is locked for every source.
    Name { retry_after_secs: u64 },
}

impl LoginLock {
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            LoginLock::Source { retry_after_secs } | LoginLock::Name { retry_after_secs } => {
                *retry_after_secs
            }
        }
    }

    /// The audit reason of an attempt refused by this lock.
    pub fn reason(&self) -> &'static str {
        match self {
            LoginLock::Source { .. } => "locked",
            LoginLock::Name { .. } => "name_locked",
        }
    }
}

fn retry_after(until: Timestamp, now: Timestamp) -> u64 {
    gatehouse_core::retry_after_secs(until.as_millis().saturating_sub(now.as_millis()))
}

/// The lock that refuses an attempt for `username` from `source` now, if
/// any; the lock of the name wins, as it says more.
pub async fn check(
    store: &dyn AuthorizationStore,
    username: &str,
    source: &str,
    now: Timestamp,
) -> StoreResult<Option<LoginLock>> {
    let name = store.login_throttle(username, LoginCounter::Name).await?;
    if let Some(t) = name.filter(|t| t.locked_until > now) {
        return Ok(Some(LoginLock::Name {
            retry_after_secs: retry_after(t.locked_until, now),
        }));
    }
    let pair = store
        .login_throttle(username, LoginCounter::Source(source))
        .await?;
    Ok(pair
        .filter(|t| t.locked_until > now)
        .map(|t| LoginLock::Source {
            retry_after_secs: retry_after(t.locked_until, now),
        }))
}

/// The locks one failure set, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NewLocks {
    /// The source was locked out of the name until then.
    pub source: Option<Timestamp>,
    /// The name was locked for everyone until then, after this many failures.
    pub name: Option<(Timestamp, u32)>,
}

/// Counts a failed attempt for the source and for the name, and locks
/// whichever reached its threshold.
pub async fn record_failure(
    store: &dyn AuthorizationStore,
    username: &str,
    source: &str,
    now: Timestamp,
) -> StoreResult<NewLocks> {
    let mut locks = NewLocks::default();
    let from_source = store
        .record_login_failure(
            username,
            LoginCounter::Source(source),
            now,
            FAILURE_WINDOW_MS,
        )
        .await?;
    let lock = lockout_ms(from_source, SOURCE_LOCK_AFTER_FAILURES);
    if lock > 0 {
        let until = now.plus_millis(lock);
        store
            .lock_login(username, LoginCounter::Source(source), until)
            .await?;
        locks.source = Some(until);
    }
    let of_name = store
        .record_login_failure(username, LoginCounter::Name, now, FAILURE_WINDOW_MS)
        .await?;
    let lock = lockout_ms(of_name, NAME_LOCK_AFTER_FAILURES);
    if lock > 0 {
        let until = now.plus_millis(lock);
        store
            .lock_login(username, LoginCounter::Name, until)
            .await?;
        locks.name = Some((until, of_name));
    }
    Ok(locks)
}

/// After a successful sign-in: the source's own failures are forgotten.
/// The name's count stays: its owner signing in from one place says
/// nothing about guessers elsewhere.
pub async fn record_success(
    store: &dyn AuthorizationStore,
    username: &str,
    source: &str,
) -> StoreResult<()> {
    store
        .clear_login_counter(username, LoginCounter::Source(source))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_store::SqliteStore;

    const NOW: Timestamp = Timestamp(1_000_000);

    #[test]
    fn lockout_starts_at_the_threshold_and_doubles_to_a_cap() {
        assert_eq!(lockout_ms(4, 5), 0);
        assert_eq!(lockout_ms(5, 5), 30_000);
        assert_eq!(lockout_ms(6, 5), 60_000);
        assert_eq!(lockout_ms(9, 5), 480_000);
        assert_eq!(lockout_ms(10, 5), MAX_LOCK_MS);
        assert_eq!(lockout_ms(u32::MAX, 5), MAX_LOCK_MS);
        assert_eq!(lockout_ms(99, NAME_LOCK_AFTER_FAILURES), 0);
        assert_eq!(lockout_ms(100, NAME_LOCK_AFTER_FAILURES), 30_000);
    }

    #[test]
    fn sources_count_like_the_credential_lockout() {
        assert_eq!(login_source(Some("192.0.2.7")), "192.0.2.7");
        assert_eq!(login_source(Some("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(
            login_source(Some("2001:db8:1:2:3:4:5:6")),
            login_source(Some("2001:db8:1:2:ffff::1"))
        );
        assert_eq!(login_source(Some("2001:db8:1:2::9")), "2001:db8:1:2::/64");
        assert_eq!(login_source(None), "unknown");
        assert_eq!(login_source(Some("not an address")), "unknown");
    }

    #[tokio::test]
    async fn five_failures_lock_only_that_source_out_of_the_name() {
        let store = SqliteStore::in_memory().await.unwrap();
        for attempt in 1..=4 {
            let locks = record_failure(&store, "admin", "192.0.2.1", NOW)
                .await
                .unwrap();
            assert_eq!(locks, NewLocks::default(), "attempt {attempt}");
        }
        let locks = record_failure(&store, "admin", "192.0.2.1", NOW)
            .await
            .unwrap();
        assert_eq!(locks.source, Some(NOW.plus_millis(30_000)));
        assert_eq!(locks.name, None);
        assert_eq!(
            check(&store, "admin", "192.0.2.1", NOW).await.unwrap(),
            Some(LoginLock::Source {
                retry_after_secs: 30
            })
        );
        // Another source, and another name from this source, are not locked.
        assert_eq!(
            check(&store, "admin", "192.0.2.2", NOW).await.unwrap(),
            None
        );
        assert_eq!(
            check(&store, "alice", "192.0.2.1", NOW).await.unwrap(),
            None
        );
        // The lock ends.
        assert_eq!(
            check(&store, "admin", "192.0.2.1", NOW.plus_millis(30_000))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_hundred_failures_from_many_sources_lock_the_name_for_everyone() {
        let store = SqliteStore::in_memory().await.unwrap();
        let mut name_lock = None;
        for i in 0..100 {
            let source = format!("192.0.2.{}", i / 4);
            let locks = record_failure(&store, "admin", &source, NOW).await.unwrap();
            assert_eq!(locks.source, None, "four per source never lock one");
            if i < 99 {
                assert_eq!(locks.name, None, "failure {}", i + 1);
            }
            name_lock = locks.name;
        }
        assert_eq!(name_lock, Some((NOW.plus_millis(30_000), 100)));
        assert_eq!(
            check(&store, "admin", "198.51.100.1", NOW).await.unwrap(),
            Some(LoginLock::Name {
                retry_after_secs: 30
            })
        );
        // Each further failure doubles the lock, up to 15 minutes.
        let later = NOW.plus_millis(30_000);
        let locks = record_failure(&store, "admin", "198.51.100.2", later)
            .await
            .unwrap();
        assert_eq!(locks.name, Some((later.plus_millis(60_000), 101)));
        // Unknown names count the same way.
        for i in 0..100 {
            record_failure(&store, "nobody", &format!("203.0.113.{}", i / 4), NOW)
                .await
                .unwrap();
        }
        assert!(matches!(
            check(&store, "nobody", "198.51.100.1", NOW).await.unwrap(),
            Some(LoginLock::Name { .. })
        ));
    }

    #[tokio::test]
    async fn signing_in_forgets_only_the_sources_own_failures() {
        let store = SqliteStore::in_memory().await.unwrap();
        for _ in 0..4 {
            record_failure(&store, "admin", "192.0.2.1", NOW)
                .await
                .unwrap();
        }
        record_success(&store, "admin", "192.0.2.1").await.unwrap();
        let from_source = store
            .login_throttle("admin", LoginCounter::Source("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(from_source, None);
        let of_name = store
            .login_throttle("admin", LoginCounter::Name)
            .await
            .unwrap();
        assert_eq!(of_name.map(|t| t.failures), Some(4));
    }
}
