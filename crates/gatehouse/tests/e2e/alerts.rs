//! Alerts: each detector sends the case it detects to the real server and
//! finds the alert (an audit record of kind `alert`, a row in `gatehouse
//! alerts list`, a count on /metrics), the incident response (a task
//! grant revoked, a session ended, or only reported), acknowledgement, and
//! the signed webhook with its retry.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::browser::{Browser, add_user, authorize_url, pkce, public_client, token};
use super::harness::{Server, parse_body};

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEFAULT_POLICY: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");

/// The alert list, waiting (up to a generous bound) until `wanted` holds:
/// alerts of failed authentications are raised off the request's path.
fn alerts_until(server: &Server, args: &[&str], wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut command = vec!["alerts", "list"];
    command.extend_from_slice(args);
    loop {
        let listed = server.cli_json(&command);
        let listed = listed.as_array().unwrap().clone();
        if wanted(&listed) || Instant::now() > deadline {
            return listed;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn with_code<'a>(alerts: &'a [Value], code: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["code"] == code).collect()
}

fn wrong_secret(key: &str) -> String {
    let mut wrong = key.to_string();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    wrong
}

fn reason(body: &Value) -> String {
    body["error"]["data"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn task_token(server: &Server, key: &str, task: &str) -> String {
    let (status, body) = token(
        server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", key),
            ("subject_token_type", ACCESS_TOKEN),
            ("task", task),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_burst_of_failed_authentications_raises_one_alert_per_subject() {
    let server = Server::start(Some("version = 1\n[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let (id, key) = server.create_key("agent", "reader", &[]);
    let wrong = wrong_secret(&key);
    // Three failures are within the default threshold ("more than 3").
    for _ in 0..3 {
        let (status, _) = server.rpc(Some(&wrong), "tools/list", json!({})).await;
        assert_eq!(status, 401);
    }
    // Requests without any credential (how every client discovers the
    // authorization server) are not failures worth an alert.
    for _ in 0..5 {
        let (status, _) = server.rpc(None, "tools/list", json!({})).await;
        assert_eq!(status, 401);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        with_code(
            &server
                .cli_json(&["alerts", "list"])
                .as_array()
                .unwrap()
                .clone(),
            "auth_failure_burst"
        )
        .is_empty()
    );
    // The fourth within 60 s: one alert for the key, one for the source.
    let (status, _) = server.rpc(Some(&wrong), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    let listed = alerts_until(&server, &[], |a| {
        with_code(a, "auth_failure_burst").len() >= 2
    });
    let bursts = with_code(&listed, "auth_failure_burst");
    let subjects: Vec<&str> = bursts
        .iter()
        .map(|a| a["subject"].as_str().unwrap())
        .collect();
    assert!(
        subjects.contains(&format!("credential {id}").as_str()),
        "{subjects:?}"
    );
    assert!(subjects.contains(&"source 127.0.0.1"), "{subjects:?}");
    assert_eq!(bursts.len(), 2, "{listed:?}");
    assert!(
        bursts[0]["detail"]
            .as_str()
            .unwrap()
            .contains("4 failed authentications within 60 s")
    );
    // A fifth failure in the same burst adds nothing (the key locks at 5).
    server.rpc(Some(&wrong), "tools/list", json!({})).await;
    std::thread::sleep(Duration::from_millis(300));
    let listed = alerts_until(&server, &[], |_| true);
    assert_eq!(
        with_code(&listed, "auth_failure_burst").len(),
        2,
        "{listed:?}"
    );
    // Each alert is an audit record of kind `alert` with the same id.
    let records = server.audit(&["--kind", "alert"]);
    for alert in &bursts {
        assert!(
            records
                .iter()
                .any(|r| r["id"] == alert["id"] && r["reason"] == "auth_failure_burst"),
            "{records:?}"
        );
    }
    // Counted on /metrics.
    let metrics = server
        .http
        .get(server.metrics_url.clone().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gatehouse_alerts_total{code=\"auth_failure_burst\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn failed_sign_ins_for_one_user_raise_an_alert() {
    let server = Server::start(None);
    add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let login = browser
        .visit(&authorize_url(&server, &client, &challenge, &[]))
        .await;
    for _ in 0..4 {
        let page = browser.login(&login, "alice", "not the password").await;
        assert_eq!(page.status, 401);
    }
    let listed = alerts_until(&server, &[], |a| {
        a.iter().any(|a| a["subject"] == "user alice")
    });
    let alert = listed
        .iter()
        .find(|a| a["subject"] == "user alice")
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(alert["code"], "auth_failure_burst");
}

#[tokio::test]
async fn repeated_calls_outside_a_task_grant_revoke_it() {
    let server = Server::start(None);
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    let task = task_token(&server, &analyst, "outreach").await;
    // read_file: the role allows it, the task does not.
    for i in 1..=5 {
        let body = server
            .call_tool(&task, "read_file", json!({"path": "notes.txt"}))
            .await;
        assert_eq!(reason(&body), "outside_task", "call {i}: {body}");
    }
    // The fifth made the incident: the grant is revoked on every instance,
    // so even a tool of the task is refused now.
    let (status, body) = server
        .rpc(
            Some(&task),
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        )
        .await;
    assert!(
        status == 401 || reason(&body) == "task_grant_revoked",
        "{status} {body}"
    );
    let listed = server.cli_json(&["alerts", "list"]);
    let incidents = with_code(listed.as_array().unwrap(), "policy_incident");
    assert_eq!(incidents.len(), 1, "{listed}");
    let subject = incidents[0]["subject"].as_str().unwrap();
    assert!(subject.starts_with("grant tg_"), "{subject}");
    let detail = incidents[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("5 calls refused") && detail.contains("the grant was revoked"),
        "{detail}"
    );
    // The revocation is audited, naming who did it.
    let grant_id = subject.trim_start_matches("grant ");
    let revoked = server.audit(&["--kind", "grant"]);
    assert!(
        revoked.iter().any(|r| r["reason"] == "task_grant_revoked"
            && r["session"] == grant_id
            && r["human"] == "gatehouse (incident response)"),
        "{revoked:?}"
    );
    let live = server.cli_json(&["grants", "list"]);
    assert!(
        !live.as_array().unwrap().iter().any(|g| g["id"] == grant_id),
        "{live}"
    );
}

#[tokio::test]
async fn with_on_incident_alert_the_grant_stays() {
    let server = Server::start(Some(
        "version = 1\n[alerts]\non_incident = \"alert\"\nviolations = 2\n",
    ));
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    let task = task_token(&server, &analyst, "outreach").await;
    for _ in 0..3 {
        let body = server
            .call_tool(&task, "read_file", json!({"path": "notes.txt"}))
            .await;
        assert_eq!(reason(&body), "outside_task", "{body}");
    }
    let whoami = server.call_tool(&task, "whoami", json!({})).await;
    assert!(whoami["result"].is_object(), "{whoami}");
    let listed = server.cli_json(&["alerts", "list"]);
    let incidents = with_code(listed.as_array().unwrap(), "policy_incident");
    assert_eq!(
        incidents.len(),
        1,
        "one incident at the threshold, not one per refusal: {listed}"
    );
    assert!(
        incidents[0]["detail"]
            .as_str()
            .unwrap()
            .contains("reported only")
    );
}

#[tokio::test]
async fn repeated_role_refusals_in_a_session_end_it() {
    let server = Server::start(None);
    let (_, reader) = server.create_key("agent", "reader", &[]);
    let session = super::sessions::initialize(&server, &reader).await;
    let stream = super::sessions::open_stream(&server, &reader, &session).await;
    assert_eq!(stream.status(), 200);
    for i in 1..=5 {
        let response = server
            .post_legacy(
                &reader,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                       "params": {"name": "send_email", "arguments": {"to": "a@example.com", "subject": "s", "body": "b"}}}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let body = parse_body(&text);
        assert_eq!(reason(&body), "role_not_allowed", "{text}");
    }
    // The session is gone: its id answers as if it never existed.
    let after = server
        .post_legacy(
            &reader,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
        )
        .await;
    assert_eq!(after.status(), 404);
    // And its open event stream is closed (the SDK's side of it ended).
    let ended = tokio::time::timeout(Duration::from_secs(20), stream.text()).await;
    assert!(ended.is_ok(), "the session's stream is still open");
    let listed = server.cli_json(&["alerts", "list"]);
    let incidents = with_code(listed.as_array().unwrap(), "policy_incident");
    assert_eq!(incidents.len(), 1, "{listed}");
    assert_eq!(incidents[0]["subject"], format!("session {session}"));
    assert!(
        incidents[0]["detail"]
            .as_str()
            .unwrap()
            .contains("the session was ended")
    );
    // The key itself still works (a new session, or a stateless call).
    let whoami = server.call_tool(&reader, "whoami", json!({})).await;
    assert!(whoami["result"].is_object(), "{whoami}");
}

#[tokio::test]
async fn refusals_spread_over_new_sessions_still_make_an_incident() {
    let server = Server::start(Some("version = 1\n[alerts]\nviolations = 3\n"));
    let (id, reader) = server.create_key("agent", "reader", &[]);
    for i in 1..=3 {
        // A new session for every refusal: no session reaches the threshold.
        let session = super::sessions::initialize(&server, &reader).await;
        let response = server
            .post_legacy(
                &reader,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                       "params": {"name": "send_email", "arguments": {"to": "a@example.com", "subject": "s", "body": "b"}}}),
            )
            .await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert_eq!(reason(&parse_body(&text)), "role_not_allowed", "{text}");
    }
    let listed = server.cli_json(&["alerts", "list"]);
    let incidents = with_code(listed.as_array().unwrap(), "policy_incident");
    assert_eq!(incidents.len(), 1, "{listed}");
    assert_eq!(
        incidents[0]["subject"],
        format!("caller {id} (tenant default)")
    );
    let detail = incidents[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("3 calls refused") && detail.contains("across the caller's"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_task_grant_used_past_its_expected_duration_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let policy = DEFAULT_POLICY.replace(
        "expected_duration = \"15m\"\nmax_duration = \"30m\"",
        "expected_duration = \"1ms\"\nmax_duration = \"30m\"",
    );
    assert_ne!(policy, DEFAULT_POLICY);
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (_, analyst) = server.create_key("agent", "analyst", &[]);
    let task = task_token(&server, &analyst, "outreach").await;
    for _ in 0..3 {
        let whoami = server.call_tool(&task, "whoami", json!({})).await;
        assert!(whoami["result"].is_object(), "{whoami}");
    }
    let listed = server.cli_json(&["alerts", "list"]);
    let overruns = with_code(listed.as_array().unwrap(), "task_overrun");
    assert_eq!(overruns.len(), 1, "{listed}");
    assert!(
        overruns[0]["subject"]
            .as_str()
            .unwrap()
            .starts_with("grant tg_")
    );
    assert!(
        overruns[0]["detail"]
            .as_str()
            .unwrap()
            .contains("\"outreach\"")
    );
}

#[tokio::test]
async fn an_alert_is_acknowledged_once_and_leaves_the_list() {
    let server = Server::start(Some("version = 1\n[alerts]\nviolations = 1\n"));
    let (_, reader) = server.create_key("agent", "reader", &[]);
    let body = server
        .call_tool(
            &reader,
            "send_email",
            json!({"to": "a@example.com", "subject": "s", "body": "b"}),
        )
        .await;
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    let listed = server.cli_json(&["alerts", "list"]);
    let incident = with_code(listed.as_array().unwrap(), "policy_incident")[0].clone();
    // Without a grant or session, nothing is revoked: a person decides.
    assert!(
        incident["detail"]
            .as_str()
            .unwrap()
            .contains("left to a person"),
        "{incident}"
    );
    let id = incident["id"].as_str().unwrap();
    let acked = server.cli_json(&["alerts", "ack", id, "--by", "alice"]);
    assert_eq!(acked["status"], "acknowledged");
    assert!(
        server
            .cli_json(&["alerts", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let all = server.cli_json(&["alerts", "list", "--all"]);
    assert_eq!(all[0]["acked_by"], "alice");
    let again = server.cli(&["alerts", "ack", id]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("acknowledged already"));
    let unknown = server.cli(&["alerts", "ack", "nope"]);
    assert!(!unknown.status.success());
    let records = server.audit(&["--kind", "alert"]);
    assert!(
        // --by is a name stored with the alert; the record names the
        // account that ran the command, which a flag cannot change.
        records.iter().any(|r| r["reason"] == "alert_acknowledged"
            && r["human"] == super::keys::operator().as_str()
            && r["error"].as_str().unwrap().contains(id)
            && r["error"]
                .as_str()
                .unwrap()
                .contains("acknowledged by alice")),
        "{records:?}"
    );
}

/// What the webhook receiver got: headers (lower-case names) and body.
type Received = Arc<Mutex<Vec<(HashMap<String, String>, Vec<u8>)>>>;

/// A webhook receiver answering each request with the next status of
/// `statuses` (the last one repeated).
fn receiver(statuses: Vec<u16>) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let kept = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let mut headers = HashMap::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let header = line.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = header.split_once(':') {
                        headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
                    }
                }
                let length: usize = headers["content-length"].parse().unwrap();
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let index = {
                    let mut kept = kept.lock().unwrap();
                    kept.push((headers, body));
                    kept.len() - 1
                };
                let status = statuses[index.min(statuses.len() - 1)];
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                if writer.write_all(answer.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    (url, received)
}

fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let (t, v1) = header.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
}

#[tokio::test]
async fn the_webhook_gets_each_alert_signed_and_retried_until_taken() {
    let secret = "a-webhook-secret-of-32-characters-at-least";
    let (url, received) = receiver(vec![503, 200]);
    let config = format!(
        "version = 1\n[alerts]\nviolations = 1\n[alerts.webhook]\nurl = \"{url}\"\n\
         secret = \"env:GH_TEST_ALERT_SECRET\"\nfirst_retry = \"200ms\"\n"
    );
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(&config),
        &[("GH_TEST_ALERT_SECRET", secret)],
    );
    let (_, reader) = server.create_key("agent", "reader", &[]);
    server
        .call_tool(
            &reader,
            "send_email",
            json!({"to": "a@example.com", "subject": "s", "body": "b"}),
        )
        .await;
    let listed = alerts_until(&server, &[], |a| {
        a.first()
            .is_some_and(|a| a["webhook"]["state"] == "delivered")
    });
    let alert = &listed[0];
    assert_eq!(alert["webhook"]["state"], "delivered", "{listed:?}");
    assert_eq!(alert["webhook"]["attempts"], 2);
    assert_eq!(alert["webhook"]["last_error"], "HTTP 503");
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one refused attempt, one taken");
    for (i, (headers, body)) in got.iter().enumerate() {
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["gatehouse-delivery-attempt"], (i + 1).to_string());
        assert_eq!(headers["gatehouse-alert-id"], alert["id"].as_str().unwrap());
        assert!(
            verify(secret, &headers["gatehouse-signature"], body),
            "{headers:?}"
        );
        assert!(!verify(
            "another-secret-of-32-characters-or-more",
            &headers["gatehouse-signature"],
            body
        ));
        let mut tampered = body.clone();
        tampered[0] = b' ';
        assert!(!verify(secret, &headers["gatehouse-signature"], &tampered));
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["type"], "gatehouse.alert");
        assert_eq!(payload["id"], alert["id"]);
        assert_eq!(payload["code"], "policy_incident");
        assert_eq!(payload["subject"], alert["subject"]);
    }
    // The secret is nowhere in what Gatehouse wrote.
    let log = std::fs::read_to_string(server.stderr_path()).unwrap();
    assert!(!log.contains(secret));
    assert!(
        !server
            .cli_json(&["check-config"])
            .to_string()
            .contains(secret)
    );
}

#[test]
fn a_webhook_over_plain_http_to_another_host_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        "version = 1\n[alerts.webhook]\nurl = \"http://siem.example/hook\"\nsecret = \"env:X\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(super::harness::BIN)
        .args(["check-config", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("gatehouse.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("alerts.webhook.url") && stderr.contains("https"),
        "{stderr}"
    );
}
