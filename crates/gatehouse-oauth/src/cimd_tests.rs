use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T0: Timestamp = Timestamp(1_800_000_000_000);

/// A tiny HTTP/1.1 server on 127.0.0.1 with an ephemeral port. Each path's
/// last segment picks a canned response; every request is counted.
struct TestServer {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(HashMap::new()));
        let total = Arc::new(AtomicUsize::new(0));
        let (task_hits, task_total) = (hits.clone(), total.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (hits, total) = (task_hits.clone(), task_total.clone());
                tokio::spawn(async move { serve(stream, port, hits, total).await });
            }
        });
        TestServer { port, hits, total }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    total.fetch_add(1, Ordering::SeqCst);
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;

    let url = format!("http://127.0.0.1:{port}{path}");
    let response = respond(&url, path.rsplit('/').next().unwrap_or_default());
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn document(client_id: &str) -> Value {
    serde_json::json!({
        "client_id": client_id,
        "client_name": "Test Client",
        "redirect_uris": ["http://127.0.0.1:9999/callback"],
        "token_endpoint_auth_method": "none",
    })
}

fn http(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

fn json_ok(body: &Value, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend_from_slice(extra);
    http("200 OK", &headers, &body.to_string())
}

fn respond(url: &str, name: &str) -> Vec<u8> {
    match name {
        "client" => json_ok(&document(url), &[]),
        "no-store" => json_ok(&document(url), &[("Cache-Control", "no-store")]),
        "max-age" => json_ok(&document(url), &[("Cache-Control", "public, max-age=60")]),
        "huge-max-age" => json_ok(&document(url), &[("Cache-Control", "max-age=999999999")]),
        "charset" => http(
            "200 OK",
            &[("Content-Type", "application/json; charset=utf-8")],
            &document(url).to_string(),
        ),
        "minimal" => json_ok(
            &serde_json::json!({ "client_id": url, "redirect_uris": ["https://app.example/cb"] }),
            &[],
        ),
        "mismatch" => json_ok(&document("https://other.example/client"), &[]),
        "no-redirect-uris" => json_ok(
            &serde_json::json!({ "client_id": url, "client_name": "x" }),
            &[],
        ),
        "empty-redirect-uris" => json_ok(
            &serde_json::json!({ "client_id": url, "redirect_uris": [] }),
            &[],
        ),
        "many-redirect-uris" => {
            let uris: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
            json_ok(
                &serde_json::json!({ "client_id": url, "redirect_uris": uris }),
                &[],
            )
        }
        "secret-auth" => {
            let mut doc = document(url);
            doc["token_endpoint_auth_method"] = "client_secret_basic".into();
            json_ok(&doc, &[])
        }
        "private-key-jwt" => {
            let mut doc = document(url);
            doc["token_endpoint_auth_method"] = "private_key_jwt".into();
            json_ok(&doc, &[])
        }
        "private-key-jwt-keys" => {
            let mut doc = document(url);
            doc["token_endpoint_auth_method"] = "private_key_jwt".into();
            doc["jwks"] = serde_json::json!({ "keys": [
                crate::SigningKey::generate().unwrap().public_jwk()
            ] });
            json_ok(&doc, &[])
        }
        "private-key-jwt-uri" => {
            let mut doc = document(url);
            doc["token_endpoint_auth_method"] = "private_key_jwt".into();
            doc["jwks_uri"] = "https://app.example.com/jwks.json".into();
            json_ok(&doc, &[])
        }
        "private-key-jwt-secret-key" => {
            let mut doc = document(url);
            doc["token_endpoint_auth_method"] = "private_key_jwt".into();
            doc["jwks"] =
                serde_json::json!({ "keys": [{ "kty": "oct", "kid": "s", "k": "c2VjcmV0" }] });
            json_ok(&doc, &[])
        }
        "with-secret" => {
            let mut doc = document(url);
            doc["client_secret"] = "s3cret".into();
            json_ok(&doc, &[])
        }
        "bidi-name" => {
            let mut doc = document(url);
            // Displays as "Test Clientmoc.elgoog": a right-to-left override.
            doc["client_name"] = "Test Client\u{202E}google.com".into();
            json_ok(&doc, &[])
        }
        "zero-width-name" => {
            let mut doc = document(url);
            doc["client_name"] = "Git\u{200B}Hub".into();
            json_ok(&doc, &[])
        }
        "long-name" => {
            let mut doc = document(url);
            doc["client_name"] = "n".repeat(101).into();
            json_ok(&doc, &[])
        }
        "array" => http("200 OK", &[("Content-Type", "application/json")], "[]"),
        "oversize" => {
            let mut doc = document(url);
            doc["padding"] = "x".repeat(20 * 1024).into();
            json_ok(&doc, &[])
        }
        "oversize-chunked" => {
            // No Content-Length: only the streaming limit can stop this one.
            let chunk = "x".repeat(4096);
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            );
            for _ in 0..8 {
                out.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
            }
            out.push_str("0\r\n\r\n");
            out.into_bytes()
        }
        "redirect" => http("302 Found", &[("Location", "/client")], ""),
        "html" => http(
            "200 OK",
            &[("Content-Type", "text/html")],
            &document(url).to_string(),
        ),
        "no-content-type" => http("200 OK", &[], &document(url).to_string()),
        "not-json" => http(
            "200 OK",
            &[("Content-Type", "application/json")],
            "hello, world",
        ),
        "fail" => http("500 Internal Server Error", &[], ""),
        _ => http("404 Not Found", &[], ""),
    }
}

fn dev_config() -> CimdConfig {
    CimdConfig {
        dev_http_hosts: vec!["127.0.0.1".to_string()],
        ..CimdConfig::default()
    }
}

fn dev_resolver() -> CimdResolver {
    CimdResolver::new(dev_config())
}

#[test]
fn client_id_url_form_is_recognised() {
    assert!(is_client_id_url("https://app.example/client.json"));
    assert!(is_client_id_url("http://127.0.0.1:8080/client"));
    assert!(!is_client_id_url("gh_client_123"));
    assert!(!is_client_id_url("HTTPS://app.example/x"));
    assert!(!is_client_id_url("ftp://app.example/x"));
}

#[test]
fn defaults_match_the_documented_limits() {
    let config = CimdConfig::default();
    assert_eq!(config.timeout, Duration::from_secs(5));
    assert_eq!(config.max_bytes, 16 * 1024);
    assert_eq!(config.default_ttl_secs, 300);
    assert_eq!(config.max_ttl_secs, 86_400);
    assert_eq!(config.max_entries, 1000);
    assert_eq!(config.max_fetches_per_host_per_minute, 30);
    assert_eq!(config.max_clients, 10_000);
    assert!(config.allowed_domains.is_empty());
    assert!(config.dev_http_hosts.is_empty());
}

#[tokio::test]
async fn fetches_and_validates_a_document() {
    let server = TestServer::start().await;
    let url = server.url("/client");
    let doc = dev_resolver().resolve(&url, T0).await.unwrap();
    assert_eq!(doc.client_id, url);
    assert_eq!(doc.client_name.as_deref(), Some("Test Client"));
    assert_eq!(doc.redirect_uris, vec!["http://127.0.0.1:9999/callback"]);
    assert_eq!(doc.grant_types, vec!["authorization_code"]);
    assert_eq!(doc.token_endpoint_auth_method, "none");
    assert_eq!(server.hits("/client"), 1);
}

#[tokio::test]
async fn a_private_key_jwt_client_publishes_its_keys() {
    let server = TestServer::start().await;
    let doc = dev_resolver()
        .resolve(&server.url("/private-key-jwt-keys"), T0)
        .await
        .unwrap();
    assert_eq!(doc.token_endpoint_auth_method, "private_key_jwt");
    assert!(doc.jwks.as_deref().is_some_and(|j| j.contains("\"kty\"")));
    let doc = dev_resolver()
        .resolve(&server.url("/private-key-jwt-uri"), T0)
        .await
        .unwrap();
    assert_eq!(
        doc.jwks_uri.as_deref(),
        Some("https://app.example.com/jwks.json")
    );
}

#[tokio::test]
async fn optional_fields_take_their_defaults() {
    let server = TestServer::start().await;
    let doc = dev_resolver()
        .resolve(&server.url("/minimal"), T0)
        .await
        .unwrap();
    assert_eq!(doc.client_name, None);
    assert_eq!(doc.grant_types, vec!["authorization_code"]);
    assert_eq!(doc.token_endpoint_auth_method, "none");
}

#[tokio::test]
async fn json_content_type_with_parameters_is_accepted() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    assert!(resolver.resolve(&server.url("/charset"), T0).await.is_ok());
}

#[tokio::test]
async fn cached_document_is_served_without_refetching() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    let url = server.url("/client");
    let first = resolver.resolve(&url, T0).await.unwrap();
    let second = resolver
        .resolve(&url, T0.plus_millis(299_000))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(server.hits("/client"), 1);
    // Clones share the cache.
    resolver.clone().resolve(&url, T0).await.unwrap();
    assert_eq!(server.hits("/client"), 1);
    // The default lifetime (300 s) has passed.
    resolver
        .resolve(&url, T0.plus_millis(300_000))
        .await
        .unwrap();
    assert_eq!(server.hits("/client"), 2);
}

#[tokio::test]
async fn no_store_is_never_cached() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    let url = server.url("/no-store");
    resolver.resolve(&url, T0).await.unwrap();
    resolver.resolve(&url, T0).await.unwrap();
    assert_eq!(server.hits("/no-store"), 2);
}

#[tokio::test]
async fn max_age_sets_the_cache_lifetime() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    let url = server.url("/max-age");
    resolver.resolve(&url, T0).await.unwrap();
    resolver
        .resolve(&url, T0.plus_millis(59_999))
        .await
        .unwrap();
    assert_eq!(server.hits("/max-age"), 1);
    resolver
        .resolve(&url, T0.plus_millis(60_000))
        .await
        .unwrap();
    assert_eq!(server.hits("/max-age"), 2);
}

#[tokio::test]
async fn max_age_is_capped_by_max_ttl() {
    let server = TestServer::start().await;
    let resolver = CimdResolver::new(CimdConfig {
        max_ttl_secs: 100,
        ..dev_config()
    });
    let url = server.url("/huge-max-age");
    resolver.resolve(&url, T0).await.unwrap();
    resolver
        .resolve(&url, T0.plus_millis(99_000))
        .await
        .unwrap();
    assert_eq!(server.hits("/huge-max-age"), 1);
    resolver
        .resolve(&url, T0.plus_millis(100_000))
        .await
        .unwrap();
    assert_eq!(server.hits("/huge-max-age"), 2);
}

#[tokio::test]
async fn cache_is_bounded_and_evicts_the_oldest() {
    let server = TestServer::start().await;
    let resolver = CimdResolver::new(CimdConfig {
        max_entries: 2,
        ..dev_config()
    });
    for n in 1..=3 {
        resolver
            .resolve(&server.url(&format!("/{n}/client")), T0)
            .await
            .unwrap();
    }
    assert_eq!(resolver.cache().entries.len(), 2);
    // 2 and 3 are still cached; 1 was evicted.
    resolver
        .resolve(&server.url("/3/client"), T0)
        .await
        .unwrap();
    resolver
        .resolve(&server.url("/2/client"), T0)
        .await
        .unwrap();
    assert_eq!(server.total(), 3);
    resolver
        .resolve(&server.url("/1/client"), T0)
        .await
        .unwrap();
    assert_eq!(server.hits("/1/client"), 2);
}

#[tokio::test]
async fn expired_entries_are_evicted_before_live_ones() {
    let server = TestServer::start().await;
    let resolver = CimdResolver::new(CimdConfig {
        max_entries: 2,
        ..dev_config()
    });
    // Oldest but still live (default 300 s), then younger but expiring at 60 s.
    resolver
        .resolve(&server.url("/a/client"), T0)
        .await
        .unwrap();
    resolver
        .resolve(&server.url("/b/max-age"), T0)
        .await
        .unwrap();
    let later = T0.plus_millis(61_000);
    resolver
        .resolve(&server.url("/c/client"), later)
        .await
        .unwrap();
    resolver
        .resolve(&server.url("/a/client"), later)
        .await
        .unwrap();
    assert_eq!(server.hits("/a/client"), 1);
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    let url = server.url("/client");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (resolver, url) = (resolver.clone(), url.clone());
        tasks.spawn(async move { resolver.resolve(&url, T0).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(result.unwrap().is_ok());
    }
    assert_eq!(server.hits("/client"), 1);
    assert!(resolver.inner.inflight.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failures_are_remembered_for_thirty_seconds() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    let url = server.url("/fail");
    let err = resolver.resolve(&url, T0).await.unwrap_err();
    assert_eq!(err, CimdError::Status(500));
    assert!(err.is_unavailable());
    let again = resolver.resolve(&url, T0.plus_millis(29_999)).await;
    assert_eq!(again.unwrap_err(), CimdError::Status(500));
    assert_eq!(server.hits("/fail"), 1);
    let _ = resolver.resolve(&url, T0.plus_millis(30_000)).await;
    assert_eq!(server.hits("/fail"), 2);
}

async fn refused(path: &str) -> CimdError {
    let server = TestServer::start().await;
    let err = dev_resolver()
        .resolve(&server.url(path), T0)
        .await
        .unwrap_err();
    assert_eq!(server.hits(path), 1, "{path} was not fetched exactly once");
    err
}

#[tokio::test]
async fn client_id_mismatch_is_refused() {
    let err = refused("/mismatch").await;
    assert_eq!(
        err,
        CimdError::InvalidDocument("its client_id does not match the URL it was fetched from")
    );
    assert!(!err.is_unavailable());
}

#[tokio::test]
async fn missing_or_bad_redirect_uris_are_refused() {
    assert_eq!(
        refused("/no-redirect-uris").await,
        CimdError::InvalidDocument("redirect_uris is missing")
    );
    assert_eq!(
        refused("/empty-redirect-uris").await,
        CimdError::InvalidDocument("redirect_uris is empty")
    );
    assert_eq!(
        refused("/many-redirect-uris").await,
        CimdError::InvalidDocument("redirect_uris has more than 10 entries")
    );
}

#[tokio::test]
async fn confidential_client_auth_is_refused() {
    assert_eq!(
        refused("/secret-auth").await,
        CimdError::InvalidDocument(
            "token_endpoint_auth_method must be \"none\" or \"private_key_jwt\""
        )
    );
    // private_key_jwt needs published public keys, and nothing secret.
    assert_eq!(
        refused("/private-key-jwt").await,
        CimdError::InvalidDocument("private_key_jwt needs exactly one of jwks and jwks_uri")
    );
    assert_eq!(
        refused("/private-key-jwt-secret-key").await,
        CimdError::InvalidDocument("jwks holds no usable public signing key")
    );
    assert_eq!(
        refused("/with-secret").await,
        CimdError::InvalidDocument("it must not contain a client_secret")
    );
}

#[tokio::test]
async fn overlong_client_name_is_refused() {
    assert_eq!(
        refused("/long-name").await,
        CimdError::InvalidDocument("client_name is longer than 100 characters")
    );
}

#[tokio::test]
async fn deceptive_client_names_are_refused_like_at_registration() {
    for path in ["/bidi-name", "/zero-width-name"] {
        assert_eq!(
            refused(path).await,
            CimdError::InvalidDocument("client_name contains control or formatting characters"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn fetches_from_one_host_are_rate_limited() {
    let server = TestServer::start().await;
    let resolver = CimdResolver::new(CimdConfig {
        max_fetches_per_host_per_minute: 3,
        ..dev_config()
    });
    for i in 0..3 {
        let url = server.url(&format!("/app{i}/client"));
        resolver.resolve(&url, T0).await.unwrap();
    }
    // A fourth document on the same host is not fetched this minute...
    let url = server.url("/app3/client");
    let err = resolver
        .resolve(&url, T0.plus_millis(1_000))
        .await
        .unwrap_err();
    assert_eq!(err, CimdError::HostRateLimited(59));
    assert!(err.is_unavailable());
    assert_eq!(server.hits("/app3/client"), 0);
    // ...while cached documents are still served, without a fetch.
    let cached = server.url("/app0/client");
    resolver
        .resolve(&cached, T0.plus_millis(2_000))
        .await
        .unwrap();
    assert_eq!(server.total(), 3);
    // The refusal is not cached: the next minute it is fetched.
    resolver
        .resolve(&url, T0.plus_millis(60_000))
        .await
        .unwrap();
    assert_eq!(server.hits("/app3/client"), 1);
}

/// Anyone can spend a host's fetch budget with made-up URLs on it: a
/// document fetched fine is still served for a while after its cache
/// lifetime while the budget is spent, rather than refusing its client.
#[tokio::test]
async fn a_spent_host_budget_serves_the_last_good_document() {
    let server = TestServer::start().await;
    let resolver = CimdResolver::new(CimdConfig {
        max_fetches_per_host_per_minute: 1,
        ..dev_config()
    });
    let known = server.url("/app0/client");
    resolver.resolve(&known, T0).await.unwrap();
    // Its cache lifetime (300 s) is over; someone spends the host's budget.
    let later = T0.plus_millis(400_000);
    resolver
        .resolve(&server.url("/app1/client"), later)
        .await
        .unwrap();
    let served = resolver.resolve(&known, later.plus_millis(1_000)).await;
    assert!(served.is_ok(), "{served:?}");
    assert_eq!(server.hits("/app0/client"), 1);
    // A document never fetched is refused as before.
    let err = resolver
        .resolve(&server.url("/app2/client"), later.plus_millis(2_000))
        .await
        .unwrap_err();
    assert!(matches!(err, CimdError::HostRateLimited(_)), "{err:?}");
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    assert_eq!(refused("/oversize").await, CimdError::TooLarge(16 * 1024));
    assert_eq!(
        refused("/oversize-chunked").await,
        CimdError::TooLarge(16 * 1024)
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = TestServer::start().await;
    let err = dev_resolver()
        .resolve(&server.url("/redirect"), T0)
        .await
        .unwrap_err();
    assert_eq!(err, CimdError::Redirect);
    assert_eq!(server.hits("/redirect"), 1);
    assert_eq!(server.hits("/client"), 0);
}

#[tokio::test]
async fn non_json_responses_are_refused() {
    assert_eq!(refused("/html").await, CimdError::NotJson);
    assert_eq!(refused("/no-content-type").await, CimdError::NotJson);
    assert_eq!(
        refused("/not-json").await,
        CimdError::InvalidDocument("it is not valid JSON")
    );
    assert_eq!(
        refused("/array").await,
        CimdError::InvalidDocument("it is not a JSON object")
    );
}

#[tokio::test]
async fn other_statuses_are_refused() {
    let err = refused("/missing").await;
    assert_eq!(err, CimdError::Status(404));
    assert!(!err.is_unavailable());
}

/// SSRF refusals, with no development hosts configured: each must fail
/// before any connection is made.
#[tokio::test]
async fn internal_targets_are_refused_before_connecting() {
    let server = TestServer::start().await;
    let port = server.port;
    let resolver = CimdResolver::new(CimdConfig::default());
    let cases = [
        (
            format!("https://127.0.0.1:{port}/x"),
            CimdError::InvalidUrl("its host must be a domain name, not an IP address"),
        ),
        (
            "https://127.0.0.1/x".to_string(),
            CimdError::InvalidUrl("its host must be a domain name, not an IP address"),
        ),
        (
            "https://169.254.169.254/latest".to_string(),
            CimdError::InvalidUrl("its host must be a domain name, not an IP address"),
        ),
        (
            "https://10.0.0.1/x".to_string(),
            CimdError::InvalidUrl("its host must be a domain name, not an IP address"),
        ),
        (
            "https://[::1]/x".to_string(),
            CimdError::InvalidUrl("its host must be a domain name, not an IP address"),
        ),
        (
            format!("http://127.0.0.1:{port}/client"),
            CimdError::InvalidUrl("it must use https"),
        ),
        (
            "http://example.com/x".to_string(),
            CimdError::InvalidUrl("it must use https"),
        ),
        (
            format!("https://localhost:{port}/client"),
            CimdError::NonPublicAddress,
        ),
        (
            format!("http://localhost:{port}/client"),
            CimdError::InvalidUrl("it must use https"),
        ),
        (
            "https://user:pw@example.com/x".to_string(),
            CimdError::InvalidUrl("it must not contain a user name or password"),
        ),
        (
            "https://example.com/x#frag".to_string(),
            CimdError::InvalidUrl("it must not contain a fragment"),
        ),
        (
            "https://example.com/x?a=b".to_string(),
            CimdError::InvalidUrl("it must not contain a query"),
        ),
        (
            "https://example.com/".to_string(),
            CimdError::InvalidUrl("it must have a path"),
        ),
        (
            "https://example.com".to_string(),
            CimdError::InvalidUrl("it is not in canonical form"),
        ),
        (
            "https://Example.com/x".to_string(),
            CimdError::InvalidUrl("it is not in canonical form"),
        ),
        (
            "https://example.com:443/x".to_string(),
            CimdError::InvalidUrl("it is not in canonical form"),
        ),
        (
            "https://example.com/a/../x".to_string(),
            CimdError::InvalidUrl("it is not in canonical form"),
        ),
        (
            "https://0x7f.1/x".to_string(),
            CimdError::InvalidUrl("it is not in canonical form"),
        ),
        (
            "file:///etc/passwd".to_string(),
            CimdError::InvalidUrl("it has no host"),
        ),
        (
            "not a url".to_string(),
            CimdError::InvalidUrl("it is not a valid URL"),
        ),
        (
            format!("https://example.com/{}", "a".repeat(MAX_URL_LEN)),
            CimdError::InvalidUrl("it is too long"),
        ),
    ];
    for (url, expected) in cases {
        let err = resolver.resolve(&url, T0).await.unwrap_err();
        assert_eq!(err, expected, "{url}");
        assert!(!err.is_unavailable(), "{url}");
    }
    assert_eq!(server.total(), 0);
}

#[tokio::test]
async fn dev_hosts_do_not_extend_to_other_loopback_names() {
    let server = TestServer::start().await;
    let resolver = dev_resolver();
    let err = resolver
        .resolve(&format!("https://localhost:{}/client", server.port), T0)
        .await
        .unwrap_err();
    assert_eq!(err, CimdError::NonPublicAddress);
    assert_eq!(server.total(), 0);
}

#[tokio::test]
async fn non_public_message_does_not_name_the_address() {
    let err = CimdResolver::new(CimdConfig::default())
        .resolve("https://localhost/client", T0)
        .await
        .unwrap_err();
    assert_eq!(err, CimdError::NonPublicAddress);
    let message = err.to_string();
    assert!(!message.contains("127.0.0.1") && !message.contains("::1"));
    assert_eq!(
        message,
        "the client metadata host resolves to a non-public address"
    );
}

/// Told apart, these let anyone map internal host names ("resolves to a
/// non-public address" against "could not be resolved") and probe what
/// Gatehouse can reach, without signing in.
#[tokio::test]
async fn every_fetch_failure_reads_the_same_to_the_client() {
    let resolver = CimdResolver::new(CimdConfig::default());
    let internal = resolver
        .resolve("https://localhost/client", T0)
        .await
        .unwrap_err();
    let missing = resolver
        .resolve("https://name-that-does-not-exist.invalid/client", T0)
        .await
        .unwrap_err();
    assert_eq!(internal, CimdError::NonPublicAddress);
    assert_eq!(missing, CimdError::Resolve);
    let shown = internal.public_message();
    for other in [
        missing,
        CimdError::Timeout,
        CimdError::Unreachable,
        CimdError::Redirect,
        CimdError::Status(404),
    ] {
        assert_eq!(other.public_message(), shown, "{other:?}");
    }
    // A refusal of the URL or of the document itself is still explained.
    assert_ne!(CimdError::InvalidDocument("x").public_message(), shown);
}

#[tokio::test]
async fn domains_outside_the_allowlist_are_refused() {
    let server = TestServer::start().await;
    let resolver = CimdResolver::new(CimdConfig {
        allowed_domains: vec!["Example.COM.".to_string()],
        ..CimdConfig::default()
    });
    for url in [
        "https://evil.com/client",
        "https://notexample.com/client",
        "https://example.com.evil.com/client",
    ] {
        assert_eq!(
            resolver.resolve(url, T0).await.unwrap_err(),
            CimdError::DomainNotAllowed,
            "{url}"
        );
    }
    assert_eq!(server.total(), 0);
}

#[test]
fn allowlist_accepts_the_domain_and_its_subdomains() {
    let resolver = CimdResolver::new(CimdConfig {
        allowed_domains: vec!["example.com".to_string()],
        ..CimdConfig::default()
    });
    let config = resolver.config();
    for url in [
        "https://example.com/client",
        "https://app.example.com/client",
        "https://a.b.example.com/client.json",
    ] {
        assert!(check_url(url, config).is_ok(), "{url}");
    }
}

#[test]
fn cache_control_is_interpreted() {
    let config = CimdConfig::default();
    let ttl = |values: &[&str]| {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(CACHE_CONTROL, v.parse().unwrap());
        }
        cache_ttl(&headers, &config)
    };
    assert_eq!(ttl(&[]), 300);
    assert_eq!(ttl(&["public"]), 300);
    assert_eq!(ttl(&["max-age=60"]), 60);
    assert_eq!(ttl(&["Max-Age=\"60\""]), 60);
    assert_eq!(ttl(&["max-age=600, max-age=60"]), 60);
    assert_eq!(ttl(&["max-age=999999999"]), 86_400);
    assert_eq!(ttl(&["max-age=-5"]), 0);
    assert_eq!(ttl(&["max-age=soon"]), 0);
    assert_eq!(ttl(&["max-age=60", "no-store"]), 0);
    assert_eq!(ttl(&["no-cache"]), 0);
}

#[test]
fn unavailable_distinguishes_network_trouble_from_bad_documents() {
    assert!(CimdError::Resolve.is_unavailable());
    assert!(CimdError::Timeout.is_unavailable());
    assert!(CimdError::Unreachable.is_unavailable());
    assert!(CimdError::Status(503).is_unavailable());
    assert!(CimdError::Status(429).is_unavailable());
    assert!(!CimdError::Status(404).is_unavailable());
    assert!(!CimdError::NonPublicAddress.is_unavailable());
    assert!(!CimdError::InvalidDocument("x").is_unavailable());
    assert!(!CimdError::TooLarge(1).is_unavailable());
}
