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
/// The authorization endpoint (RFC 6749 §3.1), browser-facing.
pub const AUTHORIZE: &str = "/authorize";
/// The sign-in form: GET shows it, POST checks the credentials.
pub const LOGIN: &str = "/login";
/// Sign-out: GET shows who is signed in and the button, POST ends the
/// browser session.
pub const LOGOUT: &str = "/logout";
/// Where the consent form posts the user's decision.
pub const CONSENT: &str = "/authorize/consent";
/// The device verification page where a user types the code (RFC 8628 §3.3).
pub const DEVICE: &str = "/device";
/// Where the device confirmation form posts the user's decision.
pub const DEVICE_CONFIRM: &str = "/device/confirm";
/// Where the login form returns to, to carry on with a pending authorization.
pub const AUTHORIZE_CONTINUE: &str = "/authorize/continue";
/// The device authorization endpoint (RFC 8628 §3.1).
pub const DEVICE_AUTHORIZATION: &str = "/oauth/device_authorization";
/// Dynamic client registration (RFC 7591).
pub const REGISTER: &str = "/oauth/register";
/// OpenID Connect discovery; some MCP clients look here before RFC 8414.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
/// The approval page of one operation (`/approvals/{id}`), behind login.
pub const APPROVAL: &str = "/approvals/{id}";
/// The prefix of approval page URLs.
pub const APPROVALS_PREFIX: &str = "/approvals/";
/// Sign-in through an identity provider starts here (`?provider=&continue=`).
pub const FEDERATED_START: &str = "/oauth/federated/start";
/// Where an identity provider sends the browser back (`/oauth/federated/{name}/callback`).
pub const FEDERATED_CALLBACK: &str = "/oauth/federated/{name}/callback";
