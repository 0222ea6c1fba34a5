//! Route paths, shared by the router and the metadata documents.

/// The one MCP endpoint (Streamable HTTP).
pub const MCP: &str = "/mcp";
/// RFC 9728 protected resource metadata, root form (resource = origin).
pub const PROTECTED_RESOURCE_METADATA: &str = "/.well-known/oauth-protected-resource";
/// RFC 9728 protected resource metadata for the MCP endpoint (path-suffixed).
pub const PROTECTED_RESOURCE_METADATA_MCP: &str = "/.well-known/oauth-protected-resource/mcp";
/// Liveness probe.
pub const HEALTH: &str = "/healthz";
/// Readiness: the store answers, the audit log takes records; upstream
/// health is counted (one upstream down does not make Gatehouse unready).
pub const READY: &str = "/readyz";
/// Prometheus metrics, served only on the admin listener (`[metrics]`).
pub const METRICS: &str = "/metrics";
/// Explains a policy decision (admins only): the HTTP form of
/// `gatehouse policy check`.
pub const POLICY_CHECK: &str = "/admin/policy/check";
/// Each upstream server's health (admins only).
pub const ADMIN_UPSTREAMS: &str = "/admin/upstreams";
