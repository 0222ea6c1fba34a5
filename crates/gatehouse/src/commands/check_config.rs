use serde_json::json;

use crate::cli::JsonFlag;
use crate::context::Context;
use crate::output;

/// Loading the context already validated the file; the roles it maps
/// identity providers' people to are checked against the policy; then
/// what is in effect is printed.
pub fn run(ctx: &Context, flag: &JsonFlag) -> anyhow::Result<()> {
    let policy = crate::policy_file::load(ctx)?;
    crate::config::check_against_policy(&ctx.config, &policy)
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
        "lifecycle": lifecycle_json(&c.lifecycle),
        "alerts": alerts_json(&c.alerts),
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

/// The lifecycle policy in effect per kind (and per overriding tenant),
/// durations in seconds, `null` for a rule switched off.
fn lifecycle_json(config: &crate::lifecycle::settings::LifecycleConfig) -> serde_json::Value {
    use crate::lifecycle::policy::{CredentialKind, Thresholds};
    let secs = |ms: i64| ms / 1000;
    let kind = |t: Thresholds, kind: CredentialKind| {
        let mut value = json!({
            "max_age_secs": t.max_age.map(secs),
            "warn_before_secs": secs(t.warn_before),
        });
        if matches!(kind, CredentialKind::ApiKey | CredentialKind::SigningKey) {
            value["rotation_overlap_secs"] = json!(secs(t.rotation_overlap));
        }
        if kind != CredentialKind::SigningKey {
            value["unused_alert_secs"] = json!(t.unused_alert.map(secs));
            value["unused_revoke_secs"] = json!(t.unused_revoke.map(secs));
        }
        value
    };
    let policy = config.policy();
    let tenants: serde_json::Map<String, serde_json::Value> = policy
        .tenants
        .iter()
        .map(|(name, [keys, clients, grants])| {
            (
                name.clone(),
                json!({
                    "api_keys": kind(*keys, CredentialKind::ApiKey),
                    "client_secrets": kind(*clients, CredentialKind::ClientSecret),
                    "grants": kind(*grants, CredentialKind::Grant),
                }),
            )
        })
        .collect();
    json!({
        "enabled": config.enabled,
        "interval_secs": config.interval.as_secs(),
        "api_keys": kind(policy.api_keys, CredentialKind::ApiKey),
        "client_secrets": kind(policy.client_secrets, CredentialKind::ClientSecret),
        "grants": kind(policy.grants, CredentialKind::Grant),
        "signing_keys": kind(policy.signing_keys, CredentialKind::SigningKey),
        "tenants": tenants,
    })
}

/// The detectors' thresholds and the webhook (its URL and where its secret
/// comes from, never the secret).
fn alerts_json(config: &crate::alerts_config::AlertsConfig) -> serde_json::Value {
    let settings = config.settings();
    json!({
        "auth_failures": settings.auth_failures,
        "auth_failure_window_secs": settings.auth_failure_window.as_secs(),
        "violations": settings.violations,
        "violation_window_secs": settings.violation_window.as_secs(),
        "on_incident": settings.on_incident.as_str(),
        "task_overrun": settings.task_overrun,
        "webhook": config.webhook.as_ref().map(|hook| json!({
            "url": hook.url.as_str(),
            "max_attempts": hook.max_attempts,
            "first_retry_secs": hook.first_retry.as_secs(),
            "max_retry_secs": hook.max_retry.as_secs(),
        })),
    })
}
