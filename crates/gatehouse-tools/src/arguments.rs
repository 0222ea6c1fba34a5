//! Strict argument access. The shape check (no unknown fields, required
//! fields present) is driven by the advertised schema; the typed getters
//! name the offending field when a value has the wrong type.

use serde_json::{Map, Value};

use crate::ToolDefinition;
use crate::error::ToolError;

pub(crate) struct Arguments {
    map: Map<String, Value>,
}

impl Arguments {
    /// Rejects fields the schema does not declare and missing required ones.
    pub(crate) fn check(
        definition: &ToolDefinition,
        map: Map<String, Value>,
    ) -> Result<Self, ToolError> {
        let schema = &definition.input_schema;
        let declared = schema["properties"].as_object();
        let mut unknown: Vec<&str> = map
            .keys()
            .filter(|k| !declared.is_some_and(|d| d.contains_key(k.as_str())))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(ToolError::invalid(format!(
                "unknown argument(s) for {}: {}",
                definition.name,
                unknown.join(", ")
            )));
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let Some(required) = required.as_str() else {
                continue;
            };
            if map.get(required).is_none_or(Value::is_null) {
                return Err(ToolError::invalid(format!(
                    "missing required argument '{required}'"
                )));
            }
        }
        Ok(Arguments { map })
    }

    /// The raw value; an explicit JSON `null` counts as omitted because many
    /// clients send it for optional fields.
    pub(crate) fn value(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    pub(crate) fn optional_str(&self, field: &str) -> Result<Option<&str>, ToolError> {
        match self.value(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(field, "a string", other)),
        }
    }

    pub(crate) fn str(&self, field: &str) -> Result<&str, ToolError> {
        self.optional_str(field)?
            .ok_or_else(|| ToolError::invalid(format!("missing required argument '{field}'")))
    }

    pub(crate) fn optional_u64(&self, field: &str) -> Result<Option<u64>, ToolError> {
        match self.value(field) {
            None => Ok(None),
            Some(v @ Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| wrong_type(field, "a non-negative integer", v)),
            Some(other) => Err(wrong_type(field, "a non-negative integer", other)),
        }
    }
}

pub(crate) fn wrong_type(field: &str, expected: &str, got: &Value) -> ToolError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    ToolError::invalid(format!("'{field}' must be {expected}, not {got}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::definitions;

    fn args(tool: &str, value: Value) -> Result<Arguments, ToolError> {
        let Value::Object(map) = value else {
            panic!("not an object")
        };
        let def = definitions::find(tool).unwrap_or_else(|| panic!("no tool {tool}"));
        Arguments::check(def, map)
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = args("read_file", json!({"path": "a", "mode": "rw"})).err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("unknown argument") && err.contains("mode"),
            "{err}"
        );
    }

    #[test]
    fn missing_required_fields_are_rejected() {
        let err = args("write_file", json!({"path": "a"})).err();
        assert!(err.is_some_and(|e| e.to_string().contains("'content'")));
        assert!(args("write_file", json!({"path": "a", "content": null})).is_err());
    }

    #[test]
    fn wrong_types_name_the_field() {
        let parsed = args("read_file", json!({"path": 7})).unwrap_or_else(|e| panic!("{e}"));
        let err = parsed.str("path").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid arguments: 'path' must be a string, not a number")
        );
        let parsed = args("search_database", json!({"query": "a", "limit": -3}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(parsed.optional_u64("limit").is_err());
        let parsed = args("search_database", json!({"query": "a", "limit": 2.5}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(parsed.optional_u64("limit").is_err());
    }
}
