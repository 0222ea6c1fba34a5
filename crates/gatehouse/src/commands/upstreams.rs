//! `gatehouse upstreams list|status|diff|approve`: the configured upstream
//! servers, their tools' pinned definitions, and the review of a changed
//! definition. `list`, `diff` and `approve` read the store only; `status`
//! connects to each upstream itself, as the server does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Clock, Outcome, SystemClock};
use gatehouse_mcp::tool_pins::{APPROVED, changed_fields, matches_pin};
use gatehouse_store::{Store, ToolPinRecord};
use gatehouse_upstream::{HealthState, TransportKind, UpstreamConfig, UpstreamSet};
use serde_json::{Value, json};

use crate::cli::UpstreamsCommand;
use crate::commands::approvals::operator;
use crate::context::Context;
use crate::output;
use crate::upstream_secrets::StoreSecrets;

fn configured<'a>(ctx: &'a Context, name: &str) -> anyhow::Result<&'a UpstreamConfig> {
    ctx.config
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .with_context(|| format!("no upstream named {name:?} in the configuration"))
}

fn endpoint(config: &UpstreamConfig) -> String {
    match config.transport() {
        TransportKind::Stdio { command } => {
            let mut words = vec![command.to_string()];
            words.extend(config.args.iter().cloned());
            format!("stdio: {}", words.join(" "))
        }
        TransportKind::Http { url } => format!("http: {url}"),
    }
}

fn pin_state(pin: &ToolPinRecord) -> &'static str {
    if pin.pending.is_some() {
        "changed"
    } else {
        "pinned"
    }
}

fn pin_json(config: Option<&UpstreamConfig>, pin: &ToolPinRecord) -> Value {
    json!({
        "upstream": pin.upstream,
        "tool": pin.tool,
        "name": config.map(|c| c.gateway_name(&pin.tool)),
        "state": pin_state(pin),
        "sha256": pin.pinned.sha256,
        "pinned_at": pin.pinned_at.to_rfc3339(),
        "pinned_by": pin.pinned_by,
        "pending_sha256": pin.pending.as_ref().map(|p| p.definition.sha256.clone()),
        "changed_at": pin.pending.as_ref().map(|p| p.since.to_rfc3339()),
        "changed_fields": pin.pending.as_ref().map(|p| changed_fields(&pin.pinned.definition, &p.definition.definition)),
    })
}

async fn list(ctx: &Context, json_out: bool) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let pins = store.tool_pins(None).await?;
    if json_out {
        let upstreams: Vec<Value> = ctx
            .config
            .upstreams
            .iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "endpoint": endpoint(u),
                    "prefix": u.effective_prefix(),
                    "enabled": u.enabled,
                    "pin": u.pin.as_str(),
                    "tools": pins.iter().filter(|p| p.upstream == u.name).map(|p| pin_json(Some(u), p)).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&json!(upstreams));
        return Ok(());
    }
    if ctx.config.upstreams.is_empty() {
        output::line("No upstreams are configured ([[upstreams]] in the configuration file).");
        return Ok(());
    }
    for u in &ctx.config.upstreams {
        let state = if u.enabled { "enabled" } else { "disabled" };
        output::line(&output::escape(&format!(
            "{} ({state}, pin = {}, {})",
            u.name,
            u.pin.as_str(),
            endpoint(u)
        )));
        let rows: Vec<Vec<String>> = pins
            .iter()
            .filter(|p| p.upstream == u.name)
            .map(|p| {
                vec![
                    u.gateway_name(&p.tool),
                    pin_state(p).to_string(),
                    p.pinned_at.to_rfc3339(),
                    p.pinned_by.clone().unwrap_or_else(|| "first seen".into()),
                ]
            })
            .collect();
        if rows.is_empty() {
            output::line("  (no tools seen yet: they are pinned when the server first lists them)");
        } else {
            output::table(&["  TOOL", "PIN", "PINNED AT", "PINNED BY"], &indent(rows));
        }
    }
    Ok(())
}

fn indent(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    for row in &mut rows {
        if let Some(first) = row.first_mut() {
            first.insert_str(0, "  ");
        }
    }
    rows
}

/// How long `status` waits for an upstream to answer.
fn settle_time(config: &UpstreamConfig) -> Duration {
    config.connect_timeout + Duration::from_secs(1)
}

async fn status(ctx: &Context, tenant: Option<String>, json_out: bool) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let pins = store.tool_pins(None).await?;
    let set = UpstreamSet::start(
        ctx.config.upstreams.clone(),
        Some(Arc::new(StoreSecrets(
            Arc::clone(&store),
            Arc::new(ctx.master_key()?),
        ))),
    )
    .context("invalid [[upstreams]]")?;
    let mut report = Vec::new();
    for upstream in set.iter() {
        let config = upstream.config();
        let tools = if config.enabled {
            // Listing waits for the connection (up to its timeouts).
            let listed = tokio::time::timeout(
                settle_time(config),
                upstream.list_tools(tenant.as_deref(), None),
            )
            .await;
            match listed {
                Ok(Ok(tools)) => Ok(tools),
                Ok(Err(e)) => Err(format!("{} ({})", e.public_message(), e.code())),
                Err(_) => Err("did not answer in time".to_string()),
            }
        } else {
            Ok(Vec::new())
        };
        let health = upstream.health();
        let ours: Vec<&ToolPinRecord> = pins.iter().filter(|p| p.upstream == config.name).collect();
        let mut rows = Vec::new();
        if let Ok(tools) = &tools {
            for tool in tools {
                let state = match ours.iter().find(|p| p.tool == tool.name) {
                    _ if config.pin == gatehouse_upstream::PinMode::Off => "not pinned (pin = off)",
                    None => "new (pinned when the server lists it)",
                    Some(p) if matches_pin(&p.pinned, tool) => "pinned",
                    Some(_) if config.pin == gatehouse_upstream::PinMode::Block => {
                        "changed: withheld"
                    }
                    Some(_) => "changed: served (pin = alert)",
                };
                rows.push((config.gateway_name(&tool.name), state.to_string()));
            }
            for pin in &ours {
                if !tools.iter().any(|t| t.name == pin.tool) {
                    rows.push((
                        config.gateway_name(&pin.tool),
                        "pinned, not listed now".into(),
                    ));
                }
            }
        }
        report.push((config.clone(), health, tools.err(), rows));
    }
    set.shutdown().await;
    if json_out {
        let value: Vec<Value> = report
            .iter()
            .map(|(config, health, error, rows)| {
                json!({
                    "name": config.name,
                    "endpoint": endpoint(config),
                    "enabled": config.enabled,
                    "pin": config.pin.as_str(),
                    "state": health.state,
                    "protocol_version": health.protocol_version,
                    "error": error,
                    "tools": rows.iter().map(|(name, state)| json!({"name": name, "pin": state})).collect::<Vec<_>>(),
                })
            })
            .collect();
        output::json(&json!(value));
        return Ok(());
    }
    for (config, health, error, rows) in &report {
        let state = match health.state {
            HealthState::Ready => format!(
                "ready, protocol {}",
                health.protocol_version.as_deref().unwrap_or("?")
            ),
            HealthState::Disabled => "disabled".into(),
            HealthState::Connecting => "connecting".into(),
            HealthState::Failing => "failing".into(),
        };
        output::line(&output::escape(&format!("{}: {state}", config.name)));
        if let Some(error) = error {
            output::line(&output::escape(&format!("  error: {error}")));
        }
        if !rows.is_empty() {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|(name, state)| vec![name.clone(), state.clone()])
                .collect();
            output::table(&["  TOOL", "PIN"], &indent(rows));
        }
    }
    Ok(())
}

/// The pins of `name` (and `tool`) with a change waiting for review.
async fn changed(
    store: &Arc<dyn Store>,
    name: &str,
    tool: Option<&str>,
) -> anyhow::Result<Vec<ToolPinRecord>> {
    let pins = store.tool_pins(Some(name)).await?;
    if let Some(tool) = tool
        && !pins.iter().any(|p| p.tool == tool)
    {
        bail!("upstream {name:?} has no pinned tool {tool:?}");
    }
    Ok(pins
        .into_iter()
        .filter(|p| p.pending.is_some() && tool.is_none_or(|t| p.tool == t))
        .collect())
}

/// A value for people: strings as they are, anything else as indented JSON.
fn readable(value: Option<&Value>) -> Vec<String> {
    match value {
        None | Some(Value::Null) => vec!["(absent)".into()],
        Some(Value::String(text)) => text.lines().map(str::to_string).collect(),
        Some(other) => serde_json::to_string_pretty(other)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect(),
    }
}

fn print_diff(config: &UpstreamConfig, pin: &ToolPinRecord) {
    let Some(pending) = &pin.pending else {
        return;
    };
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let (before, after) = (
        parse(&pin.pinned.definition),
        parse(&pending.definition.definition),
    );
    output::line(&output::escape(&format!(
        "{} (upstream {}, tool {}): changed {}",
        config.gateway_name(&pin.tool),
        pin.upstream,
        pin.tool,
        pending.since.to_rfc3339()
    )));
    output::line(&format!("  pinned sha256 {}", pin.pinned.sha256));
    output::line(&format!("  now    sha256 {}", pending.definition.sha256));
    for field in changed_fields(&pin.pinned.definition, &pending.definition.definition) {
        output::line(&format!("  {field}:"));
        // Escaped: a description is text the upstream chose.
        for text in readable(before.get(field)) {
            output::line(&format!("  - {}", output::escape(&text)));
        }
        for text in readable(after.get(field)) {
            output::line(&format!("  + {}", output::escape(&text)));
        }
    }
}

fn diff_json(pin: &ToolPinRecord) -> Value {
    let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let mut value = pin_json(None, pin);
    value["pinned_definition"] = parse(&pin.pinned.definition);
    value["changed_definition"] = pin
        .pending
        .as_ref()
        .map(|p| parse(&p.definition.definition))
        .unwrap_or(Value::Null);
    value
}

async fn diff(ctx: &Context, name: &str, tool: Option<&str>, json_out: bool) -> anyhow::Result<()> {
    let config = configured(ctx, name)?;
    let store = ctx.open_store().await?;
    let pins = changed(&store, name, tool).await?;
    if json_out {
        output::json(&json!(pins.iter().map(diff_json).collect::<Vec<_>>()));
        return Ok(());
    }
    if pins.is_empty() {
        output::line(&output::escape(&format!(
            "No changed tool definitions of {name}: every tool it listed matches its pin."
        )));
        return Ok(());
    }
    for pin in &pins {
        print_diff(config, pin);
    }
    output::line("");
    // Each command names the hash shown above: a definition that changes
    // again between this review and the approval is not approved unseen.
    output::line("Accept exactly what is shown, tool by tool:");
    for pin in &pins {
        if let Some(pending) = &pin.pending {
            // Quoted: the tool's name is the upstream's choice, and this
            // line is made to be pasted into a shell. After `--`, so a name
            // that starts with `-` is the tool, not an option.
            output::line(&output::escape(&format!(
                "  gatehouse upstreams approve --sha256 {} {} -- {}",
                pending.definition.sha256,
                output::shell_word(name),
                output::shell_word(&pin.tool),
            )));
        }
    }
    Ok(())
}

/// Which changed definitions an approval accepts.
enum Reviewed<'a> {
    /// The one tool's definition with this SHA-256, as `diff` showed it.
    Exactly(&'a str),
    /// Whatever is pending when the command runs (`--all-pending`).
    AllPending,
}

async fn approve(
    ctx: &Context,
    name: &str,
    tool: Option<&str>,
    reviewed: Reviewed<'_>,
    json_out: bool,
) -> anyhow::Result<()> {
    let config = configured(ctx, name)?;
    let store = ctx.open_store().await?;
    let pins = changed(&store, name, tool).await?;
    if pins.is_empty() {
        bail!("nothing to approve: no changed tool definitions of {name:?}");
    }
    if let Reviewed::Exactly(sha256) = reviewed {
        let [pin] = pins.as_slice() else {
            bail!("--sha256 approves one tool: name it");
        };
        let pending = pin.pending.as_ref().map(|p| p.definition.sha256.as_str());
        if pending != Some(sha256) {
            bail!(
                "the changed definition of {:?} is not the one reviewed (sha256 {sha256}); run diff again",
                pin.tool
            );
        }
    }
    let now = SystemClock.now();
    let decider = operator();
    let (audit, writer) = ctx.command_audit_log(Arc::clone(&store))?;
    let mut approved = Vec::new();
    for pin in &pins {
        let Some(pending) = &pin.pending else {
            continue;
        };
        let sha = &pending.definition.sha256;
        // Only the definition shown (diff, or this command's own listing):
        // one that changed again meanwhile stays pending.
        if !store
            .approve_tool_definition(&pin.upstream, &pin.tool, sha, decider.name(), now)
            .await?
        {
            continue;
        }
        let fields = changed_fields(&pin.pinned.definition, &pending.definition.definition);
        audit
            .record(
                EventBuilder::new(AuditKind::Upstream, Outcome::Success, now)
                    .human(decider.name())
                    .tool(&config.gateway_name(&pin.tool))
                    .decision("allow")
                    .reason(APPROVED)
                    .source(Some("cli".into()))
                    .error(format!(
                        "approved the changed definition of {:?} at upstream {:?} ({}): sha256 {} → {sha}",
                        pin.tool,
                        pin.upstream,
                        fields.join(", "),
                        pin.pinned.sha256
                    ))
                    .build(),
            )
            .await?;
        approved.push((pin, fields));
    }
    ctx.close_command_audit_log(&store, audit, writer).await;
    if json_out {
        output::json(&json!(
            approved
                .iter()
                .map(|(pin, fields)| json!({
                    "upstream": pin.upstream,
                    "tool": pin.tool,
                    "name": config.gateway_name(&pin.tool),
                    "sha256": pin.pending.as_ref().map(|p| p.definition.sha256.clone()),
                    "changed_fields": fields,
                }))
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    if approved.is_empty() {
        bail!("nothing approved: the definitions changed again meanwhile; run diff again");
    }
    for (pin, fields) in &approved {
        output::line(&output::escape(&format!(
            "Approved the new definition of {} ({}). It is served again from the next request on, on every instance.",
            config.gateway_name(&pin.tool),
            fields.join(", ")
        )));
    }
    Ok(())
}

pub async fn run(ctx: &Context, command: UpstreamsCommand) -> anyhow::Result<()> {
    match command {
        UpstreamsCommand::List { json } => list(ctx, json.json).await,
        UpstreamsCommand::Status { tenant, json } => status(ctx, tenant, json.json).await,
        UpstreamsCommand::Diff { name, tool, json } => {
            diff(ctx, &name, tool.as_deref(), json.json).await
        }
        UpstreamsCommand::Approve {
            name,
            tool,
            sha256,
            all_pending,
            json,
        } => {
            let reviewed = match (sha256.as_deref(), all_pending) {
                (Some(sha256), _) => Reviewed::Exactly(sha256),
                (None, true) => Reviewed::AllPending,
                (None, false) => bail!(
                    "name the definition you reviewed: run `gatehouse upstreams diff {}` and the \
                     command it prints for each tool (--sha256 HASH); --all-pending approves every \
                     change as it is now, including one made after your review",
                    output::shell_word(&name)
                ),
            };
            approve(ctx, &name, tool.as_deref(), reviewed, json.json).await
        }
    }
}
