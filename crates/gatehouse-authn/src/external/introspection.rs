//! Opaque access tokens of one external issuer, checked at its RFC 7662
//! introspection endpoint.
//!
//! - Gatehouse authenticates to the endpoint with its own client
//!   credentials there; the caller's token is the only thing of the
//!   caller's that is sent, and only to the one issuer configured for it.
//! - An active answer is held to the same discipline as a JWT's claims:
//!   `iss` (when given) is the issuer, `aud` names an accepted audience,
//!   `exp` is present and in the future, `nbf`/`iat` not in the future, and
//!   `token_type` (when given) is a bearer access token.
//! - Answers are cached by the token's SHA-256 (never the token itself):
//!   an active one for `cache_for` at most and never past its `exp`, an
//!   inactive one for `cache_for`, so a replayed bad token costs the
//!   provider nothing. At most `max_concurrent` requests are in flight.
//! - The endpoint down, slow or refusing Gatehouse's credentials: the token
//!   is refused (fail closed), and the operator's log says why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gatehouse_core::{Principal, Timestamp};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{RwLock, Semaphore};
use url::Url;

use super::config::{ClientAuthMethod, Introspection, Issuer};
use super::fetch::{FetchError, basic_authorization, post_form_json};
use super::metadata::discover;
use super::token::{check_audience, checked_times, principal};
use crate::jwt::JwtError;

/// Longest opaque token sent to a provider.
pub const MAX_OPAQUE_TOKEN_BYTES: usize = 4096;
/// Most cached answers; beyond it the expired ones go, then all of them.
const MAX_CACHED: usize = 10_000;

#[derive(Clone)]
enum Answer {
    Active(Box<Principal>),
    Inactive,
}

struct Cached {
    answer: Answer,
    until_ms: i64,
}

pub struct Introspector {
    issuer: Arc<Issuer>,
    settings: Introspection,
    /// Configured, or discovered on first use.
    endpoint: RwLock<Option<Url>>,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    in_flight: Semaphore,
    requests: AtomicU64,
    /// When discovery last failed (`NEVER` if it has not).
    discovery_failed_at: AtomicI64,
    discoveries: AtomicU64,
}

const NEVER: i64 = i64::MIN;

/// RFC 6750 `b64token`: what a bearer token may be made of.
fn is_bearer_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_OPAQUE_TOKEN_BYTES
        && token.trim_end_matches('=').bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Introspector {
    /// `None` when the issuer does not introspect.
    pub fn new(issuer: Arc<Issuer>) -> Option<Arc<Introspector>> {
        let settings = issuer.introspection.clone()?;
        Some(Arc::new(Introspector {
            endpoint: RwLock::new(settings.endpoint.clone()),
            in_flight: Semaphore::new(settings.max_concurrent),
            settings,
            issuer,
            cache: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
            discovery_failed_at: AtomicI64::new(NEVER),
            discoveries: AtomicU64::new(0),
        }))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer.issuer
    }

    /// Introspection requests sent so far (tests count them).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn cached(&self, digest: &[u8; 32], now_ms: i64) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(digest)
            .filter(|c| now_ms < c.until_ms)
            .map(|c| c.answer.clone())
    }

    fn remember(&self, digest: [u8; 32], answer: Answer, until_ms: i64, now_ms: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| now_ms < c.until_ms);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(digest, Cached { answer, until_ms });
    }

    /// Validates the opaque `token` at `now` and maps it to a principal.
    pub async fn authenticate(&self, token: &str, now: Timestamp) -> Result<Principal, JwtError> {
        if token.len() > MAX_OPAQUE_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        if !is_bearer_token(token) {
            return Err(JwtError::Malformed);
        }
        let now_ms = now.as_millis();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.cached(&digest, now_ms) {
            return match answer {
                Answer::Active(principal) => Ok(*principal),
                Answer::Inactive => Err(JwtError::StillInactive),
            };
        }
        let claims = self.ask(token, now_ms).await?;
        let cache_for = millis(self.settings.cache_for);
        let active = claims.get("active").and_then(Value::as_bool) == Some(true);
        if !active {
            self.remember(
                digest,
                Answer::Inactive,
                now_ms.saturating_add(cache_for),
                now_ms,
            );
            return Err(JwtError::Inactive);
        }
        let (principal, exp) = self.check(&claims, token, now)?;
        let until = now_ms
            .saturating_add(cache_for)
            .min(exp.saturating_mul(1000));
        self.remember(
            digest,
            Answer::Active(Box::new(principal.clone())),
            until,
            now_ms,
        );
        Ok(principal)
    }

    /// An active answer's claims, checked like a JWT's.
    fn check(
        &self,
        claims: &Map<String, Value>,
        token: &str,
        now: Timestamp,
    ) -> Result<(Principal, i64), JwtError> {
        let issuer = &self.issuer;
        if let Some(iss) = claims.get("iss")
            && iss.as_str() != Some(issuer.issuer.as_str())
        {
            return Err(JwtError::WrongIssuer);
        }
        if let Some(token_type) = claims.get("token_type") {
            let bearer = token_type.as_str().is_some_and(|t| {
                t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("access_token")
            });
            if !bearer {
                return Err(JwtError::WrongType);
            }
        }
        let exp = checked_times(claims, issuer.leeway_secs, now)?;
        check_audience(claims, &issuer.audiences)?;
        Ok((principal(claims, issuer, token, exp, true)?, exp))
    }

    /// One introspection request; any failure is an outage to the caller.
    async fn ask(&self, token: &str, now_ms: i64) -> Result<Map<String, Value>, JwtError> {
        let unavailable = |why: &dyn std::fmt::Display| {
            tracing::warn!(issuer = %self.issuer.issuer, reason = %why,
                "token introspection failed; the token is refused");
            JwtError::IntrospectionUnavailable
        };
        let _turn = tokio::time::timeout(self.issuer.fetch_timeout, self.in_flight.acquire())
            .await
            .map_err(|_| unavailable(&"too many introspection requests in flight"))?
            .map_err(|_| unavailable(&"closed"))?;
        let endpoint = self.endpoint(now_ms).await.map_err(|e| unavailable(&e))?;
        let secret = self
            .settings
            .client_secret
            .resolve(None, None)
            .await
            .map_err(|e| unavailable(&e))?;
        let client_id = self.settings.client_id.as_str();
        let mut form = vec![("token", token), ("token_type_hint", "access_token")];
        let basic;
        let authorization = match self.settings.auth_method {
            ClientAuthMethod::Basic => {
                basic = basic_authorization(client_id, secret.expose());
                Some(basic.as_str())
            }
            ClientAuthMethod::Post => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret.expose()));
                None
            }
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let fetched = post_form_json(
            &endpoint,
            self.issuer.internal,
            self.issuer.fetch_timeout,
            &form,
            authorization,
        )
        .await
        .map_err(|e| match e {
            FetchError::Status(401) => {
                unavailable(&"the endpoint refused Gatehouse's client credentials (HTTP 401)")
            }
            other => unavailable(&other),
        })?;
        serde_json::from_slice::<Map<String, Value>>(&fetched.body)
            .map_err(|_| unavailable(&"the answer is not a JSON object"))
    }

    /// The endpoint, discovered once. A failed discovery is not tried
    /// again within the issuer's refetch cooldown, so a provider that is
    /// down is not asked once per token.
    async fn endpoint(&self, now_ms: i64) -> Result<Url, FetchError> {
        if let Some(url) = self.endpoint.read().await.clone() {
            return Ok(url);
        }
        let mut slot = self.endpoint.write().await;
        if let Some(url) = slot.clone() {
            return Ok(url);
        }
        let cooldown = i64::try_from(self.issuer.refetch_cooldown.as_millis()).unwrap_or(i64::MAX);
        let failed_at = self.discovery_failed_at.load(Ordering::Relaxed);
        if failed_at != NEVER && now_ms < failed_at.saturating_add(cooldown) {
            return Err(FetchError::Http(
                "discovery failed moments ago; not asking again yet".into(),
            ));
        }
        self.discoveries.fetch_add(1, Ordering::Relaxed);
        let found = discover(&self.issuer).await.and_then(|endpoints| {
            endpoints.introspection_endpoint.ok_or_else(|| {
                FetchError::Http("the metadata names no introspection_endpoint".into())
            })
        });
        match found {
            Ok(url) => {
                *slot = Some(url.clone());
                Ok(url)
            }
            Err(error) => {
                self.discovery_failed_at.store(now_ms, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Discovery attempts so far (tests count them).
    pub fn discovery_count(&self) -> u64 {
        self.discoveries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn only_bearer_token_characters_are_sent() {
        assert!(is_bearer_token("abcDEF-._~+/123=="));
        assert!(!is_bearer_token(""));
        assert!(!is_bearer_token("a b"));
        assert!(!is_bearer_token("a\r\nX-Injected: 1"));
        assert!(!is_bearer_token("a=b"));
        assert!(!is_bearer_token(&"a".repeat(MAX_OPAQUE_TOKEN_BYTES + 1)));
    }
}
