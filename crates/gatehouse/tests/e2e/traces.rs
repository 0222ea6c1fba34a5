//! OpenTelemetry end to end: a real Gatehouse exports its spans over
//! OTLP/HTTP to a receiver written here (it keeps the protobuf bodies), with
//! the parent the caller named in `traceparent` or in `params._meta`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::harness::{MODERN, Server};

/// An OTLP/HTTP endpoint: answers every POST with 200 and keeps its body.
fn receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    receiver_answering(
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
            .to_string(),
    )
}

/// The same, answering every POST with `answer`.
fn receiver_answering(answer: String) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let kept = Arc::clone(&kept);
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                // Requests on one connection, one after the other.
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    kept.lock().unwrap().push(body);
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, bodies)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn call(
    server: &Server,
    key: &str,
    traceparent_header: Option<&str>,
    meta_traceparent: Option<&str>,
) {
    let mut meta = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    if let Some(parent) = meta_traceparent {
        meta["traceparent"] = json!(parent);
    }
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}, "_meta": meta},
    });
    let mut request = server
        .http
        .post(server.mcp_url())
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .json(&body);
    if let Some(parent) = traceparent_header {
        request = request.header("traceparent", parent);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn spans_are_exported_over_otlp_with_the_callers_parent() {
    let (endpoint, bodies) = receiver();
    let config = format!(
        "version = 1\n[traces]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gatehouse-e2e\"\n"
    );
    let mut server = Server::start(Some(&config));
    let (_, reader) = server.create_key("reader", "reader", &[]);
    let header_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let header_parent = "00f067aa0ba902b7";
    let meta_trace = "0af7651916cd43dd8448eb211c80319c";
    call(
        &server,
        &reader,
        Some(&format!("00-{header_trace}-{header_parent}-01")),
        None,
    )
    .await;
    call(
        &server,
        &reader,
        None,
        Some(&format!("00-{meta_trace}-b7ad6b7169203331-01")),
    )
    .await;
    // A caller cannot switch the export of its requests off: a parent marked
    // "not sampled" (trace flags 00) is followed, and the spans exported.
    let unsampled_header_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let unsampled_meta_trace = "1af7651916cd43dd8448eb211c80319d";
    call(
        &server,
        &reader,
        Some(&format!("00-{unsampled_header_trace}-00f067aa0ba902b8-00")),
        None,
    )
    .await;
    call(
        &server,
        &reader,
        None,
        Some(&format!("00-{unsampled_meta_trace}-b7ad6b7169203332-00")),
    )
    .await;
    // Shutting down exports what is still batched: nothing here waits on a
    // timer.
    assert!(server.stop().success());
    let bodies = bodies.lock().unwrap().concat();
    assert!(!bodies.is_empty(), "nothing was exported");
    assert!(contains(&bodies, b"gatehouse-e2e"), "service.name");
    assert!(contains(&bodies, b"tools/call"), "the tools/call span");
    // Trace and parent ids are raw bytes in the protobuf.
    for id in [
        header_trace,
        header_parent,
        meta_trace,
        unsampled_header_trace,
        unsampled_meta_trace,
    ] {
        assert!(
            contains(&bodies, &hex::decode(id).unwrap()),
            "{id} is not in the exported spans"
        );
    }
    // The trace id is also in the request's log line at debug level.
    let log = std::fs::read_to_string(server.stderr_path()).unwrap();
    assert!(log.contains(header_trace), "{log}");
}

/// The exporter goes to the configured endpoint only: a redirect (which
/// the SDK's own client followed, also from https to plain http with any
/// `OTEL_EXPORTER_OTLP_HEADERS` credential) is not followed.
#[tokio::test]
async fn the_exporter_follows_no_redirect() {
    let (elsewhere, followed) = receiver();
    let (endpoint, sent) = receiver_answering(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}\r\ncontent-length: 0\r\n\r\n"
    ));
    let config = format!("version = 1\n[traces]\notlp_endpoint = \"{endpoint}\"\n");
    let mut server = Server::start(Some(&config));
    let (_, reader) = server.create_key("reader", "reader", &[]);
    call(&server, &reader, None, None).await;
    assert!(server.stop().success());
    assert!(!sent.lock().unwrap().is_empty(), "nothing was exported");
    assert!(
        followed.lock().unwrap().is_empty(),
        "the exporter followed the redirect"
    );
}

#[tokio::test]
async fn a_forwarded_call_carries_gatehouses_span_to_the_upstream() {
    let Some(python) = super::upstreams::python() else {
        return;
    };
    let (endpoint, _) = receiver();
    let server = super::upstreams::server_with_upstream_entry(
        &python,
        "[upstreams.py]\nscope = \"tools:read\"\nroles = [\"reader\"]\n",
        &format!("call_timeout = \"30s\"\n\n[traces]\notlp_endpoint = \"{endpoint}\"\n"),
    );
    let (_, reader) = server.create_key("reader", "reader", &[]);
    super::upstreams::tools_when_ready(&server, &reader, "py__request_meta").await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let parent = "10f067aa0ba902b8";
    let (_, body) = server
        .rpc(
            Some(&reader),
            "tools/call",
            json!({"name": "py__request_meta", "arguments": {},
                   "_meta": {"traceparent": format!("00-{trace}-{parent}-01")}}),
        )
        .await;
    assert!(body["error"].is_null(), "{body}");
    let meta: serde_json::Value =
        serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    // The same trace, with Gatehouse's call as the upstream's parent.
    let forwarded = meta["traceparent"].as_str().unwrap();
    assert!(
        forwarded.starts_with(&format!("00-{trace}-")),
        "{forwarded}"
    );
    assert!(!forwarded.contains(parent), "{forwarded}");
    assert_eq!(forwarded.len(), 55, "{forwarded}");
}

/// A data directory whose policy lets readers use the HTTP upstream `spy`
/// at `url`, and a configuration naming it and exporting to `endpoint`.
fn spy_setup(url: &str, endpoint: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "{}\n[upstreams.spy]\nscope = \"tools:read\"\nroles = [\"reader\"]\n",
            super::upstreams::DEFAULT
        ),
    )
    .unwrap();
    let config = format!(
        "version = 1\n[policy]\nfile = \"policy.toml\"\n[traces]\notlp_endpoint = \"{endpoint}\"\n\n\
         [[upstreams]]\nname = \"spy\"\nurl = {url:?}\nconnect_timeout = \"30s\"\ncall_timeout = \"30s\"\n"
    );
    (dir, config)
}

/// A proxy named by the environment (`HTTP_PROXY`, `ALL_PROXY`) is not
/// used for upstreams: the upstream's credential would go to that host, in
/// clear for a plain-http loopback upstream. Nor for the exporter.
#[tokio::test]
async fn no_proxy_from_the_environment_is_used_for_upstreams_or_exports() {
    let Some(python) = super::upstreams::python() else {
        return;
    };
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    proxy.set_nonblocking(true).unwrap();
    let spy = super::upstreams::PyHttp::start_with(&python, &[]);
    let (endpoint, exported) = receiver();
    let (dir, config) = spy_setup(&spy.url, &endpoint);
    let mut server = Server::start_with_env(
        dir,
        Some(&config),
        &[
            ("HTTP_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
            ("ALL_PROXY", &proxy_url),
            ("NO_PROXY", ""),
        ],
    );
    let (_, reader) = server.create_key("reader", "reader", &[]);
    super::upstreams::tools_when_ready(&server, &reader, "spy__request_headers").await;
    assert!(server.stop().success());
    assert!(!exported.lock().unwrap().is_empty(), "nothing was exported");
    assert!(
        proxy.accept().is_err(),
        "a connection went to the environment's proxy"
    );
}

#[tokio::test]
async fn an_http_upstream_also_gets_the_trace_context_as_headers() {
    let Some(python) = super::upstreams::python() else {
        return;
    };
    let spy = super::upstreams::PyHttp::start_with(&python, &[]);
    let (endpoint, _) = receiver();
    let (dir, config) = spy_setup(&spy.url, &endpoint);
    let server = Server::start_in(dir, Some(&config));
    let (_, reader) = server.create_key("reader", "reader", &[]);
    super::upstreams::tools_when_ready(&server, &reader, "spy__request_headers").await;
    let trace = "6bf92f3577b34da6a3ce929d0e0e4738";
    let request = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&reader)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "spy__request_headers")
        .header("traceparent", format!("00-{trace}-20f067aa0ba902b9-01"))
        .json(&json!({
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "spy__request_headers", "arguments": {}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            }},
        }));
    let text = request.send().await.unwrap().text().await.unwrap();
    let body = super::harness::parse_body(&text);
    assert!(body["error"].is_null(), "{body}");
    let seen: serde_json::Value =
        serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let header = seen["traceparent"].as_str().unwrap_or_default();
    assert!(header.starts_with(&format!("00-{trace}-")), "{seen}");
    assert!(!header.contains("20f067aa0ba902b9"), "{seen}");
}
