//! Raising an alert: the audit record first (the trail is what counts),
//! then the alert list's row (with its webhook delivery, when a webhook is
//! configured), the /metrics count, and a nudge to the webhook sender.

use std::sync::Arc;

use gatehouse_audit::{AuditError, AuditLog};
use gatehouse_core::Timestamp;
use gatehouse_metrics::Metrics;
use gatehouse_store::{AlertRecord, DeliveryState, Store, StoreError};
use tokio::sync::Notify;

use crate::Alert;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("the alert could not be audited: {0}")]
    Audit(#[from] AuditError),
    #[error("the alert was audited but not added to the alert list: {0}")]
    Store(#[from] StoreError),
}

/// Raises alerts. Holds no audit log (the caller passes its own): the
/// audit log's observer holds one of these, and a log holding itself
/// would never close.
#[derive(Clone)]
pub struct Alerts {
    store: Arc<dyn Store>,
    metrics: Option<Arc<Metrics>>,
    /// Set when a webhook is configured: new alerts are queued for it and
    /// its sender is woken.
    webhook: Option<Arc<Notify>>,
}

impl Alerts {
    pub fn new(store: Arc<dyn Store>) -> Alerts {
        Alerts {
            store,
            metrics: None,
            webhook: None,
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Alerts {
        self.metrics = Some(metrics);
        self
    }

    /// Queues every alert for the webhook and wakes its sender with `wake`
    /// (a command with a webhook configured queues too; a server sends).
    pub fn with_webhook(mut self, wake: Arc<Notify>) -> Alerts {
        self.webhook = Some(wake);
        self
    }

    /// Raises `alert`; returns its id (its audit record's).
    pub async fn raise(
        &self,
        audit: &AuditLog,
        alert: &Alert,
        now: Timestamp,
    ) -> Result<String, AlertError> {
        let event = alert.event(now);
        let id = event.id.clone();
        // Debug formatting: a subject can hold a name anyone typed (a user
        // name at the sign-in form), whose control characters must not
        // forge log lines.
        tracing::warn!(
            alert = %id,
            code = alert.code.as_str(),
            subject = ?alert.subject,
            detail = ?alert.detail,
            "alert raised"
        );
        audit.record(event).await?;
        if let Some(metrics) = &self.metrics {
            metrics.alert(alert.code.as_str());
        }
        let queued = self.webhook.is_some();
        self.store
            .insert_alert(&AlertRecord {
                id: id.clone(),
                raised_at: now,
                code: alert.code.as_str().to_string(),
                tenant: alert.tenant.clone(),
                subject: alert.subject.clone(),
                detail: alert.detail.clone(),
                acked_at: None,
                acked_by: None,
                delivery_state: if queued {
                    DeliveryState::Pending
                } else {
                    DeliveryState::None
                },
                delivery_attempts: 0,
                next_delivery_at: queued.then_some(now),
                last_delivery_error: None,
            })
            .await?;
        if let Some(wake) = &self.webhook {
            wake.notify_one();
        }
        Ok(id)
    }

    /// Raises `alert` on a task of its own, for callers that must not wait
    /// (the audit log's observer); a failure is logged.
    pub fn raise_in_background(&self, audit: AuditLog, alert: Alert, now: Timestamp) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                code = alert.code.as_str(),
                "an alert could not be raised outside the runtime"
            );
            return;
        };
        let alerts = self.clone();
        runtime.spawn(async move {
            if let Err(e) = alerts.raise(&audit, &alert, now).await {
                tracing::error!(code = alert.code.as_str(), error = %e, "cannot raise an alert");
            }
        });
    }
}
