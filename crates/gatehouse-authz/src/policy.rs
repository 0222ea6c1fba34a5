//! The policy model and the shipped default: the role × tool matrix.
//!
//! A policy is loaded from TOML ([`Policy::from_toml`], see `policy_file`)
//! and flattened at load time: each [`ToolRule`] holds the effective access
//! of every defined role, inheritance already applied, so a decision is a
//! few map lookups.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use gatehouse_core::Principal;
use serde_json::Value;

use crate::constraints::{self, ArgConstraint, ConstraintViolation, ToolConstraints};
use crate::policy_file::{RateLimit, TaskSpec};
use crate::{Decision, Deny, DenyReason, Permit};

/// The built-in roles, each including what the one before it may do.
pub const ROLES: [&str; 4] = ["reader", "analyst", "executor", "admin"];

/// The scope a scoped credential needs for a tool the policy does not name
/// (besides `tool:<name>`); only admins get that far.
pub const UNNAMED_TOOL_SCOPE: &str = "tools:admin";

/// What one role may do with one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Deny,
    /// Allowed only with a human-approved operation token.
    NeedsApproval,
    Allow,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Deny => "deny",
            Access::NeedsApproval => "approval",
            Access::Allow => "allow",
        }
    }
}

/// The rule for one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    /// The scope a scoped credential must hold to call the tool.
    pub scope: String,
    /// Access per role; a role not listed is denied.
    pub access: BTreeMap<String, Access>,
}

/// Everything the policy says about one tool beyond who may call it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ToolExtras {
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) redact: Vec<String>,
    pub(crate) constraints: ToolConstraints,
}

/// A role as the policy defines it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoleInfo {
    /// The role, or one it inherits, has `admin = true`.
    pub(crate) admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Access per tool, already flattened over role inheritance.
    pub(crate) tools: BTreeMap<String, ToolRule>,
    pub(crate) extras: BTreeMap<String, ToolExtras>,
    pub(crate) roles: BTreeMap<String, RoleInfo>,
    pub(crate) tasks: BTreeMap<String, TaskSpec>,
    pub(crate) role_limits: BTreeMap<String, RateLimit>,
}

/// The shipped default policy file, embedded so the binary needs no file
/// to start and so operators can print it as a starting point.
pub const DEFAULT_POLICY_TOML: &str = include_str!("default_policy.toml");

static DEFAULT_POLICY: LazyLock<Policy> = LazyLock::new(|| {
    match Policy::from_toml(DEFAULT_POLICY_TOML) {
        Ok(policy) => policy,
        // Unreachable in a released build: `shipped_default_policy_parses`
        // and the matrix tests load this exact text.
        Err(e) => panic!("the embedded default policy is invalid: {e}"),
    }
});

impl Policy {
    /// A policy from per-tool rules alone (used by tests and fixtures):
    /// the built-in [`ROLES`], none of them admin, no tasks, no limits.
    pub fn new(tools: BTreeMap<String, ToolRule>) -> Self {
        Policy {
            tools,
            extras: BTreeMap::new(),
            roles: ROLES
                .iter()
                .map(|r| (r.to_string(), RoleInfo::default()))
                .collect(),
            tasks: BTreeMap::new(),
            role_limits: BTreeMap::new(),
        }
    }

    /// The shipped default policy, built from `default_policy.toml` so the
    /// file operators copy and the built-in behaviour cannot drift apart.
    pub fn default_matrix() -> Self {
        DEFAULT_POLICY.clone()
    }

    /// Whether the policy defines this role (principals with unknown roles
    /// are denied everything).
    pub fn is_known_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// The roles the policy defines, in name order.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// Whether the role (directly or by inheritance) may call tools the
    /// policy does not name.
    pub fn is_admin_role(&self, role: &str) -> bool {
        self.roles.get(role).is_some_and(|r| r.admin)
    }

    /// Declared tasks in name order: what an agent may claim for a task grant.
    pub fn tasks(&self) -> impl Iterator<Item = (&str, &TaskSpec)> {
        self.tasks.iter().map(|(name, spec)| (name.as_str(), spec))
    }

    /// One declared task, to compute a grant's allowlist (role ∩ task).
    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.get(name)
    }

    /// The per-(principal, tool) rate limit, for the limiter in front of
    /// dispatch.
    pub fn tool_rate_limit(&self, tool: &str) -> Option<RateLimit> {
        self.extras.get(tool).and_then(|e| e.rate_limit)
    }

    /// The per-role limit over all tools together. Not inherited: a role
    /// gets only the limit written for it.
    pub fn role_rate_limit(&self, role: &str) -> Option<RateLimit> {
        self.role_limits.get(role).copied()
    }

    /// Argument fields the audit log must redact for this tool, on top of
    /// the audit crate's own list.
    pub fn redact_fields(&self, tool: &str) -> &[String] {
        self.extras.get(tool).map_or(&[], |e| e.redact.as_slice())
    }

    /// The argument constraints of a tool, by argument name.
    pub fn constraints(&self, tool: &str) -> impl Iterator<Item = (&str, &ArgConstraint)> {
        self.extras
            .get(tool)
            .into_iter()
            .flat_map(|e| e.constraints.iter().map(|(n, c)| (n.as_str(), c)))
    }

    /// Checks a call's arguments against the tool's constraints alone (no
    /// role or scope), e.g. again when an operation token is redeemed.
    pub fn check_arguments(&self, tool: &str, args: &Value) -> Result<(), ConstraintViolation> {
        match self.extras.get(tool) {
            Some(extras) => constraints::check_all(&extras.constraints, args),
            None => Ok(()),
        }
    }

    /// Every scope the policy uses, sorted and without duplicates.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.tools.values().map(|r| r.scope.clone()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The scopes worth granting to someone with this role: those of tools
    /// the role may call (directly or with approval), plus `tool:<name>`
    /// for each such tool. A consent page shows only these.
    pub fn scopes_for_role(&self, role: &str) -> Vec<String> {
        let mut scopes = Vec::new();
        for (tool, rule) in &self.tools {
            if rule.access.get(role).is_some_and(|a| *a != Access::Deny) {
                scopes.push(rule.scope.clone());
                scopes.push(format!("tool:{tool}"));
            }
        }
        scopes.sort();
        scopes.dedup();
        scopes
    }

    pub fn rule(&self, tool: &str) -> Option<&ToolRule> {
        self.tools.get(tool)
    }

    /// The most permissive access any of the principal's roles has.
    fn role_access(rule: &ToolRule, principal: &Principal) -> Access {
        principal
            .roles
            .iter()
            .filter_map(|role| rule.access.get(role).copied())
            .max()
            .unwrap_or(Access::Deny)
    }

    /// A scoped credential must hold the tool's scope, or `tool:<name>`.
    fn scope_allows(rule: &ToolRule, tool: &str, principal: &Principal) -> bool {
        match &principal.scopes {
            None => true,
            Some(scopes) => scopes
                .iter()
                .any(|s| *s == rule.scope || s.strip_prefix("tool:") == Some(tool)),
        }
    }

    /// Decides one tool call.
    pub fn authorize(&self, principal: &Arc<Principal>, tool: &str) -> Decision {
        let deny = |reason| {
            Decision::Deny(Deny {
                tool: tool.to_string(),
                reason,
            })
        };
        let Some(rule) = self.tools.get(tool) else {
            return self.authorize_unnamed(principal, tool);
        };
        match Self::role_access(rule, principal) {
            Access::Deny => deny(DenyReason::RoleNotAllowed {
                roles: principal.roles.clone(),
            }),
            Access::NeedsApproval => deny(DenyReason::ApprovalRequired),
            Access::Allow => {
                if !Self::scope_allows(rule, tool, principal) {
                    return deny(DenyReason::MissingScope {
                        scope: rule.scope.clone(),
                    });
                }
                let role = principal
                    .roles
                    .iter()
                    .find(|r| rule.access.get(*r) == Some(&Access::Allow))
                    .cloned()
                    .unwrap_or_default();
                Decision::Permit(Permit::new(
                    Arc::clone(principal),
                    tool,
                    format!("role {role} allows {tool}"),
                ))
            }
        }
    }

    /// A tool the policy does not name: deny by default, except for
    /// principals holding an admin role. A scoped admin credential still
    /// needs `tools:admin` or `tool:<name>`.
    fn authorize_unnamed(&self, principal: &Arc<Principal>, tool: &str) -> Decision {
        let deny = |reason| {
            Decision::Deny(Deny {
                tool: tool.to_string(),
                reason,
            })
        };
        let Some(role) = principal.roles.iter().find(|r| self.is_admin_role(r)) else {
            return deny(DenyReason::UnknownTool);
        };
        let scoped_ok = match &principal.scopes {
            None => true,
            Some(scopes) => scopes
                .iter()
                .any(|s| s == UNNAMED_TOOL_SCOPE || s.strip_prefix("tool:") == Some(tool)),
        };
        if !scoped_ok {
            return deny(DenyReason::MissingScope {
                scope: UNNAMED_TOOL_SCOPE.to_string(),
            });
        }
        Decision::Permit(Permit::new(
            Arc::clone(principal),
            tool,
            format!("role {role} is admin and may call {tool}, which the policy does not name"),
        ))
    }

    /// Decides one tool call including its arguments: role and scope as
    /// [`Policy::authorize`], then the tool's argument constraints. A tool
    /// that needs approval is still refused with `approval_required`, unless
    /// its arguments already violate a constraint (then that is the reason:
    /// no human should be asked to approve a call that would be refused).
    pub fn authorize_call(&self, principal: &Arc<Principal>, tool: &str, args: &Value) -> Decision {
        let decision = self.authorize(principal, tool);
        let needs_check = match &decision {
            Decision::Permit(_) => true,
            Decision::Deny(d) => d.reason == DenyReason::ApprovalRequired,
        };
        if !needs_check {
            return decision;
        }
        match self.check_arguments(tool, args) {
            Ok(()) => decision,
            Err(v) => Decision::Deny(Deny {
                tool: tool.to_string(),
                reason: DenyReason::ConstraintViolated {
                    argument: v.argument,
                    rule: v.rule,
                },
            }),
        }
    }

    /// Tools the principal may call (some only with an operation token),
    /// in name order: what `tools/list` shows.
    pub fn visible_tools(&self, principal: &Principal) -> Vec<(&str, Access)> {
        self.tools
            .iter()
            .filter_map(|(name, rule)| {
                let access = Self::role_access(rule, principal);
                let visible = access != Access::Deny && Self::scope_allows(rule, name, principal);
                visible.then_some((name.as_str(), access))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
