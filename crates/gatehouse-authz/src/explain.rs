//! A decision described for people: what `gatehouse policy check` prints.

use std::sync::Arc;

use gatehouse_core::Principal;
use serde::Serialize;
use serde_json::Value;

use crate::{Decision, Policy};

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
    /// Decides the call as [`Policy::authorize_call`] does and describes the
    /// outcome.
    pub fn explain(&self, principal: &Arc<Principal>, tool: &str, args: &Value) -> Explanation {
        match self.authorize_call(principal, tool, args) {
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
