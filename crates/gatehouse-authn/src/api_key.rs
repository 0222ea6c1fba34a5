use base64::Engine;
use gatehouse_core::Timestamp;
use gatehouse_store::ApiKeyRecord;

use crate::{AuthnError, Pepper};

/// Every Gatehouse API key starts with this, so leaked keys are easy to
/// recognise (and to redact).
pub const KEY_PREFIX: &str = "ghk";

const ID_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
const ID_LEN: usize = 12;
const SECRET_BYTES: usize = 32;
/// Base64url without padding of 32 bytes.
const SECRET_LEN: usize = 43;

/// A key just issued: the record to store and the full key, shown once.
pub struct IssuedApiKey {
    pub record: ApiKeyRecord,
    /// The complete key string. Print it once; it is never stored.
    pub key: String,
}

impl std::fmt::Debug for IssuedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedApiKey")
            .field("id", &self.record.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The two halves of a presented key.
pub struct ApiKeyParts<'a> {
    pub id: &'a str,
    pub secret: &'a str,
}

fn random_bytes(n: usize) -> Result<Vec<u8>, AuthnError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| AuthnError::Internal(e.to_string()))?;
    Ok(bytes)
}

fn random_id() -> Result<String, AuthnError> {
    // 12 symbols × 5 bits = 60 bits: unique ids without a coordination step.
    let bytes = random_bytes(ID_LEN)?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(b & 0x1f)]))
        .collect())
}

/// Creates a new key. `template` supplies everything but id, hash and
/// creation time.
#[allow(clippy::too_many_arguments)]
pub fn issue_api_key(
    pepper: &Pepper,
    name: &str,
    tenant: &str,
    role: &str,
    scopes: Option<Vec<String>>,
    owner: Option<String>,
    now: Timestamp,
    expires_at: Option<Timestamp>,
) -> Result<IssuedApiKey, AuthnError> {
    let id = random_id()?;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(SECRET_BYTES)?);
    let record = ApiKeyRecord {
        id: id.clone(),
        name: name.to_string(),
        tenant: tenant.to_string(),
        role: role.to_string(),
        scopes,
        owner,
        secret_hash: pepper.hash(secret.as_bytes()),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        rotated_to: None,
    };
    Ok(IssuedApiKey {
        record,
        key: format!("{KEY_PREFIX}_{id}_{secret}"),
    })
}

/// Splits `ghk_<id>_<secret>`; anything else is `Malformed`.
pub fn parse_api_key(key: &str) -> Result<ApiKeyParts<'_>, AuthnError> {
    let rest = key
        .strip_prefix(KEY_PREFIX)
        .and_then(|r| r.strip_prefix('_'))
        .ok_or(AuthnError::Malformed)?;
    // The id never contains '_', the secret may: split at the first one.
    let (id, secret) = rest.split_once('_').ok_or(AuthnError::Malformed)?;
    let id_ok = id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b));
    let secret_ok = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok || !secret_ok {
        return Err(AuthnError::Malformed);
    }
    Ok(ApiKeyParts { id, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pepper() -> Pepper {
        Pepper::new(vec![3; 32]).unwrap()
    }

    #[test]
    fn issued_key_parses_and_verifies() {
        let issued = issue_api_key(
            &pepper(),
            "ci",
            "default",
            "reader",
            None,
            None,
            Timestamp(1),
            None,
        )
        .unwrap();
        assert!(issued.key.starts_with("ghk_"));
        let parts = parse_api_key(&issued.key).unwrap();
        assert_eq!(parts.id, issued.record.id);
        assert!(pepper().verify(parts.secret.as_bytes(), &issued.record.secret_hash));
        // The stored record never contains the secret.
        assert!(!format!("{:?}", issued.record).contains(parts.secret));
        assert!(!format!("{issued:?}").contains(parts.secret));
    }

    #[test]
    fn keys_are_unique() {
        let a = issue_api_key(
            &pepper(),
            "a",
            "t",
            "reader",
            None,
            None,
            Timestamp(1),
            None,
        )
        .unwrap();
        let b = issue_api_key(
            &pepper(),
            "a",
            "t",
            "reader",
            None,
            None,
            Timestamp(1),
            None,
        )
        .unwrap();
        assert_ne!(a.key, b.key);
        assert_ne!(a.record.id, b.record.id);
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = issue_api_key(
            &pepper(),
            "a",
            "t",
            "reader",
            None,
            None,
            Timestamp(1),
            None,
        )
        .unwrap()
        .key;
        let cases = [
            String::new(),
            "ghk".into(),
            "ghk_".into(),
            good.replacen("ghk_", "xyz_", 1),
            good[..good.len() - 1].to_string(),
            format!("{good}A"),
            good.replacen("ghk_", "GHK_", 1),
            format!("{good} "),
            good.replace('_', "-"),
            format!("ghk_{}_{}", "A".repeat(12), "a".repeat(43)),
        ];
        for case in cases {
            assert!(parse_api_key(&case).is_err(), "{case:?}");
        }
    }
}
