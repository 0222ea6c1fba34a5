//! DNS-rebinding and cross-site defence: the `Host` must be one of ours and
//! a present `Origin` must be allowed. Runs before authentication, on every
//! route but the liveness probe.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::errors::jsonrpc_refusal;
use super::router::AppState;

/// Allowed `Host` values: bare names match any port, `name:port` only that port.
#[derive(Debug, Clone)]
pub struct HostAllowlist(Vec<String>);

impl HostAllowlist {
    pub fn new(hosts: impl IntoIterator<Item = String>) -> Self {
        HostAllowlist(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect())
    }

    pub fn entries(&self) -> &[String] {
        &self.0
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = host_name(&host);
        self.0
            .iter()
            .any(|allowed| *allowed == host || *allowed == name)
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `::1`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Allowed `Origin` values: `scheme://host[:port]`, or `scheme://host:*` for any port.
#[derive(Debug, Clone)]
pub struct OriginAllowlist(Vec<String>);

impl OriginAllowlist {
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        OriginAllowlist(origins.into_iter().map(|o| normalize_origin(&o)).collect())
    }

    pub fn entries(&self) -> &[String] {
        &self.0
    }

    pub fn allows(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        self.0
            .iter()
            .any(|allowed| match allowed.strip_suffix(":*") {
                Some(prefix) => {
                    origin == prefix
                        || origin
                            .strip_prefix(prefix)
                            .and_then(|rest| rest.strip_prefix(':'))
                            .is_some_and(|port| {
                                !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                            })
                }
                None => *allowed == origin,
            })
    }
}

/// Lowercase, no trailing slash, default ports removed.
fn normalize_origin(origin: &str) -> String {
    let lower = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if let Some(rest) = lower.strip_suffix(":80")
        && rest.starts_with("http://")
    {
        return rest.to_string();
    }
    if let Some(rest) = lower.strip_suffix(":443")
        && rest.starts_with("https://")
    {
        return rest.to_string();
    }
    lower
}

/// The `Host` of a request (HTTP/2 carries it as the URI's authority).
pub(crate) fn request_host(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

pub async fn host_and_origin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !request_host(&request).is_some_and(|h| state.hosts.allows(h)) {
        return jsonrpc_refusal(StatusCode::FORBIDDEN, "Forbidden: Host is not allowed");
    }
    let mut origins = request.headers().get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        let allowed =
            origins.next().is_none() && origin.to_str().is_ok_and(|o| state.origins.allows(o));
        if !allowed {
            return jsonrpc_refusal(StatusCode::FORBIDDEN, "Forbidden: Origin is not allowed");
        }
    }
    next.run(request).await
}

/// The guard of every route outside /mcp: the authorization server's
/// endpoints and pages and the metadata documents. The same `Host` rule as
/// /mcp; on a request that can change something (any method but GET, HEAD
/// and OPTIONS) a present `Origin` must be allowed, except `null`: our own
/// pages are sent with `Referrer-Policy: no-referrer`, under which browsers
/// post their forms with `Origin: null`. `null` (like an absent `Origin`,
/// as non-browser clients send) says nothing about the page, so the forms'
/// CSRF tokens remain what stops a forged form; this check refuses the
/// forms and scripts of a page that names its foreign origin.
pub async fn host_and_form_origin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !request_host(&request).is_some_and(|h| state.hosts.allows(h)) {
        return forbidden("Host is not allowed");
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let mut origins = request.headers().get_all(header::ORIGIN).iter();
        if let Some(origin) = origins.next() {
            let allowed = origins.next().is_none()
                && origin
                    .to_str()
                    .is_ok_and(|o| o == "null" || state.origins.allows(o));
            if !allowed {
                return forbidden("Origin is not allowed");
            }
        }
    }
    next.run(request).await
}

/// A refusal outside /mcp, in the OAuth error shape (RFC 6749 §5.2).
fn forbidden(description: &str) -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        Json(
            json!({"error": "forbidden", "error_description": format!("Forbidden: {description}")}),
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_or_exact_authority() {
        let hosts = HostAllowlist::new([
            "localhost".into(),
            "mcp.example.com:8443".into(),
            "::1".into(),
        ]);
        assert!(hosts.allows("localhost"));
        assert!(hosts.allows("LOCALHOST:8787"));
        assert!(hosts.allows("mcp.example.com:8443"));
        assert!(hosts.allows("[::1]:8787"));
        assert!(!hosts.allows("mcp.example.com"));
        assert!(!hosts.allows("evil.example.com"));
        assert!(!hosts.allows("localhost.evil.com"));
    }

    #[test]
    fn origins_match_exactly_or_with_any_port() {
        let origins = OriginAllowlist::new([
            "http://127.0.0.1:8787".into(),
            "http://localhost:*".into(),
            "https://app.example.com:443".into(),
        ]);
        assert!(origins.allows("http://127.0.0.1:8787"));
        assert!(origins.allows("http://localhost:6274"));
        assert!(origins.allows("http://localhost"));
        assert!(origins.allows("https://app.example.com"));
        assert!(!origins.allows("http://127.0.0.1:9999"));
        assert!(!origins.allows("http://evil.example.com"));
        assert!(!origins.allows("http://localhost.evil.com:80"));
        assert!(!origins.allows("http://localhost:80abc"));
        assert!(!origins.allows("null"));
    }
}
