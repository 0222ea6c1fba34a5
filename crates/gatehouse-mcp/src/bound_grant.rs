//! A task grant a connection declared at `initialize` (an HTTP session's,
//! or a stdio connection's): every later request runs under it while it is
//! live. The same checks on both transports, each refusal an anomaly
//! record.

use gatehouse_authn::Authenticator;
use gatehouse_core::TaskGrant;

use crate::refusal::Refusal;
use crate::{Caller, Gate1Error, Gateway};

/// Why a request may not run under the connection's grant.
pub(crate) enum GrantRefused {
    /// Refused, and recorded as an anomaly.
    Refused(Refusal),
    /// The revocation list could not be read: fail closed, as gate 1 does.
    Unavailable(Gate1Error),
    /// The anomaly record could not be written: nothing runs unaudited.
    AuditUnavailable,
}

/// Whether `caller` may run under `grant`: the credential is not a task
/// token of another grant, and the grant has not expired or been revoked.
pub(crate) async fn check(
    authenticator: &Authenticator,
    gateway: &Gateway,
    caller: &Caller,
    grant: &TaskGrant,
) -> Result<(), GrantRefused> {
    let now = gateway.clock().now();
    let refused = if caller
        .principal
        .task
        .as_ref()
        .is_some_and(|t| t.id != grant.id)
    {
        Some((
            Refusal::SessionOfAnotherTask,
            format!(
                "a credential of another task grant used the connection of task grant {}",
                grant.id
            ),
        ))
    } else if now >= grant.expires_at {
        Some((
            Refusal::TaskGrantExpired,
            format!("the connection's task grant {} has expired", grant.id),
        ))
    } else {
        match authenticator.is_revoked(&grant.id, now).await {
            Ok(false) => None,
            Ok(true) => Some((
                Refusal::TaskGrantRevoked,
                format!("the connection's task grant {} was revoked", grant.id),
            )),
            Err(e) => return Err(GrantRefused::Unavailable(Gate1Error::Authn(e))),
        }
    };
    let Some((refusal, detail)) = refused else {
        return Ok(());
    };
    match gateway.record_anomaly(caller, refusal.code(), detail).await {
        Ok(()) => Err(GrantRefused::Refused(refusal)),
        Err(_) => Err(GrantRefused::AuditUnavailable),
    }
}
