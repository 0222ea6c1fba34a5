//! What the fast path needs of a 2025-11-25 session to answer its plain
//! tool calls itself, as the SDK would: what the client declared at
//! `initialize`, the log level it set, the SDK's peer of the session (an
//! upstream's log messages go out through it, as the SDK's handler sends
//! them), and its calls in flight (so that a `notifications/cancelled`
//! reaches a call the SDK never saw).
//!
//! The SDK's handler opens a lane when the session is initialized (only for
//! a client that declared neither sampling nor elicitation: the fast path
//! cannot ask it anything mid-call); the session's binding holds it
//! (`http/sessions.rs`), so it ends with the binding.

// Logging is deprecated by SEP-2577 (2026-07-28), and still the 2025-11-25
// protocol the gateway relays.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use rmcp::model::{ClientCapabilities, LoggingLevel, LoggingMessageNotificationParam};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The level `logging/setLevel` set for a session: upstream log messages
/// below it are not relayed. Shared by the SDK's handler of the session
/// and its lane.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogLevel(Arc<Mutex<Option<LoggingLevel>>>);

impl LogLevel {
    fn lock(&self) -> MutexGuard<'_, Option<LoggingLevel>> {
        // The level is one value, never half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set(&self, level: LoggingLevel) {
        *self.lock() = Some(level);
    }

    /// Whether a message of `level` is relayed.
    pub(crate) fn admits(&self, level: LoggingLevel) -> bool {
        // Variants run from Debug to Emergency.
        self.lock().is_none_or(|wanted| level as u8 >= wanted as u8)
    }
}

/// Where a session's log messages go: the SDK's peer of the session.
pub(crate) trait LogSink: Send + Sync + std::fmt::Debug {
    fn send(&self, message: LoggingMessageNotificationParam) -> BoxFuture<'_, ()>;
}

/// A session's lane (see the module's comment).
#[derive(Debug)]
pub struct SessionLane {
    /// The protocol version the client asked for; its requests must carry
    /// it in `MCP-Protocol-Version` to take the lane.
    protocol_version: String,
    capabilities: ClientCapabilities,
    log_level: LogLevel,
    logs: Box<dyn LogSink>,
    /// The fast path's calls in flight.
    in_flight: Mutex<Calls>,
}

/// A lane's calls in flight, by request id (`request_key`), and whether
/// the lane still takes new ones.
#[derive(Debug, Default)]
struct Calls {
    by_id: HashMap<String, CancellationToken>,
    /// Closed when the session ends, or when its client initializes it
    /// again (what it declared may have changed): no call starts on it
    /// from then on, and those running can still be cancelled.
    closed: bool,
}

/// A request id as rmcp reads it: a string, or an integer (`1.0` is `1`);
/// `None` for an id rmcp refuses (a fraction, out of range, anything else).
/// `1` and `"1"` are different ids.
pub(crate) fn request_key(id: &Value) -> Option<String> {
    match id {
        Value::String(text) => Some(format!("{text:?}")),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Some(integer.to_string()),
            None => {
                let float = number.as_f64()?;
                // Exactly an integer within i64's range, as rmcp accepts it.
                let in_range =
                    (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&float);
                (float.fract() == 0.0 && in_range).then(|| (float as i64).to_string())
            }
        },
        _ => None,
    }
}

impl SessionLane {
    pub(crate) fn new(
        protocol_version: String,
        capabilities: ClientCapabilities,
        log_level: LogLevel,
        logs: Box<dyn LogSink>,
    ) -> SessionLane {
        SessionLane {
            protocol_version,
            capabilities,
            log_level,
            logs,
            in_flight: Mutex::default(),
        }
    }

    pub(crate) fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    pub(crate) fn capabilities(&self) -> &ClientCapabilities {
        &self.capabilities
    }

    /// Sends an upstream's log message to the client, if its level is
    /// wanted: where the SDK's handler sends it (the session's standalone
    /// stream).
    pub(crate) async fn log(&self, message: LoggingMessageNotificationParam) {
        if self.log_level.admits(message.level) {
            self.logs.send(message).await;
        }
    }

    fn calls(&self) -> MutexGuard<'_, Calls> {
        // Entries are inserted and removed whole.
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a call with request id `id`, cancelled when the client
    /// cancels that id; `None` when the lane is closed, or a call with that
    /// id is in flight already (the SDK answers such a request as it sees
    /// fit).
    pub(crate) fn start(self: &Arc<Self>, id: &Value) -> Option<InFlight> {
        let key = request_key(id)?;
        let cancel = CancellationToken::new();
        let mut calls = self.calls();
        if calls.closed || calls.by_id.contains_key(&key) {
            return None;
        }
        calls.by_id.insert(key.clone(), cancel.clone());
        Some(InFlight {
            lane: Arc::clone(self),
            key,
            cancel,
        })
    }

    /// The client cancelled request `id`: the fast path's call with that
    /// id, if there is one, is cancelled.
    pub(crate) fn cancel(&self, id: &Value) {
        let Some(key) = request_key(id) else {
            return;
        };
        if let Some(cancel) = self.calls().by_id.get(&key) {
            cancel.cancel();
        }
    }

    /// No call starts on the lane any more (see `Calls::closed`).
    pub(crate) fn close(&self) {
        self.calls().closed = true;
    }

    /// The session ended: the lane is closed, and every call of it still
    /// running is cancelled, as the SDK cancels its own when it closes a
    /// session.
    pub(crate) fn cancel_all(&self) {
        let mut calls = self.calls();
        calls.closed = true;
        for cancel in calls.by_id.values() {
            cancel.cancel();
        }
    }
}

/// A call in flight on a lane; forgotten when dropped.
pub(crate) struct InFlight {
    lane: Arc<SessionLane>,
    key: String,
    cancel: CancellationToken,
}

impl InFlight {
    /// Cancelled when the client cancels the call.
    pub(crate) fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.lane.calls().by_id.remove(&self.key);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// Keeps what it is sent.
    #[derive(Debug, Default, Clone)]
    pub(crate) struct Kept(pub Arc<Mutex<Vec<String>>>);

    impl LogSink for Kept {
        fn send(&self, message: LoggingMessageNotificationParam) -> BoxFuture<'_, ()> {
            self.0.lock().unwrap().push(message.data.to_string());
            Box::pin(async {})
        }
    }

    pub(crate) fn lane_keeping(kept: Kept, level: LogLevel) -> SessionLane {
        SessionLane::new(
            "2025-11-25".into(),
            ClientCapabilities::default(),
            level,
            Box::new(kept),
        )
    }

    fn lane() -> Arc<SessionLane> {
        Arc::new(lane_keeping(Kept::default(), LogLevel::default()))
    }

    #[tokio::test]
    async fn log_messages_below_the_sessions_level_are_not_sent() {
        let kept = Kept::default();
        let level = LogLevel::default();
        let lane = lane_keeping(kept.clone(), level.clone());
        let message = |level, data: &str| LoggingMessageNotificationParam::new(level, json!(data));
        lane.log(message(LoggingLevel::Debug, "before")).await;
        // The level the session's handler sets reaches the lane.
        level.set(LoggingLevel::Error);
        lane.log(message(LoggingLevel::Info, "info")).await;
        lane.log(message(LoggingLevel::Error, "error")).await;
        assert_eq!(*kept.0.lock().unwrap(), ["\"before\"", "\"error\""]);
    }

    #[test]
    fn a_cancellation_reaches_the_call_with_that_id_only() {
        let lane = lane();
        let one = lane.start(&json!(1)).unwrap();
        let text_one = lane.start(&json!("1")).unwrap();
        lane.cancel(&json!(1));
        assert!(one.token().is_cancelled());
        assert!(!text_one.token().is_cancelled());
    }

    #[test]
    fn an_id_in_flight_is_not_taken_twice_and_is_free_again_when_done() {
        let lane = lane();
        let first = lane.start(&json!(7)).unwrap();
        assert!(lane.start(&json!(7)).is_none());
        drop(first);
        let again = lane.start(&json!(7)).unwrap();
        // A cancellation of the finished call does not reach the new one
        // before the client sends it.
        assert!(!again.token().is_cancelled());
        lane.cancel(&json!(7));
        assert!(again.token().is_cancelled());
    }

    #[test]
    fn a_session_that_ends_cancels_every_call_of_it_and_starts_no_other() {
        let lane = lane();
        let calls = [
            lane.start(&json!(1)).unwrap(),
            lane.start(&json!(2)).unwrap(),
        ];
        lane.cancel_all();
        assert!(calls.iter().all(|call| call.token().is_cancelled()));
        // A request that passed gate 1 just before the end takes the SDK's
        // path, which answers for an ended session.
        assert!(lane.start(&json!(3)).is_none());
    }

    #[test]
    fn a_closed_lane_starts_no_call_and_still_cancels_those_running() {
        let lane = lane();
        let running = lane.start(&json!(1)).unwrap();
        lane.close();
        assert!(lane.start(&json!(2)).is_none());
        lane.cancel(&json!(1));
        assert!(running.token().is_cancelled());
    }

    #[test]
    fn ids_are_keyed_as_the_sdk_reads_them() {
        assert_eq!(request_key(&json!(1)), request_key(&json!(1.0)));
        assert_ne!(request_key(&json!(1)), request_key(&json!("1")));
        for refused in [json!(1.5), json!(1e30), json!(null), json!([1]), json!({})] {
            assert_eq!(request_key(&refused), None, "{refused}");
        }
        let lane = lane();
        let running = lane.start(&json!(4)).unwrap();
        lane.cancel(&json!(4.0));
        assert!(running.token().is_cancelled());
        assert!(lane.start(&json!(0.5)).is_none());
    }

    #[test]
    fn the_log_level_admits_its_level_and_above() {
        let level = LogLevel::default();
        assert!(level.admits(LoggingLevel::Debug));
        level.set(LoggingLevel::Warning);
        assert!(!level.admits(LoggingLevel::Info));
        assert!(level.admits(LoggingLevel::Warning));
        assert!(level.admits(LoggingLevel::Error));
    }
}
