//! The id of the HTTP request a task is serving, so every audit record made
//! while serving it carries the id without each call site passing it on.
//! Work the request hands to another task (the MCP SDK's session workers)
//! does not see it: there the record is given the id explicitly
//! (`EventBuilder::request_id`), from the caller gate 1 produced.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Runs `work` as part of the request `id`.
pub async fn in_request<F: Future>(id: Arc<str>, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// The id of the request the current task serves, if any.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventBuilder;
    use gatehouse_core::{AuditKind, Outcome, Timestamp};

    fn event() -> gatehouse_core::AuditEvent {
        EventBuilder::new(AuditKind::Authentication, Outcome::Success, Timestamp(1)).build()
    }

    #[tokio::test]
    async fn records_made_inside_a_request_carry_its_id() {
        assert_eq!(event().request_id, None);
        let inside = in_request(Arc::from("req-1"), async { event() }).await;
        assert_eq!(inside.request_id.as_deref(), Some("req-1"));
        // An explicit id (from the caller) wins.
        let explicit = in_request(Arc::from("req-1"), async {
            EventBuilder::new(AuditKind::Anomaly, Outcome::Denied, Timestamp(1))
                .request_id(Some("req-2"))
                .build()
        })
        .await;
        assert_eq!(explicit.request_id.as_deref(), Some("req-2"));
        assert_eq!(event().request_id, None);
    }
}
