use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::BODY_LIMIT;
use crate::test_support::{code, harness, harness_with, ok};

async fn serve(response: Vec<u8>) -> (u16, Arc<Mutex<Vec<String>>>) {
    serve_with(|_| response).await
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers every request with the
/// same raw response (built once its port is known) and records each
/// request head.
async fn serve_with(make: impl FnOnce(u16) -> Vec<u8>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let response = make(port);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            if let Ok(mut seen) = record.lock() {
                seen.push(String::from_utf8_lossy(&head).into_owned());
            }
            let _ = socket.write_all(&response).await;
            let _ = socket.shutdown().await;
        }
    });
    (port, seen)
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn requests(seen: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    seen.lock().map(|s| s.clone()).unwrap_or_default()
}

#[tokio::test]
async fn empty_allowlist_refuses_everything() {
    let h = harness().await;
    let result = h
        .call("acme", "web_fetch", json!({"url": "https://example.com/"}))
        .await;
    match result {
        Err(e) => {
            assert_eq!(e.code(), "refused");
            assert!(e.to_string().contains("tools.web_fetch_allowlist"), "{e}");
        }
        Ok(_) => panic!("fetched with an empty allowlist"),
    }
}

#[tokio::test]
async fn hosts_outside_the_allowlist_are_refused() {
    let h = harness_with(|c| c.web_fetch_allowlist = vec!["Example.COM".into()]).await;
    for url in [
        "https://example.org/",
        "https://sub.example.com/",
        "https://example.com.evil.net/",
    ] {
        let result = h.call("acme", "web_fetch", json!({"url": url})).await;
        assert_eq!(code(&result), "refused", "{url}");
    }
}

#[tokio::test]
async fn internal_addresses_are_refused_even_when_allowlisted() {
    let (port, seen) = serve(http_response("200 OK", &[], b"internal")).await;
    let h = harness_with(|c| {
        c.web_fetch_allowlist = [
            "127.0.0.1",
            "169.254.169.254",
            "[::1]",
            "10.0.0.1",
            "localhost",
            "100.64.0.1",
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    let urls = [
        format!("http://127.0.0.1:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]/".to_string(),
        "http://10.0.0.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        format!("http://localhost:{port}/"),
        // Other spellings of 127.0.0.1 that URL parsing normalises.
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
    ];
    for url in &urls {
        let result = h.call("acme", "web_fetch", json!({"url": url})).await;
        assert_eq!(code(&result), "refused", "{url}");
        // What an allowlisted name resolves to stays in the operator's log.
        if let (Err(e), true) = (&result, url.contains("localhost")) {
            let message = e.to_string();
            assert!(
                !message.contains("127.0.0.1") && !message.contains("::1"),
                "{message}"
            );
        }
    }
    assert!(requests(&seen).is_empty(), "a refused URL was contacted");
}

#[tokio::test]
async fn schemes_userinfo_and_malformed_urls() {
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["example.com".into()];
    })
    .await;
    for url in [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "gopher://example.com/",
    ] {
        let result = h.call("acme", "web_fetch", json!({"url": url})).await;
        assert_eq!(code(&result), "refused", "{url}");
    }
    let result = h
        .call(
            "acme",
            "web_fetch",
            json!({"url": "https://user:hunter2@example.com/"}),
        )
        .await;
    assert_eq!(code(&result), "refused");
    assert!(
        result
            .err()
            .is_some_and(|e| !e.to_string().contains("hunter2"))
    );
    let result = h
        .call("acme", "web_fetch", json!({"url": "not a url"}))
        .await;
    assert_eq!(code(&result), "invalid_arguments");
    let result = h.call("acme", "web_fetch", json!({"url": 42})).await;
    assert_eq!(code(&result), "invalid_arguments");
}

#[tokio::test]
async fn fetches_from_an_allowlisted_local_server_when_private_is_allowed() {
    let body = b"hello from the test server";
    let (port, seen) = serve(http_response(
        "200 OK",
        &[("Content-Type", "text/plain; charset=utf-8")],
        body,
    ))
    .await;
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["127.0.0.1".into()];
        c.web_fetch_allow_private = true;
    })
    .await;
    let output = ok(h
        .call(
            "acme",
            "web_fetch",
            json!({"url": format!("http://127.0.0.1:{port}/hello?x=1")}),
        )
        .await);
    let structured = output.structured.unwrap_or_default();
    assert_eq!(structured["status"], 200);
    assert_eq!(structured["content_type"], "text/plain; charset=utf-8");
    assert_eq!(structured["body"], "hello from the test server");
    assert_eq!(structured["truncated"], false);
    assert!(
        output
            .text
            .starts_with("HTTP 200 OK\ncontent-type: text/plain"),
        "{}",
        output.text
    );
    assert!(output.text.ends_with("hello from the test server"));
    let seen = requests(&seen);
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].starts_with("GET /hello?x=1 HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
}

#[tokio::test]
async fn domain_names_are_pinned_to_the_vetted_address() {
    let (port, seen) = serve(http_response("200 OK", &[], b"via localhost")).await;
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["LOCALHOST".into()];
        c.web_fetch_allow_private = true;
    })
    .await;
    let output = ok(h
        .call(
            "acme",
            "web_fetch",
            json!({"url": format!("http://localhost:{port}/")}),
        )
        .await);
    assert_eq!(
        output.structured.unwrap_or_default()["body"],
        "via localhost"
    );
    assert_eq!(requests(&seen).len(), 1);
}

#[tokio::test]
async fn redirects_are_reported_not_followed() {
    let (port, seen) = serve_with(|port| {
        let location = format!("http://127.0.0.1:{port}/next");
        http_response("302 Found", &[("Location", &location)], b"")
    })
    .await;
    let location = format!("http://127.0.0.1:{port}/next");
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["127.0.0.1".into()];
        c.web_fetch_allow_private = true;
    })
    .await;
    let output = ok(h
        .call(
            "acme",
            "web_fetch",
            json!({"url": format!("http://127.0.0.1:{port}/start")}),
        )
        .await);
    let structured = output.structured.clone().unwrap_or_default();
    assert_eq!(structured["status"], 302);
    assert_eq!(structured["location"], location.as_str());
    assert_eq!(structured["redirect_followed"], false);
    assert!(
        output.text.contains("redirect not followed"),
        "{}",
        output.text
    );
    let seen = requests(&seen);
    assert_eq!(seen.len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn large_bodies_are_capped() {
    let body = vec![b'a'; BODY_LIMIT + 50_000];
    let (port, _seen) = serve(http_response("200 OK", &[], &body)).await;
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["127.0.0.1".into()];
        c.web_fetch_allow_private = true;
    })
    .await;
    let output = ok(h
        .call(
            "acme",
            "web_fetch",
            json!({"url": format!("http://127.0.0.1:{port}/big")}),
        )
        .await);
    let structured = output.structured.unwrap_or_default();
    assert_eq!(structured["truncated"], true);
    assert_eq!(structured["body"].as_str().map(str::len), Some(BODY_LIMIT));
}

#[tokio::test]
async fn connection_failures_are_reported_as_failed() {
    // Bind and drop to get a port that is (very likely) closed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["127.0.0.1".into()];
        c.web_fetch_allow_private = true;
    })
    .await;
    let result = h
        .call(
            "acme",
            "web_fetch",
            json!({"url": format!("http://127.0.0.1:{port}/")}),
        )
        .await;
    assert_eq!(code(&result), "failed");
}

/// Fetches in flight are bounded: past `CONCURRENCY` (each holding a
/// socket and its body for up to the timeout) a call fails at once.
#[tokio::test]
async fn fetches_in_flight_are_bounded() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let h = harness_with(|c| {
        c.web_fetch_allowlist = vec!["127.0.0.1".into()];
        c.web_fetch_allow_private = true;
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/slow");
    let hanging: Vec<_> = (0..crate::web::CONCURRENCY)
        .map(|_| h.call("acme", "web_fetch", json!({"url": url})))
        .collect();
    let mut hanging = futures::future::join_all(hanging);
    // Every one of them is started (and holds its slot) meanwhile.
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(1), &mut hanging)
            .await
            .is_err()
    );
    let busy = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        h.call("acme", "web_fetch", json!({"url": url})),
    )
    .await
    .expect("the call past the bound waited instead of failing at once");
    assert_eq!(code(&busy), "failed");
    assert!(busy.err().is_some_and(|e| e.to_string().contains("busy")));
}
