//! The policy model and the shipped default: the role × tool matrix.

use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_core::Principal;

use crate::{Decision, Deny, DenyReason, Permit};

/// The built-in roles, each including what the one before it may do.
pub const ROLES: [&str; 4] = ["reader", "analyst", "executor", "admin"];

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    tools: BTreeMap<String, ToolRule>,
}

impl Policy {
    pub fn new(tools: BTreeMap<String, ToolRule>) -> Self {
        Policy { tools }
    }

    /// The shipped default policy.
    pub fn default_matrix() -> Self {
        use Access::{Allow, Deny as D, NeedsApproval as T};
        // tool, scope, [reader, analyst, executor, admin]
        let rows: [(&str, &str, [Access; 4]); 9] = [
            ("whoami", "tools:read", [Allow, Allow, Allow, Allow]),
            ("read_file", "tools:read", [Allow, Allow, Allow, Allow]),
            (
                "search_database",
                "tools:read",
                [Allow, Allow, Allow, Allow],
            ),
            ("web_fetch", "tools:web", [D, Allow, Allow, Allow]),
            ("write_file", "tools:write", [D, D, T, Allow]),
            ("send_email", "tools:write", [D, D, T, Allow]),
            ("execute_code", "tools:write", [D, D, T, Allow]),
            ("access_secrets", "tools:admin", [D, D, D, T]),
            ("modify_mcp_config", "tools:admin", [D, D, D, T]),
        ];
        let tools = rows
            .into_iter()
            .map(|(tool, scope, access)| {
                let access = ROLES
                    .iter()
                    .zip(access)
                    .map(|(role, a)| (role.to_string(), a))
                    .collect();
                (
                    tool.to_string(),
                    ToolRule {
                        scope: scope.to_string(),
                        access,
                    },
                )
            })
            .collect();
        Policy { tools }
    }

    pub fn is_known_role(&self, role: &str) -> bool {
        ROLES.contains(&role)
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
            return deny(DenyReason::UnknownTool);
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
