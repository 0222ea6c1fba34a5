//! Removes secrets from tool arguments before they are recorded.

use regex::Regex;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Words that make an argument name secret wherever they appear in it,
/// compared without case or separators (`_`, `-`, `.`, spaces): `db_password`,
/// `githubToken`, `aws-secret-access-key`, `X-Api-Key`, `session_id`.
///
/// Matching inside names means `max_tokens` or `tokenizer` are redacted too:
/// when in doubt the audit record loses a detail rather than keeping a secret.
pub const SECRET_NAME_WORDS: [&str; 20] = [
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "credential",
    "privatekey",
    "privkey",
    "sshkey",
    "signingkey",
    "authorization",
    "bearer",
    "cookie",
    "session",
    "totp",
    "hotp",
    "mnemonic",
];

/// Patterns of values that look like keys or tokens wherever they appear.
const SECRET_VALUE_PATTERNS: [&str; 9] = [
    // Gatehouse API keys.
    r"ghk_[0-9a-z]{12}_[A-Za-z0-9_-]{20,}",
    // JWTs and other JWS compact serialisations.
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
    // Well-known vendor key shapes.
    r"sk-[A-Za-z0-9_-]{16,}",
    r"gh[pousr]_[A-Za-z0-9]{30,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"xox[abposr]-[A-Za-z0-9-]{10,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    // An HTTP credential written out.
    r"(?i)(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}",
    // Long high-entropy strings (hex, base64, base64url) with letters and digits.
    r"[A-Za-z0-9+/_-]{32,}={0,2}",
];

#[derive(Debug, Clone)]
pub struct Redactor {
    /// Redacted when contained in a normalized name.
    secret_words: Vec<String>,
    /// Redacted when equal to a normalized name (the configuration's
    /// `audit.redact_fields`, which name exact fields such as `ssn`).
    fields: Vec<String>,
    patterns: Vec<Regex>,
}

/// Lower case without separators, so `API_KEY`, `api-key`, `apiKey` and
/// `api.key` all read `apikey`.
fn normalize_field(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

impl Redactor {
    /// The default secret words plus `extra_fields` (exact names) from the
    /// configuration.
    pub fn new(extra_fields: &[String]) -> Result<Self, regex::Error> {
        let secret_words = SECRET_NAME_WORDS
            .iter()
            .map(|f| normalize_field(f))
            .collect();
        let mut fields: Vec<String> = extra_fields.iter().map(|f| normalize_field(f)).collect();
        fields.sort();
        fields.dedup();
        let patterns = SECRET_VALUE_PATTERNS
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<_, _>>()?;
        Ok(Redactor {
            secret_words,
            fields,
            patterns,
        })
    }

    fn is_secret_field(&self, name: &str) -> bool {
        let name = normalize_field(name);
        self.fields.contains(&name)
            || self
                .secret_words
                .iter()
                .any(|word| name.contains(word.as_str()))
    }

    /// Replaces every secret-looking part of `text`.
    pub fn redact_text(&self, text: &str) -> String {
        let mut out = text.to_string();
        for pattern in &self.patterns {
            if pattern.is_match(&out) {
                out = pattern
                    .replace_all(&out, |caps: &regex::Captures<'_>| {
                        if looks_random(&caps[0]) {
                            REDACTED.to_string()
                        } else {
                            caps[0].to_string()
                        }
                    })
                    .into_owned();
            }
        }
        out
    }

    /// Like `redact`, and the top-level arguments named in `tool_fields`
    /// (a tool's own `redact` list in the policy) are replaced too.
    pub fn redact_arguments(&self, value: &Value, tool_fields: &[String]) -> Value {
        let mut redacted = self.redact(value);
        if let Value::Object(map) = &mut redacted {
            for (name, v) in map.iter_mut() {
                if is_listed_field(name, tool_fields) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                }
            }
        }
        redacted
    }

    /// A copy of `value` with secret fields and secret-looking values replaced.
    pub fn redact(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if self.is_secret_field(k) && !v.is_null() {
                            Value::String(REDACTED.into())
                        } else {
                            self.redact(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.redact(v)).collect()),
            Value::String(s) => Value::String(shortened(self.redact_text(s))),
            other => other.clone(),
        }
    }
}

/// The longest string an audit record keeps of an argument. A call's
/// arguments are recorded twice (decision and outcome), in the database and
/// the file: a megabyte of `write_file` content would be four megabytes of
/// audit trail each time. (Approvals bind to the exact arguments' hash,
/// `args_sha256`, not to this copy.)
pub const MAX_RECORDED_STRING_BYTES: usize = 16 * 1024;

/// Whether a record shows `value` otherwise than it is (redaction aside):
/// a string in it longer than [`MAX_RECORDED_STRING_BYTES`] is cut, and a
/// NUL character in a key or a string is shown as another character
/// (`AuditEvent::make_storable`), so two keys that differ only there
/// become one.
pub fn is_recorded_otherwise(value: &Value) -> bool {
    match value {
        Value::String(text) => text.len() > MAX_RECORDED_STRING_BYTES || text.contains('\0'),
        Value::Array(items) => items.iter().any(is_recorded_otherwise),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || is_recorded_otherwise(value)),
        _ => false,
    }
}

/// `text`, cut at [`MAX_RECORDED_STRING_BYTES`] (on a character boundary)
/// with what was left out said.
fn shortened(mut text: String) -> String {
    gatehouse_core::cut_text(&mut text, MAX_RECORDED_STRING_BYTES);
    text
}

/// Whether the argument `name` is one of `fields` (a tool's `redact` list
/// in the policy), compared without case or separators.
pub fn is_listed_field(name: &str, fields: &[String]) -> bool {
    let name = normalize_field(name);
    fields.iter().any(|f| normalize_field(f) == name)
}

/// A long run of letters only (a word, a path) is not a secret; a match that
/// mixes letters with digits or symbols is treated as one.
fn looks_random(candidate: &str) -> bool {
    if candidate.len() < 32 {
        return true;
    }
    let has_digit = candidate.bytes().any(|b| b.is_ascii_digit());
    let has_letter = candidate.bytes().any(|b| b.is_ascii_alphabetic());
    has_digit && has_letter || candidate.contains(['.', ' ', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn long_strings_are_recorded_in_part() {
        let r = Redactor::new(&[]).unwrap();
        // An odd start puts the cut inside a two-byte character.
        let long = format!("a{}", "é".repeat(MAX_RECORDED_STRING_BYTES));
        let out = r.redact(&json!({"content": long, "path": "a.txt"}));
        let kept = out["content"].as_str().unwrap();
        assert!(
            kept.len() < MAX_RECORDED_STRING_BYTES + 64,
            "{}",
            kept.len()
        );
        let left_out = long.len() - (MAX_RECORDED_STRING_BYTES - 1);
        assert!(
            kept.ends_with(&format!("… [{left_out} more bytes not recorded]")),
            "{}",
            &kept[kept.len() - 60..]
        );
        assert_eq!(out["path"], "a.txt");
    }

    #[test]
    fn a_tools_own_fields_are_redacted_at_the_top_level() {
        let r = Redactor::new(&[]).unwrap();
        let out = r.redact_arguments(
            &json!({"body": "the letter", "to": "a@b.example", "nested": {"body": "kept"}}),
            &["Body".to_string()],
        );
        assert_eq!(out["body"], REDACTED);
        assert_eq!(out["to"], "a@b.example");
        assert_eq!(out["nested"]["body"], "kept");
    }

    fn redactor() -> Redactor {
        Redactor::new(&["ssn".to_string()]).unwrap()
    }

    #[test]
    fn secret_fields_are_replaced_at_any_depth() {
        let input = json!({
            "path": "notes.txt",
            "Password": "hunter2",
            "nested": {"api_key": "abc", "list": [{"client-secret": "x"}]},
            "SSN": "123",
            "token": null
        });
        let out = redactor().redact(&input);
        assert_eq!(out["path"], "notes.txt");
        assert_eq!(out["Password"], REDACTED);
        assert_eq!(out["nested"]["api_key"], REDACTED);
        assert_eq!(out["nested"]["list"][0]["client-secret"], REDACTED);
        assert_eq!(out["SSN"], REDACTED);
        assert_eq!(out["token"], Value::Null);
    }

    /// Issue 9 item 11: secret words inside compound names, in any case
    /// or separator style, at any depth and inside arrays.
    #[test]
    fn compound_secret_field_names_are_redacted_at_any_depth() {
        let input = json!({
            "db_password": "hunter2-db",
            "github_token": "plain-github",
            "aws_secret_access_key": "plain-aws",
            "nested": {
                "list": [
                    {"dbPassword": "camel-pass"},
                    {"X-Api-Key": "kebab-key"},
                    {"oauth.refresh.token": "dotted-token"},
                    {"SMTP_PASSWD": "upper-passwd"},
                    {"user_credentials": {"name": "svc"}},
                    {"ssh_private_key": "ssh-key"},
                    {"proxy_authorization": "proxy-auth"},
                    {"set_cookie": "cookie-value"},
                    {"session_id": "session-value"},
                    {"clientApiKey": "client-key"},
                    {"passphrase": "correct horse battery staple"},
                    {"pwd": "hunter2"},
                    {"ssh_key": "ssh-plain"},
                    {"signing_key": "signing-plain"},
                    {"totp_code": "123456"},
                    {"wallet_mnemonic": "abandon ability able"},
                    {"aws_access_key_id": "AKIA-plain"},
                ],
            },
            "path": "notes.txt",
            "recipient": "bob@example.com",
        });
        let out = redactor().redact(&input);
        let text = out.to_string();
        for clear in [
            "hunter2-db",
            "plain-github",
            "plain-aws",
            "camel-pass",
            "kebab-key",
            "dotted-token",
            "upper-passwd",
            "svc",
            "ssh-key",
            "proxy-auth",
            "cookie-value",
            "session-value",
            "client-key",
            "correct horse",
            "hunter2\"",
            "ssh-plain",
            "signing-plain",
            "123456",
            "abandon ability",
            "AKIA-plain",
        ] {
            assert!(!text.contains(clear), "{clear} in {text}");
        }
        assert_eq!(out["db_password"], REDACTED);
        assert_eq!(out["nested"]["list"][4]["user_credentials"], REDACTED);
        // Names without a secret word, and their values, are kept.
        assert_eq!(out["path"], "notes.txt");
        assert_eq!(out["recipient"], "bob@example.com");
    }

    /// When in doubt the name is redacted: `max_tokens` or `tokenizer`
    /// contain `token`, and that costs only an audit detail.
    #[test]
    fn names_merely_containing_a_secret_word_are_redacted_too() {
        let out =
            redactor().redact(&json!({"max_tokens": 200, "tokenizer": "bpe", "subject": "hi"}));
        assert_eq!(out["max_tokens"], REDACTED);
        assert_eq!(out["tokenizer"], REDACTED);
        assert_eq!(out["subject"], "hi");
    }

    #[test]
    fn secret_looking_values_are_replaced_inside_text() {
        let cases = [
            "use ghk_0123456789ab_AAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjjKKK now",
            "Authorization: Bearer abcdefgh12345678",
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
            "sk-proj1234567890abcdefghij",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "AKIAABCDEFGHIJKLMNOP",
            "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
            "d41d8cd98f00b204e9800998ecf8427ed41d8cd98f00b204e9800998ecf8427e",
        ];
        for case in cases {
            let out = redactor().redact_text(case);
            assert!(out.contains(REDACTED), "{case:?} -> {out:?}");
        }
        let out = redactor()
            .redact_text("use ghk_0123456789ab_AAAAbbbbCCCCddddEEEEffffGGGGhhhhIIIIjjjjKKK now");
        assert!(out.starts_with("use ") && out.ends_with(" now"));
        assert!(!out.contains("AAAAbbbb"));
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "hello world",
            "reports/2026/q3-summary.txt",
            "SELECT name FROM products",
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnop",
            "2 + 3 * 4",
        ] {
            assert_eq!(redactor().redact_text(text), text);
        }
    }
}
