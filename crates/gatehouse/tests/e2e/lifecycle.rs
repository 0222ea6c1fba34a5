//! The credential lifecycle against the real binary: `gatehouse lifecycle
//! run --dry-run` shows and changes nothing, `lifecycle run` acts and
//! audits, `keys list` / `clients list` say what comes next, and the
//! server's own housekeeping pass acts once even with two instances on one
//! PostgreSQL database. Thresholds of "0s" make fresh credentials due at
//! once, so no clock needs moving.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::harness::Server;
use super::postgres::Schema;

/// The server's own pass is off, so only the CLI acts. Default-tenant keys
/// are alerted about at once; acme's are revoked at once; clients with a
/// secret reach their maximum age at once.
const CLI_CONFIG: &str = r#"version = 1
[lifecycle]
enabled = false
[lifecycle.api_keys]
unused_alert = "0s"
[lifecycle.client_secrets]
max_age = "0s"
[lifecycle.tenants.acme.api_keys]
unused_revoke = "0s"
"#;

fn actions(run: &Value) -> Vec<Value> {
    run["actions"].as_array().unwrap().clone()
}

fn action_for<'a>(actions: &'a [Value], id: &str) -> &'a Value {
    actions
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("no action for {id} in {actions:?}"))
}

#[tokio::test]
async fn lifecycle_run_dry_run_shows_and_run_acts_with_audit_records() {
    let server = Server::start(Some(CLI_CONFIG));
    let (plain_id, plain_key) = server.create_key("plain", "reader", &[]);
    let (acme_id, acme_key) = server.create_key("acme-bot", "reader", &["--tenant", "acme"]);
    let client = server.cli_json(&["clients", "create", "--name", "bot"]);
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let public = server.cli_json(&["clients", "create", "--name", "app", "--public"]);
    let public_id = public["client_id"].as_str().unwrap().to_string();

    // The listings say what comes next, and when.
    let keys = server.cli_json(&["keys", "list"]);
    let acme = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == acme_id)
        .unwrap();
    assert_eq!(
        acme["lifecycle"]["next"]["code"],
        "credential_revoked_unused"
    );
    assert_eq!(acme["lifecycle"]["next"]["action"], "revoke");
    assert_eq!(acme["lifecycle"]["next"]["due"], true);
    assert!(acme["lifecycle"]["age_secs"].as_i64().unwrap() >= 0);
    let plain = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == plain_id)
        .unwrap();
    assert_eq!(plain["lifecycle"]["next"]["code"], "credential_unused");
    let clients = server.cli_json(&["clients", "list"]);
    let listed = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == client_id)
        .unwrap();
    assert_eq!(
        listed["lifecycle"]["next"]["code"],
        "credential_revoked_max_age"
    );
    let listed_public = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == public_id)
        .unwrap();
    assert_eq!(
        listed_public["lifecycle"]["next"],
        Value::Null,
        "no secret, no lifecycle"
    );
    let table = server.cli(&["keys", "list"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("NEXT (LIFECYCLE)"), "{table}");
    assert!(table.contains("credential_revoked_unused now"), "{table}");

    // A dry run shows every due action and changes nothing.
    let dry = server.cli_json(&["lifecycle", "run", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let planned = actions(&dry);
    let acme_action = action_for(&planned, &acme_id);
    assert_eq!(acme_action["kind"], "api_key");
    assert_eq!(acme_action["tenant"], "acme");
    assert_eq!(acme_action["action"], "revoke");
    assert_eq!(acme_action["code"], "credential_revoked_unused");
    assert!(acme_action["detail"].as_str().unwrap().contains(&acme_id));
    assert_eq!(action_for(&planned, &plain_id)["code"], "credential_unused");
    assert_eq!(
        action_for(&planned, &client_id)["code"],
        "credential_revoked_max_age"
    );
    assert_eq!(action_for(&planned, &client_id)["kind"], "client_secret");
    assert!(planned.iter().all(|a| a["id"] != public_id));
    let text = server.cli(&["lifecycle", "run", "--dry-run"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(text.contains(&acme_id), "{text}");
    assert_eq!(
        server.rpc(Some(&acme_key), "tools/list", json!({})).await.0,
        200
    );
    assert!(server.audit(&["--kind", "lifecycle"]).is_empty());
    // The same again: still nothing done.
    assert_eq!(
        actions(&server.cli_json(&["lifecycle", "run", "--dry-run"])).len(),
        planned.len()
    );

    // The run does it, each action with its audit record.
    let run = server.cli_json(&["lifecycle", "run"]);
    assert_eq!(run["dry_run"], false);
    let done = actions(&run);
    assert_eq!(done.len(), planned.len());
    assert!(done.iter().all(|a| a["done"] == true), "{done:?}");
    assert_eq!(
        server.rpc(Some(&acme_key), "tools/list", json!({})).await.0,
        401
    );
    assert_eq!(
        server
            .rpc(Some(&plain_key), "tools/list", json!({}))
            .await
            .0,
        200
    );
    let revoked = server.audit(&["--kind", "lifecycle"]);
    let revoked_acme = revoked
        .iter()
        .find(|r| r["credential"] == acme_id.as_str())
        .unwrap_or_else(|| panic!("{revoked:?}"));
    assert_eq!(revoked_acme["reason"], "credential_revoked_unused");
    assert_eq!(revoked_acme["tenant"], "acme");
    assert_eq!(revoked_acme["agent"], "gatehouse-lifecycle");
    assert!(
        revoked.iter().any(|r| r["credential"] == client_id.as_str()
            && r["reason"] == "credential_revoked_max_age")
    );
    let alerts = server.audit(&["--kind", "alert"]);
    let unused = alerts
        .iter()
        .find(|r| r["credential"] == plain_id.as_str() && r["reason"] == "credential_unused")
        .unwrap_or_else(|| panic!("{alerts:?}"));
    // The same alert in the alert list, under its record's id.
    let listed = server.cli_json(&["alerts", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == unused["id"]
                && a["code"] == "credential_unused"
                && a["subject"] == format!("api_key {plain_id}").as_str()),
        "{listed}"
    );
    // The client's secret no longer gets tokens.
    let secret = client["client_secret"].as_str().unwrap();
    let token = server
        .http
        .post(format!("{}/oauth/token", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .basic_auth(&client_id, Some(secret))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status().as_u16(), 401);

    // Nothing is done twice: the revocations are done. (The plain key was
    // used since its alert, so with unused_alert = "0s" it is alerted about
    // again; an unused one would not be.)
    let again = server.cli_json(&["lifecycle", "run"]);
    assert!(
        actions(&again)
            .iter()
            .all(|a| a["id"] != acme_id && a["id"] != client_id),
        "{again}"
    );
    let admin = server.cli_json(&["keys", "list"]);
    let admin_id = admin
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(action_for(&planned, &admin_id)["code"] == "credential_unused");
    assert!(
        actions(&again).iter().all(|a| a["id"] != admin_id),
        "the unused admin key was alerted about once: {again}"
    );
    let listed = server.cli_json(&["keys", "list"]);
    let acme = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == acme_id)
        .unwrap();
    assert_eq!(acme["status"], "revoked");
    assert_eq!(acme["lifecycle"]["next"], Value::Null);
}

#[tokio::test]
async fn lifecycle_check_config_reports_the_policy_and_refuses_nonsense() {
    let server = Server::start(Some(CLI_CONFIG));
    let config = server.cli_json(&["check-config"]);
    let lifecycle = &config["lifecycle"];
    assert_eq!(lifecycle["enabled"], false);
    assert_eq!(lifecycle["api_keys"]["max_age_secs"], 90 * 24 * 3600);
    assert_eq!(lifecycle["api_keys"]["unused_alert_secs"], 0);
    assert_eq!(lifecycle["api_keys"]["rotation_overlap_secs"], 24 * 3600);
    assert_eq!(
        lifecycle["tenants"]["acme"]["api_keys"]["unused_revoke_secs"],
        0
    );
    assert_eq!(lifecycle["client_secrets"]["max_age_secs"], 0);
    assert_eq!(lifecycle["signing_keys"]["unused_revoke_secs"], Value::Null);

    // The signing key that signs now has its replacement date: published a
    // day (the overlap) before its 90 days are up.
    let signing = server.cli_json(&["keys", "list-signing"]);
    let active = signing
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["state"] == "active")
        .unwrap_or_else(|| panic!("{signing}"));
    let rotation = active["lifecycle_rotation_at"].as_str().unwrap();
    let created = active["created_at"].as_str().unwrap();
    assert!(rotation > created, "{active}");

    let bad = tempfile::tempdir().unwrap();
    let path = bad.path().join("bad.toml");
    std::fs::write(
        &path,
        "version = 1\n[lifecycle.grants]\nrotation_overlap = \"1h\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(super::harness::BIN)
        .args(["check-config", "--data-dir"])
        .arg(bad.path())
        .arg("--config")
        .arg(&path)
        .env_remove("GATEHOUSE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lifecycle.grants"), "{stderr}");
}

/// The server's own pass, every second: an acme key is revoked by itself.
const SERVE_CONFIG: &str = r#"version = 1
[storage]
backend = "postgres"
postgres_url_env = "GH_TEST_DATABASE_URL"
[lifecycle]
interval = "1s"
[lifecycle.tenants.acme.api_keys]
unused_revoke = "0s"
"#;

async fn wait_for_status(server: &Server, key: &str, expected: u16, what: &str) {
    let start = Instant::now();
    loop {
        if server.rpc(Some(key), "tools/list", json!({})).await.0 == expected {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn lifecycle_housekeeping_acts_once_across_two_instances_on_postgres() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let (first, second) = super::postgres::two_instances(&schema, SERVE_CONFIG);
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(first.create_key(&format!("acme-{i}"), "reader", &["--tenant", "acme"]));
    }
    for (_, key) in &keys {
        wait_for_status(&second, key, 401, "the housekeeping pass revoked the key").await;
    }
    // A few more passes on both instances find nothing more to do.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let records = second.audit(&["--kind", "lifecycle"]);
    for (id, _) in &keys {
        let revocations: Vec<&Value> = records
            .iter()
            .filter(|r| r["credential"] == id.as_str())
            .collect();
        assert_eq!(
            revocations.len(),
            1,
            "exactly one revocation record for {id}: {records:?}"
        );
        assert_eq!(revocations[0]["reason"], "credential_revoked_unused");
    }
    // The admin key (tenant default, defaults apply) is untouched.
    let admin = first.admin_key.clone().unwrap();
    assert_eq!(
        first.rpc(Some(&admin), "tools/list", json!({})).await.0,
        200
    );
}

/// `last_used_at` of the entry `id` in `keys list` / `clients list`.
fn last_used(server: &Server, listing: &str, field: &str, id: &str) -> Value {
    let listed = server.cli_json(&[listing, "list"]);
    listed
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry[field] == id)
        .unwrap_or_else(|| panic!("{id} not in {listed}"))["last_used_at"]
        .clone()
}

#[tokio::test]
async fn lifecycle_last_use_of_keys_and_clients_is_stored_and_survives_a_restart() {
    let mut server = Server::start(None);
    let (key_id, key) = server.create_key("agent", "reader", &[]);
    let client = server.cli_json(&["clients", "create", "--name", "bot"]);
    let client_id = client["client_id"].as_str().unwrap().to_string();
    assert_eq!(last_used(&server, "keys", "id", &key_id), Value::Null);
    assert_eq!(
        last_used(&server, "clients", "client_id", &client_id),
        Value::Null
    );

    assert_eq!(server.rpc(Some(&key), "tools/list", json!({})).await.0, 200);
    let token = server
        .http
        .post(format!("{}/oauth/token", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .basic_auth(&client_id, client["client_secret"].as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(token.status().as_u16(), 200);
    // The key's use is written off the request path: wait for it.
    let start = Instant::now();
    let key_used = loop {
        let used = last_used(&server, "keys", "id", &key_id);
        if used.is_string() {
            break used;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the key's use was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let client_used = last_used(&server, "clients", "client_id", &client_id);
    assert!(client_used.is_string(), "{client_used}");

    // More uses within the minute write nothing new.
    for _ in 0..3 {
        assert_eq!(server.rpc(Some(&key), "tools/list", json!({})).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(last_used(&server, "keys", "id", &key_id), key_used);

    // Stored, so a restart keeps it.
    assert!(server.stop().success());
    let dir = std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap());
    let restarted = Server::start_in(dir, None);
    assert_eq!(last_used(&restarted, "keys", "id", &key_id), key_used);
    assert_eq!(
        last_used(&restarted, "clients", "client_id", &client_id),
        client_used
    );
}
