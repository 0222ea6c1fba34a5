//! How many authentication failures from one source are recorded one by
//! one.
//!
//! Every refused request used to be a durable audit record that the
//! request waited for. A request without a credential never counts toward
//! a lockout (it is how clients discover that they must authenticate), and
//! a locked source is refused before anything is checked, so a flood of
//! either cost nothing to send and one record each: the disk filled, and
//! the audit queue that every authorized call needs was kept busy. Past
//! `PER_MINUTE` such failures from one source in a minute, one is counted
//! (metrics) but not recorded; the first one past the limit is recorded
//! saying so. Failures that count toward a lockout (guesses) are always
//! recorded: the lockout bounds them, and the burst alerts read them.

use gatehouse_core::{OneByOne, OneByOneLimit, Timestamp};

/// Failures from one source (an IPv4 address, an IPv6 /64) recorded one by
/// one in each minute.
pub const FAILURE_RECORDS_PER_MINUTE: u32 = 30;

const WINDOW_MS: i64 = 60_000;
const MAX_SOURCES: usize = 100_000;

/// What to write for one authentication failure: its own record
/// (`Each`), a record saying that further failures from its source this
/// minute are not recorded one by one (`FirstPastLimit`), or nothing
/// (`Past`: counted in metrics only).
pub type FailureRecord = OneByOne;

#[derive(Debug)]
pub struct FailureRecords(OneByOneLimit);

impl Default for FailureRecords {
    fn default() -> Self {
        FailureRecords(OneByOneLimit::per_source(
            FAILURE_RECORDS_PER_MINUTE,
            WINDOW_MS,
            MAX_SOURCES,
        ))
    }
}

impl FailureRecords {
    /// Takes one failure from `source` (`None`: no address to count by,
    /// always recorded).
    pub fn take(&self, source: Option<&str>, now: Timestamp) -> FailureRecord {
        match source {
            Some(source) => self.0.take(source, now),
            None => OneByOne::Each,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_one_record_says_so_then_none_until_the_next_minute() {
        let records = FailureRecords::default();
        let t = Timestamp(1_000_000);
        for _ in 0..FAILURE_RECORDS_PER_MINUTE {
            assert_eq!(records.take(Some("192.0.2.1"), t), FailureRecord::Each);
        }
        assert_eq!(
            records.take(Some("192.0.2.1"), t),
            FailureRecord::FirstPastLimit
        );
        assert_eq!(records.take(Some("192.0.2.1"), t), FailureRecord::Past);
        // Other sources, and requests without one, are not affected.
        assert_eq!(records.take(Some("192.0.2.2"), t), FailureRecord::Each);
        assert_eq!(records.take(None, t), FailureRecord::Each);
        // The same /64 is one source.
        for i in 0..FAILURE_RECORDS_PER_MINUTE {
            let address = format!("2001:db8::{:x}", i + 1);
            assert_eq!(records.take(Some(&address), t), FailureRecord::Each);
        }
        assert_eq!(
            records.take(Some("2001:db8::ffff"), t),
            FailureRecord::FirstPastLimit
        );
        // A minute later it starts over.
        let later = t.plus_millis(WINDOW_MS);
        assert_eq!(records.take(Some("192.0.2.1"), later), FailureRecord::Each);
    }
}
