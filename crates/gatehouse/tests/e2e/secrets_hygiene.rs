//! No key, token or secret value ever appears in logs or audit output.

use std::path::Path;

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

/// A stdio upstream runs as Gatehouse's user; it must not read Gatehouse's
/// environment (master key, pepper, other upstreams' `env:` secrets)
/// through `/proc/<parent>/environ`. As root the child could read anything,
/// so under root the server (and so its child) runs as `nobody`.
#[tokio::test]
async fn a_stdio_upstream_cannot_read_gatehouses_environment() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};

    let root = is_root();
    if root && !Path::new("/usr/bin/setpriv").exists() {
        let reason = "setpriv (util-linux) is needed to run the server as nobody under root";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("\n!!! SKIPPING a_stdio_upstream_cannot_read_gatehouses_environment: {reason}\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if root {
        // The server restricts its data directory, which it must own.
        std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    // The child reports what it could read of its parent's environment.
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        r#"version = 1
[[upstreams]]
name = "snoop"
command = "sh"
args = ["-c", "tr '\\000' '\\n' < /proc/$PPID/environ >&2 || echo environ-unreadable >&2; echo snoop-done >&2; sleep 60"]
"#,
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let log = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&log).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut command = if root {
        let mut c = Command::new("/usr/bin/setpriv");
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--", super::harness::BIN]);
        c
    } else {
        Command::new(super::harness::BIN)
    };
    let mut child = command
        .args(["serve", "--json", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env_remove("GATEHOUSE_CONFIG")
        .env("GATEHOUSE_LOG", "info")
        .env(
            "GATEHOUSE_PEPPER",
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .env("GATEHOUSE_E2E_CANARY", "environ-canary-do-not-leak")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("snoop-done") {
            break text;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the upstream never reported:\n{text}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !text.contains("environ-canary-do-not-leak")
            && !text.contains("0123456789abcdef0123456789abcdef"),
        "the child read Gatehouse's environment:\n{text}"
    );
    assert!(text.contains("environ-unreadable"), "{text}");
}

/// The uid and gid of `nobody` on Debian and most Linux systems.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `secrets set` from a shell without the servers' master key (another key
/// in the environment, or none where the servers take theirs from the
/// environment) refuses and stores nothing: a secret sealed under a key the
/// servers do not have would fail every call that needs it.
#[tokio::test]
async fn a_secret_is_never_sealed_under_a_key_the_servers_do_not_have() {
    let server = Server::start(None);
    // The embedded authorization server's signing key is sealed under
    // <data-dir>/master.key.
    let other = "ab".repeat(32);
    let out = server.cli_with_env(
        &["secrets", "set", "db_password"],
        &[("GATEHOUSE_MASTER_KEY", &other)],
        Some("value-1"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opens none of the keys"), "{stderr}");
    assert!(
        !stderr.contains(&other) && !stderr.contains("value-1"),
        "{stderr}"
    );
    let listed = server.cli(&["secrets", "list"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("db_password"),
        "nothing is stored"
    );

    // The servers' key file gone from this shell's view: no new one is made.
    let key_file = server.data_dir().join("master.key");
    let kept = server.data_dir().join("master.key.kept");
    std::fs::rename(&key_file, &kept).unwrap();
    let out = server.cli_with_stdin(&["secrets", "set", "db_password"], Some("value-1"));
    assert!(!out.status.success());
    assert!(!key_file.exists(), "no stray master key was made");
    std::fs::rename(&kept, &key_file).unwrap();

    // With the servers' key it is stored.
    let out = server.cli_with_stdin(&["secrets", "set", "db_password"], Some("value-1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = server.cli(&["secrets", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("db_password"));
}

/// A server process that is killed when the test ends, passed or failed.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `serve` (human output) with its standard output and error in files, as a
/// service manager or a container runtime would keep them.
fn serve_into_files(data_dir: &Path, stdout: &Path, stderr: &Path) -> Running {
    let child = std::process::Command::new(super::harness::BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_PEPPER")
        // Everything it logs is searched for the secrets.
        .env("GATEHOUSE_LOG", "debug")
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

/// `serve` under a service manager or in a container: its standard output
/// is a journal or `docker logs`, kept and read by others. The first start's
/// admin key and password were printed there. Now they go to an owner-only
/// file in the data directory, the banner names the file, and neither
/// output holds them.
#[tokio::test]
async fn the_first_starts_secrets_are_not_printed_where_a_log_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let stdout_path = dir.path().join("stdout.log");
    let stderr_path = dir.path().join("stderr.log");
    let data_dir = dir.path().join("data");
    let child = serve_into_files(&data_dir, &stdout_path, &stderr_path);
    // The banner ends with the MCP Inspector line.
    let start = std::time::Instant::now();
    let banner = loop {
        let text = std::fs::read_to_string(&stdout_path).unwrap();
        if text.contains("npx @modelcontextprotocol/inspector") {
            break text;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no banner:\n{text}\n{}",
            std::fs::read_to_string(&stderr_path).unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    let file = data_dir.join("first-start-credentials.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let key = written["api_key"].as_str().unwrap();
    let password = written["user"]["password"].as_str().unwrap();
    assert_eq!(written["user"]["username"], "admin");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the file must be the owner's alone");
    }
    assert!(banner.contains(&file.display().to_string()), "{banner}");
    // The ready-to-paste commands hold a placeholder instead of the key.
    assert!(banner.contains("<your API key>"), "{banner}");

    // The file holds the real key: it authenticates.
    let mcp_url = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("MCP endpoint:"))
        .unwrap()
        .trim()
        .to_string();
    let listed = reqwest::Client::new()
        .post(&mcp_url)
        .bearer_auth(key)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", super::harness::MODERN)
        .header("Mcp-Method", "tools/list")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {
            "io.modelcontextprotocol/protocolVersion": super::harness::MODERN,
            "io.modelcontextprotocol/clientCapabilities": {}}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    // Stopped before its output is searched: nothing more is written.
    drop(child);

    // Each later start says the file is still there, until it is deleted.
    let restarted_err = dir.path().join("restarted.err");
    let again = serve_into_files(&data_dir, &dir.path().join("restarted.out"), &restarted_err);
    let start = std::time::Instant::now();
    loop {
        let log = std::fs::read_to_string(&restarted_err).unwrap();
        if log.contains("first-start-credentials.json") && log.contains("delete it") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "no warning about the file left behind:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(again);

    // `ghk_<id>_<secret>`; the secret is URL-safe base64 and may itself
    // hold `_`, so it is everything after the second one (its last piece
    // alone can be a letter or two, found in any output by chance).
    let secret_part = key.splitn(3, '_').nth(2).unwrap();
    assert!(secret_part.len() >= 40, "{key}");
    for path in [&stdout_path, &stderr_path] {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            !text.contains(secret_part),
            "the key is in {}",
            path.display()
        );
        assert!(
            !text.contains(password),
            "the password is in {}",
            path.display()
        );
    }
}

/// A process started without the servers' master key (a `gatehouse stdio`
/// run from a desktop client, a new instance) made a new key file and
/// sealed the legacy secrets it found with it: the servers could then open
/// neither. It now refuses to start, makes no key and seals nothing.
#[tokio::test]
async fn a_process_without_the_servers_master_key_seals_nothing_and_makes_no_key() {
    let mut server = Server::start(None);
    assert!(server.stop().success());
    let legacy = "legacy-plain-7f3a";
    {
        let store = gatehouse_store::SqliteStore::open(&server.data_dir().join("gatehouse.db"))
            .await
            .unwrap();
        store
            .put_secret("default", "crm_token", legacy)
            .await
            .unwrap();
    }
    let key_file = server.data_dir().join("master.key");
    let kept = server.data_dir().join("master.key.kept");
    std::fs::rename(&key_file, &kept).unwrap();
    let output = std::process::Command::new(super::harness::BIN)
        .arg("stdio")
        .arg("--data-dir")
        .arg(server.data_dir())
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_PEPPER")
        .env_remove("GATEHOUSE_MASTER_KEY")
        .env_remove("GATEHOUSE_API_KEY")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("master key"), "{stderr}");
    assert!(!key_file.exists(), "a stray master key was made");
    let store = gatehouse_store::SqliteStore::open(&server.data_dir().join("gatehouse.db"))
        .await
        .unwrap();
    assert_eq!(
        store
            .secret("default", "crm_token")
            .await
            .unwrap()
            .as_deref(),
        Some(legacy),
        "sealed with a key the servers do not have"
    );
}

/// Where no signing key exists yet (a stdio-only deployment), a sealed
/// tenant secret tells the servers' master key: a process without it
/// refuses to start rather than make a new key.
#[tokio::test]
async fn without_signing_keys_a_sealed_secret_still_tells_the_servers_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut command = std::process::Command::new(super::harness::BIN);
        command
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .env_remove("GATEHOUSE_CONFIG")
            .env_remove("GATEHOUSE_PEPPER")
            .env_remove("GATEHOUSE_MASTER_KEY")
            .env_remove("GATEHOUSE_API_KEY")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    };
    let set = run(&["secrets", "set", "crm_token"], Some("value-1"));
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let store = gatehouse_store::SqliteStore::open(&dir.path().join("gatehouse.db"))
        .await
        .unwrap();
    assert!(store.signing_keys().await.unwrap().is_empty());
    drop(store);
    let key_file = dir.path().join("master.key");
    std::fs::rename(&key_file, dir.path().join("master.key.kept")).unwrap();
    let stdio = run(&["stdio"], None);
    assert!(!stdio.status.success());
    let stderr = String::from_utf8_lossy(&stdio.stderr);
    assert!(stderr.contains("master key"), "{stderr}");
    assert!(!key_file.exists(), "a stray master key was made");
    // Nor does a secret for a tenant that has none yet get sealed with a
    // new key (the other tenant's sealed secret decides).
    let other = run(
        &["secrets", "set", "api_token", "--tenant", "acme"],
        Some("value-2"),
    );
    assert!(!other.status.success());
    assert!(!key_file.exists(), "a stray master key was made");
}
