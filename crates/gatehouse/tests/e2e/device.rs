//! The device authorization grant (RFC 8628): a headless client gets a
//! code pair, a person approves it on the device page, the client polls.

use serde_json::{Value, json};

use super::browser::{Browser, add_user, public_client, token};
use super::harness::Server;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn device_authorization(server: &Server, form: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) = post_form(server, "/oauth/device_authorization", form).await;
    (status, body)
}

async fn poll(server: &Server, client: &str, device_code: &str) -> (u16, Value) {
    token(
        server,
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", client),
            ("device_code", device_code),
        ],
    )
    .await
}

/// The whole device flow for `client`: start it, let `user` approve the
/// code on the device page, and return the first poll's answer.
pub(super) async fn approved_device_poll(
    server: &Server,
    client: &str,
    user: (&str, &str),
) -> (u16, Value) {
    let (status, started) =
        device_authorization(server, &[("client_id", client), ("scope", "tools:read")]).await;
    assert_eq!(status, 200, "{started}");
    let mut browser = Browser::new(server);
    let login = browser
        .visit(started["verification_uri_complete"].as_str().unwrap())
        .await;
    let entry = browser.login_then(&login, user.0, user.1).await;
    assert_eq!(entry.status, 200, "{}", entry.body);
    let confirm = browser
        .post(
            "/device",
            &[
                ("csrf", &entry.field("csrf")),
                ("user_code", &entry.field("user_code")),
            ],
        )
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let done = browser
        .post(
            "/device/confirm",
            &[
                ("csrf", &confirm.field("csrf")),
                ("user_code", &confirm.field("user_code")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert!(done.body.contains("Device approved"), "{}", done.body);
    poll(server, client, started["device_code"].as_str().unwrap()).await
}

#[tokio::test]
async fn a_person_approves_a_device_which_then_gets_tokens() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "tv");
    let (status, started) =
        device_authorization(&server, &[("client_id", &client), ("scope", "tools:read")]).await;
    assert_eq!(status, 200, "{started}");
    let device_code = started["device_code"].as_str().unwrap();
    assert!(device_code.starts_with("ghd_"), "{device_code}");
    let user_code = started["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "XXXX-XXXX");
    assert_eq!(
        started["verification_uri"],
        format!("{}/device", server.base)
    );
    assert_eq!(started["interval"], 5);

    let mut browser = Browser::new(&server);
    let complete = started["verification_uri_complete"].as_str().unwrap();
    let login = browser.visit(complete).await;
    assert!(login.is_login());
    let entry = browser.login_then(&login, "alice", &password).await;
    assert_eq!(entry.status, 200);
    assert_eq!(entry.field("user_code"), user_code, "the code is prefilled");
    assert_eq!(entry.headers["x-frame-options"], "DENY");
    let confirm = browser
        .post(
            "/device",
            &[
                ("csrf", &entry.field("csrf")),
                ("user_code", &user_code.to_lowercase()),
            ],
        )
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains("tv") && confirm.body.contains(&client));
    let done = browser
        .post(
            "/device/confirm",
            &[
                ("csrf", &confirm.field("csrf")),
                ("user_code", &confirm.field("user_code")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("Device approved"));

    // The first poll comes after the approval, so no interval applies.
    let (status, body) = poll(&server, &client, device_code).await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert!(body["refresh_token"].is_string());
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        200
    );
    // The device code is single use.
    let (status, _) = poll(&server, &client, device_code).await;
    assert_eq!(status, 400);
    let audit = server.audit(&["--tool", "oauth/device"]);
    assert!(
        audit
            .iter()
            .any(|e| e["reason"] == "device_approved" && e["human"] == "alice")
    );
}

#[tokio::test]
async fn a_denied_device_gets_access_denied_and_forged_forms_are_refused() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "tv");
    let (_, started) = device_authorization(&server, &[("client_id", &client)]).await;
    let device_code = started["device_code"].as_str().unwrap();
    let user_code = started["user_code"].as_str().unwrap();
    let mut browser = Browser::new(&server);
    let login = browser.visit("/device").await;
    let entry = browser.login_then(&login, "alice", &password).await;
    // A forged CSRF token decides nothing.
    let forged = browser
        .post("/device", &[("csrf", "00"), ("user_code", user_code)])
        .await;
    assert_eq!(forged.status, 403);
    let confirm = browser
        .post(
            "/device",
            &[("csrf", &entry.field("csrf")), ("user_code", user_code)],
        )
        .await;
    let forged = browser
        .post(
            "/device/confirm",
            &[
                ("csrf", &entry.field("csrf")),
                ("user_code", user_code),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(
        forged.status, 403,
        "the entry form's token does not confirm a code"
    );
    let denied = browser
        .post(
            "/device/confirm",
            &[
                ("csrf", &confirm.field("csrf")),
                ("user_code", user_code),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(denied.status, 200);
    let (status, body) = poll(&server, &client, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("access_denied"))
    );
}

#[tokio::test]
async fn polling_before_approval_is_pending_and_polling_fast_is_slowed_down() {
    let server = Server::start(None);
    let client = public_client(&server, "tv");
    let (_, started) = device_authorization(&server, &[("client_id", &client)]).await;
    let device_code = started["device_code"].as_str().unwrap();
    let (status, body) = poll(&server, &client, device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    // Again at once: faster than the 5 s interval (RFC 8628 §3.5).
    let (_, body) = poll(&server, &client, device_code).await;
    assert_eq!(body["error"], "slow_down");
    // Another client cannot poll this device code.
    let other = public_client(&server, "other");
    let (_, body) = poll(&server, &other, device_code).await;
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn user_code_guessing_is_rate_limited_and_unknown_clients_are_refused() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let (status, body) = device_authorization(&server, &[("client_id", "ghc_nobody")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let mut browser = Browser::new(&server);
    let login = browser.visit("/device").await;
    let entry = browser.login_then(&login, "alice", &password).await;
    let csrf = entry.field("csrf");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let page = browser
            .post("/device", &[("csrf", &csrf), ("user_code", "BCDF-GHJK")])
            .await;
        statuses.push(page.status);
    }
    assert_eq!(&statuses[..10], &[400; 10], "wrong codes are named as such");
    assert_eq!(
        &statuses[10..],
        &[429, 429],
        "then the source is slowed down"
    );
}

/// A raw POST of `form` to `path`: (status, Retry-After, body).
async fn post_form(
    server: &Server,
    path: &str,
    form: &[(&str, &str)],
) -> (u16, Option<u64>, Value) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = server
        .http
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test]
async fn device_authorizations_and_token_requests_are_rate_limited_per_source() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "tv");
    // A whole flow within the limits, as a real device does it.
    let (status, body) = approved_device_poll(&server, &client, ("alice", &password)).await;
    assert_eq!(status, 200, "{body}");

    // Each start stores a pending authorization: 30 a minute per address,
    // the flow's own included.
    let start = [("client_id", client.as_str()), ("scope", "tools:read")];
    for i in 1..30 {
        let (status, body) = device_authorization(&server, &start).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let (status, retry_after, body) =
        post_form(&server, "/oauth/device_authorization", &start).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
    assert!(body["error"].is_string(), "{body}");

    // Each token request is audited, refused ones too: 600 a minute per
    // address, the flow's poll included.
    let refused = [("grant_type", "password"), ("client_id", client.as_str())];
    for batch in 0..23 {
        let answers = futures::future::join_all(
            (0..26).map(|_| post_form(&server, "/oauth/token", &refused)),
        )
        .await;
        for (status, _, body) in answers {
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("unsupported_grant_type")),
                "batch {batch}: {body}"
            );
        }
    }
    // 1 + 23 * 26 = 599 so far.
    let (status, _, body) = post_form(&server, "/oauth/token", &refused).await;
    assert_eq!(status, 400, "{body}");
    let (status, retry_after, body) = post_form(&server, "/oauth/token", &refused).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some_and(|s| (1..=60).contains(&s)));
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    // A device polling over the limit is told what RFC 8628 §3.5 tells a
    // device polling too fast (`slow_down` is meaningless to the others).
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", client.as_str()),
        ("device_code", "any"),
    ];
    let (status, _, body) = post_form(&server, "/oauth/token", &poll).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("slow_down")),
        "{body}"
    );
}
