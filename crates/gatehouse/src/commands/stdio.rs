use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_mcp::{StdioAuthenticator, StdioError, serve_stdio};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::runtime::Runtime;

pub const API_KEY_ENV: &str = "GATEHOUSE_API_KEY";

/// The issuer named in the checkpoints a stdio run signs.
const STDIO_ISSUER: &str = "gatehouse-stdio";

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let runtime = Runtime::start(ctx, None).await?;
    // A stdio run's records form a chain of their own, which may live for
    // hours (a desktop client's session): it is signed at intervals and at
    // the end, as a server's is, so `audit verify` can vouch for it.
    let checkpoints_stop = CancellationToken::new();
    let checkpoints = crate::commands::serve::start_checkpoints(
        ctx,
        &runtime,
        STDIO_ISSUER,
        checkpoints_stop.clone(),
    )
    .await?;
    // A stdio process may live for days (a desktop client's): it follows
    // the policy file as a server does, or it would go on enforcing a policy
    // the operator has narrowed (and the audit trail says is replaced).
    let policy_stop = CancellationToken::new();
    crate::policy_file::record_start(
        ctx,
        Arc::clone(&runtime.gateway),
        runtime.policy_digest.as_deref(),
        policy_stop.clone(),
    )
    .await;
    crate::policy_file::watch(
        ctx,
        Arc::clone(&runtime.gateway),
        policy_stop.clone(),
        runtime.policy_digest.clone(),
    );
    let key = std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty());
    let auth = Arc::new(StdioAuthenticator::new(
        Arc::clone(&runtime.authenticator),
        Arc::clone(&runtime.gateway),
        key,
    ));
    let served = serve_stdio(
        Arc::clone(&runtime.gateway),
        auth,
        ctx.config.server.max_body_bytes,
    )
    .await;
    let lapsed = matches!(served, Err(StdioError::Lapsed(_)));
    let result = served.with_context(|| format!("set {API_KEY_ENV} to a valid Gatehouse API key"));
    policy_stop.cancel();
    // The last checkpoint, before the audit log closes.
    checkpoints_stop.cancel();
    let _ = checkpoints.await;
    runtime.finish().await;
    if lapsed {
        // The SDK reads stdin on a blocking thread that only the client
        // closing stdin ends, and the runtime would wait for that thread on
        // shutdown: with everything written and the audit log closed, the
        // process ends here.
        if let Err(error) = &result {
            crate::output::error(&crate::output::error_message(error));
        }
        std::process::exit(1);
    }
    result
}
