//! Gate 1 for any transport: authenticate a presented credential and record
//! the outcome.

use std::sync::Arc;

use gatehouse_audit::{AuditError, AuditLog, EventBuilder};
use gatehouse_authn::{AuthMode, Authenticator, AuthnError, parse_api_key};
use gatehouse_core::{AuditKind, Clock, Outcome, Principal};

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
pub async fn authenticate(
    authenticator: &Authenticator,
    audit: &AuditLog,
    clock: &Arc<dyn Clock>,
    presented: Result<Option<&str>, AuthnError>,
    origin: RequestOrigin,
) -> Result<Principal, Gate1Error> {
    let now = clock.now();
    let result = match &presented {
        Ok(credential) => authenticator.authenticate(*credential, now).await,
        Err(e) => Err(e.clone()),
    };
    // With authentication switched off there is no outcome to record.
    if matches!(authenticator.mode(), AuthMode::Disabled { .. }) {
        return Ok(result?);
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
            // Only the public key id is recorded, never the presented value.
            let credential_id = match &presented {
                Ok(Some(value)) => parse_api_key(value).ok().map(|p| p.id.to_string()),
                _ => None,
            };
            let failed = event(Outcome::Failure)
                .credential(credential_id)
                .decision("deny")
                .reason(error.code())
                .error(error.to_string())
                .build();
            audit.record(failed).await?;
            Err(Gate1Error::Authn(error))
        }
    }
}
