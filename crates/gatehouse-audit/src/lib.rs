//! The audit log: redaction of arguments, and a writer that makes every
//! record durable (database and JSON-lines file) before the caller goes on.

pub mod chain;
pub mod checkpoint;
mod event;
mod observer;
mod redact;
mod request_scope;
mod rotation;
mod syslog;
mod witness;
mod writer;

pub use chain::{Chain, GENESIS_HASH, RUN_CHAIN_PREFIX, Tamper, Verifier, record_hash};
pub use checkpoint::{
    CHECKPOINT_TYP, CheckpointClaims, CheckpointSigner, checkpoint as sign_checkpoint,
    spawn_checkpoints,
};
pub use event::EventBuilder;
pub use observer::AuditObserver;
pub use redact::{
    MAX_RECORDED_STRING_BYTES, REDACTED, Redactor, SECRET_NAME_WORDS, is_listed_field,
    is_recorded_otherwise,
};
pub use request_scope::{current_request_id, in_request};
pub use rotation::Rotation;
pub use syslog::{
    SyslogSettings, SyslogTarget, SyslogTls, SyslogTlsError, SyslogTlsFiles, system_hostname,
};
pub use witness::{Witness, WitnessedCheckpoint};
pub use writer::{
    AuditError, AuditLog, AuditOptions, AuditQueueProbe, AuditWriterHandle, ChainHead,
};
