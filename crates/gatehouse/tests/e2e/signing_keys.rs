//! Token-signing keys over their whole life: a replaced key stops verifying
//! once its tokens have expired, `keys revoke-signing` withdraws one at
//! once, and `keys list-signing` shows where each key stands.

use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_oauth::{MasterKey, SigningKey};
use gatehouse_store::{SigningKeyRecord, SqliteStore, Store};
use serde_json::{Value, json};

use super::harness::Server;
use super::oauth::token_request;

fn create_client(server: &Server, role: &str) -> (String, String) {
    let v = server.cli_json(&["clients", "create", "--name", "bot", "--role", role]);
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    )
}

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

async fn jwks_kids(server: &Server) -> Vec<String> {
    server.get_json("/oauth/jwks.json").await["keys"]
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

async fn status_of(server: &Server, token: &str) -> u16 {
    server.rpc(Some(token), "tools/list", json!({})).await.0
}

/// kid → state, as `keys list-signing --json` reports it.
fn states(server: &Server) -> Vec<(String, String)> {
    server
        .cli_json(&["keys", "list-signing"])
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["kid"].as_str().unwrap().to_string(),
                k["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn state_of(server: &Server, kid: &str) -> String {
    states(server)
        .into_iter()
        .find(|(k, _)| k == kid)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{kid} not listed"))
}

#[tokio::test]
async fn a_signing_key_revoked_with_revoke_signing_is_refused_at_once_and_leaves_the_jwks() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader");
    let old_token = client_token(&server, &id, &secret).await;
    let old_kid = header_kid(&old_token);
    // Replaced, not yet withdrawn: the old key's tokens still work.
    let rotated = server.cli_json(&["keys", "rotate-signing", "--publish-ahead", "0s"]);
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_eq!(status_of(&server, &old_token).await, 200);
    assert_eq!(state_of(&server, &old_kid), "retiring");
    assert_eq!(state_of(&server, &new_kid), "active");

    let revoked = server.cli_json(&["keys", "revoke-signing", &old_kid]);
    assert_eq!(revoked["kid"], old_kid.as_str());
    assert_eq!(revoked["state"], "revoked");
    // The very next request is refused, and the key is no longer published.
    let (status, body) = server.rpc(Some(&old_token), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_description"], "the credential has been revoked");
    assert_eq!(jwks_kids(&server).await, std::slice::from_ref(&new_kid));
    assert_eq!(state_of(&server, &old_kid), "revoked");
    // The current key is untouched.
    let new_token = client_token(&server, &id, &secret).await;
    assert_eq!(header_kid(&new_token), new_kid);
    assert_eq!(status_of(&server, &new_token).await, 200);
    // Revoking twice is an error, and so is an unknown kid.
    assert!(
        !server
            .cli(&["keys", "revoke-signing", &old_kid])
            .status
            .success()
    );
    // A kid may start with '-' (base64url): it is taken as the kid.
    let unknown = server.cli(&["keys", "revoke-signing", "-nope"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no signing key with kid"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    // Audited, with the kid.
    let records = server.audit(&["--tool", "keys/revoke-signing"]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["credential"], old_kid.as_str());
    assert_eq!(records[0]["reason"], "signing_key_revoked");
    assert_eq!(records[0]["kind"], "operator");
    assert_eq!(records[0]["agent"], "gatehouse-cli");
}

/// Run from a shell without the servers' master key, rotating (or a
/// forced revocation, which rotates first) sealed the key that signs next
/// with a new key file of its own: every server then failed to sign and
/// reported itself not ready. Refused now, with nothing stored or made.
#[tokio::test]
async fn signing_keys_are_not_sealed_with_a_master_key_the_servers_lack() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader");
    let token = client_token(&server, &id, &secret).await;
    let kid = header_kid(&token);
    let foreign = "ab".repeat(32);
    for args in [
        &["keys", "rotate-signing", "--publish-ahead", "0s"][..],
        &["keys", "revoke-signing", &kid, "--force"][..],
    ] {
        let out = server.cli_with_env(args, &[("GATEHOUSE_MASTER_KEY", &foreign)], None);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("master key"), "{stderr}");
    }
    assert_eq!(jwks_kids(&server).await, std::slice::from_ref(&kid));
    assert_eq!(state_of(&server, &kid), "active");
    assert_eq!(status_of(&server, &token).await, 200);
    // With the servers' key (the data directory's), it works as before.
    let rotated = server.cli_json(&["keys", "rotate-signing", "--publish-ahead", "0s"]);
    assert_ne!(rotated["kid"].as_str().unwrap(), kid);
}

#[tokio::test]
async fn the_only_signing_key_is_revoked_only_with_force_which_rotates_first() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "reader");
    let token = client_token(&server, &id, &secret).await;
    let kid = header_kid(&token);

    let refused = server.cli(&["keys", "revoke-signing", &kid]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("rotate-signing") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(status_of(&server, &token).await, 200, "nothing changed");
    assert_eq!(state_of(&server, &kid), "active");

    let forced = server.cli_json(&["keys", "revoke-signing", &kid, "--force"]);
    let replacement = forced["replaced_by"].as_str().unwrap().to_string();
    assert_ne!(replacement, kid);
    assert_eq!(status_of(&server, &token).await, 401);
    assert_eq!(jwks_kids(&server).await, std::slice::from_ref(&replacement));
    // The replacement signs at once.
    let fresh = client_token(&server, &id, &secret).await;
    assert_eq!(header_kid(&fresh), replacement);
    assert_eq!(status_of(&server, &fresh).await, 200);
    let listed = states(&server);
    assert!(
        listed.contains(&(kid.clone(), "revoked".into())),
        "{listed:?}"
    );
    assert!(
        listed.contains(&(replacement.clone(), "active".into())),
        "{listed:?}"
    );
}

fn now() -> Timestamp {
    // The server runs on the system clock; the test places keys around it.
    SystemClock.now()
}

const HOUR_MS: i64 = 3_600_000;

/// Stores `key`, sealed under `master`, signing from `activates_at`.
async fn store_key(
    store: &SqliteStore,
    master: &MasterKey,
    key: &SigningKey,
    activates_at: Timestamp,
) {
    store
        .insert_signing_key(&SigningKeyRecord {
            kid: key.kid().to_string(),
            sealed_pkcs8: master.seal(key.pkcs8(), key.kid().as_bytes()).unwrap(),
            public_jwk: serde_json::to_string(&key.public_jwk()).unwrap(),
            created_at: activates_at,
            activates_at,
            revoked_at: None,
        })
        .await
        .unwrap();
}

/// An admin token for `client`, as someone holding `key` would mint it.
fn forge(server: &Server, key: &SigningKey, client: &str) -> String {
    let now = now().as_secs();
    key.sign(&json!({
        "iss": server.base, "aud": server.mcp_url(), "sub": client, "client_id": client,
        "tenant": "default", "roles": ["admin"], "jti": format!("forged-{now}"),
        "iat": now, "exp": now + 600
    }))
    .unwrap()
}

/// Someone who can write the database but lacks the master key adds a
/// public key of theirs, activating in a hundred years (so it never signs
/// and nothing fails), and signs an admin token with it: it verifies
/// nothing and is not published. The same key sealed with the servers'
/// master key would be trusted (only the proof differs).
#[tokio::test]
async fn a_signing_key_written_into_the_database_without_the_master_key_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate().unwrap();
    std::fs::write(dir.path().join("master.key"), master.to_hex()).unwrap();
    let planted = SigningKey::generate().unwrap();
    let sealed = SigningKey::generate().unwrap();
    let later = now().plus_millis(100 * 365 * 24 * HOUR_MS);
    {
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"))
            .await
            .unwrap();
        store_key(&store, &MasterKey::generate().unwrap(), &planted, later).await;
        store_key(&store, &master, &sealed, later).await;
    }
    let server = Server::start_in(dir, None);
    let (client, _) = create_client(&server, "reader");
    let (status, body) = server
        .rpc(
            Some(&forge(&server, &planted, &client)),
            "tools/list",
            json!({}),
        )
        .await;
    assert_eq!(status, 401, "a planted key verifies: {body}");
    let published = jwks_kids(&server).await;
    assert!(
        !published.contains(&planted.kid().to_string()),
        "{published:?}"
    );
    assert!(
        published.contains(&sealed.kid().to_string()),
        "{published:?}"
    );
    assert_eq!(
        status_of(&server, &forge(&server, &sealed, &client)).await,
        200
    );
}

#[tokio::test]
async fn a_replaced_key_is_refused_once_every_token_it_signed_has_expired() {
    // The store as it is two hours after a rotation: `old` signed until
    // `new` took over two hours ago, longer than any token lives (one hour
    // plus leeway). Whoever kept `old` can still sign with it.
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate().unwrap();
    std::fs::write(dir.path().join("master.key"), master.to_hex()).unwrap();
    let old = SigningKey::generate().unwrap();
    let new = SigningKey::generate().unwrap();
    {
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"))
            .await
            .unwrap();
        let now = now();
        store_key(&store, &master, &old, now.plus_millis(-3 * HOUR_MS)).await;
        store_key(&store, &master, &new, now.plus_millis(-2 * HOUR_MS)).await;
    }
    let server = Server::start_in(dir, None);
    let (client, _) = create_client(&server, "reader");

    let forged_old = forge(&server, &old, &client);
    let (status, body) = server.rpc(Some(&forged_old), "tools/list", json!({})).await;
    assert_eq!(status, 401, "a retired key still verifies: {body}");
    // The same claims under the current key pass: only the key differs.
    assert_eq!(
        status_of(&server, &forge(&server, &new, &client)).await,
        200
    );
    assert_eq!(jwks_kids(&server).await, [new.kid().to_string()]);
    assert_eq!(state_of(&server, old.kid()), "retired");
    assert_eq!(state_of(&server, new.kid()), "active");
}

#[tokio::test]
async fn a_task_token_made_from_a_token_of_a_revoked_key_is_refused_too() {
    let server = Server::start(None);
    let (id, secret) = create_client(&server, "analyst");
    let old_token = client_token(&server, &id, &secret).await;
    let old_kid = header_kid(&old_token);
    let rotated = server.cli_json(&["keys", "rotate-signing", "--publish-ahead", "0s"]);
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    let exchange = |subject: String| {
        let server = &server;
        let (id, secret) = (id.clone(), secret.clone());
        async move {
            let (status, _, body) = token_request(
                server,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", &subject),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("task", "outreach"),
                ],
                Some((&id, &secret)),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_string()
        }
    };
    // Exchanged while the replaced key is still trusted: the task token is
    // signed by the new key, but stands on the old key's token.
    let task_token = exchange(old_token.clone()).await;
    assert_eq!(header_kid(&task_token), new_kid);
    assert_eq!(status_of(&server, &task_token).await, 200);
    let new_task_token = exchange(client_token(&server, &id, &secret).await).await;

    server.cli_json(&["keys", "revoke-signing", &old_kid]);
    let (status, body) = server.rpc(Some(&task_token), "tools/list", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error_description"], "the credential has been revoked");
    // A task token made from a token of the current key is untouched.
    assert_eq!(status_of(&server, &new_task_token).await, 200);
}
