//! The embedded OAuth 2.1 authorization server.
//!
//! This first part serves machine agents: operator-registered clients
//! (`clients.rs`), the client-credentials grant and the RFC 8414 / JWKS
//! documents (`server.rs`, HTTP in `http.rs`). Key material:
//!
//! - [`MasterKey`] seals private keys at rest (AES-256-GCM, the key id bound
//!   as associated data).
//! - [`SigningKey`] is an ES256 (P-256) key that signs RFC 9068 access
//!   tokens; its `kid` is the RFC 7638 JWK thumbprint and [`PublicJwk`] /
//!   [`Jwks`] are what the JWKS endpoint publishes.
//!
//! The authorization-code pieces are pure functions: [`redirect_uri`]
//! (registration rules and exact matching), [`pkce`] (S256 only),
//! [`parse_registration`] (RFC 7591 request validation) and [`RateLimiter`].
//! `pkce::verify` and `redirect_uri::matches` stay behind their module path
//! because their bare names would be ambiguous at the crate root.
//!
//! Nothing here prints or reports key material: `Debug` is redacted and
//! [`KeyError`] messages are fixed strings.

mod clients;
mod error;
pub mod http;
mod master_key;
mod oauth_error;
pub mod pkce;
mod rate_limit;
pub mod redirect_uri;
mod registration;
pub mod routes;
mod server;
mod signing_key;

pub use clients::{CLIENT_ID_PREFIX, IssuedClient, issue_client};
pub use error::KeyError;
pub use master_key::{MASTER_KEY_BYTES, MasterKey};
pub use oauth_error::OAuthError;
pub use pkce::PkceError;
pub use rate_limit::RateLimiter;
pub use redirect_uri::{MAX_REDIRECT_URI_BYTES, RedirectUriError};
pub use registration::{
    AuthMethod, MAX_CLIENT_NAME_CHARS, MAX_REDIRECT_URIS, MAX_REGISTRATION_BODY_BYTES,
    MAX_SCOPE_CHARS, RegistrationError, RegistrationRequest, parse_registration,
};
pub use server::{
    AsConfig, AuthorizationServer, ClientAuth, DEFAULT_ACCESS_TOKEN_TTL_SECS,
    MAX_ACCESS_TOKEN_TTL_SECS, TokenRequest, TokenResponse, add_signing_key,
};
pub use signing_key::{Jwks, PublicJwk, SigningKey};
