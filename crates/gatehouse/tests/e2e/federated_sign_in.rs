//! Sign-in through an identity provider, against the real binary: an
//! OpenID provider on loopback (discovery, /authorize that signs in
//! whoever the test says, /token that checks Gatehouse's client secret and
//! PKCE and returns an ID token) and the scripted browser. Just-in-time
//! users with group-mapped roles, linking by verified email, password
//! sign-in switched off, and the attacks: a replayed callback, a callback
//! in another browser, a wrong nonce, another issuer, a provider error,
//! a user disabled in Gatehouse.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::SigningKey;
use serde_json::{Value, json};
use sha2::Digest;

use super::browser::{Browser, Page, authorize_url, pkce, public_client, query, redeem, token};
use super::harness::Server;

const CLIENT_ID: &str = "gatehouse-at-acme";
const CLIENT_SECRET: &str = "acme-oidc-secret";
const PROVIDER_ACCESS_TOKEN: &str = "idp-access-token-never-forwarded";

/// The provider: who is signed in there, what it was asked, how it misbehaves.
#[derive(Default)]
struct Idp {
    /// Claims of the person signed in at the provider (sub, email, groups…).
    person: Mutex<Value>,
    /// code -> (nonce, code_challenge, redirect_uri)
    codes: Mutex<HashMap<String, (String, String, String)>>,
    wrong_nonce: AtomicBool,
    foreign_iss: AtomicBool,
    deny: AtomicBool,
    token_requests: AtomicU64,
}

fn respond(stream: &mut std::net::TcpStream, status: &str, headers: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn provider(key: SigningKey) -> (String, Arc<Idp>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let idp = Arc::new(Idp::default());
    let state = Arc::clone(&idp);
    let iss = issuer.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let (mut length, mut authorization) = (0, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or_default();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "authorization" => authorization = value.trim().to_owned(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let target = request_line.split_whitespace().nth(1).unwrap_or("/");
            let url = url::Url::parse(&format!("{iss}{target}")).unwrap();
            let json_type = "content-type: application/json\r\n";
            match url.path() {
                "/.well-known/openid-configuration" => {
                    let doc = json!({
                        "issuer": iss, "jwks_uri": format!("{iss}/keys"),
                        "authorization_endpoint": format!("{iss}/authorize"),
                        "token_endpoint": format!("{iss}/token"),
                    });
                    respond(&mut stream, "200 OK", json_type, &doc.to_string());
                }
                "/keys" => {
                    let keys = json!({ "keys": [key.public_jwk()] });
                    respond(&mut stream, "200 OK", json_type, &keys.to_string());
                }
                "/authorize" => {
                    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
                    let redirect = q["redirect_uri"].clone();
                    let mut back = url::Url::parse(&redirect).unwrap();
                    back.query_pairs_mut().append_pair("state", &q["state"]);
                    if state.deny.load(Ordering::SeqCst) {
                        back.query_pairs_mut().append_pair("error", "access_denied");
                    } else {
                        let code = format!("code-{}", state.codes.lock().unwrap().len());
                        state.codes.lock().unwrap().insert(
                            code.clone(),
                            (q["nonce"].clone(), q["code_challenge"].clone(), redirect),
                        );
                        back.query_pairs_mut().append_pair("code", &code);
                    }
                    let named = if state.foreign_iss.load(Ordering::SeqCst) {
                        "https://evil.example.com".to_string()
                    } else {
                        iss.clone()
                    };
                    back.query_pairs_mut().append_pair("iss", &named);
                    respond(
                        &mut stream,
                        "302 Found",
                        &format!("location: {back}\r\n"),
                        "",
                    );
                }
                "/token" => {
                    state.token_requests.fetch_add(1, Ordering::SeqCst);
                    let form: HashMap<String, String> =
                        url::form_urlencoded::parse(&body).into_owned().collect();
                    let expected = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                    );
                    let Some((nonce, challenge, redirect)) =
                        state.codes.lock().unwrap().remove(&form["code"])
                    else {
                        respond(
                            &mut stream,
                            "400 Bad Request",
                            json_type,
                            "{\"error\":\"invalid_grant\"}",
                        );
                        continue;
                    };
                    let verified = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(sha2::Sha256::digest(form["code_verifier"].as_bytes()));
                    if authorization != expected
                        || verified != challenge
                        || form["redirect_uri"] != redirect
                    {
                        respond(
                            &mut stream,
                            "400 Bad Request",
                            json_type,
                            "{\"error\":\"invalid_grant\"}",
                        );
                        continue;
                    }
                    let now = SystemClock.now().as_secs();
                    let mut claims = state.person.lock().unwrap().clone();
                    claims["iss"] = json!(iss);
                    claims["aud"] = json!(CLIENT_ID);
                    // A test may say when the claims were issued.
                    if claims.get("iat").is_none() {
                        claims["iat"] = json!(now);
                    }
                    claims["exp"] = json!(now + 300);
                    claims["nonce"] = if state.wrong_nonce.load(Ordering::SeqCst) {
                        json!("another-sign-in")
                    } else {
                        json!(nonce)
                    };
                    let id_token = key.sign_typed(&claims, "JWT").unwrap();
                    let answer = json!({
                        "access_token": PROVIDER_ACCESS_TOKEN, "token_type": "Bearer",
                        "expires_in": 300, "id_token": id_token,
                    });
                    respond(&mut stream, "200 OK", json_type, &answer.to_string());
                }
                _ => respond(&mut stream, "404 Not Found", "", ""),
            }
        }
    });
    (issuer, idp)
}

fn config(issuer: &str, extra: &str) -> String {
    format!(
        "version = 1\n[oauth]\n{extra}\n[[oauth.identity_providers]]\nname = \"acme\"\n\
         issuer = \"{issuer}\"\ninternal = true\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret = \"env:GATEHOUSE_E2E_OIDC_SECRET\"\ndisplay_name = \"Acme SSO\"\n\
         create_users = true\nroles_claim = \"groups\"\n\
         role_map = {{ \"mcp-readers\" = \"reader\", \"mcp-ops\" = \"executor\" }}\n"
    )
}

fn start(issuer: &str, extra: &str) -> Server {
    Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(&config(issuer, extra)),
        &[("GATEHOUSE_E2E_OIDC_SECRET", CLIENT_SECRET)],
    )
}

/// The "Sign in with Acme SSO" link of a login page.
fn sign_in_link(page: &Page) -> String {
    assert!(page.body.contains("Sign in with Acme SSO"), "{}", page.body);
    let start = page.body.find("href=\"/oauth/federated/start?").unwrap() + 6;
    let end = start + page.body[start..].find('"').unwrap();
    page.body[start..end].replace("&amp;", "&")
}

/// Up to the provider's redirect back: the callback URL, not yet visited.
async fn to_provider_and_back(
    browser: &mut Browser,
    server: &Server,
    client: &str,
    challenge: &str,
) -> String {
    let login = browser
        .visit(&authorize_url(server, client, challenge, &[]))
        .await;
    let started = browser.get(&sign_in_link(&login)).await;
    assert_eq!(started.status, 303, "{}", started.body);
    let at_provider = started.location().unwrap();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = plain.get(&at_provider).send().await.unwrap();
    assert_eq!(answer.status(), 302);
    answer.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_person_signs_in_through_the_provider_and_gets_gatehouse_tokens() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    *idp.person.lock().unwrap() =
        json!({ "sub": "00uAlice", "groups": ["mcp-ops", "staff"], "email": "alice@acme.example" });
    let server = start(&issuer, "");
    let client = public_client(&server, "app");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    assert!(
        callback.starts_with(&format!("{}/oauth/federated/acme/callback?", server.base)),
        "{callback}"
    );

    // Back at Gatehouse: signed in, on to Gatehouse's own consent.
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let consent = browser.follow(back).await;
    assert!(consent.is_consent(), "{}", consent.body);
    assert!(consent.body.contains("acme:00ualice"), "{}", consent.body);
    let decided = browser.decide(&consent, "approve").await;
    let code = query(&decided.location().unwrap())["code"].clone();
    let (status, tokens) = redeem(&server, &client, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let whoami = server.call_tool(access, "whoami", json!({})).await;
    let text = whoami["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("acme:00ualice") && text.contains("executor"),
        "{text}"
    );
    assert_eq!(idp.token_requests.load(Ordering::SeqCst), 1);

    // The same callback again: the sign-in was used.
    let replay = browser.get(&callback).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("expired or was already used"));

    // Audited; the provider's own token appears nowhere.
    let logins = server.audit(&["--tool", "oauth/login"]);
    assert!(
        logins
            .iter()
            .any(|r| r["reason"] == "identity_provider:acme" && r["human"] == "acme:00ualice"),
        "{logins:?}"
    );
    assert!(
        logins.iter().any(|r| r["reason"] == "sign_in_expired"),
        "{logins:?}"
    );
    let everything = std::fs::read_to_string(server.data_dir().join("audit.jsonl"))
        .unwrap_or_default()
        + &std::fs::read_to_string(server.stderr_path()).unwrap_or_default();
    assert!(!everything.contains(PROVIDER_ACCESS_TOKEN));
    assert!(!everything.contains(CLIENT_SECRET));

    // Disabled in Gatehouse: the provider's word no longer lets them in.
    server.cli_json(&["users", "disable", "acme:00ualice"]);
    let mut again = Browser::new(&server);
    let callback = to_provider_and_back(&mut again, &server, &client, &challenge).await;
    let refused = again.get(&callback).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("disabled"), "{}", refused.body);
}

#[tokio::test]
async fn a_role_the_provider_takes_away_ends_the_tokens_that_carried_it() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    *idp.person.lock().unwrap() = json!({ "sub": "u-frank", "groups": ["mcp-ops"] });
    let server = start(&issuer, "");
    let client = public_client(&server, "app");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let consent = browser.visit(&callback).await;
    let decided = browser.decide(&consent, "approve").await;
    let code = query(&decided.location().unwrap())["code"].clone();
    let (status, tokens) = redeem(&server, &client, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let whoami = server.call_tool(access, "whoami", json!({})).await;
    let text = whoami["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("executor"), "{text}");

    // The provider drops the group; the person signs in again.
    *idp.person.lock().unwrap() = json!({ "sub": "u-frank", "groups": ["mcp-readers"] });
    let mut again = Browser::new(&server);
    let callback = to_provider_and_back(&mut again, &server, &client, &challenge).await;
    again.visit(&callback).await;

    // What the old grant carried is dead: its refresh token and its
    // access token alike.
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client.as_str()),
            ("refresh_token", refresh),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, _) = server
        .rpc(
            Some(access),
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 401);
    let changed = server.audit(&["--tool", "oauth/user_roles_changed"]);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["reason"], "roles_removed_by_provider");
}

/// Two sign-ins race a role change at the provider: the one whose ID token
/// was issued before the change finishes after the one whose token was
/// issued after it. Written last, its older claims used to decide the
/// roles and bring the removed role back. Now the sign-in is refused ("sign
/// in again") and the person keeps the roles of the newer claims; an older
/// sign-in that says what the newer one said goes through. The time of the
/// claims applied moves on with every sign-in, also one that changes no
/// role, and is set when the user is created.
#[tokio::test]
async fn a_sign_in_with_claims_older_than_those_applied_cannot_bring_a_role_back() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    let now = SystemClock.now().as_secs();
    let server = start(&issuer, "");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    // Signs `sub` in with claims issued `ago` seconds ago; the status of
    // the page the callback leads to, and its body.
    let sign_in = |sub: &'static str, groups: &'static [&'static str], ago: i64| {
        let (idp, server, client, challenge) = (&idp, &server, &client, &challenge);
        async move {
            *idp.person.lock().unwrap() = json!({ "sub": sub, "groups": groups, "iat": now - ago });
            let mut browser = Browser::new(server);
            let callback = to_provider_and_back(&mut browser, server, client, challenge).await;
            let page = browser.visit(&callback).await;
            (page.status, page.body)
        }
    };
    let roles = |username: &str| {
        let users = server.cli_json(&["users", "list"]);
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == username)
            .unwrap_or_else(|| panic!("{users}"))["roles"]
            .clone()
    };
    let refused = |(status, body): (u16, String)| {
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("sign in again"), "{body}");
    };

    assert_eq!(sign_in("u-gina", &["mcp-ops"], 20).await.0, 200);
    assert_eq!(roles("acme:u-gina"), json!(["executor"]));
    // The provider takes the group away; a sign-in with its new word, and
    // another that changes nothing.
    assert_eq!(sign_in("u-gina", &["mcp-readers"], 10).await.0, 200);
    assert_eq!(sign_in("u-gina", &["mcp-readers"], 5).await.0, 200);
    assert_eq!(roles("acme:u-gina"), json!(["reader"]));
    // A sign-in whose ID token was issued before the last one but says
    // the same goes through; one still with the group is refused.
    assert_eq!(sign_in("u-gina", &["mcp-readers"], 8).await.0, 200);
    refused(sign_in("u-gina", &["mcp-ops"], 7).await);
    assert_eq!(
        roles("acme:u-gina"),
        json!(["reader"]),
        "the older claims brought the role back"
    );
    let changed = server.audit(&["--tool", "oauth/user_roles_changed"]);
    assert_eq!(changed.len(), 1, "{changed:?}");
    let refusals = server.audit(&["--tool", "oauth/login", "--outcome", "failure"]);
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["reason"], "claims_superseded");
    // Signing in again gets the provider's current word.
    assert_eq!(sign_in("u-gina", &["mcp-readers"], 0).await.0, 200);
    assert_eq!(roles("acme:u-gina"), json!(["reader"]));

    // The user created by a sign-in keeps that sign-in's time.
    assert_eq!(sign_in("u-hank", &["mcp-readers"], 5).await.0, 200);
    refused(sign_in("u-hank", &["mcp-ops"], 10).await);
    assert_eq!(roles("acme:u-hank"), json!(["reader"]));
}

#[tokio::test]
async fn forged_and_misdirected_callbacks_are_refused() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    *idp.person.lock().unwrap() = json!({ "sub": "u-bob", "groups": ["mcp-readers"] });
    let server = start(&issuer, "");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();

    // Started in one browser, landed in another (a code pushed into a
    // victim's browser): refused, and the sign-in is spent.
    let mut attacker = Browser::new(&server);
    let callback = to_provider_and_back(&mut attacker, &server, &client, &challenge).await;
    let mut victim = Browser::new(&server);
    let page = victim.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("another browser"), "{}", page.body);
    assert!(
        !victim.cookies.keys().any(|k| k.contains("session")),
        "{:?}",
        victim.cookies
    );

    // An ID token with another sign-in's nonce.
    idp.wrong_nonce.store(true, Ordering::SeqCst);
    let mut browser = Browser::new(&server);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("wrong_nonce"), "{}", page.body);
    idp.wrong_nonce.store(false, Ordering::SeqCst);

    // The callback names another issuer (mix-up): refused before the code
    // is redeemed anywhere.
    idp.foreign_iss.store(true, Ordering::SeqCst);
    let before = idp.token_requests.load(Ordering::SeqCst);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(idp.token_requests.load(Ordering::SeqCst), before);
    idp.foreign_iss.store(false, Ordering::SeqCst);

    // The provider refuses the person.
    idp.deny.store(true, Ordering::SeqCst);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let page = browser.get(&callback).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("access_denied"), "{}", page.body);
    idp.deny.store(false, Ordering::SeqCst);

    // A made-up state, and an altered start link.
    let page = browser
        .get(&format!(
            "{}/oauth/federated/acme/callback?state=made-up&code=x",
            server.base
        ))
        .await;
    assert_eq!(page.status, 400);
    let page = browser
        .get("/oauth/federated/start?provider=acme&continue=https://evil.example.com/")
        .await;
    assert_eq!(page.status, 400);
    let failures = server.audit(&["--tool", "oauth/login", "--outcome", "failure"]);
    for reason in [
        "sign_in_other_browser",
        "provider_answer_refused",
        "provider_error",
    ] {
        assert!(
            failures.iter().any(|r| r["reason"] == reason),
            "{reason}: {failures:?}"
        );
    }
}

#[tokio::test]
async fn password_sign_in_can_be_switched_off_and_verified_emails_link_users() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    let server = start(&issuer, "local_login = false");
    // An existing user, named by their email.
    server.cli_json(&["users", "add", "carol@acme.example", "--role", "analyst"]);
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let login = browser
        .visit(&authorize_url(&server, &client, &challenge, &[]))
        .await;
    assert!(!login.body.contains("type=\"password\""), "{}", login.body);
    let posted = browser
        .post(
            "/login",
            &[("username", "carol@acme.example"), ("password", "x")],
        )
        .await;
    assert_eq!(posted.status, 403);

    // link_by_email is off: an unverified or verified email alike makes a
    // new user, never the existing one.
    *idp.person.lock().unwrap() =
        json!({ "sub": "u-carol", "email": "carol@acme.example", "email_verified": true });
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let consent = browser.visit(&callback).await;
    assert!(consent.body.contains("acme:u-carol"), "{}", consent.body);
}

#[tokio::test]
async fn a_verified_email_links_the_existing_user_when_allowed() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    // The provider's table is last: the line lands in it.
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(&format!("{}link_by_email = true\n", config(&issuer, ""))),
        &[("GATEHOUSE_E2E_OIDC_SECRET", CLIENT_SECRET)],
    );
    server.cli_json(&["users", "add", "dave@acme.example", "--role", "analyst"]);
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();

    // Not verified: no link, a new user.
    *idp.person.lock().unwrap() =
        json!({ "sub": "u-eve", "email": "dave@acme.example", "email_verified": false });
    let mut browser = Browser::new(&server);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let consent = browser.visit(&callback).await;
    assert!(consent.body.contains("acme:u-eve"), "{}", consent.body);

    // Verified: linked to the existing user, and audited.
    *idp.person.lock().unwrap() = json!({ "sub": "u-dave", "email": "dave@acme.example", "email_verified": true, "groups": ["mcp-readers"] });
    let mut browser = Browser::new(&server);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let consent = browser.visit(&callback).await;
    assert!(
        consent.body.contains("dave@acme.example"),
        "{}",
        consent.body
    );
    let linked = server.audit(&["--tool", "oauth/user_linked", "--outcome", "success"]);
    assert_eq!(linked.len(), 1, "{linked:?}");
}

/// A provider (here of the default tenant) that may link by email never
/// links a user of another tenant, however verified the address: that
/// tenant's user keeps its roles, and the person gets a user of the
/// provider's own tenant.
#[tokio::test]
async fn a_verified_email_never_links_a_user_of_another_tenant() {
    let (issuer, idp) = provider(SigningKey::generate().unwrap());
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(&format!("{}link_by_email = true\n", config(&issuer, ""))),
        &[("GATEHOUSE_E2E_OIDC_SECRET", CLIENT_SECRET)],
    );
    server.cli_json(&[
        "users",
        "add",
        "ceo@globex.example",
        "--role",
        "reader",
        "--tenant",
        "globex",
    ]);
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    *idp.person.lock().unwrap() = json!({ "sub": "u-mallory", "email": "ceo@globex.example", "email_verified": true, "groups": ["mcp-ops"] });
    let mut browser = Browser::new(&server);
    let callback = to_provider_and_back(&mut browser, &server, &client, &challenge).await;
    let consent = browser.visit(&callback).await;
    assert!(consent.body.contains("acme:u-mallory"), "{}", consent.body);
    assert!(
        !consent.body.contains("ceo@globex.example"),
        "{}",
        consent.body
    );
    let users = server.cli_json(&["users", "list"]);
    let ceo = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "ceo@globex.example")
        .unwrap()
        .clone();
    assert_eq!(ceo["roles"], json!(["reader"]), "{ceo}");
    assert_eq!(ceo["tenant"], "globex", "{ceo}");
    let refused = server.audit(&["--tool", "oauth/user_linked", "--outcome", "failure"]);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["reason"], "link_refused_other_tenant");
    assert!(
        server
            .audit(&["--tool", "oauth/user_linked", "--outcome", "success"])
            .is_empty()
    );
}

/// Each start of a sign-in at the provider stores a pending sign-in for ten
/// minutes: 30 a minute per address, then a 429 page before anything is
/// stored.
#[tokio::test]
async fn starting_sign_ins_is_rate_limited_per_source() {
    let (issuer, _idp) = provider(SigningKey::generate().unwrap());
    let server = start(&issuer, "");
    let mut browser = Browser::new(&server);
    let link = "/oauth/federated/start?provider=acme&continue=/device";
    for i in 0..30 {
        let page = browser.get(link).await;
        assert_eq!(page.status, 303, "start {i}: {}", page.body);
    }
    let page = browser.get(link).await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.headers.contains_key("retry-after"));
    assert!(page.location().is_none());
}
