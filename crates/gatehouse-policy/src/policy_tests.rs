use super::*;
use std::collections::BTreeMap;

fn principal(role: &str, scopes: Option<Vec<&str>>) -> Arc<Principal> {
    Arc::new(Principal {
        agent: "key1".into(),
        scopes: scopes.map(|s| s.into_iter().map(String::from).collect()),
        ..crate::test_support::principal(role)
    })
}

fn outcome(policy: &Policy, role: &str, tool: &str) -> &'static str {
    match policy.authorize(&principal(role, None), tool) {
        Decision::Permit(_) => "allow",
        Decision::NeedsApproval(_) => "+token",
        Decision::Deny(_) => "deny",
    }
}

/// The matrix from the foundation issue, row by row.
#[test]
fn default_matrix_is_exactly_the_documented_one() {
    let expected = [
        ("read_file", ["allow", "allow", "allow", "allow"]),
        ("search_database", ["allow", "allow", "allow", "allow"]),
        ("web_fetch", ["deny", "allow", "allow", "allow"]),
        ("write_file", ["deny", "deny", "+token", "allow"]),
        ("send_email", ["deny", "deny", "+token", "allow"]),
        ("execute_code", ["deny", "deny", "+token", "allow"]),
        ("access_secrets", ["deny", "deny", "deny", "+token"]),
        ("modify_mcp_config", ["deny", "deny", "deny", "+token"]),
        ("whoami", ["allow", "allow", "allow", "allow"]),
    ];
    let policy = Policy::default_matrix();
    for (tool, per_role) in expected {
        for (role, want) in ROLES.iter().zip(per_role) {
            assert_eq!(outcome(&policy, role, tool), want, "{role} × {tool}");
        }
    }
}

#[test]
fn unknown_tool_and_unknown_role_are_denied() {
    let policy = Policy::default_matrix();
    assert_eq!(outcome(&policy, "admin", "rm_rf"), "deny");
    assert_eq!(outcome(&policy, "superuser", "read_file"), "deny");
    match policy.authorize(&principal("admin", None), "rm_rf") {
        Decision::Deny(d) => assert_eq!(d.reason.code(), "unknown_tool"),
        other => panic!("unknown tool not denied: {other:?}"),
    }
}

#[test]
fn tool_names_are_exact() {
    let policy = Policy::default_matrix();
    for alias in ["READ_FILE", "read_file ", "read-file", "read_fіle"] {
        assert_eq!(outcome(&policy, "admin", alias), "deny", "{alias:?}");
    }
}

#[test]
fn scopes_narrow_roles() {
    let policy = Policy::default_matrix();
    let scoped = principal("admin", Some(vec!["tools:read"]));
    assert!(matches!(
        policy.authorize(&scoped, "read_file"),
        Decision::Permit(_)
    ));
    match policy.authorize(&scoped, "write_file") {
        Decision::Deny(d) => {
            assert_eq!(d.reason.code(), "insufficient_scope");
            assert_eq!(d.required_scope(), Some("tools:write"));
        }
        other => panic!("scope ignored: {other:?}"),
    }
    // Approval is asked for only when the scope allows the call at all.
    let executor = principal("executor", Some(vec!["tools:read"]));
    match policy.authorize(&executor, "send_email") {
        Decision::Deny(d) => assert_eq!(d.required_scope(), Some("tools:write")),
        other => panic!("scope ignored for an approval tool: {other:?}"),
    }
    let executor = principal("executor", Some(vec!["tool:send_email"]));
    assert!(matches!(
        policy.authorize(&executor, "send_email"),
        Decision::NeedsApproval(_)
    ));
    // A per-tool scope works too.
    let per_tool = principal("admin", Some(vec!["tool:web_fetch"]));
    assert!(matches!(
        policy.authorize(&per_tool, "web_fetch"),
        Decision::Permit(_)
    ));
    assert!(matches!(
        policy.authorize(&per_tool, "read_file"),
        Decision::Deny(_)
    ));
    // Scopes never widen a role.
    let reader = principal("reader", Some(vec!["tools:write"]));
    assert!(matches!(
        policy.authorize(&reader, "write_file"),
        Decision::Deny(_)
    ));
}

#[test]
fn visible_tools_follow_the_matrix() {
    let policy = Policy::default_matrix();
    let names = |role| -> Vec<String> {
        policy
            .visible_tools(&principal(role, None))
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect()
    };
    assert_eq!(names("reader"), ["read_file", "search_database", "whoami"]);
    assert_eq!(
        names("analyst"),
        ["read_file", "search_database", "web_fetch", "whoami"]
    );
    assert_eq!(names("executor").len(), 7);
    assert_eq!(names("admin").len(), 9);
    assert!(names("nobody").is_empty());
}

#[test]
fn permit_carries_principal_and_rule() {
    let policy = Policy::default_matrix();
    let p = principal("analyst", None);
    let Decision::Permit(permit) = policy.authorize(&p, "web_fetch") else {
        panic!("expected permit");
    };
    assert_eq!(permit.tool(), "web_fetch");
    assert_eq!(permit.principal().agent, "key1");
    assert_eq!(permit.rule(), "role analyst allows web_fetch");
}

/// The matrix as it was hard-coded before the policy file existed: every
/// role × tool `ToolRule` (scope and access) must be unchanged.
#[test]
fn default_policy_file_reproduces_the_old_table_exactly() {
    use Access::{Allow, Deny as D, NeedsApproval as T};
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
    let old: BTreeMap<String, ToolRule> = rows
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
    let policy = Policy::default_matrix();
    assert_eq!(policy.tools, old);
    assert_eq!(policy, Policy::from_toml(DEFAULT_POLICY_TOML).unwrap());
    // The roles are the built-in ones, none of them admin, and the default
    // has no limits, redactions, constraints or tenants.
    assert_eq!(policy.roles().collect::<Vec<_>>(), {
        let mut r = ROLES.to_vec();
        r.sort();
        r
    });
    for role in ROLES {
        assert!(policy.is_known_role(role));
        assert!(!policy.is_admin_role(role));
        assert_eq!(policy.role_rate_limit(role), None);
    }
    assert!(!policy.is_known_role("superuser"));
    // The two example tasks are the only ones, and tenancy is off.
    assert_eq!(
        policy.tasks().map(|(name, _)| name).collect::<Vec<_>>(),
        ["outreach", "research"]
    );
    assert!(!policy.tenancy_enabled());
    for tool in old.keys() {
        assert_eq!(policy.tool_rate_limit(tool), None);
        assert!(policy.redact_fields(tool).is_empty());
        assert_eq!(policy.constraints(tool).count(), 0);
    }
    // Scopes derived from the matrix are unchanged too.
    assert_eq!(
        policy.scopes(),
        ["tools:admin", "tools:read", "tools:web", "tools:write"]
    );
    assert_eq!(
        policy.scopes_for_role("reader"),
        [
            "tool:read_file",
            "tool:search_database",
            "tool:whoami",
            "tools:read"
        ]
    );
}

#[test]
fn policy_new_keeps_its_old_meaning() {
    let rule = ToolRule {
        scope: "tools:admin".into(),
        access: BTreeMap::from([("admin".to_string(), Access::Allow)]),
    };
    let policy = Policy::new(BTreeMap::from([("rm_rf".to_string(), rule)]));
    assert!(matches!(
        policy.authorize(&principal("admin", None), "rm_rf"),
        Decision::Permit(_)
    ));
    // No admin role: unnamed tools are denied to everyone.
    assert_eq!(outcome(&policy, "admin", "other"), "deny");
    assert!(policy.is_known_role("reader"));
    assert!(!policy.is_known_role("editor"));
}

const CONSTRAINED: &str = r#"
version = 1
[roles.reader]
[roles.executor]
inherits = ["reader"]
[roles.admin]
inherits = ["executor"]
admin = true

[tools.read_file]
scope = "tools:read"
roles = ["reader"]
[tools.read_file.constraints]
path = { prefix = ["reports/", "public/"] }

[tools.send_email]
scope = "tools:write"
roles = ["admin"]
approval_roles = ["executor"]
[tools.send_email.constraints]
to = { domains = ["example.com"] }
"#;

fn code(decision: &Decision) -> &'static str {
    match decision {
        Decision::Permit(_) => "permit",
        Decision::NeedsApproval(_) => "needs_approval",
        Decision::Deny(d) => d.reason.code(),
    }
}

#[test]
fn authorize_call_checks_constraints_after_role_and_scope() {
    let policy = Policy::from_toml(CONSTRAINED).unwrap();
    let reader = principal("reader", None);
    let ok = serde_json::json!({"path": "reports/q1.csv"});
    let bad = serde_json::json!({"path": "reports/../secrets.txt"});
    assert_eq!(
        code(&policy.authorize_call(&reader, "read_file", &ok)),
        "permit"
    );
    let Decision::Deny(deny) = policy.authorize_call(&reader, "read_file", &bad) else {
        panic!("escape permitted");
    };
    assert_eq!(
        deny.reason,
        DenyReason::ConstraintViolated {
            argument: "path".into(),
            rule: r#"prefix ["reports/", "public/"]: path is outside the allowed prefixes"#.into(),
        }
    );
    assert_eq!(deny.reason.code(), "constraint_violated");
    assert!(
        deny.message()
            .contains("argument 'path' of tool 'read_file'")
    );
    assert!(!deny.message().contains("secrets.txt"), "value leaked");
    // The old entry point ignores arguments.
    assert!(matches!(
        policy.authorize(&reader, "read_file"),
        Decision::Permit(_)
    ));
    // Role and scope come first.
    let scoped = principal("reader", Some(vec!["tools:web"]));
    assert_eq!(
        code(&policy.authorize_call(&scoped, "read_file", &bad)),
        "insufficient_scope"
    );
    assert_eq!(
        code(&policy.authorize_call(&reader, "send_email", &bad)),
        "role_not_allowed"
    );
    // Missing arguments and no arguments at all.
    assert_eq!(
        code(&policy.authorize_call(&reader, "read_file", &serde_json::json!({}))),
        "constraint_violated"
    );
    assert_eq!(
        code(&policy.authorize_call(&reader, "read_file", &Value::Null)),
        "constraint_violated"
    );
    assert_eq!(
        code(&policy.authorize_call(&reader, "read_file", &serde_json::json!("x"))),
        "constraint_violated"
    );
}

#[test]
fn approval_tools_still_need_approval_but_bad_arguments_say_so_first() {
    let policy = Policy::from_toml(CONSTRAINED).unwrap();
    let executor = principal("executor", None);
    let good = serde_json::json!({"to": "bob@example.com"});
    let bad = serde_json::json!({"to": "bob@evil.com"});
    assert_eq!(
        code(&policy.authorize_call(&executor, "send_email", &good)),
        "needs_approval"
    );
    assert_eq!(
        code(&policy.authorize_call(&executor, "send_email", &bad)),
        "constraint_violated"
    );
    let admin = principal("admin", None);
    assert_eq!(
        code(&policy.authorize_call(&admin, "send_email", &good)),
        "permit"
    );
    assert_eq!(
        code(&policy.authorize_call(&admin, "send_email", &bad)),
        "constraint_violated"
    );
    assert!(policy.check_arguments("send_email", &good).is_ok());
    assert_eq!(
        policy
            .check_arguments("send_email", &bad)
            .unwrap_err()
            .argument,
        "to"
    );
}

#[test]
fn admins_may_call_unnamed_tools_and_nobody_else() {
    let policy = Policy::from_toml(CONSTRAINED).unwrap();
    assert!(policy.is_admin_role("admin"));
    assert!(!policy.is_admin_role("executor"));
    let Decision::Permit(permit) = policy.authorize(&principal("admin", None), "upstream_tool")
    else {
        panic!("admin not permitted an unnamed tool");
    };
    assert!(permit.rule().contains("does not name"));
    for role in ["reader", "executor", "nobody"] {
        match policy.authorize(&principal(role, None), "upstream_tool") {
            Decision::Deny(d) => assert_eq!(d.reason, DenyReason::UnknownTool, "{role}"),
            other => panic!("{role} may call an unnamed tool: {other:?}"),
        }
    }
    // A scoped admin credential needs tools:admin or tool:<name>.
    let narrow = principal("admin", Some(vec!["tools:read"]));
    match policy.authorize(&narrow, "upstream_tool") {
        Decision::Deny(d) => assert_eq!(d.required_scope(), Some("tools:admin")),
        other => panic!("scope ignored: {other:?}"),
    }
    for scope in ["tools:admin", "tool:upstream_tool"] {
        let p = principal("admin", Some(vec![scope]));
        assert!(matches!(
            policy.authorize(&p, "upstream_tool"),
            Decision::Permit(_)
        ));
    }
    // Named tools follow their lists, admin or not: a tool naming nobody
    // is denied to the admin too.
    let policy = Policy::from_toml(
        "version = 1\n[roles.admin]\nadmin = true\n[tools.locked]\nscope = \"tools:x\"\n",
    )
    .unwrap();
    assert_eq!(outcome(&policy, "admin", "locked"), "deny");
    assert_eq!(outcome(&policy, "admin", "unnamed"), "allow");
}

/// The outcome of one call as a short word: `allow`, `approval`, or the
/// deny reason code.
fn call_outcome(policy: &Policy, role: &str, tool: &str) -> &'static str {
    match policy.authorize(&principal(role, None), tool) {
        Decision::Permit(_) => "allow",
        Decision::NeedsApproval(_) => "approval",
        Decision::Deny(d) => d.reason.code(),
    }
}

/// How `tools/list` shows one tool: `allow`, `approval`, or `-` (hidden).
fn list_outcome(policy: &Policy, role: &str, tool: &str) -> &'static str {
    let visible = policy.visible_tools(&principal(role, None));
    match visible.iter().find(|(name, _)| *name == tool) {
        None => "-",
        Some((_, Access::Allow)) => "allow",
        Some((_, Access::NeedsApproval)) => "approval",
        Some((_, Access::Deny)) => "listed as deny",
    }
}

/// The matrix roles: the four built-in ones and one the policy does not define.
const MATRIX_ROLES: [&str; 5] = ["reader", "analyst", "executor", "admin", "intruder"];

/// Every tool of the shipped default, and one it does not name.
const MATRIX_TOOLS: [&str; 10] = [
    "whoami",
    "read_file",
    "search_database",
    "web_fetch",
    "write_file",
    "send_email",
    "execute_code",
    "access_secrets",
    "modify_mcp_config",
    "upstream_tool",
];

#[test]
fn matrix_covers_every_tool_of_the_shipped_default() {
    let policy = Policy::default_matrix();
    let mut named: Vec<&str> = MATRIX_TOOLS[..9].to_vec();
    named.sort_unstable();
    let in_policy: Vec<&str> = policy.tools.keys().map(String::as_str).collect();
    assert_eq!(in_policy, named, "update the matrix tests for the new tool");
    assert!(policy.rule(MATRIX_TOOLS[9]).is_none());
}

/// `tools/call` for every role × tool of the shipped default, written out.
#[test]
fn shipped_default_call_matrix_exhaustively() {
    const RNA: &str = "role_not_allowed";
    const UNK: &str = "unknown_tool";
    #[rustfmt::skip]
    let expected: [[&str; 10]; 5] = [
        //whoami   read_file search_db web_fetch write_file  send_email  execute_code access_sec  modify_cfg  upstream
        ["allow",  "allow",  "allow",  RNA,      RNA,        RNA,        RNA,         RNA,        RNA,        UNK], // reader
        ["allow",  "allow",  "allow",  "allow",  RNA,        RNA,        RNA,         RNA,        RNA,        UNK], // analyst
        ["allow",  "allow",  "allow",  "allow",  "approval", "approval", "approval",  RNA,        RNA,        UNK], // executor
        ["allow",  "allow",  "allow",  "allow",  "allow",    "allow",    "allow",     "approval", "approval", UNK], // admin
        [RNA,      RNA,      RNA,      RNA,      RNA,        RNA,        RNA,         RNA,        RNA,        UNK], // intruder
    ];
    let policy = Policy::default_matrix();
    for (role, row) in MATRIX_ROLES.iter().zip(expected) {
        for (tool, want) in MATRIX_TOOLS.iter().zip(row) {
            assert_eq!(call_outcome(&policy, role, tool), want, "{role} × {tool}");
        }
    }
}

/// `tools/list` for every role × tool of the shipped default, written out.
#[test]
fn shipped_default_list_matrix_exhaustively() {
    #[rustfmt::skip]
    let expected: [[&str; 10]; 5] = [
        //whoami   read_file search_db web_fetch write_file  send_email  execute_code access_sec  modify_cfg  upstream
        ["allow",  "allow",  "allow",  "-",      "-",        "-",        "-",         "-",        "-",        "-"], // reader
        ["allow",  "allow",  "allow",  "allow",  "-",        "-",        "-",         "-",        "-",        "-"], // analyst
        ["allow",  "allow",  "allow",  "allow",  "approval", "approval", "approval",  "-",        "-",        "-"], // executor
        ["allow",  "allow",  "allow",  "allow",  "allow",    "allow",    "allow",     "approval", "approval", "-"], // admin
        ["-",      "-",      "-",      "-",      "-",        "-",        "-",         "-",        "-",        "-"], // intruder
    ];
    let policy = Policy::default_matrix();
    for (role, row) in MATRIX_ROLES.iter().zip(expected) {
        for (tool, want) in MATRIX_TOOLS.iter().zip(row) {
            assert_eq!(list_outcome(&policy, role, tool), want, "{role} × {tool}");
        }
    }
}

#[test]
fn approval_needed_names_its_rule_and_becomes_a_permit_once_approved() {
    let policy = Policy::default_matrix();
    let p = principal("executor", None);
    let Decision::NeedsApproval(needed) = policy.authorize(&p, "send_email") else {
        panic!("expected approval");
    };
    assert_eq!(needed.tool(), "send_email");
    assert_eq!(needed.principal().agent, "key1");
    assert_eq!(
        needed.rule(),
        "role executor may call send_email with an approved operation token"
    );
    let permit = needed.into_permit("apr_123");
    assert_eq!(permit.tool(), "send_email");
    assert_eq!(permit.principal().agent, "key1");
    assert!(
        permit
            .rule()
            .starts_with("role executor may call send_email with an approved operation token")
    );
    assert!(permit.rule().contains("approved"), "{}", permit.rule());
    assert!(permit.rule().contains("apr_123"), "{}", permit.rule());
    // An admin's approval = true tool asks for approval too.
    let Decision::NeedsApproval(needed) =
        policy.authorize(&principal("admin", None), "access_secrets")
    else {
        panic!("expected approval");
    };
    assert_eq!(
        needed.rule(),
        "role admin may call access_secrets with an approved operation token"
    );
}

#[test]
fn approval_required_deny_says_a_human_must_approve() {
    let deny = Deny::tool("send_email", DenyReason::ApprovalRequired);
    assert_eq!(deny.reason.code(), "approval_required");
    assert!(deny.message().contains("approve"), "{}", deny.message());
    assert!(
        !deny.message().contains("cannot issue"),
        "{}",
        deny.message()
    );
    let refused = Deny::tool(
        "send_email",
        DenyReason::OperationTokenRefused {
            code: "operation_token_used",
        },
    );
    assert_eq!(refused.reason.code(), "operation_token_used");
    assert!(refused.message().contains("operation_token_used"));
}
