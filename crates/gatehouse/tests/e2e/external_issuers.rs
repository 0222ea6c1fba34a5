//! Delegated mode against the real binary: tokens from an identity
//! provider on loopback (discovery document and JWKS served by a small
//! HTTP thread here), accepted, mapped and audited like any credential;
//! opaque tokens through the provider's introspection endpoint; and a
//! purely delegated deployment with the embedded authorization server off.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;

use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::SigningKey;
use serde_json::{Value, json};

use super::harness::Server;

/// What the provider on loopback saw and answers.
#[derive(Default)]
pub(super) struct Seen {
    key_fetches: AtomicU64,
    introspections: AtomicU64,
    /// Opaque token -> its introspection answer (absent: inactive).
    opaque: Mutex<HashMap<String, Value>>,
    /// The `Authorization` header of every introspection request.
    introspection_auth: Mutex<Vec<String>>,
    /// Every token sent for introspection.
    introspected: Mutex<Vec<String>>,
}

const IDP_CLIENT: &str = "gatehouse";
const IDP_SECRET: &str = "e2e-idp-secret";

/// Serves `/.well-known/openid-configuration`, `/keys` for `key` and an
/// RFC 7662 `/introspect` that expects Gatehouse's client credentials.
pub(super) fn provider(key: &SigningKey) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
    let metadata = json!({
        "issuer": issuer, "jwks_uri": format!("{issuer}/keys"),
        "introspection_endpoint": format!("{issuer}/introspect"),
    })
    .to_string();
    let seen = Arc::new(Seen::default());
    let state = Arc::clone(&seen);
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{IDP_CLIENT}:{IDP_SECRET}"))
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut content_length = 0;
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or_default();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; content_length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let (status, body) = if request_line.contains(" /keys ") {
                state.key_fetches.fetch_add(1, Ordering::SeqCst);
                ("200 OK", jwks.clone())
            } else if request_line.contains(" /.well-known/openid-configuration ") {
                ("200 OK", metadata.clone())
            } else if request_line.starts_with("POST /introspect ") {
                state.introspections.fetch_add(1, Ordering::SeqCst);
                state
                    .introspection_auth
                    .lock()
                    .unwrap()
                    .push(authorization.clone());
                let token = url::form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                state.introspected.lock().unwrap().push(token.clone());
                if authorization != expected_auth {
                    (
                        "401 Unauthorized",
                        json!({"error": "invalid_client"}).to_string(),
                    )
                } else {
                    let answer = state.opaque.lock().unwrap().get(&token).cloned();
                    (
                        "200 OK",
                        answer.unwrap_or(json!({"active": false})).to_string(),
                    )
                }
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (issuer, seen)
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
    let (issuer, seen) = provider(&key);
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
    assert_eq!(seen.key_fetches.load(Ordering::SeqCst), 1);

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

#[tokio::test]
async fn a_purely_delegated_deployment_accepts_jwt_and_opaque_tokens() {
    let key = SigningKey::generate().unwrap();
    let (issuer, seen) = provider(&key);
    let config = format!(
        "{}introspection = {{ client_id = \"{IDP_CLIENT}\", client_secret = \"env:GATEHOUSE_E2E_IDP_SECRET\" }}\n\
         [oauth]\nenabled = false\n",
        config(&issuer)
    );
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(&config),
        &[("GATEHOUSE_E2E_IDP_SECRET", IDP_SECRET)],
    );

    // Only the provider is offered to MCP clients, and the embedded
    // authorization server does not answer.
    let prm = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(prm["authorization_servers"], json!([issuer]));
    for path in ["/.well-known/oauth-authorization-server", "/oauth/token"] {
        let status = server
            .http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap()
            .status();
        // Unknown paths fall to the authenticated endpoint: refused.
        assert!(status == 404 || status == 401, "{path}: {status}");
    }

    // The provider's JWT works.
    let jwt = token(&key, claims(&issuer, &server, &["mcp-readers"]));
    server.call_tool(&jwt, "whoami", json!({})).await;

    // An opaque token, checked at the provider with Gatehouse's own
    // credentials, calls a tool as its user; the answer is cached.
    let now = now();
    seen.opaque.lock().unwrap().insert(
        "opaque-e2e-token".into(),
        json!({
            "active": true, "iss": issuer, "sub": "bob@example.com", "client_id": "vscode",
            "aud": server.mcp_url(), "exp": now + 300, "iat": now, "groups": ["mcp-readers"],
            "jti": "opaque-1", "token_type": "Bearer",
        }),
    );
    let body = server
        .call_tool("opaque-e2e-token", "whoami", json!({}))
        .await;
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("bob@example.com") && text.contains("vscode"),
        "{text}"
    );
    server
        .call_tool("opaque-e2e-token", "whoami", json!({}))
        .await;
    assert_eq!(seen.introspections.load(Ordering::SeqCst), 1);
    assert!(
        seen.introspection_auth
            .lock()
            .unwrap()
            .iter()
            .all(|a| a.starts_with("Basic ")),
    );

    // A made-up token is refused with its reason, and audited.
    let (status, _) = server
        .rpc(Some("made-up-opaque-token"), "tools/list", json!({}))
        .await;
    assert_eq!(status, 401);
    // Gatehouse's own credentials are never shown to the provider, even
    // when they are wrong.
    for own in [
        "ghk_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "ghr_some-refresh-token",
    ] {
        let (status, _) = server.rpc(Some(own), "tools/list", json!({})).await;
        assert_eq!(status, 401, "{own}");
    }
    let sent = seen.introspected.lock().unwrap().clone();
    assert!(sent.iter().all(|t| !t.starts_with("gh")), "{sent:?}");
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    assert!(
        failures.iter().any(|r| r["reason"] == "token_inactive"),
        "{failures:?}"
    );
    let decisions = server.audit(&["--kind", "tool_decision"]);
    assert!(
        decisions.iter().any(|r| r["human"] == "bob@example.com"
            && r["credential"]
                .as_str()
                .is_some_and(|c| c.contains("opaque-1"))),
        "{decisions:?}"
    );
}
