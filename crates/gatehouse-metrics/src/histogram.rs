//! A latency histogram with fixed buckets, kept in atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds: from 50 µs (a call that
/// hits every cache) to 10 s (an upstream at its timeout).
pub const BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Counts per bucket (not cumulative; the encoder adds them up) and the sum.
/// An observation is two relaxed atomic additions.
pub struct Histogram {
    /// One more than the bounds: the last counts what is above them all.
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

/// What the encoder writes: cumulative counts, consistent with each other
/// (the total is the sum of the buckets read, whatever runs meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Cumulative count for each bound of [`BUCKETS_US`].
    pub cumulative: [u64; BUCKETS_US.len()],
    pub count: u64,
    pub sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US.partition_point(|&bound| bound < us);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS_US.len()];
        let mut running = 0u64;
        for (i, slot) in cumulative.iter_mut().enumerate() {
            running = running.saturating_add(self.counts[i].load(Ordering::Relaxed));
            *slot = running;
        }
        let above = self.counts[BUCKETS_US.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            cumulative,
            count: running.saturating_add(above),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(50)); // le 50 µs: bounds are inclusive
        histogram.observe(Duration::from_micros(51));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60)); // above every bound
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1);
        assert_eq!(snapshot.cumulative[1], 2);
        assert_eq!(snapshot.cumulative[5], 2); // le 2.5 ms
        assert_eq!(snapshot.cumulative[6], 3); // le 5 ms
        assert_eq!(snapshot.cumulative[BUCKETS_US.len() - 1], 3);
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.sum_us, 50 + 51 + 3_000 + 60_000_000);
    }
}
