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

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use gatehouse_authn::LockSubject;
use gatehouse_core::Timestamp;
use gatehouse_store::{AuthorizationStore, LoginCounter, StoreResult};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

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

/// Names and sources with an attempt in flight at most; beyond, an attempt
/// is refused as rate limited. Each entry lives only while its attempts
/// run, and the per-source rate limit keeps each source to a few.
const MAX_TURNS_IN_FLIGHT: usize = 10_000;

/// One attempt at a time per (name, source) on this instance.
///
/// The lock is checked before the (slow) password hash and the failure
/// counted after it, so attempts sent together would all pass the check
/// before the first failure is counted: thirty at once would be thirty
/// guesses, not five. Taking turns makes each attempt see the failures of
/// the ones before it. Counting the attempt as a failure before hashing
/// would also do it, but would count every good sign-in towards the lock
/// of the name (which a success does not clear). Other instances are not
/// serialized with this one; they add at most their own few guesses each.
#[derive(Default)]
pub struct LoginTurns {
    waiting: Mutex<HashMap<(String, String), Queue>>,
}

/// The attempts of one (name, source): whoever holds the lock has the turn.
type Queue = Arc<AsyncMutex<()>>;

/// A place in the queue of one (name, source); leaving it removes the
/// queue when nobody else is in it, even if the attempt was cancelled
/// while it waited.
struct Place<'a> {
    turns: &'a LoginTurns,
    key: (String, String),
    queue: Option<Queue>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut waiting = self
            .turns
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.queue = None;
        // Every holder clones the queue under this mutex, so the count
        // cannot grow while it is read here.
        if waiting
            .get(&self.key)
            .is_some_and(|queue| Arc::strong_count(queue) == 1)
        {
            waiting.remove(&self.key);
        }
    }
}

/// The turn of one attempt; the next one starts when it is dropped.
pub struct Turn<'a> {
    // Declared first, so dropped before the place is left.
    _guard: OwnedMutexGuard<()>,
    _place: Place<'a>,
}

impl LoginTurns {
    /// Waits for the turn of `username` from `source`; `None` when too
    /// many names and sources have attempts in flight.
    pub async fn take(&self, username: &str, source: &str) -> Option<Turn<'_>> {
        let key = (username.to_string(), source.to_string());
        let queue = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match waiting.get(&key) {
                Some(queue) => Arc::clone(queue),
                None if waiting.len() >= MAX_TURNS_IN_FLIGHT => return None,
                None => Arc::clone(waiting.entry(key.clone()).or_default()),
            }
        };
        let place = Place {
            turns: self,
            key,
            queue: Some(Arc::clone(&queue)),
        };
        let guard = queue.lock_owned().await;
        Some(Turn {
            _guard: guard,
            _place: place,
        })
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// What one login attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Refused by a lock; the password was not checked.
    Locked(LoginLock),
    /// The password was right (and the source's failures forgotten).
    Verified(T),
    /// Wrong: counted, with the locks the failure set.
    Failed(NewLocks),
}

/// One login attempt of `username` from `source`, in its turn: the lock
/// check, then `verify` (the password hash; `Some` when right), then the
/// count. `None` when no turn could be had (see `LoginTurns::take`).
pub async fn attempt<T>(
    store: &dyn AuthorizationStore,
    turns: &LoginTurns,
    username: &str,
    source: &str,
    now: Timestamp,
    verify: impl Future<Output = StoreResult<Option<T>>>,
) -> StoreResult<Option<Attempt<T>>> {
    let Some(_turn) = turns.take(username, source).await else {
        return Ok(None);
    };
    if let Some(lock) = check(store, username, source, now).await? {
        return Ok(Some(Attempt::Locked(lock)));
    }
    match verify.await? {
        Some(verified) => {
            record_success(store, username, source).await?;
            Ok(Some(Attempt::Verified(verified)))
        }
        None => Ok(Some(Attempt::Failed(
            record_failure(store, username, source, now).await?,
        ))),
    }
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
    async fn attempts_sent_together_get_no_more_guesses_than_the_lock_allows() {
        let store = Arc::new(SqliteStore::in_memory().await.unwrap());
        let turns = Arc::new(LoginTurns::default());
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let store = Arc::clone(&store);
            let turns = Arc::clone(&turns);
            attempts.spawn(async move {
                // A wrong password, slow to check as Argon2 is.
                let verify = async {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Ok(None::<()>)
                };
                attempt(store.as_ref(), &turns, "admin", "192.0.2.1", NOW, verify).await
            });
        }
        let (mut failed, mut locked) = (0, 0);
        while let Some(done) = attempts.join_next().await {
            match done.unwrap().unwrap().unwrap() {
                Attempt::Failed(_) => failed += 1,
                Attempt::Locked(LoginLock::Source { .. }) => locked += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((failed, locked), (SOURCE_LOCK_AFTER_FAILURES, 15));
        // Nothing stays behind once the attempts are done.
        assert_eq!(turns.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_attempt_leaves_no_queue_behind() {
        let turns = LoginTurns::default();
        let first = turns.take("admin", "192.0.2.1").await.unwrap();
        // The second waits behind the first and is given up.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            turns.take("admin", "192.0.2.1"),
        )
        .await;
        assert!(waiting.is_err());
        assert_eq!(turns.in_flight(), 1);
        drop(first);
        assert_eq!(turns.in_flight(), 0);
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
