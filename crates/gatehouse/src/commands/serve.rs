use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_mcp::http::{HttpConfig, ListenerLimits, build_router, serve};
use gatehouse_mcp::routes;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::cli::{KeyCreateArgs, ServeArgs};
use crate::commands::keys::create_key;
use crate::config::{AuthModeName, validate_public_url};
use crate::context::Context;
use crate::output;
use crate::runtime::Runtime;

/// The first key of an empty store.
async fn first_run_key(ctx: &Context, runtime: &Runtime) -> anyhow::Result<Option<String>> {
    if ctx.config.auth.mode == AuthModeName::None || runtime.store.count_api_keys().await? > 0 {
        return Ok(None);
    }
    let args = KeyCreateArgs {
        name: "admin".into(),
        role: "admin".into(),
        tenant: gatehouse_core::DEFAULT_TENANT.into(),
        scopes: None,
        owner: None,
        expires: None,
        json: false,
    };
    let issued = create_key(ctx, &args, runtime.clock.now()).await?;
    Ok(Some(issued.key))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a new user needs for a first authenticated call.
fn print_welcome(mcp_url: &str, key: Option<&str>, ctx: &Context) {
    let header_key = key.unwrap_or("<your API key>");
    let list_body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let lines = [
        String::new(),
        "Gatehouse is running.".into(),
        format!("  MCP endpoint:   {mcp_url}"),
        format!("  Data directory: {}", ctx.data_dir.display()),
        format!(
            "  Audit log:      {} (or: gatehouse audit tail --follow)",
            ctx.in_data_dir(&ctx.config.audit.file).display()
        ),
        String::new(),
    ];
    for line in lines {
        output::line(&line);
    }
    if let Some(key) = key {
        output::line(
            "First start: created an admin API key. It is shown only this once; store it now:",
        );
        output::line("");
        output::line(&format!("  {key}"));
        output::line("");
        output::line("Create keys with less power for agents, e.g.:");
        output::line("  gatehouse keys create --name my-agent --role reader");
        output::line("or an OAuth client for the client-credentials grant:");
        output::line("  gatehouse clients create --name my-service --role reader");
        output::line("");
    }
    let curl = format!(
        "curl -s {mcp_url} \\\n    -H {} \\\n    -H 'Content-Type: application/json' \\\n    -H 'Accept: application/json, text/event-stream' \\\n    -H 'MCP-Protocol-Version: 2026-07-28' \\\n    -H 'Mcp-Method: tools/list' \\\n    -d {}",
        shell_quote(&format!("Authorization: Bearer {header_key}")),
        shell_quote(list_body),
    );
    let binary = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "gatehouse".into());
    // Claude Desktop runs local servers over stdio: the same policy and audit.
    let claude_json = json!({
        "mcpServers": {
            "gatehouse": {
                "command": binary,
                "args": ["stdio", "--data-dir", ctx.data_dir.display().to_string()],
                "env": {"GATEHOUSE_API_KEY": header_key}
            }
        }
    });
    let vscode_json = json!({
        "servers": {
            "gatehouse": {
                "type": "http",
                "url": mcp_url,
                "headers": {"Authorization": format!("Bearer {header_key}")}
            }
        }
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    for line in [
        "List the tools this key may call:".to_string(),
        String::new(),
        format!("  {curl}"),
        String::new(),
        "Claude Desktop (claude_desktop_config.json), over stdio:".into(),
        pretty(&claude_json),
        String::new(),
        "VS Code (.vscode/mcp.json), over Streamable HTTP:".into(),
        pretty(&vscode_json),
        String::new(),
        "MCP Inspector:".into(),
        format!(
            "  npx @modelcontextprotocol/inspector --cli {mcp_url} --transport http --header {} --method tools/list",
            shell_quote(&format!("Authorization: Bearer {header_key}"))
        ),
        String::new(),
    ] {
        output::line(&line);
    }
}

fn shutdown_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}

pub async fn run(ctx: &Context, args: &ServeArgs) -> anyhow::Result<()> {
    let server = &ctx.config.server;
    let listen = args.listen.unwrap_or(server.listen);
    if ctx.config.auth.mode == AuthModeName::None && !listen.ip().is_loopback() {
        anyhow::bail!("auth.mode = \"none\" is only allowed on a loopback address, not {listen}");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let public_url = match args
        .public_url
        .clone()
        .or_else(|| server.public_url.clone())
    {
        Some(url) => {
            validate_public_url(&url).map_err(|r| anyhow::anyhow!("--public-url: {r}"))?;
            url
        }
        None => Url::parse(&format!("http://{bound}")).context("listen address as URL")?,
    };
    let runtime = Runtime::start(ctx, Some(&public_url)).await?;
    let first_key = first_run_key(ctx, &runtime).await?;

    let origin = public_url.origin().ascii_serialization();
    let mcp_url = format!("{origin}{}", routes::MCP);

    let shutdown = CancellationToken::new();
    shutdown_signal(shutdown.clone());
    let http_config = HttpConfig {
        public_url,
        allowed_hosts: server.allowed_hosts.clone(),
        allowed_origins: server.allowed_origins.clone(),
        max_body_bytes: server.max_body_bytes,
        body_timeout: server.body_timeout,
        session_idle_timeout: server.session_idle_timeout,
        authorization_server: runtime.oauth.as_ref().map(|_| origin.clone()),
    };
    let mut router = build_router(
        Arc::clone(&runtime.gateway),
        Arc::clone(&runtime.authenticator),
        &http_config,
        shutdown.clone(),
    );
    if let Some(oauth) = &runtime.oauth {
        router = router.merge(gatehouse_oauth::http::router(Arc::clone(oauth)));
    }

    if ctx.config.auth.mode == AuthModeName::None {
        tracing::warn!(
            role = %ctx.config.auth.anonymous_role,
            "AUTHENTICATION IS OFF: every request runs as the anonymous principal"
        );
    }
    if args.json {
        if let Some(key) = &first_key {
            output::json(&json!({"event": "first_run", "api_key": key, "role": "admin"}));
        }
        output::json(&json!({
            "event": "listening",
            "address": bound.to_string(),
            "mcp_url": mcp_url,
            "data_dir": ctx.data_dir.display().to_string(),
        }));
    } else {
        print_welcome(&mcp_url, first_key.as_deref(), ctx);
    }
    tracing::info!(address = %bound, "listening");

    serve(
        listener,
        router,
        ListenerLimits {
            header_read_timeout: server.header_read_timeout,
            shutdown_grace: server.shutdown_grace,
        },
        shutdown,
    )
    .await;
    runtime.finish().await;
    tracing::info!("stopped; audit log flushed");
    Ok(())
}
