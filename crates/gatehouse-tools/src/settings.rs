//! `modify_mcp_config`: per-tenant runtime settings. Only the keys listed
//! here can be changed, each with its own validation, so an agent cannot
//! touch anything that widens its own access.

use gatehouse_store::Store;
use serde_json::{Value, json};

use crate::ToolOutput;
use crate::arguments::wrong_type;
use crate::error::ToolError;

/// Lowers the read limit for one tenant; it never raises it above the
/// operator's `max_file_bytes`.
pub const READ_FILE_MAX_BYTES: &str = "tools.read_file.max_bytes";
pub const SESSION_IDLE_TIMEOUT_SECS: &str = "session.idle_timeout_secs";
pub const AUDIT_NOTE: &str = "audit.note";
pub const BANNER: &str = "banner";

/// Every key `modify_mcp_config` accepts.
pub const KEYS: [&str; 4] = [
    READ_FILE_MAX_BYTES,
    SESSION_IDLE_TIMEOUT_SECS,
    AUDIT_NOTE,
    BANNER,
];

enum Kind {
    Integer { min: u64, max: u64 },
    Text { max_chars: usize },
}

fn kind(key: &str) -> Option<Kind> {
    match key {
        READ_FILE_MAX_BYTES => Some(Kind::Integer {
            min: 1,
            max: 10 * 1024 * 1024,
        }),
        SESSION_IDLE_TIMEOUT_SECS => Some(Kind::Integer {
            min: 60,
            max: 86_400,
        }),
        AUDIT_NOTE | BANNER => Some(Kind::Text { max_chars: 200 }),
        _ => None,
    }
}

/// The stored form of `value`, if it is valid for `key`.
fn validate(key: &str, value: &Value) -> Result<String, ToolError> {
    let Some(kind) = kind(key) else {
        return Err(unknown_key(key));
    };
    match kind {
        Kind::Integer { min, max } => {
            let n = value
                .as_u64()
                .ok_or_else(|| wrong_type("value", "an integer", value))?;
            if !(min..=max).contains(&n) {
                return Err(ToolError::invalid(format!(
                    "'{key}' must be between {min} and {max}"
                )));
            }
            Ok(n.to_string())
        }
        Kind::Text { max_chars } => {
            let Value::String(s) = value else {
                return Err(wrong_type("value", "a string", value));
            };
            if s.chars().count() > max_chars {
                return Err(ToolError::invalid(format!(
                    "'{key}' must be at most {max_chars} characters"
                )));
            }
            // These strings are shown to clients and written to logs.
            if s.chars().any(char::is_control) {
                return Err(ToolError::invalid(format!(
                    "'{key}' must not contain control characters or line breaks"
                )));
            }
            Ok(s.clone())
        }
    }
}

fn unknown_key(key: &str) -> ToolError {
    ToolError::invalid(format!(
        "'{}' is not a changeable setting; allowed keys: {}",
        key.chars().take(100).collect::<String>(),
        KEYS.join(", ")
    ))
}

pub(crate) async fn modify(
    store: &dyn Store,
    tenant: &str,
    key: Option<&str>,
    value: Option<&Value>,
) -> Result<ToolOutput, ToolError> {
    match (key, value) {
        (None, None) => list(store, tenant).await,
        (None, Some(_)) => Err(ToolError::invalid("'value' needs a 'key'")),
        (Some(key), None) => {
            if kind(key).is_none() {
                return Err(unknown_key(key));
            }
            let current = store.setting(tenant, key).await?;
            Ok(ToolOutput {
                text: format!("{key} = {}", current.as_deref().unwrap_or("(not set)")),
                structured: Some(json!({ "key": key, "value": current })),
            })
        }
        (Some(key), Some(value)) => {
            let new = validate(key, value)?;
            let previous = store.setting(tenant, key).await?;
            store.put_setting(tenant, key, &new).await?;
            tracing::info!(tenant, key, "runtime setting changed by modify_mcp_config");
            Ok(ToolOutput {
                text: format!(
                    "{key} changed from {} to {new}",
                    previous.as_deref().unwrap_or("(not set)")
                ),
                structured: Some(json!({ "key": key, "previous": previous, "value": new })),
            })
        }
    }
}

async fn list(store: &dyn Store, tenant: &str) -> Result<ToolOutput, ToolError> {
    let settings = store.settings(tenant).await?;
    let text = if settings.is_empty() {
        "no runtime settings are set for this tenant".to_string()
    } else {
        settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let map: serde_json::Map<String, Value> = settings
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(ToolOutput {
        text,
        structured: Some(json!({ "settings": map, "keys": KEYS })),
    })
}

/// The tenant's read limit setting, if one is set and well-formed.
pub(crate) async fn read_limit(store: &dyn Store, tenant: &str) -> Result<Option<u64>, ToolError> {
    let stored = store.setting(tenant, READ_FILE_MAX_BYTES).await?;
    Ok(stored.and_then(|s| s.parse().ok()))
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
