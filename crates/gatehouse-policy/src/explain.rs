//! A decision described for people: what `gatehouse policy check` prints.

use std::sync::Arc;

use gatehouse_core::{Principal, TaskGrant, Timestamp};
use serde::Serialize;
use serde_json::Value;

use crate::{Decision, Kind, Policy, Target};

/// The answer to "may this caller make this call?", as both
/// `gatehouse policy check --json` and `POST /admin/policy/check` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCheck {
    /// `allow`, `deny` or `approval`.
    pub decision: &'static str,
    /// `allowed`, `approval_required`, or the refusal's reason code.
    pub reason: &'static str,
    /// The rule that decided, or the refusal in words.
    pub rule: String,
    pub tool: String,
    pub roles: Vec<String>,
    /// `null` for an unscoped credential.
    pub scopes: Option<Vec<String>>,
    /// The task the call was decided under, if one was named.
    pub task: Option<String>,
    /// What a grant of that task would allow this caller (role ∩ task);
    /// `null` without a task or when the task is refused.
    pub task_tools: Option<Vec<String>>,
}

/// One decision in words. Explaining grants nothing: there is no way from
/// an `Explanation` to a [`crate::Permit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// `allow`, `deny` or `approval` (allowed once a human approves).
    pub decision: &'static str,
    /// `allowed`, `approval_required`, or the deny reason code.
    pub reason: &'static str,
    /// The rule that allowed the call or asks for approval, or the deny
    /// message.
    pub rule: String,
}

impl Policy {
    /// Decides a call for `principal` as the gateway would, under the grant
    /// it would get for `task` (a refused task claim is itself the answer),
    /// and describes the outcome. `now` dates the hypothetical grant.
    /// The tool is routed by the default naming (`<upstream>__<tool>`);
    /// [`Policy::check_routed`] takes the gateway's routing instead.
    pub fn check(
        &self,
        principal: Principal,
        tool: &str,
        args: &Value,
        task: Option<&str>,
        now: Timestamp,
    ) -> PolicyCheck {
        let upstream = self.listed_tool(tool).upstream;
        self.check_routed(principal, tool, upstream, args, task, now)
    }

    /// [`Policy::check`] for a tool the gateway routes to `upstream`
    /// (`None`: a built-in tool, or one nobody serves): an upstream with
    /// its own `prefix` names its tools otherwise than the default naming,
    /// and the answer must be the rule the gateway applies.
    pub fn check_routed(
        &self,
        mut principal: Principal,
        tool: &str,
        upstream: Option<&str>,
        args: &Value,
        task: Option<&str>,
        now: Timestamp,
    ) -> PolicyCheck {
        let mut task_tools = None;
        let mut refused = None;
        if let Some(task) = task {
            match self.task_allowlist(&principal, task) {
                Ok(tools) => {
                    let lifetime =
                        i64::try_from(self.task_max_duration(task).as_millis()).unwrap_or(i64::MAX);
                    principal.task = Some(TaskGrant {
                        id: "policy-check".to_string(),
                        task: task.to_string(),
                        tools: tools.clone(),
                        expires_at: now.plus_millis(lifetime),
                        issued_at: None,
                    });
                    task_tools = Some(tools);
                }
                Err(refusal) => refused = Some(refusal),
            }
        }
        let principal = Arc::new(principal);
        let explanation = match refused {
            Some(refusal) => Explanation {
                decision: "deny",
                reason: refusal.code(),
                rule: refusal.to_string(),
            },
            None => {
                let target = Target {
                    kind: Kind::Tool,
                    name: tool,
                    upstream,
                };
                self.explain_target(&principal, &target, args)
            }
        };
        PolicyCheck {
            decision: explanation.decision,
            reason: explanation.reason,
            rule: explanation.rule,
            tool: tool.to_string(),
            roles: principal.roles.clone(),
            scopes: principal.scopes.clone(),
            task: task.map(str::to_string),
            task_tools,
        }
    }

    /// Decides the call as [`Policy::authorize_call`] does and describes the
    /// outcome.
    pub fn explain(&self, principal: &Arc<Principal>, tool: &str, args: &Value) -> Explanation {
        self.explain_target(principal, &crate::Target::tool(tool), args)
    }

    /// [`Policy::explain`] for any target.
    pub fn explain_target(
        &self,
        principal: &Arc<Principal>,
        target: &crate::Target<'_>,
        args: &Value,
    ) -> Explanation {
        match self.authorize_target_call(principal, target, args) {
            Decision::Permit(permit) => Explanation {
                decision: "allow",
                reason: "allowed",
                rule: permit.rule().to_string(),
            },
            Decision::NeedsApproval(needed) => Explanation {
                decision: "approval",
                reason: "approval_required",
                rule: needed.rule().to_string(),
            },
            Decision::Deny(deny) => Explanation {
                decision: "deny",
                reason: deny.reason.code(),
                rule: deny.message(),
            },
        }
    }
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
