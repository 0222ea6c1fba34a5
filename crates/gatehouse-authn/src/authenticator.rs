use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use gatehouse_core::{CredentialKind, CredentialRef, LastUse, Principal, Timestamp};
use gatehouse_metrics::Metrics;
use gatehouse_store::{ApiKeyRecord, Store};

use crate::access_token::{AccessTokens, TokenSettings, principal_for_token};
use crate::external::ExternalIssuers;
use crate::failure_records::FailureRecords;
use crate::jwt::AccessTokenClaims;
use crate::key_cache::KeyCache;
use crate::lockout::{LockoutPolicy, Lockouts, NewLock};
use crate::{AuthnError, KEY_PREFIX, Pepper, parse_api_key};

/// Whether requests must authenticate.
#[derive(Debug, Clone)]
pub enum AuthMode {
    Required,
    /// Authentication is off: every request runs as this principal. Only for
    /// loopback development, benchmarks and conformance runs.
    Disabled {
        anonymous: Box<Principal>,
    },
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    pepper: Pepper,
    mode: AuthMode,
    /// Bearer JWTs are accepted only when an authorization server is configured.
    tokens: Option<AccessTokens>,
    /// Identity providers whose tokens are accepted (`[[issuers]]`).
    external: Option<Arc<ExternalIssuers>>,
    /// `last_used_at` is written at most once a minute per key, so a busy
    /// key does not turn every request into a database write.
    last_use: LastUse,
    cache: KeyCache,
    /// Counts failures and holds the view of active locks; gate 1 consults
    /// it around `authenticate`, where the source address is known.
    lockouts: Lockouts,
    /// The revocation list by credential generation, when there are no
    /// access tokens (whose cache holds it otherwise).
    revoked: Mutex<Option<(u64, HashSet<String>)>>,
    /// Gate 1's counters (outcomes, lockouts, cache hits) and its latency.
    metrics: Arc<Metrics>,
    /// How many failures per source gate 1 records one by one.
    failure_records: FailureRecords,
}

/// Whether `credential` has the shape of a Gatehouse secret (`ghk_` API
/// keys, `ghr_` refresh tokens, `gho_` operation tokens, `ghs_` client
/// secrets, `gha_` authorization codes, `ghd_` device codes...): such a string
/// is never sent to an identity provider, even when presented by mistake.
fn is_gatehouse_credential(credential: &str) -> bool {
    let bytes = credential.as_bytes();
    bytes.len() > 4 && bytes.starts_with(b"gh") && bytes[2].is_ascii_lowercase() && bytes[3] == b'_'
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, pepper: Pepper, mode: AuthMode) -> Self {
        Authenticator {
            lockouts: Lockouts::new(Arc::clone(&store) as _, LockoutPolicy::default()),
            store,
            pepper,
            mode,
            tokens: None,
            external: None,
            last_use: LastUse::new(),
            cache: KeyCache::default(),
            revoked: Mutex::new(None),
            metrics: Arc::default(),
            failure_records: FailureRecords::default(),
        }
    }

    /// How many failures per source are recorded one by one (see
    /// `failure_records.rs`).
    pub fn failure_records(&self) -> &FailureRecords {
        &self.failure_records
    }

    /// Records gate 1's metrics in `metrics` (shared with the rest of the
    /// request path) instead of a registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Also accept access tokens from the embedded authorization server.
    pub fn with_access_tokens(mut self, settings: TokenSettings) -> Self {
        self.tokens = Some(AccessTokens::new(settings));
        self
    }

    /// Also accept access tokens of these external issuers.
    pub fn with_external_issuers(mut self, issuers: Arc<ExternalIssuers>) -> Self {
        self.external = (!issuers.is_empty()).then_some(issuers);
        self
    }

    /// The external issuers, for the protected resource metadata.
    pub fn external_issuers(&self) -> &[String] {
        self.external
            .as_deref()
            .map(ExternalIssuers::issuers)
            .unwrap_or_default()
    }

    pub fn mode(&self) -> &AuthMode {
        &self.mode
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    /// Whether the store answers now (readiness: gate 1 fails closed
    /// without it).
    /// The store's credential generation (see `gatehouse_store::Store`):
    /// it moves whenever a credential changes; `None` when unknown.
    pub fn credential_generation(&self) -> Option<u64> {
        self.store.credential_generation()
    }

    pub async fn store_reachable(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    /// Checks the presented credential (already extracted from the request).
    pub async fn authenticate(
        &self,
        credential: Option<&str>,
        now: Timestamp,
    ) -> Result<Principal, AuthnError> {
        if let AuthMode::Disabled { anonymous } = &self.mode {
            return Ok((**anonymous).clone());
        }
        let credential = credential.ok_or(AuthnError::Missing)?;
        // Our API keys have a fixed prefix; anything else shaped like a JWS
        // compact serialisation is treated as an access token: ours when
        // its `iss` is the embedded authorization server (or cannot be
        // read: ours then reports why), else an external issuer's, which
        // refuses an issuer it does not know.
        let token_shaped =
            !credential.starts_with(KEY_PREFIX) && credential.split('.').count() == 3;
        if token_shaped
            && let Some(external) = &self.external
            && let Some(result) = external
                .authenticate_unless_own(
                    credential,
                    self.tokens.as_ref().map(AccessTokens::issuer),
                    now,
                )
                .await
        {
            return result.map_err(|e| AuthnError::from_jwt(&e));
        }
        if token_shaped && self.tokens.is_some() {
            return self
                .access_token(credential, now)
                .await
                .map(principal_for_token);
        }
        // Anything else that is not one of our own credentials is an
        // opaque token, for the one issuer that introspects (if any).
        if !is_gatehouse_credential(credential)
            && let Some(introspector) = self.external.as_ref().and_then(|e| e.introspector())
        {
            return introspector
                .authenticate(credential, now)
                .await
                .map_err(|e| AuthnError::from_jwt(&e));
        }
        let parts = parse_api_key(credential)?;
        let record = self.key_record(parts.id).await?;
        let Some(record) = record else {
            // Spend the same work as for a known key, so response time does
            // not tell which key ids exist.
            let _ = self.pepper.verify(parts.secret.as_bytes(), &"0".repeat(64));
            return Err(AuthnError::Unknown);
        };
        if !self
            .pepper
            .verify(parts.secret.as_bytes(), &record.secret_hash)
        {
            return Err(AuthnError::BadSecret);
        }
        // Only a holder of the secret learns that a key is revoked or expired.
        if record.is_revoked() {
            return Err(AuthnError::Revoked);
        }
        if record.is_expired(now) {
            return Err(AuthnError::Expired);
        }
        self.touch(&record.id, now);
        Ok(principal_for_key(&record))
    }

    /// Gate 1 for a bearer access token: its signature under a key trusted
    /// now, its claims, the revocation list, its client and, for a task
    /// token, the credential it was derived from. The MCP endpoint accepts
    /// exactly the tokens this accepts, and introspection reports exactly
    /// this answer.
    pub async fn access_token(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<AccessTokenClaims, AuthnError> {
        let Some(tokens) = &self.tokens else {
            return Err(AuthnError::Malformed);
        };
        let claims = tokens.inspect(&self.store, token, now).await?;
        if let Some(task) = &claims.task {
            // Tokens are accepted a little past `exp` (clocks differ); a
            // task token's `exp` is its grant's end, and the task's
            // duration is a limit the policy sets, not a hint. Checked
            // here, so introspection says what `/mcp` does.
            if Timestamp::from_secs(claims.exp) <= now {
                return Err(AuthnError::Expired);
            }
            if task.base_kind == CredentialKind::ApiKey.as_str() {
                self.check_base_key(&task.base_id, now).await?;
            }
        }
        Ok(claims)
    }

    /// Authentication with lockout: a locked API key id or source address
    /// is refused before the secret is checked, and a failure that looks
    /// like guessing is counted. Returns the outcome and the locks this
    /// failure set (for the caller's audit record). Counting is
    /// bookkeeping: if the store cannot count, the request is refused all
    /// the same, and the lock view fails closed once it is too old.
    pub async fn authenticate_guarded(
        &self,
        credential: &str,
        source: Option<&str>,
        now: Timestamp,
    ) -> (Result<Principal, AuthnError>, Vec<NewLock>) {
        let key_id = parse_api_key(credential).ok().map(|p| p.id.to_string());
        let result = match self.lockouts.check(source, key_id.as_deref(), now).await {
            Ok(()) => self.authenticate(Some(credential), now).await,
            Err(locked) => Err(locked),
        };
        let new_locks = match &result {
            Err(error) if error.counts_toward_lockout() => match self
                .lockouts
                .record_failure(source, key_id.as_deref(), now)
                .await
            {
                Ok(locks) => locks,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count an authentication failure");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        (result, new_locks)
    }

    /// A task token derived from an API key stands only while the key does.
    /// The token carries our signature, so a missing key is no guess.
    async fn check_base_key(&self, id: &str, now: Timestamp) -> Result<(), AuthnError> {
        match self.key_record(id).await? {
            None => Err(AuthnError::TokenNotAccepted("unknown_base_credential")),
            Some(record) if record.is_revoked() => Err(AuthnError::Revoked),
            Some(record) if record.is_expired(now) => Err(AuthnError::Expired),
            Some(record) => {
                // A task token is the key at work: it keeps the key in use
                // for the lifecycle's unused-credential rules.
                self.touch(&record.id, now);
                Ok(())
            }
        }
    }

    /// Whether a task grant (or token id) has been revoked, read from the
    /// revocation list every instance shares. Fails closed.
    pub async fn is_revoked(&self, id: &str, now: Timestamp) -> Result<bool, AuthnError> {
        if let Some(tokens) = &self.tokens {
            return tokens.is_revoked(&self.store, id, now).await;
        }
        // Without an authorization server there is no token cache to
        // share: keep the list per credential generation here, so a
        // session bound to a grant does not read the store per request.
        let generation = self.store.credential_generation();
        if let Some(g) = generation
            && let Ok(cache) = self.revoked.lock()
            && let Some((cached, list)) = cache.as_ref()
            && *cached == g
        {
            return Ok(list.contains(id));
        }
        let list: HashSet<String> = self
            .store
            .revoked_tokens(now)
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?
            .into_iter()
            .collect();
        let revoked = list.contains(id);
        if let Some(g) = generation
            && let Ok(mut cache) = self.revoked.lock()
        {
            *cache = Some((g, list));
        }
        Ok(revoked)
    }

    async fn key_record(&self, id: &str) -> Result<Option<ApiKeyRecord>, AuthnError> {
        let generation = self.store.credential_generation();
        if let Some(record) = generation.and_then(|g| self.cache.get(id, g)) {
            self.metrics.cache("api_key", true);
            return Ok(Some(record));
        }
        self.metrics.cache("api_key", false);
        let record = self
            .store
            .api_key(id)
            .await
            .map_err(|e| AuthnError::Unavailable(e.to_string()))?;
        if let (Some(generation), Some(record)) = (generation, &record) {
            self.cache.put(record, generation);
        }
        Ok(record)
    }

    fn touch(&self, id: &str, now: Timestamp) {
        if self.last_use.due(id, now) {
            let store = Arc::clone(&self.store);
            let id = id.to_string();
            // Bookkeeping only: a failure here must not fail the request.
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(key_id = %id, error = %e, "could not record key use");
                }
            });
        }
    }
}

fn principal_for_key(record: &ApiKeyRecord) -> Principal {
    Principal {
        tenant: record.tenant.clone(),
        human: record.owner.clone(),
        agent: record.id.clone(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: record.id.clone(),
        },
        roles: vec![record.role.clone()],
        scopes: record.scopes.clone(),
        expires_at: record.expires_at,
        task: None,
        issuer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue_api_key;
    use gatehouse_store::SqliteStore;

    async fn setup() -> (Authenticator, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let auth = Authenticator::new(
            Arc::clone(&store),
            Pepper::new(vec![9; 32]).unwrap(),
            AuthMode::Required,
        );
        (auth, store)
    }

    async fn issue(auth: &Authenticator, store: &Arc<dyn Store>, expires: Option<i64>) -> String {
        let issued = issue_api_key(
            auth.pepper(),
            "test",
            "acme",
            "analyst",
            Some(vec!["tools:read".into()]),
            Some("alice".into()),
            Timestamp(0),
            expires.map(Timestamp),
        )
        .unwrap();
        store.insert_api_key(&issued.record).await.unwrap();
        issued.key
    }

    #[tokio::test]
    async fn valid_key_yields_principal() {
        let (auth, store) = setup().await;
        let key = issue(&auth, &store, None).await;
        let p = auth.authenticate(Some(&key), Timestamp(10)).await.unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.human.as_deref(), Some("alice"));
        assert_eq!(p.roles, vec!["analyst"]);
        assert_eq!(p.scopes, Some(vec!["tools:read".to_string()]));
        assert_eq!(p.credential.kind, CredentialKind::ApiKey);
        assert!(key.contains(&p.credential.id));
    }

    /// The stored last use of the key behind `key`, once the spawned write
    /// (if any) has landed.
    async fn stored_last_use(store: &Arc<dyn Store>, key: &str, want: Option<i64>) -> Option<i64> {
        let id = parse_api_key(key).unwrap().id.to_string();
        for _ in 0..200 {
            let used = store
                .api_key(&id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at
                .map(|t| t.0);
            if used == want {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        store
            .api_key(&id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .map(|t| t.0)
    }

    #[tokio::test]
    async fn last_use_is_written_at_most_once_a_minute_per_key() {
        let (auth, store) = setup().await;
        let key = issue(&auth, &store, None).await;
        auth.authenticate(Some(&key), Timestamp(1_000))
            .await
            .unwrap();
        assert_eq!(
            stored_last_use(&store, &key, Some(1_000)).await,
            Some(1_000)
        );
        // Within the minute: no write (the stored use stays the first).
        for at in [2_000, 30_000, 60_999] {
            auth.authenticate(Some(&key), Timestamp(at)).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            stored_last_use(&store, &key, Some(1_000)).await,
            Some(1_000)
        );
        // A minute after the last write: written again.
        auth.authenticate(Some(&key), Timestamp(61_000))
            .await
            .unwrap();
        assert_eq!(
            stored_last_use(&store, &key, Some(61_000)).await,
            Some(61_000)
        );
        // A failed authentication is no use.
        let last = if key.ends_with('x') { "y" } else { "x" };
        let wrong = format!("{}{last}", &key[..key.len() - 1]);
        assert!(
            auth.authenticate(Some(&wrong), Timestamp(200_000))
                .await
                .is_err()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(
            stored_last_use(&store, &key, Some(61_000)).await,
            Some(61_000)
        );
    }

    #[tokio::test]
    async fn failures_have_distinct_reasons() {
        let (auth, store) = setup().await;
        let key = issue(&auth, &store, Some(1_000)).await;
        assert_eq!(
            auth.authenticate(None, Timestamp(1)).await,
            Err(AuthnError::Missing)
        );
        assert_eq!(
            auth.authenticate(Some("nonsense"), Timestamp(1)).await,
            Err(AuthnError::Malformed)
        );
        // Same id, different secret.
        let mut tampered = key.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(
            auth.authenticate(Some(&tampered), Timestamp(1)).await,
            Err(AuthnError::BadSecret)
        );
        // Unknown id.
        let unknown = format!("ghk_{}{}", "0".repeat(12), &key[16..]);
        assert_eq!(
            auth.authenticate(Some(&unknown), Timestamp(1)).await,
            Err(AuthnError::Unknown)
        );
        assert_eq!(
            auth.authenticate(Some(&key), Timestamp(1_000)).await,
            Err(AuthnError::Expired)
        );
        let id = parse_api_key(&key).unwrap().id.to_string();
        store.revoke_api_key(&id, Timestamp(2)).await.unwrap();
        assert_eq!(
            auth.authenticate(Some(&key), Timestamp(3)).await,
            Err(AuthnError::Revoked)
        );
    }

    /// Issue 9 item 3: a task token we signed stands on its base key; when
    /// that key is revoked or gone the token was still genuinely issued,
    /// so the refusal never counts toward a lockout.
    #[tokio::test]
    async fn a_task_token_on_a_revoked_or_unknown_key_never_counts() {
        let (auth, store) = setup().await;
        let signer = crate::test_key::TestKey::generate("k1");
        store
            .insert_signing_key(&gatehouse_store::SigningKeyRecord {
                kid: signer.kid.clone(),
                sealed_pkcs8: vec![0],
                public_jwk: serde_json::json!({
                    "kty": "EC", "crv": "P-256", "x": signer.x(), "y": signer.y()
                })
                .to_string(),
                created_at: Timestamp(0),
                activates_at: Timestamp(0),
                revoked_at: None,
            })
            .await
            .unwrap();
        let auth = auth.with_access_tokens(TokenSettings {
            issuer: "http://127.0.0.1:8787".into(),
            audiences: vec!["http://127.0.0.1:8787/mcp".into()],
            proof: None,
        });
        let key = issue(&auth, &store, None).await;
        let key_id = parse_api_key(&key).unwrap().id.to_string();
        let task_token = |base_id: &str| {
            signer.encode(&serde_json::json!({
                "iss": "http://127.0.0.1:8787", "sub": "alice", "aud": "http://127.0.0.1:8787/mcp",
                "client_id": key_id, "jti": format!("tg_{base_id}"), "iat": 1, "exp": 4_000_000_000_i64,
                "task": {"name": "t", "tools": [], "base_kind": "api_key", "base_id": base_id}
            }))
        };
        let now = Timestamp(10_000);
        assert!(
            auth.authenticate(Some(&task_token(&key_id)), now)
                .await
                .is_ok()
        );
        store.revoke_api_key(&key_id, Timestamp(5)).await.unwrap();
        for token in [task_token(&key_id), task_token("nosuchkey000")] {
            let error = auth.authenticate(Some(&token), now).await.unwrap_err();
            assert!(!error.counts_toward_lockout(), "{error:?}");
        }
    }

    #[tokio::test]
    async fn disabled_mode_returns_the_anonymous_principal() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let anonymous = Principal {
            tenant: "default".into(),
            human: None,
            agent: "anonymous".into(),
            credential: CredentialRef {
                kind: CredentialKind::Anonymous,
                id: "anonymous".into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        };
        let auth = Authenticator::new(
            store,
            Pepper::new(vec![1; 32]).unwrap(),
            AuthMode::Disabled {
                anonymous: Box::new(anonymous.clone()),
            },
        );
        assert_eq!(auth.authenticate(None, Timestamp(0)).await, Ok(anonymous));
    }

    #[tokio::test]
    async fn a_store_outage_fails_closed() {
        let auth = Authenticator::new(
            Arc::new(gatehouse_store::testing::DownStore),
            Pepper::new(vec![9; 32]).unwrap(),
            AuthMode::Required,
        );
        let key = issue_api_key(
            auth.pepper(),
            "k",
            "t",
            "reader",
            None,
            None,
            Timestamp(0),
            None,
        )
        .unwrap()
        .key;
        assert!(matches!(
            auth.authenticate(Some(&key), Timestamp(1)).await,
            Err(AuthnError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn revocation_by_another_process_is_seen_on_the_next_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let server_store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
        let cli_store = SqliteStore::open(&path).await.unwrap();
        let auth = Authenticator::new(
            Arc::clone(&server_store),
            Pepper::new(vec![9; 32]).unwrap(),
            AuthMode::Required,
        );
        let key = issue(&auth, &server_store, None).await;
        // Twice, so the second answer comes from the cache.
        assert!(auth.authenticate(Some(&key), Timestamp(1)).await.is_ok());
        assert!(auth.authenticate(Some(&key), Timestamp(1)).await.is_ok());
        let id = parse_api_key(&key).unwrap().id.to_string();
        cli_store.revoke_api_key(&id, Timestamp(2)).await.unwrap();
        assert_eq!(
            auth.authenticate(Some(&key), Timestamp(3)).await,
            Err(AuthnError::Revoked)
        );
    }
}
