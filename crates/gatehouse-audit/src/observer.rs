//! Watching the records as they are written: the alert detectors see every
//! record of the process (authentication failures from gate 1, the login
//! form and the token endpoint alike) at the one place they all pass.

use std::sync::{Arc, OnceLock};

use gatehouse_core::AuditEvent;

use crate::AuditLog;

/// Sees each record as it is queued. Called on the recording task, so it
/// must be quick and must not wait: anything slow (writing an alert) is
/// spawned. It gets the log the record went to, to record through it,
/// rather than keeping a log of its own (the log holds its observer; an
/// observer holding the log would keep it open forever).
pub trait AuditObserver: Send + Sync {
    fn observe(&self, event: &AuditEvent, log: &AuditLog);
}

/// The observer of one audit log, installed once after start-up (the
/// observer itself records through the log).
#[derive(Clone, Default)]
pub(crate) struct ObserverSlot(Arc<OnceLock<Arc<dyn AuditObserver>>>);

impl ObserverSlot {
    pub(crate) fn set(&self, observer: Arc<dyn AuditObserver>) -> bool {
        self.0.set(observer).is_ok()
    }

    pub(crate) fn observe(&self, event: &AuditEvent, log: &AuditLog) {
        if let Some(observer) = self.0.get() {
            observer.observe(event, log);
        }
    }
}
