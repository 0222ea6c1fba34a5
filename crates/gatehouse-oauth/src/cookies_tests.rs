use super::*;

fn policy(url: &str) -> CookiePolicy {
    CookiePolicy::for_public_url(&url::Url::parse(url).unwrap())
}

fn cookies(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
    }
    headers
}

#[test]
fn secure_unless_plain_http_on_loopback() {
    for url in [
        "https://gatehouse.example.com",
        "https://localhost:8443",
        "https://127.0.0.1",
        "http://gatehouse.example.com",
        "http://192.168.1.10:8080",
        "http://[::2]:8080",
        "http://localhost.evil.example",
        "http://0.0.0.0:8080",
    ] {
        assert!(policy(url).is_secure(), "{url}");
    }
    for url in [
        "http://localhost:8080",
        "http://LOCALHOST:8080/",
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://[::1]:8080",
    ] {
        assert!(!policy(url).is_secure(), "{url}");
    }
}

#[test]
fn secure_mode_cookies() {
    let p = policy("https://gatehouse.example.com/mcp");
    assert_eq!(p.session_cookie_name(), "__Host-gh_session");
    assert_eq!(p.csrf_cookie_name(), "__Host-gh_csrf");
    assert_eq!(
        p.set_session("abc_-123", 3600).unwrap(),
        "__Host-gh_session=abc_-123; Path=/; HttpOnly; SameSite=Lax; Max-Age=3600; Secure"
    );
    assert_eq!(
        p.clear_session(),
        "__Host-gh_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
    );
    assert_eq!(
        p.set_csrf("tok").unwrap(),
        "__Host-gh_csrf=tok; Path=/; HttpOnly; SameSite=Strict; Secure"
    );
    assert_eq!(
        p.clear_csrf(),
        "__Host-gh_csrf=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
    );
    for v in [
        p.set_session("x", 1).unwrap(),
        p.set_csrf("x").unwrap(),
        p.clear_session(),
    ] {
        assert!(!v.to_str().unwrap().contains("Domain"));
    }
}

#[test]
fn loopback_dev_mode_cookies() {
    let p = policy("http://127.0.0.1:8080");
    assert_eq!(p.session_cookie_name(), "gh_session");
    assert_eq!(p.csrf_cookie_name(), "gh_csrf");
    assert_eq!(
        p.set_session("abc", 60).unwrap(),
        "gh_session=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
    );
    assert_eq!(
        p.clear_session(),
        "gh_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
    );
    assert_eq!(
        p.set_csrf("tok").unwrap(),
        "gh_csrf=tok; Path=/; HttpOnly; SameSite=Strict"
    );
}

/// The binding of a sign-in at an identity provider must come back with
/// the provider's top-level redirect from its own site: `Lax`, never
/// `Strict` (which the CSRF cookie is), and short-lived.
#[test]
fn the_federated_sign_in_binding_is_lax_and_short_lived() {
    let p = policy("https://gatehouse.example.com/mcp");
    assert_eq!(
        p.set_federated("b1").unwrap(),
        "__Host-gh_federated=b1; Path=/; HttpOnly; SameSite=Lax; Max-Age=600; Secure"
    );
    assert_eq!(
        p.clear_federated(),
        "__Host-gh_federated=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0; Secure"
    );
    let dev = policy("http://127.0.0.1:8080");
    assert_eq!(
        dev.set_federated("b1").unwrap(),
        "gh_federated=b1; Path=/; HttpOnly; SameSite=Lax; Max-Age=600"
    );
}

#[test]
fn values_cannot_inject_attributes() {
    let p = policy("https://gatehouse.example.com");
    for bad in [
        "a;Domain=evil",
        "a b",
        "a,b",
        "\"a\"",
        "a\\b",
        "é",
        "a\r\nb",
    ] {
        assert_eq!(p.set_session(bad, 1), Err(CookieError), "{bad:?}");
        assert_eq!(p.set_csrf(bad), Err(CookieError), "{bad:?}");
    }
    assert!(p.set_session("", 1).is_ok());
}

#[test]
fn read_cookie_across_headers() {
    let h = cookies(&["a=1; gh_csrf=tok", "__Host-gh_session=sess ; other=x"]);
    assert_eq!(read_cookie(&h, "gh_csrf").as_deref(), Some("tok"));
    assert_eq!(
        read_cookie(&h, "__Host-gh_session").as_deref(),
        Some("sess")
    );
    assert_eq!(read_cookie(&h, "gh_session"), None);
    assert_eq!(read_cookie(&h, "missing"), None);
    assert_eq!(read_cookie(&HeaderMap::new(), "a"), None);
    // Values may contain '='.
    let h = cookies(&["t=YWJj=="]);
    assert_eq!(read_cookie(&h, "t").as_deref(), Some("YWJj=="));
    // An empty value is a value.
    let h = cookies(&["t="]);
    assert_eq!(read_cookie(&h, "t").as_deref(), Some(""));
}

#[test]
fn duplicate_names_are_refused() {
    let name = "__Host-gh_session";
    let same_header = cookies(&["__Host-gh_session=planted; __Host-gh_session=ours"]);
    assert_eq!(read_cookie(&same_header, name), None);
    let two_headers = cookies(&["__Host-gh_session=planted", "x=1; __Host-gh_session=ours"]);
    assert_eq!(read_cookie(&two_headers, name), None);
    // Even with the same value twice: the request is not what we sent.
    let twice = cookies(&["gh_csrf=a; gh_csrf=a"]);
    assert_eq!(read_cookie(&twice, "gh_csrf"), None);
    // Names are case-sensitive, so a differently-cased cookie is not a duplicate.
    let cased = cookies(&["gh_csrf=a; GH_CSRF=b"]);
    assert_eq!(read_cookie(&cased, "gh_csrf").as_deref(), Some("a"));
}

#[test]
fn malformed_cookie_headers() {
    let h = cookies(&[";;; noequals ; gh_csrf=tok;"]);
    assert_eq!(read_cookie(&h, "gh_csrf").as_deref(), Some("tok"));
    let mut h = HeaderMap::new();
    h.append(
        header::COOKIE,
        HeaderValue::from_bytes(b"gh_csrf=\xff\xfe").unwrap(),
    );
    assert_eq!(read_cookie(&h, "gh_csrf"), None);
    // A non-UTF-8 duplicate still counts as a duplicate.
    h.append(header::COOKIE, HeaderValue::from_static("gh_csrf=ok"));
    assert_eq!(read_cookie(&h, "gh_csrf"), None);
}
