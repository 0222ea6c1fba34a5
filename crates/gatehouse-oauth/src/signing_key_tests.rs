use super::*;

use crate::MasterKey;
use gatehouse_authn::jwt::{
    AccessTokenClaims, AccessTokenValidator, Audience, JwtError, ValidatorConfig, VerificationKey,
};
use gatehouse_core::Timestamp;

/// A throwaway P-256 test key made with `openssl genpkey` (PKCS#8 DER), and
/// its RFC 7638 thumbprint computed independently (Python hashlib).
const FIXED_PKCS8_HEX: &str = "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b02010104203b5d308b7e1469b13e18a9da9a6d174e641bbf7ae6f6835c027514c6145327a4a14403420004ffcc9a0a98c873051e7b5a5fea3d95ebbb738daf8ebcb351f98a7c21eaa414344db21fc9cc2ef7685a291ef2a75a087746f32dd987b07d44755684a68c89508b";
const FIXED_PRIVATE_SCALAR_HEX: &str =
    "3b5d308b7e1469b13e18a9da9a6d174e641bbf7ae6f6835c027514c6145327a4";
const FIXED_X: &str = "_8yaCpjIcwUee1pf6j2V67tzja-OvLNR-Yp8IeqkFDQ";
const FIXED_Y: &str = "TbIfycwu92haKR7yp1oId0bzLdmHsH1EdVaEpoyJUIs";
const FIXED_KID: &str = "sSRQ-0zbH7QXplCSPMOuvzDZK1So6Tgz1c95-KSzT44";

const ISSUER: &str = "https://gatehouse.example";
const AUDIENCE: &str = "https://mcp.example/mcp";
const NOW_SECS: i64 = 1_767_225_600;

fn fixed_key() -> SigningKey {
    SigningKey::from_pkcs8(&hex::decode(FIXED_PKCS8_HEX).unwrap()).unwrap()
}

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        iss: ISSUER.to_owned(),
        sub: "user-42".to_owned(),
        aud: Audience::Single(AUDIENCE.to_owned()),
        client_id: "client-7".to_owned(),
        scope: Some("tools:call".to_owned()),
        tenant: Some("acme".to_owned()),
        roles: vec!["dev".to_owned()],
        jti: "jti-1".to_owned(),
        iat: NOW_SECS - 5,
        exp: NOW_SECS + 300,
        nbf: None,
        task: None,
    }
}

fn validator(keys: &[&SigningKey]) -> AccessTokenValidator {
    let keys = keys
        .iter()
        .map(|k| {
            let jwk = k.public_jwk();
            VerificationKey::from_es256_jwk(&jwk.kid, &jwk.x, &jwk.y).unwrap()
        })
        .collect();
    AccessTokenValidator::new(
        ValidatorConfig::new(ISSUER, vec![AUDIENCE.to_owned()]),
        keys,
    )
}

fn now() -> Timestamp {
    Timestamp::from_secs(NOW_SECS)
}

#[test]
fn kid_matches_independent_thumbprint_of_fixed_key() {
    let key = fixed_key();
    let jwk = key.public_jwk();
    assert_eq!(jwk.x, FIXED_X);
    assert_eq!(jwk.y, FIXED_Y);
    assert_eq!(key.kid(), FIXED_KID);
    assert_eq!(jwk.kid, FIXED_KID);
}

#[test]
fn kid_matches_thumbprint_computed_from_the_jwk() {
    let key = SigningKey::generate().unwrap();
    let jwk = key.public_jwk();
    // RFC 7638 canonical form via serde_json: a BTreeMap sorts the members.
    let members: std::collections::BTreeMap<&str, &str> = [
        ("kty", jwk.kty.as_str()),
        ("crv", jwk.crv.as_str()),
        ("x", jwk.x.as_str()),
        ("y", jwk.y.as_str()),
    ]
    .into_iter()
    .collect();
    let canonical = serde_json::to_string(&members).unwrap();
    let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
    assert_eq!(key.kid(), expected);
    assert_eq!(key.kid().len(), 43);
}

#[test]
fn kid_is_stable_for_the_same_key() {
    let key = SigningKey::generate().unwrap();
    let reloaded = SigningKey::from_pkcs8(key.pkcs8()).unwrap();
    assert_eq!(key.kid(), reloaded.kid());
    assert_eq!(key.kid(), key.kid());
    assert_eq!(key.public_jwk(), reloaded.public_jwk());
    assert_eq!(fixed_key().kid(), fixed_key().kid());
    let other = SigningKey::generate().unwrap();
    assert_ne!(key.kid(), other.kid());
}

#[test]
fn public_jwk_has_no_private_member() {
    let key = fixed_key();
    let json = serde_json::to_value(key.public_jwk()).unwrap();
    let object = json.as_object().unwrap();
    assert!(!object.contains_key("d"));
    let mut members: Vec<&str> = object.keys().map(String::as_str).collect();
    members.sort_unstable();
    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
    assert_eq!(json["kty"], "EC");
    assert_eq!(json["crv"], "P-256");
    assert_eq!(json["alg"], "ES256");
    assert_eq!(json["use"], "sig");
    let text = json.to_string();
    assert!(!text.contains(r#""d""#));
    // The private scalar in base64url does not appear anywhere.
    let d = URL_SAFE_NO_PAD.encode(hex::decode(FIXED_PRIVATE_SCALAR_HEX).unwrap());
    assert!(!text.contains(&d));
}

#[test]
fn jwks_serializes_as_a_key_set() {
    let a = SigningKey::generate().unwrap();
    let b = fixed_key();
    let jwks = Jwks::from_signing_keys([&a, &b]);
    let json = serde_json::to_value(&jwks).unwrap();
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["kid"], a.kid());
    assert_eq!(keys[1]["kid"], FIXED_KID);
    assert_eq!(json.as_object().unwrap().len(), 1);
    let back: Jwks = serde_json::from_value(json).unwrap();
    assert_eq!(back, jwks);
}

#[test]
fn signed_token_verifies_with_the_public_key() {
    let key = SigningKey::generate().unwrap();
    let token = key.sign(&claims()).unwrap();
    let got = validator(&[&key]).validate(&token, now()).unwrap();
    assert_eq!(got, claims());
}

#[test]
fn token_header_is_es256_at_jwt_with_kid() {
    let key = fixed_key();
    let token = key.sign(&claims()).unwrap();
    let header_b64 = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], FIXED_KID);
    let object = header.as_object().unwrap();
    for absent in ["jwk", "jku", "x5u", "x5c", "crit"] {
        assert!(!object.contains_key(absent), "{absent}");
    }
}

#[test]
fn token_signed_by_another_key_is_rejected() {
    let key = SigningKey::generate().unwrap();
    let other = SigningKey::generate().unwrap();
    let v = validator(&[&key]);
    assert_eq!(
        v.validate(&other.sign(&claims()).unwrap(), now()),
        Err(JwtError::UnknownKey)
    );
    // Both keys published (rotation): both verify.
    let both = validator(&[&key, &other]);
    assert!(both.validate(&key.sign(&claims()).unwrap(), now()).is_ok());
    assert!(
        both.validate(&other.sign(&claims()).unwrap(), now())
            .is_ok()
    );
}

#[test]
fn sealed_key_round_trips_through_the_master_key() {
    let master = MasterKey::generate().unwrap();
    let key = SigningKey::generate().unwrap();
    let sealed = master.seal(key.pkcs8(), key.kid().as_bytes()).unwrap();
    assert!(!sealed.windows(key.pkcs8().len()).any(|w| w == key.pkcs8()));

    let opened = master.open(&sealed, key.kid().as_bytes()).unwrap();
    let restored = SigningKey::from_pkcs8(&opened).unwrap();
    assert_eq!(restored.kid(), key.kid());
    let token = restored.sign(&claims()).unwrap();
    assert!(validator(&[&key]).validate(&token, now()).is_ok());

    // Bound to the kid: a sealed blob cannot be swapped under another key id.
    let other = SigningKey::generate().unwrap();
    assert_eq!(
        master.open(&sealed, other.kid().as_bytes()).err(),
        Some(KeyError::Open)
    );
}

#[test]
fn from_pkcs8_rejects_other_keys_and_garbage() {
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, Ed25519KeyPair};
    let rng = SystemRandom::new();
    let p384 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let ed25519 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let mut truncated = hex::decode(FIXED_PKCS8_HEX).unwrap();
    truncated.truncate(40);
    for der in [
        p384.as_ref(),
        ed25519.as_ref(),
        &truncated[..],
        b"",
        b"not a key",
    ] {
        assert_eq!(
            SigningKey::from_pkcs8(der).err(),
            Some(KeyError::InvalidPrivateKey)
        );
    }
}

#[test]
fn debug_output_has_no_private_material() {
    let key = fixed_key();
    let shown = format!("{key:?}");
    assert!(shown.contains(FIXED_KID));
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains(FIXED_PRIVATE_SCALAR_HEX));
    assert!(!shown.contains("59, 93")); // first bytes of d as a decimal list
    assert!(!shown.contains("48, 129")); // PKCS#8 header as a decimal list
    let d = URL_SAFE_NO_PAD.encode(hex::decode(FIXED_PRIVATE_SCALAR_HEX).unwrap());
    assert!(!shown.contains(&d));
}
