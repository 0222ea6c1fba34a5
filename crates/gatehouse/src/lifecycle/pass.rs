//! One housekeeping pass: read every live credential, decide what the
//! policy does now (`plan`), and do it with an audit record each (`apply`).
//!
//! Every action is exactly-once in the store itself, whoever runs it: a
//! revocation is a conditional update, a warning is recorded as a notice
//! (one row per credential, code and basis) before it is audited, and a
//! signing key's successor is claimed in the same transaction that adds
//! it. So a pass of `gatehouse lifecycle run` racing the server's own does
//! nothing twice; the lease only spares the instances the same scan.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_alerts::{Alert, AlertCode, AlertError, Alerts};
use gatehouse_audit::{AuditError, AuditLog, EventBuilder};
use gatehouse_authn::REPLACED_KEY_TRUST_MS;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_oauth::MasterKey;
use gatehouse_store::{
    ApiKeyRecord, ClientRecord, SigningKeyState, Store, StoreError, signing_schedule,
};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::plan::{Step, Subject, due_steps, signing_key_steps};
use crate::lifecycle::policy::{CredentialKind, LifecyclePolicy};

/// Who acts, in audit records.
pub const LIFECYCLE_AGENT: &str = "gatehouse-lifecycle";

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the audit record: {0}")]
    Audit(#[from] AuditError),
    #[error("cannot make a signing key: {0}")]
    SigningKey(String),
    #[error(transparent)]
    Alert(#[from] AlertError),
}

/// One thing the pass does (or, in a dry run, would do) now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub subject: Subject,
    pub step: Step,
    /// For people: what and why, with the dates. Never a secret.
    pub detail: String,
}

/// What came of an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub action: Action,
    /// False when another instance (or command) did it first.
    pub done: bool,
    /// The new signing key's id, for a rotation.
    pub new_kid: Option<String>,
}

/// Where the pass may rotate signing keys: the authorization server is on
/// and the master key is at hand.
pub struct SigningKeys<'a> {
    pub master: &'a MasterKey,
}

fn span(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(0))).to_string()
}

fn describe(subject: &Subject, step: Step, policy: &LifecyclePolicy) -> String {
    let t = policy.thresholds(subject.kind, subject.tenant.as_deref().unwrap_or_default());
    let what = format!("{} {}", subject.kind.as_str(), subject.id);
    let created = subject.created_at.to_rfc3339();
    match step {
        Step::WarnExpiring { expires_at } => {
            let then = if subject.kind == CredentialKind::SigningKey {
                "it is replaced then"
            } else {
                "it is revoked then"
            };
            format!(
                "{what} (created {created}) reaches its maximum age at {}: {then}",
                expires_at.to_rfc3339()
            )
        }
        Step::AlertUnused { since } => match t.unused_revoke {
            Some(revoke) => format!(
                "{what} unused since {}; revoked at {} unless used",
                since.to_rfc3339(),
                since.plus_millis(revoke).to_rfc3339()
            ),
            None => format!("{what} unused since {}", since.to_rfc3339()),
        },
        Step::RevokeMaxAge => format!(
            "{what} revoked: created {created}, maximum age {}",
            t.max_age.map_or_else(|| "-".into(), span)
        ),
        Step::RevokeUnused { since } => format!(
            "{what} revoked: unused since {} (unused_revoke {})",
            since.to_rfc3339(),
            t.unused_revoke.map_or_else(|| "-".into(), span)
        ),
        Step::Rotate { activates_at } => format!(
            "{what} (created {created}) is replaced: its successor is published now and signs from {}",
            activates_at.to_rfc3339()
        ),
    }
}

/// Of the warnings due now for `subject`, those already given (for the
/// listings' next step).
pub async fn given_warnings(
    store: &Arc<dyn Store>,
    subject: &Subject,
    policy: &LifecyclePolicy,
    now: Timestamp,
) -> Result<Vec<Step>, StoreError> {
    let t = policy.thresholds(subject.kind, subject.tenant.as_deref().unwrap_or_default());
    let mut given = Vec::new();
    for step in due_steps(subject, &t, now) {
        if let Some((code, basis)) = notice(step, subject)
            && store
                .lifecycle_notice_given(subject.kind.as_str(), &subject.id, code, basis)
                .await?
        {
            given.push(step);
        }
    }
    Ok(given)
}

/// The notice a warning is recorded under: (code, basis).
fn notice(step: Step, subject: &Subject) -> Option<(&'static str, Timestamp)> {
    match step {
        Step::WarnExpiring { .. } => Some((step.code(), subject.created_at)),
        Step::AlertUnused { since } => Some((step.code(), since)),
        _ => None,
    }
}

/// Every live credential the lifecycle watches, with its signing-key
/// successor state. Keys already expired or rotated (their successor is
/// watched instead) and clients without a secret of ours (public ones,
/// `private_key_jwt` ones) are left out.
/// An API key as the lifecycle watches it; `None` once it is revoked,
/// expired or rotated (its successor is watched instead; it ends at the
/// end of the overlap).
pub fn api_key_subject(key: &ApiKeyRecord, now: Timestamp) -> Option<Subject> {
    if key.is_revoked() || key.is_expired(now) || key.rotated_to.is_some() {
        return None;
    }
    Some(Subject {
        kind: CredentialKind::ApiKey,
        id: key.id.clone(),
        tenant: Some(key.tenant.clone()),
        human: key.owner.clone(),
        created_at: key.created_at,
        last_used_at: key.last_used_at,
    })
}

/// A client as the lifecycle watches it: only one that authenticates with
/// a secret we issued. Public clients have no secret, `private_key_jwt`
/// ones keep their keys themselves (and revoked ones are done).
pub fn client_subject(client: &ClientRecord) -> Option<Subject> {
    if client.revoked_at.is_some() || client.secret_hash.is_none() || client.signs_assertions() {
        return None;
    }
    Some(Subject {
        kind: CredentialKind::ClientSecret,
        id: client.id.clone(),
        tenant: Some(client.tenant.clone()),
        human: None,
        // The secret's age: a rotation starts it again (and its warning
        // is given again, for the new secret).
        created_at: client.secret_issued_at(),
        last_used_at: client.last_used_at,
    })
}

/// API keys are read this many at a time: a store with 100,000 keys held
/// them all at once, ~65 MB for the length of a pass (bench/README.md).
const KEY_PAGE: u32 = 1000;

/// Calls `each` with every live credential the lifecycle watches but
/// signing keys.
async fn each_subject(
    store: &Arc<dyn Store>,
    now: Timestamp,
    mut each: impl FnMut(Subject),
) -> Result<(), StoreError> {
    let mut after = String::new();
    loop {
        let page = store.api_keys_page(&after, KEY_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        for key in &page {
            if let Some(subject) = api_key_subject(key, now) {
                each(subject);
            }
        }
    }
    for client in store.list_clients().await? {
        if let Some(subject) = client_subject(&client) {
            each(subject);
        }
    }
    for grant in store.live_grants().await? {
        each(Subject {
            kind: CredentialKind::Grant,
            id: grant.id,
            tenant: Some(grant.tenant),
            human: Some(grant.username),
            created_at: grant.created_at,
            last_used_at: grant.last_used_at,
        });
    }
    Ok(())
}

/// What the policy does now, warnings already given left out.
/// `signing_keys`: whether the authorization server (and so its signing
/// keys) is on.
pub async fn plan(
    store: &Arc<dyn Store>,
    policy: &LifecyclePolicy,
    signing_keys: bool,
    now: Timestamp,
) -> Result<Vec<Action>, StoreError> {
    let mut actions = Vec::new();
    each_subject(store, now, |subject| {
        let t = policy.thresholds(subject.kind, subject.tenant.as_deref().unwrap_or_default());
        for step in due_steps(&subject, &t, now) {
            actions.push((subject.clone(), step));
        }
    })
    .await?;
    if signing_keys {
        let records = store.signing_keys().await?;
        let schedule = signing_schedule(&records, now, REPLACED_KEY_TRUST_MS);
        let has_successor = schedule
            .keys
            .iter()
            .any(|k| k.state == SigningKeyState::Next);
        if let Some(active) = schedule
            .keys
            .iter()
            .find(|k| k.state == SigningKeyState::Active)
        {
            let subject = Subject {
                kind: CredentialKind::SigningKey,
                id: active.record.kid.clone(),
                tenant: None,
                human: None,
                created_at: active.record.created_at,
                // In use while it signs; the lifecycle has no unused rule for it.
                last_used_at: Some(now),
            };
            for step in signing_key_steps(&subject, has_successor, &policy.signing_keys, now) {
                actions.push((subject.clone(), step));
            }
        }
    }
    let mut planned = Vec::with_capacity(actions.len());
    for (subject, step) in actions {
        if let Some((code, basis)) = notice(step, &subject)
            && store
                .lifecycle_notice_given(subject.kind.as_str(), &subject.id, code, basis)
                .await?
        {
            continue;
        }
        let detail = describe(&subject, step, policy);
        planned.push(Action {
            subject,
            step,
            detail,
        });
    }
    Ok(planned)
}

/// Whether a credential is still as the plan saw it when its revocation
/// comes (a pass over many credentials writes each warning's records
/// first, which can take minutes): a client whose secret was rotated
/// since, or (for a revocation for disuse) a key or client used since, is
/// left to the next pass, which plans it again from what it is then. Use
/// says nothing against the maximum age: a busy key over it is revoked.
/// Grants are not read one by one; their revocation is as planned.
async fn as_planned(
    store: &Arc<dyn Store>,
    subject: &Subject,
    step: Step,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let fresh = match subject.kind {
        CredentialKind::ApiKey => store
            .api_key(&subject.id)
            .await?
            .and_then(|key| api_key_subject(&key, now)),
        CredentialKind::ClientSecret => store
            .client(&subject.id)
            .await?
            .and_then(|client| client_subject(&client)),
        CredentialKind::Grant | CredentialKind::SigningKey => return Ok(true),
    };
    let unused_as_planned = |fresh: &Subject| {
        !matches!(step, Step::RevokeUnused { .. }) || fresh.last_used_at == subject.last_used_at
    };
    Ok(fresh
        .is_some_and(|fresh| fresh.created_at == subject.created_at && unused_as_planned(&fresh)))
}

async fn revoke(
    store: &Arc<dyn Store>,
    subject: &Subject,
    now: Timestamp,
) -> Result<bool, StoreError> {
    match subject.kind {
        CredentialKind::ApiKey => store.revoke_api_key(&subject.id, now).await,
        CredentialKind::ClientSecret => store.revoke_client(&subject.id, now).await,
        CredentialKind::Grant => store.revoke_grant(&subject.id, now).await,
        // Never planned: a signing key is replaced, not revoked, by age.
        CredentialKind::SigningKey => Ok(false),
    }
}

/// Does the planned actions, each with its audit record (written before
/// the next action starts). Stops at the first error, and before the next
/// action once `stop` is cancelled (never in the middle of one): what was
/// done is audited, what was not is planned again by the next pass.
pub async fn apply(
    store: &Arc<dyn Store>,
    audit: &AuditLog,
    alerts: &Alerts,
    signing: Option<&SigningKeys<'_>>,
    actions: Vec<Action>,
    now: Timestamp,
    stop: &CancellationToken,
) -> Result<Vec<Applied>, PassError> {
    let mut applied = Vec::with_capacity(actions.len());
    for action in actions {
        if stop.is_cancelled() {
            break;
        }
        let subject = &action.subject;
        let mut new_kid = None;
        let done = match action.step {
            Step::WarnExpiring { .. } | Step::AlertUnused { .. } => {
                warn(store, audit, alerts, &action, now).await?
            }
            Step::RevokeMaxAge | Step::RevokeUnused { .. } => {
                if as_planned(store, subject, action.step, now).await? {
                    revoke(store, subject, now).await?
                } else {
                    false
                }
            }
            Step::Rotate { activates_at } => match signing {
                Some(signing) => {
                    check_master_opens(store, signing.master, &subject.id).await?;
                    let record =
                        gatehouse_oauth::new_signing_key(signing.master, now, activates_at)
                            .map_err(|e| PassError::SigningKey(e.to_string()))?;
                    let added = store
                        .add_successor_signing_key(&subject.id, &record, now)
                        .await?;
                    new_kid = added.then_some(record.kid);
                    added
                }
                None => false,
            },
        };
        let acted = matches!(
            action.step,
            Step::RevokeMaxAge | Step::RevokeUnused { .. } | Step::Rotate { .. }
        );
        if done
            && acted
            && let Err(e) = audit.record(event(&action, new_kid.as_deref(), now)).await
        {
            // Done, and its record lost: the operator's log says what.
            tracing::error!(
                credential = %subject.id,
                action = action.step.code(),
                detail = %action.detail,
                error = %e,
                "lifecycle: an action was done but its audit record could not be written"
            );
            return Err(e.into());
        }
        applied.push(Applied {
            action,
            done,
            new_kid,
        });
    }
    Ok(applied)
}

/// A warning: the alert first, then the notice that keeps later passes from
/// raising it again. A pass that stops between the two (an error, a
/// shutdown, a crash) raises the alert again next time, rather than never.
async fn warn(
    store: &Arc<dyn Store>,
    audit: &AuditLog,
    alerts: &Alerts,
    action: &Action,
    now: Timestamp,
) -> Result<bool, PassError> {
    let subject = &action.subject;
    let (Some((code, basis)), Some(alert)) = (notice(action.step, subject), alert(action)) else {
        return Ok(false);
    };
    alerts.raise(audit, &alert, now).await?;
    let first = store
        .record_lifecycle_notice(subject.kind.as_str(), &subject.id, code, basis, now)
        .await?;
    if !first {
        tracing::debug!(credential = %subject.id, code, "lifecycle: another pass gave this notice too");
    }
    Ok(true)
}

/// A successor sealed under another master key than the servers' would
/// leave them unable to sign once it takes over (a CLI run without the
/// servers' `GATEHOUSE_MASTER_KEY` would otherwise create a new key file and
/// use it): the key at hand must open the key it replaces.
async fn check_master_opens(
    store: &Arc<dyn Store>,
    master: &MasterKey,
    kid: &str,
) -> Result<(), PassError> {
    let records = store.signing_keys().await?;
    let opens = records
        .iter()
        .find(|k| k.kid == kid)
        .is_some_and(|k| master.opens(k));
    if opens {
        Ok(())
    } else {
        Err(PassError::SigningKey(format!(
            "the master key at hand does not open signing key {kid}; not adding a successor \
             the servers could not use (is this the servers' master key?)"
        )))
    }
}

/// A warning (a credential nearing its maximum age, or unused) is an alert
/// for people to act on.
fn alert(action: &Action) -> Option<Alert> {
    let code = match action.step {
        Step::WarnExpiring { .. } => AlertCode::CredentialExpiring,
        Step::AlertUnused { .. } => AlertCode::CredentialUnused,
        _ => return None,
    };
    let subject = &action.subject;
    let mut alert = Alert::new(
        code,
        format!("{} {}", subject.kind.as_str(), subject.id),
        action.detail.clone(),
    );
    alert.tenant = subject.tenant.clone();
    alert.human = subject.human.clone();
    alert.agent = Some(LIFECYCLE_AGENT.to_string());
    alert.credential = Some(subject.id.clone());
    alert.tool = Some(format!("lifecycle/{}", subject.kind.as_str()));
    Some(alert)
}

/// The record of what the lifecycle did by itself (a revocation, a
/// rotation).
fn event(action: &Action, new_kid: Option<&str>, now: Timestamp) -> gatehouse_core::AuditEvent {
    let subject = &action.subject;
    let mut detail = action.detail.clone();
    if let Some(kid) = new_kid {
        detail.push_str(&format!(" (new key {kid})"));
    }
    let mut event = EventBuilder::new(AuditKind::Lifecycle, Outcome::Success, now)
        .agent(LIFECYCLE_AGENT)
        .credential(Some(subject.id.clone()))
        .tool(&format!("lifecycle/{}", subject.kind.as_str()))
        .decision(action.step.action())
        .reason(action.step.code())
        .error(detail);
    if let Some(tenant) = &subject.tenant {
        event = event.tenant(tenant);
    }
    if let Some(human) = &subject.human {
        event = event.human(human);
    }
    event.build()
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;
