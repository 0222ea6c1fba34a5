//! The embedded authorization server's client-credentials grant, and the
//! resource server accepting its tokens.

use serde_json::{Value, json};

use super::harness::Server;

fn create_client(server: &Server, role: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["clients", "create", "--name", "bot", "--role", role];
    args.extend_from_slice(extra);
    let v = server.cli_json(&args);
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    )
}

/// A client-credentials access token for the client.
async fn client_token(server: &Server, id: &str, secret: &str) -> String {
    let (status, _, body) = token_request(
        server,
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

pub async fn token_request(
    server: &Server,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let mut request = server
        .http
        .post(format!("{}/oauth/token", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

#[tokio::test]
async fn metadata_and_jwks_describe_the_server() {
    let server = Server::start(None);
    let meta = server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(meta["issuer"], server.base);
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/oauth/token", server.base)
    );
    assert_eq!(
        meta["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(meta["response_types_supported"], json!(["code"]));
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert_eq!(
        meta["authorization_endpoint"],
        format!("{}/authorize", server.base)
    );
    assert_eq!(
        meta["registration_endpoint"],
        format!("{}/oauth/register", server.base)
    );
    // OpenID discovery says the same, with the same issuer.
    let openid = server.get_json("/.well-known/openid-configuration").await;
    assert_eq!(openid["issuer"], server.base);
    assert_eq!(openid["token_endpoint"], meta["token_endpoint"]);
    let jwks_path = meta["jwks_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(&server.base)
        .unwrap()
        .to_string();
    let jwks = server.get_json(&jwks_path).await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0].get("d").is_none(), "private key published");
    // The protected resource names its authorization server.
    let prm = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(prm["authorization_servers"], json!([server.base]));
}

#[tokio::test]
async fn client_credentials_token_calls_tools_under_the_client_role() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader", &[]);
    let resource = server.mcp_url();
    let (status, headers, body) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("resource", &resource),
        ],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap().to_string();
    let mut names = server.tool_names(&token).await;
    names.sort();
    assert_eq!(names, ["read_file", "search_database", "whoami"]);
    let who = server.call_tool(&token, "whoami", json!({})).await;
    assert_eq!(who["result"]["structuredContent"]["agent"], id.as_str());
    assert_eq!(
        who["result"]["structuredContent"]["credential"]["kind"],
        "access_token"
    );
    let denied = server
        .call_tool(&token, "web_fetch", json!({"url": "https://example.com"}))
        .await;
    assert_eq!(denied["error"]["data"]["reason"], "role_not_allowed");

    // client_secret_post works too, and a requested scope narrows the token.
    let (id2, secret2) = create_client(&server, "admin", &["--scopes", "tools:read", "tools:web"]);
    let (status, _, body) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &id2),
            ("client_secret", &secret2),
            ("scope", "tools:read"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "tools:read");
    let mut names = server
        .tool_names(body["access_token"].as_str().unwrap())
        .await;
    names.sort();
    assert_eq!(names, ["read_file", "search_database", "whoami"]);

    // Issuance is audited.
    let records = server.audit(&["--kind", "authentication", "--tool", "oauth/token"]);
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["outcome"] == "success"));
}

#[tokio::test]
async fn token_endpoint_refuses_bad_requests_with_rfc_errors() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader", &["--scopes", "tools:read"]);
    let cc = ("grant_type", "client_credentials");
    // form, Basic credentials, expected status, expected error
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        Option<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (vec![cc], Some((&id, "wrong")), 401, "invalid_client"),
        (
            vec![cc],
            Some(("ghc_unknown", &secret)),
            401,
            "invalid_client",
        ),
        (vec![cc], None, 401, "invalid_client"),
        (
            vec![
                ("grant_type", "password"),
                ("username", "a"),
                ("password", "b"),
            ],
            Some((&id, &secret)),
            400,
            "unsupported_grant_type",
        ),
        (
            vec![("grant_type", "authorization_code"), ("code", "x")],
            Some((&id, &secret)),
            400,
            "unauthorized_client",
        ),
        (
            vec![cc, ("scope", "tools:admin")],
            Some((&id, &secret)),
            400,
            "invalid_scope",
        ),
        (
            vec![cc, ("scope", "everything")],
            Some((&id, &secret)),
            400,
            "invalid_scope",
        ),
        (
            vec![cc, ("resource", "https://evil.example.com/mcp")],
            Some((&id, &secret)),
            400,
            "invalid_target",
        ),
        (vec![cc, cc], Some((&id, &secret)), 400, "invalid_request"),
    ];
    for (form, basic, status, error) in cases {
        let (got, headers, body) = token_request(&server, &form, basic).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, error),
            "{form:?}"
        );
        assert_eq!(headers["cache-control"], "no-store");
        if basic.is_some() && error == "invalid_client" {
            assert!(headers.contains_key("www-authenticate"));
        }
    }
    let failures = server.audit(&[
        "--kind",
        "authentication",
        "--outcome",
        "failure",
        "--tool",
        "oauth/token",
    ]);
    assert!(failures.iter().any(|r| r["reason"] == "invalid_client"));
}

#[tokio::test]
async fn bad_tokens_get_401_and_a_revoked_client_stops_at_once() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader", &[]);
    let token = client_token(&server, &id, &secret).await;
    assert_eq!(server.tool_names(&token).await.len(), 3);

    // Tampered payload, alg none, garbage.
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{}.", parts[1]);
    for bad in [tampered.as_str(), none.as_str(), "a.b.c"] {
        let (status, body) = server.rpc(Some(bad), "tools/list", json!({})).await;
        assert_eq!(status, 401, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_token");
    }

    server.cli_json(&["clients", "revoke", &id]);
    let (status, body) = server.rpc(Some(&token), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_description"], "the credential has been revoked");
    let (status, _, _) = token_request(
        &server,
        &[("grant_type", "client_credentials")],
        Some((&id, &secret)),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn tokens_for_another_public_url_are_refused() {
    // Two servers share nothing; a token of one is not valid at the other
    // (other issuer, other audience, other key).
    let one = Server::start(None);
    let two = Server::start(None);
    let (id, secret) = create_client(&one, "reader", &[]);
    let token = client_token(&one, &id, &secret).await;
    let (status, _) = two.rpc(Some(&token), "tools/list", json!({})).await;
    assert_eq!(status, 401);
}

async fn form_post(
    server: &Server,
    path: &str,
    form: &[(&str, &str)],
    basic: (&str, &str),
) -> (u16, Value) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = server
        .http
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .basic_auth(basic.0, Some(basic.1))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn revoked_tokens_stop_at_once_and_introspection_tells_the_state() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader", &[]);
    let (other_id, other_secret) = create_client(&server, "reader", &[]);
    let token = client_token(&server, &id, &secret).await;
    let spare = client_token(&server, &id, &secret).await;
    assert_eq!(server.tool_names(&token).await.len(), 3);

    let (status, active) = form_post(
        &server,
        "/oauth/introspect",
        &[("token", &token)],
        (&id, &secret),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], id.as_str());
    assert_eq!(active["roles"], json!(["reader"]));

    // Another client may not revoke it.
    let (status, body) = form_post(
        &server,
        "/oauth/revoke",
        &[("token", &token)],
        (&other_id, &other_secret),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    assert_eq!(server.tool_names(&token).await.len(), 3);

    // Its own client may; the very next request is refused.
    let (status, _) = form_post(
        &server,
        "/oauth/revoke",
        &[("token", &token)],
        (&id, &secret),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = server.rpc(Some(&token), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_description"], "the credential has been revoked");
    // Only that token: the client's other token still works.
    assert_eq!(server.tool_names(&spare).await.len(), 3);

    let (_, inactive) = form_post(
        &server,
        "/oauth/introspect",
        &[("token", &token)],
        (&id, &secret),
    )
    .await;
    assert_eq!(inactive, json!({"active": false}));
    // Unknown tokens: 200 on revoke (RFC 7009), inactive on introspect.
    let (status, _) = form_post(
        &server,
        "/oauth/revoke",
        &[("token", "garbage")],
        (&id, &secret),
    )
    .await;
    assert_eq!(status, 200);
    let (_, garbage) = form_post(
        &server,
        "/oauth/introspect",
        &[("token", "a.b.c")],
        (&id, &secret),
    )
    .await;
    assert_eq!(garbage, json!({"active": false}));
    // Both endpoints need client authentication.
    let (status, body) = form_post(
        &server,
        "/oauth/introspect",
        &[("token", &spare)],
        (&id, "wrong"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let revocations = server.audit(&["--tool", "oauth/revoke"]);
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["agent"], id.as_str());
}

/// Every revocation of a live token moves the credential generation, which
/// empties every instance's caches (keys, tokens, pins): a client minting
/// and revoking tokens in a loop kept every instance re-reading its store.
/// Revocations that change something are limited per client and person.
#[tokio::test]
async fn a_client_revoking_tokens_in_a_loop_is_held_back() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader", &[]);
    let per_person = gatehouse_oauth::REVOCATIONS_PER_PERSON_PER_MINUTE as usize;
    let mut tokens = Vec::new();
    for _ in 0..=per_person {
        tokens.push(client_token(&server, &id, &secret).await);
    }
    for token in &tokens[..per_person] {
        let (status, _) = form_post(
            &server,
            "/oauth/revoke",
            &[("token", token)],
            (&id, &secret),
        )
        .await;
        assert_eq!(status, 200);
    }
    let last = &tokens[per_person];
    let (status, body) =
        form_post(&server, "/oauth/revoke", &[("token", last)], (&id, &secret)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("temporarily_unavailable")),
        "{body}"
    );
    // Not revoked (the client is told to come back), and the refusal is
    // on record.
    assert_eq!(server.tool_names(last).await.len(), 3);
    let records = server.audit(&["--tool", "oauth/revoke"]);
    let revoked = records.iter().filter(|r| r["decision"] == "revoke").count();
    assert_eq!(revoked, per_person, "{records:?}");
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r["reason"] == "rate_limited")
        .collect();
    assert_eq!(refused.len(), 1, "{records:?}");
    // Revoking what is already revoked changes nothing and is not counted.
    let (status, _) = form_post(
        &server,
        "/oauth/revoke",
        &[("token", &tokens[0])],
        (&id, &secret),
    )
    .await;
    assert_eq!(status, 200);
}

async fn jwks_kids(server: &Server) -> Vec<String> {
    let jwks = server.get_json("/oauth/jwks.json").await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn header_kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn signing_key_rotation_publishes_first_and_keeps_old_tokens_valid() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader", &[]);
    let old_token = client_token(&server, &id, &secret).await;
    let old_kid = header_kid(&old_token);
    assert_eq!(jwks_kids(&server).await, vec![old_kid.clone()]);

    // Published ahead: in the JWKS now, but the old key still signs.
    let ahead = server.cli_json(&["keys", "rotate-signing", "--publish-ahead", "1h"]);
    let next_kid = ahead["kid"].as_str().unwrap().to_string();
    assert_eq!(
        jwks_kids(&server).await,
        [old_kid.clone(), next_kid.clone()]
    );
    assert_eq!(
        header_kid(&client_token(&server, &id, &secret).await),
        old_kid
    );

    // Active at once: new tokens carry the new kid; old tokens keep working
    // and the old key stays published while they may live.
    let now = server.cli_json(&["keys", "rotate-signing", "--publish-ahead", "0s"]);
    let new_kid = now["kid"].as_str().unwrap().to_string();
    let new_token = client_token(&server, &id, &secret).await;
    assert_eq!(header_kid(&new_token), new_kid);
    assert_eq!(server.tool_names(&new_token).await.len(), 3);
    assert_eq!(server.tool_names(&old_token).await.len(), 3);
    let published = jwks_kids(&server).await;
    assert!(
        published.contains(&old_kid) && published.contains(&new_kid),
        "{published:?}"
    );
    // The key that is scheduled later than the active one is still published.
    assert!(published.contains(&next_kid));
}

#[tokio::test]
async fn a_token_without_the_tools_scope_gets_a_403_step_up_challenge() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "admin", &["--scopes", "tools:read", "tools:web"]);
    let (_, _, body) = token_request(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("scope", "tools:read"),
        ],
        Some((&id, &secret)),
    )
    .await;
    let token = body["access_token"].as_str().unwrap().to_string();
    let response = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "web_fetch")
        .body(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"web_fetch","arguments":{"url":"https://example.com"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"tools:web\""), "{challenge}");
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], 7);
    assert_eq!(body["error"]["data"]["reason"], "insufficient_scope");
    // Recorded once, like any denial.
    let denials = server.audit(&["--tool", "web_fetch", "--outcome", "denied"]);
    assert_eq!(denials.len(), 1);
    assert_eq!(denials[0]["reason"], "insufficient_scope");
    // Within its scope the token works; other denials stay JSON-RPC errors.
    let ok = server.call_tool(&token, "whoami", json!({})).await;
    assert_eq!(ok["result"]["isError"], false);
    // An API key lacking a scope still gets the JSON-RPC denial (no OAuth step-up).
    let (_, key) = server.create_key("scoped", "admin", &["--scopes", "tools:read"]);
    let denied = server
        .call_tool(&key, "web_fetch", json!({"url": "https://example.com"}))
        .await;
    assert_eq!(denied["error"]["data"]["reason"], "insufficient_scope");
}

#[tokio::test]
async fn a_rotated_client_secret_overlaps_then_only_the_new_one_works() {
    let server = Server::start(None);
    let (id, first) = create_client(&server, "reader", &[]);
    let rotated = server.cli_json(&["clients", "rotate-secret", &id, "--overlap", "1h"]);
    let second = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(rotated["client_id"], id.as_str());
    assert_eq!(rotated["earlier_secret_ended"], false);
    // During the overlap both secrets get tokens, for the same client.
    for secret in [&first, &second] {
        let token = client_token(&server, &id, secret).await;
        let who = server.call_tool(&token, "whoami", json!({})).await;
        assert_eq!(who["result"]["structuredContent"]["agent"], id.as_str());
    }
    let listed = server.cli_json(&["clients", "list"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(entry["previous_secret_valid_until"].is_string());
    assert_ne!(entry["secret_issued_at"], entry["created_at"]);
    assert!(!listed.to_string().contains(&second));

    // A token the client got for itself with the second secret, in use.
    let minted = client_token(&server, &id, &second).await;
    let who = server.call_tool(&minted, "whoami", json!({})).await;
    assert!(who["result"].is_object(), "{who}");

    // The second secret leaked: rotated with --revoke-tokens, it stops at
    // once, so does the one replaced before it, and so does every token
    // the client obtained for itself until then.
    let rotated = server.cli_json(&["clients", "rotate-secret", &id, "--revoke-tokens"]);
    assert_eq!(rotated["earlier_secret_ended"], true);
    assert!(rotated["tokens_revoked_before"].is_string(), "{rotated}");
    let third = rotated["client_secret"].as_str().unwrap().to_string();
    let (status, body) = server.rpc(Some(&minted), "tools/list", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error_description"], "the credential has been revoked");
    for old in [&first, &second] {
        let (status, _, body) = token_request(
            &server,
            &[("grant_type", "client_credentials")],
            Some((&id, old)),
        )
        .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "invalid_client");
    }
    // The new secret's tokens work at once.
    let fresh = client_token(&server, &id, &third).await;
    let who = server.call_tool(&fresh, "whoami", json!({})).await;
    assert!(who["result"].is_object(), "{who}");

    // Each rotation is in the audit trail, never with a secret.
    let records = server.audit(&["--kind", "operator"]);
    let rotations: Vec<&Value> = records
        .iter()
        .filter(|r| r["reason"] == "client_secret_rotated")
        .collect();
    assert_eq!(rotations.len(), 2);
    assert_eq!(rotations[0]["credential"], id.as_str());
    let all = serde_json::to_string(&records).unwrap();
    for secret in [&first, &second, &third] {
        assert!(!all.contains(secret.as_str()));
    }

    // A public client has no secret to rotate; a revoked one is refused.
    let public = server.cli_json(&["clients", "create", "--name", "app", "--public"]);
    let out = server.cli(&[
        "clients",
        "rotate-secret",
        public["client_id"].as_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret"));
    server.cli_json(&["clients", "revoke", &id]);
    let out = server.cli(&["clients", "rotate-secret", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no active client"));
}
