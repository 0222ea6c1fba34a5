//! Reads the request body completely before the MCP layer sees it, so a
//! slow or oversized body gets its own status (408, 413) instead of
//! surfacing as an internal error inside the SDK.

use std::error::Error;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::LengthLimitError;
use tower_http::timeout::TimeoutError;

use super::errors::jsonrpc_refusal;

fn caused_by<E: Error + 'static>(error: &(dyn Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

pub async fn buffer(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // The size cap and the deadline are enforced by the layers around the
    // router; this only collects what they let through.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(error) => {
            if caused_by::<TimeoutError>(&error) {
                jsonrpc_refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body was not received in time",
                )
            } else if caused_by::<LengthLimitError>(&error) {
                jsonrpc_refusal(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
            } else {
                jsonrpc_refusal(StatusCode::BAD_REQUEST, "request body could not be read")
            }
        }
    }
}
