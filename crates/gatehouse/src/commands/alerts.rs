//! `gatehouse alerts list|ack`: the alerts the detectors raised.

use std::sync::Arc;

use anyhow::bail;
use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Clock, Outcome, SystemClock, Timestamp};
use gatehouse_store::{AckOutcome, AlertRecord};
use serde_json::json;

use crate::cli::AlertsCommand;
use crate::context::Context;
use crate::output;

fn alert_json(a: &AlertRecord) -> serde_json::Value {
    json!({
        "id": a.id,
        "raised_at": a.raised_at.to_rfc3339(),
        "code": a.code,
        "tenant": a.tenant,
        "subject": a.subject,
        "detail": a.detail,
        "acked_at": a.acked_at.map(Timestamp::to_rfc3339),
        "acked_by": a.acked_by,
        "webhook": {
            "state": a.delivery_state.as_str(),
            "attempts": a.delivery_attempts,
            "next_attempt_at": a.next_delivery_at.map(Timestamp::to_rfc3339),
            "last_error": a.last_delivery_error,
        },
    })
}

fn list(alerts: &[AlertRecord], json_out: bool, all: bool) {
    if json_out {
        output::json(&json!(alerts.iter().map(alert_json).collect::<Vec<_>>()));
        return;
    }
    if alerts.is_empty() {
        output::line(if all {
            "No alerts."
        } else {
            "No alerts waiting to be acknowledged."
        });
        return;
    }
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.raised_at.to_rfc3339(),
                a.code.clone(),
                a.subject.clone(),
                match (&a.acked_at, &a.acked_by) {
                    (Some(at), by) => format!(
                        "acked {} by {}",
                        at.to_rfc3339(),
                        by.as_deref().unwrap_or("?")
                    ),
                    (None, _) => "open".into(),
                },
                a.delivery_state.as_str().to_string(),
                a.detail.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "RAISED", "CODE", "SUBJECT", "STATUS", "WEBHOOK", "DETAIL",
        ],
        &rows,
    );
}

/// `by` is the name the operator gave (`--by`, stored with the alert);
/// the audit record names the account that ran the command, which a flag
/// cannot change.
async fn ack(ctx: &Context, id: &str, by: &str, now: Timestamp) -> anyhow::Result<AckOutcome> {
    let operator = crate::commands::operator_audit::operator_name();
    let store = ctx.open_store().await?;
    let outcome = store.ack_alert(id, by, now).await?;
    if outcome == AckOutcome::Acked {
        let alert = store.alert(id).await?;
        let (audit, writer) = ctx.command_audit_log(Arc::clone(&store))?;
        let (code, subject) = alert
            .as_ref()
            .map(|a| (a.code.as_str(), a.subject.as_str()))
            .unwrap_or(("?", "?"));
        let mut event = EventBuilder::new(AuditKind::Alert, Outcome::Success, now)
            .human(&operator)
            .decision("ack")
            .reason("alert_acknowledged")
            .error(format!(
                "alert {id} ({code}, {subject}) acknowledged by {by} (the command ran as {operator})"
            ));
        if let Some(tenant) = alert.as_ref().and_then(|a| a.tenant.as_deref()) {
            event = event.tenant(tenant);
        }
        let written = audit.record(event.build()).await;
        ctx.close_command_audit_log(&store, audit, writer).await;
        written?;
    }
    Ok(outcome)
}

pub async fn run(ctx: &Context, command: AlertsCommand) -> anyhow::Result<()> {
    match command {
        AlertsCommand::List { all, limit, json } => {
            let store = ctx.open_store().await?;
            let alerts = store.alerts(all, limit).await?;
            list(&alerts, json.json, all);
        }
        AlertsCommand::Ack { id, by, json } => {
            // Without --by, the account running the command, as every
            // other operator record names it.
            let by = by.unwrap_or_else(crate::commands::operator_audit::operator_name);
            let now = SystemClock.now();
            match ack(ctx, &id, &by, now).await? {
                AckOutcome::Acked => {
                    if json.json {
                        output::json(&json!({
                            "id": id, "status": "acknowledged",
                            "acked_at": now.to_rfc3339(), "acked_by": by,
                        }));
                    } else {
                        output::line(&format!(
                            "Acknowledged alert {id} (by {}).",
                            output::escape(&by)
                        ));
                    }
                }
                AckOutcome::AlreadyAcked { at, by } => bail!(
                    "alert {id:?} was acknowledged already, at {} by {by:?}",
                    at.to_rfc3339()
                ),
                AckOutcome::NotFound => {
                    bail!("no alert with id {id:?} (see gatehouse alerts list --all)")
                }
            }
        }
    }
    Ok(())
}
