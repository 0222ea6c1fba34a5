//! Verification keys of an external issuer, read from its JWKS document.
//!
//! Only signing keys of the four accepted algorithms survive: `oct` keys,
//! encryption keys (`use` other than `sig`, `key_ops` without `verify`),
//! short RSA moduli and points off the curve are dropped, and two keys
//! sharing a `kid` are both dropped (which one a token means would be a
//! guess). A key without a `kid` is kept only when it is the document's one
//! usable key; the one usable key of a document is also found under
//! [`SOLE_KEY`], for a client assertion that names no key (an issuer's
//! tokens must always name theirs). Every key is pinned to the algorithms it may verify: its own
//! `alg` when it states one, else its family's, in both cases narrowed to the
//! issuer's allowed list. The token header's `alg` only selects among those.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::jwt::{MAX_KID_BYTES, p256_point};

/// The algorithms an external issuer may use; HMAC and `none` never.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Where the one usable key of a document is also found.
pub const SOLE_KEY: &str = "";

/// RSA keys shorter than this are refused (NIST SP 800-131A).
const MIN_RSA_MODULUS_BYTES: usize = 256;
const ED25519_KEY_BYTES: usize = 32;

/// Parses an algorithm name of the accepted set (case-sensitive, as JWA).
pub fn accepted_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "PS256" => Some(Algorithm::PS256),
        "ES256" => Some(Algorithm::ES256),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// One usable key and the algorithms it may verify.
#[derive(Clone)]
pub struct ExternalKey {
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for ExternalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK we read; everything else is ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Why a JWKS document as a whole was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS document is not a JSON object with a `keys` array")]
    NotAJwks,
}

/// The usable keys of a JWKS document, by `kid`. A document whose keys are
/// all unusable gives an empty map, not an error: the caller decides.
pub fn parse_jwks(
    body: &[u8],
    allowed: &[Algorithm],
) -> Result<HashMap<String, ExternalKey>, JwksError> {
    let document: Document = serde_json::from_slice(body).map_err(|_| JwksError::NotAJwks)?;
    let mut keys: HashMap<String, ExternalKey> = HashMap::new();
    let mut ambiguous: Vec<String> = Vec::new();
    let mut unnamed: Vec<ExternalKey> = Vec::new();
    let mut usable_count = 0;
    for value in document.keys {
        let Ok(raw) = serde_json::from_value::<RawJwk>(value) else {
            continue;
        };
        let Some((kid, key)) = usable(raw, allowed) else {
            continue;
        };
        usable_count += 1;
        match kid {
            None => unnamed.push(key),
            Some(kid) => {
                if keys.insert(kid.clone(), key).is_some() {
                    ambiguous.push(kid);
                }
            }
        }
    }
    for kid in ambiguous {
        keys.remove(&kid);
    }
    if usable_count == 1 {
        let sole = match unnamed.pop() {
            Some(key) => Some(key),
            None => keys.values().next().cloned(),
        };
        if let Some(key) = sole {
            keys.insert(SOLE_KEY.to_owned(), key);
        }
    }
    Ok(keys)
}

/// The key and its `kid` (`None` when it has none), if it is usable.
fn usable(raw: RawJwk, allowed: &[Algorithm]) -> Option<(Option<String>, ExternalKey)> {
    let kid = match raw.kid.clone() {
        None => None,
        Some(k) if !k.is_empty() && k.len() <= MAX_KID_BYTES => Some(k),
        Some(_) => return None,
    };
    if raw.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if raw
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return None;
    }
    let (family, key): (&[Algorithm], DecodingKey) = match raw.kty.as_deref()? {
        "RSA" => (
            &[Algorithm::RS256, Algorithm::PS256],
            rsa_key(raw.n.as_deref()?, raw.e.as_deref()?)?,
        ),
        "EC" if raw.crv.as_deref() == Some("P-256") => (
            &[Algorithm::ES256],
            p256_key(raw.x.as_deref()?, raw.y.as_deref()?)?,
        ),
        "OKP" if raw.crv.as_deref() == Some("Ed25519") => {
            (&[Algorithm::EdDSA], ed25519_key(raw.x.as_deref()?)?)
        }
        // `oct` (a shared secret has no place in a public key set), other
        // curves, unknown types.
        _ => return None,
    };
    let algorithms: Vec<Algorithm> = match raw.alg.as_deref() {
        Some(name) => {
            let alg = accepted_algorithm(name)?;
            family.contains(&alg).then_some(vec![alg])?
        }
        None => family.to_vec(),
    }
    .into_iter()
    .filter(|alg| allowed.contains(alg))
    .collect();
    if algorithms.is_empty() {
        return None;
    }
    Some((kid, ExternalKey { algorithms, key }))
}

fn decode(value: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(value).ok()
}

fn rsa_key(n: &str, e: &str) -> Option<DecodingKey> {
    let n = decode(n)?;
    let e = decode(e)?;
    let significant = n.iter().skip_while(|b| **b == 0).count();
    if significant < MIN_RSA_MODULUS_BYTES || e.is_empty() {
        return None;
    }
    Some(DecodingKey::from_rsa_raw_components(&n, &e))
}

fn p256_key(x: &str, y: &str) -> Option<DecodingKey> {
    p256_point(x, y).map(|point| DecodingKey::from_ec_der(&point))
}

fn ed25519_key(x: &str) -> Option<DecodingKey> {
    let x = decode(x)?;
    if x.len() != ED25519_KEY_BYTES {
        return None;
    }
    aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x).ok()?;
    Some(DecodingKey::from_ed_der(&x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::test_keys::{TestKey, jwks};

    const ALL: &[Algorithm] = &ACCEPTED_ALGORITHMS;

    #[test]
    fn signing_keys_of_every_accepted_kind_are_read() {
        let keys = [
            TestKey::rsa("r"),
            TestKey::es256("e"),
            TestKey::ed25519("d"),
        ];
        let parsed = parse_jwks(jwks(&keys).to_string().as_bytes(), ALL).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(
            parsed["r"].algorithms,
            vec![Algorithm::RS256, Algorithm::PS256]
        );
        assert_eq!(parsed["e"].algorithms, vec![Algorithm::ES256]);
        assert_eq!(parsed["d"].algorithms, vec![Algorithm::EdDSA]);
    }

    #[test]
    fn a_key_is_pinned_to_its_own_alg_and_the_issuers_list() {
        let mut rsa = TestKey::rsa("r").jwk();
        rsa["alg"] = "PS256".into();
        let body = serde_json::json!({ "keys": [rsa] }).to_string();
        let parsed = parse_jwks(body.as_bytes(), ALL).unwrap();
        assert_eq!(parsed["r"].algorithms, vec![Algorithm::PS256]);
        // The issuer allows only RS256: the PS256 key is of no use.
        assert!(
            parse_jwks(body.as_bytes(), &[Algorithm::RS256])
                .unwrap()
                .is_empty()
        );
        // An alg that does not fit the key type drops the key.
        let mut ec = TestKey::es256("e").jwk();
        ec["alg"] = "RS256".into();
        let body = serde_json::json!({ "keys": [ec] }).to_string();
        assert!(parse_jwks(body.as_bytes(), ALL).unwrap().is_empty());
    }

    #[test]
    fn secrets_encryption_keys_and_unusable_keys_are_dropped() {
        let mut enc = TestKey::rsa("enc").jwk();
        enc["use"] = "enc".into();
        let mut wrap = TestKey::es256("wrap").jwk();
        wrap["key_ops"] = serde_json::json!(["wrapKey"]);
        let mut long_kid = TestKey::es256("x").jwk();
        long_kid["kid"] = "k".repeat(MAX_KID_BYTES + 1).into();
        let mut off_curve = TestKey::es256("off").jwk();
        off_curve["y"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into();
        let mut p384 = TestKey::es256("p384").jwk();
        p384["crv"] = "P-384".into();
        let body = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "secret", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "short", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB" },
            enc, wrap, long_kid, off_curve, p384,
            "not an object",
        ]})
        .to_string();
        assert!(parse_jwks(body.as_bytes(), ALL).unwrap().is_empty());
    }

    #[test]
    fn a_kid_less_key_is_usable_only_as_the_sole_key() {
        let mut no_kid = TestKey::es256("x").jwk();
        no_kid.as_object_mut().unwrap().remove("kid");
        let alone = serde_json::json!({ "keys": [no_kid.clone()] }).to_string();
        let parsed = parse_jwks(alone.as_bytes(), ALL).unwrap();
        assert_eq!(parsed.keys().collect::<Vec<_>>(), [SOLE_KEY]);
        // Beside another key, which one it is would be a guess.
        let named = TestKey::ed25519("d").jwk();
        let both = serde_json::json!({ "keys": [no_kid, named] }).to_string();
        let parsed = parse_jwks(both.as_bytes(), ALL).unwrap();
        assert_eq!(parsed.keys().collect::<Vec<_>>(), ["d"]);
        // A named sole key is found under its kid and as the sole key.
        let one = jwks(&[TestKey::es256("e")]).to_string();
        let parsed = parse_jwks(one.as_bytes(), ALL).unwrap();
        assert!(parsed.contains_key("e") && parsed.contains_key(SOLE_KEY));
    }

    #[test]
    fn two_keys_with_one_kid_are_both_dropped() {
        let keys = [TestKey::es256("same"), TestKey::ed25519("same")];
        let parsed = parse_jwks(jwks(&keys).to_string().as_bytes(), ALL).unwrap();
        assert!(parsed.is_empty());
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert_eq!(
            parse_jwks(b"{\"keys\": 3}", ALL).unwrap_err(),
            JwksError::NotAJwks
        );
        assert_eq!(parse_jwks(b"[]", ALL).unwrap_err(), JwksError::NotAJwks);
    }
}
