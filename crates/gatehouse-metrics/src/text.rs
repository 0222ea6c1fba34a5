//! The Prometheus text exposition format, version 0.0.4: what `promtool
//! check metrics` and every Prometheus server read. (OpenMetrics, which
//! the `prometheus-client` crate writes, names a counter's family without
//! `_total` and ends with `# EOF`; the promtool of Debian 12 rejects that
//! as text format.)

use std::fmt::Write;

use crate::family::CounterFamily;
use crate::histogram::{BUCKETS_US, HistogramSnapshot};

/// The `Content-Type` of [`TextEncoder`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families into a string.
#[derive(Default)]
pub struct TextEncoder {
    out: String,
}

/// A label value as the format quotes it: backslash, double quote and line
/// feed escaped.
fn escape_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn labels(out: &mut String, pairs: &[(&str, &str)]) {
    if pairs.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_value(out, value);
        out.push('"');
    }
    out.push('}');
}

/// Seconds from microseconds, exactly as decimal text (no float rounding).
fn seconds(out: &mut String, us: u64) {
    let _ = write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000);
}

impl TextEncoder {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        // HELP text escapes backslash and line feed only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        pairs: &[(&str, &str)],
        value: &dyn Fn(&mut String),
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        labels(&mut self.out, pairs);
        self.out.push(' ');
        value(&mut self.out);
        self.out.push('\n');
    }

    /// A counter family; `name` ends in `_total`.
    pub fn counter_family<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        family: &CounterFamily<N>,
    ) {
        self.header(name, help, "counter");
        for (values, count) in family.series() {
            let pairs: [(&str, &str); N] = std::array::from_fn(|i| (family.names()[i], values[i]));
            self.sample(name, "", &pairs, &|out| {
                let _ = write!(out, "{count}");
            });
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, pairs: &[(&str, &str)], value: u64) {
        self.header(name, help, "gauge");
        self.sample(name, "", pairs, &|out| {
            let _ = write!(out, "{value}");
        });
    }

    /// A histogram family in seconds, one series per label value of `label`.
    pub fn histogram_family<'a>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        series: impl IntoIterator<Item = (&'a str, HistogramSnapshot)>,
    ) {
        self.header(name, help, "histogram");
        for (value, snapshot) in series {
            for (bound, count) in BUCKETS_US.iter().zip(snapshot.cumulative) {
                let mut le = String::with_capacity(12);
                seconds(&mut le, *bound);
                let le = le.trim_end_matches('0').trim_end_matches('.');
                self.sample(name, "_bucket", &[(label, value), ("le", le)], &|out| {
                    let _ = write!(out, "{count}");
                });
            }
            self.sample(name, "_bucket", &[(label, value), ("le", "+Inf")], &|out| {
                let _ = write!(out, "{}", snapshot.count);
            });
            self.sample(name, "_sum", &[(label, value)], &|out| {
                seconds(out, snapshot.sum_us)
            });
            self.sample(name, "_count", &[(label, value)], &|out| {
                let _ = write!(out, "{}", snapshot.count);
            });
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;
    use std::time::Duration;

    #[test]
    fn counters_and_gauges() {
        let family = CounterFamily::new(["outcome", "reason"]);
        family.inc(["deny", "say \"no\"\\\n"]);
        let mut encoder = TextEncoder::default();
        encoder.counter_family("x_decisions_total", "Decisions.\nTwo lines", &family);
        encoder.gauge("x_queue", "Depth.", &[], 7);
        assert_eq!(
            encoder.finish(),
            "# HELP x_decisions_total Decisions.\\nTwo lines\n\
             # TYPE x_decisions_total counter\n\
             x_decisions_total{outcome=\"deny\",reason=\"say \\\"no\\\"\\\\\\n\"} 1\n\
             # HELP x_queue Depth.\n\
             # TYPE x_queue gauge\n\
             x_queue 7\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_in_seconds() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(70));
        histogram.observe(Duration::from_micros(1_500_001));
        let mut encoder = TextEncoder::default();
        encoder.histogram_family(
            "x_seconds",
            "Time.",
            "stage",
            [("audit", histogram.snapshot())],
        );
        let text = encoder.finish();
        assert!(
            text.contains("x_seconds_bucket{stage=\"audit\",le=\"0.00005\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{stage=\"audit\",le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{stage=\"audit\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{stage=\"audit\",le=\"2.5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{stage=\"audit\",le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_bucket{stage=\"audit\",le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_sum{stage=\"audit\"} 1.500071\n"),
            "{text}"
        );
        assert!(
            text.contains("x_seconds_count{stage=\"audit\"} 2\n"),
            "{text}"
        );
    }
}
