//! Gate 2's admission of one request to /mcp, in one place.
//!
//! Gate 1 (`authenticate.rs`) made the caller and checked that a session
//! named in the request is theirs; the body layer read the body. `admit`
//! then decides from the caller and the message, parsed once, whether the
//! request goes on to the SDK: the caller's tenant, the task grant of its
//! session, a new session's budget, a task declared at `initialize`, and a
//! token's scope for the tool it calls (so OAuth clients can step up).
//! Every refusal is a [`Refusal`], audited with its code where the check
//! is an anomaly, and answered by `errors::refusal`. What remains for the
//! SDK's handler is the decision on the call itself (roles, constraints,
//! approvals, limits), made by the gateway, which stdio shares.

use std::sync::Arc;

use gatehouse_authz::{TASK_META, TaskGrantError, grant_of};
use gatehouse_core::{CredentialKind, TaskGrant};
use serde_json::{Map, Value};

use super::authenticate::DeclaredTask;
use super::router::AppState;
use crate::bound_grant::{self, GrantRefused};
use crate::refusal::Refusal;
use crate::{Caller, Gate1Error};

/// A JSON-RPC message as admission reads it, parsed once.
#[derive(Debug, Clone, Default)]
pub(super) struct Message {
    id: Value,
    method: Option<String>,
    params: Option<Map<String, Value>>,
    /// `"jsonrpc": "2.0"` and no member but `jsonrpc`, `id`, `method` and
    /// `params`: a request the fast path may answer itself.
    plain: bool,
}

impl Message {
    /// The message in a POSTed body; `None` for a body that is not one JSON
    /// object (the SDK refuses those, and the body layer answers them).
    pub(super) fn parse(bytes: &[u8]) -> Option<Message> {
        let Value::Object(mut object) = serde_json::from_slice(bytes).ok()? else {
            return None;
        };
        let plain = object.get("jsonrpc").and_then(Value::as_str) == Some("2.0")
            && object
                .keys()
                .all(|k| matches!(k.as_str(), "jsonrpc" | "id" | "method" | "params"));
        Some(Message {
            plain,
            id: object.remove("id").unwrap_or(Value::Null),
            method: match object.remove("method") {
                Some(Value::String(method)) => Some(method),
                _ => None,
            },
            params: match object.remove("params") {
                Some(Value::Object(params)) => Some(params),
                _ => None,
            },
        })
    }

    /// The request's id (null for a notification).
    pub(super) fn id(&self) -> &Value {
        &self.id
    }

    pub(super) fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    pub(super) fn is_plain(&self) -> bool {
        self.plain
    }

    pub(super) fn params(&self) -> Option<&Map<String, Value>> {
        self.params.as_ref()
    }

    fn is_initialize(&self) -> bool {
        self.method() == Some("initialize")
    }

    /// The task named in `params._meta["io.gatehouse/task"]`.
    fn declared_task(&self) -> Option<&str> {
        self.params.as_ref()?.get("_meta")?.get(TASK_META)?.as_str()
    }

    /// The tool and arguments of a `tools/call`.
    fn tool_call(&self) -> Option<(&str, Option<&Map<String, Value>>)> {
        if self.method() != Some("tools/call") {
            return None;
        }
        let params = self.params.as_ref()?;
        let name = params.get("name")?.as_str()?;
        Some((name, params.get("arguments").and_then(Value::as_object)))
    }
}

/// A request admitted: the caller it runs as (under its session's or its
/// newly declared task grant) and, for `initialize`, the task to bind the
/// new session to.
pub(super) struct Admitted {
    pub caller: Caller,
    pub declared: Option<DeclaredTask>,
}

/// Why a request was not admitted.
pub(super) enum NotAdmitted {
    /// Gate 2 refused it; `id` is the request's, when known.
    Refused { refusal: Refusal, id: Value },
    /// The revocation list could not be read: fail closed, as gate 1 does.
    Gate1(Gate1Error),
    /// Its audit record could not be written: nothing runs unaudited.
    AuditUnavailable,
    /// A dependency failed (task grants); the text is for the client.
    Unavailable(&'static str),
}

fn refused(refusal: Refusal, id: &Value) -> NotAdmitted {
    NotAdmitted::Refused {
        refusal,
        id: id.clone(),
    }
}

/// Records an anomaly before refusing; a refusal nobody can audit is an
/// audit failure.
async fn refuse_audited(
    state: &AppState,
    caller: &Caller,
    refusal: Refusal,
    detail: String,
    id: &Value,
) -> NotAdmitted {
    match state
        .gateway
        .record_anomaly(caller, refusal.code(), detail)
        .await
    {
        Ok(()) => refused(refusal, id),
        Err(_) => NotAdmitted::AuditUnavailable,
    }
}

/// Decides whether a request to /mcp goes on. `session_grant` is the task
/// grant the request's session is bound to; `message` is the body's
/// JSON-RPC message (`None` for a GET, a DELETE or a body that is not one).
pub(super) async fn admit(
    state: &AppState,
    caller: Caller,
    session_grant: Option<TaskGrant>,
    message: Option<&Message>,
) -> Result<Admitted, NotAdmitted> {
    let null = Value::Null;
    let id = message.map_or(&null, Message::id);

    // A sink that is down (the database, the file, a syslog receiver) holds
    // new requests off (503, Retry-After) rather than let them run into it;
    // the request's authentication record, already queued, is the next
    // attempt to write.
    if !state.gateway.audit().is_healthy() {
        return Err(NotAdmitted::AuditUnavailable);
    }

    // What every transport checks first (the caller's tenant).
    match state.gateway.admit_caller(&caller).await {
        Ok(Ok(())) => {}
        Ok(Err(refusal)) => return Err(refused(refusal, id)),
        Err(_) => return Err(NotAdmitted::AuditUnavailable),
    }

    // A session declared with a task runs under its grant while the grant
    // is live.
    let mut caller = caller;
    if let Some(grant) = session_grant {
        check_session_grant(state, &caller, &grant, id).await?;
        let mut principal = (*caller.principal).clone();
        principal.task = Some(grant);
        caller.principal = Arc::new(principal);
    }

    let Some(message) = message else {
        return Ok(Admitted {
            caller,
            declared: None,
        });
    };

    // A new session: the principal's budget of `initialize` requests, then
    // its share of the session table.
    if message.is_initialize() && caller.session.is_none() {
        may_start_session(state, &caller, id).await?;
    }

    let mut declared = None;
    if let Some(task) = message.declared_task()
        && let Some(grant) = declare_task(state, &caller, message, task).await?
    {
        // The initialize request itself already runs under the grant.
        let mut principal = (*caller.principal).clone();
        principal.task = Some(grant.0.clone());
        caller.principal = Arc::new(principal);
        declared = Some(grant);
    }

    // A token without the tool's scope gets an HTTP 403 challenge, so OAuth
    // clients can step up (MCP authorization, RS10). Every other decision
    // on the call is the gateway's, recorded there once.
    if caller.principal.credential.kind == CredentialKind::AccessToken
        && let Some((tool, arguments)) = message.tool_call()
    {
        match state.gateway.scope_denial(&caller, tool, arguments).await {
            Ok(Some(deny)) => return Err(refused(Refusal::InsufficientScope(deny), id)),
            Ok(None) => {}
            Err(_) => return Err(NotAdmitted::AuditUnavailable),
        }
    }
    Ok(Admitted { caller, declared })
}

/// The task grant of the request's session must be the caller's own (a
/// task token names its grant), unexpired and not revoked.
async fn check_session_grant(
    state: &AppState,
    caller: &Caller,
    grant: &TaskGrant,
    id: &Value,
) -> Result<(), NotAdmitted> {
    bound_grant::check(&state.authenticator, &state.gateway, caller, grant)
        .await
        .map_err(|error| match error {
            GrantRefused::Refused(refusal) => refused(refusal, id),
            GrantRefused::Unavailable(e) => NotAdmitted::Gate1(e),
            GrantRefused::AuditUnavailable => NotAdmitted::AuditUnavailable,
        })
}

/// Before the SDK makes a session: the principal's `initialize` budget,
/// then its session cap. Refusals are audited.
async fn may_start_session(
    state: &AppState,
    caller: &Caller,
    id: &Value,
) -> Result<(), NotAdmitted> {
    // Counted against the person, across every client acting for them:
    // registering clients is open to anyone, and each had budgets of its own.
    let subject = caller.principal.limit_key();
    let now = state.gateway.clock().now();
    let refusal = match state.session_starts.attempt(&subject, now) {
        Err(wait_ms) => Refusal::SessionStartsLimited {
            retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
        },
        Ok(()) => {
            let room = state.sessions.may_start(&subject);
            super::authenticate::end_forgotten_sessions(state);
            match room {
                Ok(()) => return Ok(()),
                Err(refusal) => state.sessions.refusal_for(refusal),
            }
        }
    };
    let detail = format!("initialize refused: {refusal}");
    Err(refuse_audited(state, caller, refusal, detail, id).await)
}

/// A task named in a request: granted when `initialize` declares it
/// outside a session; fine when it is the task already held; anything else
/// is an attempt to switch tasks.
async fn declare_task(
    state: &AppState,
    caller: &Caller,
    message: &Message,
    task: &str,
) -> Result<Option<DeclaredTask>, NotAdmitted> {
    let id = message.id();
    if !message.is_initialize() || caller.session.is_some() {
        let current = caller.principal.task.as_ref().map(|t| t.task.as_str());
        if current == Some(task) {
            return Ok(None);
        }
        let detail = format!(
            "{} named task {task:?} while holding {}",
            message.method().unwrap_or("a message"),
            current.map_or("no task grant".to_string(), |t| format!("task {t:?}"))
        );
        return Err(refuse_audited(state, caller, Refusal::TaskSwitch, detail, id).await);
    }
    match state.gateway.declare_task(caller, task).await {
        Ok(record) => Ok(Some(DeclaredTask(grant_of(&record)))),
        // The grant's own refusal record was written by `declare_task`.
        Err(TaskGrantError::Refused(refusal)) => Err(refused(Refusal::Task(refusal), id)),
        Err(TaskGrantError::Audit(_)) => Err(NotAdmitted::AuditUnavailable),
        Err(e) => {
            tracing::error!(error = %e, "task grant failed");
            Err(NotAdmitted::Unavailable("task grants are unavailable"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_read_once_with_what_admission_needs() {
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"a"},"_meta":{"io.gatehouse/task":"triage"}}}"#,
        )
        .unwrap();
        assert_eq!(m.id(), &serde_json::json!(7));
        assert_eq!(m.declared_task(), Some("triage"));
        let (tool, args) = m.tool_call().unwrap();
        assert_eq!(tool, "read_file");
        assert_eq!(args.unwrap()["path"], "a");
        assert!(!m.is_initialize());
    }

    #[test]
    fn json_escapes_cannot_hide_an_initialize_or_a_task() {
        // Byte scans missed these; the parsed message does not.
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":"x","method":"initializ\u0065","params":{"_meta":{"io.gatehouse/t\u0061sk":"triage"}}}"#,
        )
        .unwrap();
        assert!(m.is_initialize());
        assert_eq!(m.declared_task(), Some("triage"));
    }

    #[test]
    fn what_is_not_one_json_object_is_no_message() {
        for body in [&b"not json"[..], b"[1,2]", b"42", b"\"initialize\""] {
            assert!(Message::parse(body).is_none());
        }
        let notification =
            Message::parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(notification.id(), &Value::Null);
        assert!(notification.tool_call().is_none());
    }
}
