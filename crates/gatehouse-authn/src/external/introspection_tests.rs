//! Opaque tokens against an RFC 7662 introspection endpoint on loopback
//! that a test can fill, take down and count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gatehouse_core::{CredentialKind, Timestamp};
use serde_json::{Value, json};

use super::{ExternalIssuers, IssuerConfig};
use crate::jwt::JwtError;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const NOW: i64 = 1_900_000_000;
const CLIENT_ID: &str = "gatehouse:prod";
const CLIENT_SECRET: &str = "s3cret/with+chars";

struct Provider {
    /// token -> the introspection answer for it (absent: inactive).
    tokens: Mutex<HashMap<String, Value>>,
    up: AtomicBool,
    requests: AtomicU64,
    /// Every form the endpoint received, for what-was-sent assertions.
    forms: Mutex<Vec<HashMap<String, String>>>,
    authorizations: Mutex<Vec<Option<String>>>,
}

async fn metadata(State(p): State<Arc<Provider>>, headers: HeaderMap) -> Response {
    let host = headers["host"].to_str().unwrap().to_owned();
    if !p.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({
        "issuer": format!("http://{host}"),
        "introspection_endpoint": format!("http://{host}/introspect"),
    }))
    .into_response()
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

async fn introspect(State(p): State<Arc<Provider>>, headers: HeaderMap, body: String) -> Response {
    p.requests.fetch_add(1, Ordering::SeqCst);
    if !p.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let authorization = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    p.forms.lock().unwrap().push(form.clone());
    p.authorizations.lock().unwrap().push(authorization.clone());
    let by_basic = authorization.as_deref() == Some(basic(CLIENT_ID, CLIENT_SECRET).as_str());
    let by_post = form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !by_basic && !by_post {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let answer = form
        .get("token")
        .and_then(|t| p.tokens.lock().unwrap().get(t).cloned())
        .unwrap_or_else(|| json!({ "active": false }));
    axum::Json(answer).into_response()
}

async fn provider() -> (Arc<Provider>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Provider {
        tokens: Mutex::new(HashMap::new()),
        up: AtomicBool::new(true),
        requests: AtomicU64::new(0),
        forms: Mutex::new(Vec::new()),
        authorizations: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/introspect", post(introspect))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, issuer)
}

/// The client secret in a file, as `file:` references it.
fn secret_file(secret: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp-secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let reference = format!("file:{}", path.display());
    (dir, reference)
}

fn config(issuer: &str, secret_ref: &str, extra: &str) -> IssuerConfig {
    toml::from_str(&format!(
        "issuer = \"{issuer}\"\ninternal = true\nleeway = \"0s\"\n\
         roles_claim = \"groups\"\nrole_map = {{ \"mcp-readers\" = \"reader\" }}\n\
         [introspection]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{secret_ref}\"\n{extra}"
    ))
    .unwrap()
}

fn active(issuer: &str) -> Value {
    json!({
        "active": true, "iss": issuer, "sub": "alice", "client_id": "vscode",
        "aud": [RESOURCE, "other"], "exp": NOW + 300, "iat": NOW - 5,
        "groups": ["mcp-readers", "staff"], "scope": "tools:read", "jti": "op-1",
        "token_type": "Bearer",
    })
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

struct Setup {
    provider: Arc<Provider>,
    issuer: String,
    external: ExternalIssuers,
    _dir: tempfile::TempDir,
}

async fn setup(secret: &str, extra: &str) -> Setup {
    let (provider, issuer) = provider().await;
    let (dir, reference) = secret_file(secret);
    let external = ExternalIssuers::new(&[config(&issuer, &reference, extra)], RESOURCE).unwrap();
    Setup {
        provider,
        issuer,
        external,
        _dir: dir,
    }
}

impl Setup {
    fn issue(&self, token: &str, answer: Value) {
        self.provider
            .tokens
            .lock()
            .unwrap()
            .insert(token.into(), answer);
    }

    async fn check(&self, token: &str, now: i64) -> Result<gatehouse_core::Principal, JwtError> {
        self.external
            .introspector()
            .unwrap()
            .authenticate(token, at(now))
            .await
    }

    fn requests(&self) -> u64 {
        self.provider.requests.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn an_active_token_maps_to_a_principal_and_its_answer_is_reused() {
    let s = setup(CLIENT_SECRET, "").await;
    s.issue("opaque-abc", active(&s.issuer));
    let principal = s.check("opaque-abc", NOW).await.unwrap();
    assert_eq!(principal.human.as_deref(), Some("alice"));
    assert_eq!(principal.agent, "vscode");
    assert_eq!(principal.roles, vec!["reader".to_string()]);
    assert_eq!(principal.scopes, Some(vec!["tools:read".to_string()]));
    assert_eq!(principal.credential.kind, CredentialKind::ExternalToken);
    assert_eq!(principal.credential.id, "op-1");
    assert_eq!(principal.expires_at, Some(at(NOW + 300)));
    // Gatehouse authenticated with its own credentials and sent the token
    // with its hint, nothing else.
    let form = s.provider.forms.lock().unwrap()[0].clone();
    assert_eq!(form.len(), 2, "{form:?}");
    assert_eq!(form["token"], "opaque-abc");
    assert_eq!(form["token_type_hint"], "access_token");
    assert_eq!(
        s.provider.authorizations.lock().unwrap()[0].as_deref(),
        Some(basic(CLIENT_ID, CLIENT_SECRET).as_str())
    );
    // Within the cache: no second request.
    s.check("opaque-abc", NOW + 29).await.unwrap();
    assert_eq!(s.requests(), 1);
    // After `cache_for` (30 s by default), the provider is asked again.
    s.check("opaque-abc", NOW + 31).await.unwrap();
    assert_eq!(s.requests(), 2);
}

#[tokio::test]
async fn a_token_revoked_at_the_provider_stops_working_after_the_cache() {
    let s = setup(CLIENT_SECRET, "cache_for = \"10s\"").await;
    s.issue("opaque-rev", active(&s.issuer));
    s.check("opaque-rev", NOW).await.unwrap();
    s.provider.tokens.lock().unwrap().remove("opaque-rev");
    assert!(s.check("opaque-rev", NOW + 9).await.is_ok());
    assert_eq!(
        s.check("opaque-rev", NOW + 11).await.unwrap_err(),
        JwtError::Inactive
    );
}

#[tokio::test]
async fn the_cache_never_outlives_the_token() {
    let s = setup(CLIENT_SECRET, "").await;
    let mut answer = active(&s.issuer);
    answer["exp"] = json!(NOW + 10);
    s.issue("opaque-short", answer);
    s.check("opaque-short", NOW).await.unwrap();
    // Cached until exp, not for the full 30 s: asked again, and expired.
    assert_eq!(
        s.check("opaque-short", NOW + 11).await.unwrap_err(),
        JwtError::Expired
    );
    assert_eq!(s.requests(), 2);
}

#[tokio::test]
async fn an_inactive_token_is_refused_and_a_replay_costs_the_provider_nothing() {
    let s = setup(CLIENT_SECRET, "").await;
    assert_eq!(
        s.check("made-up-token", NOW).await.unwrap_err(),
        JwtError::Inactive
    );
    for _ in 0..5 {
        assert_eq!(
            s.check("made-up-token", NOW).await.unwrap_err(),
            JwtError::StillInactive
        );
    }
    assert_eq!(s.requests(), 1);
    // A new token is a guess: it counts toward the lockout. The same one
    // again tells a guesser nothing, and does not: a client repeating its
    // expired token locked everyone behind its address.
    assert!(!JwtError::Inactive.signature_was_valid());
    assert!(JwtError::StillInactive.signature_was_valid());
    assert_eq!(JwtError::StillInactive.code(), "token_inactive");
}

/// A change to an active answer.
type Change = fn(&mut Value, &str);

#[tokio::test]
async fn active_answers_are_held_to_the_jwt_discipline() {
    let s = setup(CLIENT_SECRET, "").await;
    let cases: [(&str, Change, JwtError); 7] = [
        (
            "wrong-aud",
            |a, _| a["aud"] = json!("https://other.example/mcp"),
            JwtError::WrongAudience,
        ),
        (
            "no-aud",
            |a, _| {
                a.as_object_mut().unwrap().remove("aud");
            },
            JwtError::MissingClaim("aud"),
        ),
        (
            "wrong-iss",
            |a, _| a["iss"] = json!("https://evil.example"),
            JwtError::WrongIssuer,
        ),
        (
            "no-exp",
            |a, _| {
                a.as_object_mut().unwrap().remove("exp");
            },
            JwtError::MissingClaim("exp"),
        ),
        (
            "refresh",
            |a, _| a["token_type"] = json!("refresh_token"),
            JwtError::WrongType,
        ),
        (
            "future-nbf",
            |a, _| a["nbf"] = json!(NOW + 60),
            JwtError::NotYetValid,
        ),
        (
            "expired",
            |a, _| a["exp"] = json!(NOW - 1),
            JwtError::Expired,
        ),
    ];
    for (token, change, expected) in cases {
        let mut answer = active(&s.issuer);
        change(&mut answer, &s.issuer);
        s.issue(token, answer);
        assert_eq!(s.check(token, NOW).await.unwrap_err(), expected, "{token}");
    }
    // `active` must be exactly true.
    s.issue("active-string", json!({ "active": "true" }));
    assert_eq!(
        s.check("active-string", NOW).await.unwrap_err(),
        JwtError::Inactive
    );
}

#[tokio::test]
async fn the_endpoint_down_or_refusing_gatehouse_fails_closed() {
    let s = setup("not-the-secret", "").await;
    s.issue("opaque-abc", active(&s.issuer));
    assert_eq!(
        s.check("opaque-abc", NOW).await.unwrap_err(),
        JwtError::IntrospectionUnavailable
    );
    let s = setup(CLIENT_SECRET, "").await;
    s.issue("opaque-abc", active(&s.issuer));
    s.provider.up.store(false, Ordering::SeqCst);
    assert_eq!(
        s.check("opaque-abc", NOW).await.unwrap_err(),
        JwtError::IntrospectionUnavailable
    );
    // An outage is not the caller's doing: no lockout count.
    assert!(JwtError::IntrospectionUnavailable.signature_was_valid());
    // Not cached: back up (and past the discovery cooldown), the token works.
    s.provider.up.store(true, Ordering::SeqCst);
    assert!(s.check("opaque-abc", NOW + 31).await.is_ok());
}

#[tokio::test]
async fn client_secret_post_sends_the_credentials_in_the_form() {
    let s = setup(CLIENT_SECRET, "auth_method = \"client_secret_post\"").await;
    s.issue("opaque-abc", active(&s.issuer));
    s.check("opaque-abc", NOW).await.unwrap();
    assert_eq!(s.provider.authorizations.lock().unwrap()[0], None);
    assert_eq!(
        s.provider.forms.lock().unwrap()[0]["client_id"],
        CLIENT_ID.to_string()
    );
}

#[tokio::test]
async fn malformed_and_oversized_tokens_are_never_sent() {
    let s = setup(CLIENT_SECRET, "").await;
    assert_eq!(s.check("a b", NOW).await.unwrap_err(), JwtError::Malformed);
    assert_eq!(
        s.check(&"a".repeat(5000), NOW).await.unwrap_err(),
        JwtError::TooLarge
    );
    assert_eq!(s.requests(), 0);
}

#[tokio::test]
async fn only_one_issuer_may_introspect() {
    let (_a, first) = provider().await;
    let (_b, second) = provider().await;
    let (_dir, reference) = secret_file(CLIENT_SECRET);
    let error = ExternalIssuers::new(
        &[
            config(&first, &reference, ""),
            config(&second, &reference, ""),
        ],
        RESOURCE,
    )
    .err()
    .unwrap();
    assert!(error.contains("only one issuer may introspect"), "{error}");
}

#[test]
fn a_literal_client_secret_is_refused() {
    let parsed: Result<IssuerConfig, _> = toml::from_str(
        "issuer = \"https://idp.example.com\"\n\
         introspection = { client_id = \"gh\", client_secret = \"hunter2\" }",
    );
    // The message (what Gatehouse reports, with the line and column) does
    // not quote the value.
    let error = parsed.err().unwrap().message().to_string();
    assert!(error.contains("env:NAME"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn a_machine_token_without_sub_is_its_clients_own() {
    let s = setup(CLIENT_SECRET, "").await;
    let mut answer = active(&s.issuer);
    answer.as_object_mut().unwrap().remove("sub");
    s.issue("machine-token", answer);
    let principal = s.check("machine-token", NOW).await.unwrap();
    assert_eq!(principal.agent, "vscode");
    assert_eq!(principal.human, None);
    // Neither a subject nor a client: refused.
    let mut nameless = active(&s.issuer);
    nameless.as_object_mut().unwrap().remove("sub");
    nameless.as_object_mut().unwrap().remove("client_id");
    s.issue("nameless-token", nameless);
    assert_eq!(
        s.check("nameless-token", NOW).await.unwrap_err(),
        JwtError::MissingClaim("sub")
    );
}

#[tokio::test]
async fn a_provider_that_is_down_is_not_asked_once_per_token() {
    let s = setup(CLIENT_SECRET, "").await;
    s.issue("opaque-abc", active(&s.issuer));
    s.provider.up.store(false, Ordering::SeqCst);
    let introspector = s.external.introspector().unwrap();
    for n in 0..20 {
        assert_eq!(
            s.check(&format!("token-{n}"), NOW + n).await.unwrap_err(),
            JwtError::IntrospectionUnavailable
        );
    }
    // One discovery attempt within the 30 s cooldown, then one more after it.
    assert_eq!(introspector.discovery_count(), 1);
    s.provider.up.store(true, Ordering::SeqCst);
    assert!(s.check("opaque-abc", NOW + 31).await.is_ok());
    assert_eq!(introspector.discovery_count(), 2);
}
