//! Gatehouse domain types shared by every stage of the request path.
//!
//! No I/O lives here, with one exception: a secret reference reads its
//! environment variable or file when resolved (`secret_ref`). The types
//! describe who is calling (`Principal`), what is recorded about it
//! (`AuditEvent`) and what time it is (`Clock`).

pub mod audit;
pub mod clock;
pub mod display_text;
pub mod duration_setting;
pub mod json_len;
pub mod last_use;
pub mod loopback;
pub mod peer;
pub mod principal;
pub mod public_address;
pub mod rate_limit;
pub mod secret_cipher;
pub mod secret_ref;
pub mod source;
pub mod trusted_proxies;

pub use audit::{AuditEvent, AuditKind, ChainLink, MAX_RECORDED_TEXT_BYTES, Outcome, cut_text};
pub use clock::{Clock, FixedClock, SystemClock, Timestamp};
pub use display_text::{escape_for_display, escape_json_for_display, is_unsafe_to_show};
pub use json_len::json_len;
pub use last_use::{LAST_USE_INTERVAL_MS, LastUse};
pub use loopback::is_loopback_url;
pub use peer::PeerAddr;
pub use principal::{CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, TaskGrant};
pub use public_address::is_public;
pub use rate_limit::{OneByOne, OneByOneLimit, RateLimiter, retry_after_secs};
pub use secret_cipher::{SEALED_PREFIX, SecretCipher, secret_binding};
pub use secret_ref::{Secret, SecretError, SecretRef, TenantSecrets};
pub use source::source_network;
pub use trusted_proxies::TrustedProxies;
