//! Start-up configuration: bad files fail naming the key; auth-off mode.

use std::process::Command;

use serde_json::json;

use super::harness::{BIN, Server};

fn serve_with(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_bad_file_fails_at_start_naming_the_key_and_reason() {
    let (ok, stderr) = serve_with("version = 1\n[server]\nlisten_addr = \"127.0.0.1:1\"\n");
    assert!(!ok);
    assert!(stderr.contains("unknown field `listen_addr`"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    let (ok, stderr) = serve_with("version = 1\n[auth]\nanonymous_role = \"god\"\n");
    assert!(!ok);
    assert!(stderr.contains("auth.anonymous_role"), "{stderr}");
}

#[test]
fn check_config_validates_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/gatehouse.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--json", "--config", example])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Printed as the file spells it.
    assert_eq!(v["auth_mode"], "api_key");
}

#[tokio::test]
async fn auth_off_runs_everything_as_the_anonymous_principal() {
    let server = Server::start(Some(
        "version = 1\n[auth]\nmode = \"none\"\nanonymous_role = \"reader\"\n",
    ));
    assert!(server.admin_key.is_none());
    let (status, body) = server
        .rpc(
            None,
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["result"]["structuredContent"]["credential"]["kind"],
        "anonymous"
    );
    // Gate 2 still applies.
    let (_, denied) = server
        .rpc(
            None,
            "tools/call",
            json!({"name": "write_file", "arguments": {"path": "a", "content": "b"}}),
        )
        .await;
    assert_eq!(denied["error"]["data"]["reason"], "role_not_allowed");
    let log = std::fs::read_to_string(server.stderr_path()).unwrap();
    assert!(log.contains("AUTHENTICATION IS OFF"));
}

#[test]
fn auth_off_is_refused_on_a_public_address() {
    let (ok, stderr) =
        serve_with("version = 1\n[server]\nlisten = \"0.0.0.0:0\"\n[auth]\nmode = \"none\"\n");
    assert!(!ok);
    assert!(stderr.contains("auth.mode"), "{stderr}");
    // A loopback listener that a proxy publishes is public all the same.
    let (ok, stderr) = serve_with(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n\
         public_url = \"https://mcp.example.com\"\n[auth]\nmode = \"none\"\n",
    );
    assert!(!ok);
    assert!(stderr.contains("public_url"), "{stderr}");
}

/// A `[tools.NAME]` entry that names no tool (a typo) would leave the real
/// tool without its rule: approval, constraints, limits, redaction, and
/// callable by an admin role as a tool the policy does not name.
#[test]
fn a_policy_entry_that_names_no_tool_is_refused_by_check_config_and_validate() {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gatehouse-policy/src/default_policy.toml"
    );
    let misspelt = std::fs::read_to_string(policy)
        .unwrap()
        .replace("[tools.access_secrets]", "[tools.access_secret]");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), &misspelt).unwrap();
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(&config, "version = 1\n[policy]\nfile = \"policy.toml\"\n").unwrap();
    // `check-config` loads the policy as `serve` does at start (and as a
    // reload does), and exits.
    let run = |command: &[&str]| {
        Command::new(BIN)
            .args(command)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let check = run(&["check-config"]);
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("[tools.access_secret] names no tool"),
        "{stderr}"
    );
    let validate = run(&["policy", "validate"]);
    assert!(!validate.status.success());
    assert!(
        String::from_utf8_lossy(&validate.stderr).contains("[tools.access_secret] names no tool"),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    // An upstream's tool is a tool: named by its prefix.
    std::fs::write(
        dir.path().join("policy.toml"),
        misspelt.replace("[tools.access_secret]", "[tools.files__read_text_file]"),
    )
    .unwrap();
    std::fs::write(
        &config,
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"files\"\ncommand = \"true\"\nenabled = false\n",
    )
    .unwrap();
    let validate = run(&["policy", "validate"]);
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
}
