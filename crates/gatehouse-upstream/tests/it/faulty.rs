//! Servers that misbehave: invalid JSON, silence, nobody listening, a child
//! that writes garbage, and an upstream that echoes our credential back.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_upstream::{HealthState, SecretRef, UpstreamAuth, UpstreamConfig, UpstreamSet};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::{py_stdio, python, text};

/// A raw HTTP/1.1 server: `respond` gets the request (head and body) and
/// returns the whole response, or `None` to keep the connection silent.
async fn raw_server(respond: fn(&str) -> Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if request.len() < end + 4 + length {
                        continue;
                    }
                    match respond(&text) {
                        Some(response) => {
                            let _ = socket.write_all(response.as_bytes()).await;
                            let _ = socket.shutdown().await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                    return;
                }
            });
        }
    });
    format!("http://{addr}/mcp")
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn quick(name: &str, url: &str) -> UpstreamConfig {
    let mut config = UpstreamConfig::http(name, url);
    config.connect_timeout = Duration::from_millis(300);
    config.call_timeout = Duration::from_millis(300);
    config
}

async fn settled(set: &UpstreamSet, name: &str) -> gatehouse_upstream::Health {
    for _ in 0..200 {
        let health = set.get(name).unwrap().health();
        if health.state == HealthState::Failing {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never failed: {:?}", set.get(name).unwrap().health());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstreams_give_typed_errors_and_spare_the_others() {
    let garbage =
        raw_server(|_| Some(response("200 OK", "application/json", "{this is not json"))).await;
    let silent = raw_server(|_| None).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", listener.local_addr().unwrap())
    };
    let mut configs = vec![
        quick("garbage", &garbage),
        quick("silent", &silent),
        quick("closed", &closed),
    ];
    let mut junk_child =
        UpstreamConfig::stdio("junk", "sh", &["-c", "echo '{{{ not json'; exec sleep 60"]);
    junk_child.connect_timeout = Duration::from_millis(500);
    configs.push(junk_child);
    let healthy = python("faulty upstreams test (healthy neighbour)");
    if let Some(python) = &healthy {
        configs.push(py_stdio(python, "good", &[]));
    }
    let set = UpstreamSet::start(configs, None).unwrap();

    let expected = [
        ("garbage", "upstream_protocol_error"),
        ("silent", "upstream_timeout"),
        ("closed", "upstream_unavailable"),
        ("junk", "upstream_timeout"),
    ];
    for (name, code) in expected {
        let health = settled(&set, name).await;
        assert_eq!(
            health.last_error.as_ref().unwrap().code,
            code,
            "{name}: {health:?}"
        );
        let started = Instant::now();
        let error = set
            .get(name)
            .unwrap()
            .call_tool(None, "echo", None, None)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "upstream_unavailable", "{name}: {error:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{name} hung");
    }

    if let Some(_python) = healthy {
        let good = set.get("good").unwrap();
        let echoed = good
            .call_tool(
                None,
                "echo",
                json!({"text": "fine"}).as_object().cloned(),
                None,
            )
            .await
            .unwrap();
        assert_eq!(text(&echoed), "fine");
    }
    set.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_opens_after_repeated_failures() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", listener.local_addr().unwrap())
    };
    let mut config = quick("closed", &closed);
    config.breaker_failures = 2;
    config.breaker_cooldown = Duration::from_secs(3600);
    let set = UpstreamSet::start(vec![config], None).unwrap();
    settled(&set, "closed").await;
    let closed = set.get("closed").unwrap();
    for _ in 0..2 {
        let error = closed.call_tool(None, "x", None, None).await.unwrap_err();
        assert!(!error.to_string().contains("circuit"), "{error}");
    }
    let error = closed.call_tool(None, "x", None, None).await.unwrap_err();
    assert!(
        error.to_string().contains("circuit breaker open"),
        "{error}"
    );
    assert_eq!(
        closed.health().breaker,
        gatehouse_upstream::BreakerState::Open
    );
    set.shutdown().await;
}

/// One tenant's failures (here: no secret for it) open that tenant's
/// breaker only; another tenant still reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_failures_do_not_open_the_breaker_for_another() {
    struct AcmeOnly;
    #[async_trait::async_trait]
    impl gatehouse_upstream::TenantSecrets for AcmeOnly {
        async fn resolve(
            &self,
            tenant: &str,
            _name: &str,
        ) -> Result<Option<gatehouse_upstream::Secret>, gatehouse_upstream::SecretError> {
            Ok((tenant == "acme").then(|| gatehouse_upstream::Secret::new("acme-token")))
        }
    }
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/mcp", listener.local_addr().unwrap())
    };
    let mut config = quick("crm", &closed);
    config.auth = UpstreamAuth::Bearer(SecretRef::Tenant("crm".into()));
    config.breaker_failures = 2;
    config.breaker_cooldown = Duration::from_secs(3600);
    let set = UpstreamSet::start(vec![config], Some(Arc::new(AcmeOnly))).unwrap();
    let crm = set.get("crm").unwrap();
    for _ in 0..3 {
        let _ = crm.call_tool(Some("globex"), "x", None, None).await;
    }
    let error = crm
        .call_tool(Some("globex"), "x", None, None)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("circuit breaker open"),
        "{error}"
    );
    assert_eq!(crm.health().breaker, gatehouse_upstream::BreakerState::Open);
    // acme's own connection fails on its own (nobody listens), never on
    // globex's breaker.
    let error = crm
        .call_tool(Some("acme"), "x", None, None)
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("circuit"), "{error}");
    set.shutdown().await;
}

/// Collects everything logged, to search it for the secret.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const TOKEN: &str = "tok-SECRET-8f3a9c1d77";

// Current-thread runtime: every task runs here, under the capturing subscriber.
#[tokio::test]
async fn a_reflected_credential_appears_in_no_error_and_no_log() {
    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Answers 400 with every request header in the body, the credential included.
    let url = raw_server(|request| {
        let head = request
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_owned();
        Some(response("400 Bad Request", "text/plain", &head))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, format!("{TOKEN}\n")).unwrap();
    let mut config = quick("echoer", &url);
    config.auth = UpstreamAuth::Bearer(SecretRef::File(secret_file));
    let mut header = quick("keyed", &url);
    header.auth = UpstreamAuth::Header {
        name: "X-Api-Key".into(),
        value: SecretRef::File(dir.path().join("token")),
    };
    let mut missing = quick("missing", &url);
    missing.auth = UpstreamAuth::Bearer(SecretRef::Env("GATEHOUSE_TEST_UNSET_VARIABLE".into()));
    let set = UpstreamSet::start(vec![config, header, missing], None).unwrap();

    for name in ["echoer", "keyed", "missing"] {
        let health = settled(&set, name).await;
        let error = set
            .get(name)
            .unwrap()
            .call_tool(None, "echo", None, None)
            .await
            .unwrap_err();
        for text in [
            format!("{health:?}"),
            serde_json::to_string(&health).unwrap(),
            error.to_string(),
            format!("{error:?}"),
        ] {
            assert!(
                !text.contains(TOKEN),
                "{name}: the credential leaked: {text}"
            );
        }
        if name != "missing" {
            // The server did echo it, so the scrubber had something to remove.
            let message = health.last_error.unwrap().message;
            assert!(message.contains("[redacted]"), "{name}: {message}");
        }
    }
    set.shutdown().await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty());
    assert!(
        !logs.contains(TOKEN),
        "the credential is in the log:\n{logs}"
    );
}

/// The base URL of the metadata server below, and whether anything asked
/// it for a token.
static METADATA_BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static TOKEN_REQUESTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Serves an OAuth upstream's metadata: the protected resource metadata
/// names another resource for `/bad/mcp`; for `/good/mcp` it names the
/// right one, and the authorization server's metadata another issuer.
fn lying_metadata(request: &str) -> Option<String> {
    let base = METADATA_BASE.get().cloned().unwrap_or_default();
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let json =
        |body: serde_json::Value| Some(response("200 OK", "application/json", &body.to_string()));
    match path {
        "/.well-known/oauth-protected-resource/bad/mcp" => json(json!({
            "resource": "https://evil.example/mcp",
            "authorization_servers": [base],
        })),
        "/.well-known/oauth-protected-resource/good/mcp" => json(json!({
            "resource": format!("{base}/good/mcp"),
            "authorization_servers": [base],
        })),
        // The upstream names an authorization server of its choosing.
        "/.well-known/oauth-protected-resource/chooser/mcp" => json(json!({
            "resource": format!("{base}/chooser/mcp"),
            "authorization_servers": [format!("{base}/attacker")],
        })),
        "/.well-known/oauth-authorization-server/attacker" => json(json!({
            "issuer": format!("{base}/attacker"),
            "token_endpoint": format!("{base}/token"),
        })),
        "/.well-known/oauth-authorization-server" => json(json!({
            "issuer": "https://evil.example",
            "token_endpoint": format!("{base}/token"),
        })),
        "/token" => {
            TOKEN_REQUESTED.store(true, std::sync::atomic::Ordering::SeqCst);
            json(json!({"access_token": "x", "token_type": "Bearer"}))
        }
        _ => Some(response("404 Not Found", "text/plain", "")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_oauth_metadata_gets_no_secret() {
    let url = raw_server(lying_metadata).await;
    let base = url.trim_end_matches("/mcp").to_string();
    METADATA_BASE.set(base.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "never-sent-3c9e\n").unwrap();
    let oauth = || UpstreamAuth::OAuth {
        client_id: "gatehouse".into(),
        client_secret: SecretRef::File(secret_file.clone()),
        scope: None,
        issuer: base.clone(),
    };
    let mut bad = quick("bad", &format!("{base}/bad/mcp"));
    bad.auth = oauth();
    let mut good = quick("good", &format!("{base}/good/mcp"));
    good.auth = oauth();
    let mut chooser = quick("chooser", &format!("{base}/chooser/mcp"));
    chooser.auth = oauth();
    let set = UpstreamSet::start(vec![bad, good, chooser], None).unwrap();
    for (name, expected) in [
        (
            "bad",
            "protected resource metadata is for \"https://evil.example/mcp\"",
        ),
        ("good", "names issuer \"https://evil.example\""),
        ("chooser", "does not name the configured issuer"),
    ] {
        let health = settled(&set, name).await;
        let error = health.last_error.unwrap();
        assert_eq!(error.code, "upstream_credentials", "{name}: {error:?}");
        assert!(
            error.message.contains(expected),
            "{name}: {}",
            error.message
        );
        assert!(!error.message.contains("never-sent-3c9e"));
    }
    assert!(
        !TOKEN_REQUESTED.load(std::sync::atomic::Ordering::SeqCst),
        "the token endpoint of a server that lied was asked"
    );
    set.shutdown().await;
}

/// The base URL of the server below.
static HUGE_BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// An OAuth upstream whose authorization server gives a token that never
/// expires (`expires_in` = u64::MAX), and whose MCP endpoint is missing.
fn huge_lifetime(request: &str) -> Option<String> {
    let base = HUGE_BASE.get().cloned().unwrap_or_default();
    let path = request.split_whitespace().nth(1).unwrap_or_default();
    let json =
        |body: serde_json::Value| Some(response("200 OK", "application/json", &body.to_string()));
    match path {
        "/.well-known/oauth-protected-resource/mcp" => json(json!({
            "resource": format!("{base}/mcp"),
            "authorization_servers": [base],
        })),
        "/.well-known/oauth-authorization-server" => json(json!({
            "issuer": base,
            "token_endpoint": format!("{base}/token"),
        })),
        "/token" => json(json!({
            "access_token": "x", "token_type": "Bearer", "expires_in": u64::MAX,
        })),
        _ => Some(response("404 Not Found", "text/plain", "")),
    }
}

/// A lifetime past the clock's range once panicked the connection's
/// supervisor, which then never tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_never_expires_does_not_stop_the_connection() {
    // A subscriber of its own, as `a_reflected_credential_appears_in_no_error_and_no_log`
    // has: a log line this test's connection writes first, with no
    // subscriber, could leave tracing's per-callsite cache saying "nobody
    // listens" while that test listens on its thread.
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(LogBuffer::default())
            .with_max_level(tracing::Level::TRACE)
            .finish(),
    );
    let url = raw_server(huge_lifetime).await;
    HUGE_BASE
        .set(url.trim_end_matches("/mcp").to_string())
        .unwrap();
    let mut config = quick("huge", &url);
    config.auth = UpstreamAuth::OAuth {
        client_id: "gatehouse".into(),
        client_secret: SecretRef::Env("PATH".into()),
        scope: None,
        issuer: HUGE_BASE.get().unwrap().clone(),
    };
    let set = UpstreamSet::start(vec![config], None).unwrap();
    // The token is taken; the connection then fails on the missing endpoint
    // (and is retried), instead of hanging in "connecting" forever.
    let health = settled(&set, "huge").await;
    let error = health.last_error.unwrap();
    assert_ne!(error.code, "upstream_credentials", "{error:?}");
    set.shutdown().await;
}
