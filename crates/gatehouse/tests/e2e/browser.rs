//! A scripted browser for the login, consent and device pages: it keeps
//! cookies, reads hidden form fields and posts forms, over raw HTTP, so
//! tests can also send what no real page would.

use std::collections::HashMap;

use base64::Engine;
use reqwest::header::HeaderMap;
use sha2::Digest;

use super::harness::Server;

pub const REDIRECT: &str = "http://localhost:9/cb";

pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<String> {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// An input's value (the pages escape `&<>"'` in values).
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\"");
        let at = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in:\n{}", self.body));
        let tag_end = self.body[at..].find('>').unwrap() + at;
        let tag = &self.body[self.body[..at].rfind('<').unwrap()..tag_end];
        let Some(start) = tag.find("value=\"") else {
            return String::new();
        };
        let value = &tag[start + 7..];
        value[..value.find('"').unwrap()]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    }

    pub fn is_login(&self) -> bool {
        self.body.contains("name=\"password\"")
    }

    pub fn is_consent(&self) -> bool {
        self.body.contains("name=\"decision\"") && self.body.contains("name=\"txn\"")
    }
}

pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new(server: &Server) -> Browser {
        Browser {
            base: server.base.clone(),
            http: server.http.clone(),
            cookies: HashMap::new(),
        }
    }

    /// A browser whose requests come from `address`: every 127.0.0.0/8
    /// address reaches the loopback listener, so a test can sign in from
    /// several sources.
    pub fn from_address(server: &Server, address: &str) -> Browser {
        let address: std::net::IpAddr = address.parse().unwrap();
        Browser {
            base: server.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(address)
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base)
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path_or_url: &str) -> Page {
        let response = self
            .http
            .get(self.url(path_or_url))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .http
            .post(self.url(path))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// Follows 303s to our own pages; stops at a page or an external redirect.
    pub async fn follow(&mut self, mut page: Page) -> Page {
        while let Some(location) = page.location().filter(|l| l.starts_with('/')) {
            page = self.get(&location).await;
        }
        page
    }

    /// GET, then follow our own redirects.
    pub async fn visit(&mut self, path_or_url: &str) -> Page {
        let page = self.get(path_or_url).await;
        self.follow(page).await
    }

    /// Logs in on a login page and follows to the next page.
    pub async fn login_then(&mut self, page: &Page, username: &str, password: &str) -> Page {
        let posted = self.login(page, username, password).await;
        self.follow(posted).await
    }

    pub async fn login(&mut self, page: &Page, username: &str, password: &str) -> Page {
        assert!(page.is_login(), "expected the login page:\n{}", page.body);
        let csrf = page.field("csrf");
        let continue_to = page.field("continue");
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("continue", &continue_to),
                ("username", username),
                ("password", password),
            ],
        )
        .await
    }

    pub async fn decide(&mut self, page: &Page, decision: &str) -> Page {
        assert!(
            page.is_consent(),
            "expected the consent page:\n{}",
            page.body
        );
        let csrf = page.field("csrf");
        let txn = page.field("txn");
        self.post(
            "/authorize/consent",
            &[("csrf", &csrf), ("txn", &txn), ("decision", decision)],
        )
        .await
    }

    /// Logs in if asked, approves, and returns the redirect to the client.
    pub async fn authorize(&mut self, url: &str, username: &str, password: &str) -> String {
        let mut page = self.visit(url).await;
        if page.is_login() {
            let posted = self.login(&page, username, password).await;
            assert_eq!(posted.status, 303, "login: {}", posted.body);
            page = self.follow(posted).await;
        }
        if page.is_consent() {
            page = self.decide(&page, "approve").await;
            assert_eq!(page.status, 303);
        }
        page.location()
            .unwrap_or_else(|| panic!("no redirect: {} {}", page.status, page.body))
    }
}

/// A PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The query parameters of a URL, as a map (last value wins).
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A user with the reader role; returns the generated password.
pub fn add_user(server: &Server, name: &str, role: &str) -> String {
    let v = server.cli_json(&["users", "add", name, "--role", role]);
    v["password"].as_str().unwrap().to_string()
}

/// A public client with the test redirect URI.
pub fn public_client(server: &Server, name: &str) -> String {
    let v = server.cli_json(&[
        "clients",
        "create",
        "--name",
        name,
        "--public",
        "--redirect-uri",
        REDIRECT,
    ]);
    v["client_id"].as_str().unwrap().to_string()
}

pub fn authorize_url(
    server: &Server,
    client_id: &str,
    challenge: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("scope", "tools:read"),
    ];
    // Later pairs replace earlier ones of the same name; "" removes.
    for (name, value) in extra {
        pairs.retain(|(n, _)| n != name);
        if !value.is_empty() {
            pairs.push((name, value));
        }
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{}/authorize?{query}", server.base)
}

/// POSTs a form to the token endpoint; every answer must be `no-store`.
pub async fn token(server: &Server, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (status, headers, body) = super::oauth::token_request(server, form, None).await;
    assert_eq!(headers["cache-control"], "no-store");
    (status, body)
}

/// A refresh-token grant for a public client.
pub async fn refresh(
    server: &Server,
    client: &str,
    refresh_token: &str,
) -> (u16, serde_json::Value) {
    token(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// A server with the reader `alice`, a public client, and a fresh code
/// that `alice` approved for it (not yet redeemed).
pub struct SignedIn {
    pub server: Server,
    pub client: String,
    pub verifier: String,
    pub code: String,
}

pub async fn signed_in() -> SignedIn {
    let server = Server::start(None);
    let password = add_user(&server, "alice", "reader");
    let client = public_client(&server, "app");
    let (verifier, challenge) = pkce();
    let mut browser = Browser::new(&server);
    let code = code_for(
        &server,
        &mut browser,
        &client,
        &challenge,
        ("alice", &password),
    )
    .await;
    SignedIn {
        server,
        client,
        verifier,
        code,
    }
}

/// The code from the redirect after login and consent.
pub async fn code_for(
    server: &Server,
    browser: &mut Browser,
    client_id: &str,
    challenge: &str,
    user: (&str, &str),
) -> String {
    let url = authorize_url(server, client_id, challenge, &[]);
    let location = browser.authorize(&url, user.0, user.1).await;
    query(&location)["code"].clone()
}

/// Redeems a code with the standard parameters.
pub async fn redeem(
    server: &Server,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (u16, serde_json::Value) {
    let resource = server.mcp_url();
    token(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("resource", &resource),
        ],
    )
    .await
}
