//! Whether a resource URI is one an RFC 6570 template names: a simple
//! `{expression}` stands for one or more characters other than `/`; one
//! whose expansion may hold a `/` (reserved `{+path}`, fragment `{#x}`,
//! path segments `{/seg}`, or any exploded `{list*}`) stands for one or
//! more characters of any kind; the rest is literal. Used to route a `resources/read` to the upstream whose
//! template names the URI, and to find the policy entry of that template.
//!
//! Both the template (an upstream's) and the URI (a caller's) are
//! untrusted, so the match runs in time linear in the URI per template
//! part, never by backtracking (adjacent expressions would make that
//! exponential), and only ever splits the URI at character boundaries.

/// One piece of a template.
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Literal(&'a str),
    /// An expression; `true` when its expansion may hold a `/`.
    Expression(bool),
}

/// Whether an expression's expansion may hold a `/` (RFC 6570 §3.2.3,
/// §3.2.4, §3.2.6, and explode modifiers): such an entry in the policy
/// governs the URIs below it, as the upstream and the SDKs read it.
fn spans_slashes(expression: &str) -> bool {
    expression.starts_with(['+', '#', '/']) || expression.contains('*')
}

/// The template's parts; `None` for a template with an unclosed `{`.
fn parts(template: &str) -> Option<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some((literal, after)) = rest.split_once('{') {
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let (expression, after) = after.split_once('}')?;
        parts.push(Part::Expression(spans_slashes(expression)));
        rest = after;
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest));
    }
    Some(parts)
}

/// Whether the template has an expression at all (a template without one
/// names exactly one URI, itself).
pub fn is_template(template: &str) -> bool {
    template.contains('{')
}

/// Whether `uri` is one of the URIs `template` names.
pub fn template_matches(template: &str, uri: &str) -> bool {
    let Some(parts) = parts(template) else {
        return false;
    };
    let bytes = uri.as_bytes();
    // reachable[i]: the parts so far can match exactly `uri[..i]`.
    let mut reachable = vec![false; bytes.len() + 1];
    reachable[0] = true;
    for part in parts {
        let mut next = vec![false; bytes.len() + 1];
        match part {
            Part::Literal(literal) => {
                let starts = reachable.iter().filter(|r| **r).count();
                // Checked at each reachable start while that is cheap; past
                // it (many starts, a long literal: `{+a}aaa…b` against
                // `aaa…`, a template an upstream chose) every occurrence is
                // found in one linear pass instead.
                if starts.saturating_mul(literal.len()) <= bytes.len() + literal.len() {
                    for (start, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
                        if uri[start..].starts_with(literal) {
                            next[start + literal.len()] = true;
                        }
                    }
                } else {
                    for start in occurrences(bytes, literal.as_bytes()) {
                        if reachable[start] {
                            next[start + literal.len()] = true;
                        }
                    }
                }
            }
            Part::Expression(spans) => {
                // `end` is reachable when some reachable `start < end` has no
                // '/' between them (any, for an expression that spans them).
                // One pass: `open` says such a start lies behind, since the
                // last '/'.
                let mut open = false;
                for end in 0..=bytes.len() {
                    if !spans && end > 0 && bytes[end - 1] == b'/' {
                        open = false;
                    }
                    next[end] = open && uri.is_char_boundary(end);
                    if reachable[end] {
                        open = true;
                    }
                }
            }
        }
        if !next.contains(&true) {
            return false;
        }
        reachable = next;
    }
    reachable[bytes.len()]
}

/// Where `needle` (not empty) starts in `haystack`, overlapping ones
/// included, in O(haystack + needle) (Knuth–Morris–Pratt).
fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut found = Vec::new();
    if needle.is_empty() || needle.len() > haystack.len() {
        return found;
    }
    // border[i]: the longest proper prefix of needle[..=i] that is also its
    // suffix.
    let mut border = vec![0usize; needle.len()];
    let mut k = 0;
    for i in 1..needle.len() {
        while k > 0 && needle[i] != needle[k] {
            k = border[k - 1];
        }
        if needle[i] == needle[k] {
            k += 1;
        }
        border[i] = k;
    }
    let mut k = 0;
    for (i, byte) in haystack.iter().enumerate() {
        while k > 0 && *byte != needle[k] {
            k = border[k - 1];
        }
        if *byte == needle[k] {
            k += 1;
        }
        if k == needle.len() {
            found.push(i + 1 - needle.len());
            k = border[k - 1];
        }
    }
    found
}

/// How specific a template is: the number of literal bytes it holds. Of
/// several templates naming one URI, the most specific one's entry governs.
pub fn literal_len(template: &str) -> usize {
    parts(template).map_or(0, |parts| {
        parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.len(),
                Part::Expression(_) => 0,
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{+rest}` (and `{#x}`, `{/seg*}`, `{list*}`) may expand to text with
    /// slashes, so an entry written with one governs the whole subtree: a
    /// reader once read `file:///srv/hr/2024/salaries.csv` past an
    /// admin-only `file:///srv/hr/{+rest}`.
    #[test]
    fn reserved_fragment_path_and_exploded_expressions_span_slashes() {
        let hr = "file:///srv/hr/{+rest}";
        assert!(template_matches(hr, "file:///srv/hr/2024/salaries.csv"));
        assert!(template_matches(hr, "file:///srv/hr/a"));
        assert!(!template_matches(hr, "file:///srv/hr/"));
        assert!(!template_matches(hr, "file:///srv/other/a"));
        assert!(template_matches("doc://x{#part}", "doc://x#a/b"));
        assert!(template_matches("doc://x{/seg*}", "doc://x/a/b/c"));
        assert!(template_matches("doc://x/{list*}", "doc://x/a/b"));
        // A simple expression still stops at a slash.
        assert!(!template_matches(
            "file:///srv/hr/{rest}",
            "file:///srv/hr/2024/a.csv"
        ));
        // Linear still, with many spanning expressions in a row.
        let long = format!("x://{}", "a/".repeat(5_000));
        assert!(template_matches("x://{+a}{+b}{+c}{+d}", &long));
    }

    /// A long literal after a spanning expression was compared at every
    /// reachable position (positions × literal length): `{+a}aaa…b`
    /// against `aaa…` cost millions of comparisons per template. Every
    /// occurrence is found in one pass now, with the same answers.
    #[test]
    fn a_long_literal_after_a_spanning_expression_is_found_in_one_pass() {
        let literal = format!("{}b", "a".repeat(2_000));
        let template = format!("x://{{+a}}{literal}");
        let uri = format!("x://{}", "a".repeat(8_000));
        assert!(!template_matches(&template, &uri));
        assert!(template_matches(&template, &format!("{uri}b")));
        assert!(template_matches("x://{+a}aa{+b}", "x://aaaaa"));
        assert!(!template_matches("x://{+a}ab", "x://aaaa"));
        assert_eq!(occurrences(b"aaaa", b"aa"), [0, 1, 2]);
        assert_eq!(occurrences(b"abcabcab", b"abcab"), [0, 3]);
        assert!(occurrences(b"ab", b"abc").is_empty());
    }

    #[test]
    fn expressions_take_one_or_more_characters_up_to_a_slash() {
        assert!(template_matches("crm://contacts/{id}", "crm://contacts/42"));
        assert!(template_matches(
            "crm://{kind}/{id}/notes",
            "crm://contacts/42/notes"
        ));
        assert!(!template_matches("crm://contacts/{id}", "crm://contacts/"));
        assert!(!template_matches(
            "crm://contacts/{id}",
            "crm://contacts/4/2"
        ));
        assert!(!template_matches("crm://contacts/{id}", "crm://deals/42"));
        assert!(template_matches("x://{a}{b}", "x://ab"));
        assert!(!template_matches("x://{a}{b}", "x://a"));
        assert!(template_matches("x://{a}-{b}", "x://a-b-c"));
        assert!(template_matches("file:///srv/a.txt", "file:///srv/a.txt"));
        assert!(!template_matches("file:///srv/a.txt", "file:///srv/b.txt"));
        // An unclosed expression names nothing.
        assert!(!template_matches("x://{id", "x://{id"));
    }

    #[test]
    fn a_uri_of_any_characters_never_splits_one() {
        // Splitting at every byte would cut 'é' in half (a panic before).
        assert!(template_matches("x://{id}", "x://é"));
        assert!(template_matches("x://{a}{b}", "x://éé"));
        assert!(!template_matches("x://{a}{b}", "x://é"));
        assert!(template_matches("x://{id}/é", "x://日本/é"));
    }

    #[test]
    fn adjacent_expressions_do_not_take_exponential_time() {
        // Backtracking over 12 adjacent expressions and 4,000 characters
        // would not end in any test's lifetime; this takes milliseconds.
        let template = format!("{}!", "{e}".repeat(12));
        let uri = "a".repeat(4_000);
        assert!(!template_matches(&template, &uri));
        assert!(template_matches(&template, &format!("{uri}!")));
    }

    #[test]
    fn specificity_counts_literal_bytes() {
        assert!(literal_len("crm://contacts/{id}") > literal_len("crm://{kind}/{id}"));
        assert_eq!(literal_len("{a}{b}"), 0);
    }
}
