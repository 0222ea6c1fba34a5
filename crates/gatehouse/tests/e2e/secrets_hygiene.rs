//! No key, token or secret value ever appears in logs or audit output.

use serde_json::json;

use gatehouse_store::Store;

use super::harness::Server;

#[tokio::test]
async fn no_secret_reaches_logs_or_audit() {
    let mut server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let (reader_id, reader) = server.create_key("reader", "reader", &[]);
    let (revoked_id, revoked) = server.create_key("revoked", "analyst", &[]);
    server.cli_json(&["keys", "revoke", &revoked_id]);
    let tenant_secret = "s3cr3t-VALUE-7f9a2c41d0e84b6aa1";
    let out = server.cli_with_stdin(&["secrets", "set", "db_password"], Some(tenant_secret));
    assert!(out.status.success());
    let mut tampered = reader.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let foreign_token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    // Successful and failed authentications, calls with secrets in arguments.
    server.tool_names(&admin).await;
    server.tool_names(&reader).await;
    server.rpc(Some(&revoked), "tools/list", json!({})).await;
    server.rpc(Some(&tampered), "tools/list", json!({})).await;
    server
        .rpc(Some(foreign_token), "tools/list", json!({}))
        .await;
    server
        .call_tool(
            &admin,
            "write_file",
            json!({"path": "leak.txt", "content": format!("key={reader} token={foreign_token}")}),
        )
        .await;
    server
        .call_tool(
            &reader,
            "search_database",
            json!({"query": reader.clone(), "password": tenant_secret}),
        )
        .await;
    server
        .call_tool(
            &reader,
            "web_fetch",
            json!({"url": format!("https://example.com/?k={admin}")}),
        )
        .await;
    server.cli(&["audit", "tail", "-n", "1000"]);
    let status = server.stop();
    assert!(status.success(), "graceful shutdown: {status:?}");

    // At rest the tenant secret is sealed: no database file holds its value
    // (e2e::tenants reads sealed secrets back through access_secrets).
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("gatehouse.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(tenant_secret.len())
                    .any(|w| w == tenant_secret.as_bytes()),
                "{name} holds the tenant secret in the clear"
            );
        }
    }

    // The server's own secrets: the pepper and the master key.
    let pepper = std::fs::read_to_string(server.data_dir().join("pepper")).unwrap();
    let master = std::fs::read_to_string(server.data_dir().join("master.key")).unwrap();
    assert_eq!((pepper.trim().len(), master.trim().len()), (64, 64));
    let log = std::fs::read_to_string(server.stderr_path()).unwrap();
    let audit_file = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).unwrap();
    let audit_json = server.cli(&["audit", "query", "--json", "--limit", "10000"]);
    let audit_text = server.cli(&["audit", "tail", "-n", "10000"]);
    let outputs = [
        ("server log", log.clone()),
        ("audit file", audit_file.clone()),
        (
            "audit query",
            String::from_utf8_lossy(&audit_json.stdout).to_string(),
        ),
        (
            "audit tail",
            String::from_utf8_lossy(&audit_text.stdout).to_string(),
        ),
    ];
    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        for secret in [
            admin.as_str(),
            reader.as_str(),
            revoked.as_str(),
            tampered.as_str(),
            foreign_token,
            tenant_secret,
            pepper.trim(),
            master.trim(),
        ] {
            assert!(!text.contains(secret), "{what} contains a secret");
        }
        for key in [&admin, &reader, &revoked] {
            let secret_half = key.splitn(3, '_').nth(2).unwrap();
            assert!(
                !text.contains(secret_half),
                "{what} contains a key's secret half"
            );
        }
    }
    // The records are there, with ids instead of secrets.
    assert!(audit_file.contains(&reader_id));
    assert!(audit_file.contains(&revoked_id));
    assert!(audit_file.contains("[REDACTED]"));
}

/// A tenant secret stored before secrets were sealed (its value as it is)
/// is sealed when the server starts: no database file holds it afterwards.
#[tokio::test]
async fn a_secret_stored_before_sealing_is_sealed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = "legacy-PLAIN-9c1e55aa0b7d4f03e1";
    {
        let store = gatehouse_store::SqliteStore::open(&dir.path().join("gatehouse.db"))
            .await
            .unwrap();
        store.put_secret("acme", "crm_token", legacy).await.unwrap();
    }
    let mut server = Server::start_in(dir, None);
    let status = server.stop();
    assert!(status.success(), "graceful shutdown: {status:?}");
    let log = std::fs::read_to_string(server.stderr_path()).unwrap();
    assert!(log.contains("now sealed with the master key"), "{log}");
    assert!(!log.contains(legacy));

    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("gatehouse.db") {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(legacy.len()).any(|w| w == legacy.as_bytes()),
                "{name} still holds the old secret in the clear"
            );
        }
    }
    let store = gatehouse_store::SqliteStore::open(&server.data_dir().join("gatehouse.db"))
        .await
        .unwrap();
    let stored = store.secret("acme", "crm_token").await.unwrap().unwrap();
    assert!(
        stored.starts_with(gatehouse_core::SEALED_PREFIX),
        "{stored}"
    );
}
