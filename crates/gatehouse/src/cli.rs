use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use url::Url;

/// Gatehouse: authentication, authorization and audit for MCP.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML, version = 1). Without one, built-in defaults apply.
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: database, audit file, pepper and tool sandbox.
    #[arg(long, global = true, env = "GATEHOUSE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log lines on stderr: "text" for people, "json" (one object a line,
    /// with the request's id and span fields) for log collectors.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the MCP server over Streamable HTTP.
    Serve(ServeArgs),
    /// Serve MCP over stdin/stdout for a local client (key from GATEHOUSE_API_KEY).
    Stdio,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage OAuth clients of the embedded authorization server.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Manage tenant secrets (read by the access_secrets tool).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Manage local users, who sign in at the embedded authorization server.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Inspect the policy: print it, validate a file, or explain a decision.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Decide calls of tools that need a human's approval (operation tokens).
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// List or revoke task grants (an agent's allowlist for a declared task).
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// Upstream MCP servers: their tools' pinned definitions, status and review.
    #[command(subcommand)]
    Upstreams(UpstreamsCommand),
    /// The credential lifecycle: apply the `[lifecycle]` policy now.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Alerts raised by Gatehouse's detectors: list and acknowledge them.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Validate the configuration and print the effective settings.
    CheckConfig(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts not yet acknowledged, newest first (with --all, every alert).
    List {
        /// Acknowledged alerts too.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Acknowledge an alert: it leaves the default list (audited, with who).
    Ack {
        /// The alert's id (its audit record's id, as `alerts list` shows it).
        id: String,
        /// Who acknowledges it, as stored with the alert (default: the account running the
        /// command). The audit record names that account either way.
        #[arg(long)]
        by: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Apply the policy now: warn about credentials near their maximum age
    /// or unused, revoke those past it or unused too long, rotate the
    /// signing key. Every action is audited. (`serve` does this on its own
    /// every `lifecycle.interval`.)
    Run {
        /// Only show what would be done now; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum UpstreamsCommand {
    /// The configured upstreams and their tools' pinned definitions (from the store).
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Connect to each upstream now: its health, its tools and how each compares with its pin.
    Status {
        /// The tenant whose credential to use for upstreams with tenant: credentials.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the changed tool definitions of an upstream, pinned against now.
    Diff {
        /// The upstream's name ([[upstreams]] name).
        name: String,
        /// Only this tool (its name at the upstream, without the prefix).
        tool: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Accept changed tool definitions: they are pinned and served again.
    Approve {
        /// The upstream's name ([[upstreams]] name).
        name: String,
        /// Only this tool (its name at the upstream, without the prefix).
        tool: Option<String>,
        /// Approve only if the changed definition still has this SHA-256 (as diff printed it).
        #[arg(long, conflicts_with = "all_pending")]
        sha256: Option<String>,
        /// Approve every changed definition as it is now, unreviewed: one that changed again
        /// since your diff is approved too. Without it, --sha256 is required.
        #[arg(long)]
        all_pending: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List pending approvals (with --all: every state).
    List {
        /// Every approval, not only pending ones.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Approve; prints the single-use operation token for the agent.
    Approve {
        /// The approval id (apr_...).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Deny; the agent's retry will be refused.
    Deny {
        /// The approval id (apr_...).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Reads JSON from standard input and prints its keyed hash: of a call's
    /// whole arguments (the `args_sha256` of its audit records and the
    /// `arguments_sha256` of its approval), or with --approval and --field,
    /// of one masked field's value (what the approval shows for it). Keyed
    /// with the servers' pepper, so only this command can check a guess.
    Hash {
        /// The approval whose masked field to check (apr_...).
        #[arg(long, requires = "field")]
        approval: Option<String>,
        /// The masked field's name.
        #[arg(long, requires = "approval")]
        field: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// List live task grants.
    List {
        /// Only grants of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke a task grant; effective on the next request, on every instance.
    Revoke {
        /// The grant id (tg_...).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8787). Port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Public base URL (default http://<listen address>).
    #[arg(long)]
    pub public_url: Option<Url>,
    /// Print start-up information as JSON lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; the key is printed once and never stored.
    Create(KeyCreateArgs),
    /// List keys (never shows secrets).
    List(JsonFlag),
    /// Revoke a key; effective on the next request.
    Revoke {
        /// The key id (the part after ghk_).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add the next token-signing key of the authorization server. It is
    /// published in the JWKS at once and signs after --publish-ahead; the
    /// current key stays published until every token it signed has expired.
    RotateSigning {
        /// How long the new key is published before it signs (e.g. 10m, 0s).
        #[arg(long, default_value = "10m")]
        publish_ahead: humantime::Duration,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List the token-signing keys and where each stands: next (published,
    /// signs later), active (signs now), retiring (replaced; verifies the
    /// tokens it signed until they expire), retired, revoked.
    ListSigning(JsonFlag),
    /// Withdraw a token-signing key at once, e.g. after a suspected
    /// compromise: tokens it signed are refused from the next request on, by
    /// every instance, and it leaves the JWKS. The key that signs now is
    /// refused unless --force (or rotate first).
    RevokeSigning {
        /// The key id (a kid may start with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Also the key that signs now: first add a new key that signs at
        /// once, then revoke this one.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Issue a replacement key; the old one stays valid for the overlap.
    Rotate {
        /// The key id (the part after ghk_).
        id: String,
        /// How long the old key keeps working (e.g. 24h, 30m, 0s). Default:
        /// the key's tenant's `lifecycle` rotation_overlap (24h unless configured).
        #[arg(long)]
        overlap: Option<humantime::Duration>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Clear the locks (and failure counts) of a key, from every source, or,
    /// with --source, of a source address, after repeated authentication
    /// failures.
    Unlock {
        /// The key id.
        #[arg(required_unless_present = "source", conflicts_with = "source")]
        id: Option<String>,
        /// A source address (an IPv6 address clears its /64).
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List keys and source addresses locked after repeated authentication
    /// failures.
    Locks(JsonFlag),
}

#[derive(Debug, Args)]
pub struct KeyCreateArgs {
    /// A name for the key, shown in listings and audit records.
    #[arg(long)]
    pub name: String,
    /// reader, analyst, executor or admin.
    #[arg(long)]
    pub role: String,
    /// The tenant the key belongs to.
    #[arg(long, default_value = gatehouse_core::DEFAULT_TENANT)]
    pub tenant: String,
    /// Narrow the role to these scopes (tools:read, tools:web, tools:write, tools:admin, tool:<name>).
    #[arg(long, num_args = 1..)]
    pub scopes: Option<Vec<String>>,
    /// The human who owns the key.
    #[arg(long)]
    pub owner: Option<String>,
    /// Lifetime, e.g. 90d or 12h. Default: no expiry.
    #[arg(long)]
    pub expires: Option<humantime::Duration>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show the newest records; with --follow, keep printing new ones.
    Tail {
        /// How many of the newest records to show.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        /// Keep printing new records as they arrive (Ctrl-C stops).
        #[arg(long)]
        follow: bool,
        /// Print one JSON object per record.
        #[arg(long)]
        json: bool,
    },
    /// Search the audit log.
    Query(AuditQueryArgs),
    /// Check the audit trail for tampering: every record's hash, the hash
    /// chain that links the records of each instance, and the signed
    /// checkpoints of each chain. Names the first edited, deleted,
    /// reordered or inserted record; exits with status 1 when it finds one.
    Verify {
        /// Start at this record (the `seq` that `audit query --json`
        /// shows) instead of the first; each chain may start mid-way there.
        #[arg(long)]
        from: Option<i64>,
        /// Check these JSON-lines files (oldest first) instead of the
        /// database; with --from (any value), they need not start at the
        /// beginning of the trail.
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<std::path::PathBuf>,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    /// Only records newer than this, e.g. 1h, 30m, 7d.
    #[arg(long)]
    pub since: Option<humantime::Duration>,
    /// Human, agent or credential id.
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records about this tool or endpoint (e.g. web_fetch, oauth/authorize).
    #[arg(long)]
    pub tool: Option<String>,
    /// success, failure, denied or error.
    #[arg(long)]
    pub outcome: Option<String>,
    /// authentication, tool_decision or tool_outcome.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only records of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only the records of one HTTP request (the X-Request-Id it was answered with).
    #[arg(long)]
    pub request_id: Option<String>,
    /// Only the records of callers this external identity provider named
    /// (its `iss`, as `[[issuers]]` lists it).
    #[arg(long)]
    pub issuer: Option<String>,
    /// At most this many records, the newest.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Print one JSON object per record.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a secret; the value is read from standard input.
    Set {
        /// The secret's name.
        name: String,
        /// The tenant the secret belongs to.
        #[arg(long, default_value = gatehouse_core::DEFAULT_TENANT)]
        tenant: String,
    },
    /// List secret names (never values).
    List {
        /// The tenant whose secrets to list.
        #[arg(long, default_value = gatehouse_core::DEFAULT_TENANT)]
        tenant: String,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    Delete {
        /// The secret's name.
        name: String,
        /// The tenant the secret belongs to.
        #[arg(long, default_value = gatehouse_core::DEFAULT_TENANT)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a client. A confidential client (the default) gets a secret,
    /// printed once and never stored; with --redirect-uri it can also send
    /// users through login and consent. --public makes a client without a
    /// secret (a desktop or CLI app), which must use PKCE.
    Create(ClientCreateArgs),
    /// List clients (never shows secrets).
    List(JsonFlag),
    /// Revoke a client; its tokens are refused from the next request on.
    Revoke {
        /// The client id (ghc_...).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Issue a new secret for a confidential client (same client id, same
    /// grants); the old secret keeps working for the overlap.
    RotateSecret {
        /// The client id (ghc_...).
        id: String,
        /// How long the old secret keeps working (e.g. 24h, 30m, 0s: at
        /// once). Default: the client's tenant's `lifecycle` client_secrets
        /// rotation_overlap (24h unless configured).
        #[arg(long)]
        overlap: Option<humantime::Duration>,
        /// For a leaked secret: the old secret stops at once, and so does
        /// every access token the client obtained for itself (client
        /// credentials) until now, on every instance. Tokens people
        /// authorized for the client stay.
        #[arg(long, conflicts_with = "overlap")]
        revoke_tokens: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct ClientCreateArgs {
    /// A name for the client, shown on the consent page and in listings.
    #[arg(long)]
    pub name: String,
    /// Role of the client itself for the client-credentials grant: reader,
    /// analyst, executor or admin. Tokens a user authorizes carry the
    /// user's roles instead.
    #[arg(long, default_value = "reader")]
    pub role: String,
    /// A redirect URI for the authorization code grant (repeatable): https,
    /// or http on a loopback address.
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// A public client: no secret, no client-credentials grant.
    #[arg(long)]
    pub public: bool,
    /// The tenant the client belongs to.
    #[arg(long, default_value = gatehouse_core::DEFAULT_TENANT)]
    pub tenant: String,
    /// Scopes the client may request (default: its role decides alone).
    #[arg(long, num_args = 1..)]
    pub scopes: Option<Vec<String>>,
    /// Allow the client (e.g. a resource server) to introspect tokens of
    /// other clients of its tenant at /oauth/introspect. Without it a
    /// client learns only about its own tokens.
    #[arg(long, conflicts_with = "public")]
    pub introspect: bool,
    /// Authenticate with private_key_jwt (RFC 7523) instead of a secret:
    /// a file holding the client's public keys as a JWKS document. No
    /// secret is issued.
    #[arg(long, conflicts_with_all = ["public", "jwks_uri"])]
    pub jwks: Option<std::path::PathBuf>,
    /// Like --jwks, with the keys fetched from this https URL (and
    /// refetched when the client rotates them).
    #[arg(long, conflicts_with = "public")]
    pub jwks_uri: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user. Without --password-stdin a strong password is generated
    /// and printed once.
    Add(UserAddArgs),
    /// List users (never shows password hashes).
    List(JsonFlag),
    /// Disable a user: their browser sessions end and every token they
    /// authorized is revoked at once.
    Disable {
        /// The user's sign-in name.
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Enable a disabled user: they may sign in again. What the disable
    /// revoked stays revoked (their clients sign in again).
    Enable {
        /// The user's sign-in name.
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Set a new password (generated unless --password-stdin). Ends the
    /// user's browser sessions and revokes every token they authorized, on
    /// every instance at once.
    Passwd {
        /// The user's sign-in name.
        username: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Keep the tokens the user authorized (their clients stay signed
        /// in). Browser sessions end all the same.
        #[arg(long)]
        keep_grants: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Clear a user's failed logins and sign-in locks, from every address.
    Unlock {
        /// The user's sign-in name.
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The user's sign-in name.
    pub username: String,
    /// Roles (reader, analyst, executor, admin); repeat or list several.
    #[arg(long = "role", required = true, num_args = 1..)]
    pub roles: Vec<String>,
    /// The tenant the user belongs to.
    #[arg(long, default_value = gatehouse_core::DEFAULT_TENANT)]
    pub tenant: String,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the policy in effect (the configured file, or the shipped default).
    Show,
    /// Check a policy file without starting anything; exits 1 naming the
    /// offending entry.
    Validate {
        /// The file to check (default: the configured one).
        file: Option<PathBuf>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Explain the decision for one tool call: allow, deny or approval, and
    /// the rule or reason (the same code the audit log records). Exit status:
    /// 0 allow, 3 approval, 4 deny (1: the check itself failed).
    Check(PolicyCheckArgs),
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// The caller's roles (repeat or list several).
    #[arg(long = "role", num_args = 1.., conflicts_with_all = ["key", "user"])]
    pub roles: Vec<String>,
    /// Decide as the API key with this id (its role and scopes). A whole
    /// key pasted here is cut to its id; the secret is neither used nor shown.
    #[arg(long, conflicts_with = "user")]
    pub key: Option<String>,
    /// Decide as this local user (their roles).
    #[arg(long)]
    pub user: Option<String>,
    /// Scopes the credential holds (narrowing its roles).
    #[arg(long, num_args = 1..)]
    pub scopes: Option<Vec<String>>,
    /// The tool to decide for.
    #[arg(long)]
    pub tool: String,
    /// The call's arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Decide as if the caller had claimed this task: under a task grant
    /// holding the task's tools that its roles may call.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every subcommand and every flag says what it is for in `--help`.
    fn undocumented(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} --{id}"));
            }
        }
        for sub in command.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_command_and_flag_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "gatehouse", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
