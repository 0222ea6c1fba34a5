//! Gatehouse's metrics: counters and latency histograms kept in atomics
//! (no lock and, once a label set has been seen, no allocation on the
//! request path) and their Prometheus text exposition for `/metrics`.
//!
//! Written here rather than taken from `prometheus-client`: that crate's
//! histogram takes a mutex per observation and its counter families hash
//! the label set under a lock on every increment, and it writes
//! OpenMetrics, which Debian 12's `promtool check metrics` rejects. The
//! families here are fixed (see `Metrics`) and their label values are
//! reason codes from the code, bounded besides (see `family`).

mod family;
mod histogram;
mod registry;
mod text;

pub use family::{CounterFamily, OVERFLOW, SLOTS};
pub use histogram::{BUCKETS_US, Histogram, HistogramSnapshot};
pub use registry::{Metrics, NO_REASON, Stage};
pub use text::{CONTENT_TYPE, TextEncoder};
