//! The gateway: an upstream MCP server's tools served at /mcp, under the
//! same policy and audit as the built-in tools, called with Gatehouse's
//! own credentials and environment, never the caller's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::harness::Server;

pub(super) const DEFAULT: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");
/// The version the Python interop tests pin (tests/interop/python/run.sh).
const MCP_VERSION: &str = "2.3.0";

pub(super) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn has_sdk(python: &Path) -> bool {
    let check = format!(
        "import importlib.metadata as m, sys; sys.exit(0 if m.version('mcp') == '{MCP_VERSION}' else 1)"
    );
    Command::new(python)
        .args(["-c", &check])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The shared test venv's python with the MCP SDK (made as the upstream
/// client's tests and the Python interop tests make it). Missing: skipped
/// loudly, or a failure with CI=true.
pub(super) fn python() -> Option<PathBuf> {
    let venv = root().join(".tools/pyvenv");
    let python = venv.join("bin/python");
    if !has_sdk(&python) {
        std::fs::create_dir_all(root().join(".tools")).unwrap();
        let lock = std::fs::File::create(root().join(".tools/pyvenv.lock")).unwrap();
        lock.lock().unwrap();
        if !has_sdk(&python) {
            let _ = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status();
            let _ = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("mcp=={MCP_VERSION}"))
                .status();
        }
    }
    if has_sdk(&python) {
        return Some(python);
    }
    let reason = format!("no Python with mcp=={MCP_VERSION} could be set up in .tools/pyvenv");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the upstream e2e tests must run in CI: {reason}"
    );
    eprintln!("\n!!! SKIPPING the upstream e2e tests: {reason}\n");
    if let Ok(path) = std::env::var("GATEHOUSE_SKIPPED")
        && let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path)
    {
        use std::io::Write;
        let _ = writeln!(file, "e2e upstreams: {reason}");
    }
    None
}

fn server_with_upstream(python: &Path, policy_extra: &str) -> Server {
    server_with_upstream_entry(python, policy_extra, "call_timeout = \"30s\"\n")
}

/// `entry` ends the `[[upstreams]]` entry (timeouts, limits).
pub(super) fn server_with_upstream_entry(python: &Path, policy_extra: &str, entry: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{DEFAULT}\n{policy_extra}"),
    )
    .unwrap();
    let script = root().join("crates/gatehouse-upstream/tests/upstreams/server.py");
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"py\"\ncommand = {:?}\nargs = [{:?}, \"stdio\"]\nconnect_timeout = \"30s\"\n{entry}",
        python.display().to_string(),
        script.display().to_string(),
    );
    // A variable of Gatehouse's own environment the child must never see.
    Server::start_with_env(
        dir,
        Some(&config),
        &[("GATEHOUSE_E2E_CANARY", "do-not-leak")],
    )
}

/// The upstream is started in the background: wait until its tools show.
pub(super) async fn tools_when_ready(server: &Server, key: &str, expected: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let names = server.tool_names(key).await;
        if names.iter().any(|n| n == expected) {
            return names;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream's tools never appeared: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) fn reason(body: &Value) -> &str {
    body["error"]["data"]["reason"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_upstreams_tools_are_served_under_the_policy_and_audited() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\n\
         [tools.py__env_dump]\nscope = \"tools:admin\"\nroles = [\"admin\"]\n",
    );
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    let (reader_id, reader) = server.create_key("reader", "reader", &[]);
    let (_, admin) = server.create_key("admin", "admin", &[]);

    // The analyst sees the upstream's tools the section covers, next to
    // the built-in ones; not the one only admins may call.
    let names = tools_when_ready(&server, &analyst, "py__echo").await;
    assert!(names.iter().any(|n| n == "whoami"), "{names:?}");
    assert!(!names.iter().any(|n| n == "py__env_dump"), "{names:?}");
    // A reader sees none of them.
    let names = server.tool_names(&reader).await;
    assert!(!names.iter().any(|n| n.starts_with("py__")), "{names:?}");

    // Admins see each upstream's health; nobody else does.
    let status = |key: &str| {
        let request = reqwest::Client::new()
            .get(format!("{}/admin/upstreams", server.base))
            .bearer_auth(key.to_string());
        async move {
            let response = request.send().await.unwrap();
            let code = response.status().as_u16();
            (code, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (code, body) = status(&admin).await;
    assert_eq!(code, 200, "{body}");
    let py = &body["upstreams"][0];
    assert_eq!(
        (&py["name"], &py["state"]),
        (&json!("py"), &json!("ready")),
        "{body}"
    );
    assert!(py["protocol_version"].is_string(), "{body}");
    assert_eq!(status(&analyst).await.0, 403);

    // The analyst's call reaches the upstream and its answer comes back.
    let body = server
        .call_tool(&analyst, "py__echo", json!({"text": "hello upstream"}))
        .await;
    assert!(body["error"].is_null(), "{body}");
    assert!(body.to_string().contains("hello upstream"), "{body}");
    // The answer is Gatehouse's: the upstream's own serverInfo stays behind.
    assert!(
        !body.to_string().contains("gatehouse-test-upstream"),
        "{body}"
    );
    let records = server.audit(&["--principal", &analyst_id, "--tool", "py__echo"]);
    assert!(
        records.iter().any(|r| r["kind"] == "tool_decision"
            && r["decision"] == "allow"
            && r["reason"]
                .as_str()
                .is_some_and(|s| s.contains("defaults of upstream py"))),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success"),
        "{records:?}"
    );

    // The reader is refused, with the reason, and the refusal is audited.
    let (_, body) = server
        .rpc(
            Some(&reader),
            "tools/call",
            json!({"name": "py__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    let denied = server.audit(&["--principal", &reader_id, "--tool", "py__echo"]);
    assert!(
        denied
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "role_not_allowed"),
        "{denied:?}"
    );

    // Roles inherit upstream access like any other (admin ⊇ analyst);
    // the tool the policy gives admins only runs for them.
    let body = server.call_tool(&admin, "py__pid", json!({})).await;
    assert!(body["error"].is_null(), "{body}");
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "tools/call",
            json!({"name": "py__env_dump", "arguments": {}}),
        )
        .await;
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    let body = server.call_tool(&admin, "py__env_dump", json!({})).await;
    let text = body.to_string();
    assert!(body["error"].is_null(), "{body}");
    // The child got a minimal environment: none of Gatehouse's own.
    assert!(!text.contains("do-not-leak"), "{text}");
    assert!(!text.contains("GATEHOUSE_"), "{text}");
    assert!(text.contains("PATH"), "{text}");
}

#[tokio::test]
async fn an_upstream_tool_without_a_policy_entry_is_hidden_and_refused_even_for_admins() {
    let Some(python) = python() else { return };
    // The policy says nothing about upstream `py`.
    let server = server_with_upstream(&python, "");
    let (_, admin) = server.create_key("admin", "admin", &[]);
    // Give the child time to come up: a call then reaches the decision.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (_, body) = server
            .rpc(
                Some(&admin),
                "tools/call",
                json!({"name": "py__echo", "arguments": {"text": "x"}}),
            )
            .await;
        if reason(&body) == "unknown_tool" || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reason(&body), "unknown_tool", "{body}");
    let names = server.tool_names(&admin).await;
    assert!(!names.iter().any(|n| n.starts_with("py__")), "{names:?}");
}

#[tokio::test]
async fn an_upstream_that_cannot_start_is_a_json_rpc_error_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{DEFAULT}\n[upstreams.gone]\nscope = \"tools:read\"\nroles = [\"reader\"]\n"),
    )
    .unwrap();
    let config = "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"gone\"\n\
                  command = \"/nonexistent/mcp-server\"\nconnect_timeout = \"1s\"\ncall_timeout = \"2s\"\n";
    let server = Server::start_in(dir, Some(config));
    let (id, reader) = server.create_key("reader", "reader", &[]);
    // Still ready (one upstream down does not take Gatehouse out of
    // rotation); the probe counts the upstream but never names it.
    let response = reqwest::get(format!("{}/readyz", server.base))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ready: Value = response.json().await.unwrap();
    assert_eq!(
        (&ready["ready"], &ready["store"], &ready["audit"]),
        (&json!(true), &json!("ok"), &json!("ok")),
        "{ready}"
    );
    // The authorization server runs, and has a key that signs now.
    assert_eq!(ready["signing_key"], "ok", "{ready}");
    let upstreams = &ready["upstreams"];
    assert_eq!(
        upstreams["connecting"].as_u64().unwrap() + upstreams["failing"].as_u64().unwrap(),
        1,
        "{ready}"
    );
    assert!(!ready.to_string().contains("gone"), "{ready}");
    // The built-in tools still list; the broken upstream adds nothing.
    let names = server.tool_names(&reader).await;
    assert!(names.iter().any(|n| n == "whoami"), "{names:?}");
    let (status, body) = server
        .rpc(
            Some(&reader),
            "tools/call",
            json!({"name": "gone__anything", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let code = reason(&body);
    assert!(code.starts_with("upstream_"), "{body}");
    // The caller learns what failed, not how the server is set up.
    assert!(!body.to_string().contains("/nonexistent"), "{body}");
    // Refused before it ran (its definition could not be checked against
    // its pin), on record with the upstream's reason.
    let records = server.audit(&["--principal", &id, "--tool", "gone__anything"]);
    assert!(
        records.iter().any(|r| r["kind"] == "tool_decision"
            && r["decision"] == "deny"
            && r["reason"] == code),
        "{records:?}"
    );
}

/// The test server over Streamable HTTP on a free port, stopped on drop.
pub(super) struct PyHttp {
    child: std::process::Child,
    pub(super) url: String,
    _dir: tempfile::TempDir,
}

impl PyHttp {
    fn start(python: &Path) -> PyHttp {
        PyHttp::start_with(python, &[])
    }

    /// The server started with extra options (`--legacy`, `--resumable`).
    pub(super) fn start_with(python: &Path, options: &[&str]) -> PyHttp {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let child = Command::new(python)
            .arg(root().join("crates/gatehouse-upstream/tests/upstreams/server.py"))
            .arg("http")
            .arg(&port_file)
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_owned();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no port");
            std::thread::sleep(Duration::from_millis(50));
        };
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "not listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        PyHttp {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
            _dir: dir,
        }
    }
}

impl Drop for PyHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gatehouse secrets set` (a leaked upstream token replaced) and `delete`
/// (a tenant cut off from an upstream) take effect from the next call: the
/// tenant's connection made with the old value is ended, not kept until
/// the upstream drops it.
#[tokio::test]
async fn a_rotated_or_deleted_tenant_secret_is_used_no_more() {
    let Some(python) = python() else { return };
    let spy = PyHttp::start(&python);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "{DEFAULT}\n[upstreams.spy]\nscope = \"tools:read\"\nroles = [\"reader\"]\n[tenants.acme]\n"
        ),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"spy\"\nurl = {:?}\n\
         auth = {{ bearer = \"tenant:spy_token\" }}\nconnect_timeout = \"30s\"\ncall_timeout = \"30s\"\n",
        spy.url
    );
    let server = Server::start_in(dir, Some(&config));
    let set = |token: &str| {
        let out = server.cli_with_stdin(
            &["secrets", "set", "spy_token", "--tenant", "acme"],
            Some(token),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set("acme-token-1");
    let (_, key) = server.create_key("acme-agent", "reader", &["--tenant", "acme"]);
    tools_when_ready(&server, &key, "spy__request_headers").await;
    let seen = |body: &Value| -> String {
        assert!(body["error"].is_null(), "{body}");
        let headers: Value = serde_json::from_str(
            body["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or("{}"),
        )
        .unwrap();
        headers["authorization_sha256"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let digest = |token: &str| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(format!("Bearer {token}")))
    };
    let body = server
        .call_tool(&key, "spy__request_headers", json!({}))
        .await;
    assert_eq!(seen(&body), digest("acme-token-1"));
    set("acme-token-2");
    let body = server
        .call_tool(&key, "spy__request_headers", json!({}))
        .await;
    assert_eq!(
        seen(&body),
        digest("acme-token-2"),
        "the rotated-out token was sent"
    );
    let out = server.cli(&["secrets", "delete", "spy_token", "--tenant", "acme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = server
        .call_tool(&key, "spy__request_headers", json!({}))
        .await;
    assert!(
        body["result"].is_null(),
        "a deleted secret was still used: {body}"
    );
    assert_eq!(
        body["error"]["data"]["reason"], "upstream_unavailable",
        "{body}"
    );
}

#[tokio::test]
async fn a_spy_upstream_sees_each_tenants_own_credential_and_nothing_of_the_caller() {
    let Some(python) = python() else { return };
    let spy = PyHttp::start(&python);
    let dir = tempfile::tempdir().unwrap();
    let default = DEFAULT;
    let policy_path = dir.path().join("policy.toml");
    // Keys are made before tenancy is on for the default tenant's admin.
    std::fs::write(
        &policy_path,
        format!(
            "{default}\n[upstreams.spy]\nscope = \"tools:read\"\nroles = [\"reader\"]\n\
             [tenants.acme]\n[tenants.globex]\n[tenants.initech]\ntools = [\"whoami\"]\n"
        ),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"spy\"\nurl = {:?}\n\
         auth = {{ bearer = \"tenant:spy_token\" }}\nconnect_timeout = \"30s\"\ncall_timeout = \"30s\"\n",
        spy.url
    );
    let server = Server::start_in(dir, Some(&config));
    for (tenant, token) in [
        ("acme", "acme-upstream-token"),
        ("globex", "globex-upstream-token"),
    ] {
        let out = server.cli_with_stdin(
            &["secrets", "set", "spy_token", "--tenant", tenant],
            Some(token),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, acme) = server.create_key("acme-agent", "reader", &["--tenant", "acme"]);
    let (_, globex) = server.create_key("globex-agent", "reader", &["--tenant", "globex"]);
    for (key, own, other) in [
        (&acme, "acme-upstream-token", "globex-upstream-token"),
        (&globex, "globex-upstream-token", "acme-upstream-token"),
    ] {
        tools_when_ready(&server, key, "spy__request_headers").await;
        let body = server
            .call_tool(key, "spy__request_headers", json!({}))
            .await;
        assert!(body["error"].is_null(), "{body}");
        // The spy answers with the headers as JSON text.
        let seen: Value = serde_json::from_str(
            body["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or("{}"),
        )
        .unwrap();
        // The tenant's own credential, as Gatehouse's: the spy got it (its
        // digest says so), and the caller never sees it (Gatehouse replaces
        // it in what comes back).
        use sha2::Digest as _;
        let sent = hex::encode(sha2::Sha256::digest(format!("Bearer {own}")));
        assert_eq!(
            seen["authorization_sha256"], sent,
            "the spy saw {seen}: {body}"
        );
        assert_eq!(seen["authorization"], "Bearer [redacted]", "{body}");
        let text = body.to_string();
        assert!(!text.contains(own), "the credential came back: {text}");
        assert!(!text.contains(other), "another tenant's credential: {text}");
        // Nothing of the caller: its key, Gatehouse's cookies or session.
        assert!(
            !text.contains(key.as_str()),
            "the caller's key reached the upstream: {text}"
        );
        assert!(!text.contains("ghk_"), "{text}");
        assert!(seen.get("cookie").is_none(), "{text}");
        assert!(seen.get("x-api-key").is_none(), "{text}");
    }
    // An admin sees the health of the upstreams its tenant may use, and
    // of no other tenant's.
    let (_, acme_admin) = server.create_key("acme-admin", "admin", &["--tenant", "acme"]);
    let (_, initech_admin) = server.create_key("initech-admin", "admin", &["--tenant", "initech"]);
    for (key, expected) in [(&acme_admin, json!(["spy"])), (&initech_admin, json!([]))] {
        let response = server
            .http
            .get(format!("{}/admin/upstreams", server.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();
        let names: Vec<&Value> = body["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| &u["name"])
            .collect();
        assert_eq!(json!(names), expected, "{body}");
    }
}

fn prompt_names(body: &Value) -> Vec<String> {
    body["result"]["prompts"]
        .as_array()
        .map(|prompts| {
            prompts
                .iter()
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn upstream_prompts_are_listed_got_and_refused_under_the_policy() {
    let Some(python) = python() else { return };
    // The section covers everything upstream `py` serves, prompts included.
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n",
    );
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    let (reader_id, reader) = server.create_key("reader", "reader", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.rpc(Some(&analyst), "prompts/list", json!({})).await;
        assert_eq!(status, 200, "{body}");
        if prompt_names(&body).iter().any(|n| n == "py__summarize") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no upstream prompts: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "prompts/get",
            json!({"name": "py__summarize", "arguments": {"topic": "the gateway"}}),
        )
        .await;
    assert!(body["error"].is_null(), "{body}");
    assert!(body.to_string().contains("Summarize the gateway"), "{body}");

    // A reader neither sees nor gets it, and the refusal is audited.
    let (_, body) = server.rpc(Some(&reader), "prompts/list", json!({})).await;
    assert!(
        !prompt_names(&body).iter().any(|n| n.starts_with("py__")),
        "{body}"
    );
    let (_, body) = server
        .rpc(
            Some(&reader),
            "prompts/get",
            json!({"name": "py__summarize", "arguments": {"topic": "x"}}),
        )
        .await;
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("prompt 'py__summarize'")),
        "{body}"
    );
    let records = server.audit(&["--principal", &reader_id, "--tool", "py__summarize"]);
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "role_not_allowed"),
        "{records:?}"
    );
}

/// A completion of a prompt's argument reached the upstream with values
/// the prompt's constraints forbid (`prompts/get` refuses them), and its
/// suggestions came back unchecked: a server completing `topic` from `hr/`
/// listed what the constraint keeps the caller from.
#[tokio::test]
async fn a_completion_is_held_to_the_prompts_argument_constraints() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
         [prompts.py__summarize]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
         [prompts.py__summarize.constraints]\ntopic = { prefix = [\"public/\"] }\n",
    );
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let complete = |value: &'static str, context: Value| {
        let server = &server;
        let analyst = &analyst;
        async move {
            let mut params = json!({
                "ref": {"type": "ref/prompt", "name": "py__summarize"},
                "argument": {"name": "topic", "value": value},
            });
            if !context.is_null() {
                params["context"] = json!({"arguments": context});
            }
            server
                .rpc(Some(analyst), "completion/complete", params)
                .await
                .1
        }
    };
    loop {
        let body = complete("public/", Value::Null).await;
        if body["error"].is_null() {
            assert_eq!(
                body["result"]["completion"]["values"],
                json!(["public/-suggested"]),
                "{body}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A value typed so far is completed, but nothing the constraint
    // forbids is suggested.
    let body = complete("hr/", Value::Null).await;
    assert_eq!(body["result"]["completion"]["values"], json!([]), "{body}");
    let body = complete("pub", Value::Null).await;
    assert!(body["error"].is_null(), "{body}");
    // A resolved value given as context is held to its constraint too.
    let body = complete("public/a", json!({"topic": "hr/x"})).await;
    assert_eq!(reason(&body), "constraint_violated", "{body}");
    let records = server.audit(&["--principal", &analyst_id, "--tool", "py__summarize"]);
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "constraint_violated"),
        "{records:?}"
    );
}

#[tokio::test]
async fn upstream_resources_keep_their_uri_and_are_read_under_the_policy() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n",
    );
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    let (reader_id, reader) = server.create_key("reader", "reader", &[]);
    let uris = |body: &Value| -> Vec<String> {
        body["result"]["resources"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|r| r["uri"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    resources_when_ready(&server, &analyst).await;
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "resources/read",
            json!({"uri": "memo://team/note"}),
        )
        .await;
    assert!(body["error"].is_null(), "{body}");
    assert!(body.to_string().contains("the team note"), "{body}");
    let records = server.audit(&["--principal", &analyst_id, "--tool", "memo://team/note"]);
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "tool_outcome" && r["outcome"] == "success"),
        "{records:?}"
    );

    // A reader neither sees nor reads it; a URI no upstream lists is refused.
    let (_, body) = server.rpc(Some(&reader), "resources/list", json!({})).await;
    assert!(uris(&body).is_empty(), "{body}");
    let (_, body) = server
        .rpc(
            Some(&reader),
            "resources/read",
            json!({"uri": "memo://team/note"}),
        )
        .await;
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "resources/read",
            json!({"uri": "file:///etc/passwd"}),
        )
        .await;
    assert_eq!(reason(&body), "unknown_tool", "{body}");
    let denied = server.audit(&["--principal", &reader_id, "--tool", "memo://team/note"]);
    assert!(
        denied
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "role_not_allowed"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn failing_calls_are_json_rpc_errors_with_their_reason_and_audited() {
    let Some(python) = python() else { return };
    let server = server_with_upstream_entry(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"reader\"]\n",
        "call_timeout = \"5s\"\nmax_message_bytes = 1048576\n",
    );
    let (reader_id, reader) = server.create_key("reader", "reader", &[]);
    tools_when_ready(&server, &reader, "py__echo").await;
    let failed = |tool: &'static str, arguments: Value| {
        let server = &server;
        let reader = &reader;
        async move {
            let (status, body) = server
                .rpc(
                    Some(reader),
                    "tools/call",
                    json!({"name": tool, "arguments": arguments}),
                )
                .await;
            // A JSON-RPC error, never an HTTP 500 or a hung request.
            assert_eq!(status, 200, "{tool}: {body}");
            assert!(body["error"]["message"].is_string(), "{tool}: {body}");
            reason(&body).to_string()
        }
    };
    // An upstream that never answers: the call ends at call_timeout.
    assert_eq!(
        failed("py__sleep_forever", json!({})).await,
        "upstream_timeout"
    );
    // A 10 MB answer against a 1 MiB limit: refused, not buffered. (Not
    // bigger: on a busy machine the child took longer than the call
    // timeout to make 100 MB.)
    assert_eq!(
        failed("py__big", json!({"size": 10_000_000})).await,
        "upstream_message_too_large"
    );
    // The child dies in the middle of the call; it is restarted.
    assert_eq!(
        failed("py__crash", json!({})).await,
        "upstream_disconnected"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server
            .rpc(
                Some(&reader),
                "tools/call",
                json!({"name": "py__echo", "arguments": {"text": "back"}}),
            )
            .await;
        if body["error"].is_null() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Each failure is in the audit log with its reason.
    let outcomes = server.audit(&["--principal", &reader_id, "--kind", "tool_outcome"]);
    for (tool, code) in [
        ("py__sleep_forever", "upstream_timeout"),
        ("py__big", "upstream_message_too_large"),
        ("py__crash", "upstream_disconnected"),
    ] {
        assert!(
            outcomes
                .iter()
                .any(|r| r["tool"] == tool && r["outcome"] == "error" && r["reason"] == code),
            "{tool}: {outcomes:?}"
        );
    }
}

#[tokio::test]
async fn an_oauth_upstream_gets_gatehouses_own_client_credentials_token() {
    // The upstream: another Gatehouse, an OAuth protected resource with its
    // own authorization server and a client registered for the gateway.
    let inner = Server::start(None);
    let client = inner.cli_json(&["clients", "create", "--name", "gateway", "--role", "reader"]);
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let secret = client["client_secret"].as_str().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{DEFAULT}\n[upstreams.inner]\nscope = \"tools:read\"\nroles = [\"reader\"]\n"),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"inner\"\n\
         url = {:?}\nauth = {{ oauth = {{ issuer = {:?}, client_id = {client_id:?}, client_secret = \"env:INNER_SECRET\" }} }}\n",
        inner.mcp_url(),
        inner.base,
    );
    let outer = Server::start_with_env(dir, Some(&config), &[("INNER_SECRET", &secret)]);
    let (reader_id, reader) = outer.create_key("reader", "reader", &[]);
    tools_when_ready(&outer, &reader, "inner__whoami").await;

    // The inner server sees the gateway's client, never the caller.
    let body = outer.call_tool(&reader, "inner__whoami", json!({})).await;
    assert!(body["error"].is_null(), "{body}");
    let text = body.to_string();
    assert!(text.contains(&client_id), "{text}");
    assert!(!text.contains(&reader_id), "{text}");
    let seen = inner.audit(&["--kind", "authentication"]);
    assert!(
        seen.iter()
            .any(|r| r["credential"] == client_id.as_str() && r["outcome"] == "success"),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|r| r.to_string().contains(&reader_id)),
        "{seen:?}"
    );

    // A wrong secret: the upstream's tools are not served, and the reason
    // names no secret.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{DEFAULT}\n[upstreams.inner]\nscope = \"tools:read\"\nroles = [\"reader\"]\n"),
    )
    .unwrap();
    let wrong = Server::start_with_env(dir, Some(&config), &[("INNER_SECRET", "not-the-secret")]);
    let (_, reader) = wrong.create_key("reader", "reader", &[]);
    let (_, body) = wrong
        .rpc(
            Some(&reader),
            "tools/call",
            json!({"name": "inner__whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(reason(&body), "upstream_unavailable", "{body}");
    assert!(!body.to_string().contains("not-the-secret"), "{body}");
    let log = std::fs::read_to_string(wrong.stderr_path()).unwrap();
    assert!(!log.contains("not-the-secret"));
    assert!(log.contains("invalid_client"), "the log says why");
}

#[tokio::test]
async fn forward_identity_sends_a_short_lived_jwt_signed_by_gatehouse() {
    let Some(python) = python() else { return };
    let server = server_with_upstream_entry(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"reader\"]\n",
        "call_timeout = \"30s\"\nforward_identity = true\n",
    );
    let (reader_id, reader) = server.create_key("reader", "reader", &[]);
    tools_when_ready(&server, &reader, "py__request_meta").await;
    // The caller tries to pass an identity of its own choosing.
    let (_, body) = server
        .rpc(
            Some(&reader),
            "tools/call",
            json!({"name": "py__request_meta", "arguments": {},
                   "_meta": {"io.gatehouse/identity": "forged", "trace": "kept"}}),
        )
        .await;
    assert!(body["error"].is_null(), "{body}");
    let meta: Value =
        serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(meta["trace"], "kept", "{body}");
    let token = meta["io.gatehouse/identity"].as_str().unwrap();
    assert_ne!(token, "forged");

    // It verifies against Gatehouse's JWKS, is for this upstream only, and
    // says who is calling.
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("gatehouse-identity+jwt"));
    let jwks = server.get_json("/oauth/jwks.json").await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["urn:gatehouse:upstream:py"]);
    validation.set_issuer(&[server.base.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["tenant"], "default");
    assert_eq!(claims["roles"], json!(["reader"]));
    assert!(claims.to_string().contains(&reader_id), "{claims}");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    // Not an access token: Gatehouse itself refuses it.
    let (status, _) = server.rpc(Some(token), "tools/list", json!({})).await;
    assert_eq!(status, 401);
}

/// The upstream's resources listed, by an analyst (the python upstream is
/// started in the background).
async fn resources_when_ready(server: &Server, key: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.rpc(Some(key), "resources/list", json!({})).await;
        if body.to_string().contains("memo://team/note") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no upstream resources: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_resource_template_entry_governs_every_uri_it_names() {
    let Some(python) = python() else { return };
    // The section lets analysts read everything py serves; the template's
    // entry keeps what `memo://items/{n}` names for admins.
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
         [resources.\"memo://items/{n}\"]\nscope = \"tools:read\"\nroles = [\"admin\"]\n",
    );
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    let (_, admin) = server.create_key("admin", "admin", &[]);
    resources_when_ready(&server, &analyst).await;
    let read = |key: String, uri: &'static str| {
        let server = &server;
        async move {
            server
                .rpc(Some(&key), "resources/read", json!({"uri": uri}))
                .await
                .1
        }
    };
    let body = read(analyst.clone(), "memo://items/5").await;
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    let body = read(admin.clone(), "memo://items/5").await;
    assert!(body["error"].is_null(), "{body}");
    // A URI that splits a character where a byte-wise match would try
    // (this one panicked the request before): refused like the other. In a
    // 2025-11-25 session (a 2026-07-28 request repeats the URI in an
    // ASCII-only header).
    let session = super::sessions::initialize(&server, &analyst).await;
    let response = server
        .post_legacy(
            &analyst,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 9, "method": "resources/read",
                   "params": {"uri": "memo://items/é"}}),
        )
        .await;
    let body = super::harness::parse_body(&response.text().await.unwrap());
    assert_eq!(reason(&body), "role_not_allowed", "{body}");
    // What the template does not name still follows the section.
    let body = read(analyst.clone(), "memo://team/note").await;
    assert!(body["error"].is_null(), "{body}");
    let denied = server.audit(&["--principal", &analyst_id, "--tool", "memo://items/5"]);
    assert!(
        denied
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "role_not_allowed"),
        "{denied:?}"
    );
}

/// A URI's own entry holds however the URI is spelt: an upstream may read
/// `memo://items/5?` or `memo://items/%35` as `memo://items/5` (the
/// TypeScript SDK matches templates without the query; servers decode
/// escaped letters), so each is decided as that URI too.
#[tokio::test]
async fn a_resource_entry_holds_however_its_uri_is_spelt() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
         [resources.\"memo://items/5\"]\nscope = \"tools:read\"\nroles = [\"admin\"]\n",
    );
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    resources_when_ready(&server, &analyst).await;
    for uri in [
        "memo://items/5",
        "memo://items/5?",
        "memo://items/5?x=1",
        "memo://items/%35",
    ] {
        let (_, body) = server
            .rpc(Some(&analyst), "resources/read", json!({"uri": uri}))
            .await;
        assert_eq!(reason(&body), "role_not_allowed", "{uri}: {body}");
        assert!(body["result"].is_null(), "{uri}: {body}");
    }
    // Another item, however spelt, still follows the section.
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "resources/read",
            json!({"uri": "memo://items/%36"}),
        )
        .await;
    assert!(body["error"].is_null(), "{body}");
    let denied = server.audit(&["--principal", &analyst_id, "--tool", "memo://items/5?"]);
    assert!(
        denied
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "role_not_allowed"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn a_resource_uri_two_upstreams_serve_is_refused_not_routed_to_either() {
    let Some(python) = python() else { return };
    let script = root().join("crates/gatehouse-upstream/tests/upstreams/server.py");
    // A second upstream serving the same URIs (an upstream that lists
    // another's URIs to take over its reads).
    let second = format!(
        "call_timeout = \"30s\"\n\n[[upstreams]]\nname = \"py2\"\ncommand = {:?}\nargs = [{:?}, \"stdio\"]\nconnect_timeout = \"30s\"\n",
        python.display().to_string(),
        script.display().to_string(),
    );
    let server = server_with_upstream_entry(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
         [upstreams.py2]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n",
        &second,
    );
    let (analyst_id, analyst) = server.create_key("analyst", "analyst", &[]);
    // Both must be up, or the one that is would serve the URI alone.
    tools_when_ready(&server, &analyst, "py__echo").await;
    tools_when_ready(&server, &analyst, "py2__echo").await;
    for uri in ["memo://team/note", "memo://items/3"] {
        let (_, body) = server
            .rpc(Some(&analyst), "resources/read", json!({"uri": uri}))
            .await;
        assert_eq!(reason(&body), "upstream_ambiguous", "{uri}: {body}");
        assert!(body["result"].is_null(), "{body}");
        let records = server.audit(&["--principal", &analyst_id, "--tool", uri]);
        assert!(
            records.iter().any(|r| r["kind"] == "tool_decision"
                && r["decision"] == "deny"
                && r["reason"] == "upstream_ambiguous"),
            "{records:?}"
        );
    }
}

/// A tenant that may not read an upstream's resources learned, from "not
/// in your tenant" against "not found", which URIs that upstream lists.
/// An upstream the tenant may not use routes none of its reads now: to it,
/// the URI is one nothing serves.
#[tokio::test]
async fn a_uri_another_tenants_upstream_lists_reads_as_one_nothing_serves() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n\
         [tenants.acme]\ntools = [\"whoami\"]\n[tenants.globex]\n",
    );
    let (_, globex) = server.create_key("globex-agent", "analyst", &["--tenant", "globex"]);
    let (acme_id, acme) = server.create_key("acme-agent", "analyst", &["--tenant", "acme"]);
    resources_when_ready(&server, &globex).await;
    let read = |uri: &'static str| {
        let server = &server;
        let acme = &acme;
        async move {
            let (status, body) = server
                .rpc(Some(acme), "resources/read", json!({"uri": uri}))
                .await;
            let mut error = body["error"].clone();
            // The URI itself is the only difference allowed.
            error["data"]["uri"] = Value::Null;
            error["data"]["tool"] = Value::Null;
            error["message"] = Value::String(
                error["message"]
                    .as_str()
                    .unwrap_or_default()
                    .replace(uri, "URI"),
            );
            (status, error)
        }
    };
    let listed = read("memo://team/note").await;
    let unlisted = read("zzz://nothing/here").await;
    assert_eq!(listed, unlisted);
    assert_eq!(listed.1["code"], -32602, "{listed:?}");
    let records = server.audit(&["--principal", &acme_id, "--tool", "memo://team/note"]);
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "deny" && r["reason"] == "unknown_tool"),
        "{records:?}"
    );
}

/// Admission's scope check (the 403 step-up challenge) applies the rule the
/// gateway applies to an upstream tool: its upstream's section.
#[tokio::test]
async fn an_upstream_tools_scope_is_checked_against_its_section_at_admission() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:write\"\nroles = [\"reader\"]\n",
    );
    let token = |role: &str, scope: &str| {
        let client = server.cli_json(&[
            "clients", "create", "--name", "bot", "--role", role, "--scopes", scope,
        ]);
        let id = client["client_id"].as_str().unwrap().to_string();
        let secret = client["client_secret"].as_str().unwrap().to_string();
        let server = &server;
        async move {
            let (status, _, body) = super::oauth::token_request(
                server,
                &[("grant_type", "client_credentials")],
                Some((&id, &secret)),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["access_token"].as_str().unwrap().to_string()
        }
    };
    let (_, key) = server.create_key("reader", "reader", &[]);
    tools_when_ready(&server, &key, "py__echo").await;
    let call = json!({"name": "py__echo", "arguments": {"text": "hi"}});

    // An admin holding the section's scope (not tools:admin) is allowed,
    // as the section says, not refused as for an unnamed built-in tool.
    let admin = token("admin", "tools:write").await;
    let (status, body) = server.rpc(Some(&admin), "tools/call", call.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["error"].is_null(), "{body}");

    // A reader's token without the section's scope gets the step-up
    // challenge naming it, not a plain JSON-RPC denial.
    let reader = token("reader", "tools:read").await;
    let (status, body) = server.rpc(Some(&reader), "tools/call", call).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason(&body), "insufficient_scope", "{body}");
    assert!(body.to_string().contains("tools:write"), "{body}");
}

/// Routing a read needs every upstream's resources, before the policy and
/// the rate limits: a caller's burst of reads must not make Gatehouse list
/// the upstreams once per read (the listing is kept for a moment).
#[tokio::test]
async fn a_burst_of_reads_lists_the_upstreams_resources_a_few_times_not_once_per_read() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n",
    );
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    resources_when_ready(&server, &analyst).await;
    let settled = || said_settled(&server, "upstream listed its resources");
    let before = settled().await;
    let reads = 20;
    for _ in 0..reads {
        let (_, body) = server
            .rpc(
                Some(&analyst),
                "resources/read",
                json!({"uri": "memo://team/note"}),
            )
            .await;
        assert!(body["error"].is_null(), "{body}");
    }
    let listings = settled().await - before;
    assert!(
        listings <= reads / 4,
        "{listings} listings of the upstream's resources for {reads} reads"
    );
}

/// How many times the upstream has said `line` on stderr (Gatehouse logs
/// it), once the count stops moving: the child's stderr reaches the log a
/// moment after its answer.
async fn said_settled(server: &Server, line: &str) -> usize {
    let said = || {
        std::fs::read_to_string(server.stderr_path())
            .unwrap_or_default()
            .matches(line)
            .count()
    };
    let mut count = said();
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = said();
        if now == count {
            break;
        }
        count = now;
    }
    count
}

/// A call of a name the section covers but the upstream does not list
/// (`py__nope1`, `py__nope2`, …) listed the whole upstream each time, to
/// check its pin, before any rate limit: a caller could keep the upstream
/// listing. A connection reviewed moments ago is not listed again (and
/// rate limits are now checked before the pins).
#[tokio::test]
async fn calls_of_names_the_upstream_does_not_list_do_not_make_it_list_each_time() {
    let Some(python) = python() else { return };
    let server = server_with_upstream(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n",
    );
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    tools_when_ready(&server, &analyst, "py__echo").await;
    let settled = || said_settled(&server, "upstream listed its tools");
    let before = settled().await;
    let calls = 30;
    let mut reasons = Vec::new();
    for i in 0..calls {
        let (_, body) = server
            .rpc(
                Some(&analyst),
                "tools/call",
                json!({"name": format!("py__nope{i}"), "arguments": {}}),
            )
            .await;
        reasons.push(reason(&body).to_string());
    }
    let listings = settled().await - before;
    assert!(
        listings <= 2,
        "{listings} listings of the upstream's tools for {calls} calls: {reasons:?}"
    );
    assert!(
        reasons.iter().all(|r| r == "tool_definition_unreviewed"),
        "{reasons:?}"
    );
}

/// Two tenants, acme and globex, at one HTTP upstream with two slots (a
/// tenant's share is one): the setup of the tests below.
/// The (first) upstream's slots in use, as an admin sees them.
pub(super) async fn in_flight(server: &Server, admin: &str) -> u64 {
    let response = server
        .http
        .get(format!("{}/admin/upstreams", server.base))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["upstreams"][0]["in_flight"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

struct TwoTenants {
    _upstream: PyHttp,
    server: Server,
    admin: String,
    acme: String,
    globex: String,
}

impl TwoTenants {
    /// The upstream started with `options`; ready once globex sees its tools.
    async fn start(python: &Path, options: &[&str]) -> TwoTenants {
        let upstream = PyHttp::start_with(python, options);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.toml"),
            format!(
                "{DEFAULT}\n[upstreams.py]\nscope = \"tools:read\"\nroles = [\"reader\"]\n\
                 [tenants.default]\n[tenants.acme]\n[tenants.globex]\n"
            ),
        )
        .unwrap();
        let config = format!(
            "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"py\"\nurl = {:?}\n\
             max_concurrent_calls = 2\nconnect_timeout = \"30s\"\ncall_timeout = \"60s\"\n",
            upstream.url
        );
        let server = Server::start_in(dir, Some(&config));
        let admin = server.admin_key.clone().unwrap();
        let (_, acme) = server.create_key("acme-agent", "reader", &["--tenant", "acme"]);
        let (_, globex) = server.create_key("globex-agent", "reader", &["--tenant", "globex"]);
        tools_when_ready(&server, &globex, "py__echo").await;
        TwoTenants {
            _upstream: upstream,
            server,
            admin,
            acme,
            globex,
        }
    }

    async fn in_flight(&self) -> u64 {
        in_flight(&self.server, &self.admin).await
    }

    /// acme's `first` and `second` requests never answer (`what`); while
    /// they wait, they hold one slot, not both, and globex's call is
    /// answered at once.
    async fn globex_is_not_starved<A: std::fmt::Debug, B: std::fmt::Debug>(
        &self,
        what: &str,
        first: impl std::future::Future<Output = A>,
        second: impl std::future::Future<Output = B>,
    ) {
        let globex_call = async {
            for _ in 0..200 {
                if self.in_flight().await >= 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            // Both of acme's requests are sent by now; its second waits
            // for acme's own slot, not the upstream's last one.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(self.in_flight().await, 1, "acme's {what} hold every slot");
            self.server
                .call_tool(&self.globex, "py__echo", json!({"text": "not starved"}))
                .await
        };
        let body = tokio::select! {
            answer = first => panic!("acme's {what} that never answer were answered: {answer:?}"),
            answer = second => panic!("acme's {what} that never answer were answered: {answer:?}"),
            body = tokio::time::timeout(Duration::from_secs(20), globex_call) => {
                body.unwrap_or_else(|_| panic!("globex's call waited behind acme's {what}"))
            }
        };
        assert!(body["error"].is_null(), "{body}");
        assert_eq!(
            body["result"]["content"][0]["text"], "not starved",
            "{body}"
        );
    }
}

/// With tenancy on, one tenant's calls hold at most their share of an
/// upstream's slots: acme's two calls that never answer (the flood) leave
/// the upstream's second slot to globex, whose call is answered at once.
#[tokio::test]
async fn one_tenants_hanging_calls_leave_room_for_another_tenant() {
    let Some(python) = python() else { return };
    let at = TwoTenants::start(&python, &[]).await;
    let first = at
        .server
        .call_tool(&at.acme, "py__sleep_forever", json!({}));
    let second = at
        .server
        .call_tool(&at.acme, "py__sleep_forever", json!({}));
    at.globex_is_not_starved("calls", first, second).await;
}

/// Without tenancy too, one caller's calls hold at most its share of an
/// upstream's slots (a quarter by default; with four slots, one): the two
/// agents of one person share it (dana's second agent waits behind her
/// first), while another agent's call is answered at once.
#[tokio::test]
async fn one_callers_hanging_calls_leave_room_for_another_caller() {
    let Some(python) = python() else { return };
    let upstream = PyHttp::start_with(&python, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!("{DEFAULT}\n[upstreams.py]\nscope = \"tools:read\"\nroles = [\"reader\"]\n"),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n\n[[upstreams]]\nname = \"py\"\nurl = {:?}\n\
         max_concurrent_calls = 4\nconnect_timeout = \"30s\"\ncall_timeout = \"60s\"\n",
        upstream.url
    );
    let server = Server::start_in(dir, Some(&config));
    let admin = server.admin_key.clone().unwrap();
    let (_, first_agent) = server.create_key("dana-1", "reader", &["--owner", "dana"]);
    let (_, second_agent) = server.create_key("dana-2", "reader", &["--owner", "dana"]);
    let (_, other) = server.create_key("other-agent", "reader", &[]);
    tools_when_ready(&server, &other, "py__echo").await;
    let in_flight = || in_flight(&server, &admin);
    let first = server.call_tool(&first_agent, "py__sleep_forever", json!({}));
    let second = server.call_tool(&second_agent, "py__sleep_forever", json!({}));
    let other_call = async {
        for _ in 0..200 {
            if in_flight().await >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(in_flight().await, 1, "dana's two agents hold two slots");
        server
            .call_tool(&other, "py__echo", json!({"text": "not starved"}))
            .await
    };
    let body = tokio::select! {
        answer = first => panic!("a call that never answers was answered: {answer:?}"),
        answer = second => panic!("a call that never answers was answered: {answer:?}"),
        body = tokio::time::timeout(Duration::from_secs(20), other_call) => {
            body.unwrap_or_else(|_| panic!("the other agent's call waited behind dana's"))
        }
    };
    assert!(body["error"].is_null(), "{body}");
    assert_eq!(
        body["result"]["content"][0]["text"], "not starved",
        "{body}"
    );
}

/// Listings take a tenant's share of an upstream's slots like calls: one
/// tenant's `tools/list` requests, stuck at an upstream whose listing does
/// not answer, cannot hold every slot while another tenant's calls wait.
#[tokio::test]
async fn one_tenants_hanging_listings_leave_room_for_another_tenant() {
    let Some(python) = python() else { return };
    let hang = tempfile::tempdir().unwrap();
    let hanging = hang.path().join("hang");
    let at = TwoTenants::start(
        &python,
        &["--hang-listings-while", hanging.to_str().unwrap()],
    )
    .await;
    std::fs::write(&hanging, "").unwrap();
    let first = at.server.rpc(Some(&at.acme), "tools/list", json!({}));
    let second = at.server.rpc(Some(&at.acme), "tools/list", json!({}));
    at.globex_is_not_starved("listings", first, second).await;
    // The upstream answers listings again: nothing is left waiting.
    std::fs::remove_file(&hanging).unwrap();
}

/// A caller's `resources/subscribe` takes its tenant's share of the
/// upstream's slots like a read: one tenant's subscriptions, stuck at an
/// upstream whose subscribe does not answer, cannot hold every slot while
/// another tenant's calls wait.
#[tokio::test]
async fn one_tenants_hanging_subscriptions_leave_room_for_another_tenant() {
    let Some(python) = python() else { return };
    let hang = tempfile::tempdir().unwrap();
    let hanging = hang.path().join("hang");
    let at = TwoTenants::start(
        &python,
        &[
            "--legacy",
            "--hang-subscriptions-while",
            hanging.to_str().unwrap(),
        ],
    )
    .await;
    let session = super::sessions::initialize(&at.server, &at.acme).await;
    std::fs::write(&hanging, "").unwrap();
    let subscribe = |n: u32| {
        let at = &at;
        let session = &session;
        async move {
            let response = at
                .server
                .post_legacy(
                    &at.acme,
                    Some(session),
                    json!({"jsonrpc": "2.0", "id": n, "method": "resources/subscribe",
                           "params": {"uri": format!("memo://items/{n}")}}),
                )
                .await;
            response.text().await.unwrap()
        }
    };
    at.globex_is_not_starved("subscriptions", subscribe(1), subscribe(2))
        .await;
    std::fs::remove_file(&hanging).unwrap();
}

/// An upstream that has not listed its resources yet (down since start,
/// restarting) may serve any URI: no read is routed to another upstream
/// meanwhile, which could copy its URIs or have a template broad enough
/// to name them (and would get the read, and the caller's identity).
#[tokio::test]
async fn no_resource_read_is_routed_while_an_upstream_has_never_listed() {
    let Some(python) = python() else { return };
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = server_with_upstream_entry(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"analyst\"]\n",
        &format!(
            "call_timeout = \"30s\"\n\n[[upstreams]]\nname = \"crm\"\n\
             url = \"http://127.0.0.1:{closed}/mcp\"\nconnect_timeout = \"1s\"\ncall_timeout = \"2s\"\n"
        ),
    );
    let (_, analyst) = server.create_key("analyst", "analyst", &[]);
    tools_when_ready(&server, &analyst, "py__echo").await;
    let (_, body) = server
        .rpc(
            Some(&analyst),
            "resources/read",
            json!({"uri": "memo://team/note"}),
        )
        .await;
    assert_eq!(reason(&body), "upstream_unavailable", "{body}");
    assert!(!body.to_string().contains("the team note"), "{body}");
}
