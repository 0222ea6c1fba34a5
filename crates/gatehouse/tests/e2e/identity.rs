//! Identity and sessions (issue 9 items 1 and 4): a password change ends
//! what an attacker holds, logout, `users enable`, and login lockout per
//! name and source.

use futures::future::join_all;
use serde_json::{Value, json};

use super::browser::{
    Browser, Page, add_user, authorize_url, pkce, public_client, query, redeem, refresh,
};
use super::harness::Server;

/// Sets a new (generated) password for `username`; returns it.
fn new_password(server: &Server, username: &str) -> String {
    let v = server.cli_json(&["users", "passwd", username]);
    v["password"].as_str().unwrap().to_string()
}

/// The sign-in form, reached through the device page (it needs no client).
async fn login_page(browser: &mut Browser) -> Page {
    let page = browser.visit("/device").await;
    assert!(page.is_login(), "{}", page.body);
    page
}

fn retry_after(page: &Page) -> u64 {
    page.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The error paragraph of a page.
fn error_text(page: &Page) -> String {
    let start = page
        .body
        .find("class=\"error\"")
        .unwrap_or_else(|| panic!("no error on the page:\n{}", page.body));
    let text = &page.body[start..];
    let text = &text[text.find('>').unwrap() + 1..];
    text[..text.find("</p>").unwrap()].to_string()
}

#[tokio::test]
async fn item4_a_guesser_locks_only_its_own_address_out_of_a_name() {
    let server = Server::start(None);
    let password = new_password(&server, "admin");
    let mut attacker = Browser::new(&server);
    let page = login_page(&mut attacker).await;
    for attempt in 1..=5 {
        let answer = attacker.login(&page, "admin", "not the password").await;
        assert_eq!(answer.status, 401, "attempt {attempt}");
    }
    // The admin, elsewhere, still signs in.
    let mut admin = Browser::from_address(&server, "127.0.0.2");
    let admin_page = login_page(&mut admin).await;
    let signed_in = admin.login(&admin_page, "admin", &password).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    // Locked for the attacker's address, even with the right password.
    let locked = attacker.login(&page, "admin", &password).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!((1..=30).contains(&retry_after(&locked)));
    let message = error_text(&locked);
    assert!(message.contains("temporarily locked"), "{message}");
    assert!(message.contains("Try again in"), "{message}");
    // An unknown name is counted and answered the same way.
    for _ in 0..5 {
        let answer = attacker.login(&page, "nobody", "not the password").await;
        assert_eq!(answer.status, 401);
    }
    let unknown = attacker.login(&page, "nobody", "not the password").await;
    assert_eq!(unknown.status, 429);
    let digitless = |text: &str| text.replace(|c: char| c.is_ascii_digit(), "");
    assert_eq!(digitless(&error_text(&unknown)), digitless(&message));

    let refusals = server.audit(&["--tool", "oauth/login", "--outcome", "failure"]);
    assert!(
        refusals
            .iter()
            .any(|r| r["reason"] == "locked" && r["source"] == "127.0.0.1")
    );
}

#[tokio::test]
async fn item4_failures_from_many_addresses_lock_the_name_for_everyone() {
    let server = Server::start(None);
    let password = new_password(&server, "admin");
    // Twenty addresses, five wrong passwords each: 100 failures of the name.
    join_all((10..30).map(|host| {
        let server = &server;
        async move {
            let mut guesser = Browser::from_address(server, &format!("127.0.0.{host}"));
            let page = login_page(&mut guesser).await;
            for _ in 0..5 {
                let answer = guesser.login(&page, "admin", "not the password").await;
                assert_eq!(answer.status, 401, "from 127.0.0.{host}");
            }
        }
    }))
    .await;
    // Now the name is locked for everyone, for a bounded time.
    let mut admin = Browser::from_address(&server, "127.0.0.3");
    let page = login_page(&mut admin).await;
    let locked = admin.login(&page, "admin", &password).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!((1..=900).contains(&retry_after(&locked)));
    let message = error_text(&locked);
    assert!(message.contains("temporarily locked"), "{message}");
    assert!(message.contains("gatehouse users unlock"), "{message}");
    let records = server.audit(&["--tool", "oauth/login", "--outcome", "failure"]);
    assert!(records.iter().any(|r| r["reason"] == "name_locked"));
    // An operator lifts it.
    server.cli_json(&["users", "unlock", "admin"]);
    let signed_in = admin.login(&page, "admin", &password).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
}

// --- item 1: a password change, logout, users enable -----------------------

/// Alice (an executor) signed in in `browser` and consented to `client`;
/// returns her tokens.
async fn sign_in_and_get_tokens(
    server: &Server,
    browser: &mut Browser,
    client: &str,
    password: &str,
) -> Value {
    let (verifier, challenge) = pkce();
    let location = browser
        .authorize(
            &authorize_url(server, client, &challenge, &[]),
            "alice",
            password,
        )
        .await;
    let code = query(&location)["code"].clone();
    let (status, tokens) = redeem(server, client, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

/// What the browser sees at /authorize now: it must sign in again
/// (`true`), or its session still stands (`false`).
async fn must_sign_in_to_authorize(server: &Server, browser: &mut Browser, client: &str) -> bool {
    let (_, challenge) = pkce();
    let page = browser
        .visit(&authorize_url(server, client, &challenge, &[]))
        .await;
    if page.is_login() {
        return true;
    }
    // Remembered consent answers at once with a code for the client.
    assert!(
        page.location().is_some_and(|l| l.contains("code=")) || page.is_consent(),
        "{} {}",
        page.status,
        page.body
    );
    false
}

/// A call of `send_email` by the agent key that needs alice's approval;
/// returns the approval URL.
async fn approval_needed(server: &Server, agent: &str, to: &str) -> String {
    let args = json!({"to": to, "subject": "Report", "body": "Attached."});
    let body = server.call_tool(agent, "send_email", args).await;
    assert_eq!(
        body["error"]["data"]["reason"], "approval_required",
        "{body}"
    );
    body["error"]["data"]["approval_url"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn exchange_for_task(server: &Server, subject: &str) -> (u16, Value) {
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
async fn item1_a_password_change_ends_sessions_and_revokes_what_they_obtained() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "executor");
    let client = public_client(&server, "app");
    let (_, agent) = server.create_key("mailer", "executor", &["--owner", "alice"]);
    // The attacker's browser, signed in with the stolen password.
    let mut attacker = Browser::new(&server);
    let tokens = sign_in_and_get_tokens(&server, &mut attacker, &client, &password).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, task) = exchange_for_task(&server, &access).await;
    assert_eq!(status, 200, "{task}");
    let task_token = task["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        server.rpc(Some(&access), "tools/list", json!({})).await.0,
        200
    );
    // Through the session the attacker approves a call (the token is not
    // used yet) and could approve the next.
    let approved_url = approval_needed(&server, &agent, "mallory@example.com").await;
    let page = attacker.visit(&approved_url).await;
    let csrf = page.field("csrf");
    let approved = attacker
        .post(
            url::Url::parse(&approved_url).unwrap().path(),
            &[("csrf", &csrf), ("decision", "approve")],
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let operation_token = {
        let marker = "id=\"operation-token\">";
        let start = approved.body.find(marker).unwrap() + marker.len();
        approved.body[start..start + approved.body[start..].find('<').unwrap()].to_string()
    };
    let pending_url = approval_needed(&server, &agent, "eve@example.com").await;
    assert!(
        attacker
            .visit(&pending_url)
            .await
            .body
            .contains("name=\"decision\"")
    );
    assert!(!must_sign_in_to_authorize(&server, &mut attacker, &client).await);

    // The owner changes the password.
    let new = server.cli_json(&["users", "passwd", "alice"]);
    let new_password = new["password"].as_str().unwrap().to_string();

    // The attacker's session is over: every page asks to sign in again.
    assert!(must_sign_in_to_authorize(&server, &mut attacker, &client).await);
    assert!(attacker.visit(&pending_url).await.is_login());
    assert!(attacker.visit("/device").await.is_login());
    // Every token the session obtained stops at once.
    assert_eq!(
        server.rpc(Some(&access), "tools/list", json!({})).await.0,
        401
    );
    assert_eq!(
        server
            .rpc(Some(&task_token), "tools/list", json!({}))
            .await
            .0,
        401
    );
    let (status, body) = refresh(&server, &client, &refresh_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // The call it approved does not run.
    let args = json!({"to": "mallory@example.com", "subject": "Report", "body": "Attached."});
    let (_, retried) = server
        .rpc(
            Some(&agent),
            "tools/call",
            json!({"name": "send_email", "arguments": args,
                   "_meta": {"io.gatehouse/operation_token": operation_token}}),
        )
        .await;
    assert_eq!(
        retried["error"]["data"]["reason"], "operation_token_expired",
        "{retried}"
    );
    // The old password is refused; with the new one alice signs in and is
    // asked for consent again (the remembered consent went too).
    let mut owner = Browser::new(&server);
    let (_, challenge) = pkce();
    let login = owner
        .visit(&authorize_url(&server, &client, &challenge, &[]))
        .await;
    assert_eq!(owner.login(&login, "alice", &password).await.status, 401);
    let page = owner.login_then(&login, "alice", &new_password).await;
    assert!(page.is_consent(), "{} {}", page.status, page.body);
}

#[tokio::test]
async fn item1_keep_grants_ends_the_sessions_but_keeps_the_tokens() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let mut browser = Browser::new(&server);
    let tokens = sign_in_and_get_tokens(&server, &mut browser, &client, &password).await;
    let access = tokens["access_token"].as_str().unwrap();
    let out = server.cli_with_stdin(
        &[
            "users",
            "passwd",
            "alice",
            "--password-stdin",
            "--keep-grants",
        ],
        Some("a new passphrase for alice\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    assert!(must_sign_in_to_authorize(&server, &mut browser, &client).await);
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        200
    );
    let (status, body) = refresh(&server, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
}

/// The CSRF token of the sign-out form on a page.
fn sign_out_csrf(page: &Page) -> String {
    let form = page
        .body
        .find("action=\"/logout\"")
        .unwrap_or_else(|| panic!("no sign-out form on:\n{}", page.body));
    let rest = &page.body[form..];
    let field = rest.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    rest[field..field + rest[field..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn item1_logout_ends_the_session_and_a_forged_logout_does_nothing() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let mut browser = Browser::new(&server);
    let login = browser.visit("/device").await;
    let entry = browser.login_then(&login, "alice", &password).await;
    assert!(entry.body.contains("name=\"user_code\""), "{}", entry.body);
    let csrf = sign_out_csrf(&entry);

    // Forged: no token, a wrong token, the right token without the CSRF
    // cookie (another site's form), another browser's token.
    let mut other = Browser::new(&server);
    let other_csrf = {
        let other_login = other.visit("/device").await;
        let page = other.login_then(&other_login, "alice", &password).await;
        sign_out_csrf(&page)
    };
    let without_cookie = {
        let mut cookies = browser.cookies.clone();
        cookies.retain(|name, _| name.contains("session"));
        cookies
    };
    for (label, form_csrf, cookies) in [
        ("no token", "", None),
        (
            "a wrong token",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            None,
        ),
        ("another browser's token", other_csrf.as_str(), None),
        (
            "no CSRF cookie",
            csrf.as_str(),
            Some(without_cookie.clone()),
        ),
    ] {
        let mut forger = Browser::new(&server);
        forger.cookies = cookies.unwrap_or_else(|| browser.cookies.clone());
        let answer = forger.post("/logout", &[("csrf", form_csrf)]).await;
        assert_eq!(answer.status, 403, "{label}: {}", answer.body);
        let page = browser.visit("/device").await;
        assert!(!page.is_login(), "{label} signed the browser out");
    }

    // The real button: the session ends on the server, the cookie goes.
    let session_cookie = browser.cookies.clone();
    let answer = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.location().as_deref(), Some("/logout"));
    assert!(
        answer
            .headers
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().contains("Max-Age=0"))
    );
    let signed_out = browser.follow(answer).await;
    assert!(
        signed_out.body.contains("signed out"),
        "{}",
        signed_out.body
    );
    assert!(browser.visit("/device").await.is_login());
    // A copy of the old cookie is worth nothing either.
    let mut replay = Browser::new(&server);
    replay.cookies = session_cookie;
    assert!(replay.visit("/device").await.is_login());
    // The other browser's session stays.
    assert!(!other.visit("/device").await.is_login());

    let logouts = server.audit(&["--tool", "oauth/logout"]);
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0]["human"], "alice");
    assert_eq!(logouts[0]["outcome"], "success");
}

/// Signing in again (as anyone) ends the browser's earlier session on the
/// server: a copy of its cookie taken before (from a shared machine, a
/// proxy log) does not stay good for the rest of its hours.
#[tokio::test]
async fn signing_in_again_ends_the_earlier_session_on_the_server() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let bob_password = add_user(&server, "bob", "reader");
    let mut browser = Browser::new(&server);
    let login = browser.visit("/device").await;
    // A second tab's sign-in form, submitted once the first signed in.
    let second_tab = browser.visit("/device").await;
    assert!(second_tab.is_login(), "{}", second_tab.body);
    let entry = browser.login_then(&login, "alice", &password).await;
    assert!(entry.body.contains("name=\"user_code\""), "{}", entry.body);
    let copied = browser.cookies.clone();
    let mut copy = Browser::new(&server);
    copy.cookies = copied.clone();
    assert!(!copy.visit("/device").await.is_login());
    let entry = browser.login_then(&second_tab, "bob", &bob_password).await;
    assert!(entry.body.contains("bob"), "{}", entry.body);
    let mut copy = Browser::new(&server);
    copy.cookies = copied;
    assert!(
        copy.visit("/device").await.is_login(),
        "alice's old session still works"
    );
    assert!(!browser.visit("/device").await.is_login());
    let logouts = server.audit(&["--tool", "oauth/logout"]);
    assert_eq!(logouts.len(), 1, "{logouts:?}");
    assert_eq!(logouts[0]["human"], "alice");
}

#[tokio::test]
async fn item1_disable_then_enable_lets_the_user_sign_in_again_without_old_tokens() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let mut browser = Browser::new(&server);
    let tokens = sign_in_and_get_tokens(&server, &mut browser, &client, &password).await;
    let access = tokens["access_token"].as_str().unwrap();
    server.cli_json(&["users", "disable", "alice"]);
    let mut fresh = Browser::new(&server);
    let login = fresh.visit("/device").await;
    assert_eq!(fresh.login(&login, "alice", &password).await.status, 401);

    let enabled = server.cli_json(&["users", "enable", "alice"]);
    assert_eq!(enabled["status"], "active");
    // Enabling twice is an error that says so.
    assert!(!server.cli(&["users", "enable", "alice"]).status.success());
    let page = fresh.login_then(&login, "alice", &password).await;
    assert!(page.body.contains("name=\"user_code\""), "{}", page.body);
    // What the disable revoked stays revoked.
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        401
    );
    let (status, _) = refresh(&server, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
}
