//! The gateway's part of alerting: refusals by role or outside a task
//! grant add up to an incident, answered by revoking the grant or ending
//! the session (`alerts.on_incident`); a task grant used past its task's
//! expected duration is reported. Both are watched where gate 2 decides,
//! which knows the grant and the session a call ran under.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

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

/// Grants whose revocation failed at most this many at once are tried
/// again (each is an incident while the store was unreachable).
const MAX_OWED: usize = 4096;

pub struct Incidents {
    alerts: Alerts,
    violations: Violations,
    overruns: Overruns,
    settings: AlertSettings,
    sessions: OnceLock<Arc<dyn SessionControl>>,
    /// Task grants an incident revoked but the store did not (it was
    /// unreachable): revoked at the grant's next call, permitted or
    /// refused, rather than never (the incident is made once a window).
    owed: Mutex<HashSet<String>>,
}

impl Incidents {
    pub fn new(alerts: Alerts, settings: AlertSettings) -> Incidents {
        Incidents {
            alerts,
            violations: Violations::new(settings.violations, settings.violation_window),
            overruns: Overruns::default(),
            settings,
            sessions: OnceLock::new(),
            owed: Mutex::new(HashSet::new()),
        }
    }

    /// Whether the revocation of `grant` an incident asked for is owed.
    pub fn owes_revocation(&self, grant: &str) -> bool {
        self.owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(grant)
    }

    /// Revokes the caller's grant if an incident's revocation of it is
    /// owed; said in an alert once it is done, only logged while it fails.
    async fn settle_owed(
        &self,
        audit: &AuditLog,
        grants: Option<&TaskGrants>,
        caller: &Caller,
        now: Timestamp,
    ) {
        let (Some(task), Some(grants)) = (&caller.principal.task, grants) else {
            return;
        };
        if !self.owes_revocation(&task.id) {
            return;
        }
        match grants.revoke(&task.id, RESPONDER, now).await {
            Ok(_) => {
                self.owed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&task.id);
                let mut alert = Alert::new(
                    AlertCode::PolicyIncident,
                    IncidentScope::Grant(task.id.clone()).to_string(),
                    "the grant an earlier incident could not revoke (its store was unreachable) \
                     is revoked now, at its next call"
                        .to_string(),
                );
                fill_caller(&mut alert, caller);
                if let Err(e) = self.alerts.raise(audit, &alert, now).await {
                    tracing::error!(error = %e, "cannot raise a policy incident alert");
                }
            }
            Err(e) => {
                tracing::error!(grant = %task.id, error = %e, "incident response: the grant still cannot be revoked");
            }
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
        self.settle_owed(audit, grants, caller, now).await;
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
                    if let IncidentScope::Grant(id) = &scope {
                        let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
                        if owed.len() < MAX_OWED {
                            owed.insert(id.clone());
                        }
                    }
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
                            "REVOKING THE GRANT FAILED ({e}); it is tried again at the grant's next \
                             call on this instance, or revoke it by hand: gatehouse grants revoke {id}"
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
        grants: Option<&TaskGrants>,
        policy: &Policy,
        caller: &Caller,
        now: Timestamp,
    ) {
        self.settle_owed(audit, grants, caller, now).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{CredentialKind, CredentialRef, Principal, TaskGrant};
    use gatehouse_store::testing::AuditTakesBatches;
    use gatehouse_store::{SqliteStore, Store};

    fn under_grant(id: &str) -> Caller {
        Caller {
            principal: Arc::new(Principal {
                tenant: "default".into(),
                human: None,
                agent: "ghk_bot".into(),
                credential: CredentialRef {
                    kind: CredentialKind::ApiKey,
                    id: "ghk_bot".into(),
                },
                roles: vec!["reader".into()],
                scopes: None,
                expires_at: None,
                task: Some(TaskGrant {
                    id: id.into(),
                    task: "triage".into(),
                    tools: vec!["whoami".into()],
                    expires_at: Timestamp(9_000_000),
                    issued_at: None,
                }),
                issuer: None,
            }),
            session: None,
            source: None,
            request_id: None,
        }
    }

    /// The fifth refusal in a grant came while the store was unreachable,
    /// so the grant could not be revoked, and the incident is made once a
    /// window: the grant stayed live for the rest of the hour. Its
    /// revocation is owed, and made at the grant's next call once the
    /// store answers.
    #[tokio::test]
    async fn a_grant_an_incident_could_not_revoke_is_revoked_at_its_next_call() {
        let working: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (audit, _writer) = AuditLog::start(Arc::clone(&working), None, false).unwrap();
        // Everything fails but the audit log.
        let down: Arc<dyn Store> = Arc::new(AuditTakesBatches::new(usize::MAX));
        let unreachable = TaskGrants::new(Arc::clone(&down), audit.clone());
        let reachable = TaskGrants::new(Arc::clone(&working), audit.clone());
        let incidents = Incidents::new(Alerts::new(down), AlertSettings::default());
        let policy = Policy::from_toml(gatehouse_authz::DEFAULT_POLICY_TOML).unwrap();
        let caller = under_grant("tg_1");
        for t in 0..5 {
            incidents
                .refused(
                    &audit,
                    Some(&unreachable),
                    &caller,
                    "outside_task",
                    Timestamp(t),
                )
                .await;
        }
        assert!(incidents.owes_revocation("tg_1"));
        // Still unreachable at the next call: still owed.
        incidents
            .permitted(&audit, Some(&unreachable), &policy, &caller, Timestamp(6))
            .await;
        assert!(incidents.owes_revocation("tg_1"));
        // Reachable again: revoked at the next call, permitted or refused.
        incidents
            .permitted(&audit, Some(&reachable), &policy, &caller, Timestamp(7))
            .await;
        assert!(!incidents.owes_revocation("tg_1"));
        let other = under_grant("tg_2");
        for t in 0..5 {
            incidents
                .refused(
                    &audit,
                    Some(&unreachable),
                    &other,
                    "outside_task",
                    Timestamp(t),
                )
                .await;
        }
        assert!(incidents.owes_revocation("tg_2"));
        incidents
            .refused(
                &audit,
                Some(&reachable),
                &other,
                "outside_task",
                Timestamp(8),
            )
            .await;
        assert!(!incidents.owes_revocation("tg_2"));
    }
}
