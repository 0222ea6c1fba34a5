//! Gate 1: turns the credential presented with a request into a `Principal`.
//!
//! API keys are the first credential type. A key looks like
//! `ghk_<id>_<secret>`: the id is public and used for lookup, the secret is
//! stored only as HMAC-SHA256 under a server pepper and compared in constant
//! time.

mod access_token;
mod api_key;
mod authenticator;
mod credentials;
mod error;
pub mod external;
mod failure_records;
pub mod jwt;
mod key_cache;
mod lockout;
#[cfg(test)]
mod lockout_tests;
mod pepper;
#[cfg(test)]
mod test_key;

pub use access_token::{
    AccessTokens, MAX_ACCESS_TOKEN_LIFETIME_SECS, REPLACED_KEY_TRUST_MS, SigningKeyProof,
    TokenSettings, verification_key,
};
pub use api_key::{ApiKeyParts, IssuedApiKey, KEY_PREFIX, issue_api_key, parse_api_key};
pub use authenticator::{AuthMode, Authenticator};
pub use credentials::{MAX_CREDENTIAL_BYTES, presented_credential};
pub use error::AuthnError;
pub use failure_records::{FAILURE_RECORDS_PER_MINUTE, FailureRecord, FailureRecords};
pub use lockout::{LockSubject, LockoutPolicy, Lockouts, NewLock};
pub use pepper::Pepper;
