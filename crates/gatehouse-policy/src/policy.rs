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

use crate::admin_access::ADMIN_SCOPE;
use crate::constraints::{self, ArgConstraint, ConstraintViolation, ToolConstraints};
use crate::policy_file::{RateLimit, TaskSpec};
use crate::tenants::TenantSpec;
use crate::{ApprovalNeeded, Decision, Deny, DenyReason, Permit};

/// The built-in roles, each including what the one before it may do.
pub const ROLES: [&str; 4] = ["reader", "analyst", "executor", "admin"];

/// The scope a scoped credential needs for a tool the policy does not name
/// (besides `tool:<name>`); only admins get that far.
pub const UNNAMED_TOOL_SCOPE: &str = ADMIN_SCOPE;

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
    /// Declared tenants; empty means tenancy is off.
    pub(crate) tenants: BTreeMap<String, TenantSpec>,
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
    /// the built-in [`ROLES`], none of them admin, no tasks, no limits, no
    /// tenants.
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
            tenants: BTreeMap::new(),
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

    /// Whether someone with these roles administers their tenant: they hold
    /// the role named `admin` or one with `admin = true`. Decides who may
    /// approve any call of the tenant and explain policy over HTTP.
    pub fn is_tenant_admin(&self, roles: &[String]) -> bool {
        roles.iter().any(|r| r == "admin" || self.is_admin_role(r))
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

    /// Every scope the policy uses, sorted and without duplicates; with
    /// an admin role, also the admin API's scope.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self.tools.values().map(|r| r.scope.clone()).collect();
        if self
            .roles()
            .any(|role| self.is_tenant_admin(&[role.to_string()]))
        {
            scopes.push(ADMIN_SCOPE.to_string());
        }
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The scopes worth granting to someone with this role: those of tools
    /// the role may call (directly or with approval), plus `tool:<name>`
    /// for each such tool, and for an admin role the admin API's scope. A
    /// consent page shows only these.
    pub fn scopes_for_role(&self, role: &str) -> Vec<String> {
        let mut scopes = Vec::new();
        if self.is_known_role(role) && self.is_tenant_admin(&[role.to_string()]) {
            scopes.push(ADMIN_SCOPE.to_string());
        }
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

    /// What the principal may do with a named tool, its task grant aside:
    /// `Deny` unless its tenant, its roles and its scopes all allow the tool.
    /// A task grant's allowlist is made of the tools where this is not `Deny`.
    pub(crate) fn access_outside_task(&self, principal: &Principal, tool: &str) -> Access {
        let Some(rule) = self.tools.get(tool) else {
            return Access::Deny;
        };
        let tenant_ok = self.tenant_allowed(&principal.tenant)
            && self.tenant_allows_tool(&principal.tenant, tool);
        if !tenant_ok || !Self::scope_allows(rule, tool, principal) {
            return Access::Deny;
        }
        Self::role_access(rule, principal)
    }

    /// Decides one tool call. The checks run from the narrowest grant to the
    /// tool's own rule: task grant, tenant, tool, role, scope.
    pub fn authorize(&self, principal: &Arc<Principal>, tool: &str) -> Decision {
        let deny = |reason| {
            Decision::Deny(Deny {
                tool: tool.to_string(),
                reason,
            })
        };
        // A grant is a ceiling whatever the roles allow, so it comes first.
        if let Some(grant) = &principal.task
            && !grant.allows(tool)
        {
            return deny(DenyReason::OutsideTask {
                task: grant.task.clone(),
            });
        }
        if !self.tenant_allowed(&principal.tenant) {
            return deny(DenyReason::UnknownTenant);
        }
        let Some(rule) = self.tools.get(tool) else {
            return self.authorize_unnamed(principal, tool);
        };
        if !self.tenant_allows_tool(&principal.tenant, tool) {
            return deny(DenyReason::NotInTenant);
        }
        let access = Self::role_access(rule, principal);
        if access == Access::Deny {
            return deny(DenyReason::RoleNotAllowed {
                roles: principal.roles.clone(),
            });
        }
        // Before approval too: no human should be asked to approve a call
        // the credential could not make anyway.
        if !Self::scope_allows(rule, tool, principal) {
            return deny(DenyReason::MissingScope {
                scope: rule.scope.clone(),
            });
        }
        let role = principal
            .roles
            .iter()
            .find(|r| rule.access.get(*r) == Some(&access))
            .cloned()
            .unwrap_or_default();
        match access {
            Access::Allow => Decision::Permit(Permit::new(
                Arc::clone(principal),
                tool,
                format!("role {role} allows {tool}"),
            )),
            _ => Decision::NeedsApproval(ApprovalNeeded::new(
                Arc::clone(principal),
                tool,
                format!("role {role} may call {tool} with an approved operation token"),
            )),
        }
    }

    /// A tool the policy does not name: deny by default, except for
    /// principals holding an admin role. A scoped admin credential still
    /// needs `tools:admin` or `tool:<name>`. With tenancy on, tenants may
    /// use named tools only.
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
        if !self.tenant_allows_tool(&principal.tenant, tool) {
            return deny(DenyReason::NotInTenant);
        }
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

    /// Decides one tool call including its arguments: as
    /// [`Policy::authorize`], then, for a permit or a call that needs
    /// approval, the tool's argument constraints. A violated constraint wins
    /// over approval: no human should be asked to approve a call that would
    /// be refused.
    pub fn authorize_call(&self, principal: &Arc<Principal>, tool: &str, args: &Value) -> Decision {
        let decision = self.authorize(principal, tool);
        if let Decision::Deny(_) = decision {
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
    /// in name order: what `tools/list` shows. The same filters as
    /// [`Policy::authorize`]: task grant, tenant, role and scope.
    pub fn visible_tools(&self, principal: &Principal) -> Vec<(&str, Access)> {
        self.tools
            .keys()
            .filter(|name| principal.task.as_ref().is_none_or(|g| g.allows(name)))
            .filter_map(|name| {
                let access = self.access_outside_task(principal, name);
                (access != Access::Deny).then_some((name.as_str(), access))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
