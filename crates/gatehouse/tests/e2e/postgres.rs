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
struct Schema(String);

impl Schema {
    fn create() -> Option<Schema> {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).unwrap();
        let name = format!("gh_e2e_{}", hex::encode(bytes));
        match psql(&format!("CREATE SCHEMA {name}")) {
            Ok(()) => Some(Schema(name)),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL is required in CI: {e}")
            }
            Err(e) => {
                eprintln!("\n!!! SKIPPING the two-instance PostgreSQL test: {e}\n");
                None
            }
        }
    }

    fn url(&self) -> String {
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

#[tokio::test]
async fn a_revocation_on_one_instance_stops_the_key_on_the_other() {
    let Some(schema) = Schema::create() else {
        return;
    };
    let url = schema.url();
    // Instances share the database, the pepper and the master key.
    let env = [
        ("GH_TEST_DATABASE_URL", url.as_str()),
        ("GATEHOUSE_PEPPER", &"ab".repeat(32)),
        ("GATEHOUSE_MASTER_KEY", &"cd".repeat(32)),
    ];
    let first = Server::start_with_env(tempfile::tempdir().unwrap(), Some(CONFIG), &env);
    let second = Server::start_with_env(tempfile::tempdir().unwrap(), Some(CONFIG), &env);
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
    assert_eq!(first.rpc(Some(&key), "tools/list", json!({})).await.0, 401);
    // The second instance hears of it by NOTIFY (normally milliseconds; a
    // missed notification is caught by a one-second re-read).
    let start = Instant::now();
    loop {
        let status = second.rpc(Some(&key), "tools/list", json!({})).await.0;
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the revoked key still works on the other instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let denied = second.audit(&["--outcome", "failure", "--kind", "authentication"]);
    assert!(!denied.is_empty(), "the refusal is in the shared audit log");
}
