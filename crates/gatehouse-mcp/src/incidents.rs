//! The gateway's part of alerting: refusals by role or outside a task
//! grant add up to an incident, answered by revoking the grant or ending
//! the session (`alerts.on_incident`); a task grant used past its task's
//! expected duration is reported. Both are watched where gate 2 decides,
//! which knows the grant and the session a call ran under.

use std::collections::HashMap;
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

/// A grant whose revocation is owed.
struct Owed {
    expires_at: Timestamp,
    /// A call is asking the store: the others are refused without asking.
    asking: bool,
}

pub struct Incidents {
    alerts: Alerts,
    violations: Violations,
    overruns: Overruns,
    settings: AlertSettings,
    sessions: OnceLock<Arc<dyn SessionControl>>,
    /// Task grants an incident revoked but the store did not (it was
    /// unreachable): revoked at the grant's next call, permitted or
    /// refused, rather than never (the incident is made once a window);
    /// with each, when the grant expires and whether a call is asking the
    /// store right now.
    owed: Mutex<HashMap<String, Owed>>,
}

impl Incidents {
    pub fn new(alerts: Alerts, settings: AlertSettings) -> Incidents {
        Incidents {
            alerts,
            violations: Violations::new(settings.violations, settings.violation_window),
            overruns: Overruns::default(),
            settings,
            sessions: OnceLock::new(),
            owed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the revocation of `grant` an incident asked for is owed.
    pub fn owes_revocation(&self, grant: &str) -> bool {
        self.owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(grant)
    }

    /// Owes the revocation of the caller's grant (its store could not take
    /// it). Grants past their expiry are forgotten first: they stop anyway.
    fn owe(&self, caller: &Caller, now: Timestamp) {
        let Some(task) = &caller.principal.task else {
            return;
        };
        let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
        owed.retain(|_, owed| owed.expires_at > now);
        if owed.len() >= MAX_OWED {
            tracing::error!(grant = %task.id, "incident response: too many grants owe their revocation; revoke this one by hand");
            return;
        }
        owed.insert(
            task.id.clone(),
            Owed {
                expires_at: task.expires_at,
                asking: false,
            },
        );
    }

    /// Revokes the caller's grant if an incident's revocation of it is
    /// owed; `true` when it is owed (the call must be refused: the grant
    /// is revoked, whether or not the store has taken it yet). Said in an
    /// alert once the store takes it, only logged while it fails; one call
    /// at a time tries.
    pub async fn settle_owed(
        &self,
        audit: &AuditLog,
        grants: Option<&TaskGrants>,
        caller: &Caller,
        now: Timestamp,
    ) -> bool {
        let Some(task) = &caller.principal.task else {
            return false;
        };
        // Stays owed (every call refused) until the store takes it; one
        // call at a time asks, so concurrent calls neither wait on a store
        // that does not answer nor each raise an alert.
        {
            let mut owed = self.owed.lock().unwrap_or_else(PoisonError::into_inner);
            match owed.get_mut(&task.id) {
                None => return false,
                Some(entry) if entry.asking => return true,
                Some(entry) => entry.asking = true,
            }
        }
        let Some(grants) = grants else {
            self.stop_asking(&task.id);
            return true;
        };
        let done = match grants.revoke(&task.id, RESPONDER, now).await {
            Ok(true) => "is revoked now, at its next call",
            Ok(false) => "was revoked meanwhile (by hand, or it ended)",
            Err(e) => {
                tracing::error!(grant = %task.id, error = %e, "incident response: the grant still cannot be revoked; its calls are refused here");
                self.stop_asking(&task.id);
                return true;
            }
        };
        self.owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&task.id);
        let mut alert = Alert::new(
            AlertCode::PolicyIncident,
            IncidentScope::Grant(task.id.clone()).to_string(),
            format!(
                "the grant an earlier incident could not revoke (its store was unreachable) {done}"
            ),
        );
        fill_caller(&mut alert, caller);
        if let Err(e) = self.alerts.raise(audit, &alert, now).await {
            tracing::error!(error = %e, "cannot raise a policy incident alert");
        }
        true
    }

    fn stop_asking(&self, grant: &str) {
        if let Some(entry) = self
            .owed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(grant)
        {
            entry.asking = false;
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
        // A call the gateway refused for its owed grant has asked already.
        if reason != "task_grant_revoked" && self.settle_owed(audit, grants, caller, now).await {
            return;
        }
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
                    if matches!(scope, IncidentScope::Grant(_)) {
                        self.owe(caller, now);
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
    /// revocation is owed: its calls are refused from then on, and the
    /// store is asked again at each until it takes the revocation.
    #[tokio::test]
    async fn a_grant_an_incident_could_not_revoke_is_revoked_at_its_next_call() {
        let working: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        for id in ["tg_1", "tg_2"] {
            working
                .insert_task_grant(&gatehouse_store::TaskGrantRecord {
                    id: id.into(),
                    tenant: "default".into(),
                    human: None,
                    agent: "ghk_bot".into(),
                    credential_kind: "api_key".into(),
                    credential_id: "ghk_bot".into(),
                    task: "triage".into(),
                    tools: vec!["whoami".into()],
                    session_id: None,
                    created_at: Timestamp(0),
                    expires_at: Timestamp(9_000_000),
                    revoked_at: None,
                })
                .await
                .unwrap();
        }
        let (audit, _writer) = AuditLog::start(Arc::clone(&working), None, false).unwrap();
        // Everything fails but the audit log.
        let down: Arc<dyn Store> = Arc::new(AuditTakesBatches::new(usize::MAX));
        let unreachable = TaskGrants::new(Arc::clone(&down), audit.clone());
        let reachable = TaskGrants::new(Arc::clone(&working), audit.clone());
        let incidents = Incidents::new(Alerts::new(down), AlertSettings::default());
        let revoked = |id: &'static str| {
            let working = Arc::clone(&working);
            async move {
                working
                    .task_grant(id)
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at
                    .is_some()
            }
        };
        for (id, by_refusal) in [("tg_1", false), ("tg_2", true)] {
            let caller = under_grant(id);
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
            assert!(incidents.owes_revocation(id));
            // Still unreachable: the call is refused here all the same.
            assert!(
                incidents
                    .settle_owed(&audit, Some(&unreachable), &caller, Timestamp(6))
                    .await
            );
            assert!(incidents.owes_revocation(id));
            assert!(!revoked(id).await);
            // Reachable again: revoked in the store at the next call, a
            // permitted one (the gateway asks before deciding) or a refused one.
            if by_refusal {
                incidents
                    .refused(
                        &audit,
                        Some(&reachable),
                        &caller,
                        "outside_task",
                        Timestamp(7),
                    )
                    .await;
            } else {
                assert!(
                    incidents
                        .settle_owed(&audit, Some(&reachable), &caller, Timestamp(7))
                        .await
                );
            }
            assert!(!incidents.owes_revocation(id));
            assert!(revoked(id).await, "{id}");
        }
        // Nothing owed: a call goes on.
        assert!(
            !incidents
                .settle_owed(&audit, Some(&reachable), &under_grant("tg_3"), Timestamp(8))
                .await
        );
    }
}
