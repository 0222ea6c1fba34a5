//! A fixed-window rate limiter keyed by string: client addresses at the
//! authorization server (registration, logins, user codes), and (principal,
//! tool) or (principal, role) for the policy's limits on tool calls.
//!
//! Memory is bounded by `max_keys`. When the table is full the limiter fails
//! closed: evicting live windows would let an attacker reset its own counter
//! by flooding the table with fresh keys.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::Timestamp;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    count: u32,
}

struct State {
    windows: HashMap<String, Window>,
    /// No window can expire before this instant, so a full table is not
    /// swept again until then: without it every refused new key would cost
    /// a pass over the whole table.
    next_sweep: i64,
}

/// A wait in milliseconds as whole seconds for `Retry-After`: rounded up,
/// at least 1.
pub fn retry_after_secs(wait_ms: i64) -> u64 {
    u64::try_from(wait_ms.max(1)).unwrap_or(1).div_ceil(1_000)
}

pub struct RateLimiter {
    limit: u32,
    window_ms: i64,
    max_keys: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("window_ms", &self.window_ms)
            .field("max_keys", &self.max_keys)
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
            state: Mutex::new(State {
                windows: HashMap::new(),
                next_sweep: i64::MIN,
            }),
        }
    }

    /// Counts an attempt by `key` at `now`; true when it is allowed.
    pub fn check(&self, key: &str, now: Timestamp) -> bool {
        self.attempt(key, now).is_ok()
    }

    /// Like `check`; a refusal says how many milliseconds until the key's
    /// window ends (for `Retry-After`). A refusal for a full table, or a
    /// poisoned lock, suggests one whole window.
    pub fn attempt(&self, key: &str, now: Timestamp) -> Result<(), i64> {
        // A panic while holding the lock may have left counts half-updated;
        // refusing is the safe reading.
        let Ok(mut state) = self.state.lock() else {
            return Err(self.window_ms);
        };
        let now = now.as_millis();
        let window_ms = self.window_ms;
        let expired = |w: &Window| now.saturating_sub(w.start) >= window_ms;

        if let Some(window) = state.windows.get_mut(key) {
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
            return Ok(());
        }

        if self.limit == 0 {
            return Err(window_ms);
        }
        if state.windows.len() >= self.max_keys {
            if now < state.next_sweep {
                return Err(window_ms);
            }
            state.windows.retain(|_, w| !expired(w));
            state.next_sweep = state
                .windows
                .values()
                .map(|w| w.start.saturating_add(window_ms))
                .min()
                .unwrap_or(i64::MIN);
            if state.windows.len() >= self.max_keys {
                return Err(window_ms);
            }
        }
        state.windows.insert(
            key.to_string(),
            Window {
                start: now,
                count: 1,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
    fn full_table_sweeps_expired_windows_first() {
        let rl = RateLimiter::new(5, 1_000, 2);
        assert!(rl.check("a", at(0)));
        assert!(rl.check("b", at(500)));
        // Full and nothing expired: new keys are refused, known keys go on.
        assert!(!rl.check("c", at(900)));
        assert!(rl.check("a", at(900)));
        // "a" expired at 1000; its slot is reclaimed, "b" is kept.
        assert!(rl.check("c", at(1_000)));
        assert!(!rl.check("d", at(1_001)));
        assert!(rl.check("b", at(1_001)));
        assert!(rl.check("b", at(1_002)));
        assert!(rl.check("b", at(1_003)));
        assert!(rl.check("b", at(1_004)));
        // "b" has used its 5 in the window that began at 500.
        assert!(!rl.check("b", at(1_005)));
    }

    #[test]
    fn full_table_is_not_resweeped_before_anything_can_expire() {
        let rl = RateLimiter::new(5, 1_000, 1);
        assert!(rl.check("a", at(0)));
        assert!(!rl.check("b", at(10)));
        let Ok(state) = rl.state.lock() else {
            panic!("poisoned")
        };
        assert_eq!(state.next_sweep, at(1_000).as_millis());
        drop(state);
        assert!(!rl.check("b", at(999)));
        assert!(rl.check("b", at(1_000)));
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
            let _guard = poisoner.state.lock();
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
