//! `gatehouse stdio`: the same tools and policy for local clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::harness::{BIN, LEGACY, Server};

fn stdio_session(
    server: &Server,
    key: Option<&str>,
    messages: &[Value],
) -> (bool, Vec<Value>, String) {
    let mut command = Command::new(BIN);
    command
        .arg("stdio")
        .arg("--data-dir")
        .arg(server.data_dir())
        .env_remove("GATEHOUSE_API_KEY")
        .env("GATEHOUSE_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(key) = key {
        command.env("GATEHOUSE_API_KEY", key);
    }
    if let Some(config) = server.config_path() {
        command.arg("--config").arg(config);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut responses = Vec::new();
    for message in messages {
        if writeln!(stdin, "{message}").is_err() {
            break;
        }
        let _ = stdin.flush();
        if message.get("id").is_some() {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            responses.push(serde_json::from_str(&line).unwrap());
        }
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        responses,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// `gatehouse stdio` on `server`'s data directory with `key`, its stdin
/// and stdout piped for the test to drive.
fn spawn_with_key(server: &Server, key: &str, stderr: Stdio) -> std::process::Child {
    Command::new(BIN)
        .arg("stdio")
        .arg("--data-dir")
        .arg(server.data_dir())
        .env("GATEHOUSE_API_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// `initialize` declaring `task` in its `_meta`.
/// A `gatehouse stdio` child with `key`, initialized (its stdin kept open:
/// dropping it would end the connection).
fn initialized(server: &Server, key: &str) -> (std::process::Child, std::process::ChildStdin) {
    let (child, stdin, _) = initialized_with(server, key, Stdio::piped());
    (child, stdin)
}

/// [`initialized`], its stderr as given, and its stdout kept for reading
/// later answers.
fn initialized_with(
    server: &Server,
    key: &str,
    stderr: Stdio,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    BufReader<std::process::ChildStdout>,
) {
    let mut child = spawn_with_key(server, key, stderr);
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for m in handshake() {
        writeln!(stdin, "{m}").unwrap();
    }
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"result\""), "{line}");
    (child, stdin, stdout)
}

/// Waits up to `tenths` tenths of a second for `child` to end with a
/// failure status (killing it and failing with `why` otherwise); its stderr.
fn failed_within(child: &mut std::process::Child, tenths: u32, why: &str) -> String {
    let mut status = None;
    for _ in 0..tenths {
        if let Some(exited) = child.try_wait().unwrap() {
            status = Some(exited);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("{why}");
    };
    assert!(!status.success());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

fn initialize_with_task(task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"},
        "_meta": {"io.gatehouse/task": task}}})
}

fn handshake() -> Vec<Value> {
    vec![
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ]
}

#[tokio::test]
async fn stdio_lists_calls_and_denies_under_the_same_policy() {
    let mut server = Server::start(None);
    let (id, key) = server.create_key("local", "reader", &[]);
    let mut messages = handshake();
    messages.push(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    messages.push(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}}));
    messages.push(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "write_file", "arguments": {"path": "x", "content": "y"}}}));
    let (_, responses, stderr) = stdio_session(&server, Some(&key), &messages);
    assert_eq!(responses.len(), 4, "{stderr}");
    assert_eq!(responses[1]["result"]["tools"].as_array().unwrap().len(), 3);
    assert_eq!(
        responses[2]["result"]["structuredContent"]["credential"]["id"],
        id.as_str()
    );
    assert_eq!(responses[3]["error"]["data"]["reason"], "role_not_allowed");
    let audit = server.audit(&["--principal", &id, "--tool", "write_file"]);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["source"], "stdio");
    assert_eq!(audit[0]["outcome"], "denied");
    // The stdio run signed its chain (at the end, and at intervals while
    // it runs), so once the server has stopped (and signed its own), the
    // trail is vouched for to its last record.
    assert!(server.stop().success());
    let verified = server.cli_json(&["audit", "verify"]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(
        verified["records_after_last_checkpoint"], 0,
        "{verified} {stderr}"
    );
}

/// Over stdio the SDK took messages up to 16 MiB, sixteen times what the
/// server takes over HTTP: a message past `server.max_body_bytes` (1 MiB by
/// default) is dropped unread, and the connection goes on.
#[tokio::test]
async fn a_stdio_message_past_the_body_cap_is_dropped_unread() {
    let server = Server::start(None);
    let (id, key) = server.create_key("local", "reader", &[]);
    let (mut child, mut stdin, mut stdout) = initialized_with(&server, &key, Stdio::null());
    let padding = "x".repeat(2 * 1024 * 1024);
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {"padding": padding}}});
    writeln!(stdin, "{big}").unwrap();
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["id"], 2, "{answer}");
    drop(stdin);
    let _ = child.wait();
    assert!(
        server
            .audit(&["--principal", &id, "--tool", "whoami"])
            .is_empty()
    );
}

#[tokio::test]
async fn stdio_refuses_to_start_without_a_valid_key() {
    let server = Server::start(None);
    let (ok, responses, stderr) = stdio_session(&server, None, &handshake());
    assert!(!ok);
    assert!(responses.is_empty());
    assert!(stderr.contains("GATEHOUSE_API_KEY"), "{stderr}");
    let (ok, responses, _) = stdio_session(&server, Some("ghk_000000000000_bad"), &handshake());
    assert!(!ok);
    assert!(responses.is_empty());
}

#[tokio::test]
async fn stdio_checks_the_key_on_every_request() {
    let server = Server::start(None);
    let (id, key) = server.create_key("local", "reader", &[]);
    // Revoke between start and the call: the next request is refused.
    let mut child = spawn_with_key(&server, &key, Stdio::null());
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for m in handshake() {
        writeln!(stdin, "{m}").unwrap();
    }
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    server.cli_json(&["keys", "revoke", &id]);
    writeln!(
        stdin,
        "{}",
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    )
    .unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    // Refused, unless the connection saw the revocation first and ended
    // (`a_revoked_key_ends_the_stdio_connection`).
    if !line.is_empty() {
        let response: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(response["error"]["data"]["reason"], "revoked", "{response}");
    }
    drop(stdin);
    let _ = child.wait();
}

/// A connection that only listens (a client subscribed to resources hears
/// of them between its requests) ends once its key is revoked, without a
/// request of its own, and the ending is recorded.
#[tokio::test]
async fn a_revoked_key_ends_the_stdio_connection() {
    let server = Server::start(None);
    let (id, key) = server.create_key("local", "reader", &[]);
    let (mut child, stdin) = initialized(&server, &key);
    server.cli_json(&["keys", "revoke", &id]);
    // stdin stays open: only the revocation can end the process.
    let stderr = failed_within(
        &mut child,
        600,
        "the stdio connection outlived its revoked key",
    );
    assert!(stderr.contains("no longer holds (revoked)"), "{stderr}");
    drop(stdin);
    let records = server.audit(&["--principal", &id]);
    assert!(
        records.iter().any(|r| r["reason"] == "credential_lapsed"
            && r["source"] == "stdio"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("the stdio connection"))),
        "{records:?}"
    );
}

/// A key rotated with an overlap expires at the end of it: a connection
/// opened with the old key ends then, not when something else next
/// changes (it went on hearing notifications for good).
#[tokio::test]
async fn a_stdio_connection_ends_when_its_rotated_keys_overlap_ends() {
    let server = Server::start(None);
    let (id, key) = server.create_key("local", "reader", &[]);
    let (mut child, stdin) = initialized(&server, &key);
    server.cli_json(&["keys", "rotate", &id, "--overlap", "2s"]);
    let stderr = failed_within(
        &mut child,
        300,
        "the stdio connection outlived its rotated key's overlap",
    );
    assert!(stderr.contains("expired"), "{stderr}");
    drop(stdin);
}

#[tokio::test]
async fn stdio_refuses_a_principal_of_an_undeclared_tenant_like_http() {
    // A key of tenant "default", then a policy that declares other tenants.
    let default = include_str!("../../../gatehouse-policy/src/default_policy.toml");
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, default).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (id, key) = server.create_key("stray", "admin", &[]);
    std::fs::write(&policy_path, format!("{default}\n[tenants.acme]\n")).unwrap();
    let mut messages = handshake();
    messages.push(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    messages.push(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}}}));
    let (_, responses, stderr) = stdio_session(&server, Some(&key), &messages);
    assert_eq!(responses.len(), 3, "{stderr}");
    for response in &responses[1..] {
        assert_eq!(
            response["error"]["data"]["reason"], "unknown_tenant",
            "{response}"
        );
    }
    let anomalies = server.audit(&["--principal", &id, "--kind", "anomaly"]);
    assert!(
        anomalies
            .iter()
            .any(|r| r["reason"] == "unknown_tenant" && r["source"] == "stdio"),
        "{anomalies:?}"
    );
}

#[tokio::test]
async fn a_task_declared_at_initialize_binds_a_stdio_connection() {
    let server = Server::start(None);
    let (id, key) = server.create_key("local", "analyst", &[]);
    let messages = vec![
        initialize_with_task("outreach"),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        // In the task.
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "search_database", "arguments": {"query": "acme"}}}),
        // The analyst's role allows it, the task does not.
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "read_file", "arguments": {"path": "notes.txt"}}}),
    ];
    let (_, responses, stderr) = stdio_session(&server, Some(&key), &messages);
    assert_eq!(responses.len(), 3, "{stderr}");
    assert!(responses[0]["error"].is_null(), "{}", responses[0]);
    assert!(responses[1]["error"].is_null(), "{}", responses[1]);
    assert_eq!(
        responses[2]["error"]["data"]["reason"], "outside_task",
        "{}",
        responses[2]
    );
    let denied = server.audit(&["--principal", &id, "--tool", "read_file"]);
    assert!(
        denied.iter().any(|r| r["reason"] == "outside_task"),
        "{denied:?}"
    );

    // A task the policy does not declare is refused at initialize.
    let mut unknown = messages.clone();
    unknown[0]["params"]["_meta"]["io.gatehouse/task"] = json!("exfiltrate");
    unknown.truncate(1);
    let (_, responses, stderr) = stdio_session(&server, Some(&key), &unknown);
    assert_eq!(responses.len(), 1, "{stderr}");
    assert_eq!(
        responses[0]["error"]["data"]["reason"], "unknown_task",
        "{}",
        responses[0]
    );
}

#[tokio::test]
async fn a_task_named_on_a_later_stdio_request_is_refused_as_a_switch() {
    let server = Server::start(None);
    let (id, key) = server.create_key("local", "analyst", &[]);
    let mut messages = handshake();
    // No task declared at initialize: naming one on a call does not narrow
    // the connection, and it must not be ignored either.
    messages.push(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search_database", "arguments": {"query": "acme"},
                   "_meta": {"io.gatehouse/task": "outreach"}}}));
    let (_, responses, stderr) = stdio_session(&server, Some(&key), &messages);
    assert_eq!(responses.len(), 2, "{stderr}");
    assert_eq!(
        responses[1]["error"]["data"]["reason"], "task_escalation",
        "{}",
        responses[1]
    );
    let anomalies = server.audit(&["--principal", &id, "--kind", "anomaly"]);
    assert!(
        anomalies.iter().any(|r| r["reason"] == "task_escalation"),
        "{anomalies:?}"
    );

    // Declared at initialize, the same task on a call is fine; another is a
    // switch.
    let messages = vec![
        initialize_with_task("outreach"),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "search_database", "arguments": {"query": "acme"},
                       "_meta": {"io.gatehouse/task": "outreach"}}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "search_database", "arguments": {"query": "acme"},
                       "_meta": {"io.gatehouse/task": "triage"}}}),
    ];
    let (_, responses, stderr) = stdio_session(&server, Some(&key), &messages);
    assert_eq!(responses.len(), 3, "{stderr}");
    assert!(responses[1]["error"].is_null(), "{}", responses[1]);
    assert_eq!(
        responses[2]["error"]["data"]["reason"], "task_escalation",
        "{}",
        responses[2]
    );
}

/// A stdio connection kept open while the operator changes the policy file
/// follows the change, as a server does.
#[tokio::test]
async fn a_long_stdio_connection_follows_the_policy_file() {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const POLICY: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (_, key) = server.create_key("local", "reader", &[]);
    let mut child = Command::new(BIN)
        .arg("stdio")
        .arg("--data-dir")
        .arg(server.data_dir())
        .arg("--config")
        .arg(server.config_path().unwrap())
        .env("GATEHOUSE_API_KEY", &key)
        .env("GATEHOUSE_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut ask = move |message: Value| -> Option<Value> {
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
        message.get("id")?;
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        Some(serde_json::from_str(&line).unwrap())
    };
    for message in handshake() {
        ask(message);
    }
    let fetch = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "web_fetch", "arguments": {"url": "http://127.0.0.1:9/"}}})
    };
    let before = ask(fetch(1)).unwrap();
    assert_eq!(
        before["error"]["data"]["reason"], "role_not_allowed",
        "{before}"
    );

    let opened = POLICY.replace(
        "[tools.web_fetch]\nscope = \"tools:web\"\nroles = [\"analyst\"]",
        "[tools.web_fetch]\nscope = \"tools:web\"\nroles = [\"reader\"]",
    );
    assert_ne!(opened, POLICY);
    std::fs::write(server.data_dir().join("policy.toml"), opened).unwrap();
    let start = Instant::now();
    while !log.lock().unwrap().contains("policy reloaded") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the stdio process did not reload the policy:\n{}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = ask(fetch(2)).unwrap();
    assert_ne!(
        after["error"]["data"]["reason"], "role_not_allowed",
        "{after}"
    );
    // Closing stdin ends the connection.
    drop(ask);
    assert!(child.wait().unwrap().success());
}
