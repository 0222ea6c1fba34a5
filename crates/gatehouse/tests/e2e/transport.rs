//! Streamable HTTP rules: Host/Origin, protocol versions, framing, limits.

use serde_json::json;

use super::harness::{MODERN, Server, parse_body};

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

fn list_body() -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{META}}}}}"#)
}

fn modern(server: &Server, key: &str) -> reqwest::RequestBuilder {
    server
        .http
        .post(server.mcp_url())
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
}

#[tokio::test]
async fn foreign_origin_and_host_are_forbidden_before_authentication() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let evil_origin = modern(&server, &admin)
        .header("mcp-method", "tools/list")
        .header("origin", "http://evil.example.com")
        .body(list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(evil_origin.status(), 403);
    // Even without a credential: the guard runs first.
    let no_key = server
        .http
        .post(server.mcp_url())
        .header("origin", "http://evil.example.com")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 403);
    let evil_host = modern(&server, &admin)
        .header("mcp-method", "tools/list")
        .header("host", "evil.example.com")
        .body(list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(evil_host.status(), 403);
    // Our own origin and localhost hosts are fine.
    let own = modern(&server, &admin)
        .header("mcp-method", "tools/list")
        .header("origin", server.base.clone())
        .body(list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let localhost = modern(&server, &admin)
        .header("mcp-method", "tools/list")
        .header("host", format!("localhost:{port}"))
        .body(list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(localhost.status(), 200);
}

#[tokio::test]
async fn configured_origins_are_allowed() {
    let server = Server::start(Some(
        "version = 1\n[server]\nallowed_origins = [\"http://localhost:*\"]\n",
    ));
    let admin = server.admin_key.clone().unwrap();
    let response = modern(&server, &admin)
        .header("mcp-method", "tools/list")
        .header("origin", "http://localhost:6274")
        .body(list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unsupported_protocol_version_is_400() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let response = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "1999-01-01")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn method_header_must_match_the_body() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let response = modern(&server, &admin)
        .header("mcp-method", "tools/call")
        .body(list_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let name_mismatch = modern(&server, &admin)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .body(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"write_file","arguments":{{}},{META}}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(name_mismatch.status(), 400);
}

#[tokio::test]
async fn batches_are_refused_and_notifications_get_202() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let batch = modern(&server, &admin)
        .header("mcp-method", "tools/list")
        .body(format!("[{}]", list_body()))
        .send()
        .await
        .unwrap();
    assert!(batch.status().is_client_error(), "{}", batch.status());
    let note = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "notifications/initialized")
        .body(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(note.status(), 202);
}

#[tokio::test]
async fn server_discover_answers_statelessly() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let (status, body) = server.rpc(Some(&admin), "server/discover", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let versions = body["result"]["supportedVersions"].to_string();
    assert!(
        versions.contains("2026-07-28") && versions.contains("2025-11-25"),
        "{body}"
    );
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let server = Server::start(Some("version = 1\n[server]\nmax_body_bytes = 4096\n"));
    let admin = server.admin_key.clone().unwrap();
    let big = "x".repeat(8192);
    let response = modern(&server, &admin)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .body(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"whoami","arguments":{{"pad":"{big}"}},{META}}}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn get_without_session_in_stateless_mode_is_not_a_stream() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let response = server
        .http
        .get(server.mcp_url())
        .bearer_auth(&admin)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let body = parse_body(&response.text().await.unwrap_or_default());
    assert!(body.get("result").is_none());
}

/// Reads until the server closes the connection; returns what it sent.
/// The 20 s guard only stops a hung test: the server's own timeouts are 1 s.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut received),
    )
    .await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    String::from_utf8_lossy(&received).to_string()
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(Some(
        "version = 1\n[server]\nheader_read_timeout = \"1s\"\n",
    ));
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // Half a request line, then nothing: a slowloris client.
    stream
        .write_all(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

/// A connection that sends nothing, a part of the HTTP/2 preface, or the
/// whole preface and then no request: hyper's header-read timeout starts
/// only once a connection is known to speak HTTP/1, so each of these held
/// its connection (and a descriptor) for good.
#[tokio::test]
async fn connections_that_make_no_request_are_closed() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(Some(
        "version = 1\n[server]\nheader_read_timeout = \"1s\"\n",
    ));
    let address = server.base.trim_start_matches("http://").to_string();
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for sent in [&b""[..], &preface[..8], preface] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            read_until_closed(&mut stream),
        )
        .await;
        assert!(
            answer.is_ok(),
            "a connection that sent {sent:?} was kept open"
        );
    }
}

/// An HTTP/2 connection that made one request and then said nothing was
/// never closed (hyper closes idle HTTP/1 connections itself, but nothing
/// did for HTTP/2): enough of them filled `max_connections` for good. It
/// is now closed once no request has been in flight for the header-read
/// timeout.
#[tokio::test]
async fn an_http2_connection_idle_after_a_request_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(Some(
        "version = 1\n[server]\nheader_read_timeout = \"1s\"\n",
    ));
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // The preface, empty SETTINGS, and HEADERS (END_STREAM | END_HEADERS)
    // for GET /healthz, its header block in HPACK: :method GET (static 2),
    // :scheme http (6), :path literal with indexed name (4), :authority
    // literal with indexed name (1).
    let mut block = vec![0x82, 0x86, 0x44, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x41, address.len() as u8]);
    block.extend_from_slice(address.as_bytes());
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    let len = block.len();
    frames.extend_from_slice(&[
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        0x1,
        0x5,
        0,
        0,
        0,
        1,
    ]);
    frames.extend_from_slice(&block);
    stream.write_all(&frames).await.unwrap();
    // The answer comes (a HEADERS frame on stream 1), then nothing more is
    // sent: the server must close the connection.
    let mut received = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut received),
    )
    .await;
    assert!(closed.is_ok(), "an idle HTTP/2 connection was kept open");
    let answered = received
        .windows(9)
        .any(|frame| frame[3] == 0x1 && frame[5..9] == [0, 0, 0, 1]);
    assert!(answered, "no answer to the request: {received:?}");
    // Closed gracefully: a GOAWAY frame (type 0x7, on stream 0) first.
    let goaway = received
        .windows(9)
        .any(|frame| frame[3] == 0x7 && frame[5..9] == [0, 0, 0, 0]);
    assert!(goaway, "closed without GOAWAY: {received:?}");
}

#[tokio::test]
async fn slow_bodies_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(Some("version = 1\n[server]\nbody_timeout = \"1s\"\n"));
    let admin = server.admin_key.clone().unwrap();
    let address = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Content-Length: 1000\r\nConnection: close\r\n\r\n{{\"jsonrpc\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A POST to /mcp with a raw body in the given protocol era.
fn raw_post(
    server: &Server,
    key: &str,
    version: &str,
    session: Option<&str>,
    body: &str,
) -> reqwest::RequestBuilder {
    let mut request = server
        .http
        .post(server.mcp_url())
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version)
        .body(body.to_string());
    if let Some(session) = session {
        request = request.header("mcp-session-id", session);
    }
    request
}

/// The answer must be HTTP 400 with a JSON-RPC error of `code`, never the
/// SDK's plain-text deserializer message.
async fn assert_jsonrpc_error(
    response: reqwest::Response,
    code: i64,
    id: serde_json::Value,
    what: &str,
) {
    assert_eq!(response.status(), 400, "{what}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type}"
    );
    let text = response.text().await.unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: {text}"));
    assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert_eq!(body["id"], id, "{what}: {body}");
    assert!(!text.contains("deserialize"), "{what}: {text}");
}

#[tokio::test]
async fn malformed_json_is_a_parse_error_and_non_jsonrpc_an_invalid_request_in_both_eras() {
    use super::harness::LEGACY;
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let not_json = [
        r#"{"jsonrpc":"#,
        "{]",
        "\u{7f}garbage",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list",}"#,
    ];
    let not_jsonrpc = [
        ("[1,2]", json!(null)),
        ("42", json!(null)),
        (r#""tools/list""#, json!(null)),
        (r#"{"hello":"world"}"#, json!(null)),
        (r#"{"jsonrpc":"2.0","id":7,"method":5}"#, json!(7)),
    ];
    // 2026-07-28: stateless.
    for body in not_json {
        let response = raw_post(&server, &admin, MODERN, None, body)
            .header("mcp-method", "tools/list")
            .send()
            .await
            .unwrap();
        assert_jsonrpc_error(response, -32700, json!(null), &format!("modern {body}")).await;
    }
    for (body, id) in &not_jsonrpc {
        let response = raw_post(&server, &admin, MODERN, None, body)
            .header("mcp-method", "tools/list")
            .send()
            .await
            .unwrap();
        assert_jsonrpc_error(response, -32600, id.clone(), &format!("modern {body}")).await;
    }
    // 2025-11-25: instead of initialize, and inside a session.
    for body in not_json {
        let response = raw_post(&server, &admin, LEGACY, None, body)
            .send()
            .await
            .unwrap();
        assert_jsonrpc_error(response, -32700, json!(null), &format!("legacy {body}")).await;
    }
    let initialize = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}
    }});
    let response = server.post_legacy(&admin, None, initialize).await;
    assert_eq!(response.status(), 200);
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    for body in not_json {
        let response = raw_post(&server, &admin, LEGACY, Some(&session), body)
            .send()
            .await
            .unwrap();
        assert_jsonrpc_error(response, -32700, json!(null), &format!("session {body}")).await;
    }
    for (body, id) in &not_jsonrpc {
        let response = raw_post(&server, &admin, LEGACY, Some(&session), body)
            .send()
            .await
            .unwrap();
        assert_jsonrpc_error(response, -32600, id.clone(), &format!("session {body}")).await;
    }
    // The session still works afterwards.
    let list = server
        .post_legacy(
            &admin,
            Some(&session),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(list.status(), 200);
}

/// One route of each family outside /mcp that takes a body: the token
/// endpoint, the login form, an approval page, the device page and
/// registration. (`/approvals/{id}` reads its body before it looks the id up.)
const BODY_ROUTES: [(&str, &str); 5] = [
    ("/oauth/token", "application/x-www-form-urlencoded"),
    ("/login", "application/x-www-form-urlencoded"),
    (
        "/approvals/apr_0123456789abcdef",
        "application/x-www-form-urlencoded",
    ),
    ("/device", "application/x-www-form-urlencoded"),
    ("/oauth/register", "application/json"),
];

#[tokio::test]
async fn slow_bodies_are_cut_off_on_every_route() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(Some("version = 1\n[server]\nbody_timeout = \"1s\"\n"));
    let address = server.base.trim_start_matches("http://").to_string();
    let answers = futures::future::join_all(BODY_ROUTES.iter().map(|(path, content_type)| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            // A declared body of 1000 bytes of which 2 ever arrive.
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
                 Content-Length: 1000\r\nConnection: close\r\n\r\na="
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            (path, read_until_closed(&mut stream).await)
        }
    }))
    .await;
    for (path, answer) in answers {
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused_on_every_route() {
    let server = Server::start(Some("version = 1\n[server]\nmax_body_bytes = 4096\n"));
    let big = format!("a={}", "x".repeat(8192));
    for (path, content_type) in BODY_ROUTES {
        let response = server
            .http
            .post(format!("{}{path}", server.base))
            .header("content-type", content_type)
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        // Without a Content-Length the cap still holds while reading.
        use tokio::io::AsyncWriteExt;
        let address = server.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let chunk = "x".repeat(2048);
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        for _ in 0..4 {
            request.push_str(&format!("800\r\n{chunk}\r\n"));
        }
        request.push_str("0\r\n\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let answer = read_until_closed(&mut stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{path} (chunked): {answer}"
        );
    }
}

#[tokio::test]
async fn foreign_host_and_origin_are_forbidden_on_every_route() {
    let server = Server::start(None);
    let get_routes = [
        "/authorize?client_id=x",
        "/device",
        "/approvals/apr_0123456789abcdef",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/mcp",
        "/oauth/jwks.json",
    ];
    // DNS rebinding: a page at evil.example.com whose name now points here.
    for path in get_routes {
        let response = server
            .http
            .get(format!("{}{path}", server.base))
            .header("host", "evil.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "GET {path}");
    }
    for (path, content_type) in BODY_ROUTES {
        let post = |host: Option<&str>, origin: Option<&str>| {
            let mut request = server
                .http
                .post(format!("{}{path}", server.base))
                .header("content-type", content_type)
                .body("a=b");
            if let Some(host) = host {
                request = request.header("host", host.to_string());
            }
            if let Some(origin) = origin {
                request = request.header("origin", origin.to_string());
            }
            request.send()
        };
        let foreign_host = post(Some("evil.example.com"), None).await.unwrap();
        assert_eq!(
            foreign_host.status(),
            403,
            "POST {path} with a foreign Host"
        );
        assert!(
            foreign_host
                .text()
                .await
                .unwrap()
                .contains("Host is not allowed")
        );
        // A cross-site form or fetch.
        let foreign_origin = post(None, Some("http://evil.example.com")).await.unwrap();
        assert_eq!(
            foreign_origin.status(),
            403,
            "POST {path} with a foreign Origin"
        );
        assert!(
            foreign_origin
                .text()
                .await
                .unwrap()
                .contains("Origin is not allowed")
        );
        // Our own origin, no Origin (a non-browser client) and `null` (what
        // a browser sends for our own forms under `Referrer-Policy:
        // no-referrer`) reach the endpoint, whose own checks then apply.
        for origin in [Some(server.base.as_str()), None, Some("null")] {
            let answer = post(None, origin).await.unwrap();
            let text = answer.text().await.unwrap();
            assert!(
                !text.contains("is not allowed"),
                "POST {path} with Origin {origin:?}: {text}"
            );
        }
    }
}

/// A reader's calls of built-in tools, for comparing the fast paths with
/// the SDK: an answer, a tool error, and two tools the role may not call.
pub(super) fn built_in_cases() -> [(&'static str, serde_json::Value); 4] {
    [
        ("whoami", json!({})),
        ("read_file", json!({"path": "missing.txt"})),
        ("web_fetch", json!({"url": "https://example.com/"})),
        (
            "send_email",
            json!({"to": "a@example.com", "subject": "s", "body": "b"}),
        ),
    ]
}

/// The fast path (a plain stateless call of a built-in tool, answered
/// without the SDK) and the SDK answer alike: the same call sent both ways
/// (a progress token sends it to the SDK) gets the same result or error,
/// and both leave the same audit records.
#[tokio::test]
async fn the_fast_path_answers_like_the_sdk() {
    let server = Server::start(None);
    let (id, reader) = server.create_key("r", "reader", &[]);
    let call = |tool: &'static str, arguments: serde_json::Value, progress: bool| {
        let mut meta = json!({});
        if progress {
            meta["progressToken"] = json!("p1");
        }
        let server = &server;
        let reader = reader.clone();
        async move {
            server
                .rpc(
                    Some(&reader),
                    "tools/call",
                    json!({"name": tool, "arguments": arguments, "_meta": meta}),
                )
                .await
        }
    };
    for (tool, arguments) in built_in_cases() {
        let (fast_status, fast) = call(tool, arguments.clone(), false).await;
        let (sdk_status, sdk) = call(tool, arguments, true).await;
        assert_eq!(fast_status, sdk_status, "{tool}");
        assert_eq!(fast, sdk, "{tool}: the fast path and the SDK differ");
    }
    // Two decision records per tool (one per path), alike but for ids and times.
    let records = server.audit(&["--principal", &id, "--kind", "tool_decision"]);
    for tool in ["whoami", "read_file", "web_fetch", "send_email"] {
        let decisions: Vec<_> = records.iter().filter(|r| r["tool"] == tool).collect();
        assert_eq!(decisions.len(), 2, "{tool}: {records:?}");
        assert_eq!(decisions[0]["reason"], decisions[1]["reason"], "{tool}");
        assert_eq!(decisions[0]["decision"], decisions[1]["decision"], "{tool}");
    }
}
