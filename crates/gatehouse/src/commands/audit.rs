use std::time::Duration;

use anyhow::bail;
use gatehouse_core::{AuditEvent, AuditKind, Clock, Outcome, SystemClock};
use gatehouse_store::{AuditQuery, AuditRow};
use serde_json::json;

use super::audit_verify;
use crate::cli::{AuditCommand, AuditQueryArgs};
use crate::context::Context;
use crate::output;

const FOLLOW_POLL: Duration = Duration::from_millis(500);

fn row_json(row: &AuditRow) -> serde_json::Value {
    let mut value = serde_json::to_value(&row.event).unwrap_or_default();
    value["seq"] = json!(row.seq);
    value["time"] = json!(row.event.ts.to_rfc3339());
    value
}

fn who(event: &AuditEvent) -> String {
    let human = event.human.as_deref().unwrap_or("-");
    let agent = event
        .agent
        .as_deref()
        .or(event.credential.as_deref())
        .unwrap_or("-");
    format!("{}/{}", output::escape(human), output::escape(agent))
}

/// One record per line. Every stored string may come from a caller (a user
/// name typed at the login form, a tool name, arguments), so each is
/// escaped: a newline in a name cannot start a forged record.
fn row_text(row: &AuditRow) -> String {
    let e = &row.event;
    let shown = |value: Option<&str>| output::escape(value.unwrap_or("-")).into_owned();
    let mut text = format!(
        "{} {:<14} {:<8} {:<20} tenant={} tool={}",
        e.ts.to_rfc3339(),
        e.kind.as_str(),
        e.outcome.as_str(),
        who(e),
        shown(e.tenant.as_deref()),
        shown(e.tool.as_deref()),
    );
    // The identity provider that named the human and agent: its `alice`
    // is not the local user `alice`.
    if let Some(issuer) = &e.issuer {
        text.push_str(&format!(" issuer={}", output::escape(issuer)));
    }
    if let Some(reason) = &e.reason {
        text.push_str(&format!(" reason={}", output::escape(reason)));
    }
    if let Some(approval) = &e.approval {
        text.push_str(&format!(" approval={}", output::escape(approval)));
    }
    if let Some(error) = &e.error {
        // Quotes escaped too, so a message cannot close the field and
        // append fields of its own (`" reason=…`).
        let shown = output::escape(error).replace('"', "\\\"");
        text.push_str(&format!(" error=\"{shown}\""));
    }
    if let Some(args) = &e.arguments {
        text.push_str(&format!(" args={}", output::escape(&args.to_string())));
    }
    if let Some(hash) = &e.args_sha256 {
        text.push_str(&format!(" args_sha256={}", output::escape(hash)));
    }
    text
}

fn print_rows(rows: &[AuditRow], json: bool) {
    for row in rows {
        if json {
            output::json(&row_json(row));
        } else {
            output::line(&row_text(row));
        }
    }
}

fn query_from_args(args: &AuditQueryArgs) -> anyhow::Result<AuditQuery> {
    let outcome = match &args.outcome {
        Some(text) => match Outcome::parse(text) {
            Some(o) => Some(o),
            None => bail!("unknown outcome {text:?} (success, failure, denied, error)"),
        },
        None => None,
    };
    let kind = match &args.kind {
        Some(text) => match AuditKind::parse(text) {
            Some(k) => Some(k),
            None => bail!(
                "unknown kind {text:?} ({})",
                AuditKind::ALL.map(AuditKind::as_str).join(", ")
            ),
        },
        None => None,
    };
    let since = args.since.map(|d| {
        let ms = i64::try_from(Duration::from(d).as_millis()).unwrap_or(i64::MAX);
        SystemClock.now().plus_millis(-ms)
    });
    Ok(AuditQuery {
        since,
        after_seq: None,
        principal: args.principal.clone(),
        tenant: args.tenant.clone(),
        tool: args.tool.clone(),
        kind,
        outcome,
        request_id: args.request_id.clone(),
        issuer: args.issuer.clone(),
        limit: Some(args.limit),
    })
}

pub async fn run(ctx: &Context, command: AuditCommand) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    match command {
        AuditCommand::Tail {
            lines,
            follow,
            json,
        } => {
            let rows = store
                .query_audit(&AuditQuery {
                    limit: Some(lines),
                    ..Default::default()
                })
                .await?;
            print_rows(&rows, json);
            if follow {
                let mut last = rows.last().map(|r| r.seq).unwrap_or(0);
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(FOLLOW_POLL) => {}
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                    let rows = store
                        .query_audit(&AuditQuery {
                            after_seq: Some(last),
                            limit: Some(1000),
                            ..Default::default()
                        })
                        .await?;
                    if let Some(row) = rows.last() {
                        last = row.seq;
                    }
                    print_rows(&rows, json);
                }
            }
        }
        AuditCommand::Query(args) => {
            let rows = store.query_audit(&query_from_args(&args)?).await?;
            print_rows(&rows, args.json);
        }
        AuditCommand::Verify { from, files, json } => {
            // Where the master key is (the server's host), the checkpoint
            // keys are proven by it; elsewhere they are taken as stored,
            // and the report says so.
            let master = ctx.existing_master_key().ok();
            let keys = audit_verify::checkpoint_keys(&*store, master.as_ref()).await?;
            // Every server and stdio run signs its chain, so the rule holds
            // whatever keys the database (which an attacker may have
            // emptied) still has.
            let span = Some(audit_verify::max_unsigned_span(
                ctx.config.audit.checkpoint_interval,
            ));
            let result = if files.is_empty() {
                audit_verify::verify_store(&*store, &keys, from, span).await?
            } else {
                let stored = store.audit_checkpoints().await?;
                audit_verify::verify_files(&files, &keys, &stored, from.is_some(), span)?
            };
            return report(result, json);
        }
    }
    Ok(())
}

/// Prints the verification's result; a finding is an error (exit status 1).
fn report(
    result: Result<audit_verify::Summary, audit_verify::Finding>,
    json: bool,
) -> anyhow::Result<()> {
    match result {
        Ok(s) => {
            if json {
                output::json(&json!({
                    "verified": true,
                    "chained_records": s.chained,
                    "unchained_records": s.unchained,
                    "chains": s.chains,
                    "checkpoints": s.checkpoints,
                    "records_after_last_checkpoint": s.after_last_checkpoint,
                    "keys_authenticated": s.keys_authenticated,
                    "unsigned_chains": s.unsigned_chains,
                }));
            } else {
                output::line(&format!(
                    "audit trail verified: {} chained records in {} chain(s), {} signed checkpoint(s) matching",
                    s.chained, s.chains, s.checkpoints
                ));
                if s.unchained > 0 {
                    output::line(&format!(
                        "{} earlier record(s) were written before records were chained and cannot be checked",
                        s.unchained
                    ));
                }
                if s.after_last_checkpoint > 0 {
                    output::line(&format!(
                        "{} record(s) after the last checkpoint are protected by the chain only",
                        s.after_last_checkpoint
                    ));
                }
                if !s.unsigned_chains.is_empty() {
                    let shown: Vec<&str> = s
                        .unsigned_chains
                        .iter()
                        .take(5)
                        .map(String::as_str)
                        .collect();
                    output::line(&format!(
                        "{} chain(s) have records no checkpoint signs ({}{}): a process killed before it signed, one still in its first checkpoint interval, or records inserted by someone without the signing key",
                        s.unsigned_chains.len(),
                        shown.join(", "),
                        if s.unsigned_chains.len() > shown.len() {
                            ", …"
                        } else {
                            ""
                        }
                    ));
                }
                if !s.keys_authenticated {
                    output::line(
                        "the checkpoint keys were taken from the database unproven (no master key here, or not the servers'): run verify where the servers' master key is to rule out a key added there",
                    );
                }
            }
            Ok(())
        }
        Err(finding) => {
            if json {
                output::json(&json!({
                    "verified": false,
                    "at": finding.at,
                    "problem": finding.problem,
                }));
            }
            bail!(
                "audit trail TAMPERED at {}: {}",
                finding.at,
                finding.problem
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{AuditKind, Outcome, Timestamp};

    #[test]
    fn an_error_text_cannot_close_its_field_or_break_the_line() {
        let event = gatehouse_audit::EventBuilder::new(
            AuditKind::Authentication,
            Outcome::Failure,
            Timestamp(0),
        )
        .reason("invalid_token")
        .error("bad\" reason=allowed outcome=success\nforged".to_string())
        .build();
        let text = row_text(&AuditRow { seq: 1, event });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.ends_with(r#"error="bad\" reason=allowed outcome=success\nforged""#),
            "{text}"
        );
    }
    /// A record of a caller an external provider named says which one, so
    /// its `alice` is not read as the local user `alice`.
    #[test]
    fn the_provider_that_named_the_caller_is_shown() {
        let mut event = gatehouse_audit::EventBuilder::new(
            AuditKind::ToolDecision,
            Outcome::Success,
            Timestamp(0),
        )
        .human("alice")
        .build();
        assert!(
            !row_text(&AuditRow {
                seq: 1,
                event: event.clone()
            })
            .contains("issuer=")
        );
        event.issuer = Some("https://partner-idp.example".into());
        let text = row_text(&AuditRow { seq: 1, event });
        assert!(
            text.contains(" issuer=https://partner-idp.example"),
            "{text}"
        );
    }
}
