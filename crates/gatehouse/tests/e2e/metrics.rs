//! Observability end to end: `/metrics` on its own listener, counters that
//! move with allowed and denied calls, and the request id that ties a
//! response to its audit records and log lines.

use serde_json::{Value, json};

use super::harness::{MODERN, Server};

const METRICS_ON: &str = "version = 1\n[metrics]\nlisten = \"127.0.0.1:0\"\n";

async fn scrape(server: &Server) -> String {
    let url = server
        .metrics_url
        .as_deref()
        .expect("metrics_url in the listening line");
    let response = server.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as written),
/// 0 when it is not there yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

/// A stateless tools/call; returns (status, X-Request-Id, body).
async fn call(server: &Server, key: Option<&str>, tool: &str) -> (u16, String, Value) {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": tool, "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    });
    let mut request = server
        .http
        .post(server.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        // A client's own id is not the one Gatehouse records.
        .header("x-request-id", "client-chosen-id")
        .json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let text = response.text().await.unwrap();
    (status, id, super::harness::parse_body(&text))
}

#[tokio::test]
async fn metrics_count_allowed_and_denied_calls_on_the_admin_listener() {
    let server = Server::start(Some(METRICS_ON));
    let metrics_url = server.metrics_url.clone().unwrap();
    assert!(
        metrics_url.starts_with("http://127.0.0.1:"),
        "{metrics_url}"
    );
    assert!(metrics_url.ends_with("/metrics"), "{metrics_url}");
    assert_ne!(
        metrics_url.trim_end_matches("/metrics"),
        server.base,
        "a listener of its own"
    );
    // Never on the public listener.
    let public = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_ne!(public.status(), 200);
    assert!(!public.text().await.unwrap().contains("gatehouse_"));
    // A page on another name that resolves to the loopback (DNS rebinding)
    // cannot read it from a browser.
    let rebound = server
        .http
        .get(&metrics_url)
        .header("host", "rebind.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    assert!(!rebound.text().await.unwrap().contains("gatehouse_"));

    let allow = "gatehouse_decisions_total{decision=\"allow\",reason=\"permitted\"}";
    let deny = "gatehouse_decisions_total{decision=\"deny\",reason=\"role_not_allowed\"}";
    let unauthenticated =
        "gatehouse_authentications_total{outcome=\"failure\",reason=\"missing_credential\"}";
    let before = scrape(&server).await;
    assert_eq!(sample(&before, allow), 0.0);
    assert_eq!(sample(&before, deny), 0.0);

    let (_, reader) = server.create_key("reader", "reader", &[]);
    let (status, _, allowed) = call(&server, Some(&reader), "whoami").await;
    assert_eq!(status, 200);
    assert_eq!(allowed["result"]["isError"], false, "{allowed}");
    let (status, _, denied) = call(&server, Some(&reader), "execute_code").await;
    assert_eq!(status, 200);
    assert_eq!(
        denied["error"]["data"]["reason"], "role_not_allowed",
        "{denied}"
    );
    let (status, _, _) = call(&server, None, "whoami").await;
    assert_eq!(status, 401);

    let after = scrape(&server).await;
    assert_eq!(sample(&after, allow), 1.0, "{after}");
    assert_eq!(sample(&after, deny), 1.0, "{after}");
    // (The GET of /metrics on the public listener was refused as one too.)
    assert_eq!(
        sample(&after, unauthenticated) - sample(&before, unauthenticated),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "gatehouse_authentications_total{outcome=\"success\",reason=\"none\"}"
        ),
        2.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "gatehouse_tool_outcomes_total{outcome=\"success\",reason=\"none\"}"
        ),
        1.0
    );
    assert!(
        sample(
            &after,
            "gatehouse_http_requests_total{route=\"mcp\",status=\"2xx\"}"
        ) >= 2.0
    );
    assert_eq!(
        sample(
            &after,
            "gatehouse_http_requests_total{route=\"mcp\",status=\"4xx\"}"
        ),
        1.0
    );
    // The second call with the key found it in the cache.
    assert!(
        sample(
            &after,
            "gatehouse_credential_cache_total{cache=\"api_key\",result=\"hit\"}"
        ) >= 1.0,
        "{after}"
    );
    for stage in ["authenticate", "authorize", "dispatch", "audit"] {
        let count = sample(
            &after,
            &format!("gatehouse_stage_duration_seconds_count{{stage=\"{stage}\"}}"),
        );
        assert!(count >= 1.0, "stage {stage}: {after}");
    }
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("gatehouse_audit_queue_depth "))
    );
    // No credential in any label.
    assert!(!after.contains(&reader));
}

#[tokio::test]
async fn a_request_id_names_the_response_its_audit_records_and_its_log_lines() {
    let server = Server::start(None);
    assert_eq!(server.metrics_url, None, "metrics are off by default");
    let (_, reader) = server.create_key("reader", "reader", &[]);
    let (status, allowed_id, _) = call(&server, Some(&reader), "whoami").await;
    assert_eq!(status, 200);
    let (_, denied_id, _) = call(&server, Some(&reader), "execute_code").await;
    assert_ne!(allowed_id, denied_id);
    assert_ne!(allowed_id, "client-chosen-id");

    let records = server.audit(&["--request-id", &allowed_id]);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["authentication", "tool_decision", "tool_outcome"]);
    assert!(
        records
            .iter()
            .all(|r| r["request_id"] == allowed_id.as_str())
    );
    let denied = server.audit(&["--request-id", &denied_id]);
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert_eq!(denied[1]["reason"], "role_not_allowed");
    // The text form filters the same way (it shows no id: --json does).
    let out = server.cli(&["audit", "query", "--request-id", &denied_id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // A refusal before gate 2 is named as well.
    let (status, refused_id, _) = call(&server, Some("ghk_not.a-key"), "whoami").await;
    assert_eq!(status, 401);
    let refused = server.audit(&["--request-id", &refused_id]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["outcome"], "failure");
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir, None, &[("GATEHOUSE_LOG_FORMAT", "json")]);
    let (_, reader) = server.create_key("reader", "reader", &[]);
    // The harness logs at debug level, where every answer is logged in
    // its request's span.
    let (_, id, _) = call(&server, Some(&reader), "whoami").await;
    let mut found = false;
    for _ in 0..50 {
        let log = std::fs::read_to_string(server.stderr_path()).unwrap();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.iter().any(|line| line.to_string().contains(&id)) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "no log line names {id}");
}
