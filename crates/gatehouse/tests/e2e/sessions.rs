//! 2025-11-25 sessions: created at initialize, bound to their principal.

use reqwest::Response;
use serde_json::{Value, json};

use super::harness::{LEGACY, Server, parse_body};

async fn post(server: &Server, key: &str, session: Option<&str>, body: Value) -> Response {
    server.post_legacy(key, session, body).await
}

pub(super) async fn initialize(server: &Server, key: &str) -> String {
    let response = post(
        server,
        key,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"}
        }}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = parse_body(&response.text().await.unwrap());
    assert_eq!(body["result"]["protocolVersion"], LEGACY);
    assert_eq!(body["result"]["serverInfo"]["name"], "gatehouse");
    let initialized = post(
        server,
        key,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(initialized.status(), 202);
    session
}

#[tokio::test]
async fn session_belongs_to_the_principal_that_created_it() {
    let server = Server::start(None);
    let (_, alice) = server.create_key("alice", "reader", &[]);
    let (mallory_id, mallory) = server.create_key("mallory", "admin", &[]);
    let session = initialize(&server, &alice).await;
    assert!(session.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    assert!(session.len() >= 16);

    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let own = post(&server, &alice, Some(&session), list.clone()).await;
    assert_eq!(own.status(), 200);
    let body = parse_body(&own.text().await.unwrap());
    assert_eq!(body["result"]["tools"].as_array().unwrap().len(), 3);

    // Another principal presenting the session id: as if it did not exist.
    let stolen = post(&server, &mallory, Some(&session), list.clone()).await;
    assert_eq!(stolen.status(), 404);
    // ...and an anomaly on record, naming who tried (not a plain miss: an
    // id that was never issued records nothing).
    let unknown = post(
        &server,
        &mallory,
        Some("no-such-session-0000"),
        list.clone(),
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let anomalies = server.audit(&["--kind", "anomaly", "--principal", &mallory_id]);
    assert_eq!(anomalies.len(), 1, "{anomalies:?}");
    assert_eq!(anomalies[0]["reason"], "foreign_session");
    assert_eq!(anomalies[0]["session"], session.as_str());

    // A session is not a credential: without the key the request is refused.
    let anonymous = server
        .http
        .post(server.mcp_url())
        .header("mcp-session-id", &session)
        .header("content-type", "application/json")
        .json(&list)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // DELETE by someone else does not end it; by its owner it does.
    let foreign_delete = server
        .http
        .delete(server.mcp_url())
        .bearer_auth(&mallory)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign_delete.status(), 404);
    let delete = server
        .http
        .delete(server.mcp_url())
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .unwrap();
    assert!(delete.status().is_success(), "{}", delete.status());
    let after = post(&server, &alice, Some(&session), list).await;
    assert_eq!(after.status(), 404);
}

#[tokio::test]
async fn calls_in_a_session_are_authorized_and_audited_with_the_session() {
    let server = Server::start(None);
    let (id, reader) = server.create_key("reader", "reader", &[]);
    let session = initialize(&server, &reader).await;
    let denied = post(
        &server,
        &reader,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "execute_code", "arguments": {"expression": "1+1"}}}),
    )
    .await;
    let body = parse_body(&denied.text().await.unwrap());
    assert_eq!(body["error"]["data"]["reason"], "role_not_allowed");
    let records = server.audit(&["--tool", "execute_code", "--principal", &id]);
    assert_eq!(records[0]["session"], session.as_str());
}

/// Waits until the session's calls take the fast path: its lane opens when
/// the SDK's handler has seen `notifications/initialized`, which may be
/// just after the client got its 202. Until then a call goes to the SDK
/// (`whoami`, with ids from 1,000,000 up, answered either way).
pub(super) async fn await_fast_path(server: &Server, key: &str, session: &str) {
    for attempt in 0..200 {
        let response = post(
            server,
            key,
            Some(session),
            json!({"jsonrpc": "2.0", "id": 1_000_000 + attempt, "method": "tools/call",
                   "params": {"name": "whoami", "arguments": {}}}),
        )
        .await;
        assert_eq!(response.status(), 200);
        let json = answered_as_json(&response);
        let _ = response.text().await;
        if json {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the session's calls never took the fast path");
}

/// The session's own event stream (GET /mcp).
pub(super) async fn open_stream(server: &Server, key: &str, session: &str) -> Response {
    server
        .http
        .get(server.mcp_url())
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn get_opens_a_stream_for_the_session() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let session = initialize(&server, &admin).await;
    let response = open_stream(&server, &admin, &session).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
}

/// A session's `GET` stream stays open between requests, so it is held to
/// the credential that opened it: when that credential expires (here a
/// rotated key's overlap ends) the stream ends, on record, rather than
/// carrying the session's notices to whoever kept it open.
#[tokio::test]
async fn a_sessions_stream_ends_when_the_credential_that_opened_it_expires() {
    let server = Server::start(None);
    let (id, key) = server.create_key("agent", "reader", &[]);
    let session = initialize(&server, &key).await;
    let mut stream = open_stream(&server, &key, &session).await;
    assert_eq!(stream.status(), 200);
    let out = server.cli(&["keys", "rotate", &id, "--overlap", "2s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the session's stream outlived the key that opened it"
    );
    let records = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    assert!(
        records.iter().any(|r| r["reason"] == "credential_lapsed"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.contains("GET stream") && e.contains("(expired)"))
            && r["session"] == session.as_str()
            && r["credential"] == id.as_str()),
        "{records:?}"
    );
}

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY,
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"}
    }})
}

async fn delete(server: &Server, key: &str, session: &str) {
    let response = server
        .http
        .delete(server.mcp_url())
        .bearer_auth(key)
        .header("mcp-session-id", session)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn one_principal_cannot_fill_the_session_table() {
    let server = Server::start(None);
    let (id, reader) = server.create_key("reader", "reader", &[]);
    let (_, other) = server.create_key("other", "reader", &[]);
    let mut sessions = Vec::new();
    for _ in 0..16 {
        sessions.push(initialize(&server, &reader).await);
    }
    // The 17th of one principal is refused, with a JSON-RPC error that says why.
    let refused = post(&server, &reader, None, initialize_body()).await;
    assert_eq!(refused.status(), 429);
    assert!(!refused.headers().contains_key("mcp-session-id"));
    let body = parse_body(&refused.text().await.unwrap());
    assert_eq!(body["id"], 0, "{body}");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    assert_eq!(
        body["error"]["data"]["reason"], "too_many_sessions",
        "{body}"
    );
    assert_eq!(body["error"]["data"]["limit"], 16, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("16"),
        "{body}"
    );
    // Everyone else still gets sessions.
    initialize(&server, &other).await;
    // The sessions already open still work.
    let list = post(
        &server,
        &reader,
        Some(&sessions[15]),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(list.status(), 200);
    // Ending one frees its slot.
    delete(&server, &reader, &sessions[0]).await;
    initialize(&server, &reader).await;
    let refused = post(&server, &reader, None, initialize_body()).await;
    assert_eq!(refused.status(), 429);
    // The refusals are audited.
    let records = server.audit(&["--principal", &id]);
    let refusals = records
        .iter()
        .filter(|r| r["reason"] == "too_many_sessions")
        .count();
    assert_eq!(refusals, 2, "{records:?}");
}

#[tokio::test]
async fn initialize_is_rate_limited_per_principal() {
    let server = Server::start(None);
    let (id, reader) = server.create_key("reader", "reader", &[]);
    let (_, other) = server.create_key("other", "reader", &[]);
    // 30 a minute, even when every session is ended at once.
    for _ in 0..30 {
        let session = initialize(&server, &reader).await;
        delete(&server, &reader, &session).await;
    }
    let refused = post(&server, &reader, None, initialize_body()).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(!refused.headers().contains_key("mcp-session-id"));
    let body = parse_body(&refused.text().await.unwrap());
    assert_eq!(body["error"]["data"]["reason"], "rate_limited", "{body}");
    assert_eq!(body["id"], 0, "{body}");
    // The method spelled with a JSON escape is still `initialize`.
    let escaped = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&reader)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", LEGACY)
        .body(
            initialize_body()
                .to_string()
                .replace("\"initialize\"", "\"initializ\\u0065\""),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(escaped.status(), 429);
    // Another principal is not affected.
    initialize(&server, &other).await;
    let records = server.audit(&["--principal", &id]);
    // The audit record carries the same reason code as the answer.
    assert!(
        records.iter().any(|r| r["reason"] == "rate_limited"
            && r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("initialize refused: too many sessions started"))),
        "{records:?}"
    );
}

/// A plain call in a session is answered by Gatehouse's session fast path
/// (a JSON answer), the same call with a progress token by the SDK (an SSE
/// stream): both answer alike and leave alike decision records, with the
/// session.
#[tokio::test]
async fn the_session_fast_path_answers_built_in_tools_like_the_sdk() {
    let server = Server::start(None);
    let (id, reader) = server.create_key("r", "reader", &[]);
    let session = initialize(&server, &reader).await;
    await_fast_path(&server, &reader, &session).await;
    let mut request = 0;
    for (tool, arguments) in super::transport::built_in_cases() {
        let mut answers = Vec::new();
        for progress in [false, true] {
            request += 1;
            let mut params = json!({"name": tool, "arguments": arguments});
            if progress {
                params["_meta"] = json!({"progressToken": "p1"});
            }
            let response = post(
                &server,
                &reader,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": request, "method": "tools/call", "params": params}),
            )
            .await;
            assert_eq!(response.status(), 200, "{tool}");
            let kind = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_string();
            let expected = if progress {
                "text/event-stream"
            } else {
                "application/json"
            };
            assert!(
                kind.starts_with(expected),
                "{tool}, progress {progress}: {kind}"
            );
            let mut answer = parse_body(&response.text().await.unwrap());
            assert_eq!(answer["id"], request, "{tool}");
            answer["id"] = Value::Null;
            answers.push(answer);
        }
        assert_eq!(
            answers[0], answers[1],
            "{tool}: the fast path and the SDK differ"
        );
    }
    let records = server.audit(&["--principal", &id, "--kind", "tool_decision"]);
    for tool in ["whoami", "read_file", "web_fetch", "send_email"] {
        let decisions: Vec<_> = records.iter().filter(|r| r["tool"] == tool).collect();
        // `whoami` also answered the calls that waited for the fast path.
        if tool == "whoami" {
            assert!(decisions.len() >= 2, "{tool}: {records:?}");
        } else {
            assert_eq!(decisions.len(), 2, "{tool}: {records:?}");
        }
        for decision in &decisions {
            assert_eq!(decision["reason"], decisions[0]["reason"], "{tool}");
            assert_eq!(decision["decision"], decisions[0]["decision"], "{tool}");
        }
        assert!(
            decisions.iter().all(|d| d["session"] == session.as_str()),
            "{tool}: {decisions:?}"
        );
    }
    // Another principal's request naming the session is still refused
    // before any path answers it.
    let (_, other) = server.create_key("o", "reader", &[]);
    let foreign = post(
        &server,
        &other,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
               "params": {"name": "whoami", "arguments": {}}}),
    )
    .await;
    assert_eq!(foreign.status(), 404);
}

/// The SDK ends a session it has not seen for the idle timeout. A session
/// whose calls the fast path answers stays alive in the SDK as long as it
/// is used: after more than the idle timeout of nothing but fast-path
/// calls, a request only the SDK answers still finds the session.
#[tokio::test]
async fn a_session_used_only_through_the_fast_path_stays_alive() {
    let server = Server::start(Some(
        "version = 1\n[server]\nsession_idle_timeout = \"2s\"\n",
    ));
    let (_, reader) = server.create_key("r", "reader", &[]);
    let session = initialize(&server, &reader).await;
    for request in 1..=16 {
        let response = post(
            &server,
            &reader,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": request, "method": "tools/call",
                   "params": {"name": "whoami", "arguments": {}}}),
        )
        .await;
        assert_eq!(response.status(), 200, "call {request}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let listed = post(
        &server,
        &reader,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 100, "method": "tools/list"}),
    )
    .await;
    assert_eq!(listed.status(), 200);
    let body = parse_body(&listed.text().await.unwrap());
    assert!(body["result"]["tools"].is_array(), "{body}");
}

fn answered_as_json(response: &Response) -> bool {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json")
}

async fn whoami(server: &Server, key: &str, session: &str, id: i64) -> Response {
    post(
        server,
        key,
        Some(session),
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "whoami", "arguments": {}}}),
    )
    .await
}

/// A client that initializes its session again may declare what the fast
/// path cannot serve (sampling, elicitation): from then on the session's
/// calls go to the SDK, which knows what was declared last.
#[tokio::test]
async fn a_session_initialized_again_leaves_the_fast_path() {
    let server = Server::start(None);
    let (_, reader) = server.create_key("r", "reader", &[]);
    let session = initialize(&server, &reader).await;
    await_fast_path(&server, &reader, &session).await;
    let again = post(
        &server,
        &reader,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {
            "protocolVersion": LEGACY,
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "e2e", "version": "2"}
        }}),
    )
    .await;
    let _ = again.text().await;
    let initialized = post(
        &server,
        &reader,
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert!(initialized.status().is_success());
    let later = whoami(&server, &reader, &session, 3).await;
    assert_eq!(later.status(), 200);
    assert!(!answered_as_json(&later), "still on the fast path");
    let body = parse_body(&later.text().await.unwrap());
    assert!(body["result"]["content"].is_array(), "{body}");
}

/// A session the SDK ends by itself (here: idle for longer than the idle
/// timeout) is gone for the fast path too: its next call is answered 404,
/// as the SDK answers it, not run in a session that no longer exists.
#[tokio::test]
async fn a_session_the_sdk_ended_is_not_served_by_the_fast_path() {
    let server = Server::start(Some(
        "version = 1\n[server]\nsession_idle_timeout = \"1s\"\n",
    ));
    let (_, reader) = server.create_key("r", "reader", &[]);
    let session = initialize(&server, &reader).await;
    await_fast_path(&server, &reader, &session).await;
    // Idle well past the timeout: the SDK ends the session.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = whoami(&server, &reader, &session, 2).await;
    assert_eq!(after.status(), 404);
}

/// The SDK keeps a session's requests by id and overwrote them for a
/// repeated id: the first request's answer was lost, and its routes stayed
/// for the session's life (memory without bound, one request at a time).
/// A request whose id another request of the session still holds in the
/// SDK is now refused, and the first is answered.
#[tokio::test]
async fn a_request_id_still_in_flight_in_the_session_is_refused() {
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hanging.local_addr().unwrap().port();
    let server = Server::start(Some(
        "version = 1\n[tools]\nweb_fetch_allowlist = [\"127.0.0.1\"]\nweb_fetch_allow_private = true\n",
    ));
    let admin = server.admin_key.clone().unwrap();
    let session = initialize(&server, &admin).await;
    // A progress token keeps the call with the SDK; the fetch waits for an
    // answer that does not come until the listener's connection is dropped.
    let slow = post(
        &server,
        &admin,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": "web_fetch", "arguments": {"url": format!("http://127.0.0.1:{port}/")},
            "_meta": {"progressToken": "p"}}}),
    );
    let meanwhile = async {
        let (connection, _) = hanging.accept().await.unwrap();
        let again = post(
            &server,
            &admin,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}),
        )
        .await;
        assert_eq!(again.status(), 400);
        let body: Value = again.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32600, "{body}");
        assert_eq!(body["id"], 7, "{body}");
        // Another id goes through meanwhile.
        let other = post(
            &server,
            &admin,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 8, "method": "ping"}),
        )
        .await;
        assert_eq!(other.status(), 200);
        // The first request's fetch fails once its peer goes.
        drop(connection);
    };
    let (answered, ()) = tokio::join!(slow, meanwhile);
    assert_eq!(answered.status(), 200);
    let answer = parse_body(&answered.text().await.unwrap());
    assert_eq!(answer["id"], 7, "{answer}");
    // And its id is free again.
    let reused = post(
        &server,
        &admin,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}),
    )
    .await;
    assert_eq!(reused.status(), 200);
}

/// A session keeps each request's id while the request is handled (and ten
/// minutes after an answer nobody read): an id of a megabyte was kept as
/// such, 256 of them per session. Ids are bounded.
#[tokio::test]
async fn a_request_id_longer_than_any_client_uses_is_refused() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let session = initialize(&server, &admin).await;
    let long = "i".repeat(257);
    let refused = post(
        &server,
        &admin,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": long, "method": "ping"}),
    )
    .await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");
    assert_eq!(body["id"], Value::Null, "{body}");
    let fits = "i".repeat(256);
    let answered = post(
        &server,
        &admin,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": fits, "method": "ping"}),
    )
    .await;
    assert_eq!(answered.status(), 200);
}
