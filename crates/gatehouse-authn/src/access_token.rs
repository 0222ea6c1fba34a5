//! Bearer JWT access tokens from the embedded authorization server: which
//! keys verify them, and the principal they stand for.
//!
//! Verification keys and client records are read from the store and kept
//! only while the store's credential generation is unchanged, so a new
//! signing key or a revoked client is seen on the next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_core::{CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, Timestamp};
use gatehouse_store::{ClientRecord, SigningKeyRecord, Store};
use serde::Deserialize;

use crate::AuthnError;
use crate::jwt::{AccessTokenClaims, AccessTokenValidator, ValidatorConfig, VerificationKey};

/// What the resource server accepts.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The authorization server's issuer, exactly as in its metadata.
    pub issuer: String,
    /// Accepted `aud` values: the canonical resource URI.
    pub audiences: Vec<String>,
}

#[derive(Deserialize)]
struct PublicJwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

fn verification_key(record: &SigningKeyRecord) -> Result<VerificationKey, AuthnError> {
    let jwk: PublicJwk = serde_json::from_str(&record.public_jwk)
        .map_err(|e| AuthnError::Internal(format!("stored JWK {}: {e}", record.kid)))?;
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(AuthnError::Internal(format!(
            "stored JWK {} is not an ES256 key",
            record.kid
        )));
    }
    VerificationKey::from_es256_jwk(&record.kid, &jwk.x, &jwk.y)
        .map_err(|e| AuthnError::Internal(format!("stored JWK {}: {e}", record.kid)))
}

struct Cached {
    generation: u64,
    validator: Arc<AccessTokenValidator>,
    clients: HashMap<String, ClientRecord>,
}

pub struct AccessTokens {
    settings: TokenSettings,
    cache: Mutex<Option<Cached>>,
}

impl AccessTokens {
    pub fn new(settings: TokenSettings) -> Self {
        AccessTokens {
            settings,
            cache: Mutex::new(None),
        }
    }

    async fn validator(
        &self,
        store: &Arc<dyn Store>,
    ) -> Result<(Arc<AccessTokenValidator>, Option<u64>), AuthnError> {
        let generation = store.credential_generation();
        if let Some(g) = generation
            && let Ok(cache) = self.cache.lock()
            && let Some(cached) = cache.as_ref()
            && cached.generation == g
        {
            return Ok((Arc::clone(&cached.validator), generation));
        }
        let records = store
            .signing_keys()
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?;
        let keys = records
            .iter()
            .map(verification_key)
            .collect::<Result<Vec<_>, _>>()?;
        let validator = Arc::new(AccessTokenValidator::new(
            ValidatorConfig::new(
                self.settings.issuer.clone(),
                self.settings.audiences.clone(),
            ),
            keys,
        ));
        if let Some(g) = generation
            && let Ok(mut cache) = self.cache.lock()
        {
            *cache = Some(Cached {
                generation: g,
                validator: Arc::clone(&validator),
                clients: HashMap::new(),
            });
        }
        Ok((validator, generation))
    }

    async fn client(
        &self,
        store: &Arc<dyn Store>,
        id: &str,
        generation: Option<u64>,
    ) -> Result<Option<ClientRecord>, AuthnError> {
        if let Some(g) = generation
            && let Ok(cache) = self.cache.lock()
            && let Some(cached) = cache.as_ref()
            && cached.generation == g
            && let Some(client) = cached.clients.get(id)
        {
            return Ok(Some(client.clone()));
        }
        let client = store
            .client(id)
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?;
        if let (Some(g), Some(record)) = (generation, &client)
            && let Ok(mut cache) = self.cache.lock()
            && let Some(cached) = cache.as_mut()
            && cached.generation == g
        {
            cached.clients.insert(id.to_string(), record.clone());
        }
        Ok(client)
    }

    /// Validates `token` completely and returns its principal.
    pub async fn authenticate(
        &self,
        store: &Arc<dyn Store>,
        token: &str,
        now: Timestamp,
    ) -> Result<Principal, AuthnError> {
        let (validator, generation) = self.validator(store).await?;
        let claims = validator
            .validate(token, now)
            .map_err(|e| AuthnError::InvalidToken(e.code()))?;
        // A revoked client's tokens stop at once, not when they expire.
        match self.client(store, &claims.client_id, generation).await? {
            None => return Err(AuthnError::Unknown),
            Some(client) if client.revoked_at.is_some() => return Err(AuthnError::Revoked),
            Some(_) => {}
        }
        Ok(principal_for_token(claims))
    }
}

fn principal_for_token(claims: AccessTokenClaims) -> Principal {
    let human = (claims.sub != claims.client_id).then(|| claims.sub.clone());
    Principal {
        tenant: claims.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
        human,
        agent: claims.client_id,
        credential: CredentialRef {
            kind: CredentialKind::AccessToken,
            id: claims.jti,
        },
        roles: claims.roles,
        scopes: claims.scope.map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }),
        expires_at: Some(Timestamp::from_secs(claims.exp)),
    }
}
