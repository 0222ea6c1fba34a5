use super::*;
use gatehouse_core::{CredentialKind, CredentialRef};

fn principal(role: &str, scopes: Option<Vec<&str>>) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: "default".into(),
        human: None,
        agent: "key1".into(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "key1".into(),
        },
        roles: vec![role.into()],
        scopes: scopes.map(|s| s.into_iter().map(String::from).collect()),
        expires_at: None,
    })
}

fn outcome(policy: &Policy, role: &str, tool: &str) -> &'static str {
    match policy.authorize(&principal(role, None), tool) {
        Decision::Permit(_) => "allow",
        Decision::Deny(d) if d.reason == DenyReason::ApprovalRequired => "+token",
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
        Decision::Permit(_) => panic!("unknown tool permitted"),
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
        Decision::Permit(_) => panic!("scope ignored"),
    }
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
