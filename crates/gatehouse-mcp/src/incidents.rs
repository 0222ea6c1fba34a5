//! The gateway's part of alerting: refusals by role or outside a task
//! grant add up to an incident, answered by revoking the grant or ending
//! the session (`alerts.on_incident`); a task grant used past its task's
//! expected duration is reported. Both are watched where gate 2 decides,
//! which knows the grant and the session a call ran under.

use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use gatehouse_alerts::{
    Alert, AlertCode, AlertSettings, Alerts, IncidentScope, OnIncident, Overruns,
    VIOLATION_REASONS, Violations,
};
use gatehouse_audit::AuditLog;
use gatehouse_authz::{Policy, TaskGrants};
use gatehouse_core::Timestamp;

use crate::Caller;

/// Ends an MCP session (the HTTP transport's table and the SDK's session).
pub trait SessionControl: Send + Sync {
    fn end<'a>(&'a self, session: &'a str) -> BoxFuture<'a, ()>;
}

/// Who a response names as its actor in the audit trail.
const RESPONDER: &str = "gatehouse (incident response)";

/// A principal as people read it in an alert's subject.
fn principal_name(principal: &gatehouse_core::Principal) -> String {
    match &principal.human {
        Some(human) => format!(
            "{human} via {} (tenant {})",
            principal.agent, principal.tenant
        ),
        None => format!("{} (tenant {})", principal.agent, principal.tenant),
    }
}

pub struct Incidents {
    alerts: Alerts,
    violations: Violations,
    overruns: Overruns,
    settings: AlertSettings,
    sessions: OnceLock<Arc<dyn SessionControl>>,
}

impl Incidents {
    pub fn new(alerts: Alerts, settings: AlertSettings) -> Incidents {
        Incidents {
            alerts,
            violations: Violations::new(settings.violations, settings.violation_window),
            overruns: Overruns::default(),
            settings,
            sessions: OnceLock::new(),
        }
    }

    /// Installs how sessions are ended (the HTTP transport, once built).
    pub fn set_session_control(&self, control: Arc<dyn SessionControl>) {
        let _ = self.sessions.set(control);
    }

    /// A call was refused for `reason`: counts it when it is a violation,
    /// and answers the incident it makes. Errors are logged: the refusal
    /// stands whatever happens here.
    pub async fn refused(
        &self,
        audit: &AuditLog,
        grants: Option<&TaskGrants>,
        caller: &Caller,
        reason: &str,
        now: Timestamp,
    ) {
        if !VIOLATION_REASONS.contains(&reason) {
            return;
        }
        let principal = &caller.principal;
        let narrow = match (&principal.task, &caller.session) {
            (Some(grant), _) => Some(IncidentScope::Grant(grant.id.clone())),
            (None, Some(session)) => Some(IncidentScope::Session(session.clone())),
            (None, None) => None,
        };
        // Every violation also counts for the principal as a whole: a
        // caller that starts a new session, asks for a new grant or
        // refreshes its token every few refusals still makes an incident.
        let whole = IncidentScope::Principal {
            key: principal.subject_key(),
            name: principal_name(principal),
        };
        let narrow_count = narrow
            .as_ref()
            .and_then(|scope| self.violations.violated(scope, now));
        let whole_count = self.violations.violated(&whole, now);
        // One alert per call: the grant's or session's, which has a response.
        let (scope, count) = match (narrow, narrow_count, whole_count) {
            (Some(scope), Some(count), _) => (scope, count),
            (_, None, Some(count)) => (whole, count),
            _ => return,
        };
        let response = match self.settings.on_incident {
            OnIncident::Alert => "reported only (alerts.on_incident = \"alert\")".to_string(),
            OnIncident::Revoke => match self.respond(&scope, grants, now).await {
                Ok(done) => done,
                Err(failed) => {
                    // Answered again at the next violation.
                    self.violations.unanswered(&scope);
                    failed
                }
            },
        };
        let window_mins = self.settings.violation_window.as_secs() / 60;
        let mut alert = Alert::new(
            AlertCode::PolicyIncident,
            scope.to_string(),
            format!(
                "{count} calls refused by role or outside the task grant within {window_mins} min \
                 (the latest: {reason}); {response}"
            ),
        );
        fill_caller(&mut alert, caller);
        if let Err(e) = self.alerts.raise(audit, &alert, now).await {
            tracing::error!(error = %e, "cannot raise a policy incident alert");
        }
    }

    /// What was done; `Err` when the grant could not be revoked (to be
    /// tried again at the next violation).
    async fn respond(
        &self,
        scope: &IncidentScope,
        grants: Option<&TaskGrants>,
        now: Timestamp,
    ) -> Result<String, String> {
        match scope {
            IncidentScope::Grant(id) => {
                let Some(grants) = grants else {
                    return Ok(
                        "the grant could not be revoked (task grants are not enabled)".into(),
                    );
                };
                match grants.revoke(id, RESPONDER, now).await {
                    Ok(true) => Ok("the grant was revoked".into()),
                    Ok(false) => Ok("the grant was revoked already".into()),
                    Err(e) => {
                        tracing::error!(grant = %id, error = %e, "incident response: cannot revoke the grant");
                        Err(format!(
                            "REVOKING THE GRANT FAILED ({e}); it is tried again at the next refused \
                             call, or revoke it by hand: gatehouse grants revoke {id}"
                        ))
                    }
                }
            }
            IncidentScope::Session(id) => match self.sessions.get() {
                Some(control) => {
                    control.end(id).await;
                    Ok("the session was ended".into())
                }
                None => Ok("the session could not be ended here (stdio)".into()),
            },
            IncidentScope::Principal { .. } => Ok(
                "counted across the caller's grants, sessions and tokens; revoking its \
                 credential is left to a person"
                    .into(),
            ),
        }
    }

    /// A call under a task grant was permitted: reports the grant once if
    /// its task's expected duration has passed.
    pub async fn permitted(
        &self,
        audit: &AuditLog,
        policy: &Policy,
        caller: &Caller,
        now: Timestamp,
    ) {
        if !self.settings.task_overrun {
            return;
        }
        let Some(grant) = &caller.principal.task else {
            return;
        };
        let Some(issued_at) = grant.issued_at else {
            return;
        };
        let Some(expected) = policy.task(&grant.task).and_then(|t| t.expected_duration()) else {
            return;
        };
        if !self
            .overruns
            .first_overrun(&grant.id, issued_at, expected, now)
        {
            return;
        }
        let mut alert = Alert::new(
            AlertCode::TaskOverrun,
            format!("grant {}", grant.id),
            format!(
                "task {:?} is expected to take {} s; its grant, issued {}, is still in use",
                grant.task,
                expected.as_secs(),
                issued_at.to_rfc3339()
            ),
        );
        fill_caller(&mut alert, caller);
        if let Err(e) = self.alerts.raise(audit, &alert, now).await {
            tracing::error!(error = %e, "cannot raise a task overrun alert");
        }
    }
}

fn fill_caller(alert: &mut Alert, caller: &Caller) {
    let principal = &caller.principal;
    alert.tenant = Some(principal.tenant.clone());
    alert.human = principal.human.clone();
    alert.agent = Some(principal.agent.clone());
    alert.credential = Some(principal.credential.id.clone());
    alert.session = caller.session.clone();
    alert.source = caller.source.clone();
}
