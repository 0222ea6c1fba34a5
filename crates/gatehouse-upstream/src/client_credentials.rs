//! Gatehouse's own access token for an upstream that is an OAuth protected
//! resource: the client-credentials grant at the upstream's authorization
//! server, found from its protected resource metadata (RFC 9728) and the
//! server's metadata (RFC 8414), with `resource` set to the upstream
//! (RFC 8707) so the token is good for that upstream only.
//!
//! Written here rather than with rmcp's OAuth client: that one is built
//! around the authorization-code flow with a browser and a credential
//! store; the grant needed here is one form POST, and doing it ourselves
//! keeps the secret inside `Secret` and out of every error text.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use gatehouse_core::secret_ref::{Secret, SecretRef, TenantSecrets};

/// A token is renewed this long before it expires, so a call never
/// starts with one that runs out on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token response does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Metadata documents and token responses are small; more is refused.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Why no token could be had. The texts name URLs and statuses, never the
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    Discovery(String),
    #[error("the token endpoint refused the client-credentials grant: {0}")]
    Refused(String),
    #[error("the client secret: {0}")]
    Secret(String),
}

#[derive(Deserialize)]
struct ResourceMetadata {
    resource: String,
    #[serde(default)]
    authorization_servers: Vec<String>,
}

#[derive(Deserialize)]
struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

struct Cached {
    token: Secret,
    renew_at: Instant,
}

/// The client-credentials grant for one upstream connection (one tenant).
pub(crate) struct ClientCredentials {
    http: reqwest::Client,
    /// The upstream's MCP endpoint: the resource the token is for.
    resource: Url,
    client_id: String,
    client_secret: SecretRef,
    scope: Option<String>,
    /// The configured authorization server: the secret goes there only.
    issuer: String,
    tenant: Option<String>,
    cached: Mutex<Option<Cached>>,
    /// The last tokens this grant obtained, newest last: an upstream may
    /// echo the token it was sent in an error, and a renewed token must be
    /// scrubbed from error texts like the first one.
    issued: std::sync::Mutex<std::collections::VecDeque<String>>,
    /// The SHA-256 of the client secret the last token was asked for with
    /// (`None` before the first): a connection whose tenant's secret
    /// changed since is ended (`Upstream::secret_changed`).
    secret_used: std::sync::Mutex<Option<[u8; 32]>>,
}

/// Tokens remembered for scrubbing: the current one and those before it
/// that a slow request may still carry.
const ISSUED_REMEMBERED: usize = 4;

/// The longest one metadata fetch or token request may take, reading the
/// answer included: the client has only a connect timeout, and a server
/// that trickles its answer would otherwise hold the grant (and every call
/// waiting for a token) indefinitely.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a token is used before a new one is asked for, whatever
/// its `expires_in` says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Plain http is accepted only on loopback (a local test or sidecar).
fn check_transport(url: &Url, what: &str) -> Result<(), GrantError> {
    if url.scheme() == "https" || (url.scheme() == "http" && gatehouse_core::is_loopback_url(url)) {
        Ok(())
    } else {
        Err(GrantError::Discovery(format!(
            "{what} {url} is not https (plain http only on loopback)"
        )))
    }
}

/// `{origin}/.well-known/{name}{path}` (RFC 9728 §3.1, RFC 8414 §3.1),
/// then `{origin}/.well-known/{name}` when the path is not empty.
fn well_known(base: &Url, name: &str) -> Vec<Url> {
    let path = base.path().trim_end_matches('/');
    let mut candidates = Vec::new();
    for suffix in [path, ""] {
        let mut url = base.clone();
        url.set_path(&format!("/.well-known/{name}{suffix}"));
        url.set_query(None);
        url.set_fragment(None);
        if !candidates.contains(&url) {
            candidates.push(url);
        }
    }
    candidates
}

fn digest_of(secret: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret.as_bytes()).into()
}

/// Two URLs name the same resource (RFC 8707: compared without a
/// trailing slash difference).
fn same_resource(a: &str, b: &Url) -> bool {
    a.trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

impl ClientCredentials {
    pub(crate) fn new(
        http: reqwest::Client,
        resource: Url,
        client_id: String,
        client_secret: SecretRef,
        scope: Option<String>,
        issuer: String,
        tenant: Option<String>,
    ) -> ClientCredentials {
        ClientCredentials {
            http,
            resource,
            client_id,
            client_secret,
            scope,
            issuer,
            tenant,
            cached: Mutex::new(None),
            issued: std::sync::Mutex::new(std::collections::VecDeque::new()),
            secret_used: std::sync::Mutex::new(None),
        }
    }

    /// Whether `secret` is the client secret the last token was asked for
    /// with (true before the first: nothing was sent with another).
    pub(crate) fn last_used_secret_is(&self, secret: &str) -> bool {
        let used = *self
            .secret_used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        used.is_none_or(|digest| {
            use subtle::ConstantTimeEq as _;
            bool::from(digest.ct_eq(&digest_of(secret)))
        })
    }

    /// The tokens obtained lately (see `issued`), for scrubbing.
    pub(crate) fn issued(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn remember_issued(&self, token: &Secret) {
        let mut issued = self
            .issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if issued.len() == ISSUED_REMEMBERED {
            issued.pop_front();
        }
        issued.push_back(token.expose().to_owned());
    }

    /// The current token: the cached one while it is fresh, else a new grant.
    pub(crate) async fn token(
        &self,
        tenants: Option<&dyn TenantSecrets>,
    ) -> Result<Secret, GrantError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.renew_at
        {
            return Ok(current.token.clone());
        }
        let (token, lifetime) = self.grant(tenants).await?;
        self.remember_issued(&token);
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at,
        });
        Ok(token)
    }

    /// Forgets the cached token (the upstream refused it).
    pub(crate) async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        url: &Url,
    ) -> Result<Option<T>, GrantError> {
        let response = self
            .http
            .get(url.clone())
            .header("accept", "application/json")
            .timeout(EXCHANGE_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                GrantError::Discovery(format!("cannot fetch {url}: {}", e.without_url()))
            })?;
        if !response.status().is_success() {
            return Ok(None);
        }
        let body = read_capped(response)
            .await
            .map_err(|e| GrantError::Discovery(format!("cannot read {url}: {e}")))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| GrantError::Discovery(format!("{url} is not valid metadata: {e}")))
    }

    /// The token endpoint and how to authenticate there.
    async fn discover(&self) -> Result<ServerMetadata, GrantError> {
        let mut resource_metadata = None;
        for url in well_known(&self.resource, "oauth-protected-resource") {
            if let Some(found) = self.get_json::<ResourceMetadata>(&url).await? {
                resource_metadata = Some(found);
                break;
            }
        }
        let resource_metadata = resource_metadata.ok_or_else(|| {
            GrantError::Discovery(format!(
                "{} publishes no protected resource metadata",
                self.resource
            ))
        })?;
        // A metadata document for another resource must not send our
        // secret to another server (RFC 9728 §3.3).
        if !same_resource(&resource_metadata.resource, &self.resource) {
            return Err(GrantError::Discovery(format!(
                "the protected resource metadata is for {:?}, not {}",
                resource_metadata.resource, self.resource
            )));
        }
        // The upstream says which servers it trusts, but never where the
        // secret goes: a hostile upstream would name its own.
        let issuer = self.issuer.as_str();
        let trusted = resource_metadata
            .authorization_servers
            .iter()
            .any(|named| named.trim_end_matches('/') == issuer.trim_end_matches('/'));
        if !trusted {
            return Err(GrantError::Discovery(format!(
                "the protected resource metadata does not name the configured issuer {issuer} (it names {:?})",
                resource_metadata.authorization_servers
            )));
        }
        let issuer_url = Url::parse(issuer)
            .map_err(|e| GrantError::Discovery(format!("authorization server {issuer:?}: {e}")))?;
        check_transport(&issuer_url, "the authorization server")?;
        for name in ["oauth-authorization-server", "openid-configuration"] {
            for url in well_known(&issuer_url, name) {
                let Some(metadata) = self.get_json::<ServerMetadata>(&url).await? else {
                    continue;
                };
                // RFC 8414 §3.3: the document must be the issuer's own.
                if metadata.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(GrantError::Discovery(format!(
                        "the metadata at {url} names issuer {:?}, not {issuer:?}",
                        metadata.issuer
                    )));
                }
                return Ok(metadata);
            }
        }
        Err(GrantError::Discovery(format!(
            "authorization server {issuer} publishes no metadata"
        )))
    }

    async fn grant(
        &self,
        tenants: Option<&dyn TenantSecrets>,
    ) -> Result<(Secret, Duration), GrantError> {
        let metadata = self.discover().await?;
        let endpoint = Url::parse(&metadata.token_endpoint)
            .map_err(|e| GrantError::Discovery(format!("token endpoint: {e}")))?;
        check_transport(&endpoint, "the token endpoint")?;
        let secret = self
            .client_secret
            .resolve(self.tenant.as_deref(), tenants)
            .await
            .map_err(|e| GrantError::Secret(e.to_string()))?;
        *self
            .secret_used
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(digest_of(secret.expose()));
        // RFC 8414: without a list, client_secret_basic is what is supported.
        let basic = metadata
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_none_or(|methods| methods.iter().any(|m| m == "client_secret_basic"));
        let mut request = self
            .http
            .post(endpoint.clone())
            .header("accept", "application/json")
            .timeout(EXCHANGE_TIMEOUT);
        let in_body = if basic {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic.
            let encode = |text: &str| {
                url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
            };
            request = request.basic_auth(encode(&self.client_id), Some(encode(secret.expose())));
            None
        } else {
            Some((self.client_id.as_str(), secret.expose()))
        };
        let body = token_form(&self.resource, self.scope.as_deref(), in_body);
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                GrantError::Refused(format!("cannot reach {endpoint}: {}", e.without_url()))
            })?;
        let status = response.status();
        let body = read_capped(response)
            .await
            .map_err(|e| GrantError::Refused(format!("cannot read the answer: {e}")))?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorResponse>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| "no OAuth error code".into());
            return Err(GrantError::Refused(format!("HTTP {status}, {code}")));
        }
        let answer: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| GrantError::Refused(format!("not a token response: {e}")))?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(GrantError::Refused(
                "the token is not a bearer token".into(),
            ));
        }
        // Capped: the server's number is untrusted, and a token is asked
        // for again at least daily (an `Instant` past the clock's range
        // would also panic).
        let lifetime = answer
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME)
            .min(MAX_LIFETIME);
        Ok((Secret::new(answer.access_token), lifetime))
    }
}

/// The grant's form body; the client's id and secret go in it only when
/// the server does not take HTTP Basic.
fn token_form(resource: &Url, scope: Option<&str>, client: Option<(&str, &str)>) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    form.append_pair("resource", resource.as_str());
    if let Some(scope) = scope {
        form.append_pair("scope", scope);
    }
    if let Some((id, secret)) = client {
        form.append_pair("client_id", id);
        form.append_pair("client_secret", secret);
    }
    form.finish()
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| e.without_url().to_string())?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_urls_insert_the_path_then_fall_back_to_the_root() {
        let base = Url::parse("https://crm.example/tenant1/mcp?x=1").unwrap();
        let urls: Vec<String> = well_known(&base, "oauth-protected-resource")
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            urls,
            [
                "https://crm.example/.well-known/oauth-protected-resource/tenant1/mcp",
                "https://crm.example/.well-known/oauth-protected-resource",
            ]
        );
        let root = Url::parse("https://as.example").unwrap();
        assert_eq!(well_known(&root, "openid-configuration").len(), 1);
    }

    #[test]
    fn the_last_tokens_are_remembered_for_scrubbing() {
        let grant = ClientCredentials::new(
            reqwest::Client::new(),
            Url::parse("https://crm.example/mcp").unwrap(),
            "gatehouse".into(),
            SecretRef::Env("UNUSED".into()),
            None,
            "https://login.example".into(),
            None,
        );
        for n in 0..6 {
            grant.remember_issued(&Secret::new(format!("token-{n}")));
        }
        assert_eq!(grant.issued(), ["token-2", "token-3", "token-4", "token-5"]);
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "https://as.example/token",
            "http://127.0.0.1:9/t",
            "http://localhost/t",
            "http://[::1]/t",
        ] {
            check_transport(&Url::parse(ok).unwrap(), "x").unwrap();
        }
        for bad in [
            "http://as.example/token",
            "http://10.0.0.1/t",
            "ftp://127.0.0.1/t",
        ] {
            assert!(
                check_transport(&Url::parse(bad).unwrap(), "x").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_resource_matches_with_or_without_a_trailing_slash_only() {
        let url = Url::parse("https://crm.example/mcp").unwrap();
        assert!(same_resource("https://crm.example/mcp/", &url));
        assert!(same_resource("https://crm.example/mcp", &url));
        assert!(!same_resource("https://evil.example/mcp", &url));
        assert!(!same_resource("https://crm.example/other", &url));
    }
}
