//! Attack-case tests for the access-token validator (security-cases.md B2.1).

use super::*;
use crate::test_key::TestKey;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const ISSUER: &str = "https://gatehouse.example";
const AUDIENCE: &str = "https://mcp.example/mcp";
const KID: &str = "key-1";
/// 2026-01-01T00:00:00Z.
const NOW_SECS: i64 = 1_767_225_600;

fn now() -> Timestamp {
    Timestamp::from_secs(NOW_SECS)
}

impl TestKey {
    /// Signs arbitrary header/payload text with this key (raw R ‖ S).
    fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = signing_input(header, payload);
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8).unwrap();
        let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    fn header(&self) -> Value {
        json!({"alg": "ES256", "typ": "at+jwt", "kid": self.kid})
    }

    fn sign_values(&self, header: &Value, payload: &Value) -> String {
        self.sign_raw(&header.to_string(), &payload.to_string())
    }
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text.as_bytes())
}

fn signing_input(header: &str, payload: &str) -> String {
    format!("{}.{}", b64(header), b64(payload))
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "user-42",
        "aud": AUDIENCE,
        "client_id": "client-7",
        "scope": "tools:read tools:call",
        "tenant": "acme",
        "roles": ["dev"],
        "jti": "jti-1",
        "iat": NOW_SECS - 10,
        "exp": NOW_SECS + 300,
    })
}

fn with(mut value: Value, key: &str, new: Value) -> Value {
    value[key] = new;
    value
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

fn validator_for(key: &TestKey) -> AccessTokenValidator {
    AccessTokenValidator::new(
        ValidatorConfig::new(ISSUER, vec![AUDIENCE.to_owned()]),
        vec![key.verification_key()],
    )
}

fn setup() -> (TestKey, AccessTokenValidator) {
    let key = TestKey::generate(KID);
    let validator = validator_for(&key);
    (key, validator)
}

fn reject(validator: &AccessTokenValidator, token: &str) -> JwtError {
    match validator.validate(token, now()) {
        Ok(claims) => panic!("token accepted: {claims:?}"),
        Err(e) => e,
    }
}

// --- the happy path -------------------------------------------------------

#[test]
fn valid_token_is_accepted() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    let got = v.validate(&token, now()).unwrap();
    assert_eq!(got.iss, ISSUER);
    assert_eq!(got.sub, "user-42");
    assert_eq!(got.aud, Audience::Single(AUDIENCE.to_owned()));
    assert_eq!(got.client_id, "client-7");
    assert_eq!(got.scope.as_deref(), Some("tools:read tools:call"));
    assert_eq!(got.tenant.as_deref(), Some("acme"));
    assert_eq!(got.roles, vec!["dev".to_owned()]);
    assert_eq!(got.jti, "jti-1");
    assert_eq!(got.iat, NOW_SECS - 10);
    assert_eq!(got.exp, NOW_SECS + 300);
    assert_eq!(got.nbf, None);
}

#[test]
fn hand_signed_token_is_accepted() {
    let (key, v) = setup();
    let token = key.sign_values(&key.header(), &claims());
    assert!(v.validate(&token, now()).is_ok());
}

#[test]
fn optional_claims_may_be_absent() {
    let (key, v) = setup();
    let payload = without(without(without(claims(), "scope"), "tenant"), "roles");
    let got = v.validate(&key.encode(&payload), now()).unwrap();
    assert_eq!(got.scope, None);
    assert_eq!(got.tenant, None);
    assert!(got.roles.is_empty());
}

#[test]
fn typ_variants_per_rfc_9068_are_accepted() {
    let (key, v) = setup();
    for typ in [
        "at+jwt",
        "AT+JWT",
        "application/at+jwt",
        "Application/AT+JWT",
    ] {
        let header = with(key.header(), "typ", json!(typ));
        let token = key.sign_values(&header, &claims());
        assert!(v.validate(&token, now()).is_ok(), "typ {typ}");
    }
}

#[test]
fn second_key_in_the_set_is_used_by_kid() {
    let a = TestKey::generate("a");
    let b = TestKey::generate("b");
    let v = AccessTokenValidator::new(
        ValidatorConfig::new(ISSUER, vec![AUDIENCE.to_owned()]),
        vec![a.verification_key(), b.verification_key()],
    );
    assert!(v.validate(&a.encode(&claims()), now()).is_ok());
    assert!(v.validate(&b.encode(&claims()), now()).is_ok());
}

// --- J1: alg none ---------------------------------------------------------

#[test]
fn alg_none_is_rejected() {
    let (key, v) = setup();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": KID});
        let input = signing_input(&header.to_string(), &claims().to_string());
        // Empty signature segment.
        assert_eq!(
            reject(&v, &format!("{input}.")),
            JwtError::Malformed,
            "{alg}"
        );
        // Missing signature segment.
        assert_eq!(reject(&v, &input), JwtError::Malformed, "{alg}");
        // A signature present but alg none.
        let garbage = URL_SAFE_NO_PAD.encode([7u8; 64]);
        assert_eq!(
            reject(&v, &format!("{input}.{garbage}")),
            JwtError::UnsupportedAlgorithm,
            "{alg}"
        );
        // Even correctly ES256-signed bytes do not help a none header.
        let signed = key.sign_values(&header, &claims());
        assert_eq!(reject(&v, &signed), JwtError::UnsupportedAlgorithm);
    }
}

#[test]
fn missing_alg_is_rejected() {
    let (key, v) = setup();
    let header = without(key.header(), "alg");
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::UnsupportedAlgorithm
    );
}

#[test]
fn alg_is_case_sensitive() {
    let (key, v) = setup();
    for alg in [
        "es256", "Es256", "ES256 ", "ES384", "ES512", "EdDSA", "PS256",
    ] {
        let header = with(key.header(), "alg", json!(alg));
        assert_eq!(
            reject(&v, &key.sign_values(&header, &claims())),
            JwtError::UnsupportedAlgorithm,
            "{alg}"
        );
    }
}

// --- J2: algorithm confusion ----------------------------------------------

#[test]
fn hs256_signed_with_the_public_key_is_rejected() {
    let (key, v) = setup();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": KID});
    let input = signing_input(&header.to_string(), &claims().to_string());
    let jwk = json!({"crv": "P-256", "kty": "EC", "x": key.x(), "y": key.y()}).to_string();
    let x = key.x();
    let candidates: [&[u8]; 3] = [&key.point, jwk.as_bytes(), x.as_bytes()];
    for secret in candidates {
        let hkey = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&hkey, input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
        assert_eq!(reject(&v, &token), JwtError::UnsupportedAlgorithm);
    }
}

#[test]
fn hs256_via_jsonwebtoken_encoder_is_rejected() {
    let (key, v) = setup();
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(KID.to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&key.point)).unwrap();
    assert_eq!(reject(&v, &token), JwtError::UnsupportedAlgorithm);
}

#[test]
fn rs256_header_is_rejected() {
    let (_key, v) = setup();
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": KID});
    let input = signing_input(&header.to_string(), &claims().to_string());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode([1u8; 256]));
    assert_eq!(reject(&v, &token), JwtError::UnsupportedAlgorithm);
}

// --- J3: signature encoding -----------------------------------------------

#[test]
fn psychic_signature_is_rejected() {
    let (key, v) = setup();
    let input = signing_input(&key.header().to_string(), &claims().to_string());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
    assert_eq!(reject(&v, &token), JwtError::BadSignature);
}

#[test]
fn der_encoded_signature_is_rejected() {
    let (key, v) = setup();
    let input = signing_input(&key.header().to_string(), &claims().to_string());
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &key.pkcs8).unwrap();
    let sig = pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    assert_eq!(reject(&v, &token), JwtError::BadSignature);
}

#[test]
fn truncated_or_extended_signature_is_rejected() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw.pop();
    let short = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(reject(&v, &short), JwtError::BadSignature);
    raw.extend_from_slice(&[0, 0]);
    let long = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
    assert_eq!(reject(&v, &long), JwtError::BadSignature);
}

#[test]
fn empty_signature_is_rejected() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    let (input, _) = token.rsplit_once('.').unwrap();
    assert_eq!(reject(&v, &format!("{input}.")), JwtError::Malformed);
}

#[test]
fn signature_from_another_key_is_rejected() {
    let (_key, v) = setup();
    // Same kid, different key.
    let attacker = TestKey::generate(KID);
    assert_eq!(
        reject(&v, &attacker.encode(&claims())),
        JwtError::BadSignature
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(claims(), "sub", json!("admin"));
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged.to_string()), parts[2]);
    assert_eq!(reject(&v, &tampered), JwtError::BadSignature);
}

#[test]
fn tampered_header_is_rejected() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let header = with(key.header(), "extra", json!(1)).to_string();
    let tampered = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    assert_eq!(reject(&v, &tampered), JwtError::BadSignature);
}

// --- J4: embedded keys are ignored ----------------------------------------

#[test]
fn embedded_key_headers_do_not_select_keys() {
    let (key, v) = setup();
    let attacker = TestKey::generate("attacker");
    let embedded = json!({"kty": "EC", "crv": "P-256", "x": attacker.x(), "y": attacker.y()});
    let extras = [
        ("jwk", embedded.clone()),
        ("jku", json!("http://127.0.0.1:9/jwks.json")),
        ("x5u", json!("http://127.0.0.1:9/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ];
    for (name, value) in extras {
        // Attacker-signed, claiming our kid: the configured key decides.
        let header = with(key.header(), name, value.clone());
        assert_eq!(
            reject(&v, &attacker.sign_values(&header, &claims())),
            JwtError::BadSignature,
            "{name}"
        );
        // Attacker's own kid: unknown.
        let header = with(attacker.header(), name, value.clone());
        assert_eq!(
            reject(&v, &attacker.sign_values(&header, &claims())),
            JwtError::UnknownKey,
            "{name}"
        );
        // Signed by the real key, the extra header is merely ignored.
        let header = with(key.header(), name, value);
        assert!(
            v.validate(&key.sign_values(&header, &claims()), now())
                .is_ok()
        );
    }
}

// --- J5: kid --------------------------------------------------------------

#[test]
fn missing_kid_is_rejected() {
    let (key, v) = setup();
    let header = without(key.header(), "kid");
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::MissingKeyId
    );
    let header = with(key.header(), "kid", Value::Null);
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::MissingKeyId
    );
}

#[test]
fn unknown_kid_is_rejected() {
    let (key, v) = setup();
    // An empty kid names no key at all.
    let header = with(key.header(), "kid", json!(""));
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::MissingKeyId
    );
    for kid in [
        "key-2",
        "KEY-1",
        "../../dev/null",
        "' OR 1=1 --",
        "key-1\u{0000}",
        "kéy-1",
    ] {
        let header = with(key.header(), "kid", json!(kid));
        assert_eq!(
            reject(&v, &key.sign_values(&header, &claims())),
            JwtError::UnknownKey,
            "{kid:?}"
        );
    }
}

#[test]
fn huge_kid_is_rejected() {
    let (key, v) = setup();
    let header = with(key.header(), "kid", json!("k".repeat(MAX_KID_BYTES + 1)));
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::UnknownKey
    );
    let header = with(key.header(), "kid", json!("k".repeat(10 * 1024)));
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::TooLarge
    );
}

#[test]
fn kid_that_is_not_a_string_is_malformed() {
    let (key, v) = setup();
    let header = with(key.header(), "kid", json!(1));
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::Malformed
    );
}

// --- J7: crit, b64 --------------------------------------------------------

#[test]
fn crit_is_rejected() {
    let (key, v) = setup();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), Value::Null] {
        let header = with(key.header(), "crit", crit.clone());
        assert_eq!(
            reject(&v, &key.sign_values(&header, &claims())),
            JwtError::CriticalHeader,
            "{crit}"
        );
    }
    let header = with(
        with(key.header(), "crit", json!(["b64"])),
        "b64",
        json!(false),
    );
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::CriticalHeader
    );
}

#[test]
fn b64_zip_enc_headers_are_rejected() {
    let (key, v) = setup();
    for (name, value) in [
        ("b64", json!(false)),
        ("zip", json!("DEF")),
        ("enc", json!("A256GCM")),
    ] {
        let header = with(key.header(), name, value);
        assert_eq!(
            reject(&v, &key.sign_values(&header, &claims())),
            JwtError::UnsupportedHeader,
            "{name}"
        );
    }
}

// --- J8: typ --------------------------------------------------------------

#[test]
fn wrong_or_missing_typ_is_rejected() {
    let (key, v) = setup();
    let header = without(key.header(), "typ");
    assert_eq!(
        reject(&v, &key.sign_values(&header, &claims())),
        JwtError::WrongType
    );
    for typ in [
        json!("JWT"),
        json!("jwt"),
        json!("application/jwt"),
        json!("id_token+jwt"),
        json!("at+jwt "),
        json!(""),
        Value::Null,
    ] {
        let header = with(key.header(), "typ", typ.clone());
        assert_eq!(
            reject(&v, &key.sign_values(&header, &claims())),
            JwtError::WrongType,
            "{typ}"
        );
    }
    // jsonwebtoken's default header has typ "JWT".
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_ec_der(&key.pkcs8)).unwrap();
    assert_eq!(reject(&v, &token), JwtError::WrongType);
}

// --- J9 and shape ---------------------------------------------------------

#[test]
fn jwe_five_segment_token_is_rejected() {
    let (_key, v) = setup();
    let header = b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM","kid":"key-1","typ":"at+jwt"}"#);
    let token = format!("{header}.a2V5.aXY.Y2lwaGVy.dGFn");
    assert_eq!(reject(&v, &token), JwtError::Malformed);
}

#[test]
fn wrong_segment_counts_are_rejected() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    for bad in [
        String::new(),
        ".".to_owned(),
        "..".to_owned(),
        "...".to_owned(),
        token.split('.').next().unwrap().to_owned(),
        format!("{token}."),
        format!("{token}.{}", token.split('.').nth(2).unwrap()),
        format!(".{token}"),
        token.replacen('.', "..", 1),
    ] {
        assert_eq!(reject(&v, &bad), JwtError::Malformed, "{bad}");
    }
}

#[test]
fn non_base64url_segments_are_rejected() {
    let (key, v) = setup();
    let token = key.encode(&claims());
    let parts: Vec<&str> = token.split('.').collect();
    let bad_tokens = [
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}+/.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
        format!("{}.{}.{} ", parts[0], parts[1], parts[2]),
        format!(" {token}"),
        format!("Bearer {token}"),
        format!("{}.{}.{}\n", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "é"),
        // Valid alphabet, impossible length (1 mod 4).
        format!("{}.{}.{}", parts[0], parts[1], "A"),
        format!("{}A.{}.{}", parts[0], parts[1], parts[2]),
    ];
    for bad in bad_tokens {
        assert_eq!(reject(&v, &bad), JwtError::Malformed, "{bad:?}");
    }
}

#[test]
fn non_json_header_or_payload_is_rejected() {
    let (key, v) = setup();
    let header = key.header().to_string();
    assert_eq!(
        reject(&v, &key.sign_raw("not json", &claims().to_string())),
        JwtError::Malformed
    );
    assert_eq!(
        reject(&v, &key.sign_raw(&header, "not json")),
        JwtError::Malformed
    );
    // A header as a JSON array (serde would map it onto the struct fields).
    assert_eq!(
        reject(
            &v,
            &key.sign_raw(r#"["ES256","at+jwt","key-1"]"#, &claims().to_string())
        ),
        JwtError::Malformed
    );
    // A payload as a JSON array, correctly signed.
    let as_array = format!(
        r#"["{ISSUER}","user-42","{AUDIENCE}","client-7",null,null,[],"jti-1",{},{},null]"#,
        NOW_SECS - 10,
        NOW_SECS + 300
    );
    assert_eq!(
        reject(&v, &key.sign_raw(&header, &as_array)),
        JwtError::Malformed
    );
    // Trailing garbage after the JSON object.
    let trailing = format!("{} x", claims());
    assert_eq!(
        reject(&v, &key.sign_raw(&header, &trailing)),
        JwtError::Malformed
    );
}

// --- J10–J12: times -------------------------------------------------------

#[test]
fn expired_beyond_leeway_is_rejected() {
    let (key, v) = setup();
    let leeway = i64::try_from(DEFAULT_LEEWAY_SECS).unwrap();
    for exp in [NOW_SECS - leeway, NOW_SECS - leeway - 1, NOW_SECS - 3600, 0] {
        let payload = with(with(claims(), "exp", json!(exp)), "iat", json!(exp - 60));
        assert_eq!(
            reject(&v, &key.encode(&payload)),
            JwtError::Expired,
            "exp {exp}"
        );
    }
    // jsonwebtoken reads a negative `exp` as absent; rejected either way.
    for exp in [-1, i64::MIN] {
        let payload = with(claims(), "exp", json!(exp));
        assert_eq!(
            reject(&v, &key.encode(&payload)),
            JwtError::MissingClaim("exp"),
            "exp {exp}"
        );
    }
}

#[test]
fn expired_within_leeway_is_accepted() {
    let (key, v) = setup();
    let leeway = i64::try_from(DEFAULT_LEEWAY_SECS).unwrap();
    for exp in [NOW_SECS - leeway + 1, NOW_SECS - 1, NOW_SECS] {
        let payload = with(claims(), "exp", json!(exp));
        assert!(v.validate(&key.encode(&payload), now()).is_ok(), "{exp}");
    }
}

#[test]
fn time_is_the_now_parameter_not_the_system_clock() {
    let (key, v) = setup();
    // A token far in the past relative to the system clock is fine at its `now`...
    let past = 1_000_000_000;
    let payload = with(
        with(claims(), "iat", json!(past - 10)),
        "exp",
        json!(past + 300),
    );
    let token = key.encode(&payload);
    assert!(v.validate(&token, Timestamp::from_secs(past)).is_ok());
    // ...and the token valid now is expired an hour later.
    let token = key.encode(&claims());
    assert_eq!(
        v.validate(&token, Timestamp::from_secs(NOW_SECS + 3600)),
        Err(JwtError::Expired)
    );
    // Millisecond precision: exp is exclusive.
    let leeway_ms = i64::try_from(DEFAULT_LEEWAY_SECS * 1000).unwrap();
    let exp_ms = (NOW_SECS + 300) * 1000;
    assert!(
        v.validate(&token, Timestamp(exp_ms + leeway_ms - 1))
            .is_ok()
    );
    assert_eq!(
        v.validate(&token, Timestamp(exp_ms + leeway_ms)),
        Err(JwtError::Expired)
    );
}

#[test]
fn leeway_is_clamped_to_the_maximum() {
    let key = TestKey::generate(KID);
    let mut config = ValidatorConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    config.leeway_secs = 3600;
    let v = AccessTokenValidator::new(config, vec![key.verification_key()]);
    assert_eq!(v.config().leeway_secs, MAX_LEEWAY_SECS);
    let payload = with(claims(), "exp", json!(NOW_SECS - 120));
    assert_eq!(reject(&v, &key.encode(&payload)), JwtError::Expired);
}

#[test]
fn zero_leeway_is_strict() {
    let key = TestKey::generate(KID);
    let mut config = ValidatorConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    config.leeway_secs = 0;
    let v = AccessTokenValidator::new(config, vec![key.verification_key()]);
    let payload = with(claims(), "exp", json!(NOW_SECS));
    assert_eq!(reject(&v, &key.encode(&payload)), JwtError::Expired);
    let payload = with(claims(), "exp", json!(NOW_SECS + 1));
    assert!(v.validate(&key.encode(&payload), now()).is_ok());
}

#[test]
fn nbf_in_the_future_is_rejected() {
    let (key, v) = setup();
    let leeway = i64::try_from(DEFAULT_LEEWAY_SECS).unwrap();
    for nbf in [NOW_SECS + leeway + 1, NOW_SECS + 3600, i64::MAX] {
        let payload = with(claims(), "nbf", json!(nbf));
        assert_eq!(
            reject(&v, &key.encode(&payload)),
            JwtError::NotYetValid,
            "{nbf}"
        );
    }
}

#[test]
fn nbf_in_the_past_or_within_leeway_is_accepted() {
    let (key, v) = setup();
    let leeway = i64::try_from(DEFAULT_LEEWAY_SECS).unwrap();
    for nbf in [NOW_SECS - 60, NOW_SECS, NOW_SECS + leeway] {
        let payload = with(claims(), "nbf", json!(nbf));
        let got = v.validate(&key.encode(&payload), now()).unwrap();
        assert_eq!(got.nbf, Some(nbf));
    }
}

#[test]
fn iat_in_the_future_is_rejected() {
    let (key, v) = setup();
    let leeway = i64::try_from(DEFAULT_LEEWAY_SECS).unwrap();
    for iat in [NOW_SECS + leeway + 1, NOW_SECS + 3600, i64::MAX] {
        let payload = with(claims(), "iat", json!(iat));
        assert_eq!(
            reject(&v, &key.encode(&payload)),
            JwtError::IssuedInFuture,
            "{iat}"
        );
    }
    let payload = with(claims(), "iat", json!(NOW_SECS + leeway));
    assert!(v.validate(&key.encode(&payload), now()).is_ok());
}

#[test]
fn time_claims_of_the_wrong_type_are_rejected() {
    let (key, v) = setup();
    for (claim, value) in [
        ("exp", json!("1767225900")),
        ("exp", json!(1_767_225_900.5)),
        ("exp", json!(1e300)),
        ("exp", json!(u64::MAX)),
        ("exp", json!(true)),
        ("iat", json!("now")),
        ("nbf", json!([1])),
    ] {
        let payload = with(claims(), claim, value.clone());
        assert_eq!(
            reject(&v, &key.encode(&payload)),
            JwtError::Malformed,
            "{claim}={value}"
        );
    }
}

// --- J13: iss / aud -------------------------------------------------------

#[test]
fn wrong_issuer_is_rejected() {
    let (key, v) = setup();
    for iss in [
        "https://gatehouse.example/",
        "https://Gatehouse.example",
        "http://gatehouse.example",
        "https://evil.example",
        "",
    ] {
        let payload = with(claims(), "iss", json!(iss));
        assert_eq!(
            reject(&v, &key.encode(&payload)),
            JwtError::WrongIssuer,
            "{iss}"
        );
    }
    // An array of issuers is not a valid `iss`.
    let payload = with(claims(), "iss", json!([ISSUER]));
    assert_eq!(reject(&v, &key.encode(&payload)), JwtError::Malformed);
}

#[test]
fn missing_aud_is_rejected() {
    let (key, v) = setup();
    assert_eq!(
        reject(&v, &key.encode(&without(claims(), "aud"))),
        JwtError::MissingClaim("aud")
    );
    assert_eq!(
        reject(&v, &key.encode(&with(claims(), "aud", Value::Null))),
        JwtError::MissingClaim("aud")
    );
}

#[test]
fn aud_array_containing_ours_is_accepted() {
    let (key, v) = setup();
    let aud = json!(["https://other.example", AUDIENCE]);
    let got = v
        .validate(&key.encode(&with(claims(), "aud", aud)), now())
        .unwrap();
    assert!(got.aud.contains(AUDIENCE));
    assert_eq!(got.aud.values().len(), 2);
}

#[test]
fn wrong_aud_is_rejected() {
    let (key, v) = setup();
    for aud in [
        json!("https://other.example"),
        json!("https://mcp.example/mcp/"),
        json!("https://mcp.example"),
        json!(["https://other.example"]),
        json!([]),
        json!(""),
    ] {
        assert_eq!(
            reject(&v, &key.encode(&with(claims(), "aud", aud.clone()))),
            JwtError::WrongAudience,
            "{aud}"
        );
    }
    assert_eq!(
        reject(&v, &key.encode(&with(claims(), "aud", json!(7)))),
        JwtError::Malformed
    );
}

#[test]
fn no_configured_audience_rejects_everything() {
    let key = TestKey::generate(KID);
    let v = AccessTokenValidator::new(
        ValidatorConfig::new(ISSUER, Vec::new()),
        vec![key.verification_key()],
    );
    assert_eq!(reject(&v, &key.encode(&claims())), JwtError::WrongAudience);
}

// --- required claims ------------------------------------------------------

#[test]
fn missing_required_claims_are_rejected() {
    let (key, v) = setup();
    for claim in ["exp", "iat", "iss", "aud", "sub", "client_id", "jti"] {
        assert_eq!(
            reject(&v, &key.encode(&without(claims(), claim))),
            JwtError::MissingClaim(claim),
            "{claim}"
        );
    }
}

#[test]
fn empty_identifiers_are_rejected() {
    let (key, v) = setup();
    for claim in ["sub", "client_id", "jti"] {
        assert_eq!(
            reject(&v, &key.encode(&with(claims(), claim, json!("")))),
            JwtError::MissingClaim(claim),
            "{claim}"
        );
    }
}

// --- J14–J16 --------------------------------------------------------------

#[test]
fn duplicate_keys_are_rejected() {
    let (key, v) = setup();
    let header = key.header().to_string();
    let payload = claims().to_string();
    // `sub` twice in the payload.
    let dup_payload = payload.replacen('{', r#"{"sub":"admin","#, 1);
    assert_eq!(
        reject(&v, &key.sign_raw(&header, &dup_payload)),
        JwtError::Malformed
    );
    // `aud` twice.
    let dup_aud = payload.replacen('{', r#"{"aud":"https://other.example","#, 1);
    assert_eq!(
        reject(&v, &key.sign_raw(&header, &dup_aud)),
        JwtError::Malformed
    );
    // `alg` twice in the header.
    let dup_alg = header.replacen('{', r#"{"alg":"none","#, 1);
    assert_eq!(
        reject(&v, &key.sign_raw(&dup_alg, &payload)),
        JwtError::Malformed
    );
    // `typ` / `kid` twice in the header.
    let dup_typ = header.replacen('{', r#"{"typ":"JWT","#, 1);
    assert_eq!(
        reject(&v, &key.sign_raw(&dup_typ, &payload)),
        JwtError::Malformed
    );
    let dup_kid = header.replacen('{', r#"{"kid":"other","#, 1);
    assert_eq!(
        reject(&v, &key.sign_raw(&dup_kid, &payload)),
        JwtError::Malformed
    );
}

#[test]
fn deeply_nested_unknown_claim_is_bounded() {
    let (key, v) = setup();
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let payload = claims()
        .to_string()
        .replacen('{', &format!(r#"{{"x":{deep},"#), 1);
    // Either skipped or rejected, but never a panic; the size cap bounds it.
    let _ = v.validate(&key.sign_raw(&key.header().to_string(), &payload), now());
}

#[test]
fn oversized_token_is_rejected_before_decoding() {
    let (key, v) = setup();
    // Not even valid base64: the size check must come first.
    let huge = "!".repeat(DEFAULT_MAX_TOKEN_BYTES + 1);
    assert_eq!(reject(&v, &huge), JwtError::TooLarge);
    let big_claim = with(claims(), "pad", json!("x".repeat(DEFAULT_MAX_TOKEN_BYTES)));
    assert_eq!(reject(&v, &key.encode(&big_claim)), JwtError::TooLarge);
    // A token of exactly the cap is still considered.
    let token = key.encode(&claims());
    let mut config = ValidatorConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    config.max_token_bytes = token.len();
    let exact = AccessTokenValidator::new(config.clone(), vec![key.verification_key()]);
    assert!(exact.validate(&token, now()).is_ok());
    config.max_token_bytes = token.len() - 1;
    let smaller = AccessTokenValidator::new(config, vec![key.verification_key()]);
    assert_eq!(reject(&smaller, &token), JwtError::TooLarge);
}

// --- keys, errors ---------------------------------------------------------

#[test]
fn verification_key_rejects_bad_coordinates() {
    let key = TestKey::generate(KID);
    let (x, y) = (key.x(), key.y());
    // Not on the curve.
    let mut bad_y = key.point[33..65].to_vec();
    bad_y[31] ^= 1;
    let bad_y = URL_SAFE_NO_PAD.encode(&bad_y);
    let short = URL_SAFE_NO_PAD.encode([1u8; 31]);
    let zero = URL_SAFE_NO_PAD.encode([0u8; 32]);
    let cases = [
        (KID, x.as_str(), bad_y.as_str()),
        (KID, short.as_str(), y.as_str()),
        (KID, zero.as_str(), zero.as_str()),
        (KID, "!!", y.as_str()),
        (KID, "", ""),
        ("", x.as_str(), y.as_str()),
    ];
    for (kid, x, y) in cases {
        assert_eq!(
            VerificationKey::from_es256_jwk(kid, x, y).err(),
            Some(JwtError::InvalidKey),
            "{kid} {x} {y}"
        );
    }
    let long_kid = "k".repeat(MAX_KID_BYTES + 1);
    assert!(VerificationKey::from_es256_jwk(&long_kid, &x, &y).is_err());
    assert!(VerificationKey::from_es256_jwk(KID, &x, &y).is_ok());
}

#[test]
fn error_codes_are_unique_snake_case() {
    let all = [
        JwtError::TooLarge,
        JwtError::Malformed,
        JwtError::UnsupportedAlgorithm,
        JwtError::WrongType,
        JwtError::CriticalHeader,
        JwtError::UnsupportedHeader,
        JwtError::MissingKeyId,
        JwtError::UnknownKey,
        JwtError::BadSignature,
        JwtError::Expired,
        JwtError::NotYetValid,
        JwtError::IssuedInFuture,
        JwtError::WrongIssuer,
        JwtError::WrongAudience,
        JwtError::MissingClaim("exp"),
        JwtError::InvalidKey,
    ];
    let mut codes: Vec<&str> = all.iter().map(JwtError::code).collect();
    for code in &codes {
        assert!(
            code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{code}"
        );
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
}

#[test]
fn error_messages_do_not_echo_token_contents() {
    let (key, v) = setup();
    let marker = "SECRET-MARKER";
    let tokens = [
        key.sign_values(&with(key.header(), "kid", json!(marker)), &claims()),
        key.sign_values(&with(key.header(), "typ", json!(marker)), &claims()),
        key.sign_values(&with(key.header(), "alg", json!(marker)), &claims()),
        key.encode(&with(claims(), "iss", json!(marker))),
        key.encode(&with(claims(), "aud", json!(marker))),
        key.encode(&with(claims(), "exp", json!(marker))),
        key.sign_raw(&key.header().to_string(), marker),
        key.sign_raw(marker, &claims().to_string()),
    ];
    for token in tokens {
        let err = reject(&v, &token);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(marker), "{shown}");
    }
}

#[test]
fn debug_output_shows_no_key_material() {
    let (key, v) = setup();
    let shown = format!("{:?} {v:?}", key.verification_key());
    assert!(shown.contains(KID));
    assert!(!shown.contains(&key.x()));
}

// --- which failures prove the token was issued (lockout, issue 9 item 3) --

#[test]
fn only_failures_after_a_valid_signature_prove_the_token_was_issued() {
    let (key, v) = setup();
    // Signed with our key: genuinely issued, whatever is wrong with it now.
    for payload in [
        with(claims(), "exp", json!(NOW_SECS - 3600)),
        with(claims(), "nbf", json!(NOW_SECS + 3600)),
        with(claims(), "iat", json!(NOW_SECS + 3600)),
        with(claims(), "iss", json!("https://other.example")),
        with(claims(), "aud", json!("https://other.example/mcp")),
        without(claims(), "jti"),
    ] {
        let error = reject(&v, &key.encode(&payload));
        assert!(error.signature_was_valid(), "{error:?} for {payload}");
    }
    // Not signed with a key of ours, or not even a token: may be a guess.
    let stranger = TestKey::generate(KID);
    let unknown_kid = TestKey::generate("key-2");
    let tampered = {
        let token = key.encode(&claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let (header, _) = input.split_once('.').unwrap();
        let payload = b64(&with(claims(), "roles", json!(["admin"])).to_string());
        format!("{header}.{payload}.{signature}")
    };
    for token in [
        stranger.encode(&claims()),
        // Expired too, but the signature is checked first: still a guess.
        stranger.encode(&with(claims(), "exp", json!(NOW_SECS - 3600))),
        unknown_kid.encode(&claims()),
        tampered,
        "a.b.c".to_string(),
        "not a token".to_string(),
        key.sign_values(
            &json!({"alg": "none", "typ": "at+jwt", "kid": KID}),
            &claims(),
        ),
    ] {
        let error = reject(&v, &token);
        assert!(!error.signature_was_valid(), "{error:?} for {token}");
    }
}
