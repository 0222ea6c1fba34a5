//! The embedded OAuth 2.1 authorization server.
//!
//! - Clients: registered by an operator (`clients.rs`), dynamically
//!   (RFC 7591, `registration.rs` validates, `dynamic_registration.rs`
//!   stores), or named by a Client ID Metadata Document URL (`cimd.rs`).
//! - Grants: authorization code with PKCE (`authorize.rs`, `pkce.rs`,
//!   `redirect_uri.rs`), refresh with rotation, client credentials and the
//!   device grant (`grants.rs`, `device.rs`). Clients authenticate with a
//!   secret or, with `private_key_jwt`, a signed assertion
//!   (`client_assertion.rs`). The organisation's identity providers
//!   (`identity_providers.rs`) vouch for people with identity assertions,
//!   exchanged for tokens (`identity_assertion.rs`), or sign people in from
//!   the login page (`federated_sign_in.rs`, `federated_pages.rs`).
//! - People: local users with Argon2id passwords (`login.rs`,
//!   `password.rs`), lockout per name and source (`login_lockout.rs`),
//!   server-rendered pages (`pages.rs`, `browser.rs`) and login cookies
//!   (`cookies.rs`).
//! - Keys: [`MasterKey`] seals private keys at rest (AES-256-GCM, the key
//!   id bound as associated data); [`SigningKey`] is an ES256 key that
//!   signs RFC 9068 access tokens, its `kid` the RFC 7638 thumbprint.
//!
//! `server.rs` holds the shared state; HTTP lives in `http.rs` (token,
//! revocation, introspection, registration, device authorization) and
//! `browser.rs` (the pages). Nothing here prints or reports key material
//! or secrets: `Debug` is redacted and error messages are fixed strings.

mod approval_pages;
mod authorize;
mod browser;
mod cimd;
mod client_assertion;
mod clients;
mod cookies;
mod device;
mod dynamic_registration;
mod error;
mod federated_pages;
mod federated_sign_in;
mod grants;
pub mod http;
mod identity_assertion;
mod identity_providers;
mod key_ring;
mod login;
mod login_lockout;
mod master_key;
mod oauth_error;
pub mod pages;
mod password;
pub mod pkce;
pub mod redirect_uri;
mod registration;
pub mod routes;
mod server;
mod signing_key;
mod token_exchange;

pub use approval_pages::ApprovalPages;
pub use authorize::{AuthorizationRequest, CODE_TTL_MS};
pub use cimd::{
    CIMD_NEGATIVE_TTL_SECS, CimdConfig, CimdError, CimdResolver, ClientMetadataDocument,
    is_client_id_url,
};
pub use client_assertion::{
    CLIENT_ASSERTION_TYPE, ClientKeySets, MAX_ASSERTION_LIFETIME_SECS, validate_jwks,
    validate_jwks_uri,
};
pub use clients::{
    CLIENT_ID_PREFIX, ClientSpec, IssuedClient, NewClientSecret, PRIVATE_KEY_JWT, issue_client,
    new_client_secret,
};
pub use cookies::{CookieError, CookiePolicy, read_cookie};
pub use device::{DeviceAuthorizationResponse, normalize_user_code};
pub use error::KeyError;
pub use federated_sign_in::{Callback, SignInError};
pub use gatehouse_core::RateLimiter;
pub use identity_assertion::{GRANT_JWT_BEARER, ID_JAG_TYPE};
pub use identity_providers::{
    IdentityProvider, IdentityProviderConfig, IdentityProviders, NO_PASSWORD,
};
pub use key_ring::{KeyRing, proves, signing_key_proof};
pub use login::normalize_username;
pub use login_lockout::{
    FAILURE_WINDOW_MS, LoginLock, NAME_LOCK_AFTER_FAILURES, SOURCE_LOCK_AFTER_FAILURES, lockout_ms,
};
pub use master_key::{MASTER_KEY_BYTES, MasterKey};
pub use oauth_error::OAuthError;
pub use pages::{
    ConsentPage, DeviceConfirmPage, DeviceEntryPage, LoginPage, consent_page, device_confirm_page,
    device_entry_page, escape, html_response, login_page, message_page, see_other,
};
pub use password::{
    GENERATED_PASSWORD_CHARS, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES, PasswordError,
    PasswordHasher, check_policy, generate_password,
};
pub use registration::{
    AuthMethod, MAX_REGISTRATION_BODY_BYTES, RegistrationError, RegistrationRequest,
    parse_registration,
};
pub use server::{
    AsConfig, AuthorizationServer, ClientAuth, DEFAULT_ACCESS_TOKEN_TTL_SECS,
    GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN,
    MAX_ACCESS_TOKEN_TTL_SECS, REGISTERED_BY_DYNAMIC, REGISTERED_BY_OPERATOR,
    REVOCATIONS_PER_PERSON_PER_MINUTE, RegistrationPolicy, TASK_TOKENS_PER_PERSON_PER_MINUTE,
    TokenRequest, TokenResponse, add_signing_key, new_signing_key,
};
pub use signing_key::{Jwks, PublicJwk, SigningKey};
pub use token_exchange::{
    ExchangeParams, GRANT_TOKEN_EXCHANGE, MCP_TASK_DETAILS_TYPE, TOKEN_TYPE_ACCESS_TOKEN,
    TaskExchange,
};
