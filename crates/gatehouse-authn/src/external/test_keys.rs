//! Keys of a pretend external issuer, for tests: RSA, P-256 and Ed25519,
//! each signing whatever header and claims a test hands it (attack cases
//! included), with the JWK a JWKS document would publish.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RSA_PSS_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

enum Pair {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

pub(crate) struct TestKey {
    pub(crate) kid: String,
    pair: Pair,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    pub(crate) fn rsa(kid: &str) -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048).unwrap();
        TestKey {
            kid: kid.into(),
            pair: Pair::Rsa(pair),
        }
    }

    pub(crate) fn es256(kid: &str) -> TestKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        TestKey {
            kid: kid.into(),
            pair: Pair::Es256(pair),
        }
    }

    pub(crate) fn ed25519(kid: &str) -> TestKey {
        let pair = Ed25519KeyPair::generate().unwrap();
        TestKey {
            kid: kid.into(),
            pair: Pair::Ed25519(pair),
        }
    }

    /// The natural algorithm of the key (RS256 for RSA).
    pub(crate) fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Rsa(_) => "RS256",
            Pair::Es256(_) => "ES256",
            Pair::Ed25519(_) => "EdDSA",
        }
    }

    /// The public JWK, without `alg` or `use`.
    pub(crate) fn jwk(&self) -> Value {
        match &self.pair {
            Pair::Rsa(pair) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                json!({ "kty": "RSA", "kid": self.kid, "n": b64(&parts.n), "e": b64(&parts.e) })
            }
            Pair::Es256(pair) => {
                let point = pair.public_key().as_ref();
                json!({ "kty": "EC", "crv": "P-256", "kid": self.kid,
                        "x": b64(&point[1..33]), "y": b64(&point[33..65]) })
            }
            Pair::Ed25519(pair) => {
                json!({ "kty": "OKP", "crv": "Ed25519", "kid": self.kid,
                        "x": b64(pair.public_key().as_ref()) })
            }
        }
    }

    /// Signs `header` (taken as given: a test chooses `alg`, `typ`, `kid`)
    /// and `claims` as raw JSON text, with `alg` deciding RS256 or PS256
    /// for an RSA key.
    pub(crate) fn sign_raw(&self, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let rng = SystemRandom::new();
        let signature = match &self.pair {
            Pair::Rsa(pair) => {
                let mut out = vec![0; pair.public_modulus_len()];
                let scheme = if header.contains("\"PS256\"") {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                pair.sign(scheme, &rng, input.as_bytes(), &mut out).unwrap();
                out
            }
            Pair::Es256(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Pair::Ed25519(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }

    /// An access token as a well-behaved issuer makes it.
    pub(crate) fn token(&self, claims: &Value) -> String {
        let header = json!({ "alg": self.alg(), "typ": "at+jwt", "kid": self.kid });
        self.sign_raw(&header.to_string(), &claims.to_string())
    }
}

/// A JWKS document publishing `keys`.
pub(crate) fn jwks(keys: &[TestKey]) -> Value {
    json!({ "keys": keys.iter().map(TestKey::jwk).collect::<Vec<_>>() })
}
