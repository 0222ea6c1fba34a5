//! The protocol beyond request and answer, through the gateway: what an
//! upstream sends during a call (progress, log messages, sampling and
//! elicitation requests) reaches the client that made the call, and only
//! it; resource subscriptions and completions are authorized like reads.
//! The upstream is the Python test server (tests/upstreams/server.py) over
//! stdio, in a 2025-11-25 session (`protocol_version`), where it may send
//! requests during a call.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::{LEGACY, MODERN, Server};
use super::sessions::await_fast_path;
use super::upstreams::{DEFAULT, PyHttp, python, reason, root};

fn server(python: &Path) -> Server {
    server_speaking(python, LEGACY)
}

/// The gateway, its connection to the upstream pinned to `protocol`.
fn server_speaking(python: &Path, protocol: &str) -> Server {
    server_with(python, protocol, &[])
}

/// The gateway, its upstream started with `extra` arguments.
fn server_with(python: &Path, protocol: &str, extra: &[&str]) -> Server {
    server_with_policy(python, protocol, extra, "")
}

/// [`server_with`], with `more_policy` added to the policy file.
fn server_with_policy(python: &Path, protocol: &str, extra: &[&str], more_policy: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "{DEFAULT}\n[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
             [resources.\"memo://team/note\"]\nscope = \"tools:read\"\nroles = [\"admin\"]\n\
             {more_policy}"
        ),
    )
    .unwrap();
    let script = root().join("crates/gatehouse-upstream/tests/upstreams/server.py");
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"py\"\ncommand = {:?}\n\
         args = [{:?}, \"stdio\"{}]\nconnect_timeout = \"30s\"\ncall_timeout = \"30s\"\nprotocol_version = {protocol:?}\n",
        python.display().to_string(),
        script.display().to_string(),
        extra.iter().map(|a| format!(", {a:?}")).collect::<String>(),
    );
    Server::start_in(dir, Some(&config))
}

/// The gateway in front of `upstream` (HTTP, 2025-11-25 sessions).
fn server_over_http(upstream: &PyHttp) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{DEFAULT}\n[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n"),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"py\"\nurl = {:?}\n\
         connect_timeout = \"30s\"\ncall_timeout = \"30s\"\nprotocol_version = \"2025-11-25\"\n",
        upstream.url
    );
    Server::start_in(dir, Some(&config))
}

/// The JSON-RPC messages of an SSE response, one at a time (a JSON
/// response is one message).
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    fn is_json(&self) -> bool {
        content_type(&self.response).starts_with("application/json")
    }

    async fn next(&mut self) -> Option<Value> {
        if self.is_json() {
            while let Some(chunk) = self.response.chunk().await.ok()? {
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
            let whole = std::mem::take(&mut self.buffer);
            return serde_json::from_str(&whole).ok();
        }
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim)
                    .collect();
                match serde_json::from_str(&data) {
                    Ok(message) => return Some(message),
                    Err(_) => continue,
                }
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Every message up to and including the answer to request `id`.
    async fn until_answer(&mut self, id: i64) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Some(message) = self.next().await {
            let done = message["id"] == json!(id) && message.get("method").is_none();
            seen.push(message);
            if done {
                break;
            }
        }
        seen
    }
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A 2025-11-25 session of `key` declaring `capabilities`.
async fn session(server: &Server, key: &str, capabilities: Value) -> String {
    let response = server
        .post_legacy(
            key,
            None,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": LEGACY, "capabilities": capabilities,
                "clientInfo": {"name": "relay-test", "version": "1"}}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let id = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.text().await;
    server
        .post_legacy(
            key,
            Some(&id),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    id
}

async fn call(server: &Server, key: &str, session: &str, id: i64, params: Value) -> Events {
    let response = server
        .post_legacy(
            key,
            Some(session),
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}),
        )
        .await;
    assert_eq!(response.status(), 200);
    Events {
        response,
        buffer: String::new(),
    }
}

/// Waits until the upstream's tools are listed (it starts in the background).
async fn ready(server: &Server, key: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !server
        .tool_names(key)
        .await
        .iter()
        .any(|n| n == "py__ask_model")
    {
        assert!(std::time::Instant::now() < deadline, "no upstream tools");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn progress_and_log_messages_reach_the_caller_under_its_own_token_and_level() {
    let Some(python) = python() else { return };
    progress_and_logs(&server(&python)).await;
}

/// The same through an HTTP upstream, whose calls the gateway posts itself
/// (`direct_call.rs`), without rmcp's client.
#[tokio::test]
async fn progress_and_log_messages_of_an_http_upstream_reach_the_caller_likewise() {
    let Some(python) = python() else { return };
    let upstream = PyHttp::start_with(&python, &["--legacy", "--resumable"]);
    progress_and_logs(&server_over_http(&upstream)).await;
}

async fn progress_and_logs(server: &Server) {
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(server, &analyst).await;
    let id = session(server, &analyst, json!({})).await;

    let mut events = call(
        server,
        &analyst,
        &id,
        1,
        json!({"name": "py__progress_steps", "arguments": {"steps": 3},
               "_meta": {"progressToken": "caller-token"}}),
    )
    .await;
    let seen = tokio::time::timeout(Duration::from_secs(30), events.until_answer(1))
        .await
        .unwrap();
    let progress: Vec<&Value> = seen
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{seen:?}");
    // The caller's own token; the one the upstream saw stays inside.
    assert!(
        progress
            .iter()
            .all(|p| p["params"]["progressToken"] == "caller-token"),
        "{progress:?}"
    );
    assert_eq!(progress[2]["params"]["progress"], json!(3.0));
    assert_eq!(text(seen.last().unwrap()), "done");

    // Without a token, no progress.
    let mut events = call(
        server,
        &analyst,
        &id,
        2,
        json!({"name": "py__progress_steps", "arguments": {"steps": 2}}),
    )
    .await;
    let seen = events.until_answer(2).await;
    assert!(
        !seen.iter().any(|m| m["method"] == "notifications/progress"),
        "{seen:?}"
    );

    // Log messages at or above the session's level. A 2025-11-25 session
    // gets them on its standalone stream (rmcp's session layer sends
    // notifications without a progress token there).
    let response = server
        .post_legacy(
            &analyst,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": {"level": "info"}}),
        )
        .await;
    assert!(response.text().await.unwrap().contains("\"result\""));
    let standalone = server
        .http
        .get(server.mcp_url())
        .bearer_auth(&analyst)
        .header("accept", "text/event-stream")
        .header("mcp-protocol-version", LEGACY)
        .header("mcp-session-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(standalone.status(), 200);
    let mut standalone = Events {
        response: standalone,
        buffer: String::new(),
    };
    let mut events = call(
        server,
        &analyst,
        &id,
        4,
        json!({"name": "py__log_lines", "arguments": {}}),
    )
    .await;
    let seen = events.until_answer(4).await;
    assert_eq!(text(seen.last().unwrap()), "logged", "{seen:?}");
    let mut logs = seen
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .map(|m| m["params"]["data"].clone())
        .collect::<Vec<_>>();
    while logs.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(30), standalone.next())
            .await
            .unwrap()
            .unwrap();
        if message["method"] == "notifications/message" {
            logs.push(message["params"]["data"].clone());
        }
    }
    // The debug line is below the level; the info and error lines pass.
    assert_eq!(logs, [json!("an info line"), json!("an error line")]);
}

#[tokio::test]
async fn sampling_and_elicitation_go_to_the_session_client_that_made_the_call() {
    let Some(python) = python() else { return };
    sampling_and_elicitation(&server(&python)).await;
}

/// The same through an HTTP upstream, whose calls the gateway posts itself.
#[tokio::test]
async fn sampling_and_elicitation_of_an_http_upstream_go_to_the_caller_likewise() {
    let Some(python) = python() else { return };
    let upstream = PyHttp::start_with(&python, &["--legacy", "--resumable"]);
    sampling_and_elicitation(&server_over_http(&upstream)).await;
}

async fn sampling_and_elicitation(server: &Server) {
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(server, &analyst).await;
    let id = session(
        server,
        &analyst,
        json!({"sampling": {}, "elicitation": {"form": {}}}),
    )
    .await;

    // The upstream asks for a completion; the client answers on the session.
    let mut events = call(
        server,
        &analyst,
        &id,
        1,
        json!({"name": "py__ask_model", "arguments": {"question": "6 x 7?"}}),
    )
    .await;
    let request = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert!(request.to_string().contains("6 x 7?"), "{request}");
    server
        .post_legacy(
            &analyst,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": request["id"], "result": {
                "role": "assistant", "model": "test-model",
                "content": {"type": "text", "text": "42"}}}),
        )
        .await;
    let seen = events.until_answer(1).await;
    assert_eq!(text(seen.last().unwrap()), "model said: 42", "{seen:?}");

    let mut events = call(
        server,
        &analyst,
        &id,
        2,
        json!({"name": "py__ask_user", "arguments": {}}),
    )
    .await;
    let request = events.next().await.unwrap();
    assert_eq!(request["method"], "elicitation/create", "{request}");
    server
        .post_legacy(
            &analyst,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": request["id"], "result": {
                "action": "accept", "content": {"name": "Ada"}}}),
        )
        .await;
    let seen = events.until_answer(2).await;
    assert_eq!(text(seen.last().unwrap()), "accept: Ada", "{seen:?}");
    // Each call is audited as before.
    let records = server.audit(&["--principal", &analyst_id, "--tool", "py__ask_user"]);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success"),
        "{records:?}"
    );

    // A session that declared no sampling: the upstream's request is
    // refused, never sent to anyone else.
    let plain = session(server, &analyst, json!({})).await;
    let mut events = call(
        server,
        &analyst,
        &plain,
        3,
        json!({"name": "py__ask_model", "arguments": {"question": "?"}}),
    )
    .await;
    let seen = events.until_answer(3).await;
    assert!(
        !seen.iter().any(|m| m["method"] == "sampling/createMessage"),
        "{seen:?}"
    );
    let answer = seen.last().unwrap();
    assert!(
        answer["result"]["isError"] == json!(true) || answer.get("error").is_some(),
        "{answer}"
    );
}

/// A session's client cancels its call: the call is cancelled at the
/// upstream and audited so, whether Gatehouse answered it itself (no
/// progress token: the session fast path) or through the SDK.
#[tokio::test]
async fn a_cancelled_call_is_cancelled_at_the_upstream_and_audited() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    for (request, progress) in [(7, false), (8, true)] {
        let id = session(&server, &analyst, json!({})).await;
        await_fast_path(&server, &analyst, &id).await;
        let mut params = json!({"name": "py__sleep_forever", "arguments": {}});
        if progress {
            params["_meta"] = json!({"progressToken": "p"});
        }
        // The fast path answers when the call ends, so the call is sent
        // from a task of its own.
        let posted = {
            let body =
                json!({"jsonrpc": "2.0", "id": request, "method": "tools/call", "params": params});
            let request = server
                .http
                .post(server.mcp_url())
                .bearer_auth(&analyst)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", LEGACY)
                .header("mcp-session-id", &id)
                .json(&body);
            tokio::spawn(async move { request.send().await })
        };
        // Cancelled once it runs: its decision is recorded before the
        // upstream is called.
        let count = |kind: &str, reason: Option<&str>| {
            server
                .audit(&["--principal", &analyst_id, "--tool", "py__sleep_forever"])
                .iter()
                .filter(|r| r["kind"] == kind && reason.is_none_or(|reason| r["reason"] == reason))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while count("tool_decision", None) < request - 6 {
            assert!(std::time::Instant::now() < deadline, "the call never ran");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
            .post_legacy(
                &analyst,
                Some(&id),
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request}}),
            )
            .await;
        while count("tool_outcome", Some("cancelled")) < request - 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "no cancelled outcome (progress token: {progress})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !progress {
            // The fast path's answer ends with the call.
            let answered = tokio::time::timeout(Duration::from_secs(30), posted)
                .await
                .expect("the cancelled call was never answered")
                .unwrap()
                .unwrap();
            assert_eq!(answered.status(), 200);
            assert!(content_type(&answered).starts_with("application/json"));
        }
    }
}

/// An upstream may finish a cancelled call anyway (without answering it,
/// as the spec allows). A sampling request it sends meanwhile over stdio
/// names no call: it must not reach the caller whose call happens to be
/// the only other one in flight.
#[tokio::test]
async fn what_an_abandoned_call_asks_later_reaches_no_other_caller() {
    let Some(python) = python() else { return };
    let server = server_with(&python, LEGACY, &["--cancel-signal"]);
    let (alice_id, alice) = server.create_key("alice", "analyst", &[]);
    let (_, bob) = server.create_key("bob", "analyst", &[]);
    ready(&server, &alice).await;

    // Alice starts a call, then cancels it; the gateway stops waiting.
    let first = session(&server, &alice, json!({"sampling": {}})).await;
    let events = call(
        &server,
        &alice,
        &first,
        1,
        json!({"name": "py__stubborn", "arguments": {}}),
    )
    .await;
    // Cancelled once it holds its slot (so it reaches the upstream): a
    // call cancelled while it waits for one is never sent at all.
    let admin = server.admin_key.clone().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if super::upstreams::in_flight(&server, &admin).await == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the call never took a slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
        .post_legacy(
            &alice,
            Some(&first),
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}),
        )
        .await;
    drop(events);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server
        .audit(&["--principal", &alice_id, "--tool", "py__stubborn"])
        .iter()
        .any(|r| r["kind"] == "tool_outcome" && r["reason"] == "cancelled")
    {
        assert!(std::time::Instant::now() < deadline, "not cancelled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bob's call lets Alice's go on, and is in flight while it asks.
    let second = session(&server, &bob, json!({"sampling": {}})).await;
    let mut events = call(
        &server,
        &bob,
        &second,
        2,
        json!({"name": "py__release_stubborn", "arguments": {}}),
    )
    .await;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("no answer")
            .expect("stream ended");
        assert_ne!(
            message["method"], "sampling/createMessage",
            "another caller's sampling request reached Bob: {message}"
        );
        if message["id"] == json!(2) && message.get("method").is_none() {
            assert_eq!(text(&message), "released", "{message}");
            break;
        }
    }
}

/// A 2026-07-28 upstream asks for input with an input-required result.
/// A 2025-11-25 session cannot take one: the gateway asks its client
/// mid-call, as a 2025-11-25 upstream would, and calls again. A 2026-07-28
/// caller gets the result itself and calls again with the answers.
#[tokio::test]
async fn an_upstream_asking_for_input_is_answered_in_the_callers_own_era() {
    let Some(python) = python() else { return };
    let server = server_speaking(&python, "2026-07-28");
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;

    // A 2025-11-25 session that declared elicitation is asked mid-call.
    let id = session(&server, &analyst, json!({"elicitation": {"form": {}}})).await;
    let mut events = call(
        &server,
        &analyst,
        &id,
        1,
        json!({"name": "py__greet", "arguments": {}}),
    )
    .await;
    let request = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(request["method"], "elicitation/create", "{request}");
    assert_eq!(
        request["params"]["message"], "What is your name?",
        "{request}"
    );
    server
        .post_legacy(
            &analyst,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": request["id"], "result": {
                "action": "accept", "content": {"name": "Ada"}}}),
        )
        .await;
    let seen = events.until_answer(1).await;
    assert_eq!(text(seen.last().unwrap()), "hello, Ada", "{seen:?}");
    let records = server.audit(&["--principal", &analyst_id, "--tool", "py__greet"]);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success"),
        "{records:?}"
    );

    // A session that declared no elicitation: nobody is asked, and the
    // call fails (the upstream, told the caller's capabilities, refuses).
    let plain = session(&server, &analyst, json!({})).await;
    let mut events = call(
        &server,
        &analyst,
        &plain,
        2,
        json!({"name": "py__greet", "arguments": {}}),
    )
    .await;
    let seen = events.until_answer(2).await;
    assert!(
        !seen.iter().any(|m| m["method"] == "elicitation/create"),
        "{seen:?}"
    );
    let answer = seen.last().unwrap();
    assert!(
        answer.get("error").is_some() || answer["result"]["isError"] == json!(true),
        "{answer}"
    );
    assert!(answer.to_string().contains("elicitation"), "{answer}");

    // A 2026-07-28 caller gets the input-required result as the upstream
    // gave it, and answers it on its next call.
    let capabilities =
        json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}});
    let (status, body) = server
        .rpc(
            Some(&analyst),
            "tools/call",
            json!({"name": "py__greet", "arguments": {}, "_meta": capabilities}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["result"];
    assert_eq!(result["resultType"], "input_required", "{body}");
    let (key, question) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(question["method"], "elicitation/create", "{body}");
    let (status, body) = server
        .rpc(
            Some(&analyst),
            "tools/call",
            json!({"name": "py__greet", "arguments": {}, "_meta": capabilities,
                   "inputResponses": {key.clone(): {"action": "accept", "content": {"name": "Grace"}}},
                   "requestState": result["requestState"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(text(&body), "hello, Grace", "{body}");
}

/// A 2025-11-25 upstream asks mid-call; a 2026-07-28 caller cannot be
/// asked mid-call. Gatehouse answers the caller with the questions (an
/// input-required result), holds the upstream's call open, and resumes it
/// when the caller calls again with the answers and the request state.
#[tokio::test]
async fn a_2026_caller_answers_a_2025_upstreams_questions_on_its_next_call() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    let (other_id, other) = server.create_key("other", "analyst", &[]);
    ready(&server, &analyst).await;
    let meta = json!({"io.modelcontextprotocol/clientCapabilities": {
        "elicitation": {"form": {}}, "sampling": {}}});
    let call_tool = |key: &str, params: Value| {
        let mut params = params;
        params["_meta"] = meta.clone();
        let key = key.to_string();
        let server = &server;
        async move {
            let (status, body) = server.rpc(Some(&key), "tools/call", params).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };

    let body = call_tool(&analyst, json!({"name": "py__ask_user", "arguments": {}})).await;
    let result = &body["result"];
    assert_eq!(result["resultType"], "input_required", "{body}");
    assert_eq!(
        result["inputRequests"]["q1"]["method"], "elicitation/create",
        "{body}"
    );
    assert_eq!(
        result["inputRequests"]["q1"]["params"]["message"], "What is your name?",
        "{body}"
    );
    let state = result["requestState"].clone();
    let answer = json!({"q1": {"action": "accept", "content": {"name": "Ada"}}});

    // Another caller cannot resume the call, or tell that it exists.
    let body = call_tool(
        &other,
        json!({"name": "py__ask_user", "arguments": {},
               "inputResponses": answer, "requestState": state}),
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown or expired request state"),
        "{body}"
    );
    // ...and the attempt is on record.
    let probes = server.audit(&["--kind", "anomaly", "--principal", &other_id]);
    assert!(
        probes.iter().any(|r| r["reason"] == "held_call_unknown"),
        "{probes:?}"
    );

    // Its caller answers, and the upstream's call goes on to its result.
    let body = call_tool(
        &analyst,
        json!({"name": "py__ask_user", "arguments": {},
               "inputResponses": answer, "requestState": state}),
    )
    .await;
    assert_eq!(text(&body), "accept: Ada", "{body}");
    // A request state resumes once.
    let body = call_tool(
        &analyst,
        json!({"name": "py__ask_user", "arguments": {},
               "inputResponses": answer, "requestState": state}),
    )
    .await;
    assert!(body.get("error").is_some(), "{body}");
    let records = server.audit(&["--principal", &analyst_id, "--tool", "py__ask_user"]);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success"),
        "{records:?}"
    );

    // Sampling likewise.
    let body = call_tool(
        &analyst,
        json!({"name": "py__ask_model", "arguments": {"question": "6 x 7?"}}),
    )
    .await;
    let result = &body["result"];
    assert_eq!(
        result["inputRequests"]["q1"]["method"], "sampling/createMessage",
        "{body}"
    );
    assert!(result.to_string().contains("6 x 7?"), "{body}");
    let body = call_tool(
        &analyst,
        json!({"name": "py__ask_model", "arguments": {"question": "6 x 7?"},
               "inputResponses": {"q1": {"role": "assistant", "model": "test-model",
                                         "content": {"type": "text", "text": "42"}}},
               "requestState": result["requestState"]}),
    )
    .await;
    assert_eq!(text(&body), "model said: 42", "{body}");
}

#[tokio::test]
async fn subscribing_to_a_resource_needs_the_right_to_read_it() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    let (_, admin) = server.create_key("admin", "admin", &[]);
    ready(&server, &analyst).await;
    for (key, allowed) in [(&analyst, false), (&admin, true)] {
        let id = session(&server, key, json!({})).await;
        let response = server
            .post_legacy(
                key,
                Some(&id),
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe",
                       "params": {"uri": "memo://team/note"}}),
            )
            .await;
        let body = super::harness::parse_body(&response.text().await.unwrap());
        if allowed {
            // Refused or served by the upstream, but past gate 2.
            assert_ne!(reason(&body), "role_not_allowed", "{body}");
        } else {
            assert_eq!(reason(&body), "role_not_allowed", "{body}");
        }
    }
    let denied = server.audit(&["--principal", &analyst_id, "--tool", "memo://team/note"]);
    assert!(
        denied
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "role_not_allowed"),
        "{denied:?}"
    );
}

/// A 2025-11-25 session that subscribed to a resource hears of its updates
/// on its stream while the policy lets it read the resource, and the
/// gateway's subscription at the upstream ends with the session's.
#[tokio::test]
async fn a_session_hears_of_the_resource_it_subscribed_to() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    let (_, admin) = server.create_key("admin", "admin", &[]);
    ready(&server, &analyst).await;
    let wait = Duration::from_secs(10);

    let session_id = session(&server, &admin, json!({})).await;
    // The session is promised updates.
    let init = server
        .post_legacy(
            &admin,
            None,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": LEGACY, "capabilities": {},
                "clientInfo": {"name": "relay-test", "version": "1"}}}),
        )
        .await;
    let init = super::harness::parse_body(&init.text().await.unwrap());
    assert_eq!(
        init["result"]["capabilities"]["resources"]["subscribe"], true,
        "{init}"
    );
    let mut stream = Events {
        response: super::sessions::open_stream(&server, &admin, &session_id).await,
        buffer: String::new(),
    };
    let subscribe = |method: &'static str| {
        server.post_legacy(
            &admin,
            Some(&session_id),
            json!({"jsonrpc": "2.0", "id": 1, "method": method,
                   "params": {"uri": "memo://team/note"}}),
        )
    };
    let answer =
        super::harness::parse_body(&subscribe("resources/subscribe").await.text().await.unwrap());
    assert!(answer["error"].is_null(), "{answer}");

    let answer = server
        .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
        .await;
    assert!(answer["error"].is_null(), "{answer}");
    assert_ne!(text(&answer), "not subscribed", "{answer}");
    // (Other notices, such as a catalogue change, may come first.)
    let update = loop {
        let message = within(&mut stream, wait).await.expect("no update");
        if message["method"] == "notifications/resources/updated" {
            break message;
        }
    };
    assert_eq!(update["params"]["uri"], "memo://team/note", "{update}");

    // The upstream crashes and is restarted: the gateway subscribes again
    // for the session, which keeps hearing of the note.
    let crashed = server.call_tool(&analyst, "py__crash", json!({})).await;
    assert!(!crashed["error"].is_null(), "{crashed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let update = 'heard: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no update after the upstream restarted"
        );
        let answer = server
            .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
            .await;
        if !answer["error"].is_null() {
            // Still restarting.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        while let Some(message) = within(&mut stream, Duration::from_secs(1)).await {
            if message["method"] == "notifications/resources/updated" {
                break 'heard message;
            }
        }
    };
    assert_eq!(update["params"]["uri"], "memo://team/note", "{update}");

    // Unsubscribed: the session hears no more, and the gateway (its only
    // watcher) unsubscribes at the upstream.
    let answer = super::harness::parse_body(
        &subscribe("resources/unsubscribe")
            .await
            .text()
            .await
            .unwrap(),
    );
    assert!(answer["error"].is_null(), "{answer}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = server
            .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
            .await;
        if text(&answer) == "not subscribed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still subscribed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while let Some(heard) = within(&mut stream, Duration::from_secs(1)).await {
        assert_ne!(
            heard["method"], "notifications/resources/updated",
            "{heard}"
        );
    }
}

/// One session, or one listen stream, watches at most 64 resources: each
/// watch costs a decision, an audit record and an upstream subscription.
#[tokio::test]
async fn watching_resources_is_bounded_per_session_and_listen_stream() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    let session_id = session(&server, &analyst, json!({})).await;
    let subscribe = |n: usize| {
        server.post_legacy(
            &analyst,
            Some(&session_id),
            json!({"jsonrpc": "2.0", "id": n, "method": "resources/subscribe",
                   "params": {"uri": format!("memo://items/{n}")}}),
        )
    };
    for n in 0..64 {
        let answer = super::harness::parse_body(&subscribe(n).await.text().await.unwrap());
        assert!(answer["error"].is_null(), "subscription {n}: {answer}");
    }
    let answer = super::harness::parse_body(&subscribe(64).await.text().await.unwrap());
    assert_eq!(
        answer["error"]["data"]["reason"], "too_many_subscriptions",
        "{answer}"
    );
    // Subscribing again to one it watches is no new watch.
    let answer = super::harness::parse_body(&subscribe(3).await.text().await.unwrap());
    assert!(answer["error"].is_null(), "{answer}");

    let uris: Vec<String> = (0..65).map(|n| format!("memo://items/{n}")).collect();
    let mut stream = listen(&server, &analyst, 9, json!({"resourceSubscriptions": uris})).await;
    let answer = loop {
        let message = within(&mut stream, Duration::from_secs(10))
            .await
            .expect("the listen stream said nothing");
        if message["id"] == 9 {
            break message;
        }
    };
    assert_eq!(
        answer["error"]["data"]["reason"], "too_many_subscriptions",
        "{answer}"
    );
}

/// One person holds at most 16 open listen streams (each may watch 64
/// resources, each watch possibly an outbound stream of its own): one
/// reader key opened them without bound, over many connections.
#[tokio::test]
async fn open_listen_streams_are_bounded_per_person() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    let (_, other) = server.create_key("other", "analyst", &[]);
    ready(&server, &analyst).await;
    let mut open = Vec::new();
    for id in 0..16 {
        let mut stream = listen(&server, &analyst, id, json!({"toolsListChanged": true})).await;
        let ack = within(&mut stream, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            ack["method"], "notifications/subscriptions/acknowledged",
            "{ack}"
        );
        open.push(stream);
    }
    let mut refused = listen(&server, &analyst, 16, json!({"toolsListChanged": true})).await;
    let answer = loop {
        let message = within(&mut refused, Duration::from_secs(10))
            .await
            .expect("the listen stream said nothing");
        if message["id"] == 16 {
            break message;
        }
    };
    assert_eq!(
        answer["error"]["data"]["reason"], "too_many_subscriptions",
        "{answer}"
    );
    // Another key is not held up, and a stream that ends frees a slot.
    let mut theirs = listen(&server, &other, 1, json!({"toolsListChanged": true})).await;
    let ack = within(&mut theirs, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    drop(open.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut stream = listen(&server, &analyst, 17, json!({"toolsListChanged": true})).await;
        let first = within(&mut stream, Duration::from_secs(10)).await.unwrap();
        if first["method"] == "notifications/subscriptions/acknowledged" {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the ended stream's slot was not freed");
}

/// A 2026-07-28 `subscriptions/listen` stream of `key` through the gateway.
async fn listen(server: &Server, key: &str, id: i64, notifications: Value) -> Events {
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "relay-test", "version": "1"},
    });
    let response = server
        .http
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "subscriptions/listen")
        .bearer_auth(key)
        .json(
            &json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
                      "params": {"_meta": meta, "notifications": notifications}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    Events {
        response,
        buffer: String::new(),
    }
}

/// The next message of a stream, if one comes within `wait`.
async fn within(events: &mut Events, wait: Duration) -> Option<Value> {
    tokio::time::timeout(wait, events.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn a_listen_stream_hears_the_upstream_list_changes_it_asked_for() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    let mut tools = listen(&server, &analyst, 7, json!({"toolsListChanged": true})).await;
    let ack = within(&mut tools, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true}),
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7,
        "{ack}"
    );
    let mut prompts = listen(&server, &analyst, 8, json!({"promptsListChanged": true})).await;
    let ack = within(&mut prompts, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        ack["params"]["notifications"],
        json!({"promptsListChanged": true}),
        "{ack}"
    );

    // The upstream adds a tool and says so.
    let answer = server.call_tool(&analyst, "py__add_tool", json!({})).await;
    assert!(answer["error"].is_null(), "{answer}");
    let change = within(&mut tools, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        change["method"], "notifications/tools/list_changed",
        "{change}"
    );
    assert_eq!(
        change["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 7,
        "{change}"
    );
    // The stream that asked for prompt changes only hears nothing of it.
    let heard = within(&mut prompts, Duration::from_secs(1)).await;
    assert!(heard.is_none(), "{heard:?}");
}

/// An upstream announcing a change every 10 ms had every session and
/// listen stream told as fast as it announced (and, for resources, every
/// tenant's routing made stale each time): one upstream's changes are
/// handled at most once a second, what it announces meanwhile merged.
#[tokio::test]
async fn an_upstream_announcing_changes_without_end_is_heard_at_most_once_a_second() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    let mut tools = listen(&server, &analyst, 7, json!({"toolsListChanged": true})).await;
    let ack = within(&mut tools, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    let started = std::time::Instant::now();
    let answer = server
        .call_tool(&analyst, "py__flood_changes", json!({"count": 200}))
        .await;
    assert!(answer["error"].is_null(), "{answer}");
    let mut heard = 0;
    while within(&mut tools, Duration::from_millis(1_500))
        .await
        .is_some()
    {
        heard += 1;
    }
    // Two seconds or more of announcements (200, 10 ms apart), and the
    // quiet second and a half that ends the count.
    let seconds = started.elapsed().as_secs() as usize;
    assert!(heard >= 1, "no change was heard");
    assert!(
        heard <= seconds + 1,
        "{heard} changes heard in {seconds} s for 200 announcements"
    );
}

/// Each upstream's changes are followed on their own: one that announced a
/// change and then never answers its listing held up every other
/// upstream's resource updates (and catalogue changes) for its call
/// timeout, each time it did so.
#[tokio::test]
async fn an_upstream_stuck_in_its_listing_holds_up_no_other_upstreams_updates() {
    let Some(python) = python() else { return };
    let hang = tempfile::tempdir().unwrap();
    let hanging = hang.path().join("hang");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "{DEFAULT}\n[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
             [upstreams.stuck]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
             [resources.\"memo://team/note\"]\nscope = \"tools:read\"\nroles = [\"admin\"]\n"
        ),
    )
    .unwrap();
    let script = root().join("crates/gatehouse-upstream/tests/upstreams/server.py");
    let upstream = |name: &str, extra: &[&str]| {
        format!(
            "[[upstreams]]\nname = {name:?}\ncommand = {:?}\nargs = [{:?}, \"stdio\"{}]\n\
             connect_timeout = \"30s\"\ncall_timeout = \"30s\"\nprotocol_version = {LEGACY:?}\n",
            python.display().to_string(),
            script.display().to_string(),
            extra.iter().map(|a| format!(", {a:?}")).collect::<String>(),
        )
    };
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n{}\n{}",
        upstream("py", &[]),
        upstream(
            "stuck",
            &[
                "--no-resources",
                "--hang-listings-while",
                hanging.to_str().unwrap()
            ]
        ),
    );
    let server = Server::start_in(dir, Some(&config));
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    let (_, admin) = server.create_key("admin", "admin", &[]);
    ready(&server, &analyst).await;
    let note = json!({"resourceSubscriptions": ["memo://team/note"]});
    let mut watching = listen(&server, &admin, 6, note.clone()).await;
    let ack = within(&mut watching, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ack["params"]["notifications"], note, "{ack}");

    // `stuck` says its tools changed; the gateway's listing of them hangs
    // (for the call timeout, 30 s).
    std::fs::write(&hanging, "").unwrap();
    let answer = server
        .call_tool(&analyst, "stuck__add_tool", json!({}))
        .await;
    assert!(answer["error"].is_null(), "{answer}");
    // `py`'s note changes meanwhile: its watcher hears of it long before.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let update = loop {
        let answer = server
            .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
            .await;
        assert!(answer["error"].is_null(), "{answer}");
        if let Some(update) = within(&mut watching, Duration::from_secs(1)).await {
            break update;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "py's update waited behind stuck's listing"
        );
    };
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{update}"
    );
    std::fs::remove_file(&hanging).unwrap();
}

#[tokio::test]
async fn a_listen_stream_hears_of_the_resources_it_may_read_and_of_no_other() {
    resource_updates_through(LEGACY).await;
}

#[tokio::test]
async fn a_listen_stream_hears_of_a_2026_upstream_resource_it_may_read() {
    resource_updates_through(MODERN).await;
}

/// Resource updates through a gateway whose upstream speaks `protocol`
/// (2025-11-25: `resources/subscribe`; 2026-07-28: a listen stream).
async fn resource_updates_through(protocol: &str) {
    let Some(python) = python() else { return };
    let server = server_speaking(&python, protocol);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    let (_, admin) = server.create_key("admin", "admin", &[]);
    ready(&server, &analyst).await;
    let note = json!({"resourceSubscriptions": ["memo://team/note"]});
    let wait = Duration::from_secs(10);

    // Only admins may read the note: the analyst's stream is refused.
    let mut refused = listen(&server, &analyst, 5, note.clone()).await;
    let ack = within(&mut refused, wait).await.unwrap();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    let answer = within(&mut refused, wait).await.unwrap();
    assert_eq!(answer["id"], 5, "{answer}");
    assert_eq!(reason(&answer), "role_not_allowed", "{answer}");

    let mut watching = listen(&server, &admin, 6, note.clone()).await;
    let ack = within(&mut watching, wait).await.unwrap();
    assert_eq!(ack["params"]["notifications"], note, "{ack}");
    let mut other = listen(&server, &admin, 7, json!({"toolsListChanged": true})).await;
    within(&mut other, wait).await.unwrap();

    // The upstream says the note changed (the gateway subscribed to it for
    // the admin's stream, which registers just after: told again until heard).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let update = loop {
        let answer = server
            .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
            .await;
        assert!(answer["error"].is_null(), "{answer}");
        if let Some(update) = within(&mut watching, Duration::from_secs(1)).await {
            break update;
        }
        assert!(std::time::Instant::now() < deadline, "no update: {answer}");
    };
    assert_eq!(
        update["method"], "notifications/resources/updated",
        "{update}"
    );
    assert_eq!(update["params"]["uri"], "memo://team/note", "{update}");
    assert_eq!(
        update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 6,
        "{update}"
    );
    // A stream that did not ask for the note hears nothing of it.
    let heard = within(&mut other, Duration::from_secs(1)).await;
    assert!(heard.is_none(), "{heard:?}");

    // The policy gives the note to a role of its own (admins inherit every
    // other), while the admin's stream is open.
    let path = server.data_dir().join("policy.toml");
    let policy = std::fs::read_to_string(&path).unwrap();
    let taken = policy.replace(
        "[resources.\"memo://team/note\"]\nscope = \"tools:read\"\nroles = [\"admin\"]",
        "[roles.curator]\n\n[resources.\"memo://team/note\"]\nscope = \"tools:read\"\nroles = [\"curator\"]",
    );
    assert_ne!(taken, policy);
    let reloads = || {
        std::fs::read_to_string(server.stderr_path())
            .unwrap()
            .matches("policy reloaded")
            .count()
    };
    let before = reloads();
    std::fs::write(&path, taken).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reloads() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the policy was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The admin may no longer read it, and hears no more of it.
    let (_, read) = server
        .rpc(
            Some(&admin),
            "resources/read",
            json!({"uri": "memo://team/note"}),
        )
        .await;
    assert_eq!(reason(&read), "role_not_allowed", "{read}");
    for _ in 0..3 {
        let answer = server
            .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
            .await;
        assert!(answer["error"].is_null(), "{answer}");
        let heard = within(&mut watching, Duration::from_secs(1)).await;
        assert!(heard.is_none(), "{heard:?}");
    }

    // When the last stream watching it ends, the gateway unsubscribes (the
    // upstream counts 2025-11-25 subscriptions only).
    drop(watching);
    if protocol == MODERN {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = server
            .call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}))
            .await;
        if text(&answer) == "not subscribed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still subscribed: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_response_stream_the_upstream_closes_mid_call_is_closed_and_resumed_likewise() {
    let Some(python) = python() else { return };
    // An HTTP upstream that keeps its streams' events (SEP-1699).
    let upstream = PyHttp::start_with(&python, &["--legacy", "--resumable"]);
    let server = server_over_http(&upstream);
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    let id = session(&server, &analyst, json!({})).await;
    await_fast_path(&server, &analyst, &id).await;

    // A call the session fast path answers has no stream to close: its
    // JSON answer comes once the gateway has resumed its own side.
    let mut answered = call(
        &server,
        &analyst,
        &id,
        8,
        json!({"name": "py__pause", "arguments": {}}),
    )
    .await;
    assert!(answered.is_json());
    let answer = tokio::time::timeout(Duration::from_secs(20), answered.next())
        .await
        .expect("no answer after the pause")
        .unwrap();
    assert_eq!(text(&answer), "answered after the pause", "{answer}");

    // Through the SDK (a progress token): the upstream closes its stream
    // before answering, and so does the gateway.
    let response = server
        .post_legacy(
            &analyst,
            Some(&id),
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                   "params": {"name": "py__pause", "arguments": {}, "_meta": {"progressToken": "p"}}}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let stream = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the gateway kept the stream open")
        .unwrap();
    assert!(!stream.contains("answered after the pause"), "{stream}");
    let last_event = stream
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("id:"))
        .map(str::trim)
        .expect("no event id to resume from")
        .to_string();

    // The client resumes the stream, and the answer comes on it.
    let resumed = server
        .http
        .get(server.mcp_url())
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &id)
        .header("mcp-protocol-version", LEGACY)
        .header("last-event-id", &last_event)
        .bearer_auth(&analyst)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let mut events = Events {
        response: resumed,
        buffer: String::new(),
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), events.until_answer(9))
        .await
        .expect("no answer on the resumed stream");
    let answer = answer.last().cloned().unwrap_or_default();
    assert_eq!(answer["id"], 9, "{answer}");
    assert_eq!(text(&answer), "answered after the pause", "{answer}");
}

/// A plain 2026-07-28 call of an upstream tool is answered by Gatehouse's
/// own fast path (no progress token, nothing the caller could be asked);
/// the same call with a progress token goes through the SDK. Both must
/// answer alike, whatever the upstream does: answer, log, ask for input
/// the caller cannot give, or not exist; in either era of the upstream.
#[tokio::test]
async fn the_fast_path_answers_upstream_calls_like_the_sdk() {
    let Some(python) = python() else { return };
    for protocol in [LEGACY, MODERN] {
        let server = server_speaking(&python, protocol);
        let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
        let (_, reader) = server.create_key("reader", "reader", &[]);
        ready(&server, &analyst).await;
        let call = |key: &str, tool: &str, arguments: Value, progress: bool| {
            let mut params = json!({"name": tool, "arguments": arguments});
            if progress {
                params["_meta"] = json!({"progressToken": "p1"});
            }
            let key = key.to_string();
            let server = &server;
            async move { server.rpc(Some(&key), "tools/call", params).await }
        };
        for (key, tool, arguments) in [
            (&analyst, "py__echo", json!({"text": "hello"})),
            (&analyst, "py__log_lines", json!({})),
            (&analyst, "py__ask_model", json!({"question": "why?"})),
            (&analyst, "py__ask_user", json!({})),
            (&analyst, "py__echo", json!({"text": 5})),
            (&analyst, "py__nope", json!({})),
            (&reader, "py__echo", json!({"text": "hello"})),
        ] {
            let (fast_status, fast) = call(key, tool, arguments.clone(), false).await;
            let (sdk_status, sdk) = call(key, tool, arguments, true).await;
            assert_eq!(fast_status, sdk_status, "{protocol} {tool}: {fast} / {sdk}");
            assert_eq!(
                fast, sdk,
                "{protocol} {tool}: the fast path and the SDK differ"
            );
        }
        assert_eq!(
            text(
                &call(&analyst, "py__echo", json!({"text": "hi"}), false)
                    .await
                    .1
            ),
            "hi"
        );
        // Each path wrote its own outcome: "hello" twice, "hi" once.
        let records = server.audit(&["--principal", &analyst_id, "--tool", "py__echo"]);
        let successes = records
            .iter()
            .filter(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success")
            .count();
        assert_eq!(successes, 3, "{protocol}: {records:?}");
    }
}

/// A plain call in a 2025-11-25 session is answered by Gatehouse's
/// session fast path (a JSON answer); the same call with a progress token
/// goes through the SDK (an SSE stream). Both must answer alike, whatever
/// the upstream does, in either era of the upstream. A session whose
/// client declared sampling (it may be asked mid-call) always goes to the
/// SDK.
#[tokio::test]
async fn the_session_fast_path_answers_upstream_calls_like_the_sdk() {
    let Some(python) = python() else { return };
    for protocol in [LEGACY, MODERN] {
        let server = server_speaking(&python, protocol);
        let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
        let (_, reader) = server.create_key("reader", "reader", &[]);
        ready(&server, &analyst).await;
        let analyst_session = session(&server, &analyst, json!({})).await;
        let reader_session = session(&server, &reader, json!({})).await;
        await_fast_path(&server, &analyst, &analyst_session).await;
        await_fast_path(&server, &reader, &reader_session).await;
        let mut request = 10;
        let mut answer =
            |key: &str, session: &str, tool: &str, arguments: Value, progress: bool| {
                request += 1;
                let mut params = json!({"name": tool, "arguments": arguments});
                if progress {
                    params["_meta"] = json!({"progressToken": "p1"});
                }
                let (key, session, id) = (key.to_string(), session.to_string(), request);
                let server = &server;
                async move {
                    let mut events = call(server, &key, &session, id, params).await;
                    let json = events.is_json();
                    let seen =
                        tokio::time::timeout(Duration::from_secs(30), events.until_answer(id))
                            .await
                            .expect("no answer");
                    let mut answer = seen.last().cloned().unwrap_or_default();
                    // The ids differ by construction.
                    answer["id"] = Value::Null;
                    (json, answer)
                }
            };
        for (key, session, tool, arguments) in [
            (
                &analyst,
                &analyst_session,
                "py__echo",
                json!({"text": "hello"}),
            ),
            (&analyst, &analyst_session, "py__log_lines", json!({})),
            (
                &analyst,
                &analyst_session,
                "py__ask_model",
                json!({"question": "why?"}),
            ),
            (&analyst, &analyst_session, "py__ask_user", json!({})),
            (&analyst, &analyst_session, "py__echo", json!({"text": 5})),
            (&analyst, &analyst_session, "py__nope", json!({})),
            (
                &reader,
                &reader_session,
                "py__echo",
                json!({"text": "hello"}),
            ),
        ] {
            let (fast_json, fast) = answer(key, session, tool, arguments.clone(), false).await;
            let (sdk_json, sdk) = answer(key, session, tool, arguments, true).await;
            assert!(
                fast_json,
                "{protocol} {tool}: not answered by the fast path"
            );
            assert!(!sdk_json, "{protocol} {tool}: not answered by the SDK");
            assert_eq!(
                fast, sdk,
                "{protocol} {tool}: the fast path and the SDK differ"
            );
        }
        let (_, hi) = answer(
            &analyst,
            &analyst_session,
            "py__echo",
            json!({"text": "hi"}),
            false,
        )
        .await;
        assert_eq!(text(&hi), "hi");
        // Each path wrote its own outcome, with the session: "hello" twice
        // for the analyst, "hi" once.
        let records = server.audit(&["--principal", &analyst_id, "--tool", "py__echo"]);
        let successes: Vec<_> = records
            .iter()
            .filter(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success")
            .collect();
        assert_eq!(successes.len(), 3, "{protocol}: {records:?}");
        assert!(
            successes
                .iter()
                .all(|r| r["session"] == analyst_session.as_str()),
            "{records:?}"
        );
        // A client that may be asked something mid-call gets the SDK.
        let asked = session(&server, &analyst, json!({"sampling": {}})).await;
        let (json, echoed) =
            answer(&analyst, &asked, "py__echo", json!({"text": "sdk"}), false).await;
        assert!(!json, "{protocol}: a sampling client took the fast path");
        assert_eq!(text(&echoed), "sdk");
    }
}

/// A caller that goes away during a fast-path call cancels it at the
/// upstream, and the outcome is audited as cancelled (as the SDK does).
#[tokio::test]
async fn a_fast_path_caller_that_goes_away_cancels_the_upstream_call() {
    let Some(python) = python() else { return };
    let server = server_speaking(&python, MODERN);
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    let request = server
        .http
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "py__sleep_forever")
        .bearer_auth(&analyst)
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "py__sleep_forever", "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                      "io.modelcontextprotocol/clientCapabilities": {}}}}),
        );
    let call = tokio::spawn(request.send());
    let records = |server: &Server| {
        server.audit(&["--principal", &analyst_id, "--tool", "py__sleep_forever"])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !records(&server)
        .iter()
        .any(|r| r["kind"] == "tool_decision" && r["decision"] == "allow")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client goes away: its connection closes.
    call.abort();
    let _ = call.await;
    while !records(&server)
        .iter()
        .any(|r| r["kind"] == "tool_outcome" && r["reason"] == "cancelled")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no cancelled outcome: {:?}",
            records(&server)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Calls of a 2025-11-25 HTTP upstream are posted by the gateway itself
/// (`direct_call.rs`): the upstream sees the gateway's own request ids and
/// progress tokens (strings, where rmcp's are numbers), answers come back
/// as through rmcp, and a response stream the upstream closes before
/// answering is resumed by the gateway for a caller that cannot resume it.
#[tokio::test]
async fn calls_of_an_http_upstream_are_posted_directly_and_resumed() {
    let Some(python) = python() else { return };
    let upstream = PyHttp::start_with(&python, &["--legacy", "--resumable"]);
    let server = server_over_http(&upstream);
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;

    let body = server
        .call_tool(&analyst, "py__request_meta", json!({}))
        .await;
    assert!(body["error"].is_null(), "{body}");
    assert!(
        body.to_string().contains("gatehouse-"),
        "not posted directly: {body}"
    );

    // A 2026-07-28 caller cannot resume a stream: the gateway resumes the
    // upstream's and answers in one response.
    let body = server.call_tool(&analyst, "py__pause", json!({})).await;
    assert_eq!(text(&body), "answered after the pause", "{body}");

    // An upstream error comes back as through rmcp; the outcome is audited.
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "tools/call",
            json!({"name": "py__echo", "arguments": {"text": 5}}),
        )
        .await;
    assert!(
        body.get("error").is_some() || body["result"]["isError"] == json!(true),
        "{body}"
    );
    let records = server.audit(&["--principal", &analyst_id, "--tool", "py__pause"]);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success"),
        "{records:?}"
    );
}

/// Two tenants watch one resource of an upstream they share (its
/// credential is Gatehouse's own, so one connection serves both): one
/// tenant's unsubscribing must not end the subscription at the upstream
/// that the other tenant's session still relies on (the attack: a tenant
/// silences another's updates by subscribing and unsubscribing).
#[tokio::test]
async fn one_tenant_unsubscribing_does_not_end_another_tenants_watch() {
    let Some(python) = python() else { return };
    let server = server_with_policy(&python, LEGACY, &[], "[tenants.acme]\n[tenants.globex]\n");
    let (_, acme) = server.create_key("acme-admin", "admin", &["--tenant", "acme"]);
    let (_, globex) = server.create_key("globex-admin", "admin", &["--tenant", "globex"]);
    let (_, analyst) = server.create_key("analyst", "analyst", &["--tenant", "globex"]);
    ready(&server, &analyst).await;
    let touch = || server.call_tool(&analyst, "py__touch", json!({"uri": "memo://team/note"}));
    let mut sessions = Vec::new();
    for key in [&globex, &acme] {
        let id = session(&server, key, json!({})).await;
        let answer = server
            .post_legacy(
                key,
                Some(&id),
                json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe",
                       "params": {"uri": "memo://team/note"}}),
            )
            .await;
        let answer = super::harness::parse_body(&answer.text().await.unwrap());
        assert!(answer["error"].is_null(), "{answer}");
        sessions.push(id);
    }
    let answer = touch().await;
    assert_ne!(text(&answer), "not subscribed", "{answer}");
    // acme unsubscribes; globex still watches.
    let answer = server
        .post_legacy(
            &acme,
            Some(&sessions[1]),
            json!({"jsonrpc": "2.0", "id": 2, "method": "resources/unsubscribe",
                   "params": {"uri": "memo://team/note"}}),
        )
        .await;
    let answer = super::harness::parse_body(&answer.text().await.unwrap());
    assert!(answer["error"].is_null(), "{answer}");
    // An unsubscribe at the upstream would follow within moments.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = touch().await;
        assert_ne!(
            text(&answer),
            "not subscribed",
            "one tenant's unsubscribe ended another's watch: {answer}"
        );
    }
}

/// A listen stream outlives the request that opened it: its credential is
/// checked again while it is open, so revoking the key ends the stream
/// (with the reason, on record), rather than leaving a revoked caller to
/// hear of changes for as long as it keeps the stream open.
#[tokio::test]
async fn a_listen_stream_ends_when_its_key_is_revoked() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    ready(&server, &analyst).await;
    let mut stream = listen(&server, &analyst, 9, json!({"toolsListChanged": true})).await;
    let ack = within(&mut stream, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    // Still open while nothing changes.
    assert!(within(&mut stream, Duration::from_secs(2)).await.is_none());
    let out = server.cli(&["keys", "revoke", &analyst_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = loop {
        let message = within(&mut stream, Duration::from_secs(15))
            .await
            .expect("the stream of a revoked key went on");
        if message.get("id").is_some() {
            break message;
        }
    };
    assert_eq!(ended["id"], 9, "{ended}");
    assert_eq!(reason(&ended), "revoked", "{ended}");
    let records = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    assert!(
        records.iter().any(|r| r["reason"] == "credential_lapsed"
            && r["error"].as_str().is_some_and(|e| e.contains("(revoked)"))
            && r["credential"] == analyst_id.as_str()),
        "{records:?}"
    );
}

/// A 2025-11-25 session's stream stays open between requests: when the
/// session's key is revoked, the session is ended (its stream closes, its
/// id is forgotten) and recorded, rather than hearing on until it idles out.
#[tokio::test]
async fn a_session_ends_when_its_key_is_revoked() {
    let Some(python) = python() else { return };
    let server = server(&python);
    let (admin_id, admin) = server.create_key("admin", "admin", &[]);
    ready(&server, &admin).await;
    let session_id = session(&server, &admin, json!({})).await;
    let mut stream = Events {
        response: super::sessions::open_stream(&server, &admin, &session_id).await,
        buffer: String::new(),
    };
    // Open while nothing changes (catalogue notices may come).
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(quiet.is_err(), "the session's stream ended by itself");
    let out = server.cli(&["keys", "revoke", &admin_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while stream.next().await.is_some() {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream of a revoked key's session went on"
    );
    let records = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    assert!(
        records.iter().any(|r| r["reason"] == "credential_lapsed"
            && r["error"].as_str().is_some_and(|e| e.contains("(revoked)"))
            && r["session"] == session_id.as_str()
            && r["credential"] == admin_id.as_str()),
        "{records:?}"
    );
}
