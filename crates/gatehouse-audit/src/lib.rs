//! The audit log: redaction of arguments, and a writer that makes every
//! record durable (database and JSON-lines file) before the caller goes on.

mod event;
mod redact;
mod request_scope;
mod writer;

pub use event::EventBuilder;
pub use redact::{REDACTED, Redactor, SECRET_NAME_WORDS, is_listed_field};
pub use request_scope::{current_request_id, in_request};
pub use writer::{AuditError, AuditLog, AuditQueueProbe, AuditWriterHandle};
