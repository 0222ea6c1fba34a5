//! Lockout after repeated authentication failures, per API key id from one
//! source address and per source address, with exponential backoff.
//!
//! A key is locked only for the source that guessed at it. Its secret has
//! 256 bits, so no number of guesses finds it, and a lock for every source
//! would protect nothing while letting anyone who knows the key's public id
//! (it appears in task tokens, identity assertions and audit records) keep
//! the key's own agent locked out. The source lock bounds what one address
//! may try across keys.
//!
//! Counts and locks live in the store, so every instance sharing it sees
//! them. Reading the store on every request would cost a query per request,
//! so each instance keeps a view of the active locks, read again when it is
//! older than a second. A lock this instance sets is in its view at once; a
//! lock set or cleared elsewhere (another instance, `gatehouse keys unlock`)
//! is seen within about a second.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gatehouse_core::Timestamp;
use gatehouse_store::{GatingStore, StoreError};

use crate::AuthnError;

/// The view of active locks is read again from the store when older than this.
const REFRESH_MS: i64 = 1_000;
/// When the store cannot be read, an older view is still used up to this
/// age; beyond it authentication fails closed.
const MAX_STALE_MS: i64 = 10_000;

/// When repeated failures lock a credential or a source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures count toward a lock within this window (from the first).
    pub window_ms: i64,
    /// Failures of one API key id from one source that lock the key for
    /// that source. 0 switches the lock off.
    pub key_threshold: u32,
    /// Failures from one source address that lock it. Higher than the key
    /// threshold: several clients may share an address. 0 switches it off.
    pub source_threshold: u32,
    /// The first lock; each further failure doubles it.
    pub first_lock_ms: i64,
    pub max_lock_ms: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            window_ms: 15 * 60_000,
            key_threshold: 5,
            source_threshold: 20,
            first_lock_ms: 30_000,
            max_lock_ms: 15 * 60_000,
        }
    }
}

impl LockoutPolicy {
    /// How long to lock after `failures` failures: nothing below the
    /// threshold, then `first_lock_ms * 2^(failures - threshold)`, at most
    /// `max_lock_ms`.
    pub fn lock_ms(&self, failures: u32, threshold: u32) -> i64 {
        if threshold == 0 || failures < threshold {
            return 0;
        }
        // Beyond 30 doublings every sensible cap is reached; the bound keeps
        // the shift in range.
        let doublings = (failures - threshold).min(30);
        self.first_lock_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.max_lock_ms)
    }

    fn threshold(&self, subject: &LockSubject) -> u32 {
        match subject {
            LockSubject::Key { .. } => self.key_threshold,
            LockSubject::Source(_) => self.source_threshold,
        }
    }
}

/// What failures are counted for and what gets locked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockSubject {
    /// The public id of an API key, as presented from one source (see
    /// `source`), or from none (stdio).
    Key { id: String, source: Option<String> },
    /// A source address: an IPv4 address, or an IPv6 /64 network.
    Source(String),
}

impl LockSubject {
    /// The subject for the address a request came from; `None` when it is
    /// not an IP address (stdio). An IPv4-mapped IPv6 address counts as the
    /// IPv4 address. Other IPv6 addresses count by their /64, since one host
    /// usually holds a whole /64 and could otherwise rotate past the limit.
    /// `<address>/64` is accepted too, as `gatehouse keys locks` shows it.
    pub fn source(address: &str) -> Option<LockSubject> {
        gatehouse_core::source_network(address).map(LockSubject::Source)
    }

    /// Reads the store's form back (`key:<id>`, `key:<id>@<address>`,
    /// `source:<address>`).
    pub fn parse(stored: &str) -> Option<LockSubject> {
        if let Some(key) = stored.strip_prefix("key:") {
            return Some(match key.split_once('@') {
                Some((id, source)) => LockSubject::Key {
                    id: id.to_string(),
                    source: Some(source.to_string()),
                },
                None => LockSubject::Key {
                    id: key.to_string(),
                    source: None,
                },
            });
        }
        stored
            .strip_prefix("source:")
            .map(|source| LockSubject::Source(source.to_string()))
    }

    /// The audit reason when this subject gets locked.
    pub fn lock_reason(&self) -> &'static str {
        match self {
            LockSubject::Key { .. } => "credential_locked",
            LockSubject::Source(_) => "source_locked",
        }
    }
}

/// The store's form of the subject.
impl fmt::Display for LockSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockSubject::Key { id, source: None } => write!(f, "key:{id}"),
            LockSubject::Key {
                id,
                source: Some(source),
            } => write!(f, "key:{id}@{source}"),
            LockSubject::Source(source) => write!(f, "source:{source}"),
        }
    }
}

/// A lock this instance has just set, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLock {
    pub subject: LockSubject,
    pub failures: u32,
    pub locked_until: Timestamp,
}

#[derive(Default)]
struct View {
    /// Subject (store form) → end of its lock.
    locks: HashMap<String, Timestamp>,
    /// When `locks` was read from the store; `None` before the first read.
    read_at: Option<Timestamp>,
    /// Locks this instance set since the current refresh started: that
    /// refresh may have read the store before they were written, and must
    /// not drop them.
    set_during_refresh: Vec<(String, Timestamp)>,
}

impl View {
    fn add(&mut self, subject: String, until: Timestamp) {
        let entry = self.locks.entry(subject).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn is_fresh(&self, now: Timestamp) -> bool {
        self.read_at
            .is_some_and(|at| (0..REFRESH_MS).contains(&(now.as_millis() - at.as_millis())))
    }

    fn is_usable(&self, now: Timestamp) -> bool {
        self.read_at
            .is_some_and(|at| now.as_millis() - at.as_millis() <= MAX_STALE_MS)
    }
}

pub struct Lockouts {
    store: Arc<dyn GatingStore>,
    policy: LockoutPolicy,
    view: Mutex<View>,
    /// Held by the one request that refreshes the view.
    refreshing: tokio::sync::Mutex<()>,
}

fn unavailable(error: StoreError) -> AuthnError {
    AuthnError::Unavailable(error.to_string())
}

/// The subjects a request counts for: its source address, when it is one,
/// and the API key id it presented, if any, from that source.
fn subjects(source: Option<&str>, key_id: Option<&str>) -> Vec<LockSubject> {
    let source = source.and_then(gatehouse_core::source_network);
    let mut subjects = Vec::with_capacity(2);
    if let Some(id) = key_id {
        subjects.push(LockSubject::Key {
            id: id.to_string(),
            source: source.clone(),
        });
    }
    if let Some(source) = source {
        subjects.push(LockSubject::Source(source));
    }
    subjects
}

impl Lockouts {
    pub fn new(store: Arc<dyn GatingStore>, policy: LockoutPolicy) -> Self {
        Lockouts {
            store,
            policy,
            view: Mutex::new(View::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    fn view(&self) -> MutexGuard<'_, View> {
        // The view is a cache that every critical section leaves
        // consistent; a panic elsewhere must not disable authentication.
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses a request whose API key id or source address is locked. Runs
    /// before the secret is checked, so a locked key is refused even with
    /// the right secret, and a locked source for every credential.
    pub async fn check(
        &self,
        source: Option<&str>,
        key_id: Option<&str>,
        now: Timestamp,
    ) -> Result<(), AuthnError> {
        let subjects = subjects(source, key_id);
        if subjects.is_empty() {
            return Ok(());
        }
        self.refresh_if_stale(now).await?;
        let view = self.view();
        let until = subjects
            .iter()
            .filter_map(|subject| view.locks.get(&subject.to_string()))
            .copied()
            .filter(|until| *until > now)
            .max();
        match until {
            None => Ok(()),
            Some(until) => Err(AuthnError::Locked {
                retry_after_secs: gatehouse_core::retry_after_secs(
                    until.as_millis().saturating_sub(now.as_millis()),
                ),
            }),
        }
    }

    /// Counts a failure that looks like guessing (see
    /// `AuthnError::counts_toward_lockout`) for the source address and the
    /// API key id, and locks those that reached their threshold. Returns
    /// the locks it set, for the audit log.
    pub async fn record_failure(
        &self,
        source: Option<&str>,
        key_id: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<NewLock>, AuthnError> {
        let mut locked = Vec::new();
        for subject in subjects(source, key_id) {
            let stored = subject.to_string();
            let failures = self
                .store
                .record_auth_failure(&stored, now, self.policy.window_ms)
                .await
                .map_err(unavailable)?;
            let lock_ms = self
                .policy
                .lock_ms(failures, self.policy.threshold(&subject));
            if lock_ms == 0 {
                continue;
            }
            let until = now.plus_millis(lock_ms);
            self.store
                .lock_auth(&stored, until)
                .await
                .map_err(unavailable)?;
            {
                let mut view = self.view();
                view.add(stored.clone(), until);
                view.set_during_refresh.push((stored, until));
            }
            locked.push(NewLock {
                subject,
                failures,
                locked_until: until,
            });
        }
        Ok(locked)
    }

    /// Reads the active locks again when the view is older than a second.
    /// One request reads at a time; the others use the last view meanwhile,
    /// unless it is too old (or there is none yet): then they wait.
    async fn refresh_if_stale(&self, now: Timestamp) -> Result<(), AuthnError> {
        if self.view().is_fresh(now) {
            return Ok(());
        }
        let _refreshing = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if self.view().is_usable(now) {
                    return Ok(());
                }
                self.refreshing.lock().await
            }
        };
        // Another request may have refreshed it while this one waited.
        if self.view().is_fresh(now) {
            return Ok(());
        }
        self.view().set_during_refresh.clear();
        match self.store.auth_locks(now).await {
            Ok(locks) => {
                let mut view = self.view();
                let set_during_refresh = std::mem::take(&mut view.set_during_refresh);
                view.locks = locks
                    .into_iter()
                    .map(|lock| (lock.subject, lock.locked_until))
                    .collect();
                for (subject, until) in set_during_refresh {
                    view.add(subject, until);
                }
                view.read_at = Some(now);
                Ok(())
            }
            Err(e) if self.view().is_usable(now) => {
                tracing::warn!(error = %e, "cannot read authentication locks; using the last view");
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}
