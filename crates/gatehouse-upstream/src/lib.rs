//! Upstream MCP servers: Gatehouse as their client.
//!
//! Connects to MCP servers people already run, as child processes (stdio)
//! or Streamable HTTP endpoints (2025-11-25 sessions or 2026-07-28
//! stateless, detected at connect time), and calls them with Gatehouse's own
//! credentials. Connections are supervised (restarted with backoff), calls
//! are bounded (timeout, concurrency, circuit breaker, message size), and
//! catalogue changes are broadcast so the caller can refresh.
//!
//! rmcp, the MCP SDK, is used only inside `sdk.rs` (and the HTTP client
//! adapter `http_client.rs`), so SDK upgrades touch those files.

mod backoff;
mod breaker;
mod changes;
mod child;
mod client_credentials;
mod config;
mod direct_call;
mod direct_post;
mod error;
mod health;
mod http_client;
mod in_flight;
mod input_rounds;
mod line_cap;
mod relay;
mod scrub;
mod sdk;
mod set;
mod slot_shares;
mod stderr_log;
mod upstream;

pub use breaker::BreakerState;
pub use changes::{ChangeKind, ListChanged};
pub use config::{
    ConfigError, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONCURRENT_CALLS,
    DEFAULT_MAX_MESSAGE_BYTES, PREFIX_SEPARATOR, PinMode, TransportKind, UpstreamAuth,
    UpstreamConfig, route_by_config, validate,
};
pub use error::UpstreamError;
pub use gatehouse_core::secret_ref::{Secret, SecretError, SecretRef, TenantSecrets};
pub use health::{Health, HealthState, LastError};
pub use relay::{Accepts, CallContext, RELAY_CAPACITY, Relay, Relayed};
pub use sdk::UpstreamInput;
pub use set::UpstreamSet;
pub use upstream::{JsonObject, MAX_LISTED_ITEMS, MAX_LISTING_BYTES, MAX_PAGES, Upstream};

/// The MCP result types the API returns (rmcp's), so callers need not
/// depend on rmcp's version themselves.
pub mod model {
    pub use rmcp::model::{
        CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
        GetPromptResponse, GetPromptResult, InputResponses, Prompt, ReadResourceResponse,
        ReadResourceResult, Reference, Resource, ResourceTemplate, Tool,
    };
}
