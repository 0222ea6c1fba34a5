//! The HTTP application in-process, for what is not visible from outside:
//! sessions the transport refused to bind must not live on in the SDK.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use gatehouse_audit::{AuditLog, Redactor};
use gatehouse_authn::{AuthMode, Authenticator, Pepper};
use gatehouse_authz::{Policy, SharedPolicy};
use gatehouse_core::{CredentialKind, CredentialRef, FixedClock, Principal, Timestamp};
use gatehouse_store::{SqliteStore, Store};
use gatehouse_tools::{BuiltinTools, ToolsConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

fn anonymous() -> Principal {
    Principal {
        tenant: "default".into(),
        human: None,
        agent: "anonymous".into(),
        credential: CredentialRef {
            kind: CredentialKind::Anonymous,
            id: "anonymous".into(),
        },
        roles: vec!["reader".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    }
}

/// The application with authentication off (one principal for every
/// request), and the SDK's session handle.
async fn app(
    dir: &std::path::Path,
    max_sessions: usize,
    max_sessions_per_principal: usize,
) -> (Router, SdkSessions) {
    app_with(dir, max_sessions, max_sessions_per_principal, None).await
}

/// `app`, with gate 1 reading `authn_store` instead of the application's
/// own store when one is given (e.g. a store that is down).
async fn app_with(
    dir: &std::path::Path,
    max_sessions: usize,
    max_sessions_per_principal: usize,
    authn_store: Option<Arc<dyn Store>>,
) -> (Router, SdkSessions) {
    app_full(
        dir,
        max_sessions,
        max_sessions_per_principal,
        authn_store,
        Vec::new(),
    )
    .await
}

/// `app_with`, and readiness probes.
async fn app_full(
    dir: &std::path::Path,
    max_sessions: usize,
    max_sessions_per_principal: usize,
    authn_store: Option<Arc<dyn Store>>,
    readiness: Vec<Arc<dyn crate::http::ReadinessProbe>>,
) -> (Router, SdkSessions) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let tools = BuiltinTools::open(
        ToolsConfig {
            sandbox_dir: dir.join("sandbox"),
            ..ToolsConfig::default()
        },
        Arc::clone(&store),
    )
    .await
    .unwrap();
    let (audit, _writer) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
    let gateway = Arc::new(Gateway::new(
        Arc::new(SharedPolicy::new(Policy::default_matrix())),
        tools,
        audit,
        Redactor::new(&[]).unwrap(),
        Arc::new(FixedClock::new(Timestamp(1_000))),
    ));
    let authenticator = Arc::new(Authenticator::new(
        authn_store.unwrap_or(store),
        Pepper::new(vec![7; 32]).unwrap(),
        AuthMode::Disabled {
            anonymous: Box::new(anonymous()),
        },
    ));
    let config = HttpConfig {
        public_url: Url::parse("http://127.0.0.1:8787").unwrap(),
        allowed_hosts: Vec::new(),
        allowed_origins: Vec::new(),
        max_body_bytes: 64 * 1024,
        body_timeout: Duration::from_secs(5),
        session_idle_timeout: Duration::from_secs(600),
        max_sessions,
        max_sessions_per_principal,
        initialize_per_minute: 100,
        authorization_server: None,
        readiness,
    };
    build(
        gateway,
        authenticator,
        &config,
        CancellationToken::new(),
        None,
    )
}

/// A POST of `body` to /mcp with `headers` beside the ones every request
/// carries.
async fn post_mcp(
    router: &Router,
    headers: &[(&str, &str)],
    body: &Value,
) -> axum::response::Response {
    let mut request = Request::post("/mcp")
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    router
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap()
}

async fn initialize(router: &Router) -> (u16, Option<String>, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "unit", "version": "1"}
    }});
    let response = post_mcp(router, &[("mcp-protocol-version", "2025-11-25")], &body).await;
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        session,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_full_table_refuses_before_the_sdk_makes_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let (router, sdk) = app(dir.path(), 1, 16).await;
    let (status, session, _) = initialize(&router).await;
    assert_eq!((status, session.is_some()), (200, true));
    assert_eq!(sdk.count().await, 1);
    let (status, session, body) = initialize(&router).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(session, None);
    assert_eq!(sdk.count().await, 1);
}

/// The binding after the SDK made the session fails when concurrent
/// `initialize` requests all passed the check before it: each refused
/// session must be ended in the SDK (the failure this test was written
/// for left all six alive).
#[tokio::test]
async fn concurrent_initializes_past_the_cap_leave_no_sdk_session_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (router, sdk) = app(dir.path(), 100, 2).await;
    // All pass the check before the SDK at once; only two can be bound.
    let answers = futures::future::join_all((0..6).map(|_| initialize(&router))).await;
    let bound = answers.iter().filter(|(status, ..)| *status == 200).count();
    assert_eq!(bound, 2, "{answers:?}");
    for (status, session, body) in &answers {
        if *status != 200 {
            assert_eq!(*status, 429, "{body}");
            assert_eq!(*session, None);
            assert_eq!(
                body["error"]["data"]["reason"], "too_many_sessions",
                "{body}"
            );
        }
    }
    assert_eq!(sdk.count().await, 2);
}

/// A 2026-07-28 request that names a session is served statelessly by the
/// SDK, and an unknown method is answered 404 there. That 404 once
/// unbound a session the SDK still held: alive, no longer counted
/// against the caps, and no longer checked when credentials change.
#[tokio::test]
async fn a_stateless_404_naming_a_live_session_does_not_detach_it() {
    let dir = tempfile::tempdir().unwrap();
    let (router, sdk) = app(dir.path(), 100, 1).await;
    let (status, session, _) = initialize(&router).await;
    assert_eq!(status, 200);
    let session = session.unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "x/none", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    let response = post_mcp(
        &router,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "x/none"),
            ("mcp-session-id", &session),
        ],
        &body,
    )
    .await;
    assert_eq!(response.status().as_u16(), 404);
    // Still bound, so still counted: a second session is refused.
    let (status, _, body) = initialize(&router).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(sdk.count().await, 1);
}

/// Readiness fails when the store does not answer (gate 1 would refuse
/// every request), and says which check failed.
#[tokio::test]
async fn readiness_is_refused_while_the_store_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = app(dir.path(), 8, 8).await;
    let get = |router: Router| async move {
        let response = router
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let (status, body) = get(router).await;
    assert_eq!((status, &body["ready"]), (200, &json!(true)), "{body}");

    let down: Arc<dyn Store> = Arc::new(gatehouse_store::testing::DownStore);
    let (router, _) = app_with(dir.path(), 8, 8, Some(down)).await;
    let (status, body) = get(router).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (&body["ready"], &body["store"], &body["audit"]),
        (&json!(false), &json!("unreachable"), &json!("ok")),
        "{body}"
    );
}

/// A probe that answers what it was told.
#[derive(Debug)]
struct Fixed(&'static str, bool);

impl crate::http::ReadinessProbe for Fixed {
    fn name(&self) -> &'static str {
        self.0
    }
    fn check(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move { self.1 })
    }
}

/// An added probe (the authorization server's signing key) is reported by
/// name and makes the server unready when it fails.
#[tokio::test]
async fn readiness_reports_added_probes_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let get = |router: Router| async move {
        let response = router
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    };
    let (router, _) = app_full(
        dir.path(),
        8,
        8,
        None,
        vec![Arc::new(Fixed("signing_key", true))],
    )
    .await;
    let (status, body) = get(router).await;
    assert_eq!(
        (status, &body["signing_key"]),
        (200, &json!("ok")),
        "{body}"
    );
    let (router, _) = app_full(
        dir.path(),
        8,
        8,
        None,
        vec![Arc::new(Fixed("signing_key", false))],
    )
    .await;
    let (status, body) = get(router).await;
    assert_eq!(
        (status, &body["ready"], &body["signing_key"]),
        (503, &json!(false), &json!("failing")),
        "{body}"
    );
}
