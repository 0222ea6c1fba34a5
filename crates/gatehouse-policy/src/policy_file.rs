//! The policy file: TOML in, a validated, flattened [`Policy`] out.
//!
//! ```toml
//! version = 1
//! [roles.reader]
//! [roles.analyst]
//! inherits = ["reader"]
//! [roles.admin]
//! inherits = ["analyst"]
//! admin = true               # may call tools the policy does not name
//!
//! [tools.read_file]
//! scope = "tools:read"       # word:word
//! roles = ["reader"]         # allowed; inherited by every role that inherits reader
//! [tools.read_file.constraints]
//! path = { prefix = ["reports/"] }
//!
//! [tools.write_file]
//! scope = "tools:write"
//! roles = ["admin"]
//! approval_roles = ["analyst"]  # allowed only with an operation token
//! rate_limit = "10/min"         # per (principal, tool): N/s|sec|min|h|hour
//! redact = ["content"]          # extra fields the audit log redacts
//! approval = false              # true: every allowed role needs an operation token
//!
//! [tasks.summarize-reports]
//! description = "…"
//! tools = ["read_file"]
//! roles = ["analyst"]           # optional: who may claim it (inherited); default every role
//! expected_duration = "15m"
//! max_duration = "1h"           # at most 1h; default 1h
//!
//! [role_limits.reader]
//! rate_limit = "120/min"        # per role, all tools together (not inherited)
//!
//! [tenants.acme]                # declaring any tenant turns tenancy on
//! tools = ["read_file"]         # optional: the tools acme may use; default every named tool
//! rate_limit = "600/min"        # optional: all calls of the tenant together
//!
//! [upstreams.crm]               # defaults for everything upstream crm serves
//! scope = "tools:read"          # same keys as a tool
//! roles = ["analyst"]
//! [tools.crm__delete_contact]   # one upstream tool overridden by its full name
//! scope = "tools:write"
//! roles = ["admin"]
//!
//! [prompts.crm__summarize]      # prompts and resources, same keys as a tool
//! scope = "prompts:read"
//! roles = ["reader"]
//! [resources."file:///srv/shared/report.csv"]
//! scope = "resources:read"
//! roles = ["analyst"]
//! ```
//!
//! Upstreams: what an upstream serves (tools, prompts, resources) follows
//! its own entry when the policy names it, else its upstream's section;
//! without either it is hidden and refused, admins included. Task and
//! tenant lists name upstream tools by their full name; one that the policy
//! does not name is matched to a section by the default naming
//! (`<upstream>__<tool>`).
//!
//! Semantics: a role's access to a tool is the maximum, over the role and
//! every role it inherits (transitively), of `Allow` if listed in `roles`
//! (`NeedsApproval` instead when `approval = true`), `NeedsApproval` if
//! listed in `approval_roles`, else `Deny`. A named tool follows its lists
//! only: a tool with neither `roles` nor `approval_roles` is callable by
//! nobody, admins included (`admin = true` only concerns tools the policy
//! does not name).
//!
//! Tasks: a task grant gets the task's tools that the claiming principal may
//! call (directly or with approval), never more. A task with `roles` may be
//! claimed only by those roles and the roles that inherit them.
//!
//! Tenants: without `[tenants.*]` every principal's tenant is accepted and
//! nothing changes. With at least one, a principal whose tenant is not
//! declared is denied everything, and a tenant with `tools` may use only
//! those. Tenant lists hold named tools only, so once tenancy is on even an
//! `admin = true` role cannot call a tool the policy does not name.
//!
//! Every table rejects unknown keys. Validation errors name the offending
//! entry as a dotted path (`tools.write_file.roles: unknown role "editor"`)
//! and, where TOML gives it, the line.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::constraints::ArgConstraint;
use crate::loose_names::LooseNames;
use crate::policy::{RoleInfo, ToolExtras};
use crate::tenants::TenantSpec;
use crate::{Access, Policy, ToolRule};

/// The only policy file version this build reads.
pub const POLICY_VERSION: i64 = 1;

/// The longest task a grant may cover (docs/design.md: task grants live ≤ 1 h).
pub const MAX_TASK_DURATION: Duration = Duration::from_secs(3600);

/// Why a policy file was refused. Displays as `path: reason`, where path is
/// the dotted key of the offending entry (`line N` for TOML syntax errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PolicyError {
    path: String,
    reason: String,
    line: Option<usize>,
}

impl PolicyError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        PolicyError {
            path: path.into(),
            reason: reason.into(),
            line: None,
        }
    }

    /// The dotted key of the offending entry.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The 1-based line of the offending entry, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

/// A rate limit: at most `limit` calls per `window_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window_ms: i64,
}

impl RateLimit {
    /// Parses `N/unit`, unit one of `s`, `sec`, `min`, `h`, `hour`; N ≥ 1.
    pub fn parse(text: &str) -> Option<RateLimit> {
        let (n, unit) = text.split_once('/')?;
        if !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let limit: u32 = n.parse().ok().filter(|n| *n > 0)?;
        let window_ms = match unit {
            "s" | "sec" => 1_000,
            "min" => 60_000,
            "h" | "hour" => 3_600_000,
            _ => return None,
        };
        Some(RateLimit { limit, window_ms })
    }
}

/// A task an agent may declare: its tools, who may claim it and how long a
/// grant for it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    description: Option<String>,
    tools: Vec<String>,
    /// The roles as written; empty when every role may claim the task.
    roles: Vec<String>,
    /// `roles` flattened over inheritance: every defined role that may claim
    /// the task. `None` when the task names no roles.
    claimants: Option<BTreeSet<String>>,
    expected_duration: Option<Duration>,
    max_duration: Duration,
}

impl TaskSpec {
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The task's tools, in the order written; a grant gets the intersection
    /// of these with the role's tools.
    pub fn tools(&self) -> &[String] {
        &self.tools
    }

    /// The roles the task names as claimants, as written; empty when any
    /// role may claim it.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// Whether `role` (itself or by inheriting a named role) may claim the task.
    pub fn may_claim(&self, role: &str) -> bool {
        match &self.claimants {
            None => true,
            Some(claimants) => claimants.contains(role),
        }
    }

    /// How long the task usually takes (for anomaly detection).
    pub fn expected_duration(&self) -> Option<Duration> {
        self.expected_duration
    }

    /// The lifetime of a grant for this task, at most one hour.
    pub fn max_duration(&self) -> Duration {
        self.max_duration
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Spanned<i64>,
    #[serde(default)]
    roles: BTreeMap<String, Spanned<RawRole>>,
    #[serde(default)]
    tools: BTreeMap<String, Spanned<RawTool>>,
    #[serde(default)]
    tasks: BTreeMap<String, Spanned<RawTask>>,
    #[serde(default)]
    role_limits: BTreeMap<String, Spanned<RawRoleLimit>>,
    #[serde(default)]
    tenants: BTreeMap<String, Spanned<RawTenant>>,
    #[serde(default)]
    prompts: BTreeMap<String, Spanned<RawTool>>,
    #[serde(default)]
    resources: BTreeMap<String, Spanned<RawTool>>,
    #[serde(default)]
    upstreams: BTreeMap<String, Spanned<RawTool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    inherits: Vec<String>,
    #[serde(default)]
    admin: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    scope: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    approval_roles: Vec<String>,
    #[serde(default)]
    approval: bool,
    rate_limit: Option<String>,
    #[serde(default)]
    redact: Vec<String>,
    #[serde(default)]
    constraints: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    description: Option<String>,
    tools: Vec<String>,
    roles: Option<Vec<String>>,
    expected_duration: Option<String>,
    max_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleLimit {
    rate_limit: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    tools: Option<Vec<String>>,
    rate_limit: Option<String>,
}

/// Names of roles, tools, tasks and tenants: letters, digits, `_`, `-`, `.`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A resource is named by its URI: any printable text up to 2 KiB.
fn valid_uri(name: &str) -> bool {
    !name.is_empty() && name.len() <= 2048 && !name.chars().any(char::is_control)
}

/// An upstream's name as the gateway configuration allows it.
fn valid_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.contains("__")
        && name.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'_' || b == b'-'))
        })
}

/// A scope is `word:word`, words of letters, digits, `_` and `-`.
fn valid_scope(scope: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    scope
        .split_once(':')
        .is_some_and(|(a, b)| word(a) && word(b))
}

/// A key as it appears in a dotted path: bare when TOML allows it.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Attaches the line of `span` in `text` to errors.
struct Lines<'a> {
    text: &'a str,
}

impl Lines<'_> {
    fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&self, spanned: &Spanned<T>, path: String, reason: impl Into<String>) -> PolicyError {
        PolicyError {
            path,
            reason: reason.into(),
            line: Some(self.line(spanned.span())),
        }
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}

impl Policy {
    /// Loads and validates a policy file. The first problem found is the
    /// error, naming the entry (`tools.x.roles: unknown role "y"`), so a bad
    /// file is refused as a whole and the caller keeps its old policy.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let lines = Lines { text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line(s));
            PolicyError {
                path: line.map_or_else(|| "policy".to_string(), |l| format!("line {l}")),
                reason: e.message().trim().to_string(),
                line,
            }
        })?;
        if *raw.version.get_ref() != POLICY_VERSION {
            return Err(lines.err(
                &raw.version,
                "version".to_string(),
                format!(
                    "unsupported policy version {} (expected {POLICY_VERSION})",
                    raw.version.get_ref()
                ),
            ));
        }

        let ancestors = role_closure(&raw, &lines)?;
        let roles: BTreeMap<String, RoleInfo> = ancestors
            .iter()
            .map(|(name, closure)| {
                let admin = closure
                    .iter()
                    .any(|r| raw.roles.get(r).is_some_and(|s| s.get_ref().admin));
                (name.clone(), RoleInfo { admin })
            })
            .collect();

        let mut tools = BTreeMap::new();
        let mut extras = BTreeMap::new();
        for (name, spanned) in &raw.tools {
            let (rule, extra) = tool(name, spanned, &ancestors, &lines)?;
            tools.insert(name.clone(), rule);
            extras.insert(name.clone(), extra);
        }

        let mut sections = BTreeMap::new();
        for (section, entries, valid, what) in [
            (
                "prompts",
                &raw.prompts,
                valid_name as fn(&str) -> bool,
                "prompt names use only letters, digits, '_', '-' and '.'",
            ),
            (
                "resources",
                &raw.resources,
                valid_uri,
                "resource URIs are non-empty printable text of at most 2048 bytes",
            ),
            (
                "upstreams",
                &raw.upstreams,
                valid_upstream_name,
                "upstream names use lowercase letters, digits, '_' and '-' (no \"__\"), at most 32",
            ),
        ] {
            let mut rules = BTreeMap::new();
            for (name, spanned) in entries {
                let path = format!("{section}.{}", key(name));
                if !valid(name) {
                    return Err(lines.err(spanned, path, what));
                }
                // A read has no arguments: a constraint written here would
                // never be checked, and the entry would read narrower than
                // it is.
                if section == "resources" && !spanned.get_ref().constraints.is_empty() {
                    return Err(lines.err(
                        spanned,
                        format!("{path}.constraints"),
                        "a resource is read without arguments, so constraints cannot apply to it",
                    ));
                }
                rules.insert(name.clone(), rule(&path, spanned, &ancestors, &lines)?);
            }
            sections.insert(section, rules);
        }
        let mut take = |section| sections.remove(section).unwrap_or_default();
        let (prompts, resources, upstreams) =
            (take("prompts"), take("resources"), take("upstreams"));
        // Task and tenant lists may name an upstream's tools by the default naming.
        let listed = |tool: &str| {
            tools.contains_key(tool)
                || tool
                    .split_once("__")
                    .is_some_and(|(u, rest)| !rest.is_empty() && upstreams.contains_key(u))
        };

        let mut tasks = BTreeMap::new();
        for (name, spanned) in &raw.tasks {
            tasks.insert(
                name.clone(),
                task(name, spanned, &listed, &ancestors, &lines)?,
            );
        }

        let mut role_limits = BTreeMap::new();
        for (role, spanned) in &raw.role_limits {
            let path = format!("role_limits.{}", key(role));
            if !roles.contains_key(role) {
                return Err(lines.err(spanned, path, format!("unknown role \"{role}\"")));
            }
            let limit = RateLimit::parse(&spanned.get_ref().rate_limit).ok_or_else(|| {
                lines.err(
                    spanned,
                    format!("{path}.rate_limit"),
                    "expected N/unit like \"30/min\"",
                )
            })?;
            role_limits.insert(role.clone(), limit);
        }

        let mut tenants = BTreeMap::new();
        for (name, spanned) in &raw.tenants {
            tenants.insert(name.clone(), tenant(name, spanned, &listed, &lines)?);
        }

        Ok(Policy {
            loose_names: LooseNames::new(tools.keys(), prompts.keys()),
            tools,
            extras,
            roles,
            tasks,
            role_limits,
            tenants,
            prompts,
            resources,
            upstreams,
        })
    }
}

/// Validates the roles and returns, for each, itself and every role it
/// inherits transitively.
fn role_closure(
    raw: &RawPolicy,
    lines: &Lines<'_>,
) -> Result<BTreeMap<String, BTreeSet<String>>, PolicyError> {
    for (name, spanned) in &raw.roles {
        if !valid_name(name) {
            return Err(lines.err(
                spanned,
                format!("roles.{}", key(name)),
                "role names use only letters, digits, '_', '-' and '.'",
            ));
        }
        for parent in &spanned.get_ref().inherits {
            if !raw.roles.contains_key(parent) {
                return Err(lines.err(
                    spanned,
                    format!("roles.{}.inherits", key(name)),
                    format!("unknown role \"{parent}\""),
                ));
            }
        }
    }
    // Cycle check: depth-first from each role in name order; the first cycle
    // found is reported from the role where it closes.
    fn visit(
        raw: &RawPolicy,
        role: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Result<(), Vec<String>> {
        if let Some(at) = stack.iter().position(|r| r == role) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(role.to_string());
            return Err(cycle);
        }
        if done.contains(role) {
            return Ok(());
        }
        stack.push(role.to_string());
        if let Some(spec) = raw.roles.get(role) {
            for parent in &spec.get_ref().inherits {
                visit(raw, parent, stack, done)?;
            }
        }
        stack.pop();
        done.insert(role.to_string());
        Ok(())
    }
    let mut done = BTreeSet::new();
    for name in raw.roles.keys() {
        if let Err(cycle) = visit(raw, name, &mut Vec::new(), &mut done) {
            let first = cycle.first().cloned().unwrap_or_default();
            let path = format!("roles.{}.inherits", key(&first));
            let reason = format!("cycle {}", cycle.join(" -> "));
            return Err(match raw.roles.get(&first) {
                Some(spanned) => lines.err(spanned, path, reason),
                None => PolicyError::new(path, reason),
            });
        }
    }
    // Acyclic: the closure is a plain graph walk.
    let mut closure = BTreeMap::new();
    for name in raw.roles.keys() {
        let mut seen = BTreeSet::new();
        let mut todo = vec![name.clone()];
        while let Some(role) = todo.pop() {
            if seen.insert(role.clone())
                && let Some(spec) = raw.roles.get(&role)
            {
                todo.extend(spec.get_ref().inherits.iter().cloned());
            }
        }
        closure.insert(name.clone(), seen);
    }
    Ok(closure)
}

fn tool(
    name: &str,
    spanned: &Spanned<RawTool>,
    ancestors: &BTreeMap<String, BTreeSet<String>>,
    lines: &Lines<'_>,
) -> Result<(ToolRule, ToolExtras), PolicyError> {
    let path = format!("tools.{}", key(name));
    if !valid_name(name) {
        return Err(lines.err(
            spanned,
            path.clone(),
            "tool names use only letters, digits, '_', '-' and '.'",
        ));
    }
    rule(&path, spanned, ancestors, lines)
}

/// The rule of one `[tools.*]`, `[prompts.*]`, `[resources.*]` or
/// `[upstreams.*]` entry, flattened over role inheritance.
fn rule(
    path: &str,
    spanned: &Spanned<RawTool>,
    ancestors: &BTreeMap<String, BTreeSet<String>>,
    lines: &Lines<'_>,
) -> Result<(ToolRule, ToolExtras), PolicyError> {
    let err = |sub: &str, reason: String| lines.err(spanned, format!("{path}.{sub}"), reason);
    let raw = spanned.get_ref();
    if !valid_scope(&raw.scope) {
        return Err(err(
            "scope",
            format!(
                "invalid scope \"{}\": expected word:word like \"tools:read\"",
                raw.scope
            ),
        ));
    }
    for (list, field) in [
        (&raw.roles, "roles"),
        (&raw.approval_roles, "approval_roles"),
    ] {
        if let Some(unknown) = list.iter().find(|r| !ancestors.contains_key(*r)) {
            return Err(err(field, format!("unknown role \"{unknown}\"")));
        }
    }
    if let Some(both) = raw.approval_roles.iter().find(|r| raw.roles.contains(r)) {
        return Err(err(
            "approval_roles",
            format!("role \"{both}\" is also in roles"),
        ));
    }
    // A role gets the best access of the roles it inherits: one that
    // inherits a role allowed outright would never be asked for approval.
    let cancelled = raw.approval_roles.iter().find_map(|needs| {
        let closure = ancestors.get(needs)?;
        raw.roles
            .iter()
            .find(|allowed| closure.contains(*allowed))
            .map(|allowed| (needs, allowed))
    });
    if let Some((needs, allowed)) = cancelled {
        return Err(err(
            "approval_roles",
            format!(
                "role \"{needs}\" inherits \"{allowed}\", which is in roles: it would run the \
                 target without approval"
            ),
        ));
    }
    let rate_limit = match &raw.rate_limit {
        None => None,
        Some(text) => Some(
            RateLimit::parse(text)
                .ok_or_else(|| err("rate_limit", "expected N/unit like \"30/min\"".to_string()))?,
        ),
    };
    if raw.redact.iter().any(|f| f.is_empty()) {
        return Err(err("redact", "field names must not be empty".to_string()));
    }
    let mut constraints = BTreeMap::new();
    for (argument, value) in &raw.constraints {
        let constraint = ArgConstraint::parse(value).map_err(|e| {
            let mut at = format!("{path}.constraints.{}", key(argument));
            if let Some(sub) = e.key {
                at = format!("{at}.{sub}");
            }
            lines.err(spanned, at, e.reason)
        })?;
        constraints.insert(argument.clone(), constraint);
    }

    let base = |role: &str| -> Access {
        if raw.roles.iter().any(|r| r == role) {
            if raw.approval {
                Access::NeedsApproval
            } else {
                Access::Allow
            }
        } else if raw.approval_roles.iter().any(|r| r == role) {
            Access::NeedsApproval
        } else {
            Access::Deny
        }
    };
    let access = ancestors
        .iter()
        .map(|(role, closure)| {
            let best = closure
                .iter()
                .map(|r| base(r))
                .max()
                .unwrap_or(Access::Deny);
            (role.clone(), best)
        })
        .collect();
    Ok((
        ToolRule {
            scope: raw.scope.clone(),
            access,
        },
        ToolExtras {
            rate_limit,
            redact: raw.redact.clone(),
            constraints,
        },
    ))
}

fn task(
    name: &str,
    spanned: &Spanned<RawTask>,
    listed: &dyn Fn(&str) -> bool,
    ancestors: &BTreeMap<String, BTreeSet<String>>,
    lines: &Lines<'_>,
) -> Result<TaskSpec, PolicyError> {
    let path = format!("tasks.{}", key(name));
    let err = |sub: &str, reason: String| lines.err(spanned, format!("{path}.{sub}"), reason);
    if !valid_name(name) {
        return Err(lines.err(
            spanned,
            path.clone(),
            "task names use only letters, digits, '_', '-' and '.'",
        ));
    }
    let raw = spanned.get_ref();
    if raw.tools.is_empty() {
        return Err(err("tools", "must name at least one tool".to_string()));
    }
    if let Some(unknown) = raw.tools.iter().find(|t| !listed(t)) {
        return Err(err("tools", format!("unknown tool \"{unknown}\"")));
    }
    let claimants = match &raw.roles {
        None => None,
        Some(named) => {
            // An empty list would make a task nobody may claim, which is
            // more likely a mistake than an intent.
            if named.is_empty() {
                return Err(err(
                    "roles",
                    "must name at least one role (leave roles out to let every role claim the task)"
                        .to_string(),
                ));
            }
            if let Some(unknown) = named.iter().find(|r| !ancestors.contains_key(*r)) {
                return Err(err("roles", format!("unknown role \"{unknown}\"")));
            }
            // Inherited like tool roles: a role claims the task if it, or
            // any role it inherits, is named.
            let claimants = ancestors
                .iter()
                .filter(|(_, closure)| named.iter().any(|r| closure.contains(r)))
                .map(|(role, _)| role.clone())
                .collect();
            Some(claimants)
        }
    };
    let duration = |field: &str, text: &str| -> Result<Duration, PolicyError> {
        match parse_duration(text) {
            Some(d) if d.is_zero() => Err(err(field, "must be longer than zero".to_string())),
            Some(d) if d > MAX_TASK_DURATION => Err(err(field, "must be at most 1h".to_string())),
            Some(d) => Ok(d),
            None => Err(err(
                field,
                format!("invalid duration \"{text}\": expected e.g. \"15m\" or \"1h\""),
            )),
        }
    };
    let max_duration = match &raw.max_duration {
        Some(text) => duration("max_duration", text)?,
        None => MAX_TASK_DURATION,
    };
    let expected_duration = match &raw.expected_duration {
        Some(text) => Some(duration("expected_duration", text)?),
        None => None,
    };
    if expected_duration.is_some_and(|d| d > max_duration) {
        return Err(err(
            "expected_duration",
            "must not exceed max_duration".to_string(),
        ));
    }
    Ok(TaskSpec {
        description: raw.description.clone(),
        tools: raw.tools.clone(),
        roles: raw.roles.clone().unwrap_or_default(),
        claimants,
        expected_duration,
        max_duration,
    })
}

fn tenant(
    name: &str,
    spanned: &Spanned<RawTenant>,
    listed: &dyn Fn(&str) -> bool,
    lines: &Lines<'_>,
) -> Result<TenantSpec, PolicyError> {
    let path = format!("tenants.{}", key(name));
    let err = |sub: &str, reason: String| lines.err(spanned, format!("{path}.{sub}"), reason);
    if !valid_name(name) {
        return Err(lines.err(
            spanned,
            path.clone(),
            "tenant names use only letters, digits, '_', '-' and '.'",
        ));
    }
    let raw = spanned.get_ref();
    let allowed = match &raw.tools {
        None => None,
        Some(list) => {
            if let Some(unknown) = list.iter().find(|t| !listed(t)) {
                return Err(err("tools", format!("unknown tool \"{unknown}\"")));
            }
            Some(list.iter().cloned().collect())
        }
    };
    let rate_limit = match &raw.rate_limit {
        None => None,
        Some(text) => Some(
            RateLimit::parse(text)
                .ok_or_else(|| err("rate_limit", "expected N/unit like \"30/min\"".to_string()))?,
        ),
    };
    Ok(TenantSpec {
        tools: allowed,
        rate_limit,
    })
}

#[cfg(test)]
#[path = "policy_file_tests.rs"]
mod tests;
