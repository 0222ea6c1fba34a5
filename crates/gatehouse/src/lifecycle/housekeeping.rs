//! The lifecycle's housekeeping task in `serve`: every instance ticks, the
//! one that takes the lease runs the pass.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_alerts::Alerts;
use gatehouse_audit::AuditLog;
use gatehouse_core::Clock;
use gatehouse_oauth::MasterKey;
use gatehouse_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::pass::{SigningKeys, apply, plan};
use crate::lifecycle::policy::LifecyclePolicy;

/// The lease's name in the store.
pub const LEASE: &str = "lifecycle";

pub struct Housekeeping {
    pub store: Arc<dyn Store>,
    pub audit: AuditLog,
    /// Its warnings are alerts.
    pub alerts: Alerts,
    /// Present when the authorization server (and so signing keys) is on.
    pub master: Option<MasterKey>,
    pub policy: LifecyclePolicy,
    pub interval: Duration,
    pub clock: Arc<dyn Clock>,
}

/// A holder name unique to this process, so instances tell their leases apart.
fn holder() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough among the instances sharing one store.
        return format!("pid-{}", std::process::id());
    }
    format!("instance-{}", hex::encode(bytes))
}

impl Housekeeping {
    /// Runs until `shutdown`; the handle ends once the task has let go of
    /// its audit sender (await it before closing the audit log).
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let holder = holder();
            let interval_ms = i64::try_from(self.interval.as_millis()).unwrap_or(i64::MAX);
            let mut ticks = tokio::time::interval(self.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                // The lease runs out when this instance ticks next, so
                // whichever instance ticks first then runs the next pass (at
                // most one pass per interval in all), and the lease of an
                // instance that died runs out within one interval, to be
                // taken at another instance's next tick.
                let now = self.clock.now();
                match self
                    .store
                    .take_lease(LEASE, &holder, now, now.plus_millis(interval_ms))
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "lifecycle: cannot take the housekeeping lease");
                        continue;
                    }
                }
                // Not raced against shutdown: a pass cut between an action
                // and its audit record would leave the action unaudited.
                // It stops between actions instead.
                self.pass(now, &shutdown).await;
                if shutdown.is_cancelled() {
                    break;
                }
            }
            if let Err(e) = self.store.release_lease(LEASE, &holder).await {
                tracing::debug!(error = %e, "lifecycle: cannot release the lease");
            }
        })
    }

    async fn pass(&self, now: gatehouse_core::Timestamp, shutdown: &CancellationToken) {
        let signing = self.master.as_ref().map(|master| SigningKeys { master });
        // Planning only reads: a shutdown may cut it.
        let planned = tokio::select! {
            () = shutdown.cancelled() => return,
            planned = plan(&self.store, &self.policy, signing.is_some(), now) => planned,
        };
        let actions = match planned {
            Ok(actions) => actions,
            Err(e) => {
                tracing::warn!(error = %e, "lifecycle: cannot read the credentials");
                return;
            }
        };
        if actions.is_empty() {
            return;
        }
        match apply(
            &self.store,
            &self.audit,
            &self.alerts,
            signing.as_ref(),
            actions,
            now,
            shutdown,
        )
        .await
        {
            Ok(applied) => {
                let done = applied.iter().filter(|a| a.done).count();
                tracing::info!(done, "lifecycle: housekeeping pass applied the policy");
            }
            Err(e) => tracing::warn!(error = %e, "lifecycle: housekeeping pass stopped"),
        }
    }
}
