use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_mcp::{StdioAuthenticator, serve_stdio};

use crate::context::Context;
use crate::runtime::Runtime;

pub const API_KEY_ENV: &str = "GATEHOUSE_API_KEY";

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let runtime = Runtime::start(ctx, None).await?;
    let key = std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty());
    let auth = Arc::new(StdioAuthenticator::new(
        Arc::clone(&runtime.authenticator),
        Arc::clone(&runtime.gateway),
        key,
    ));
    let result = serve_stdio(Arc::clone(&runtime.gateway), auth)
        .await
        .with_context(|| format!("set {API_KEY_ENV} to a valid Gatehouse API key"));
    runtime.finish().await;
    result
}
