//! What an upstream sends during one call, on its way to the client that
//! made the call: progress, log messages, and the sampling and elicitation
//! requests it asks that client to answer.
//!
//! The caller's side holds the receiving end and forwards each message
//! from within its own request (so a Streamable HTTP transport delivers it
//! on that request's stream); this crate only attributes each message to
//! the call it belongs to (see `sdk.rs`), and never to another caller.

// Sampling, logging and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::model::{
    ClientCapabilities, CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams,
    ElicitResult, ErrorData, LoggingMessageNotificationParam, ProgressNotificationParam,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Messages queued per call before progress and log messages are dropped
/// (a slow client must not hold up the upstream connection).
pub const RELAY_CAPACITY: usize = 64;

/// One message of the upstream, for the calling client.
#[derive(Debug)]
pub enum Relayed {
    /// `notifications/progress`; the token is the gateway's own (the caller
    /// side puts the caller's token back).
    Progress(ProgressNotificationParam),
    /// `notifications/message` (logging).
    Log(LoggingMessageNotificationParam),
    /// `sampling/createMessage`: the answer goes back through `reply`.
    Sampling {
        params: CreateMessageRequestParams,
        reply: oneshot::Sender<Result<CreateMessageResult, ErrorData>>,
    },
    /// `elicitation/create`: the answer goes back through `reply`.
    Elicitation {
        params: ElicitRequestParams,
        reply: oneshot::Sender<Result<ElicitResult, ErrorData>>,
    },
    /// The upstream closed the call's response stream before answering
    /// (SEP-1699: a server may, and the client resumes it with
    /// `Last-Event-ID`). The gateway resumes its side; the caller's side
    /// may close the caller's stream likewise, for the caller to resume.
    Paused,
}

impl Relayed {
    /// A sampling request for the calling client, without
    /// `includeContext`: to that client, "this server" is Gatehouse, so an
    /// upstream asking for it would be sent what the other upstreams put
    /// into the conversation. (Gatehouse declares no `sampling.context` to
    /// upstreams, so none should ask.)
    pub(crate) fn sampling(
        mut params: CreateMessageRequestParams,
        reply: oneshot::Sender<Result<CreateMessageResult, ErrorData>>,
    ) -> Relayed {
        params.include_context = None;
        Relayed::Sampling { params, reply }
    }
}

/// What the calling client takes during its call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepts {
    /// It gave a progress token.
    pub progress: bool,
    /// It receives log messages (it may have raised the level; the caller
    /// side filters).
    pub logs: bool,
    /// It declared sampling and can answer server requests (a session).
    pub sampling: bool,
    /// It declared elicitation and can answer server requests (a session).
    pub elicitation: bool,
}

/// The caller's side of one call: where the upstream's messages go.
#[derive(Debug, Clone)]
pub struct Relay {
    pub(crate) sender: mpsc::Sender<Relayed>,
    pub(crate) accepts: Accepts,
    /// The upstream's questions (sampling, elicitation) not answered yet,
    /// at most [`RELAY_CAPACITY`]: bounded apart from the progress and log
    /// messages that share the channel, so that those cannot crowd out a
    /// question, nor questions pile up without end.
    questions: Arc<Semaphore>,
}

/// A question put to the caller; its place is given back when dropped
/// (answered, or the call ended).
pub(crate) struct Asked(#[allow(dead_code)] OwnedSemaphorePermit);

/// Why an upstream's question was not put to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotAsked {
    /// The call has ended.
    Ended,
    /// [`RELAY_CAPACITY`] messages already wait for the caller.
    TooMany,
}

impl Relay {
    /// A relay and its receiving end.
    pub fn channel(accepts: Accepts) -> (Relay, mpsc::Receiver<Relayed>) {
        let (sender, receiver) = mpsc::channel(RELAY_CAPACITY);
        let questions = Arc::new(Semaphore::new(RELAY_CAPACITY));
        (
            Relay {
                sender,
                accepts,
                questions,
            },
            receiver,
        )
    }

    /// Puts an upstream's question (sampling, elicitation) to the caller.
    /// An upstream asking faster than its caller answers (or while a
    /// 2026-07-28 caller's call is held) is refused past
    /// [`RELAY_CAPACITY`] questions unanswered, rather than parking one task
    /// and its question per request for as long as the call lasts. Hold
    /// the returned place until the answer comes.
    pub(crate) async fn ask(&self, question: Relayed) -> Result<Asked, NotAsked> {
        let place = Arc::clone(&self.questions)
            .try_acquire_owned()
            .map_err(|_| NotAsked::TooMany)?;
        self.sender
            .send(question)
            .await
            .map_err(|_| NotAsked::Ended)?;
        Ok(Asked(place))
    }
}

/// How one call reaches back to its caller, and how the caller stops it.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Where the upstream's messages go; without one they are dropped and
    /// the upstream's requests refused.
    pub relay: Option<Relay>,
    /// Cancelled when the caller cancels the call: the upstream is told
    /// (`notifications/cancelled`) and the call ends with
    /// [`crate::UpstreamError::Cancelled`].
    pub cancel: CancellationToken,
    /// The capabilities the caller declared (at `initialize`, or in the
    /// request's `_meta`): its sampling, elicitation and roots are what a
    /// 2026-07-28 upstream is told, so that it asks only for input the
    /// caller can give.
    pub capabilities: Option<ClientCapabilities>,
    /// The caller speaks 2026-07-28 or later: an upstream's input-required
    /// result goes to it, and it calls again with the answers. Otherwise
    /// (a 2025-11-25 caller) the gateway asks the caller itself through
    /// `relay`, as a 2025-11-25 upstream would have, and calls again.
    pub takes_input_required: bool,
    /// The tenant whose share of the upstream's slots the call takes
    /// (`max_concurrent_calls_per_tenant`); `None` (no tenancy): only the
    /// upstream's slots.
    pub tenant_share: Option<Arc<str>>,
    /// The caller whose share of the upstream's slots the call takes
    /// (`max_concurrent_calls_per_caller`): a key naming the person behind
    /// the call, else the agent (`slot_shares.rs`). `None`: none.
    pub caller_share: Option<Arc<str>>,
    /// The caller's `Mcp-Param-*` headers (the name after the prefix, lower
    /// case, and the value as sent), for a 2026-07-28 HTTP request, whose
    /// headers must mirror the arguments its tool marks, or why they could
    /// not be read (sent twice, not visible ASCII); `None`: no such request
    /// (stdio, a 2025-11-25 session), nothing to hold them to.
    pub param_headers: Option<Result<Vec<(String, String)>, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{ContextInclusion, LoggingLevel, SamplingMessage};

    #[tokio::test]
    async fn questions_past_what_waits_are_refused_not_parked() {
        let (relay, receiver) = Relay::channel(Accepts::default());
        let question = || {
            let (reply, _answer) = oneshot::channel();
            Relayed::sampling(
                CreateMessageRequestParams::new(vec![SamplingMessage::user_text("hi")], 10),
                reply,
            )
        };
        let mut receiver = receiver;
        let mut asked = Vec::new();
        for _ in 0..RELAY_CAPACITY {
            // Read as the caller's side does, so the channel has room.
            asked.push(relay.ask(question()).await.unwrap());
            receiver.recv().await.unwrap();
        }
        assert!(matches!(
            relay.ask(question()).await,
            Err(NotAsked::TooMany)
        ));
        // An answered question gives its place back.
        asked.pop();
        assert!(relay.ask(question()).await.is_ok());
        drop(receiver);
        asked.pop();
        assert!(matches!(relay.ask(question()).await, Err(NotAsked::Ended)));
    }

    #[tokio::test]
    async fn progress_filling_the_channel_does_not_refuse_a_question() {
        let (relay, mut receiver) = Relay::channel(Accepts::default());
        for _ in 0..RELAY_CAPACITY {
            relay
                .sender
                .try_send(Relayed::Log(LoggingMessageNotificationParam::new(
                    LoggingLevel::Info,
                    serde_json::json!("x"),
                )))
                .unwrap();
        }
        let (reply, _answer) = oneshot::channel();
        let ask = relay.ask(Relayed::sampling(
            CreateMessageRequestParams::new(vec![SamplingMessage::user_text("hi")], 10),
            reply,
        ));
        // It waits for room rather than being refused.
        let drain = async {
            for _ in 0..=RELAY_CAPACITY {
                receiver.recv().await.unwrap();
            }
        };
        let (asked, ()) = tokio::join!(ask, drain);
        assert!(asked.is_ok());
    }

    #[test]
    fn a_sampling_request_reaches_the_client_without_context() {
        let params = CreateMessageRequestParams::new(vec![SamplingMessage::user_text("hi")], 10)
            .with_include_context(ContextInclusion::AllServers);
        let (reply, _answer) = oneshot::channel();
        let Relayed::Sampling { params, .. } = Relayed::sampling(params, reply) else {
            panic!("not a sampling request");
        };
        assert_eq!(params.include_context, None);
        assert_eq!(params.max_tokens, 10);
    }
}
