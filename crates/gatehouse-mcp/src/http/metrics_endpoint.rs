//! `/metrics` on the admin listener, never on the public one: it is not
//! behind gate 1, and what it shows (counts by reason, latencies, queue
//! depth) is for the operator.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use gatehouse_metrics::Metrics;

use crate::routes;

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, gatehouse_metrics::CONTENT_TYPE)],
        metrics.render(),
    )
}

/// The admin listener's application: `/metrics` and nothing else.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(routes::METRICS, get(render))
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let metrics = Arc::new(Metrics::default());
        metrics.decision("deny", "role_not_allowed");
        let response = metrics_router(Arc::clone(&metrics))
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
