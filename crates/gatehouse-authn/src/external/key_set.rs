//! The verification keys of one external issuer, fetched from its JWKS
//! endpoint and kept for as long as its `Cache-Control` says (within the
//! configured bounds).
//!
//! - A lookup inside the last fifth of the keys' lifetime starts a refetch
//!   in the background and answers from the current keys.
//! - An unknown `kid` causes a refetch (a rotation at the provider), at most
//!   one per cooldown, and one at a time: a flood of made-up key ids costs
//!   the provider one request per cooldown, never one per token.
//! - When the endpoint cannot be reached, keys past their lifetime are still
//!   used for `stale_for`; after that, or with no keys ever fetched, tokens
//!   are refused (fail closed). Failed fetches are also limited to one per
//!   cooldown, so an outage is not hammered.
//!
//! Time is the caller's `now`, so tests drive it without waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use gatehouse_core::Timestamp;
use url::Url;

use super::config::Issuer;
use super::fetch::{FetchError, fetch_json};
use super::jwk::{ExternalKey, parse_jwks};
use super::metadata::discover;
use crate::jwt::JwtError;

#[derive(Default)]
struct State {
    /// From the configuration or discovery.
    jwks_uri: Option<Url>,
    keys: Arc<HashMap<String, ExternalKey>>,
    /// Whether `keys` came from a successful fetch at all.
    fetched: bool,
    /// When the keys were fetched, and until when they are used without a
    /// refetch.
    fetched_at: i64,
    fresh_until: i64,
    /// When a fetch was last attempted (successful or not), for the cooldown.
    last_attempt: Option<i64>,
}

pub struct KeySet {
    issuer: Arc<Issuer>,
    state: RwLock<State>,
    /// Single flight: one fetch at a time for this issuer.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
    /// Moves with every successful fetch: validations made with older keys
    /// are not reused.
    version: AtomicU64,
}

/// What a lookup found.
enum Lookup {
    Key(ExternalKey),
    /// Keys are fresh (or stale but usable) and this kid is not among them.
    Unknown,
    /// No usable keys: never fetched, or stale beyond the bound.
    NoKeys,
}

impl KeySet {
    pub fn new(issuer: Arc<Issuer>) -> Arc<KeySet> {
        Arc::new(KeySet {
            state: RwLock::new(State {
                jwks_uri: issuer.jwks_uri.clone(),
                ..State::default()
            }),
            issuer,
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
            version: AtomicU64::new(0),
        })
    }

    /// The version of the keys held now (see `version`).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Fetches of the key set so far (attempts, successful or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn stale_ms(&self) -> i64 {
        i64::try_from(self.issuer.stale_for.as_millis()).unwrap_or(i64::MAX)
    }

    fn cooldown_ms(&self) -> i64 {
        i64::try_from(self.issuer.refetch_cooldown.as_millis()).unwrap_or(i64::MAX)
    }

    fn lookup(&self, kid: &str, now: i64) -> Lookup {
        let state = self.read();
        if !state.fetched || now >= state.fresh_until.saturating_add(self.stale_ms()) {
            return Lookup::NoKeys;
        }
        match state.keys.get(kid) {
            Some(key) => Lookup::Key(key.clone()),
            None => Lookup::Unknown,
        }
    }

    fn cooling_down(&self, now: i64) -> bool {
        self.read()
            .last_attempt
            .is_some_and(|at| now < at.saturating_add(self.cooldown_ms()))
    }

    /// The key `kid` of this issuer at `now`, fetching as described above.
    pub async fn key(self: &Arc<Self>, kid: &str, now: Timestamp) -> Result<ExternalKey, JwtError> {
        let now = now.as_millis();
        let (fresh, refresh_ahead) = {
            let state = self.read();
            let lifetime = state.fresh_until.saturating_sub(state.fetched_at);
            (
                state.fetched && now < state.fresh_until,
                state.fetched && now >= state.fresh_until.saturating_sub(lifetime / 5),
            )
        };
        if !fresh {
            // Past the lifetime (or never fetched): refetch now, unless a
            // recent attempt failed; stale keys serve meanwhile.
            self.refetch(now).await;
        } else if refresh_ahead && !self.cooling_down(now) {
            let this = Arc::clone(self);
            tokio::spawn(async move { this.refetch(now).await });
        }
        match self.lookup(kid, now) {
            Lookup::Key(key) => Ok(key),
            Lookup::NoKeys => Err(JwtError::KeysUnavailable),
            Lookup::Unknown => {
                // Perhaps a rotation: one refetch per cooldown.
                self.refetch(now).await;
                match self.lookup(kid, now) {
                    Lookup::Key(key) => Ok(key),
                    Lookup::NoKeys => Err(JwtError::KeysUnavailable),
                    Lookup::Unknown => Err(JwtError::UnknownKey),
                }
            }
        }
    }

    /// One fetch, unless one ran within the cooldown; concurrent callers
    /// wait for the fetch in progress instead of starting their own.
    async fn refetch(&self, now: i64) {
        if self.cooling_down(now) {
            return;
        }
        let _flight = self.fetching.lock().await;
        // Someone else fetched while this caller waited.
        if self.cooling_down(now) {
            return;
        }
        self.write().last_attempt = Some(now);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch().await {
            Ok((keys, max_age)) => {
                let lifetime = max_age
                    .unwrap_or(self.issuer.cache_min)
                    .clamp(self.issuer.cache_min, self.issuer.cache_max);
                let lifetime = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
                if keys.is_empty() {
                    tracing::warn!(issuer = %self.issuer.issuer, "the issuer's JWKS holds no usable signing key");
                }
                let mut state = self.write();
                state.keys = Arc::new(keys);
                state.fetched = true;
                state.fetched_at = now;
                state.fresh_until = now.saturating_add(lifetime);
                self.version.fetch_add(1, Ordering::AcqRel);
            }
            Err(error) => {
                tracing::warn!(issuer = %self.issuer.issuer, %error, "could not fetch the issuer's keys");
            }
        }
    }

    async fn fetch(
        &self,
    ) -> Result<(HashMap<String, ExternalKey>, Option<std::time::Duration>), FetchError> {
        let known = self.read().jwks_uri.clone();
        let uri = match known {
            Some(uri) => uri,
            None => {
                let uri = discover(&self.issuer)
                    .await?
                    .jwks_uri
                    .ok_or_else(|| FetchError::Http("the metadata names no jwks_uri".into()))?;
                self.write().jwks_uri = Some(uri.clone());
                uri
            }
        };
        let fetched = fetch_json(&uri, self.issuer.internal, self.issuer.fetch_timeout).await?;
        let keys = parse_jwks(&fetched.body, &self.issuer.algorithms)
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok((keys, fetched.max_age))
    }
}
