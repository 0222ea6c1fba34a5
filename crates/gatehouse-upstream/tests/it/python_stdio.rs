//! The Python SDK test server as a child process.

use std::time::{Duration, Instant};

use gatehouse_upstream::{ChangeKind, HealthState, UpstreamError};
use serde_json::json;

use crate::common::{py_stdio, python, start, text, wait_change};

fn args(value: serde_json::Value) -> Option<gatehouse_upstream::JsonObject> {
    value.as_object().cloned()
}

/// Stands in for Gatehouse's own secrets, which a child must never see.
const LEAK_NAME: &str = "GATEHOUSE_MASTER_KEY";
const LEAK_VALUE: &str = "do-not-leak-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_tools_and_hides_the_gateway_environment() {
    if std::env::var(LEAK_NAME).as_deref() != Ok(LEAK_VALUE) {
        // `set_var` is unsafe (and unsafe code is forbidden here), so the
        // test runs again in a process that has the variable from the start.
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "python_stdio::calls_tools_and_hides_the_gateway_environment",
                "--nocapture",
            ])
            .env(LEAK_NAME, LEAK_VALUE)
            .status()
            .unwrap();
        assert!(status.success(), "the run with {LEAK_NAME} set failed");
        return;
    }
    let Some(python) = python("stdio upstream test") else {
        return;
    };
    let mut config = py_stdio(&python, "py", &[]);
    config.env.insert("FOO".into(), "bar".into());
    let set = start(vec![config]);
    let py = set.get("py").unwrap();

    let tools = py.list_tools(None, None).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(
        names.contains(&"echo") && names.contains(&"env_dump"),
        "{names:?}"
    );

    let echoed = py
        .call_tool(None, "echo", args(json!({"text": "hello"})), None)
        .await
        .unwrap();
    assert_eq!(text(&echoed), "hello");

    let env = py.call_tool(None, "env_dump", None, None).await.unwrap();
    let env: serde_json::Value = serde_json::from_str(&text(&env)).unwrap();
    let keys: Vec<&String> = env.as_object().unwrap().keys().collect();
    assert_eq!(env["FOO"], "bar");
    assert!(env.get(LEAK_NAME).is_none(), "the child saw {keys:?}");
    assert!(!env.to_string().contains(LEAK_VALUE));
    for key in &keys {
        let allowed = ["PATH", "HOME", "LANG", "TMPDIR", "FOO"].contains(&key.as_str())
            || key.starts_with("LC_");
        assert!(allowed, "unexpected variable {key} in the child: {keys:?}");
    }

    let health = py.health();
    assert_eq!(health.state, HealthState::Ready);
    assert_eq!(health.protocol_version.as_deref(), Some("2026-07-28"));
    set.shutdown().await;
    assert_eq!(py.health().state, HealthState::Disabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_fails_promptly_and_the_child_comes_back() {
    let Some(python) = python("stdio supervision test") else {
        return;
    };
    let set = start(vec![py_stdio(&python, "py", &[])]);
    let py = set.get("py").unwrap();
    let mut changes = set.subscribe();
    let first_pid = py.call_tool(None, "pid", None, None).await.unwrap();

    let started = Instant::now();
    let error = py.call_tool(None, "crash", None, None).await.unwrap_err();
    assert!(
        matches!(error, UpstreamError::Disconnected { .. }),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    wait_change(&mut changes, |e| e.kind == ChangeKind::Reconnected).await;
    let second_pid = py.call_tool(None, "pid", None, None).await.unwrap();
    assert_ne!(text(&first_pid), text(&second_pid));
    assert_eq!(py.health().restarts, 1);
    assert_eq!(
        py.health().pid.map(|p| p.to_string()),
        Some(text(&second_pid))
    );

    // Shutdown stops the child (and reaps it: no /proc entry is left).
    set.shutdown().await;
    let proc_entry = format!("/proc/{}", text(&second_pid));
    assert!(
        !std::path::Path::new(&proc_entry).exists(),
        "{proc_entry} still exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_never_answers_times_out_and_the_others_go_on() {
    let Some(python) = python("stdio timeout test") else {
        return;
    };
    let mut config = py_stdio(&python, "py", &[]);
    config.call_timeout = Duration::from_millis(300);
    let set = start(vec![config]);
    let py = set.get("py").unwrap();
    // Connected first (the call timeout also bounds waiting for the connection).
    let mut ready = false;
    for _ in 0..100 {
        if py.health().state == HealthState::Ready {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "{:?}", py.health());

    let started = Instant::now();
    let error = py
        .call_tool(None, "sleep_forever", None, None)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "upstream_timeout", "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let echoed = py
        .call_tool(None, "echo", args(json!({"text": "still here"})), None)
        .await
        .unwrap();
    assert_eq!(text(&echoed), "still here");
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_answer_is_a_typed_error() {
    let Some(python) = python("stdio message size test") else {
        return;
    };
    let mut config = py_stdio(&python, "py", &[]);
    config.max_message_bytes = 64 * 1024;
    let set = start(vec![config]);
    let py = set.get("py").unwrap();
    let started = Instant::now();
    let error = py
        .call_tool(None, "big", args(json!({"size": 1_000_000})), None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, UpstreamError::MessageTooLarge { limit: 65536, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Under the limit still works, on the same connection.
    let small = py
        .call_tool(None, "big", args(json!({"size": 1000})), None)
        .await
        .unwrap();
    assert_eq!(text(&small).len(), 1000);
    assert_eq!(py.health().restarts, 0);
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_list_changes_are_broadcast() {
    let Some(python) = python("stdio list_changed test") else {
        return;
    };
    let set = start(vec![py_stdio(&python, "py", &[])]);
    let py = set.get("py").unwrap();
    let mut changes = set.subscribe();
    assert!(
        !py.list_tools(None, None)
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "added")
    );
    py.call_tool(None, "add_tool", None, None).await.unwrap();
    let event = wait_change(&mut changes, |e| e.kind == ChangeKind::Tools).await;
    assert_eq!(&*event.upstream, "py");
    assert!(
        py.list_tools(None, None)
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "added")
    );
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_follow_every_page() {
    let Some(python) = python("stdio pagination test") else {
        return;
    };
    let set = start(vec![py_stdio(
        &python,
        "py",
        &["--tools", "45", "--page-size", "7"],
    )]);
    let py = set.get("py").unwrap();
    let tools = py.list_tools(None, None).await.unwrap();
    let fillers = tools
        .iter()
        .filter(|t| t.name.starts_with("filler_"))
        .count();
    assert_eq!(fillers, 45);
    let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), tools.len(), "a page came twice");
    set.shutdown().await;
}

/// 100 pages of tiny entries are millions of items: a listing past
/// `MAX_LISTED_ITEMS` is refused, not held, served and pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_past_the_item_limit_is_refused() {
    let Some(python) = python("stdio listing limit test") else {
        return;
    };
    let over = gatehouse_upstream::MAX_LISTED_ITEMS.to_string();
    let set = start(vec![py_stdio(
        &python,
        "py",
        &["--listed-only", &over, "--page-size", "500"],
    )]);
    let py = set.get("py").unwrap();
    let error = py.list_tools(None, None).await.unwrap_err();
    assert!(error.to_string().contains("items"), "{error}");
    set.shutdown().await;
}

/// Each page is bounded by the message limit, but a hundred of them were
/// held whole: a listing larger than `MAX_LISTING_BYTES` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_past_the_byte_limit_is_refused() {
    let Some(python) = python("stdio listing size test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let definitions = dir.path().join("definitions.json");
    let tools = 40;
    let each = gatehouse_upstream::MAX_LISTING_BYTES / tools + 1;
    let fat: serde_json::Map<String, serde_json::Value> = (0..tools)
        .map(|i| {
            (
                format!("filler_{i:03}"),
                serde_json::json!({ "description": "d".repeat(each) }),
            )
        })
        .collect();
    std::fs::write(&definitions, serde_json::to_vec(&fat).unwrap()).unwrap();
    let set = start(vec![py_stdio(
        &python,
        "py",
        &[
            "--tools",
            &tools.to_string(),
            "--page-size",
            "2",
            "--definitions",
            definitions.to_str().unwrap(),
        ],
    )]);
    let py = set.get("py").unwrap();
    let error = py.list_tools(None, None).await.unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
    set.shutdown().await;
}

/// A child given a credential in `secret_env` that prints its environment
/// hands the credential back in a result: the caller gets it replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_secret_never_comes_back_in_an_answer() {
    const SECRET: &str = "child-SECRET-77f0c3a1e2";
    let Some(python) = python("stdio credential reflection test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, SECRET).unwrap();
    let mut config = py_stdio(&python, "py", &[]);
    config.secret_env.insert(
        "SERVICE_TOKEN".into(),
        gatehouse_upstream::SecretRef::File(file),
    );
    let set = start(vec![config]);
    let py = set.get("py").unwrap();
    let env = py.call_tool(None, "env_dump", None, None).await.unwrap();
    let env: serde_json::Value = serde_json::from_str(&text(&env)).unwrap();
    assert_eq!(env["SERVICE_TOKEN"], "[redacted]", "{env}");
    assert!(!env.to_string().contains(SECRET));
    set.shutdown().await;
}
