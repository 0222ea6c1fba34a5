//! Lockout after repeated authentication failures: per credential and per
//! source address, answered with 429 and `Retry-After`, audited, and
//! cleared with `gatehouse keys unlock`.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::harness::{MODERN, Server};

/// A stateless `tools/list`; returns (status, Retry-After, body).
async fn tools_list(server: &Server, key: Option<&str>) -> (u16, Option<u64>, Value) {
    tools_list_for(server, key, None).await
}

/// The same, through a proxy that says it came from `forwarded_for`.
async fn tools_list_for(
    server: &Server,
    key: Option<&str>,
    forwarded_for: Option<&str>,
) -> (u16, Option<u64>, Value) {
    tools_list_forwarded(server, key, forwarded_for.map(str::as_bytes)).await
}

/// The same, the `X-Forwarded-For` value as raw bytes (not always UTF-8).
async fn tools_list_forwarded(
    server: &Server,
    key: Option<&str>,
    forwarded_for: Option<&[u8]>,
) -> (u16, Option<u64>, Value) {
    let mut request = server
        .http
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/list");
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(value) = forwarded_for {
        let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
        request = request.header("x-forwarded-for", value);
    }
    let body = json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}
        }}
    });
    let response = request.json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let text = response.text().await.unwrap();
    (status, retry_after, super::harness::parse_body(&text))
}

/// The same key with another (well-formed) secret.
fn wrong_secret(key: &str) -> String {
    let mut wrong = key.to_string();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'B' } else { 'A' });
    wrong
}

/// Other instances (and this one) see an unlock within about a second;
/// polls instead of sleeping a fixed time.
async fn until_accepted(server: &Server, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, body) = tools_list(server, Some(key)).await;
        if status == 200 {
            return;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "still locked after the unlock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_locked(status: u16, retry_after: Option<u64>, body: &Value) {
    assert_eq!(status, 429, "{body}");
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["error"]["data"]["reason"], "locked");
    assert_eq!(body["error"]["data"]["retry_after"], retry_after);
    // The refusal does not say whether the key or the address is locked.
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("too many failed attempts"), "{message}");
}

#[tokio::test]
async fn five_wrong_secrets_lock_the_key_even_for_the_right_one_until_unlocked() {
    let server = Server::start(None);
    let (id, key) = server.create_key("guessed", "reader", &[]);
    let wrong = wrong_secret(&key);
    for attempt in 1..=5 {
        let (status, _, body) = tools_list(&server, Some(&wrong)).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    // Locked: refused before the secret is checked.
    let (status, retry_after, body) = tools_list(&server, Some(&key)).await;
    assert_locked(status, retry_after, &body);
    // Only this key: another key from the same address still works.
    let admin = server.admin_key.clone().unwrap();
    assert_eq!(tools_list(&server, Some(&admin)).await.0, 200);

    // Audited: the lock with the key's public id, then the refusal.
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    let lock = failures
        .iter()
        .find(|r| r["reason"] == "credential_locked")
        .expect("a credential_locked record");
    assert_eq!(lock["credential"], id.as_str());
    assert_eq!(lock["source"], "127.0.0.1");
    assert!(
        failures
            .iter()
            .any(|r| r["reason"] == "locked" && r["credential"] == id.as_str())
    );
    // `ghk_<id>_<secret>`: the secret itself may contain `_`.
    let secret = key.splitn(3, '_').nth(2).unwrap();
    let wrong_part = wrong.splitn(3, '_').nth(2).unwrap();
    assert_eq!(secret.len(), 43);
    for record in &failures {
        let text = record.to_string();
        assert!(
            !text.contains(secret) && !text.contains(wrong_part),
            "{text}"
        );
    }

    let locks = server.cli_json(&["keys", "locks"]);
    let listed = locks.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{locks}");
    assert_eq!(listed[0]["kind"], "key");
    assert_eq!(listed[0]["target"], id.as_str());
    assert_eq!(listed[0]["failures"], 5);

    let unlocked = server.cli_json(&["keys", "unlock", &id]);
    assert_eq!(unlocked["cleared"], true);
    assert_eq!(unlocked["subject"], format!("key:{id}"));
    until_accepted(&server, &key).await;

    // Nothing left to clear: said so, and still a success.
    let again = server.cli(&["keys", "unlock", &id]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("Nothing to clear"));
    assert_eq!(server.cli_json(&["keys", "locks"]), json!([]));
    // An address that is not one is an error.
    assert!(
        !server
            .cli(&["keys", "unlock", "--source", "not-an-address"])
            .status
            .success()
    );
}

#[tokio::test]
async fn garbage_from_one_address_locks_it_for_every_credential() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    for attempt in 1..=20 {
        let garbage = format!("not-a-gatehouse-key-{attempt}");
        let (status, _, body) = tools_list(&server, Some(&garbage)).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    // Even a valid key is refused from that address.
    let (status, retry_after, body) = tools_list(&server, Some(&admin)).await;
    assert_locked(status, retry_after, &body);

    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    let lock = failures
        .iter()
        .find(|r| r["reason"] == "source_locked")
        .expect("a source_locked record");
    assert_eq!(lock["source"], "127.0.0.1");
    assert!(lock["credential"].is_null());
    let locks = server.cli_json(&["keys", "locks"]);
    assert_eq!(locks[0]["kind"], "source", "{locks}");
    assert_eq!(locks[0]["target"], "127.0.0.1");

    let unlocked = server.cli_json(&["keys", "unlock", "--source", "127.0.0.1"]);
    assert_eq!(unlocked["cleared"], true);
    assert_eq!(unlocked["subject"], "source:127.0.0.1");
    until_accepted(&server, &admin).await;
}

/// Behind a reverse proxy every connection comes from the proxy: counting
/// failures by its address let 20 garbage requests lock every caller out.
/// A key's id is no secret (task tokens and identity assertions carry it),
/// so guessing at its secret locks it only for the guesser's address: the
/// key's own agent, elsewhere, goes on. `keys unlock ID` clears it for
/// every address.
#[tokio::test]
async fn guessing_at_a_key_locks_it_only_for_the_guessers_address() {
    let server = Server::start(Some(
        "version = 1\n[server]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n",
    ));
    let (id, key) = server.create_key("watched", "reader", &[]);
    let wrong = wrong_secret(&key);
    let guesser = Some("198.51.100.66");
    let agent = Some("198.51.100.7");
    for attempt in 1..=5 {
        let (status, _, body) = tools_list_for(&server, Some(&wrong), guesser).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    let (status, retry_after, body) = tools_list_for(&server, Some(&key), guesser).await;
    assert_locked(status, retry_after, &body);
    assert_eq!(tools_list_for(&server, Some(&key), agent).await.0, 200);
    let locks = server.cli_json(&["keys", "locks"]);
    assert_eq!(locks.as_array().unwrap().len(), 1, "{locks}");
    assert_eq!(locks[0]["kind"], "key", "{locks}");
    assert_eq!(locks[0]["target"], id.as_str(), "{locks}");
    assert_eq!(locks[0]["from"], "198.51.100.66", "{locks}");
    let unlocked = server.cli_json(&["keys", "unlock", &id]);
    assert_eq!(unlocked["cleared"], true, "{unlocked}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tools_list_for(&server, Some(&key), guesser).await.0 != 200 {
        assert!(Instant::now() < deadline, "still locked after the unlock");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With the proxy trusted (`server.trusted_proxies`), the caller it names
/// in `X-Forwarded-For` is locked, and only that caller; without it, the
/// header is nobody's word and is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_the_caller_it_names_is_locked_not_the_proxy() {
    let server = Server::start(Some(
        "version = 1\n[server]\ntrusted_proxies = [\"127.0.0.1\", \"::1\"]\n",
    ));
    let admin = server.admin_key.clone().unwrap();
    let attacker = Some("198.51.100.66, 203.0.113.5");
    for attempt in 1..=20 {
        let garbage = format!("not-a-gatehouse-key-{attempt}");
        let (status, _, body) = tools_list_for(&server, Some(&garbage), attacker).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    let (status, retry_after, body) = tools_list_for(&server, Some(&admin), attacker).await;
    assert_locked(status, retry_after, &body);
    // Another caller through the same proxy, and the proxy itself, go on.
    let other = Some("198.51.100.7");
    assert_eq!(tools_list_for(&server, Some(&admin), other).await.0, 200);
    assert_eq!(tools_list(&server, Some(&admin)).await.0, 200);
    // The records name the caller the proxy saw, not what it was told.
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    let lock = failures
        .iter()
        .find(|r| r["reason"] == "source_locked")
        .expect("a source_locked record");
    assert_eq!(lock["source"], "203.0.113.5");
    let locks = server.cli_json(&["keys", "locks"]);
    assert_eq!(locks[0]["target"], "203.0.113.5", "{locks}");

    // A caller's own part of the value may hold bytes that are no UTF-8:
    // the proxy's hop after them is still read (it is the one locked).
    for attempt in 1..=20 {
        let garbage = format!("not-a-gatehouse-key-{attempt}");
        let forwarded: &[u8] = b"\xff\xfe, 198.51.100.99";
        let (status, _, body) =
            tools_list_forwarded(&server, Some(&garbage), Some(forwarded)).await;
        assert!(matches!(status, 401 | 429), "attempt {attempt}: {body}");
    }
    let locks = server.cli_json(&["keys", "locks"]);
    assert!(
        locks
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["target"] == "198.51.100.99"),
        "{locks}"
    );
    assert_eq!(tools_list_for(&server, Some(&admin), other).await.0, 200);

    // Not trusted: the header changes nothing.
    let untrusted = Server::start(None);
    let admin = untrusted.admin_key.clone().unwrap();
    for attempt in 1..=20 {
        let garbage = format!("not-a-gatehouse-key-{attempt}");
        let from = format!("203.0.113.{attempt}");
        tools_list_for(&untrusted, Some(&garbage), Some(&from)).await;
    }
    let (status, retry_after, body) = tools_list_for(&untrusted, Some(&admin), other).await;
    assert_locked(status, retry_after, &body);
}

#[tokio::test]
async fn a_missing_credential_never_counts() {
    let server = Server::start(None);
    for _ in 0..30 {
        let (status, _, _) = tools_list(&server, None).await;
        assert_eq!(status, 401);
    }
    let admin = server.admin_key.clone().unwrap();
    assert_eq!(tools_list(&server, Some(&admin)).await.0, 200);
    assert_eq!(server.cli_json(&["keys", "locks"]), json!([]));
}

/// A request without a credential never counts toward a lockout, so a
/// flood of them cost one durable audit record each, without limit (the
/// disk filled, and the audit queue every call needs stayed busy). Past 30
/// a minute from one source they are answered as before but counted, not
/// recorded one by one; one record says so.
#[tokio::test]
async fn a_flood_of_failures_from_one_source_is_not_recorded_one_by_one() {
    let server = Server::start(None);
    for _ in 0..45 {
        assert_eq!(tools_list(&server, None).await.0, 401);
    }
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    let missing: Vec<&Value> = failures
        .iter()
        .filter(|r| r["reason"] == "missing_credential")
        .collect();
    // 30 and the one that says so (more only if a minute passed meanwhile).
    assert!((31..45).contains(&missing.len()), "{missing:?}");
    let said = missing
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("not recorded one by one"))
        })
        .count();
    assert!(said >= 1, "{missing:?}");
    // Nothing else is affected: a valid key goes on.
    let admin = server.admin_key.clone().unwrap();
    assert_eq!(tools_list(&server, Some(&admin)).await.0, 200);
}

/// The authorization server's own refusals that cost nothing to send (a
/// token request that reaches no grant, a callback from an identity
/// provider without a pending sign-in) were one durable record each,
/// without limit, and held what the caller sent whole: a megabyte of
/// `grant_type` made a record of two. They now share gate 1's budget per
/// source, and every text field of a record is cut at 4 KiB.
#[tokio::test]
async fn the_authorization_servers_cheap_refusals_are_bounded_in_number_and_size() {
    let server = Server::start(None);
    // Callbacks first: they are recorded (in the budget), and one shows the
    // provider's 20 KB name cut.
    let provider = "p".repeat(20_000);
    for _ in 0..10 {
        let response = server
            .http
            .get(format!(
                "{}/oauth/federated/{provider}/callback",
                server.base
            ))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let huge = "g".repeat(200_000);
    for _ in 0..40 {
        let (status, _, body) = super::oauth::token_request(
            &server,
            &[("grant_type", &huge), ("client_id", &huge)],
            None,
        )
        .await;
        assert!((400..500).contains(&status), "{status} {body}");
    }
    let records = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["tool"] == "oauth/token" || r["tool"] == "oauth/login")
        .collect();
    // 30 and the one that says so (a few more only if a minute passed
    // meanwhile); 50 were sent.
    assert!((31..=33).contains(&refused.len()), "{}", refused.len());
    // The callbacks reached their handler (not refused for the path's
    // length before it) and were counted in the same budget.
    let callbacks = server.audit(&["--kind", "authentication", "--tool", "oauth/login"]);
    assert!(
        callbacks
            .iter()
            .any(|r| r["agent"]
                .as_str()
                .is_some_and(|a| a.starts_with("identity_provider:ppp")
                    && a.contains("more bytes not recorded"))),
        "{callbacks:?}"
    );
    assert!(
        refused.iter().any(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("not recorded one by one"))),
        "no record says the rest are not recorded"
    );
    for record in &refused {
        let size = record.to_string().len();
        assert!(size < 3 * 5 * 1024, "a record of {size} bytes");
    }
    assert!(
        refused.iter().any(|r| r["error"]
            .as_str()
            .is_some_and(|e| e.contains("more bytes not recorded"))),
        "the grant type was not cut"
    );
}

/// A client-credentials access token from the server.
async fn client_token(server: &Server) -> String {
    let client = server.cli_json(&["clients", "create", "--name", "bot", "--role", "reader"]);
    let (status, _, body) = super::oauth::token_request(
        server,
        &[("grant_type", "client_credentials")],
        Some((
            client["client_id"].as_str().unwrap(),
            client["client_secret"].as_str().unwrap(),
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

fn decoded(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

/// `token` with its claims changed by `edit`, signed again with the
/// server's own signing key (unsealed from its store with its master key,
/// as the server does). With the times moved back, this is exactly the
/// token the server would have issued earlier: genuinely issued, and
/// expired, without waiting for it to expire.
async fn reissued(server: &Server, token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut parts = token.split('.');
    let header = decoded(parts.next().unwrap());
    let mut claims = decoded(parts.next().unwrap());
    edit(&mut claims);
    let kid = header["kid"].as_str().unwrap();
    let master_hex = std::fs::read_to_string(server.data_dir().join("master.key")).unwrap();
    let master = gatehouse_oauth::MasterKey::from_hex(master_hex.trim()).unwrap();
    let store = gatehouse_store::SqliteStore::open(&server.data_dir().join("gatehouse.db"))
        .await
        .unwrap();
    let record = gatehouse_store::Store::signing_keys(&store)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.kid == kid)
        .unwrap();
    let pkcs8 = master.open(&record.sealed_pkcs8, kid.as_bytes()).unwrap();
    gatehouse_oauth::SigningKey::from_pkcs8(&pkcs8)
        .unwrap()
        .sign(&claims)
        .unwrap()
}

/// Two hours earlier: expired well beyond the leeway.
fn two_hours_earlier(claims: &mut Value) {
    for name in ["iat", "exp"] {
        claims[name] = json!(claims[name].as_i64().unwrap() - 7200);
    }
}

/// A token exchange of `subject` for the `research` task; returns
/// (status, body).
async fn exchange(server: &Server, subject: &str) -> (u16, Value) {
    let (status, _, body) = super::oauth::token_request(
        server,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("task", "research"),
        ],
        None,
    )
    .await;
    (status, body)
}

#[tokio::test]
async fn expired_tokens_never_lock_an_address_but_forged_ones_do() {
    let server = Server::start(None);
    let fresh = client_token(&server).await;
    let expired = reissued(&server, &fresh, two_hours_earlier).await;
    let elsewhere = reissued(&server, &fresh, |claims| {
        claims["aud"] = json!("http://127.0.0.1:9/mcp");
    })
    .await;
    // An ordinary client whose token expired keeps trying: at /mcp, and as
    // the subject of a token exchange. Neither is guessing.
    for attempt in 1..=25 {
        let (status, _, body) = tools_list(&server, Some(&expired)).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
        assert_eq!(body["error"], "invalid_token", "{body}");
        let (status, body) = exchange(&server, &expired).await;
        assert_eq!(status, 400, "attempt {attempt}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{body}");
    }
    // Signed by us for another audience: genuinely issued, not counted.
    for _ in 0..5 {
        assert_eq!(tools_list(&server, Some(&elsewhere)).await.0, 401);
    }
    assert_eq!(tools_list(&server, Some(&fresh)).await.0, 200);
    assert_eq!(server.cli_json(&["keys", "locks"]), json!([]));
    let reasons: Vec<Value> = server
        .audit(&["--kind", "authentication", "--outcome", "failure"])
        .iter()
        .map(|r| r["reason"].clone())
        .collect();
    assert!(reasons.contains(&json!("token_expired")), "{reasons:?}");

    // A forged signature is a guess: twenty lock the address.
    let (input, signature) = expired.rsplit_once('.').unwrap();
    let mut forged_signature: Vec<char> = signature.chars().collect();
    forged_signature[10] = if forged_signature[10] == 'A' {
        'B'
    } else {
        'A'
    };
    let forged = format!("{input}.{}", forged_signature.iter().collect::<String>());
    for attempt in 1..=20 {
        let (status, _, body) = tools_list(&server, Some(&forged)).await;
        assert_eq!(status, 401, "attempt {attempt}: {body}");
    }
    let (status, retry_after, body) = tools_list(&server, Some(&fresh)).await;
    assert_locked(status, retry_after, &body);
}
