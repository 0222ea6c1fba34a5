//! OAuth clients, registered by an operator (`gatehouse clients create`)
//! or dynamically (RFC 7591). A confidential client's secret is shown once
//! and stored only as a keyed hash; a public client has none.

use base64::Engine;
use gatehouse_authn::Pepper;
use gatehouse_core::Timestamp;
use gatehouse_store::ClientRecord;

use crate::OAuthError;

/// Client ids look like `ghc_<16 symbols>`: recognisable, never a secret.
/// The `token_endpoint_auth_method` of a client that signs assertions.
pub const PRIVATE_KEY_JWT: &str = "private_key_jwt";

pub const CLIENT_ID_PREFIX: &str = "ghc_";
const ID_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A client just registered: the record to store and its secret (for a
/// confidential client), shown once.
pub struct IssuedClient {
    pub record: ClientRecord,
    pub secret: Option<String>,
}

/// What a new client is.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub name: String,
    pub tenant: String,
    pub role: String,
    pub scopes: Option<Vec<String>>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// `none` makes a public client without a secret.
    pub auth_method: String,
    pub registered_by: String,
    /// May introspect other clients' tokens (operator clients only).
    pub may_introspect: bool,
    /// For `private_key_jwt`: the client's public keys, or where they are.
    pub jwks: Option<String>,
    pub jwks_uri: Option<String>,
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

/// A client secret just made: shown once, stored only as its hash.
pub struct NewClientSecret {
    pub secret: String,
    /// Hex of HMAC-SHA256(pepper, secret).
    pub hash: String,
}

impl std::fmt::Debug for NewClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewClientSecret(<redacted>)")
    }
}

/// Marks a string as a Gatehouse client secret, like `ghk_` an API key:
/// a secret presented as a bearer token by mistake is then known for one of
/// Gatehouse's own and never sent to an identity provider's introspection
/// endpoint. Secrets made before it (without it) are still accepted.
pub const CLIENT_SECRET_PREFIX: &str = "ghs_";

/// `ghs_` and 32 random bytes, base64url: the secret of a confidential
/// client, at registration and at each rotation.
pub fn new_client_secret(pepper: &Pepper) -> Result<NewClientSecret, OAuthError> {
    let secret = format!(
        "{CLIENT_SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random(32)?)
    );
    let hash = pepper.hash(secret.as_bytes());
    Ok(NewClientSecret { secret, hash })
}

pub fn issue_client(
    pepper: &Pepper,
    spec: ClientSpec,
    now: Timestamp,
) -> Result<IssuedClient, OAuthError> {
    let id: String = random(16)?
        .iter()
        .map(|b| char::from(ID_ALPHABET[usize::from(b & 0x1f)]))
        .collect();
    // A public client has no secret, and a private_key_jwt client proves
    // itself with its key instead.
    let secret = if spec.auth_method == "none" || spec.auth_method == PRIVATE_KEY_JWT {
        None
    } else {
        Some(new_client_secret(pepper)?)
    };
    Ok(IssuedClient {
        record: ClientRecord {
            id: format!("{CLIENT_ID_PREFIX}{id}"),
            name: spec.name,
            tenant: spec.tenant,
            role: spec.role,
            scopes: spec.scopes,
            secret_hash: secret.as_ref().map(|s| s.hash.clone()),
            created_at: now,
            revoked_at: None,
            redirect_uris: spec.redirect_uris,
            grant_types: spec.grant_types,
            auth_method: spec.auth_method,
            registered_by: spec.registered_by,
            last_used_at: None,
            may_introspect: spec.may_introspect,
            jwks: spec.jwks,
            jwks_uri: spec.jwks_uri,
            secret_issued_at: None,
            previous_secret: None,
            machine_tokens_not_before: None,
        },
        secret: secret.map(|s| s.secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_client_secret_verifies_and_is_not_stored() {
        let pepper = Pepper::new(vec![5; 32]).unwrap();
        let spec = ClientSpec {
            name: "bot".into(),
            tenant: "default".into(),
            role: "reader".into(),
            scopes: None,
            redirect_uris: Vec::new(),
            grant_types: vec!["client_credentials".into()],
            auth_method: "client_secret_basic".into(),
            registered_by: "operator".into(),
            may_introspect: false,
            jwks: None,
            jwks_uri: None,
        };
        let issued = issue_client(&pepper, spec.clone(), Timestamp(1)).unwrap();
        assert!(issued.record.id.starts_with(CLIENT_ID_PREFIX));
        let secret = issued.secret.clone().unwrap();
        // Known for Gatehouse's own (never introspected elsewhere), and as
        // long as before after the mark.
        assert!(secret.starts_with(CLIENT_SECRET_PREFIX), "{secret}");
        assert_eq!(secret.len(), CLIENT_SECRET_PREFIX.len() + 43);
        let hash = issued.record.secret_hash.clone().unwrap();
        assert!(pepper.verify(secret.as_bytes(), &hash));
        assert!(!format!("{:?}", issued.record).contains(&secret));
        assert!(!format!("{issued:?}").contains(&secret));
        let public = issue_client(
            &pepper,
            ClientSpec {
                auth_method: "none".into(),
                ..spec
            },
            Timestamp(1),
        )
        .unwrap();
        assert!(public.secret.is_none() && public.record.is_public());
    }
}
