//! `gatehouse grants list|revoke`: task grants (session-scoped allowlists).

use std::sync::Arc;

use anyhow::bail;
use gatehouse_authz::TaskGrants;
use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_store::TaskGrantRecord;
use serde_json::json;

use crate::cli::GrantsCommand;
use crate::commands::operator_audit::operator_name;
use crate::context::Context;
use crate::output;

fn grant_json(g: &TaskGrantRecord) -> serde_json::Value {
    json!({
        "id": g.id,
        "task": g.task,
        "tools": g.tools,
        "tenant": g.tenant,
        "human": g.human,
        "agent": g.agent,
        "credential": g.credential_id,
        "created_at": g.created_at.to_rfc3339(),
        "expires_at": g.expires_at.to_rfc3339(),
    })
}

async fn revoke(ctx: &Context, id: &str, now: Timestamp) -> anyhow::Result<bool> {
    let store = ctx.open_store().await?;
    let (audit, writer) = ctx.command_audit_log(Arc::clone(&store))?;
    let grants = TaskGrants::new(Arc::clone(&store), audit.clone());
    let revoked = grants.revoke(id, &operator_name(), now).await;
    drop(grants);
    ctx.close_command_audit_log(&store, audit, writer).await;
    revoked.map_err(Into::into)
}

pub async fn run(ctx: &Context, command: GrantsCommand) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match command {
        GrantsCommand::List { tenant, json } => {
            let store = ctx.open_store().await?;
            let grants = store.list_task_grants(tenant.as_deref(), now).await?;
            if json.json {
                output::json(&json!(grants.iter().map(grant_json).collect::<Vec<_>>()));
            } else if grants.is_empty() {
                output::line("No live task grants.");
            } else {
                let rows: Vec<Vec<String>> = grants
                    .iter()
                    .map(|g| {
                        vec![
                            g.id.clone(),
                            g.task.clone(),
                            g.tenant.clone(),
                            g.human.clone().unwrap_or_else(|| "-".into()),
                            g.agent.clone(),
                            g.expires_at.to_rfc3339(),
                            g.tools.join(","),
                        ]
                    })
                    .collect();
                output::table(
                    &["ID", "TASK", "TENANT", "HUMAN", "AGENT", "EXPIRES", "TOOLS"],
                    &rows,
                );
            }
        }
        GrantsCommand::Revoke { id, json } => {
            if !revoke(ctx, &id, now).await? {
                bail!("no live task grant with id {id:?}");
            }
            if json.json {
                output::json(
                    &json!({"id": id, "status": "revoked", "revoked_at": now.to_rfc3339()}),
                );
            } else {
                output::line(&format!(
                    "Revoked task grant {id}. Its tokens and sessions are refused from the next request on."
                ));
            }
        }
    }
    Ok(())
}
