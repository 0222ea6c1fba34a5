use std::sync::Arc;

use gatehouse_core::Principal;

/// Who is calling, and over which connection: what gate 1 hands on to the
/// rest of the request path.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    /// The MCP session id, when the request carried one.
    pub session: Option<String>,
    /// The peer address, or `stdio`.
    pub source: Option<String>,
    /// The HTTP request's id (`X-Request-Id`), for its audit records made
    /// outside the request's own task (the SDK runs handlers as tasks).
    pub request_id: Option<Arc<str>>,
}
