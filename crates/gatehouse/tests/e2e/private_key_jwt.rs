//! `private_key_jwt` client authentication (RFC 7523) against the real
//! binary: an operator's confidential client with a registered JWKS
//! (client credentials), and a metadata-document client that publishes a
//! `jwks_uri` (authorization code). Valid, replayed `jti`, wrong audience,
//! a key not in the client's set, a secret instead of an assertion.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::SigningKey;
use serde_json::{Value, json};

use super::browser::{Browser, code_for, pkce};
use super::harness::Server;
use super::oauth::token_request;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> i64 {
    SystemClock.now().as_secs()
}

fn assertion(key: &SigningKey, client_id: &str, aud: &str, jti: &str) -> String {
    let now = now();
    assertion_with(
        key,
        json!({ "iss": client_id, "sub": client_id, "aud": aud, "jti": jti,
                "iat": now, "exp": now + 60 }),
    )
}

fn assertion_with(key: &SigningKey, claims: Value) -> String {
    key.sign_typed(&claims, "JWT").unwrap()
}

async fn with_assertion(server: &Server, form: &[(&str, &str)], assertion: &str) -> (u16, Value) {
    let mut form = form.to_vec();
    form.push(("client_assertion_type", ASSERTION_TYPE));
    form.push(("client_assertion", assertion));
    let (status, _, body) = token_request(server, &form, None).await;
    (status, body)
}

#[tokio::test]
async fn a_confidential_client_authenticates_with_a_signed_assertion() {
    let server = Server::start(None);
    let key = SigningKey::generate().unwrap();
    let jwks_path = server.data_dir().join("bot-jwks.json");
    std::fs::write(
        &jwks_path,
        json!({ "keys": [key.public_jwk()] }).to_string(),
    )
    .unwrap();
    let created = server.cli_json(&[
        "clients",
        "create",
        "--name",
        "bot",
        "--role",
        "reader",
        "--jwks",
        jwks_path.to_str().unwrap(),
    ]);
    assert!(created.get("client_secret").is_none(), "{created}");
    assert_eq!(created["auth_method"], "private_key_jwt");
    let id = created["client_id"].as_str().unwrap().to_string();

    let metadata = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        metadata["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt"))
    );

    let resource = server.mcp_url();
    let grant = [
        ("grant_type", "client_credentials"),
        ("resource", resource.as_str()),
    ];
    let good = assertion(&key, &id, &server.base, "jti-1");
    let (status, body) = with_assertion(&server, &grant, &good).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let whoami = server.call_tool(token, "whoami", json!({})).await;
    let text = whoami["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(&id), "{text}");

    // The same assertion again: its jti was spent.
    let (status, body) = with_assertion(&server, &grant, &good).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let stranger = SigningKey::generate().unwrap();
    let now = now();
    let refused = [
        (
            "the token endpoint as audience",
            assertion(&key, &id, &format!("{}/oauth/token", server.base), "jti-2"),
        ),
        (
            "another server's audience",
            assertion(&key, &id, "https://other.example.com", "jti-3"),
        ),
        (
            "a key not in the client's set",
            assertion(&stranger, &id, &server.base, "jti-4"),
        ),
        (
            "valid for an hour",
            assertion_with(
                &key,
                json!({ "iss": id, "sub": id, "aud": server.base, "jti": "jti-5",
                        "iat": now, "exp": now + 3600 }),
            ),
        ),
        (
            "expired",
            assertion_with(
                &key,
                json!({ "iss": id, "sub": id, "aud": server.base, "jti": "jti-6",
                        "iat": now - 600, "exp": now - 300 }),
            ),
        ),
        (
            "an access token's type",
            key.sign(
                &json!({ "iss": id, "sub": id, "aud": server.base, "jti": "jti-7",
                              "iat": now, "exp": now + 60 }),
            )
            .unwrap(),
        ),
    ];
    for (name, bad) in refused {
        let (status, body) = with_assertion(&server, &grant, &bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{name}: {body}"
        );
    }

    // A secret is no substitute for the assertion.
    let (status, _, _) = token_request(&server, &grant, Some((&id, "a-guessed-secret"))).await;
    assert_eq!(status, 401);
    // Nor may a secret client send an assertion instead of its secret.
    let secret_client = server.cli_json(&["clients", "create", "--name", "s", "--role", "reader"]);
    let secret_id = secret_client["client_id"].as_str().unwrap();
    let (status, _) = with_assertion(
        &server,
        &grant,
        &assertion(&key, secret_id, &server.base, "jti-8"),
    )
    .await;
    assert_eq!(status, 401);
}

#[test]
fn the_cli_refuses_unusable_keys() {
    let server_dir = tempfile::tempdir().unwrap();
    let private = server_dir.path().join("private.json");
    std::fs::write(
        &private,
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA","d":"AA"}]}"#,
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(super::harness::BIN);
        command
            .args(["clients", "create", "--name", "bot"])
            .args(extra)
            .env("GATEHOUSE_DATA_DIR", server_dir.path());
        command.output().unwrap()
    };
    let out = run(&["--jwks", private.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("public keys only"), "{stderr}");
    let out = run(&["--jwks-uri", "http://keys.example.com/jwks.json"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("https"), "{stderr}");
}

/// Serves `/client.json` (a metadata document of a private_key_jwt client
/// whose keys are at `/jwks.json`) and `/jwks.json`. Returns the base URL.
fn client_host(key: &SigningKey) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let document = json!({
        "client_id": format!("{base}/client.json"),
        "client_name": "Signing App",
        "redirect_uris": [super::browser::REDIRECT],
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks_uri": format!("{base}/jwks.json"),
    })
    .to_string();
    let jwks = json!({ "keys": [key.public_jwk()] }).to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = if request_line.contains(" /jwks.json ") {
                jwks.clone()
            } else {
                document.clone()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    base
}

#[tokio::test]
async fn a_metadata_document_client_redeems_its_code_with_an_assertion() {
    let key = SigningKey::generate().unwrap();
    let base = client_host(&key);
    let client_id = format!("{base}/client.json");
    let server = Server::start(Some(
        "version = 1\n[oauth]\nclient_metadata_dev_hosts = [\"127.0.0.1\"]\n",
    ));
    let password = super::browser::add_user(&server, "alice", "reader");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let code = code_for(
        &server,
        &mut browser,
        &client_id,
        &challenge,
        ("alice", &password),
    )
    .await;
    let resource = server.mcp_url();
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", super::browser::REDIRECT),
        ("code_verifier", verifier.as_str()),
        ("resource", resource.as_str()),
    ];
    // Without its assertion the client is not authenticated (and the code
    // is not spent by the attempt).
    let mut public_style = redeem.to_vec();
    public_style.push(("client_id", &client_id));
    let (status, _, body) = token_request(&server, &public_style, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    // With it, the code is redeemed; the key came from the client's jwks_uri.
    let (status, body) = with_assertion(
        &server,
        &redeem,
        &assertion(&key, &client_id, &server.base, "cimd-1"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
}
