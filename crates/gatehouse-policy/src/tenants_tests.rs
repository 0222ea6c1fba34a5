use std::sync::Arc;

use gatehouse_core::Principal;

use crate::{Access, Decision, DenyReason, Policy, RateLimit};

fn principal(tenant: &str, role: &str) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: tenant.into(),
        ..crate::test_support::principal(role)
    })
}

fn outcome(policy: &Policy, tenant: &str, role: &str, tool: &str) -> &'static str {
    match policy.authorize(&principal(tenant, role), tool) {
        Decision::Permit(_) => "allow",
        Decision::NeedsApproval(_) => "approval",
        Decision::Deny(d) => d.reason.code(),
    }
}

fn visible(policy: &Policy, tenant: &str, role: &str) -> Vec<String> {
    policy
        .visible_tools(&principal(tenant, role))
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect()
}

const TENANTS: &str = r#"
version = 1
[roles.reader]
[roles.admin]
inherits = ["reader"]
admin = true

[tools.read_file]
scope = "tools:read"
roles = ["reader"]
[tools.search_database]
scope = "tools:read"
roles = ["reader"]
[tools.send_email]
scope = "tools:write"
approval_roles = ["admin"]

[tasks.research]
tools = ["read_file", "search_database"]

[tenants.default]

[tenants.acme]
tools = ["read_file", "send_email"]
rate_limit = "600/min"

[tenants.globex-secret]
tools = []
"#;

#[test]
fn declaring_a_tenant_turns_tenancy_on() {
    let policy = Policy::from_toml(TENANTS).unwrap();
    assert!(policy.tenancy_enabled());
    for tenant in ["default", "acme", "globex-secret"] {
        assert!(policy.tenant_allowed(tenant), "{tenant}");
    }
    assert!(!policy.tenant_allowed("initech"));
    assert!(!policy.tenant_allowed("ACME"));
    assert_eq!(
        policy.tenant_rate_limit("acme"),
        Some(RateLimit {
            limit: 600,
            window_ms: 60_000
        })
    );
    assert_eq!(policy.tenant_rate_limit("default"), None);
    assert_eq!(policy.tenant_rate_limit("initech"), None);
}

#[test]
fn an_undeclared_tenant_is_denied_everything() {
    let policy = Policy::from_toml(TENANTS).unwrap();
    for tool in ["read_file", "send_email", "unnamed_tool"] {
        for role in ["reader", "admin", "nobody"] {
            assert_eq!(
                outcome(&policy, "initech", role, tool),
                "unknown_tenant",
                "{role} × {tool}"
            );
        }
    }
    assert!(visible(&policy, "initech", "admin").is_empty());
    let Decision::Deny(deny) = policy.authorize(&principal("initech", "reader"), "read_file")
    else {
        panic!("undeclared tenant not denied");
    };
    assert_eq!(deny.reason, DenyReason::UnknownTenant);
    // The message names no tenant at all.
    for name in ["initech", "acme", "default", "globex"] {
        assert!(!deny.message().contains(name), "{}", deny.message());
    }
    // Nor may it claim a task.
    assert!(
        policy
            .task_allowlist(&principal("initech", "reader"), "research")
            .is_err()
    );
}

#[test]
fn a_tenant_uses_only_its_tools() {
    let policy = Policy::from_toml(TENANTS).unwrap();
    assert_eq!(outcome(&policy, "acme", "reader", "read_file"), "allow");
    assert_eq!(
        outcome(&policy, "acme", "reader", "search_database"),
        "tool_not_in_tenant"
    );
    assert_eq!(outcome(&policy, "acme", "admin", "send_email"), "approval");
    // The tenant's list never widens a role.
    assert_eq!(
        outcome(&policy, "acme", "reader", "send_email"),
        "role_not_allowed"
    );
    assert_eq!(visible(&policy, "acme", "reader"), ["read_file"]);
    assert_eq!(
        visible(&policy, "acme", "admin"),
        ["read_file", "send_email"]
    );
    // An empty list: nothing.
    assert_eq!(
        outcome(&policy, "globex-secret", "admin", "read_file"),
        "tool_not_in_tenant"
    );
    assert!(visible(&policy, "globex-secret", "admin").is_empty());
    // The message names neither the tenant nor any other.
    let Decision::Deny(deny) = policy.authorize(&principal("acme", "reader"), "search_database")
    else {
        panic!("tool outside the tenant not denied");
    };
    assert_eq!(deny.reason, DenyReason::NotInTenant);
    for name in ["acme", "default", "globex"] {
        assert!(!deny.message().contains(name), "{}", deny.message());
    }
    // Grants are cut to the tenant too.
    assert_eq!(
        policy
            .task_allowlist(&principal("acme", "reader"), "research")
            .unwrap(),
        ["read_file"]
    );
}

#[test]
fn a_tenant_without_a_list_uses_every_named_tool_only() {
    let policy = Policy::from_toml(TENANTS).unwrap();
    assert_eq!(
        visible(&policy, "default", "admin"),
        ["read_file", "search_database", "send_email"]
    );
    assert_eq!(
        outcome(&policy, "default", "reader", "search_database"),
        "allow"
    );
    assert!(policy.tenant_allows_tool("default", "send_email"));
    // Tools the policy does not name are no tenant's tools, admin or not.
    assert!(!policy.tenant_allows_tool("default", "unnamed_tool"));
    assert_eq!(
        outcome(&policy, "default", "admin", "unnamed_tool"),
        "tool_not_in_tenant"
    );
    assert_eq!(
        outcome(&policy, "default", "reader", "unnamed_tool"),
        "unknown_tool"
    );
}

#[test]
fn without_tenants_nothing_changes() {
    let text = TENANTS
        .split("[tenants.default]")
        .next()
        .unwrap_or_default()
        .to_string();
    let policy = Policy::from_toml(&text).unwrap();
    assert!(!policy.tenancy_enabled());
    for tenant in ["default", "acme", "initech", ""] {
        assert!(policy.tenant_allowed(tenant));
        assert!(policy.tenant_allows_tool(tenant, "read_file"));
        assert!(policy.tenant_allows_tool(tenant, "unnamed_tool"));
        assert_eq!(policy.tenant_rate_limit(tenant), None);
        assert_eq!(
            outcome(&policy, tenant, "reader", "search_database"),
            "allow"
        );
        assert_eq!(outcome(&policy, tenant, "admin", "unnamed_tool"), "allow");
        assert_eq!(
            policy.visible_tools(&principal(tenant, "admin")),
            [
                ("read_file", Access::Allow),
                ("search_database", Access::Allow),
                ("send_email", Access::NeedsApproval),
            ]
        );
    }
    let default = Policy::default_matrix();
    assert!(!default.tenancy_enabled());
    assert!(default.tenant_allowed("anything"));
}

#[test]
fn tenant_validation_errors_name_the_path() {
    let base = "version = 1\n[roles.reader]\n[tools.read_file]\nscope = \"tools:read\"\nroles = [\"reader\"]\n";
    let cases = [
        (
            "[tenants.acme]\ntools = [\"write_file\"]\n",
            "tenants.acme.tools: unknown tool \"write_file\"",
        ),
        (
            "[tenants.acme]\nrate_limit = \"lots\"\n",
            "tenants.acme.rate_limit: expected N/unit like \"30/min\"",
        ),
        (
            "[tenants.\"a b\"]\n",
            "tenants.\"a b\": tenant names use only letters, digits, '_', '-' and '.'",
        ),
    ];
    for (snippet, want) in cases {
        let text = format!("{base}{snippet}");
        let err = Policy::from_toml(&text).unwrap_err();
        assert_eq!(err.to_string(), want, "in:\n{text}");
        assert!(err.line().is_some(), "{err}");
    }
    let text = format!("{base}[tenants.acme]\ntool = [\"read_file\"]\n");
    let err = Policy::from_toml(&text).unwrap_err();
    assert!(err.reason().contains("unknown field `tool`"), "{err}");
    assert_eq!(err.line(), Some(7));
}
