//! Whether a URL names this machine: the rule every "plain http only on
//! loopback" check uses (the webhook, an upstream's authorization server,
//! cookies' `Secure`, the cleartext warnings).

/// True when the URL's host is `localhost` or a loopback address.
pub fn is_loopback_url(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_is_loopback() {
        let loopback = |u: &str| is_loopback_url(&url::Url::parse(u).unwrap());
        for here in [
            "http://localhost:8080/x",
            "http://LOCALHOST/",
            "http://127.0.0.1/",
            "http://127.9.9.9/",
            "http://[::1]:9/",
        ] {
            assert!(loopback(here), "{here}");
        }
        for there in [
            "http://localhost.example/",
            "http://10.0.0.1/",
            "http://[::2]/",
            "mailto:a@localhost",
        ] {
            assert!(!loopback(there), "{there}");
        }
    }
}
