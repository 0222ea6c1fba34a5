//! Gate 1 for any transport: authenticate a presented credential and record
//! the outcome.

use std::sync::Arc;
use std::time::Instant;

use gatehouse_audit::{AuditError, AuditLog, EventBuilder};
use gatehouse_authn::{
    AuthMode, Authenticator, AuthnError, FAILURE_RECORDS_PER_MINUTE, FailureRecord, LockSubject,
    parse_api_key,
};
use gatehouse_core::{AuditKind, Clock, Outcome, Principal};
use gatehouse_metrics::{NO_REASON, Stage};

#[derive(Debug, thiserror::Error)]
pub enum Gate1Error {
    #[error(transparent)]
    Authn(#[from] AuthnError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl Gate1Error {
    pub fn code(&self) -> &'static str {
        match self {
            Gate1Error::Authn(e) => e.code(),
            Gate1Error::Audit(_) => "audit_unavailable",
        }
    }
}

/// Where a request came from, for the audit record.
pub struct RequestOrigin {
    pub source: Option<String>,
    pub session: Option<String>,
}

/// `presented` is the credential extraction result (`Err` when the request
/// presented credentials in a refused way).
///
/// A credential or source address locked after repeated failures is refused
/// before the secret is checked; failures that look like guessing are
/// counted (see `AuthnError::counts_toward_lockout`).
pub async fn authenticate(
    authenticator: &Authenticator,
    audit: &AuditLog,
    clock: &Arc<dyn Clock>,
    presented: Result<Option<&str>, AuthnError>,
    origin: RequestOrigin,
) -> Result<Principal, Gate1Error> {
    let now = clock.now();
    // With authentication switched off there is nothing to lock and no
    // outcome to record.
    if matches!(authenticator.mode(), AuthMode::Disabled { .. }) {
        let credential = presented?;
        return Ok(authenticator.authenticate(credential, now).await?);
    }
    // Only the public key id is used (lockout, audit), never the presented
    // value.
    let key_id = match &presented {
        Ok(Some(value)) => parse_api_key(value).ok().map(|p| p.id.to_string()),
        _ => None,
    };
    let started = Instant::now();
    let (result, new_locks) = match &presented {
        Ok(Some(credential)) => {
            authenticator
                .authenticate_guarded(credential, origin.source.as_deref(), now)
                .await
        }
        Ok(None) => (authenticator.authenticate(None, now).await, Vec::new()),
        Err(e) => (Err(e.clone()), Vec::new()),
    };
    let metrics = authenticator.metrics();
    metrics.observe(Stage::Authenticate, started.elapsed());
    match &result {
        Ok(_) => metrics.authentication(true, NO_REASON),
        Err(error) => metrics.authentication(false, error.code()),
    }
    for lock in &new_locks {
        metrics.lockout(match lock.subject {
            LockSubject::Key { .. } => "credential",
            LockSubject::Source(_) => "source",
        });
    }
    let event = |outcome| {
        EventBuilder::new(AuditKind::Authentication, outcome, now)
            .source(origin.source.clone())
            .session(origin.session.clone())
    };
    match result {
        Ok(principal) => {
            // Not awaited: it is durable before any later awaited record of
            // this request (the tool decision), and a request that records
            // nothing else only reads.
            audit.enqueue(
                event(Outcome::Success)
                    .principal(&principal)
                    .decision("allow")
                    .build(),
            )?;
            Ok(principal)
        }
        Err(error) => {
            let failed = event(Outcome::Failure)
                .credential(key_id)
                .decision("deny")
                .reason(error.code());
            // Failures that look like guessing are bounded by the lockout
            // and always recorded (the burst alerts read them); only those
            // that cost a caller nothing (no credential, a locked source)
            // are limited per source.
            let budget = if error.counts_toward_lockout() {
                FailureRecord::Each
            } else {
                authenticator
                    .failure_records()
                    .take(origin.source.as_deref(), now)
            };
            match budget {
                FailureRecord::Each => {
                    audit
                        .record(failed.error(error.to_string()).build())
                        .await?;
                }
                FailureRecord::FirstPastLimit => {
                    let note = format!(
                        "{error}; more than {FAILURE_RECORDS_PER_MINUTE} authentication failures \
                         from this source within a minute: the rest of this minute's are counted \
                         in metrics, not recorded one by one"
                    );
                    audit.record(failed.error(note).build()).await?;
                }
                FailureRecord::Past => {}
            }
            for lock in &new_locks {
                let credential = match &lock.subject {
                    LockSubject::Key { id, .. } => Some(id.clone()),
                    LockSubject::Source(_) => None,
                };
                let locked = event(Outcome::Failure)
                    .credential(credential)
                    .decision("deny")
                    .reason(lock.subject.lock_reason())
                    .error(format!(
                        "{} locked until {} after {} failed attempts",
                        lock.subject,
                        lock.locked_until.to_rfc3339(),
                        lock.failures
                    ))
                    .build();
                audit.record(locked).await?;
            }
            Err(Gate1Error::Authn(error))
        }
    }
}
