//! Loading the policy file, and reloading it while the server runs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_authz::Policy;
use gatehouse_mcp::Gateway;
use tokio_util::sync::CancellationToken;

use crate::context::Context;

/// The configured policy file, resolved against the configuration file's
/// directory.
pub fn policy_path(ctx: &Context) -> Option<PathBuf> {
    let file = ctx.config.policy.file.as_ref()?;
    if file.is_absolute() {
        return Some(file.clone());
    }
    let base = ctx
        .config_path
        .as_deref()
        .map(crate::config::config_dir)
        .unwrap_or(std::path::Path::new(""));
    Some(base.join(file))
}

/// The policy to start with: the configured file, or the shipped default.
pub fn load(ctx: &Context) -> anyhow::Result<Policy> {
    match policy_path(ctx) {
        None => Ok(Policy::default_matrix()),
        Some(path) => read(&path),
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    Policy::from_toml(&text).map_err(|e| anyhow::anyhow!("policy file {}: {e}", path.display()))
}

/// Reloads the policy on SIGHUP and when the file changes (checked every
/// second). Requests in flight keep the policy they started with; an
/// invalid file is reported and the running policy stays.
pub fn watch(ctx: &Context, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let Some(path) = policy_path(ctx) else {
        return;
    };
    crate::file_watch::watch(
        "policy file",
        vec![path.clone()],
        shutdown,
        move || match read(&path) {
            Ok(policy) => {
                gateway.replace_policy(policy);
                tracing::info!(path = %path.display(), "policy reloaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the new policy is invalid; keeping the previous one");
            }
        },
    );
}
