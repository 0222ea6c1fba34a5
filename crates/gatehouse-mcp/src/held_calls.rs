//! Upstream calls held open between the requests of a 2026-07-28 caller.
//!
//! A 2025-11-25 upstream asks for input mid-call (`elicitation/create`,
//! `sampling/createMessage`) and waits for the answer. A 2026-07-28 caller
//! cannot be asked mid-call: it gets an input-required result and calls
//! again with the answers. So the gateway holds the upstream's call open,
//! answers the caller with the upstream's questions and a request state
//! naming the held call, and when the caller calls again with that state
//! and the answers, gives the answers to the upstream and goes on waiting.
//!
//! The state is a random token bound to the caller (tenant, credential,
//! agent) and the tool: nobody else can resume or even probe a held call.
//! A held call lives in this instance's memory: the retry must reach the
//! same instance (a load balancer with session affinity), else it is
//! refused and the caller starts the call afresh. Held calls are bounded
//! per caller and in all; each ends at the upstream's call timeout if the
//! caller does not come back.

// Sampling is deprecated by SEP-2577 (2026-07-28), and still the
// 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use gatehouse_core::Principal;
use gatehouse_upstream::Relayed;
use rmcp::model::{
    CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult, ElicitRequest,
    ElicitRequestParams, ElicitResult, ErrorData, InputRequest, InputRequests, InputResponses,
};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{CallError, CallResult};

/// How a request state naming a held call begins (a state the upstream
/// made never reaches the gateway's store).
pub(crate) const HELD_STATE_PREFIX: &str = "gatehouse-held-call:";

/// Held calls per caller, and in all, at one time.
const MAX_PER_CALLER: usize = 16;
const MAX_HELD: usize = 4096;

/// Who may resume a held call: the caller that started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    tenant: String,
    credential: String,
    agent: String,
    /// A task token's grant: its credential id is its base's, so without
    /// it a task token could resume its base's held calls (and the other
    /// way round).
    task: Option<String>,
}

impl Owner {
    /// The same caller, whatever task grant each holds.
    fn same_caller(&self, other: &Owner) -> bool {
        self.tenant == other.tenant
            && self.credential == other.credential
            && self.agent == other.agent
    }

    pub(crate) fn of(principal: &Principal) -> Owner {
        Owner {
            tenant: principal.tenant.clone(),
            credential: principal.credential.id.clone(),
            agent: principal.agent.clone(),
            task: principal.task.as_ref().map(|t| t.id.clone()),
        }
    }
}

/// One question of the upstream's, waiting for the caller's answer.
pub(crate) enum Question {
    Sampling {
        params: CreateMessageRequestParams,
        reply: oneshot::Sender<Result<CreateMessageResult, ErrorData>>,
    },
    Elicitation {
        params: ElicitRequestParams,
        reply: oneshot::Sender<Result<ElicitResult, ErrorData>>,
    },
}

/// A message of the upstream's during a held call: a question for the
/// caller, or a notice (progress, log) to pass on.
pub(crate) enum Incoming {
    Question(Question),
    Notice(Relayed),
}

impl Incoming {
    pub(crate) fn of(message: Relayed) -> Incoming {
        match message {
            Relayed::Sampling { params, reply } => {
                Incoming::Question(Question::Sampling { params, reply })
            }
            Relayed::Elicitation { params, reply } => {
                Incoming::Question(Question::Elicitation { params, reply })
            }
            other => Incoming::Notice(other),
        }
    }
}

impl Question {
    fn input_request(&self) -> InputRequest {
        match self {
            Question::Sampling { params, .. } => {
                InputRequest::CreateMessage(CreateMessageRequest::new(params.clone()))
            }
            Question::Elicitation { params, .. } => {
                InputRequest::Elicitation(ElicitRequest::new(params.clone()))
            }
        }
    }

    /// Gives the caller's answer (or its absence) to the upstream.
    fn answer(self, answer: Option<&serde_json::Value>) {
        let missing = || ErrorData::invalid_params("the client gave no answer", None);
        let unreadable = |e: serde_json::Error| {
            ErrorData::invalid_params(format!("the client's answer is unreadable: {e}"), None)
        };
        match self {
            Question::Sampling { reply, .. } => {
                let result = answer
                    .ok_or_else(missing)
                    .and_then(|a| serde_json::from_value(a.clone()).map_err(unreadable));
                let _ = reply.send(result);
            }
            Question::Elicitation { reply, .. } => {
                let result = answer
                    .ok_or_else(missing)
                    .and_then(|a| serde_json::from_value(a.clone()).map_err(unreadable));
                let _ = reply.send(result);
            }
        }
    }
}

/// An upstream call at work without its caller, and what it asked.
pub(crate) struct HeldCall {
    owner: Owner,
    tool: String,
    pub(crate) work: JoinHandle<Result<CallResult, CallError>>,
    pub(crate) relayed: mpsc::Receiver<Relayed>,
    /// Cancels the upstream call (the caller gave up, or nobody came back
    /// for it before it was dropped).
    pub(crate) cancel: CancellationToken,
    /// The questions of the current round, by the key the caller answers.
    questions: Vec<(String, Question)>,
}

impl HeldCall {
    pub(crate) fn new(
        owner: Owner,
        tool: &str,
        work: JoinHandle<Result<CallResult, CallError>>,
        relayed: mpsc::Receiver<Relayed>,
        cancel: CancellationToken,
    ) -> HeldCall {
        HeldCall {
            owner,
            tool: tool.to_string(),
            work,
            relayed,
            cancel,
            questions: Vec::new(),
        }
    }

    /// Adds a question to the round the caller will be asked.
    pub(crate) fn ask(&mut self, question: Question) {
        let key = format!("q{}", self.questions.len() + 1);
        self.questions.push((key, question));
    }

    /// The round's questions as the caller reads them.
    pub(crate) fn input_requests(&self) -> InputRequests {
        self.questions
            .iter()
            .map(|(key, question)| (key.clone(), question.input_request()))
            .collect()
    }

    /// Answers every question of the round with `reason` (the caller
    /// cannot be asked).
    pub(crate) fn refuse(&mut self, reason: &str) {
        for (_, question) in self.questions.drain(..) {
            let error = || ErrorData::invalid_request(reason.to_string(), None);
            match question {
                Question::Sampling { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
                Question::Elicitation { reply, .. } => {
                    let _ = reply.send(Err(error()));
                }
            }
        }
    }

    /// Gives the caller's answers to the upstream; a question left
    /// unanswered fails at the upstream.
    pub(crate) fn answer(&mut self, answers: Option<&InputResponses>) {
        for (key, question) in self.questions.drain(..) {
            question.answer(answers.and_then(|a| a.get(&key)));
        }
    }
}

impl Drop for HeldCall {
    fn drop(&mut self) {
        // Nobody will answer any more: the upstream's call is stopped
        // (audited as cancelled when its task ends).
        self.cancel.cancel();
    }
}

/// Why a request state could not resume a held call.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ResumeError {
    /// Unknown here: made up, already used, ended, or held by another
    /// instance. Another caller's state reads the same.
    Unknown,
    /// The state is the caller's, for another tool.
    OtherTool,
}

/// The held calls of this instance, by request state.
#[derive(Clone, Default)]
pub(crate) struct HeldCalls(Arc<Mutex<HashMap<String, HeldCall>>>);

impl HeldCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldCall>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds `call` and returns the request state that resumes it, or
    /// gives it back when its caller holds too many already.
    pub(crate) fn hold(&self, call: HeldCall) -> Result<String, Box<HeldCall>> {
        let mut token = [0u8; 32];
        if getrandom::fill(&mut token).is_err() {
            return Err(Box::new(call));
        }
        let state = format!(
            "{HELD_STATE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
        );
        let mut held = self.lock();
        // Calls whose upstream call ended (timed out) wait for nobody.
        held.retain(|_, c| !c.work.is_finished());
        // Counted without the task grant: a key minting task tokens (each
        // its own grant) must not get another share with each.
        let mine = held
            .values()
            .filter(|c| c.owner.same_caller(&call.owner))
            .count();
        if mine >= MAX_PER_CALLER || held.len() >= MAX_HELD {
            return Err(Box::new(call));
        }
        held.insert(state.clone(), call);
        Ok(state)
    }

    /// The held call `state` names, for its owner calling `tool`. A state
    /// is used once: the next round gets a new one.
    pub(crate) fn resume(
        &self,
        state: &str,
        owner: &Owner,
        tool: &str,
    ) -> Result<HeldCall, ResumeError> {
        let mut held = self.lock();
        match held.get(state) {
            Some(call) if call.owner != *owner => Err(ResumeError::Unknown),
            Some(call) if call.tool != tool => Err(ResumeError::OtherTool),
            Some(_) => held.remove(state).ok_or(ResumeError::Unknown),
            None => Err(ResumeError::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::{CredentialKind, CredentialRef};
    use serde_json::json;

    use super::*;

    fn principal(credential: &str) -> Principal {
        Principal {
            tenant: "acme".into(),
            human: None,
            agent: "agent".into(),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: credential.into(),
            },
            roles: vec!["analyst".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        }
    }

    /// A held call whose upstream call waits until cancelled.
    fn held(owner: &Owner) -> (HeldCall, mpsc::Sender<Relayed>) {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let work = tokio::spawn(async move {
            stop.cancelled().await;
            Err(CallError::Upstream(
                gatehouse_upstream::UpstreamError::Cancelled {
                    upstream: Arc::from("py"),
                },
            ))
        });
        let (sender, relayed) = mpsc::channel(4);
        (
            HeldCall::new(owner.clone(), "py__greet", work, relayed, cancel),
            sender,
        )
    }

    fn elicitation() -> (Question, oneshot::Receiver<Result<ElicitResult, ErrorData>>) {
        let params = serde_json::from_value(json!({
            "mode": "form", "message": "Name?",
            "requestedSchema": {"type": "object", "properties": {}}}))
        .unwrap();
        let (reply, answer) = oneshot::channel();
        (Question::Elicitation { params, reply }, answer)
    }

    #[tokio::test]
    async fn only_its_owner_resumes_a_held_call_and_only_once() {
        let calls = HeldCalls::default();
        let alice = Owner::of(&principal("key-a"));
        let bob = Owner::of(&principal("key-b"));
        let (call, _sender) = held(&alice);
        let state = calls.hold(call).ok().unwrap();
        assert!(state.starts_with(HELD_STATE_PREFIX));
        // Another caller learns nothing, not even that the state exists.
        assert_eq!(
            calls.resume(&state, &bob, "py__greet").err(),
            Some(ResumeError::Unknown)
        );
        assert_eq!(
            calls.resume(&state, &alice, "py__other").err(),
            Some(ResumeError::OtherTool)
        );
        assert!(calls.resume(&state, &alice, "py__greet").is_ok());
        assert_eq!(
            calls.resume(&state, &alice, "py__greet").err(),
            Some(ResumeError::Unknown)
        );
        let made_up = format!("{HELD_STATE_PREFIX}AAAA");
        assert_eq!(
            calls.resume(&made_up, &alice, "py__greet").err(),
            Some(ResumeError::Unknown)
        );
    }

    #[tokio::test]
    async fn a_caller_holds_a_bounded_number_of_calls() {
        let calls = HeldCalls::default();
        let alice = Owner::of(&principal("key-a"));
        let mut senders = Vec::new();
        for _ in 0..MAX_PER_CALLER {
            let (call, sender) = held(&alice);
            senders.push(sender);
            assert!(calls.hold(call).is_ok());
        }
        let (call, _sender) = held(&alice);
        assert!(calls.hold(call).is_err());
        // Another caller is not held back by Alice's calls.
        let (call, _sender) = held(&Owner::of(&principal("key-b")));
        assert!(calls.hold(call).is_ok());
    }

    #[tokio::test]
    async fn answers_reach_the_upstream_by_key_and_a_missing_one_fails() {
        let (mut call, _sender) = held(&Owner::of(&principal("key-a")));
        let (first, first_answer) = elicitation();
        let (second, second_answer) = elicitation();
        call.ask(first);
        call.ask(second);
        let requests = call.input_requests();
        assert_eq!(requests.keys().collect::<Vec<_>>(), ["q1", "q2"]);
        let answers: InputResponses =
            serde_json::from_value(json!({"q1": {"action": "decline"}})).unwrap();
        call.answer(Some(&answers));
        assert!(call.input_requests().is_empty());
        let first = first_answer.await.unwrap().unwrap();
        assert_eq!(serde_json::to_value(first).unwrap()["action"], "decline");
        assert!(second_answer.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_dropped_held_call_stops_its_upstream_call() {
        let (call, _sender) = held(&Owner::of(&principal("key-a")));
        let cancel = call.cancel.clone();
        drop(call);
        assert!(cancel.is_cancelled());
    }
}
