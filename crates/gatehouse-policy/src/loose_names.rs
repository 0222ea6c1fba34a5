//! Names as an upstream that matches names loosely would read them.
//!
//! A tool or prompt the policy names (`[prompts.crm__secret]`, admins only)
//! must not be reachable under another spelling that falls to its
//! upstream's looser section rule, when the upstream compares names with
//! Unicode-aware functions: Python's `casefold()` and JavaScript's
//! `toUpperCase()` take `ſ` (U+017F) for `s` and the Kelvin sign for `k`;
//! `trim()` and `strip()` drop a byte-order mark or a control character;
//! a zero-width space or a soft hyphen inside a name is invisible to most
//! comparisons. A name whose loose key is a named entry's key, but which is
//! not that entry exactly, is covered by nothing.

use std::collections::BTreeSet;

use gatehouse_core::is_unsafe_to_show;
use unicode_normalization::UnicodeNormalization;

/// The loose keys of the named tools and prompts of one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LooseNames {
    tools: BTreeSet<String>,
    prompts: BTreeSet<String>,
}

impl LooseNames {
    pub(crate) fn new<'a>(
        tools: impl IntoIterator<Item = &'a String>,
        prompts: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        LooseNames {
            tools: tools.into_iter().map(|n| loose_key(n)).collect(),
            prompts: prompts.into_iter().map(|n| loose_key(n)).collect(),
        }
    }

    /// Whether some named tool reads as `name` loosely.
    pub(crate) fn has_tool(&self, name: &str) -> bool {
        self.tools.contains(&loose_key(name))
    }

    /// Whether some named prompt reads as `name` loosely.
    pub(crate) fn has_prompt(&self, name: &str) -> bool {
        self.prompts.contains(&loose_key(name))
    }
}

/// Compatibility-normalised (NFKC), without white space, control, format
/// or other invisible characters anywhere, each character upper-cased and
/// then lower-cased (so `ſ`, `S` and `s` meet), normalised again.
pub(crate) fn loose_key(name: &str) -> String {
    // The same for ASCII (NFKC leaves it as it is, and its case maps one
    // to one), without the normalization: this runs for every call of an
    // upstream tool its section covers.
    if name.is_ascii() {
        return name
            .chars()
            .filter(|c| !c.is_ascii_whitespace() && !c.is_ascii_control())
            .map(|c| c.to_ascii_lowercase())
            .collect();
    }
    unicode_key(name)
}

/// [`loose_key`] for any text, Unicode rules throughout.
fn unicode_key(name: &str) -> String {
    name.nfkc()
        .filter(|c| !c.is_whitespace() && !is_unsafe_to_show(*c) && !is_invisible(*c))
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .nfkc()
        .collect()
}

/// Default-ignorable characters that are not format characters: the
/// combining grapheme joiner and the variation selectors.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{034F}' | '\u{17B4}'..='\u{17B5}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_an_upstream_may_take_for_the_name_share_its_key() {
        let key = loose_key("crm__secret");
        for spelling in [
            "crm__SECRET",
            " crm__secret",
            "crm__secret\t",
            "crm__\u{17F}ecret",
            "crm__secret\u{200B}",
            "crm__sec\u{200B}ret",
            "crm__secret\u{FEFF}",
            "\u{FEFF}crm__secret",
            "crm__secret\u{1F}",
            "crm__sec\u{AD}ret",
            "crm__secret\u{FE0F}",
            "ｃｒｍ__secret",
        ] {
            assert_eq!(loose_key(spelling), key, "{spelling:?}");
        }
        assert_eq!(loose_key("crm__\u{212A}ill"), loose_key("crm__kill"));
        assert_eq!(
            loose_key("crm__re\u{301}sume\u{301}"),
            loose_key("crm__résumé")
        );
        assert_ne!(loose_key("crm__secrets"), key);
        assert_ne!(loose_key("crm__secret_2"), key);
    }

    /// The ASCII shortcut gives what the full key gives.
    #[test]
    fn ascii_names_get_the_same_key_either_way() {
        let every_ascii: String = (0u8..128).map(char::from).collect();
        for name in ["crm__Secret", " a\tB\x0b\x1c\x7f ", every_ascii.as_str()] {
            assert_eq!(loose_key(name), unicode_key(name), "{name:?}");
        }
    }

    #[test]
    fn the_keys_of_named_entries_are_looked_up_by_kind() {
        let tools = ["crm__kill".to_string()];
        let prompts = ["crm__secret".to_string()];
        let names = LooseNames::new(&tools, &prompts);
        assert!(names.has_tool("crm__\u{212A}ILL"));
        assert!(!names.has_tool("crm__secret"));
        assert!(names.has_prompt("crm__\u{17F}ecret"));
        assert!(!names.has_prompt("crm__kill"));
    }
}
