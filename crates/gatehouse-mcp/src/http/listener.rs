//! The accept loop: hyper with a header-read timeout (slowloris), the peer
//! address in every request, and graceful shutdown.
//!
//! Connections are capped (`max_connections`: past it, new ones wait in the
//! kernel's backlog rather than take the descriptors the database and the
//! audit log need), and one that has not made a request within the
//! header-read timeout is closed, as is one with no request in flight for
//! that long (`in_flight.rs`). hyper's own timeout starts only once a
//! connection is known to speak HTTP/1, so a client that sends nothing, or
//! a part of the HTTP/2 preface, or opens HTTP/2 and goes quiet (before or
//! after a request), would otherwise hold its connection for good.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use gatehouse_core::TrustedProxies;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use gatehouse_core::PeerAddr;

use super::in_flight::{InFlight, hold_until_sent};

#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub header_read_timeout: Duration,
    /// Connections held at once.
    pub max_connections: usize,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// Whose `X-Forwarded-For` names the caller (`PeerAddr`).
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// Who sent `request`: the connection's peer, or behind a trusted proxy
/// the caller it names (with no port: the proxy's connection has it).
fn caller(
    proxies: &TrustedProxies,
    peer: SocketAddr,
    request: &hyper::Request<Incoming>,
) -> SocketAddr {
    if proxies.is_empty() {
        return peer;
    }
    let forwarded = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .map(hyper::header::HeaderValue::as_bytes);
    match proxies.caller(peer.ip(), forwarded) {
        ip if ip == peer.ip() => peer,
        ip => SocketAddr::new(ip, 0),
    }
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerSettings,
    shutdown: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    // Each connection holds a slot while it lives: at shutdown, taking them
    // all back is waiting for every connection to end.
    let capacity = limits
        .max_connections
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    let slots = Arc::new(tokio::sync::Semaphore::new(capacity));

    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // A streamed answer goes out in several small writes (headers and
        // a priming event, then the result); with Nagle's algorithm the
        // last one waits for the client's delayed ACK, about 40 ms a call.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let first_request = Arc::new(tokio::sync::Notify::new());
        let requested = Arc::clone(&first_request);
        let proxies = Arc::clone(&limits.trusted_proxies);
        let in_flight = InFlight::default();
        let counted = in_flight.clone();
        let router = router.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<Incoming>| {
            requested.notify_one();
            let entered = counted.enter();
            let caller = caller(&proxies, peer, &request);
            request.extensions_mut().insert(PeerAddr(caller));
            let answered = router.clone().oneshot(request);
            async move {
                let response = answered.await?;
                Ok::<_, std::convert::Infallible>(hold_until_sent(response, entered))
            }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let wait_for_request = limits.header_read_timeout;
        let shutdown_grace = limits.shutdown_grace;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::pin!(connection);
            // Until its first request, a connection has the header-read
            // timeout to make one (`notify_one` keeps the signal of a
            // request made before this waits).
            tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                waited = tokio::time::timeout(wait_for_request, first_request.notified()) => {
                    if waited.is_err() {
                        tracing::debug!("no request in time; connection closed");
                        return;
                    }
                }
                () = shutdown.cancelled() => return,
            }
            // Then until it has had no request in flight for as long, or
            // the server stops: either way it is closed gracefully (HTTP/2
            // GOAWAY, so a request crossing the close is retried elsewhere
            // rather than reset; HTTP/1 after the answer in progress).
            let stopping = tokio::select! {
                ended = &mut connection => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = in_flight.idle_for(wait_for_request) => {
                    tracing::debug!("connection idle; closing");
                    false
                }
                () = shutdown.cancelled() => true,
            };
            connection.as_mut().graceful_shutdown();
            // Requests that crossed the close (HTTP/2 takes new streams
            // until the client acknowledges it) run to their end; a client
            // that does not take part is cut off once nothing is in flight
            // for as long again, or when the shutdown's grace ends.
            let ended = if stopping {
                tokio::time::timeout(shutdown_grace, &mut connection)
                    .await
                    .ok()
            } else {
                tokio::select! {
                    ended = &mut connection => Some(ended),
                    () = in_flight.idle_for(wait_for_request) => None,
                }
            };
            match ended {
                Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
                Some(Ok(())) => {}
                None => tracing::debug!("connection did not close in time; dropped"),
            }
        });
    }
    drop(listener);
    let all = u32::try_from(capacity).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
}
