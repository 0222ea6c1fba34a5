//! Gate 2, dispatch and audit for one tool call, independent of the
//! transport it arrived on.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use gatehouse_audit::{AuditError, AuditLog, EventBuilder, Redactor};
use gatehouse_authz::{Access, Decision, Deny, DenyReason, Policy};
use gatehouse_core::{AuditKind, Clock, CredentialKind, Outcome, Principal};
use gatehouse_tools::{BuiltinTools, ToolDefinition, ToolError, ToolOutput};
use serde_json::{Map, Value};

use crate::Caller;
use crate::call_limits::CallLimits;

/// A tool as `tools/list` shows it to one principal.
#[derive(Debug, Clone)]
pub struct ListedTool {
    pub definition: ToolDefinition,
    pub access: Access,
}

/// Why a call produced no tool result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{}", .0.message())]
    Denied(Deny),
    /// No record could be written, so the call is refused: no audit, no call.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

pub struct Gateway {
    /// Replaced as a whole when the policy file changes; each request takes
    /// one snapshot, so a reload never mixes two policies in one decision.
    policy: RwLock<Arc<Policy>>,
    tools: BuiltinTools,
    audit: AuditLog,
    redactor: Redactor,
    clock: Arc<dyn Clock>,
    limits: CallLimits,
}

fn micros_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn result_size(output: &ToolOutput) -> u64 {
    let structured = output
        .structured
        .as_ref()
        .map(|v| v.to_string().len())
        .unwrap_or(0);
    u64::try_from(output.text.len() + structured).unwrap_or(u64::MAX)
}

impl Gateway {
    pub fn new(
        policy: Policy,
        tools: BuiltinTools,
        audit: AuditLog,
        redactor: Redactor,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Gateway {
            policy: RwLock::new(Arc::new(policy)),
            tools,
            audit,
            redactor,
            clock,
            limits: CallLimits::default(),
        }
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The current policy. A poisoned lock cannot hold a half-written
    /// policy (the swap is one assignment), so its value is still used.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(policy) => Arc::clone(&policy),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Installs a new policy for every request that starts afterwards.
    pub fn replace_policy(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.policy.write() {
            Ok(mut current) => *current = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The tools the principal may call, with their definitions.
    pub fn list_tools(&self, principal: &Principal) -> Vec<ListedTool> {
        self.policy()
            .visible_tools(principal)
            .into_iter()
            .filter_map(|(name, access)| {
                BuiltinTools::definition(name).map(|definition| ListedTool { definition, access })
            })
            .collect()
    }

    /// The fields every record of one tool call shares.
    fn tool_event(
        &self,
        caller: &Caller,
        name: &str,
        redacted: &Value,
        kind: AuditKind,
        outcome: Outcome,
    ) -> EventBuilder {
        EventBuilder::new(kind, outcome, self.clock.now())
            .principal(&caller.principal)
            .session(caller.session.clone())
            .source(caller.source.clone())
            .tool(name)
            .arguments(redacted.clone())
    }

    /// The record of a refused call; the same wherever the refusal surfaces.
    fn denial_event(
        &self,
        caller: &Caller,
        name: &str,
        redacted: &Value,
        deny: &Deny,
    ) -> EventBuilder {
        self.tool_event(
            caller,
            name,
            redacted,
            AuditKind::ToolDecision,
            Outcome::Denied,
        )
        .decision("deny")
        .reason(deny.reason.code())
        .error(deny.message())
    }

    /// For a caller holding an OAuth access token: if the token lacks the
    /// scope the tool needs, records the denial and returns it, so the HTTP
    /// layer can answer 403 with a step-up challenge. Every other decision is
    /// left to `call_tool` (and recorded there, once).
    pub async fn scope_denial(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Option<&Map<String, Value>>,
    ) -> Result<Option<Deny>, AuditError> {
        if caller.principal.credential.kind != CredentialKind::AccessToken {
            return Ok(None);
        }
        let policy = self.policy();
        let Decision::Deny(deny) = policy.authorize(&caller.principal, name) else {
            return Ok(None);
        };
        if deny.required_scope().is_none() {
            return Ok(None);
        }
        let redacted = self.redactor.redact_arguments(
            &Value::Object(arguments.cloned().unwrap_or_default()),
            policy.redact_fields(name),
        );
        self.audit
            .record(self.denial_event(caller, name, &redacted, &deny).build())
            .await?;
        Ok(Some(deny))
    }

    /// Authorizes, records the decision, runs the tool and records the
    /// outcome. A tool failure is a tool result (`Ok(Err(_))`), not a protocol error.
    pub async fn call_tool(
        &self,
        caller: &Caller,
        name: &str,
        arguments: Option<Map<String, Value>>,
    ) -> Result<Result<ToolOutput, ToolError>, CallError> {
        let started = Instant::now();
        // One snapshot for the whole call: a reload in between cannot mix policies.
        let policy = self.policy();
        let arguments = arguments.unwrap_or_default();
        let as_value = Value::Object(arguments.clone());
        let redacted = self
            .redactor
            .redact_arguments(&as_value, policy.redact_fields(name));
        let event = |kind, outcome| self.tool_event(caller, name, &redacted, kind, outcome);
        let permit = match policy.authorize_call(&caller.principal, name, &as_value) {
            Decision::Deny(deny) => {
                self.audit
                    .record(
                        self.denial_event(caller, name, &redacted, &deny)
                            .latency_us(micros_since(started))
                            .build(),
                    )
                    .await?;
                return Err(CallError::Denied(deny));
            }
            Decision::Permit(permit) => permit,
        };
        if let Err(retry_after_secs) =
            self.limits
                .check(&policy, &caller.principal, name, self.clock.now())
        {
            let deny = Deny {
                tool: name.to_string(),
                reason: DenyReason::RateLimited { retry_after_secs },
            };
            self.audit
                .record(
                    self.denial_event(caller, name, &redacted, &deny)
                        .latency_us(micros_since(started))
                        .build(),
                )
                .await?;
            return Err(CallError::Denied(deny));
        }
        // The decision is durable before the tool has any effect.
        self.audit
            .record(
                event(AuditKind::ToolDecision, Outcome::Success)
                    .decision("allow")
                    .reason(permit.rule())
                    .build(),
            )
            .await?;
        let result = self.tools.call(&permit, arguments).await;
        let outcome = match &result {
            Ok(output) => {
                event(AuditKind::ToolOutcome, Outcome::Success).result_bytes(result_size(output))
            }
            Err(error) => event(AuditKind::ToolOutcome, Outcome::Error)
                .reason(error.code())
                .error(self.redactor.redact_text(&error.to_string())),
        };
        self.audit
            .record(outcome.latency_us(micros_since(started)).build())
            .await?;
        Ok(result)
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
