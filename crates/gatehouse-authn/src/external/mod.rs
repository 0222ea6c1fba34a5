//! Delegated mode: access tokens minted by the organisation's identity
//! provider (`[[issuers]]`), validated here and mapped to the same
//! `Principal` as every other credential.
//!
//! A token is routed to its issuer by `iss` before any key is looked up; an
//! issuer that is not configured is refused. Keys come only from that
//! issuer's JWKS (`key_set.rs`), never from the token's headers.

mod assertion;
#[cfg(test)]
mod assertion_tests;
mod config;
mod fetch;
mod id_token;
mod introspection;
#[cfg(test)]
mod introspection_tests;
mod jwk;
mod key_set;
mod metadata;
#[cfg(test)]
pub(crate) mod test_keys;
#[cfg(test)]
mod tests;
mod token;
mod validated;

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_core::{Principal, Timestamp};
use gatehouse_metrics::Metrics;

pub use assertion::{
    Assertion, AssertionKeys, AssertionRules, AssertionType, unverified_issuer, verify_assertion,
};
pub use config::{
    ClientAuthMethod, Introspection, IntrospectionConfig, Issuer, IssuerConfig, TenantSource,
    TokenType, algorithm_list, checked_url,
};
pub use fetch::{FetchError, Fetched, basic_authorization, get_json, is_json, post_form_json};
pub use id_token::{IdTokenRules, verify_id_token};
pub use introspection::{Introspector, MAX_OPAQUE_TOKEN_BYTES};
pub use jwk::{ACCEPTED_ALGORITHMS, ExternalKey, JwksError, SOLE_KEY, parse_jwks};
pub use key_set::KeySet;
pub use metadata::{Endpoints, discover};
pub use token::mapped_roles;

use crate::jwt::{DEFAULT_MAX_TOKEN_BYTES, JwtError};

/// The metrics label of the validated-token cache.
const EXTERNAL_TOKEN_CACHE: &str = "external_token";

/// Every configured external issuer, by `iss`.
pub struct ExternalIssuers {
    by_issuer: HashMap<String, (Arc<Issuer>, Arc<KeySet>)>,
    /// In configuration order, for the protected resource metadata.
    order: Vec<String>,
    /// The one issuer whose opaque tokens are introspected. An opaque token
    /// does not say who issued it, so it could only be tried at each
    /// provider in turn, showing one provider's token to the others.
    introspector: Option<Arc<Introspector>>,
    validated: validated::ValidatedTokens,
    /// Hits and misses of `validated`.
    metrics: Arc<Metrics>,
}

impl ExternalIssuers {
    /// Checks every entry (`resource` is the default audience); the error
    /// names the entry by position and issuer.
    pub fn new(configs: &[IssuerConfig], resource: &str) -> Result<ExternalIssuers, String> {
        let mut by_issuer = HashMap::new();
        let mut order = Vec::new();
        let mut introspector: Option<Arc<Introspector>> = None;
        for (n, config) in configs.iter().enumerate() {
            let issuer = config
                .compile(resource)
                .map_err(|e| format!("issuers[{n}] ({}): {e}", config.issuer))?;
            let issuer = Arc::new(issuer);
            if let Some(found) = Introspector::new(Arc::clone(&issuer)) {
                if let Some(first) = &introspector {
                    return Err(format!(
                        "issuers[{n}] ({}): only one issuer may introspect opaque tokens ({} does already): an opaque token does not name its issuer, so it would be shown to a provider that did not issue it",
                        config.issuer,
                        first.issuer()
                    ));
                }
                introspector = Some(found);
            }
            let keys = KeySet::new(Arc::clone(&issuer));
            if by_issuer
                .insert(issuer.issuer.clone(), (issuer, keys))
                .is_some()
            {
                return Err(format!(
                    "issuers[{n}] ({}): configured twice",
                    config.issuer
                ));
            }
            order.push(config.issuer.clone());
        }
        Ok(ExternalIssuers {
            by_issuer,
            order,
            introspector,
            validated: validated::ValidatedTokens::default(),
            metrics: Arc::default(),
        })
    }

    /// Counts the validated-token cache's hits and misses in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The configured issuers, in configuration order.
    pub fn issuers(&self) -> &[String] {
        &self.order
    }

    /// The key set of `issuer`, if configured (tests count its fetches).
    pub fn key_set(&self, issuer: &str) -> Option<&Arc<KeySet>> {
        self.by_issuer.get(issuer).map(|(_, keys)| keys)
    }

    /// The issuer that introspects opaque tokens, if one does.
    pub fn introspector(&self) -> Option<&Arc<Introspector>> {
        self.introspector.as_ref()
    }

    /// Validates `token` at `now` and maps it to a principal.
    pub async fn authenticate(&self, token: &str, now: Timestamp) -> Result<Principal, JwtError> {
        if let Some(principal) = self.recently_validated(token, now) {
            return Ok(principal);
        }
        let parsed = token::parse(token, DEFAULT_MAX_TOKEN_BYTES)?;
        self.verify(&parsed, now).await
    }

    /// [`ExternalIssuers::authenticate`] for a token that is not the
    /// embedded authorization server's: `None` when its unverified `iss` is
    /// `own`, or when it cannot be read and `own` exists (that validator
    /// then says why). The token is parsed once either way.
    pub async fn authenticate_unless_own(
        &self,
        token: &str,
        own: Option<&str>,
        now: Timestamp,
    ) -> Option<Result<Principal, JwtError>> {
        // Only external tokens are ever remembered, so a hit is one.
        if let Some(principal) = self.recently_validated(token, now) {
            self.metrics.cache(EXTERNAL_TOKEN_CACHE, true);
            return Some(Ok(principal));
        }
        let parsed = match token::parse(token, DEFAULT_MAX_TOKEN_BYTES) {
            Ok(parsed) => parsed,
            Err(error) => return own.is_none().then_some(Err(error)),
        };
        if own == Some(parsed.iss.as_str()) {
            return None;
        }
        self.metrics.cache(EXTERNAL_TOKEN_CACHE, false);
        Some(self.verify(&parsed, now).await)
    }

    /// The principal of `token` if it was validated in the last minute with
    /// the keys its issuer holds now; checked before the token is parsed.
    fn recently_validated(&self, token: &str, now: Timestamp) -> Option<Principal> {
        self.validated.get(token, now, |issuer| {
            self.by_issuer.get(issuer).map(|(_, keys)| keys.version())
        })
    }

    async fn verify(
        &self,
        parsed: &token::Parsed<'_>,
        now: Timestamp,
    ) -> Result<Principal, JwtError> {
        let (issuer, keys) = self
            .by_issuer
            .get(&parsed.iss)
            .ok_or(JwtError::UnknownIssuer)?;
        // The algorithm must be allowed for this issuer before anything is
        // fetched for it.
        if !issuer.algorithms.contains(&parsed.alg) {
            return Err(JwtError::UnsupportedAlgorithm);
        }
        let version = keys.version();
        let key = keys.key(&parsed.kid, now).await?;
        let principal = token::verify(parsed, &key, issuer, now)?;
        self.validated
            .put(parsed.token, &issuer.issuer, &principal, version, now);
        Ok(principal)
    }
}
