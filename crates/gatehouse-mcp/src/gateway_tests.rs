use std::sync::Arc;

use gatehouse_audit::{AuditLog, Redactor};
use gatehouse_authn::Pepper;
use gatehouse_authz::{ApprovalSettings, Approvals, Decider, Policy, SharedPolicy};
use gatehouse_core::{CredentialKind, CredentialRef, FixedClock, Principal, Timestamp};
use gatehouse_store::testing::DownStore;
use gatehouse_store::{AuditQuery, SqliteStore, Store};
use gatehouse_tools::{BuiltinTools, ToolsConfig};
use serde_json::json;

use super::*;
use gatehouse_upstream::{CallContext, UpstreamInput};

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
            issuer: None,
        }),
        session: Some("s-1".into()),
        source: Some("127.0.0.1".into()),
        request_id: Some(Arc::from("req-1")),
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
        Arc::new(SharedPolicy::new(Policy::default_matrix())),
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
        .call_tool(
            &caller("admin"),
            "write_file",
            args.as_object().cloned(),
            None,
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await;
    assert!(matches!(result, Err(CallError::Audit(_))));
    // The tool never ran: its decision could not be recorded first.
    let written = dir.path().join("sandbox/tenants/default/files/never.txt");
    assert!(!written.exists());
}

/// A tool that ran but whose outcome could not be recorded: the caller is
/// told that it ran (so it does not retry a write as if nothing happened),
/// not that it was refused.
#[tokio::test]
async fn an_outcome_that_cannot_be_recorded_is_not_reported_as_a_call_not_run() {
    use gatehouse_store::testing::AuditTakesBatches;
    let dir = tempfile::tempdir().unwrap();
    // The decision's batch is written, the outcome's is not.
    let gateway = gateway(Arc::new(AuditTakesBatches::new(1)), dir.path()).await;
    let args = json!({"path": "ran.txt", "content": "x"});
    let result = gateway
        .call_tool(
            &caller("admin"),
            "write_file",
            args.as_object().cloned(),
            None,
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await;
    let Err(error) = result else {
        panic!("answered without its outcome record: {result:?}");
    };
    assert!(
        matches!(error, CallError::OutcomeUnrecorded(_)),
        "{error:?}"
    );
    let written = dir.path().join("sandbox/tenants/default/files/ran.txt");
    assert!(written.exists(), "the tool did run");
    let answer = crate::sdk::call_error(error, false);
    assert!(answer.message.contains("the call ran"), "{answer:?}");
    assert!(!answer.message.contains("not run"), "{answer:?}");
}

/// A tool whose only effect is its answer writes its decision with its
/// outcome: when they cannot be written, there is no answer either.
#[tokio::test]
async fn no_audit_no_answer_for_a_tool_that_only_answers() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway(Arc::new(DownStore), dir.path()).await;
    for (tool, args) in [
        ("whoami", json!({})),
        ("search_database", json!({"query": "widget"})),
        ("execute_code", json!({"expression": "1 + 1"})),
    ] {
        let result = gateway
            .call_tool(
                &caller("admin"),
                tool,
                args.as_object().cloned(),
                None,
                UpstreamInput::default(),
                CallContext::default(),
            )
            .await;
        assert!(
            matches!(result, Err(CallError::Audit(_))),
            "{tool}: {result:?}"
        );
    }
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
            None,
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await
        .unwrap();
    assert!(matches!(result, CallResult::Builtin(Ok(_))), "{result:?}");
    let denied = gateway
        .call_tool(
            &caller("reader"),
            "execute_code",
            None,
            None,
            UpstreamInput::default(),
            CallContext::default(),
        )
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
    // Each record names the request (the caller's), and each is counted.
    assert!(
        rows.iter()
            .all(|r| r.event.request_id.as_deref() == Some("req-1"))
    );
    let metrics = gateway.metrics();
    assert_eq!(metrics.decisions("allow", "permitted"), 1);
    assert_eq!(metrics.decisions("deny", "role_not_allowed"), 1);
    let text = metrics.render();
    for line in [
        "gatehouse_tool_outcomes_total{outcome=\"success\",reason=\"none\"} 1",
        "gatehouse_stage_duration_seconds_count{stage=\"authorize\"} 2",
        "gatehouse_stage_duration_seconds_count{stage=\"dispatch\"} 1",
        // Two waits: search_database only answers, so its decision and
        // outcome are written together; then the denial.
        "gatehouse_stage_duration_seconds_count{stage=\"audit\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
    }
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

#[tokio::test]
async fn an_approval_tool_runs_once_per_human_approval() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let approvals = Arc::new(Approvals::new(
        Arc::clone(&store),
        Pepper::new(vec![3; 32]).unwrap(),
        ApprovalSettings {
            page_base: Some("http://127.0.0.1:1/approvals/".into()),
            ..ApprovalSettings::default()
        },
    ));
    let gateway = gateway(Arc::clone(&store), dir.path())
        .await
        .with_approvals(Arc::clone(&approvals));
    let executor = caller("executor");
    let args = json!({"to": "bob@example.com", "subject": "hi", "body": "hello"});
    let first = gateway
        .call_tool(
            &executor,
            "send_email",
            args.as_object().cloned(),
            None,
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await;
    let Err(CallError::ApprovalRequired(pending)) = first else {
        panic!("expected approval_required, got {first:?}");
    };
    assert_eq!(pending.deny.reason.code(), "approval_required");
    assert_eq!(
        pending.url.as_deref(),
        Some(format!("http://127.0.0.1:1/approvals/{}", pending.approval_id).as_str())
    );
    store
        .insert_user(&gatehouse_store::UserRecord {
            username: "alice".into(),
            tenant: "default".into(),
            roles: vec!["executor".into()],
            password_hash: "$argon2id$stub".into(),
            created_at: Timestamp(0),
            disabled_at: None,
        })
        .await
        .unwrap();
    let alice = Decider::User {
        username: "alice".into(),
        tenant: "default".into(),
        admin: false,
        account: gatehouse_store::AccountSeen {
            password_hash: "$argon2id$stub".into(),
            roles: vec!["executor".into()],
        },
    };
    let token = approvals
        .decide(&pending.approval_id, true, &alice, Timestamp(1_000))
        .await
        .unwrap()
        .token
        .unwrap();
    let meta = json!({ gatehouse_authz::OPERATION_TOKEN_META: token });
    let meta = meta.as_object().unwrap();
    // Other arguments with the same token: refused, and the token survives.
    let other = json!({"to": "eve@example.net", "subject": "hi", "body": "hello"});
    let wrong = gateway
        .call_tool(
            &executor,
            "send_email",
            other.as_object().cloned(),
            Some(meta),
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await;
    assert!(
        matches!(&wrong, Err(CallError::Denied(d)) if d.reason.code() == "operation_token_mismatch"),
        "{wrong:?}"
    );
    let ran = gateway
        .call_tool(
            &executor,
            "send_email",
            args.as_object().cloned(),
            Some(meta),
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await
        .unwrap();
    assert!(matches!(ran, CallResult::Builtin(Ok(_))), "{ran:?}");
    let again = gateway
        .call_tool(
            &executor,
            "send_email",
            args.as_object().cloned(),
            Some(meta),
            UpstreamInput::default(),
            CallContext::default(),
        )
        .await;
    assert!(
        matches!(&again, Err(CallError::Denied(d)) if d.reason.code() == "operation_token_used"),
        "{again:?}"
    );
    let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
    let reasons: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.event.reason.as_deref())
        .collect();
    assert!(reasons.contains(&"approval_required"), "{reasons:?}");
    assert!(reasons.contains(&"operation_token_mismatch"), "{reasons:?}");
    assert!(reasons.contains(&"operation_token_used"), "{reasons:?}");
}

#[test]
fn an_upstream_resource_is_subscribed_for_its_first_watcher_and_left_by_its_last() {
    let watches = ResourceWatches::default();
    let key = |tenant: Option<&str>| WatchKey {
        upstream: "py".into(),
        tenant: tenant.map(str::to_string),
        uri: "memo://team/note".into(),
    };
    assert!(watches.acquire(&key(None)));
    assert!(!watches.acquire(&key(None)));
    // Another tenant's connection subscribes on its own.
    assert!(watches.acquire(&key(Some("acme"))));
    assert!(!watches.release(&key(None)));
    assert!(watches.release(&key(None)));
    // Released once too often: nothing left to end.
    assert!(!watches.release(&key(None)));
    assert!(watches.release(&key(Some("acme"))));
    assert!(watches.lock().is_empty());
}

/// Subscribe and unsubscribe of one resource at its upstream never run at
/// once (the second watcher counts on a settled subscription; an
/// unsubscribe never overtakes a later subscribe); other resources do not
/// wait, and nothing is left behind.
#[test]
fn one_resource_settles_one_subscription_change_at_a_time() {
    use futures::FutureExt;
    let watches = ResourceWatches::default();
    let key = |uri: &str| WatchKey {
        upstream: "py".into(),
        tenant: None,
        uri: uri.into(),
    };
    let first = watches
        .settling(&key("memo://a"))
        .now_or_never()
        .expect("nothing settles memo://a yet");
    assert!(watches.settling(&key("memo://a")).now_or_never().is_none());
    assert!(watches.settling(&key("memo://b")).now_or_never().is_some());
    drop(first);
    assert!(watches.settling(&key("memo://a")).now_or_never().is_some());
    assert!(watches.settling_locks().is_empty());
}

#[test]
fn a_results_size_is_its_texts_and_its_serialized_structure() {
    let structured = json!({"tenant": "t\u{e9}", "quote": "\"", "n": [1, 2.5, null]});
    let output = ToolOutput {
        text: "caf\u{e9}".into(),
        structured: Some(structured.clone()),
    };
    let expected = "caf\u{e9}".len() + structured.to_string().len();
    assert_eq!(result_size(&output), u64::try_from(expected).unwrap());
    assert_eq!(json_len(&structured), structured.to_string().len());
}

#[test]
fn an_upstreams_request_state_may_not_pose_as_a_held_call() {
    use gatehouse_upstream::model::CallToolResponse;
    use rmcp::model::InputRequiredResult;
    let asked = |state: &str| {
        CallToolResponse::InputRequired(InputRequiredResult::new(None, Some(state.to_string())))
    };
    let posing = format!("{}abc", crate::held_calls::HELD_STATE_PREFIX);
    assert!(matches!(
        not_posing_as_a_held_call("py", asked(&posing)),
        Err(UpstreamError::Protocol { .. })
    ));
    assert!(not_posing_as_a_held_call("py", asked("opaque-state")).is_ok());
}

/// A person's agents share one caller's share of an upstream's slots; the
/// same name at another provider, in another tenant, or as an agent
/// rather than a person does not, nor do names that only concatenate
/// alike.
#[test]
fn callers_share_slots_per_person_else_per_agent() {
    let with = |tenant: &str, human: Option<&str>, agent: &str, issuer: Option<&str>| {
        let mut c = caller("reader");
        let p = Arc::make_mut(&mut c.principal);
        p.tenant = tenant.into();
        p.human = human.map(Into::into);
        p.agent = agent.into();
        p.issuer = issuer.map(Into::into);
        caller_share(&c)
    };
    let alice = with("acme", Some("alice"), "agent-1", None);
    assert_eq!(alice, with("acme", Some("alice"), "agent-2", None));
    assert_ne!(
        alice,
        with("acme", Some("alice"), "agent-1", Some("https://idp"))
    );
    assert_ne!(alice, with("globex", Some("alice"), "agent-1", None));
    assert_ne!(alice, with("acme", None, "alice", None));
    assert_ne!(
        with("ab", Some("c"), "x", None),
        with("a", Some("bc"), "x", None)
    );
    // With authentication off every client is the one anonymous caller:
    // no share of its own.
    let mut anonymous = caller("reader");
    Arc::make_mut(&mut anonymous.principal).credential.kind = CredentialKind::Anonymous;
    assert_eq!(caller_share(&anonymous), None);
}
