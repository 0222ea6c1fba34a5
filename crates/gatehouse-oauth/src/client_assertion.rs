//! `private_key_jwt` client authentication (RFC 7523 §2.2, as the MCP
//! client-credentials extension uses it): the client signs a short-lived
//! JWT (`iss` = `sub` = its client id, `aud` = this server's issuer, a
//! `jti`) with a key whose public half it registered, as a JWKS document
//! or a `jwks_uri`. Nothing secret is stored or sent.
//!
//! The key comes only from what the client registered: an operator's
//! `--jwks` / `--jwks-uri`, or the `jwks` / `jwks_uri` of its metadata
//! document. A `jwks_uri` is fetched with the same guard as an identity
//! provider's keys (public addresses only, except the development hosts
//! allowed for metadata documents; no redirects; a size cap) and cached
//! the same way. Each `jti` is used once, atomically in the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_authn::external::{
    ACCEPTED_ALGORITHMS, AssertionKeys, AssertionRules, AssertionType, Issuer, KeySet, parse_jwks,
    verify_assertion,
};
use gatehouse_authn::jwt::JwtError;
use gatehouse_core::Timestamp;
use gatehouse_store::{AuthorizationStore, ClientRecord};
use url::Url;

/// `client_assertion_type` for a JWT client assertion.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// An assertion lives a few minutes at most (RFC 7523 asks for a short `exp`).
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
const ASSERTION_LEEWAY_SECS: u64 = 30;
/// Most client key sets cached at once; beyond it the cache starts over.
const MAX_KEY_SETS: usize = 1_000;
/// Where the `jti` of client assertions is remembered, per client.
const USED_BY_CLIENT_PREFIX: &str = "client:";

/// Why a client assertion was refused (for the log; the client is told
/// only `invalid_client`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the client registered no usable key: {0}")]
    NoKeys(String),
    #[error("{}", .0.code())]
    Invalid(JwtError),
    #[error("the assertion was used before (jti replay)")]
    Replayed,
    #[error("the store cannot record the assertion: {0}")]
    Store(String),
}

impl AssertionError {
    /// The reason code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            AssertionError::NoKeys(_) => "client_keys_unavailable",
            AssertionError::Invalid(e) => e.code(),
            AssertionError::Replayed => "assertion_replayed",
            AssertionError::Store(_) => "store_unavailable",
        }
    }
}

/// Checks a `jwks_uri` a client registers: https, or http for a
/// development host; no user information or fragment.
pub fn validate_jwks_uri(uri: &str, dev_hosts: &[String]) -> Result<Url, String> {
    let url = Url::parse(uri).map_err(|e| format!("jwks_uri is not a URL: {e}"))?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let dev = dev_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host));
    match url.scheme() {
        "https" => {}
        "http" if dev => {}
        _ => return Err("jwks_uri must use https".into()),
    }
    if host.is_empty() || !url.username().is_empty() || url.password().is_some() {
        return Err("jwks_uri must name a host and no user information".into());
    }
    if url.fragment().is_some() {
        return Err("jwks_uri must not contain a fragment".into());
    }
    Ok(url)
}

/// Checks a JWKS document a client registers: at least one usable signing
/// key (RS256, PS256, ES256 or EdDSA), and no private or symmetric key.
pub fn validate_jwks(document: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(document).map_err(|_| "jwks is not JSON".to_string())?;
    let keys = value
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| "jwks must be an object with a keys array".to_string())?;
    // A private key published by mistake is refused, not silently used as
    // a public one: whoever sent it has leaked it.
    let private = ["d", "p", "q", "dp", "dq", "qi", "k"];
    if keys
        .iter()
        .any(|k| private.iter().any(|m| k.get(m).is_some()))
    {
        return Err(
            "jwks must hold public keys only (a private or symmetric key was given)".into(),
        );
    }
    let usable =
        parse_jwks(document.as_bytes(), &ACCEPTED_ALGORITHMS).map_err(|e| e.to_string())?;
    if usable.is_empty() {
        return Err("jwks holds no usable signing key (RS256, PS256, ES256 or EdDSA)".into());
    }
    Ok(())
}

/// The key sets of clients that registered a `jwks_uri`, by URL.
pub struct ClientKeySets {
    sets: Mutex<HashMap<String, Arc<KeySet>>>,
    dev_hosts: Vec<String>,
}

impl ClientKeySets {
    pub fn new(dev_hosts: Vec<String>) -> ClientKeySets {
        ClientKeySets {
            sets: Mutex::new(HashMap::new()),
            dev_hosts,
        }
    }

    fn key_set(&self, client_id: &str, uri: &str) -> Result<Arc<KeySet>, AssertionError> {
        let url = validate_jwks_uri(uri, &self.dev_hosts).map_err(AssertionError::NoKeys)?;
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = sets.get(uri) {
            return Ok(Arc::clone(set));
        }
        if sets.len() >= MAX_KEY_SETS {
            sets.clear();
        }
        let host = url.host_str().unwrap_or_default();
        let internal = self.dev_hosts.iter().any(|h| h.eq_ignore_ascii_case(host));
        let set = KeySet::new(Arc::new(Issuer::key_set_only(
            &format!("client {client_id}"),
            url,
            internal,
        )));
        sets.insert(uri.to_owned(), Arc::clone(&set));
        Ok(set)
    }

    /// Verifies `assertion` as `client`'s, for a server whose issuer
    /// identifier is `issuer`, and spends its `jti` in `store`.
    pub async fn verify(
        &self,
        client: &ClientRecord,
        assertion: &str,
        issuer: &str,
        now: Timestamp,
        store: &dyn AuthorizationStore,
    ) -> Result<(), AssertionError> {
        let audiences = [issuer.to_owned()];
        let rules = AssertionRules {
            issuer: &client.id,
            subject: Some(&client.id),
            audiences: &audiences,
            typ: AssertionType::ClientAuthentication,
            max_lifetime_secs: MAX_ASSERTION_LIFETIME_SECS,
            leeway_secs: ASSERTION_LEEWAY_SECS,
            algorithms: &ACCEPTED_ALGORITHMS,
        };
        let verified = match (&client.jwks, &client.jwks_uri) {
            (Some(document), _) => {
                let keys = parse_jwks(document.as_bytes(), &ACCEPTED_ALGORITHMS)
                    .map_err(|e| AssertionError::NoKeys(e.to_string()))?;
                verify_assertion(assertion, AssertionKeys::Given(&keys), &rules, now).await
            }
            (None, Some(uri)) => {
                let set = self.key_set(&client.id, uri)?;
                verify_assertion(assertion, AssertionKeys::Fetched(&set), &rules, now).await
            }
            (None, None) => {
                return Err(AssertionError::NoKeys("neither jwks nor jwks_uri".into()));
            }
        }
        .map_err(AssertionError::Invalid)?;
        // Remembered until it could no longer be accepted anyway.
        let leeway = i64::try_from(ASSERTION_LEEWAY_SECS).unwrap_or(0);
        let until = Timestamp::from_secs(verified.exp.saturating_add(leeway));
        let first = store
            .use_assertion(
                &format!("{USED_BY_CLIENT_PREFIX}{}", client.id),
                &verified.jti,
                until,
                now,
            )
            .await
            .map_err(|e| AssertionError::Store(e.to_string()))?;
        if !first {
            return Err(AssertionError::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_uri_must_be_https_unless_a_dev_host() {
        assert!(validate_jwks_uri("https://app.example.com/jwks.json", &[]).is_ok());
        assert!(validate_jwks_uri("http://app.example.com/jwks.json", &[]).is_err());
        let dev = vec!["127.0.0.1".to_string()];
        assert!(validate_jwks_uri("http://127.0.0.1:9/jwks.json", &dev).is_ok());
        assert!(validate_jwks_uri("https://u:p@app.example.com/jwks.json", &[]).is_err());
        assert!(validate_jwks_uri("https://app.example.com/jwks.json#x", &[]).is_err());
        assert!(validate_jwks_uri("file:///etc/passwd", &[]).is_err());
    }

    #[test]
    fn a_registered_jwks_must_hold_public_signing_keys() {
        assert!(validate_jwks("{}").is_err());
        assert!(validate_jwks(r#"{"keys": []}"#).is_err());
        let secret = r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#;
        assert!(
            validate_jwks(secret)
                .unwrap_err()
                .contains("private or symmetric")
        );
        let private_ec = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "e",
            "x": "AAAA", "y": "AAAA", "d": "AAAA"}]}"#;
        assert!(validate_jwks(private_ec).is_err());
    }
}
