//! A fixed-window rate limiter keyed by string: client addresses at the
//! authorization server (registration, logins, user codes, `/authorize`),
//! and (principal, tool) or (principal, role) for the policy's limits on
//! tool calls.
//!
//! A limiter made with [`RateLimiter::per_source`] counts addresses by
//! [`source_network`]: an IPv6 host cannot get a fresh budget per address
//! of its /64.
//!
//! Memory is bounded by `max_keys`. When the table is full, expired windows
//! go first; if none has expired, the coldest windows (fewest attempts,
//! then oldest) are evicted to make room, so a flood of fresh keys can
//! never lock out every new caller. The trade-off: an evicted caller starts
//! over. Because the coldest go first, a caller that is actually being
//! limited (a hot window) is evicted only once every other tracked window
//! is at least as hot, which takes `max_keys` other callers each spending
//! as many attempts.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Timestamp, source_network};

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    count: u32,
}

/// A full table makes room for this fraction of `max_keys` at once, so
/// that a flood of new keys costs one pass over the table per batch rather
/// than per key.
const EVICT_FRACTION: usize = 16;

/// A wait in milliseconds as whole seconds for `Retry-After`: rounded up,
/// at least 1.
pub fn retry_after_secs(wait_ms: i64) -> u64 {
    u64::try_from(wait_ms.max(1)).unwrap_or(1).div_ceil(1_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// The key as given.
    Exact,
    /// An address, counted by its network ([`source_network`]); anything
    /// that is not an address is taken as given.
    SourceNetwork,
}

pub struct RateLimiter {
    limit: u32,
    window_ms: i64,
    max_keys: usize,
    keys: Keys,
    windows: Mutex<HashMap<String, Window>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("window_ms", &self.window_ms)
            .field("max_keys", &self.max_keys)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// At most `limit` attempts per key in each window of `window_ms`
    /// milliseconds, tracking at most `max_keys` keys. A `limit` or
    /// `max_keys` of 0 refuses everything; a window shorter than 1 ms is
    /// treated as 1 ms, so a misconfiguration cannot disable the limit.
    pub fn new(limit: u32, window_ms: i64, max_keys: usize) -> Self {
        RateLimiter {
            limit,
            window_ms: window_ms.max(1),
            max_keys,
            keys: Keys::Exact,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Like [`RateLimiter::new`], for keys that are client addresses: an
    /// IPv6 address counts by its /64, an IPv4-mapped one as IPv4.
    pub fn per_source(limit: u32, window_ms: i64, max_keys: usize) -> Self {
        RateLimiter {
            keys: Keys::SourceNetwork,
            ..RateLimiter::new(limit, window_ms, max_keys)
        }
    }

    /// Counts an attempt by `key` at `now`; true when it is allowed.
    pub fn check(&self, key: &str, now: Timestamp) -> bool {
        self.attempt(key, now).is_ok()
    }

    /// Like `check`; a refusal says how many milliseconds until the key's
    /// window ends (for `Retry-After`). A refusal for a zero limit, or a
    /// poisoned lock, suggests one whole window.
    pub fn attempt(&self, key: &str, now: Timestamp) -> Result<(), i64> {
        self.attempt_in_window(key, now).map(|_| ())
    }

    /// [`RateLimiter::attempt`], saying in which window it counted (its
    /// start), for [`RateLimiter::refund`].
    pub fn attempt_in_window(&self, key: &str, now: Timestamp) -> Result<i64, i64> {
        let key = match self.keys {
            Keys::Exact => Cow::Borrowed(key),
            Keys::SourceNetwork => source_network(key).map_or(Cow::Borrowed(key), Cow::Owned),
        };
        // A panic while holding the lock may have left counts half-updated;
        // refusing is the safe reading.
        let Ok(mut windows) = self.windows.lock() else {
            return Err(self.window_ms);
        };
        let now = now.as_millis();
        let window_ms = self.window_ms;
        let expired = |w: &Window| now.saturating_sub(w.start) >= window_ms;

        if let Some(window) = windows.get_mut(key.as_ref()) {
            if expired(window) {
                *window = Window {
                    start: now,
                    count: 0,
                };
            }
            // A clock stepping backwards keeps the current window (the
            // difference is negative): it never opens a fresh one.
            if window.count >= self.limit {
                let ends = window.start.saturating_add(window_ms);
                return Err(ends.saturating_sub(now).clamp(1, window_ms));
            }
            window.count += 1;
            return Ok(window.start);
        }

        if self.limit == 0 || self.max_keys == 0 {
            return Err(window_ms);
        }
        if windows.len() >= self.max_keys {
            windows.retain(|_, w| !expired(w));
            if windows.len() >= self.max_keys {
                evict_coldest(&mut windows, (self.max_keys / EVICT_FRACTION).max(1));
            }
        }
        windows.insert(
            key.into_owned(),
            Window {
                start: now,
                count: 1,
            },
        );
        Ok(now)
    }

    /// Gives back one attempt counted for `key` in the window that started
    /// at `window_start` (as [`RateLimiter::attempt_in_window`] said), if
    /// that window is still the key's: the thing counted did not happen
    /// after all (another limit refused it). A window opened since keeps
    /// its count.
    pub fn refund(&self, key: &str, window_start: i64) {
        let key = match self.keys {
            Keys::Exact => Cow::Borrowed(key),
            Keys::SourceNetwork => source_network(key).map_or(Cow::Borrowed(key), Cow::Owned),
        };
        let Ok(mut windows) = self.windows.lock() else {
            return;
        };
        if let Some(window) = windows.get_mut(key.as_ref())
            && window.start == window_start
        {
            window.count = window.count.saturating_sub(1);
        }
    }
}

/// Removes the `n` coldest windows: fewest attempts first, then the oldest.
fn evict_coldest(windows: &mut HashMap<String, Window>, n: usize) {
    let mut by_heat: Vec<(u32, i64, String)> = windows
        .iter()
        .map(|(key, w)| (w.count, w.start, key.clone()))
        .collect();
    let n = n.min(by_heat.len());
    if n == 0 {
        return;
    }
    if n < by_heat.len() {
        by_heat.select_nth_unstable(n - 1);
    }
    for (_, _, key) in by_heat.into_iter().take(n) {
        windows.remove(&key);
    }
}

/// What one more of something limited per window is: one of the first
/// `limit` (handled one by one), the first past the limit (handled once,
/// saying that the rest are not), or one of the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneByOne {
    Each,
    FirstPastLimit,
    Past,
}

/// Lets the first `limit` of each window through one by one and says so
/// once when the limit is passed: audit records of refused requests per
/// source, burst alerts per minute.
#[derive(Debug)]
pub struct OneByOneLimit {
    each: RateLimiter,
    first_past: RateLimiter,
}

impl OneByOneLimit {
    /// Keys counted as given.
    pub fn new(limit: u32, window_ms: i64, max_keys: usize) -> Self {
        OneByOneLimit {
            each: RateLimiter::new(limit, window_ms, max_keys),
            first_past: RateLimiter::new(1, window_ms, max_keys),
        }
    }

    /// Keys are addresses, counted by their network ([`source_network`]).
    pub fn per_source(limit: u32, window_ms: i64, max_keys: usize) -> Self {
        OneByOneLimit {
            each: RateLimiter::per_source(limit, window_ms, max_keys),
            first_past: RateLimiter::per_source(1, window_ms, max_keys),
        }
    }

    pub fn take(&self, key: &str, now: Timestamp) -> OneByOne {
        if self.each.check(key, now) {
            OneByOne::Each
        } else if self.first_past.check(key, now) {
            OneByOne::FirstPastLimit
        } else {
            OneByOne::Past
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_refund_gives_one_attempt_back_in_its_own_window_only() {
        let limiter = RateLimiter::new(1, 1_000, 10);
        let start = limiter.attempt_in_window("k", Timestamp(0)).unwrap();
        assert_eq!(start, 0);
        assert!(limiter.attempt("k", Timestamp(10)).is_err());
        limiter.refund("k", start);
        assert_eq!(limiter.attempt_in_window("k", Timestamp(30)), Ok(0));
        // A window opened since (by a call at 1 s) keeps its count: a
        // refund of the old one's does not reach it.
        assert_eq!(limiter.attempt_in_window("k", Timestamp(1_000)), Ok(1_000));
        limiter.refund("k", 0);
        limiter.refund("other", 1_000);
        assert!(limiter.attempt("k", Timestamp(1_040)).is_err());
    }

    const T0: Timestamp = Timestamp(1_700_000_000_000);

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        let cases = [
            (-5, 1),
            (0, 1),
            (1, 1),
            (1_000, 1),
            (1_001, 2),
            (59_999, 60),
        ];
        for (ms, secs) in cases {
            assert_eq!(retry_after_secs(ms), secs, "{ms} ms");
        }
    }

    fn at(offset_ms: i64) -> Timestamp {
        T0.plus_millis(offset_ms)
    }

    #[test]
    fn a_refusal_says_when_the_window_ends() {
        let rl = RateLimiter::new(1, 60_000, 100);
        assert_eq!(rl.attempt("a", at(0)), Ok(()));
        assert_eq!(rl.attempt("a", at(15_000)), Err(45_000));
        assert_eq!(rl.attempt("a", at(59_999)), Err(1));
        assert_eq!(rl.attempt("a", at(60_000)), Ok(()));
    }

    #[test]
    fn limit_per_window_then_reset() {
        let rl = RateLimiter::new(3, 60_000, 100);
        assert!(rl.check("a", at(0)));
        assert!(rl.check("a", at(1)));
        assert!(rl.check("a", at(2)));
        assert!(!rl.check("a", at(3)));
        assert!(!rl.check("a", at(59_999)));
        // Other keys have their own budget.
        assert!(rl.check("b", at(10)));
        // The window starts at the first attempt and lasts exactly window_ms.
        assert!(rl.check("a", at(60_000)));
        assert!(rl.check("a", at(60_001)));
        assert!(rl.check("a", at(60_002)));
        assert!(!rl.check("a", at(60_003)));
    }

    #[test]
    fn refused_attempts_do_not_overflow_or_extend_the_window() {
        let rl = RateLimiter::new(1, 1_000, 10);
        assert!(rl.check("a", at(0)));
        for i in 1..1_000 {
            assert!(!rl.check("a", at(i % 1_000)));
        }
        assert!(rl.check("a", at(1_000)));
    }

    #[test]
    fn clock_going_backwards_keeps_the_window() {
        let rl = RateLimiter::new(1, 1_000, 10);
        assert!(rl.check("a", at(5_000)));
        assert!(!rl.check("a", at(0)));
        assert!(!rl.check("a", at(-1_000_000)));
        assert!(rl.check("a", at(6_000)));
    }

    #[test]
    fn a_full_table_drops_expired_windows_before_live_ones() {
        let rl = RateLimiter::new(2, 1_000, 2);
        assert!(rl.check("a", at(0)));
        assert!(rl.check("b", at(500)));
        assert!(rl.check("b", at(501)));
        // "a" (the colder) has expired at 1000 and makes room; "b" keeps
        // its count although it is the hotter one.
        assert!(rl.check("c", at(1_000)));
        assert!(!rl.check("b", at(1_001)));
    }

    #[test]
    fn a_flood_of_new_keys_neither_grows_the_table_nor_resets_a_hot_window() {
        let rl = RateLimiter::new(3, 60_000, 32);
        for _ in 0..3 {
            assert!(rl.check("guesser", at(0)));
        }
        for i in 0..1_000 {
            assert!(rl.check(&format!("fresh-{i}"), at(1 + i)), "fresh-{i}");
            let Ok(windows) = rl.windows.lock() else {
                panic!("poisoned")
            };
            assert!(windows.len() <= 32);
        }
        assert_eq!(rl.attempt("guesser", at(2_000)), Err(58_000));
    }

    #[test]
    fn two_addresses_in_one_ipv6_64_share_a_window() {
        let rl = RateLimiter::per_source(2, 60_000, 100);
        assert!(rl.check("2001:db8:1:2::1", at(0)));
        assert!(rl.check("2001:db8:1:2:ffff:ffff:ffff:fffe", at(1)));
        // A third address of the same /64 is the same caller.
        assert!(!rl.check("2001:db8:1:2:aaaa::3", at(2)));
        // The next /64 is someone else.
        assert!(rl.check("2001:db8:1:3::1", at(3)));
        // An IPv4-mapped address is the IPv4 address.
        assert!(rl.check("10.0.0.1", at(4)));
        assert!(rl.check("::ffff:10.0.0.1", at(5)));
        assert!(!rl.check("10.0.0.1", at(6)));
        // Keys that are not addresses are taken as given.
        assert!(rl.check("unknown", at(7)));
        // A limiter of other keys does not read them as addresses.
        let exact = RateLimiter::new(1, 60_000, 100);
        assert!(exact.check("2001:db8:1:2::1", at(0)));
        assert!(exact.check("2001:db8:1:2::2", at(0)));
    }

    #[test]
    fn a_full_limiter_admits_a_new_caller_and_evicts_the_coldest() {
        let rl = RateLimiter::new(5, 60_000, 3);
        for _ in 0..5 {
            assert!(rl.check("hot", at(0)));
        }
        assert!(rl.check("cold", at(1)));
        assert!(rl.check("warm", at(2)));
        assert!(rl.check("warm", at(3)));
        // Full, nothing expired: a new caller is still admitted.
        assert!(rl.check("new", at(10)));
        // The hot window kept its count: flooding cannot reset it.
        assert!(!rl.check("hot", at(11)));
        assert!(rl.check("warm", at(12)));
        // "cold" was evicted and starts over with a fresh window.
        assert!(rl.check("cold", at(13)));
    }

    #[test]
    fn zero_limits_refuse_everything() {
        let rl = RateLimiter::new(0, 1_000, 10);
        assert!(!rl.check("a", at(0)));
        assert!(!rl.check("a", at(10_000)));
        let rl = RateLimiter::new(5, 1_000, 0);
        assert!(!rl.check("a", at(0)));
    }

    #[test]
    fn non_positive_window_still_limits() {
        let rl = RateLimiter::new(1, 0, 10);
        assert!(rl.check("a", at(0)));
        assert!(!rl.check("a", at(0)));
        assert!(rl.check("a", at(1)));
        let rl = RateLimiter::new(1, -5, 10);
        assert!(rl.check("a", at(0)));
        assert!(!rl.check("a", at(0)));
    }

    #[test]
    fn poisoned_lock_refuses() {
        let rl = Arc::new(RateLimiter::new(10, 1_000, 10));
        assert!(rl.check("a", at(0)));
        let poisoner = Arc::clone(&rl);
        let joined = std::thread::spawn(move || {
            let _guard = poisoner.windows.lock();
            panic!("poison the lock");
        })
        .join();
        assert!(joined.is_err());
        assert!(!rl.check("a", at(1)));
        assert!(!rl.check("new", at(1)));
    }

    #[test]
    fn shared_across_threads() {
        let rl = Arc::new(RateLimiter::new(100, 60_000, 10));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let rl = Arc::clone(&rl);
                std::thread::spawn(move || (0..50).filter(|_| rl.check("k", at(0))).count())
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(allowed, 100);
    }
}
