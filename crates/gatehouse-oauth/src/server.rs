//! The embedded authorization server's domain logic: signing keys, the
//! client-credentials grant, metadata and JWKS. No HTTP here.

use std::sync::Arc;

use gatehouse_audit::{AuditLog, EventBuilder};
use gatehouse_authn::{
    Authenticator, AuthnError, FAILURE_RECORDS_PER_MINUTE, KEY_PREFIX,
    MAX_ACCESS_TOKEN_LIFETIME_SECS, Pepper, REPLACED_KEY_TRUST_MS,
};
use gatehouse_authz::SharedPolicy;
use gatehouse_core::{AuditEvent, AuditKind, DEFAULT_TENANT, LastUse, Outcome, Timestamp};
use gatehouse_store::{ClientRecord, SigningKeyRecord, Store, TaskGrantRecord, signing_schedule};
use serde::Serialize;
use serde_json::json;

use crate::approval_pages::ApprovalPages;
use crate::cimd::{CimdConfig, CimdError, CimdResolver};
use crate::client_assertion::ClientKeySets;
use crate::identity_assertion::GRANT_JWT_BEARER;
use crate::identity_providers::{IdentityProviderConfig, IdentityProviders};
use crate::key_ring::KeyRing;
use crate::login_lockout::LoginTurns;
use crate::token_exchange::{ExchangeParams, GRANT_TOKEN_EXCHANGE, TaskExchange};
use crate::{
    CookiePolicy, Jwks, MasterKey, OAuthError, PasswordHasher, PublicJwk, RateLimiter, SigningKey,
    routes,
};

/// Requests to `/authorize` one source address may send per minute.
pub const AUTHORIZE_PER_MINUTE: u32 = 30;
/// Device authorizations one source address may start per minute: each
/// stores a pending authorization for its lifetime. A device signs in
/// once; thirty a minute is far beyond any real client.
pub const DEVICE_AUTHORIZATIONS_PER_MINUTE: u32 = 30;
/// Requests to the token endpoint one source address may send per minute:
/// each (refused ones too) writes an audit record. Ten a second leaves room
/// for many clients behind one address polling and refreshing.
pub const TOKEN_REQUESTS_PER_MINUTE: u32 = 600;

/// Revocations of a live token per person (the token's subject, whatever
/// the client) per minute. Each one moves the credential generation, which
/// empties every instance's credential and pin caches: a client minting
/// and revoking tokens in a loop would keep every instance re-reading its
/// store and re-listing its upstreams. Counted per person rather than per
/// client, so that one user of an application every user shares (a
/// metadata document client) cannot spend the others' revocations, nor
/// get more by registering clients of their own.
pub const REVOCATIONS_PER_PERSON_PER_MINUTE: u32 = 30;
/// Revocations of live tokens per source address and minute, whoever
/// they are for.
pub const REVOCATIONS_PER_SOURCE_PER_MINUTE: u32 = 120;
/// Task tokens one person may obtain by token exchange a minute, whatever
/// client or address asks. Each is a stored grant, and a grant revoked
/// (by its holder, or by the incident response after refused calls) moves
/// the credential generation, which empties every instance's caches: a
/// loop of exchanges and refused calls did that as often as the token
/// endpoint allowed an address (600 a minute). (Tasks declared at
/// `initialize` are bounded by the 30 sessions a minute a person may start.)
pub const TASK_TOKENS_PER_PERSON_PER_MINUTE: u32 = 30;
/// New Client ID Metadata Document URLs one source address may introduce
/// per hour (each is fetched, and stored when acceptable).
pub const NEW_METADATA_CLIENTS_PER_HOUR: u32 = 10;

/// Access tokens live at most this long (RFC 9700: short-lived). A
/// replaced signing key is trusted for this long (plus leeway) after it
/// stops signing, so nothing may sign a token that lives longer.
pub const MAX_ACCESS_TOKEN_TTL_SECS: i64 = MAX_ACCESS_TOKEN_LIFETIME_SECS;
// Task tokens expire with their grant, so no grant may outlive that either.
const _: () =
    assert!(gatehouse_authz::MAX_TASK_DURATION.as_secs() as i64 <= MAX_ACCESS_TOKEN_TTL_SECS);
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: i64 = 900;

#[derive(Debug, Clone)]
pub struct AsConfig {
    /// Exactly the public URL origin; also the `iss` of every token.
    pub issuer: String,
    /// The canonical MCP resource URI: the only audience tokens are issued for.
    pub resource: String,
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    /// The policy in force (replaced on reload): the scopes that exist and
    /// which of them each role can use come from it, per request.
    pub policy: Arc<SharedPolicy>,
    /// Tool names, for `tool:<name>` scopes.
    pub tools: Vec<String>,
    pub registration: RegistrationPolicy,
    /// Dynamically registered clients unused this long are deleted.
    pub dynamic_client_ttl_secs: i64,
    /// Most dynamically registered clients kept at once: registration is
    /// open to anyone (20 a minute per address), so without a cap one
    /// IPv6 /56 could add millions of rows a day.
    pub max_dynamic_clients: u64,
    /// The credential lifecycle revokes a client whose secret is this old
    /// (`lifecycle.client_secrets.max_age`), so a registration's
    /// `client_secret_expires_at` says when; `None`: never.
    pub client_secret_max_age_secs: Option<i64>,
    /// Client ID Metadata Documents; `None` turns them off.
    pub client_metadata: Option<CimdConfig>,
    /// How login cookies are set (Secure and `__Host-` outside loopback dev).
    pub cookies: CookiePolicy,
    /// Concurrent password hashes (each is ~20 MiB and tens of ms of CPU).
    pub password_concurrency: usize,
    /// `[[oauth.identity_providers]]`: providers trusted to say who a person is.
    pub identity_providers: Vec<IdentityProviderConfig>,
    /// Whether people may sign in with a Gatehouse password (else only
    /// through an identity provider).
    pub local_login: bool,
}

/// Who may use dynamic client registration (RFC 7591).
#[derive(Clone, PartialEq, Eq)]
pub enum RegistrationPolicy {
    Open,
    /// Only with this initial access token (RFC 7591 §3); holds its keyed hash.
    InitialAccessToken(String),
    Disabled,
}

impl std::fmt::Debug for RegistrationPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RegistrationPolicy::Open => "Open",
            RegistrationPolicy::InitialAccessToken(_) => "InitialAccessToken(<redacted>)",
            RegistrationPolicy::Disabled => "Disabled",
        })
    }
}

/// How the client authenticated at the token endpoint.
#[derive(Clone)]
pub struct ClientAuth {
    pub id: String,
    /// `None` for a public client, which sends only its `client_id`.
    pub secret: Option<String>,
    /// HTTP Basic (true) or form parameters (false).
    pub basic: bool,
    /// A `private_key_jwt` client assertion (RFC 7523), instead of a secret.
    pub assertion: Option<String>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("basic", &self.basic)
            .field("assertion", &self.assertion.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A parsed token request. Which fields matter depends on the grant type.
#[derive(Clone, Default)]
pub struct TokenRequest {
    pub grant_type: String,
    pub client: Option<ClientAuth>,
    pub scope: Option<String>,
    pub resource: Vec<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub device_code: Option<String>,
    /// The JWT bearer grant's `assertion` (an identity assertion).
    pub assertion: Option<String>,
    pub exchange: ExchangeParams,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("client", &self.client)
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Token exchange (RFC 8693 §2.2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// The task a task token covers (RFC 9396).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The claims of one access token, before signing.
pub(crate) struct AccessTokenFor<'a> {
    pub sub: &'a str,
    pub client_id: &'a str,
    pub scope: Option<&'a str>,
    pub tenant: &'a str,
    pub roles: &'a [String],
    pub resource: &'a str,
}

/// What a task token (token exchange) is signed for.
pub(crate) struct TaskClaims<'a> {
    pub sub: &'a str,
    pub client_id: &'a str,
    pub scope: Option<&'a str>,
    pub tenant: &'a str,
    pub roles: &'a [String],
    pub grant: &'a TaskGrantRecord,
    /// The key that signed the subject access token (none for an API key):
    /// the task token stands only while that key is trusted.
    pub base_kid: Option<&'a str>,
}

#[derive(Serialize)]
struct TaskClaim<'a> {
    name: &'a str,
    tools: &'a [String],
    base_kind: &'a str,
    base_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_kid: Option<&'a str>,
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
    roles: &'a [String],
    jti: String,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<TaskClaim<'a>>,
}

/// A signed access token and what the store must remember of it.
pub(crate) struct SignedAccessToken {
    pub token: String,
    pub jti: String,
    pub expires_at: Timestamp,
    pub ttl_secs: i64,
}

pub struct AuthorizationServer {
    pub(crate) config: AsConfig,
    /// Gate 1, shared with the MCP endpoint: revocation and introspection
    /// judge a token exactly as `/mcp` does.
    authenticator: Arc<Authenticator>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) pepper: Pepper,
    audit: AuditLog,
    /// The signing keys: which signs now, unsealed once each.
    keys: KeyRing,
    pub(crate) passwords: PasswordHasher,
    pub(crate) client_metadata: Option<CimdResolver>,
    /// Key sets of `private_key_jwt` clients that registered a `jwks_uri`.
    client_keys: ClientKeySets,
    pub(crate) identity_providers: IdentityProviders,
    /// Dynamic registrations per source address (IPv6 by /64, as every
    /// per-address limit here).
    pub(crate) registrations: RateLimiter,
    /// User-code guesses per source address (RFC 8628 §5.1).
    pub(crate) user_code_attempts: RateLimiter,
    /// Login attempts per source address, on top of the per-name lockout.
    pub(crate) login_attempts: RateLimiter,
    /// One login attempt at a time per name and source (see `LoginTurns`).
    pub(crate) login_turns: LoginTurns,
    /// Requests to `/authorize` per source address: each stores a pending
    /// authorization for ten minutes.
    pub(crate) authorize_attempts: RateLimiter,
    /// Sign-ins started at an identity provider per source address: each
    /// stores a pending sign-in for ten minutes, like `/authorize`.
    pub(crate) federated_starts: RateLimiter,
    /// Requests to `/oauth/device_authorization` per source address: each
    /// stores a pending device authorization.
    pub(crate) device_authorizations: RateLimiter,
    /// Requests to `/oauth/token` and `/oauth/revoke` per source address:
    /// each writes an audit record.
    pub(crate) token_requests: RateLimiter,
    /// Revocations of live tokens per person and per source
    /// ([`REVOCATIONS_PER_PERSON_PER_MINUTE`]).
    revocations: RateLimiter,
    /// Task tokens per person ([`TASK_TOKENS_PER_PERSON_PER_MINUTE`]).
    pub(crate) task_tokens: RateLimiter,
    revocations_per_source: RateLimiter,
    /// Document URLs a source may introduce as new metadata-document
    /// clients (each is fetched and stored).
    pub(crate) new_metadata_clients: RateLimiter,
    /// Which client uses to write to `last_used_at` (once a minute each).
    client_use: LastUse,
    /// Task grants by token exchange; `None` until the binary enables them.
    pub(crate) task_exchange: Option<TaskExchange>,
    /// Approval pages; `None` until the binary enables them.
    pub(crate) approvals: Option<ApprovalPages>,
}

/// Why a metadata-document client cannot be used.
#[derive(Debug)]
pub(crate) enum MetadataClientError {
    /// The URL or the document is unacceptable, or cannot be fetched now.
    Refused(String),
    /// Too many new metadata-document clients from this source, or too many
    /// documents fetched from this host.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The client table holds `limit` metadata-document clients.
    Full {
        limit: u64,
    },
    Server(OAuthError),
}

impl MetadataClientError {
    /// At the token, revocation and introspection endpoints.
    pub(crate) fn into_oauth(self) -> OAuthError {
        match self {
            MetadataClientError::Refused(why) => OAuthError::InvalidClientMetadata(why),
            MetadataClientError::RateLimited { retry_after_secs } => {
                OAuthError::TooManyRequests { retry_after_secs }
            }
            MetadataClientError::Full { limit } => OAuthError::TemporarilyUnavailable(format!(
                "the metadata-document client table is full ({limit})"
            )),
            MetadataClientError::Server(e) => e,
        }
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::TemporarilyUnavailable(e.to_string())
}

pub(crate) fn random_token(bytes: usize) -> Result<String, OAuthError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| OAuthError::ServerError(e.to_string()))?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        buf,
    ))
}

fn random_jti() -> Result<String, OAuthError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| OAuthError::ServerError(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Where a client record came from.
pub const REGISTERED_BY_OPERATOR: &str = "operator";
pub const REGISTERED_BY_DYNAMIC: &str = "dynamic";
pub const REGISTERED_BY_METADATA_DOCUMENT: &str = "metadata_document";

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Generates a signing key, stores it sealed under the master key, and
/// returns its record. It signs from `activates_at`; the JWKS publishes it
/// from now on, so verifiers that cache the JWKS know it before it is used.
pub async fn add_signing_key(
    store: &Arc<dyn Store>,
    master: &MasterKey,
    now: Timestamp,
    activates_at: Timestamp,
) -> Result<SigningKeyRecord, OAuthError> {
    let record = new_signing_key(master, now, activates_at)?;
    store
        .insert_signing_key(&record)
        .await
        .map_err(unavailable)?;
    Ok(record)
}

/// A fresh signing key, sealed under the master key, not yet stored (the
/// lifecycle stores it only if no other instance added a successor first).
pub fn new_signing_key(
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
        revoked_at: None,
    };
    Ok(record)
}

impl AuthorizationServer {
    /// Enables task grants by token exchange (RFC 8693).
    pub fn with_task_exchange(mut self, exchange: TaskExchange) -> Self {
        self.task_exchange = Some(exchange);
        self
    }

    /// Enables the approval pages for operation tokens.
    pub fn with_approvals(mut self, pages: ApprovalPages) -> Self {
        self.approvals = Some(pages);
        self
    }

    pub async fn start(
        config: AsConfig,
        store: Arc<dyn Store>,
        pepper: Pepper,
        master: MasterKey,
        audit: AuditLog,
        authenticator: Arc<Authenticator>,
        now: Timestamp,
    ) -> Result<Self, OAuthError> {
        let keys = KeyRing::new(Arc::clone(&store), master);
        keys.ensure_signer(now).await?;
        let passwords = PasswordHasher::new(config.password_concurrency.max(1))
            .map_err(|e| OAuthError::ServerError(e.to_string()))?;
        let client_metadata = config.client_metadata.clone().map(CimdResolver::new);
        let client_keys = ClientKeySets::new(
            config
                .client_metadata
                .as_ref()
                .map(|c| c.dev_http_hosts.clone())
                .unwrap_or_default(),
        );
        let identity_providers =
            IdentityProviders::new(&config.identity_providers).map_err(OAuthError::ServerError)?;
        Ok(AuthorizationServer {
            client_keys,
            identity_providers,
            authenticator,
            config,
            store,
            pepper,
            audit,
            keys,
            client_use: LastUse::new(),
            passwords,
            client_metadata,
            registrations: RateLimiter::per_source(20, 60_000, 10_000),
            user_code_attempts: RateLimiter::per_source(10, 300_000, 10_000),
            login_attempts: RateLimiter::per_source(30, 300_000, 10_000),
            login_turns: LoginTurns::default(),
            authorize_attempts: RateLimiter::per_source(AUTHORIZE_PER_MINUTE, 60_000, 10_000),
            federated_starts: RateLimiter::per_source(AUTHORIZE_PER_MINUTE, 60_000, 10_000),
            device_authorizations: RateLimiter::per_source(
                DEVICE_AUTHORIZATIONS_PER_MINUTE,
                60_000,
                10_000,
            ),
            token_requests: RateLimiter::per_source(TOKEN_REQUESTS_PER_MINUTE, 60_000, 10_000),
            revocations: RateLimiter::new(REVOCATIONS_PER_PERSON_PER_MINUTE, 60_000, 10_000),
            task_tokens: RateLimiter::new(TASK_TOKENS_PER_PERSON_PER_MINUTE, 60_000, 10_000),
            revocations_per_source: RateLimiter::per_source(
                REVOCATIONS_PER_SOURCE_PER_MINUTE,
                60_000,
                10_000,
            ),
            new_metadata_clients: RateLimiter::per_source(
                NEW_METADATA_CLIENTS_PER_HOUR,
                3_600_000,
                10_000,
            ),
            task_exchange: None,
            approvals: None,
        })
    }

    /// Signs a JWT that is not an access token (its `typ` says what it is)
    /// with the key that signs now, so it verifies against this server's
    /// JWKS: e.g. the caller's identity forwarded to an upstream server.
    pub async fn sign_assertion<C: serde::Serialize + Sync>(
        &self,
        claims: &C,
        typ: &str,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        self.keys.sign_typed(claims, typ, now).await
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The key that signs now (it changes when a rotated key activates).
    /// Whether a key signs tokens now (readiness: without one no token can
    /// be issued).
    pub async fn can_sign(&self, now: Timestamp) -> bool {
        self.signer(now).await.is_ok()
    }

    async fn signer(&self, now: Timestamp) -> Result<Arc<SigningKey>, OAuthError> {
        self.keys.signer(now).await
    }

    pub fn config(&self) -> &AsConfig {
        &self.config
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.config.issuer)
    }

    /// RFC 8414 metadata: only what is implemented is advertised.
    pub fn metadata(&self) -> serde_json::Value {
        let client_auth = [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ];
        let mut metadata = json!({
            "issuer": self.config.issuer,
            "authorization_endpoint": self.url(routes::AUTHORIZE),
            "token_endpoint": self.url(routes::TOKEN),
            "jwks_uri": self.url(routes::JWKS),
            "device_authorization_endpoint": self.url(routes::DEVICE_AUTHORIZATION),
            "grant_types_supported": [
                GRANT_AUTHORIZATION_CODE,
                GRANT_REFRESH_TOKEN,
                GRANT_CLIENT_CREDENTIALS,
                GRANT_DEVICE_CODE,
                GRANT_TOKEN_EXCHANGE,
            ],
            "authorization_details_types_supported": ["mcp_task"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": client_auth,
            "revocation_endpoint": self.url(routes::REVOKE),
            "revocation_endpoint_auth_methods_supported": client_auth,
            "introspection_endpoint": self.url(routes::INTROSPECT),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
            "scopes_supported": self.known_scopes(),
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": self.client_metadata.is_some(),
        });
        if self.config.registration != RegistrationPolicy::Disabled {
            metadata["registration_endpoint"] = json!(self.url(routes::REGISTER));
        }
        // The MCP enterprise-managed authorization extension.
        if self.identity_providers.accept_identity_assertions()
            && let Some(grants) = metadata["grant_types_supported"].as_array_mut()
        {
            grants.push(json!(GRANT_JWT_BEARER));
        }
        metadata
    }

    /// OpenID Provider discovery. Gatehouse issues no ID tokens; this
    /// document exists because some clients look here first, and it says
    /// the same as the RFC 8414 one plus the fields OpenID requires.
    pub fn openid_configuration(&self) -> serde_json::Value {
        let mut metadata = self.metadata();
        metadata["subject_types_supported"] = json!(["public"]);
        metadata["id_token_signing_alg_values_supported"] = json!(["ES256"]);
        metadata
    }

    /// The keys to publish now: the signer, the next one, and replaced ones
    /// until their tokens have expired.
    pub async fn jwks(&self, now: Timestamp) -> Result<Jwks, OAuthError> {
        let records = self.keys.records().await?;
        // A key Gatehouse did not make (written into the database by
        // someone without the master key) is never published: upstreams
        // verify identity JWTs against this set.
        let keys = signing_schedule(&records, now, REPLACED_KEY_TRUST_MS)
            .published
            .into_iter()
            .filter(|r| self.keys.proves(r))
            .map(|r| {
                serde_json::from_str::<PublicJwk>(&r.public_jwk)
                    .map_err(|e| OAuthError::ServerError(format!("stored JWK {}: {e}", r.kid)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Jwks { keys })
    }

    /// Checks every requested scope is known and, when the client is
    /// limited to some scopes, among them. Returns the normalised list.
    pub(crate) fn check_scope(
        &self,
        requested: &str,
        allowed: &Option<Vec<String>>,
    ) -> Result<Vec<String>, OAuthError> {
        let mut scopes: Vec<String> = Vec::new();
        let known_scopes = self.known_scopes();
        for scope in requested.split(' ').filter(|s| !s.is_empty()) {
            let known = known_scopes.iter().any(|s| s == scope)
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
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_string());
            }
        }
        Ok(scopes)
    }

    /// The requested scopes a user's roles can actually use: what the
    /// consent page shows and the grant carries. Asking a reader to allow
    /// "administrative tools" would describe access they do not have.
    pub fn scopes_for_user(&self, requested: &[String], roles: &[String]) -> Vec<String> {
        let policy = self.config.policy.current();
        let usable: Vec<String> = roles
            .iter()
            .flat_map(|role| policy.scopes_for_role(role))
            .collect();
        requested
            .iter()
            .filter(|scope| usable.contains(scope))
            .cloned()
            .collect()
    }

    /// The scopes of the policy in force.
    pub(crate) fn known_scopes(&self) -> Vec<String> {
        self.config.policy.current().scopes()
    }

    /// Checks the one `resource` a request may name (RFC 8707); absent
    /// means the configured resource.
    pub(crate) fn check_resource(&self, resource: &[String]) -> Result<(), OAuthError> {
        match resource {
            [] => Ok(()),
            [one] if *one == self.config.resource => Ok(()),
            [one] => Err(OAuthError::InvalidTarget(format!(
                "tokens are issued only for {}, not {one:?}",
                self.config.resource
            ))),
            _ => Err(OAuthError::InvalidTarget(
                "only one resource may be requested".into(),
            )),
        }
    }

    pub(crate) async fn record(&self, event: AuditEvent) -> Result<(), OAuthError> {
        self.audit.record(event).await.map_err(unavailable)
    }

    /// Records a refusal that cost its sender nothing (no guess counted
    /// toward a lockout: a sign-in past the address's limit, a malformed
    /// name, a locked name, a callback without a pending sign-in, a token
    /// request that reached no grant). Such refusals share gate 1's budget
    /// per source: the first `FAILURE_RECORDS_PER_MINUTE` a minute are
    /// recorded one by one, the next one says that the rest are not, and
    /// the rest are not. Without it, one address wrote a durable record per
    /// request for as long as it liked, and every call waited behind them
    /// in the audit queue.
    pub(crate) async fn record_refusal(
        &self,
        mut event: AuditEvent,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        match self
            .authenticator
            .failure_records()
            .take(event.source.as_deref(), now)
        {
            gatehouse_core::OneByOne::Each => self.record(event).await,
            gatehouse_core::OneByOne::FirstPastLimit => {
                let note = format!(
                    "more than {FAILURE_RECORDS_PER_MINUTE} refused requests from this source \
                     within a minute: the rest of this minute's are not recorded one by one"
                );
                // The note first: a long error is cut at the record's bound.
                event.error = Some(match event.error.take() {
                    Some(error) => format!("{note}; {error}"),
                    None => note,
                });
                self.record(event).await
            }
            gatehouse_core::OneByOne::Past => Ok(()),
        }
    }

    /// A client by id: a stored one (operator or dynamic), or a Client ID
    /// Metadata Document client already known (introduced at `/authorize`).
    /// Revoked clients and dynamic clients unused for too long count as
    /// unknown.
    pub(crate) async fn find_client(
        &self,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<ClientRecord>, OAuthError> {
        if crate::cimd::is_client_id_url(id) {
            return self
                .metadata_document_client(id, None, now)
                .await
                .map_err(MetadataClientError::into_oauth);
        }
        let client = self.store.client(id).await.map_err(unavailable)?;
        Ok(client.filter(|c| c.revoked_at.is_none() && !self.expired_dynamic(c, now)))
    }

    fn expired_dynamic(&self, client: &ClientRecord, now: Timestamp) -> bool {
        client.registered_by == REGISTERED_BY_DYNAMIC
            && client
                .last_used_at
                .unwrap_or(client.created_at)
                .plus_millis(self.config.dynamic_client_ttl_secs.saturating_mul(1000))
                <= now
    }

    /// A CIMD client. The document is fetched (or taken from the cache)
    /// and mirrored into the client table, so its tokens validate like any
    /// client's and an operator can revoke it with `gatehouse clients revoke`.
    ///
    /// Only `/authorize` introduces a new one (`introduced_from` is then the
    /// request's source address): that costs an outbound fetch and a row,
    /// so it is limited per source, and the table is capped. Elsewhere a
    /// document URL that is not in the table is an unknown client.
    pub(crate) async fn metadata_document_client(
        &self,
        url: &str,
        introduced_from: Option<Option<&str>>,
        now: Timestamp,
    ) -> Result<Option<ClientRecord>, MetadataClientError> {
        let Some(resolver) = &self.client_metadata else {
            return Ok(None);
        };
        let server = |e: OAuthError| MetadataClientError::Server(e);
        let stored = self
            .store
            .client(url)
            .await
            .map_err(|e| server(unavailable(e)))?;
        if stored.as_ref().is_some_and(|c| c.revoked_at.is_some()) {
            return Ok(None);
        }
        let is_new = stored.is_none();
        if is_new {
            let Some(source) = introduced_from else {
                return Ok(None);
            };
            if let Err(wait_ms) = self
                .new_metadata_clients
                .attempt(source.unwrap_or("unknown"), now)
            {
                return Err(MetadataClientError::RateLimited {
                    retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
                });
            }
        }
        let document = match resolver.resolve(url, now).await {
            Ok(document) => document,
            Err(CimdError::HostRateLimited(retry_after_secs)) => {
                return Err(MetadataClientError::RateLimited { retry_after_secs });
            }
            Err(e) => {
                tracing::warn!(client_id = %url, error = %e, "client metadata document refused");
                return Err(MetadataClientError::Refused(e.public_message()));
            }
        };
        for uri in &document.redirect_uris {
            crate::redirect_uri::validate_registered(uri)
                .map_err(|e| MetadataClientError::Refused(format!("redirect URI refused: {e}")))?;
        }
        if let Some(uri) = &document.jwks_uri {
            crate::client_assertion::validate_jwks_uri(uri, &resolver.config().dev_http_hosts)
                .map_err(MetadataClientError::Refused)?;
        }
        let record = ClientRecord {
            id: url.to_string(),
            name: document
                .client_name
                .clone()
                .unwrap_or_else(|| url.to_string()),
            tenant: String::new(),
            role: String::new(),
            scopes: None,
            secret_hash: None,
            created_at: stored.as_ref().map_or(now, |c| c.created_at),
            revoked_at: None,
            redirect_uris: document.redirect_uris.clone(),
            grant_types: vec![GRANT_AUTHORIZATION_CODE.into(), GRANT_REFRESH_TOKEN.into()],
            auth_method: document.token_endpoint_auth_method.clone(),
            registered_by: REGISTERED_BY_METADATA_DOCUMENT.into(),
            last_used_at: stored.as_ref().and_then(|c| c.last_used_at),
            may_introspect: false,
            jwks: document.jwks.clone(),
            jwks_uri: document.jwks_uri.clone(),
            secret_issued_at: None,
            previous_secret: None,
            machine_tokens_not_before: None,
        };
        if is_new {
            self.insert_metadata_document_client(&record, resolver.config().max_clients, now)
                .await?;
        }
        Ok(Some(record))
    }

    /// Stores a new metadata-document client within the cap. A full table
    /// first loses its unused clients (as housekeeping would), then the
    /// oldest one no person ever signed in with (any address may make ten
    /// new ones known an hour); when every one holds a grant the new client
    /// is refused.
    async fn insert_metadata_document_client(
        &self,
        record: &ClientRecord,
        max_clients: u64,
        now: Timestamp,
    ) -> Result<(), MetadataClientError> {
        for attempt in 0..3 {
            match self
                .store
                .insert_client_within_limit(record, max_clients)
                .await
            {
                Ok(true) | Err(gatehouse_store::StoreError::Conflict) => return Ok(()),
                Ok(false) if attempt == 0 => {
                    self.delete_unused_metadata_document_clients(now)
                        .await
                        .map_err(MetadataClientError::Server)?;
                }
                Ok(false) if attempt == 1 => {
                    self.store
                        .evict_oldest_never_granted_client(REGISTERED_BY_METADATA_DOCUMENT, now)
                        .await
                        .map_err(|e| MetadataClientError::Server(unavailable(e)))?;
                }
                Ok(false) => {}
                Err(e) => return Err(MetadataClientError::Server(unavailable(e))),
            }
        }
        tracing::warn!(
            client_id = %record.id,
            max_clients,
            "metadata-document client table full; new client refused"
        );
        Err(MetadataClientError::Full { limit: max_clients })
    }

    /// Checks a client at the token, revocation or introspection endpoint.
    /// Unknown, wrong and revoked look alike. A public client must not
    /// send a secret; a confidential one must.
    /// A client that authenticated has used its credential: its
    /// `last_used_at` moves (at most once a minute).
    pub async fn authenticate_client(
        &self,
        auth: &ClientAuth,
        now: Timestamp,
    ) -> Result<ClientRecord, OAuthError> {
        let client = self.check_client(auth, now).await?;
        self.note_client_use(&client.id, now).await;
        Ok(client)
    }

    /// Records a client's use, coalesced. Bookkeeping: a store failure
    /// is logged, the request goes on.
    async fn note_client_use(&self, id: &str, now: Timestamp) {
        if self.client_use.due(id, now)
            && let Err(e) = self.store.touch_client(id, now).await
        {
            tracing::warn!(client_id = %id, error = %e, "could not record client use");
        }
    }

    async fn check_client(
        &self,
        auth: &ClientAuth,
        now: Timestamp,
    ) -> Result<ClientRecord, OAuthError> {
        let invalid_client = OAuthError::InvalidClient { basic: auth.basic };
        let client = self.find_client(&auth.id, now).await?;
        // A client registered with keys proves itself with a signed
        // assertion, and only so; no other client may send one.
        if let Some(client) = &client
            && client.signs_assertions()
        {
            let Some(assertion) = &auth.assertion else {
                return Err(invalid_client);
            };
            return match self
                .client_keys
                .verify(
                    client,
                    assertion,
                    &self.config.issuer,
                    now,
                    self.store.as_ref(),
                )
                .await
            {
                Ok(()) => Ok(client.clone()),
                Err(error) => {
                    tracing::info!(client_id = %client.id, reason = error.code(), %error,
                        "client assertion refused");
                    Err(invalid_client)
                }
            };
        }
        if auth.assertion.is_some() {
            return Err(invalid_client);
        }
        let Some(client) = client else {
            // Same work as for a known client: no timing hint about ids.
            if let Some(secret) = &auth.secret {
                let _ = self.pepper.verify(secret.as_bytes(), &"0".repeat(64));
            }
            return Err(invalid_client);
        };
        match (&client.secret_hash, &auth.secret) {
            (None, None) => Ok(client),
            (Some(hash), Some(secret)) => {
                let current = self.pepper.verify(secret.as_bytes(), hash);
                // During a rotation's overlap the replaced secret still
                // works; both are always checked, so the time taken does
                // not say which one matched.
                let previous = client
                    .previous_secret_hash(now)
                    .is_some_and(|old| self.pepper.verify(secret.as_bytes(), old));
                if previous && !current {
                    tracing::info!(client_id = %client.id,
                        "client authenticated with its previous secret; it stops working when the rotation overlap ends");
                }
                if current || previous {
                    Ok(client)
                } else {
                    Err(invalid_client)
                }
            }
            _ => Err(invalid_client),
        }
    }

    /// Signs an access token (RFC 9068) for the configured resource.
    pub(crate) async fn sign_access_token(
        &self,
        token: AccessTokenFor<'_>,
        now: Timestamp,
    ) -> Result<SignedAccessToken, OAuthError> {
        let ttl = self
            .config
            .access_token_ttl_secs
            .clamp(1, MAX_ACCESS_TOKEN_TTL_SECS);
        let iat = now.as_secs();
        let jti = random_jti()?;
        let claims = AccessClaims {
            iss: &self.config.issuer,
            sub: token.sub,
            aud: token.resource,
            client_id: token.client_id,
            scope: token.scope,
            tenant: token.tenant,
            roles: token.roles,
            jti: jti.clone(),
            iat,
            exp: iat + ttl,
            task: None,
        };
        let signed = self
            .signer(now)
            .await?
            .sign(&claims)
            .map_err(|e| OAuthError::ServerError(e.to_string()))?;
        Ok(SignedAccessToken {
            token: signed,
            jti,
            expires_at: Timestamp::from_secs(iat + ttl),
            ttl_secs: ttl,
        })
    }

    /// Signs a task token: its `jti` is the grant id (so revoking the grant
    /// revokes it) and it expires with the grant.
    pub(crate) async fn sign_task_access_token(
        &self,
        token: TaskClaims<'_>,
        now: Timestamp,
    ) -> Result<SignedAccessToken, OAuthError> {
        let iat = now.as_secs();
        let exp = token.grant.expires_at.as_secs();
        if exp <= iat {
            return Err(OAuthError::InvalidGrant(
                "the subject token expires too soon for a task grant".into(),
            ));
        }
        let claims = AccessClaims {
            iss: &self.config.issuer,
            sub: token.sub,
            aud: &self.config.resource,
            client_id: token.client_id,
            scope: token.scope,
            tenant: token.tenant,
            roles: token.roles,
            jti: token.grant.id.clone(),
            iat,
            exp,
            task: Some(TaskClaim {
                name: &token.grant.task,
                tools: &token.grant.tools,
                base_kind: &token.grant.credential_kind,
                base_id: &token.grant.credential_id,
                base_kid: token.base_kid,
            }),
        };
        let signed = self
            .signer(now)
            .await?
            .sign(&claims)
            .map_err(|e| OAuthError::ServerError(e.to_string()))?;
        Ok(SignedAccessToken {
            token: signed,
            jti: token.grant.id.clone(),
            expires_at: token.grant.expires_at,
            ttl_secs: exp - iat,
        })
    }

    /// Deletes expired codes, sessions, pending requests and device codes,
    /// and dynamic clients unused for too long. Run periodically.
    pub async fn housekeeping(&self, now: Timestamp) -> Result<(), OAuthError> {
        self.store.purge_expired(now).await.map_err(unavailable)?;
        let removed = self.delete_expired_dynamic_clients(now).await?;
        if removed > 0 {
            tracing::info!(removed, "removed unused dynamically registered clients");
        }
        let removed = self.delete_unused_metadata_document_clients(now).await?;
        if removed > 0 {
            tracing::info!(removed, "removed unused metadata-document clients");
        }
        Ok(())
    }

    /// Metadata-document clients unused for `dynamic_client_ttl` are deleted
    /// like dynamic ones (a revoked one is kept: its revocation must last).
    /// One that is used again is fetched and stored anew.
    async fn delete_unused_metadata_document_clients(
        &self,
        now: Timestamp,
    ) -> Result<u64, OAuthError> {
        let unused_since =
            now.plus_millis(-self.config.dynamic_client_ttl_secs.saturating_mul(1000));
        let never_granted_since =
            now.plus_millis(-crate::dynamic_registration::UNGRANTED_REGISTRATION_TTL_MS);
        self.store
            .delete_unused_metadata_document_clients(unused_since, never_granted_since)
            .await
            .map_err(unavailable)
    }

    /// RFC 7009. Invalid or unknown tokens are not an error; a token of
    /// another client is refused. Access tokens go on the revocation list;
    /// a refresh token revokes its whole grant. The revocation is audited.
    pub async fn revoke(
        &self,
        auth: &ClientAuth,
        token: &str,
        source: Option<&str>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let source = source.unwrap_or("unknown");
        let too_many = |wait_ms| OAuthError::TooManyRequests {
            retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
        };
        self.token_requests.attempt(source, now).map_err(too_many)?;
        let client = self.authenticate_client(auth, now).await?;

        if let Some(grant) = self
            .store
            .refresh_token_grant(&self.pepper.hash(token.as_bytes()))
            .await
            .map_err(unavailable)?
        {
            if grant.client_id != client.id {
                return Err(OAuthError::UnauthorizedClient(
                    "the token was issued to another client".into(),
                ));
            }
            // Revoked already: nothing to do, nothing to record (a client
            // repeating this must not cost a store write and an audit
            // record each time).
            if grant.revoked_at.is_some() {
                return Ok(());
            }
            self.may_revoke(&client.id, &grant.username, source, now)
                .await?;
            self.store
                .revoke_grant(&grant.id, now)
                .await
                .map_err(unavailable)?;
            let event = EventBuilder::new(AuditKind::Authentication, Outcome::Success, now)
                .agent(&client.id)
                .credential(Some(grant.id.clone()))
                .decision("revoke")
                .reason("refresh_token_revoked")
                .tool("oauth/revoke")
                .build();
            return self.record(event).await;
        }
        let claims = match self.authenticator.access_token(token, now).await {
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
        self.may_revoke(&client.id, &claims.sub, source, now)
            .await?;
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
        self.record(event).await
    }

    /// Counts one revocation of a live token (one that changes something),
    /// just before the change; a refusal is recorded within the source's
    /// budget of refusal records.
    async fn may_revoke(
        &self,
        client_id: &str,
        person: &str,
        source: &str,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let counted = self
            .revocations_per_source
            .attempt(source, now)
            .and_then(|()| self.revocations.attempt(person, now));
        let Err(wait_ms) = counted else {
            return Ok(());
        };
        let event = EventBuilder::new(AuditKind::Authentication, Outcome::Failure, now)
            .agent(client_id)
            .source(Some(source.to_string()))
            .decision("deny")
            .reason("rate_limited")
            .tool("oauth/revoke")
            .error(format!(
                "more than {REVOCATIONS_PER_PERSON_PER_MINUTE} revocations a minute of one \
                 person's tokens, or {REVOCATIONS_PER_SOURCE_PER_MINUTE} from one address; \
                 not revoked"
            ))
            .build();
        self.record_refusal(event, now).await?;
        Err(OAuthError::TooManyRequests {
            retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
        })
    }

    /// With tenants declared in the policy, `/mcp` refuses principals of
    /// any other tenant right after authenticating them; introspection
    /// agrees. (The policy comes with task grants, which the binary always
    /// enables.)
    fn tenant_served(&self, tenant: &str) -> bool {
        self.task_exchange.as_ref().is_none_or(|exchange| {
            let policy = exchange.policy.current();
            !policy.tenancy_enabled() || policy.tenant_allowed(tenant)
        })
    }

    /// RFC 7662: the state of a token, for an authenticated confidential
    /// client. Active means exactly what gate 1 of `/mcp` accepts now (the
    /// same function decides). Only the token's own client, or a client an
    /// operator allowed to introspect (`clients create --introspect`) for
    /// tokens of its tenant, learns anything; everyone else, and anything
    /// not currently valid, gets just `{"active": false}`.
    pub async fn introspect(
        &self,
        auth: &ClientAuth,
        token: &str,
        now: Timestamp,
    ) -> Result<serde_json::Value, OAuthError> {
        let client = self.authenticate_client(auth, now).await?;
        if client.is_public() {
            return Err(OAuthError::UnauthorizedClient(
                "introspection needs a confidential client".into(),
            ));
        }
        let inactive = json!({"active": false});
        // API keys are not OAuth tokens; never an oracle for them.
        if token.starts_with(KEY_PREFIX) {
            return Ok(inactive);
        }
        let claims = match self.authenticator.access_token(token, now).await {
            Ok(claims) => claims,
            Err(AuthnError::Unavailable(e)) => return Err(OAuthError::TemporarilyUnavailable(e)),
            Err(_) => return Ok(inactive),
        };
        let tenant = claims.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        if !self.tenant_served(tenant) {
            return Ok(inactive);
        }
        let entitled =
            claims.client_id == client.id || (client.may_introspect && tenant == client.tenant);
        if !entitled {
            return Ok(inactive);
        }
        Ok(json!({
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
        }))
    }
}
