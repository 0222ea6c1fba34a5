//! OAuth clients registered by an operator: `gatehouse clients create`.
//! The secret is shown once and stored only as a keyed hash.

use base64::Engine;
use gatehouse_authn::Pepper;
use gatehouse_core::Timestamp;
use gatehouse_store::ClientRecord;

use crate::OAuthError;

/// Client ids look like `ghc_<16 symbols>`: recognisable, never a secret.
pub const CLIENT_ID_PREFIX: &str = "ghc_";
const ID_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A client just registered: the record to store and its secret, shown once.
pub struct IssuedClient {
    pub record: ClientRecord,
    pub secret: String,
}

impl std::fmt::Debug for IssuedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedClient")
            .field("id", &self.record.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn random(n: usize) -> Result<Vec<u8>, OAuthError> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| OAuthError::ServerError(e.to_string()))?;
    Ok(bytes)
}

pub fn issue_client(
    pepper: &Pepper,
    name: &str,
    tenant: &str,
    role: &str,
    scopes: Option<Vec<String>>,
    now: Timestamp,
) -> Result<IssuedClient, OAuthError> {
    let id: String = random(16)?
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(b & 0x1f)]))
        .collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)?);
    Ok(IssuedClient {
        record: ClientRecord {
            id: format!("{CLIENT_ID_PREFIX}{id}"),
            name: name.to_string(),
            tenant: tenant.to_string(),
            role: role.to_string(),
            scopes,
            secret_hash: pepper.hash(secret.as_bytes()),
            created_at: now,
            revoked_at: None,
        },
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_client_secret_verifies_and_is_not_stored() {
        let pepper = Pepper::new(vec![5; 32]).unwrap();
        let issued = issue_client(&pepper, "bot", "default", "reader", None, Timestamp(1)).unwrap();
        assert!(issued.record.id.starts_with(CLIENT_ID_PREFIX));
        assert!(pepper.verify(issued.secret.as_bytes(), &issued.record.secret_hash));
        assert!(!format!("{:?}", issued.record).contains(&issued.secret));
        assert!(!format!("{issued:?}").contains(&issued.secret));
    }
}
