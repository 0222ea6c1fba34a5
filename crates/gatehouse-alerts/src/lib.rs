//! Alerts: what Gatehouse raises for the security team to look at, and
//! the detectors that raise them.
//!
//! An alert is an audit record of kind `alert` with a stable code, a row in
//! the store's alert list (`gatehouse alerts list|ack`), a count on
//! /metrics, and, when a webhook is configured, a signed POST delivered
//! from an outbox in the store (retried with backoff, never on the request
//! path).

mod alert;
mod auth_bursts;
mod code;
mod raise;
mod settings;
mod violations;
pub mod webhook;

pub use alert::Alert;
pub use auth_bursts::{AuthBurstObserver, AuthBursts, BENIGN_FAILURES, CREDENTIAL_LAPSED};
pub use code::AlertCode;
pub use raise::{AlertError, Alerts};
pub use settings::{AlertSettings, OnIncident};
pub use violations::{IncidentScope, Overruns, VIOLATION_REASONS, Violations};
pub use webhook::{WebhookSettings, spawn_webhook};
