//! The authorization code grant end to end, and the attacks on it (rows
//! A1–A18 of the security cases), sent over raw HTTP to the real binary.

use serde_json::json;

use super::browser::{
    Browser, REDIRECT, SignedIn, add_user, authorize_url, code_for, pkce, public_client, query,
    redeem, refresh, signed_in, token,
};
use super::harness::Server;

fn whoami_human(body: &serde_json::Value) -> String {
    let text = body["result"]["content"][0]["text"].as_str().unwrap();
    let who: serde_json::Value = serde_json::from_str(text).unwrap();
    who["human"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_user_logs_in_consents_and_calls_tools_with_an_audience_bound_token() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "desk-app");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);

    let url = authorize_url(&server, &client, &challenge, &[]);
    let login = browser.visit(&url).await;
    assert_eq!(login.status, 200);
    assert!(login.is_login());
    assert!(
        login.body.contains("desk-app"),
        "the login page names the client"
    );
    let posted = browser.login(&login, "Alice", &password).await;
    assert_eq!(posted.status, 303, "A16: a credential POST answers 303");
    let consent = browser.follow(posted).await;
    assert!(consent.is_consent());
    assert!(consent.body.contains("desk-app") && consent.body.contains(&client));
    assert!(
        consent.body.contains("localhost"),
        "the redirect host is shown"
    );
    assert!(consent.body.contains("tools:read"));
    let answer = browser.decide(&consent, "approve").await;
    assert_eq!(answer.status, 303);
    let location = answer.location().unwrap();
    assert!(location.starts_with(REDIRECT));
    let params = query(&location);
    assert_eq!(params["state"], "st-123");
    assert_eq!(params["iss"], server.base, "A9: iss in the response");
    // Marked as Gatehouse's: presented as a bearer token by mistake, it is
    // never sent to an external provider's introspection.
    assert!(params["code"].starts_with("gha_"), "{}", params["code"]);

    let (status, body) = redeem(&server, &client, &params["code"], &verifier).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "tools:read");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("ghr_"));
    let access = body["access_token"].as_str().unwrap();
    let who = server.call_tool(access, "whoami", json!({})).await;
    assert_eq!(whoami_human(&who), "alice");
    // The role decides: a reader's token cannot run code, whatever it asked for.
    let denied = server
        .call_tool(access, "execute_code", json!({"code": "1"}))
        .await;
    assert!(denied["error"].is_object(), "{denied}");

    // Consent is remembered per client: the next request answers at once.
    let (_, challenge2) = pkce();
    let again = browser
        .visit(&authorize_url(&server, &client, &challenge2, &[]))
        .await;
    assert_eq!(
        again.status, 303,
        "no login or consent page the second time"
    );
    assert!(query(&again.location().unwrap()).contains_key("code"));
    // A public client's consent holds for its exact redirect URI only:
    // another loopback port may be another program using the same id.
    let other_port = browser
        .visit(&authorize_url(
            &server,
            &client,
            &challenge2,
            &[("redirect_uri", "http://localhost:51234/cb")],
        ))
        .await;
    assert!(other_port.is_consent(), "asked again for another port");

    let consents = server.audit(&["--tool", "oauth/authorize"]);
    assert!(
        consents
            .iter()
            .any(|e| e["reason"] == "consent_granted" && e["human"] == "alice")
    );
    let logins = server.audit(&["--tool", "oauth/login"]);
    assert!(logins.iter().any(|e| e["outcome"] == "success"));
}

#[tokio::test]
async fn a1_a2_unverified_redirect_uris_get_an_error_page_never_a_redirect() {
    let server = Server::start(None);
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let bad = [
        "http://localhost:9/other",
        "http://localhost:9/cb/extra",
        "http://localhost:9/c",
        "http://localhost:9/cb?x=1",
        "http://localhost:9/cb#frag",
        "http://localhost:9/CB",
        "https://localhost:9/cb",
        "http://evil@localhost:9/cb",
        "http://127.0.0.1:9/cb",
        "https://evil.example/cb",
    ];
    for uri in bad {
        // A2: an invalid scope as well must not turn into a redirect.
        let url = authorize_url(
            &server,
            &client,
            &challenge,
            &[("redirect_uri", uri), ("scope", "nonsense")],
        );
        let page = browser.get(&url).await;
        assert_eq!(page.status, 400, "{uri}");
        assert!(page.location().is_none(), "{uri} was redirected to");
        assert!(page.body.contains("not registered"), "{uri}: {}", page.body);
    }
    // An unknown client: an error page as well.
    let page = browser
        .get(&authorize_url(&server, "ghc_nobody", &challenge, &[]))
        .await;
    assert_eq!((page.status, page.location()), (400, None));
    // RFC 8252 §7.3: the port of a loopback redirect URI may vary.
    let page = browser
        .get(&authorize_url(
            &server,
            &client,
            &challenge,
            &[("redirect_uri", "http://localhost:51234/cb")],
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.is_login());
}

#[tokio::test]
async fn a3_a4_a13_pkce_s256_is_required_and_errors_go_back_with_state_and_iss() {
    let server = Server::start(None);
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("code_challenge", "")], "invalid_request"),
        (&[("code_challenge_method", "plain")], "invalid_request"),
        (&[("code_challenge_method", "")], "invalid_request"),
        (&[("code_challenge", "short")], "invalid_request"),
        (&[("response_type", "token")], "unsupported_response_type"),
        (
            &[("resource", "https://evil.example/mcp")],
            "invalid_target",
        ),
    ];
    for (extra, error) in cases {
        let page = browser
            .get(&authorize_url(&server, &client, &challenge, extra))
            .await;
        assert_eq!(page.status, 303, "{extra:?}");
        let location = page.location().unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        let params = query(&location);
        assert_eq!(params["error"], error, "{extra:?}");
        assert_eq!(params["state"], "st-123");
        assert_eq!(params["iss"], server.base);
        assert!(!params.contains_key("code"));
    }
}

#[tokio::test]
async fn a3_the_verifier_must_match_and_a_failed_attempt_burns_the_code() {
    let SignedIn {
        server,
        client,
        verifier,
        code,
        ..
    } = signed_in().await;
    let (other_verifier, _) = pkce();
    let resource = server.mcp_url();
    let base = |verifier: &'static str| {
        vec![
            ("grant_type", "authorization_code"),
            ("client_id", client.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("resource", resource.as_str()),
            ("code_verifier", verifier),
        ]
    };
    // A4: no verifier at all is a malformed request.
    let mut form = base("");
    form.pop();
    assert_eq!(token(&server, &form).await.1["error"], "invalid_request");
    // Too short, bad characters, or simply wrong: invalid_grant.
    let (status, body) = token(&server, &base("abc")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // The code is spent by the failed attempt: even the right verifier fails now.
    let (status, _) = redeem(&server, &client, &code, &verifier).await;
    assert_eq!(status, 400);
    let (status, _) = redeem(&server, &client, &code, &other_verifier).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a5_a_replayed_code_revokes_every_token_issued_from_it() {
    let SignedIn {
        server,
        client,
        verifier,
        code,
        ..
    } = signed_in().await;
    let (status, body) = redeem(&server, &client, &code, &verifier).await;
    assert_eq!(status, 200);
    let access = body["access_token"].as_str().unwrap().to_string();
    let refresh_token = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        server.rpc(Some(&access), "tools/list", json!({})).await.0,
        200
    );

    let (status, body) = redeem(&server, &client, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        server.rpc(Some(&access), "tools/list", json!({})).await.0,
        401,
        "the token issued from the replayed code is revoked"
    );
    let (status, _) = refresh(&server, &client, &refresh_token).await;
    assert_eq!(status, 400, "and its refresh token");
}

#[tokio::test]
async fn a5_concurrent_redemptions_of_one_code_yield_one_token_at_most() {
    let SignedIn {
        server,
        client,
        verifier,
        code,
        ..
    } = signed_in().await;
    let attempts = (0..6).map(|_| redeem(&server, &client, &code, &verifier));
    let results = futures::future::join_all(attempts).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(ok <= 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != 200)
            .all(|(_, b)| b["error"] == "invalid_grant")
    );
}

#[tokio::test]
async fn a6_a_code_works_only_for_its_client_and_redirect_uri() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let thief = public_client(&server, "thief");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let code = code_for(
        &server,
        &mut browser,
        &client,
        &challenge,
        ("alice", &password),
    )
    .await;
    let (status, body) = redeem(&server, &thief, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let code = code_for(
        &server,
        &mut browser,
        &client,
        &challenge,
        ("alice", &password),
    )
    .await;
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &code),
            ("redirect_uri", "http://localhost:9/other"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

async fn tokens_for(server: &Server, client: &str, password: &str) -> serde_json::Value {
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(server);
    let code = code_for(
        server,
        &mut browser,
        client,
        &challenge,
        ("alice", password),
    )
    .await;
    let (status, body) = redeem(server, client, &code, &verifier).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn a7_concurrent_refreshes_count_as_reuse_and_revoke_the_family() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let first = tokens_for(&server, &client, &password).await;
    let refresh = first["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", client.as_str()),
        ("refresh_token", refresh),
    ];
    let results = futures::future::join_all((0..6).map(|_| token(&server, &form))).await;
    // One request spends the token; the others present a spent token,
    // which is reuse: the family is revoked, so at most one answer can
    // carry tokens, and even those are dead by the time all have answered.
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert!(winners.len() <= 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|(s, _)| *s != 200)
            .all(|(_, b)| b["error"] == "invalid_grant")
    );
    for (_, body) in winners {
        let new_access = body["access_token"].as_str().unwrap();
        assert_eq!(
            server
                .rpc(Some(new_access), "tools/list", json!({}))
                .await
                .0,
            401
        );
    }
    let old_access = first["access_token"].as_str().unwrap();
    assert_eq!(
        server
            .rpc(Some(old_access), "tools/list", json!({}))
            .await
            .0,
        401,
        "the whole family is revoked"
    );
    let audit = server.audit(&["--tool", "oauth/token", "--outcome", "failure"]);
    assert!(audit.iter().any(|e| e["reason"] == "invalid_grant"));
}

#[tokio::test]
async fn a8_refresh_may_narrow_scope_but_not_widen_it_or_change_the_resource() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let first = tokens_for(&server, &client, &password).await;
    let refresh = first["refresh_token"].as_str().unwrap();
    let form = |extra: (&'static str, &'static str)| {
        vec![
            ("grant_type".to_string(), "refresh_token".to_string()),
            ("client_id".to_string(), client.clone()),
            ("refresh_token".to_string(), refresh.to_string()),
            (extra.0.to_string(), extra.1.to_string()),
        ]
    };
    let send = |form: Vec<(String, String)>| {
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            token(server, &pairs).await
        }
    };
    let (status, body) = send(form(("scope", "tools:read tools:write"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let (status, body) = send(form(("resource", "https://evil.example/mcp"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target"))
    );
    // The refused attempts did not spend the token: a narrowing refresh works.
    let (status, body) = send(form(("scope", "tools:read"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "tools:read");
}

#[tokio::test]
async fn a10_a11_forged_consent_forms_are_refused_and_pages_refuse_framing() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let url = authorize_url(&server, &client, &challenge, &[]);
    let login = browser.visit(&url).await;
    let error_page = browser
        .get(&authorize_url(&server, "ghc_unknown", &challenge, &[]))
        .await;
    for page in [&login, &error_page] {
        assert_eq!(page.headers["x-frame-options"], "DENY");
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(page.headers["cache-control"], "no-store");
    }
    // The CSRF cookie is HttpOnly and SameSite=Strict.
    let set_cookie: Vec<_> = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        set_cookie.iter().any(|c| c.starts_with("gh_csrf=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")),
        "{set_cookie:?}"
    );
    // Login with a CSRF token of another browser is refused.
    let mut attacker = Browser::new(&server);
    let attacker_login = attacker.visit(&url).await;
    let forged = browser
        .post(
            "/login",
            &[
                ("csrf", &attacker_login.field("csrf")),
                ("continue", &login.field("continue")),
                ("username", "alice"),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    let consent = browser.login_then(&login, "alice", &password).await;
    assert!(consent.is_consent());
    assert_eq!(consent.headers["x-frame-options"], "DENY");
    let txn = consent.field("txn");
    // A forged or missing CSRF token, or a cross-site POST without the
    // CSRF cookie, decides nothing.
    for csrf in ["", "0000", &"a".repeat(64)] {
        let page = browser
            .post(
                "/authorize/consent",
                &[("csrf", csrf), ("txn", &txn), ("decision", "approve")],
            )
            .await;
        assert_eq!((page.status, page.location()), (403, None));
    }
    let mut cross_site = Browser::new(&server);
    cross_site
        .cookies
        .insert("gh_session".into(), browser.cookies["gh_session"].clone());
    let page = cross_site
        .post(
            "/authorize/consent",
            &[
                ("csrf", &consent.field("csrf")),
                ("txn", &txn),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!((page.status, page.location()), (403, None));
    // The genuine form still works; a second submit of it decides nothing.
    let approved = browser.decide(&consent, "approve").await;
    assert_eq!(approved.status, 303);
    let again = browser.decide(&consent, "approve").await;
    assert_eq!((again.status, again.location()), (400, None));
}

/// On `http://127.0.0.1` a program on another loopback port can set
/// cookies for Gatehouse's host (browsers do not keep cookies apart by
/// port). Mallory gets a consent page for his own request with his own
/// session, plants his CSRF cookie in Alice's browser and has her browser
/// post his form: the token fits his cookie but was made for his session,
/// not hers, so nothing is decided in her name.
#[tokio::test]
async fn a_planted_csrf_cookie_does_not_let_another_sessions_token_decide() {
    let server = Server::start(None);
    let alice_password = add_user(&server, "alice", "reader");
    let mallory_password = add_user(&server, "mallory", "reader");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let url = authorize_url(&server, &client, &challenge, &[]);
    let mut alice = Browser::new(&server);
    let login = alice.visit(&url).await;
    assert!(
        alice
            .login_then(&login, "alice", &alice_password)
            .await
            .is_consent()
    );
    let mut mallory = Browser::new(&server);
    let login = mallory.visit(&url).await;
    let consent = mallory
        .login_then(&login, "mallory", &mallory_password)
        .await;
    assert!(consent.is_consent());
    alice
        .cookies
        .insert("gh_csrf".into(), mallory.cookies["gh_csrf"].clone());
    let page = alice
        .post(
            "/authorize/consent",
            &[
                ("csrf", &consent.field("csrf")),
                ("txn", &consent.field("txn")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!((page.status, page.location()), (403, None), "{}", page.body);
    // His own browser still decides his own request.
    let approved = mallory.decide(&consent, "approve").await;
    assert_eq!(approved.status, 303);
}

#[tokio::test]
async fn denying_consent_sends_access_denied_with_state_and_iss() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let url = authorize_url(&server, &client, &challenge, &[]);
    let login = browser.visit(&url).await;
    let consent = browser.login_then(&login, "alice", &password).await;
    let denied = browser.decide(&consent, "deny").await;
    assert_eq!(denied.status, 303);
    let params = query(&denied.location().unwrap());
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "st-123");
    assert_eq!(params["iss"], server.base);
    let audit = server.audit(&["--tool", "oauth/authorize"]);
    assert!(audit.iter().any(|e| e["reason"] == "consent_denied"));
}

#[tokio::test]
async fn a15_unknown_users_look_like_wrong_passwords_and_repeated_failures_lock_the_name() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let url = authorize_url(&server, &client, &challenge, &[]);
    let login = browser.visit(&url).await;
    let wrong = browser.login(&login, "alice", "not the password").await;
    let unknown = browser.login(&login, "mallory", "not the password").await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert!(wrong.body.contains("Incorrect username or password."));
    assert!(unknown.body.contains("Incorrect username or password."));
    // Five failures in all lock the name, even for the right password.
    for _ in 0..4 {
        browser.login(&login, "alice", "still wrong").await;
    }
    let locked = browser.login(&login, "alice", &password).await;
    assert_eq!(locked.status, 429);
    assert!(locked.headers.contains_key("retry-after"));
    // Unknown names lock the same way, so a lockout reveals nothing.
    for _ in 0..5 {
        browser.login(&login, "mallory", "x").await;
    }
    assert_eq!(browser.login(&login, "mallory", "x").await.status, 429);
    // An operator can lift the lockout.
    server.cli_json(&["users", "unlock", "alice"]);
    assert_eq!(browser.login(&login, "alice", &password).await.status, 303);
    let failures = server.audit(&["--tool", "oauth/login", "--outcome", "failure"]);
    assert!(failures.iter().any(|e| e["reason"] == "locked"));
    assert!(
        failures
            .iter()
            .any(|e| e["reason"] == "invalid_credentials")
    );
}

#[tokio::test]
async fn disabling_a_user_revokes_their_tokens_at_once() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let tokens = tokens_for(&server, &client, &password).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        200
    );
    server.cli_json(&["users", "disable", "alice"]);
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        401
    );
    let (status, _) = refresh(&server, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a18_the_resource_is_bound_to_the_code() {
    let SignedIn {
        server,
        client,
        verifier,
        code,
        ..
    } = signed_in().await;
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("resource", "https://evil.example/mcp"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target"))
    );
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_the_grant() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let tokens = tokens_for(&server, &client, &password).await;
    let body = format!(
        "token={}&client_id={client}",
        tokens["refresh_token"].as_str().unwrap()
    );
    let revoke = || {
        server
            .http
            .post(format!("{}/oauth/revoke", server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
    };
    assert_eq!(revoke().await.unwrap().status(), 200);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        401
    );
    // Revoking it again changes nothing, so it writes nothing: a client
    // repeating it costs no audit record (and moves no instance's caches).
    for _ in 0..3 {
        assert_eq!(revoke().await.unwrap().status(), 200);
    }
    let revocations = server.audit(&["--tool", "oauth/revoke"]);
    assert_eq!(revocations.len(), 1, "{revocations:?}");
}

#[tokio::test]
async fn the_grant_holds_only_scopes_the_users_roles_can_use() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let url = authorize_url(
        &server,
        &client,
        &challenge,
        &[("scope", "tools:read tools:admin")],
    );
    let login = browser.visit(&url).await;
    let consent = browser.login_then(&login, "alice", &password).await;
    assert!(consent.body.contains("tools:read"));
    assert!(
        !consent.body.contains("tools:admin"),
        "a reader is not asked to allow administrative tools"
    );
    let answer = browser.decide(&consent, "approve").await;
    let code = query(&answer.location().unwrap())["code"].clone();
    let (status, body) = redeem(&server, &client, &code, &verifier).await;
    assert_eq!(status, 200);
    assert_eq!(body["scope"], "tools:read");
    // The same request again is answered at once: the remembered consent
    // (for the scopes the role can use) covers it.
    let again = browser.visit(&url).await;
    assert_eq!(again.status, 303, "consent asked again: {}", again.body);
    assert!(query(&again.location().unwrap()).contains_key("code"));
}

/// Cookies are kept apart by host, not by port: a native client listening
/// on `http://127.0.0.1:<port>/cb` next to Gatehouse on `127.0.0.1` got the
/// person's browser session with the redirect, and could approve its own
/// operation tokens or consent to more scopes as them. A redirect to
/// Gatehouse's own host now clears both cookies in the same answer (the
/// browser drops them before following it) and ends the session on the
/// server, so the value the client saw is worth nothing.
#[tokio::test]
async fn a_redirect_to_gatehouses_own_host_carries_no_live_browser_session() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let same_host = "http://127.0.0.1:9/cb";
    assert!(server.base.starts_with("http://127.0.0.1:"));
    let client = server.cli_json(&[
        "clients",
        "create",
        "--name",
        "native",
        "--public",
        "--redirect-uri",
        same_host,
    ])["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let url = authorize_url(&server, &client, &challenge, &[("redirect_uri", same_host)]);
    let login = browser.visit(&url).await;
    let consent = browser.login_then(&login, "alice", &password).await;
    assert!(consent.is_consent());
    // What the client's listener would receive with the redirect.
    let leaked = browser.cookies.clone();
    assert!(leaked.contains_key("gh_session"), "{leaked:?}");
    let answer = browser.decide(&consent, "approve").await;
    assert_eq!(answer.status, 303);
    assert!(answer.location().unwrap().starts_with(same_host));
    let cleared: Vec<&str> = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|v| v.contains("Max-Age=0"))
        .collect();
    assert!(
        cleared.iter().any(|c| c.starts_with("gh_session=;"))
            && cleared.iter().any(|c| c.starts_with("gh_csrf=;")),
        "{cleared:?}"
    );
    // The session the client saw is ended on the server too.
    let mut thief = Browser::new(&server);
    thief.cookies = leaked;
    let page = thief.visit(&url).await;
    assert!(page.is_login(), "{}", page.status);
    // A client on another host keeps the person signed in (the usual case:
    // Gatehouse on 127.0.0.1, clients on localhost, or the other way round).
    let other = public_client(&server, "desk");
    let (_, challenge) = pkce();
    let login = browser
        .visit(&authorize_url(&server, &other, &challenge, &[]))
        .await;
    let consent = browser.login_then(&login, "alice", &password).await;
    let answer = browser.decide(&consent, "approve").await;
    assert_eq!(answer.status, 303);
    assert!(browser.cookies.contains_key("gh_session"));
    let (_, challenge) = pkce();
    let again = browser
        .visit(&authorize_url(&server, &other, &challenge, &[]))
        .await;
    assert_eq!(again.status, 303, "signed in and consented: {}", again.body);
}
