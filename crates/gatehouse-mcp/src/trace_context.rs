//! W3C Trace Context in and out: the parent of a request's span comes from
//! its `traceparent` header, or for an MCP call from `params._meta`
//! (SEP-414), and a call forwarded to an upstream carries the context of
//! Gatehouse's span in its own `_meta`. What is read or written is the
//! process's text-map propagator (the binary sets the W3C one); spans are
//! exported only when the binary installed an OpenTelemetry layer.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header and `_meta` key that carry the parent span.
pub const TRACEPARENT: &str = "traceparent";

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetaRead<'a>(&'a Map<String, Value>);

impl Extractor for MetaRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaWrite<'a>(&'a mut Map<String, Value>);

impl Injector for MetaWrite<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), Value::String(value));
    }
}

/// Makes `span` a child of the remote span `extract` finds, if it finds a
/// valid one; returns its trace id (for the logs). A span already entered
/// keeps its parent.
fn adopt(span: &tracing::Span, extract: &dyn Extractor) -> Option<String> {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(extract));
    let remote = parent.span().span_context().clone();
    if !remote.is_valid() {
        return None;
    }
    // Without an OpenTelemetry layer there is nothing to link: the trace
    // id still goes into the logs.
    let _ = span.set_parent(parent);
    Some(remote.trace_id().to_string())
}

/// `span`'s parent from the request's `traceparent` header.
pub fn adopt_from_headers(span: &tracing::Span, headers: &http::HeaderMap) -> Option<String> {
    if !headers.contains_key(TRACEPARENT) {
        return None;
    }
    adopt(span, &Headers(headers))
}

/// `span`'s parent from an MCP request's `_meta` (SEP-414).
pub fn adopt_from_meta(span: &tracing::Span, meta: &Map<String, Value>) -> Option<String> {
    if !meta.contains_key(TRACEPARENT) {
        return None;
    }
    adopt(span, &MetaRead(meta))
}

/// Writes the current span's context into `meta` for an upstream: its
/// `traceparent` (and `tracestate`) replace the caller's, since the
/// upstream's work is a child of Gatehouse's call. Without exported spans
/// there is no span of ours to name, and the caller's stay as they came.
pub fn inject_into_meta(meta: &mut Map<String, Value>) {
    let current = tracing::Span::current().context();
    if !current.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&current, &mut MetaWrite(meta));
    });
}
