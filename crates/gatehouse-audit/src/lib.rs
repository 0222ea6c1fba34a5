//! The audit log: redaction of arguments, and a writer that makes every
//! record durable (database and JSON-lines file) before the caller goes on.

mod event;
mod redact;
mod writer;

pub use event::EventBuilder;
pub use redact::{REDACTED, Redactor, SECRET_NAME_WORDS, is_listed_field};
pub use writer::{AuditError, AuditLog, AuditWriterHandle};
