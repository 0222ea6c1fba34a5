//! `[[issuers]]`: identity providers whose access tokens Gatehouse accepts.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use url::Url;

use super::jwk::accepted_algorithm;
use crate::jwt::MAX_LEEWAY_SECS;

use gatehouse_core::SecretRef;
use gatehouse_core::duration_setting::parse as duration;

/// One external issuer, as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` of its tokens; also where discovery starts.
    pub issuer: String,
    /// Its key set; found through discovery when absent.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values; the canonical resource URL when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Subset of RS256, PS256, ES256, EdDSA; all four when absent.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// `at+jwt` (RFC 9068, the default) or `JWT`, for a provider that cannot
    /// type its access tokens (the audience then tells them from ID tokens).
    #[serde(default = "default_token_type")]
    pub token_type: String,
    #[serde(default = "default_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// The claim naming the user (or the client, for a machine token).
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Claims naming the calling client, first present wins.
    #[serde(default = "default_agent_claims")]
    pub agent_claims: Vec<String>,
    /// A claim (dotted path) holding the tenant; see also `tenant`.
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// The tenants `tenant_claim` may name (required with it): the provider
    /// vouches for its own organisations only, and a token naming another
    /// tenant is refused.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Every token of this issuer belongs to this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// A claim (dotted path, e.g. `realm_access.roles`) holding the roles
    /// or groups; its values go through `role_map`.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Provider value -> Gatehouse role. Unmapped values are ignored; a
    /// token with no mapped role is authenticated but may call nothing.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// On a private network or loopback: no public-address guard on its
    /// fetches, and `http` allowed.
    #[serde(default)]
    pub internal: bool,
    /// Bounds on how long a fetched key set is trusted without a refetch,
    /// whatever its `Cache-Control` says.
    #[serde(default = "default_cache_min", deserialize_with = "duration")]
    pub jwks_cache_min: Duration,
    #[serde(default = "default_cache_max", deserialize_with = "duration")]
    pub jwks_cache_max: Duration,
    /// At most one refetch per this interval for tokens naming an unknown `kid`.
    #[serde(default = "default_cooldown", deserialize_with = "duration")]
    pub jwks_refetch_cooldown: Duration,
    /// How long keys are still used after their lifetime while the
    /// provider cannot be reached; then tokens are refused (fail closed).
    #[serde(default = "default_stale", deserialize_with = "duration")]
    pub jwks_stale_for: Duration,
    #[serde(default = "default_fetch_timeout", deserialize_with = "duration")]
    pub fetch_timeout: Duration,
    /// Opaque access tokens, checked at the issuer's RFC 7662 introspection
    /// endpoint with Gatehouse's own client credentials there.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
}

/// `introspection = { client_id = "...", client_secret = "env:NAME" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// Found through discovery (`introspection_endpoint`) when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Gatehouse's client at the issuer.
    pub client_id: String,
    /// Where its secret is: `env:NAME` or `file:PATH`.
    pub client_secret: SecretRef,
    /// `client_secret_basic` (the default) or `client_secret_post`.
    #[serde(default = "default_auth_method")]
    pub auth_method: String,
    /// An active answer is reused this long at most, and never past the
    /// token's `exp`; a token revoked at the provider may work this long.
    #[serde(default = "default_introspection_cache", deserialize_with = "duration")]
    pub cache_for: Duration,
    /// Introspection requests in flight at once; more wait their turn
    /// (within `fetch_timeout`).
    #[serde(default = "default_introspection_concurrency")]
    pub max_concurrent: usize,
}

/// How Gatehouse authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
}

/// A checked `introspection` entry.
#[derive(Debug, Clone)]
pub struct Introspection {
    pub endpoint: Option<Url>,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub auth_method: ClientAuthMethod,
    pub cache_for: Duration,
    pub max_concurrent: usize,
}

fn default_token_type() -> String {
    "at+jwt".into()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_subject_claim() -> String {
    "sub".into()
}
fn default_agent_claims() -> Vec<String> {
    ["azp", "client_id", "appid"].map(String::from).to_vec()
}
fn default_cache_min() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_cache_max() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_stale() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_auth_method() -> String {
    "client_secret_basic".into()
}
fn default_introspection_cache() -> Duration {
    Duration::from_secs(30)
}
fn default_introspection_concurrency() -> usize {
    16
}
/// A longer positive cache would let a token revoked at the provider work
/// for too long.
const MAX_INTROSPECTION_CACHE: Duration = Duration::from_secs(5 * 60);

/// Which `typ` header an issuer's access tokens carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// `at+jwt` (or `application/at+jwt`) only.
    AccessTokenJwt,
    /// `JWT`, `at+jwt`, or none: the provider does not type its tokens.
    Untyped,
}

/// Where the tenant of a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantSource {
    Fixed(String),
    /// The claim, and the tenants it may name.
    Claim(String, Vec<String>),
    Default,
}

/// A checked issuer entry, ready to validate tokens.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub issuer: String,
    pub jwks_uri: Option<Url>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub token_type: TokenType,
    pub leeway_secs: u64,
    pub subject_claim: String,
    pub agent_claims: Vec<String>,
    pub tenant: TenantSource,
    pub roles_claim: Option<String>,
    pub role_map: BTreeMap<String, String>,
    pub internal: bool,
    pub cache_min: Duration,
    pub cache_max: Duration,
    pub refetch_cooldown: Duration,
    pub stale_for: Duration,
    pub fetch_timeout: Duration,
    pub introspection: Option<Introspection>,
}

/// An issuer or key-set URL: https (http only for an internal issuer), a
/// host, no user information, no fragment.
pub fn checked_url(text: &str, internal: bool, what: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{what} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if internal => {}
        "http" => {
            return Err(format!(
                "{what} must use https (http only with internal = true)"
            ));
        }
        other => return Err(format!("{what} has the unsupported scheme {other:?}")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} must not contain user information"));
    }
    if url.fragment().is_some() {
        return Err(format!("{what} must not contain a fragment"));
    }
    Ok(url)
}

/// The configured `algorithms` (all four accepted ones when empty).
pub fn algorithm_list(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Ok(super::jwk::ACCEPTED_ALGORITHMS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            accepted_algorithm(name).ok_or_else(|| {
                format!("algorithms: {name:?} is not accepted (RS256, PS256, ES256 or EdDSA)")
            })
        })
        .collect()
}

impl IssuerConfig {
    /// Checks the entry; `resource` is the canonical resource URL, the
    /// audience when none is configured. The error names the field.
    pub fn compile(&self, resource: &str) -> Result<Issuer, String> {
        checked_url(&self.issuer, self.internal, "issuer")?;
        let jwks_uri = self
            .jwks_uri
            .as_deref()
            .map(|u| checked_url(u, self.internal, "jwks_uri"))
            .transpose()?;
        let audiences = if self.audiences.is_empty() {
            vec![resource.to_owned()]
        } else {
            self.audiences.clone()
        };
        if audiences.iter().any(String::is_empty) {
            return Err("audiences must not contain an empty value".into());
        }
        let algorithms = algorithm_list(&self.algorithms)?;
        let token_type = match self.token_type.as_str() {
            "at+jwt" => TokenType::AccessTokenJwt,
            "JWT" => TokenType::Untyped,
            other => {
                return Err(format!(
                    "token_type: {other:?} is neither \"at+jwt\" nor \"JWT\""
                ));
            }
        };
        if self.leeway.as_secs() > MAX_LEEWAY_SECS {
            return Err(format!("leeway: at most {MAX_LEEWAY_SECS}s"));
        }
        let tenant = match (&self.tenant, &self.tenant_claim) {
            (Some(_), Some(_)) => {
                return Err("tenant and tenant_claim exclude each other".into());
            }
            (Some(fixed), None) if !fixed.is_empty() => TenantSource::Fixed(fixed.clone()),
            (None, Some(claim)) if !claim.is_empty() => {
                // Without a list, whoever administers the provider (or a
                // user who can edit the claim) could name any tenant, and
                // get its secrets, upstream credentials and approvals.
                if self.tenants.is_empty() || self.tenants.iter().any(String::is_empty) {
                    return Err(
                        "tenant_claim needs tenants = [...]: the tenants this provider may name"
                            .into(),
                    );
                }
                TenantSource::Claim(claim.clone(), self.tenants.clone())
            }
            (None, None) => TenantSource::Default,
            _ => return Err("tenant / tenant_claim must not be empty".into()),
        };
        if !self.tenants.is_empty() && !matches!(tenant, TenantSource::Claim(..)) {
            return Err("tenants lists what tenant_claim may name; it needs tenant_claim".into());
        }
        if self.subject_claim.is_empty() || self.agent_claims.iter().any(String::is_empty) {
            return Err("subject_claim and agent_claims must name claims".into());
        }
        if self.roles_claim.as_deref() == Some("") {
            return Err("roles_claim must name a claim".into());
        }
        if self.role_map.values().any(String::is_empty) {
            return Err("role_map: a role must not be empty".into());
        }
        if self.jwks_cache_min > self.jwks_cache_max {
            return Err("jwks_cache_min must not exceed jwks_cache_max".into());
        }
        if self.fetch_timeout.is_zero() {
            return Err("fetch_timeout must be positive".into());
        }
        let introspection = self
            .introspection
            .as_ref()
            .map(|i| i.compile(self.internal))
            .transpose()?;
        Ok(Issuer {
            issuer: self.issuer.clone(),
            jwks_uri,
            audiences,
            algorithms,
            token_type,
            leeway_secs: self.leeway.as_secs(),
            subject_claim: self.subject_claim.clone(),
            agent_claims: self.agent_claims.clone(),
            tenant,
            roles_claim: self.roles_claim.clone(),
            role_map: self.role_map.clone(),
            internal: self.internal,
            cache_min: self.jwks_cache_min,
            cache_max: self.jwks_cache_max,
            refetch_cooldown: self.jwks_refetch_cooldown,
            stale_for: self.jwks_stale_for,
            fetch_timeout: self.fetch_timeout,
            introspection,
        })
    }
}

impl Issuer {
    /// A key set and nothing else (a client's `jwks_uri`): fetched with the
    /// same guard, cache bounds and cooldown as an issuer's, under `name`
    /// in the log. `internal` lifts the public-address guard.
    pub fn key_set_only(name: &str, jwks_uri: Url, internal: bool) -> Issuer {
        Issuer::keys_only(
            name,
            Some(jwks_uri),
            internal,
            super::jwk::ACCEPTED_ALGORITHMS.to_vec(),
        )
    }

    /// An issuer whose keys verify assertions rather than access tokens (an
    /// identity provider's ID-JAGs): its key set (from `jwks_uri`, or from
    /// discovery at `issuer`) with the usual guard, cache and cooldown.
    pub fn keys_only(
        issuer: &str,
        jwks_uri: Option<Url>,
        internal: bool,
        algorithms: Vec<Algorithm>,
    ) -> Issuer {
        Issuer {
            issuer: issuer.to_owned(),
            jwks_uri,
            audiences: Vec::new(),
            algorithms,
            token_type: TokenType::AccessTokenJwt,
            leeway_secs: default_leeway().as_secs(),
            subject_claim: default_subject_claim(),
            agent_claims: Vec::new(),
            tenant: TenantSource::Default,
            roles_claim: None,
            role_map: BTreeMap::new(),
            internal,
            cache_min: default_cache_min(),
            cache_max: default_cache_max(),
            refetch_cooldown: default_cooldown(),
            stale_for: default_stale(),
            fetch_timeout: default_fetch_timeout(),
            introspection: None,
        }
    }
}

impl IntrospectionConfig {
    fn compile(&self, internal: bool) -> Result<Introspection, String> {
        let endpoint = self
            .endpoint
            .as_deref()
            .map(|u| checked_url(u, internal, "introspection.endpoint"))
            .transpose()?;
        if self.client_id.is_empty() {
            return Err("introspection.client_id must not be empty".into());
        }
        if self.client_secret.is_tenant() {
            return Err(
                "introspection.client_secret: use env:NAME or file:PATH (a tenant: secret needs a caller, and there is none yet)"
                    .into(),
            );
        }
        let auth_method = match self.auth_method.as_str() {
            "client_secret_basic" => ClientAuthMethod::Basic,
            "client_secret_post" => ClientAuthMethod::Post,
            other => {
                return Err(format!(
                    "introspection.auth_method: {other:?} is neither \"client_secret_basic\" nor \"client_secret_post\""
                ));
            }
        };
        if self.cache_for > MAX_INTROSPECTION_CACHE {
            return Err(format!(
                "introspection.cache_for: at most {}s",
                MAX_INTROSPECTION_CACHE.as_secs()
            ));
        }
        if self.max_concurrent == 0 {
            return Err("introspection.max_concurrent must be positive".into());
        }
        Ok(Introspection {
            endpoint,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            auth_method,
            cache_for: self.cache_for,
            max_concurrent: self.max_concurrent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> IssuerConfig {
        toml::from_str(toml_text).unwrap()
    }

    const RESOURCE: &str = "https://mcp.example.com/mcp";

    #[test]
    fn the_documented_shape_parses_with_safe_defaults() {
        let issuer = parse(
            r#"
            issuer = "https://login.example.com/realms/acme"
            audiences = ["https://mcp.example.com/mcp"]
            roles_claim = "realm_access.roles"
            role_map = { "mcp-readers" = "reader", "mcp-ops" = "executor" }
            "#,
        )
        .compile(RESOURCE)
        .unwrap();
        assert_eq!(issuer.token_type, TokenType::AccessTokenJwt);
        assert_eq!(issuer.algorithms.len(), 4);
        assert_eq!(issuer.tenant, TenantSource::Default);
        assert_eq!(issuer.role_map["mcp-ops"], "executor");
        assert!(!issuer.internal);
        let defaulted = parse(r#"issuer = "https://idp.example.com""#)
            .compile(RESOURCE)
            .unwrap();
        assert_eq!(defaulted.audiences, vec![RESOURCE.to_string()]);
        assert_eq!(defaulted.agent_claims, ["azp", "client_id", "appid"]);
    }

    #[test]
    fn bad_entries_are_refused_naming_the_field() {
        let cases = [
            (r#"issuer = "http://idp.example.com""#, "https"),
            (
                r#"issuer = "https://user:pw@idp.example.com""#,
                "user information",
            ),
            (r#"issuer = "ftp://idp.example.com""#, "scheme"),
            (
                "issuer = \"https://idp.example.com\"\nalgorithms = [\"HS256\"]",
                "HS256",
            ),
            (
                "issuer = \"https://idp.example.com\"\nalgorithms = [\"none\"]",
                "none",
            ),
            (
                "issuer = \"https://idp.example.com\"\ntoken_type = \"id\"",
                "token_type",
            ),
            (
                "issuer = \"https://idp.example.com\"\nleeway = \"5m\"",
                "leeway",
            ),
            (
                "issuer = \"https://idp.example.com\"\ntenant_claim = \"t\"",
                "tenant_claim needs tenants",
            ),
            (
                "issuer = \"https://idp.example.com\"\ntenants = [\"a\"]",
                "needs tenant_claim",
            ),
            (
                "issuer = \"https://idp.example.com\"\ntenant = \"a\"\ntenant_claim = \"t\"",
                "exclude",
            ),
            (
                "issuer = \"https://idp.example.com\"\njwks_uri = \"http://idp.example.com/keys\"",
                "jwks_uri",
            ),
            (
                "issuer = \"https://idp.example.com\"\nintrospection = { client_id = \"gh\", client_secret = \"env:S\", endpoint = \"http://idp.example.com/i\" }",
                "introspection.endpoint",
            ),
            (
                "issuer = \"https://idp.example.com\"\nintrospection = { client_id = \"gh\", client_secret = \"tenant:x\" }",
                "introspection.client_secret",
            ),
            (
                "issuer = \"https://idp.example.com\"\nintrospection = { client_id = \"gh\", client_secret = \"env:S\", cache_for = \"1h\" }",
                "cache_for",
            ),
            (
                "issuer = \"https://idp.example.com\"\nintrospection = { client_id = \"gh\", client_secret = \"env:S\", auth_method = \"none\" }",
                "auth_method",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).compile(RESOURCE).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn an_internal_issuer_may_use_http() {
        let issuer = parse("issuer = \"http://127.0.0.1:8080/realms/acme\"\ninternal = true")
            .compile(RESOURCE)
            .unwrap();
        assert!(issuer.internal);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let result: Result<IssuerConfig, _> =
            toml::from_str("issuer = \"https://idp.example.com\"\naudience = \"x\"");
        assert!(result.is_err());
    }
}
