//! A connection's requests in flight, for closing it once it has been idle
//! for the header-read timeout. hyper closes an idle HTTP/1 connection
//! itself (its header-read timeout runs between requests too); nothing did
//! so for HTTP/2, so a client that made one request and then said nothing
//! kept its connection, and a slot of `max_connections`, for good.
//!
//! A request counts from when it reaches the router until its response
//! body ends or is dropped (a long `GET` stream counts all along), or until
//! its handler is dropped (a client that resets the stream).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::response::Response;
use tokio::sync::Notify;

/// The requests in flight on one connection.
#[derive(Clone, Default)]
pub(super) struct InFlight(Arc<Shared>);

#[derive(Default)]
struct Shared {
    count: AtomicUsize,
    /// Told of every request that starts or ends.
    changed: Notify,
}

/// One request in flight; it ends when dropped.
pub(super) struct Entered(InFlight);

impl InFlight {
    pub(super) fn enter(&self) -> Entered {
        self.0.count.fetch_add(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
        Entered(self.clone())
    }

    fn count(&self) -> usize {
        self.0.count.load(Ordering::SeqCst)
    }

    /// Returns once no request has been in flight for `idle`.
    pub(super) async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.0.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so no change is missed.
            changed.as_mut().enable();
            if self.count() == 0 {
                if tokio::time::timeout(idle, changed).await.is_err() && self.count() == 0 {
                    return;
                }
            } else {
                changed.await;
            }
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        (self.0).0.count.fetch_sub(1, Ordering::SeqCst);
        (self.0).0.changed.notify_waiters();
    }
}

/// `response` with its body holding `guard` until the body ends or is
/// dropped (a request in flight).
pub(super) fn hold_until_sent<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response {
    hold_then(response, guard, drop)
}

/// `response` with its body holding `guard`: given to `sent` when the body
/// has been sent whole, or dropped with the body if it is dropped before
/// (the client went away).
pub(super) fn hold_then<G: Send + Unpin + 'static>(
    response: Response,
    guard: G,
    sent: fn(G),
) -> Response {
    // An empty body is never polled (hyper asks `is_end_stream` first):
    // it is sent as it is.
    if response.body().is_end_stream() {
        sent(guard);
        return response;
    }
    response.map(|inner| {
        Body::new(Held {
            inner,
            guard: Some(guard),
            sent,
        })
    })
}

struct Held<G> {
    inner: Body,
    guard: Option<G>,
    sent: fn(G),
}

impl<G> Held<G> {
    fn done(&mut self) {
        if let Some(guard) = self.guard.take() {
            (self.sent)(guard);
        }
    }
}

impl<G: Unpin> HttpBody for Held<G> {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        // hyper stops polling a body that says it ended after its last
        // frame (a whole JSON answer), so that counts as sent too.
        match &polled {
            Poll::Ready(None) => self.done(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.done(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guard is given to `sent` once the body was sent whole: at once
    /// for an empty body (never polled), after its last frame otherwise;
    /// a body dropped before that drops the guard instead.
    #[tokio::test]
    async fn a_guard_is_sent_when_its_body_was() {
        use http_body_util::BodyExt;
        use std::sync::atomic::AtomicBool;
        let mark = |flag: Arc<AtomicBool>| flag.store(true, Ordering::SeqCst);
        let empty = Arc::new(AtomicBool::new(false));
        let _ = hold_then(Response::new(Body::empty()), Arc::clone(&empty), mark);
        assert!(empty.load(Ordering::SeqCst));
        let whole = Arc::new(AtomicBool::new(false));
        let response = hold_then(
            Response::new(Body::from("answer")),
            Arc::clone(&whole),
            mark,
        );
        assert!(!whole.load(Ordering::SeqCst));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"answer");
        assert!(whole.load(Ordering::SeqCst));
        let dropped = Arc::new(AtomicBool::new(false));
        drop(hold_then(
            Response::new(Body::from("x")),
            Arc::clone(&dropped),
            mark,
        ));
        assert!(!dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight_for_the_whole_time() {
        let requests = InFlight::default();
        let streaming = requests.enter();
        let idle = tokio::spawn({
            let requests = requests.clone();
            async move { requests.idle_for(Duration::from_secs(10)).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!idle.is_finished(), "idle while a stream was open");
        drop(streaming);
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A request in the middle starts the wait again.
        drop(requests.enter());
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(
            !idle.is_finished(),
            "idle counted from before the last request"
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(idle.is_finished());
    }
}
