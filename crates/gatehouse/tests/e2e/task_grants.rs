//! Task grants: an agent declares its task and gets role ∩ task, by token
//! exchange (RFC 8693) or at MCP initialize; escalation attempts are
//! refused and recorded as anomalies; grants are revocable by id.

use serde_json::{Value, json};

use super::browser::token;
use super::harness::{LEGACY, Server, parse_body};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEFAULT: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");

/// Exchanges `subject` for a task token; returns (status, body).
async fn exchange(server: &Server, subject: &str, task: &str) -> (u16, Value) {
    token(
        server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("task", task),
        ],
    )
    .await
}

fn task_token(body: &Value) -> String {
    body["access_token"].as_str().unwrap().to_string()
}

fn reason(body: &Value) -> String {
    body["error"]["data"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

#[tokio::test]
async fn a_task_token_holds_role_intersect_task_and_nothing_more() {
    let server = Server::start(None);
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    // outreach = whoami, search_database, send_email; an analyst may not
    // send email at all, and may read files but not in this task.
    let (status, body) = exchange(&server, &analyst, "outreach").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() <= 30 * 60);
    let details = &body["authorization_details"][0];
    assert_eq!(details["type"], "mcp_task");
    assert_eq!(details["task"], "outreach");
    assert_eq!(
        details["tools"],
        json!(["whoami", "search_database"]),
        "never the union: send_email is not the analyst's"
    );
    let task = task_token(&body);
    assert_eq!(
        sorted(server.tool_names(&task).await),
        ["search_database", "whoami"]
    );
    let whoami = server.call_tool(&task, "whoami", json!({})).await;
    assert!(whoami["result"].is_object(), "{whoami}");
    // read_file: the role allows it, the task does not.
    let outside = server
        .call_tool(&task, "read_file", json!({"path": "notes.txt"}))
        .await;
    assert_eq!(reason(&outside), "outside_task", "{outside}");
    // The base key itself still has its whole role.
    assert!(
        server
            .tool_names(&analyst)
            .await
            .contains(&"read_file".to_string())
    );
    let denied = server.audit(&["--tool", "read_file"]);
    let last = denied.last().unwrap();
    assert_eq!(last["reason"], "outside_task");
    assert!(last["session"].as_str().unwrap().starts_with("tg_"));
}

#[tokio::test]
async fn the_task_can_be_named_with_authorization_details() {
    let server = Server::start(None);
    let (_, reader) = server.create_key("agent", "reader", &[]);
    let (status, body) = token(
        &server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &reader),
            ("subject_token_type", ACCESS_TOKEN),
            (
                "authorization_details",
                r#"[{"type":"mcp_task","task":"research"}]"#,
            ),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["authorization_details"][0]["tools"],
        json!(["whoami", "read_file", "search_database"])
    );
    let metadata = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(EXCHANGE))
    );
    assert_eq!(
        metadata["authorization_details_types_supported"],
        json!(["mcp_task"])
    );
}

/// RFC 8707: a task token is for this server only; asking for one for
/// another resource is refused, not answered with one for this server.
#[tokio::test]
async fn a_task_token_for_another_resource_is_refused() {
    let server = Server::start(None);
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    let (status, body) = token(
        &server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &analyst),
            ("subject_token_type", ACCESS_TOKEN),
            ("task", "outreach"),
            ("resource", "https://elsewhere.example/mcp"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_target", "{body}");
    let mcp = server.mcp_url();
    let (status, body) = token(
        &server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &analyst),
            ("subject_token_type", ACCESS_TOKEN),
            ("task", "outreach"),
            ("resource", &mcp),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// A task token is accepted a little past `exp` like any token (clocks
/// differ), but its `exp` is the task's end: past it, it is refused.
#[tokio::test]
async fn a_task_token_stops_at_its_tasks_end_not_after_the_clock_leeway() {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "{DEFAULT}\n[tasks.brief]\ntools = [\"whoami\"]\nroles = [\"reader\"]\nmax_duration = \"2s\"\n"
    );
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (_, reader) = server.create_key("agent", "reader", &[]);
    let (status, body) = exchange(&server, &reader, "brief").await;
    assert_eq!(status, 200, "{body}");
    let token = task_token(&body);
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!(expires_in <= 2, "{body}");
    assert_eq!(
        server.rpc(Some(&token), "tools/list", json!({})).await.0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(expires_in * 1000 + 1100));
    let (status, body) = server
        .rpc(
            Some(&token),
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn escalation_attempts_are_refused_and_recorded_as_anomalies() {
    let dir = tempfile::tempdir().unwrap();
    let policy =
        format!("{DEFAULT}\n[tasks.deploy]\ntools = [\"execute_code\"]\nroles = [\"executor\"]\n");
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (_, reader) = server.create_key("agent", "reader", &[]);
    // A task the role may not claim.
    let (status, body) = exchange(&server, &reader, "deploy").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_authorization_details");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("task_not_allowed")
    );
    // A task that does not exist.
    let (_, body) = exchange(&server, &reader, "exfiltrate").await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("unknown_task")
    );
    // Another task inside a grant: the task token as subject.
    let (status, body) = exchange(&server, &reader, "research").await;
    assert_eq!(status, 200, "{body}");
    let research = task_token(&body);
    let (status, body) = exchange(&server, &research, "outreach").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("task_escalation")
    );
    // A forged subject gets nothing.
    let (status, body) = exchange(&server, "ghk_nope_nope", "research").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let anomalies: Vec<String> = server
        .audit(&["--kind", "anomaly"])
        .iter()
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect();
    for expected in ["task_not_allowed", "unknown_task", "task_escalation"] {
        assert!(anomalies.contains(&expected.to_string()), "{anomalies:?}");
    }
}

#[tokio::test]
async fn revoking_a_grant_or_its_base_key_stops_the_task_token() {
    let server = Server::start(None);
    let (key_id, reader) = server.create_key("agent", "reader", &[]);
    let (_, body) = exchange(&server, &reader, "research").await;
    let first = task_token(&body);
    let grant = body["authorization_details"][0]["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = server.cli_json(&["grants", "list"]);
    assert_eq!(listed[0]["id"], grant);
    assert_eq!(listed[0]["task"], "research");
    assert_eq!(server.tool_names(&first).await.len(), 3);
    server.cli_json(&["grants", "revoke", &grant]);
    let (status, _) = server.rpc(Some(&first), "tools/list", json!({})).await;
    assert_eq!(status, 401, "a revoked grant stops at the next request");
    // A second grant dies with the key it came from.
    let (_, body) = exchange(&server, &reader, "research").await;
    let second = task_token(&body);
    assert_eq!(server.tool_names(&second).await.len(), 3);
    server.cli_json(&["keys", "revoke", &key_id]);
    let (status, _) = server.rpc(Some(&second), "tools/list", json!({})).await;
    assert_eq!(status, 401);
}

async fn post(server: &Server, key: &str, session: Option<&str>, body: Value) -> reqwest::Response {
    server.post_legacy(key, session, body).await
}

fn initialize_with_task(task: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"},
        "_meta": {"io.gatehouse/task": task}
    }})
}

async fn rpc_in(
    server: &Server,
    key: &str,
    session: &str,
    id: u64,
    method: &str,
    params: Value,
) -> (u16, Value) {
    let response = post(
        server,
        key,
        Some(session),
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
    )
    .await;
    let status = response.status().as_u16();
    (status, parse_body(&response.text().await.unwrap()))
}

#[tokio::test]
async fn a_task_declared_at_initialize_binds_the_session() {
    let server = Server::start(None);
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    let (_, other) = server.create_key("other", "admin", &[]);
    let response = post(&server, &analyst, None, initialize_with_task("outreach")).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    post(
        &server,
        &analyst,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let (status, body) = rpc_in(&server, &analyst, &session, 1, "tools/list", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["search_database", "whoami"]);
    let (_, body) = rpc_in(
        &server,
        &analyst,
        &session,
        2,
        "tools/call",
        json!({"name": "read_file", "arguments": {"path": "x.txt"}}),
    )
    .await;
    assert_eq!(reason(&body), "outside_task", "{body}");
    // Switching task mid-session is refused and recorded.
    let (status, body) = rpc_in(
        &server,
        &analyst,
        &session,
        3,
        "tools/list",
        json!({"_meta": {"io.gatehouse/task": "research"}}),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(reason(&body), "task_escalation");
    // Another principal cannot use the session (and so not its grant).
    let (status, _) = rpc_in(&server, &other, &session, 4, "tools/list", json!({})).await;
    assert_eq!(status, 404);
    // Revoking the grant ends the session's use: its next request is
    // refused, or (once the check that follows every credential change has
    // run, within a second) the session is gone altogether.
    let grants = server.cli_json(&["grants", "list"]);
    let grant = grants[0]["id"].as_str().unwrap();
    server.cli_json(&["grants", "revoke", grant]);
    let (status, body) = rpc_in(&server, &analyst, &session, 5, "tools/list", json!({})).await;
    let anomalies = server.audit(&["--kind", "anomaly"]);
    assert!(anomalies.iter().any(|r| r["reason"] == "task_escalation"));
    if status == 403 {
        assert_eq!(reason(&body), "task_grant_revoked");
        // The use of a revoked grant is an anomaly on record too.
        assert!(
            anomalies
                .iter()
                .any(|r| r["reason"] == "task_grant_revoked" && r["session"] == session.as_str()),
            "{anomalies:?}"
        );
    } else {
        assert_eq!(status, 404, "{body}");
    }
    // Either way the session is ended, and that is on record.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let ended = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
        if ended.iter().any(|r| {
            r["reason"] == "credential_lapsed"
                && r["session"] == session.as_str()
                && r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("(task_grant_revoked)"))
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session of a revoked grant was not ended: {ended:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (status, _) = rpc_in(&server, &analyst, &session, 6, "tools/list", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_task_the_role_may_not_claim_is_refused_at_initialize() {
    let server = Server::start(None);
    let (_, reader) = server.create_key("agent", "reader", &[]);
    let response = post(&server, &reader, None, initialize_with_task("no-such-task")).await;
    assert_eq!(response.status(), 403);
    assert!(response.headers().get("mcp-session-id").is_none());
    let body = parse_body(&response.text().await.unwrap());
    assert_eq!(reason(&body), "unknown_task");
}

#[tokio::test]
async fn guessing_subject_tokens_locks_the_source_like_any_credential() {
    let server = Server::start(None);
    let (_, reader) = server.create_key("agent", "reader", &[]);
    for i in 0..20 {
        let (status, _) =
            exchange(&server, &format!("ghk_guess{i:02}_wrongsecret"), "research").await;
        assert_eq!(status, 400);
    }
    let (status, body) = exchange(&server, &reader, "research").await;
    assert_eq!(status, 429, "{body}");
    let out = server.cli(&["keys", "unlock", "--source", "127.0.0.1"]);
    assert!(out.status.success());
    // The unlock reaches the server's view of locks within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = exchange(&server, &reader, "research").await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still locked: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A task token carries its base key's person and agent. It once owned
/// its base's sessions: a sub-agent given only the narrowed token could
/// resume, cancel, answer or end them (none of which its grant narrows).
/// Now a base's session is another principal's to it, and the other way
/// round.
#[tokio::test]
async fn a_task_token_cannot_use_its_base_keys_session_nor_the_reverse() {
    let server = Server::start(None);
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    let (status, body) = exchange(&server, &analyst, "outreach").await;
    assert_eq!(status, 200, "{body}");
    let task = task_token(&body);
    let opened = |key: String| {
        let server = &server;
        async move {
            let response = post(server, &key, None, initialize_with_task("outreach")).await;
            assert_eq!(response.status(), 200);
            response.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let bases = opened(analyst.clone()).await;
    let (status, _) = rpc_in(&server, &task, &bases, 1, "tools/list", json!({})).await;
    assert_eq!(status, 404);
    let tasks = {
        let response = post(
            &server,
            &task,
            None,
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": LEGACY, "capabilities": {},
                "clientInfo": {"name": "e2e", "version": "1"}}}),
        )
        .await;
        assert_eq!(response.status(), 200);
        response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let (status, _) = rpc_in(&server, &analyst, &tasks, 2, "tools/list", json!({})).await;
    assert_eq!(status, 404);
    // Each still reaches its own.
    let (status, body) = rpc_in(&server, &analyst, &bases, 3, "ping", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rpc_in(&server, &task, &tasks, 4, "ping", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let anomalies = server.audit(&["--kind", "anomaly"]);
    assert!(
        anomalies
            .iter()
            .filter(|r| r["reason"] == "foreign_session")
            .count()
            >= 2,
        "{anomalies:?}"
    );
}

/// A task token is a stored grant, and a grant revoked (by its holder, or
/// by the incident response after refused calls) empties every instance's
/// caches: a loop of exchanges could do that as often as the token endpoint
/// allowed an address. Task tokens are limited per person, whatever
/// credential or client asks, and the 429 says when to come back.
#[tokio::test]
async fn task_tokens_are_limited_per_person() {
    let server = Server::start(None);
    let (_, first) = server.create_key("agent-1", "analyst", &["--owner", "dana"]);
    let (_, second) = server.create_key("agent-2", "analyst", &["--owner", "dana"]);
    let (_, other) = server.create_key("agent-3", "analyst", &["--owner", "erin"]);
    let limit = gatehouse_oauth::TASK_TOKENS_PER_PERSON_PER_MINUTE;
    for n in 0..limit {
        let key = if n % 2 == 0 { &first } else { &second };
        let (status, body) = exchange(&server, key, "outreach").await;
        assert_eq!(status, 200, "exchange {n}: {body}");
    }
    let (status, body) = exchange(&server, &second, "outreach").await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = exchange(&server, &other, "outreach").await;
    assert_eq!(status, 200, "{body}");
}
