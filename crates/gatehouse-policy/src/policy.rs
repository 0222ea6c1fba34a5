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
use crate::loose_names::{LooseNames, loose_key};
use crate::policy_file::{RateLimit, TaskSpec};
use crate::resource_readings;
use crate::target::{Kind, Target};
use crate::tenants::TenantSpec;
use crate::uri_template;
use crate::{ApprovalNeeded, Decision, Deny, DenyReason, Permit};

/// The built-in roles, each including what the one before it may do.
pub const ROLES: [&str; 4] = ["reader", "analyst", "executor", "admin"];

/// The scope a scoped credential needs for a tool the policy does not name
/// (besides `tool:<name>`); only admins get that far.
pub const UNNAMED_TOOL_SCOPE: &str = ADMIN_SCOPE;

/// The longest resource URI decided on (4 KiB: far past any real one). A
/// longer one is refused before anything else: each reading of it, each
/// template it is matched against and each rate-limit key it would become
/// costs in proportion to its length, and the caller chooses it. An audit
/// record keeps a URI whole: at 8 KiB, the part a record cut off (past
/// 4 KiB of `./` segments) could be the file the read opened.
pub const MAX_RESOURCE_URI_BYTES: usize = 4 * 1024;
const _: () = assert!(MAX_RESOURCE_URI_BYTES <= gatehouse_core::MAX_RECORDED_TEXT_BYTES);

/// The longest tool or prompt name decided on: an upstream's own names are
/// at most 128 bytes (longer ones are withheld), and a gateway name adds
/// its upstream's prefix. A longer one is refused, so the record of a call
/// (which keeps 4 KiB of a name) names what was called whole, also at an
/// upstream whose names are not pinned.
pub const MAX_NAME_BYTES: usize = 512;
const _: () = assert!(MAX_NAME_BYTES <= gatehouse_core::MAX_RECORDED_TEXT_BYTES);

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
    /// `[prompts.NAME]` and `[resources."URI"]`, flattened like tools.
    pub(crate) prompts: BTreeMap<String, (ToolRule, ToolExtras)>,
    pub(crate) resources: BTreeMap<String, (ToolRule, ToolExtras)>,
    /// `[upstreams.NAME]`: the rule for everything that upstream serves
    /// and the policy does not name itself.
    pub(crate) upstreams: BTreeMap<String, (ToolRule, ToolExtras)>,
    /// The named tools and prompts as upstreams may read them loosely.
    pub(crate) loose_names: LooseNames,
}

/// An empty `ToolExtras`, for targets the policy does not name.
static NO_EXTRAS: LazyLock<ToolExtras> = LazyLock::new(ToolExtras::default);

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
            loose_names: LooseNames::new(tools.keys(), []),
            tools,
            extras: BTreeMap::new(),
            roles: ROLES
                .iter()
                .map(|r| (r.to_string(), RoleInfo::default()))
                .collect(),
            tasks: BTreeMap::new(),
            role_limits: BTreeMap::new(),
            tenants: BTreeMap::new(),
            prompts: BTreeMap::new(),
            resources: BTreeMap::new(),
            upstreams: BTreeMap::new(),
        }
    }

    /// The rule that covers a target, and its extras: the target's own entry
    /// (`[tools.*]`, `[prompts.*]`, `[resources.*]`), else the defaults of
    /// the upstream that serves it. `None`: the policy does not cover it.
    pub(crate) fn covering(&self, target: &Target<'_>) -> Option<(&ToolRule, &ToolExtras)> {
        let named = match target.kind {
            Kind::Tool => self
                .tools
                .get(target.name)
                .map(|rule| (rule, self.extras.get(target.name).unwrap_or(&NO_EXTRAS))),
            Kind::Prompt => self.prompts.get(target.name).map(|(r, e)| (r, e)),
            Kind::Resource => self.resource_entry(target.name).map(|(r, e)| (r, e)),
        };
        named.or_else(|| {
            // A name that is a named entry's but for case, space or
            // invisible characters (`crm__SUMMARIZE`, `crm__summarize `,
            // `crm__\u{17F}ummarize`) is not the section's to cover: an
            // upstream that matches names loosely would serve the entry's
            // target under the section's looser rule (`loose_names.rs`).
            if self.shadows_a_named_entry(target) {
                return None;
            }
            target
                .upstream
                .and_then(|u| self.upstreams.get(u))
                // A section's argument constraints narrow its tools and
                // prompts; a resource is read without arguments, so a
                // section with constraints does not cover its resources
                // (a reader limited to `public/` by the tools' constraints
                // could read everything the server lists): they need
                // `[resources.*]` entries of their own.
                .filter(|(_, extras)| {
                    target.kind != Kind::Resource || extras.constraints.is_empty()
                })
                .map(|(r, e)| (r, e))
        })
    }

    /// Whether `target` is a `[tools.*]` or `[prompts.*]` entry's name,
    /// exactly.
    fn names_exactly(&self, target: &Target<'_>) -> bool {
        match target.kind {
            Kind::Tool => self.tools.contains_key(target.name),
            Kind::Prompt => self.prompts.contains_key(target.name),
            Kind::Resource => false,
        }
    }

    /// Whether `target` names a `[tools.*]` or `[prompts.*]` entry but for
    /// how a loose comparison reads it (it is not that entry exactly).
    fn shadows_a_named_entry(&self, target: &Target<'_>) -> bool {
        match target.kind {
            Kind::Tool => self.loose_names.has_tool(target.name),
            Kind::Prompt => self.loose_names.has_prompt(target.name),
            Kind::Resource => false,
        }
    }

    /// The upstream policy section a tool name belongs to by the default
    /// naming (`<upstream>__<tool>`), for task and tenant lists, which are
    /// checked without the gateway's routing. A tool of an upstream with
    /// another prefix is listed by naming it in `[tools.*]`.
    pub(crate) fn upstream_by_name<'a>(&self, tool: &'a str) -> Option<&'a str> {
        let (upstream, rest) = tool.split_once("__")?;
        (!rest.is_empty() && self.upstreams.contains_key(upstream)).then_some(upstream)
    }

    /// A tool named in a task or tenant list, as a target: routed by the
    /// default naming when the policy does not name it.
    pub(crate) fn listed_tool<'a>(&'a self, tool: &'a str) -> Target<'a> {
        Target {
            kind: Kind::Tool,
            name: tool,
            upstream: if self.tools.contains_key(tool) {
                None
            } else {
                self.upstream_by_name(tool)
            },
        }
    }

    /// The names of the `[tools.*]` entries.
    pub fn tool_names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
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
    /// the role named `admin` (while the policy defines it) or one with
    /// `admin = true`. Decides who may approve any call of the tenant and
    /// explain policy over HTTP. A policy that drops `admin` (say, for an
    /// `owner` role) demotes its holders, as it does for every other right.
    pub fn is_tenant_admin(&self, roles: &[String]) -> bool {
        roles
            .iter()
            .any(|r| (r == "admin" && self.is_known_role(r)) || self.is_admin_role(r))
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
        self.rate_limit_for(&Target::tool(tool))
    }

    /// The per-(principal, target) rate limit of any target.
    pub fn rate_limit_for(&self, target: &Target<'_>) -> Option<RateLimit> {
        self.covering(target).and_then(|(_, e)| e.rate_limit)
    }

    /// Every rate limit a call or read counts against, and the name it is
    /// counted under. A resource is counted under its canonical URI against
    /// the limit of each rule any reading of it falls under (as it is
    /// authorized under every reading): spelt otherwise (`?1`, `#a`,
    /// `%65`), a URI would otherwise fall under no entry's limit, or start
    /// a counter of its own each time.
    /// Nothing is allocated for a tool without a limit (every call asks).
    pub fn rate_limits_for<'a>(
        &self,
        target: &Target<'a>,
    ) -> (Vec<RateLimit>, std::borrow::Cow<'a, str>) {
        let as_written = std::borrow::Cow::Borrowed(target.name);
        if target.kind != Kind::Resource {
            let limits: Vec<RateLimit> = self.rate_limit_for(target).into_iter().collect();
            // A tool or prompt its upstream's section covers is counted
            // under its loose key: spelt otherwise (`crm__Summarize`,
            // `crm__summarize\u{200b}`), it reaches the same tool at an
            // upstream that matches names loosely, and would otherwise start
            // a counter of its own each time. A named entry is counted
            // under its name: its other spellings are covered by nothing.
            if limits.is_empty() || self.names_exactly(target) {
                return (limits, as_written);
            }
            return (limits, loose_key(target.name).into());
        }
        let mut limits: Vec<RateLimit> = Vec::new();
        for reading in resource_readings::readings(target.name) {
            let read = Target {
                name: &reading,
                ..*target
            };
            if let Some(limit) = self.rate_limit_for(&read)
                && !limits.contains(&limit)
            {
                limits.push(limit);
            }
        }
        if limits.is_empty() {
            return (limits, as_written);
        }
        (limits, resource_readings::canonical(target.name).into())
    }

    /// The per-role limit over all tools together. Not inherited: a role
    /// gets only the limit written for it.
    pub fn role_rate_limit(&self, role: &str) -> Option<RateLimit> {
        self.role_limits.get(role).copied()
    }

    /// Argument fields the audit log must redact for this tool, on top of
    /// the audit crate's own list.
    pub fn redact_fields(&self, tool: &str) -> &[String] {
        self.redact_fields_for(&Target::tool(tool))
    }

    /// Argument fields to redact for any target.
    pub fn redact_fields_for(&self, target: &Target<'_>) -> &[String] {
        self.covering(target)
            .map_or(&[], |(_, e)| e.redact.as_slice())
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
        self.check_target_arguments(&Target::tool(tool), args)
    }

    /// [`Policy::check_arguments`] for any target.
    pub fn check_target_arguments(
        &self,
        target: &Target<'_>,
        args: &Value,
    ) -> Result<(), ConstraintViolation> {
        match self.covering(target) {
            Some((_, extras)) => constraints::check_all(&extras.constraints, args),
            None => Ok(()),
        }
    }

    /// [`Policy::check_target_arguments`] for the arguments given only (a
    /// completion request names some of a prompt's arguments, one of them
    /// partly typed): each given value must meet its constraint, and a
    /// missing one is not refused.
    pub fn check_given_arguments(
        &self,
        target: &Target<'_>,
        args: &serde_json::Map<String, Value>,
    ) -> Result<(), ConstraintViolation> {
        let Some((_, extras)) = self.covering(target) else {
            return Ok(());
        };
        for (name, constraint) in &extras.constraints {
            if let Some(value) = args.get(name) {
                constraint.check(name, Some(value))?;
            }
        }
        Ok(())
    }

    /// Whether some `[resources.*]` entry other than `template`'s own may
    /// govern URIs `template` names: an entry whose URI or template begins
    /// with the template's literal start. Completing a variable of such a
    /// template could then suggest names those entries keep from the
    /// caller, so its suggestions are not passed on.
    pub fn has_entries_within(&self, template: &str) -> bool {
        let start = template.split('{').next().unwrap_or_default();
        self.resources
            .keys()
            .any(|entry| entry != template && entry.starts_with(start))
    }

    /// Every rule of the policy with the name of what it covers: tools,
    /// prompts, resources, and the upstream sections (under their name).
    fn all_rules(&self) -> impl Iterator<Item = (Kind, &str, &ToolRule)> {
        let tools = self.tools.iter().map(|(n, r)| (Kind::Tool, n.as_str(), r));
        let prompts = self
            .prompts
            .iter()
            .map(|(n, (r, _))| (Kind::Prompt, n.as_str(), r));
        let resources = self
            .resources
            .iter()
            .map(|(n, (r, _))| (Kind::Resource, n.as_str(), r));
        tools.chain(prompts).chain(resources)
    }

    /// Every scope the policy uses, sorted and without duplicates; with
    /// an admin role, also the admin API's scope.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .all_rules()
            .map(|(_, _, r)| r.scope.clone())
            .chain(self.upstreams.values().map(|(r, _)| r.scope.clone()))
            .collect();
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

    /// The scopes worth granting to someone with this role: those of tools,
    /// prompts, resources and upstreams the role may use (directly or with
    /// approval), plus `tool:<name>` for each named tool, and for an admin
    /// role the admin API's scope. A consent page shows only these.
    pub fn scopes_for_role(&self, role: &str) -> Vec<String> {
        let mut scopes = Vec::new();
        if self.is_known_role(role) && self.is_tenant_admin(&[role.to_string()]) {
            scopes.push(ADMIN_SCOPE.to_string());
        }
        let allows = |rule: &ToolRule| rule.access.get(role).is_some_and(|a| *a != Access::Deny);
        for (kind, name, rule) in self.all_rules() {
            if allows(rule) {
                scopes.push(rule.scope.clone());
                if kind == Kind::Tool {
                    scopes.push(format!("tool:{name}"));
                }
            }
        }
        for (rule, _) in self.upstreams.values() {
            if allows(rule) {
                scopes.push(rule.scope.clone());
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

    /// A scoped credential must hold the rule's scope, or (for a tool)
    /// `tool:<name>`.
    fn scope_allows(rule: &ToolRule, target: &Target<'_>, principal: &Principal) -> bool {
        match &principal.scopes {
            None => true,
            Some(scopes) => scopes.iter().any(|s| {
                *s == rule.scope
                    || (target.kind == Kind::Tool && s.strip_prefix("tool:") == Some(target.name))
            }),
        }
    }

    /// What the principal may do with a covered target, its task grant
    /// aside: `Deny` unless its tenant, its roles and its scopes all allow
    /// it. A task grant's allowlist is made of the tools where this is not
    /// `Deny`.
    pub(crate) fn access_outside_task(&self, principal: &Principal, target: &Target<'_>) -> Access {
        let Some((rule, _)) = self.covering(target) else {
            return Access::Deny;
        };
        let tenant_ok =
            self.tenant_allowed(&principal.tenant) && self.tenant_allows(&principal.tenant, target);
        if !tenant_ok || !Self::scope_allows(rule, target, principal) {
            return Access::Deny;
        }
        Self::role_access(rule, principal)
    }

    /// Decides one tool call. The checks run from the narrowest grant to the
    /// tool's own rule: task grant, tenant, tool, role, scope.
    pub fn authorize(&self, principal: &Arc<Principal>, tool: &str) -> Decision {
        self.authorize_target(principal, &Target::tool(tool))
    }

    /// Decides a tool call, a prompt or a resource read: task grant, tenant,
    /// the rule that covers the target (its own, else its upstream's),
    /// role, scope. A resource must be allowed under every reading of its
    /// URI an upstream might make (`resource_readings.rs`): the strictest
    /// decision stands, for the URI as the caller sent it.
    pub fn authorize_target(&self, principal: &Arc<Principal>, target: &Target<'_>) -> Decision {
        if target.kind == Kind::Resource && target.name.len() > MAX_RESOURCE_URI_BYTES {
            return Decision::Deny(Deny::new(target, DenyReason::UriTooLong));
        }
        if target.kind != Kind::Resource && target.name.len() > MAX_NAME_BYTES {
            return Decision::Deny(Deny::new(target, DenyReason::NameTooLong));
        }
        if target.kind == Kind::Resource && !resource_readings::is_canonical(target.name) {
            return Decision::Deny(Deny::new(target, DenyReason::NonCanonicalUri));
        }
        let decision = self.authorize_as_written(principal, target);
        if target.kind != Kind::Resource || matches!(decision, Decision::Deny(_)) {
            return decision;
        }
        let mut decision = decision;
        for reading in resource_readings::readings(target.name).iter().skip(1) {
            let read = Target {
                name: reading,
                ..*target
            };
            match self.authorize_as_written(principal, &read) {
                Decision::Deny(deny) => {
                    return Decision::Deny(Deny::new(target, deny.reason));
                }
                Decision::NeedsApproval(needed) if matches!(decision, Decision::Permit(_)) => {
                    decision = Decision::NeedsApproval(ApprovalNeeded::new(
                        Arc::clone(principal),
                        target,
                        needed.rule().to_string(),
                    ));
                }
                _ => {}
            }
        }
        decision
    }

    /// [`Policy::authorize_target`] for the target's name as written.
    fn authorize_as_written(&self, principal: &Arc<Principal>, target: &Target<'_>) -> Decision {
        let deny = |reason| Decision::Deny(Deny::new(target, reason));
        // A grant is a ceiling whatever the roles allow, so it comes first.
        // Grants list tools only: under one, prompts and resources are
        // refused too.
        if let Some(grant) = &principal.task
            && (target.kind != Kind::Tool || !grant.allows(target.name))
        {
            return deny(DenyReason::OutsideTask {
                task: grant.task.clone(),
            });
        }
        if !self.tenant_allowed(&principal.tenant) {
            return deny(DenyReason::UnknownTenant);
        }
        let Some((rule, _)) = self.covering(target) else {
            return self.authorize_unnamed(principal, target);
        };
        if !self.tenant_allows(&principal.tenant, target) {
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
        if !Self::scope_allows(rule, target, principal) {
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
        let name = target.name;
        // Built-in and upstream tools read as before ("allows read_file");
        // prompts and resources say what they are.
        let (what, verb) = match target.kind {
            Kind::Tool => (name.to_string(), "call"),
            kind => (format!("{} {name}", kind.as_str()), "use"),
        };
        let via = match target.upstream {
            Some(upstream) if !self.names(target) => {
                format!(" (the defaults of upstream {upstream})")
            }
            _ => String::new(),
        };
        match access {
            Access::Allow => Decision::Permit(Permit::new(
                Arc::clone(principal),
                target,
                format!("role {role} allows {what}{via}"),
            )),
            _ => Decision::NeedsApproval(ApprovalNeeded::new(
                Arc::clone(principal),
                target,
                format!("role {role} may {verb} {what}{via} with an approved operation token"),
            )),
        }
    }

    /// Whether the policy names the target itself (not only its upstream).
    fn names(&self, target: &Target<'_>) -> bool {
        match target.kind {
            Kind::Tool => self.tools.contains_key(target.name),
            Kind::Prompt => self.prompts.contains_key(target.name),
            Kind::Resource => self.resource_entry(target.name).is_some(),
        }
    }

    /// The `[resources.*]` entry governing a URI: its own, else that of the
    /// most specific template naming it (most literal characters; the
    /// first in order among equals). A template's entry governs what the
    /// template names, so reading a URI cannot fall through to the looser
    /// upstream section that a template entry narrows.
    fn resource_entry(&self, uri: &str) -> Option<&(ToolRule, ToolExtras)> {
        if let Some(entry) = self.resources.get(uri) {
            return Some(entry);
        }
        let mut best: Option<(usize, &(ToolRule, ToolExtras))> = None;
        for (template, entry) in &self.resources {
            if !uri_template::is_template(template)
                || !uri_template::template_matches(template, uri)
            {
                continue;
            }
            let specificity = uri_template::literal_len(template);
            if best.is_none_or(|(most, _)| specificity > most) {
                best = Some((specificity, entry));
            }
        }
        best.map(|(_, entry)| entry)
    }

    /// A target the policy does not cover: deny by default. Only a built-in
    /// tool may be called by principals holding an admin role (a scoped
    /// admin credential still needs `tools:admin` or `tool:<name>`); what
    /// an upstream serves is refused until the policy covers it, admins
    /// included, so a tool an upstream adds later is never callable
    /// unreviewed. With tenancy on, tenants may use covered targets only.
    fn authorize_unnamed(&self, principal: &Arc<Principal>, target: &Target<'_>) -> Decision {
        let deny = |reason| Decision::Deny(Deny::new(target, reason));
        if target.kind != Kind::Tool || target.upstream.is_some() {
            return deny(DenyReason::UnknownTool);
        }
        let tool = target.name;
        let Some(role) = principal.roles.iter().find(|r| self.is_admin_role(r)) else {
            return deny(DenyReason::UnknownTool);
        };
        if !self.tenant_allows(&principal.tenant, target) {
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
            target,
            format!("role {role} is admin and may call {tool}, which the policy does not name"),
        ))
    }

    /// Decides one tool call including its arguments: as
    /// [`Policy::authorize`], then, for a permit or a call that needs
    /// approval, the tool's argument constraints. A violated constraint wins
    /// over approval: no human should be asked to approve a call that would
    /// be refused.
    pub fn authorize_call(&self, principal: &Arc<Principal>, tool: &str, args: &Value) -> Decision {
        self.authorize_target_call(principal, &Target::tool(tool), args)
    }

    /// [`Policy::authorize_call`] for any target (a prompt's arguments, a
    /// resource read has none).
    pub fn authorize_target_call(
        &self,
        principal: &Arc<Principal>,
        target: &Target<'_>,
        args: &Value,
    ) -> Decision {
        let decision = self.authorize_target(principal, target);
        if let Decision::Deny(_) = decision {
            return decision;
        }
        match self.check_target_arguments(target, args) {
            Ok(()) => decision,
            Err(v) => Decision::Deny(Deny::new(
                target,
                DenyReason::ConstraintViolated {
                    argument: v.argument,
                    rule: v.rule,
                },
            )),
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
                let access = self.access_outside_task(principal, &Target::tool(name));
                (access != Access::Deny).then_some((name.as_str(), access))
            })
            .collect()
    }

    /// How the principal may use one target a list shows (an upstream's
    /// tool, prompt or resource): `Deny` hides it. The same filters as
    /// [`Policy::authorize_target`]. Unlike a built-in tool, a target the
    /// policy does not cover is hidden from admins too.
    pub fn visibility(&self, principal: &Principal, target: &Target<'_>) -> Access {
        if let Some(grant) = &principal.task
            && (target.kind != Kind::Tool || !grant.allows(target.name))
        {
            return Access::Deny;
        }
        if target.kind != Kind::Resource {
            // Listed only if it can be called.
            if target.name.len() > MAX_NAME_BYTES {
                return Access::Deny;
            }
            return self.access_outside_task(principal, target);
        }
        if target.name.len() > MAX_RESOURCE_URI_BYTES
            || !resource_readings::is_canonical(target.name)
        {
            return Access::Deny;
        }
        // The strictest of the URI's readings, as for a read.
        resource_readings::readings(target.name)
            .iter()
            .map(|reading| {
                self.access_outside_task(
                    principal,
                    &Target {
                        name: reading,
                        ..*target
                    },
                )
            })
            .min()
            .unwrap_or(Access::Deny)
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
