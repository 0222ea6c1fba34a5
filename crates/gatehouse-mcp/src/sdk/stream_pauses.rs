//! SEP-1699 through the gateway: when an upstream closes a call's
//! response stream before answering, the session client's stream is
//! closed likewise, for the client to resume it with `Last-Event-ID`.
//! rmcp's local sessions with request streams that can be closed mid-call.

// Logging, sampling and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

// One module split into files: the parent's names are this file's.
use super::*;

/// The response streams of session requests still open, by session and
/// JSON-RPC request id: each can be closed mid-call (SEP-1699) while its
/// request runs on.
#[derive(Clone, Default)]
pub(super) struct StreamPauses(Arc<Mutex<PauseTable>>);

/// The sender that closes each open stream, by session and request id.
type PauseTable = HashMap<(SessionId, RequestId), oneshot::Sender<()>>;

impl StreamPauses {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseTable> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a request's stream; the entry leaves with the stream.
    fn open(&self, session: SessionId, request: RequestId) -> (oneshot::Receiver<()>, PauseEntry) {
        let (pause, paused) = oneshot::channel();
        let key = (session, request);
        self.lock().insert(key.clone(), pause);
        (
            paused,
            PauseEntry {
                pauses: self.clone(),
                key,
            },
        )
    }

    /// Closes the stream of `request` in `session`, if it is still open.
    pub(super) fn pause(&self, session: &str, request: &RequestId) {
        let key = (SessionId::from(session), request.clone());
        if let Some(pause) = self.lock().remove(&key) {
            let _ = pause.send(());
        }
    }
}

/// Removes its stream from [`StreamPauses`] when the stream ends.
struct PauseEntry {
    pauses: StreamPauses,
    key: (SessionId, RequestId),
}

impl Drop for PauseEntry {
    fn drop(&mut self) {
        self.pauses.lock().remove(&self.key);
    }
}

/// A request's response stream that ends early when paused.
struct Pausable<S> {
    inner: std::pin::Pin<Box<S>>,
    paused: Option<oneshot::Receiver<()>>,
    _entry: Option<PauseEntry>,
}

impl<S: futures::Stream> futures::Stream for Pausable<S> {
    type Item = S::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        let this = self.get_mut();
        if let Some(paused) = this.paused.as_mut() {
            match std::pin::Pin::new(paused).poll(cx) {
                std::task::Poll::Ready(Ok(())) => return std::task::Poll::Ready(None),
                // Never paused now: read on.
                std::task::Poll::Ready(Err(_)) => this.paused = None,
                std::task::Poll::Pending => {}
            }
        }
        this.inner.as_mut().poll_next(cx)
    }
}

/// rmcp's local sessions, with request streams that can be closed mid-call
/// (rmcp keeps what is sent on a closed stream for the client's
/// resumption with `Last-Event-ID`, and answers that resumption).
pub(crate) struct PausableSessions {
    pub(super) inner: LocalSessionManager,
    pub(super) pauses: StreamPauses,
    /// Gatehouse's bindings of the sessions: a session the SDK ends is
    /// unbound (its lane closed, the fast path's calls in it cancelled).
    pub(super) bindings: Arc<SessionBindings>,
}

/// The notification `SdkSessions::touch` sends; no client sends it (it is
/// put in the session's queue directly), and the handler ignores it.
const KEEP_ALIVE: &str = "notifications/gatehouse/keep_alive";

type LocalError = <LocalSessionManager as SessionManager>::Error;
type LocalTransport = <LocalSessionManager as SessionManager>::Transport;

impl SessionManager for PausableSessions {
    type Error = LocalError;
    type Transport = LocalTransport;

    async fn create_session(&self) -> Result<(SessionId, LocalTransport), LocalError> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, LocalError> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, LocalError> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), LocalError> {
        // Whatever ends it: a DELETE, the idle timeout, its worker failing,
        // the incident response, shutdown.
        self.bindings.unbind(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, LocalError>
    {
        // Registered before the request reaches the handler, which may
        // pause it at once.
        let (paused, entry) = match &message {
            rmcp::model::JsonRpcMessage::Request(request) => {
                let (paused, entry) = self.pauses.open(id.clone(), request.id.clone());
                (Some(paused), Some(entry))
            }
            _ => (None, None),
        };
        let stream = self.inner.create_stream(id, message).await?;
        Ok(Pausable {
            inner: Box::pin(stream),
            paused,
            _entry: entry,
        })
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), LocalError> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, LocalError>
    {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl futures::Stream<Item = ServerSseMessage> + Send + Sync + 'static, LocalError>
    {
        self.inner.resume(id, last_event_id).await
    }

    async fn restore_session(
        &self,
        id: SessionId,
    ) -> Result<RestoreOutcome<LocalTransport>, LocalError> {
        self.inner.restore_session(id).await
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.inner.event_store()
    }
}

/// The SDK's sessions, so that the transport can end one it refused to
/// bind to a principal (a refused session must not live on unbound).
#[derive(Clone)]
pub struct SdkSessions(pub(super) Arc<PausableSessions>);

impl SdkSessions {
    /// Shows the SDK a session whose calls the fast path answers: the
    /// SDK's idle timer starts again, as for a request it answered. A
    /// session the SDK no longer has is unbound.
    pub(crate) async fn touch(&self, id: &str) {
        let message = ClientJsonRpcMessage::notification(ClientNotification::CustomNotification(
            CustomNotification::new(KEEP_ALIVE, None),
        ));
        if self
            .0
            .accept_message(&Arc::from(id), message)
            .await
            .is_err()
        {
            self.0.bindings.unbind(id);
        }
    }

    pub async fn close(&self, id: &str) {
        if let Err(e) = self.0.close_session(&Arc::from(id)).await {
            tracing::warn!(error = %e, "could not end a refused MCP session");
        }
    }

    /// Whether the SDK still holds the session.
    pub(crate) async fn holds(&self, id: &str) -> bool {
        self.0
            .inner
            .sessions
            .read()
            .await
            .contains_key(&SessionId::from(id))
    }

    /// Sessions the SDK holds (for tests).
    #[cfg(test)]
    pub async fn count(&self) -> usize {
        self.0.inner.sessions.read().await.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_request_stream_ends_and_the_others_go_on() {
        use futures::StreamExt;
        let pauses = StreamPauses::default();
        let stream = |request: i64| {
            let (paused, entry) = pauses.open(SessionId::from("s1"), RequestId::Number(request));
            Pausable {
                inner: Box::pin(futures::stream::iter([1, 2]).chain(futures::stream::pending())),
                paused: Some(paused),
                _entry: Some(entry),
            }
        };
        let mut first = stream(1);
        let mut second = stream(2);
        assert_eq!(first.next().await, Some(1));
        pauses.pause("s1", &RequestId::Number(1));
        assert_eq!(first.next().await, None);
        // Another session's request of the same id, or another request, is
        // not this one.
        pauses.pause("s2", &RequestId::Number(2));
        assert_eq!(second.next().await, Some(1));
        assert_eq!(second.next().await, Some(2));
        // A stream forgets its entry when it goes.
        drop(second);
        assert!(pauses.lock().is_empty());
    }
}
