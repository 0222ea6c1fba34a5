//! What a person reads: command errors, printed URLs and values, tool error
//! texts, and the server's log on an ordinary denial.

use std::process::Command;

use serde_json::json;

use super::harness::{BIN, Server};

fn gatehouse(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_LOG")
        .output()
        .unwrap()
}

#[test]
fn command_errors_are_one_plain_line_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = gatehouse(
        dir.path(),
        &["check-config", "--config", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes into a pipe: {stderr:?}"
    );
    assert!(!stderr.contains("ERROR"), "not a log line: {stderr:?}");
    // The cause is said once, not "X: X".
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr:?}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(out.stdout.is_empty());

    let out = gatehouse(dir.path(), &["keys", "revoke", "nope"]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr, "error: no active key with id \"nope\"\n");
}

#[test]
fn clients_create_prints_the_configured_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        "version = 1\n[server]\npublic_url = \"https://mcp.example.com\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = gatehouse(
        dir.path(),
        &[
            "clients", "create", "--name", "nightly", "--role", "reader", "--config", config,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("<public-url>"), "{text}");
    assert!(
        text.contains("https://mcp.example.com/oauth/token"),
        "{text}"
    );
    // Without a configured URL the listen address is the URL.
    let out = gatehouse(
        dir.path(),
        &[
            "clients",
            "create",
            "--name",
            "web",
            "--role",
            "reader",
            "--public",
            "--redirect-uri",
            "http://127.0.0.1/cb",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("http://127.0.0.1:8787/authorize"), "{text}");
}

#[tokio::test]
async fn tool_errors_say_what_happened_once_and_denials_are_not_warnings() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let body = server
        .call_tool(&admin, "web_fetch", json!({"url": "https://example.com"}))
        .await;
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("refused: web_fetch is switched off"),
        "{text}"
    );
    assert_eq!(text.matches("refused").count(), 1, "{text}");

    let (_, reader) = server.create_key("r", "reader", &[]);
    let body = server.call_tool(&reader, "web_fetch", json!({})).await;
    assert_eq!(body["error"]["data"]["reason"], "role_not_allowed");
    // The denial is an audit record; the log has no warning with a Debug dump of it.
    assert_eq!(
        server
            .audit(&["--outcome", "denied", "--tool", "web_fetch"])
            .len(),
        1
    );
    let log = std::fs::read_to_string(server.stderr_path()).unwrap();
    assert!(!log.contains("ErrorData"), "{log}");
    assert!(!log.contains("response error"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes into a file: {log}"
    );
}
