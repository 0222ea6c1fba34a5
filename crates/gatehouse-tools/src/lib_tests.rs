use std::collections::BTreeMap;
use std::sync::Arc;

use gatehouse_authz::{Access, Decision, Policy, ToolRule};
use serde_json::{Value, json};

use super::*;
use crate::test_support::{code, harness, ok, permit, principal};

fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}

#[test]
fn builtin_tools_is_send_sync_and_clone() {
    assert_send_sync::<BuiltinTools>();
}

#[test]
fn definitions_are_exposed() {
    let names: Vec<&str> = BuiltinTools::definitions().iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        [
            "whoami",
            "read_file",
            "write_file",
            "search_database",
            "web_fetch",
            "send_email",
            "execute_code",
            "access_secrets",
            "modify_mcp_config"
        ]
    );
    assert_eq!(
        BuiltinTools::definition("read_file").map(|d| d.name),
        Some("read_file")
    );
    assert!(BuiltinTools::definition("READ_FILE").is_none());
}

#[test]
fn default_config() {
    let config = ToolsConfig::default();
    assert_eq!(config.sandbox_dir, PathBuf::from("sandbox"));
    assert!(config.web_fetch_allowlist.is_empty());
    assert!(!config.web_fetch_allow_private);
    assert_eq!(config.max_file_bytes, 1024 * 1024);
}

#[tokio::test]
async fn whoami_reports_identity_without_secrets() {
    let h = harness().await;
    let output = ok(h.call("acme", "whoami", json!({})).await);
    let expected = json!({
        "tenant": "acme",
        "human": "alice@example.com",
        "agent": "test-agent",
        "credential": {"kind": "api_key", "id": "key-1"},
        "roles": ["admin"],
        "scopes": null,
    });
    assert_eq!(output.structured, Some(expected.clone()));
    let parsed: Value = serde_json::from_str(&output.text).unwrap_or_default();
    assert_eq!(parsed, expected);
    assert_eq!(
        code(&h.call("acme", "whoami", json!({"verbose": true})).await),
        "invalid_arguments"
    );
}

#[tokio::test]
async fn the_call_future_is_send() {
    fn assert_send<F: Send>(f: F) -> F {
        f
    }
    let h = harness().await;
    let p = permit(&principal("acme"), "whoami");
    let output = assert_send(h.tools.call(&p, Map::new())).await;
    assert!(output.is_ok());
}

#[tokio::test]
async fn tools_outside_the_builtin_set_are_not_found() {
    let h = harness().await;
    let rule = ToolRule {
        scope: "tools:admin".into(),
        access: BTreeMap::from([("admin".to_string(), Access::Allow)]),
    };
    let policy = Policy::new(BTreeMap::from([("rm_rf".to_string(), rule)]));
    let Decision::Permit(p) = policy.authorize(&principal("acme"), "rm_rf") else {
        panic!("expected a permit");
    };
    let result = h.tools.call(&p, Map::new()).await;
    assert_eq!(code(&result), "not_found");
}

#[tokio::test]
async fn every_tool_refuses_an_invalid_tenant() {
    let h = harness().await;
    for def in BuiltinTools::definitions() {
        let result = h.call("../x", def.name, json!({})).await;
        assert_eq!(code(&result), "refused", "{}", def.name);
    }
}

#[tokio::test]
async fn storage_outages_fail_closed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = ToolsConfig {
        sandbox_dir: dir.path().to_path_buf(),
        ..ToolsConfig::default()
    };
    let tools = BuiltinTools::open(config, Arc::new(test_support::DownStore))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        ("access_secrets", json!({"name": "api_token"})),
        ("access_secrets", json!({})),
        ("modify_mcp_config", json!({"key": "banner", "value": "x"})),
        ("modify_mcp_config", json!({})),
        ("read_file", json!({"path": "a.txt"})),
    ];
    for (tool, args) in cases {
        let Value::Object(map) = args else { continue };
        let result = tools.call(&permit(&principal("acme"), tool), map).await;
        assert_eq!(code(&result), "unavailable", "{tool}");
        assert!(
            result
                .err()
                .is_some_and(|e| !e.to_string().contains("/var/lib"))
        );
    }
}
