//! Removing known secret values from texts an upstream influenced.
//!
//! Gatehouse never puts a credential into an error itself, but an upstream
//! may reflect a request header in its error body, which then ends up in
//! an error text; this is the last line of defence for that case.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) const REDACTED: &str = "[redacted]";
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

/// `message` with every secret value replaced, as [`scrub_value`] replaces
/// them; a message that holds none comes back as it came. `None` when one
/// was found and the message, with it replaced, no longer reads as a
/// message of its type (the secret sat where a fixed form is expected).
pub(crate) fn scrub_message<M: Serialize + DeserializeOwned>(
    message: M,
    secrets: &[String],
) -> Option<M> {
    let mut searched = secrets
        .iter()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .peekable();
    if searched.peek().is_none() {
        return Some(message);
    }
    // A message that cannot be serialized cannot be sent on either.
    let text = serde_json::to_string(&message).ok()?;
    if !searched.any(|secret| holds(&text, secret)) {
        return Some(message);
    }
    let value = serde_json::from_str::<Value>(&text).ok()?;
    serde_json::from_value(scrub_value(value, secrets)).ok()
}

/// Whether serialized JSON `text` holds `secret` in one of its strings:
/// as it is, or as JSON escapes it (a `"`, a `\` or a control character).
fn holds(text: &str, secret: &str) -> bool {
    if text.contains(secret) {
        return true;
    }
    let needs_escaping = secret
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control());
    needs_escaping
        && serde_json::to_string(secret)
            .is_ok_and(|quoted| text.contains(&quoted[1..quoted.len() - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Answer {
        text: String,
        kind: Kind,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Text,
        #[serde(rename = "abcdef123")]
        Odd,
    }

    #[test]
    fn a_message_is_scrubbed_wherever_the_secret_is_and_however_it_is_escaped() {
        let secrets = vec!["abcdef123".to_owned(), "quo\"te\\d-1".to_owned()];
        let clean = Answer {
            text: "nothing here".into(),
            kind: Kind::Text,
        };
        assert_eq!(
            scrub_message(clean, &secrets),
            Some(Answer {
                text: "nothing here".into(),
                kind: Kind::Text
            })
        );
        let echoed = Answer {
            text: "Authorization: Bearer abcdef123; key quo\"te\\d-1".into(),
            kind: Kind::Text,
        };
        assert_eq!(
            scrub_message(echoed, &secrets).unwrap().text,
            "Authorization: Bearer [redacted]; key [redacted]"
        );
        // Where no other text can stand, the message cannot be kept.
        let fixed = Answer {
            text: String::new(),
            kind: Kind::Odd,
        };
        assert_eq!(scrub_message(fixed, &secrets), None);
        // Nothing to search for: nothing is serialized.
        let short = vec!["abc".to_owned()];
        let kept = Answer {
            text: "abc".into(),
            kind: Kind::Text,
        };
        assert_eq!(scrub_message(kept, &short).unwrap().text, "abc");
    }

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
