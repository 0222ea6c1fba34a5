//! The API key lifecycle, seen from a client: first-run key, revoke, rotate.

use serde_json::json;

use super::harness::Server;

#[tokio::test]
async fn first_start_prints_one_admin_key_and_later_starts_do_not() {
    let mut server = Server::start(None);
    let admin = server.admin_key.clone().expect("first start prints a key");
    assert!(admin.starts_with("ghk_"));
    assert_eq!(server.tool_names(&admin).await.len(), 9);
    server.stop();
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    drop(server);
    let again = Server::start_in(dir, None);
    assert!(
        again.admin_key.is_none(),
        "a second start must not create a key"
    );
    // The key from the first start still works.
    assert_eq!(again.tool_names(&admin).await.len(), 9);
    // Only the key id and hash are stored: the secret is not in the database.
    let db = std::fs::read(again.data_dir().join("gatehouse.db")).unwrap();
    let secret = admin.splitn(3, '_').nth(2).unwrap();
    assert!(!String::from_utf8_lossy(&db).contains(secret));
}

#[tokio::test]
async fn keys_list_never_shows_secrets() {
    let server = Server::start(None);
    let (id, key) = server.create_key(
        "agent-1",
        "reader",
        &["--owner", "alice", "--expires", "90d"],
    );
    let list = server.cli_json(&["keys", "list"]);
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert_eq!(entry["role"], "reader");
    assert_eq!(entry["owner"], "alice");
    assert_eq!(entry["status"], "active");
    assert!(entry["expires_at"].is_string());
    assert!(!list.to_string().contains(&key));
    let table = server.cli(&["keys", "list"]);
    assert!(!String::from_utf8_lossy(&table.stdout).contains(&key));
}

#[tokio::test]
async fn invalid_key_arguments_are_refused_with_a_reason() {
    let server = Server::start(None);
    for (args, want) in [
        (vec!["--role", "root"], "unknown role"),
        (
            vec!["--role", "reader", "--scopes", "tools:everything"],
            "unknown scope",
        ),
        (vec!["--role", "reader", "--tenant", "../x"], "tenant"),
    ] {
        let mut all = vec!["keys", "create", "--name", "x"];
        all.extend(args);
        let out = server.cli(&all);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[tokio::test]
async fn revoked_key_is_refused_on_the_next_request() {
    let server = Server::start(None);
    let (id, key) = server.create_key("doomed", "reader", &[]);
    assert!(!server.tool_names(&key).await.is_empty());
    server.cli_json(&["keys", "revoke", &id]);
    let (status, body) = server.rpc(Some(&key), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_description"], "the credential has been revoked");
    let audit = server.audit(&["--kind", "authentication", "--principal", &id]);
    let last = audit.last().unwrap();
    assert_eq!(last["outcome"], "failure");
    assert_eq!(last["reason"], "revoked");
    // Revoking twice is an error the operator sees.
    assert!(!server.cli(&["keys", "revoke", &id]).status.success());
}

#[tokio::test]
async fn rotated_key_overlaps_then_the_old_one_stops() {
    let server = Server::start(None);
    let (id, old) = server.create_key("rotating", "analyst", &[]);
    let rotated = server.cli_json(&["keys", "rotate", &id, "--overlap", "1h"]);
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(rotated["role"], "analyst");
    assert_eq!(rotated["replaces"], id.as_str());
    // During the overlap both keys work.
    assert_eq!(server.tool_names(&old).await.len(), 4);
    assert_eq!(server.tool_names(&new).await.len(), 4);
    // A key can be rotated once.
    assert!(!server.cli(&["keys", "rotate", &id]).status.success());

    // With no overlap the old key stops at once.
    let (id2, old2) = server.create_key("rotating-now", "reader", &[]);
    let rotated = server.cli_json(&["keys", "rotate", &id2, "--overlap", "0s"]);
    let (status, body) = server.rpc(Some(&old2), "tools/list", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_description"], "the credential has expired");
    assert_eq!(
        server
            .tool_names(rotated["key"].as_str().unwrap())
            .await
            .len(),
        3
    );
}

#[tokio::test]
async fn expired_key_is_refused() {
    let server = Server::start(None);
    let (_, key) = server.create_key("short", "reader", &["--expires", "0s"]);
    let (status, _) = server.rpc(Some(&key), "tools/list", json!({})).await;
    assert_eq!(status, 401);
}
