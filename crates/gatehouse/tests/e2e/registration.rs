//! Dynamic client registration (RFC 7591) and Client ID Metadata
//! Documents: what a client may register, and the SSRF guard on every
//! document Gatehouse fetches (row A12).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::browser::{Browser, add_user, authorize_url, pkce, query, token};
use super::harness::Server;

async fn register(
    server: &Server,
    body: &str,
    bearer: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = server
        .http
        .post(format!("{}/oauth/register", server.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn clients_register_public_or_confidential_and_the_secret_is_shown_once() {
    let server = Server::start(None);
    let (status, headers, public) = register(
        &server,
        r#"{"redirect_uris":["http://127.0.0.1:33418/"],"token_endpoint_auth_method":"none",
            "grant_types":["authorization_code","refresh_token"],"client_name":"VS Code"}"#,
        None,
    )
    .await;
    assert_eq!(status, 201, "{public}");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(public["client_id"].as_str().unwrap().starts_with("ghc_"));
    assert!(public.get("client_secret").is_none());
    assert_eq!(public["token_endpoint_auth_method"], "none");
    let (status, _, confidential) = register(
        &server,
        r#"{"redirect_uris":["https://app.example.com/cb"],"client_name":"web app"}"#,
        None,
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        confidential["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert!(confidential["client_secret"].as_str().unwrap().len() >= 40);
    // The secret expires when the lifecycle revokes the client: at its
    // maximum age (90 days unless configured), not "never" (0).
    assert_eq!(
        confidential["client_secret_expires_at"].as_i64().unwrap(),
        confidential["client_id_issued_at"].as_i64().unwrap() + 90 * 86_400
    );
    let listed = server.cli_json(&["clients", "list"]);
    let dynamic: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["registered_by"] == "dynamic")
        .collect();
    assert_eq!(dynamic.len(), 2);
    let text = serde_json::to_string(&listed).unwrap();
    assert!(!text.contains(confidential["client_secret"].as_str().unwrap()));
    let audit = server.audit(&["--kind", "registration"]);
    assert_eq!(audit.len(), 2);
}

/// Issue 9 item 15: RFC 7591 §2 asks for redirect URIs only for
/// redirect-based grants, so a device-only client registers without any
/// and with `response_types: []`, then completes the device flow. A client
/// that asks for the authorization code grant still needs them.
#[tokio::test]
async fn a_device_only_client_registers_without_redirect_uris_and_gets_tokens() {
    let server = Server::start(None);
    let (status, _, device) = register(
        &server,
        r#"{"client_name":"living-room tv","token_endpoint_auth_method":"none",
            "grant_types":["urn:ietf:params:oauth:grant-type:device_code"],"response_types":[]}"#,
        None,
    )
    .await;
    assert_eq!(status, 201, "{device}");
    assert_eq!(device["redirect_uris"], json!([]));
    assert_eq!(device["response_types"], json!([]));
    assert!(device.get("client_secret").is_none());
    let client = device["client_id"].as_str().unwrap();

    // Omitting both lists works too: no grant that needs them.
    let (status, _, omitted) = register(
        &server,
        r#"{"token_endpoint_auth_method":"none",
            "grant_types":["urn:ietf:params:oauth:grant-type:device_code","refresh_token"]}"#,
        None,
    )
    .await;
    assert_eq!(status, 201, "{omitted}");
    assert_eq!(omitted["response_types"], json!([]));

    // The authorization code grant still needs valid redirect URIs.
    for body in [
        r#"{"token_endpoint_auth_method":"none","grant_types":["authorization_code"]}"#,
        r#"{"token_endpoint_auth_method":"none","redirect_uris":[]}"#,
        r#"{"grant_types":["authorization_code","urn:ietf:params:oauth:grant-type:device_code"],"response_types":[]}"#,
        r#"{"grant_types":["urn:ietf:params:oauth:grant-type:device_code"],"redirect_uris":["javascript:alert(1)"]}"#,
    ] {
        let (status, _, refused) = register(&server, body, None).await;
        assert_eq!(status, 400, "{body}: {refused}");
    }

    // The registered client completes the device flow, and has no way
    // into /authorize.
    let password = add_user(&server, "alice", "reader");
    let (status, tokens) =
        super::device::approved_device_poll(&server, client, ("alice", &password)).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        200
    );
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let page = browser
        .visit(&authorize_url(&server, client, &challenge, &[]))
        .await;
    assert!(
        page.location().is_none(),
        "redirected: {:?}",
        page.location()
    );
    assert_eq!(page.status, 400, "{}", page.body);
}

#[tokio::test]
async fn a12_dangerous_registrations_are_refused() {
    let server = Server::start(None);
    let cases = [
        (
            r#"{"redirect_uris":["javascript:alert(1)"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["data:text/html,<script>x</script>"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["file:///etc/passwd"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["vbscript:msgbox"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["http://evil.example/cb"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["https://*.example.com/cb"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["https://app.example.com/cb#x"]}"#,
            "invalid_redirect_uri",
        ),
        (
            r#"{"redirect_uris":["https://good@evil.example/cb"]}"#,
            "invalid_redirect_uri",
        ),
        (r#"{"redirect_uris":[]}"#, "invalid_redirect_uri"),
        (r#"{"client_name":"no uris"}"#, "invalid_redirect_uri"),
        (
            r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}"#,
            "invalid_client_metadata",
        ),
        (
            r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["client_credentials"]}"#,
            "invalid_client_metadata",
        ),
        (
            r#"{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}"#,
            "invalid_client_metadata",
        ),
        (
            r#"{"redirect_uris":["https://a.example/cb"],"scope":"tools:everything"}"#,
            "invalid_client_metadata",
        ),
        ("[1,2,3]", "invalid_client_metadata"),
    ];
    for (body, error) in cases {
        let (status, _, answer) = register(&server, body, None).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some(error)),
            "{body}"
        );
    }
    let many: Vec<String> = (0..11)
        .map(|i| format!("\"https://a.example/cb{i}\""))
        .collect();
    let body = format!("{{\"redirect_uris\":[{}]}}", many.join(","));
    assert_eq!(register(&server, &body, None).await.0, 400);
    let huge = format!(
        "{{\"redirect_uris\":[\"https://a.example/cb\"],\"client_name\":\"{}\"}}",
        "x".repeat(20_000)
    );
    assert_eq!(register(&server, &huge, None).await.0, 400);
    // Nothing was stored.
    assert_eq!(
        server
            .cli_json(&["clients", "list"])
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[tokio::test]
async fn a12_registration_is_rate_limited_per_source() {
    let server = Server::start(None);
    let body = r#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}"#;
    let mut statuses = Vec::new();
    for _ in 0..22 {
        statuses.push(register(&server, body, None).await.0);
    }
    assert_eq!(&statuses[..20], &[201; 20]);
    assert_eq!(&statuses[20..], &[429, 429]);
    // 429 says when to come back (the window is a minute).
    let (_, headers, body) = register(&server, body, None).await;
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn a12_a_hostile_client_name_is_shown_escaped_on_the_consent_page() {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let (_, _, client) = register(
        &server,
        r#"{"redirect_uris":["http://localhost:9/cb"],"token_endpoint_auth_method":"none",
            "client_name":"<script>alert(1)</script>\"'"}"#,
        None,
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap();
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let login = browser
        .visit(&authorize_url(&server, client_id, &challenge, &[]))
        .await;
    let consent = browser.login_then(&login, "alice", &password).await;
    assert!(consent.is_consent());
    assert!(!consent.body.contains("<script>alert(1)"));
    assert!(
        consent
            .body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
}

/// Anyone can register a client whose redirect URI is theirs: its
/// malformed requests are shown as an error page, never redirected before
/// anyone signed in, so `/authorize?client_id=…` is no open redirector
/// (RFC 9700 §4.11.2). An operator's client gets them at its redirect URI.
#[tokio::test]
async fn a_registered_clients_bad_requests_are_not_redirected_to_it() {
    let server = Server::start(None);
    let (_, _, client) = register(
        &server,
        r#"{"redirect_uris":["https://evil.example/login"],"token_endpoint_auth_method":"none"}"#,
        None,
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap();
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let extra = [
        ("redirect_uri", "https://evil.example/login"),
        ("response_type", ""),
    ];
    let page = browser
        .get(&authorize_url(&server, client_id, &challenge, &extra))
        .await;
    assert_eq!((page.status, page.location()), (400, None), "{}", page.body);
    assert!(page.body.contains("invalid_request"), "{}", page.body);
    let extra = [
        ("redirect_uri", "https://evil.example/login"),
        ("code_challenge_method", "plain"),
    ];
    let page = browser
        .get(&authorize_url(&server, client_id, &challenge, &extra))
        .await;
    assert_eq!((page.status, page.location()), (400, None), "{}", page.body);
}

/// Registration is open to anyone (20 a minute per address): the table of
/// registered clients is capped. A table filled with registrations nobody
/// signed in with refused every new client for the 30 days they lived; the
/// oldest registration that never obtained a grant now makes room.
#[tokio::test]
async fn registered_clients_are_capped_and_the_oldest_never_granted_makes_room() {
    let server = Server::start(Some("version = 1\n[oauth]\nregistration_max_clients = 2\n"));
    let body = r#"{"redirect_uris":["http://localhost:9/cb"],"token_endpoint_auth_method":"none"}"#;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, _, client) = register(&server, body, None).await;
        assert_eq!(status, 201, "{client}");
        ids.push(client["client_id"].as_str().unwrap().to_string());
    }
    let clients = server.cli_json(&["clients", "list"]);
    let dynamic: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["registered_by"] == "dynamic")
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(dynamic.len(), 2, "{clients}");
    // The newest stays; one of the two before it (the older, or either if
    // both were made in the same millisecond) made room.
    assert!(dynamic.contains(&ids[2].as_str()), "{clients}");
    assert!(
        !dynamic.contains(&ids[0].as_str()) || !dynamic.contains(&ids[1].as_str()),
        "{clients}"
    );
}

#[tokio::test]
async fn a_registered_secret_expires_at_the_configured_maximum_age_or_never() {
    let body = r#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"client_secret_basic"}"#;
    for (config, age_secs) in [
        (
            "version = 1\n[lifecycle.client_secrets]\nmax_age = \"7d\"\n",
            7 * 86_400,
        ),
        (
            "version = 1\n[lifecycle.client_secrets]\nmax_age = \"off\"\n",
            0,
        ),
    ] {
        let server = Server::start(Some(config));
        let (status, _, answer) = register(&server, body, None).await;
        assert_eq!(status, 201, "{answer}");
        let issued = answer["client_id_issued_at"].as_i64().unwrap();
        let expected = if age_secs == 0 { 0 } else { issued + age_secs };
        assert_eq!(answer["client_secret_expires_at"], expected, "{config}");
    }
}

#[tokio::test]
async fn registration_can_require_an_initial_access_token() {
    let token = "iat-0123456789abcdef0123456789abcdef";
    let server = Server::start_with_env(
        tempfile::tempdir().unwrap(),
        Some(
            "version = 1\n[oauth]\nregistration = \"token\"\nregistration_token_env = \"GH_TEST_IAT\"\n",
        ),
        &[("GH_TEST_IAT", token)],
    );
    let body = r#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}"#;
    let (status, headers, answer) = register(&server, body, None).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(register(&server, body, Some("wrong")).await.0, 401);
    assert_eq!(register(&server, body, Some(token)).await.0, 201);
}

/// A one-route HTTP server for a client metadata document; counts requests.
async fn document_server(
    document: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let url = format!("{base}/client.json");
    let body = document(&url);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn a_client_metadata_document_identifies_a_client_without_registration() {
    let (url, hits) = document_server(|url| {
        json!({
            "client_id": url,
            "client_name": "CIMD App",
            "redirect_uris": ["http://localhost:9/cb"],
            "token_endpoint_auth_method": "none",
        })
        .to_string()
    })
    .await;
    let server = Server::start(Some(
        "version = 1\n[oauth]\nclient_metadata_dev_hosts = [\"127.0.0.1\"]\n",
    ));
    let password = add_user(&server, "alice", "reader");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let login = browser
        .visit(&authorize_url(&server, &url, &challenge, &[]))
        .await;
    assert!(login.is_login(), "{}", login.body);
    assert!(login.body.contains("CIMD App"));
    let consent = browser.login_then(&login, "alice", &password).await;
    let answer = browser.decide(&consent, "approve").await;
    let code = query(&answer.location().unwrap())["code"].clone();
    let resource = server.mcp_url();
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &url),
            ("code", &code),
            ("redirect_uri", "http://localhost:9/cb"),
            ("code_verifier", &verifier),
            ("resource", &resource),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        200
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the document is cached");
    // The operator sees the client and can revoke it like any other.
    let listed = server.cli_json(&["clients", "list"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == url.as_str() && c["registered_by"] == "metadata_document")
    );
    server.cli_json(&["clients", "revoke", &url]);
    assert_eq!(
        server.rpc(Some(access), "tools/list", json!({})).await.0,
        401
    );
}

#[tokio::test]
async fn a12_metadata_documents_on_internal_addresses_are_never_fetched() {
    let (url, hits) = document_server(|url| {
        json!({"client_id": url, "redirect_uris": ["http://localhost:9/cb"]}).to_string()
    })
    .await;
    // No dev hosts: loopback, private and metadata addresses are refused.
    let server = Server::start(None);
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    for client_id in [
        url.as_str(),
        "https://169.254.169.254/latest/meta-data.json",
        "https://10.0.0.1/client.json",
        "https://localhost/client.json",
        "https://127.0.0.1/client.json",
    ] {
        let page = browser
            .get(&authorize_url(&server, client_id, &challenge, &[]))
            .await;
        assert_eq!((page.status, page.location()), (400, None), "{client_id}");
        assert!(!page.body.contains("169.254") || client_id.contains("169.254"));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

/// An HTTP server for any number of client metadata documents: the path
/// `/<name>/client.json` serves a document whose client_id is its URL and
/// whose client_name is `name(<name>)`. Returns the base URL.
async fn documents_server(name: fn(&str) -> String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let origin = base.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let origin = origin.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let label = path.trim_start_matches('/').split('/').next().unwrap_or("");
                let body = json!({
                    "client_id": format!("{origin}{path}"),
                    "client_name": name(label),
                    "redirect_uris": ["http://localhost:9/cb"],
                    "token_endpoint_auth_method": "none",
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=300\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    base
}

const DEV_HOSTS: &str = "version = 1\n[oauth]\nclient_metadata_dev_hosts = [\"127.0.0.1\"]\n";

#[tokio::test]
async fn authorize_is_rate_limited_per_source() {
    let server = Server::start(None);
    let client = super::browser::public_client(&server, "app");
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    // Each request stores a pending authorization: 30 a minute per address.
    for i in 0..30 {
        let page = browser
            .get(&authorize_url(&server, &client, &challenge, &[]))
            .await;
        assert_eq!(page.status, 200, "request {i}: {}", page.body);
    }
    let page = browser
        .get(&authorize_url(&server, &client, &challenge, &[]))
        .await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.headers.contains_key("retry-after"));
    assert!(page.location().is_none());
}

#[tokio::test]
async fn new_metadata_document_clients_are_limited_per_source() {
    let base = documents_server(|label| format!("App {label}")).await;
    let server = Server::start(Some(DEV_HOSTS));
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    // Ten new documents an hour from one address, each fetched once.
    for i in 0..10 {
        let url = format!("{base}/app{i}/client.json");
        let page = browser
            .get(&authorize_url(&server, &url, &challenge, &[]))
            .await;
        assert!(page.is_login(), "document {i}: {}", page.body);
    }
    let eleventh = format!("{base}/app10/client.json");
    let page = browser
        .get(&authorize_url(&server, &eleventh, &challenge, &[]))
        .await;
    assert_eq!(page.status, 429, "{}", page.body);
    assert!(page.headers.contains_key("retry-after"));
    // Known ones still work.
    let known = format!("{base}/app0/client.json");
    let page = browser
        .get(&authorize_url(&server, &known, &challenge, &[]))
        .await;
    assert!(page.is_login(), "{}", page.body);
    // Elsewhere an unknown document URL is an unknown client: it is never
    // fetched nor stored from the token endpoint.
    let stranger = format!("{base}/stranger/client.json");
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &stranger),
            ("code", "x"),
            ("redirect_uri", "http://localhost:9/cb"),
            ("code_verifier", "x"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let listed = server.cli_json(&["clients", "list"]);
    let metadata_clients = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["registered_by"] == "metadata_document")
        .count();
    assert_eq!(metadata_clients, 10, "{listed}");
}

#[tokio::test]
async fn the_metadata_document_client_table_is_capped_and_the_oldest_never_granted_makes_room() {
    let base = documents_server(|label| format!("App {label}")).await;
    let server = Server::start(Some(
        "version = 1\n[oauth]\nclient_metadata_dev_hosts = [\"127.0.0.1\"]\nclient_metadata_max_clients = 2\n",
    ));
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    for i in 0..2 {
        let url = format!("{base}/app{i}/client.json");
        let page = browser
            .get(&authorize_url(&server, &url, &challenge, &[]))
            .await;
        assert!(page.is_login(), "document {i}: {}", page.body);
    }
    // Full of clients nobody signed in with (any address may make ten new
    // ones known an hour, and start a sign-in with each): the oldest of them
    // makes room, rather than every new client being refused for the month
    // they live.
    let third = format!("{base}/app2/client.json");
    let page = browser
        .get(&authorize_url(&server, &third, &challenge, &[]))
        .await;
    assert!(page.is_login(), "{}", page.body);
    let clients = server.cli_json(&["clients", "list"]);
    let known: Vec<&str> = clients
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["registered_by"] == "metadata_document")
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    let first = format!("{base}/app0/client.json");
    assert!(!known.contains(&first.as_str()), "{clients}");
    assert_eq!(known.len(), 2, "{clients}");
    // A revoked one is never evicted, and stays refused.
    let second = format!("{base}/app1/client.json");
    server.cli_json(&["clients", "revoke", &second]);
    let page = browser
        .get(&authorize_url(&server, &first, &challenge, &[]))
        .await;
    assert!(page.is_login(), "{}", page.body);
    let page = browser
        .get(&authorize_url(&server, &second, &challenge, &[]))
        .await;
    assert_eq!((page.status, page.location()), (400, None));
}

#[tokio::test]
async fn a_deceptive_client_name_in_a_metadata_document_is_refused() {
    let base = documents_server(|label| match label {
        "bidi" => "Test Client\u{202E}moc.elgoog".to_string(),
        _ => "Git\u{200B}Hub".to_string(),
    })
    .await;
    let server = Server::start(Some(DEV_HOSTS));
    let (_, challenge) = pkce();
    let mut browser = Browser::new(&server);
    for label in ["bidi", "zero-width"] {
        let url = format!("{base}/{label}/client.json");
        let page = browser
            .get(&authorize_url(&server, &url, &challenge, &[]))
            .await;
        assert_eq!((page.status, page.location()), (400, None), "{label}");
        assert!(
            page.body.contains("control or formatting characters"),
            "{label}: {}",
            page.body
        );
    }
}
