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

/// Whether every reading of `uri` is in the form servers read as written:
/// no empty path segment (`file:///srv//hr/x`), no dot segment, no escaped
/// slash, backslash or NUL, no backslash or control character. A file
/// server opens `/srv//hr/x` as `/srv/hr/x`, and decoders (`unquote`,
/// `decodeURIComponent`) turn `hr%2Fx` into `hr/x`, while the policy would
/// match neither against `[resources."file:///srv/hr/{+rest}"]`; so such a
/// URI is refused rather than decided. Clients ask for URIs as servers
/// list them, which are in this form.
pub(crate) fn is_canonical(uri: &str) -> bool {
    readings(uri)
        .iter()
        .all(|reading| reads_as_written(reading))
}

fn reads_as_written(uri: &str) -> bool {
    if uri.chars().any(|c| c == '\\' || c.is_control()) {
        return false;
    }
    let lower = uri.to_ascii_lowercase();
    if ["%2f", "%5c", "%00"].iter().any(|e| lower.contains(e)) {
        return false;
    }
    let path = uri_path(uri);
    // A leading slash starts the path and a trailing one names a folder;
    // an empty segment anywhere else is `//`.
    !path.contains("//") && !path.split('/').any(|s| s == "." || s == "..")
}

/// The path of a URI: after `scheme:` and a `//authority`, up to its query
/// or fragment. Text without a scheme is all path.
fn uri_path(uri: &str) -> &str {
    let rest = match uri.split_once(':') {
        Some((scheme, rest))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            rest
        }
        _ => uri,
    };
    let rest = match rest.strip_prefix("//") {
        Some(after) => after.find(['/', '?', '#']).map_or("", |end| &after[end..]),
        None => rest,
    };
    rest.find(['?', '#']).map_or(rest, |end| &rest[..end])
}

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
            file_path_lowercased(&reading),
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

/// A `file:` URI in lower case: on the file systems of macOS and Windows
/// (where `gatehouse stdio` runs on a desktop) `/srv/HR/x` is `/srv/hr/x`.
fn file_path_lowercased(uri: &str) -> Option<String> {
    let lower = uri.to_lowercase();
    (lower.starts_with("file:") && lower != uri).then_some(lower)
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
    fn a_uri_a_file_server_would_read_otherwise_is_not_canonical() {
        for uri in [
            "file:///srv//hr/salaries.csv",
            "file:////srv/hr/salaries.csv",
            "file:///srv/hr%2Fsalaries.csv",
            "file:///srv/hr%2fsalaries.csv",
            "file:///srv/public/..%2Fhr/x",
            "file:///srv/public/%2e%2e/hr/x",
            "file:///srv/public/../hr/x",
            "file:///srv/./hr/x",
            "file:///srv/hr\\x",
            "file:///srv/hr%5Cx",
            "file:///srv/hr/x%00.txt",
            "crm://contacts//ceo",
            "memo://a/b\u{0}",
        ] {
            assert!(!is_canonical(uri), "{uri}");
        }
        for uri in [
            "file:///srv/hr/salaries.csv",
            "file:///srv/hr/",
            "crm://contacts/ceo?x=a//b",
            "memo://notes/1#a/../b",
            "urn:isbn:0451450523",
            "https://example.com/a/b",
            "memo://x",
        ] {
            assert!(is_canonical(uri), "{uri}");
        }
    }

    #[test]
    fn a_file_uri_is_also_read_in_lower_case() {
        assert!(has("file:///srv/HR/x", "file:///srv/hr/x"));
        assert_eq!(readings("crm://contacts/CEO"), ["crm://contacts/CEO"]);
    }

    #[test]
    fn readings_are_bounded() {
        let uri = format!("x://{}", "%61?".repeat(100));
        assert!(readings(&uri).len() <= MAX_READINGS);
    }
}
