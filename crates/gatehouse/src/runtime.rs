//! Assembles the request path (store, audit, policy, tools, gateway,
//! authenticator) from a `Context`. Used by `serve` and `stdio`.

use std::sync::Arc;

use anyhow::Context as _;
use gatehouse_audit::{AuditLog, AuditWriterHandle, Redactor};
use gatehouse_authn::{AuthMode, Authenticator};
use gatehouse_authz::Policy;
use gatehouse_core::{
    Clock, CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, SystemClock,
};
use gatehouse_mcp::Gateway;
use gatehouse_store::Store;
use gatehouse_tools::{BuiltinTools, ToolsConfig};

use crate::config::AuthModeName;
use crate::context::Context;

pub struct Runtime {
    pub store: Arc<dyn Store>,
    pub gateway: Arc<Gateway>,
    pub authenticator: Arc<Authenticator>,
    pub audit_writer: AuditWriterHandle,
    pub clock: Arc<dyn Clock>,
}

pub const SANDBOX_DIR: &str = "sandbox";

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
    }
}

impl Runtime {
    pub async fn start(ctx: &Context) -> anyhow::Result<Runtime> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = ctx.open_store().await?;
        let pepper = ctx.pepper()?;
        let audit_path = ctx.in_data_dir(&ctx.config.audit.file);
        let (audit, audit_writer) = AuditLog::start(
            Arc::clone(&store),
            Some(audit_path.clone()),
            ctx.config.audit.fsync,
        )
        .with_context(|| format!("cannot open the audit file {}", audit_path.display()))?;
        let redactor =
            Redactor::new(&ctx.config.audit.redact_fields).context("invalid redaction pattern")?;
        let tools_config = ToolsConfig {
            sandbox_dir: ctx.data_dir.join(SANDBOX_DIR),
            web_fetch_allowlist: ctx.config.tools.web_fetch_allowlist.clone(),
            web_fetch_allow_private: ctx.config.tools.web_fetch_allow_private,
            max_file_bytes: ctx.config.tools.max_file_bytes,
        };
        let tools = BuiltinTools::open(tools_config, Arc::clone(&store))
            .await
            .context("cannot prepare the built-in tools")?;
        let gateway = Arc::new(Gateway::new(
            Policy::default_matrix(),
            tools,
            audit,
            redactor,
            Arc::clone(&clock),
        ));
        let mode = match ctx.config.auth.mode {
            AuthModeName::ApiKey => AuthMode::Required,
            AuthModeName::None => AuthMode::Disabled {
                anonymous: anonymous(&ctx.config.auth.anonymous_role),
            },
        };
        let authenticator = Arc::new(Authenticator::new(Arc::clone(&store), pepper, mode));
        Ok(Runtime {
            store,
            gateway,
            authenticator,
            audit_writer,
            clock,
        })
    }

    /// Drops every audit sender and waits until the queue is written.
    pub async fn finish(self) {
        let Runtime {
            gateway,
            authenticator,
            audit_writer,
            ..
        } = self;
        drop(authenticator);
        drop(gateway);
        audit_writer.wait().await;
    }
}
