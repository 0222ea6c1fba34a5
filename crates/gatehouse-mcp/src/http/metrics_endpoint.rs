//! `/metrics` on the admin listener, never on the public one: it is not
//! behind gate 1, and what it shows (counts by reason, latencies, queue
//! depth) is for the operator.
//!
//! On a loopback address it answers only requests whose `Host` names the
//! loopback (`localhost`, `127.0.0.1`, `::1`, any port): a web page on
//! another name that resolves to 127.0.0.1 (DNS rebinding) could otherwise
//! read it from a browser on the same machine. An address reachable from
//! elsewhere (`allow_remote`) is the operator's to restrict, and any `Host`
//! is answered there, since Prometheus names its target as it likes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gatehouse_metrics::Metrics;

use super::guard::{HostAllowlist, request_host};
use crate::routes;

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, gatehouse_metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// The `Host` values the admin listener at `address` answers; `None`: any.
pub fn metrics_hosts(address: SocketAddr) -> Option<HostAllowlist> {
    address
        .ip()
        .is_loopback()
        .then(|| HostAllowlist::new(["localhost", "127.0.0.1", "::1"].map(String::from)))
}

async fn host_allowed(
    State(hosts): State<Option<Arc<HostAllowlist>>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(hosts) = &hosts
        && !request_host(&request).is_some_and(|h| hosts.allows(h))
    {
        return (StatusCode::FORBIDDEN, "Forbidden: Host is not allowed\n").into_response();
    }
    next.run(request).await
}

/// The admin listener's application: `/metrics` and nothing else, for the
/// `Host` values of `hosts` (`None`: any; see [`metrics_hosts`]).
pub fn metrics_router(metrics: Arc<Metrics>, hosts: Option<HostAllowlist>) -> Router {
    Router::new()
        .route(routes::METRICS, get(render))
        .with_state(metrics)
        .layer(from_fn_with_state(hosts.map(Arc::new), host_allowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn status(hosts: Option<HostAllowlist>, host: Option<&str>) -> u16 {
        let mut request = Request::get("/metrics");
        if let Some(host) = host {
            request = request.header("host", host);
        }
        metrics_router(Arc::new(Metrics::default()), hosts)
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn on_loopback_only_loopback_names_are_answered() {
        let loopback = || metrics_hosts("127.0.0.1:9464".parse().unwrap());
        for host in [
            "127.0.0.1:9464",
            "localhost:1234",
            "LOCALHOST",
            "[::1]:9464",
        ] {
            assert_eq!(status(loopback(), Some(host)).await, 200, "{host}");
        }
        // A rebinding page's name, another address, or no Host at all.
        for host in [Some("evil.example:9464"), Some("10.0.0.5:9464"), None] {
            assert_eq!(status(loopback(), host).await, 403, "{host:?}");
        }
        assert!(metrics_hosts("[::1]:9464".parse().unwrap()).is_some());
        // Reachable from elsewhere: the operator restricts who gets there.
        let remote = metrics_hosts("0.0.0.0:9464".parse().unwrap());
        assert!(remote.is_none());
        assert_eq!(status(remote, Some("prometheus-target:9464")).await, 200);
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let metrics = Arc::new(Metrics::default());
        metrics.decision("deny", "role_not_allowed");
        let response = metrics_router(Arc::clone(&metrics), None)
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            gatehouse_metrics::CONTENT_TYPE
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains(
                "gatehouse_decisions_total{decision=\"deny\",reason=\"role_not_allowed\"} 1"
            ),
            "{text}"
        );
    }
}
