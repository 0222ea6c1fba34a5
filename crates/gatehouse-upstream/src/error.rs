//! Why a request to an upstream produced no result.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Every failure of an upstream request. [`UpstreamError::code`] is the
/// stable string the audit log records.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No answer within the configured `call_timeout` (or `connect_timeout`).
    #[error("upstream {upstream}: no answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        upstream: Arc<str>,
        timeout: Duration,
    },
    /// Not connected (starting, restarting, unreachable) or the circuit
    /// breaker is open.
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable { upstream: Arc<str>, reason: String },
    /// The connection ended while the request was in flight (the child
    /// exited, the stream closed).
    #[error("upstream {upstream}: the connection was lost during the request")]
    Disconnected { upstream: Arc<str> },
    /// The upstream sent something that is not a valid MCP message.
    #[error("upstream {upstream} sent an invalid message: {reason}")]
    Protocol { upstream: Arc<str>, reason: String },
    #[error("upstream {upstream} sent a message larger than {limit} bytes")]
    MessageTooLarge { upstream: Arc<str>, limit: usize },
    /// `max_concurrent_calls` calls were in flight for the whole call timeout.
    #[error("upstream {upstream} is busy ({limit} calls in flight)")]
    Busy { upstream: Arc<str>, limit: usize },
    /// The calling tenant's `max_concurrent_calls_per_tenant` calls were in
    /// flight for the whole call timeout (other tenants' calls go on).
    #[error("upstream {upstream} is busy with this tenant's calls ({limit} in flight)")]
    TenantBusy { upstream: Arc<str>, limit: usize },
    /// The calling caller's `max_concurrent_calls_per_caller` calls were in
    /// flight for the whole call timeout (other callers' calls go on).
    #[error("upstream {upstream} is busy with this caller's calls ({limit} in flight)")]
    CallerBusy { upstream: Arc<str>, limit: usize },
    /// The upstream answered with a JSON-RPC error. Its message is shown
    /// (in logs and audit records) cut at [`SHOWN_MESSAGE_BYTES`]: it is the
    /// upstream's to choose, up to a whole message's size, and is logged
    /// and scrubbed wherever the error goes. The caller gets it whole.
    #[error("upstream {upstream} answered with error {code}: {}", shown(message))]
    Rpc {
        upstream: Arc<str>,
        code: i32,
        message: String,
        data: Option<Value>,
    },
    /// The upstream's credential could not be resolved.
    #[error("upstream {upstream}: credential unavailable: {reason}")]
    Credentials { upstream: Arc<str>, reason: String },
    #[error("upstream {upstream} is disabled")]
    Disabled { upstream: Arc<str> },
    /// The upstream asked for input (a 2026-07-28 input-required result)
    /// that the gateway asked a 2025-11-25 caller for and did not get: the
    /// caller did not declare the capability or answered with an error, or
    /// the upstream asked for something never relayed (roots), or for
    /// input round after round.
    #[error("upstream {upstream} asked the caller for input it did not give: {reason}")]
    InputNotGiven { upstream: Arc<str>, reason: String },
    /// The caller cancelled the call; the upstream was told.
    #[error("upstream {upstream}: the caller cancelled the request")]
    Cancelled { upstream: Arc<str> },
    #[error("no upstream is called {0:?}")]
    Unknown(String),
    /// More than one upstream serves a resource URI (lists it, or has a
    /// template naming it): refused rather than sent to either.
    #[error("more than one upstream serves {uri:?} ({})", .upstreams.join(", "))]
    Ambiguous {
        uri: String,
        upstreams: Vec<Arc<str>>,
    },
}

/// How much of an upstream's error message logs and records show.
pub const SHOWN_MESSAGE_BYTES: usize = 1024;

fn shown(message: &str) -> String {
    let mut shown = message.to_string();
    gatehouse_core::cut_text(&mut shown, SHOWN_MESSAGE_BYTES);
    shown
}

impl UpstreamError {
    /// Stable identifier for audit records and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Timeout { .. } => "upstream_timeout",
            UpstreamError::Unavailable { .. } => "upstream_unavailable",
            UpstreamError::Disconnected { .. } => "upstream_disconnected",
            UpstreamError::Protocol { .. } => "upstream_protocol_error",
            UpstreamError::MessageTooLarge { .. } => "upstream_message_too_large",
            UpstreamError::Busy { .. } => "upstream_busy",
            UpstreamError::TenantBusy { .. } => "upstream_tenant_busy",
            UpstreamError::CallerBusy { .. } => "upstream_caller_busy",
            UpstreamError::Rpc { .. } => "upstream_error",
            UpstreamError::Credentials { .. } => "upstream_credentials",
            UpstreamError::Disabled { .. } => "upstream_disabled",
            UpstreamError::InputNotGiven { .. } => "upstream_input_not_given",
            UpstreamError::Cancelled { .. } => "cancelled",
            UpstreamError::Unknown(_) => "upstream_unknown",
            UpstreamError::Ambiguous { .. } => "upstream_ambiguous",
        }
    }

    /// The failure as the caller may read it: without the internal reasons
    /// (spawn and connect errors, secret file paths and variable names),
    /// which go to the audit record and the log only. An upstream's own
    /// JSON-RPC error is its answer to the caller's request and is kept.
    pub fn public_message(&self) -> String {
        match self {
            UpstreamError::Unavailable { upstream, .. } => {
                format!("upstream {upstream} is unavailable")
            }
            UpstreamError::Protocol { upstream, .. } => {
                format!("upstream {upstream} sent an invalid message")
            }
            UpstreamError::Credentials { upstream, .. } => {
                format!("upstream {upstream}: Gatehouse's credential for it is unavailable")
            }
            // The upstreams are named in the audit record, not to a caller
            // who may have no right to know what they serve.
            UpstreamError::Ambiguous { uri, .. } => {
                format!("more than one upstream serves {uri:?}")
            }
            other => other.to_string(),
        }
    }

    /// Whether the failure says the upstream is unhealthy (and so counts
    /// for the circuit breaker). A JSON-RPC error is an answer, not a failure.
    pub(crate) fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Timeout { .. }
                | UpstreamError::Unavailable { .. }
                | UpstreamError::Disconnected { .. }
                | UpstreamError::Protocol { .. }
        )
    }

    /// Whether the request got as far as the upstream: a request refused
    /// for want of a slot or a credential, or cancelled before it went
    /// out, tells a breaker nothing about the upstream.
    pub(crate) fn reached_upstream(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Busy { .. }
                | UpstreamError::TenantBusy { .. }
                | UpstreamError::CallerBusy { .. }
                | UpstreamError::Cancelled { .. }
                | UpstreamError::Credentials { .. }
                | UpstreamError::Disabled { .. }
                | UpstreamError::Unknown(_)
                | UpstreamError::Ambiguous { .. }
        )
    }

    /// Replaces every occurrence of the given secret values in the texts the
    /// upstream influenced (a server may echo a request header back).
    pub(crate) fn scrubbed(self, secrets: &[String]) -> UpstreamError {
        if secrets.is_empty() {
            return self;
        }
        let scrub = |text: String| crate::scrub::scrub(text, secrets);
        match self {
            UpstreamError::Unavailable { upstream, reason } => UpstreamError::Unavailable {
                upstream,
                reason: scrub(reason),
            },
            UpstreamError::Protocol { upstream, reason } => UpstreamError::Protocol {
                upstream,
                reason: scrub(reason),
            },
            UpstreamError::Rpc {
                upstream,
                code,
                message,
                data,
            } => UpstreamError::Rpc {
                upstream,
                code,
                message: scrub(message),
                data: data.map(|d| crate::scrub::scrub_value(d, secrets)),
            },
            UpstreamError::Credentials { upstream, reason } => UpstreamError::Credentials {
                upstream,
                reason: scrub(reason),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstreams_long_error_message_is_shown_cut() {
        let error = UpstreamError::Rpc {
            upstream: Arc::from("crm"),
            code: -32000,
            message: "x".repeat(1_000_000),
            data: None,
        };
        let shown = error.to_string();
        assert!(
            shown.len() < 2 * SHOWN_MESSAGE_BYTES,
            "{} bytes",
            shown.len()
        );
        assert!(shown.ends_with("more bytes not recorded]"), "{shown}");
    }

    #[test]
    fn the_callers_message_leaves_internal_reasons_out() {
        let upstream: Arc<str> = Arc::from("crm");
        let cases = [
            UpstreamError::Unavailable {
                upstream: Arc::clone(&upstream),
                reason: "connect 10.0.0.7:8443: connection refused".into(),
            },
            UpstreamError::Protocol {
                upstream: Arc::clone(&upstream),
                reason: "expected value at line 1 column 1 of /srv/x".into(),
            },
            UpstreamError::Credentials {
                upstream: Arc::clone(&upstream),
                reason: "cannot read secret file /run/secrets/crm-token".into(),
            },
        ];
        for error in cases {
            let public = error.public_message();
            assert!(public.starts_with("upstream crm"), "{public}");
            for internal in ["10.0.0.7", "/srv/x", "/run/secrets"] {
                assert!(!public.contains(internal), "{public}");
            }
            assert!(
                error.to_string().len() > public.len(),
                "the full text keeps the reason"
            );
        }
    }

    #[test]
    fn an_ambiguous_uri_does_not_name_the_upstreams_to_the_caller() {
        let error = UpstreamError::Ambiguous {
            uri: "crm://x".into(),
            upstreams: vec![Arc::from("globex_crm"), Arc::from("acme_crm")],
        };
        let public = error.public_message();
        assert_eq!(public, "more than one upstream serves \"crm://x\"");
        assert!(error.to_string().contains("globex_crm"));
    }

    #[test]
    fn codes_are_stable() {
        let u: Arc<str> = Arc::from("crm");
        let cases = [
            (
                UpstreamError::Timeout {
                    upstream: u.clone(),
                    timeout: Duration::from_millis(300),
                },
                "upstream_timeout",
            ),
            (
                UpstreamError::Busy {
                    upstream: u.clone(),
                    limit: 2,
                },
                "upstream_busy",
            ),
            (
                UpstreamError::TenantBusy {
                    upstream: u.clone(),
                    limit: 1,
                },
                "upstream_tenant_busy",
            ),
            (
                UpstreamError::CallerBusy {
                    upstream: u.clone(),
                    limit: 1,
                },
                "upstream_caller_busy",
            ),
            (
                UpstreamError::MessageTooLarge {
                    upstream: u.clone(),
                    limit: 10,
                },
                "upstream_message_too_large",
            ),
            (
                UpstreamError::Rpc {
                    upstream: u,
                    code: -32601,
                    message: "nope".into(),
                    data: None,
                },
                "upstream_error",
            ),
            (
                UpstreamError::Ambiguous {
                    uri: "mem://x".into(),
                    upstreams: vec![Arc::from("a"), Arc::from("b")],
                },
                "upstream_ambiguous",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn scrubbing_removes_echoed_secrets() {
        let error = UpstreamError::Protocol {
            upstream: Arc::from("crm"),
            reason: "HTTP 400: bad header Bearer tok-123456".into(),
        };
        let text = error.scrubbed(&["tok-123456".into()]).to_string();
        assert!(!text.contains("tok-123456"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
