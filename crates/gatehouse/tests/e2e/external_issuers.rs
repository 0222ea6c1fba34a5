//! Delegated mode against the real binary: tokens from an identity
//! provider on loopback (discovery document and JWKS served by a small
//! HTTP thread here), accepted, mapped and audited like any credential.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::SigningKey;
use serde_json::{Value, json};

use super::harness::Server;

/// Serves `/.well-known/openid-configuration` and `/keys` for `key`;
/// returns the issuer URL and the count of key-set fetches.
fn provider(key: &SigningKey) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
    let metadata = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") }).to_string();
    let fetches = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&fetches);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = if request_line.contains(" /keys ") {
                counted.fetch_add(1, Ordering::SeqCst);
                jwks.clone()
            } else if request_line.contains(" /.well-known/openid-configuration ") {
                metadata.clone()
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (issuer, fetches)
}

fn now() -> i64 {
    // The server checks tokens against the system clock.
    SystemClock.now().as_secs()
}

fn token(key: &SigningKey, claims: Value) -> String {
    key.sign(&claims).unwrap()
}

fn claims(issuer: &str, server: &Server, groups: &[&str]) -> Value {
    let now = now();
    json!({
        "iss": issuer, "sub": "alice@example.com", "azp": "claude-desktop",
        "aud": server.mcp_url(), "groups": groups, "jti": format!("ext-{now}"),
        "iat": now, "exp": now + 300,
    })
}

fn config(issuer: &str) -> String {
    format!(
        "version = 1\n[[issuers]]\nissuer = \"{issuer}\"\ninternal = true\n\
         roles_claim = \"groups\"\nrole_map = {{ \"mcp-readers\" = \"reader\" }}\n"
    )
}

#[tokio::test]
async fn an_identity_providers_token_calls_a_tool_as_its_user() {
    let key = SigningKey::generate().unwrap();
    let (issuer, fetches) = provider(&key);
    let server = Server::start(Some(&config(&issuer)));

    // MCP clients discover the provider next to the embedded server.
    let prm = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(prm["authorization_servers"], json!([server.base, issuer]));

    let reader = token(&key, claims(&issuer, &server, &["mcp-readers", "staff"]));
    let body = server.call_tool(&reader, "whoami", json!({})).await;
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("alice@example.com"), "{text}");
    assert!(text.contains("claude-desktop"), "{text}");
    // A second call is served from the cached key set.
    server.call_tool(&reader, "whoami", json!({})).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // A token whose groups map to no role authenticates and may call nothing.
    let nobody = token(&key, claims(&issuer, &server, &["staff"]));
    let (status, body) = server
        .rpc(
            Some(&nobody),
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["error"].is_object() || body["result"]["isError"] == true,
        "{body}"
    );

    // The decision names the external credential.
    let decisions = server.audit(&["--kind", "tool_decision"]);
    assert!(
        decisions.iter().any(
            |r| r["credential"].as_str().is_some_and(|c| c.contains("ext-"))
                && r["human"] == "alice@example.com"
        ),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn tokens_of_unknown_issuers_and_forged_keys_are_refused_and_audited() {
    let key = SigningKey::generate().unwrap();
    let (issuer, _) = provider(&key);
    let server = Server::start(Some(&config(&issuer)));

    let stranger = token(
        &key,
        claims("https://evil.example.com", &server, &["mcp-readers"]),
    );
    let forger = SigningKey::generate().unwrap();
    // The forger's key under a kid the provider does not have.
    let forged = token(&forger, claims(&issuer, &server, &["mcp-readers"]));
    let mut wrong_audience = claims(&issuer, &server, &["mcp-readers"]);
    wrong_audience["aud"] = json!("https://elsewhere.example.com/mcp");
    let wrong_audience = token(&key, wrong_audience);
    for bad in [&stranger, &forged, &wrong_audience] {
        let (status, body) = server.rpc(Some(bad), "tools/list", json!({})).await;
        assert_eq!(status, 401, "{body}");
    }
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    let reasons: Vec<&str> = failures
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    for reason in ["unknown_issuer", "unknown_kid", "wrong_audience"] {
        assert!(reasons.contains(&reason), "{reason} missing in {reasons:?}");
    }
}

#[test]
fn a_bad_issuer_entry_stops_start_up_naming_it() {
    let output = std::process::Command::new(super::harness::BIN)
        .args(["check-config", "--config"])
        .arg({
            let dir = tempfile::tempdir().unwrap().keep();
            let path = dir.join("gatehouse.toml");
            std::fs::write(
                &path,
                "version = 1\n[[issuers]]\nissuer = \"http://idp.example.com\"\n",
            )
            .unwrap();
            path
        })
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("issuers[0]") && stderr.contains("https"),
        "{stderr}"
    );
}
