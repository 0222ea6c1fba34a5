//! The shipped role × tool matrix over HTTP, exhaustively: for every role,
//! `tools/list` shows exactly the tools it may call (directly or with
//! approval) and `tools/call` of every tool is allowed, refused, or
//! refused pending approval, as the table says.

use serde_json::{Value, json};

use super::harness::Server;

/// (tool, arguments that pass the tool's own validation)
fn tools() -> Vec<(&'static str, Value)> {
    vec![
        ("whoami", json!({})),
        ("read_file", json!({"path": "matrix.txt"})),
        ("search_database", json!({"query": "acme"})),
        ("web_fetch", json!({"url": "https://example.com/"})),
        ("write_file", json!({"path": "matrix.txt", "content": "x"})),
        (
            "send_email",
            json!({"to": "a@example.com", "subject": "s", "body": "b"}),
        ),
        ("execute_code", json!({"expression": "1 + 1"})),
        ("access_secrets", json!({})),
        ("modify_mcp_config", json!({})),
        ("rm_rf", json!({})),
    ]
}

/// allow / deny / approval, written out (not computed from the policy).
const MATRIX: &[(&str, [&str; 10])] = &[
    // whoami read search web write email exec secrets config rm_rf
    (
        "reader",
        [
            "allow", "allow", "allow", "deny", "deny", "deny", "deny", "deny", "deny", "deny",
        ],
    ),
    (
        "analyst",
        [
            "allow", "allow", "allow", "allow", "deny", "deny", "deny", "deny", "deny", "deny",
        ],
    ),
    (
        "executor",
        [
            "allow", "allow", "allow", "allow", "approval", "approval", "approval", "deny", "deny",
            "deny",
        ],
    ),
    (
        "admin",
        [
            "allow", "allow", "allow", "allow", "allow", "allow", "allow", "approval", "approval",
            "deny",
        ],
    ),
];

/// What a call's answer means: the tool ran (even if it reported an error
/// of its own, e.g. a missing file or a host not on the fetch allowlist),
/// gate 2 refused it, or gate 2 asks for a human.
fn outcome(body: &Value) -> &'static str {
    match body["error"]["data"]["reason"].as_str() {
        None if body["result"].is_object() => "allow",
        Some("approval_required") => "approval",
        Some(_) => "deny",
        None => panic!("neither a result nor a refusal: {body}"),
    }
}

#[tokio::test]
async fn every_role_lists_and_calls_exactly_what_the_matrix_says() {
    let server = Server::start(None);
    for (role, expected) in MATRIX {
        let (_, key) = server.create_key(&format!("m-{role}"), role, &[]);
        let mut listed = server.tool_names(&key).await;
        listed.sort();
        let mut visible: Vec<String> = tools()
            .iter()
            .zip(expected.iter())
            .filter(|(_, access)| **access != "deny")
            .map(|((tool, _), _)| tool.to_string())
            .collect();
        visible.sort();
        assert_eq!(listed, visible, "tools/list for {role}");
        for ((tool, args), access) in tools().iter().zip(expected.iter()) {
            let body = server.call_tool(&key, tool, args.clone()).await;
            assert_eq!(outcome(&body), *access, "{role} calling {tool}: {body}");
        }
    }
}
