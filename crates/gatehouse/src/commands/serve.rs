use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_mcp::http::{
    HttpConfig, ListenerSettings, ReadinessProbe, build_router, metrics_hosts, metrics_router,
    serve,
};
use gatehouse_mcp::routes;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::cli::{KeyCreateArgs, ServeArgs};
use crate::commands::first_credentials;
use crate::commands::keys::{create_key, first_signing_key, key_created};
use crate::commands::users::{create_user, user_added};
use crate::commands::welcome::{FirstRun, Withheld, print_welcome};
use crate::config::{AuthModeName, validate_public_url};
use crate::context::Context;
use crate::lifecycle::housekeeping::Housekeeping;
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
    let now = runtime.clock.now();
    let issued = create_key(ctx, &runtime.store, &args, now).await?;
    key_created(&issued.record)
        .record_in(runtime.gateway.audit(), now)
        .await;
    Ok(Some(issued.key))
}

/// The first user of an empty store, so a person can sign in at the
/// embedded authorization server right away. Returns (name, password).
async fn first_run_user(runtime: &Runtime) -> anyhow::Result<Option<(String, String)>> {
    if runtime.oauth.is_none() || runtime.store.count_users().await? > 0 {
        return Ok(None);
    }
    let password = gatehouse_oauth::generate_password()?;
    let now = runtime.clock.now();
    let user = create_user(
        runtime.store.as_ref(),
        "admin",
        gatehouse_core::DEFAULT_TENANT,
        &["admin".to_string()],
        &password,
        now,
    )
    .await?;
    user_added(&user)
        .record_in(runtime.gateway.audit(), now)
        .await;
    Ok(Some((user.username, password)))
}

/// Expired authorization state is deleted every few minutes; nothing
/// depends on it for correctness (every read checks expiry), only for size.
fn housekeeping(oauth: Arc<gatehouse_oauth::http::AsState>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {
                    if let Err(e) = oauth.server.housekeeping(oauth.clock.now()).await {
                        tracing::warn!(error = %e, "authorization server housekeeping failed");
                    }
                }
            }
        }
    });
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

/// Connections the admin listener (`/metrics`) holds at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

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
    let metrics_listener = match ctx.config.metrics.listen {
        // Checked again with the address `--listen` may have changed.
        Some(address) if address == bound => {
            anyhow::bail!("metrics.listen must differ from the public listener {bound}")
        }
        Some(address) => {
            let metrics = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address} (metrics.listen)"))?;
            Some(metrics)
        }
        None => None,
    };
    let metrics_url = metrics_listener
        .as_ref()
        .map(|l| {
            l.local_addr()
                .map(|a| format!("http://{a}{}", routes::METRICS))
        })
        .transpose()?;
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
    if ctx.config.auth.mode == AuthModeName::None && !gatehouse_core::is_loopback_url(&public_url) {
        anyhow::bail!(
            "auth.mode = \"none\" is not allowed with the public URL {public_url}: a proxy would publish the gateway without authentication"
        );
    }
    if let Some(warning) = crate::config::cleartext_warning(&public_url) {
        tracing::warn!("{warning}");
    }
    for warning in ctx
        .config
        .upstreams
        .iter()
        .filter_map(|u| u.cleartext_warning())
    {
        tracing::warn!("{warning}");
    }
    let runtime = Runtime::start(ctx, Some(&public_url)).await?;
    let first_key = first_run_key(ctx, &runtime).await?;
    let first_user = first_run_user(&runtime).await?;
    let first_shown = first_credentials::stdout_is_terminal();
    let withheld = !first_shown && (first_key.is_some() || first_user.is_some());
    let credentials_file = if withheld {
        let user = first_user.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        match first_credentials::write(&ctx.data_dir, first_key.as_deref(), user) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::error!(
                    error = %format!("{e:#}"),
                    "the first start's credentials could not be written to a file (they are not printed: standard output is not a terminal); make new ones with `gatehouse keys create --name admin-2 --role admin` and `gatehouse users passwd admin`"
                );
                None
            }
        }
    } else {
        if let Some(path) = first_credentials::left_behind(&ctx.data_dir) {
            tracing::warn!(
                path = %path.display(),
                "the first start's admin key and password are still in this file: store them elsewhere and delete it"
            );
        }
        None
    };

    let origin = public_url.origin().ascii_serialization();
    let mcp_url = format!("{origin}{}", routes::MCP);

    let shutdown = CancellationToken::new();
    shutdown_signal(shutdown.clone());
    if let Some(oauth) = &runtime.oauth {
        housekeeping(Arc::clone(oauth), shutdown.clone());
    }
    crate::policy_file::record_start(
        ctx,
        Arc::clone(&runtime.gateway),
        runtime.policy_digest.as_deref(),
        shutdown.clone(),
    )
    .await;
    crate::policy_file::watch(
        ctx,
        Arc::clone(&runtime.gateway),
        shutdown.clone(),
        runtime.policy_digest.clone(),
    );
    if let Some(tls) = runtime.syslog_tls.clone() {
        // A renewed certificate or CA must not need a restart: while the
        // sink cannot connect, every call is refused.
        let files = tls.files().map(std::path::Path::to_path_buf).collect();
        crate::file_watch::watch(
            "syslog TLS files",
            files,
            false,
            shutdown.clone(),
            move || {
                match tls.reload() {
                    Ok(()) => tracing::info!("syslog TLS files reloaded; new connections use them"),
                    Err(e) => tracing::error!(error = %e,
                        "the syslog TLS files cannot be used; keeping the ones loaded before"),
                }
                std::future::ready(())
            },
        );
    }
    let lifecycle = if ctx.config.lifecycle.enabled {
        let housekeeping = Housekeeping {
            store: Arc::clone(&runtime.store),
            audit: runtime.gateway.audit().clone(),
            alerts: runtime.alerts.clone(),
            // Signing keys are rotated only where the authorization server runs.
            master: match &runtime.oauth {
                Some(_) => Some(ctx.master_key()?),
                None => None,
            },
            policy: ctx.config.lifecycle.policy(),
            interval: ctx.config.lifecycle.interval,
            clock: Arc::clone(&runtime.clock),
        };
        Some(housekeeping.spawn(shutdown.clone()))
    } else {
        None
    };
    // Checkpoints of the audit chain; the last one is signed after the
    // listener has drained, before the audit log closes.
    let checkpoints_stop = CancellationToken::new();
    let checkpoints = start_checkpoints(ctx, &runtime, &origin, checkpoints_stop.clone()).await?;
    let http_config = HttpConfig {
        public_url,
        allowed_hosts: server.allowed_hosts.clone(),
        allowed_origins: server.allowed_origins.clone(),
        max_body_bytes: server.max_body_bytes,
        body_timeout: server.body_timeout,
        session_idle_timeout: server.session_idle_timeout,
        max_sessions: gatehouse_mcp::http::MAX_SESSIONS,
        max_sessions_per_principal: server.max_sessions_per_principal,
        initialize_per_minute: server.initialize_per_minute,
        authorization_server: runtime.oauth.as_ref().map(|_| origin.clone()),
        readiness: runtime
            .oauth
            .iter()
            .map(|oauth| Arc::new(SigningKeyProbe(Arc::clone(oauth))) as Arc<dyn ReadinessProbe>)
            .collect(),
    };
    // The authorization server's routes go in before the body limits and
    // the Host guard are applied, so they get the same ones as /mcp.
    let router = build_router(
        Arc::clone(&runtime.gateway),
        Arc::clone(&runtime.authenticator),
        &http_config,
        shutdown.clone(),
        runtime
            .oauth
            .as_ref()
            .map(|oauth| gatehouse_oauth::http::router(Arc::clone(oauth))),
    );
    // Its readiness probes hold the authorization server (and so an audit
    // sender): only the router may keep them, or the audit log could not be
    // flushed and closed at shutdown.
    drop(http_config);

    if ctx.config.auth.mode == AuthModeName::None {
        tracing::warn!(
            role = %ctx.config.auth.anonymous_role,
            "AUTHENTICATION IS OFF: every request runs as the anonymous principal"
        );
    }
    let limits = ListenerSettings {
        header_read_timeout: server.header_read_timeout,
        max_connections: max_connections(),
        shutdown_grace: server.shutdown_grace,
        trusted_proxies: Arc::new(
            gatehouse_core::TrustedProxies::parse(&server.trusted_proxies)
                .map_err(|reason| anyhow::anyhow!("server.trusted_proxies: {reason}"))?,
        ),
    };
    // The admin listener stops with the public one; its router holds no
    // audit sender, so it never keeps the audit log from closing.
    let metrics_server = metrics_listener.map(|metrics_listener| {
        // From the configured address, which start-up checked (loopback
        // unless `allow_remote`).
        let hosts = ctx.config.metrics.listen.and_then(metrics_hosts);
        tokio::spawn(serve(
            metrics_listener,
            metrics_router(Arc::clone(&runtime.metrics), hosts),
            // A few scrapers at most: a cap of its own that leaves the
            // descriptors kept for the database and the audit log alone.
            ListenerSettings {
                max_connections: ADMIN_MAX_CONNECTIONS,
                ..limits.clone()
            },
            shutdown.clone(),
        ))
    });
    if args.json {
        if first_key.is_some() || first_user.is_some() {
            let mut event = json!({"event": "first_run"});
            if let Some(key) = &first_key {
                if first_shown {
                    event["api_key"] = json!(key);
                }
                event["role"] = json!("admin");
            }
            if let Some((username, password)) = &first_user {
                event["user"] = json!({"username": username});
                if first_shown {
                    event["user"]["password"] = json!(password);
                }
            }
            if let Some(path) = &credentials_file {
                event["credentials_file"] = json!(path.display().to_string());
            }
            output::json(&event);
        }
        output::json(&json!({
            "event": "listening",
            "address": bound.to_string(),
            "mcp_url": mcp_url,
            "metrics_url": metrics_url,
            "data_dir": ctx.data_dir.display().to_string(),
        }));
    } else {
        print_welcome(
            &mcp_url,
            &FirstRun {
                key: first_key.as_deref().filter(|_| first_shown),
                user: first_user
                    .as_ref()
                    .filter(|_| first_shown)
                    .map(|(u, p)| (u.as_str(), p.as_str())),
                withheld: withheld.then(|| Withheld {
                    key: first_key.is_some(),
                    user: first_user.is_some(),
                    file: credentials_file.as_deref(),
                }),
                authorization_server: runtime.oauth.as_ref().map(|_| origin.as_str()),
                metrics_url: metrics_url.as_deref(),
            },
            ctx,
        );
    }
    tracing::info!(address = %bound, metrics = metrics_url.as_deref(), "listening");

    serve(listener, router, limits, shutdown).await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    // The task holds an audit sender: it must be gone before the log closes.
    if let Some(lifecycle) = lifecycle
        && let Err(e) = lifecycle.await
    {
        tracing::warn!(error = %e, "lifecycle housekeeping task failed");
    }
    checkpoints_stop.cancel();
    let _ = checkpoints.await;
    runtime.finish().await;
    tracing::info!("stopped; audit log flushed");
    Ok(())
}

/// Ready only while the authorization server has a key that signs now.
struct SigningKeyProbe(Arc<gatehouse_oauth::http::AsState>);

impl std::fmt::Debug for SigningKeyProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeyProbe")
    }
}

impl ReadinessProbe for SigningKeyProbe {
    fn name(&self) -> &'static str {
        "signing_key"
    }

    fn check(&self) -> futures::future::BoxFuture<'_, bool> {
        Box::pin(async move { self.0.server.can_sign(self.0.clock.now()).await })
    }
}

/// Signs the head of the run's audit chain every `audit.checkpoint_interval`
/// while records arrive, and once more when `stop` is cancelled (await the
/// task before the audit log closes). `issuer` names the signer.
pub(crate) async fn start_checkpoints(
    ctx: &Context,
    runtime: &Runtime,
    issuer: &str,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let signer = checkpoint_signer(ctx, runtime, issuer).await?;
    Ok(gatehouse_audit::spawn_checkpoints(
        runtime.gateway.audit().clone(),
        signer,
        Arc::clone(&runtime.clock),
        ctx.config.audit.checkpoint_interval,
        // Only a server's chain witnesses (a stdio run's is itself one
        // that servers witness).
        Some(gatehouse_audit::Witness::new(
            Arc::clone(&runtime.store),
            runtime.clock.now(),
        )),
        stop,
    ))
}

/// What signs the audit chain's checkpoints: the authorization server's
/// key, or, where it does not run, a key of the same store kept for this
/// (made on first use, and then an operator record). `issuer` names the
/// signer in the checkpoints.
async fn checkpoint_signer(
    ctx: &Context,
    runtime: &Runtime,
    issuer: &str,
) -> anyhow::Result<Arc<dyn gatehouse_audit::CheckpointSigner>> {
    Ok(match &runtime.oauth {
        Some(oauth) => Arc::new(crate::runtime::AsSigner(Arc::clone(oauth))),
        None => {
            let keys = gatehouse_oauth::KeyRing::new(Arc::clone(&runtime.store), ctx.master_key()?);
            let now = runtime.clock.now();
            let made = keys
                .ensure_signer(now)
                .await
                .context("cannot prepare the key that signs audit checkpoints")?;
            if let Some(key) = made {
                first_signing_key(&key)
                    .record_in(runtime.gateway.audit(), now)
                    .await;
            }
            Arc::new(crate::runtime::KeyRingSigner {
                keys,
                issuer: issuer.to_string(),
            })
        }
    })
}

/// Descriptors kept back from client connections: the database, the audit
/// files and sinks, upstream connections and children, the listeners.
const RESERVED_DESCRIPTORS: u64 = 256;

/// How many client connections the listener holds at once: what the
/// process's open-file limit leaves after `RESERVED_DESCRIPTORS`. The soft
/// limit is raised to the hard one first (often 1,024 against 524,288), as
/// servers commonly do, so a busy server is not capped at a few hundred.
fn max_connections() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = raised,
            Err(e) => tracing::debug!(error = %e, "cannot raise the open-file limit"),
        }
    }
    let open_files = limit.current.unwrap_or(1 << 20).min(1 << 20);
    // The admin listener's connections come out of the same limit.
    let admin = u64::try_from(ADMIN_MAX_CONNECTIONS).unwrap_or(64);
    let connections = open_files
        .saturating_sub(RESERVED_DESCRIPTORS + admin)
        .max(64);
    usize::try_from(connections).unwrap_or(usize::MAX)
}
