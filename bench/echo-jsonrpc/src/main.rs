//! The ceiling of the fast-path benchmark (`bench/fastpath.sh`): a bare axum
//! server that answers every JSON-RPC request POSTed to `/mcp` with the same
//! small tool result,
//!
//! ```text
//! {"jsonrpc":"2.0","id":<the request's id>,"result":{"content":[{"type":"text","text":"ok"}]}}
//! ```
//!
//! as `application/json`. No MCP (no protocol-version checks, no sessions),
//! no authentication, no audit: what one core costs to receive an HTTP/1.1
//! POST, parse its JSON, and write a JSON answer, which is the least any MCP
//! server can do per call.
//!
//! ```text
//! bench-echo-jsonrpc [ADDRESS]      (default 127.0.0.1:0)
//! ```
//!
//! prints `listening http://ADDRESS/mcp` on stdout once it accepts
//! connections. It uses Tokio's multi-thread runtime, like Gatehouse, so
//! `TOKIO_WORKER_THREADS=1` gives it one worker; pin it with taskset.

use std::io::Write;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

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

async fn handle_post(body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}),
        );
    };
    // A notification (no id) gets no answer.
    let Some(id) = message.get("id") else {
        return StatusCode::ACCEPTED.into_response();
    };
    // Written out in the order of the spec's example; `id` is the request's
    // JSON value as it was (a number or a string).
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"ok"}}]}}}}"#
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
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
    let app = Router::new().route("/mcp", post(handle_post));
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening http://{address}/mcp")?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await
}
