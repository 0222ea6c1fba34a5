//! Sign-in through an identity provider: the login page's "Sign in with …"
//! (OpenID Connect, authorization code with PKCE). Gatehouse is the
//! provider's client; the person comes back with a code, Gatehouse redeems
//! it with its own credentials, checks the ID token (`verify_id_token`:
//! the provider's keys, `iss`, `aud`/`azp`, times, the `nonce` of this
//! sign-in), finds or creates the user (`identity_providers.rs`), and then
//! carries on with its own consent and its own tokens. The provider's
//! tokens are dropped at once: they never reach an MCP client or an
//! upstream.
//!
//! Each sign-in is one pending record in the store (any instance may get
//! the callback), taken once. It holds the `nonce`, the PKCE verifier,
//! where to continue, and a digest of the browser's own cookie: a callback
//! arriving in another browser (an attacker's code pushed into a victim's
//! browser, a login CSRF) is refused. The callback's `iss` parameter, when
//! the provider sends one, must be the provider (RFC 9207, against mix-up).

use gatehouse_authn::external::{
    AssertionKeys, Endpoints, IdTokenRules, Issuer, basic_authorization, discover, get_json,
    post_form_json, verify_id_token,
};
use gatehouse_core::Timestamp;
use gatehouse_store::UserRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use url::Url;

use crate::OAuthError;
use crate::identity_providers::IdentityProvider;
use crate::server::{AuthorizationServer, random_token, unavailable};

/// A sign-in must come back within this.
const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
/// Pending sign-ins share the table of pending authorizations; their
/// "client" column names the provider.
const PENDING_PREFIX: &str = "provider:";
const ID_TOKEN_LEEWAY_SECS: u64 = 30;
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    nonce: String,
    verifier: String,
    continue_to: String,
    /// Digest of the browser's CSRF cookie.
    browser: String,
}

/// What the provider sent the browser back with.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// Why a sign-in through a provider failed; the message is shown to the
/// person (it names no secret and echoes nothing the provider sent).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("This sign-in has expired or was already used. Start again from the application.")]
    Expired,
    #[error("This sign-in was started in another browser. Start again from the application.")]
    OtherBrowser,
    #[error("The identity provider did not sign you in ({0}).")]
    Provider(String),
    #[error("The identity provider's answer could not be trusted ({0}).")]
    Untrusted(String),
    #[error("{0}")]
    Refused(String),
    #[error(
        "The identity provider said something newer about you while you signed in; sign in again."
    )]
    Superseded,
    #[error("The identity provider cannot be reached now. Try again in a moment.")]
    Unavailable,
    #[error("Sign-in is temporarily unavailable.")]
    Server(OAuthError),
}

impl SignInError {
    /// The reason code for the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            SignInError::Expired => "sign_in_expired",
            SignInError::OtherBrowser => "sign_in_other_browser",
            SignInError::Provider(_) => "provider_error",
            SignInError::Untrusted(_) => "provider_answer_refused",
            SignInError::Refused(_) => "user_refused",
            SignInError::Superseded => "claims_superseded",
            SignInError::Unavailable => "provider_unavailable",
            SignInError::Server(_) => "server_error",
        }
    }
}

impl AuthorizationServer {
    /// A refused sign-in through `provider` (who it was is unknown).
    pub(crate) async fn audit_federated_failure(
        &self,
        provider: &str,
        reason: &str,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let event = gatehouse_audit::EventBuilder::new(
            gatehouse_core::AuditKind::Authentication,
            gatehouse_core::Outcome::Failure,
            now,
        )
        .source(source)
        .tool("oauth/login")
        .agent(&format!("identity_provider:{provider}"))
        .decision("deny")
        .reason(reason)
        .build();
        // Anyone can call the callback, with or without a pending sign-in.
        self.record_refusal(event, now).await
    }

    /// Where `provider` sends the browser back.
    pub fn federated_callback_url(&self, provider: &str) -> String {
        self.url(&crate::routes::FEDERATED_CALLBACK.replace("{name}", provider))
    }

    fn browser_digest(&self, browser_secret: &str) -> String {
        self.pepper
            .hash(format!("federated:{browser_secret}").as_bytes())
    }

    async fn provider_endpoints(
        &self,
        provider: &IdentityProvider,
    ) -> Result<Endpoints, SignInError> {
        if let Some(found) = provider.endpoints.read().await.clone() {
            return Ok(found);
        }
        let issuer = Issuer::keys_only(
            &provider.issuer,
            None,
            provider.internal,
            provider.algorithms.clone(),
        );
        let found = discover(&issuer).await.map_err(|e| {
            tracing::warn!(provider = %provider.name, error = %e,
                "cannot read the identity provider's OpenID configuration");
            SignInError::Unavailable
        })?;
        if found.authorization_endpoint.is_none() || found.token_endpoint.is_none() {
            tracing::warn!(provider = %provider.name,
                "the identity provider's configuration names no authorization or token endpoint");
            return Err(SignInError::Unavailable);
        }
        *provider.endpoints.write().await = Some(found.clone());
        Ok(found)
    }

    /// Starts a sign-in through the provider `name`: stores what the
    /// callback needs and returns the provider's authorization URL.
    pub async fn begin_federated_sign_in(
        &self,
        name: &str,
        continue_to: &str,
        browser_secret: &str,
        now: Timestamp,
    ) -> Result<String, SignInError> {
        let provider = self
            .identity_providers
            .by_name(name)
            .filter(|p| p.sign_in.is_some())
            .cloned()
            .ok_or_else(|| SignInError::Refused("No such sign-in option.".into()))?;
        let Some(sign_in) = &provider.sign_in else {
            return Err(SignInError::Refused("No such sign-in option.".into()));
        };
        let endpoints = self.provider_endpoints(&provider).await?;
        let mut url: Url = endpoints
            .authorization_endpoint
            .ok_or(SignInError::Unavailable)?;
        let server = |e: OAuthError| SignInError::Server(e);
        let state = random_token(32).map_err(server)?;
        let nonce = random_token(32).map_err(server)?;
        let verifier = random_token(48).map_err(server)?;
        let pending = Pending {
            provider: provider.name.clone(),
            nonce: nonce.clone(),
            verifier: verifier.clone(),
            continue_to: continue_to.to_owned(),
            browser: self.browser_digest(browser_secret),
        };
        let record = serde_json::to_string(&pending)
            .map_err(|e| server(OAuthError::ServerError(e.to_string())))?;
        self.store
            .insert_authorization_request(
                &self.pepper.hash(state.as_bytes()),
                &format!("{PENDING_PREFIX}{}", provider.name),
                &record,
                now,
                now.plus_millis(PENDING_TTL_MS),
            )
            .await
            .map_err(|e| server(unavailable(e)))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &sign_in.client_id)
            .append_pair("redirect_uri", &self.federated_callback_url(&provider.name))
            .append_pair("scope", &sign_in.scopes)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &crate::pkce::s256_challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.to_string())
    }

    /// Finishes the sign-in the provider `name` sent back: the user signed
    /// in, and where to continue.
    pub async fn finish_federated_sign_in(
        &self,
        name: &str,
        callback: &Callback,
        browser_secret: Option<&str>,
        now: Timestamp,
    ) -> Result<(UserRecord, String), SignInError> {
        let state = callback.state.as_deref().ok_or(SignInError::Expired)?;
        // Taken: a second use of the same callback finds nothing.
        let record = self
            .store
            .take_authorization_request(&self.pepper.hash(state.as_bytes()), now)
            .await
            .map_err(|e| SignInError::Server(unavailable(e)))?
            .ok_or(SignInError::Expired)?;
        let pending: Pending = serde_json::from_str(&record).map_err(|_| SignInError::Expired)?;
        if pending.provider != name {
            return Err(SignInError::Expired);
        }
        let same_browser = browser_secret.is_some_and(|secret| {
            let digest = self.browser_digest(secret);
            subtle::ConstantTimeEq::ct_eq(digest.as_bytes(), pending.browser.as_bytes()).into()
        });
        if !same_browser {
            return Err(SignInError::OtherBrowser);
        }
        let provider = self
            .identity_providers
            .by_name(name)
            .cloned()
            .ok_or(SignInError::Expired)?;
        let sign_in = provider.sign_in.as_ref().ok_or(SignInError::Expired)?;
        if let Some(error) = &callback.error {
            // Only the registered error codes are shown, never free text.
            let shown =
                if error.chars().all(|c| c.is_ascii_lowercase() || c == '_') && error.len() <= 40 {
                    error.as_str()
                } else {
                    "error"
                };
            return Err(SignInError::Provider(shown.to_owned()));
        }
        if callback
            .iss
            .as_deref()
            .is_some_and(|iss| iss != provider.issuer)
        {
            return Err(SignInError::Untrusted("another issuer answered".into()));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| SignInError::Untrusted("no code".into()))?;
        let endpoints = self.provider_endpoints(&provider).await?;
        let token_endpoint = endpoints.token_endpoint.ok_or(SignInError::Unavailable)?;
        let secret = sign_in
            .client_secret
            .resolve(None, None)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.name, error = %e,
                "the client secret for the identity provider is not available");
                SignInError::Unavailable
            })?;
        let basic = basic_authorization(&sign_in.client_id, secret.expose());
        let redirect_uri = self.federated_callback_url(&provider.name);
        let answer = post_form_json(
            &token_endpoint,
            provider.internal,
            PROVIDER_TIMEOUT,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &pending.verifier),
                ("client_id", &sign_in.client_id),
            ],
            Some(&basic),
        )
        .await
        .map_err(|e| {
            tracing::warn!(provider = %provider.name, error = %e,
                "the identity provider did not redeem the code");
            SignInError::Untrusted("the code was not accepted".into())
        })?;
        let answer: Value = serde_json::from_slice(&answer.body)
            .map_err(|_| SignInError::Untrusted("not JSON".into()))?;
        // Only the ID token is read; the provider's access and refresh
        // tokens are dropped here.
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| SignInError::Untrusted("no ID token".into()))?;
        let claims = verify_id_token(
            id_token,
            AssertionKeys::Fetched(&provider.keys),
            &IdTokenRules {
                issuer: &provider.issuer,
                client_id: &sign_in.client_id,
                nonce: &pending.nonce,
                leeway_secs: ID_TOKEN_LEEWAY_SECS,
                algorithms: &provider.algorithms,
            },
            now,
        )
        .await
        .map_err(|e| {
            tracing::warn!(provider = %provider.name, reason = e.code(),
                "the identity provider's ID token was refused");
            SignInError::Untrusted(e.code().into())
        })?;
        // Many providers give groups and email only at the userinfo
        // endpoint (OpenID Connect Core §5.3), for the access token just
        // received; it is used for that one request and dropped.
        let mut claims = claims;
        if let (Some(userinfo), Some(access_token)) = (
            endpoints.userinfo_endpoint.as_ref(),
            answer.get("access_token").and_then(Value::as_str),
        ) {
            let info = get_json(
                userinfo,
                provider.internal,
                PROVIDER_TIMEOUT,
                Some(&format!("Bearer {access_token}")),
            )
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.name, error = %e,
                    "the identity provider's userinfo endpoint did not answer");
                SignInError::Unavailable
            })?;
            let info: serde_json::Map<String, Value> = serde_json::from_slice(&info.body)
                .map_err(|_| SignInError::Untrusted("userinfo is not a JSON object".into()))?;
            // The same person, or nothing from it (OpenID Connect Core §5.3.4).
            if info.get("sub") != claims.get("sub") {
                return Err(SignInError::Untrusted(
                    "userinfo names another person".into(),
                ));
            }
            for (name, value) in info {
                claims.entry(name).or_insert(value);
            }
        }
        let user = self
            .provider_user(&provider, &claims, now)
            .await
            .map_err(|e| match e {
                OAuthError::InvalidGrant(message) => SignInError::Refused(sentence(&message)),
                OAuthError::ClaimsSuperseded => SignInError::Superseded,
                other => SignInError::Server(other),
            })?;
        Ok((user, pending.continue_to))
    }
}

/// "the user is disabled" -> "The user is disabled."
fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}
