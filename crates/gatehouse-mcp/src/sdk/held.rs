//! `tools/call` of a 2026-07-28 caller whose 2025-11-25 upstream asks
//! for input mid-call: the questions go back as an input-required result,
//! the call is held open until the caller answers (see `held_calls`).

// Logging, sampling and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

// One module split into files: the parent's names are this file's.
use super::*;

/// What happened first while a held call ran.
enum HeldEvent {
    Done(Result<Result<CallResult, CallError>, tokio::task::JoinError>),
    Message(Relayed),
    CallerGone,
}

impl McpHandler {
    /// `tools/call` of a 2026-07-28 caller that can answer questions. The
    /// call runs on its own task; a question the upstream asks mid-call (a
    /// 2025-11-25 upstream) is answered by an input-required result, and
    /// the call is held open until the caller calls again with the answers
    /// and the request state (see `held_calls`).
    pub(super) async fn call_tool_held(
        &self,
        caller: Caller,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        declared: &ClientCapabilities,
        url_elicitation: bool,
    ) -> Result<CallToolResponse, ErrorData> {
        let owner = Owner::of(&caller.principal);
        let token = context.meta.get_progress_token();
        let resumed = request
            .request_state
            .as_deref()
            .filter(|state| state.starts_with(HELD_STATE_PREFIX));
        let mut held = match resumed {
            Some(state) => {
                let mut held = match self.held.resume(state, &owner, &request.name) {
                    Ok(held) => held,
                    Err(e) => {
                        // Expired, used, another caller's or another tool's:
                        // recorded, since replaying or probing request
                        // states looks exactly like this.
                        let (reason, message) = match e {
                            ResumeError::Unknown => (
                                "held_call_unknown",
                                "unknown or expired request state: call the tool again without it",
                            ),
                            ResumeError::OtherTool => (
                                "held_call_other_tool",
                                "the request state belongs to a call of another tool",
                            ),
                        };
                        let detail = format!("tools/call {} resumed: {message}", request.name);
                        if self
                            .gateway
                            .record_anomaly(&caller, reason, detail)
                            .await
                            .is_err()
                        {
                            return Err(internal_error(
                                "the audit log is unavailable, so the request was not run",
                            ));
                        }
                        return Err(ErrorData::invalid_params(message, None));
                    }
                };
                held.answer(request.input_responses.as_ref());
                held
            }
            None => {
                let (relay, relayed, _) = self.relay_for(context, declared);
                // The call outlives this request: its own token stops it.
                let cancel = CancellationToken::new();
                let call = CallContext {
                    cancel: cancel.clone(),
                    ..call_context(context, Some(relay))
                };
                let input = UpstreamInput {
                    input_responses: request.input_responses,
                    request_state: request.request_state,
                };
                // rmcp moves a request's `_meta` into the context as it dispatches.
                let meta = request
                    .meta
                    .as_ref()
                    .map(|m| m.0.0.clone())
                    .or_else(|| Some(context.meta.0.0.clone()));
                let gateway = self.gateway.clone();
                let name = request.name.to_string();
                let arguments = request.arguments;
                let work = tokio::spawn(async move {
                    gateway
                        .call_tool(&caller, &name, arguments, meta.as_ref(), input, call)
                        .await
                });
                HeldCall::new(owner, &request.name, work, relayed, cancel)
            }
        };
        loop {
            let event = tokio::select! {
                joined = &mut held.work => HeldEvent::Done(joined),
                Some(message) = held.relayed.recv() => HeldEvent::Message(message),
                () = context.ct.cancelled() => HeldEvent::CallerGone,
            };
            match event {
                HeldEvent::Done(joined) => {
                    while let Ok(message) = held.relayed.try_recv() {
                        self.notify(message, context, token.as_ref()).await;
                    }
                    let result = joined.map_err(|e| {
                        tracing::error!(error = %e, "a held upstream call failed");
                        ErrorData::internal_error("the call failed", None)
                    })?;
                    return match result.map_err(|e| call_error(e, url_elicitation))? {
                        CallResult::Builtin(result) => Ok(tool_result(result).into()),
                        CallResult::Upstream(answer) => Ok(answer),
                    };
                }
                // The caller cancelled: dropping the held call stops the
                // upstream's (audited as cancelled).
                HeldEvent::CallerGone => {
                    return Err(ErrorData::new(
                        ErrorCode::INTERNAL_ERROR,
                        "the request was cancelled",
                        None,
                    ));
                }
                HeldEvent::Message(message) => match Incoming::of(message) {
                    Incoming::Question(question) => {
                        held.ask(question);
                        // Questions asked together are answered together.
                        while let Ok(message) = held.relayed.try_recv() {
                            match Incoming::of(message) {
                                Incoming::Question(question) => held.ask(question),
                                Incoming::Notice(other) => {
                                    self.notify(other, context, token.as_ref()).await;
                                }
                            }
                        }
                        let requests = held.input_requests();
                        match self.held.hold(held) {
                            Ok(state) => {
                                return Ok(CallToolResponse::InputRequired(
                                    InputRequiredResult::new(Some(requests), Some(state)),
                                ));
                            }
                            Err(refused) => {
                                held = *refused;
                                held.refuse("the gateway holds too many calls of this caller open");
                            }
                        }
                    }
                    // A 2026-07-28 request has no session stream to resume.
                    Incoming::Notice(Relayed::Paused) => {}
                    Incoming::Notice(other) => self.notify(other, context, token.as_ref()).await,
                },
            }
        }
    }
}
