use std::sync::Arc;

use gatehouse_audit::{AuditLog, Redactor};
use gatehouse_authz::Policy;
use gatehouse_core::{CredentialKind, CredentialRef, FixedClock, Principal, Timestamp};
use gatehouse_store::testing::DownStore;
use gatehouse_store::{AuditQuery, SqliteStore, Store};
use gatehouse_tools::{BuiltinTools, ToolsConfig};
use serde_json::json;

use super::*;

fn caller(role: &str) -> Caller {
    Caller {
        principal: Arc::new(Principal {
            tenant: "default".into(),
            human: Some("alice".into()),
            agent: "agent-1".into(),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: "agent-1".into(),
            },
            roles: vec![role.into()],
            scopes: None,
            expires_at: None,
            task: None,
        }),
        session: Some("s-1".into()),
        source: Some("127.0.0.1".into()),
    }
}

async fn gateway(audit_store: Arc<dyn Store>, dir: &std::path::Path) -> Gateway {
    let tools_store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let tools = BuiltinTools::open(
        ToolsConfig {
            sandbox_dir: dir.join("sandbox"),
            ..ToolsConfig::default()
        },
        tools_store,
    )
    .await
    .unwrap();
    let (audit, _writer) = AuditLog::start(audit_store, None, false).unwrap();
    Gateway::new(
        Policy::default_matrix(),
        tools,
        audit,
        Redactor::new(&[]).unwrap(),
        Arc::new(FixedClock::new(Timestamp(1_000))),
    )
}

#[tokio::test]
async fn no_audit_no_call() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(Arc::new(DownStore), dir.path()).await;
    let args = json!({"path": "never.txt", "content": "x"});
    let result = gateway
        .call_tool(&caller("admin"), "write_file", args.as_object().cloned())
        .await;
    assert!(matches!(result, Err(CallError::Audit(_))));
    // The tool never ran: its decision could not be recorded first.
    let written = dir.path().join("sandbox/tenants/default/files/never.txt");
    assert!(!written.exists());
}

#[tokio::test]
async fn decisions_and_outcomes_are_recorded_with_redacted_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let gateway = gateway(Arc::clone(&store), dir.path()).await;
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
    let args = json!({"query": token});
    let result = gateway
        .call_tool(
            &caller("reader"),
            "search_database",
            args.as_object().cloned(),
        )
        .await
        .unwrap();
    assert!(result.is_ok());
    let denied = gateway
        .call_tool(&caller("reader"), "execute_code", None)
        .await;
    assert!(matches!(denied, Err(CallError::Denied(_))));
    let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
    let summary: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.event.kind.as_str(), r.event.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("tool_decision", "success"),
            ("tool_outcome", "success"),
            ("tool_decision", "denied")
        ]
    );
    let first = &rows[0].event;
    assert_eq!(first.arguments.as_ref().unwrap()["query"], "[REDACTED]");
    assert_eq!(first.session.as_deref(), Some("s-1"));
    assert_eq!(rows[2].event.reason.as_deref(), Some("role_not_allowed"));
    assert!(rows[1].event.result_bytes.is_some());
}

#[tokio::test]
async fn listing_follows_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let gateway = gateway(store, dir.path()).await;
    let names: Vec<&str> = gateway
        .list_tools(&caller("analyst").principal)
        .iter()
        .map(|t| t.definition.name)
        .collect();
    assert_eq!(
        names,
        ["read_file", "search_database", "web_fetch", "whoami"]
    );
}
