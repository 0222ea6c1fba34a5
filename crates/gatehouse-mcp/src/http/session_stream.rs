//! A session's `GET` stream ends when the credential that opened it lapses.
//!
//! `session_rechecks.rs` ends a whole session when the credential its
//! requests last presented is revoked, but not when it merely expires: an
//! idle client's next request brings a fresh token to the same session.
//! The session's `GET` stream is another matter: it stays open between
//! requests and carries what the session hears, so it is held to the
//! credential it was opened with, as a `subscriptions/listen` stream is
//! (`stream_credential.rs`): it ends when that credential expires (a key's
//! rotation overlap included), is revoked, or no longer gives the same
//! authority. The client opens it again with the credential it holds now,
//! through gate 1; the session stays.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;

use crate::stream_credential::{LapsedStream, StreamCredential};
use crate::{Caller, Gateway};

/// How long the lapse's record may take before the stream ends all the
/// same (the record is still written when the log takes it).
const RECORD_BEFORE_CLOSE: Duration = Duration::from_secs(2);

/// Whether `response` opened an event stream.
pub(super) fn is_event_stream(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::OK
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"))
}

/// The stream of `response`, ended (and recorded) when `credential` lapses.
pub(super) fn end_when_lapsed(
    response: Response,
    credential: StreamCredential,
    gateway: Arc<Gateway>,
    caller: Caller,
) -> Response {
    let lapsed = async move {
        let lapse = credential.lapsed().await;
        let record = tokio::spawn(async move {
            gateway
                .record_stream_lapsed(&caller, LapsedStream::SessionStream, lapse)
                .await;
        });
        let _ = tokio::time::timeout(RECORD_BEFORE_CLOSE, record).await;
    };
    let (parts, body) = response.into_parts();
    let events = body.into_data_stream().take_until(lapsed);
    Response::from_parts(parts, Body::from_stream(events))
}
