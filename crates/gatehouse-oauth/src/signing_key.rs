//! The ES256 key that signs access tokens, and its public JWK.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::KeyError;

/// RFC 9068 §2.1 `typ` of a JWT access token.
const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Length of a P-256 field element.
const COORDINATE_BYTES: usize = 32;

/// A P-256 private key used with ES256.
pub struct SigningKey {
    kid: String,
    pkcs8: Zeroizing<Vec<u8>>,
    encoding_key: EncodingKey,
    x: String,
    y: String,
}

impl SigningKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<Self, KeyError> {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Generate)?;
        // `Document` zeroizes itself on drop.
        Self::from_pkcs8(document.as_ref())
    }

    /// Loads a PKCS#8 (DER) P-256 private key, e.g. after
    /// [`MasterKey::open`](crate::MasterKey::open).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, KeyError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| KeyError::InvalidPrivateKey)?;
        // Uncompressed SEC1 point: 0x04 ‖ X ‖ Y.
        let point = pair.public_key().as_ref();
        if point.len() != 1 + 2 * COORDINATE_BYTES || point.first() != Some(&0x04) {
            return Err(KeyError::InvalidPrivateKey);
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..=COORDINATE_BYTES]);
        let y = URL_SAFE_NO_PAD.encode(&point[1 + COORDINATE_BYTES..]);
        Ok(SigningKey {
            kid: jwk_thumbprint(&x, &y),
            pkcs8: Zeroizing::new(der.to_vec()),
            encoding_key: EncodingKey::from_ec_der(der),
            x,
            y,
        })
    }

    /// The private key as PKCS#8 DER. Seal it with the master key before
    /// storing it; never log it.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as published in the JWKS. Has no `d`.
    pub fn public_jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            x: self.x.clone(),
            y: self.y.clone(),
            kid: self.kid.clone(),
            alg: "ES256".to_owned(),
            use_: "sig".to_owned(),
        }
    }

    /// A compact JWS with header `{"alg":"ES256","typ":"at+jwt","kid":…}`.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        self.sign_typed(claims, ACCESS_TOKEN_TYP)
    }

    /// A compact JWS of another type than an access token (`typ`), so no
    /// validator of access tokens takes it for one.
    pub fn sign_typed<C: Serialize>(&self, claims: &C, typ: &str) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(typ.to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key).map_err(|_| KeyError::Sign)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &"ES256")
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// RFC 7638: SHA-256 over the required members in lexicographic order, no
/// whitespace. `x` and `y` are base64url, so they need no JSON escaping.
fn jwk_thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A public EC JWK (RFC 7517/7518) for the JWKS endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// A JWK Set: serializes as `{"keys":[…]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<PublicJwk>,
}

impl Jwks {
    /// The public halves of `keys`, in order (current key first, then the
    /// previous ones kept for the lifetime of tokens they signed).
    pub fn from_signing_keys<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Self {
        Jwks {
            keys: keys.into_iter().map(SigningKey::public_jwk).collect(),
        }
    }
}

#[cfg(test)]
#[path = "signing_key_tests.rs"]
mod tests;
