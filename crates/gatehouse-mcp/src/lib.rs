//! The MCP side of Gatehouse: the gateway core (authorize → dispatch →
//! audit), the Streamable HTTP front door with gate 1, and stdio.
//!
//! rmcp, the MCP SDK, is used only inside `sdk/`, so SDK upgrades touch one
//! file.

mod bound_grant;
mod call_limits;
mod caller;
mod gate1;
mod gateway;
mod held_calls;
pub mod http;
pub mod identity;
pub mod incidents;
mod param_headers;
mod refusal;
mod resource_routes;
pub mod routes;
mod sdk;
mod session_lane;
mod stdio;
mod stream_credential;
pub mod tool_pins;
pub mod trace_context;

pub use caller::Caller;
pub use gate1::Gate1Error;
pub use gateway::{
    CallError, CallResult, Gateway, ListedTool, ListedUpstreamTool, PendingApproval,
};
pub use sdk::{
    DENIED_ERROR_CODE, PROTOCOL_VERSIONS, UNAUTHENTICATED_ERROR_CODE, URL_ELICITATION_REQUIRED_CODE,
};
pub use stdio::{StdioAuthenticator, StdioError, serve_stdio};
pub use tool_pins::ToolPins;
