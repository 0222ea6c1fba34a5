//! Stored strings that people read on a terminal: user names, agent and
//! client names, tenants, tool names, arguments. Any of them may come from a
//! caller, so before they are printed every character that could move the
//! cursor, end a line, recolour the screen or reorder the text around it is
//! written as a visible escape. One function for every human-readable
//! listing, so no listing can forget a character class.

use std::borrow::Cow;

/// Characters that are invisible, control the terminal, break lines or
/// change the direction or shape of the text around them:
/// C0 and C1 controls (newline, carriage return, escape, DEL, ...), the
/// Unicode line and paragraph separators, and the format characters
/// (bidirectional overrides and isolates, zero-width spaces and joiners,
/// the byte-order mark, soft hyphen, interlinear annotations, tags), and
/// the other default-ignorable characters, which show as nothing (the
/// combining grapheme joiner, Mongolian free variation selectors, Khmer
/// inherent vowels). Variation selectors are escaped where they select
/// nothing (see [`selects_nothing`]), not refused: a name may hold an emoji.
pub fn is_unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

/// `text` with every character of [`is_unsafe_to_show`] written as an
/// escape (`\n`, `\r`, `\t`, else `\u{202e}`) and backslashes doubled, so
/// an escape in the output always means the character and never text the
/// caller typed. Printable text, accents and other scripts are kept.
pub fn escape_for_display(text: &str) -> Cow<'_, str> {
    if !hidden_characters(text).any(|(c, hidden)| hidden || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for (c, hidden) in hidden_characters(text) {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether a variation selector picks how the character before it is
/// drawn (an emoji's colour form, a keycap, an ideograph's variant): after
/// a symbol, an ideograph, a digit, `#` or `*` it does; after anything else
/// it shows as nothing, and is escaped (`notes\u{FE0F}.txt` must not read
/// as `notes.txt`).
pub fn selects_nothing(before: Option<char>, c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
        && !before
            .is_some_and(|b| u32::from(b) >= 0x2000 || b.is_ascii_digit() || b == '#' || b == '*')
}

/// Each character of `text`, and whether it must be escaped to be seen:
/// one of [`is_unsafe_to_show`], or a variation selector that selects
/// nothing.
fn hidden_characters(text: &str) -> impl Iterator<Item = (char, bool)> + '_ {
    let mut before = None;
    text.chars().map(move |c| {
        let hidden = is_unsafe_to_show(c) || selects_nothing(before, c);
        before = Some(c);
        (c, hidden)
    })
}

/// JSON text with every character of [`is_unsafe_to_show`] inside it
/// written as a JSON escape (`\u202e`; a pair of them above U+FFFF): the
/// same JSON value, but nothing in it can move a terminal's cursor or
/// reorder the text around it when shown. A raw newline is kept: serde_json
/// escapes the controls inside strings itself, so one is a pretty printer's
/// line break.
pub fn escape_json_for_display(json: &str) -> Cow<'_, str> {
    use std::fmt::Write as _;
    if !hidden_characters(json).any(|(c, hidden)| hidden && c != '\n') {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 12);
    for (c, hidden) in hidden_characters(json) {
        if hidden && c != '\n' {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_text_is_unchanged() {
        for text in [
            "alice",
            "alice@example.com",
            "Café Zürich",
            "日本語のツール",
            "reports/2026/q3.csv",
            "{\"to\":\"bob@example.com\"}",
            "",
        ] {
            assert!(matches!(escape_for_display(text), Cow::Borrowed(_)));
            assert_eq!(escape_for_display(text), text);
        }
    }

    #[test]
    fn line_breaks_and_terminal_controls_become_visible_escapes() {
        assert_eq!(
            escape_for_display("x\nauthentication success admin"),
            r"x\nauthentication success admin"
        );
        assert_eq!(escape_for_display("a\r\tb"), r"a\r\tb");
        assert_eq!(escape_for_display("\u{1b}[31mred"), r"\u{1b}[31mred");
        assert_eq!(
            escape_for_display("bell\u{7}del\u{7f}"),
            r"bell\u{7}del\u{7f}"
        );
        // C1 controls, including the single-byte CSI.
        assert_eq!(escape_for_display("\u{9b}2J"), r"\u{9b}2J");
        assert_eq!(escape_for_display("nul\0"), r"nul\u{0}");
    }

    #[test]
    fn default_ignorable_characters_are_escaped() {
        assert_eq!(
            escape_for_display("notes\u{FE0F}.txt"),
            r"notes\u{fe0f}.txt"
        );
        assert_eq!(escape_for_display("a\u{E0100}b"), r"a\u{e0100}b");
        assert_eq!(
            escape_json_for_display("{\"f\":\"x\u{FE0F}\"}"),
            "{\"f\":\"x\\ufe0f\"}"
        );
        // An emoji, a keycap and an ideograph's variant keep their selector,
        // and a name holding one is not refused.
        for text in [
            "Notes \u{270D}\u{FE0F}",
            "1\u{FE0F}\u{20E3}",
            "\u{845B}\u{E0100}",
        ] {
            assert_eq!(escape_for_display(text), text);
            assert!(!text.chars().any(is_unsafe_to_show));
        }
        for c in ['\u{034F}', '\u{17B4}', '\u{180B}', '\u{180F}'] {
            assert!(is_unsafe_to_show(c), "{:x}", u32::from(c));
        }
    }

    #[test]
    fn bidirectional_invisible_and_separator_characters_are_escaped() {
        assert_eq!(
            escape_for_display("evil\u{202E}txt.exe"),
            r"evil\u{202e}txt.exe"
        );
        for c in [
            '\u{200B}',
            '\u{200C}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{2028}',
            '\u{2029}',
            '\u{202A}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{061C}',
            '\u{E0041}',
            '\u{3164}',
        ] {
            let text = format!("a{c}b");
            let escaped = escape_for_display(&text);
            assert_eq!(
                escaped,
                format!("a\\u{{{:x}}}b", u32::from(c)),
                "U+{:04X}",
                u32::from(c)
            );
            assert!(!escaped.contains(c));
        }
    }

    #[test]
    fn backslashes_are_doubled_so_escapes_cannot_be_faked() {
        // A name that spells `\n` itself must not read like an escaped newline.
        assert_eq!(escape_for_display(r"a\nb"), r"a\\nb");
        assert_ne!(escape_for_display(r"a\nb"), escape_for_display("a\nb"));
    }

    #[test]
    fn nothing_unsafe_survives_escaping() {
        let all: String = (0u32..0x11_0000).filter_map(char::from_u32).collect();
        let escaped = escape_for_display(&all);
        assert!(!escaped.chars().any(is_unsafe_to_show));
        assert!(!escaped.contains('\n'));
    }

    #[test]
    fn json_keeps_its_value_and_shows_every_unsafe_character_as_an_escape() {
        let value =
            serde_json::json!({"tool": "a\u{202e}b\u{9b}c\u{e0041}", "k\u{2066}": [1, "é😀"]});
        for text in [
            value.to_string(),
            serde_json::to_string_pretty(&value).unwrap(),
        ] {
            let shown = escape_json_for_display(&text);
            assert!(
                !shown.chars().any(|c| c != '\n' && is_unsafe_to_show(c)),
                "{shown}"
            );
            assert!(
                shown.contains("\\u202e") && shown.contains("\\udb40\\udc41"),
                "{shown}"
            );
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&shown).unwrap(),
                value
            );
        }
        assert!(matches!(
            escape_json_for_display("{\"a\":1}"),
            Cow::Borrowed(_)
        ));
    }
}
