use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The server-side secret that keys the hashes of stored credentials. A copy
/// of the database without the pepper cannot be used to check guesses.
pub struct Pepper {
    bytes: Vec<u8>,
    /// HMAC keyed once: every request that presents an API key needs a MAC,
    /// and keying costs as much as the MAC of a short secret itself.
    keyed: Hmac<Sha256>,
}

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
        // HMAC takes keys of any length, so this error is never expected;
        // it is reported rather than replaced by some other key.
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes)
            .map_err(|e| format!("the pepper cannot key HMAC-SHA256: {e}"))?;
        Ok(Pepper { bytes, keyed })
    }

    /// A fresh random pepper.
    pub fn generate() -> Result<Self, String> {
        let mut bytes = vec![0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for the pepper: {e}"))?;
        Pepper::new(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Hex of HMAC-SHA256(pepper, secret).
    pub fn hash(&self, secret: &[u8]) -> String {
        hex::encode(self.mac(secret))
    }

    fn mac(&self, secret: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time check of `secret` against a stored hex hash.
    pub fn verify(&self, secret: &[u8], stored_hex: &str) -> bool {
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(stored_hex, &mut stored).is_err() {
            return false;
        }
        bool::from(self.mac(secret).ct_eq(&stored))
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
