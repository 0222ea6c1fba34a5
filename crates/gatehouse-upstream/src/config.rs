//! `[[upstreams]]` entries of the configuration file, and their validation.
//!
//! An entry is either a child process (`command`) spoken to over stdio, or
//! a Streamable HTTP endpoint (`url`). Durations are humantime strings
//! (`"20s"`, `"1m 30s"`), as everywhere else in the configuration.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use gatehouse_core::secret_ref::SecretRef;

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 32;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// Longest upstream name or prefix: a tool name is `prefix__tool`, and
/// clients cap tool names (commonly at 64 or 128 characters).
pub const MAX_NAME_LEN: usize = 32;
/// The separator between prefix and tool name in the gateway's catalogue.
pub const PREFIX_SEPARATOR: &str = "__";

use gatehouse_core::duration_setting::parse as duration;

fn default_connect_timeout() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}
/// The upstream (its name) a gateway tool name is routed to, from the
/// configuration alone (`UpstreamSet::route` routes by this, and `policy
/// check` without a running server): the upstream whose prefix the name
/// carries, also while it is disabled (then nobody: a name with a
/// configured upstream's prefix is never the unprefixed upstream's), else
/// the one enabled upstream without a prefix.
pub fn route_by_config<'a>(
    upstreams: impl Iterator<Item = &'a UpstreamConfig> + Clone,
    tool: &str,
) -> Option<&'a str> {
    if let Some(prefixed) = upstreams.clone().find(|u| u.own_name(tool).is_some()) {
        return prefixed.enabled.then_some(prefixed.name.as_str());
    }
    let mut bare = upstreams.filter(|u| u.enabled && u.effective_prefix().is_empty());
    match (bare.next(), bare.next()) {
        (Some(only), None) => Some(only.name.as_str()),
        _ => None,
    }
}

/// The longest `call_timeout` (see `KEPT_AFTER_DROP` in the HTTP layer).
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

fn default_call_timeout() -> Duration {
    DEFAULT_CALL_TIMEOUT
}
fn default_max_concurrent_calls() -> usize {
    DEFAULT_MAX_CONCURRENT_CALLS
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_breaker_failures() -> u32 {
    DEFAULT_BREAKER_FAILURES
}
fn default_breaker_cooldown() -> Duration {
    DEFAULT_BREAKER_COOLDOWN
}
fn default_enabled() -> bool {
    true
}

/// One upstream MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `^[a-z0-9][a-z0-9_-]*$`, at most 32 characters, without `__`.
    pub name: String,
    /// stdio: the program to start (looked up in the child's `PATH`).
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// stdio: variables set for the child, on top of the minimal environment
    /// (`PATH`, `HOME`, locale, `TMPDIR`). Values are written in the file,
    /// so no secrets here: use `secret_env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// stdio: variables whose values are secrets (`env:` or `file:`),
    /// resolved at each start of the child.
    #[serde(default)]
    pub secret_env: BTreeMap<String, SecretRef>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// HTTP: the Streamable HTTP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// The longest one call may take, waiting for a free slot included.
    #[serde(default = "default_call_timeout", deserialize_with = "duration")]
    pub call_timeout: Duration,
    /// Calls in flight at once; a further call waits for a free slot for
    /// at most its `call_timeout`, then fails with `upstream_busy`.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Of those, how many one tenant's calls may hold at once with tenancy
    /// on (default: half, rounded up), so that one tenant cannot take every
    /// slot and leave the others `upstream_busy`. Without tenancy only
    /// `max_concurrent_calls` applies.
    #[serde(default)]
    pub max_concurrent_calls_per_tenant: Option<usize>,
    /// Of those, how many one caller's calls may hold at once (default: a
    /// quarter, rounded up): the person behind the calls across all their
    /// agents and credentials, else the agent. One agent stuck in a loop of
    /// slow calls waits for its own slots (`upstream_caller_busy`) instead
    /// of leaving everyone else of its tenant `upstream_busy`.
    #[serde(default)]
    pub max_concurrent_calls_per_caller: Option<usize>,
    /// Largest single message accepted from the upstream.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Consecutive failures (timeouts, lost connections, invalid messages)
    /// that open the circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting one through.
    #[serde(default = "default_breaker_cooldown", deserialize_with = "duration")]
    pub breaker_cooldown: Duration,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Prefix of this upstream's tools; default: the name; `""`: none.
    #[serde(default)]
    pub prefix: Option<String>,
    /// HTTP only: the credential Gatehouse presents to the upstream.
    #[serde(default)]
    pub auth: UpstreamAuth,
    /// What a tool whose definition changed since it was pinned becomes.
    #[serde(default)]
    pub pin: PinMode,
    /// Send who is calling with each call, as a short-lived JWT signed by
    /// Gatehouse in `_meta["io.gatehouse/identity"]` (audience: this
    /// upstream), verifiable against Gatehouse's JWKS.
    #[serde(default)]
    pub forward_identity: bool,
    /// The protocol revision to speak: `"2026-07-28"` (stateless) or
    /// `"2025-11-25"` (`initialize` and a session). Default: 2026-07-28
    /// when the server offers it, else 2025-11-25. One connection speaks
    /// one revision, and some servers serve some features on one only
    /// (resource subscriptions, sampling and elicitation requests need a
    /// 2025-11-25 session).
    #[serde(default)]
    pub protocol_version: Option<String>,
}

/// What happens to an upstream tool whose definition (description,
/// schemas, annotations) differs from the one pinned when Gatehouse first
/// saw it: a changed description is how a server that was reviewed turns
/// into one that instructs the model otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinMode {
    /// Withheld (hidden, calls refused) until an operator approves the
    /// change; an anomaly is recorded.
    #[default]
    Block,
    /// Served as changed; an anomaly is recorded.
    Alert,
    /// Not pinned at all.
    Off,
}

impl PinMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PinMode::Block => "block",
            PinMode::Alert => "alert",
            PinMode::Off => "off",
        }
    }
}

/// Protocol revisions `protocol_version` may name.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2026-07-28"];

/// The outbound credential of an HTTP upstream: Gatehouse's own, never
/// the caller's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UpstreamAuth {
    #[default]
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer(SecretRef),
    /// `<header>: <secret>`, e.g. `X-Api-Key`.
    Header { name: String, value: SecretRef },
    /// An access token from the upstream's authorization server by the
    /// client-credentials grant, for the upstream as `resource`; renewed
    /// before it expires. `issuer` is the server the client is registered
    /// at, and the only one the secret is ever sent to: the upstream's
    /// protected resource metadata must name it, but cannot choose another.
    OAuth {
        client_id: String,
        client_secret: SecretRef,
        scope: Option<String>,
        issuer: String,
    },
}

impl UpstreamAuth {
    pub fn secret(&self) -> Option<&SecretRef> {
        match self {
            UpstreamAuth::None => None,
            UpstreamAuth::Bearer(secret) => Some(secret),
            UpstreamAuth::Header { value, .. } => Some(value),
            UpstreamAuth::OAuth { client_secret, .. } => Some(client_secret),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BearerRepr {
    bearer: SecretRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderRepr {
    header: String,
    value: SecretRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuthFields {
    client_id: String,
    client_secret: SecretRef,
    #[serde(default)]
    scope: Option<String>,
    issuer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuthRepr {
    oauth: OAuthFields,
}

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "auth = \"none\", { bearer = \"env:NAME\" }, { header = \"X-Api-Key\", value = \"file:PATH\" } or { oauth = { issuer = \"https://AS\", client_id = \"ID\", client_secret = \"env:NAME\" } }"
)]
enum AuthRepr {
    Keyword(String),
    Bearer(BearerRepr),
    Header(HeaderRepr),
    OAuth(OAuthRepr),
}

impl<'de> Deserialize<'de> for UpstreamAuth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match AuthRepr::deserialize(d)? {
            AuthRepr::Keyword(word) if word == "none" => Ok(UpstreamAuth::None),
            AuthRepr::Keyword(word) => Err(serde::de::Error::custom(format!(
                "auth = {word:?}: the only keyword is \"none\""
            ))),
            AuthRepr::Bearer(b) => Ok(UpstreamAuth::Bearer(b.bearer)),
            AuthRepr::Header(h) => Ok(UpstreamAuth::Header {
                name: h.header,
                value: h.value,
            }),
            AuthRepr::OAuth(o) => Ok(UpstreamAuth::OAuth {
                client_id: o.oauth.client_id,
                client_secret: o.oauth.client_secret,
                scope: o.oauth.scope,
                issuer: o.oauth.issuer,
            }),
        }
    }
}

/// How an entry reaches its server.
#[derive(Debug, Clone, Copy)]
pub enum TransportKind<'a> {
    Stdio { command: &'a str },
    Http { url: &'a str },
}

impl UpstreamConfig {
    /// A stdio entry with defaults, for code and tests.
    pub fn stdio(name: &str, command: &str, args: &[&str]) -> UpstreamConfig {
        let mut config = UpstreamConfig::http(name, "");
        config.url = None;
        config.command = Some(command.to_owned());
        config.args = args.iter().map(|a| (*a).to_owned()).collect();
        config
    }

    /// An HTTP entry with defaults, for code and tests.
    pub fn http(name: &str, url: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: name.to_owned(),
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            cwd: None,
            url: Some(url.to_owned()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_concurrent_calls_per_tenant: None,
            max_concurrent_calls_per_caller: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            breaker_failures: DEFAULT_BREAKER_FAILURES,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            enabled: true,
            prefix: None,
            auth: UpstreamAuth::None,
            pin: PinMode::Block,
            forward_identity: false,
            protocol_version: None,
        }
    }

    /// How many calls in flight one tenant may hold.
    pub fn tenant_share(&self) -> usize {
        self.max_concurrent_calls_per_tenant
            .unwrap_or_else(|| self.max_concurrent_calls.div_ceil(2))
            .max(1)
    }

    /// How many calls in flight one caller may hold.
    pub fn caller_share(&self) -> usize {
        self.max_concurrent_calls_per_caller
            .unwrap_or_else(|| self.max_concurrent_calls.div_ceil(4))
            .max(1)
    }

    /// Only meaningful after [`validate`]: exactly one of the two is set.
    pub fn transport(&self) -> TransportKind<'_> {
        match (&self.command, &self.url) {
            (Some(command), _) => TransportKind::Stdio { command },
            (None, Some(url)) => TransportKind::Http { url },
            (None, None) => TransportKind::Http { url: "" },
        }
    }

    /// The prefix of this upstream's tools in the catalogue (may be empty).
    pub fn effective_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.name)
    }

    /// The gateway's name for one of this upstream's tools (or prompts):
    /// `prefix__tool`, or the bare name without a prefix.
    pub fn gateway_name(&self, tool: &str) -> String {
        match self.effective_prefix() {
            "" => tool.to_owned(),
            prefix => format!("{prefix}{PREFIX_SEPARATOR}{tool}"),
        }
    }

    /// The upstream's own name of the tool (or prompt) the gateway calls
    /// `gateway_name`, when that is `prefix__tool` with this upstream's
    /// prefix; `None` otherwise, and always for an upstream without one.
    pub fn own_name<'a>(&self, gateway_name: &'a str) -> Option<&'a str> {
        let prefix = self.effective_prefix();
        if prefix.is_empty() {
            return None;
        }
        gateway_name
            .strip_prefix(prefix)?
            .strip_prefix(PREFIX_SEPARATOR)
            .filter(|rest| !rest.is_empty())
    }

    /// The audience of the identity JWT sent to this upstream: its URL, or
    /// for a child process a name no other upstream has.
    pub fn identity_audience(&self) -> String {
        match self.transport() {
            TransportKind::Http { url } => url.to_owned(),
            TransportKind::Stdio { .. } => format!("urn:gatehouse:upstream:{}", self.name),
        }
    }

    /// Whether calls need a tenant (their credential is per tenant).
    pub fn needs_tenant(&self) -> bool {
        self.auth.secret().is_some_and(SecretRef::is_tenant)
    }
}

/// A bad `[[upstreams]]` entry, named by position and name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstreams[{index}] ({name:?}): {reason}")]
pub struct ConfigError {
    pub index: usize,
    pub name: String,
    pub reason: String,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && name.len() <= MAX_NAME_LEN
        && !name.contains(PREFIX_SEPARATOR)
        // `a_` + `__` + `x` would read as `a` + `__` + `_x`: upstream `a`'s.
        && !name.ends_with('_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Header names an upstream credential may not use: the transport owns them.
const RESERVED_HEADERS: &[&str] = &[
    "accept",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "host",
    "last-event-id",
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
    "mcp-session-id",
    "transfer-encoding",
];

fn check_entry(entry: &UpstreamConfig) -> Result<(), String> {
    if !valid_name(&entry.name) {
        return Err(format!(
            "name must match ^[a-z0-9][a-z0-9_-]*$, have at most {MAX_NAME_LEN} characters, no \"__\" and not end with \"_\""
        ));
    }
    if let Some(prefix) = &entry.prefix
        && !prefix.is_empty()
        && !valid_name(prefix)
    {
        return Err("prefix must be empty or follow the rules of name".into());
    }
    match (&entry.command, &entry.url) {
        (Some(_), Some(_)) => return Err("set command (stdio) or url (HTTP), not both".into()),
        (None, None) => return Err("set command (stdio) or url (HTTP)".into()),
        (Some(command), None) => check_stdio(entry, command)?,
        (None, Some(url)) => check_http(entry, url)?,
    }
    for (what, value) in [
        ("connect_timeout", entry.connect_timeout),
        ("call_timeout", entry.call_timeout),
        ("breaker_cooldown", entry.breaker_cooldown),
    ] {
        if value.is_zero() {
            return Err(format!("{what} must be more than zero"));
        }
    }
    // A session's request id stays taken 10 minutes after its client went
    // away (the SDK may still run it): no call may run longer.
    if entry.call_timeout > MAX_CALL_TIMEOUT {
        return Err(format!(
            "call_timeout must be at most {} minutes",
            MAX_CALL_TIMEOUT.as_secs() / 60
        ));
    }
    if entry.max_concurrent_calls == 0 {
        return Err("max_concurrent_calls must be at least 1".into());
    }
    if let Some(share) = entry.max_concurrent_calls_per_tenant
        && (share == 0 || share > entry.max_concurrent_calls)
    {
        return Err(format!(
            "max_concurrent_calls_per_tenant must be from 1 to max_concurrent_calls ({})",
            entry.max_concurrent_calls
        ));
    }
    if let Some(share) = entry.max_concurrent_calls_per_caller
        && (share == 0 || share > entry.max_concurrent_calls)
    {
        return Err(format!(
            "max_concurrent_calls_per_caller must be from 1 to max_concurrent_calls ({})",
            entry.max_concurrent_calls
        ));
    }
    if entry.max_message_bytes < 1024 {
        return Err("max_message_bytes must be at least 1024".into());
    }
    if entry.breaker_failures == 0 {
        return Err("breaker_failures must be at least 1".into());
    }
    if let Some(version) = &entry.protocol_version
        && !PROTOCOL_VERSIONS.contains(&version.as_str())
    {
        return Err(format!(
            "protocol_version must be one of {}",
            PROTOCOL_VERSIONS.join(", ")
        ));
    }
    Ok(())
}

fn check_stdio(entry: &UpstreamConfig, command: &str) -> Result<(), String> {
    if command.trim().is_empty() {
        return Err("command is empty".into());
    }
    if entry.auth != UpstreamAuth::None {
        return Err(
            "auth applies to url upstreams; give a child its credential in secret_env".into(),
        );
    }
    for key in entry.env.keys().chain(entry.secret_env.keys()) {
        if key.is_empty() || key.contains(['=', '\0']) {
            return Err(format!("env: {key:?} is not a variable name"));
        }
    }
    for (key, value) in &entry.env {
        if value.contains('\0') {
            return Err(format!("env.{key}: contains a NUL character"));
        }
    }
    if let Some(key) = entry.secret_env.keys().find(|k| entry.env.contains_key(*k)) {
        return Err(format!("{key} is in both env and secret_env"));
    }
    if let Some((key, _)) = entry.secret_env.iter().find(|(_, r)| r.is_tenant()) {
        // One child serves every tenant, so it cannot hold a per-tenant credential.
        return Err(format!(
            "secret_env.{key}: tenant: secrets need an HTTP upstream"
        ));
    }
    Ok(())
}

/// The authorization server the client secret goes to: an https URL
/// (plain http only on loopback, for a local test or sidecar), with no
/// user name, query or fragment (RFC 8414 §2).
fn check_issuer(issuer: &str) -> Result<(), String> {
    let parsed =
        url::Url::parse(issuer).map_err(|e| format!("auth.oauth.issuer is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(host)) => host == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !(parsed.scheme() == "https" || (parsed.scheme() == "http" && loopback)) {
        return Err("auth.oauth.issuer must be https (plain http only on loopback)".into());
    }
    if !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
    {
        return Err("auth.oauth.issuer must have no user name, query or fragment".into());
    }
    Ok(())
}

impl UpstreamConfig {
    /// A warning when Gatehouse's credential for this upstream would cross
    /// the network unencrypted: plain http to a host other than this one,
    /// with an `auth` that sends something. (Not refused: a service mesh
    /// may encrypt what leaves the pod; the operator should know.)
    pub fn cleartext_warning(&self) -> Option<String> {
        let url = url::Url::parse(self.url.as_deref()?).ok()?;
        if url.scheme() != "http" || matches!(self.auth, UpstreamAuth::None) {
            return None;
        }
        (!gatehouse_core::is_loopback_url(&url)).then(|| {
            format!(
                "upstream {:?} is plain http to another host ({}): Gatehouse's credential for it \
                 (and the answers) cross the network unencrypted, for anyone on the path to read \
                 and use; use https",
                self.name,
                url.host_str().unwrap_or_default()
            )
        })
    }
}

fn check_http(entry: &UpstreamConfig, url: &str) -> Result<(), String> {
    if !entry.args.is_empty() || !entry.env.is_empty() || !entry.secret_env.is_empty() {
        return Err("args, env and secret_env apply to command upstreams only".into());
    }
    if entry.cwd.is_some() {
        return Err("cwd applies to command upstreams only".into());
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("url is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url must be http or https, not {:?}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // A password in the URL would land in logs and error texts; use auth.
        return Err("url must not contain a user name or password; use auth".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("url has no host".into());
    }
    if parsed.fragment().is_some() {
        return Err("url must not have a #fragment".into());
    }
    if let UpstreamAuth::OAuth {
        client_id, issuer, ..
    } = &entry.auth
    {
        if client_id.trim().is_empty() {
            return Err("auth.oauth.client_id is empty".into());
        }
        check_issuer(issuer)?;
    }
    if let UpstreamAuth::Header { name, .. } = &entry.auth {
        let lower = name.to_ascii_lowercase();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("auth.header {name:?} is not a header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("mcp-param-") {
            return Err(format!(
                "auth.header {name:?} is set by the transport itself"
            ));
        }
    }
    Ok(())
}

/// Checks every entry and the set as a whole; the error names the first
/// offending entry.
pub fn validate(entries: &[UpstreamConfig]) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut unprefixed = false;
    for (index, entry) in entries.iter().enumerate() {
        let fail = |reason: String| ConfigError {
            index,
            name: entry.name.clone(),
            reason,
        };
        check_entry(entry).map_err(fail)?;
        if !names.insert(entry.name.as_str()) {
            return Err(fail("another upstream has the same name".into()));
        }
        let prefix = entry.effective_prefix();
        if entry.enabled && !prefix.is_empty() && !prefixes.insert(prefix) {
            return Err(fail(format!(
                "another enabled upstream uses the prefix {prefix:?}"
            )));
        }
        // Two catalogues without a prefix could offer one name twice, and
        // a call could not say which server it means.
        if entry.enabled && prefix.is_empty() && std::mem::replace(&mut unprefixed, true) {
            return Err(fail(
                "another enabled upstream has prefix = \"\"; at most one may drop its prefix"
                    .into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        upstreams: Vec<UpstreamConfig>,
    }

    fn parse(text: &str) -> Result<Vec<UpstreamConfig>, String> {
        toml::from_str::<File>(text)
            .map(|f| f.upstreams)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_credential_sent_over_plain_http_to_another_host_is_warned_of() {
        let warned = |text: &str| parse(text).unwrap()[0].cleartext_warning();
        let warning = warned(
            "[[upstreams]]\nname = \"crm\"\nurl = \"http://crm.internal/mcp\"\nauth = { bearer = \"env:T\" }\n",
        )
        .unwrap();
        assert!(
            warning.contains("crm.internal") && warning.contains("https"),
            "{warning}"
        );
        for quiet in [
            "[[upstreams]]\nname = \"crm\"\nurl = \"https://crm.internal/mcp\"\nauth = { bearer = \"env:T\" }\n",
            "[[upstreams]]\nname = \"crm\"\nurl = \"http://127.0.0.1:9/mcp\"\nauth = { bearer = \"env:T\" }\n",
            "[[upstreams]]\nname = \"crm\"\nurl = \"http://crm.internal/mcp\"\n",
            "[[upstreams]]\nname = \"files\"\ncommand = \"npx\"\n",
        ] {
            assert_eq!(warned(quiet), None, "{quiet}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let entries = parse(
            r#"
            [[upstreams]]
            name = "files"
            command = "npx"
            args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/shared"]
            env = { FOO = "bar" }
            cwd = "/srv"

            [[upstreams]]
            name = "crm"
            url = "https://crm.internal.example/mcp"
            call_timeout = "20s"
            connect_timeout = "2s"
            max_concurrent_calls = 16
            max_concurrent_calls_per_tenant = 4
            max_concurrent_calls_per_caller = 2
            enabled = true
            prefix = "crm"
            auth = { bearer = "env:CRM_TOKEN" }

            [[upstreams]]
            name = "kv"
            url = "http://127.0.0.1:9000/mcp"
            auth = { header = "X-Api-Key", value = "file:/run/secret" }

            [[upstreams]]
            name = "open"
            url = "http://127.0.0.1:9001/mcp"
            auth = "none"
            prefix = ""
            "#,
        )
        .unwrap();
        validate(&entries).unwrap();
        assert_eq!(entries[0].call_timeout, DEFAULT_CALL_TIMEOUT);
        assert_eq!(entries[0].max_concurrent_calls, 32);
        assert_eq!(entries[0].tenant_share(), 16);
        assert_eq!(entries[1].tenant_share(), 4);
        assert_eq!(entries[0].caller_share(), 8);
        assert_eq!(entries[1].caller_share(), 2);
        assert_eq!(entries[0].env["FOO"], "bar");
        assert_eq!(entries[1].call_timeout, Duration::from_secs(20));
        assert_eq!(entries[1].connect_timeout, Duration::from_secs(2));
        assert_eq!(
            entries[1].auth,
            UpstreamAuth::Bearer(SecretRef::Env("CRM_TOKEN".into()))
        );
        assert_eq!(
            entries[2].auth,
            UpstreamAuth::Header {
                name: "X-Api-Key".into(),
                value: SecretRef::File("/run/secret".into())
            }
        );
        assert_eq!(entries[3].effective_prefix(), "");
        assert_eq!(entries[0].effective_prefix(), "files");
    }

    #[test]
    fn unknown_keys_and_literal_secrets_are_refused_at_parse() {
        let unknown = parse("[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\ntimeout = \"1s\"\n");
        assert!(unknown.unwrap_err().contains("timeout"));
        let literal = parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\nauth = { bearer = \"sk-123\" }\n",
        );
        assert!(literal.is_err());
        let extra = parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\nauth = { bearer = \"env:A\", header = \"X\" }\n",
        );
        assert!(extra.is_err());
        let duration =
            parse("[[upstreams]]\nname = \"a\"\nurl = \"http://x/\"\ncall_timeout = \"soon\"\n");
        let long = parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\ncall_timeout = \"11m\"\n",
        )
        .unwrap();
        assert!(
            reason(&long).contains("at most 10 minutes"),
            "{}",
            reason(&long)
        );
        assert!(duration.unwrap_err().contains("invalid duration"));
    }

    /// A name with an upstream's prefix is that upstream's (or nobody's
    /// while it is disabled); anything else goes to the one upstream
    /// without a prefix, if there is exactly one.
    #[test]
    fn names_route_by_prefix_then_to_the_one_bare_upstream() {
        let mut crm = UpstreamConfig::http("crm", "http://127.0.0.1/mcp");
        crm.prefix = Some("sales".into());
        let mut files = UpstreamConfig::http("files", "http://127.0.0.1/files");
        files.prefix = Some(String::new());
        let docs = UpstreamConfig::http("docs", "http://127.0.0.1/d");
        let all = [crm.clone(), files.clone(), docs.clone()];
        assert_eq!(route_by_config(all.iter(), "sales__list"), Some("crm"));
        assert_eq!(route_by_config(all.iter(), "docs__find"), Some("docs"));
        assert_eq!(route_by_config(all.iter(), "read"), Some("files"));
        crm.enabled = false;
        let off = [crm, files.clone()];
        assert_eq!(route_by_config(off.iter(), "sales__list"), None);
        let mut other = UpstreamConfig::http("other", "http://127.0.0.1/o");
        other.prefix = Some(String::new());
        let two_bare = [files, other];
        assert_eq!(route_by_config(two_bare.iter(), "read"), None);
    }

    fn reason(entries: &[UpstreamConfig]) -> String {
        validate(entries).unwrap_err().to_string()
    }

    #[test]
    fn validation_names_the_offending_entry() {
        let ok = UpstreamConfig::http("crm", "https://crm.example/mcp");
        let mut dup = ok.clone();
        dup.prefix = Some("other".into());
        let err = validate(&[ok.clone(), dup]).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.to_string().contains("same name"), "{err}");

        for bad in ["Files", "_x", "a b", "a__b", "a_", "", &"x".repeat(33)] {
            let entry = UpstreamConfig::http(bad, "https://x.example/");
            assert!(reason(&[entry]).contains("name must match"), "{bad}");
        }

        let mut both = UpstreamConfig::stdio("both", "cat", &[]);
        both.url = Some("https://x.example/".into());
        assert!(reason(&[both]).contains("not both"));
        let mut neither = UpstreamConfig::stdio("neither", "cat", &[]);
        neither.command = None;
        assert!(reason(&[neither]).contains("set command"));
        assert!(reason(&[UpstreamConfig::stdio("empty", "  ", &[])]).contains("empty"));

        let user = UpstreamConfig::http("user", "https://bob:pw@x.example/mcp");
        let text = reason(&[user]);
        assert!(
            text.contains("user name or password") && !text.contains("pw@"),
            "{text}"
        );
        assert!(
            reason(&[UpstreamConfig::http("ftp", "ftp://x.example/")]).contains("http or https")
        );
        assert!(reason(&[UpstreamConfig::http("rel", "/mcp")]).contains("not a URL"));

        let mut zero = UpstreamConfig::http("zero", "https://x.example/");
        zero.call_timeout = Duration::ZERO;
        assert!(reason(&[zero]).contains("call_timeout"));
        let mut zero = UpstreamConfig::http("zero", "https://x.example/");
        zero.connect_timeout = Duration::ZERO;
        assert!(reason(&[zero]).contains("connect_timeout"));
        let mut zero = UpstreamConfig::http("zero", "https://x.example/");
        zero.max_concurrent_calls = 0;
        assert!(reason(&[zero]).contains("max_concurrent_calls"));
        for share in [0, 33] {
            let mut entry = UpstreamConfig::http("share", "https://x.example/");
            entry.max_concurrent_calls_per_tenant = Some(share);
            assert!(reason(&[entry]).contains("max_concurrent_calls_per_tenant"));
            let mut entry = UpstreamConfig::http("share", "https://x.example/");
            entry.max_concurrent_calls_per_caller = Some(share);
            assert!(reason(&[entry]).contains("max_concurrent_calls_per_caller"));
        }
        let mut one = UpstreamConfig::http("one", "https://x.example/");
        one.max_concurrent_calls = 1;
        assert_eq!(one.tenant_share(), 1);
        assert_eq!(one.caller_share(), 1);
    }

    #[test]
    fn a_gateway_name_is_split_only_at_its_own_prefix() {
        let crm = UpstreamConfig::http("crm", "https://x.example/");
        assert_eq!(crm.own_name("crm__find"), Some("find"));
        assert_eq!(crm.own_name("crm__a__b"), Some("a__b"));
        for other in ["crm__", "crm_find", "crmx__find", "files__find", "find"] {
            assert_eq!(crm.own_name(other), None, "{other}");
        }
        let mut bare = UpstreamConfig::http("bare", "https://x.example/");
        bare.prefix = Some(String::new());
        assert_eq!(bare.own_name("__find"), None);
    }

    #[test]
    fn credentials_fit_the_transport() {
        let mut stdio_auth = UpstreamConfig::stdio("s", "cat", &[]);
        stdio_auth.auth = UpstreamAuth::Bearer(SecretRef::Env("T".into()));
        assert!(reason(&[stdio_auth]).contains("secret_env"));

        let mut tenant_child = UpstreamConfig::stdio("s", "cat", &[]);
        tenant_child
            .secret_env
            .insert("TOKEN".into(), SecretRef::Tenant("t".into()));
        assert!(reason(&[tenant_child]).contains("HTTP upstream"));

        let mut reserved = UpstreamConfig::http("h", "https://x.example/");
        reserved.auth = UpstreamAuth::Header {
            name: "Mcp-Session-Id".into(),
            value: SecretRef::Env("T".into()),
        };
        assert!(reason(&[reserved]).contains("transport itself"));

        let mut tenant = UpstreamConfig::http("h", "https://x.example/");
        tenant.auth = UpstreamAuth::Bearer(SecretRef::Tenant("crm".into()));
        validate(std::slice::from_ref(&tenant)).unwrap();
        assert!(tenant.needs_tenant());
    }

    #[test]
    fn prefixes_must_not_collide() {
        let a = UpstreamConfig::http("a", "https://a.example/");
        let mut b = UpstreamConfig::http("b", "https://b.example/");
        b.prefix = Some("a".into());
        assert!(reason(&[a.clone(), b.clone()]).contains("prefix"));
        b.enabled = false;
        validate(&[a, b]).unwrap();
    }

    #[test]
    fn at_most_one_enabled_upstream_drops_its_prefix() {
        let mut a = UpstreamConfig::http("a", "https://a.example/");
        a.prefix = Some(String::new());
        let mut b = UpstreamConfig::http("b", "https://b.example/");
        b.prefix = Some(String::new());
        assert!(reason(&[a.clone(), b.clone()]).contains("at most one may drop its prefix"));
        b.enabled = false;
        validate(&[a, b]).unwrap();
    }

    #[test]
    fn oauth_client_credentials_parse_and_need_a_client_id() {
        let entries = parse(
            "[[upstreams]]\nname = \"crm\"\nurl = \"https://crm.example/mcp\"\n\
             auth = { oauth = { issuer = \"https://login.example\", client_id = \"gw\", client_secret = \"tenant:crm_secret\", scope = \"mcp\" } }\n",
        )
        .unwrap();
        let UpstreamAuth::OAuth {
            client_id, scope, ..
        } = &entries[0].auth
        else {
            panic!("{:?}", entries[0].auth);
        };
        assert_eq!((client_id.as_str(), scope.as_deref()), ("gw", Some("mcp")));
        // A tenant: client secret makes the connection per tenant.
        assert!(entries[0].needs_tenant());
        let mut empty = entries[0].clone();
        empty.auth = UpstreamAuth::OAuth {
            client_id: " ".into(),
            client_secret: SecretRef::Env("X".into()),
            scope: None,
            issuer: "https://login.example".into(),
        };
        assert!(reason(&[empty]).contains("client_id"));
        // The secret's destination is configured, and only https.
        let no_issuer = parse(
            "[[upstreams]]\nname = \"crm\"\nurl = \"https://crm.example/mcp\"\n\
             auth = { oauth = { client_id = \"gw\", client_secret = \"env:X\" } }\n",
        );
        assert!(no_issuer.is_err());
        for (issuer, ok) in [
            ("http://login.example", false),
            ("https://login.example?x=1", false),
            ("https://u:p@login.example", false),
            ("not a url", false),
            ("http://127.0.0.1:9000", true),
            ("https://login.example/tenant-1", true),
        ] {
            let mut entry = entries[0].clone();
            entry.auth = UpstreamAuth::OAuth {
                client_id: "gw".into(),
                client_secret: SecretRef::Env("X".into()),
                scope: None,
                issuer: issuer.into(),
            };
            assert_eq!(validate(&[entry]).is_ok(), ok, "{issuer}");
        }
        let unknown = parse(
            "[[upstreams]]\nname = \"crm\"\nurl = \"https://crm.example/mcp\"\n\
             auth = { oauth = { issuer = \"https://login.example\", client_id = \"gw\", client_secret = \"env:X\", audience = \"x\" } }\n",
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn pin_defaults_to_block_and_takes_the_three_modes() {
        let entries = parse(
            "[[upstreams]]\nname = \"a\"\nurl = \"https://a.example/\"\n\
             [[upstreams]]\nname = \"b\"\nurl = \"https://b.example/\"\npin = \"alert\"\n\
             [[upstreams]]\nname = \"c\"\nurl = \"https://c.example/\"\npin = \"off\"\n",
        )
        .unwrap();
        let pins: Vec<_> = entries.iter().map(|e| e.pin).collect();
        assert_eq!(pins, [PinMode::Block, PinMode::Alert, PinMode::Off]);
        let err =
            parse("[[upstreams]]\nname = \"a\"\nurl = \"https://a.example/\"\npin = \"warn\"\n")
                .unwrap_err();
        assert!(err.contains("block") && err.contains("alert"), "{err}");
    }
}
