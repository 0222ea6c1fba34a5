//! Prerequisites (a Python venv with the MCP SDK, npx), loud skipping, and
//! helpers to run the test upstream.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gatehouse_upstream::{ListChanged, UpstreamConfig, UpstreamSet};

/// The version the repository's Python interop tests pin (tests/interop/python/run.sh).
const MCP_VERSION: &str = "2.3.0";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn server_py() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/upstreams/server.py")
        .display()
        .to_string()
}

/// Says loudly that a test did not run (and lists it for scripts/test);
/// with CI=true a missing prerequisite is a failure.
pub fn skip(what: &str, reason: &str) {
    use std::io::Write;
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}: {reason}; CI=true, so this test must run");
    }
    let _ = writeln!(std::io::stderr(), "!!! SKIPPING {what}: {reason}");
    if let Ok(path) = std::env::var("GATEHOUSE_SKIPPED")
        && let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path)
    {
        let _ = writeln!(file, "gatehouse-upstream {what}: {reason}");
    }
}

fn venv_has_sdk(python: &Path) -> bool {
    Command::new(python)
        .args([
            "-c",
            &format!(
                "import mcp, importlib.metadata as m, sys; sys.exit(0 if m.version('mcp') == '{MCP_VERSION}' else 1)"
            ),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The venv's python with the MCP SDK, installing it into `.tools/pyvenv`
/// (as tests/interop/python/run.sh does) when missing. `None`: skipped.
pub fn python(what: &str) -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let venv = root().join(".tools/pyvenv");
        let python = venv.join("bin/python");
        if venv_has_sdk(&python) {
            return Ok(python);
        }
        if Command::new("python3").arg("--version").output().is_err() {
            return Err("python3 is not installed".into());
        }
        std::fs::create_dir_all(root().join(".tools")).map_err(|e| e.to_string())?;
        // Several test binaries may get here at once.
        let lock = File::create(root().join(".tools/pyvenv.lock")).map_err(|e| e.to_string())?;
        lock.lock().map_err(|e| e.to_string())?;
        if venv_has_sdk(&python) {
            return Ok(python);
        }
        eprintln!("gatehouse-upstream tests: installing the MCP SDK (mcp=={MCP_VERSION}, from PyPI) into {}", venv.display());
        let created = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
        if !created.is_ok_and(|s| s.success()) {
            return Err("python3 cannot create a virtual environment".into());
        }
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("mcp=={MCP_VERSION}"))
            .status();
        if !installed.is_ok_and(|s| s.success()) || !venv_has_sdk(&python) {
            return Err(format!("pip could not install mcp=={MCP_VERSION}"));
        }
        Ok(python)
    });
    match found {
        Ok(python) => Some(python.clone()),
        Err(reason) => {
            skip(what, reason);
            None
        }
    }
}

/// `npx`, or `None` after skipping.
pub fn npx(what: &str) -> Option<&'static str> {
    let ok = Command::new("npx")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some("npx")
    } else {
        skip(what, "npx (node/npm) is not installed");
        None
    }
}

/// A stdio entry running the test server.
pub fn py_stdio(python: &Path, name: &str, extra: &[&str]) -> UpstreamConfig {
    let script = server_py();
    let mut args = vec![script.as_str(), "stdio"];
    args.extend_from_slice(extra);
    let mut config = UpstreamConfig::stdio(name, &python.display().to_string(), &args);
    config.call_timeout = Duration::from_secs(20);
    config.connect_timeout = Duration::from_secs(20);
    config
}

/// The test server over Streamable HTTP, stopped on drop.
pub struct PyHttp {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl PyHttp {
    pub fn start(python: &Path, extra: &[&str]) -> PyHttp {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let child = Command::new(python)
            .arg(server_py())
            .arg("http")
            .arg(&port_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("GATEHOUSE_TEST_VERBOSE").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let started = Instant::now();
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.trim().to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the HTTP test server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let url = format!("http://127.0.0.1:{port}/mcp");
        // The port is chosen before uvicorn binds it: wait until it listens.
        while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the HTTP test server does not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PyHttp {
            child,
            url,
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

pub fn start(configs: Vec<UpstreamConfig>) -> UpstreamSet {
    UpstreamSet::start(configs, None).unwrap()
}

/// Waits (bounded) for an event matching `pred`.
pub async fn wait_change(
    rx: &mut tokio::sync::broadcast::Receiver<ListChanged>,
    pred: impl Fn(&ListChanged) -> bool,
) -> ListChanged {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(event) if pred(&event) => return event,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("change channel closed: {e}"),
            }
        }
    })
    .await
    .expect("no list-changed event within 20 s")
}

/// The text of the first content block of a tool result.
pub fn text(result: &gatehouse_upstream::model::CallToolResult) -> String {
    let value = serde_json::to_value(result).unwrap();
    value["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
