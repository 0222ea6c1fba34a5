//! The API key lifecycle, seen from a client: first-run key, revoke, rotate.

use serde_json::{Value, json};

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

/// A key's owner is the human behind its calls: disabling that user (a
/// departure) revokes the keys issued for them in their tenant, and no
/// other key.
#[tokio::test]
async fn disabling_a_user_revokes_the_keys_they_own() {
    let server = Server::start(None);
    server.cli_json(&["users", "add", "dana", "--role", "reader"]);
    // Written in another case than the user name: owners are compared as
    // user names are.
    let (_, owned) = server.create_key("danas-agent", "reader", &["--owner", "Dana"]);
    let (_, other) = server.create_key("team-agent", "reader", &["--owner", "erin"]);
    assert!(!server.tool_names(&owned).await.is_empty());
    server.cli_json(&["users", "disable", "dana"]);
    let (status, body) = server.rpc(Some(&owned), "tools/list", json!({})).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error_description"], "the credential has been revoked");
    assert!(!server.tool_names(&other).await.is_empty());
    // Enabling her again does not bring the key back.
    server.cli_json(&["users", "enable", "dana"]);
    assert_eq!(
        server.rpc(Some(&owned), "tools/list", json!({})).await.0,
        401
    );
}

/// A command run from a shell without the servers' pepper made a pepper
/// file of its own and issued keys (and secrets) that never work; a client
/// secret rotated after a leak then never validated. Refused now, with
/// nothing issued or changed.
#[tokio::test]
async fn credentials_are_not_issued_under_another_pepper() {
    let server = Server::start(None);
    let other = [("GATEHOUSE_PEPPER", "cd".repeat(32))];
    let env: Vec<(&str, &str)> = other.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = server.cli_with_env(
        &["keys", "create", "--name", "bot", "--role", "reader"],
        &env,
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pepper"), "{stderr}");
    let client = server.cli_json(&["clients", "create", "--name", "app", "--role", "reader"]);
    let id = client["client_id"].as_str().unwrap();
    let out = server.cli_with_env(&["clients", "rotate-secret", id], &env, None);
    assert!(!out.status.success());
    // Nothing was issued, and the client's secret is the one it had.
    let keys = server.cli_json(&["keys", "list"]);
    assert!(
        keys.as_array().unwrap().iter().all(|k| k["name"] != "bot"),
        "{keys}"
    );
    let secret = client["client_secret"].as_str().unwrap();
    let (status, _, body) = super::oauth::token_request(
        &server,
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // With the servers' pepper (the data directory's) it works as before.
    server.create_key("bot", "reader", &[]);
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

/// Who the CLI names in its records: the account of the test's own user id
/// (the CLI runs as the same user), as `/etc/passwd` names it. The tests
/// run the CLI with `USER` unset or set to that account, so no annotation.
pub(super) fn operator() -> String {
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let account = passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields[0].to_string())
        })
        .unwrap_or_else(|| format!("uid-{uid}"));
    format!("operator:{account}")
}

#[tokio::test]
async fn operator_changes_to_credentials_are_audited_with_who_made_them() {
    let server = Server::start(None);
    // The first start's signing key, admin key and admin user are
    // recorded too.
    // (The policy the server started with is the server's own record.)
    let first: Vec<Value> = server
        .audit(&["--kind", "operator"])
        .into_iter()
        .filter(|r| r["tool"] != "policy/load")
        .collect();
    let reasons: Vec<&str> = first
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["signing_key_added", "api_key_created", "user_added"]
    );
    for record in &first {
        assert_eq!(record["agent"], "gatehouse-first-start");
        assert_eq!(record["human"], operator().as_str());
    }

    let (id, key) = server.create_key("ci", "reader", &["--tenant", "default"]);
    let rotated = server.cli_json(&["keys", "rotate", &id, "--overlap", "1h"]);
    let new_id = rotated["id"].as_str().unwrap().to_string();
    server.cli_json(&["keys", "revoke", &new_id]);
    server.cli_json(&["keys", "unlock", "--source", "192.0.2.7"]);
    let client = server.cli_json(&["clients", "create", "--name", "bot"]);
    let client_id = client["client_id"].as_str().unwrap();
    server.cli_json(&["clients", "revoke", client_id]);
    let added = server.cli_json(&["users", "add", "carol", "--role", "reader"]);
    server.cli_json(&["users", "disable", "carol"]);
    server.cli_json(&["users", "enable", "carol"]);
    let out = server.cli_with_stdin(
        &["secrets", "set", "crm_token", "--tenant", "default"],
        Some("s3cr3t-value-for-the-crm\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        server
            .cli(&["secrets", "delete", "crm_token"])
            .status
            .success()
    );

    // USER is the shell's claim, not who runs the command: it cannot put
    // a change on someone else, only annotate the account's name.
    let claimed = server.cli_with_env(
        &[
            "keys", "create", "--name", "framed", "--role", "reader", "--json",
        ],
        &[("USER", "alice-was-here")],
        None,
    );
    assert!(claimed.status.success());
    let framed: serde_json::Value = serde_json::from_slice(&claimed.stdout).unwrap();
    let framed_id = framed["id"].as_str().unwrap();

    let mut records: Vec<Value> = server
        .audit(&["--kind", "operator"])
        .into_iter()
        .filter(|r| r["tool"] != "policy/load")
        .collect();
    let framed_at = records
        .iter()
        .position(|r| r["credential"] == framed_id)
        .unwrap();
    let framed_record = records.remove(framed_at);
    assert_eq!(
        framed_record["human"],
        format!("{} (USER=alice-was-here)", operator()),
        "{framed_record}"
    );
    // A change to a user is recorded under the user's tenant.
    for record in records
        .iter()
        .filter(|r| r["reason"] == "user_disabled" || r["reason"] == "user_enabled")
    {
        assert_eq!(record["tenant"], "default", "{record}");
    }
    let reasons: Vec<&str> = records[3..]
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "api_key_created",
            "api_key_rotated",
            "api_key_revoked",
            // Nothing was locked: nothing cleared, nothing recorded.
            "client_created",
            "client_revoked",
            "user_added",
            "user_disabled",
            "user_enabled",
            "tenant_secret_stored",
            "tenant_secret_deleted",
        ]
    );
    let by_reason = |reason: &str| records.iter().find(|r| r["reason"] == reason).unwrap();
    assert_eq!(by_reason("api_key_rotated")["credential"], id.as_str());
    assert_eq!(by_reason("api_key_revoked")["credential"], new_id.as_str());
    assert_eq!(by_reason("client_revoked")["credential"], client_id);
    assert_eq!(by_reason("user_disabled")["credential"], "carol");
    assert_eq!(by_reason("tenant_secret_stored")["tenant"], "default");
    for record in &records[3..] {
        assert_eq!(record["human"], operator().as_str(), "{record}");
        assert_eq!(record["agent"], "gatehouse-cli");
        assert_eq!(record["outcome"], "success");
    }
    // No secret of any kind reaches the trail.
    let all = serde_json::to_string(&records).unwrap();
    for secret in [
        key.as_str(),
        rotated["key"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap(),
        added["password"].as_str().unwrap(),
        "s3cr3t-value-for-the-crm",
    ] {
        assert!(!all.contains(secret), "{secret} in the audit trail");
    }
}

#[tokio::test]
async fn a_command_signs_its_records_only_with_a_master_key_that_is_already_there() {
    // Before any server ran: the key is made and recorded, the record is
    // left unsigned (no signing key yet).
    let dir = tempfile::tempdir().unwrap();
    let cli = |dir: &std::path::Path| {
        std::process::Command::new(super::harness::BIN)
            .args([
                "keys", "create", "--name", "cli", "--role", "reader", "--json",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env_remove("GATEHOUSE_CONFIG")
            .env_remove("GATEHOUSE_MASTER_KEY")
            .output()
            .unwrap()
    };
    let out = cli(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no signing key is active yet"), "{stderr}");

    // A server that takes its master key from the environment: a command
    // run without it cannot sign, says so, and leaves no master key file
    // of its own behind (a later start without the variable would use it).
    let mut server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        None,
        &[("GATEHOUSE_MASTER_KEY", &"cd".repeat(32))],
    );
    let out = cli(server.data_dir());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("chained but not signed"), "{stderr}");
    assert!(
        stderr.contains("GATEHOUSE_MASTER_KEY is not set"),
        "{stderr}"
    );
    assert!(!server.data_dir().join("master.key").exists());
    // With the variable, the same command signs: once the server has
    // signed its own chain at shutdown, only the unsigned run is left over.
    server.create_key("signed", "reader", &[]);
    assert!(server.stop().success());
    let verified = server.cli_json(&["audit", "verify"]);
    assert_eq!(
        verified["records_after_last_checkpoint"].as_u64(),
        Some(1),
        "{verified}"
    );
}
