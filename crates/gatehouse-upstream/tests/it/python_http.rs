//! The Python SDK test server over Streamable HTTP, in both eras.

use std::time::{Duration, Instant};

use gatehouse_upstream::model::CallToolResponse;
use gatehouse_upstream::{
    CallContext, ChangeKind, HealthState, SecretRef, UpstreamAuth, UpstreamConfig, UpstreamError,
    UpstreamInput,
};
use serde_json::json;

use crate::common::{PyHttp, python, start, text, wait_change};

fn http(name: &str, url: &str) -> UpstreamConfig {
    let mut config = UpstreamConfig::http(name, url);
    config.call_timeout = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(20);
    config
}

fn args(value: serde_json::Value) -> Option<gatehouse_upstream::JsonObject> {
    value.as_object().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2026_server_is_called_statelessly() {
    let Some(python) = python("HTTP upstream test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let set = start(vec![http("web", &server.url)]);
    let web = set.get("web").unwrap();
    let echoed = web
        .call_tool(None, "echo", args(json!({"text": "over http"})), None)
        .await
        .unwrap();
    assert_eq!(text(&echoed), "over http");
    let health = web.health();
    assert_eq!(health.state, HealthState::Ready);
    assert_eq!(health.protocol_version.as_deref(), Some("2026-07-28"));
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2025_server_gets_initialize_and_a_session() {
    let Some(python) = python("HTTP legacy upstream test") else {
        return;
    };
    let server = PyHttp::start(&python, &["--legacy"]);
    let set = start(vec![http("old", &server.url)]);
    let old = set.get("old").unwrap();
    let echoed = old
        .call_tool(None, "echo", args(json!({"text": "session"})), None)
        .await
        .unwrap();
    assert_eq!(text(&echoed), "session");
    assert_eq!(old.health().protocol_version.as_deref(), Some("2025-11-25"));
    set.shutdown().await;
}

async fn list_changed_arrives(extra: &[&str]) {
    let Some(python) = python("HTTP list_changed test") else {
        return;
    };
    let server = PyHttp::start(&python, extra);
    let set = start(vec![http("web", &server.url)]);
    let web = set.get("web").unwrap();
    let mut changes = set.subscribe();
    web.list_tools(None, None).await.unwrap();
    web.call_tool(None, "add_tool", None, None).await.unwrap();
    wait_change(&mut changes, |e| e.kind == ChangeKind::Tools).await;
    assert!(
        web.list_tools(None, None)
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "added")
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_arrives_on_the_2026_listen_stream() {
    list_changed_arrives(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_arrives_on_the_2025_session_stream() {
    list_changed_arrives(&["--legacy"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_http_answer_is_a_typed_error() {
    let Some(python) = python("HTTP message size test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("web", &server.url);
    config.max_message_bytes = 64 * 1024;
    let set = start(vec![config]);
    let web = set.get("web").unwrap();
    let started = Instant::now();
    let error = web
        .call_tool(None, "big", args(json!({"size": 1_000_000})), None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "upstream_message_too_large", "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let small = web
        .call_tool(None, "big", args(json!({"size": 100})), None)
        .await
        .unwrap();
    assert_eq!(text(&small).len(), 100);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_answers_times_out_over_http() {
    let Some(python) = python("HTTP timeout test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("web", &server.url);
    config.call_timeout = Duration::from_millis(300);
    let set = start(vec![config]);
    let web = set.get("web").unwrap();
    for _ in 0..200 {
        if web.health().state == HealthState::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let error = web
        .call_tool(None, "sleep_forever", None, None)
        .await
        .unwrap_err();
    assert!(matches!(error, UpstreamError::Timeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_credentials_need_a_tenant() {
    let Some(python) = python("HTTP tenant credential test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("crm", &server.url);
    config.auth = UpstreamAuth::Bearer(SecretRef::Tenant("crm".into()));
    let set = start(vec![config]);
    let crm = set.get("crm").unwrap();
    let error = crm.call_tool(None, "echo", None, None).await.unwrap_err();
    assert_eq!(error.code(), "upstream_credentials", "{error:?}");
    set.shutdown().await;
}

/// A call as the gateway makes it with tenancy on: in its tenant's share
/// of the upstream's slots.
async fn call_as(
    web: gatehouse_upstream::Upstream,
    tenant: &'static str,
    tool: &'static str,
) -> Result<CallToolResponse, UpstreamError> {
    let context = CallContext {
        tenant_share: Some(tenant.into()),
        ..CallContext::default()
    };
    call_in(web, Some(tenant), tool, tenant, context).await
}

/// `tool` called with `{"text": text}` under `context`.
async fn call_in(
    web: gatehouse_upstream::Upstream,
    tenant: Option<&str>,
    tool: &str,
    text: &str,
    context: CallContext,
) -> Result<CallToolResponse, UpstreamError> {
    let arguments = args(json!({ "text": text }));
    web.call_tool_with(
        tenant,
        tool,
        arguments,
        None,
        UpstreamInput::default(),
        context,
    )
    .await
}

/// One tenant's calls cannot take every slot of an upstream: with two slots
/// and one per tenant, tenant a's two calls that never answer leave the
/// second slot to tenant b, whose call goes through (the attack: a tenant
/// floods a shared upstream with slow calls so the others get `upstream_busy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_take_every_slot_of_an_upstream() {
    let Some(python) = python("HTTP tenant share test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("web", &server.url);
    config.max_concurrent_calls = 2;
    assert_eq!(config.tenant_share(), 1);
    let set = start(vec![config]);
    let web = set.get("web").unwrap().clone();
    // Ready first, so the calls below are waiting on slots, not on the connection.
    call_as(web.clone(), "b", "echo").await.unwrap();
    let hog = |web: gatehouse_upstream::Upstream| tokio::spawn(call_as(web, "a", "sleep_forever"));
    let first = hog(web.clone());
    for _ in 0..200 {
        if web.health().in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(web.health().in_flight, 1);
    let second = hog(web.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Tenant a's second call waits for its own share, not holding the
    // upstream's second slot.
    assert_eq!(web.health().in_flight, 1);
    let echoed = tokio::time::timeout(Duration::from_secs(10), call_as(web.clone(), "b", "echo"))
        .await
        .expect("tenant b's call waited behind tenant a's")
        .unwrap();
    let CallToolResponse::Complete(echoed) = echoed else {
        panic!("not a complete result");
    };
    assert_eq!(text(&echoed), "b");
    assert!(!first.is_finished() && !second.is_finished());
    first.abort();
    second.abort();
    set.shutdown().await;
}

/// A tenant whose calls time out (a flood of calls that never answer)
/// opens its own circuit breaker, not the one of every tenant calling the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_timeouts_do_not_open_the_breaker_for_another() {
    let Some(python) = python("HTTP tenant breaker test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("web", &server.url);
    // Long enough for tenant b's call on a loaded machine.
    config.call_timeout = Duration::from_secs(3);
    config.breaker_failures = 1;
    let set = start(vec![config]);
    let web = set.get("web").unwrap().clone();
    for _ in 0..200 {
        if web.health().state == HealthState::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = call_as(web.clone(), "a", "sleep_forever")
        .await
        .unwrap_err();
    assert!(matches!(error, UpstreamError::Timeout { .. }), "{error:?}");
    // Tenant a's breaker is open: its next call is refused at once.
    let error = call_as(web.clone(), "a", "echo").await.unwrap_err();
    assert!(error.to_string().contains("circuit breaker"), "{error:?}");
    // Tenant b's calls go on.
    let CallToolResponse::Complete(echoed) = call_as(web.clone(), "b", "echo").await.unwrap()
    else {
        panic!("not a complete result");
    };
    assert_eq!(text(&echoed), "b");
    set.shutdown().await;
}

/// A call as the gateway makes it for one caller without tenancy: in the
/// caller's share of the upstream's slots, stopped by `cancel`.
async fn call_by(
    web: gatehouse_upstream::Upstream,
    caller: &'static str,
    tool: &'static str,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<CallToolResponse, UpstreamError> {
    let context = CallContext {
        caller_share: Some(caller.into()),
        cancel,
        ..CallContext::default()
    };
    call_in(web, None, tool, caller, context).await
}

async fn wait_in_flight(web: &gatehouse_upstream::Upstream, calls: usize) {
    for _ in 0..200 {
        if web.health().in_flight == calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(web.health().in_flight, calls);
}

/// One caller's calls cannot take every slot of an upstream, with tenancy
/// off too: with two slots and one per caller, agent x's two calls that
/// never answer leave the second slot to agent y (the attack: one agent, or
/// one stolen key, floods an upstream with slow calls so that everyone else
/// gets `upstream_busy`). A call waiting for its slot stops waiting when
/// its caller cancels it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_caller_cannot_take_every_slot_of_an_upstream() {
    let Some(python) = python("HTTP caller share test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("web", &server.url);
    config.max_concurrent_calls = 2;
    config.max_concurrent_calls_per_caller = Some(1);
    let set = start(vec![config]);
    let web = set.get("web").unwrap().clone();
    let never = tokio_util::sync::CancellationToken::new;
    call_by(web.clone(), "y", "echo", never()).await.unwrap();
    let first = tokio::spawn(call_by(web.clone(), "x", "sleep_forever", never()));
    wait_in_flight(&web, 1).await;
    let cancel = never();
    let second = tokio::spawn(call_by(web.clone(), "x", "sleep_forever", cancel.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // x's second call waits for its own share, not holding the upstream's
    // second slot.
    assert_eq!(web.health().in_flight, 1);
    let echoed = tokio::time::timeout(
        Duration::from_secs(10),
        call_by(web.clone(), "y", "echo", never()),
    )
    .await
    .expect("y's call waited behind x's")
    .unwrap();
    let CallToolResponse::Complete(echoed) = echoed else {
        panic!("not a complete result");
    };
    assert_eq!(text(&echoed), "y");
    // Cancelled while waiting: it ends now, not after the call timeout.
    assert!(!second.is_finished());
    cancel.cancel();
    let error = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the cancelled call went on waiting for a slot")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::Cancelled { .. }),
        "{error:?}"
    );
    assert!(!first.is_finished());
    first.abort();
    set.shutdown().await;
}

/// One caller whose calls time out (calls to a slow tool, or a query made
/// slow on purpose) opens a breaker of its own, not the upstream's: another
/// caller's calls go on, and the upstream's health shows no open breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_callers_timeouts_do_not_open_the_breaker_for_another() {
    let Some(python) = python("HTTP caller breaker test") else {
        return;
    };
    let server = PyHttp::start(&python, &[]);
    let mut config = http("web", &server.url);
    config.call_timeout = Duration::from_secs(3);
    config.breaker_failures = 1;
    let set = start(vec![config]);
    let web = set.get("web").unwrap().clone();
    let never = tokio_util::sync::CancellationToken::new;
    call_by(web.clone(), "y", "echo", never()).await.unwrap();
    let error = call_by(web.clone(), "x", "sleep_forever", never())
        .await
        .unwrap_err();
    assert!(matches!(error, UpstreamError::Timeout { .. }), "{error:?}");
    let error = call_by(web.clone(), "x", "echo", never())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("this caller's calls timed out repeatedly"),
        "{error:?}"
    );
    let CallToolResponse::Complete(echoed) =
        call_by(web.clone(), "y", "echo", never()).await.unwrap()
    else {
        panic!("not a complete result");
    };
    assert_eq!(text(&echoed), "y");
    assert_eq!(
        web.health().breaker,
        gatehouse_upstream::BreakerState::Closed
    );
    set.shutdown().await;
}

const TOKEN: &str = "tok-REFLECTED-5c2e71a9d4";

/// An upstream that echoes the headers it got (a debugging tool, a
/// misbehaving server) hands Gatehouse's credential for it back in a
/// successful result: the caller must get it replaced, on rmcp's path (a
/// 2026-07-28 server) and on the gateway's own posting path (a 2025-11-25
/// session), in results and in what the upstream sends meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouses_credential_never_comes_back_in_an_answer() {
    let Some(python) = python("HTTP credential reflection test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    for extra in [&[][..], &["--legacy"][..]] {
        let server = PyHttp::start(&python, extra);
        let mut config = http("spy", &server.url);
        config.auth = UpstreamAuth::Bearer(SecretRef::File(token_file.clone()));
        let set = start(vec![config]);
        let spy = set.get("spy").unwrap();
        let headers = spy
            .call_tool(None, "request_headers", None, None)
            .await
            .unwrap();
        let seen = serde_json::to_string(&headers).unwrap();
        assert!(
            !seen.contains(TOKEN),
            "{extra:?}: the credential came back: {seen}"
        );
        assert!(seen.contains("Bearer [redacted]"), "{extra:?}: {seen}");
        // The same text given back as an argument's echo.
        let echoed = spy
            .call_tool(
                None,
                "echo",
                args(json!({"text": format!("x {TOKEN} y")})),
                None,
            )
            .await
            .unwrap();
        assert_eq!(text(&echoed), "x [redacted] y", "{extra:?}");
        set.shutdown().await;
    }
}
