//! A P-256 key for tests that need to sign access tokens.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

use crate::jwt::VerificationKey;

pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) pkcs8: Vec<u8>,
    /// Uncompressed public point 0x04 ‖ X ‖ Y.
    pub(crate) point: Vec<u8>,
}

impl TestKey {
    pub(crate) fn generate(kid: &str) -> TestKey {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 0x04);
        TestKey {
            kid: kid.to_owned(),
            pkcs8: doc.as_ref().to_vec(),
            point,
        }
    }

    pub(crate) fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.point[1..33])
    }

    pub(crate) fn y(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.point[33..65])
    }

    pub(crate) fn verification_key(&self) -> VerificationKey {
        VerificationKey::from_es256_jwk(&self.kid, &self.x(), &self.y()).unwrap()
    }

    /// The normal path: jsonwebtoken's encoder with a DER (PKCS#8) key.
    pub(crate) fn encode(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}
