//! The master key: seals private signing keys before they are stored.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use zeroize::{Zeroize, Zeroizing};

use crate::KeyError;

/// Length of the master key (AES-256).
pub const MASTER_KEY_BYTES: usize = 32;
/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;

/// A 256-bit AES-GCM key. Zeroized on drop; `Debug` prints `<redacted>`.
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_BYTES]>);

impl MasterKey {
    /// Exactly [`MASTER_KEY_BYTES`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != MASTER_KEY_BYTES {
            return Err(KeyError::InvalidLength);
        }
        let mut key = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        key.copy_from_slice(bytes);
        Ok(MasterKey(key))
    }

    /// 64 hex digits (either case); surrounding whitespace, such as the
    /// newline at the end of a key file, is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != 2 * MASTER_KEY_BYTES {
            return Err(KeyError::InvalidLength);
        }
        let mut key = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        hex::decode_to_slice(text, &mut key[..]).map_err(|_| KeyError::InvalidHex)?;
        Ok(MasterKey(key))
    }

    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        getrandom::fill(&mut key[..]).map_err(|_| KeyError::Random)?;
        Ok(MasterKey(key))
    }

    /// Lower-case hex, for writing the key file once. The caller owns the
    /// secret string from here on.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0[..])
    }

    /// AES-256-GCM with a random 96-bit nonce; `aad` (use the key id) is
    /// authenticated but not encrypted. Output: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let key = self.aead_key()?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| KeyError::Random)?;

        // Sized up front so the buffer holding the plaintext never reallocates
        // (which would leave a copy of it in freed memory).
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let sealed = key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[NONCE_LEN..],
        );
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(out)
            }
            Err(_) => {
                out.zeroize();
                Err(KeyError::Seal)
            }
        }
    }

    /// Whether this master key opens the stored signing key: the check a
    /// command makes before it seals anything the servers must open.
    pub fn opens(&self, record: &gatehouse_store::SigningKeyRecord) -> bool {
        self.open(&record.sealed_pkcs8, record.kid.as_bytes())
            .map(Zeroizing::new)
            .is_ok()
    }

    /// Reverses [`MasterKey::seal`]. A wrong key, wrong `aad`, any modified
    /// byte or a truncated input all fail with [`KeyError::Open`].
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Open)?;
        let key = self.aead_key()?;
        let mut buf = body.to_vec();
        let plaintext_len = match key.open_in_place(nonce, Aad::from(aad), &mut buf) {
            Ok(plaintext) => plaintext.len(),
            Err(_) => {
                buf.zeroize();
                return Err(KeyError::Open);
            }
        };
        buf.truncate(plaintext_len);
        Ok(buf)
    }

    fn aead_key(&self) -> Result<LessSafeKey, KeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0[..]).map_err(|_| KeyError::Seal)?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
#[path = "master_key_tests.rs"]
mod tests;

/// Tenant secrets sealed with the master key (AES-256-GCM, bound to tenant
/// and name), stored as `sealed:v1:` and base64url.
impl gatehouse_core::SecretCipher for MasterKey {
    fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<String, String> {
        let sealed = MasterKey::seal(
            self,
            value.as_bytes(),
            &gatehouse_core::secret_binding(tenant, name),
        )
        .map_err(|e| e.to_string())?;
        Ok(format!(
            "{}{}",
            gatehouse_core::SEALED_PREFIX,
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sealed)
        ))
    }

    fn open(&self, tenant: &str, name: &str, stored: &str) -> Result<String, String> {
        // Every server seals the values stored before sealing existed as it
        // starts (`seal_stored_secrets`), so an unsealed value is one written
        // into the database by someone without the master key: refused, as
        // a moved or altered sealed value is.
        let Some(encoded) = stored.strip_prefix(gatehouse_core::SEALED_PREFIX) else {
            return Err(
                "the stored secret is not sealed (it was not written by Gatehouse); set it again \
                 with `gatehouse secrets set`"
                    .to_string(),
            );
        };
        let sealed =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, encoded)
                .map_err(|_| "the sealed secret is not valid base64url".to_string())?;
        let plain = MasterKey::open(self, &sealed, &gatehouse_core::secret_binding(tenant, name))
            .map_err(|_| {
            "the sealed secret does not open with this master key for this tenant and name"
                .to_string()
        })?;
        String::from_utf8(plain).map_err(|_| "the sealed secret is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod secret_cipher_tests {
    use gatehouse_core::SecretCipher;

    use super::MasterKey;

    #[test]
    fn secrets_are_sealed_bound_to_tenant_and_name_and_unsealed_values_refused() {
        let key = MasterKey::generate().unwrap();
        let stored = SecretCipher::seal(&key, "acme", "crm_token", "s3cret").unwrap();
        assert!(stored.starts_with(gatehouse_core::SEALED_PREFIX));
        assert!(!stored.contains("s3cret"));
        assert_eq!(
            SecretCipher::open(&key, "acme", "crm_token", &stored).unwrap(),
            "s3cret"
        );
        // Moved to another tenant or name, or opened with another key: refused.
        assert!(SecretCipher::open(&key, "globex", "crm_token", &stored).is_err());
        assert!(SecretCipher::open(&key, "acme", "other", &stored).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(SecretCipher::open(&other, "acme", "crm_token", &stored).is_err());
        let mut altered = stored.clone();
        altered.pop();
        altered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(SecretCipher::open(&key, "acme", "crm_token", &altered).is_err());
        // A value that is not sealed is refused (every server seals the
        // values stored before sealing as it starts): whoever wrote it into
        // the database had no master key.
        let refused = SecretCipher::open(&key, "acme", "old", "plain").unwrap_err();
        assert!(!refused.contains("plain"), "{refused}");
    }
}
