//! The outermost layer of every HTTP request: its id (made here, returned
//! in `X-Request-Id`, on the request's log lines and in each of its audit
//! records) and its count in the metrics.
//!
//! The id is always Gatehouse's own. An `X-Request-Id` the client sent is
//! not trusted with the audit trail: any caller, authenticated or not, could
//! send the same value on many requests and blur which records belong
//! together. A well-formed one is logged beside ours (`client_request_id`),
//! so a proxy's id can still be matched to a log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use gatehouse_metrics::Metrics;
use tracing::Instrument;

use crate::routes;

/// The header that carries the id, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client id that is logged; longer ones are ignored.
const MAX_CLIENT_ID: usize = 64;

/// The request's id, in the request's extensions (the MCP SDK copies them
/// into the context its handlers see).
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// The request's span, in its extensions: the parent of the spans the MCP
/// SDK's handlers open in tasks of their own.
#[derive(Debug, Clone)]
pub struct RequestSpan(pub tracing::Span);

/// Ids are a random prefix per process and a counter: unique across
/// instances and restarts without a random draw per request.
struct IdSource {
    prefix: u64,
    next: AtomicU64,
}

fn ids() -> &'static IdSource {
    static IDS: std::sync::OnceLock<IdSource> = std::sync::OnceLock::new();
    IDS.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Without the system's randomness the prefix is the process id:
        // distinct between the processes of one machine at least (the id
        // is no secret, only a name).
        let prefix = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => u64::from(std::process::id()),
        };
        IdSource {
            prefix,
            next: AtomicU64::new(1),
        }
    })
}

/// A new request id: 16 hex digits of the process's prefix, a dash, the
/// request's number in hex.
pub fn new_request_id() -> Arc<str> {
    use std::io::Write as _;
    let source = ids();
    let n = source.next.fetch_add(1, Ordering::Relaxed);
    // Written on the stack, so the id costs one allocation (the `Arc`).
    let mut buf = [0u8; 40];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{:016x}-{n:x}", source.prefix);
    let len = usize::try_from(cursor.position()).unwrap_or(0);
    Arc::from(std::str::from_utf8(&buf[..len]).unwrap_or_default())
}

/// A client's `X-Request-Id`, when it is short and plain enough to log.
fn client_request_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    (!value.is_empty() && value.len() <= MAX_CLIENT_ID && value.chars().all(plain)).then_some(value)
}

/// The metrics' name for the group of routes `path` belongs to: a fixed
/// set, whatever path a client asks for.
pub fn route_class(path: &str) -> &'static str {
    if path == routes::MCP {
        "mcp"
    } else if path.starts_with("/admin/") {
        "admin"
    } else if path == routes::HEALTH || path == routes::READY {
        "probe"
    } else if path.starts_with("/.well-known/") {
        "metadata"
    } else {
        // The authorization server's endpoints and pages, and unknown paths.
        "other"
    }
}

pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = new_request_id();
    let route = route_class(request.uri().path());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        client_request_id = tracing::field::Empty,
        method = %request.method(),
        route,
        trace_id = tracing::field::Empty,
    );
    if let Some(client) = client_request_id(request.headers()) {
        span.record("client_request_id", client);
    }
    if let Some(trace_id) = crate::trace_context::adopt_from_headers(&span, request.headers()) {
        span.record("trace_id", trace_id);
    }
    request.extensions_mut().insert(RequestId(Arc::clone(&id)));
    request.extensions_mut().insert(RequestSpan(span.clone()));
    let scope = Arc::clone(&id);
    let mut response = async move {
        let response = gatehouse_audit::in_request(scope, next.run(request)).await;
        tracing::debug!(status = response.status().as_u16(), "answered");
        response
    }
    .instrument(span)
    .await;
    metrics.http_request(route, response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_plain() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'), "{a}");
        assert_eq!(a.split('-').next().map(str::len), Some(16));
    }

    #[test]
    fn only_plain_short_client_ids_are_logged() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(value).unwrap());
            client_request_id(&headers).map(str::to_string)
        };
        assert_eq!(with("lb-42:abc_1.2").as_deref(), Some("lb-42:abc_1.2"));
        assert_eq!(with(&"a".repeat(65)), None);
        assert_eq!(with("a b"), None);
        assert_eq!(with("x\"y"), None);
        assert_eq!(with(""), None);
        assert_eq!(client_request_id(&HeaderMap::new()), None);
    }

    #[test]
    fn route_classes_are_a_fixed_set() {
        assert_eq!(route_class("/mcp"), "mcp");
        assert_eq!(route_class("/mcp/extra"), "other");
        assert_eq!(route_class("/admin/upstreams"), "admin");
        assert_eq!(route_class("/readyz"), "probe");
        assert_eq!(
            route_class("/.well-known/oauth-protected-resource/mcp"),
            "metadata"
        );
        assert_eq!(route_class("/token"), "other");
    }
}
