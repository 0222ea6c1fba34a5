//! `gatehouse approvals list|approve|deny`: deciding operation-token
//! requests from a shell. Shell access to the server is operator access,
//! so every tenant's approvals are visible here.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use gatehouse_authz::{ApprovalError, ApprovalSettings, Approvals, Decider, decision_event};
use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_store::ApprovalRecord;
use serde_json::json;

use crate::cli::ApprovalsCommand;
use crate::commands::keys::ts_text;
use crate::context::Context;
use crate::output;

fn approval_json(a: &ApprovalRecord, now: Timestamp) -> serde_json::Value {
    json!({
        "id": a.id,
        "status": a.state(now),
        "tenant": a.tenant,
        "human": a.human,
        "agent": a.agent,
        "credential": a.credential_id,
        "task_grant": a.task_grant,
        "task": a.task,
        "tool": a.tool,
        "arguments": serde_json::from_str::<serde_json::Value>(&a.arguments).unwrap_or_default(),
        "masked_fields": a.masked_fields,
        "arguments_sha256": a.arguments_hash,
        "created_at": a.created_at.to_rfc3339(),
        "expires_at": a.expires_at.to_rfc3339(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.map(|t| t.to_rfc3339()),
        "redeemed_at": a.redeemed_at.map(|t| t.to_rfc3339()),
    })
}

/// The fields the policy masks (`name=fingerprint`), or `-`.
fn masked_text(a: &ApprovalRecord) -> String {
    if a.masked_fields.is_empty() {
        return "-".into();
    }
    a.masked_fields
        .iter()
        .map(|(name, hash)| format!("{name}={hash}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn operator() -> Decider {
    Decider::Operator {
        name: crate::commands::operator_audit::operator_name(),
    }
}

async fn decide(ctx: &Context, id: &str, approve: bool, json_out: bool) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let store = ctx.open_store().await?;
    let settings = ApprovalSettings::default();
    let token_minutes = settings.token_ttl_ms / 60_000;
    let approvals = Approvals::new(
        Arc::clone(&store),
        ctx.servers_pepper(&store).await?,
        settings,
    );
    let decider = operator();
    let decided = match approvals.decide(id, approve, &decider, now).await {
        Ok(decided) => decided,
        Err(ApprovalError::NotFound) => bail!("no approval with id {id:?}"),
        Err(ApprovalError::NotPending) => {
            bail!("approval {id} is not pending any more (already decided, or expired)")
        }
        Err(e) => return Err(e.into()),
    };
    let approval = &decided.approval;
    let (audit, writer) = ctx.command_audit_log(Arc::clone(&store))?;
    let written = audit
        .record(decision_event(
            approval,
            decider.name(),
            approve,
            Some("cli".to_string()),
            now,
        ))
        .await;
    ctx.close_command_audit_log(&store, audit, writer).await;
    written?;
    if json_out {
        let mut value = approval_json(approval, now);
        if let Some(token) = &decided.token {
            value["operation_token"] = json!(token);
        }
        output::json(&value);
        return Ok(());
    }
    match &decided.token {
        Some(token) => {
            output::line(&format!(
                "Approved {} ({} for {}).",
                approval.id,
                output::escape(&approval.tool),
                output::escape(&approval.agent)
            ));
            output::line(&format!(
                "Operation token, single use, valid {token_minutes} minutes, for exactly these arguments:"
            ));
            output::line("");
            output::line(&format!("  {token}"));
        }
        None => output::line(&format!(
            "Denied {}; the agent's retry will be refused.",
            approval.id
        )),
    }
    Ok(())
}

/// The largest JSON `approvals hash` reads (a call's arguments are bounded
/// by the request body limit, 1 MiB by default).
const MAX_HASHED_BYTES: u64 = 16 * 1024 * 1024;

/// `approvals hash`: the keyed hash of the JSON on standard input.
async fn hash(
    ctx: &Context,
    approval: Option<String>,
    field: Option<String>,
) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_HASHED_BYTES)
        .read_to_string(&mut text)
        .context("cannot read JSON from standard input")?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .context("standard input is not one JSON value (a string needs its quotes: '\"text\"')")?;
    let store = ctx.open_store().await?;
    let approvals = Approvals::new(
        Arc::clone(&store),
        ctx.servers_pepper(&store).await?,
        ApprovalSettings::default(),
    );
    let hash = match (approval, field) {
        (Some(id), Some(field)) => approvals.masked_fingerprint(&id, &field, &value),
        _ => approvals.arguments_hash(&value),
    };
    output::line(&hash);
    Ok(())
}

pub async fn run(ctx: &Context, command: ApprovalsCommand) -> anyhow::Result<()> {
    match command {
        ApprovalsCommand::List { all, json } => {
            let now = SystemClock.now();
            let store = ctx.open_store().await?;
            let records = store.list_approvals(None, !all, now).await?;
            if json.json {
                output::json(&json!(
                    records
                        .iter()
                        .map(|a| approval_json(a, now))
                        .collect::<Vec<_>>()
                ));
                return Ok(());
            }
            if records.is_empty() {
                output::line(if all {
                    "No approvals."
                } else {
                    "No pending approvals."
                });
                return Ok(());
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|a| {
                    vec![
                        a.id.clone(),
                        a.state(now).to_string(),
                        a.tenant.clone(),
                        a.human.clone().unwrap_or_else(|| "-".into()),
                        a.agent.clone(),
                        a.tool.clone(),
                        a.task.clone().unwrap_or_else(|| "-".into()),
                        ts_text(Some(a.expires_at)),
                        a.arguments.clone(),
                        masked_text(a),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "STATUS",
                    "TENANT",
                    "HUMAN",
                    "AGENT",
                    "TOOL",
                    "TASK",
                    "EXPIRES",
                    "ARGUMENTS",
                    "MASKED (KEYED SHA-256)",
                ],
                &rows,
            );
        }
        ApprovalsCommand::Hash { approval, field } => hash(ctx, approval, field).await?,
        ApprovalsCommand::Approve { id, json } => decide(ctx, &id, true, json.json).await?,
        ApprovalsCommand::Deny { id, json } => decide(ctx, &id, false, json.json).await?,
    }
    Ok(())
}
