//! One request to an identity provider (a GET of its metadata or key set,
//! a POST to its introspection endpoint), guarded: no redirects, no
//! proxy, a deadline, a size cap, JSON only, and (unless the issuer is
//! marked internal) every address the host resolves to must be public,
//! with the connection pinned to those addresses so a second lookup cannot
//! swap in another (DNS rebinding).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gatehouse_core::is_public;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use url::{Host, Url};

/// Largest document read; a key set is a few kilobytes.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("the host could not be resolved")]
    Resolve,
    #[error("the host resolves to a non-public address")]
    NonPublicAddress,
    #[error("the request failed: {0}")]
    Http(String),
    #[error("the answer was HTTP {0}")]
    Status(u16),
    #[error("the answer is not JSON")]
    NotJson,
    #[error("the answer is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
}

/// A fetched document and how long its server says it may be cached.
pub struct Fetched {
    pub body: Vec<u8>,
    pub max_age: Option<Duration>,
}

async fn addresses(url: &Url, internal: bool) -> Result<Vec<SocketAddr>, FetchError> {
    let port = url.port_or_known_default().ok_or(FetchError::Resolve)?;
    let found: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(Host::Domain(domain)) => tokio::net::lookup_host((domain, port))
            .await
            .map_err(|_| FetchError::Resolve)?
            .collect(),
        None => return Err(FetchError::Resolve),
    };
    if found.is_empty() {
        return Err(FetchError::Resolve);
    }
    let acceptable = |ip: IpAddr| internal || is_public(ip);
    if let Some(blocked) = found.iter().find(|a| !acceptable(a.ip())) {
        // The address goes to the operator's log only.
        tracing::warn!(url = %url, address = %blocked.ip(),
            "identity provider host resolves to a non-public address; mark the issuer internal = true if that is intended");
        return Err(FetchError::NonPublicAddress);
    }
    Ok(found)
}

/// Whether a `Content-Type` is JSON: `application/json` or any
/// `application/…+json` (`jwk-set+json`, `problem+json`…).
pub fn is_json(value: Option<&http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `max-age` from `Cache-Control`; `Some(0)` for `no-store` / `no-cache`.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let value = value.to_str().ok()?;
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(seconds) = directive.strip_prefix("max-age=")
                && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
            {
                age = Some(Duration::from_secs(seconds));
            }
        }
    }
    age
}

/// A client for one request to `url`: no redirects, no proxy, the
/// deadline, and the connection pinned to the checked addresses.
async fn guarded_client(
    url: &Url,
    internal: bool,
    timeout: Duration,
) -> Result<reqwest::Client, FetchError> {
    let addrs = addresses(url, internal).await?;
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
    if let Some(Host::Domain(domain)) = url.host() {
        builder = builder.resolve_to_addrs(domain, &addrs);
    }
    builder
        .build()
        .map_err(|e| FetchError::Http(e.without_url().to_string()))
}

/// The answer's JSON body, if the status is 200 and it fits the cap.
async fn read_json(mut response: reqwest::Response) -> Result<Fetched, FetchError> {
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    if !is_json(response.headers().get(CONTENT_TYPE)) {
        return Err(FetchError::NotJson);
    }
    let max_age = max_age(response.headers());
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| FetchError::Http(e.without_url().to_string()))?
    {
        if chunk.len() > MAX_DOCUMENT_BYTES.saturating_sub(body.len()) {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { body, max_age })
}

/// GETs `url` as JSON.
pub async fn fetch_json(
    url: &Url,
    internal: bool,
    timeout: Duration,
) -> Result<Fetched, FetchError> {
    get_json(url, internal, timeout, None).await
}

/// GETs `url` as JSON, with an `Authorization` header (never logged).
pub async fn get_json(
    url: &Url,
    internal: bool,
    timeout: Duration,
    authorization: Option<&str>,
) -> Result<Fetched, FetchError> {
    let client = guarded_client(url, internal, timeout).await?;
    let request = client.get(url.clone()).header(ACCEPT, "application/json");
    send(request, authorization).await
}

/// POSTs an `application/x-www-form-urlencoded` body to `url` and reads a
/// JSON answer. `authorization` is a complete header value (it may hold a
/// secret: it is never logged, and errors never include it).
pub async fn post_form_json(
    url: &Url,
    internal: bool,
    timeout: Duration,
    form: &[(&str, &str)],
    authorization: Option<&str>,
) -> Result<Fetched, FetchError> {
    let client = guarded_client(url, internal, timeout).await?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let request = client
        .post(url.clone())
        .header(ACCEPT, "application/json")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body);
    send(request, authorization).await
}

/// Sends `request` (with `authorization`, marked sensitive so no log shows
/// it) and reads its JSON answer.
async fn send(
    mut request: reqwest::RequestBuilder,
    authorization: Option<&str>,
) -> Result<Fetched, FetchError> {
    if let Some(value) = authorization {
        let mut value = http::HeaderValue::from_str(value)
            .map_err(|_| FetchError::Http("invalid authorization header".into()))?;
        value.set_sensitive(true);
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
    read_json(response).await
}

/// HTTP Basic client authentication as OAuth defines it (RFC 6749
/// §2.3.1): the id and secret form-encoded before they are joined.
pub fn basic_authorization(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let encode = |value: &str| -> String {
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
    };
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for v in values {
            map.append(CACHE_CONTROL, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn cache_control_is_read() {
        assert_eq!(
            max_age(&headers(&["public, max-age=600"])),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age(&headers(&["no-store"])), Some(Duration::ZERO));
        assert_eq!(
            max_age(&headers(&["max-age=5", "no-cache"])),
            Some(Duration::ZERO)
        );
        assert_eq!(max_age(&headers(&[])), None);
        assert_eq!(max_age(&headers(&["max-age=soon"])), None);
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        // "gh:client/1" and "s3cret+/" encoded, then joined and base64'd.
        assert_eq!(
            basic_authorization("gh:client/1", "s3cret+/"),
            "Basic Z2glM0FjbGllbnQlMkYxOnMzY3JldCUyQiUyRg=="
        );
    }

    #[test]
    fn only_json_answers_are_read() {
        let v = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert!(is_json(Some(&v("application/json; charset=utf-8"))));
        assert!(is_json(Some(&v("application/jwk-set+json"))));
        assert!(!is_json(Some(&v("text/html"))));
        assert!(!is_json(None));
    }

    #[tokio::test]
    async fn a_public_issuer_on_a_private_address_is_not_fetched() {
        let url = Url::parse("http://127.0.0.1:9/keys").unwrap();
        let error = fetch_json(&url, false, Duration::from_secs(1)).await.err();
        assert_eq!(error, Some(FetchError::NonPublicAddress));
    }
}
