//! The ways an upstream may read a resource URI.
//!
//! The policy matches a URI as text, but the server behind the gateway may
//! read it otherwise: the official TypeScript SDK parses it as a WHATWG URL
//! (`new URL(uri)`: dot segments resolved, the scheme lowercased, a
//! special scheme's host lowercased and its default port dropped) before it
//! looks for the resource, and drops the query before it matches its
//! templates; other servers decode percent-escapes of plain characters.
//! So `crm://contacts/ceo?`, `crm://contacts/x/../ceo` and
//! `crm://contacts/%63eo` may all be served as `crm://contacts/ceo`, and a
//! `[resources."crm://contacts/ceo"]` entry that matched only the exact text
//! could be walked round with any of them. A resource request is therefore
//! decided for each reading of its URI, and must be allowed under all of
//! them (`Policy::authorize_target`).

/// At most this many readings are tried (the transformations below reach a
/// fixed point in a few steps; this only bounds a pathological URI).
const MAX_READINGS: usize = 16;

/// `uri` first, then every distinct reading of it.
pub(crate) fn readings(uri: &str) -> Vec<String> {
    let mut readings = vec![uri.to_string()];
    let mut next = 0;
    while next < readings.len() && readings.len() < MAX_READINGS {
        let reading = readings[next].clone();
        next += 1;
        for other in [
            as_url(&reading),
            without_query_or_fragment(&reading),
            with_plain_characters_decoded(&reading),
        ]
        .into_iter()
        .flatten()
        {
            if readings.len() < MAX_READINGS && !readings.contains(&other) {
                readings.push(other);
            }
        }
    }
    readings
}

/// The one reading every spelling of a URI comes to (parsed as a URL,
/// without query or fragment, plain characters decoded, until nothing
/// changes): what per-URI counters (rate limits) are kept under, so that
/// `crm://reports/export?1`, `?2` and `%65xport` all count as `export`.
pub(crate) fn canonical(uri: &str) -> String {
    let mut current = uri.to_string();
    for _ in 0..MAX_READINGS {
        let mut next = current.clone();
        for step in [
            as_url,
            without_query_or_fragment,
            with_plain_characters_decoded,
        ] {
            if let Some(changed) = step(&next) {
                next = changed;
            }
        }
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// The URI as a WHATWG URL parser writes it back.
fn as_url(uri: &str) -> Option<String> {
    url::Url::parse(uri).ok().map(String::from)
}

/// The URI up to its query or fragment.
fn without_query_or_fragment(uri: &str) -> Option<String> {
    uri.find(['?', '#']).map(|end| uri[..end].to_string())
}

/// The URI with each percent-escape of an unreserved character (RFC 3986:
/// letters, digits, `-._~`, which never need escaping) decoded.
fn with_plain_characters_decoded(uri: &str) -> Option<String> {
    let bytes = uri.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(decoded) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            && (decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(decoded);
            changed = true;
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII bytes were put in place of ASCII escapes: still UTF-8.
    changed.then(|| String::from_utf8(out).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(uri: &str, reading: &str) -> bool {
        readings(uri).iter().any(|r| r == reading)
    }

    #[test]
    fn a_plain_uri_has_one_reading() {
        assert_eq!(readings("crm://contacts/42"), ["crm://contacts/42"]);
        assert_eq!(readings("file:///srv/a.txt"), ["file:///srv/a.txt"]);
        assert_eq!(readings("not a uri"), ["not a uri"]);
    }

    #[test]
    fn every_way_round_an_exact_uri_is_a_reading() {
        for uri in [
            "crm://contacts/ceo?",
            "crm://contacts/ceo?x=1",
            "crm://contacts/ceo#top",
            "crm://contacts/x/../ceo",
            "crm://contacts/./ceo",
            "crm://contacts/x/%2e%2e/ceo",
            "crm://contacts/%63eo",
            "CRM://contacts/ceo",
            "crm://contacts/%63eo?",
        ] {
            assert!(has(uri, "crm://contacts/ceo"), "{uri}: {:?}", readings(uri));
            assert_eq!(readings(uri)[0], uri);
        }
        assert!(has("https://Example.COM:443/a", "https://example.com/a"));
    }

    #[test]
    fn reserved_escapes_stay_escaped() {
        // `%2F` is a slash inside a segment, not a separator.
        assert_eq!(readings("crm://contacts/a%2Fb"), ["crm://contacts/a%2Fb"]);
        // A malformed or non-ASCII escape is left alone.
        assert!(!has("x://a%zz", "x://a"));
        assert_eq!(with_plain_characters_decoded("x://%C3%A9"), None);
    }

    #[test]
    fn readings_are_bounded() {
        let uri = format!("x://{}", "%61?".repeat(100));
        assert!(readings(&uri).len() <= MAX_READINGS);
    }
}
