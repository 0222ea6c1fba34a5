//! The embedded authorization server's domain logic: signing keys, the
//! client-credentials grant, metadata and JWKS. No HTTP here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_audit::{AuditLog, EventBuilder};
use gatehouse_authn::{AccessTokens, AuthnError, Pepper, TokenSettings};
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_store::{ClientRecord, SigningKeyRecord, Store, signing_schedule};
use serde::Serialize;
use serde_json::json;

use crate::{Jwks, MasterKey, OAuthError, PublicJwk, SigningKey, routes};

/// Access tokens live at most this long (RFC 9700: short-lived).
pub const MAX_ACCESS_TOKEN_TTL_SECS: i64 = 3600;
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: i64 = 900;

#[derive(Debug, Clone)]
pub struct AsConfig {
    /// Exactly the public URL origin; also the `iss` of every token.
    pub issuer: String,
    /// The canonical MCP resource URI: the only audience tokens are issued for.
    pub resource: String,
    pub access_token_ttl_secs: i64,
    /// Scopes the policy knows.
    pub scopes: Vec<String>,
    /// Tool names, for `tool:<name>` scopes.
    pub tools: Vec<String>,
}

/// How the client authenticated at the token endpoint.
#[derive(Clone)]
pub struct ClientAuth {
    pub id: String,
    pub secret: String,
    /// HTTP Basic (true) or form parameters (false).
    pub basic: bool,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("basic", &self.basic)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub grant_type: String,
    pub client: ClientAuth,
    pub scope: Option<String>,
    pub resource: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    tenant: &'a str,
    roles: [&'a str; 1],
    jti: String,
    iat: i64,
    exp: i64,
}

pub struct AuthorizationServer {
    config: AsConfig,
    /// Validation of our own tokens, for revocation and introspection.
    tokens: AccessTokens,
    store: Arc<dyn Store>,
    pepper: Pepper,
    audit: AuditLog,
    master: MasterKey,
    /// Unsealed signing keys by kid, so each is unsealed once.
    unsealed: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// Stored key records, read again only when the credential generation
    /// moves (a key was added), not on every token or JWKS request.
    key_records: Mutex<Option<(u64, Arc<Vec<SigningKeyRecord>>)>>,
}

fn unavailable(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::TemporarilyUnavailable(e.to_string())
}

fn random_jti() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| OAuthError::ServerError(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The longest any token can live: how long a replaced key stays published.
const MAX_TOKEN_LIFETIME_MS: i64 = MAX_ACCESS_TOKEN_TTL_SECS * 1000;

/// Generates a signing key, stores it sealed under the master key, and
/// returns its record. It signs from `activates_at`; the JWKS publishes it
/// from now on, so verifiers that cache the JWKS know it before it is used.
pub async fn add_signing_key(
    store: &Arc<dyn Store>,
    master: &MasterKey,
    now: Timestamp,
    activates_at: Timestamp,
) -> Result<SigningKeyRecord, OAuthError> {
    let key = SigningKey::generate().map_err(|e| OAuthError::ServerError(e.to_string()))?;
    let sealed = master
        .seal(key.pkcs8(), key.kid().as_bytes())
        .map_err(|e| OAuthError::ServerError(e.to_string()))?;
    let public_jwk = serde_json::to_string(&key.public_jwk())
        .map_err(|e| OAuthError::ServerError(e.to_string()))?;
    let record = SigningKeyRecord {
        kid: key.kid().to_string(),
        sealed_pkcs8: sealed,
        public_jwk,
        created_at: now,
        activates_at,
        retired_at: None,
    };
    store
        .insert_signing_key(&record)
        .await
        .map_err(unavailable)?;
    Ok(record)
}

fn unseal(master: &MasterKey, record: &SigningKeyRecord) -> Result<SigningKey, OAuthError> {
    let pkcs8 = zeroize::Zeroizing::new(
        master
            .open(&record.sealed_pkcs8, record.kid.as_bytes())
            .map_err(|e| {
                OAuthError::ServerError(format!(
                    "signing key {} cannot be unsealed with this master key: {e}",
                    record.kid
                ))
            })?,
    );
    SigningKey::from_pkcs8(&pkcs8).map_err(|e| OAuthError::ServerError(e.to_string()))
}

impl AuthorizationServer {
    pub async fn start(
        config: AsConfig,
        store: Arc<dyn Store>,
        pepper: Pepper,
        master: MasterKey,
        audit: AuditLog,
        now: Timestamp,
    ) -> Result<Self, OAuthError> {
        let records = store.signing_keys().await.map_err(unavailable)?;
        if signing_schedule(&records, now, MAX_TOKEN_LIFETIME_MS)
            .signer
            .is_none()
        {
            add_signing_key(&store, &master, now, now).await?;
        }
        let tokens = AccessTokens::new(TokenSettings {
            issuer: config.issuer.clone(),
            audiences: vec![config.resource.clone()],
        });
        Ok(AuthorizationServer {
            tokens,
            config,
            store,
            pepper,
            audit,
            master,
            unsealed: Mutex::new(HashMap::new()),
            key_records: Mutex::new(None),
        })
    }

    async fn key_records(&self) -> Result<Arc<Vec<SigningKeyRecord>>, OAuthError> {
        let generation = self.store.credential_generation();
        if let Some(g) = generation
            && let Ok(cache) = self.key_records.lock()
            && let Some((cached, records)) = cache.as_ref()
            && *cached == g
        {
            return Ok(Arc::clone(records));
        }
        let records = Arc::new(self.store.signing_keys().await.map_err(unavailable)?);
        if let Some(g) = generation
            && let Ok(mut cache) = self.key_records.lock()
        {
            *cache = Some((g, Arc::clone(&records)));
        }
        Ok(records)
    }

    /// The key that signs now (it changes when a rotated key activates).
    async fn signer(&self, now: Timestamp) -> Result<Arc<SigningKey>, OAuthError> {
        let records = self.key_records().await?;
        let schedule = signing_schedule(&records, now, MAX_TOKEN_LIFETIME_MS);
        let record = schedule
            .signer
            .ok_or_else(|| OAuthError::ServerError("no signing key is active".into()))?;
        if let Ok(unsealed) = self.unsealed.lock()
            && let Some(key) = unsealed.get(&record.kid)
        {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(unseal(&self.master, record)?);
        if let Ok(mut unsealed) = self.unsealed.lock() {
            unsealed.insert(record.kid.clone(), Arc::clone(&key));
        }
        Ok(key)
    }

    pub fn config(&self) -> &AsConfig {
        &self.config
    }

    /// RFC 8414 metadata: only what is implemented is advertised.
    pub fn metadata(&self) -> serde_json::Value {
        let issuer = &self.config.issuer;
        json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}{}", routes::TOKEN),
            "jwks_uri": format!("{issuer}{}", routes::JWKS),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint": format!("{issuer}{}", routes::REVOKE),
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "introspection_endpoint": format!("{issuer}{}", routes::INTROSPECT),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": self.config.scopes,
        })
    }

    /// The keys to publish now: the signer, the next one, and replaced ones
    /// until their tokens have expired.
    pub async fn jwks(&self, now: Timestamp) -> Result<Jwks, OAuthError> {
        let records = self.key_records().await?;
        let keys = signing_schedule(&records, now, MAX_TOKEN_LIFETIME_MS)
            .published
            .into_iter()
            .map(|r| {
                serde_json::from_str::<PublicJwk>(&r.public_jwk)
                    .map_err(|e| OAuthError::ServerError(format!("stored JWK {}: {e}", r.kid)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Jwks { keys })
    }

    fn check_scope(
        &self,
        requested: &str,
        allowed: &Option<Vec<String>>,
    ) -> Result<(), OAuthError> {
        for scope in requested.split(' ').filter(|s| !s.is_empty()) {
            let known = self.config.scopes.iter().any(|s| s == scope)
                || scope
                    .strip_prefix("tool:")
                    .is_some_and(|t| self.config.tools.iter().any(|n| n == t));
            if !known {
                return Err(OAuthError::InvalidScope(format!("unknown scope {scope:?}")));
            }
            if let Some(allowed) = allowed
                && !allowed.iter().any(|a| a == scope)
            {
                return Err(OAuthError::InvalidScope(format!(
                    "scope {scope:?} is not granted to this client"
                )));
            }
        }
        Ok(())
    }

    async fn audit_outcome(
        &self,
        client_id: &str,
        result: &Result<TokenResponse, OAuthError>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let (outcome, reason) = match result {
            Ok(_) => (Outcome::Success, "client_credentials"),
            Err(e) => (Outcome::Failure, e.code()),
        };
        let mut event = EventBuilder::new(AuditKind::Authentication, outcome, now)
            .agent(client_id)
            .credential(Some(client_id.to_string()))
            .decision(if result.is_ok() { "allow" } else { "deny" })
            .reason(reason)
            .tool("oauth/token");
        if let Err(e) = result {
            event = event.error(e.to_string());
        }
        self.audit.record(event.build()).await.map_err(unavailable)
    }

    /// Checks a client's credentials; unknown, wrong and revoked look alike.
    pub async fn authenticate_client(&self, auth: &ClientAuth) -> Result<ClientRecord, OAuthError> {
        let client = self.store.client(&auth.id).await.map_err(unavailable)?;
        let invalid_client = OAuthError::InvalidClient { basic: auth.basic };
        let Some(client) = client else {
            // Same work as for a known client: no timing hint about ids.
            let _ = self.pepper.verify(auth.secret.as_bytes(), &"0".repeat(64));
            return Err(invalid_client);
        };
        if !self
            .pepper
            .verify(auth.secret.as_bytes(), &client.secret_hash)
            || client.revoked_at.is_some()
        {
            return Err(invalid_client);
        }
        Ok(client)
    }

    /// RFC 7009. Invalid or unknown tokens are not an error; a token of
    /// another client is refused. The revocation is audited.
    pub async fn revoke(
        &self,
        auth: &ClientAuth,
        token: &str,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate_client(auth).await?;
        let claims = match self.tokens.inspect(&self.store, token, now).await {
            Ok(claims) => claims,
            Err(AuthnError::Unavailable(e)) => return Err(OAuthError::TemporarilyUnavailable(e)),
            // Already invalid, expired or revoked: nothing left to do.
            Err(_) => return Ok(()),
        };
        if claims.client_id != client.id {
            return Err(OAuthError::UnauthorizedClient(
                "the token was issued to another client".into(),
            ));
        }
        self.store
            .revoke_token(&claims.jti, Timestamp::from_secs(claims.exp), now)
            .await
            .map_err(unavailable)?;
        let event = EventBuilder::new(AuditKind::Authentication, Outcome::Success, now)
            .agent(&client.id)
            .credential(Some(claims.jti.clone()))
            .decision("revoke")
            .reason("token_revoked")
            .tool("oauth/revoke")
            .build();
        self.audit.record(event).await.map_err(unavailable)
    }

    /// RFC 7662: the state of a token, for an authenticated client.
    /// Anything not currently valid is just `{"active": false}`.
    pub async fn introspect(
        &self,
        auth: &ClientAuth,
        token: &str,
        now: Timestamp,
    ) -> Result<serde_json::Value, OAuthError> {
        self.authenticate_client(auth).await?;
        match self.tokens.inspect(&self.store, token, now).await {
            Ok(claims) => Ok(json!({
                "active": true,
                "token_type": "Bearer",
                "scope": claims.scope,
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "exp": claims.exp,
                "iat": claims.iat,
                "jti": claims.jti,
                "tenant": claims.tenant,
                "roles": claims.roles,
            })),
            Err(AuthnError::Unavailable(e)) => Err(OAuthError::TemporarilyUnavailable(e)),
            Err(_) => Ok(json!({"active": false})),
        }
    }

    /// The token endpoint. Every outcome is audited before it is returned;
    /// no token leaves without its record.
    pub async fn token(
        &self,
        request: TokenRequest,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let client_id = request.client.id.clone();
        let result = self.client_credentials(request, now).await;
        self.audit_outcome(&client_id, &result, now).await?;
        result
    }

    async fn client_credentials(
        &self,
        request: TokenRequest,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        match request.grant_type.as_str() {
            "client_credentials" => {}
            "password" | "implicit" => {
                return Err(OAuthError::UnsupportedGrantType(format!(
                    "grant_type {} is not supported (OAuth 2.1)",
                    request.grant_type
                )));
            }
            other => {
                return Err(OAuthError::UnsupportedGrantType(format!(
                    "grant_type {other:?} is not supported"
                )));
            }
        }
        let client = self.authenticate_client(&request.client).await?;
        match request.resource.as_slice() {
            [] => {}
            [one] if *one == self.config.resource => {}
            [one] => {
                return Err(OAuthError::InvalidTarget(format!(
                    "tokens are issued only for {}, not {one:?}",
                    self.config.resource
                )));
            }
            _ => {
                return Err(OAuthError::InvalidTarget(
                    "only one resource may be requested".into(),
                ));
            }
        }
        let scope = request.scope.filter(|s| !s.trim().is_empty());
        if let Some(scope) = &scope {
            self.check_scope(scope, &client.scopes)?;
        }
        // Without a requested scope the client gets what it was registered with.
        let granted = scope.or_else(|| client.scopes.as_ref().map(|s| s.join(" ")));
        let ttl = self
            .config
            .access_token_ttl_secs
            .clamp(1, MAX_ACCESS_TOKEN_TTL_SECS);
        let iat = now.as_secs();
        let claims = AccessClaims {
            iss: &self.config.issuer,
            sub: &client.id,
            aud: &self.config.resource,
            client_id: &client.id,
            scope: granted.as_deref(),
            tenant: &client.tenant,
            roles: [client.role.as_str()],
            jti: random_jti()?,
            iat,
            exp: iat + ttl,
        };
        let access_token = self
            .signer(now)
            .await?
            .sign(&claims)
            .map_err(|e| OAuthError::ServerError(e.to_string()))?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: granted,
        })
    }
}
