//! The Python SDK test server over Streamable HTTP, in both eras.

use std::time::{Duration, Instant};

use gatehouse_upstream::{
    ChangeKind, HealthState, SecretRef, UpstreamAuth, UpstreamConfig, UpstreamError,
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
    web.list_tools(None).await.unwrap();
    web.call_tool(None, "add_tool", None, None).await.unwrap();
    wait_change(&mut changes, |e| e.kind == ChangeKind::Tools).await;
    assert!(
        web.list_tools(None)
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
