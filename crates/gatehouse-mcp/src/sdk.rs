//! Everything that touches rmcp, the MCP SDK: the server handler, the
//! Streamable HTTP service and the stdio transport.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_authz::{Access, Deny, DenyReason};
use gatehouse_tools::{ToolError, ToolOutput};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    ErrorData, Implementation, InitializeResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::StdioAuthenticator;
use crate::{CallError, Caller, Gateway};

/// Protocol revisions Gatehouse serves (2026-07-28 statelessly, the older
/// ones with `initialize` and sessions).
pub const PROTOCOL_VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// JSON-RPC error code for a call refused by gate 2 (server-defined range).
pub const DENIED_ERROR_CODE: i32 = -32001;
/// JSON-RPC error code when the request cannot be authenticated (stdio).
pub const UNAUTHENTICATED_ERROR_CODE: i32 = -32002;

/// How the handler learns who is calling.
#[derive(Clone)]
enum Identity {
    /// Gate 1 ran in the HTTP middleware and left a `Caller` in the request.
    Http,
    /// stdio: the key from the environment is checked again on every request,
    /// so a revocation takes effect on the next call.
    Stdio(Arc<StdioAuthenticator>),
}

#[derive(Clone)]
struct McpHandler {
    gateway: Arc<Gateway>,
    identity: Identity,
}

fn server_config() -> ServerConfig {
    let mut info = InitializeResult::new(ServerCapabilities::builder().enable_tools().build());
    info.server_info = Implementation::new("gatehouse", env!("CARGO_PKG_VERSION"));
    info.with_instructions(
        "Gatehouse authenticates, authorizes and audits every tool call. \
         tools/list shows only the tools your credential may call.",
    )
}

fn internal_error(message: &'static str) -> ErrorData {
    ErrorData::new(ErrorCode::INTERNAL_ERROR, message, None)
}

/// The JSON-RPC error for a refused call: names the reason so the client
/// (and its user) can see why.
fn deny_error(deny: &Deny) -> ErrorData {
    let mut data = json!({
        "reason": deny.reason.code(),
        "tool": deny.tool,
    });
    if let Some(scope) = deny.required_scope() {
        data["required_scope"] = json!(scope);
    }
    // The JSON-RPC form of HTTP 429's Retry-After.
    if let DenyReason::RateLimited { retry_after_secs } = deny.reason {
        data["retry_after"] = json!(retry_after_secs);
    }
    ErrorData::new(ErrorCode(DENIED_ERROR_CODE), deny.message(), Some(data))
}

fn call_error(error: CallError) -> ErrorData {
    match error {
        CallError::Denied(deny) => deny_error(&deny),
        CallError::Audit(e) => {
            tracing::error!(error = %e, "tool call refused: audit unavailable");
            internal_error("the audit log is unavailable, so the call was not run")
        }
    }
}

fn tool_result(result: Result<ToolOutput, ToolError>) -> CallToolResult {
    match result {
        Ok(output) => {
            let mut result = CallToolResult::success(vec![ContentBlock::text(output.text)]);
            result.structured_content = output.structured;
            result
        }
        Err(error) => CallToolResult::error(vec![ContentBlock::text(format!(
            "{}: {}",
            error.code(),
            error
        ))]),
    }
}

impl McpHandler {
    async fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        match &self.identity {
            Identity::Http => context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Caller>())
                .cloned()
                // Fail closed: a request that bypassed gate 1 is refused.
                .ok_or_else(|| internal_error("request was not authenticated")),
            Identity::Stdio(auth) => auth.caller().await.map_err(|e| {
                ErrorData::new(
                    ErrorCode(UNAUTHENTICATED_ERROR_CODE),
                    format!("authentication failed: {e}"),
                    Some(json!({ "reason": e.code() })),
                )
            }),
        }
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        server_config()
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.caller(&context).await?;
        let tools = self
            .gateway
            .list_tools(&caller.principal)
            .into_iter()
            .map(|listed| {
                let mut description = listed.definition.description.to_string();
                if listed.access == Access::NeedsApproval {
                    description.push_str(" Requires a human-approved operation token.");
                }
                let schema = match listed.definition.input_schema {
                    serde_json::Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                let mut tool = Tool::new(listed.definition.name, description, Arc::new(schema));
                tool.title = Some(listed.definition.title.to_string());
                tool
            })
            .collect();
        // The list depends on who asks: it must never be shared between users.
        Ok(ListToolsResult::with_all_items(tools).with_cache_scope(CacheScope::Private))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.caller(&context).await?;
        let result = self
            .gateway
            .call_tool(&caller, &request.name, request.arguments)
            .await
            .map_err(call_error)?;
        Ok(tool_result(result).into())
    }
}

/// Settings of the Streamable HTTP endpoint.
pub struct HttpServiceOptions {
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub session_idle_timeout: Duration,
    pub shutdown: CancellationToken,
}

/// The tower service answering `/mcp`. Gate 1 must run before it.
pub fn streamable_http_service(
    gateway: Arc<Gateway>,
    options: HttpServiceOptions,
) -> StreamableHttpService<impl ServerHandler, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(options.allowed_hosts)
        .with_allowed_origins(options.allowed_origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(options.max_body_bytes)
        .with_json_response(true)
        .with_cancellation_token(options.shutdown);
    config.sse_keep_alive = Some(Duration::from_secs(15));
    let mut sessions = LocalSessionManager::default();
    let mut session_config = SessionConfig::default();
    session_config.keep_alive = Some(options.session_idle_timeout);
    sessions.session_config = session_config;
    let handler = McpHandler {
        gateway,
        identity: Identity::Http,
    };
    StreamableHttpService::new(move || Ok(handler.clone()), Arc::new(sessions), config)
}

/// Serves MCP over stdin/stdout until the client closes the stream.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    authenticator: Arc<StdioAuthenticator>,
) -> Result<(), std::io::Error> {
    let handler = McpHandler {
        gateway,
        identity: Identity::Stdio(authenticator),
    };
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
