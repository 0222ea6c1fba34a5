//! No call is answered without its records on disk (issue 12): the server
//! is killed with SIGKILL while 16 clients call a tool, and every call that
//! got its answer has its decision and outcome records in the database and
//! in `audit.jsonl`. (Without `audit.fsync` the records are in the page
//! cache when the answer leaves, which a killed process cannot lose; a
//! power cut needs `fsync = true`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;

use super::harness::Server;

const CLIENTS: usize = 16;
/// Answered calls before the kill.
const KILL_AFTER: u64 = 400;

#[tokio::test]
async fn kill_minus_nine_under_load_loses_no_record_of_an_answered_call() {
    let server = Arc::new(Server::start(None));
    let (_, reader) = server.create_key("load", "reader", &[]);
    let pid = server.child.id();
    let answered = Arc::new(AtomicU64::new(0));

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let server = Arc::clone(&server);
        let reader = reader.clone();
        let answered = Arc::clone(&answered);
        clients.push(tokio::spawn(async move {
            loop {
                let request = server
                    .http
                    .post(server.mcp_url())
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", super::harness::MODERN)
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "whoami")
                    .bearer_auth(&reader)
                    .json(&json!({
                        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "whoami", "arguments": {}, "_meta": {
                            "io.modelcontextprotocol/protocolVersion": super::harness::MODERN,
                            "io.modelcontextprotocol/clientCapabilities": {}}}
                    }));
                // Once the server is gone, requests fail: the client stops.
                let Ok(response) = request.send().await else {
                    return;
                };
                let Ok(text) = response.text().await else {
                    return;
                };
                let body = super::harness::parse_body(&text);
                if body["result"]["structuredContent"].is_object()
                    || body["result"]["content"].is_array()
                {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Kill when enough calls were answered (a count, not a clock).
    let watcher = {
        let answered = Arc::clone(&answered);
        tokio::spawn(async move {
            while answered.load(Ordering::SeqCst) < KILL_AFTER {
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        })
    };
    watcher.await.unwrap();
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.load(Ordering::SeqCst);
    assert!(answered >= KILL_AFTER);

    // The database: a decision and an outcome per answered call at least
    // (calls in flight at the kill may have a decision and no answer).
    let count = |kind: &str| {
        server
            .audit(&["--kind", kind, "--tool", "whoami", "--limit", "100000"])
            .len() as u64
    };
    let outcomes = count("tool_outcome");
    let decisions = count("tool_decision");
    assert!(
        outcomes >= answered,
        "{answered} calls answered, {outcomes} outcome records"
    );
    assert!(decisions >= outcomes, "{decisions} < {outcomes}");

    // The file: the same.
    let text = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).unwrap();
    let in_file = text
        .lines()
        .filter(|l| l.contains("\"kind\":\"tool_outcome\"") && l.contains("\"tool\":\"whoami\""))
        .count() as u64;
    assert!(
        in_file >= answered,
        "{answered} calls answered, {in_file} outcome lines in audit.jsonl"
    );

    // And the chain of what was written is intact (no checkpoint at the
    // end: the server had no time to sign one).
    let out = server.cli(&["audit", "verify", "--json"]);
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
