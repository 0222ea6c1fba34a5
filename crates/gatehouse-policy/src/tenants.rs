//! Tenants as the policy declares them (`[tenants.<name>]`).
//!
//! Tenancy is off until the policy declares a tenant; then only declared
//! tenants are served, each limited to its tool list when it has one.

use std::collections::BTreeSet;

use crate::Policy;
use crate::policy_file::RateLimit;
use crate::target::{Kind, Target};

/// What the policy says about one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TenantSpec {
    /// The tools the tenant may use; `None` means every tool the policy names.
    pub(crate) tools: Option<BTreeSet<String>>,
    /// One limit over all calls of the tenant together.
    pub(crate) rate_limit: Option<RateLimit>,
}

impl Policy {
    /// Whether the policy declares tenants. Without any, every principal's
    /// tenant is accepted and tenants restrict nothing.
    pub fn tenancy_enabled(&self) -> bool {
        !self.tenants.is_empty()
    }

    /// Whether principals of this tenant may be served at all: always when
    /// tenancy is off, else only for declared tenants.
    pub fn tenant_allowed(&self, tenant: &str) -> bool {
        !self.tenancy_enabled() || self.tenants.contains_key(tenant)
    }

    /// The tools a tenant is limited to, when tenancy is on and its entry
    /// lists them.
    pub fn tenant_tool_list(&self, tenant: &str) -> Option<&BTreeSet<String>> {
        self.tenants.get(tenant).and_then(|t| t.tools.as_ref())
    }

    /// The limit over all calls of the tenant together, if it has one.
    pub fn tenant_rate_limit(&self, tenant: &str) -> Option<RateLimit> {
        self.tenants.get(tenant).and_then(|t| t.rate_limit)
    }

    /// Whether the tenant may use `tool`. Without tenancy, yes. With it, the
    /// tool must be named in the policy and, when the tenant lists tools, be
    /// one of them; an undeclared tenant may use nothing.
    pub fn tenant_allows_tool(&self, tenant: &str, tool: &str) -> bool {
        self.tenant_allows(tenant, &Target::tool(tool))
    }

    /// Whether the tenant may use a target. Without tenancy, yes. With it,
    /// the policy must cover the target (by name or by its upstream's
    /// section); a tenant that lists tools may use only those tools, and
    /// then no prompts or resources.
    pub fn tenant_allows(&self, tenant: &str, target: &Target<'_>) -> bool {
        if !self.tenancy_enabled() {
            return true;
        }
        let Some(spec) = self.tenants.get(tenant) else {
            return false;
        };
        match &spec.tools {
            Some(tools) => target.kind == Kind::Tool && tools.contains(target.name),
            None => self.covering(target).is_some(),
        }
    }
}

#[cfg(test)]
#[path = "tenants_tests.rs"]
mod tests;
