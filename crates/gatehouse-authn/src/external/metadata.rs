//! Discovery: the endpoints an issuer publishes in its OpenID configuration
//! (or, failing that, its RFC 8414 metadata). The document must name
//! exactly the configured issuer, and every endpoint must use https (http
//! only for an internal issuer).

use serde::Deserialize;
use url::Url;

use super::config::Issuer;
use super::fetch::{FetchError, fetch_json};

/// The endpoints Gatehouse uses, as the issuer publishes them.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub jwks_uri: Option<Url>,
    pub introspection_endpoint: Option<Url>,
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

fn endpoint(issuer: &Issuer, value: Option<String>, what: &str) -> Result<Option<Url>, FetchError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let url = Url::parse(&value).map_err(|_| FetchError::Http(format!("{what} is not a URL")))?;
    if url.scheme() != "https" && !(issuer.internal && url.scheme() == "http") {
        return Err(FetchError::Http(format!("{what} must use https")));
    }
    Ok(Some(url))
}

/// Fetches the issuer's metadata document and reads its endpoints.
pub async fn discover(issuer: &Issuer) -> Result<Endpoints, FetchError> {
    let base = Url::parse(&issuer.issuer).map_err(|_| FetchError::Resolve)?;
    let path = base.path().trim_end_matches('/');
    let mut oidc = base.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut rfc8414 = base.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut last = FetchError::Resolve;
    for url in [oidc, rfc8414] {
        match fetch_json(&url, issuer.internal, issuer.fetch_timeout).await {
            Ok(fetched) => {
                let Ok(document) = serde_json::from_slice::<Document>(&fetched.body) else {
                    last = FetchError::NotJson;
                    continue;
                };
                if document.issuer != issuer.issuer {
                    tracing::warn!(issuer = %issuer.issuer, named = %document.issuer,
                        "the provider's metadata names another issuer; ignored");
                    last = FetchError::Http("metadata names another issuer".into());
                    continue;
                }
                return Ok(Endpoints {
                    jwks_uri: endpoint(issuer, document.jwks_uri, "jwks_uri")?,
                    introspection_endpoint: endpoint(
                        issuer,
                        document.introspection_endpoint,
                        "introspection_endpoint",
                    )?,
                    authorization_endpoint: endpoint(
                        issuer,
                        document.authorization_endpoint,
                        "authorization_endpoint",
                    )?,
                    token_endpoint: endpoint(issuer, document.token_endpoint, "token_endpoint")?,
                    userinfo_endpoint: endpoint(
                        issuer,
                        document.userinfo_endpoint,
                        "userinfo_endpoint",
                    )?,
                });
            }
            Err(error) => last = error,
        }
    }
    Err(last)
}
