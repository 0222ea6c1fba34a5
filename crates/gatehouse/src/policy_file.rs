//! Loading the policy file, and reloading it while the server runs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_audit::EventBuilder;
use gatehouse_authz::Policy;
use gatehouse_core::{AuditKind, Outcome};
use gatehouse_mcp::Gateway;
use sha2::{Digest, Sha256};
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
    read_with_digest(path).map(|(policy, _)| policy)
}

/// The policy in the file, and the SHA-256 of the text it was read from.
fn read_with_digest(path: &PathBuf) -> anyhow::Result<(Policy, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    let policy = Policy::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("policy file {}: {e}", path.display()))?;
    Ok((policy, hex::encode(Sha256::digest(text.as_bytes()))))
}

/// The agent of a policy reload's audit record.
const SERVER_AGENT: &str = "gatehouse-server";

/// Reloads the policy on SIGHUP and when the file changes (checked every
/// second). Requests in flight keep the policy they started with; an
/// invalid file is reported and the running policy stays.
///
/// A reload changes who may call what, so it is an audit record (kind
/// `operator`, `policy/reload`, the file's SHA-256), written before the
/// new policy applies: a policy widened for one call and put back leaves
/// a trace, and a reload whose record cannot be written is not applied
/// (it is tried again at the next change or SIGHUP).
pub fn watch(ctx: &Context, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    let Some(path) = policy_path(ctx) else {
        return;
    };
    crate::file_watch::watch("policy file", vec![path.clone()], shutdown, move || {
        let gateway = Arc::clone(&gateway);
        let path = path.clone();
        async move {
            let (policy, digest) = match read_with_digest(&path) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "the new policy is invalid; keeping the previous one");
                    return;
                }
            };
            let record =
                EventBuilder::new(AuditKind::Operator, Outcome::Success, gateway.clock().now())
                    .agent(SERVER_AGENT)
                    .tool("policy/reload")
                    .decision("reload")
                    .reason("policy_reloaded")
                    .error(format!(
                        "policy file {} reloaded (sha256 {digest})",
                        path.display()
                    ))
                    .build();
            match gateway.audit().record(record).await {
                Ok(()) => {
                    gateway.replace_policy(policy);
                    tracing::info!(path = %path.display(), sha256 = %digest, "policy reloaded");
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "the policy reload could not be recorded, so it was not applied; it is tried again at the next change or SIGHUP"
                ),
            }
        }
    });
}
