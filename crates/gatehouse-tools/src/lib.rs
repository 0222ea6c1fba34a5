//! The built-in tools behind Gatehouse, each doing its real job inside a
//! per-tenant sandbox.
//!
//! The MCP layer lists [`BuiltinTools::definitions`] and runs a tool with
//! [`BuiltinTools::call`], which takes a [`Permit`]: no tool runs without an
//! authorization decision, and the tenant a tool works in is always the
//! permit's, never something the arguments name.

mod area_locks;
mod arguments;
mod dataset;
mod definitions;
mod email;
mod error;
mod expression;
mod files;
mod identity;
mod sandbox;
mod secrets;
pub mod settings;
mod web;

#[cfg(test)]
mod test_support;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gatehouse_authz::Permit;
use gatehouse_core::{Clock, SecretCipher, SystemClock};
use gatehouse_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use definitions::ToolDefinition;
pub use error::ToolError;

use arguments::Arguments;
use dataset::Dataset;
use definitions as names;
use expression::Evaluator;
use sandbox::RelativePath;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    /// Root of everything tools touch, e.g. `<data-dir>/sandbox`.
    pub sandbox_dir: PathBuf,
    /// Hosts `web_fetch` may contact (exact, case-insensitive). Empty, the
    /// default, switches `web_fetch` off.
    pub web_fetch_allowlist: Vec<String>,
    /// Lets `web_fetch` reach loopback and private addresses. For tests only.
    pub web_fetch_allow_private: bool,
    /// Largest file `read_file` returns and `write_file` accepts.
    pub max_file_bytes: u64,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            sandbox_dir: PathBuf::from("sandbox"),
            web_fetch_allowlist: Vec::new(),
            web_fetch_allow_private: false,
            max_file_bytes: 1024 * 1024,
        }
    }
}

/// What a tool returns: text for the model, and the same content as JSON
/// when it is naturally structured.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub text: String,
    pub structured: Option<Value>,
}

/// The nine built-in tools. Cheap to clone; all clones share one dataset
/// connection pool and one evaluator limit.
#[derive(Clone)]
pub struct BuiltinTools {
    config: ToolsConfig,
    /// `config.sandbox_dir`, canonicalized once at open.
    root: PathBuf,
    store: Arc<dyn Store>,
    dataset: Dataset,
    evaluator: Evaluator,
    /// `web_fetch` calls in flight at once (see `web::CONCURRENCY`).
    web_slots: Arc<tokio::sync::Semaphore>,
    clock: Arc<dyn Clock>,
    /// Opens sealed tenant secrets; without it they are returned as stored.
    secrets: Option<Arc<dyn SecretCipher>>,
    /// Tenant secrets that are Gatehouse's credentials for upstreams
    /// (`tenant:NAME` references): never handed to a caller.
    reserved_secrets: std::collections::BTreeSet<String>,
}

impl fmt::Debug for BuiltinTools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltinTools")
            .field("config", &self.config)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl BuiltinTools {
    /// Opens the tenant secrets `access_secrets` returns (they are stored
    /// sealed).
    pub fn with_secret_cipher(mut self, cipher: Arc<dyn SecretCipher>) -> Self {
        self.secrets = Some(cipher);
        self
    }

    /// Names of tenant secrets that are Gatehouse's own credentials for
    /// upstreams: `access_secrets` neither lists nor returns them, or a
    /// caller could take the credential and use the upstream past the
    /// gateway (its policy, its audit).
    pub fn with_reserved_secrets(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.reserved_secrets.extend(names);
        self
    }

    /// Creates the sandbox directories and the demo dataset if missing.
    pub async fn open(config: ToolsConfig, store: Arc<dyn Store>) -> Result<Self, ToolError> {
        let tenants = config.sandbox_dir.join("tenants");
        tokio::fs::create_dir_all(&tenants).await.map_err(|e| {
            ToolError::Failed(format!(
                "could not create the sandbox at {}: {e}",
                config.sandbox_dir.display()
            ))
        })?;
        let root = tokio::fs::canonicalize(&config.sandbox_dir)
            .await
            .map_err(|e| {
                ToolError::Failed(format!(
                    "could not open the sandbox at {}: {e}",
                    config.sandbox_dir.display()
                ))
            })?;
        let dataset = Dataset::open(&root).await?;
        Ok(BuiltinTools {
            config,
            root,
            store,
            dataset,
            evaluator: Evaluator::new(),
            web_slots: Arc::new(tokio::sync::Semaphore::new(web::CONCURRENCY)),
            clock: Arc::new(SystemClock),
            secrets: None,
            reserved_secrets: std::collections::BTreeSet::new(),
        })
    }

    /// Replaces the system clock (used for email dates and file names).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// All nine tools, in a fixed order.
    pub fn definitions() -> &'static [ToolDefinition] {
        &definitions::DEFINITIONS
    }

    pub fn definition(name: &str) -> Option<ToolDefinition> {
        definitions::find(name).cloned()
    }

    /// Whether `name` is a built-in tool whose only effect is its answer
    /// (`ToolDefinition::answer_only`).
    pub fn is_answer_only(name: &str) -> bool {
        definitions::find(name).is_some_and(|d| d.answer_only)
    }

    pub fn config(&self) -> &ToolsConfig {
        &self.config
    }

    /// The canonical sandbox root.
    pub fn sandbox_dir(&self) -> &Path {
        &self.root
    }

    /// Where `send_email` writes the tenant's messages. Characters a tenant
    /// name may not contain are replaced by `_`, so the path always stays
    /// inside the sandbox.
    pub fn outbox_dir(&self, tenant: &str) -> PathBuf {
        let mut safe: String = tenant
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if safe.is_empty() {
            safe.push('_');
        }
        self.root.join("tenants").join(safe).join("outbox")
    }

    /// Runs the tool the permit was issued for, as the permit's principal.
    pub async fn call(
        &self,
        permit: &Permit,
        arguments: Map<String, Value>,
    ) -> Result<ToolOutput, ToolError> {
        let tool = permit.tool();
        let definition = definitions::find(tool)
            .ok_or_else(|| ToolError::NotFound(format!("'{tool}' is not a built-in tool")))?;
        let principal = permit.principal();
        let tenant = sandbox::check_tenant(&principal.tenant)?;
        let args = Arguments::check(definition, arguments)?;
        let store = self.store.as_ref();

        match tool {
            names::WHOAMI => Ok(identity::whoami(principal)),
            names::READ_FILE => {
                let path = RelativePath::parse(args.str("path")?)?;
                let root = sandbox::tenant_area(&self.root, tenant, "files").await?;
                let limit = match settings::read_limit(store, tenant).await? {
                    Some(tenant_limit) => tenant_limit.min(self.config.max_file_bytes),
                    None => self.config.max_file_bytes,
                };
                files::read(root, path, limit).await
            }
            names::WRITE_FILE => {
                let path = RelativePath::parse(args.str("path")?)?;
                let content = args.str("content")?.to_string();
                let root = sandbox::tenant_area(&self.root, tenant, "files").await?;
                files::write(root, path, content, self.config.max_file_bytes).await
            }
            names::SEARCH_DATABASE => {
                let query = args.str("query")?;
                if query.trim().is_empty() {
                    return Err(ToolError::invalid("'query' must not be empty"));
                }
                if query.chars().count() > dataset::MAX_TERM_CHARS {
                    return Err(ToolError::invalid(format!(
                        "'query' is longer than {} characters",
                        dataset::MAX_TERM_CHARS
                    )));
                }
                let limit = args
                    .optional_u64("limit")?
                    .unwrap_or(dataset::DEFAULT_LIMIT);
                if !(1..=dataset::MAX_LIMIT).contains(&limit) {
                    return Err(ToolError::invalid(format!(
                        "'limit' must be between 1 and {}",
                        dataset::MAX_LIMIT
                    )));
                }
                self.dataset.search(query, limit).await
            }
            names::WEB_FETCH => {
                let Ok(_slot) = Arc::clone(&self.web_slots).try_acquire_owned() else {
                    return Err(ToolError::failed(format!(
                        "web_fetch is busy ({} fetches in flight); try again",
                        web::CONCURRENCY
                    )));
                };
                web::fetch(&self.config, args.str("url")?).await
            }
            names::SEND_EMAIL => {
                let to = args
                    .value("to")
                    .ok_or_else(|| ToolError::invalid("missing required argument 'to'"))?;
                let message = email::Message {
                    to: email::recipients(to)?,
                    subject: args.str("subject")?,
                    body: args.str("body")?,
                };
                let outbox = sandbox::tenant_area(&self.root, tenant, "outbox").await?;
                email::queue(outbox, principal, message, self.clock.now()).await
            }
            names::EXECUTE_CODE => self.evaluator.evaluate(args.str("expression")?).await,
            names::ACCESS_SECRETS => {
                secrets::access(
                    store,
                    self.secrets.as_deref(),
                    &self.reserved_secrets,
                    tenant,
                    args.optional_str("name")?,
                )
                .await
            }
            names::MODIFY_MCP_CONFIG => {
                settings::modify(
                    store,
                    tenant,
                    args.optional_str("key")?,
                    args.value("value"),
                )
                .await
            }
            _ => Err(ToolError::NotFound(format!(
                "'{tool}' is not a built-in tool"
            ))),
        }
    }
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
