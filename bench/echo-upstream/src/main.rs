//! The upstream of the gateway benchmark (`bench/gateway.sh`): a minimal MCP
//! server that speaks Streamable HTTP with 2025-11-25 sessions and serves one
//! tool, `echo`, which returns its `text` argument.
//!
//! It is written by hand on axum, not with an SDK, so that it costs a few
//! microseconds per call and the gateways in front of it are what the
//! benchmark measures. It does what a 2025-11-25 server must for the three
//! clients of the benchmark (wrk, Gatehouse's rmcp client, mcp-proxy's
//! tower-mcp client): `initialize` opens a session (`Mcp-Session-Id`),
//! every other request needs a live session (400 without one, which is also
//! how a 2026-07-28 client's `server/discover` probe learns that this server
//! is legacy; 404 for an unknown one), notifications get 202, `DELETE` ends a
//! session, `GET` (no server-initiated stream) gets 405. Answers are plain
//! JSON, never SSE. One JSON-RPC message per POST (no batches).
//!
//! ```text
//! bench-echo-upstream [ADDRESS]      (default 127.0.0.1:0)
//! ```
//!
//! prints `listening http://ADDRESS/mcp` on stdout once it accepts
//! connections. Run it with a current-thread runtime; pin it with taskset.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

/// The revision this server speaks when the client asks for one it does not know.
const LATEST: &str = "2025-11-25";
/// Session-era revisions it accepts as asked.
const SUPPORTED: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
const SESSION_HEADER: &str = "mcp-session-id";

#[derive(Default)]
struct Sessions {
    next: AtomicU64,
    live: Mutex<HashSet<String>>,
}

impl Sessions {
    fn open(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("bench-{:08x}-{n:016x}", std::process::id());
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        id
    }

    fn is_live(&self, id: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn close(&self, id: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn tools() -> Value {
    json!({"tools": [{
        "name": "echo",
        "description": "Returns its `text` argument.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"]
        },
        "annotations": {"readOnlyHint": true}
    }]})
}

fn call(id: &Value, params: Option<&Value>) -> Value {
    let name = params.and_then(|p| p.get("name")).and_then(Value::as_str);
    if name != Some("echo") {
        return error(id, -32602, "unknown tool");
    }
    let text = params
        .and_then(|p| p.get("arguments"))
        .and_then(|a| a.get("text"))
        .and_then(Value::as_str);
    match text {
        Some(text) => result(
            id,
            json!({"content": [{"type": "text", "text": text}], "isError": false}),
        ),
        None => result(
            id,
            json!({"content": [{"type": "text", "text": "`text` must be a string"}], "isError": true}),
        ),
    }
}

async fn handle_post(
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &error(&Value::Null, -32700, "parse error"),
        );
    };
    if !message.is_object() {
        return json_response(
            StatusCode::BAD_REQUEST,
            &error(&Value::Null, -32600, "one JSON-RPC message per request"),
        );
    }
    let method = message.get("method").and_then(Value::as_str);
    let id = message.get("id").cloned();
    let params = message.get("params");

    if method == Some("initialize") {
        let id = id.unwrap_or(Value::Null);
        let asked = params
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .unwrap_or(LATEST);
        let version = if SUPPORTED.contains(&asked) {
            asked
        } else {
            LATEST
        };
        let session = sessions.open();
        let body = result(
            &id,
            json!({
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench-echo-upstream", "version": env!("CARGO_PKG_VERSION")}
            }),
        );
        let mut response = json_response(StatusCode::OK, &body);
        if let Ok(value) = HeaderValue::from_str(&session) {
            response.headers_mut().insert(SESSION_HEADER, value);
        }
        return response;
    }

    let reply_id = id.clone().unwrap_or(Value::Null);
    let Some(session) = headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &error(
                &reply_id,
                -32600,
                "no Mcp-Session-Id: initialize first (this server speaks 2025-11-25)",
            ),
        );
    };
    if !sessions.is_live(session) {
        return json_response(
            StatusCode::NOT_FOUND,
            &error(&reply_id, -32600, "unknown session"),
        );
    }
    // Notifications and responses to server requests: nothing to answer.
    let (Some(method), Some(id)) = (method, id) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let body = match method {
        "tools/call" => call(&id, params),
        "tools/list" => result(&id, tools()),
        "ping" => result(&id, json!({})),
        _ => error(&id, -32601, "method not found"),
    };
    json_response(StatusCode::OK, &body)
}

async fn handle_delete(State(sessions): State<Arc<Sessions>>, headers: HeaderMap) -> StatusCode {
    match headers.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) if sessions.close(id) => StatusCode::OK,
        Some(_) => StatusCode::NOT_FOUND,
        None => StatusCode::BAD_REQUEST,
    }
}

async fn handle_get() -> StatusCode {
    StatusCode::METHOD_NOT_ALLOWED
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let address = listener.local_addr()?;
    // Small answers go out at once (no Nagle delay waiting for an ACK).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Router::new()
        .route(
            "/mcp",
            post(handle_post).delete(handle_delete).get(handle_get),
        )
        .with_state(Arc::new(Sessions::default()));
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening http://{address}/mcp")?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await
}
