use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use gatehouse_store::{
    AccountSeen, ApprovalCall, ApprovalDecision, ApprovalRecord, ApprovalRequester, AuthLock,
    GatingStore, OperationBinding, SqliteStore, StoreError, StoreResult, TaskGrantRecord,
};
use tokio::sync::Notify;

use crate::{AuthnError, LockSubject, LockoutPolicy, Lockouts};

const KEY: &str = "0123456789ab";
const OTHER_KEY: &str = "ba9876543210";
const SOURCE: &str = "192.0.2.7";

/// An in-memory SQLite store that can be taken down, counts its reads of
/// the lock list, and can hold a read until released.
struct TestStore {
    inner: SqliteStore,
    down: AtomicBool,
    hold: AtomicBool,
    /// Notified when a held read has read the store.
    entered: Notify,
    release: Notify,
    reads: AtomicUsize,
}

impl TestStore {
    async fn new() -> Arc<TestStore> {
        Arc::new(TestStore {
            inner: SqliteStore::in_memory().await.unwrap(),
            down: AtomicBool::new(false),
            hold: AtomicBool::new(false),
            entered: Notify::new(),
            release: Notify::new(),
            reads: AtomicUsize::new(0),
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn up(&self) -> StoreResult<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test store is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl GatingStore for TestStore {
    async fn insert_task_grant(&self, grant: &TaskGrantRecord) -> StoreResult<()> {
        self.inner.insert_task_grant(grant).await
    }
    async fn task_grant(&self, id: &str) -> StoreResult<Option<TaskGrantRecord>> {
        self.inner.task_grant(id).await
    }
    async fn list_task_grants(
        &self,
        tenant: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<TaskGrantRecord>> {
        self.inner.list_task_grants(tenant, now).await
    }
    async fn revoke_task_grant(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        self.inner.revoke_task_grant(id, now).await
    }
    async fn insert_approval(&self, approval: &ApprovalRecord) -> StoreResult<()> {
        self.inner.insert_approval(approval).await
    }
    async fn approval(&self, id: &str) -> StoreResult<Option<ApprovalRecord>> {
        self.inner.approval(id).await
    }
    async fn list_approvals(
        &self,
        tenant: Option<&str>,
        pending_only: bool,
        now: Timestamp,
    ) -> StoreResult<Vec<ApprovalRecord>> {
        self.inner.list_approvals(tenant, pending_only, now).await
    }
    async fn pending_approval_for(
        &self,
        call: &ApprovalCall<'_>,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        self.inner.pending_approval_for(call, now).await
    }
    async fn count_pending_approvals(
        &self,
        tenant: &str,
        requester: &ApprovalRequester<'_>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        self.inner
            .count_pending_approvals(tenant, requester, now)
            .await
    }
    async fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
        decided_by: &str,
        account: Option<&AccountSeen>,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        self.inner
            .decide_approval(id, decision, decided_by, account, now)
            .await
    }
    async fn redeem_operation_token(
        &self,
        binding: &OperationBinding,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        self.inner.redeem_operation_token(binding, now).await
    }
    async fn approval_by_token(&self, token_hash: &str) -> StoreResult<Option<ApprovalRecord>> {
        self.inner.approval_by_token(token_hash).await
    }
    async fn record_auth_failure(
        &self,
        subject: &str,
        now: Timestamp,
        window_ms: i64,
    ) -> StoreResult<u32> {
        self.up()?;
        self.inner
            .record_auth_failure(subject, now, window_ms)
            .await
    }
    async fn lock_auth(&self, subject: &str, until: Timestamp) -> StoreResult<()> {
        self.up()?;
        self.inner.lock_auth(subject, until).await
    }
    async fn auth_locks(&self, now: Timestamp) -> StoreResult<Vec<AuthLock>> {
        self.up()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        let locks = self.inner.auth_locks(now).await;
        if self.hold.load(Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        locks
    }
    async fn clear_auth_lock(&self, subject: &str) -> StoreResult<bool> {
        self.up()?;
        self.inner.clear_auth_lock(subject).await
    }
}

fn lockouts(store: &Arc<TestStore>) -> Arc<Lockouts> {
    Arc::new(Lockouts::new(
        Arc::clone(store) as Arc<dyn GatingStore>,
        LockoutPolicy::default(),
    ))
}

fn locked(retry_after_secs: u64) -> Result<(), AuthnError> {
    Err(AuthnError::Locked { retry_after_secs })
}

/// `n` failures of `key` from `source`, all at `now`; returns the locks set.
async fn fail(
    lockouts: &Lockouts,
    n: u32,
    source: Option<&str>,
    key: Option<&str>,
    now: Timestamp,
) -> Vec<crate::NewLock> {
    let mut set = Vec::new();
    for _ in 0..n {
        set.extend(lockouts.record_failure(source, key, now).await.unwrap());
    }
    set
}

#[test]
fn lock_time_starts_at_the_threshold_doubles_and_is_capped() {
    let policy = LockoutPolicy::default();
    assert_eq!(policy.lock_ms(4, 5), 0);
    assert_eq!(policy.lock_ms(5, 5), 30_000);
    assert_eq!(policy.lock_ms(6, 5), 60_000);
    assert_eq!(policy.lock_ms(9, 5), 480_000);
    // 960 s is over the cap of 15 minutes.
    assert_eq!(policy.lock_ms(10, 5), 900_000);
    assert_eq!(policy.lock_ms(u32::MAX, 5), 900_000);
    assert_eq!(policy.lock_ms(19, 20), 0);
    assert_eq!(policy.lock_ms(20, 20), 30_000);
    // A threshold of 0 switches the lock off.
    assert_eq!(policy.lock_ms(100, 0), 0);
}

#[test]
fn source_addresses_are_normalised() {
    let source = |a: &str| LockSubject::source(a).map(|s| s.to_string());
    assert_eq!(source("127.0.0.1").as_deref(), Some("source:127.0.0.1"));
    assert_eq!(
        source("::ffff:10.0.0.1").as_deref(),
        Some("source:10.0.0.1")
    );
    assert_eq!(source("::1").as_deref(), Some("source:::1"));
    // IPv6 counts by /64; the network form is accepted back.
    assert_eq!(
        source("2001:db8:1:2:aaaa::5").as_deref(),
        Some("source:2001:db8:1:2::/64")
    );
    assert_eq!(
        source("2001:db8:1:2::/64").as_deref(),
        Some("source:2001:db8:1:2::/64")
    );
    assert_eq!(source("stdio"), None);
    assert_eq!(source("10.0.0.1/64"), None);
    assert_eq!(source(""), None);
}

#[test]
fn subjects_round_trip_through_the_store_form() {
    let key = |source: Option<&str>| LockSubject::Key {
        id: KEY.into(),
        source: source.map(str::to_string),
    };
    for subject in [
        key(None),
        key(Some(SOURCE)),
        key(Some("2001:db8::/64")),
        LockSubject::Source("2001:db8::/64".into()),
    ] {
        assert_eq!(LockSubject::parse(&subject.to_string()), Some(subject));
    }
    assert_eq!(key(Some(SOURCE)).to_string(), format!("key:{KEY}@{SOURCE}"));
    assert_eq!(LockSubject::parse("user:alice"), None);
    assert_eq!(key(None).lock_reason(), "credential_locked");
    assert_eq!(
        LockSubject::Source(SOURCE.into()).lock_reason(),
        "source_locked"
    );
}

#[test]
fn only_guessing_counts_toward_a_lockout() {
    for counted in [
        AuthnError::Unknown,
        AuthnError::BadSecret,
        AuthnError::Malformed,
        AuthnError::InvalidToken("invalid_signature"),
    ] {
        assert!(counted.counts_toward_lockout(), "{counted:?}");
    }
    for ignored in [
        AuthnError::Missing,
        AuthnError::Revoked,
        AuthnError::Expired,
        AuthnError::TokenNotAccepted("token_expired"),
        AuthnError::Unavailable("db".into()),
        AuthnError::Locked {
            retry_after_secs: 1,
        },
    ] {
        assert!(!ignored.counts_toward_lockout(), "{ignored:?}");
    }
}

#[tokio::test]
async fn five_failures_lock_the_key_for_that_source_only() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    let now = Timestamp(1_000_000);
    assert!(
        fail(&lockouts, 4, Some(SOURCE), Some(KEY), now)
            .await
            .is_empty()
    );
    assert_eq!(lockouts.check(Some(SOURCE), Some(KEY), now).await, Ok(()));

    let set = fail(&lockouts, 1, Some(SOURCE), Some(KEY), now).await;
    assert_eq!(set.len(), 1);
    assert_eq!(
        set[0].subject,
        LockSubject::Key {
            id: KEY.into(),
            source: Some(SOURCE.into())
        }
    );
    assert_eq!(set[0].failures, 5);
    assert_eq!(set[0].locked_until, now.plus_millis(30_000));

    // Refused from that address; the key from another address (its own
    // agent's, while someone who knows its id guesses), and another key
    // from the same address, are not.
    assert_eq!(
        lockouts.check(Some(SOURCE), Some(KEY), now).await,
        locked(30)
    );
    assert_eq!(
        lockouts
            .check(Some("198.51.100.1"), Some(KEY), now.plus_millis(100))
            .await,
        Ok(())
    );
    assert_eq!(lockouts.check(None, Some(KEY), now).await, Ok(()));
    assert_eq!(
        lockouts.check(Some(SOURCE), Some(OTHER_KEY), now).await,
        Ok(())
    );
    // Retry-After is rounded up to whole seconds.
    assert_eq!(
        lockouts
            .check(Some(SOURCE), Some(KEY), now.plus_millis(29_001))
            .await,
        locked(1)
    );
    // The lock ends on its own.
    assert_eq!(
        lockouts
            .check(Some(SOURCE), Some(KEY), now.plus_millis(30_000))
            .await,
        Ok(())
    );
}

#[tokio::test]
async fn failures_from_many_sources_do_not_lock_a_key_for_another() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    let now = Timestamp(0);
    // Four failures from each of fifty addresses: two hundred guesses at
    // one key id, none of them locking anything.
    for host in 1..=50 {
        let source = format!("203.0.113.{host}");
        assert!(
            fail(&lockouts, 4, Some(&source), Some(KEY), now)
                .await
                .is_empty()
        );
    }
    assert_eq!(
        lockouts.check(Some("198.51.100.1"), Some(KEY), now).await,
        Ok(())
    );
}

#[tokio::test]
async fn each_failure_after_a_lock_doubles_the_next() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    let now = Timestamp(0);
    fail(&lockouts, 5, None, Some(KEY), now).await;
    // After the first lock, within the window, one more failure locks
    // twice as long.
    let later = now.plus_millis(31_000);
    assert_eq!(lockouts.check(None, Some(KEY), later).await, Ok(()));
    let set = fail(&lockouts, 1, None, Some(KEY), later).await;
    assert_eq!(set[0].failures, 6);
    assert_eq!(set[0].locked_until, later.plus_millis(60_000));
    assert_eq!(lockouts.check(None, Some(KEY), later).await, locked(60));
}

#[tokio::test]
async fn twenty_failures_lock_the_source_for_every_credential() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    let now = Timestamp(0);
    // Garbage without a key id counts for the source only.
    assert!(
        fail(&lockouts, 19, Some(SOURCE), None, now)
            .await
            .is_empty()
    );
    assert_eq!(lockouts.check(Some(SOURCE), Some(KEY), now).await, Ok(()));
    let set = fail(&lockouts, 1, Some(SOURCE), None, now).await;
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].subject, LockSubject::Source(SOURCE.into()));
    assert_eq!(set[0].subject.lock_reason(), "source_locked");

    assert_eq!(
        lockouts.check(Some(SOURCE), Some(KEY), now).await,
        locked(30)
    );
    assert_eq!(lockouts.check(Some(SOURCE), None, now).await, locked(30));
    assert_eq!(
        lockouts.check(Some("198.51.100.1"), Some(KEY), now).await,
        Ok(())
    );
    // Not an IP address (stdio): nothing to count or check.
    assert!(
        fail(&lockouts, 30, Some("stdio"), None, now)
            .await
            .is_empty()
    );
    assert_eq!(lockouts.check(Some("stdio"), None, now).await, Ok(()));
}

#[tokio::test]
async fn ipv6_sources_are_counted_by_their_64() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    let now = Timestamp(0);
    for host in 0..20 {
        let address = format!("2001:db8:0:1::{host:x}");
        fail(&lockouts, 1, Some(&address), None, now).await;
    }
    assert_eq!(
        lockouts.check(Some("2001:db8:0:1::ffff"), None, now).await,
        locked(30)
    );
    assert_eq!(
        lockouts.check(Some("2001:db8:0:2::1"), None, now).await,
        Ok(())
    );
}

#[tokio::test]
async fn locks_set_and_cleared_elsewhere_are_seen_after_a_second() {
    let store = TestStore::new().await;
    let here = lockouts(&store);
    let elsewhere = lockouts(&store);
    let t0 = Timestamp(0);
    assert_eq!(here.check(None, Some(KEY), t0).await, Ok(()));

    fail(&elsewhere, 5, None, Some(KEY), t0.plus_millis(100)).await;
    // The view read at t0 is used for a second...
    assert_eq!(
        here.check(None, Some(KEY), t0.plus_millis(999)).await,
        Ok(())
    );
    // ...then read again.
    assert_eq!(
        here.check(None, Some(KEY), t0.plus_millis(1_000)).await,
        locked(30)
    );

    // `gatehouse keys unlock` clears it in the store.
    assert!(
        store
            .inner
            .clear_auth_lock(
                &LockSubject::Key {
                    id: KEY.into(),
                    source: None
                }
                .to_string()
            )
            .await
            .unwrap()
    );
    assert_eq!(
        here.check(None, Some(KEY), t0.plus_millis(1_500)).await,
        locked(29)
    );
    assert_eq!(
        here.check(None, Some(KEY), t0.plus_millis(2_000)).await,
        Ok(())
    );
    // The failure count was cleared too: four more failures do not lock.
    assert!(
        fail(&here, 4, None, Some(KEY), t0.plus_millis(2_000))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn the_view_is_read_at_most_once_a_second() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    for millis in [0, 10, 500, 999] {
        lockouts
            .check(Some(SOURCE), Some(KEY), Timestamp(millis))
            .await
            .unwrap();
    }
    assert_eq!(store.reads(), 1);
    lockouts
        .check(Some(SOURCE), None, Timestamp(1_000))
        .await
        .unwrap();
    assert_eq!(store.reads(), 2);
    // Nothing to check: no read at all.
    lockouts
        .check(Some("stdio"), None, Timestamp(5_000))
        .await
        .unwrap();
    assert_eq!(store.reads(), 2);
}

#[tokio::test]
async fn one_request_refreshes_while_the_others_use_the_last_view() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    lockouts.check(None, Some(KEY), Timestamp(0)).await.unwrap();

    store.hold.store(true, Ordering::SeqCst);
    let refresher = tokio::spawn({
        let lockouts = Arc::clone(&lockouts);
        async move { lockouts.check(None, Some(KEY), Timestamp(2_000)).await }
    });
    store.entered.notified().await;
    // The refresh is under way: the others answer from the last view.
    for _ in 0..5 {
        assert_eq!(
            lockouts.check(None, Some(KEY), Timestamp(2_000)).await,
            Ok(())
        );
    }
    assert_eq!(store.reads(), 2);
    store.hold.store(false, Ordering::SeqCst);
    store.release.notify_one();
    assert_eq!(refresher.await.unwrap(), Ok(()));
    assert_eq!(store.reads(), 2);
}

#[tokio::test]
async fn a_lock_set_during_a_refresh_is_not_lost() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    lockouts.check(None, Some(KEY), Timestamp(0)).await.unwrap();

    // The refresh reads the store, then stalls before taking the result in.
    store.hold.store(true, Ordering::SeqCst);
    let refresher = tokio::spawn({
        let lockouts = Arc::clone(&lockouts);
        async move {
            lockouts
                .check(None, Some(OTHER_KEY), Timestamp(2_000))
                .await
        }
    });
    store.entered.notified().await;
    fail(&lockouts, 5, None, Some(KEY), Timestamp(2_000)).await;
    store.hold.store(false, Ordering::SeqCst);
    store.release.notify_one();
    assert_eq!(refresher.await.unwrap(), Ok(()));

    // The view now comes from that refresh, and still has the lock.
    assert_eq!(
        lockouts.check(None, Some(KEY), Timestamp(2_100)).await,
        locked(30)
    );
    assert_eq!(store.reads(), 2);
}

#[tokio::test]
async fn a_store_outage_fails_closed_once_the_view_is_too_old() {
    let store = TestStore::new().await;
    let lockouts = lockouts(&store);
    fail(&lockouts, 5, None, Some(KEY), Timestamp(0)).await;
    lockouts
        .check(None, Some(OTHER_KEY), Timestamp(0))
        .await
        .unwrap();

    store.down.store(true, Ordering::SeqCst);
    // Up to 10 s the last view still answers, locks included.
    assert_eq!(
        lockouts.check(None, Some(KEY), Timestamp(9_000)).await,
        locked(21)
    );
    assert_eq!(
        lockouts
            .check(None, Some(OTHER_KEY), Timestamp(10_000))
            .await,
        Ok(())
    );
    // Beyond that nothing passes.
    assert!(matches!(
        lockouts
            .check(None, Some(OTHER_KEY), Timestamp(10_001))
            .await,
        Err(AuthnError::Unavailable(_))
    ));
    // Nor can failures be counted.
    assert!(matches!(
        lockouts
            .record_failure(None, Some(OTHER_KEY), Timestamp(10_001))
            .await,
        Err(AuthnError::Unavailable(_))
    ));

    store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        lockouts
            .check(None, Some(OTHER_KEY), Timestamp(10_002))
            .await,
        Ok(())
    );
}

#[tokio::test]
async fn without_any_view_a_store_outage_fails_closed() {
    let store = TestStore::new().await;
    store.down.store(true, Ordering::SeqCst);
    let lockouts = lockouts(&store);
    assert!(matches!(
        lockouts.check(Some(SOURCE), None, Timestamp(0)).await,
        Err(AuthnError::Unavailable(_))
    ));
}
