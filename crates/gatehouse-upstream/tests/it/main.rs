//! Integration tests against real MCP servers: the Python SDK test server
//! in `tests/upstreams/server.py` (stdio and Streamable HTTP, both eras),
//! `@modelcontextprotocol/server-filesystem` via npx, and raw TCP servers
//! that misbehave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod faulty;
mod filesystem;
mod python_http;
mod python_stdio;
