//! Signed assertions (client assertions, identity assertions): what is
//! accepted and every way one is refused.

use std::collections::HashMap;

use gatehouse_core::Timestamp;
use serde_json::{Value, json};

use super::test_keys::{TestKey, jwks};
use super::{
    ACCEPTED_ALGORITHMS, AssertionKeys, AssertionRules, AssertionType, ExternalKey, parse_jwks,
    unverified_issuer, verify_assertion,
};
use crate::jwt::JwtError;

const NOW: i64 = 1_900_000_000;
const CLIENT: &str = "ghc_client";
const ISSUER: &str = "https://gatehouse.example.com";

fn keys(published: &[TestKey]) -> HashMap<String, ExternalKey> {
    parse_jwks(jwks(published).to_string().as_bytes(), &ACCEPTED_ALGORITHMS).unwrap()
}

fn audiences() -> Vec<String> {
    vec![ISSUER.to_string()]
}

fn rules<'a>(audiences: &'a [String], typ: AssertionType) -> AssertionRules<'a> {
    AssertionRules {
        issuer: CLIENT,
        subject: Some(CLIENT),
        audiences,
        typ,
        max_lifetime_secs: 300,
        leeway_secs: 30,
        algorithms: &ACCEPTED_ALGORITHMS,
    }
}

fn claims() -> Value {
    json!({ "iss": CLIENT, "sub": CLIENT, "aud": ISSUER, "jti": "a-1",
            "iat": NOW, "exp": NOW + 60 })
}

fn signed(key: &TestKey, header: Value, claims: &Value) -> String {
    key.sign_raw(&header.to_string(), &claims.to_string())
}

async fn check(
    token: &str,
    keys: &HashMap<String, ExternalKey>,
    typ: AssertionType,
) -> Result<super::Assertion, JwtError> {
    let audiences = audiences();
    verify_assertion(
        token,
        AssertionKeys::Given(keys),
        &rules(&audiences, typ),
        Timestamp::from_secs(NOW),
    )
    .await
}

const CLIENT_AUTH: AssertionType = AssertionType::ClientAuthentication;

#[tokio::test]
async fn a_client_assertion_by_each_algorithm_verifies() {
    for key in [
        TestKey::rsa("r"),
        TestKey::es256("e"),
        TestKey::ed25519("d"),
    ] {
        let set = keys(std::slice::from_ref(&key));
        let header = json!({ "alg": key.alg(), "kid": key.kid });
        let assertion = check(&signed(&key, header, &claims()), &set, CLIENT_AUTH)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", key.alg()));
        assert_eq!(assertion.jti, "a-1");
        assert_eq!(assertion.exp, NOW + 60);
    }
    assert_eq!(
        unverified_issuer(&signed(
            &TestKey::es256("e"),
            json!({"alg": "ES256"}),
            &claims()
        ))
        .as_deref(),
        Some(CLIENT)
    );
}

#[tokio::test]
async fn an_assertion_naming_no_key_uses_the_only_one() {
    let key = TestKey::es256("e");
    let one = keys(std::slice::from_ref(&key));
    let token = signed(&key, json!({ "alg": "ES256", "typ": "JWT" }), &claims());
    assert!(check(&token, &one, CLIENT_AUTH).await.is_ok());
    // With two keys, which one is meant would be a guess.
    let two = keys(&[key, TestKey::ed25519("d")]);
    assert_eq!(
        check(&token, &two, CLIENT_AUTH).await.unwrap_err(),
        JwtError::UnknownKey
    );
}

#[tokio::test]
async fn bad_assertions_are_refused_with_their_reason() {
    let key = TestKey::es256("e");
    let set = keys(std::slice::from_ref(&key));
    let header = json!({ "alg": "ES256", "kid": "e" });
    let with = |change: &dyn Fn(&mut Value)| {
        let mut c = claims();
        change(&mut c);
        signed(&key, header.clone(), &c)
    };
    let cases: Vec<(&str, String, JwtError)> = vec![
        (
            "another audience",
            with(&|c| c["aud"] = json!("https://other.example.com")),
            JwtError::WrongAudience,
        ),
        (
            "ours among others (audience injection)",
            with(&|c| c["aud"] = json!([ISSUER, "https://attacker.example"])),
            JwtError::WrongAudience,
        ),
        (
            "no audience",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            JwtError::MissingClaim("aud"),
        ),
        (
            "another client as iss",
            with(&|c| c["iss"] = json!("ghc_other")),
            JwtError::WrongIssuer,
        ),
        (
            "sub is not the client",
            with(&|c| c["sub"] = json!("ghc_other")),
            JwtError::WrongSubject,
        ),
        (
            "expired",
            with(&|c| c["exp"] = json!(NOW - 60)),
            JwtError::Expired,
        ),
        (
            "valid for an hour",
            with(&|c| c["exp"] = json!(NOW + 3600)),
            JwtError::LifetimeTooLong,
        ),
        (
            "issued long before it expires",
            with(&|c| {
                c["iat"] = json!(NOW - 3000);
                c["exp"] = json!(NOW + 60);
            }),
            JwtError::LifetimeTooLong,
        ),
        (
            "no jti",
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            JwtError::MissingClaim("jti"),
        ),
        (
            "no exp",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            JwtError::MissingClaim("exp"),
        ),
        (
            "an access token's type",
            signed(
                &key,
                json!({ "alg": "ES256", "kid": "e", "typ": "at+jwt" }),
                &claims(),
            ),
            JwtError::WrongType,
        ),
        (
            "crit",
            signed(
                &key,
                json!({ "alg": "ES256", "kid": "e", "crit": ["exp"] }),
                &claims(),
            ),
            JwtError::CriticalHeader,
        ),
        (
            "alg none",
            format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims())),
            JwtError::Malformed,
        ),
        (
            "HS256",
            signed(&key, json!({ "alg": "HS256", "kid": "e" }), &claims()),
            JwtError::UnsupportedAlgorithm,
        ),
        (
            "a key not in the client's set",
            signed(&TestKey::es256("e"), header.clone(), &claims()),
            JwtError::BadSignature,
        ),
        (
            "an unknown kid",
            signed(&key, json!({ "alg": "ES256", "kid": "nope" }), &claims()),
            JwtError::UnknownKey,
        ),
    ];
    for (name, token, expected) in cases {
        let got = check(&token, &set, CLIENT_AUTH).await.map(|_| ());
        assert_eq!(got.unwrap_err(), expected, "{name}");
    }
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn an_identity_assertion_needs_its_exact_type() {
    let key = TestKey::rsa("idp");
    let set = keys(std::slice::from_ref(&key));
    let jag = AssertionType::Exactly("oauth-id-jag+jwt");
    let typed = signed(
        &key,
        json!({ "alg": "RS256", "kid": "idp", "typ": "oauth-id-jag+jwt" }),
        &claims(),
    );
    assert!(check(&typed, &set, jag).await.is_ok());
    // An ID-JAG is not a client assertion, and a plain JWT is not an ID-JAG.
    assert_eq!(
        check(&typed, &set, CLIENT_AUTH).await.unwrap_err(),
        JwtError::WrongType
    );
    let plain = signed(&key, json!({ "alg": "RS256", "kid": "idp" }), &claims());
    assert_eq!(
        check(&plain, &set, jag).await.unwrap_err(),
        JwtError::WrongType
    );
}
