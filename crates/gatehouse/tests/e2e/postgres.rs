//! Two Gatehouse instances sharing one PostgreSQL database: a credential
//! revoked through one stops working on the other at once.
//!
//! Needs PostgreSQL (`GATEHOUSE_TEST_POSTGRES_URL`, default the local
//! `test` database) and `psql`. Outside CI a missing server skips loudly;
//! in CI it fails.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use super::harness::Server;

fn base_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .arg(base_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A fresh schema, dropped when the test ends.
pub(super) struct Schema(String);

impl Schema {
    pub(super) fn create() -> Option<Schema> {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).unwrap();
        let name = format!("gh_e2e_{}", hex::encode(bytes));
        match psql(&format!("CREATE SCHEMA {name}")) {
            Ok(()) => Some(Schema(name)),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL is required in CI: {e}")
            }
            Err(e) => {
                // Straight to stderr, past the harness's capture (which
                // eprintln! goes through), so the skip shows in `cargo test`.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!! SKIPPING the two-instance PostgreSQL test: {e}\n"
                );
                None
            }
        }
    }

    pub(super) fn url(&self) -> String {
        let separator = if base_url().contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            base_url(),
            self.0
        )
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP SCHEMA {} CASCADE", self.0));
    }
}

const CONFIG: &str =
    "version = 1\n[storage]\nbackend = \"postgres\"\npostgres_url_env = \"GH_TEST_DATABASE_URL\"\n";

/// Both instances behind one load balancer: one public URL, which is the
/// issuer and the audience of every token.
const BEHIND_ONE_URL: &str = "[server]\npublic_url = \"http://127.0.0.1:9\"\n";

/// Two instances on `schema` with `config`, sharing the database, the
/// pepper and the master key (as a deployment's instances do).
pub(super) fn two_instances(schema: &Schema, config: &str) -> (Server, Server) {
    let url = schema.url();
    let env = [
        ("GH_TEST_DATABASE_URL", url.as_str()),
        ("GATEHOUSE_PEPPER", &"ab".repeat(32)),
        ("GATEHOUSE_MASTER_KEY", &"cd".repeat(32)),
    ];
    let start = || Server::start_with_env(tempfile::tempdir().unwrap(), Some(config), &env);
    (start(), start())
}

#[tokio::test]
async fn a_revocation_on_one_instance_stops_the_key_on_the_other() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let (first, second) = two_instances(&schema, CONFIG);
    assert!(first.admin_key.is_some());
    assert!(
        second.admin_key.is_none(),
        "the store is shared: one first run"
    );
    let (id, key) = first.create_key("agent", "reader", &[]);
    assert_eq!(second.rpc(Some(&key), "tools/list", json!({})).await.0, 200);
    assert_eq!(first.rpc(Some(&key), "tools/list", json!({})).await.0, 200);

    // Revoked through the CLI of the first instance's configuration.
    first.cli_json(&["keys", "revoke", &id]);
    // The CLI is another process too: both instances hear of it by NOTIFY
    // (normally milliseconds; a missed notification is caught by a
    // one-second re-read), so both are polled.
    wait_for_status(
        &first,
        &key,
        401,
        "the revoked key still works on the first instance",
    )
    .await;
    wait_for_status(
        &second,
        &key,
        401,
        "the revoked key still works on the other instance",
    )
    .await;
    let denied = second.audit(&["--outcome", "failure", "--kind", "authentication"]);
    assert!(!denied.is_empty(), "the refusal is in the shared audit log");
}

async fn wait_for_status(server: &Server, key: &str, expected: u16, what: &str) {
    let start = Instant::now();
    loop {
        let status = server.rpc(Some(key), "tools/list", json!({})).await.0;
        if status == expected {
            return;
        }
        // A generous bound: the machine may be loaded; the promise is a second.
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn task_grants_and_operation_tokens_hold_across_instances() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let (first, second) = two_instances(&schema, &format!("{CONFIG}{BEHIND_ONE_URL}"));
    first.cli_json(&["users", "add", "alice", "--role", "executor"]);
    let (_, key) = first.create_key("mailer", "executor", &["--owner", "alice"]);

    // A task token issued by the first instance works on the second...
    let (status, body) = super::browser::token(
        &first,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &key),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("task", "outreach"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let task = body["access_token"].as_str().unwrap().to_string();
    let grant = body["authorization_details"][0]["grant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut names = second.tool_names(&task).await;
    names.sort();
    assert_eq!(names, ["search_database", "send_email", "whoami"]);

    // ...an operation token approved for a call on one instance runs it
    // once on the other, and nowhere again.
    let email = json!({"to": "bob@example.com", "subject": "s", "body": "b"});
    let refused = first.call_tool(&task, "send_email", email.clone()).await;
    let approval = refused["error"]["data"]["approval_id"].as_str().unwrap();
    let approved = second.cli_json(&["approvals", "approve", approval]);
    let token = approved["operation_token"].as_str().unwrap();
    let with_token = json!({"name": "send_email", "arguments": email,
                           "_meta": {"io.gatehouse/operation_token": token}});
    let (_, ran) = second
        .rpc(Some(&task), "tools/call", with_token.clone())
        .await;
    assert!(ran["result"].is_object(), "{ran}");
    let (_, replay) = first.rpc(Some(&task), "tools/call", with_token).await;
    assert_eq!(
        replay["error"]["data"]["reason"], "operation_token_used",
        "{replay}"
    );

    // Revoking the grant through one instance stops the task token on both.
    first.cli_json(&["grants", "revoke", &grant]);
    wait_for_status(
        &first,
        &task,
        401,
        "the revoked grant still works on its own instance",
    )
    .await;
    wait_for_status(
        &second,
        &task,
        401,
        "the revoked grant still works on the other instance",
    )
    .await;
}

#[tokio::test]
async fn a_signing_key_revoked_through_one_instance_stops_its_tokens_on_both() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let (first, second) = two_instances(&schema, &format!("{CONFIG}{BEHIND_ONE_URL}"));
    let client = first.cli_json(&["clients", "create", "--name", "bot", "--role", "reader"]);
    let (id, secret) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    let (status, _, body) = super::oauth::token_request(
        &first,
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        second.rpc(Some(&token), "tools/list", json!({})).await.0,
        200
    );
    let kid = first.cli_json(&["keys", "list-signing"])[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();

    // The one key that signs: --force adds its successor, then revokes it.
    first.cli_json(&["keys", "revoke-signing", &kid, "--force"]);
    wait_for_status(&first, &token, 401, "the revoked key still verifies here").await;
    wait_for_status(
        &second,
        &token,
        401,
        "the revoked key still verifies on the other instance",
    )
    .await;
    let jwks = second.get_json("/oauth/jwks.json").await;
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != kid.as_str()),
        "{jwks}"
    );
    // The successor signs on both.
    let (status, _, body) = super::oauth::token_request(
        &second,
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["access_token"].as_str().unwrap();
    assert_eq!(first.rpc(Some(fresh), "tools/list", json!({})).await.0, 200);
}

#[tokio::test]
async fn a_client_secret_rotated_as_leaked_through_one_instance_stops_its_tokens_on_both() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let (first, second) = two_instances(&schema, &format!("{CONFIG}{BEHIND_ONE_URL}"));
    let client = first.cli_json(&["clients", "create", "--name", "bot", "--role", "reader"]);
    let (id, leaked) = (
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
    );
    // A token minted with the secret on one instance, in use on both
    // (so cached on both).
    let (status, token) = token_with(&first, id, leaked).await;
    assert_eq!(status, 200);
    let token = token.unwrap();
    assert_eq!(
        first.rpc(Some(&token), "tools/list", json!({})).await.0,
        200
    );
    assert_eq!(
        second.rpc(Some(&token), "tools/list", json!({})).await.0,
        200
    );

    // The secret leaked: rotated through the other instance's data.
    let rotated = second.cli_json(&["clients", "rotate-secret", id, "--revoke-tokens"]);
    let fresh_secret = rotated["client_secret"].as_str().unwrap();
    wait_for_status(&first, &token, 401, "the cut-off token still works here").await;
    wait_for_status(
        &second,
        &token,
        401,
        "the cut-off token still works on the other instance",
    )
    .await;
    // The leaked secret gets nothing on either; the new one works on both.
    for server in [&first, &second] {
        assert_eq!(token_with(server, id, leaked).await.0, 401);
        let (status, fresh) = token_with(server, id, fresh_secret).await;
        assert_eq!(status, 200);
        let fresh = fresh.unwrap();
        assert_eq!(
            first.rpc(Some(&fresh), "tools/list", json!({})).await.0,
            200
        );
        assert_eq!(
            second.rpc(Some(&fresh), "tools/list", json!({})).await.0,
            200
        );
    }
}

/// A client-credentials grant at `server`: (status, the access token).
async fn token_with(server: &Server, id: &str, secret: &str) -> (u16, Option<String>) {
    let (status, _, body) = super::oauth::token_request(
        server,
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    (status, body["access_token"].as_str().map(String::from))
}

/// PostgreSQL stores no NUL character in a text or JSON column. A caller
/// who put one in a tool name (or a user name at the login page, or an
/// argument) failed the whole audit batch its record was written in: other
/// callers' records, and so their calls, failed with it, for as long as the
/// requests kept coming. The record is written with the NUL shown as U+2400,
/// and everyone else's calls go on.
#[tokio::test]
async fn a_nul_character_in_a_request_fails_no_audit_batch() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let url = schema.url();
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(CONFIG),
        &[
            ("GH_TEST_DATABASE_URL", url.as_str()),
            ("GATEHOUSE_PEPPER", &"ab".repeat(32)),
            ("GATEHOUSE_MASTER_KEY", &"cd".repeat(32)),
        ],
    );
    let (id, key) = server.create_key("caller", "reader", &[]);
    // In a 2025-11-25 session: a 2026-07-28 request repeats the name in a
    // header, which cannot hold a NUL.
    let session = super::sessions::initialize(&server, &key).await;
    for i in 0..3 {
        let response = server
            .post_legacy(
                &key,
                Some(&session),
                json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                       "params": {"name": "x\u{0}y", "arguments": {"a\u{0}": "b\u{0}"}}}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        let body = super::harness::parse_body(&response.text().await.unwrap());
        assert!(body["error"].is_object(), "{body}");
        let (status, body) = server
            .rpc(
                Some(&key),
                "tools/call",
                json!({"name": "whoami", "arguments": {}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["result"].is_object(), "{body}");
    }
    let records = server.audit(&["--principal", &id, "--tool", "x\u{2400}y"]);
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        server
            .audit(&["--principal", &id, "--tool", "whoami"])
            .len()
            >= 3
    );
    let verified = server.cli_json(&["audit", "verify"]);
    assert_eq!(verified["verified"], true, "{verified}");
}
