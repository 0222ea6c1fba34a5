//! `access_secrets`: the caller's own tenant's secrets, read from the store
//! at call time. The tenant always comes from the permit, never from the
//! arguments, so one tenant cannot name another's secrets.

use std::collections::BTreeSet;

use gatehouse_core::SecretCipher;
use gatehouse_store::Store;
use serde_json::json;

use crate::ToolOutput;
use crate::error::ToolError;

const MAX_NAME_LEN: usize = 128;

pub(crate) async fn access(
    store: &dyn Store,
    cipher: Option<&dyn SecretCipher>,
    reserved: &BTreeSet<String>,
    tenant: &str,
    name: Option<&str>,
) -> Result<ToolOutput, ToolError> {
    let Some(name) = name else {
        let mut names = store.secret_names(tenant).await?;
        names.retain(|name| !reserved.contains(name));
        let text = if names.is_empty() {
            "no secrets are stored for this tenant".to_string()
        } else {
            names.join("\n")
        };
        return Ok(ToolOutput {
            text,
            structured: Some(json!({ "names": names })),
        });
    };
    check_name(name)?;
    if reserved.contains(name) {
        return Err(ToolError::Refused(format!(
            "secret '{name}' is Gatehouse's credential for an upstream and is never handed to callers"
        )));
    }
    let stored = store.secret(tenant, name).await?;
    let opened = match (stored, cipher) {
        (Some(stored), Some(cipher)) => Some(
            cipher
                .open(tenant, name, &stored)
                .map_err(|e| ToolError::Failed(format!("secret '{name}': {e}")))?,
        ),
        (stored, _) => stored,
    };
    match opened {
        Some(value) => Ok(ToolOutput {
            text: value.clone(),
            structured: Some(json!({ "name": name, "value": value })),
        }),
        None => Err(ToolError::NotFound(format!(
            "no secret named '{name}' for this tenant"
        ))),
    }
}

fn check_name(name: &str) -> Result<(), ToolError> {
    let valid = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(ToolError::invalid(format!(
            "'name' must be 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.'"
        )))
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
