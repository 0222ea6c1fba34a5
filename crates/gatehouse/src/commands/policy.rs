use std::process::ExitCode;

use anyhow::{Context as _, bail};
use gatehouse_authn::parse_api_key;
use gatehouse_authz::{DEFAULT_POLICY_TOML, Policy};
use gatehouse_core::{
    Clock, CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, SystemClock,
};
use serde_json::{Value, json};

use crate::cli::{PolicyCheckArgs, PolicyCommand};
use crate::context::Context;
use crate::output;
use crate::policy_file::{load, policy_path};

/// Exit status of `policy check` when the call would need a human's approval.
pub const EXIT_APPROVAL: u8 = 3;
/// Exit status of `policy check` when the call would be denied.
pub const EXIT_DENY: u8 = 4;

/// Runs a policy command. `policy check` exits 0 for allow, `EXIT_DENY` for
/// deny and `EXIT_APPROVAL` for approval, so scripts can branch on it (1 stays
/// "the command failed", 2 "bad command line").
pub async fn run(ctx: &Context, command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Show => {
            let text = match policy_path(ctx) {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => DEFAULT_POLICY_TOML.to_string(),
            };
            output::line(text.trim_end());
        }
        PolicyCommand::Validate { file, json } => {
            let path = file
                .or_else(|| policy_path(ctx))
                .context("no policy file given and none configured (policy.file)")?;
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let checked = Policy::from_toml(&text)
                .map_err(anyhow::Error::msg)
                .and_then(|policy| {
                    crate::policy_file::check_against_config(&policy, &ctx.config)?;
                    Ok(policy)
                });
            match checked {
                Ok(policy) => {
                    let tools = policy.scopes().len();
                    if json.json {
                        output::json(&json!({"valid": true, "file": path.display().to_string()}));
                    } else {
                        output::line(&format!(
                            "{}: valid ({tools} scopes, {} tasks)",
                            path.display(),
                            policy.tasks().count()
                        ));
                    }
                }
                Err(e) => bail!("{}: {e}", path.display()),
            }
        }
        PolicyCommand::Check(args) => return check(ctx, &args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// The principal to decide for: explicit roles, or a stored key or user.
async fn principal(ctx: &Context, args: &PolicyCheckArgs) -> anyhow::Result<Principal> {
    let mut principal = Principal {
        tenant: DEFAULT_TENANT.to_string(),
        human: None,
        agent: "policy-check".to_string(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "policy-check".to_string(),
        },
        roles: args.roles.clone(),
        scopes: args.scopes.clone(),
        expires_at: None,
        task: None,
        issuer: None,
    };
    if let Some(given) = &args.key {
        // An id, or a whole key pasted by mistake: only its id is used, so
        // the secret is never echoed in an error (or a terminal's log).
        let id = parse_api_key(given).map_or(given.as_str(), |parts| parts.id);
        let store = ctx.open_store().await?;
        let key = store
            .api_key(id)
            .await?
            .with_context(|| format!("no API key {id:?}"))?;
        principal.tenant = key.tenant;
        principal.roles = vec![key.role];
        principal.agent = key.id.clone();
        principal.human = key.owner;
        principal.credential.id = key.id;
        if principal.scopes.is_none() {
            principal.scopes = key.scopes;
        }
    } else if let Some(name) = &args.user {
        let store = ctx.open_store().await?;
        let user = store
            .user(&gatehouse_oauth::normalize_username(name))
            .await?
            .with_context(|| format!("no user {name:?}"))?;
        principal.tenant = user.tenant;
        principal.roles = user.roles;
        principal.human = Some(user.username);
    } else if principal.roles.is_empty() {
        bail!("name the caller: --role ROLE, --key ID or --user NAME");
    }
    Ok(principal)
}

async fn check(ctx: &Context, args: &PolicyCheckArgs) -> anyhow::Result<ExitCode> {
    let policy = load(ctx)?;
    let arguments: Value = serde_json::from_str(&args.args).context("--args must be JSON")?;
    if !arguments.is_object() {
        bail!("--args must be a JSON object");
    }
    let principal = principal(ctx, args).await?;
    // Decided under the grant the caller would get for --task, as the
    // gateway would; the HTTP policy check gives the same answer.
    // Routed as the gateway routes calls: built-in tools first, then the
    // configured upstreams' prefixes.
    let upstream = if gatehouse_tools::BuiltinTools::definition(&args.tool).is_some() {
        None
    } else {
        gatehouse_upstream::route_by_config(ctx.config.upstreams.iter(), &args.tool)
    };
    let check = policy.check_routed(
        principal,
        &args.tool,
        upstream,
        &arguments,
        args.task.as_deref(),
        SystemClock.now(),
    );
    if args.json {
        output::json(&serde_json::to_value(&check)?);
    } else {
        output::line(&format!(
            "{}: {}: {}",
            check.decision, check.reason, check.rule
        ));
        if let (Some(task), Some(tools)) = (&check.task, &check.task_tools) {
            output::line(&format!("task {task} grants: {}", tools.join(", ")));
        }
    }
    Ok(match check.decision {
        "allow" => ExitCode::SUCCESS,
        "approval" => ExitCode::from(EXIT_APPROVAL),
        _ => ExitCode::from(EXIT_DENY),
    })
}
