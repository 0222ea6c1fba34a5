//! Removing known secret values from texts an upstream influenced.
//!
//! Gatehouse never puts a credential into an error itself, but an upstream
//! may reflect a request header in its error body, which then ends up in
//! an error text; this is the last line of defence for that case.

use serde_json::Value;

const REDACTED: &str = "[redacted]";
/// Secrets shorter than this are not searched for: replacing every "a" in
/// an error text would destroy it and protect nothing.
const MIN_SECRET_LEN: usize = 6;

pub(crate) fn scrub(mut text: String, secrets: &[String]) -> String {
    for secret in secrets {
        if secret.len() >= MIN_SECRET_LEN && text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    text
}

pub(crate) fn scrub_value(value: Value, secrets: &[String]) -> Value {
    match value {
        Value::String(s) => Value::String(scrub(s, secrets)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| scrub_value(v, secrets)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (scrub(k, secrets), scrub_value(v, secrets)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence_in_strings_and_json() {
        let secrets = vec!["abcdef123".to_owned()];
        assert_eq!(
            scrub("x abcdef123 y abcdef123".into(), &secrets),
            "x [redacted] y [redacted]"
        );
        let value = serde_json::json!({"h": ["Bearer abcdef123"], "n": 1});
        assert_eq!(
            scrub_value(value, &secrets),
            serde_json::json!({"h": ["Bearer [redacted]"], "n": 1})
        );
    }
}
