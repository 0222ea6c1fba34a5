//! Loading the policy file, and reloading it while the server runs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_audit::EventBuilder;
use gatehouse_authz::Policy;
use gatehouse_core::{AuditKind, Outcome};
use gatehouse_mcp::Gateway;
use gatehouse_tools::BuiltinTools;
use gatehouse_upstream::{PREFIX_SEPARATOR, UpstreamConfig};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
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
    load_with_digest(ctx).map(|(policy, _)| policy)
}

/// The policy to start with, and the SHA-256 of the file it was read from
/// (`None`: the shipped default).
pub fn load_with_digest(ctx: &Context) -> anyhow::Result<(Policy, Option<String>)> {
    match policy_path(ctx) {
        None => Ok((Policy::default_matrix(), None)),
        Some(path) => read_with_digest(&path, &ctx.config.upstreams)
            .map(|(policy, digest)| (policy, Some(digest))),
    }
}

/// The audit record of the policy a server or stdio process starts with:
/// a policy widened, the server restarted, a call made and the file put
/// back left no digest in the trail (only reloads were recorded). A sink
/// that is down at start does not stop the start (calls are refused until
/// it is back, as for any record): the record is tried again every few
/// seconds until it is written.
pub async fn record_start(
    ctx: &Context,
    gateway: Arc<Gateway>,
    digest: Option<&str>,
    shutdown: CancellationToken,
) {
    let what = match (policy_path(ctx), digest) {
        (Some(path), Some(digest)) => {
            format!("policy file {} in force (sha256 {digest})", path.display())
        }
        _ => "the shipped default policy in force".to_string(),
    };
    let record = move |gateway: &Gateway| {
        EventBuilder::new(AuditKind::Operator, Outcome::Success, gateway.clock().now())
            .agent(SERVER_AGENT)
            .tool("policy/load")
            .decision("load")
            .reason("policy_loaded")
            .error(what.clone())
            .build()
    };
    if let Err(e) = gateway.audit().record(record(&gateway)).await {
        tracing::error!(error = %e, "the policy in force could not be recorded; trying again");
        // Until shutdown: the audit log is drained once every holder of it
        // is gone.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
                if gateway.audit().record(record(&gateway)).await.is_ok() {
                    tracing::info!("the policy in force is recorded");
                    return;
                }
            }
        });
    }
}

/// The policy in the file, and the SHA-256 of the text it was read from.
fn read_with_digest(
    path: &PathBuf,
    upstreams: &[UpstreamConfig],
) -> anyhow::Result<(Policy, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the policy file {}", path.display()))?;
    warn_if_others_may_write(path);
    let policy = Policy::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("policy file {}: {e}", path.display()))?;
    check_tool_names(&policy, upstreams)
        .map_err(|e| anyhow::anyhow!("policy file {}: {e}", path.display()))?;
    let unnamed = unnamed_built_in_tools(&policy);
    if !unnamed.is_empty() {
        tracing::warn!(
            tools = %unnamed.join(", "),
            "the policy file names not every built-in tool: admin roles may call the ones it leaves \
             out, without approval, constraints or limits, and no listing shows them; give each a \
             [tools.NAME] entry"
        );
    }
    Ok((policy, hex::encode(Sha256::digest(text.as_bytes()))))
}

/// The policy is reloaded within seconds of a change: a file (or folder)
/// every user of the machine may write lets any of them widen their own
/// role. Said at every read (start, reload, `policy validate`).
fn warn_if_others_may_write(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        for (what, at) in [
            ("policy file", Some(path)),
            ("policy file's folder", folder),
        ] {
            let Some(at) = at else { continue };
            if let Ok(meta) = std::fs::metadata(at)
                && policy_writable_by_others(meta.permissions().mode(), meta.is_dir())
            {
                tracing::warn!(
                    path = %at.display(),
                    "the {what} can be written by every user of this machine, and the policy is \
                     reloaded when it changes: anyone could widen their own access; chmod o-w it"
                );
            }
        }
    }
}

/// Whether every user may write it (a folder with the sticky bit, like
/// /tmp, lets nobody replace another's file).
fn policy_writable_by_others(mode: u32, is_dir: bool) -> bool {
    mode & 0o002 != 0 && !(is_dir && mode & 0o1000 != 0)
}

/// Built-in tools the policy does not name. An `admin = true` role may
/// call them (as Gatehouse's own tools), but with no rule: no approval, no
/// constraint, no limit, and no listing shows them.
pub fn unnamed_built_in_tools(policy: &Policy) -> Vec<&'static str> {
    BuiltinTools::definitions()
        .iter()
        .map(|d| d.name)
        .filter(|name| !policy.tool_names().any(|named| named == *name))
        .collect()
}

/// What the policy and the configuration must agree on: the tools the
/// policy names exist, and the roles and tenants the configuration names
/// are the policy's. Start-up checks it (`runtime.rs`), and so do every
/// reload and `policy validate`: a file the server would refuse to start
/// with is not applied while it runs.
pub fn check_against_config(policy: &Policy, config: &Config) -> anyhow::Result<()> {
    check_tool_names(policy, &config.upstreams)?;
    crate::config::check_against_policy(config, policy).map_err(anyhow::Error::msg)
}

/// Every `[tools.NAME]` entry must name a tool that can exist: a built-in
/// one, or one of a configured upstream (`<prefix>__…`). A misspelt name
/// (`[tools.access_secret]`) would leave the real tool without its rule:
/// no approval, constraints, rate limit or redaction, and, for an admin
/// role, callable as a tool the policy does not name. With an upstream
/// whose tools keep their bare names (`prefix = ""`) any name may be one
/// of its tools, so only then are other names let through.
pub fn check_tool_names(policy: &Policy, upstreams: &[UpstreamConfig]) -> anyhow::Result<()> {
    let enabled = || upstreams.iter().filter(|u| u.enabled);
    if enabled().any(|u| u.effective_prefix().is_empty()) {
        return Ok(());
    }
    let built_in = BuiltinTools::definitions();
    let unknown: Vec<&str> = policy
        .tool_names()
        .filter(|name| !built_in.iter().any(|d| d.name == *name))
        .filter(|name| !upstreams.iter().any(|u| u.own_name(name).is_some()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let prefixes: Vec<String> = upstreams
        .iter()
        .map(|u| format!("{}{PREFIX_SEPARATOR}", u.effective_prefix()))
        .collect();
    anyhow::bail!(
        "[tools.{}] names no tool: not a built-in tool ({}){}; a misspelt name would leave the real \
         tool without its rule",
        unknown.join("], [tools."),
        built_in
            .iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", "),
        if prefixes.is_empty() {
            " and no upstream is configured".to_string()
        } else {
            format!(
                " nor a tool of a configured upstream ({})",
                prefixes.join(", ")
            )
        }
    )
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
///
/// `loaded` is the digest of the file the process started with: the file
/// is read again at the first poll (it may have changed since), and a file
/// read again unchanged (touched, or SIGHUP) applies and records nothing.
/// A file that cannot be applied is an audit record too (outcome failure,
/// with the reason): an emergency narrowing with a typo must not leave the
/// wider policy in force unseen.
pub fn watch(
    ctx: &Context,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    loaded: Option<String>,
) {
    let Some(path) = policy_path(ctx) else {
        return;
    };
    let config = Arc::new(ctx.config.clone());
    let applied = Arc::new(std::sync::Mutex::new(loaded));
    crate::file_watch::watch(
        "policy file",
        vec![path.clone()],
        true,
        shutdown,
        move || {
            let gateway = Arc::clone(&gateway);
            let path = path.clone();
            let config = Arc::clone(&config);
            let applied = Arc::clone(&applied);
            async move {
                let read =
                    read_with_digest(&path, &config.upstreams).and_then(|(policy, digest)| {
                        crate::config::check_against_policy(&config, &policy)
                            .map_err(|e| anyhow::anyhow!("policy file {}: {e}", path.display()))?;
                        Ok((policy, digest))
                    });
                let (policy, digest) = match read {
                    Ok(read) => read,
                    Err(e) => {
                        let reason = format!("{e:#}");
                        tracing::error!(error = %reason, "the new policy is invalid; keeping the previous one");
                        let record = EventBuilder::new(
                            AuditKind::Operator,
                            Outcome::Failure,
                            gateway.clock().now(),
                        )
                        .agent(SERVER_AGENT)
                        .tool("policy/reload")
                        .decision("keep")
                        .reason("policy_reload_refused")
                        .error(format!("the previous policy stays in force: {reason}"))
                        .build();
                        if let Err(e) = gateway.audit().record(record).await {
                            tracing::error!(error = %e, "the refused policy reload could not be recorded");
                        }
                        return;
                    }
                };
                let unchanged = applied
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_deref()
                    == Some(digest.as_str());
                if unchanged {
                    tracing::debug!(path = %path.display(), "policy file read again, unchanged");
                    return;
                }
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
                        *applied
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(digest.clone());
                        tracing::info!(path = %path.display(), sha256 = %digest, "policy reloaded");
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "the policy reload could not be recorded, so it was not applied; it is tried again at the next change or SIGHUP"
                    ),
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_or_folder_others_may_write_is_told() {
        assert!(policy_writable_by_others(0o100666, false));
        assert!(policy_writable_by_others(0o40777, true));
        assert!(
            !policy_writable_by_others(0o41777, true),
            "sticky, like /tmp"
        );
        assert!(!policy_writable_by_others(0o100644, false));
        assert!(
            !policy_writable_by_others(0o100664, false),
            "group is left alone"
        );
    }

    #[test]
    fn built_in_tools_the_policy_leaves_out_are_named() {
        assert!(unnamed_built_in_tools(&Policy::default_matrix()).is_empty());
        // The default policy without its `[tools.access_secrets]` table.
        let text = gatehouse_authz::DEFAULT_POLICY_TOML;
        let start = text.find("[tools.access_secrets]").unwrap();
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |i| start + 1 + i + 1);
        let without = format!("{}{}", &text[..start], &text[end..]);
        let policy = Policy::from_toml(&without).unwrap();
        assert_eq!(unnamed_built_in_tools(&policy), ["access_secrets"]);
    }
}
