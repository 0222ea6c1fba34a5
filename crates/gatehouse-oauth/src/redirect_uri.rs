//! Redirect URIs: what a client may register and how an authorization
//! request's `redirect_uri` is compared with it (attack cases A1 and A12).
//!
//! Registration refuses every URI the WHATWG parser would rewrite. Comparison
//! is then plain string equality, so no two components (this module, the
//! browser, the client) can disagree about what a URI means: differentials
//! in case, percent-encoding, dot segments or default ports never reach
//! [`matches()`].

use std::net::Ipv6Addr;

use url::{Host, Url};

/// Longer URIs are refused: no legitimate callback needs more, and the value
/// ends up in storage, logs and `Location` headers.
pub const MAX_REDIRECT_URI_BYTES: usize = 2000;

/// Why a redirect URI was refused. Messages are fixed strings; only the
/// scheme (already restricted by URL syntax to `[a-z0-9+.-]`, and truncated)
/// is ever echoed, so an error page cannot be turned into a reflection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI is longer than {MAX_REDIRECT_URI_BYTES} bytes")]
    TooLong,
    #[error("redirect URI contains a wildcard")]
    Wildcard,
    #[error("redirect URI is not an absolute URL")]
    Unparseable,
    #[error("redirect URI scheme '{0}' is not allowed")]
    SchemeNotAllowed(String),
    #[error("redirect URI must not contain user information")]
    Userinfo,
    #[error("redirect URI must not contain a fragment")]
    Fragment,
    #[error("redirect URI is not in canonical form")]
    NotCanonical,
    #[error("redirect URI has no host")]
    MissingHost,
    #[error("http redirect URIs are allowed only for loopback hosts")]
    HttpNotLoopback,
}

/// Bounded so that an attacker-chosen scheme cannot fill an error message.
const MAX_ECHOED_SCHEME: usize = 32;

/// Validates a redirect URI a client registers (DCR, client metadata
/// documents, `gatehouse clients create`) and returns it parsed.
pub fn validate_registered(uri: &str) -> Result<Url, RedirectUriError> {
    if uri.len() > MAX_REDIRECT_URI_BYTES {
        return Err(RedirectUriError::TooLong);
    }
    // Checked on the raw text: the parser accepts `*` in hosts and paths,
    // and some authorization servers have treated it as a pattern.
    if uri.contains('*') {
        return Err(RedirectUriError::Wildcard);
    }
    let url = Url::parse(uri).map_err(|_| RedirectUriError::Unparseable)?;

    // Scheme first, so that `javascript:` and friends get the clearest error.
    let scheme = url.scheme();
    let private_use = scheme.contains('.');
    if !(scheme == "https" || scheme == "http" || private_use) {
        let shown: String = scheme.chars().take(MAX_ECHOED_SCHEME).collect();
        return Err(RedirectUriError::SchemeNotAllowed(shown));
    }
    // `https://good@evil` reads as `good` to a human and goes to `evil`.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectUriError::Userinfo);
    }
    // RFC 6749 §3.1.2: the authorization response must not carry a fragment
    // of the client's choosing; an empty `#` is refused too, for equality.
    if url.fragment().is_some() {
        return Err(RedirectUriError::Fragment);
    }
    if url.as_str() != uri {
        return Err(RedirectUriError::NotCanonical);
    }

    // The parser reports an empty authority (`com.example.app:///cb`) as no
    // host at all, so its presence is read from the text, which at this
    // point is exactly the serialisation.
    let has_authority = uri
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest.starts_with("//"));
    let empty_host = url.host_str().is_none_or(str::is_empty);
    // RFC 8252 §7.1 private-use URIs (`com.example.app:/cb`) may have no
    // authority; web schemes always have one after parsing.
    if empty_host && (has_authority || !private_use) {
        return Err(RedirectUriError::MissingHost);
    }
    // `com.example.app:cb` is an opaque path: RFC 8252 §7.1 asks for a
    // path beginning with `/`, and opaque paths compare badly elsewhere.
    if url.cannot_be_a_base() {
        return Err(RedirectUriError::NotCanonical);
    }
    if scheme == "http" && !is_loopback_literal(&url) {
        return Err(RedirectUriError::HttpNotLoopback);
    }
    Ok(url)
}

/// True when `presented` (an authorization request's `redirect_uri`) is
/// acceptable for the `registered` one.
///
/// Exact string equality, with one exception from RFC 8252 §7.3: native
/// apps listen on an ephemeral loopback port, so for an `http` loopback
/// registration the port may differ (or be absent at registration); scheme,
/// host, path and query must still be byte-equal.
pub fn matches(registered: &str, presented: &str) -> bool {
    let Ok(presented_url) = validate_registered(presented) else {
        return false;
    };
    if registered == presented {
        return true;
    }
    let Ok(registered_url) = validate_registered(registered) else {
        return false;
    };
    registered_url.scheme() == "http"
        && is_loopback_literal(&registered_url)
        && presented_url.scheme() == "http"
        && registered_url.host_str() == presented_url.host_str()
        && registered_url.path() == presented_url.path()
        && registered_url.query() == presented_url.query()
}

/// 127.0.0.0/8, `[::1]` or the name `localhost` (RFC 8252 §7.3 / §8.3).
/// Other spellings (`127.1`, `[0::1]`, `LOCALHOST`) never get here: the
/// parser rewrites them and [`validate_registered`] refuses rewritten URIs.
fn is_loopback_literal(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(addr)) => addr.is_loopback(),
        Some(Host::Ipv6(addr)) => addr == Ipv6Addr::LOCALHOST,
        Some(Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_registrations() {
        for uri in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://vscode.dev/redirect",
            "https://example.com/cb?tenant=a",
            "https://example.com:8443/cb",
            "https://192.0.2.10/cb",
            "http://127.0.0.1:33418/",
            "http://127.0.0.1/cb",
            "http://127.8.9.10:1234/cb",
            "http://[::1]:8080/callback",
            "http://localhost:3000/callback",
            "com.example.app:/oauth2redirect",
            "com.example.app://callback/path",
            "https://example.com/%7Ecb",
        ] {
            let url = validate_registered(uri);
            assert!(url.is_ok(), "{uri}: {url:?}");
        }
    }

    #[test]
    fn refused_registrations() {
        use RedirectUriError::*;
        let long = format!("https://example.com/{}", "a".repeat(MAX_REDIRECT_URI_BYTES));
        let cases: &[(&str, RedirectUriError)] = &[
            (&long, TooLong),
            ("javascript:alert(1)", SchemeNotAllowed("javascript".into())),
            ("JavaScript:alert(1)", SchemeNotAllowed("javascript".into())),
            (
                "data:text/html,<script>alert(1)</script>",
                SchemeNotAllowed("data".into()),
            ),
            ("file:///etc/passwd", SchemeNotAllowed("file".into())),
            ("vbscript:msgbox(1)", SchemeNotAllowed("vbscript".into())),
            ("about:blank", SchemeNotAllowed("about".into())),
            (
                "blob:https://example.com/uuid",
                SchemeNotAllowed("blob".into()),
            ),
            ("ftp://example.com/cb", SchemeNotAllowed("ftp".into())),
            ("myapp:/cb", SchemeNotAllowed("myapp".into())),
            ("https://good@evil.example/cb", Userinfo),
            ("https://good:pw@evil.example/cb", Userinfo),
            ("https://example.com/cb#frag", Fragment),
            ("https://example.com/cb#", Fragment),
            ("https://*.example.com/cb", Wildcard),
            ("https://example.com/*", Wildcard),
            ("http://evil.example/cb", HttpNotLoopback),
            ("http://10.0.0.1/cb", HttpNotLoopback),
            ("http://[::2]/cb", HttpNotLoopback),
            ("http://localhost.evil.example/cb", HttpNotLoopback),
            ("com.example.app:cb", NotCanonical),
            ("com.example.app:///cb", MissingHost),
            ("/relative/cb", Unparseable),
            ("", Unparseable),
            ("https://", Unparseable),
            // Everything the parser would rewrite.
            ("https://example.com", NotCanonical),
            ("HTTPS://example.com/cb", NotCanonical),
            ("https://EXAMPLE.com/cb", NotCanonical),
            ("https://example.com:443/cb", NotCanonical),
            ("https://example.com/a/../cb", NotCanonical),
            ("https://example.com/./cb", NotCanonical),
            ("https://ex%61mple.com/cb", NotCanonical),
            ("https:///example.com/cb", NotCanonical),
            ("https:example.com/cb", NotCanonical),
            ("https://example.com\\cb", NotCanonical),
            ("https://example.com/c b", NotCanonical),
            (" https://example.com/cb", NotCanonical),
            ("https://example.com/cb\n", NotCanonical),
            ("https://exa\tmple.com/cb", NotCanonical),
            ("http://127.1/cb", NotCanonical),
            ("http://LOCALHOST/cb", NotCanonical),
            ("http://[0:0:0:0:0:0:0:1]/cb", NotCanonical),
            ("http://0x7f000001/cb", NotCanonical),
        ];
        for (uri, want) in cases {
            assert_eq!(
                validate_registered(uri).as_ref().err(),
                Some(want),
                "{uri:?}"
            );
        }
    }

    #[test]
    fn errors_never_echo_more_than_a_bounded_scheme() {
        let scheme = format!("x{}", "a".repeat(100));
        let err = validate_registered(&format!("{scheme}:<script>secret")).unwrap_err();
        let text = err.to_string();
        assert!(
            !text.contains("script") && !text.contains("secret"),
            "{text}"
        );
        assert!(text.len() < 100, "{text}");
        let err = validate_registered("https://good:hunter2@evil.example/").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn matching_table() {
        let reg = "https://app.example.com/cb";
        let cases: &[(&str, &str, bool)] = &[
            (reg, reg, true),
            // A1: not registered, prefix, extra query, fragment, case, scheme,
            // userinfo, trailing slash, percent-encoding.
            (reg, "https://evil.example/cb", false),
            (reg, "https://app.example.com/cb/evil", false),
            (reg, "https://app.example.com/c", false),
            (reg, "https://app.example.com/cb/", false),
            (reg, "https://app.example.com/cb?x=1", false),
            (reg, "https://app.example.com/cb?", false),
            (reg, "https://app.example.com/cb#", false),
            (reg, "https://app.example.com/cb#x", false),
            (reg, "https://APP.example.com/cb", false),
            (reg, "https://app.example.com/CB", false),
            (reg, "http://app.example.com/cb", false),
            (reg, "https://app.example.com@evil.example/cb", false),
            (reg, "https://evil@app.example.com/cb", false),
            (reg, "https://app.example.com/%63b", false),
            (reg, "https://app.example.com/cb%2F..%2Fevil", false),
            (reg, "https://app.example.com/x/../cb", false),
            (reg, "https://app.example.com:443/cb", false),
            (reg, "https://app.example.com:8443/cb", false),
            (reg, "https://app.example.com.evil.example/cb", false),
            (
                "https://app.example.com/cb?a=1",
                "https://app.example.com/cb?a=1&b=2",
                false,
            ),
            (
                "https://app.example.com/cb?a=1",
                "https://app.example.com/cb",
                false,
            ),
            (
                "https://app.example.com/%7Ecb",
                "https://app.example.com/~cb",
                false,
            ),
            (
                "https://app.example.com/%7Ecb",
                "https://app.example.com/%7ecb",
                false,
            ),
            (
                "https://app.example.com/%7Ecb",
                "https://app.example.com/%7Ecb",
                true,
            ),
            // RFC 8252 §7.3: loopback port variance.
            ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb", true),
            ("http://127.0.0.1:33418/", "http://127.0.0.1:40000/", true),
            ("http://127.0.0.1:33418/", "http://127.0.0.1/", true),
            ("http://[::1]/cb", "http://[::1]:8080/cb", true),
            ("http://localhost/cb", "http://localhost:8080/cb", true),
            ("http://127.0.0.1/cb", "http://127.0.0.1:8080/cb/", false),
            ("http://127.0.0.1/cb", "http://127.0.0.1:8080/cb?x", false),
            ("http://127.0.0.1/cb", "http://127.0.0.1:8080/cb#", false),
            ("http://127.0.0.1/cb", "http://127.0.0.2:8080/cb", false),
            ("http://127.0.0.1/cb", "https://127.0.0.1:8080/cb", false),
            ("http://127.0.0.1/cb", "http://a@127.0.0.1:8080/cb", false),
            ("http://127.0.0.1/cb", "http://127.1:8080/cb", false),
            // localhost and 127.0.0.1 are not interchangeable.
            ("http://localhost/cb", "http://127.0.0.1/cb", false),
            ("http://127.0.0.1/cb", "http://localhost/cb", false),
            ("http://127.0.0.1/cb", "http://[::1]/cb", false),
            ("http://localhost/cb", "http://LOCALHOST:8080/cb", false),
            // Port variance is only for http loopback registrations.
            (
                "https://example.com/cb",
                "https://example.com:8443/cb",
                false,
            ),
            ("https://localhost/cb", "https://localhost:8443/cb", false),
            ("https://127.0.0.1/cb", "https://127.0.0.1:8443/cb", false),
            // Private-use schemes compare exactly.
            ("com.example.app:/cb", "com.example.app:/cb", true),
            ("com.example.app:/cb", "com.example.app:/cb/x", false),
            ("com.example.app:/cb", "COM.example.app:/cb", false),
        ];
        for (registered, presented, want) in cases {
            assert_eq!(
                matches(registered, presented),
                *want,
                "{registered} vs {presented}"
            );
        }
    }

    #[test]
    fn an_invalid_presented_uri_never_matches_even_itself() {
        for uri in [
            "javascript:alert(1)",
            "https://example.com/cb#",
            "http://evil.example/cb",
            "https://good@evil.example/cb",
            "https://*.example.com/cb",
            "https://example.com",
        ] {
            assert!(!matches(uri, uri), "{uri}");
        }
    }
}
