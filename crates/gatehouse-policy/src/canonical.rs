//! The canonical form of a call's arguments, whose keyed hash an operation
//! token is bound to (`Approvals::arguments_hash`): the same JSON value
//! always yields the same bytes, however the client ordered its keys or
//! spaced its text.
//!
//! Objects are written with their keys in code-point order, no whitespace,
//! strings and numbers as serde_json writes them. Written out here rather
//! than relying on `serde_json::to_string`, whose key order depends on a
//! Cargo feature any crate in the build can switch on.

use serde_json::Value;

/// The canonical JSON text of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_value(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_and_spacing_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s","y":[1,2]},"b":1}"#);
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn any_change_of_value_changes_the_text() {
        let base = json!({"to": "a@example.com", "subject": "hi"});
        for other in [
            json!({"to": "a@example.com", "subject": "hi "}),
            json!({"to": "A@example.com", "subject": "hi"}),
            json!({"to": "a@example.com", "subject": "hi", "cc": "b@example.com"}),
            json!({"to": ["a@example.com"], "subject": "hi"}),
            json!({"to": "a@example.com"}),
        ] {
            assert_ne!(canonical_json(&base), canonical_json(&other), "{other}");
        }
    }

    #[test]
    fn strings_are_escaped_so_they_cannot_forge_structure() {
        let tricky = json!({"a": "\",\"b\":\"x"});
        let forged = json!({"a": "", "b": "x"});
        assert_ne!(canonical_json(&tricky), canonical_json(&forged));
        assert_eq!(canonical_json(&json!({})), "{}");
    }
}
