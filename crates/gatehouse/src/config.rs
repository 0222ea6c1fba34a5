//! The configuration file: one TOML document, `version = 1`, unknown keys
//! refused. Secrets are never written in it, only where to find them
//! (an environment variable or a file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

pub const CONFIG_VERSION: u32 = 1;
#[cfg(test)]
const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

use gatehouse_core::duration_setting::parse as duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub version: u32,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub tools: ToolsConfig,
    #[serde(default)]
    pub oauth: OAuthConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub traces: TracesConfig,
    /// MCP servers Gatehouse stands in front of (`[[upstreams]]`).
    #[serde(default)]
    pub upstreams: Vec<gatehouse_upstream::UpstreamConfig>,
    /// Identity providers whose access tokens are accepted (`[[issuers]]`).
    #[serde(default)]
    pub issuers: Vec<gatehouse_authn::external::IssuerConfig>,
    /// The credential lifecycle policy and its housekeeping task.
    #[serde(default)]
    pub lifecycle: crate::lifecycle::settings::LifecycleConfig,
    /// Alert detectors, the response to an incident, the webhook.
    #[serde(default)]
    pub alerts: crate::alerts_config::AlertsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The policy file (roles, tools, tasks). Relative paths are relative
    /// to this configuration file. Without it the shipped default applies
    /// (`gatehouse policy show` prints it). Reloaded on SIGHUP and when the
    /// file changes; an invalid new file keeps the old policy.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    /// Run the embedded authorization server (token endpoint, metadata, JWKS).
    pub enabled: bool,
    /// Lifetime of access tokens (at most 1 hour).
    #[serde(deserialize_with = "duration")]
    pub access_token_ttl: Duration,
    /// Environment variable holding the master key (64 hex characters).
    pub master_key_env: Option<String>,
    /// File holding the master key. Default: `<data_dir>/master.key`, created on first start.
    pub master_key_file: Option<PathBuf>,
    /// Lifetime of each refresh token; every use replaces it with a new one.
    #[serde(deserialize_with = "duration")]
    pub refresh_token_ttl: Duration,
    /// Dynamic client registration (RFC 7591): "open", "token" (needs the
    /// initial access token from `registration_token_env`) or "disabled".
    pub registration: RegistrationMode,
    /// Environment variable holding the initial access token for registration = "token".
    pub registration_token_env: Option<String>,
    /// Dynamically registered clients unused this long are removed.
    #[serde(deserialize_with = "duration")]
    pub dynamic_client_ttl: Duration,
    /// Accept Client ID Metadata Documents (a URL as client_id).
    pub client_metadata_documents: bool,
    /// When not empty, only metadata documents on these domains (and their subdomains).
    pub client_metadata_domains: Vec<String>,
    /// Hosts whose metadata documents may be fetched over plain http and from
    /// loopback. For local development only.
    pub client_metadata_dev_hosts: Vec<String>,
    /// Most metadata-document clients kept at once: beyond it, unused ones
    /// are removed, then the oldest no person signed in with makes room; a
    /// new one is refused only when every one holds a grant.
    pub client_metadata_max_clients: u64,
    /// Most dynamically registered clients kept at once: beyond it, unused
    /// ones are removed, then the oldest no person signed in with makes
    /// room; a registration is refused (503) only when every one holds a
    /// grant.
    pub registration_max_clients: u64,
    /// Password hashes computed at once (each takes ~19 MiB and tens of ms).
    pub password_hash_concurrency: usize,
    /// The organisation's identity providers (`[[oauth.identity_providers]]`),
    /// trusted to say who a person is (identity assertions).
    pub identity_providers: Vec<gatehouse_oauth::IdentityProviderConfig>,
    /// Offer sign-in with a Gatehouse password; false leaves only the
    /// identity providers' "Sign in with …".
    pub local_login: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    Open,
    Token,
    Disabled,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            enabled: true,
            access_token_ttl: Duration::from_secs(15 * 60),
            master_key_env: None,
            master_key_file: None,
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            registration: RegistrationMode::Open,
            registration_token_env: None,
            dynamic_client_ttl: Duration::from_secs(30 * 24 * 3600),
            client_metadata_documents: true,
            client_metadata_domains: Vec::new(),
            client_metadata_dev_hosts: Vec::new(),
            client_metadata_max_clients: 10_000,
            registration_max_clients: 10_000,
            password_hash_concurrency: 4,
            identity_providers: Vec::new(),
            local_login: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base URL clients use; defaults to `http://<listen>`.
    pub public_url: Option<Url>,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub body_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub session_idle_timeout: Duration,
    /// MCP sessions (2025-11-25 and earlier) one principal may hold at once;
    /// its next `initialize` is refused (HTTP 429, `too_many_sessions`).
    pub max_sessions_per_principal: usize,
    /// `initialize` requests one principal may send per minute.
    pub initialize_per_minute: u32,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For`
    /// names the caller: lockouts, rate limits and audit records then
    /// count the caller, not the proxy. Empty: every connection is its
    /// own caller, whatever it sends.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            public_url: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            session_idle_timeout: Duration::from_secs(30 * 60),
            max_sessions_per_principal: gatehouse_mcp::http::MAX_SESSIONS_PER_PRINCIPAL,
            initialize_per_minute: 30,
            shutdown_grace: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The admin listener that serves `/metrics` (Prometheus text format).
/// Off unless `listen` is set: a second port is opened only when asked for,
/// and never the public listener's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the admin listener, e.g. "127.0.0.1:9464".
    pub listen: Option<SocketAddr>,
    /// `/metrics` has no authentication: an address other than loopback is
    /// refused unless this is true (then restrict who reaches the port).
    pub allow_remote: bool,
}

/// OpenTelemetry spans over OTLP/HTTP. Off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. "http://127.0.0.1:4318/v1/traces".
    pub otlp_endpoint: Option<Url>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TracesConfig {
    fn default() -> Self {
        TracesConfig {
            otlp_endpoint: None,
            service_name: "gatehouse".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the database, audit file, pepper and tool sandbox live.
    pub data_dir: Option<PathBuf>,
    /// "sqlite" (one file in the data directory) or "postgres" (shared by
    /// several instances; the URL comes from `postgres_url_env`).
    pub backend: StorageBackend,
    /// Environment variable holding the PostgreSQL URL (it may contain a password).
    pub postgres_url_env: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthModeName {
    /// Every request needs a valid API key.
    ApiKey,
    /// No authentication; only allowed on a loopback listener.
    None,
}

impl AuthModeName {
    /// The spelling of the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthModeName::ApiKey => "api_key",
            AuthModeName::None => "none",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthModeName,
    /// Role of the anonymous principal when `mode = "none"`.
    pub anonymous_role: String,
    /// File holding the pepper (64 hex characters). Default: `<data_dir>/pepper`, created on first start.
    pub pepper_file: Option<PathBuf>,
    /// Environment variable holding the pepper (64 hex characters); wins over `pepper_file`.
    pub pepper_env: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthModeName::ApiKey,
            anonymous_role: "reader".into(),
            pepper_file: None,
            pepper_env: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// JSON-lines file, relative to the data directory unless absolute.
    pub file: PathBuf,
    /// fsync the file after every batch.
    pub fsync: bool,
    /// Argument names redacted in addition to the built-in list.
    pub redact_fields: Vec<String>,
    /// How often the head of the audit chain is signed (while it moves).
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
    /// The server starts a new file once the current one holds this many
    /// bytes (0: never by size).
    pub rotate_bytes: u64,
    /// ... or once it is this old (0s: never by age).
    #[serde(deserialize_with = "duration")]
    pub rotate_after: Duration,
    /// Also send every record to a syslog receiver (a SIEM).
    pub syslog: Option<SyslogConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `udp://host:port`, `tcp://host:port` or `tls://host:port`.
    pub address: String,
    /// RFC 5424 facility, 0–23 (13: log audit).
    #[serde(default = "default_syslog_facility")]
    pub facility: u8,
    #[serde(default = "default_syslog_app_name")]
    pub app_name: String,
    /// The HOSTNAME field; the machine's name when absent.
    pub hostname: Option<String>,
    /// tls:// only. PEM: the CA certificate(s) to verify the receiver with;
    /// the system's roots when absent. Relative paths (all three files) are
    /// relative to this configuration file.
    pub ca_file: Option<PathBuf>,
    /// tls:// only. PEM: a client certificate for mutual TLS (with
    /// `client_key_file`).
    pub client_cert_file: Option<PathBuf>,
    /// tls:// only. PEM: the client certificate's key.
    pub client_key_file: Option<PathBuf>,
    /// tls:// only. The name the receiver's certificate must carry; the
    /// address's host when absent.
    pub server_name: Option<String>,
}

fn default_syslog_facility() -> u8 {
    13
}

fn default_syslog_app_name() -> String {
    "gatehouse".into()
}

impl SyslogConfig {
    /// The sink's settings, TLS files loaded and checked. `config_dir` is
    /// the configuration file's directory, which relative paths start from
    /// (as `policy.file`'s do).
    pub fn settings(&self, config_dir: &Path) -> Result<gatehouse_audit::SyslogSettings, String> {
        if self.facility > 23 {
            return Err(format!("facility {} is not 0-23", self.facility));
        }
        let target = gatehouse_audit::SyslogTarget::parse(&self.address)?;
        let tls_keys = [
            ("ca_file", self.ca_file.is_some()),
            ("client_cert_file", self.client_cert_file.is_some()),
            ("client_key_file", self.client_key_file.is_some()),
            ("server_name", self.server_name.is_some()),
        ];
        let tls = match target {
            gatehouse_audit::SyslogTarget::Tls(_) => {
                let resolve = |path: &Option<PathBuf>| path.as_ref().map(|p| config_dir.join(p));
                let files = gatehouse_audit::SyslogTlsFiles {
                    ca_file: resolve(&self.ca_file),
                    client_cert_file: resolve(&self.client_cert_file),
                    client_key_file: resolve(&self.client_key_file),
                    server_name: self.server_name.clone(),
                };
                Some(
                    gatehouse_audit::SyslogTls::load(target.host(), &files)
                        .map_err(|e| e.to_string())?,
                )
            }
            _ => {
                // Set on a plain address, they would leave the records
                // unencrypted while the file says otherwise.
                if let Some((key, _)) = tls_keys.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "{key} is only for a tls:// address, and this one is {}://",
                        target.scheme()
                    ));
                }
                None
            }
        };
        Ok(gatehouse_audit::SyslogSettings {
            target,
            facility: self.facility,
            app_name: self.app_name.clone(),
            hostname: self
                .hostname
                .clone()
                .unwrap_or_else(gatehouse_audit::system_hostname),
            tls,
        })
    }
}

/// The directory of the configuration file at `path`, which relative paths
/// in it start from.
pub fn config_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: PathBuf::from("audit.jsonl"),
            fsync: false,
            redact_fields: Vec::new(),
            checkpoint_interval: Duration::from_secs(60),
            rotate_bytes: 100 * 1024 * 1024,
            rotate_after: Duration::from_secs(24 * 3600),
            syslog: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Hosts `web_fetch` may contact. Empty: `web_fetch` refuses every URL.
    pub web_fetch_allowlist: Vec<String>,
    /// Lets `web_fetch` reach private and loopback addresses. For tests only.
    pub web_fetch_allow_private: bool,
    pub max_file_bytes: u64,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        ToolsConfig {
            web_fetch_allowlist: Vec::new(),
            web_fetch_allow_private: false,
            max_file_bytes: 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            tools: ToolsConfig::default(),
            oauth: OAuthConfig::default(),
            policy: PolicyConfig::default(),
            metrics: MetricsConfig::default(),
            traces: TracesConfig::default(),
            upstreams: Vec::new(),
            issuers: Vec::new(),
            lifecycle: crate::lifecycle::settings::LifecycleConfig::default(),
            alerts: crate::alerts_config::AlertsConfig::default(),
        }
    }
}

/// What the configuration names must exist in `policy`: the tenants of
/// lifecycle overrides, and the roles an identity provider's people or
/// tokens are mapped to (a misspelt role would grant nothing, silently).
/// Named by entry and value.
pub fn check_against_policy(
    config: &Config,
    policy: &gatehouse_authz::Policy,
) -> Result<(), String> {
    // A lifecycle override for a tenant the policy does not declare (a typo)
    // would apply to nobody and leave the real tenant on the defaults.
    if policy.tenancy_enabled()
        && let Some(tenant) = config
            .lifecycle
            .tenants
            .keys()
            .find(|t| !policy.tenant_allowed(t))
    {
        return Err(format!(
            "lifecycle.tenants.{tenant}: the policy declares no tenant {tenant:?}, so these settings would apply to nobody"
        ));
    }
    for (n, issuer) in config.issuers.iter().enumerate() {
        // A tenant a provider names that the policy does not declare would
        // be refused at every call: a typo, said at start-up.
        let named = issuer.tenant.iter().chain(&issuer.tenants);
        if policy.tenancy_enabled()
            && let Some(tenant) = named.into_iter().find(|t| !policy.tenant_allowed(t))
        {
            return Err(format!(
                "issuers[{n}] ({}): the policy declares no tenant {tenant:?}",
                issuer.issuer
            ));
        }
        for (value, role) in &issuer.role_map {
            if !policy.is_known_role(role) {
                return Err(format!(
                    "issuers[{n}] ({}): role_map: {value:?} maps to {role:?}, which the policy does not define",
                    issuer.issuer
                ));
            }
        }
    }
    for (n, provider) in config.oauth.identity_providers.iter().enumerate() {
        let mapped = provider
            .role_map
            .iter()
            .map(|(v, r)| (format!("role_map: {v:?}"), r));
        let default = provider
            .default_role
            .iter()
            .map(|r| ("default_role".to_string(), r));
        for (what, role) in mapped.chain(default) {
            if !policy.is_known_role(role) {
                return Err(format!(
                    "oauth.identity_providers[{n}] ({}): {what} names the role {role:?}, which the policy does not define",
                    provider.name
                ));
            }
        }
    }
    Ok(())
}

/// Where and what, without quoting the offending line: a secret written
/// into the file by mistake (where a reference belongs) must not be echoed
/// to a terminal or a log.
fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

impl Config {
    /// Parses and validates a configuration document; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: parse_message(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason: reason.to_string(),
        };
        if self.version != CONFIG_VERSION {
            return Err(invalid(
                "version",
                &format!(
                    "unsupported version {} (this Gatehouse reads version {CONFIG_VERSION})",
                    self.version
                ),
            ));
        }
        if let Some(url) = &self.server.public_url {
            validate_public_url(url).map_err(|r| invalid("server.public_url", &r))?;
        }
        if let Some(url) = &self.traces.otlp_endpoint
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(invalid(
                "traces.otlp_endpoint",
                "must be an http or https URL (OTLP over HTTP)",
            ));
        }
        if let Some(listen) = self.metrics.listen {
            if !listen.ip().is_loopback() && !self.metrics.allow_remote {
                return Err(invalid(
                    "metrics.listen",
                    &format!(
                        "{listen} is not a loopback address and /metrics has no authentication: set metrics.allow_remote = true to serve it there anyway"
                    ),
                ));
            }
            if listen == self.server.listen {
                return Err(invalid(
                    "metrics.listen",
                    "must differ from server.listen: /metrics is never served on the public listener",
                ));
            }
        }
        self.lifecycle
            .validate()
            .map_err(|(key, reason)| invalid(key, &reason))?;
        // Names the entry: `upstreams[1] ("files"): …`.
        gatehouse_upstream::validate(&self.upstreams)
            .map_err(|e| invalid("upstreams", &e.to_string()))?;
        // Names the entry: `issuers[0] (https://…): …`. The audience
        // default is filled in at start, from the public URL.
        gatehouse_authn::external::ExternalIssuers::new(&self.issuers, "https://localhost/mcp")
            .map_err(|e| invalid("issuers", &e))?;
        let providers = gatehouse_oauth::IdentityProviders::new(&self.oauth.identity_providers)
            .map_err(|e| invalid("oauth.identity_providers", &e))?;
        if !self.oauth.enabled && !self.oauth.identity_providers.is_empty() {
            return Err(invalid(
                "oauth.identity_providers",
                "needs the embedded authorization server ([oauth] enabled = true): sign-in and identity assertions end in its tokens",
            ));
        }
        if !self.oauth.local_login && providers.sign_in_providers().is_empty() {
            return Err(invalid(
                "oauth.local_login",
                "false needs an identity provider with client_id and client_secret, or nobody could sign in",
            ));
        }
        if let Some(syslog) = &self.audit.syslog {
            syslog
                .settings(config_dir(path))
                .map_err(|e| invalid("audit.syslog", &e))?;
        }
        self.alerts
            .check()
            .map_err(|(key, reason)| invalid(key, &reason))?;
        if self.audit.checkpoint_interval < Duration::from_secs(1) {
            return Err(invalid("audit.checkpoint_interval", "must be at least 1s"));
        }
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 64 * 1024 * 1024 {
            return Err(invalid(
                "server.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        for (key, value) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.body_timeout", self.server.body_timeout),
            (
                "server.session_idle_timeout",
                self.server.session_idle_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if !(1..=10_000).contains(&self.server.max_sessions_per_principal) {
            return Err(invalid(
                "server.max_sessions_per_principal",
                "must be between 1 and 10000",
            ));
        }
        gatehouse_core::TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(|reason| invalid("server.trusted_proxies", &reason))?;
        if self.server.initialize_per_minute == 0 {
            return Err(invalid(
                "server.initialize_per_minute",
                "must be greater than zero",
            ));
        }
        if self.auth.mode == AuthModeName::None && !self.server.listen.ip().is_loopback() {
            return Err(invalid(
                "auth.mode",
                "\"none\" is only allowed when server.listen is a loopback address",
            ));
        }
        // A loopback listener published through a proxy is public all the
        // same: every caller would arrive unauthenticated, as the proxy.
        if self.auth.mode == AuthModeName::None
            && let Some(url) = &self.server.public_url
            && !gatehouse_core::is_loopback_url(url)
        {
            return Err(invalid(
                "auth.mode",
                "\"none\" is not allowed with a server.public_url on another host: a proxy would publish the gateway without authentication",
            ));
        }
        if !gatehouse_authz::ROLES.contains(&self.auth.anonymous_role.as_str()) {
            return Err(invalid(
                "auth.anonymous_role",
                &format!(
                    "unknown role (known: {})",
                    gatehouse_authz::ROLES.join(", ")
                ),
            ));
        }
        if let Some(var) = &self.auth.pepper_env
            && (var.is_empty() || var.contains('='))
        {
            return Err(invalid(
                "auth.pepper_env",
                "must name an environment variable",
            ));
        }
        match (&self.storage.backend, &self.storage.postgres_url_env) {
            (StorageBackend::Postgres, None) => {
                return Err(invalid(
                    "storage.postgres_url_env",
                    "is required when storage.backend = \"postgres\"",
                ));
            }
            (_, Some(var)) if var.is_empty() || var.contains('=') => {
                return Err(invalid(
                    "storage.postgres_url_env",
                    "must name an environment variable",
                ));
            }
            _ => {}
        }
        if self.audit.file.as_os_str().is_empty() {
            return Err(invalid("audit.file", "must name a file"));
        }
        let ttl = self.oauth.access_token_ttl;
        if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "oauth.access_token_ttl",
                "must be between 1m and 1h",
            ));
        }
        if let Some(var) = &self.oauth.master_key_env
            && (var.is_empty() || var.contains('='))
        {
            return Err(invalid(
                "oauth.master_key_env",
                "must name an environment variable",
            ));
        }
        let refresh = self.oauth.refresh_token_ttl;
        if refresh < Duration::from_secs(3600) || refresh > Duration::from_secs(90 * 24 * 3600) {
            return Err(invalid(
                "oauth.refresh_token_ttl",
                "must be between 1h and 90d",
            ));
        }
        if self.oauth.dynamic_client_ttl < Duration::from_secs(3600) {
            return Err(invalid("oauth.dynamic_client_ttl", "must be at least 1h"));
        }
        match (&self.oauth.registration, &self.oauth.registration_token_env) {
            (RegistrationMode::Token, None) => {
                return Err(invalid(
                    "oauth.registration_token_env",
                    "is required when oauth.registration = \"token\"",
                ));
            }
            (_, Some(var)) if var.is_empty() || var.contains('=') => {
                return Err(invalid(
                    "oauth.registration_token_env",
                    "must name an environment variable",
                ));
            }
            _ => {}
        }
        if self.oauth.client_metadata_max_clients == 0 {
            return Err(invalid(
                "oauth.client_metadata_max_clients",
                "must be greater than zero (to refuse metadata documents, set client_metadata_documents = false)",
            ));
        }
        if self.oauth.registration_max_clients == 0 {
            return Err(invalid(
                "oauth.registration_max_clients",
                "must be greater than zero (to refuse registrations, set registration = \"closed\")",
            ));
        }
        if !(1..=64).contains(&self.oauth.password_hash_concurrency) {
            return Err(invalid(
                "oauth.password_hash_concurrency",
                "must be between 1 and 64",
            ));
        }
        if self.tools.max_file_bytes == 0 {
            return Err(invalid("tools.max_file_bytes", "must be greater than zero"));
        }
        Ok(())
    }
}

/// Why a public URL sends credentials in clear text, when it does: plain
/// `http` to a host other than this machine. (Behind a proxy that ends
/// TLS, the public URL is the proxy's `https` one.)
pub fn cleartext_warning(url: &Url) -> Option<String> {
    if url.scheme() != "http" {
        return None;
    }
    (!gatehouse_core::is_loopback_url(url)).then(|| {
        format!(
            "the public URL {url} is plain http to another host: API keys, bearer tokens and sign-in \
             passwords would cross the network unencrypted; serve behind a proxy that ends TLS and \
             set server.public_url (or --public-url) to its https URL"
        )
    })
}

/// An absolute http(s) URL with no path, query or fragment.
pub fn validate_public_url(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.host_str().is_none() {
        return Err("must name a host".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "must be an origin only, like https://mcp.example.com (no path, query or fragment)"
                .into(),
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    /// The fields serde knows for a section, read from its "unknown field"
    /// error, which lists every expected one.
    fn known_fields(section: Option<&str>) -> Vec<String> {
        let text = match section {
            // An array of tables.
            Some(name @ ("upstreams" | "issuers" | "oauth.identity_providers")) => {
                format!("version = 1\n[[{name}]]\nzz_not_a_key = 1\n")
            }
            Some(name) => format!("version = 1\n[{name}]\nzz_not_a_key = 1\n"),
            None => "version = 1\nzz_not_a_key = 1\n".to_string(),
        };
        let message = parse(&text).unwrap_err().to_string();
        // "expected one of `a`, `b`" or, for a single field, "expected `a`".
        let list = message
            .split("expected one of ")
            .nth(1)
            .or_else(|| message.split("expected ").nth(1))
            .unwrap_or_else(|| panic!("{message}"));
        list.split(", ")
            .map(|field| {
                field
                    .trim()
                    .trim_matches(|c| c == '`' || c == '\n')
                    .to_string()
            })
            .map(|field| field.split('`').next().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn the_example_documents_every_key() {
        let example = include_str!("../../../examples/gatehouse.toml");
        // Keys as the example shows them, set or commented out, per section.
        let mut documented: Vec<(String, String)> = Vec::new();
        let mut section = String::new();
        for line in example.lines() {
            let line = line.trim_start_matches('#').trim();
            let line = line
                .strip_prefix("[[")
                .and_then(|l| l.strip_suffix("]]"))
                .map_or(line.to_string(), |name| format!("[{name}]"));
            let line = line.as_str();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else if let Some((key, _)) = line.split_once(" = ")
                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                documented.push((section.clone(), key.to_string()));
            }
        }
        let mut sections = known_fields(None);
        // Arrays of tables inside a section.
        sections.push("oauth.identity_providers".into());
        // Tables inside a section: each is documented as a key of its parent
        // by its header, and its own keys are checked like a section's.
        for kind in ["api_keys", "client_secrets", "grants", "signing_keys"] {
            sections.push(format!("lifecycle.{kind}"));
        }
        sections.push("audit.syslog".into());
        sections.push("alerts.webhook".into());
        // (`[lifecycle.tenants.acme.api_keys]` documents `lifecycle.tenants`.)
        let subsections: Vec<(String, String)> = documented
            .iter()
            .filter_map(|(s, _)| {
                let mut parts = s.split('.');
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect();
        documented.extend(subsections);
        for name in &sections {
            if name == "version" {
                continue;
            }
            assert!(
                documented.iter().any(|(s, _)| s == name),
                "examples/gatehouse.toml has no [{name}] section"
            );
            for key in known_fields(Some(name)) {
                // The kinds share one settings type; start-up refuses these
                // keys where they mean nothing, so they are not documented there.
                let refused = matches!(
                    (name.as_str(), key.as_str()),
                    ("lifecycle.grants", "rotation_overlap")
                        | ("lifecycle.signing_keys", "unused_alert" | "unused_revoke")
                );
                if refused {
                    continue;
                }
                assert!(
                    documented.iter().any(|(s, k)| s == name && *k == key),
                    "examples/gatehouse.toml does not document {name}.{key}"
                );
            }
        }
        assert!(parse(example).is_ok(), "the example must be a valid file");
    }

    #[test]
    fn bad_upstreams_stop_start_up_naming_the_entry() {
        let cases = [
            (
                "[[upstreams]]\nname = \"files\"\ncommand = \"a\"\n[[upstreams]]\nname = \"files\"\ncommand = \"b\"",
                "upstreams[1] (\"files\")",
            ),
            (
                "[[upstreams]]\nname = \"files\"",
                "upstreams[0] (\"files\")",
            ),
            (
                "[[upstreams]]\nname = \"crm\"\nurl = \"https://user:pw@crm.example/mcp\"",
                "upstreams[0] (\"crm\")",
            ),
        ];
        for (section, entry) in cases {
            let text = format!("version = 1\n{section}\n");
            let error = parse(&text).expect_err(section).to_string();
            assert!(error.contains(entry), "{error}");
            assert!(
                !error.contains("pw@"),
                "the URL's password is not repeated: {error}"
            );
        }
        let good = "version = 1\n[[upstreams]]\nname = \"files\"\ncommand = \"npx\"\nargs = [\"-y\", \"x\"]\n";
        assert_eq!(parse(good).unwrap().upstreams.len(), 1);
    }

    #[test]
    fn auth_modes_print_as_the_file_spells_them() {
        for name in ["api_key", "none"] {
            let text = format!(
                "version = 1\n[server]\nlisten = \"127.0.0.1:1\"\n[auth]\nmode = \"{name}\""
            );
            assert_eq!(parse(&text).unwrap().auth.mode.as_str(), name);
        }
    }

    #[test]
    fn metrics_stay_off_the_network_unless_asked() {
        assert!(parse("version = 1").unwrap().metrics.listen.is_none());
        let on = parse("version = 1\n[metrics]\nlisten = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(on.metrics.listen.map(|a| a.port()), Some(9464));
        let remote = "version = 1\n[metrics]\nlisten = \"0.0.0.0:9464\"";
        let error = parse(remote).unwrap_err().to_string();
        assert!(
            error.contains("metrics.listen") && error.contains("allow_remote"),
            "{error}"
        );
        assert!(parse(&format!("{remote}\nallow_remote = true")).is_ok());
        let same = "version = 1\n[server]\nlisten = \"127.0.0.1:8787\"\n[metrics]\nlisten = \"127.0.0.1:8787\"";
        let error = parse(same).unwrap_err().to_string();
        assert!(error.contains("public listener"), "{error}");
    }

    #[test]
    fn traces_are_off_unless_an_otlp_http_endpoint_is_named() {
        let config = parse("version = 1").unwrap();
        assert!(config.traces.otlp_endpoint.is_none());
        assert_eq!(config.traces.service_name, "gatehouse");
        let on = "version = 1\n[traces]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"";
        assert!(parse(on).unwrap().traces.otlp_endpoint.is_some());
        let grpc = "version = 1\n[traces]\notlp_endpoint = \"grpc://127.0.0.1:4317\"";
        let error = parse(grpc).unwrap_err().to_string();
        assert!(error.contains("traces.otlp_endpoint"), "{error}");
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse("version = 1").unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.auth.mode, AuthModeName::ApiKey);
        assert!(config.tools.web_fetch_allowlist.is_empty());
    }

    #[test]
    fn errors_name_the_key_and_reason() {
        let cases = [
            ("", "missing field `version`"),
            ("version = 2", "version: unsupported version 2"),
            ("version = 1\n[server]\nlisten = 5", "invalid type"),
            ("version = 1\nbogus = true", "unknown field `bogus`"),
            (
                "version = 1\n[server]\nlistn = \"x\"",
                "unknown field `listn`",
            ),
            (
                "version = 1\n[server]\nbody_timeout = \"soon\"",
                "invalid duration",
            ),
            (
                "version = 1\n[server]\npublic_url = \"http://h/mcp\"",
                "server.public_url: must be an origin only",
            ),
            (
                "version = 1\n[server]\nlisten = \"0.0.0.0:1\"\n[auth]\nmode = \"none\"",
                "auth.mode",
            ),
            (
                "version = 1\n[auth]\nanonymous_role = \"root\"",
                "auth.anonymous_role: unknown role",
            ),
            (
                "version = 1\n[auth]\npepper = \"abc\"",
                "unknown field `pepper`",
            ),
            (
                "version = 1\n[oauth]\naccess_token_ttl = \"2h\"",
                "oauth.access_token_ttl: must be between 1m and 1h",
            ),
            (
                "version = 1\n[server]\nmax_sessions_per_principal = 0",
                "server.max_sessions_per_principal: must be between 1 and 10000",
            ),
            (
                "version = 1\n[server]\ninitialize_per_minute = 0",
                "server.initialize_per_minute: must be greater than zero",
            ),
            (
                "version = 1\n[oauth]\nclient_metadata_max_clients = 0",
                "oauth.client_metadata_max_clients: must be greater than zero",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(err.starts_with("test.toml"), "{err}");
        }
    }

    #[test]
    fn parse_errors_carry_the_line() {
        let err = parse("version = 1\n\n[server]\nmax_body_bytes = \"big\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn identity_providers_need_the_authorization_server_and_someone_must_sign_in() {
        let provider = "[[oauth.identity_providers]]\nname = \"acme\"\n\
            issuer = \"https://login.acme.example\"\nidentity_assertions = true\n";
        let err = parse(&format!(
            "version = 1\n[oauth]\nenabled = false\n{provider}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("oauth.identity_providers"), "{err}");
        let err = parse(&format!(
            "version = 1\n[oauth]\nlocal_login = false\n{provider}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("oauth.local_login"), "{err}");
        assert!(parse(&format!("version = 1\n{provider}")).is_ok());
    }

    #[test]
    fn a_public_url_in_clear_text_to_another_host_is_named() {
        for quiet in [
            "http://127.0.0.1:8787",
            "http://localhost:8787",
            "http://[::1]:8787",
            "https://mcp.example.com",
        ] {
            assert_eq!(
                cleartext_warning(&Url::parse(quiet).unwrap()),
                None,
                "{quiet}"
            );
        }
        for loud in [
            "http://0.0.0.0:8787",
            "http://mcp.example.com",
            "http://10.0.0.5",
        ] {
            let warning = cleartext_warning(&Url::parse(loud).unwrap()).unwrap();
            assert!(warning.contains("unencrypted"), "{warning}");
        }
    }

    #[test]
    fn lifecycle_tenants_must_exist_in_the_policy() {
        let policy = gatehouse_authz::Policy::from_toml(&format!(
            "{}\n[tenants.acme]\n",
            gatehouse_authz::DEFAULT_POLICY_TOML
        ))
        .unwrap();
        let ok =
            parse("version = 1\n[lifecycle.tenants.acme.api_keys]\nmax_age = \"7d\"\n").unwrap();
        assert!(check_against_policy(&ok, &policy).is_ok());
        let typo =
            parse("version = 1\n[lifecycle.tenants.acmee.api_keys]\nmax_age = \"7d\"\n").unwrap();
        let err = check_against_policy(&typo, &policy).unwrap_err();
        assert!(err.contains("lifecycle.tenants.acmee"), "{err}");
        // Without tenants in the policy, nothing to check against.
        assert!(check_against_policy(&typo, &gatehouse_authz::Policy::default_matrix()).is_ok());
    }

    #[test]
    fn mapped_roles_must_exist_in_the_policy() {
        let policy = gatehouse_authz::Policy::default_matrix();
        let ok = parse(
            "version = 1\n[[issuers]]\nissuer = \"https://idp.example.com\"\n\
             role_map = { \"g\" = \"reader\" }\n",
        )
        .unwrap();
        assert!(check_against_policy(&ok, &policy).is_ok());
        let typo = parse(
            "version = 1\n[[issuers]]\nissuer = \"https://idp.example.com\"\n\
             role_map = { \"g\" = \"raeder\" }\n",
        )
        .unwrap();
        let err = check_against_policy(&typo, &policy).unwrap_err();
        assert!(
            err.contains("issuers[0]") && err.contains("raeder"),
            "{err}"
        );
        let provider = parse(
            "version = 1\n[[oauth.identity_providers]]\nname = \"acme\"\n\
             issuer = \"https://login.acme.example\"\nidentity_assertions = true\n\
             default_role = \"superuser\"\n",
        )
        .unwrap();
        let err = check_against_policy(&provider, &policy).unwrap_err();
        assert!(
            err.contains("default_role") && err.contains("superuser"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_written_into_the_file_is_not_echoed() {
        let err = parse(
            "version = 1\n[[issuers]]\nissuer = \"https://idp.example.com\"\n\
             introspection = { client_id = \"gh\", client_secret = \"hunter2-live\" }",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("env:NAME"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// The syslog TLS test certificates (gatehouse-audit's testdata).
    fn syslog_testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gatehouse-audit/src/syslog/testdata")
    }

    #[test]
    fn syslog_tls_settings_are_checked_with_the_configuration() {
        let dir = syslog_testdata();
        let d = dir.display();
        let ok = parse(&format!(
            "version = 1\n[audit.syslog]\naddress = \"tls://127.0.0.1:6514\"\n\
             ca_file = \"{d}/ca.pem\"\nclient_cert_file = \"{d}/client.pem\"\n\
             client_key_file = \"{d}/client.key\"\nserver_name = \"localhost\"\n"
        ))
        .unwrap();
        let settings = ok.audit.syslog.unwrap().settings(Path::new("")).unwrap();
        assert_eq!(
            settings.target,
            gatehouse_audit::SyslogTarget::Tls("127.0.0.1:6514".into())
        );
        assert!(settings.tls.is_some());
        let key_text = std::fs::read_to_string(dir.join("client.key")).unwrap();
        let cases = [
            // TLS keys on a plain address.
            (
                format!("address = \"tcp://127.0.0.1:601\"\nca_file = \"{d}/ca.pem\""),
                "audit.syslog: ca_file is only for a tls:// address, and this one is tcp://",
            ),
            (
                "address = \"udp://127.0.0.1:514\"\nserver_name = \"siem\"".into(),
                "audit.syslog: server_name is only for a tls:// address, and this one is udp://",
            ),
            (
                format!(
                    "address = \"tcp://127.0.0.1:601\"\nclient_cert_file = \"{d}/client.pem\"\n\
                     client_key_file = \"{d}/client.key\""
                ),
                "audit.syslog: client_cert_file is only for a tls:// address",
            ),
            // Bad files, named by path.
            (
                format!("address = \"tls://127.0.0.1:6514\"\nca_file = \"{d}/nope.pem\""),
                "nope.pem: cannot be read",
            ),
            (
                format!(
                    "address = \"tls://127.0.0.1:6514\"\nca_file = \"{d}/ca.pem\"\n\
                     client_cert_file = \"{d}/client.pem\""
                ),
                "audit.syslog: client_cert_file is set without client_key_file",
            ),
            (
                format!(
                    "address = \"tls://127.0.0.1:6514\"\nca_file = \"{d}/ca.pem\"\n\
                     client_cert_file = \"{d}/client.key\"\nclient_key_file = \"{d}/client.key\""
                ),
                "client.key: is not PEM: it holds no CERTIFICATE",
            ),
            (
                format!(
                    "address = \"tls://127.0.0.1:6514\"\nca_file = \"{d}/ca.pem\"\n\
                     client_cert_file = \"{d}/client.pem\"\nclient_key_file = \"{d}/server.key\""
                ),
                "server.key: is not the key of the certificate in client_cert_file",
            ),
            (
                "address = \"tls://siem:6514\"\nserver_name = \"a b\"".into(),
                "audit.syslog: server_name \"a b\" is not a DNS name or an IP address",
            ),
            (
                "address = \"tls://siem\"".into(),
                "expected host:port after tls://",
            ),
        ];
        for (section, want) in cases {
            let err = parse(&format!("version = 1\n[audit.syslog]\n{section}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{section}: {err}");
            assert!(err.starts_with("test.toml: audit.syslog: "), "{err}");
            for line in key_text.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!err.contains(line), "{err}");
            }
        }
        // Without ca_file the system's roots are trusted; where a system has
        // none, ca_file is required.
        match parse("version = 1\n[audit.syslog]\naddress = \"tls://siem:6514\"\n") {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("ca_file is required"), "{e}"),
        }
    }

    #[test]
    fn syslog_tls_files_are_relative_to_the_configuration_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::copy(
            syslog_testdata().join("ca.pem"),
            dir.path().join("tls/ca.pem"),
        )
        .unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(
            &path,
            "version = 1\n[audit.syslog]\naddress = \"tls://127.0.0.1:6514\"\nca_file = \"tls/ca.pem\"\n",
        )
        .unwrap();
        let config = Config::load(&path).unwrap();
        assert!(
            config
                .audit
                .syslog
                .unwrap()
                .settings(config_dir(&path))
                .unwrap()
                .tls
                .is_some()
        );
    }

    /// Every shipped example parses and validates.
    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no examples found in {}", dir.display());
    }

    /// The gateway example: its configuration validates (both upstreams),
    /// and its policy loads and says what the README says it does.
    #[test]
    fn the_gateway_example_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/gateway");
        let config = Config::load(&dir.join("gatehouse.toml")).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["files", "crm"]);
        assert!(config.upstreams[1].needs_tenant());
        assert!(config.upstreams[1].forward_identity);
        let text = std::fs::read_to_string(dir.join("policy.toml")).unwrap();
        let policy = gatehouse_authz::Policy::from_toml(&text).unwrap_or_else(|e| panic!("{e}"));
        let reader = gatehouse_core::Principal {
            tenant: "acme".into(),
            human: None,
            agent: "a".into(),
            credential: gatehouse_core::CredentialRef {
                kind: gatehouse_core::CredentialKind::ApiKey,
                id: "a".into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        };
        let allowed = |name: &str| {
            let target =
                gatehouse_authz::Target::upstream(gatehouse_authz::Kind::Tool, name, "files");
            policy.visibility(&reader, &target) == gatehouse_authz::Access::Allow
        };
        assert!(allowed("files__read_text_file"));
        assert!(!allowed("files__write_file"));
        assert!(!allowed("files__search_files"));
    }
}
