//! Identity and sessions (issue 9 items 1 and 4): a password change ends
//! what an attacker holds, logout, `users enable`, and login lockout per
//! name and source.

use futures::future::join_all;

use super::browser::{Browser, Page};
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
