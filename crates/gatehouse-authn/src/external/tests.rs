//! External issuers against a JWKS endpoint on loopback that a test can
//! rotate, take down and count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_core::{CredentialKind, Timestamp};
use serde_json::{Value, json};

use super::test_keys::{TestKey, jwks};
use super::{ExternalIssuers, IssuerConfig};
use crate::jwt::JwtError;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const NOW: i64 = 1_900_000_000;

struct Provider {
    keys: Mutex<Value>,
    up: AtomicBool,
    key_fetches: AtomicU64,
    /// The issuer the metadata document names (tests can make it lie).
    named_issuer: Mutex<String>,
}

async fn metadata(State(p): State<Arc<Provider>>) -> Response {
    if !p.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let issuer = p.named_issuer.lock().unwrap().clone();
    axum::Json(json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") })).into_response()
}

async fn keys(State(p): State<Arc<Provider>>) -> Response {
    p.key_fetches.fetch_add(1, Ordering::SeqCst);
    if !p.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let body = p.keys.lock().unwrap().clone();
    ([("cache-control", "max-age=600")], axum::Json(body)).into_response()
}

/// A provider publishing `keys`, and its issuer URL.
async fn provider(keys_published: &[TestKey]) -> (Arc<Provider>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Provider {
        keys: Mutex::new(jwks(keys_published)),
        up: AtomicBool::new(true),
        key_fetches: AtomicU64::new(0),
        named_issuer: Mutex::new(issuer.clone()),
    });
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/keys", get(keys))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, issuer)
}

const ROLES: &str = "roles_claim = \"realm_access.roles\"\n\
    role_map = { \"mcp-readers\" = \"reader\", \"mcp-ops\" = \"executor\" }";

/// An internal issuer entry; `extra` adds fields (the default role mapping
/// unless it sets `roles_claim` itself).
fn config(issuer: &str, extra: &str) -> IssuerConfig {
    let roles = if extra.contains("roles_claim") {
        ""
    } else {
        ROLES
    };
    toml::from_str(&format!(
        "issuer = \"{issuer}\"\ninternal = true\n{roles}\n{extra}"
    ))
    .unwrap()
}

fn issuers(configs: &[IssuerConfig]) -> ExternalIssuers {
    ExternalIssuers::new(configs, RESOURCE).unwrap()
}

fn claims(issuer: &str) -> Value {
    json!({
        "iss": issuer, "sub": "alice", "azp": "claude-desktop", "aud": RESOURCE,
        "exp": NOW + 300, "iat": NOW - 10, "jti": "tok-1",
        "realm_access": { "roles": ["mcp-readers", "offline_access"] },
        "scope": "tools:read openid",
    })
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

#[tokio::test]
async fn tokens_of_every_accepted_algorithm_map_to_a_principal() {
    let keys = [
        TestKey::rsa("r"),
        TestKey::es256("e"),
        TestKey::ed25519("d"),
    ];
    let (_provider, issuer) = provider(&keys).await;
    let external = issuers(&[config(&issuer, "")]);
    for key in &keys {
        let principal = external
            .authenticate(&key.token(&claims(&issuer)), at(NOW))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.alg()));
        assert_eq!(principal.human.as_deref(), Some("alice"));
        assert_eq!(principal.agent, "claude-desktop");
        assert_eq!(principal.tenant, "default");
        // Mapped roles only: `offline_access` is not one.
        assert_eq!(principal.roles, vec!["reader".to_string()]);
        assert_eq!(
            principal.scopes,
            Some(vec!["tools:read".into(), "openid".into()])
        );
        assert_eq!(principal.credential.kind, CredentialKind::ExternalToken);
        assert_eq!(principal.credential.id, "tok-1");
    }
    // PS256 with the same RSA key (no `alg` in its JWK).
    let header = json!({ "alg": "PS256", "typ": "at+jwt", "kid": "r" }).to_string();
    let token = keys[0].sign_raw(&header, &claims(&issuer).to_string());
    assert!(external.authenticate(&token, at(NOW)).await.is_ok());
}

#[tokio::test]
async fn claim_mappings_follow_the_configuration() {
    let key = TestKey::es256("e");
    let (_provider, issuer) = provider(std::slice::from_ref(&key)).await;
    let external = issuers(&[config(
        &issuer,
        "tenant_claim = \"org.id\"\ntenants = [\"acme\"]\nroles_claim = \"groups\"\n\
         role_map = { \"ops\" = \"admin\" }\ntoken_type = \"JWT\"",
    )]);
    let mut c = claims(&issuer);
    c["org"] = json!({ "id": "acme" });
    c["groups"] = json!(["ops", "ops", "sales"]);
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["tools:read"]);
    c.as_object_mut().unwrap().remove("jti");
    let header = json!({ "alg": "ES256", "typ": "JWT", "kid": "e" }).to_string();
    let token = key.sign_raw(&header, &c.to_string());
    let principal = external.authenticate(&token, at(NOW)).await.unwrap();
    assert_eq!(principal.tenant, "acme");
    assert_eq!(principal.roles, vec!["admin".to_string()]);
    assert_eq!(principal.scopes, Some(vec!["tools:read".into()]));
    // Without a jti the credential is named by a digest, never the token.
    assert!(principal.credential.id.starts_with("sha256:"));
    assert!(!principal.credential.id.contains(&token[..20]));
    // A tenant the provider may not name is refused: it would otherwise
    // get that tenant's secrets and approvals with its own role map.
    c["org"] = json!({ "id": "globex" });
    let token = key.sign_raw(&header, &c.to_string());
    assert_eq!(
        external.authenticate(&token, at(NOW)).await.unwrap_err(),
        JwtError::UnusableClaim("tenant")
    );
    // A required tenant claim that is missing refuses the token.
    c.as_object_mut().unwrap().remove("org");
    let token = key.sign_raw(&header, &c.to_string());
    assert_eq!(
        external.authenticate(&token, at(NOW)).await.unwrap_err(),
        JwtError::MissingClaim("tenant")
    );
    // A machine token (sub = client) has no human.
    let mut machine = claims(&issuer);
    machine["sub"] = "svc".into();
    machine["azp"] = "svc".into();
    machine["org"] = json!({ "id": "acme" });
    let token = key.sign_raw(&header, &machine.to_string());
    let principal = external.authenticate(&token, at(NOW)).await.unwrap();
    assert_eq!(principal.human, None);
    assert_eq!(principal.agent, "svc");
}

/// The JWT attack table (J1–J15), sent to an issuer with real keys.
#[tokio::test]
async fn attack_tokens_are_refused() {
    // This issuer publishes "e"; another configured issuer publishes "r".
    let (_this, issuer) = provider(&[TestKey::es256("e")]).await;
    let other_key = [TestKey::rsa("r")];
    let (_other, other) = provider(&other_key).await;
    let external = issuers(&[config(&issuer, ""), config(&other, "")]);
    let rsa = &other_key[0];
    // The attacker's own key, presented under this issuer's kid.
    let ec = TestKey::es256("e");
    let good = claims(&issuer);
    let h =
        |alg: &str, typ: &str, kid: &str| json!({ "alg": alg, "typ": typ, "kid": kid }).to_string();
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s.as_bytes());
    let unsigned = format!(
        "{}.{}.",
        b64(&h("none", "at+jwt", "e")),
        b64(&good.to_string())
    );
    let hs256 = format!(
        "{}.{}.{}",
        b64(&h("HS256", "at+jwt", "e")),
        b64(&good.to_string()),
        b64("sig")
    );
    let mut cases: Vec<(&str, String, JwtError)> = vec![
        ("J1 alg none", unsigned, JwtError::Malformed),
        ("J2 HS256 with the public key", hs256, JwtError::UnsupportedAlgorithm),
        ("J5 kid traversal", ec.sign_raw(&h("ES256", "at+jwt", "../../dev/null"), &good.to_string()), JwtError::UnknownKey),
        ("J5 long kid", ec.sign_raw(&h("ES256", "at+jwt", &"k".repeat(300)), &good.to_string()), JwtError::UnknownKey),
        ("J5 no kid", ec.sign_raw(&json!({"alg": "ES256", "typ": "at+jwt"}).to_string(), &good.to_string()), JwtError::MissingKeyId),
        ("J7 crit", ec.sign_raw(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "e", "crit": ["exp"]}).to_string(), &good.to_string()), JwtError::CriticalHeader),
        ("J7 b64", ec.sign_raw(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "e", "b64": false}).to_string(), &good.to_string()), JwtError::UnsupportedHeader),
        ("J8 ID token typ", ec.sign_raw(&h("ES256", "JWT", "e"), &good.to_string()), JwtError::WrongType),
        ("J9 zip", ec.sign_raw(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "e", "zip": "DEF"}).to_string(), &good.to_string()), JwtError::UnsupportedHeader),
        ("J9 JWE", "a.b.c.d.e".to_string(), JwtError::Malformed),
        ("J14 duplicate alg", ec.sign_raw(r#"{"alg":"ES256","alg":"none","typ":"at+jwt","kid":"e"}"#, &good.to_string()), JwtError::Malformed),
        ("J14 duplicate iss", ec.sign_raw(&h("ES256", "at+jwt", "e"), &format!(r#"{{"iss":"{issuer}","iss":"{issuer}","sub":"a","aud":"{RESOURCE}","exp":{}}}"#, NOW + 60)), JwtError::Malformed),
        ("J16 oversized", "a".repeat(9000), JwtError::TooLarge),
        ("unknown issuer", ec.sign_raw(&h("ES256", "at+jwt", "e"), &claims("https://evil.example.com").to_string()), JwtError::UnknownIssuer),
        ("no iss", ec.sign_raw(&h("ES256", "at+jwt", "e"), &json!({"sub": "a"}).to_string()), JwtError::Malformed),
        // Another issuer's kid: the key is looked up only in this issuer's set.
        ("other issuer's kid", rsa.sign_raw(&h("RS256", "at+jwt", "r"), &good.to_string()), JwtError::UnknownKey),
    ];
    // A forged signature under a real kid of this issuer.
    cases.push((
        "forged signature",
        ec.sign_raw(&h("ES256", "at+jwt", "e"), &good.to_string()),
        JwtError::BadSignature,
    ));
    for (name, token, expected) in cases {
        let error = external.authenticate(&token, at(NOW)).await.unwrap_err();
        assert_eq!(error, expected, "{name}");
        // Anyone can make each of these: they count toward a lockout.
        assert!(!error.signature_was_valid(), "{name}");
    }
}

#[tokio::test]
async fn the_algorithm_is_pinned_by_the_key_not_the_header() {
    let published = [TestKey::rsa("r"), TestKey::es256("e")];
    let (_provider, issuer) = provider(&published).await;
    let external = issuers(&[config(&issuer, "algorithms = [\"RS256\", \"ES256\"]")]);
    let good = claims(&issuer).to_string();
    // An ES256 header naming the RSA key: refused before any signature check.
    let header = json!({ "alg": "ES256", "typ": "at+jwt", "kid": "r" }).to_string();
    assert_eq!(
        external
            .authenticate(&published[1].sign_raw(&header, &good), at(NOW))
            .await
            .unwrap_err(),
        JwtError::UnsupportedAlgorithm
    );
    // PS256 is a valid RSA algorithm, but not on this issuer's list.
    let header = json!({ "alg": "PS256", "typ": "at+jwt", "kid": "r" }).to_string();
    assert_eq!(
        external
            .authenticate(&published[0].sign_raw(&header, &good), at(NOW))
            .await
            .unwrap_err(),
        JwtError::UnsupportedAlgorithm
    );
}

#[tokio::test]
async fn claims_are_checked_against_the_callers_clock() {
    let key = TestKey::es256("e");
    let (provider_state, issuer) = provider(std::slice::from_ref(&key)).await;
    let _ = provider_state;
    let external = issuers(&[config(&issuer, "")]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&issuer);
        f(&mut c);
        key.token(&c)
    };
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "J10 expired",
            with(&|c| c["exp"] = json!(NOW - 60)),
            JwtError::Expired,
        ),
        (
            "J10 no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            JwtError::MissingClaim("exp"),
        ),
        (
            "J10 exp as text",
            with(&|c| c["exp"] = json!("soon")),
            JwtError::MissingClaim("exp"),
        ),
        (
            "J11 nbf ahead",
            with(&|c| c["nbf"] = json!(NOW + 600)),
            JwtError::NotYetValid,
        ),
        (
            "J12 iat ahead",
            with(&|c| c["iat"] = json!(NOW + 600)),
            JwtError::IssuedInFuture,
        ),
        (
            "J13 wrong aud",
            with(&|c| c["aud"] = json!("https://other.example.com/mcp")),
            JwtError::WrongAudience,
        ),
        (
            "J13 no aud",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            JwtError::MissingClaim("aud"),
        ),
        (
            "a control character in sub (the principal's key separator)",
            with(&|c| c["sub"] = json!("alice\u{1f}x")),
            JwtError::UnusableClaim("sub"),
        ),
        (
            "no sub",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            JwtError::MissingClaim("sub"),
        ),
        (
            "J15 deep nesting",
            with(&|c| {
                let mut deep = json!(1);
                for _ in 0..200 {
                    deep = json!([deep]);
                }
                c["deep"] = deep;
            }),
            JwtError::Malformed,
        ),
    ];
    for (name, token, expected) in cases {
        assert_eq!(
            external.authenticate(&token, at(NOW)).await.unwrap_err(),
            expected,
            "{name}"
        );
    }
    // An `aud` array that holds ours is accepted.
    let token = with(&|c| c["aud"] = json!(["https://other.example.com", RESOURCE]));
    assert!(external.authenticate(&token, at(NOW)).await.is_ok());
}

#[tokio::test]
async fn an_unknown_kid_flood_fetches_once_per_cooldown() {
    let key = TestKey::es256("e");
    let (p, issuer) = provider(std::slice::from_ref(&key)).await;
    let external = Arc::new(issuers(&[config(
        &issuer,
        "jwks_refetch_cooldown = \"30s\"",
    )]));
    // Warm: one fetch.
    assert!(
        external
            .authenticate(&key.token(&claims(&issuer)), at(NOW))
            .await
            .is_ok()
    );
    assert_eq!(p.key_fetches.load(Ordering::SeqCst), 1);
    let stranger = TestKey::es256("stranger");
    // Past the warm fetch's cooldown.
    let flood_at = NOW + 60;
    let mut flood = Vec::new();
    for n in 0..200 {
        let external = Arc::clone(&external);
        let token = stranger.sign_raw(
            &json!({ "alg": "ES256", "typ": "at+jwt", "kid": format!("k{n}") }).to_string(),
            &claims(&issuer).to_string(),
        );
        flood.push(tokio::spawn(async move {
            external.authenticate(&token, at(flood_at)).await
        }));
    }
    for task in flood {
        assert_eq!(task.await.unwrap().unwrap_err(), JwtError::UnknownKey);
    }
    // 200 unknown kids inside one cooldown: one refetch.
    assert_eq!(p.key_fetches.load(Ordering::SeqCst), 2);
    // Good traffic is unaffected throughout.
    assert!(
        external
            .authenticate(&key.token(&claims(&issuer)), at(flood_at + 1))
            .await
            .is_ok()
    );
    assert_eq!(p.key_fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_one_refetch() {
    let old = TestKey::es256("old");
    let new = TestKey::ed25519("new");
    let (p, issuer) = provider(std::slice::from_ref(&old)).await;
    let external = issuers(&[config(&issuer, "")]);
    assert!(
        external
            .authenticate(&old.token(&claims(&issuer)), at(NOW))
            .await
            .is_ok()
    );
    // The provider rotates: the old key is gone, a new one (another type) is in.
    *p.keys.lock().unwrap() = jwks(std::slice::from_ref(&new));
    let fetches = p.key_fetches.load(Ordering::SeqCst);
    // Past the cooldown, the first token with the new kid triggers a refetch.
    assert!(
        external
            .authenticate(&new.token(&claims(&issuer)), at(NOW + 31))
            .await
            .is_ok()
    );
    assert_eq!(p.key_fetches.load(Ordering::SeqCst), fetches + 1);
    // The old key is no longer trusted, even for the very token checked
    // with it 32 s ago (validations are reused for a minute, but only with
    // the keys they were made with).
    assert_eq!(
        external
            .authenticate(&old.token(&claims(&issuer)), at(NOW + 32))
            .await
            .unwrap_err(),
        JwtError::UnknownKey
    );
}

#[tokio::test]
async fn an_outage_is_survived_with_a_warm_cache_until_the_stale_bound() {
    let key = TestKey::es256("e");
    let (p, issuer) = provider(std::slice::from_ref(&key)).await;
    let external = issuers(&[config(
        &issuer,
        "jwks_cache_min = \"10m\"\njwks_cache_max = \"10m\"\njwks_stale_for = \"1h\"",
    )]);
    let token = |now: i64| {
        let mut c = claims(&issuer);
        c["exp"] = json!(now + 300);
        c["iat"] = json!(now);
        key.token(&c)
    };
    assert!(external.authenticate(&token(NOW), at(NOW)).await.is_ok());
    p.up.store(false, Ordering::SeqCst);
    // Past the keys' lifetime, the endpoint down: stale keys serve.
    let later = NOW + 30 * 60;
    assert!(
        external
            .authenticate(&token(later), at(later))
            .await
            .is_ok()
    );
    // Past the stale bound: fail closed.
    let much_later = NOW + 2 * 3600;
    assert_eq!(
        external
            .authenticate(&token(much_later), at(much_later))
            .await
            .unwrap_err(),
        JwtError::KeysUnavailable
    );
    // Back up: accepted again (after the failed attempt's cooldown).
    p.up.store(true, Ordering::SeqCst);
    let recovered = much_later + 60;
    assert!(
        external
            .authenticate(&token(recovered), at(recovered))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_cold_cache_with_the_endpoint_down_fails_closed() {
    let key = TestKey::es256("e");
    let (p, issuer) = provider(std::slice::from_ref(&key)).await;
    p.up.store(false, Ordering::SeqCst);
    let external = issuers(&[config(&issuer, "")]);
    for n in 0..5 {
        assert_eq!(
            external
                .authenticate(&key.token(&claims(&issuer)), at(NOW + n))
                .await
                .unwrap_err(),
            JwtError::KeysUnavailable
        );
    }
    // Discovery failed once; the cooldown keeps the outage from being hammered.
    assert!(p.key_fetches.load(Ordering::SeqCst) <= 1);
}

#[tokio::test]
async fn metadata_naming_another_issuer_gives_no_keys() {
    let key = TestKey::es256("e");
    let (p, issuer) = provider(std::slice::from_ref(&key)).await;
    *p.named_issuer.lock().unwrap() = "http://127.0.0.1:1".into();
    let external = issuers(&[config(&issuer, "")]);
    assert_eq!(
        external
            .authenticate(&key.token(&claims(&issuer)), at(NOW))
            .await
            .unwrap_err(),
        JwtError::KeysUnavailable
    );
}

#[test]
fn two_entries_for_one_issuer_are_refused() {
    let c = config("https://idp.example.com", "");
    let error = ExternalIssuers::new(&[c.clone(), c], RESOURCE)
        .err()
        .unwrap();
    assert!(error.contains("configured twice"), "{error}");
}
