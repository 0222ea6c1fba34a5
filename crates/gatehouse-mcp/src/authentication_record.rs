//! A request's authentication record, held back until it is known whether
//! the request's decision record will say the same.
//!
//! A tool call's decision record (allowed or refused) names everything the
//! authentication record would: the credential, the human and agent, the
//! tenant, the source and the request id. Writing both made every call
//! write three records for two facts, and the authentication record was a
//! third of the audit writer's work per call (bench/PROFILE.md). So gate 1
//! holds the record: the request's first decision record takes its place
//! (`fold`), and a request that reaches no decision (a listing,
//! `initialize`, a refusal before gate 2) gets it written (`write`) before
//! any other record of the request, or when the request ends.
//!
//! Room in the audit queue is reserved when the record is made, so a
//! record held back is never refused later for want of room: a full queue
//! refuses the request at gate 1 (503), as before.

use std::sync::Mutex;

use gatehouse_audit::Reserved;
use gatehouse_core::AuditEvent;

/// Held by a request's `Caller`; shared by its clones.
#[derive(Default)]
pub struct AuthenticationRecord(Mutex<Option<(Reserved, AuditEvent)>>);

impl std::fmt::Debug for AuthenticationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some();
        f.write_str(if held {
            "AuthenticationRecord(held)"
        } else {
            "AuthenticationRecord(none)"
        })
    }
}

impl AuthenticationRecord {
    /// A record to write unless a decision record takes its place.
    pub fn held(room: Reserved, event: AuditEvent) -> AuthenticationRecord {
        AuthenticationRecord(Mutex::new(Some((room, event))))
    }

    fn take(&self) -> Option<(Reserved, AuditEvent)> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    /// A decision record of the request is written instead: the held record
    /// is dropped and its room given back.
    pub fn fold(&self) {
        drop(self.take());
    }

    /// Writes the held record now, if it is still held (enqueued, not
    /// awaited: it is durable before any later awaited record).
    pub fn write(&self) {
        if let Some((room, event)) = self.take() {
            room.write(event);
        }
    }
}

impl Drop for AuthenticationRecord {
    /// Whatever path the request took, a record that nothing took the place
    /// of is written.
    fn drop(&mut self) {
        self.write();
    }
}
