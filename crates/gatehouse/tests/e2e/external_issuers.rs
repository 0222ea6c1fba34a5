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
                // Her provider is on record: she is not a local alice.
                && r["issuer"] == json!(issuer)
        ),
        "{decisions:?}"
    );
    // And an investigator finds her provider's callers' records by it.
    let hers = server.audit(&["--issuer", &issuer]);
    assert!(!hers.is_empty());
    assert!(
        hers.iter().all(|r| r["issuer"] == json!(issuer)),
        "{hers:?}"
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
    // when they are wrong: a client secret presented as a bearer token by
    // mistake included.
    let client = server.cli_json(&["clients", "create", "--name", "svc", "--role", "reader"]);
    let client_secret = client["client_secret"].as_str().unwrap().to_string();
    assert!(client_secret.starts_with("ghs_"), "{client}");
    let introspected_before = seen.introspections.load(Ordering::SeqCst);
    for own in [
        "ghk_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "ghr_some-refresh-token",
        client_secret.as_str(),
    ] {
        let (status, _) = server.rpc(Some(own), "tools/list", json!({})).await;
        assert_eq!(status, 401, "{own}");
    }
    assert_eq!(
        seen.introspections.load(Ordering::SeqCst),
        introspected_before
    );
    let sent = seen.introspected.lock().unwrap().clone();
    assert!(sent.iter().all(|t| !t.starts_with("gh")), "{sent:?}");
    assert!(!sent.contains(&client_secret), "{sent:?}");
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

/// A compact JWS with exactly this header and payload text (duplicates,
/// odd types and all), signed with `key` (ES256).
fn raw(key: &SigningKey, header: &str, payload: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let der = jsonwebtoken::EncodingKey::from_ec_der(key.pkcs8());
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &der, jsonwebtoken::Algorithm::ES256).unwrap();
    format!("{input}.{signature}")
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// `tools/list` with `token` from the loopback `address`; the status.
async fn tools_list_from(server: &Server, address: &str, token: &str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    client
        .post(server.mcp_url())
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The JWT attack table (J1–J22) sent to a running server whose only
/// issuer is the provider on loopback; every case must be refused, and
/// the one valid variation (an `aud` array holding ours) accepted.
#[tokio::test]
async fn the_jwt_attack_table_is_refused_by_a_running_server() {
    let key = SigningKey::generate().unwrap();
    let (issuer, _) = provider(&key);
    let server = Server::start(Some(&format!(
        "{}\nleeway = \"30s\"\n",
        config(&issuer).replace(
            "role_map = { \"mcp-readers\" = \"reader\" }",
            "role_map = { \"mcp-readers\" = \"reader\", \"mcp-analysts\" = \"analyst\" }"
        )
    )));
    let now = now();
    let kid = key.kid().to_string();
    let mcp = server.mcp_url();
    let good = json!({
        "iss": issuer, "sub": "alice", "aud": mcp, "groups": ["mcp-readers"],
        "iat": now, "exp": now + 300,
    });
    let header = |extra: Value| {
        let mut h = json!({ "alg": "ES256", "typ": "at+jwt", "kid": kid });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                h.as_object_mut().unwrap().remove(k);
            } else {
                h[k] = v.clone();
            }
        }
        h.to_string()
    };
    let claims = |extra: Value| {
        let mut c = good.clone();
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c.to_string()
    };
    let signed = |h: Value, c: Value| raw(&key, &header(h), &claims(c));
    let attacker = SigningKey::generate().unwrap();
    let public_jwk = serde_json::to_string(&key.public_jwk()).unwrap();
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some(kid.clone()),
            typ: Some("at+jwt".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &good,
        &jsonwebtoken::EncodingKey::from_secret(public_jwk.as_bytes()),
    )
    .unwrap();
    let valid = signed(json!({}), json!({}));
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(&header(json!({ "alg": alg }))),
            b64(&claims(json!({})))
        )
    };
    let [h, p, _] = <[&str; 3]>::try_from(valid.split('.').collect::<Vec<_>>()).unwrap();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));

    let cases: Vec<(&str, String)> = vec![
        ("J1 alg none", unsigned("none")),
        ("J1 alg None", unsigned("None")),
        ("J1 alg NONE", unsigned("NONE")),
        ("J1 alg nOnE", unsigned("nOnE")),
        ("J1 no signature segment", format!("{h}.{p}")),
        ("J2 HS256 keyed with the public JWK", hs256),
        (
            "J3 ES256 signature r = s = 0",
            format!("{h}.{p}.{}", b64(&"\0".repeat(64))),
        ),
        (
            "J4 attacker key in jwk, its kid",
            raw(
                &attacker,
                &json!({ "alg": "ES256", "typ": "at+jwt", "kid": attacker.kid(),
                         "jwk": attacker.public_jwk() })
                .to_string(),
                &claims(json!({})),
            ),
        ),
        (
            "J4 jku/x5u to the attacker, the provider's kid",
            raw(
                &attacker,
                &header(
                    json!({ "jku": "https://evil.example.com/keys", "x5u": "https://evil.example.com/cert" }),
                ),
                &claims(json!({})),
            ),
        ),
        (
            "J5 kid traversal",
            signed(json!({ "kid": "../../dev/null" }), json!({})),
        ),
        (
            "J5 kid SQL",
            signed(json!({ "kid": "' OR 1=1 --" }), json!({})),
        ),
        (
            "J5 10 KB kid",
            signed(json!({ "kid": "k".repeat(10_000) }), json!({})),
        ),
        ("J5 no kid", signed(json!({ "kid": null }), json!({}))),
        ("J7 crit", signed(json!({ "crit": ["exp"] }), json!({}))),
        ("J7 b64 false", signed(json!({ "b64": false }), json!({}))),
        (
            "J8 typ JWT where at+jwt is required",
            signed(json!({ "typ": "JWT" }), json!({})),
        ),
        (
            "J8 no typ (an ID token)",
            signed(json!({ "typ": null }), json!({})),
        ),
        ("J9 zip", signed(json!({ "zip": "DEF" }), json!({}))),
        ("J9 JWE, five parts", format!("{h}.{p}.x.y.z")),
        (
            "J10 expired beyond the leeway",
            signed(json!({}), json!({ "exp": now - 120 })),
        ),
        ("J10 no exp", signed(json!({}), json!({ "exp": null }))),
        (
            "J10 exp as text",
            signed(json!({}), json!({ "exp": (now + 300).to_string() })),
        ),
        ("J10 negative exp", signed(json!({}), json!({ "exp": -1 }))),
        (
            "J11 nbf in the future",
            signed(json!({}), json!({ "nbf": now + 600 })),
        ),
        (
            "J12 iat in the future",
            signed(json!({}), json!({ "iat": now + 600 })),
        ),
        (
            "J13 iss with a trailing slash",
            signed(json!({}), json!({ "iss": format!("{issuer}/") })),
        ),
        (
            "J13 iss in capitals",
            signed(json!({}), json!({ "iss": issuer.to_uppercase() })),
        ),
        (
            "J13 another audience",
            signed(
                json!({}),
                json!({ "aud": "https://elsewhere.example.com/mcp" }),
            ),
        ),
        ("J13 no audience", signed(json!({}), json!({ "aud": null }))),
        (
            "J14 duplicate alg",
            raw(
                &key,
                &format!(r#"{{"alg":"ES256","alg":"none","typ":"at+jwt","kid":"{kid}"}}"#),
                &claims(json!({})),
            ),
        ),
        (
            "J14 duplicate sub",
            raw(
                &key,
                &header(json!({})),
                &claims(json!({})).replacen('{', r#"{"sub":"mallory","#, 1),
            ),
        ),
        (
            "J15 a 200-deep claim",
            raw(
                &key,
                &header(json!({})),
                &claims(json!({})).replacen('{', &format!(r#"{{"deep":{deep},"#), 1),
            ),
        ),
    ];
    // Each case from its own loopback address: more than 20 failures from
    // one address lock it (that lock is tested elsewhere).
    for (n, (name, token)) in cases.iter().enumerate() {
        let status = tools_list_from(&server, &format!("127.0.3.{}", n + 1), token).await;
        assert!(status == 401 || status == 400, "{name}: {status}");
    }
    // J13: an `aud` array holding ours is accepted (the control case).
    let array = signed(
        json!({}),
        json!({ "aud": ["https://other.example.com", mcp] }),
    );
    let (status, body) = server.rpc(Some(&array), "tools/list", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server.rpc(Some(&valid), "tools/list", json!({})).await.0,
        200
    );

    // J16: a 100 KB token is refused before it is decoded.
    let huge = signed(json!({}), json!({ "pad": "x".repeat(100_000) }));
    let (status, _) = server.rpc(Some(&huge), "tools/list", json!({})).await;
    assert!([400, 401, 431].contains(&status), "J16: {status}");
    // J17: a token in the query string is not a credential.
    let response = server
        .http
        .post(format!("{mcp}?access_token={valid}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#)
        .send()
        .await
        .unwrap();
    assert!([400, 401].contains(&response.status().as_u16()), "J17");
    // J18: two Authorization headers.
    let response = server
        .http
        .post(&mcp)
        .header("authorization", format!("Bearer {valid}"))
        .header("authorization", format!("Bearer {array}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#)
        .send()
        .await
        .unwrap();
    assert!([400, 401].contains(&response.status().as_u16()), "J18");
    // J20: a valid token whose role could, but whose scope does not cover
    // the tool, is refused for that call.
    let narrow = signed(
        json!({}),
        json!({ "groups": ["mcp-analysts"], "scope": "tools:read" }),
    );
    let (status, body) = server
        .rpc(
            Some(&narrow),
            "tools/call",
            json!({"name": "web_fetch", "arguments": {"url": "https://example.com/"}}),
        )
        .await;
    assert!(
        status == 403 || body["error"].is_object(),
        "J20: {status} {body}"
    );
    // Every refusal was audited with its reason.
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    assert!(
        failures.len() >= cases.len(),
        "{} < {}",
        failures.len(),
        cases.len()
    );
}

#[test]
fn a_role_the_policy_does_not_define_stops_check_config_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        "version = 1\n[[issuers]]\nissuer = \"https://idp.example.com\"\n\
         roles_claim = \"groups\"\nrole_map = { \"mcp-readers\" = \"raeder\" }\n",
    )
    .unwrap();
    let output = std::process::Command::new(super::harness::BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("issuers[0]") && stderr.contains("raeder"),
        "{stderr}"
    );
}

/// The same subject at two identity providers is two principals: with two
/// `[[issuers]]` in one tenant, an account at one provider that claims the
/// subject of a user at the other (a weaker provider, the same email)
/// cannot use that user's session, nor share its limits.
#[tokio::test]
async fn the_same_subject_at_two_providers_is_two_principals() {
    let key_a = SigningKey::generate().unwrap();
    let key_b = SigningKey::generate().unwrap();
    let (issuer_a, _) = provider(&key_a);
    let (issuer_b, _) = provider(&key_b);
    let config = format!(
        "{}[[issuers]]\nissuer = \"{issuer_b}\"\ninternal = true\n\
         roles_claim = \"groups\"\nrole_map = {{ \"mcp-readers\" = \"reader\" }}\n",
        config(&issuer_a)
    );
    let server = Server::start(Some(&config));
    let a = token(&key_a, claims(&issuer_a, &server, &["mcp-readers"]));
    let b = token(&key_b, claims(&issuer_b, &server, &["mcp-readers"]));
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": super::harness::LEGACY, "capabilities": {},
        "clientInfo": {"name": "two-providers", "version": "1"}}});
    let response = server.post_legacy(&a, None, init).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let _ = response.text().await;
    server
        .post_legacy(
            &a,
            Some(&session),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        )
        .await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let response = server.post_legacy(&b, Some(&session), list.clone()).await;
    assert_eq!(response.status(), 404, "B's token reached A's session");
    let anomalies = server.audit(&["--kind", "anomaly"]);
    assert!(
        anomalies.iter().any(|r| r["reason"] == "foreign_session"),
        "{anomalies:?}"
    );
    let response = server.post_legacy(&a, Some(&session), list).await;
    assert_eq!(response.status(), 200);
}

/// A task token carries no issuer: an external provider's token exchanged
/// for one would pass for a local user of the same name (or never work).
/// The exchange is refused and no grant is made.
#[tokio::test]
async fn an_external_providers_token_is_not_exchanged_for_a_task_token() {
    let key = SigningKey::generate().unwrap();
    let (issuer, _seen) = provider(&key);
    let server = Server::start(Some(&config(&issuer)));
    let reader = token(&key, claims(&issuer, &server, &["mcp-readers"]));
    let (status, body) = super::browser::token(
        &server,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &reader),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("task", "research"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    assert!(
        server
            .audit(&["--kind", "grant"])
            .iter()
            .all(|r| r["outcome"] != "success"),
        "a grant was made"
    );
    assert_eq!(server.cli_json(&["grants", "list"]), json!([]));
}
