//! `last_used` bookkeeping without a database write per request: a
//! credential's use is written at most once per interval (one minute) by
//! each process. What is written is the time of the first use of each
//! interval, so a stored `last_used_at` is never more than one interval
//! older than the true last use: well inside the days the lifecycle
//! policy counts in.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::Timestamp;

/// A use is written at most this often per credential.
pub const LAST_USE_INTERVAL_MS: i64 = 60_000;

/// Above this many remembered credentials, those not written within the
/// interval are forgotten (they would be written on their next use
/// anyway), so the map stays as small as the set of busy credentials.
const PRUNE_ABOVE: usize = 4096;

/// Decides which uses to write. Shared by every request of a process.
#[derive(Debug, Default)]
pub struct LastUse {
    written: Mutex<HashMap<String, Timestamp>>,
}

impl LastUse {
    pub fn new() -> Self {
        LastUse::default()
    }

    /// Whether the use of `id` at `now` is to be written (and, if so,
    /// remembers it as written). Callers write it off the request path and
    /// never fail the request over it.
    pub fn due(&self, id: &str, now: Timestamp) -> bool {
        let Ok(mut written) = self.written.lock() else {
            // A poisoned lock: write rather than lose the use.
            return true;
        };
        let due = written
            .get(id)
            .is_none_or(|at| now.as_millis() - at.as_millis() >= LAST_USE_INTERVAL_MS);
        if due {
            if written.len() >= PRUNE_ABOVE {
                written.retain(|_, at| now.as_millis() - at.as_millis() < LAST_USE_INTERVAL_MS);
            }
            written.insert(id.to_string(), now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_credential_per_minute() {
        let uses = LastUse::new();
        assert!(uses.due("k1", Timestamp(0)));
        assert!(!uses.due("k1", Timestamp(59_999)));
        assert!(uses.due("k2", Timestamp(59_999)), "per credential");
        assert!(uses.due("k1", Timestamp(60_000)));
        assert!(!uses.due("k1", Timestamp(60_001)));
    }

    #[test]
    fn the_map_stays_bounded_by_busy_credentials() {
        let uses = LastUse::new();
        for i in 0..PRUNE_ABOVE {
            assert!(uses.due(&format!("k{i}"), Timestamp(0)));
        }
        // A minute later the idle ones are forgotten when a new one comes.
        assert!(uses.due("new", Timestamp(60_000)));
        assert_eq!(uses.written.lock().unwrap().len(), 1);
        // A forgotten credential is simply written on its next use.
        assert!(uses.due("k1", Timestamp(60_001)));
    }
}
