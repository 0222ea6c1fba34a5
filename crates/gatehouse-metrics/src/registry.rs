//! Gatehouse's metrics: every family `/metrics` shows, registered up front,
//! so recording is a method call on a shared `Metrics` and never a lookup
//! by metric name.

use std::sync::OnceLock;
use std::time::Duration;

use crate::family::CounterFamily;
use crate::histogram::Histogram;
use crate::text::TextEncoder;

/// The stages of one call, each with a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Gate 1: the credential checked (lockout, caches, store).
    Authenticate,
    /// Gate 2: the policy, pins, limits and approvals, up to the decision.
    Authorize,
    /// The built-in tool or the upstream, from the decision to its answer.
    Dispatch,
    /// Waiting for an audit record to be durable.
    Audit,
}

impl Stage {
    pub const ALL: [Stage; 4] = [
        Stage::Authenticate,
        Stage::Authorize,
        Stage::Dispatch,
        Stage::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Authorize => "authorize",
            Stage::Dispatch => "dispatch",
            Stage::Audit => "audit",
        }
    }
}

/// A value read when `/metrics` is scraped (the audit queue's depth).
type GaugeSource = Box<dyn Fn() -> u64 + Send + Sync>;

/// Every metric of one Gatehouse instance. Shared as `Arc<Metrics>`; each
/// recording method is a few relaxed atomic operations.
pub struct Metrics {
    http_requests: CounterFamily<2>,
    authentications: CounterFamily<2>,
    decisions: CounterFamily<2>,
    tool_outcomes: CounterFamily<2>,
    anomalies: CounterFamily<1>,
    alerts: CounterFamily<1>,
    lockouts: CounterFamily<1>,
    cache: CounterFamily<2>,
    stages: [Histogram; 4],
    audit_queue: OnceLock<GaugeSource>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http_requests: CounterFamily::new(["route", "status"]),
            authentications: CounterFamily::new(["outcome", "reason"]),
            decisions: CounterFamily::new(["decision", "reason"]),
            tool_outcomes: CounterFamily::new(["outcome", "reason"]),
            anomalies: CounterFamily::new(["reason"]),
            alerts: CounterFamily::new(["code"]),
            lockouts: CounterFamily::new(["subject"]),
            cache: CounterFamily::new(["cache", "result"]),
            stages: Default::default(),
            audit_queue: OnceLock::new(),
        }
    }
}

/// `reason` of a series that has none (a success).
pub const NO_REASON: &str = "none";

impl Metrics {
    /// An HTTP request answered: `route` is a fixed class of paths
    /// (`mcp`, `admin`, ...), `status` the status class (`2xx`, ...).
    pub fn http_request(&self, route: &'static str, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.inc([route, class]);
    }

    /// Gate 1's answer: `reason` is the failure's code, [`NO_REASON`] on success.
    pub fn authentication(&self, success: bool, reason: &str) {
        let outcome = if success { "success" } else { "failure" };
        self.authentications.inc([outcome, reason]);
    }

    /// Gate 2's decision on a call (`allow` or `deny`) and its reason code.
    pub fn decision(&self, decision: &str, reason: &str) {
        self.decisions.inc([decision, reason]);
    }

    /// A permitted call's outcome (`success` or `error`) and its code.
    pub fn tool_outcome(&self, outcome: &str, reason: &str) {
        self.tool_outcomes.inc([outcome, reason]);
    }

    /// An anomaly recorded in the audit log, by its reason code.
    pub fn anomaly(&self, reason: &str) {
        self.anomalies.inc([reason]);
    }

    /// An alert raised, by its stable code.
    pub fn alert(&self, code: &str) {
        self.alerts.inc([code]);
    }

    /// A credential or a source address locked out (`credential` / `source`).
    pub fn lockout(&self, subject: &'static str) {
        self.lockouts.inc([subject]);
    }

    /// A look-up in a credential cache (`api_key`, `external_token`).
    pub fn cache(&self, cache: &'static str, hit: bool) {
        self.cache.inc([cache, if hit { "hit" } else { "miss" }]);
    }

    pub fn observe(&self, stage: Stage, elapsed: Duration) {
        self.stages[stage as usize].observe(elapsed);
    }

    /// Where the audit queue's depth is read from at each scrape. The
    /// first source set stays.
    pub fn set_audit_queue_depth(&self, source: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.audit_queue.set(Box::new(source));
    }

    /// The count of one series, for tests and diagnostics.
    pub fn decisions(&self, decision: &str, reason: &str) -> u64 {
        self.decisions.get([decision, reason])
    }

    /// Every metric in the Prometheus text format ([`crate::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = TextEncoder::default();
        out.gauge(
            "gatehouse_build_info",
            "Always 1; the version of the running binary is its label.",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        out.counter_family(
            "gatehouse_http_requests_total",
            "HTTP requests answered, by route class and status class.",
            &self.http_requests,
        );
        out.counter_family(
            "gatehouse_authentications_total",
            "Gate 1 outcomes (success or failure) by reason code.",
            &self.authentications,
        );
        out.counter_family(
            "gatehouse_decisions_total",
            "Gate 2 decisions on calls (allow or deny) by reason code: the audit record's reason.",
            &self.decisions,
        );
        out.counter_family(
            "gatehouse_tool_outcomes_total",
            "Outcomes of permitted calls (success or error) by reason code.",
            &self.tool_outcomes,
        );
        out.counter_family(
            "gatehouse_anomalies_total",
            "Anomalies recorded in the audit log, by reason code.",
            &self.anomalies,
        );
        out.counter_family(
            "gatehouse_alerts_total",
            "Alerts raised, by alert code.",
            &self.alerts,
        );
        out.counter_family(
            "gatehouse_lockouts_total",
            "Lockouts after repeated authentication failures, by what was locked (credential or source).",
            &self.lockouts,
        );
        out.counter_family(
            "gatehouse_credential_cache_total",
            "Look-ups in the credential caches of gate 1, by cache and result (hit or miss).",
            &self.cache,
        );
        out.histogram_family(
            "gatehouse_stage_duration_seconds",
            "Time spent in each stage of a call: authenticate, authorize, dispatch, audit.",
            "stage",
            Stage::ALL.map(|stage| (stage.as_str(), self.stages[stage as usize].snapshot())),
        );
        out.gauge(
            "gatehouse_audit_queue_depth",
            "Audit records waiting to be written.",
            &[],
            self.audit_queue.get().map_or(0, |depth| depth()),
        );
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_rendered_with_its_samples() {
        let metrics = Metrics::default();
        metrics.http_request("mcp", 200);
        metrics.http_request("mcp", 401);
        metrics.authentication(true, NO_REASON);
        metrics.authentication(false, "invalid_credential");
        metrics.decision("allow", "role");
        metrics.decision("deny", "role_not_allowed");
        metrics.tool_outcome("success", NO_REASON);
        metrics.lockout("credential");
        metrics.cache("api_key", true);
        metrics.observe(Stage::Audit, Duration::from_micros(300));
        metrics.set_audit_queue_depth(|| 3);
        let text = metrics.render();
        for line in [
            "gatehouse_http_requests_total{route=\"mcp\",status=\"2xx\"} 1",
            "gatehouse_http_requests_total{route=\"mcp\",status=\"4xx\"} 1",
            "gatehouse_authentications_total{outcome=\"failure\",reason=\"invalid_credential\"} 1",
            "gatehouse_decisions_total{decision=\"deny\",reason=\"role_not_allowed\"} 1",
            "gatehouse_tool_outcomes_total{outcome=\"success\",reason=\"none\"} 1",
            "gatehouse_lockouts_total{subject=\"credential\"} 1",
            "gatehouse_credential_cache_total{cache=\"api_key\",result=\"hit\"} 1",
            "gatehouse_stage_duration_seconds_bucket{stage=\"audit\",le=\"0.0005\"} 1",
            "gatehouse_stage_duration_seconds_count{stage=\"dispatch\"} 0",
            "gatehouse_audit_queue_depth 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert_eq!(metrics.decisions("deny", "role_not_allowed"), 1);
        // Each family is described once.
        assert_eq!(
            text.matches("# TYPE gatehouse_decisions_total counter")
                .count(),
            1
        );
    }
}
