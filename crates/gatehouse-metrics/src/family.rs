//! A counter family: one counter per label set, with a fixed number of
//! label sets. Label values come from the code (outcomes, reason codes),
//! never from a request; the bound is a second guard, so a bug that labels
//! by something unbounded costs at most `SLOTS` series, never memory per
//! request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Label sets one family keeps apart; further ones are counted together
/// under the value [`OVERFLOW`].
pub const SLOTS: usize = 64;

/// The label value of every label of the series that counts label sets
/// beyond [`SLOTS`].
pub const OVERFLOW: &str = "other";

struct Slot<const N: usize> {
    /// Set once, by the first increment with these values; never changed.
    labels: OnceLock<[Box<str>; N]>,
    count: AtomicU64,
}

/// Counters keyed by `N` label values.
///
/// An increment scans the slots in order and claims the first empty one for
/// a new label set: no lock, and no allocation once a label set has been
/// seen (the values are copied once, when their slot is claimed). Two
/// threads adding the same new label set race for the same first empty
/// slot; the loser finds the winner's values there, so a label set never
/// occupies two slots.
pub struct CounterFamily<const N: usize> {
    names: [&'static str; N],
    slots: Box<[Slot<N>]>,
    overflow: AtomicU64,
}

impl<const N: usize> CounterFamily<N> {
    pub fn new(names: [&'static str; N]) -> Self {
        CounterFamily {
            names,
            slots: (0..SLOTS)
                .map(|_| Slot {
                    labels: OnceLock::new(),
                    count: AtomicU64::new(0),
                })
                .collect(),
            overflow: AtomicU64::new(0),
        }
    }

    /// The label names, in the order values are given.
    pub fn names(&self) -> &[&'static str; N] {
        &self.names
    }

    pub fn inc(&self, values: [&str; N]) {
        self.add(values, 1);
    }

    pub fn add(&self, values: [&str; N], n: u64) {
        let same = |labels: &[Box<str>; N]| labels.iter().zip(values).all(|(l, v)| **l == *v);
        for slot in self.slots.iter() {
            let labels = match slot.labels.get() {
                Some(labels) => labels,
                None => slot.labels.get_or_init(|| values.map(Box::<str>::from)),
            };
            if same(labels) {
                slot.count.fetch_add(n, Ordering::Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(n, Ordering::Relaxed);
    }

    /// The count of one label set (0 when never seen).
    pub fn get(&self, values: [&str; N]) -> u64 {
        self.series()
            .find(|(labels, _)| labels.iter().zip(values).all(|(l, v)| *l == v))
            .map_or(0, |(_, count)| count)
    }

    /// Every label set seen, with its count; the overflow series last, when
    /// it counted anything.
    pub fn series(&self) -> impl Iterator<Item = ([&str; N], u64)> + '_ {
        let seen = self.slots.iter().map_while(|slot| {
            slot.labels.get().map(|labels| {
                (
                    std::array::from_fn(|i| &*labels[i]),
                    slot.count.load(Ordering::Relaxed),
                )
            })
        });
        let overflow = self.overflow.load(Ordering::Relaxed);
        seen.chain((overflow > 0).then_some(([OVERFLOW; N], overflow)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_label_set() {
        let family = CounterFamily::new(["outcome", "reason"]);
        family.inc(["allow", "role"]);
        family.inc(["deny", "role_not_allowed"]);
        family.add(["allow", "role"], 2);
        assert_eq!(family.get(["allow", "role"]), 3);
        assert_eq!(family.get(["deny", "role_not_allowed"]), 1);
        assert_eq!(family.get(["deny", "rate_limited"]), 0);
        let series: Vec<_> = family.series().collect();
        assert_eq!(
            series,
            [(["allow", "role"], 3), (["deny", "role_not_allowed"], 1)]
        );
    }

    #[test]
    fn label_sets_beyond_the_bound_share_one_series() {
        let family = CounterFamily::new(["reason"]);
        let names: Vec<String> = (0..SLOTS + 10).map(|n| format!("r{n}")).collect();
        for name in &names {
            family.inc([name.as_str()]);
        }
        let series: Vec<_> = family.series().collect();
        assert_eq!(series.len(), SLOTS + 1);
        assert_eq!(series[SLOTS], ([OVERFLOW], 10));
    }

    #[test]
    fn concurrent_first_increments_claim_one_slot_per_label_set() {
        let family = std::sync::Arc::new(CounterFamily::new(["reason"]));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let family = std::sync::Arc::clone(&family);
                std::thread::spawn(move || {
                    for n in 0..1000 {
                        family.inc([["a", "b", "c"][(n + t) % 3]]);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let series: Vec<_> = family.series().collect();
        assert_eq!(series.len(), 3, "{series:?}");
        assert_eq!(series.iter().map(|(_, n)| n).sum::<u64>(), 8000);
    }
}
