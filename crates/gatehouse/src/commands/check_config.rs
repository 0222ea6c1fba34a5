use serde_json::json;

use crate::cli::JsonFlag;
use crate::context::Context;
use crate::output;

/// Loading the context already validated the file; the roles it maps
/// identity providers' people to are checked against the policy; then
/// what is in effect is printed.
pub fn run(ctx: &Context, flag: &JsonFlag) -> anyhow::Result<()> {
    let policy = crate::policy_file::load(ctx)?;
    crate::config::check_mapped_roles(&ctx.config, &policy)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let c = &ctx.config;
    let value = json!({
        "config_file": ctx.config_path.as_ref().map(|p| p.display().to_string()),
        "data_dir": ctx.data_dir.display().to_string(),
        "listen": c.server.listen.to_string(),
        "public_url": c.server.public_url.as_ref().map(|u| u.to_string()),
        "auth_mode": c.auth.mode.as_str(),
        "audit_file": ctx.in_data_dir(&c.audit.file).display().to_string(),
        "web_fetch_allowlist": c.tools.web_fetch_allowlist,
        "metrics_listen": c.metrics.listen.map(|a| a.to_string()),
        "traces_otlp_endpoint": c.traces.otlp_endpoint.as_ref().map(|u| u.to_string()),
    });
    if flag.json {
        output::json(&value);
    } else {
        output::line("Configuration is valid.");
        if let Some(map) = value.as_object() {
            for (k, v) in map {
                output::line(&format!("  {k}: {v}"));
            }
        }
    }
    Ok(())
}
