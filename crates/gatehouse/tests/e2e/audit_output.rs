//! What the audit log keeps and shows: text output that stored strings
//! cannot forge (issue 9 item 10), and secrets in compound argument names
//! kept out of the database and `audit.jsonl` (item 11).

use serde_json::{Value, json};

use super::browser::Browser;
use super::harness::{LEGACY, Server};

const FORGED_NAME: &str =
    "x\n2026-01-01T00:00:00.000Z authentication success admin/- tenant=default tool=oauth/login";

/// The text lines of `gatehouse audit query ARGS` (not `--json`).
fn audit_text(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["audit", "query"];
    all.extend_from_slice(args);
    let out = server.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A name typed at the sign-in form is the caller's to choose: one of a
/// few hundred kilobytes was a key of the failure counts and of the burst
/// detector's table, whole, for every attempt. No user can have it: it is
/// refused for its name, and the record keeps only its start.
#[tokio::test]
async fn a_sign_in_with_a_name_no_user_can_have_is_refused_for_its_name() {
    let server = Server::start(None);
    let mut browser = Browser::new(&server);
    let login = browser.visit("/device").await;
    let name = "a".repeat(200_000);
    let refused = browser.login(&login, &name, "whatever-password").await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let records = server.audit(&["--tool", "oauth/login"]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["reason"], "invalid_username");
    let human = records[0]["human"].as_str().unwrap();
    assert!(human.len() < 5_000, "{} bytes recorded", human.len());
    assert!(human.ends_with("more bytes not recorded]"), "{human}");
}

#[tokio::test]
async fn a_user_name_with_a_newline_cannot_forge_an_audit_line() {
    let server = Server::start(None);
    let mut browser = Browser::new(&server);
    let login = browser.visit("/device").await;
    let refused = browser
        .login(&login, FORGED_NAME, "whatever-password")
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);

    // One line, the newline written as `\n`, nothing that reads as a success.
    let text = audit_text(&server, &["--tool", "oauth/login"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    // (User names are compared in lower case, so that is how it is stored.)
    assert!(
        lines[0].contains(r"x\n2026-01-01t00:00:00.000z authentication success admin"),
        "{text}"
    );
    assert!(lines[0].contains(" authentication failure "), "{text}");

    // The attempt is recorded, refused for its name.
    let records = server.audit(&["--tool", "oauth/login"]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["reason"], "invalid_username");
    assert_eq!(records[0]["outcome"], "failure");
    // Nor can such a user be created.
    let out = server.cli(&["users", "add", "x\nadmin", "--role", "reader"]);
    assert!(!out.status.success());

    // A tool name is chosen by the caller too: control and bidirectional
    // characters reach neither `query` nor `tail` raw.
    let (_, reader) = server.create_key("reader", "reader", &[]);
    let tool = "evil\u{202E}txt.exe\r\u{1b}[2Kforged\u{7}";
    // (A 2025-11-25 session: the newer protocol repeats the name in a
    // header, where these characters cannot go.)
    let initialized = server
        .post_legacy(
            &reader,
            None,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": LEGACY,
                "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"}
            }}),
        )
        .await;
    let session = initialized.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    server
        .post_legacy(
            &reader,
            Some(&session),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    let called = server
        .post_legacy(
            &reader,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": tool, "arguments": {}}}),
        )
        .await;
    assert_eq!(called.status(), 200);
    assert_eq!(
        server.audit(&["--kind", "tool_decision"]).len(),
        1,
        "the call was not recorded"
    );
    for args in [
        vec!["audit", "query", "--kind", "tool_decision"],
        vec!["audit", "tail", "-n", "50"],
    ] {
        let out = server.cli(&args);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(r"evil\u{202e}txt.exe\r\u{1b}[2Kforged\u{7}"),
            "{args:?}: {text}"
        );
        for raw in ['\u{202E}', '\r', '\u{1b}', '\u{7}'] {
            assert!(!text.contains(raw), "{args:?}: raw {raw:?} in {text:?}");
        }
    }
}

#[tokio::test]
async fn secrets_in_compound_argument_names_stay_out_of_the_database_and_the_file() {
    let mut server = Server::start(None);
    let (_, reader) = server.create_key("reader", "reader", &[]);
    let secrets = [
        "db-pass-Hq7Zq",
        "gh-token-Wm3Kd",
        "aws-secret-Pd8Rt",
        "camel-pass-Lx2Vb",
        "kebab-key-Ty6Nc",
    ];
    server
        .call_tool(
            &reader,
            "search_database",
            json!({
                "query": "widgets",
                "db_password": secrets[0],
                "config": {
                    "github_token": secrets[1],
                    "profiles": [{"aws_secret_access_key": secrets[2]}],
                },
                "accounts": [{"dbPassword": secrets[3]}, {"X-Api-Key": secrets[4]}],
            }),
        )
        .await;
    let records = server.audit(&["--tool", "search_database"]);
    assert!(!records.is_empty());
    let args = &records[0]["arguments"];
    assert_eq!(args["query"], "widgets", "{args}");
    assert_eq!(args["db_password"], "[REDACTED]", "{args}");
    assert_eq!(args["config"]["github_token"], "[REDACTED]", "{args}");
    assert_eq!(
        args["config"]["profiles"][0]["aws_secret_access_key"], "[REDACTED]",
        "{args}"
    );
    let status = server.stop();
    assert!(status.success(), "graceful shutdown: {status:?}");

    // Neither the JSON-lines file nor any byte of the database holds them.
    let mut stored = std::fs::read(server.data_dir().join("audit.jsonl")).unwrap();
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("gatehouse.db") {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains("widgets"), "the database was not read");
    for secret in secrets {
        assert!(!stored.contains(secret), "{secret} is stored in clear");
    }
}

/// An argument string is recorded up to 16 KiB: a call that hid what it
/// sent past the cut (`https://allowed.example/` and 17 KiB of padding,
/// then `?d=<secret>`) left it out of the trail with nothing to check it
/// by. Its records now carry the keyed hash of the exact arguments, which
/// `gatehouse approvals hash` computes from the arguments a suspect sent;
/// a call recorded whole carries none (it would cost every call).
#[tokio::test]
async fn a_record_that_cuts_an_argument_carries_the_exact_arguments_hash() {
    let mut server = Server::start(None);
    let (_, reader) = server.create_key("reader", "reader", &[]);
    let long = json!({"query": format!("{}?d=exfiltrated", "x".repeat(17 * 1024))});
    let short = json!({"query": "widgets"});
    // The tool answers so long a query with an error result; what counts
    // here is what the records of the call hold.
    for arguments in [&long, &short] {
        let body = server
            .call_tool(&reader, "search_database", arguments.clone())
            .await;
        assert!(body["result"].is_object(), "{body}");
    }
    // A redacted argument gets no hash: a password or a one-time code is
    // few enough guesses to find from it and the rest of the record.
    let token = json!({"query": "widgets", "api_key": "sk-live-0123456789abcdef0123456789abcdef"});
    server
        .call_tool(&reader, "search_database", token.clone())
        .await;
    let out = server.cli_with_stdin(&["approvals", "hash"], Some(&long.to_string()));
    assert!(out.status.success());
    let expected = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut records = server.audit(&["--tool", "search_database"]);
    let (redacted, rest): (Vec<Value>, Vec<Value>) = records
        .drain(..)
        .partition(|r| r["arguments"]["api_key"].is_string());
    let records = rest;
    assert_eq!(redacted.len(), 2, "{redacted:?}");
    for record in &redacted {
        assert_eq!(record["arguments"]["api_key"], "[REDACTED]", "{record}");
        assert!(record["args_sha256"].is_null(), "{record}");
    }
    let (cut, whole): (Vec<&Value>, Vec<&Value>) = records.iter().partition(|r| {
        r["arguments"]["query"]
            .as_str()
            .is_some_and(|q| q.len() > 1024)
    });
    assert_eq!((cut.len(), whole.len()), (2, 2), "{records:?}");
    for record in cut {
        assert!(
            !record["arguments"]["query"]
                .as_str()
                .unwrap()
                .contains("exfiltrated")
        );
        assert_eq!(record["args_sha256"], json!(expected), "{record}");
    }
    for record in whole {
        assert!(record["args_sha256"].is_null(), "{record}");
    }
    assert!(server.stop().success());
}
