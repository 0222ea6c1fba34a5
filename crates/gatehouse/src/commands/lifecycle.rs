//! `gatehouse lifecycle run [--dry-run]`, and the lifecycle columns of
//! `keys list` and `clients list` (age, last use, what comes next).

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_store::Store;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::cli::LifecycleCommand;
use crate::context::Context;
use crate::lifecycle::pass::{Action, Applied, SigningKeys, apply, given_warnings, plan};
use crate::lifecycle::plan::{Step, Subject, next_step};
use crate::lifecycle::policy::LifecyclePolicy;
use crate::output;

/// Whole days, then hours: "12d", "3h", "0h".
fn age_text(ms: i64) -> String {
    const HOUR: i64 = 3600 * 1000;
    let ms = ms.max(0);
    if ms >= 24 * HOUR {
        format!("{}d", ms / (24 * HOUR))
    } else {
        format!("{}h", ms / HOUR)
    }
}

/// What a listing shows about one credential's lifecycle.
pub struct Status {
    created_at: Timestamp,
    /// False for a credential the lifecycle no longer watches (revoked,
    /// expired, rotated away) or never does (a client without a secret).
    watched: bool,
    next: Option<(Timestamp, Step)>,
}

impl Status {
    /// `subject` is `None` for a credential the lifecycle no longer watches.
    pub async fn of(
        store: &Arc<dyn Store>,
        subject: Option<Subject>,
        created_at: Timestamp,
        policy: &LifecyclePolicy,
        now: Timestamp,
    ) -> anyhow::Result<Status> {
        let Some(subject) = subject else {
            return Ok(Status {
                created_at,
                watched: false,
                next: None,
            });
        };
        let given = given_warnings(store, &subject, policy, now).await?;
        let thresholds =
            policy.thresholds(subject.kind, subject.tenant.as_deref().unwrap_or_default());
        Ok(Status {
            created_at,
            watched: true,
            next: next_step(&subject, &thresholds, now, &given),
        })
    }

    /// Its age and next step with the time (`due`: the next pass does it).
    pub fn json(&self, now: Timestamp) -> Value {
        let next = self.next.map(|(at, step)| {
            json!({
                "action": step.action(),
                "code": step.code(),
                "at": at.to_rfc3339(),
                "due": at <= now,
            })
        });
        json!({
            "age_secs": (now.as_millis() - self.created_at.as_millis()).max(0) / 1000,
            "watched": self.watched,
            "next": next,
        })
    }

    /// The AGE and NEXT (LIFECYCLE) columns.
    pub fn columns(&self, now: Timestamp) -> [String; 2] {
        let age = age_text(now.as_millis() - self.created_at.as_millis());
        let next = match self.next {
            Some((at, step)) if at <= now => {
                format!("{} now (due {})", step.code(), at.to_rfc3339())
            }
            Some((at, step)) => format!("{} at {}", step.code(), at.to_rfc3339()),
            None => "-".into(),
        };
        [age, next]
    }
}

fn action_json(action: &Action, now: Timestamp) -> Value {
    let subject = &action.subject;
    let mut value = json!({
        "kind": subject.kind.as_str(),
        "id": subject.id,
        "tenant": subject.tenant,
        "action": action.step.action(),
        "code": action.step.code(),
        "at": now.to_rfc3339(),
        "detail": action.detail,
    });
    if let Step::Rotate { activates_at } = action.step {
        value["signs_from"] = json!(activates_at.to_rfc3339());
    }
    value
}

fn applied_json(applied: &Applied, now: Timestamp) -> Value {
    let mut value = action_json(&applied.action, now);
    value["done"] = json!(applied.done);
    if let Some(kid) = &applied.new_kid {
        value["new_kid"] = json!(kid);
    }
    value
}

fn print_table(rows: Vec<Vec<String>>) {
    output::table(&["KIND", "ID", "TENANT", "ACTION", "CODE", "DETAIL"], &rows);
}

fn row(action: &Action, done: Option<bool>) -> Vec<String> {
    let mut what = action.step.action().to_string();
    if done == Some(false) {
        what.push_str(" (done elsewhere)");
    }
    vec![
        action.subject.kind.as_str().to_string(),
        action.subject.id.clone(),
        action.subject.tenant.clone().unwrap_or_else(|| "-".into()),
        what,
        action.step.code().to_string(),
        action.detail.clone(),
    ]
}

async fn run_now(ctx: &Context, dry_run: bool, json_out: bool) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let policy = ctx.config.lifecycle.policy();
    let store = ctx.open_store().await?;
    let signing = ctx.config.oauth.enabled;
    let actions = plan(&store, &policy, signing, now).await?;
    if dry_run {
        if json_out {
            output::json(&json!({
                "dry_run": true,
                "now": now.to_rfc3339(),
                "actions": actions.iter().map(|a| action_json(a, now)).collect::<Vec<_>>(),
            }));
        } else if actions.is_empty() {
            output::line("Nothing to do now: every credential is within the lifecycle policy.");
        } else {
            output::line(&format!(
                "Would do now ({}; nothing was changed):",
                now.to_rfc3339()
            ));
            print_table(actions.iter().map(|a| row(a, None)).collect());
        }
        return Ok(());
    }
    let master = if signing
        && actions
            .iter()
            .any(|a| matches!(a.step, Step::Rotate { .. }))
    {
        Some(ctx.master_key()?)
    } else {
        None
    };
    let (audit, writer) = ctx.command_audit_log(Arc::clone(&store))?;
    let signing_keys = master.as_ref().map(|master| SigningKeys { master });
    let alerts = ctx.command_alerts(Arc::clone(&store));
    let result = apply(
        &store,
        &audit,
        &alerts,
        signing_keys.as_ref(),
        actions,
        now,
        &CancellationToken::new(),
    )
    .await;
    ctx.close_command_audit_log(&store, audit, writer).await;
    let applied = result?;
    if json_out {
        output::json(&json!({
            "dry_run": false,
            "now": now.to_rfc3339(),
            "actions": applied.iter().map(|a| applied_json(a, now)).collect::<Vec<_>>(),
        }));
    } else if applied.is_empty() {
        output::line("Nothing to do now: every credential is within the lifecycle policy.");
    } else {
        let done = applied.iter().filter(|a| a.done).count();
        output::line(&format!(
            "Applied the lifecycle policy ({}): {done} action(s), each audited.",
            now.to_rfc3339()
        ));
        print_table(
            applied
                .iter()
                .map(|a| row(&a.action, Some(a.done)))
                .collect(),
        );
    }
    Ok(())
}

pub async fn run(ctx: &Context, command: LifecycleCommand) -> anyhow::Result<()> {
    match command {
        LifecycleCommand::Run { dry_run, json } => run_now(ctx, dry_run, json.json).await,
    }
}

/// `--overlap` of `keys rotate` and `clients rotate-secret` when not given.
pub fn default_overlap(
    policy: &LifecyclePolicy,
    kind: crate::lifecycle::policy::CredentialKind,
    tenant: &str,
) -> Duration {
    let ms = policy.thresholds(kind, tenant).rotation_overlap;
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
