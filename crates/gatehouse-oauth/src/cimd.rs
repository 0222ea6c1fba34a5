//! Client ID Metadata Documents (CIMD, draft-ietf-oauth-client-id-metadata-document):
//! a client whose `client_id` is an https URL is described by the JSON
//! document served at that URL.
//!
//! Fetching a URL a stranger chose is an SSRF risk, so the guards of
//! `web_fetch` apply here too: the URL must be a plain https URL naming a
//! domain, DNS is resolved here and every answer must be public, the HTTP
//! client is pinned to those answers (a second lookup cannot swap in an
//! internal address), redirects are not followed, and time and size are
//! capped. Results are cached per URL, failures briefly, so a flood of
//! authorization requests cannot turn the gateway into a traffic source
//! against the named host.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gatehouse_core::{RateLimiter, Timestamp, is_public, retry_after_secs};
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use serde_json::{Map, Value};
use url::{Host, Url};

use crate::clients::PRIVATE_KEY_JWT;

/// How long a failed fetch is remembered before the URL is tried again.
pub const CIMD_NEGATIVE_TTL_SECS: i64 = 30;

/// How long past its cache lifetime a document that was fetched fine is
/// still served when its host's fetch budget is spent: anyone can spend a
/// popular host's budget with made-up URLs on it, and every client whose
/// document expired meanwhile (its token refreshes too) would be refused.
pub const CIMD_STALE_WHILE_LIMITED_SECS: i64 = 3600;
/// Longest `client_id` URL considered at all.
const MAX_URL_LEN: usize = 2048;
const MAX_REDIRECT_URIS: usize = 10;
const MAX_CLIENT_NAME_CHARS: usize = 100;

/// How client metadata documents are fetched and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CimdConfig {
    /// Domains whose documents are accepted: the exact host or any
    /// subdomain of an entry. Empty accepts any public host.
    pub allowed_domains: Vec<String>,
    /// Hosts that may be fetched over plain http and may resolve to a
    /// loopback address (an IP literal is accepted when listed). For local
    /// development and tests only.
    pub dev_http_hosts: Vec<String>,
    /// Budget for one fetch: DNS, connect, headers and body together.
    pub timeout: Duration,
    /// Largest document accepted.
    pub max_bytes: usize,
    /// Cache lifetime when the response has no `Cache-Control` max-age.
    pub default_ttl_secs: i64,
    /// Upper bound for any cache lifetime, whatever the server asks for.
    pub max_ttl_secs: i64,
    /// Most URLs remembered at once (successes and failures together).
    pub max_entries: usize,
    /// Documents fetched from one host per minute, whoever asks: the
    /// gateway must not become a traffic source against a host.
    pub max_fetches_per_host_per_minute: u32,
    /// Most metadata-document clients kept in the client table (unused
    /// ones expire like dynamically registered clients). When full, new
    /// ones are refused; live ones are never evicted.
    pub max_clients: u64,
}

impl Default for CimdConfig {
    fn default() -> Self {
        CimdConfig {
            allowed_domains: Vec::new(),
            dev_http_hosts: Vec::new(),
            timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            default_ttl_secs: 300,
            max_ttl_secs: 86_400,
            max_entries: 1000,
            max_fetches_per_host_per_minute: 30,
            max_clients: 10_000,
        }
    }
}

/// Whether `client_id` is in URL form, i.e. names a metadata document.
/// Plain http is included so that [`CimdResolver::resolve`] can refuse it
/// with a clear message (or accept it for a development host).
pub fn is_client_id_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// The parts of a client metadata document the authorization server uses.
/// Redirect URIs are returned as written: the caller checks their syntax
/// with the same rules it applies to every client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMetadataDocument {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    /// `none`, or `private_key_jwt` with the keys below.
    pub token_endpoint_auth_method: String,
    /// For `private_key_jwt`: the published JWKS document, or its URL.
    pub jwks: Option<String>,
    pub jwks_uri: Option<String>,
}

/// Why a client metadata document could not be used. Messages are safe to
/// show to the user: they never name an address the host resolved to, and
/// never echo document content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    #[error("the client_id is not an acceptable client metadata URL: {0}")]
    InvalidUrl(&'static str),
    #[error("the client metadata host is not one of the trusted domains")]
    DomainNotAllowed,
    #[error("the client metadata host resolves to a non-public address")]
    NonPublicAddress,
    #[error("the client metadata host could not be resolved")]
    Resolve,
    #[error("fetching the client metadata document timed out")]
    Timeout,
    #[error("the client metadata document could not be fetched")]
    Unreachable,
    #[error("the client metadata URL answered with a redirect, which is not followed")]
    Redirect,
    #[error("the client metadata URL answered with HTTP status {0} instead of 200")]
    Status(u16),
    #[error("the client metadata document is not served as JSON")]
    NotJson,
    #[error("the client metadata document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the client metadata document is invalid: {0}")]
    InvalidDocument(&'static str),
    #[error("too many client metadata documents were fetched from this host; try again in {0} s")]
    HostRateLimited(u64),
}

impl CimdError {
    /// What the person at the browser and the client are told. Every way
    /// the document could not be fetched reads the same: "does not resolve",
    /// "resolves to a non-public address", "timed out" and a status told
    /// apart let anyone map which internal host names exist and which
    /// hosts and ports Gatehouse can reach, without signing in. The log
    /// and the audit record keep the exact reason.
    pub fn public_message(&self) -> String {
        match self {
            CimdError::NonPublicAddress
            | CimdError::Resolve
            | CimdError::Timeout
            | CimdError::Unreachable
            | CimdError::Redirect
            | CimdError::Status(_) => {
                "the client metadata document could not be fetched from a public address"
                    .to_string()
            }
            other => other.to_string(),
        }
    }

    /// True for failures that may go away on their own (network trouble,
    /// server errors), false when the URL or the document is unacceptable.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CimdError::Resolve
            | CimdError::Timeout
            | CimdError::Unreachable
            | CimdError::HostRateLimited(_) => true,
            CimdError::Status(code) => *code >= 500 || *code == 429,
            _ => false,
        }
    }
}

/// Fetches, validates and caches client metadata documents. Cheap to clone:
/// clones share one cache.
#[derive(Clone)]
pub struct CimdResolver {
    inner: Arc<Inner>,
}

struct Inner {
    config: CimdConfig,
    cache: Mutex<Cache>,
    /// One async lock per URL being fetched, so concurrent requests for the
    /// same document wait for one fetch instead of each starting their own.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Fetches per host (normalized name) and minute.
    fetches_per_host: RateLimiter,
}

type Outcome = Result<Arc<ClientMetadataDocument>, CimdError>;

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    next_seq: u64,
}

struct Entry {
    outcome: Outcome,
    expires_at: Timestamp,
    /// Insertion order, for evicting the oldest entry.
    seq: u64,
}

impl std::fmt::Debug for CimdResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CimdResolver")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// A `client_id` URL that passed the syntactic checks.
struct Target {
    url: Url,
    /// Lowercase, no IPv6 brackets, no trailing root dot.
    host: String,
    dev: bool,
}

impl CimdResolver {
    pub fn new(mut config: CimdConfig) -> Self {
        // Compared in normalized form, like the host of each URL.
        config.allowed_domains = config
            .allowed_domains
            .iter()
            .map(|d| normalize_host(d))
            .filter(|d| !d.is_empty())
            .collect();
        config.dev_http_hosts = config
            .dev_http_hosts
            .iter()
            .map(|d| normalize_host(d))
            .filter(|d| !d.is_empty())
            .collect();
        CimdResolver {
            inner: Arc::new(Inner {
                cache: Mutex::new(Cache::default()),
                inflight: Mutex::new(HashMap::new()),
                fetches_per_host: RateLimiter::new(
                    config.max_fetches_per_host_per_minute,
                    60_000,
                    config.max_entries.max(1),
                ),
                config,
            }),
        }
    }

    pub fn config(&self) -> &CimdConfig {
        &self.inner.config
    }

    /// The validated document for `client_id`, from the cache when fresh.
    /// URL problems are reported without any network activity.
    pub async fn resolve(
        &self,
        client_id: &str,
        now: Timestamp,
    ) -> Result<Arc<ClientMetadataDocument>, CimdError> {
        let target = check_url(client_id, &self.inner.config)?;
        if let Some(hit) = self.cached(client_id, now) {
            return hit;
        }

        let url_lock = self.url_lock(client_id);
        let _inflight = InflightGuard {
            inner: &self.inner,
            key: client_id,
            lock: &url_lock,
        };
        let _fetching = url_lock.lock().await;
        // Another request may have filled the cache while this one waited.
        if let Some(hit) = self.cached(client_id, now) {
            return hit;
        }

        // Not cached: the refusal says nothing about the document. One
        // fetched fine a little while ago is served instead.
        if let Err(wait_ms) = self.inner.fetches_per_host.attempt(&target.host, now) {
            if let Some(stale) = self.stale(client_id, now) {
                tracing::info!(
                    client_id,
                    "host fetch budget spent; serving the last document"
                );
                return Ok(stale);
            }
            return Err(CimdError::HostRateLimited(retry_after_secs(wait_ms)));
        }
        let config = &self.inner.config;
        let fetched = match tokio::time::timeout(config.timeout, fetch(&target, config)).await {
            Ok(result) => result,
            Err(_) => Err(CimdError::Timeout),
        };
        let (outcome, ttl_secs) = match fetched {
            Ok((document, ttl)) => (Ok(Arc::new(document)), ttl),
            Err(err) => {
                tracing::info!(client_id, error = %err, "client metadata document refused");
                (Err(err), CIMD_NEGATIVE_TTL_SECS)
            }
        };
        if ttl_secs > 0 {
            self.store(client_id, outcome.clone(), now, ttl_secs);
        }
        outcome
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the map half-updated
        // in a way that matters: at worst an entry is missing.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cached(&self, key: &str, now: Timestamp) -> Option<Outcome> {
        let cache = self.cache();
        cache
            .entries
            .get(key)
            .filter(|entry| now < entry.expires_at)
            .map(|entry| entry.outcome.clone())
    }

    /// A document fetched fine whose cache lifetime ended less than
    /// [`CIMD_STALE_WHILE_LIMITED_SECS`] ago.
    fn stale(&self, key: &str, now: Timestamp) -> Option<Arc<ClientMetadataDocument>> {
        let cache = self.cache();
        let entry = cache.entries.get(key)?;
        let until = entry
            .expires_at
            .plus_millis(CIMD_STALE_WHILE_LIMITED_SECS.saturating_mul(1000));
        match &entry.outcome {
            Ok(document) if now < until => Some(Arc::clone(document)),
            _ => None,
        }
    }

    fn store(&self, key: &str, outcome: Outcome, now: Timestamp, ttl_secs: i64) {
        let max_entries = self.inner.config.max_entries;
        if max_entries == 0 {
            return;
        }
        let mut cache = self.cache();
        if !cache.entries.contains_key(key) && cache.entries.len() >= max_entries {
            cache.entries.retain(|_, entry| now < entry.expires_at);
            while cache.entries.len() >= max_entries {
                let oldest = cache
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.seq)
                    .map(|(k, _)| k.clone());
                let Some(k) = oldest else { break };
                cache.entries.remove(&k);
            }
        }
        let seq = cache.next_seq;
        cache.next_seq = seq.wrapping_add(1);
        cache.entries.insert(
            key.to_string(),
            Entry {
                outcome,
                expires_at: now.plus_millis(ttl_secs.saturating_mul(1000)),
                seq,
            },
        );
    }

    fn url_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inflight.entry(key.to_string()).or_default().clone()
    }
}

/// Forgets a URL's fetch lock when the request that made it finishes or is
/// cancelled; waiters still hold their clone and find the cache filled.
struct InflightGuard<'a> {
    inner: &'a Inner,
    key: &'a str,
    lock: &'a Arc<tokio::sync::Mutex<()>>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .inner
            .inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if inflight
            .get(self.key)
            .is_some_and(|current| Arc::ptr_eq(current, self.lock))
        {
            inflight.remove(self.key);
        }
    }
}

/// Lowercase, no IPv6 brackets, no trailing root dot: the form hosts and
/// configured host lists are compared in.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn check_url(client_id: &str, config: &CimdConfig) -> Result<Target, CimdError> {
    if client_id.len() > MAX_URL_LEN {
        return Err(CimdError::InvalidUrl("it is too long"));
    }
    let url = Url::parse(client_id).map_err(|_| CimdError::InvalidUrl("it is not a valid URL"))?;
    // Exact re-serialisation rules out every spelling the parser would
    // normalise (case, default port, dot segments, odd IP forms): the
    // document must name this very string as its client_id.
    if url.as_str() != client_id {
        return Err(CimdError::InvalidUrl("it is not in canonical form"));
    }
    let Some(host) = url.host() else {
        return Err(CimdError::InvalidUrl("it has no host"));
    };
    let host_name = normalize_host(&host.to_string());
    let dev = config.dev_http_hosts.contains(&host_name);
    match url.scheme() {
        "https" => {}
        "http" if dev => {}
        _ => return Err(CimdError::InvalidUrl("it must use https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CimdError::InvalidUrl(
            "it must not contain a user name or password",
        ));
    }
    if url.fragment().is_some() {
        return Err(CimdError::InvalidUrl("it must not contain a fragment"));
    }
    if url.query().is_some() {
        return Err(CimdError::InvalidUrl("it must not contain a query"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(CimdError::InvalidUrl("it must have a path"));
    }
    if !matches!(host, Host::Domain(_)) && !dev {
        return Err(CimdError::InvalidUrl(
            "its host must be a domain name, not an IP address",
        ));
    }
    let allowed = &config.allowed_domains;
    if !allowed.is_empty()
        && !allowed.iter().any(|domain| {
            host_name == *domain
                || host_name
                    .strip_suffix(domain.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    {
        return Err(CimdError::DomainNotAllowed);
    }
    Ok(Target {
        url,
        host: host_name,
        dev,
    })
}

/// Every address the host resolves to; all must be acceptable.
async fn resolve_addrs(target: &Target, port: u16) -> Result<Vec<SocketAddr>, CimdError> {
    let addrs: Vec<SocketAddr> = match target.url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(Host::Domain(domain)) => match tokio::net::lookup_host((domain, port)).await {
            Ok(found) => found.collect(),
            Err(err) => {
                tracing::debug!(error = %err, domain, "client metadata host lookup failed");
                return Err(CimdError::Resolve);
            }
        },
        None => return Err(CimdError::InvalidUrl("it has no host")),
    };
    if addrs.is_empty() {
        return Err(CimdError::Resolve);
    }
    let acceptable = |ip: IpAddr| is_public(ip) || (target.dev && ip.to_canonical().is_loopback());
    if let Some(blocked) = addrs.iter().find(|a| !acceptable(a.ip())) {
        // The address goes to the operator's log only: telling the caller
        // what a name resolves to would help map the internal network.
        tracing::warn!(
            host = %target.host,
            address = %blocked.ip(),
            "client metadata host resolves to a non-public address"
        );
        return Err(CimdError::NonPublicAddress);
    }
    Ok(addrs)
}

/// One GET of the document; on success also the cache lifetime in seconds
/// (0 = do not cache).
async fn fetch(
    target: &Target,
    config: &CimdConfig,
) -> Result<(ClientMetadataDocument, i64), CimdError> {
    let port = target
        .url
        .port_or_known_default()
        .ok_or(CimdError::InvalidUrl("it has no port"))?;
    let addrs = resolve_addrs(target, port).await?;

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // A proxy would do its own DNS lookup and defeat the pinning below.
        .no_proxy()
        .user_agent(concat!("gatehouse-cimd/", env!("CARGO_PKG_VERSION")));
    if let Some(Host::Domain(domain)) = target.url.host() {
        builder = builder.resolve_to_addrs(domain, &addrs);
    }
    let client = builder.build().map_err(|e| http_failure(&e))?;

    let mut response = client
        .get(target.url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| http_failure(&e))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(CimdError::Redirect);
    }
    if status != reqwest::StatusCode::OK {
        return Err(CimdError::Status(status.as_u16()));
    }
    if !is_json(response.headers()) {
        return Err(CimdError::NotJson);
    }
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.max_bytes as u64) {
        return Err(CimdError::TooLarge(config.max_bytes));
    }
    let ttl = cache_ttl(response.headers(), config);

    // Read as a stream so a body without (or lying about) its length cannot
    // make us buffer more than the limit.
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_failure(&e))? {
        if chunk.len() > config.max_bytes.saturating_sub(body.len()) {
            return Err(CimdError::TooLarge(config.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }

    let document = parse_document(&body, target.url.as_str())?;
    Ok((document, ttl))
}

fn is_json(headers: &HeaderMap) -> bool {
    gatehouse_authn::external::is_json(headers.get(CONTENT_TYPE))
}

/// Seconds the document may be cached for, from `Cache-Control`.
fn cache_ttl(headers: &HeaderMap, config: &CimdConfig) -> i64 {
    let mut max_age: Option<i64> = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            // Unreadable caching instructions: do not guess, do not cache.
            return 0;
        };
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            // `no-cache` means "revalidate before every use"; without
            // revalidation support that amounts to not caching.
            if directive == "no-store" || directive == "no-cache" {
                return 0;
            }
            if let Some(seconds) = directive.strip_prefix("max-age=") {
                // An unparseable max-age counts as already stale (RFC 9111
                // §4.2.1); with several, the shortest wins.
                let seconds = seconds.trim_matches('"').parse::<i64>().unwrap_or(0);
                max_age = Some(max_age.map_or(seconds, |m| m.min(seconds)));
            }
        }
    }
    max_age
        .unwrap_or(config.default_ttl_secs)
        .clamp(0, config.max_ttl_secs.max(0))
}

fn parse_document(body: &[u8], url: &str) -> Result<ClientMetadataDocument, CimdError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| CimdError::InvalidDocument("it is not valid JSON"))?;
    let Value::Object(object) = value else {
        return Err(CimdError::InvalidDocument("it is not a JSON object"));
    };

    match object.get("client_id") {
        Some(Value::String(id)) if id == url => {}
        Some(Value::String(_)) => {
            return Err(CimdError::InvalidDocument(
                "its client_id does not match the URL it was fetched from",
            ));
        }
        _ => return Err(CimdError::InvalidDocument("client_id is missing")),
    }

    let redirect_uris = string_array(&object, "redirect_uris")?
        .ok_or(CimdError::InvalidDocument("redirect_uris is missing"))?;
    if redirect_uris.is_empty() {
        return Err(CimdError::InvalidDocument("redirect_uris is empty"));
    }
    if redirect_uris.len() > MAX_REDIRECT_URIS {
        return Err(CimdError::InvalidDocument(
            "redirect_uris has more than 10 entries",
        ));
    }

    // A document is public, so a secret in it is no secret; a client that
    // wants to authenticate signs assertions with a key it publishes
    // (private_key_jwt).
    if object.contains_key("client_secret") {
        return Err(CimdError::InvalidDocument(
            "it must not contain a client_secret",
        ));
    }
    let token_endpoint_auth_method = match object.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => "none".to_string(),
        Some(Value::String(method)) if method == "none" || method == PRIVATE_KEY_JWT => {
            method.clone()
        }
        Some(_) => {
            return Err(CimdError::InvalidDocument(
                "token_endpoint_auth_method must be \"none\" or \"private_key_jwt\"",
            ));
        }
    };
    let (jwks, jwks_uri) = if token_endpoint_auth_method == PRIVATE_KEY_JWT {
        published_keys(&object)?
    } else {
        (None, None)
    };

    let client_name = match object.get("client_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            if name.chars().count() > MAX_CLIENT_NAME_CHARS {
                return Err(CimdError::InvalidDocument(
                    "client_name is longer than 100 characters",
                ));
            }
            // The name is shown on the consent page: the same characters
            // that could disguise it are refused as at registration.
            if crate::registration::has_deceptive_characters(name) {
                return Err(CimdError::InvalidDocument(
                    "client_name contains control or formatting characters",
                ));
            }
            (!name.trim().is_empty()).then(|| name.clone())
        }
        Some(_) => return Err(CimdError::InvalidDocument("client_name is not a string")),
    };

    let grant_types = string_array(&object, "grant_types")?
        .filter(|types| !types.is_empty())
        .unwrap_or_else(|| vec!["authorization_code".to_string()]);

    Ok(ClientMetadataDocument {
        client_id: url.to_string(),
        client_name,
        redirect_uris,
        grant_types,
        token_endpoint_auth_method,
        jwks,
        jwks_uri,
    })
}

/// The keys a `private_key_jwt` document publishes: exactly one of `jwks`
/// (checked here) and `jwks_uri` (checked by the caller, which knows the
/// development hosts).
fn published_keys(
    object: &Map<String, Value>,
) -> Result<(Option<String>, Option<String>), CimdError> {
    let jwks = match object.get("jwks") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => Some(value.to_string()),
        Some(_) => return Err(CimdError::InvalidDocument("jwks is not an object")),
    };
    let jwks_uri = match object.get("jwks_uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(uri)) => Some(uri.clone()),
        Some(_) => return Err(CimdError::InvalidDocument("jwks_uri is not a string")),
    };
    match (&jwks, &jwks_uri) {
        (Some(document), None) => {
            crate::client_assertion::validate_jwks(document).map_err(|_| {
                CimdError::InvalidDocument("jwks holds no usable public signing key")
            })?;
        }
        (None, Some(_)) => {}
        _ => {
            return Err(CimdError::InvalidDocument(
                "private_key_jwt needs exactly one of jwks and jwks_uri",
            ));
        }
    }
    Ok((jwks, jwks_uri))
}

/// `None` when absent; an error when present but not an array of strings.
fn string_array(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<Vec<String>>, CimdError> {
    let invalid = || match field {
        "redirect_uris" => CimdError::InvalidDocument("redirect_uris is not an array of strings"),
        _ => CimdError::InvalidDocument("grant_types is not an array of strings"),
    };
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(invalid))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid()),
    }
}

fn http_failure(err: &reqwest::Error) -> CimdError {
    tracing::debug!(error = %err, "client metadata fetch failed");
    if err.is_timeout() {
        CimdError::Timeout
    } else {
        CimdError::Unreachable
    }
}

#[cfg(test)]
#[path = "cimd_tests.rs"]
mod tests;
