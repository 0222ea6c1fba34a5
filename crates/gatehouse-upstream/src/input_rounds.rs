//! A 2026-07-28 upstream asks for input by answering a call with an
//! input-required result, for the client to call again with the answers. A
//! 2025-11-25 caller cannot: it expects the server to ask mid-call
//! (`elicitation/create`, `sampling/createMessage`) and to answer the call
//! once. For such a caller the gateway asks those questions itself, over
//! the call's relay, exactly as a 2025-11-25 upstream would have, and
//! calls the upstream again with the answers.

// Sampling is deprecated by SEP-2577 (2026-07-28), and still the
// 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::model::{ErrorData, InputRequest, InputRequiredResult, InputResponses};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::error::UpstreamError;
use crate::relay::{CallContext, Relayed};
use crate::sdk::UpstreamInput;

/// Input-required rounds one call may take before the gateway gives up on
/// it (rmcp's own client stops at the same number).
pub(crate) const MAX_INPUT_ROUNDS: usize = rmcp::model::DEFAULT_MRTR_MAX_ROUNDS;

/// Asks the calling client each question of `result`, one after the
/// other, and returns the input for the next round.
pub(crate) async fn ask_caller(
    upstream: &Arc<str>,
    result: InputRequiredResult,
    call: &CallContext,
) -> Result<UpstreamInput, UpstreamError> {
    let not_given = |reason: String| UpstreamError::InputNotGiven {
        upstream: upstream.clone(),
        reason,
    };
    let relay = call
        .relay
        .as_ref()
        .ok_or_else(|| not_given("the caller cannot be asked during this request".into()))?;
    let mut responses = InputResponses::new();
    for (key, request) in result.input_requests.unwrap_or_default() {
        let answer = match request {
            InputRequest::Elicitation(request) => {
                if !relay.accepts.elicitation {
                    return Err(not_given(
                        "the calling client does not accept elicitation requests".into(),
                    ));
                }
                let (reply, answer) = oneshot::channel();
                let sent = relay.sender.send(Relayed::Elicitation {
                    params: request.params,
                    reply,
                });
                answered(sent.await.is_ok(), answer.await)
            }
            InputRequest::CreateMessage(request) => {
                if !relay.accepts.sampling {
                    return Err(not_given(
                        "the calling client does not accept sampling requests".into(),
                    ));
                }
                let (reply, answer) = oneshot::channel();
                let sent = relay.sender.send(Relayed::sampling(request.params, reply));
                answered(sent.await.is_ok(), answer.await)
            }
            InputRequest::ListRoots(_) => {
                Err("the gateway does not relay roots (the upstream sees Gatehouse, not the caller's file system)".to_string())
            }
            _ => Err("the upstream asked for an unknown kind of input".to_string()),
        };
        responses.insert(key, answer.map_err(not_given)?);
    }
    Ok(UpstreamInput {
        input_responses: Some(responses),
        request_state: result.request_state,
    })
}

/// The client's answer to one relayed question, as the upstream's next
/// round takes it.
fn answered<T: Serialize>(
    sent: bool,
    answer: Result<Result<T, ErrorData>, oneshot::error::RecvError>,
) -> Result<serde_json::Value, String> {
    if !sent {
        return Err("the call has ended".into());
    }
    match answer {
        Ok(Ok(result)) => serde_json::to_value(result).map_err(|e| e.to_string()),
        Ok(Err(error)) => Err(format!(
            "the client answered with an error: {}",
            error.message
        )),
        Err(_) => Err("the call has ended".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::relay::{Accepts, Relay};

    fn upstream() -> Arc<str> {
        Arc::from("crm")
    }

    /// What a 2026-07-28 upstream answers when it needs `questions`.
    fn input_required(questions: serde_json::Value) -> InputRequiredResult {
        serde_json::from_value(json!({
            "resultType": "input_required",
            "inputRequests": questions,
            "requestState": "opaque",
        }))
        .unwrap()
    }

    fn name_question() -> serde_json::Value {
        json!({"name": {"method": "elicitation/create", "params": {
            "mode": "form", "message": "What is your name?",
            "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}}})
    }

    fn call_with(accepts: Accepts) -> (CallContext, tokio::sync::mpsc::Receiver<Relayed>) {
        let (relay, received) = Relay::channel(accepts);
        let call = CallContext {
            relay: Some(relay),
            ..CallContext::default()
        };
        (call, received)
    }

    #[tokio::test]
    async fn the_callers_answer_is_the_next_rounds_input() {
        let (call, mut received) = call_with(Accepts {
            elicitation: true,
            ..Accepts::default()
        });
        let client = tokio::spawn(async move {
            match received.recv().await {
                Some(Relayed::Elicitation { params, reply }) => {
                    let asked = serde_json::to_value(&params).unwrap();
                    assert_eq!(asked["message"], "What is your name?");
                    let answer = serde_json::from_value(
                        json!({"action": "accept", "content": {"name": "Ada"}}),
                    )
                    .unwrap();
                    reply.send(Ok(answer)).unwrap();
                }
                other => panic!("not an elicitation: {other:?}"),
            }
        });
        let input = ask_caller(&upstream(), input_required(name_question()), &call)
            .await
            .unwrap();
        client.await.unwrap();
        assert_eq!(input.request_state.as_deref(), Some("opaque"));
        let responses = input.input_responses.unwrap();
        assert_eq!(responses["name"]["action"], "accept");
        assert_eq!(responses["name"]["content"]["name"], "Ada");
    }

    #[tokio::test]
    async fn a_caller_that_cannot_answer_is_not_asked() {
        // Declared no elicitation.
        let (call, mut received) = call_with(Accepts::default());
        let error = ask_caller(&upstream(), input_required(name_question()), &call)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "upstream_input_not_given");
        assert!(received.try_recv().is_err());
        // No relay at all (a request that cannot reach back to its caller).
        let error = ask_caller(
            &upstream(),
            input_required(name_question()),
            &CallContext::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(error.code(), "upstream_input_not_given");
    }

    #[tokio::test]
    async fn roots_are_never_asked_for() {
        let (call, mut received) = call_with(Accepts {
            progress: true,
            logs: true,
            sampling: true,
            elicitation: true,
        });
        let roots = json!({"roots": {"method": "roots/list"}});
        let error = ask_caller(&upstream(), input_required(roots), &call)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "upstream_input_not_given");
        assert!(error.to_string().contains("roots"), "{error}");
        assert!(received.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_refusal_by_the_client_fails_the_call() {
        let (call, mut received) = call_with(Accepts {
            elicitation: true,
            ..Accepts::default()
        });
        tokio::spawn(async move {
            if let Some(Relayed::Elicitation { reply, .. }) = received.recv().await {
                let _ = reply.send(Err(ErrorData::invalid_request("no, thanks", None)));
            }
        });
        let error = ask_caller(&upstream(), input_required(name_question()), &call)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "upstream_input_not_given");
        assert!(error.to_string().contains("no, thanks"), "{error}");
    }
}
