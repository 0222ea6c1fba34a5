use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The server-side secret that keys the hashes of stored credentials. A copy
/// of the database without the pepper cannot be used to check guesses.
pub struct Pepper(Vec<u8>);

impl Pepper {
    pub const MIN_BYTES: usize = 32;

    /// Refuses peppers shorter than 32 bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(format!(
                "the pepper must be at least {} bytes (got {})",
                Self::MIN_BYTES,
                bytes.len()
            ));
        }
        Ok(Pepper(bytes))
    }

    /// A fresh random pepper.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Pepper(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Hex of HMAC-SHA256(pepper, secret).
    pub fn hash(&self, secret: &[u8]) -> String {
        hex::encode(self.mac(secret))
    }

    fn mac(&self, secret: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return Vec::new(),
        };
        mac.update(secret);
        mac.finalize().into_bytes().to_vec()
    }

    /// Constant-time check of `secret` against a stored hex hash.
    pub fn verify(&self, secret: &[u8], stored_hex: &str) -> bool {
        let Ok(stored) = hex::decode(stored_hex) else {
            return false;
        };
        let computed = self.mac(secret);
        computed.len() == stored.len() && bool::from(computed.ct_eq(&stored))
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_pepper_is_refused() {
        assert!(Pepper::new(vec![1; 31]).is_err());
        assert!(Pepper::new(vec![1; 32]).is_ok());
    }

    #[test]
    fn verify_matches_only_the_same_secret_and_pepper() {
        let pepper = Pepper::new(vec![7; 32]).unwrap();
        let other = Pepper::new(vec![8; 32]).unwrap();
        let stored = pepper.hash(b"secret");
        assert!(pepper.verify(b"secret", &stored));
        assert!(!pepper.verify(b"secreT", &stored));
        assert!(!other.verify(b"secret", &stored));
        assert!(!pepper.verify(b"secret", "not-hex"));
        assert!(!pepper.verify(b"secret", ""));
    }

    #[test]
    fn debug_hides_the_bytes() {
        let pepper = Pepper::new(vec![0x41; 32]).unwrap();
        assert_eq!(format!("{pepper:?}"), "Pepper(<redacted>)");
    }
}
