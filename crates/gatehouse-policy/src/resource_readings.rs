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

/// Whether `uri` holds no NUL (`%00`) and no control character: no server
/// reads those as written (a NUL ends a C string, so `x%00.txt` may open
/// `x`), and no client needs them. Such a URI is refused, not decided.
pub(crate) fn is_canonical(uri: &str) -> bool {
    !uri.chars().any(char::is_control) && !uri.to_ascii_lowercase().contains("%00")
}

/// Where a URI's authority and path are: after `scheme:`, up to its query
/// or fragment. Text without a scheme is all path.
fn hier_range(uri: &str) -> (usize, usize) {
    let start = scheme_len(uri);
    let end = uri[start..]
        .find(['?', '#'])
        .map_or(uri.len(), |end| start + end);
    (start, end)
}

/// The length of `scheme:` at the start of `uri` (0 without one).
fn scheme_len(uri: &str) -> usize {
    match uri.split_once(':') {
        Some((scheme, _))
            if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            scheme.len() + 1
        }
        _ => 0,
    }
}

/// Where the path of a URI is: after `scheme:` and a `//authority`, up to
/// its query or fragment. Text without a scheme is all path.
fn path_range(uri: &str) -> (usize, usize) {
    let mut start = scheme_len(uri);
    if uri[start..].starts_with("//") {
        let authority = start + 2;
        start = uri[authority..]
            .find(['/', '?', '#'])
            .map_or(uri.len(), |end| authority + end);
    }
    let end = uri[start..]
        .find(['?', '#'])
        .map_or(uri.len(), |end| start + end);
    (start, end)
}

/// `uri` with the text in `range` replaced by `change(text)`, if that
/// changes it.
fn with_part(
    uri: &str,
    (start, end): (usize, usize),
    change: impl Fn(&str) -> String,
) -> Option<String> {
    let path = &uri[start..end];
    let changed = change(path);
    (changed != path).then(|| format!("{}{changed}{}", &uri[..start], &uri[end..]))
}

/// The authority and path with escaped slashes and backslashes, and
/// backslashes, read as separators: decoders (`unquote`,
/// `decodeURIComponent`) turn `hr%2Fx` into `hr/x` (and a template
/// `file://{path}` hands its server `%2Fsrv%2Fhr` to decode), and Windows
/// and WHATWG parsers read `\` as `/`.
fn with_separators_decoded(uri: &str) -> Option<String> {
    with_part(uri, hier_range(uri), |path| {
        let mut out = String::with_capacity(path.len());
        let mut rest = path;
        while let Some(c) = rest.chars().next() {
            let escape = rest.get(..3).map(str::to_ascii_lowercase);
            if matches!(escape.as_deref(), Some("%2f" | "%5c")) {
                out.push('/');
                rest = &rest[3..];
            } else {
                out.push(if c == '\\' { '/' } else { c });
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    })
}

/// The path with empty segments dropped and dot segments resolved, as a
/// file system opens it: `/srv//hr/./x` and `/srv/public/../hr/x` are
/// `/srv/hr/x`.
fn with_segments_resolved(uri: &str) -> Option<String> {
    with_part(uri, path_range(uri), |path| {
        let absolute = path.starts_with('/');
        let folder = path.len() > 1 && path.ends_with('/');
        let mut kept: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    kept.pop();
                }
                other => kept.push(other),
            }
        }
        let mut out = String::with_capacity(path.len());
        if absolute {
            out.push('/');
        }
        out.push_str(&kept.join("/"));
        if folder && !kept.is_empty() {
            out.push('/');
        }
        out
    })
}

/// Every way of reading a URI below, in the order they are applied.
const STEPS: [fn(&str) -> Option<String>; 5] = [
    as_url,
    without_query_or_fragment,
    with_plain_characters_decoded,
    with_separators_decoded,
    with_segments_resolved,
];

/// At most this many readings are tried (the transformations below reach a
/// fixed point in a few steps; this only bounds a pathological URI).
const MAX_READINGS: usize = 16;

/// `uri` first, then the reading every spelling of it comes to
/// ([`canonical`], so the bound never leaves it out), then every other
/// distinct reading of it.
pub(crate) fn readings(uri: &str) -> Vec<String> {
    let mut readings = vec![uri.to_string()];
    let last = canonical(uri);
    if last != uri {
        readings.push(last);
    }
    let mut next = 0;
    while next < readings.len() && readings.len() < MAX_READINGS {
        let reading = readings[next].clone();
        next += 1;
        for other in STEPS.iter().filter_map(|step| step(&reading)) {
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
        for step in STEPS {
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
        // `%2F` is a slash inside a segment to some servers and a separator
        // to others (once decoded): both are readings.
        assert_eq!(
            readings("crm://contacts/a%2Fb"),
            ["crm://contacts/a%2Fb", "crm://contacts/a/b"]
        );
        // A malformed or non-ASCII escape is left alone.
        assert!(!has("x://a%zz", "x://a"));
        assert_eq!(with_plain_characters_decoded("x://%C3%A9"), None);
    }

    /// A file server opens `/srv//hr/x`, `/srv/hr%2Fx` (once decoded) and
    /// `/srv/public/../hr/x` as `/srv/hr/x`, which an entry for
    /// `file:///srv/hr/{+rest}` must govern.
    #[test]
    fn a_uri_is_also_read_as_a_file_system_opens_it() {
        for uri in [
            "file:///srv//hr/salaries.csv",
            "file:////srv/hr/salaries.csv",
            "file:///srv/hr%2Fsalaries.csv",
            "file:///srv/hr%2fsalaries.csv",
            "file:///srv/public/..%2Fhr/salaries.csv",
            "file:///srv/public/%2e%2e/hr/salaries.csv",
            "file:///srv/public/../hr/salaries.csv",
            "file:///srv/./hr/salaries.csv",
            "file:///srv/hr\\salaries.csv",
            "file:///srv/hr%5Csalaries.csv",
            "file:///srv/hr/salaries.csv?x=1",
            // Escaped in the authority, as a template `file://{path}`
            // expands it.
            "file://%2Fsrv%2Fhr%2Fsalaries.csv",
        ] {
            assert!(
                has(uri, "file:///srv/hr/salaries.csv"),
                "{uri}: {:?}",
                readings(uri)
            );
            assert_eq!(canonical(uri), "file:///srv/hr/salaries.csv", "{uri}");
        }
        // The query and the authority are not the path.
        assert_eq!(
            readings("crm://contacts/ceo?x=a//b%2Fc")[..2],
            ["crm://contacts/ceo?x=a//b%2Fc", "crm://contacts/ceo"]
        );
        assert!(has("crm://contacts%2Fceo", "crm://contacts/ceo"));
        // Opaque paths and drive letters read as they are.
        assert_eq!(readings("urn:isbn:0451450523"), ["urn:isbn:0451450523"]);
        assert_eq!(readings("file:///C:/x"), ["file:///C:/x"]);
    }

    #[test]
    fn only_a_nul_or_a_control_character_is_refused() {
        for uri in ["file:///srv/hr/x%00.txt", "memo://a/b\u{0}", "memo://a\nb"] {
            assert!(!is_canonical(uri), "{uri:?}");
        }
        for uri in [
            "file:///srv//hr/x",
            "repo://o/r/refs/heads/feature%2Flogin/contents",
            "crm://contacts/ceo?x=a%2Fb",
            "https://web.archive.org/web/2024/https://x/",
        ] {
            assert!(is_canonical(uri), "{uri}");
        }
    }

    #[test]
    fn readings_are_bounded() {
        let uri = format!("x://{}", "%61?".repeat(100));
        assert!(readings(&uri).len() <= MAX_READINGS);
    }
}
