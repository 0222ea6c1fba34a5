//! The SDK baseline of the fast-path benchmark (`bench/fastpath.sh`): a bare
//! rmcp server (the workspace's rmcp, with the workspace's features) on
//! Streamable HTTP, with one tool, `whoami`, that returns a small text
//! result. No authentication, no policy, no audit.
//!
//! It is configured as Gatehouse configures rmcp for the same requests
//! (`crates/gatehouse-mcp/src/sdk/mod.rs`): JSON answers rather than SSE
//! (`json_response`), and the service shared behind an `Arc` (rmcp's own
//! `tower::Service::call` clones the whole service per request). It goes one
//! step further and turns the 2025-11-25 sessions off (`legacy_session_mode
//! = false`, no session manager): the benchmark's requests are 2026-07-28
//! stateless calls (`_meta` `io.modelcontextprotocol/protocolVersion`,
//! `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers), which rmcp
//! serves statelessly in either mode.
//!
//! ```text
//! bench-bare-rmcp [ADDRESS]      (default 127.0.0.1:0)
//! ```
//!
//! prints `listening http://ADDRESS/mcp` on stdout once it accepts
//! connections. It uses Tokio's multi-thread runtime, like Gatehouse, so
//! `TOKIO_WORKER_THREADS=1` gives it one worker; pin it with taskset.

use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::serve::ListenerExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, InitializeResult, JsonObject, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler};

const WHOAMI: &str = "whoami";

#[derive(Clone)]
struct Bare {
    tool: Tool,
}

impl Bare {
    fn new() -> Self {
        let mut schema = JsonObject::new();
        schema.insert("type".into(), "object".into());
        schema.insert("properties".into(), JsonObject::new().into());
        Self {
            tool: Tool::new(WHOAMI, "Who is calling (always `anonymous`).", schema),
        }
    }
}

impl ServerHandler for Bare {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "bench-bare-rmcp",
                env!("CARGO_PKG_VERSION"),
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![self.tool.clone()]))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        (name == WHOAMI).then(|| self.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != WHOAMI {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {}", request.name),
                None,
            ));
        }
        Ok(CallToolResult::success(vec![ContentBlock::text("anonymous")]).into())
    }
}

type Service = Arc<StreamableHttpService<Bare, NeverSessionManager>>;

async fn handle(State(service): State<Service>, request: Request) -> Response {
    service.handle(request).await.into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let address = listener.local_addr()?;
    // Small answers go out at once (no Nagle delay waiting for an ACK), as
    // Gatehouse does.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true);
    let handler = Bare::new();
    let service: Service = Arc::new(StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    ));
    let app = Router::new().route("/mcp", any(handle)).with_state(service);
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening http://{address}/mcp")?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await
}
