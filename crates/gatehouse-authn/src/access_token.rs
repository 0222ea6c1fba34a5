//! Bearer JWT access tokens from the embedded authorization server: which
//! keys verify them, and the principal they stand for.
//!
//! Verification keys and client records are read from the store and kept
//! only while the store's credential generation is unchanged, so a new or
//! revoked signing key or a revoked client is seen on the next request.
//! Which keys verify also depends on the time (a replaced key retires once
//! its tokens have expired), so the keys are also read again when the
//! signing schedule changes by itself.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use gatehouse_core::{
    CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, TaskGrant, Timestamp,
};
use gatehouse_store::{ClientRecord, SigningKeyRecord, Store, signing_schedule};
use serde::Deserialize;

use crate::AuthnError;
use crate::jwt::{
    AccessTokenClaims, AccessTokenValidator, JwtError, MAX_LEEWAY_SECS, ValidatorConfig,
    VerificationKey,
};

/// The longest any access token lives, task tokens included (RFC 9700:
/// short-lived). The authorization server never signs a longer one.
pub const MAX_ACCESS_TOKEN_LIFETIME_SECS: i64 = 3600;

/// How long a replaced signing key keeps verifying after it stopped
/// signing: by then every token it signed has expired, even allowing the
/// largest clock-skew leeway a validator accepts. Then it retires and
/// leaves the JWKS.
pub const REPLACED_KEY_TRUST_MS: i64 =
    (MAX_ACCESS_TOKEN_LIFETIME_SECS + MAX_LEEWAY_SECS as i64) * 1000;

/// Whether a stored signing key is one Gatehouse made: its private half,
/// sealed with the master key, opens and is the key the record publishes.
/// Anyone who can write the database but lacks the master key could
/// otherwise add a public key of their own (activating in a hundred years,
/// so it never signs and nothing fails) and sign tokens for anyone.
pub type SigningKeyProof = Arc<dyn Fn(&SigningKeyRecord) -> bool + Send + Sync>;

/// What the resource server accepts.
#[derive(Clone)]
pub struct TokenSettings {
    /// The authorization server's issuer, exactly as in its metadata.
    pub issuer: String,
    /// Accepted `aud` values: the canonical resource URI.
    pub audiences: Vec<String>,
    /// Which stored keys to trust (`None`: every stored key, for tests and
    /// tools without the master key).
    pub proof: Option<SigningKeyProof>,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("proof", &self.proof.is_some())
            .finish()
    }
}

#[derive(Deserialize)]
struct PublicJwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

/// The verification key of a stored signing key (its public JWK).
pub fn verification_key(record: &SigningKeyRecord) -> Result<VerificationKey, AuthnError> {
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

/// How long a validated token is trusted without verifying its signature
/// again; never beyond its own `exp`. Keys and revocations flush the cache
/// at once (the generation moves), so this bounds only the cost, not safety.
const VALIDATED_TTL_MS: i64 = 60_000;
/// Only tokens that validated are cached, so this bounds memory; beyond it
/// the cache starts over.
const MAX_VALIDATED: usize = 10_000;

/// Validators for the keys trusted now, and for the keys withdrawn
/// (retired or revoked), which only tell a token they signed apart from a
/// forgery: such a token is refused as revoked or expired, which is not
/// guessing and so does not count toward a lockout of its sender.
struct Verifiers {
    trusted: AccessTokenValidator,
    withdrawn: AccessTokenValidator,
}

impl Verifiers {
    fn validate(&self, token: &str, now: Timestamp) -> Result<AccessTokenClaims, AuthnError> {
        match self.trusted.validate(token, now) {
            Ok(claims) => Ok(claims),
            Err(JwtError::UnknownKey) => Err(match self.withdrawn.validate(token, now) {
                // Signed by a withdrawn key: genuinely issued, or minted by
                // whoever holds that key; refused either way.
                Ok(_) => AuthnError::Revoked,
                Err(JwtError::Expired) => AuthnError::Expired,
                Err(e) => AuthnError::from_jwt(&e),
            }),
            // A guess, or a token we issued that is not accepted now.
            Err(e) => Err(AuthnError::from_jwt(&e)),
        }
    }
}

struct Cached {
    generation: u64,
    /// When the signing schedule next changes by itself (a key activates
    /// or retires): the keys are read again from then on.
    valid_until: Option<Timestamp>,
    verifiers: Arc<Verifiers>,
    /// Ids of revoked, unexpired tokens, read with the keys.
    revoked: Arc<HashSet<String>>,
    clients: HashMap<String, ClientRecord>,
    /// Keyed by the full token string: a hash as key would let a collision
    /// stand in for a token.
    validated: HashMap<String, (AccessTokenClaims, Timestamp)>,
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

    /// The embedded authorization server's issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The validator and revocation list for the current generation.
    async fn current(&self, store: &Arc<dyn Store>, now: Timestamp) -> Result<Current, AuthnError> {
        let generation = store.credential_generation();
        if let Some(g) = generation
            && let Ok(cache) = self.cache.lock()
            && let Some(cached) = cache.as_ref()
            && cached.generation == g
            && cached.valid_until.is_none_or(|until| now < until)
        {
            return Ok(Current {
                verifiers: Arc::clone(&cached.verifiers),
                revoked: Arc::clone(&cached.revoked),
                generation,
            });
        }
        let revoked: Arc<HashSet<String>> = Arc::new(
            store
                .revoked_tokens(now)
                .await
                .map_err(|e| AuthnError::Unavailable(e.to_string()))?
                .into_iter()
                .collect(),
        );
        let records = store
            .signing_keys()
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?;
        // The keys the JWKS publishes now: the signer, the next ones, and
        // replaced ones until their tokens have expired; never a retired
        // or revoked one.
        let schedule = signing_schedule(&records, now, REPLACED_KEY_TRUST_MS);
        let proven = |record: &SigningKeyRecord| match &self.settings.proof {
            Some(proves) if !proves(record) => {
                tracing::error!(
                    kid = %record.kid,
                    "a stored signing key does not open with the master key, or is not the key it \
                     publishes: it verifies nothing (was it written into the database by hand?)"
                );
                false
            }
            _ => true,
        };
        let validator = |trusted: bool| -> Result<AccessTokenValidator, AuthnError> {
            let keys = schedule
                .keys
                .iter()
                .filter(|k| k.state.is_trusted() == trusted && proven(k.record))
                .map(|k| verification_key(k.record))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(AccessTokenValidator::new(
                ValidatorConfig::new(
                    self.settings.issuer.clone(),
                    self.settings.audiences.clone(),
                ),
                keys,
            ))
        };
        let verifiers = Arc::new(Verifiers {
            trusted: validator(true)?,
            withdrawn: validator(false)?,
        });
        if let Some(g) = generation
            && let Ok(mut cache) = self.cache.lock()
        {
            *cache = Some(Cached {
                generation: g,
                valid_until: schedule.changes_at,
                verifiers: Arc::clone(&verifiers),
                revoked: Arc::clone(&revoked),
                clients: HashMap::new(),
                validated: HashMap::new(),
            });
        }
        Ok(Current {
            verifiers,
            revoked,
            generation,
        })
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

    /// Claims of a token validated earlier under the current generation and
    /// still inside both its cache lifetime and its own `exp`.
    fn validated(
        &self,
        token: &str,
        generation: Option<u64>,
        now: Timestamp,
    ) -> Option<AccessTokenClaims> {
        let g = generation?;
        let cache = self.cache.lock().ok()?;
        let cached = cache.as_ref().filter(|c| c.generation == g)?;
        let (claims, until) = cached.validated.get(token)?;
        (now < *until).then(|| claims.clone())
    }

    fn remember(
        &self,
        token: &str,
        claims: &AccessTokenClaims,
        generation: Option<u64>,
        now: Timestamp,
    ) {
        let Some(g) = generation else { return };
        let until = Timestamp::from_secs(claims.exp).min(now.plus_millis(VALIDATED_TTL_MS));
        if let Ok(mut cache) = self.cache.lock()
            && let Some(cached) = cache.as_mut()
            && cached.generation == g
        {
            if cached.validated.len() >= MAX_VALIDATED {
                cached.validated.clear();
            }
            cached
                .validated
                .insert(token.to_string(), (claims.clone(), until));
        }
    }

    /// Everything short of building a principal: signature and claims (or
    /// the validated-token cache), the revocation list and the client.
    pub async fn inspect(
        &self,
        store: &Arc<dyn Store>,
        token: &str,
        now: Timestamp,
    ) -> Result<AccessTokenClaims, AuthnError> {
        let current = self.current(store, now).await?;
        let claims = match self.validated(token, current.generation, now) {
            Some(claims) => claims,
            None => {
                let claims = current.verifiers.validate(token, now)?;
                self.remember(token, &claims, current.generation, now);
                claims
            }
        };
        if current.revoked.contains(&claims.jti) {
            return Err(AuthnError::Revoked);
        }
        if let Some(task) = &claims.task {
            // The token it was exchanged for must still stand: not revoked,
            // and its signing key still trusted.
            if task.base_kind == CredentialKind::AccessToken.as_str()
                && current.revoked.contains(&task.base_id)
            {
                return Err(AuthnError::Revoked);
            }
            if let Some(kid) = &task.base_kid
                && !current.verifiers.trusted.has_key(kid)
            {
                return Err(AuthnError::Revoked);
            }
            // An API key's state is checked by the authenticator, which
            // holds the key cache; there is no OAuth client to check.
            if task.base_kind == CredentialKind::ApiKey.as_str() {
                return Ok(claims);
            }
        }
        // A revoked client's tokens stop at once, not when they expire. A
        // client that is gone (an unused dynamic registration expires) was
        // real when we signed its token: not a guess either.
        match self
            .client(store, &claims.client_id, current.generation)
            .await?
        {
            None => Err(AuthnError::TokenNotAccepted("unknown_client")),
            Some(client) if client.revoked_at.is_some() => Err(AuthnError::Revoked),
            Some(client) if machine_token_cut_off(&client, &claims) => Err(AuthnError::Revoked),
            Some(_) => Ok(claims),
        }
    }

    /// Whether `id` (a token's `jti` or a task grant) is on the revocation
    /// list of the current generation.
    pub async fn is_revoked(
        &self,
        store: &Arc<dyn Store>,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, AuthnError> {
        Ok(self.current(store, now).await?.revoked.contains(id))
    }
}

/// A token the client obtained for itself (client credentials: its own
/// id as `sub`) before the cut set when its secret was rotated as leaked.
/// The cut is a whole second, as `iat` is.
fn machine_token_cut_off(client: &ClientRecord, claims: &AccessTokenClaims) -> bool {
    claims.sub == claims.client_id
        && client
            .machine_tokens_not_before
            .is_some_and(|cut| claims.iat.saturating_mul(1000) < cut.as_millis())
}

struct Current {
    verifiers: Arc<Verifiers>,
    revoked: Arc<HashSet<String>>,
    generation: Option<u64>,
}

pub(crate) fn principal_for_token(claims: AccessTokenClaims) -> Principal {
    let human = (claims.sub != claims.client_id).then(|| claims.sub.clone());
    let expires_at = Timestamp::from_secs(claims.exp);
    // A task token acts as the credential it was derived from (so revoking
    // that stops it), narrowed to its grant.
    let (credential, task) = match claims.task {
        None => (
            CredentialRef {
                kind: CredentialKind::AccessToken,
                id: claims.jti,
            },
            None,
        ),
        Some(task) => (
            CredentialRef {
                kind: if task.base_kind == CredentialKind::ApiKey.as_str() {
                    CredentialKind::ApiKey
                } else {
                    CredentialKind::AccessToken
                },
                id: task.base_id,
            },
            Some(TaskGrant {
                id: claims.jti,
                task: task.name,
                tools: task.tools,
                expires_at,
                issued_at: Some(Timestamp::from_secs(claims.iat)),
            }),
        ),
    };
    Principal {
        tenant: claims.tenant.unwrap_or_else(|| DEFAULT_TENANT.to_string()),
        human,
        agent: claims.client_id,
        credential,
        roles: claims.roles,
        scopes: claims.scope.map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }),
        expires_at: Some(expires_at),
        task,
        issuer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::MAX_LEEWAY_SECS;
    use crate::test_key::TestKey;
    use gatehouse_store::SqliteStore;
    use serde_json::json;

    const ISSUER: &str = "http://127.0.0.1:8787";
    const RESOURCE: &str = "http://127.0.0.1:8787/mcp";

    /// Stores the public half of `key`, signing from `activates_at`.
    async fn store_key(store: &Arc<dyn Store>, key: &TestKey, activates_at: Timestamp) {
        store
            .insert_signing_key(&SigningKeyRecord {
                kid: key.kid.clone(),
                sealed_pkcs8: vec![0],
                public_jwk: json!({"kty": "EC", "crv": "P-256", "x": key.x(), "y": key.y()})
                    .to_string(),
                created_at: activates_at,
                activates_at,
                revoked_at: None,
            })
            .await
            .unwrap();
    }

    async fn setup() -> (Arc<dyn Store>, AccessTokens, TestKey) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let key = TestKey::generate("k1");
        store_key(&store, &key, Timestamp(0)).await;
        store
            .insert_client(&ClientRecord {
                id: "ghc_bot".into(),
                name: "bot".into(),
                tenant: "acme".into(),
                role: "reader".into(),
                scopes: None,
                secret_hash: Some("00".repeat(32)),
                created_at: Timestamp(0),
                revoked_at: None,
                redirect_uris: Vec::new(),
                grant_types: vec!["client_credentials".into()],
                auth_method: "client_secret_basic".into(),
                registered_by: "operator".into(),
                last_used_at: None,
                may_introspect: false,
                jwks: None,
                jwks_uri: None,
                secret_issued_at: None,
                previous_secret: None,
                machine_tokens_not_before: None,
            })
            .await
            .unwrap();
        let tokens = AccessTokens::new(TokenSettings {
            issuer: ISSUER.into(),
            audiences: vec![RESOURCE.into()],
            proof: None,
        });
        (store, tokens, key)
    }

    impl AccessTokens {
        async fn authenticate(
            &self,
            store: &Arc<dyn Store>,
            token: &str,
            now: Timestamp,
        ) -> Result<Principal, AuthnError> {
            self.inspect(store, token, now)
                .await
                .map(principal_for_token)
        }
    }

    fn token(key: &TestKey, exp_secs: i64) -> String {
        key.encode(&json!({
            "iss": ISSUER, "sub": "ghc_bot", "aud": RESOURCE, "client_id": "ghc_bot",
            "scope": "tools:read", "tenant": "acme", "roles": ["reader"], "jti": "j1",
            "iat": 1000, "exp": exp_secs
        }))
    }

    /// A stored key the proof does not vouch for (written into the
    /// database without the master key) verifies nothing.
    #[tokio::test]
    async fn a_stored_key_that_is_not_proven_verifies_nothing() {
        let (store, _, key) = setup().await;
        let tokens = AccessTokens::new(TokenSettings {
            issuer: ISSUER.into(),
            audiences: vec![RESOURCE.into()],
            proof: Some(Arc::new(|record: &SigningKeyRecord| record.kid != "k1")),
        });
        assert!(
            tokens
                .authenticate(&store, &token(&key, 2000), Timestamp::from_secs(1500))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_valid_token_becomes_a_principal() {
        let (store, tokens, key) = setup().await;
        let p = tokens
            .authenticate(&store, &token(&key, 2000), Timestamp::from_secs(1500))
            .await
            .unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.agent, "ghc_bot");
        assert_eq!(p.human, None);
        assert_eq!(p.credential.kind, CredentialKind::AccessToken);
        assert_eq!(p.credential.id, "j1");
        assert_eq!(p.scopes, Some(vec!["tools:read".to_string()]));
    }

    #[tokio::test]
    async fn a_cached_token_still_expires_on_time() {
        let (store, tokens, key) = setup().await;
        let t = token(&key, 2000);
        // Cached at 1999 s. The cache never outlives `exp`: from 2000 s the
        // token is validated again, which allows the 30 s clock-skew leeway
        // and no more.
        assert!(
            tokens
                .authenticate(&store, &t, Timestamp::from_secs(1999))
                .await
                .is_ok()
        );
        assert!(
            tokens
                .authenticate(&store, &t, Timestamp::from_secs(2029))
                .await
                .is_ok()
        );
        assert_eq!(
            tokens
                .authenticate(&store, &t, Timestamp::from_secs(2031))
                .await,
            Err(AuthnError::TokenNotAccepted("token_expired"))
        );
    }

    #[tokio::test]
    async fn revoking_the_client_flushes_cached_tokens() {
        let (store, tokens, key) = setup().await;
        let t = token(&key, 2000);
        let at = Timestamp::from_secs(1500);
        assert!(tokens.authenticate(&store, &t, at).await.is_ok());
        store.revoke_client("ghc_bot", at).await.unwrap();
        assert_eq!(
            tokens.authenticate(&store, &t, at).await,
            Err(AuthnError::Revoked)
        );
    }

    #[tokio::test]
    async fn a_secret_rotated_as_leaked_cuts_off_the_clients_own_earlier_tokens_only() {
        let (store, tokens, key) = setup().await;
        let own = token(&key, 5000); // iat 1000 s
        let users = key.encode(&json!({
            "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "ghc_bot",
            "scope": "tools:read", "tenant": "acme", "roles": ["reader"], "jti": "j2",
            "iat": 1000, "exp": 5000
        }));
        let later = key.encode(&json!({
            "iss": ISSUER, "sub": "ghc_bot", "aud": RESOURCE, "client_id": "ghc_bot",
            "scope": "tools:read", "tenant": "acme", "roles": ["reader"], "jti": "j3",
            "iat": 1501, "exp": 5000
        }));
        let at = Timestamp::from_secs(1500);
        assert!(tokens.authenticate(&store, &own, at).await.is_ok());
        // The rotation at 1500.5 s, cutting off the client's own tokens
        // issued before 1501 s.
        let (rotated_at, cut) = (Timestamp(1_500_500), Timestamp::from_secs(1501));
        assert!(
            store
                .rotate_client_secret(
                    "ghc_bot",
                    &"00".repeat(32),
                    &"11".repeat(32),
                    rotated_at,
                    rotated_at,
                    Some(cut),
                )
                .await
                .unwrap()
        );
        // Its own earlier token stops (cached or not), a user's token of
        // the same client stays, and one issued from the cut on works.
        let now = Timestamp::from_secs(1502);
        assert_eq!(
            tokens.authenticate(&store, &own, now).await,
            Err(AuthnError::Revoked)
        );
        assert!(tokens.authenticate(&store, &users, now).await.is_ok());
        assert!(tokens.authenticate(&store, &later, now).await.is_ok());
        // A token of the second before the cut is refused too.
        let same_second = key.encode(&json!({
            "iss": ISSUER, "sub": "ghc_bot", "aud": RESOURCE, "client_id": "ghc_bot",
            "scope": "tools:read", "tenant": "acme", "roles": ["reader"], "jti": "j4",
            "iat": 1500, "exp": 5000
        }));
        assert_eq!(
            tokens.authenticate(&store, &same_second, now).await,
            Err(AuthnError::Revoked)
        );
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_even_when_cached() {
        let (store, tokens, key) = setup().await;
        let t = token(&key, 2000);
        let at = Timestamp::from_secs(1500);
        assert!(tokens.authenticate(&store, &t, at).await.is_ok());
        store
            .revoke_token("j1", Timestamp::from_secs(2000), at)
            .await
            .unwrap();
        assert_eq!(
            tokens.authenticate(&store, &t, at).await,
            Err(AuthnError::Revoked)
        );
    }

    /// A token is accepted up to the leeway past its `exp`; its revocation
    /// must outlive that, even when the revocation list is read again (here:
    /// another revocation moves the generation and purges the list).
    #[tokio::test]
    async fn a_revoked_token_stays_refused_within_the_leeway_after_it_expires() {
        let (store, tokens, key) = setup().await;
        let t = token(&key, 2000);
        store
            .revoke_token("j1", Timestamp::from_secs(2000), Timestamp::from_secs(1500))
            .await
            .unwrap();
        store
            .revoke_token(
                "other",
                Timestamp::from_secs(9999),
                Timestamp::from_secs(2005),
            )
            .await
            .unwrap();
        assert_eq!(
            tokens
                .authenticate(&store, &t, Timestamp::from_secs(2010))
                .await,
            Err(AuthnError::Revoked)
        );
        assert!(
            gatehouse_store::REVOCATION_GRACE_MS >= i64::try_from(MAX_LEEWAY_SECS).unwrap() * 1000,
            "revocations must be kept for at least the longest leeway"
        );
    }

    /// Issue 9 item 3: a token we signed that is refused for its times, its
    /// audience or issuer, a revocation or a vanished client was genuinely
    /// issued, so it never counts toward a lockout; tokens that may be
    /// guesses still do.
    #[tokio::test]
    async fn only_tokens_that_may_be_guesses_count_toward_a_lockout() {
        let (store, tokens, key) = setup().await;
        let at = Timestamp::from_secs(1500);
        let claims = json!({
            "iss": ISSUER, "sub": "ghc_bot", "aud": RESOURCE, "client_id": "ghc_bot",
            "jti": "j1", "iat": 1000, "exp": 2000
        });
        let with = |name: &str, value: serde_json::Value| {
            let mut changed = claims.clone();
            changed[name] = value;
            key.encode(&changed)
        };
        let mut issued = vec![
            with("exp", json!(1400)),
            with("nbf", json!(1600)),
            with("iat", json!(1600)),
            with("aud", json!("http://127.0.0.1:9999/mcp")),
            with("iss", json!("http://127.0.0.1:9999")),
            with("client_id", json!("ghc_ghost")),
            // A task token whose base access token was revoked (below).
            with(
                "task",
                json!({"name": "t", "tools": [], "base_kind": "access_token", "base_id": "j0"}),
            ),
        ];
        store
            .revoke_token("j0", Timestamp::from_secs(2000), at)
            .await
            .unwrap();
        issued.push(with("jti", json!("j2")));
        store
            .revoke_token("j2", Timestamp::from_secs(2000), at)
            .await
            .unwrap();
        for token in &issued {
            let error = tokens.authenticate(&store, token, at).await.unwrap_err();
            assert!(!error.counts_toward_lockout(), "{error:?}");
        }
        let stranger = TestKey::generate("k1");
        let unknown_kid = TestKey::generate("k9");
        for token in [
            stranger.encode(&claims),
            stranger.encode(&json!({"exp": 1400})),
            unknown_kid.encode(&claims),
            "x.y.z".to_string(),
        ] {
            let error = tokens.authenticate(&store, &token, at).await.unwrap_err();
            assert!(error.counts_toward_lockout(), "{error:?}");
        }
    }

    #[tokio::test]
    async fn a_replaced_key_stops_verifying_once_its_tokens_have_expired_even_when_cached() {
        let (store, tokens, old) = setup().await;
        let new = TestKey::generate("k2");
        let replaced_at = Timestamp::from_secs(10_000);
        store_key(&store, &new, replaced_at).await;
        // Signed by the old key, with an `exp` far beyond its retirement:
        // what someone holding the old key can mint at any time.
        let forged = token(&old, 1_000_000);
        let retiring = replaced_at.plus_millis(1_000);
        assert!(tokens.authenticate(&store, &forged, retiring).await.is_ok());
        // Cached, same generation: still refused the moment the key retires.
        let retired = replaced_at.plus_millis(REPLACED_KEY_TRUST_MS);
        assert!(
            tokens
                .authenticate(&store, &forged, retired.plus_millis(-1))
                .await
                .is_ok()
        );
        // Refused as revoked, not as guessing: it does not count toward a
        // lockout of its sender.
        assert_eq!(
            tokens.authenticate(&store, &forged, retired).await,
            Err(AuthnError::Revoked)
        );
        // A token it really signed has expired by then, and says so.
        let genuine = token(&old, replaced_at.as_secs());
        assert_eq!(
            tokens.authenticate(&store, &genuine, retired).await,
            Err(AuthnError::Expired)
        );
        // A forgery under its kid without the key is what it always was.
        let parts: Vec<&str> = forged.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 4]
        );
        assert!(matches!(
            tokens.authenticate(&store, &tampered, retired).await,
            Err(AuthnError::InvalidToken(_))
        ));
        // The replacing key verifies on.
        let current = new.encode(&json!({
            "iss": ISSUER, "sub": "ghc_bot", "aud": RESOURCE, "client_id": "ghc_bot",
            "jti": "j3", "iat": retired.as_secs(), "exp": retired.as_secs() + 60
        }));
        assert!(tokens.authenticate(&store, &current, retired).await.is_ok());
    }

    #[tokio::test]
    async fn a_revoked_signing_key_is_refused_at_once_even_when_cached() {
        let (store, tokens, key) = setup().await;
        let t = token(&key, 2000);
        let at = Timestamp::from_secs(1500);
        assert!(tokens.authenticate(&store, &t, at).await.is_ok());
        assert!(store.revoke_signing_key(&key.kid, at).await.unwrap());
        assert_eq!(
            tokens.authenticate(&store, &t, at).await,
            Err(AuthnError::Revoked)
        );
    }

    #[tokio::test]
    async fn tokens_of_unknown_clients_are_refused() {
        let (store, tokens, key) = setup().await;
        let t = key.encode(&json!({
            "iss": ISSUER, "sub": "ghc_ghost", "aud": RESOURCE, "client_id": "ghc_ghost",
            "jti": "j2", "iat": 1000, "exp": 2000
        }));
        assert_eq!(
            tokens
                .authenticate(&store, &t, Timestamp::from_secs(1500))
                .await,
            Err(AuthnError::TokenNotAccepted("unknown_client"))
        );
    }
}
