//! Paths of the authorization server, shared by the router and the metadata.

/// RFC 8414 authorization server metadata.
pub const METADATA: &str = "/.well-known/oauth-authorization-server";
/// The token endpoint (RFC 6749 §3.2).
pub const TOKEN: &str = "/oauth/token";
/// The public signing keys (RFC 7517).
pub const JWKS: &str = "/oauth/jwks.json";
/// Token revocation (RFC 7009).
pub const REVOKE: &str = "/oauth/revoke";
/// Token introspection (RFC 7662).
pub const INTROSPECT: &str = "/oauth/introspect";
