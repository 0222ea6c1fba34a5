use super::*;
use crate::Access::{Allow, Deny, NeedsApproval};

/// The example of the policy format, as documented.
const EXAMPLE: &str = r#"
version = 1
[roles.reader]
[roles.analyst]
inherits = ["reader"]
[roles.executor]
inherits = ["analyst"]
[roles.admin]
inherits = ["executor"]
admin = true

[tools.read_file]
scope = "tools:read"
roles = ["reader"]
[tools.read_file.constraints]
path = { prefix = ["reports/", "public/"] }

[tools.search_database]
scope = "tools:read"
roles = ["analyst"]

[tools.write_file]
scope = "tools:write"
roles = ["admin"]
approval_roles = ["executor"]
rate_limit = "10/min"
redact = ["content"]

[tools.access_secrets]
scope = "tools:admin"
roles = ["admin"]
approval = true

[tasks.summarize-reports]
description = "Read reports and search the dataset"
tools = ["read_file", "search_database"]
roles = ["analyst"]
expected_duration = "15m"
max_duration = "1h"

[role_limits.reader]
rate_limit = "120/min"

[tenants.acme]
tools = ["read_file"]
rate_limit = "600/min"
"#;

fn load(text: &str) -> Policy {
    Policy::from_toml(text).unwrap_or_else(|e| panic!("{e}"))
}

fn error(text: &str) -> String {
    match Policy::from_toml(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn access(policy: &Policy, role: &str, tool: &str) -> Access {
    policy
        .rule(tool)
        .and_then(|r| r.access.get(role).copied())
        .unwrap_or(Deny)
}

const ROLES4: &str = "version = 1\n[roles.reader]\n[roles.analyst]\ninherits = [\"reader\"]\n\
                      [roles.executor]\ninherits = [\"analyst\"]\n[roles.admin]\ninherits = [\"executor\"]\n";

/// A policy with the four roles and one extra snippet.
fn with(snippet: &str) -> String {
    format!("{ROLES4}{snippet}")
}

#[test]
fn example_loads_with_inheritance_flattened() {
    let p = load(EXAMPLE);
    let table = [
        ("read_file", [Allow, Allow, Allow, Allow]),
        ("search_database", [Deny, Allow, Allow, Allow]),
        ("write_file", [Deny, Deny, NeedsApproval, Allow]),
        ("access_secrets", [Deny, Deny, Deny, NeedsApproval]),
    ];
    for (tool, per_role) in table {
        for (role, want) in ["reader", "analyst", "executor", "admin"]
            .iter()
            .zip(per_role)
        {
            assert_eq!(access(&p, role, tool), want, "{role} × {tool}");
        }
    }
    assert!(p.is_admin_role("admin"));
    assert!(!p.is_admin_role("executor"));
    assert_eq!(
        p.tool_rate_limit("write_file"),
        Some(RateLimit {
            limit: 10,
            window_ms: 60_000
        })
    );
    assert_eq!(p.tool_rate_limit("read_file"), None);
    assert_eq!(p.tool_rate_limit("nope"), None);
    assert_eq!(
        p.role_rate_limit("reader"),
        Some(RateLimit {
            limit: 120,
            window_ms: 60_000
        })
    );
    // Role limits are not inherited.
    assert_eq!(p.role_rate_limit("analyst"), None);
    assert_eq!(p.redact_fields("write_file"), ["content"]);
    assert!(p.redact_fields("read_file").is_empty());
    assert!(p.redact_fields("nope").is_empty());
    assert_eq!(p.constraints("read_file").count(), 1);

    let task = p.task("summarize-reports").unwrap();
    assert_eq!(task.tools(), ["read_file", "search_database"]);
    assert_eq!(
        task.description(),
        Some("Read reports and search the dataset")
    );
    assert_eq!(task.expected_duration(), Some(Duration::from_secs(900)));
    assert_eq!(task.max_duration(), Duration::from_secs(3600));
    assert_eq!(task.roles(), ["analyst"]);
    assert!(task.may_claim("admin"));
    assert!(!task.may_claim("reader"));
    assert_eq!(
        p.tasks().map(|(n, _)| n).collect::<Vec<_>>(),
        ["summarize-reports"]
    );
    assert!(p.task("other").is_none());
    assert!(p.tenancy_enabled());
    assert!(p.tenant_allowed("acme"));
    assert!(!p.tenant_allowed("default"));
    assert!(p.tenant_allows_tool("acme", "read_file"));
    assert!(!p.tenant_allows_tool("acme", "write_file"));
    assert_eq!(
        p.tenant_rate_limit("acme"),
        Some(RateLimit {
            limit: 600,
            window_ms: 60_000
        })
    );
}

#[test]
fn inheritance_is_transitive_and_takes_the_maximum() {
    // A diamond: d inherits b and c, both inherit a.
    let p = load(
        r#"
version = 1
[roles.a]
[roles.b]
inherits = ["a"]
[roles.c]
inherits = ["a"]
[roles.d]
inherits = ["b", "c"]
[tools.t1]
scope = "tools:x"
approval_roles = ["a"]
[tools.t2]
scope = "tools:x"
roles = ["c"]
approval_roles = ["b"]
[tools.t3]
scope = "tools:x"
roles = ["b"]
approval = true
"#,
    );
    assert_eq!(access(&p, "d", "t1"), NeedsApproval);
    assert_eq!(access(&p, "b", "t2"), NeedsApproval);
    assert_eq!(access(&p, "c", "t2"), Allow);
    assert_eq!(access(&p, "d", "t2"), Allow);
    assert_eq!(access(&p, "a", "t2"), Deny);
    assert_eq!(access(&p, "d", "t3"), NeedsApproval);
    assert_eq!(access(&p, "c", "t3"), Deny);
    // Admin status is inherited as well.
    let p = load("version = 1\n[roles.root]\nadmin = true\n[roles.ops]\ninherits = [\"root\"]\n");
    assert!(p.is_admin_role("ops"));
}

#[test]
fn rate_limits_parse_every_unit() {
    for (text, limit, window_ms) in [
        ("1/s", 1, 1_000),
        ("5/sec", 5, 1_000),
        ("30/min", 30, 60_000),
        ("100/h", 100, 3_600_000),
        ("7/hour", 7, 3_600_000),
    ] {
        assert_eq!(
            RateLimit::parse(text),
            Some(RateLimit { limit, window_ms }),
            "{text}"
        );
    }
    for bad in [
        "0/min",
        "-1/min",
        "+1/min",
        "10/day",
        "10",
        "/min",
        "10/",
        "1.5/s",
        " 1/s",
        "99999999999/s",
    ] {
        assert_eq!(RateLimit::parse(bad), None, "{bad}");
    }
}

#[test]
fn every_validation_error_names_the_entry() {
    let cases: Vec<(String, &str)> = vec![
        ("version = 2\n".into(), "version: unsupported policy version 2 (expected 1)"),
        (
            with("[tools.write_file]\nscope = \"tools:write\"\nroles = [\"editor\"]\n"),
            "tools.write_file.roles: unknown role \"editor\"",
        ),
        (
            with("[tools.write_file]\nscope = \"tools:write\"\napproval_roles = [\"editor\"]\n"),
            "tools.write_file.approval_roles: unknown role \"editor\"",
        ),
        (
            with("[tools.w]\nscope = \"tools:write\"\nroles = [\"admin\"]\napproval_roles = [\"admin\"]\n"),
            "tools.w.approval_roles: role \"admin\" is also in roles",
        ),
        (
            // executor inherits analyst: allowed outright, never asked.
            with("[tools.w]\nscope = \"tools:write\"\nroles = [\"analyst\"]\napproval_roles = [\"executor\"]\n"),
            "tools.w.approval_roles: role \"executor\" inherits \"analyst\", which is in roles: it would run the target without approval",
        ),
        (
            with("[resources.\"memo://x\"]\nscope = \"res:read\"\nroles = [\"reader\"]\n[resources.\"memo://x\".constraints]\nid = { one_of = [\"a\"] }\n"),
            "resources.\"memo://x\".constraints: a resource is read without arguments, so constraints cannot apply to it",
        ),
        (
            "version = 1\n[roles.admin]\ninherits = [\"executor\"]\n[roles.executor]\ninherits = [\"admin\"]\n".into(),
            "roles.admin.inherits: cycle admin -> executor -> admin",
        ),
        (
            "version = 1\n[roles.me]\ninherits = [\"me\"]\n".into(),
            "roles.me.inherits: cycle me -> me",
        ),
        (
            "version = 1\n[roles.a]\n[roles.b]\ninherits = [\"c\", \"a\"]\n[roles.c]\ninherits = [\"d\"]\n[roles.d]\ninherits = [\"b\"]\n".into(),
            "roles.b.inherits: cycle b -> c -> d -> b",
        ),
        (
            "version = 1\n[roles.a]\ninherits = [\"ghost\"]\n".into(),
            "roles.a.inherits: unknown role \"ghost\"",
        ),
        (
            "version = 1\n[roles.\"bad role\"]\n".into(),
            "roles.\"bad role\": role names use only letters, digits, '_', '-' and '.'",
        ),
        (
            with("[tools.\"rm -rf\"]\nscope = \"tools:x\"\n"),
            "tools.\"rm -rf\": tool names use only letters, digits, '_', '-' and '.'",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nmax_duration = \"2h\"\n"),
            "tasks.x.max_duration: must be at most 1h",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nexpected_duration = \"61m\"\n"),
            "tasks.x.expected_duration: must be at most 1h",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nexpected_duration = \"30m\"\nmax_duration = \"10m\"\n"),
            "tasks.x.expected_duration: must not exceed max_duration",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nmax_duration = \"0s\"\n"),
            "tasks.x.max_duration: must be longer than zero",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nmax_duration = \"soon\"\n"),
            "tasks.x.max_duration: invalid duration \"soon\": expected e.g. \"15m\" or \"1h\"",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"foo\"]\n"),
            "tasks.x.tools: unknown tool \"foo\"",
        ),
        (
            with("[tasks.x]\ntools = []\n"),
            "tasks.x.tools: must name at least one tool",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nroles = [\"editor\"]\n"),
            "tasks.x.roles: unknown role \"editor\"",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.x]\ntools = [\"t\"]\nroles = []\n"),
            "tasks.x.roles: must name at least one role",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tenants.acme]\ntools = [\"t\", \"u\"]\n"),
            "tenants.acme.tools: unknown tool \"u\"",
        ),
        (
            with("[tenants.acme]\nrate_limit = \"10 per minute\"\n"),
            "tenants.acme.rate_limit: expected N/unit like \"30/min\"",
        ),
        (
            with("[tenants.\"a/b\"]\n"),
            "tenants.\"a/b\": tenant names use only letters, digits, '_', '-' and '.'",
        ),
        (
            with("[tools.t]\nscope = \"tools:x\"\n[tasks.\"a b\"]\ntools = [\"t\"]\n"),
            "tasks.\"a b\": task names use only letters, digits, '_', '-' and '.'",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\nrate_limit = \"10 per minute\"\n"),
            "tools.x.rate_limit: expected N/unit like \"30/min\"",
        ),
        (
            with("[role_limits.reader]\nrate_limit = \"lots\"\n"),
            "role_limits.reader.rate_limit: expected N/unit like \"30/min\"",
        ),
        (
            with("[role_limits.editor]\nrate_limit = \"1/s\"\n"),
            "role_limits.editor: unknown role \"editor\"",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\npath = { prefixes = [\"a/\"] }\n"),
            "tools.x.constraints.path: unknown constraint kind \"prefixes\" (expected one of prefix, hosts, domains, pattern, max_length, min, max, one_of, optional)",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\npath = \"a/\"\n"),
            "tools.x.constraints.path: expected a table like { prefix = [\"reports/\"] }",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\npath = { optional = true }\n"),
            "tools.x.constraints.path: no constraint given (expected one of prefix, hosts, domains, pattern, max_length, min, max, one_of, optional)",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nq = { pattern = \"(unclosed\" }\n"),
            "tools.x.constraints.q.pattern: invalid regex",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\npath = { prefix = [\"../up\"] }\n"),
            "tools.x.constraints.path.prefix: invalid prefix \"../up\": path climbs above its root",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\npath = { prefix = [] }\n"),
            "tools.x.constraints.path.prefix: must list at least one entry",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nurl = { hosts = [\"exa mple.com\"] }\n"),
            "tools.x.constraints.url.hosts: invalid entry \"exa mple.com\"",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nurl = { hosts = [\"user@example.com\"] }\n"),
            "tools.x.constraints.url.hosts: invalid entry \"user@example.com\"",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nurl = { hosts = [\"example.com:443\"] }\n"),
            "tools.x.constraints.url.hosts: invalid entry \"example.com:443\"",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nto = { domains = [\"*.10.0.0.1\"] }\n"),
            "tools.x.constraints.to.domains: invalid entry \"*.10.0.0.1\"",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nn = { min = 5, max = 1 }\n"),
            "tools.x.constraints.n.min: must not exceed max",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nn = { max_length = -1 }\n"),
            "tools.x.constraints.n.max_length: expected a non-negative integer",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nn = { min = \"1\" }\n"),
            "tools.x.constraints.n.min: expected a finite number",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nn = { one_of = [] }\n"),
            "tools.x.constraints.n.one_of: expected a non-empty array",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nn = { one_of = [[1]] }\n"),
            "tools.x.constraints.n.one_of: entries must be strings, numbers or booleans",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\n[tools.x.constraints]\nn = { max = 3, optional = \"yes\" }\n"),
            "tools.x.constraints.n.optional: expected true or false",
        ),
        (
            with("[tools.x]\nscope = \"tools:x\"\nredact = [\"\"]\n"),
            "tools.x.redact: field names must not be empty",
        ),
    ];
    for (text, want) in &cases {
        let got = error(text);
        assert!(
            got.starts_with(want),
            "got:  {got}\nwant: {want}\nin:\n{text}"
        );
    }
    for scope in [
        "tools",
        "tools:",
        ":read",
        "tools:read:x",
        "tools read",
        "tools:réad",
        "",
    ] {
        let text = with(&format!("[tools.x]\nscope = {scope:?}\n"));
        assert_eq!(
            error(&text),
            format!(
                "tools.x.scope: invalid scope {scope:?}: expected word:word like \"tools:read\""
            )
        );
    }
}

#[test]
fn unknown_fields_missing_fields_and_syntax_errors_give_a_line() {
    for (text, line, needle) in [
        (
            "version = 1\n[roles.reader]\ninherit = []\n",
            3,
            "unknown field `inherit`",
        ),
        ("version = 1\nrole = 3\n", 2, "unknown field `role`"),
        (
            "version = 1\n[tools.x]\nroles = []\n",
            2,
            "missing field `scope`",
        ),
        ("[roles.reader]\n", 1, "missing field `version`"),
        ("version = 1\n[tools.x\n", 2, ""),
        ("version = \"1\"\n", 1, ""),
        (
            "version = 1\n[roles.a]\n[tools.x]\nscope = \"tools:x\"\nscop = 1\n",
            5,
            "unknown field `scop`",
        ),
        (
            "version = 1\n[roles.a]\n[tasks.t]\ntools = [\"x\"]\nmax = \"1h\"\n",
            5,
            "unknown field `max`",
        ),
        (
            "version = 1\n[role_limits.a]\nrate = \"1/s\"\n",
            3,
            "unknown field `rate`",
        ),
        (
            "version = 1\n[tenants.acme]\nrate = \"1/s\"\n",
            3,
            "unknown field `rate`",
        ),
        ("version = 1\n[tenants]\nacme = 3\n", 3, ""),
    ] {
        let err = Policy::from_toml(text).unwrap_err();
        assert_eq!(err.line(), Some(line), "{err} in:\n{text}");
        assert_eq!(err.path(), format!("line {line}"), "{text}");
        assert!(err.reason().contains(needle), "{err}");
        assert!(!err.reason().contains('\n'), "{err:?}");
    }
}

#[test]
fn validation_errors_carry_the_line_of_their_entry() {
    let text = with(
        "\n[tools.ok]\nscope = \"tools:x\"\n\n[tools.bad]\nscope = \"tools:x\"\nroles = [\"nobody\"]\n",
    );
    let err = Policy::from_toml(&text).unwrap_err();
    assert_eq!(err.path(), "tools.bad.roles");
    assert_eq!(err.reason(), "unknown role \"nobody\"");
    let line = err.line().unwrap();
    let at = text.lines().nth(line - 1).unwrap();
    assert!(
        at.contains("bad") || at.contains("nobody") || at.contains("scope"),
        "line {line}: {at}"
    );
}

#[test]
fn task_durations_default_to_the_maximum() {
    let p = load(&with(
        "[tools.t]\nscope = \"tools:x\"\n[tasks.quick]\ntools = [\"t\"]\n",
    ));
    let task = p.task("quick").unwrap();
    assert_eq!(task.max_duration(), MAX_TASK_DURATION);
    assert_eq!(task.expected_duration(), None);
    assert_eq!(task.description(), None);
    let p = load(&with(
        "[tools.t]\nscope = \"tools:x\"\n[tasks.q]\ntools = [\"t\"]\nmax_duration = \"1h\"\nexpected_duration = \"1h\"\n",
    ));
    assert_eq!(
        p.task("q").unwrap().expected_duration(),
        Some(MAX_TASK_DURATION)
    );
}

#[test]
fn named_tools_without_roles_are_denied_to_everyone() {
    let p = load(&with("[tools.nobody]\nscope = \"tools:x\"\n"));
    for role in ["reader", "analyst", "executor", "admin"] {
        assert_eq!(access(&p, role, "nobody"), Deny);
    }
    assert!(p.visible_tools(&nobody_principal()).is_empty());
}

fn nobody_principal() -> gatehouse_core::Principal {
    gatehouse_core::Principal {
        tenant: "t".into(),
        human: None,
        agent: "a".into(),
        credential: gatehouse_core::CredentialRef {
            kind: gatehouse_core::CredentialKind::ApiKey,
            id: "k".into(),
        },
        roles: vec!["admin".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    }
}

#[test]
fn empty_policy_denies_everything() {
    let p = load("version = 1\n");
    assert_eq!(p.roles().count(), 0);
    assert!(!p.is_known_role("admin"));
    assert!(p.scopes().is_empty());
}

#[test]
fn shipped_default_policy_parses() {
    let p = Policy::from_toml(crate::DEFAULT_POLICY_TOML).unwrap();
    assert_eq!(
        p.rule("whoami").map(|r| r.scope.as_str()),
        Some("tools:read")
    );
}
