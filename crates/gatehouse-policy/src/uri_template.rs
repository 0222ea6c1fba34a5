//! Whether a resource URI is one an RFC 6570 level-1 template names: each
//! `{expression}` stands for one or more characters other than `/`, the
//! rest is literal. Used to route a `resources/read` to the upstream whose
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
    Expression,
}

/// The template's parts; `None` for a template with an unclosed `{`.
fn parts(template: &str) -> Option<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some((literal, after)) = rest.split_once('{') {
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        let (_, after) = after.split_once('}')?;
        parts.push(Part::Expression);
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
                for (start, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
                    if uri[start..].starts_with(literal) {
                        next[start + literal.len()] = true;
                    }
                }
            }
            Part::Expression => {
                // `end` is reachable when some reachable `start < end` has no
                // '/' between them. One pass: `open` says such a start lies
                // behind, since the last '/'.
                let mut open = false;
                for end in 0..=bytes.len() {
                    if end > 0 && bytes[end - 1] == b'/' {
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

/// How specific a template is: the number of literal bytes it holds. Of
/// several templates naming one URI, the most specific one's entry governs.
pub fn literal_len(template: &str) -> usize {
    parts(template).map_or(0, |parts| {
        parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.len(),
                Part::Expression => 0,
            })
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
