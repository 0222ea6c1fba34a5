//! Shared test fixtures: a sandbox in a temporary directory, an in-memory
//! store, and permits for any principal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_authz::{Access, Decision, Permit, Policy, ToolRule};
use gatehouse_core::{CredentialKind, CredentialRef, FixedClock, Principal, Timestamp};
use gatehouse_store::{SqliteStore, Store};
use serde_json::Value;

use crate::{BuiltinTools, ToolError, ToolOutput, ToolsConfig};

pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) tools: BuiltinTools,
    pub(crate) store: Arc<SqliteStore>,
}

pub(crate) async fn harness() -> Harness {
    harness_with(|_| {}).await
}

pub(crate) async fn harness_with(configure: impl FnOnce(&mut ToolsConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut config = ToolsConfig {
        sandbox_dir: dir.path().join("sandbox"),
        ..ToolsConfig::default()
    };
    configure(&mut config);
    let store = Arc::new(
        SqliteStore::in_memory()
            .await
            .unwrap_or_else(|e| panic!("store: {e}")),
    );
    let tools = BuiltinTools::open(config, Arc::clone(&store) as Arc<dyn Store>)
        .await
        .unwrap_or_else(|e| panic!("open: {e}"))
        .with_clock(Arc::new(FixedClock::new(Timestamp(1_700_000_000_123))));
    Harness { dir, tools, store }
}

pub(crate) fn principal(tenant: &str) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: tenant.into(),
        human: Some("alice@example.com".into()),
        agent: "test-agent".into(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "key-1".into(),
        },
        roles: vec!["admin".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    })
}

/// A permit from the shipped policy where it allows admin, otherwise from a
/// policy that allows admin outright (the shipped one asks for an operation
/// token for `access_secrets` and `modify_mcp_config`).
pub(crate) fn permit(principal: &Arc<Principal>, tool: &str) -> Permit {
    if let Decision::Permit(p) = Policy::default_matrix().authorize(principal, tool) {
        return p;
    }
    let rule = ToolRule {
        scope: "tools:admin".into(),
        access: BTreeMap::from([("admin".to_string(), Access::Allow)]),
    };
    let policy = Policy::new(BTreeMap::from([(tool.to_string(), rule)]));
    match policy.authorize(principal, tool) {
        Decision::Permit(p) => p,
        Decision::Deny(d) => panic!("test policy denied {tool}: {}", d.message()),
        Decision::NeedsApproval(n) => panic!("test policy asks approval for {}", n.tool()),
    }
}

impl Harness {
    pub(crate) async fn call(
        &self,
        tenant: &str,
        tool: &str,
        arguments: Value,
    ) -> Result<ToolOutput, ToolError> {
        let Value::Object(map) = arguments else {
            panic!("arguments must be an object")
        };
        self.tools
            .call(&permit(&principal(tenant), tool), map)
            .await
    }

    pub(crate) fn files_dir(&self, tenant: &str) -> PathBuf {
        let dir = self
            .tools
            .sandbox_dir()
            .join("tenants")
            .join(tenant)
            .join("files");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        dir
    }
}

/// The error code of a failed call, or "ok".
pub(crate) fn code(result: &Result<ToolOutput, ToolError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

pub(crate) fn ok(result: Result<ToolOutput, ToolError>) -> ToolOutput {
    result.unwrap_or_else(|e| panic!("call failed: {e}"))
}

pub(crate) use gatehouse_store::testing::DownStore;
