//! `web_fetch`: one GET to an allowlisted host, with the SSRF guards in
//! front of it. DNS is resolved here, every answer is vetted, and the HTTP
//! client is pinned to the vetted addresses so a second lookup (DNS
//! rebinding) cannot swap in another one.

use std::net::SocketAddr;
use std::time::Duration;

use gatehouse_core::is_public;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use serde_json::json;
use url::{Host, Url};

use crate::error::ToolError;
use crate::{ToolOutput, ToolsConfig};

pub(crate) const BODY_LIMIT: usize = 256 * 1024;
/// Fetches in flight at once, for every caller together. Each holds a
/// socket (a descriptor out of the process's limit, which the database and
/// the audit log need too) for up to `TIMEOUT`, and its body a few times
/// over: without a bound, many calls to a host that holds connections open
/// (or serves large bodies) would take the server's memory and descriptors.
/// Past it a call fails at once ("busy").
pub(crate) const CONCURRENCY: usize = 16;
const MAX_URL_LEN: usize = 2048;
const TIMEOUT: Duration = Duration::from_secs(10);
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn fetch(config: &ToolsConfig, raw: &str) -> Result<ToolOutput, ToolError> {
    if config.web_fetch_allowlist.is_empty() {
        return Err(ToolError::refused(
            "web_fetch is switched off because no host is allowlisted; \
             the operator can add hosts to `tools.web_fetch_allowlist`",
        ));
    }
    let url = parse(raw)?;
    let Some(host) = url.host() else {
        return Err(ToolError::invalid("'url' has no host"));
    };
    let host_name = normalize_host(&host.to_string());
    if !config
        .web_fetch_allowlist
        .iter()
        .any(|allowed| normalize_host(allowed) == host_name)
    {
        return Err(ToolError::refused(format!(
            "host '{host_name}' is not allowlisted; the operator can add it to `tools.web_fetch_allowlist`"
        )));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ToolError::invalid("'url' has no port"))?;
    let addrs = resolve(&host, port).await?;
    if !config.web_fetch_allow_private
        && let Some(blocked) = addrs.iter().find(|a| !is_public(a.ip()))
    {
        // The address goes to the operator's log only: telling the caller
        // what an internal name resolves to would help map the network.
        tracing::warn!(host = %host_name, address = %blocked.ip(), "web_fetch refused a non-public address");
        return Err(ToolError::refused(format!(
            "host '{host_name}' resolves to a loopback, private, link-local or otherwise non-public address"
        )));
    }

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        // A proxy would do its own DNS lookup and defeat the pinning below.
        .no_proxy()
        .user_agent(concat!("gatehouse-web-fetch/", env!("CARGO_PKG_VERSION")));
    if let Host::Domain(domain) = &host {
        builder = builder.resolve_to_addrs(domain, &addrs);
    }
    let client = builder.build().map_err(|e| http_failure(&e))?;

    let mut response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| http_failure(&e))?;
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header(CONTENT_TYPE);
    let location = status.is_redirection().then(|| header(LOCATION)).flatten();

    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| http_failure(&e))? {
        let room = BODY_LIMIT - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    let body = String::from_utf8_lossy(&body).into_owned();

    let mut text = format!("HTTP {status}\n");
    if let Some(ct) = &content_type {
        text.push_str(&format!("content-type: {ct}\n"));
    }
    if status.is_redirection() {
        text.push_str(&format!(
            "location: {}\n(redirect not followed)\n",
            location.as_deref().unwrap_or("(none)")
        ));
    }
    text.push('\n');
    text.push_str(&body);
    if truncated {
        text.push_str(&format!("\n[body truncated at {BODY_LIMIT} bytes]"));
    }
    Ok(ToolOutput {
        text,
        structured: Some(json!({
            "url": url.as_str(),
            "status": status.as_u16(),
            "content_type": content_type,
            "location": location,
            "redirect_followed": false,
            "body": body,
            "truncated": truncated,
        })),
    })
}

fn parse(raw: &str) -> Result<Url, ToolError> {
    if raw.len() > MAX_URL_LEN {
        return Err(ToolError::invalid(format!(
            "'url' is longer than {MAX_URL_LEN} bytes"
        )));
    }
    let url = Url::parse(raw)
        .map_err(|e| ToolError::invalid(format!("'url' is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ToolError::refused(format!(
            "scheme '{}' is not allowed; only http and https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ToolError::refused(
            "URLs with a user name or password are not allowed",
        ));
    }
    Ok(url)
}

/// Lowercase, no IPv6 brackets, no trailing root dot: the form both the
/// allowlist entries and the requested host are compared in.
fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

async fn resolve(host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, ToolError> {
    let addrs: Vec<SocketAddr> = match host {
        Host::Ipv4(ip) => vec![SocketAddr::new((*ip).into(), port)],
        Host::Ipv6(ip) => vec![SocketAddr::new((*ip).into(), port)],
        Host::Domain(domain) => {
            let lookup = tokio::net::lookup_host((*domain, port));
            match tokio::time::timeout(DNS_TIMEOUT, lookup).await {
                Ok(Ok(found)) => found.collect(),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, domain, "web_fetch lookup failed");
                    return Err(ToolError::failed(format!(
                        "could not resolve host '{domain}'"
                    )));
                }
                Err(_) => {
                    return Err(ToolError::failed(format!(
                        "resolving host '{domain}' timed out"
                    )));
                }
            }
        }
    };
    if addrs.is_empty() {
        return Err(ToolError::failed("the host has no addresses"));
    }
    Ok(addrs)
}

fn http_failure(err: &reqwest::Error) -> ToolError {
    tracing::debug!(error = %err, "web_fetch request failed");
    if err.is_timeout() {
        ToolError::failed(format!(
            "the request timed out after {} s",
            TIMEOUT.as_secs()
        ))
    } else if err.is_connect() {
        ToolError::failed("could not connect to the host")
    } else if err.is_body() || err.is_decode() {
        ToolError::failed("the response body could not be read")
    } else {
        ToolError::failed("the HTTP request failed")
    }
}

#[cfg(test)]
#[path = "web_tests.rs"]
mod tests;
