//! Tenants: declaring tenants in the policy turns tenancy on; a credential
//! of one tenant never sees or calls another tenant's tools, never sees or
//! decides its approvals, and reads only its own secrets.

use serde_json::{Value, json};

use super::browser::Browser;
use super::harness::Server;

const DEFAULT: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");

fn tenants_policy() -> String {
    format!(
        "{DEFAULT}\n[tenants.acme]\ntools = [\"whoami\", \"read_file\", \"send_email\", \"access_secrets\"]\n\n[tenants.globex]\n"
    )
}

fn start_with_tenants() -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), tenants_policy()).unwrap();
    Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"))
}

fn reason(body: &Value) -> &str {
    body["error"]["data"]["reason"].as_str().unwrap_or_default()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[tokio::test]
async fn a_principal_of_an_undeclared_tenant_is_refused() {
    // A key made before tenancy was switched on (tenant "default")...
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, DEFAULT).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (_, stray) = server.create_key("stray", "admin", &[]);
    assert_eq!(server.tool_names(&stray).await.len(), 9);
    // ...is refused at gate 1 once the reloaded policy declares tenants.
    std::fs::write(&policy_path, tenants_policy()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let body = loop {
        let (status, body) = server.rpc(Some(&stray), "tools/list", json!({})).await;
        if status == 403 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "policy not reloaded: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(reason(&body), "unknown_tenant");
    // The reload itself is on record, with the digest of the file it read
    // (a policy widened for one call and put back leaves a trace).
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(tenants_policy().as_bytes()))
    };
    let reloads = server.audit(&["--kind", "operator", "--tool", "policy/reload"]);
    assert!(
        reloads.iter().any(|r| r["reason"] == "policy_reloaded"
            && r["agent"] == "gatehouse-server"
            && r["error"].as_str().is_some_and(|e| e.contains(&digest))),
        "{reloads:?}"
    );
    // The admin API refuses it too (it is an admin of its tenant).
    for path in ["/admin/upstreams", "/admin/policy/check"] {
        let request = if path.ends_with("check") {
            server
                .http
                .post(format!("{}{path}", server.base))
                .json(&json!({"roles": ["reader"], "tool": "whoami"}))
        } else {
            server.http.get(format!("{}{path}", server.base))
        };
        let response = request.bearer_auth(&stray).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["reason"], "unknown_tenant", "{path}: {body}");
    }
    let refused = server.audit(&["--kind", "tool_decision", "--tool", "/admin/upstreams"]);
    assert!(
        refused
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "unknown_tenant"),
        "{refused:?}"
    );
    let anomalies = server.audit(&["--kind", "anomaly"]);
    assert!(anomalies.iter().any(|r| r["reason"] == "unknown_tenant"));
    // And the CLI refuses to make credentials for an undeclared tenant.
    let out = server.cli(&[
        "keys", "create", "--name", "x", "--role", "admin", "--tenant", "initech",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not declared"));
}

#[tokio::test]
async fn each_tenant_sees_and_calls_only_its_tools() {
    let server = start_with_tenants();
    let (_, acme) = server.create_key("acme-agent", "reader", &["--tenant", "acme"]);
    let (_, globex) = server.create_key("globex-agent", "reader", &["--tenant", "globex"]);
    assert_eq!(
        sorted(server.tool_names(&acme).await),
        ["read_file", "whoami"]
    );
    assert_eq!(
        sorted(server.tool_names(&globex).await),
        ["read_file", "search_database", "whoami"]
    );
    let refused = server
        .call_tool(&acme, "search_database", json!({"query": "x"}))
        .await;
    assert_eq!(reason(&refused), "tool_not_in_tenant", "{refused}");
    assert!(!refused.to_string().contains("globex"));
    let allowed = server
        .call_tool(&globex, "search_database", json!({"query": "x"}))
        .await;
    assert!(allowed["result"].is_object(), "{allowed}");
}

#[tokio::test]
async fn approvals_and_secrets_stay_inside_their_tenant() {
    let server = start_with_tenants();
    server.cli_json(&[
        "users", "add", "alice", "--role", "executor", "--tenant", "acme",
    ]);
    // alice of acme owns the agent; root is an admin, but of globex.
    let alice_password = {
        let out = server.cli_json(&[
            "users", "add", "carol", "--role", "admin", "--tenant", "acme",
        ]);
        out["password"].as_str().unwrap().to_string()
    };
    let root_password = {
        let out = server.cli_json(&[
            "users", "add", "root", "--role", "admin", "--tenant", "globex",
        ]);
        out["password"].as_str().unwrap().to_string()
    };
    let (_, agent) = server.create_key(
        "mailer",
        "executor",
        &["--tenant", "acme", "--owner", "alice"],
    );
    let refused = server
        .call_tool(
            &agent,
            "send_email",
            json!({"to": "bob@example.com", "subject": "s", "body": "b"}),
        )
        .await;
    assert_eq!(reason(&refused), "approval_required", "{refused}");
    let url = refused["error"]["data"]["approval_url"]
        .as_str()
        .unwrap()
        .to_string();
    // globex's admin does not even learn that the approval exists.
    let mut browser = Browser::new(&server);
    let login = browser.visit(&url).await;
    let page = browser.login_then(&login, "root", &root_password).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(!page.body.contains("bob@example.com"));
    // acme's admin may decide it.
    let mut browser = Browser::new(&server);
    let login = browser.visit(&url).await;
    let page = browser.login_then(&login, "carol", &alice_password).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("bob@example.com"));

    // Secrets: access_secrets resolves from the caller's tenant at call
    // time, so acme's admin agent reads acme's value, never globex's.
    let set = |tenant: &str, value: &str| {
        let out = server.cli_with_stdin(
            &["secrets", "set", "api-token", "--tenant", tenant],
            Some(value),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set("acme", "acme-value-1");
    set("globex", "globex-value-2");
    let (_, vault) = server.create_key("vault", "admin", &["--tenant", "acme", "--owner", "carol"]);
    let args = json!({"name": "api-token"});
    let refused = server
        .call_tool(&vault, "access_secrets", args.clone())
        .await;
    assert_eq!(reason(&refused), "approval_required", "{refused}");
    let approval = refused["error"]["data"]["approval_id"].as_str().unwrap();
    let approved = server.cli_json(&["approvals", "approve", approval]);
    let token = approved["operation_token"].as_str().unwrap();
    let (status, body) = server
        .rpc(
            Some(&vault),
            "tools/call",
            json!({"name": "access_secrets", "arguments": args,
                   "_meta": {"io.gatehouse/operation_token": token}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(text.contains("acme-value-1"), "{text}");
    assert!(!text.contains("globex-value-2"), "{text}");
}

/// The policy a server starts with is on record with its digest (a policy
/// widened, the server restarted, a call made and the file put back left
/// no trace); a file that cannot be applied is on record too (an emergency
/// narrowing with a typo left the wider policy in force unseen); a file
/// read again unchanged records nothing.
#[tokio::test]
async fn the_policy_in_force_and_a_refused_reload_are_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, DEFAULT).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(DEFAULT.as_bytes()))
    };
    let loads = server.audit(&["--kind", "operator", "--tool", "policy/load"]);
    assert!(
        loads.iter().any(|r| r["reason"] == "policy_loaded"
            && r["error"].as_str().is_some_and(|e| e.contains(&digest))),
        "{loads:?}"
    );
    std::fs::write(&policy_path, format!("{DEFAULT}\n[tools.whoami\n")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let refused = loop {
        let records = server.audit(&["--kind", "operator", "--tool", "policy/reload"]);
        if let Some(r) = records
            .iter()
            .find(|r| r["reason"] == "policy_reload_refused")
        {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{records:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(refused["outcome"], "failure", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("previous policy stays")),
        "{refused}"
    );
    // Put back as it was: read again, unchanged, nothing more recorded.
    std::fs::write(&policy_path, DEFAULT).unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let reloads = server.audit(&["--kind", "operator", "--tool", "policy/reload"]);
    assert!(
        reloads.iter().all(|r| r["reason"] != "policy_reloaded"),
        "{reloads:?}"
    );
}
