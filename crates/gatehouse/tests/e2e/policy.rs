//! The policy file: explaining decisions, argument constraints at call
//! time, and reloading without a restart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::browser::{Browser, add_user, authorize_url, pkce, public_client, query, redeem};
use super::harness::Server;

const DEFAULT: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");

/// The default policy plus a path constraint on read_file.
fn constrained() -> String {
    format!("{DEFAULT}\n[tools.read_file.constraints]\npath = {{ prefix = [\"reports/\"] }}\n")
}

fn error_of(body: &Value) -> &Value {
    &body["error"]
}

fn start_with_policy(policy: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"))
}

#[tokio::test]
async fn policy_check_explains_decisions_with_the_audit_reason_codes() {
    let server = Server::start(None);
    // The exit status carries the decision (0 allow, 3 approval, 4 deny), so
    // scripts can branch on it; the JSON agrees with it.
    let check = |args: &[&str]| {
        let mut all = vec!["policy", "check", "--json"];
        all.extend_from_slice(args);
        let out = server.cli(&all);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        let expected = match v["decision"].as_str() {
            Some("allow") => 0,
            Some("approval") => 3,
            _ => 4,
        };
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {v}");
        v
    };
    let v = check(&["--role", "reader", "--tool", "execute_code"]);
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("deny"), Some("role_not_allowed"))
    );
    let v = check(&["--role", "executor", "--tool", "send_email"]);
    assert_eq!(v["decision"], "approval");
    let v = check(&["--role", "admin", "--tool", "read_file"]);
    assert_eq!(v["decision"], "allow");
    let text = server.cli(&["policy", "check", "--role", "reader", "--tool", "web_fetch"]);
    assert_eq!(
        text.status.code(),
        Some(4),
        "a denial exits 4 without --json too"
    );
    let v = check(&[
        "--role",
        "admin",
        "--scopes",
        "tools:read",
        "--tool",
        "web_fetch",
    ]);
    assert_eq!(v["reason"], "insufficient_scope");
    let v = check(&["--role", "admin", "--tool", "rm_rf"]);
    assert_eq!(v["reason"], "unknown_tool");
    // As a stored key: its role and scopes decide.
    let (id, key) = server.create_key("agent", "analyst", &[]);
    let v = check(&["--key", &id, "--tool", "web_fetch"]);
    assert_eq!(v["decision"], "allow");
    // A whole key pasted instead of its id: only the id is used, and the
    // secret is never shown, not even in an error.
    let v = check(&["--key", &key, "--tool", "web_fetch"]);
    assert_eq!(v["decision"], "allow");
    // `ghk_<12-character id>_<secret>`: an unknown id, the same secret.
    let mut unknown = key.clone();
    unknown.replace_range(4..8, "zzzz");
    let secret = &key[4 + 12 + 1..];
    let out = server.cli(&["policy", "check", "--key", &unknown, "--tool", "whoami"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no API key"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    let out = server.cli(&["policy", "check", "--tool", "read_file"]);
    assert_eq!(out.status.code(), Some(1), "a caller must be named");
}

#[tokio::test]
async fn argument_constraints_are_enforced_on_normalized_values_and_audited() {
    let server = start_with_policy(&constrained());
    let admin = server.admin_key.clone().unwrap();
    for path in [
        "../secret.txt",
        "%2e%2e/secret.txt",
        "reports/../../x",
        "other/a.txt",
        "reports\\..\\..\\x",
    ] {
        let body = server
            .call_tool(&admin, "read_file", json!({"path": path}))
            .await;
        assert_eq!(
            error_of(&body)["data"]["reason"],
            "constraint_violated",
            "{path}: {body}"
        );
    }
    // Inside the prefix the policy lets it through (the file does not exist:
    // a tool error, not a denial).
    let body = server
        .call_tool(&admin, "read_file", json!({"path": "reports/q3.txt"}))
        .await;
    assert!(error_of(&body).is_null(), "{body}");
    let denials = server.audit(&["--outcome", "denied", "--tool", "read_file"]);
    assert_eq!(denials.len(), 5);
    assert!(denials.iter().all(|d| d["reason"] == "constraint_violated"));
    let out = server.cli(&[
        "policy",
        "check",
        "--role",
        "admin",
        "--tool",
        "read_file",
        "--args",
        r#"{"path":"%2e%2e/x"}"#,
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "constraint_violated");
    assert!(v["rule"].as_str().unwrap().contains("path"));
}

async fn wait_for(server: &Server, key: &str, tool: &str, allowed: bool) {
    let start = Instant::now();
    loop {
        let body = server.call_tool(key, tool, json!({})).await;
        if error_of(&body).is_null() == allowed
            || error_of(&body)["data"]["reason"] != "role_not_allowed" && allowed
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the policy change was not picked up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_policy_reloads_when_the_file_changes_and_an_invalid_file_keeps_the_old_one() {
    let server = start_with_policy(DEFAULT);
    let (_, reader) = server.create_key("r", "reader", &[]);
    let body = server.call_tool(&reader, "web_fetch", json!({})).await;
    assert_eq!(error_of(&body)["data"]["reason"], "role_not_allowed");

    // Readers may now fetch: the running server picks it up.
    let path = server.data_dir().join("policy.toml");
    let opened = DEFAULT.replace(
        "[tools.web_fetch]\nscope = \"tools:web\"\nroles = [\"analyst\"]",
        "[tools.web_fetch]\nscope = \"tools:web\"\nroles = [\"reader\"]",
    );
    assert_ne!(opened, DEFAULT);
    std::fs::write(&path, &opened).unwrap();
    wait_for(&server, &reader, "web_fetch", true).await;

    // A broken file is refused and the running policy stays.
    let broken = opened.replace(
        "roles = [\"reader\"]\n\n[tools.write_file]",
        "roles = [\"nobody\"]\n\n[tools.write_file]",
    );
    assert_ne!(broken, opened);
    std::fs::write(&path, broken).unwrap();
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(server.stderr_path()).unwrap();
        if log.contains("keeping the previous one") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no error reported:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = server.call_tool(&reader, "web_fetch", json!({})).await;
    assert_ne!(error_of(&body)["data"]["reason"], "role_not_allowed");
    let out = server.cli(&["policy", "validate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tools.web_fetch"), "{stderr}");
}

/// Start-up refuses a policy that disagrees with the configuration (here:
/// a lifecycle override for a tenant the policy does not declare, which
/// would leave that tenant's keys on the defaults). A reload is held to the
/// same check: the disagreeing file is not applied and the running policy
/// stays.
#[tokio::test]
async fn a_reload_the_configuration_disagrees_with_keeps_the_old_policy() {
    let with_acme = format!("{DEFAULT}\n[tenants.acme]\n\n[tenants.globex]\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), &with_acme).unwrap();
    let server = Server::start_in(
        dir,
        Some(
            "version = 1\n[policy]\nfile = \"policy.toml\"\n\
             [lifecycle.tenants.acme.api_keys]\nunused_alert = \"20d\"\n",
        ),
    );
    let (_, acme) = server.create_key("a", "reader", &["--tenant", "acme"]);

    let without_acme = format!("{DEFAULT}\n[tenants.globex]\n");
    std::fs::write(server.data_dir().join("policy.toml"), &without_acme).unwrap();
    let start = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(server.stderr_path()).unwrap();
        if log.contains("keeping the previous one") {
            break log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the disagreeing policy was not refused:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(log.contains("lifecycle.tenants.acme"), "{log}");
    assert!(!log.contains("policy reloaded"), "{log}");
    // acme is still a tenant of the running policy: its key still works.
    let body = server.call_tool(&acme, "whoami", json!({})).await;
    assert!(error_of(&body).is_null(), "{body}");

    let out = server.cli(&["policy", "validate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lifecycle.tenants.acme"), "{stderr}");
}

#[tokio::test]
async fn rate_limits_per_principal_and_tool_and_per_role() {
    let policy = DEFAULT.replace(
        "[tools.whoami]\nscope = \"tools:read\"\nroles = [\"reader\"]",
        "[tools.whoami]\nscope = \"tools:read\"\nroles = [\"reader\"]\nrate_limit = \"2/min\"",
    ) + "\n[role_limits.analyst]\nrate_limit = \"3/min\"\n";
    let server = start_with_policy(&policy);
    let (_, first) = server.create_key("a", "reader", &[]);
    let (_, second) = server.create_key("b", "reader", &[]);
    for _ in 0..2 {
        let body = server.call_tool(&first, "whoami", json!({})).await;
        assert!(error_of(&body).is_null(), "{body}");
    }
    let limited = server.call_tool(&first, "whoami", json!({})).await;
    let data = &error_of(&limited)["data"];
    assert_eq!(data["reason"], "rate_limited");
    let retry = data["retry_after"].as_u64().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another principal has its own budget, and other tools are not limited.
    assert!(error_of(&server.call_tool(&second, "whoami", json!({})).await).is_null());
    // A person's budget is theirs across every agent acting for them: a
    // second key (or OAuth client) of the same person gets no new one.
    let (_, alices) = server.create_key("alice-1", "reader", &["--owner", "alice"]);
    let (_, alices_other) = server.create_key("alice-2", "reader", &["--owner", "alice"]);
    for _ in 0..2 {
        let body = server.call_tool(&alices, "whoami", json!({})).await;
        assert!(error_of(&body).is_null(), "{body}");
    }
    let limited = server.call_tool(&alices_other, "whoami", json!({})).await;
    assert_eq!(
        error_of(&limited)["data"]["reason"],
        "rate_limited",
        "{limited}"
    );
    let other_tool = server
        .call_tool(&first, "search_database", json!({"query": "x"}))
        .await;
    assert_ne!(error_of(&other_tool)["data"]["reason"], "rate_limited");
    // The role limit counts every tool together.
    let (_, analyst) = server.create_key("c", "analyst", &[]);
    let tools = ["search_database", "read_file", "search_database"];
    for tool in tools {
        let body = server
            .call_tool(&analyst, tool, json!({"query": "x", "path": "a.txt"}))
            .await;
        assert_ne!(error_of(&body)["data"]["reason"], "rate_limited", "{body}");
    }
    let body = server
        .call_tool(&analyst, "read_file", json!({"path": "a.txt"}))
        .await;
    assert_eq!(error_of(&body)["data"]["reason"], "rate_limited");
    let denials = server.audit(&["--outcome", "denied"]);
    assert_eq!(
        denials
            .iter()
            .filter(|d| d["reason"] == "rate_limited")
            .count(),
        3
    );
}

#[tokio::test]
async fn admins_can_explain_decisions_over_http_and_nobody_else_can() {
    let server = Server::start(None);
    let (_, admin) = server.create_key("ops", "admin", &[]);
    let (_, reader) = server.create_key("agent", "reader", &[]);
    let check = |key: String, body: Value| {
        let server = &server;
        async move {
            let (status, _, body) = super::admin_api::ask(server, &key, body).await;
            (status, body)
        }
    };
    let (status, v) = check(
        admin.clone(),
        json!({"roles": ["executor"], "tool": "send_email", "args": {"to": "a@example.com"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("approval"), Some("approval_required"))
    );
    let (_, v) = check(
        admin.clone(),
        json!({"roles": ["reader"], "tool": "execute_code"}),
    )
    .await;
    assert_eq!(v["reason"], "role_not_allowed");
    assert!(v["rule"].as_str().unwrap().contains("reader"));
    let (_, v) = check(
        admin.clone(),
        json!({"roles": ["analyst"], "tool": "read_file", "task": "outreach"}),
    )
    .await;
    assert_eq!(v["reason"], "outside_task");
    assert_eq!(v["task_tools"], json!(["whoami", "search_database"]));
    // The CLI explains with the same function: the same question gets the
    // same JSON (issue 10: they used to differ).
    let cli = server.cli(&[
        "policy",
        "check",
        "--json",
        "--role",
        "analyst",
        "--tool",
        "read_file",
        "--task",
        "outreach",
    ]);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli, v, "CLI and HTTP explanations differ");
    let (_, v) = check(
        admin.clone(),
        json!({"roles": ["reader"], "tool": "web_fetch", "args": {"url": "https://example.com"}}),
    )
    .await;
    let cli = server.cli(&[
        "policy",
        "check",
        "--json",
        "--role",
        "reader",
        "--tool",
        "web_fetch",
        "--args",
        r#"{"url": "https://example.com"}"#,
    ]);
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli, v, "CLI and HTTP explanations differ");
    let (status, v) = check(
        admin.clone(),
        json!({"roles": ["reader"], "tool": "whoami", "tenant": "globex"}),
    )
    .await;
    assert_eq!(status, 403, "another tenant's questions: {v}");
    let (status, _) = check(admin, json!({"tool": "whoami"})).await;
    assert_eq!(status, 400);
    let (status, _) = check(reader, json!({"roles": ["admin"], "tool": "whoami"})).await;
    assert_eq!(status, 403, "only admins may ask");
    let anonymous = server
        .http
        .post(format!("{}/admin/policy/check", server.base))
        .json(&json!({"roles": ["admin"], "tool": "whoami"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Waits until the running server has loaded the changed policy file.
async fn wait_for_reload(server: &Server, reloads_before: usize) {
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(server.stderr_path()).unwrap();
        if log.matches("policy reloaded").count() > reloads_before {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the policy was not reloaded:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Logs `user` in, consents and redeems the code; returns the token response.
async fn authorize_with_scope(
    server: &Server,
    client: &str,
    user: (&str, &str),
    scope: &str,
) -> Value {
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(server);
    let url = authorize_url(server, client, &challenge, &[("scope", scope)]);
    let location = browser.authorize(&url, user.0, user.1).await;
    let code = query(&location)
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {location}"));
    let (status, tokens) = redeem(server, client, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

/// Issue 9 item 16: the scopes a user may be granted came from the
/// built-in roles, fixed at start, so a custom role got none and a reload
/// changed nothing. They now come from the policy in force.
#[tokio::test]
async fn a_custom_roles_users_get_its_scopes_also_after_a_reload() {
    let policy = DEFAULT
        .replace("[roles.reader]\n", "[roles.reader]\n\n[roles.auditor]\n")
        .replace(
            "[tools.whoami]\nscope = \"tools:read\"\nroles = [\"reader\"]",
            "[tools.whoami]\nscope = \"tools:read\"\nroles = [\"reader\", \"auditor\"]",
        );
    assert_ne!(policy, DEFAULT);
    let server = start_with_policy(&policy);
    let password = add_user(&server, "carol", "auditor");
    let client = public_client(&server, "app");
    let tokens = authorize_with_scope(&server, &client, ("carol", &password), "tools:read").await;
    assert_eq!(tokens["scope"], "tools:read", "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let body = server.call_tool(access, "whoami", json!({})).await;
    assert!(error_of(&body).is_null(), "{body}");

    // The reloaded policy gives auditors web_fetch under a new scope.
    let reloaded = policy.replace(
        "[tools.web_fetch]\nscope = \"tools:web\"\nroles = [\"analyst\"]",
        "[tools.web_fetch]\nscope = \"tools:fetch\"\nroles = [\"analyst\", \"auditor\"]",
    );
    assert_ne!(reloaded, policy);
    let reloads = std::fs::read_to_string(server.stderr_path())
        .unwrap()
        .matches("policy reloaded")
        .count();
    std::fs::write(server.data_dir().join("policy.toml"), &reloaded).unwrap();
    wait_for_reload(&server, reloads).await;
    let metadata = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        metadata["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tools:fetch")),
        "{metadata}"
    );
    let tokens = authorize_with_scope(
        &server,
        &client,
        ("carol", &password),
        "tools:read tools:fetch",
    )
    .await;
    assert_eq!(tokens["scope"], "tools:read tools:fetch", "{tokens}");
}
