//! The embedded OAuth 2.1 authorization server.
//!
//! This first part serves machine agents: operator-registered clients
//! (`clients.rs`), the client-credentials grant and the RFC 8414 / JWKS
//! documents (`server.rs`, HTTP in `http.rs`). Clients identified by a URL
//! are described by a Client ID Metadata Document, fetched behind SSRF guards
//! and cached by [`CimdResolver`] (`cimd.rs`). Key material:
//!
//! - [`MasterKey`] seals private keys at rest (AES-256-GCM, the key id bound
//!   as associated data).
//! - [`SigningKey`] is an ES256 (P-256) key that signs RFC 9068 access
//!   tokens; its `kid` is the RFC 7638 JWK thumbprint and [`PublicJwk`] /
//!   [`Jwks`] are what the JWKS endpoint publishes.
//!
//! Nothing here prints or reports key material: `Debug` is redacted and
//! [`KeyError`] messages are fixed strings.

mod cimd;
mod clients;
mod error;
pub mod http;
mod master_key;
mod oauth_error;
pub mod routes;
mod server;
mod signing_key;

pub use cimd::{
    CIMD_NEGATIVE_TTL_SECS, CimdConfig, CimdError, CimdResolver, ClientMetadataDocument,
    is_client_id_url,
};
pub use clients::{CLIENT_ID_PREFIX, IssuedClient, issue_client};
pub use error::KeyError;
pub use master_key::{MASTER_KEY_BYTES, MasterKey};
pub use oauth_error::OAuthError;
pub use server::{
    AsConfig, AuthorizationServer, ClientAuth, DEFAULT_ACCESS_TOKEN_TTL_SECS,
    MAX_ACCESS_TOKEN_TTL_SECS, TokenRequest, TokenResponse, add_signing_key,
};
pub use signing_key::{Jwks, PublicJwk, SigningKey};
