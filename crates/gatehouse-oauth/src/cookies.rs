//! Cookies of the browser login flow: the login session and the CSRF token.
//!
//! Behind a public https URL the names carry the `__Host-` prefix, which
//! browsers only accept with `Secure`, `Path=/` and no `Domain`: a sibling
//! subdomain or a plain-http page on the same host cannot plant or
//! overwrite them. A developer on `http://localhost` gets the same cookies
//! without prefix and `Secure`, since browsers would drop them otherwise.

use axum::http::{HeaderMap, HeaderValue, header};

const SESSION: &str = "gh_session";
const CSRF: &str = "gh_csrf";
const FEDERATED: &str = "gh_federated";

/// How long a sign-in at an identity provider may take (its pending
/// record lives as long).
pub const FEDERATED_COOKIE_SECS: u64 = 10 * 60;

/// A cookie value was refused: only the RFC 6265 cookie-octet characters
/// may appear, so that no value can add attributes or other cookies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cookie value contains characters not allowed in a cookie")]
pub struct CookieError;

/// How the cookies are named and flagged, decided once from the public URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookiePolicy {
    secure: bool,
}

/// RFC 6265 §4.1.1 cookie-octet; excludes `;`, `,`, spaces, quotes and
/// backslashes, so nothing can break out of the value.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

impl CookiePolicy {
    /// Secure (prefixed, `Secure`) unless the public URL is plain http on a
    /// loopback host. A plain-http URL on any other host stays secure: its
    /// cookies will not be set, and logins fail rather than travel in clear.
    pub fn for_public_url(url: &url::Url) -> CookiePolicy {
        CookiePolicy {
            secure: !(url.scheme() == "http" && gatehouse_core::is_loopback_url(url)),
        }
    }

    pub fn is_secure(&self) -> bool {
        self.secure
    }

    fn name(&self, base: &'static str) -> &'static str {
        match (self.secure, base) {
            (true, SESSION) => "__Host-gh_session",
            (true, FEDERATED) => "__Host-gh_federated",
            (true, _) => "__Host-gh_csrf",
            (false, SESSION) => SESSION,
            (false, FEDERATED) => FEDERATED,
            (false, _) => CSRF,
        }
    }

    pub fn session_cookie_name(&self) -> &'static str {
        self.name(SESSION)
    }

    pub fn csrf_cookie_name(&self) -> &'static str {
        self.name(CSRF)
    }

    pub fn federated_cookie_name(&self) -> &'static str {
        self.name(FEDERATED)
    }

    /// What binds a sign-in at an identity provider to the browser that
    /// started it. `Lax`, unlike the CSRF cookie: the provider's page sends
    /// the browser back with a top-level navigation from its own site,
    /// which carries no `Strict` cookie, so a sign-in bound to the CSRF
    /// cookie failed with every provider on another site.
    pub fn set_federated(&self, value: &str) -> Result<HeaderValue, CookieError> {
        self.build(
            self.federated_cookie_name(),
            value,
            Some(FEDERATED_COOKIE_SECS),
            "Lax",
        )
    }

    pub fn clear_federated(&self) -> HeaderValue {
        self.cleared(self.federated_cookie_name(), "Lax")
    }

    fn build(
        &self,
        name: &str,
        value: &str,
        max_age: Option<u64>,
        same_site: &str,
    ) -> Result<HeaderValue, CookieError> {
        if !value.bytes().all(is_cookie_octet) {
            return Err(CookieError);
        }
        let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}");
        if let Some(max_age) = max_age {
            cookie.push_str(&format!("; Max-Age={max_age}"));
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        HeaderValue::from_str(&cookie).map_err(|_| CookieError)
    }

    /// The login session. `Lax` so that it is sent when a client's
    /// top-level redirect brings the user to `/authorize`; the state-changing
    /// POSTs are guarded by the CSRF token, not by `SameSite`.
    pub fn set_session(&self, value: &str, max_age_secs: u64) -> Result<HeaderValue, CookieError> {
        self.build(self.session_cookie_name(), value, Some(max_age_secs), "Lax")
    }

    pub fn clear_session(&self) -> HeaderValue {
        self.cleared(self.session_cookie_name(), "Lax")
    }

    /// The CSRF token (double-submit: also in a hidden form field). `Strict`
    /// because it is only needed on our own forms; no `Max-Age`, so it
    /// ends with the browser session.
    pub fn set_csrf(&self, value: &str) -> Result<HeaderValue, CookieError> {
        self.build(self.csrf_cookie_name(), value, None, "Strict")
    }

    pub fn clear_csrf(&self) -> HeaderValue {
        self.cleared(self.csrf_cookie_name(), "Strict")
    }

    fn cleared(&self, name: &'static str, same_site: &'static str) -> HeaderValue {
        // The attributes must match the ones the cookie was set with, or a
        // `__Host-` cookie would not be replaced.
        let cookie = format!(
            "{name}=; Path=/; HttpOnly; SameSite={same_site}; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        );
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// The value of the cookie `name` across all `Cookie` headers. `None` when it
/// is absent, appears more than once (someone planted a second cookie of that
/// name, e.g. from a subdomain or with a longer path, hoping ours is shadowed)
/// or is not UTF-8.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found: Option<&[u8]> = None;
    for header in headers.get_all(header::COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => continue,
            };
            if key.trim_ascii() != name.as_bytes() {
                continue;
            }
            if found.is_some() {
                return None;
            }
            found = Some(value.trim_ascii());
        }
    }
    found.and_then(|value| std::str::from_utf8(value).ok().map(str::to_owned))
}

#[cfg(test)]
#[path = "cookies_tests.rs"]
mod tests;
