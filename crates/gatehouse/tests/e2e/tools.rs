//! Gate 2 and dispatch end to end: listing per role, allowed and denied calls.

use serde_json::{Value, json};

use super::harness::Server;

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn tools_list_shows_only_what_each_role_may_call() {
    let server = Server::start(None);
    let expected: [(&str, &[&str]); 4] = [
        ("reader", &["read_file", "search_database", "whoami"]),
        (
            "analyst",
            &["read_file", "search_database", "web_fetch", "whoami"],
        ),
        (
            "executor",
            &[
                "execute_code",
                "read_file",
                "search_database",
                "send_email",
                "web_fetch",
                "whoami",
                "write_file",
            ],
        ),
        (
            "admin",
            &[
                "access_secrets",
                "execute_code",
                "modify_mcp_config",
                "read_file",
                "search_database",
                "send_email",
                "web_fetch",
                "whoami",
                "write_file",
            ],
        ),
    ];
    for (role, tools) in expected {
        let (_, key) = server.create_key(&format!("k-{role}"), role, &[]);
        assert_eq!(sorted(server.tool_names(&key).await), tools, "{role}");
    }
    // Scopes narrow further.
    let (_, scoped) = server.create_key("scoped", "admin", &["--scopes", "tools:read"]);
    assert_eq!(
        sorted(server.tool_names(&scoped).await),
        ["read_file", "search_database", "whoami"]
    );
}

fn error_of(body: &Value) -> &Value {
    &body["error"]
}

#[tokio::test]
async fn allowed_call_runs_and_denied_call_is_refused_and_audited() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let (reader_id, reader) = server.create_key("reader", "reader", &["--owner", "bob"]);

    // Admin writes a file; the reader reads it back.
    let written = server
        .call_tool(
            &admin,
            "write_file",
            json!({"path": "notes/hello.txt", "content": "hello gatehouse"}),
        )
        .await;
    assert_eq!(written["result"]["isError"], false, "{written}");
    let read = server
        .call_tool(&reader, "read_file", json!({"path": "notes/hello.txt"}))
        .await;
    assert_eq!(read["result"]["content"][0]["text"], "hello gatehouse");

    // The reader may not fetch the web: a JSON-RPC error naming the reason.
    let denied = server
        .call_tool(&reader, "web_fetch", json!({"url": "https://example.com/"}))
        .await;
    let error = error_of(&denied);
    assert_eq!(error["code"], -32001);
    assert_eq!(error["data"]["reason"], "role_not_allowed");
    assert!(error["message"].as_str().unwrap().contains("web_fetch"));

    // Tools needing an operation token are refused with that reason for now.
    let (_, executor) = server.create_key("exec", "executor", &[]);
    let needs_token = server
        .call_tool(
            &executor,
            "send_email",
            json!({"to": "a@example.com", "subject": "s", "body": "b"}),
        )
        .await;
    assert_eq!(
        error_of(&needs_token)["data"]["reason"],
        "approval_required"
    );

    // Unknown tools are denied, never dispatched.
    let unknown = server.call_tool(&admin, "rm_rf", json!({})).await;
    assert_eq!(error_of(&unknown)["data"]["reason"], "unknown_tool");

    // The denial is in the audit log with its reason.
    let denials = server.audit(&[
        "--outcome",
        "denied",
        "--tool",
        "web_fetch",
        "--since",
        "1h",
    ]);
    assert_eq!(denials.len(), 1);
    let record = &denials[0];
    assert_eq!(record["reason"], "role_not_allowed");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["credential"], reader_id.as_str());
    assert_eq!(record["human"], "bob");
    assert_eq!(record["tenant"], "default");
    assert_eq!(record["arguments"]["url"], "https://example.com/");
    assert_eq!(record["source"], "127.0.0.1");

    // The allowed call left a decision and an outcome with size and latency.
    let reads = server.audit(&["--tool", "read_file", "--principal", &reader_id]);
    let kinds: Vec<&str> = reads.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["tool_decision", "tool_outcome"]);
    assert_eq!(reads[1]["outcome"], "success");
    assert_eq!(reads[1]["result_bytes"], 15);
    assert!(reads[1]["latency_us"].as_u64().is_some());

    // The JSON-lines file has the same records.
    let file = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).unwrap();
    assert!(file.lines().any(|l| l.contains("role_not_allowed")));
}

#[tokio::test]
async fn tool_errors_are_results_not_protocol_errors() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let escape = server
        .call_tool(&admin, "read_file", json!({"path": "../../etc/passwd"}))
        .await;
    assert_eq!(escape["result"]["isError"], true, "{escape}");
    let outcome = server.audit(&["--tool", "read_file", "--outcome", "error"]);
    assert_eq!(outcome.len(), 1);
    assert_eq!(outcome[0]["reason"], "refused");

    let web = server
        .call_tool(
            &admin,
            "web_fetch",
            json!({"url": "http://169.254.169.254/latest/meta-data"}),
        )
        .await;
    assert_eq!(web["result"]["isError"], true);
    assert!(
        web["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("refused")
    );
}

#[tokio::test]
async fn built_in_tools_do_their_jobs() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();

    let search = server
        .call_tool(&admin, "search_database", json!({"query": "a", "limit": 3}))
        .await;
    assert!(
        search["result"]["structuredContent"]["count"]
            .as_u64()
            .unwrap()
            > 0,
        "{search}"
    );

    let sum = server
        .call_tool(&admin, "execute_code", json!({"expression": "2 + 3 * 4"}))
        .await;
    assert_eq!(sum["result"]["structuredContent"]["value"], 14);

    let mail = server
        .call_tool(
            &admin,
            "send_email",
            json!({"to": "ops@example.com", "subject": "hi", "body": "text"}),
        )
        .await;
    assert_eq!(mail["result"]["isError"], false, "{mail}");
    let outbox = server.data_dir().join("sandbox/tenants/default/outbox");
    let mails: Vec<_> = std::fs::read_dir(outbox).unwrap().collect();
    assert_eq!(mails.len(), 1);

    let who = server.call_tool(&admin, "whoami", json!({})).await;
    assert_eq!(
        who["result"]["structuredContent"]["roles"],
        json!(["admin"])
    );
}
