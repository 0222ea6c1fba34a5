//! Assembles the request path (store, audit, policy, tools, gateway,
//! authenticator) from a `Context`. Used by `serve` and `stdio`.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use url::Url;

use anyhow::Context as _;
use futures::future::BoxFuture;
use gatehouse_alerts::{Alerts, AuthBurstObserver, AuthBursts, spawn_webhook};
use gatehouse_audit::{
    AuditLog, AuditOptions, AuditWriterHandle, CHECKPOINT_TYP, Chain, CheckpointClaims,
    CheckpointSigner, Redactor, Rotation,
};
use gatehouse_authn::external::ExternalIssuers;
use gatehouse_authn::{AuthMode, Authenticator, TokenSettings};
use gatehouse_authz::{ApprovalSettings, Approvals, SharedPolicy, TaskGrants};
use gatehouse_core::{
    Clock, CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, SystemClock,
};
use gatehouse_core::{SecretCipher, Timestamp};
use gatehouse_mcp::identity::{IDENTITY_TYP, IdentityClaims, IdentitySigner};
use gatehouse_mcp::incidents::Incidents;
use gatehouse_mcp::{Gateway, ToolPins};
use gatehouse_metrics::Metrics;
use gatehouse_oauth::http::AsState;
use gatehouse_oauth::{
    ApprovalPages, AsConfig, AuthorizationServer, CimdConfig, CookiePolicy,
    DEFAULT_ACCESS_TOKEN_TTL_SECS, RegistrationPolicy, TaskExchange,
};
use gatehouse_store::Store;
use gatehouse_tools::{BuiltinTools, ToolsConfig};
use gatehouse_upstream::UpstreamSet;

use crate::config::{AuthModeName, RegistrationMode};
use crate::context::Context;
use crate::upstream_secrets::StoreSecrets;

pub struct Runtime {
    pub store: Arc<dyn Store>,
    /// The embedded authorization server, when it runs (HTTP with API keys).
    pub oauth: Option<Arc<AsState>>,
    pub gateway: Arc<Gateway>,
    pub authenticator: Arc<Authenticator>,
    pub audit_writer: AuditWriterHandle,
    pub clock: Arc<dyn Clock>,
    /// The upstream MCP servers, when the configuration names any.
    pub upstreams: Option<Arc<UpstreamSet>>,
    /// What /metrics shows; gate 1 and the gateway count into it.
    pub metrics: Arc<Metrics>,
    /// Raises alerts (the detectors, the lifecycle's warnings).
    pub alerts: Alerts,
    /// Delivers alerts to the webhook (`serve` with `[alerts.webhook]`).
    pub alert_webhook: Option<JoinHandle<()>>,
    /// The syslog sink's TLS client, shared with the sink: `serve` reloads
    /// its files on SIGHUP and when they change.
    pub syslog_tls: Option<gatehouse_audit::SyslogTls>,
    /// The SHA-256 of the policy file it started with (`None`: the shipped
    /// default), for its audit record and the watcher.
    pub policy_digest: Option<String>,
}

pub const SANDBOX_DIR: &str = "sandbox";
/// Names the server's audit chain, in the data directory.
pub const AUDIT_CHAIN_FILE: &str = "audit-chain";

fn anonymous(role: &str) -> Principal {
    Principal {
        tenant: DEFAULT_TENANT.into(),
        human: None,
        agent: "anonymous".into(),
        credential: CredentialRef {
            kind: CredentialKind::Anonymous,
            id: "anonymous".into(),
        },
        roles: vec![role.to_string()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    }
}

impl Runtime {
    /// `public_url` is known only to `serve`; without it (stdio) the
    /// authorization server does not run and only API keys are accepted.
    pub async fn start(ctx: &Context, public_url: Option<&Url>) -> anyhow::Result<Runtime> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = ctx.open_store().await?;
        let pepper = ctx.servers_pepper(&store).await?;
        let audit_path = ctx.in_data_dir(&ctx.config.audit.file);
        // A server continues its instance's hash chain; `gatehouse stdio`
        // (several may run on one data directory) gets a chain per run.
        let chain = match public_url {
            Some(_) => Chain::for_instance(&*store, &ctx.data_dir.join(AUDIT_CHAIN_FILE))
                .await
                .context("cannot read the audit chain")?,
            None => Chain::for_run(),
        };
        let syslog = ctx.syslog_settings()?;
        // Kept to reload the TLS files while the sink runs (they share it).
        let syslog_tls = syslog.as_ref().and_then(|s| s.tls.clone());
        let (audit, audit_writer) = AuditLog::start_with(
            Arc::clone(&store),
            AuditOptions {
                file: Some(audit_path.clone()),
                fsync: ctx.config.audit.fsync,
                chain,
                // Only the server rotates the file it shares with commands.
                rotation: public_url.map(|_| Rotation {
                    max_bytes: ctx.config.audit.rotate_bytes,
                    max_age: ctx.config.audit.rotate_after,
                }),
                syslog,
            },
        )
        .with_context(|| format!("cannot open the audit file {}", audit_path.display()))?;
        let metrics = Arc::new(Metrics::default());
        let queue = audit.queue_probe();
        metrics.set_audit_queue_depth(move || u64::try_from(queue.depth()).unwrap_or(u64::MAX));
        let (alerts, alert_webhook) =
            start_alerts(ctx, &store, &audit, &metrics, &clock, public_url.is_some()).await?;
        let redactor =
            Redactor::new(&ctx.config.audit.redact_fields).context("invalid redaction pattern")?;
        let tools_config = ToolsConfig {
            sandbox_dir: ctx.data_dir.join(SANDBOX_DIR),
            web_fetch_allowlist: ctx.config.tools.web_fetch_allowlist.clone(),
            web_fetch_allow_private: ctx.config.tools.web_fetch_allow_private,
            max_file_bytes: ctx.config.tools.max_file_bytes,
        };
        // Tenant secrets are stored sealed with the master key. Where the
        // store already holds signing keys, only a master key that opens one
        // is taken (never a new file): a process started without the
        // servers' key (a `gatehouse stdio` run, a new instance) would
        // otherwise seal the remaining legacy secrets with a key nobody else
        // has, and leave a stray key file behind.
        let secret_cipher: Arc<dyn SecretCipher> =
            Arc::new(ctx.servers_master_key(&*store).await.context(
                "the store's signing keys and secrets are sealed with a master key: start with the \
                 same master key as the other servers (GATEHOUSE_MASTER_KEY, or \
                 oauth.master_key_env or oauth.master_key_file)",
            )?);
        crate::secret_sealing::seal_stored_secrets(&*store, &*secret_cipher)
            .await
            .context("cannot seal the tenant secrets stored before secrets were sealed")?;
        let tools = BuiltinTools::open(tools_config, Arc::clone(&store))
            .await
            .context("cannot prepare the built-in tools")?
            .with_secret_cipher(Arc::clone(&secret_cipher))
            .with_reserved_secrets(upstream_secret_names(&ctx.config.upstreams));
        let (loaded, policy_digest) = crate::policy_file::load_with_digest(ctx)?;
        crate::config::check_against_policy(&ctx.config, &loaded)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        let policy = Arc::new(SharedPolicy::new(loaded));
        let mode = match ctx.config.auth.mode {
            AuthModeName::ApiKey => AuthMode::Required,
            AuthModeName::None => AuthMode::Disabled {
                anonymous: Box::new(anonymous(&ctx.config.auth.anonymous_role)),
            },
        };
        let mut authenticator =
            Authenticator::new(Arc::clone(&store), pepper, mode).with_metrics(Arc::clone(&metrics));
        let auth_required = ctx.config.auth.mode == AuthModeName::ApiKey;
        // The authorization server runs for HTTP with authentication on.
        let issuer = public_url
            .filter(|_| ctx.config.oauth.enabled && auth_required)
            .map(|url| (url, url.origin().ascii_serialization()));
        if let Some((_, issuer)) = &issuer {
            authenticator = authenticator.with_access_tokens(TokenSettings {
                issuer: issuer.clone(),
                audiences: vec![format!("{issuer}{}", gatehouse_mcp::routes::MCP)],
                proof: Some(gatehouse_oauth::signing_key_proof(ctx.master_key()?)),
            });
        }
        // External issuers' tokens are for the HTTP endpoint with
        // authentication on; their default audience is the resource URL.
        if let Some(url) = public_url.filter(|_| auth_required)
            && !ctx.config.issuers.is_empty()
        {
            let resource = format!(
                "{}{}",
                url.origin().ascii_serialization(),
                gatehouse_mcp::routes::MCP
            );
            let external = ExternalIssuers::new(&ctx.config.issuers, &resource)
                .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?
                .with_metrics(Arc::clone(&metrics));
            authenticator = authenticator.with_external_issuers(Arc::new(external));
        }
        let authenticator = Arc::new(authenticator);
        let approvals = Arc::new(Approvals::new(
            Arc::clone(&store),
            ctx.pepper()?,
            ApprovalSettings {
                page_base: issuer.as_ref().map(|(_, issuer)| {
                    format!("{issuer}{}", gatehouse_oauth::routes::APPROVALS_PREFIX)
                }),
                ..ApprovalSettings::default()
            },
        ));
        let task_grants = Arc::new(TaskGrants::new(Arc::clone(&store), audit.clone()));
        let pins = Arc::new(
            ToolPins::new(Arc::clone(&store), audit.clone(), Arc::clone(&clock))
                .with_alerts(alerts.clone()),
        );
        let incidents = Arc::new(Incidents::new(alerts.clone(), ctx.config.alerts.settings()));
        let mut gateway = Gateway::new(
            Arc::clone(&policy),
            tools,
            audit,
            redactor,
            Arc::clone(&clock),
        )
        .with_approvals(Arc::clone(&approvals))
        .with_task_grants(Arc::clone(&task_grants))
        .with_metrics(Arc::clone(&metrics))
        .with_incidents(incidents);
        // Children are started (and HTTP upstreams connected) in the
        // background; a call waits for its connection up to its timeouts.
        let upstreams = if ctx.config.upstreams.is_empty() {
            None
        } else {
            let set = UpstreamSet::start(
                ctx.config.upstreams.clone(),
                Some(Arc::new(StoreSecrets(Arc::clone(&store), secret_cipher))),
            )
            .context("invalid [[upstreams]]")?;
            Some(Arc::new(set))
        };
        if let Some(set) = &upstreams {
            gateway = gateway.with_upstreams(Arc::clone(set)).with_tool_pins(pins);
        }
        let gateway = Arc::new(gateway);
        let mut oauth = None;
        if let Some((url, issuer)) = issuer {
            let resource = format!("{issuer}{}", gatehouse_mcp::routes::MCP);
            let config = as_config(ctx, url, issuer, resource, &gateway)?;
            // Made here rather than inside the server, so a first start
            // records it with its admin key and user.
            let now = clock.now();
            let made = gatehouse_oauth::KeyRing::new(Arc::clone(&store), ctx.master_key()?)
                .ensure_signer(now)
                .await
                .context("cannot prepare the authorization server's signing key")?;
            if let Some(key) = made {
                crate::commands::keys::first_signing_key(&key)
                    .record_in(gateway.audit(), now)
                    .await;
            }
            let server = AuthorizationServer::start(
                config,
                Arc::clone(&store),
                ctx.pepper()?,
                ctx.master_key()?,
                gateway.audit().clone(),
                Arc::clone(&authenticator),
                clock.now(),
            )
            .await
            .context("cannot start the authorization server")?
            .with_task_exchange(TaskExchange {
                authenticator: Arc::clone(&authenticator),
                policy: Arc::clone(&policy),
                grants: task_grants,
            })
            .with_approvals(ApprovalPages {
                approvals,
                policy,
                token_minutes: ApprovalSettings::default().token_ttl_ms / 60_000,
            });
            let state = Arc::new(AsState {
                server,
                clock: Arc::clone(&clock),
            });
            gateway.set_identity_signer(Arc::new(AsSigner(Arc::clone(&state))));
            oauth = Some(state);
        }
        if oauth.is_none()
            && let Some(entry) = ctx.config.upstreams.iter().find(|u| u.forward_identity)
        {
            anyhow::bail!(
                "upstream {:?} has forward_identity = true, which needs the embedded authorization server (its keys sign the identity): enable [oauth]",
                entry.name
            );
        }
        Ok(Runtime {
            store,
            oauth,
            gateway,
            authenticator,
            audit_writer,
            clock,
            upstreams,
            metrics,
            alerts,
            alert_webhook,
            syslog_tls,
            policy_digest,
        })
    }

    /// Drops every audit sender and waits until the queue is written.
    pub async fn finish(self) {
        let Runtime {
            gateway,
            authenticator,
            audit_writer,
            oauth,
            upstreams,
            alert_webhook,
            ..
        } = self;
        // Undelivered alerts stay in the store's outbox for the next start.
        if let Some(webhook) = alert_webhook {
            webhook.abort();
        }
        // Children are stopped, not left behind.
        if let Some(upstreams) = upstreams {
            upstreams.shutdown().await;
        }
        drop(oauth);
        drop(authenticator);
        drop(gateway);
        audit_writer.wait().await;
    }
}

/// The alerts of a process: counted on /metrics, bursts of failed
/// authentications watched on the audit log, and (for a server with a
/// webhook) the webhook's sender started.
async fn start_alerts(
    ctx: &Context,
    store: &Arc<dyn Store>,
    audit: &AuditLog,
    metrics: &Arc<Metrics>,
    clock: &Arc<dyn Clock>,
    serving: bool,
) -> anyhow::Result<(Alerts, Option<JoinHandle<()>>)> {
    let config = &ctx.config.alerts;
    let settings = config.settings();
    let mut alerts = Alerts::new(Arc::clone(store)).with_metrics(Arc::clone(metrics));
    let mut sender = None;
    if config.webhook.is_some() {
        let wake = Arc::new(Notify::new());
        alerts = alerts.with_webhook(Arc::clone(&wake));
        // Only a server sends; `gatehouse stdio` queues for it.
        if serving && let Some(webhook) = config.webhook_settings().await? {
            let handle = spawn_webhook(Arc::clone(store), webhook, Arc::clone(clock), wake)
                .map_err(|e| anyhow::anyhow!("invalid configuration: alerts.webhook: {e}"))?;
            sender = Some(handle);
        }
    }
    let bursts = AuthBursts::new(settings.auth_failures, settings.auth_failure_window);
    audit.set_observer(Arc::new(AuthBurstObserver::new(
        bursts,
        alerts.clone(),
        settings.auth_failure_window,
    )));
    Ok((alerts, sender))
}

fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// The authorization server's settings, from the configuration file.
fn as_config(
    ctx: &Context,
    public_url: &Url,
    issuer: String,
    resource: String,
    gateway: &Gateway,
) -> anyhow::Result<AsConfig> {
    let oauth = &ctx.config.oauth;
    let registration = match oauth.registration {
        RegistrationMode::Open => RegistrationPolicy::Open,
        RegistrationMode::Disabled => RegistrationPolicy::Disabled,
        RegistrationMode::Token => {
            let var = oauth
                .registration_token_env
                .as_deref()
                .context("oauth.registration_token_env is not set")?;
            let token = std::env::var(var).with_context(|| {
                format!("environment variable {var} (the initial access token) is not set")
            })?;
            if token.len() < 32 {
                anyhow::bail!("the initial access token in {var} must be at least 32 characters");
            }
            RegistrationPolicy::InitialAccessToken(ctx.pepper()?.hash(token.as_bytes()))
        }
    };
    let client_metadata = oauth.client_metadata_documents.then(|| CimdConfig {
        allowed_domains: oauth.client_metadata_domains.clone(),
        dev_http_hosts: oauth.client_metadata_dev_hosts.clone(),
        max_clients: oauth.client_metadata_max_clients,
        ..CimdConfig::default()
    });
    Ok(AsConfig {
        issuer,
        resource,
        access_token_ttl_secs: i64::try_from(oauth.access_token_ttl.as_secs())
            .unwrap_or(DEFAULT_ACCESS_TOKEN_TTL_SECS),
        refresh_token_ttl_secs: secs(oauth.refresh_token_ttl),
        policy: Arc::clone(gateway.shared_policy()),
        tools: BuiltinTools::definitions()
            .iter()
            .map(|d| d.name.to_string())
            .collect(),
        registration,
        dynamic_client_ttl_secs: secs(oauth.dynamic_client_ttl),
        max_dynamic_clients: oauth.registration_max_clients,
        // Dynamic clients belong to no tenant: the global threshold.
        client_secret_max_age_secs: ctx
            .config
            .lifecycle
            .policy()
            .thresholds(crate::lifecycle::policy::CredentialKind::ClientSecret, "")
            .max_age
            .map(|ms| ms / 1000),
        client_metadata,
        cookies: CookiePolicy::for_public_url(public_url),
        password_concurrency: oauth.password_hash_concurrency,
        identity_providers: oauth.identity_providers.clone(),
        local_login: oauth.local_login,
    })
}

/// What Gatehouse signs besides tokens, with the authorization server's
/// current key (the one its JWKS publishes): audit checkpoints, and the
/// identity JWTs of upstreams with `forward_identity`.
pub struct AsSigner(pub Arc<AsState>);

impl AsSigner {
    async fn sign_typed<C: serde::Serialize + Sync>(
        &self,
        claims: &C,
        typ: &str,
        now: Timestamp,
    ) -> Result<String, String> {
        self.0
            .server
            .sign_assertion(claims, typ, now)
            .await
            .map_err(|e| e.to_string())
    }
}

impl CheckpointSigner for AsSigner {
    fn issuer(&self) -> &str {
        self.0.server.issuer()
    }

    fn sign<'a>(
        &'a self,
        claims: &'a CheckpointClaims,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.sign_typed(claims, CHECKPOINT_TYP, now))
    }
}

impl IdentitySigner for AsSigner {
    fn issuer(&self) -> &str {
        self.0.server.issuer()
    }

    fn sign<'a>(
        &'a self,
        claims: &'a IdentityClaims,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.sign_typed(claims, IDENTITY_TYP, now))
    }
}

/// Signs audit checkpoints where the authorization server does not run
/// (authentication off, or `[oauth] enabled = false`): the store's signing
/// key, as the authorization server would use it, so `audit verify` checks
/// both alike.
pub struct KeyRingSigner {
    pub keys: gatehouse_oauth::KeyRing,
    /// The server's public origin.
    pub issuer: String,
}

impl CheckpointSigner for KeyRingSigner {
    fn issuer(&self) -> &str {
        &self.issuer
    }

    fn sign<'a>(
        &'a self,
        claims: &'a CheckpointClaims,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.keys
                .sign_typed(claims, CHECKPOINT_TYP, now)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The tenant secrets the upstreams use as Gatehouse's credentials
/// (`tenant:NAME` in an `auth` or a `secret_env`).
fn upstream_secret_names(upstreams: &[gatehouse_upstream::UpstreamConfig]) -> Vec<String> {
    upstreams
        .iter()
        .flat_map(|u| u.auth.secret().into_iter().chain(u.secret_env.values()))
        .filter_map(|reference| match reference {
            gatehouse_core::secret_ref::SecretRef::Tenant(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}
