//! Starts the real binary and speaks to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
pub const MODERN: &str = "2026-07-28";
pub const LEGACY: &str = "2025-11-25";

pub struct Server {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub base: String,
    pub admin_key: Option<String>,
    /// The admin listener's `/metrics` URL, when `[metrics]` is on.
    pub metrics_url: Option<String>,
    pub http: reqwest::Client,
    config: Option<PathBuf>,
    /// Extra environment for the server and its CLI commands.
    env: Vec<(String, String)>,
}

impl Server {
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Starts a server with an optional configuration file body.
    pub fn start(config: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config)
    }

    pub fn start_in(dir: tempfile::TempDir, config: Option<&str>) -> Server {
        Self::start_with_env(dir, config, &[])
    }

    pub fn start_with_env(
        dir: tempfile::TempDir,
        config: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let config_path = config.map(|body| {
            let path = dir.path().join("gatehouse.toml");
            std::fs::write(&path, body).unwrap();
            path
        });
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("stderr.log"))
            .unwrap();
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--json")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env_remove("GATEHOUSE_CONFIG")
            .env_remove("GATEHOUSE_PEPPER")
            .env_remove("USER")
            .env_remove("SUDO_USER")
            .env("GATEHOUSE_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(path) = &config_path {
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut admin_key = None;
        let (base, metrics_url) = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("server exited before listening:\n{log}");
            }
            let event: Value = serde_json::from_str(&line).unwrap();
            match event["event"].as_str() {
                // Standard output is a pipe here, not a terminal: the
                // secrets are in the file the event names, never printed.
                Some("first_run") => {
                    if event.get("api_key").is_some() || event["user"].get("password").is_some() {
                        // Not left running after the test fails.
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("a secret printed on a pipe: {event}");
                    }
                    if let Some(file) = event["credentials_file"].as_str() {
                        let written: Value =
                            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
                        admin_key = written["api_key"].as_str().map(str::to_string);
                    }
                }
                Some("listening") => {
                    break (
                        format!("http://{}", event["address"].as_str().unwrap()),
                        event["metrics_url"].as_str().map(str::to_string),
                    );
                }
                _ => {}
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Server {
            dir,
            child,
            base,
            admin_key,
            metrics_url,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            config: config_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The configuration file the server was started with, if any.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// Runs a CLI subcommand against this server's store.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.cli_with_env(args, &[], stdin)
    }

    /// Runs a CLI subcommand with `env` set on top of the server's.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut command = Command::new(BIN);
        // `--data-dir` and `--config` are global: first, so that a command
        // ending in `-- TOOL` reads as written.
        command.arg("--data-dir").arg(self.data_dir());
        if let Some(path) = &self.config {
            command.arg("--config").arg(path);
        }
        command
            .args(args)
            .env_remove("GATEHOUSE_CONFIG")
            .env_remove("GATEHOUSE_PEPPER")
            // The operator is the account of the user id; a USER or
            // SUDO_USER the test run happens to have would annotate it.
            .env_remove("USER")
            .env_remove("SUDO_USER")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().unwrap();
            if let Some(input) = stdin {
                pipe.write_all(input.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }

    /// Runs a CLI subcommand that must succeed with `--json`; returns its JSON.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Creates a key with `role`; returns (id, key).
    pub fn create_key(&self, name: &str, role: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["keys", "create", "--name", name, "--role", role];
        args.extend_from_slice(extra);
        let v = self.cli_json(&args);
        (
            v["id"].as_str().unwrap().to_string(),
            v["key"].as_str().unwrap().to_string(),
        )
    }

    /// Audit records as JSON lines (oldest first).
    pub fn audit(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "query", "--json"];
        args.extend_from_slice(filters);
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// GETs `path` (relative to the server) and returns the JSON of a 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// A 2025-11-25 request (the protocol with `initialize` and sessions),
    /// in the session `session` when given.
    pub async fn post_legacy(
        &self,
        key: &str,
        session: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.mcp_url())
            .bearer_auth(key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", LEGACY);
        if let Some(id) = session {
            request = request.header("mcp-session-id", id);
        }
        request.json(&body).send().await.unwrap()
    }

    /// A stateless (2026-07-28) request; returns (status, body).
    pub async fn rpc(&self, key: Option<&str>, method: &str, params: Value) -> (u16, Value) {
        self.rpc_with_headers(key, method, params, &[]).await
    }

    /// [`Self::rpc`], with these headers too (`Mcp-Param-*`, say).
    pub async fn rpc_with_headers(
        &self,
        key: Option<&str>,
        method: &str,
        params: Value,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut params = params;
        // Keys the caller put in `_meta` (an operation token) stay.
        let mut meta = params["_meta"].as_object().cloned().unwrap_or_default();
        meta.insert(
            "io.modelcontextprotocol/protocolVersion".into(),
            json!(MODERN),
        );
        // Capabilities the caller declared stay too.
        meta.entry("io.modelcontextprotocol/clientCapabilities")
            .or_insert(json!({}));
        params["_meta"] = Value::Object(meta);
        let mut request = self
            .http
            .post(self.mcp_url())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", method);
        if method == "tools/call" || method == "prompts/get" {
            request = request.header("mcp-name", params["name"].as_str().unwrap_or_default());
        }
        if method == "resources/read" {
            request = request.header("mcp-name", params["uri"].as_str().unwrap_or_default());
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let response = request.json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, parse_body(&text))
    }

    pub async fn call_tool(&self, key: &str, tool: &str, arguments: Value) -> Value {
        let (status, body) = self
            .rpc(
                Some(key),
                "tools/call",
                json!({"name": tool, "arguments": arguments}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn tool_names(&self, key: &str) -> Vec<String> {
        let (status, body) = self.rpc(Some(key), "tools/list", json!({})).await;
        assert_eq!(status, 200, "{body}");
        body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON body, or the last JSON-RPC message of an SSE body.
pub fn parse_body(text: &str) -> Value {
    if let Ok(v) = serde_json::from_str(text) {
        return v;
    }
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("jsonrpc").is_some())
        .unwrap_or(Value::Null)
}
