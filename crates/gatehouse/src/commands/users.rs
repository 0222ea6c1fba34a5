use std::io::BufRead;

use anyhow::{Context as _, bail};
use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_oauth::{PasswordHasher, check_policy, generate_password, normalize_username};
use gatehouse_store::{Store, UserRecord};
use serde_json::json;

use crate::cli::{UserAddArgs, UsersCommand};
use crate::commands::keys::{validate_name, validate_role, validate_tenant};
use crate::commands::operator_audit::OperatorAction;
use crate::context::Context;
use crate::output;

fn user_json(user: &UserRecord) -> serde_json::Value {
    json!({
        "username": user.username,
        "tenant": user.tenant,
        "roles": user.roles,
        "status": if user.disabled_at.is_some() { "disabled" } else { "active" },
        "created_at": user.created_at.to_rfc3339(),
        "disabled_at": user.disabled_at.map(|t| t.to_rfc3339()),
    })
}

/// The password from standard input, or a generated one (returned so it
/// can be shown once).
fn password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        check_policy(&password).map_err(|e| anyhow::anyhow!("password: {e}"))?;
        Ok((password, false))
    } else {
        Ok((generate_password()?, true))
    }
}

async fn hash(password: &str) -> anyhow::Result<String> {
    Ok(PasswordHasher::new(1)?.hash(password).await?)
}

fn validate_username(name: &str) -> anyhow::Result<String> {
    let normalized = normalize_username(name);
    validate_name("username", &normalized)?;
    Ok(normalized)
}

/// The audit record of a user added.
pub fn user_added(user: &UserRecord) -> OperatorAction {
    OperatorAction {
        command: "users/add",
        reason: "user_added",
        subject: user.username.clone(),
        tenant: Some(user.tenant.clone()),
        detail: format!(
            "user {} added: roles {}",
            user.username,
            user.roles.join(", ")
        ),
    }
}

/// A change to an existing user, under the user's tenant (so that
/// `audit query --tenant` finds a tenant's password resets and disables).
async fn user_changed(
    store: &dyn Store,
    command: &'static str,
    reason: &'static str,
    username: &str,
    detail: String,
) -> anyhow::Result<OperatorAction> {
    let tenant = store.user(username).await?.map(|user| user.tenant);
    Ok(OperatorAction {
        command,
        reason,
        subject: username.to_string(),
        tenant,
        detail,
    })
}

/// Creates a user; shared with the first start, which creates `admin`.
pub async fn create_user(
    store: &dyn Store,
    username: &str,
    tenant: &str,
    roles: &[String],
    password: &str,
    now: Timestamp,
) -> anyhow::Result<UserRecord> {
    let user = UserRecord {
        username: username.to_string(),
        tenant: tenant.to_string(),
        roles: roles.to_vec(),
        password_hash: hash(password).await?,
        created_at: now,
        disabled_at: None,
    };
    match store.insert_user(&user).await {
        Ok(()) => Ok(user),
        Err(gatehouse_store::StoreError::Conflict) => bail!("user {username:?} already exists"),
        Err(e) => Err(e.into()),
    }
}

async fn add(ctx: &Context, args: &UserAddArgs) -> anyhow::Result<()> {
    let username = validate_username(&args.username)?;
    validate_name("tenant", &args.tenant)?;
    let policy = crate::policy_file::load(ctx)?;
    validate_tenant(&policy, &args.tenant)?;
    for role in &args.roles {
        validate_role(&policy, role)?;
    }
    let (password, generated) = password(args.password_stdin)?;
    let store = ctx.open_store().await?;
    let now = SystemClock.now();
    let user = create_user(
        store.as_ref(),
        &username,
        &args.tenant,
        &args.roles,
        &password,
        now,
    )
    .await?;
    if args.json {
        let mut value = user_json(&user);
        if generated {
            value["password"] = json!(password);
        }
        output::json(&value);
    } else {
        output::line(&format!(
            "Added user {} (roles {}, tenant {}).",
            user.username,
            user.roles.join(", "),
            user.tenant
        ));
        if generated {
            output::line(&format!("  password: {password}"));
            output::line("The password is shown only this once.");
        }
    }
    // After the password is shown: should the record fail, the user
    // exists and the password must not be lost (the command fails).
    user_added(&user).record(ctx, &store, now).await
}

pub async fn run(ctx: &Context, command: UsersCommand) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let now = SystemClock.now();
    match command {
        UsersCommand::Add(args) => add(ctx, &args).await?,
        UsersCommand::List(flag) => {
            let users = store.list_users().await?;
            if flag.json {
                output::json(&json!(users.iter().map(user_json).collect::<Vec<_>>()));
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.username.clone(),
                            u.tenant.clone(),
                            u.roles.join(","),
                            if u.disabled_at.is_some() {
                                "disabled".into()
                            } else {
                                "active".into()
                            },
                            u.created_at.to_rfc3339(),
                        ]
                    })
                    .collect();
                output::table(&["USERNAME", "TENANT", "ROLES", "STATUS", "CREATED"], &rows);
            }
        }
        UsersCommand::Disable { username, json } => {
            let username = normalize_username(&username);
            if !store.disable_user(&username, now).await? {
                bail!("no active user {username:?}");
            }
            user_changed(
                store.as_ref(),
                "users/disable",
                "user_disabled",
                &username,
                format!(
                    "user {username} disabled: sessions ended, authorized tokens and the API \
                     keys they own revoked"
                ),
            )
            .await?
            .record(ctx, &store, now)
            .await?;
            if json.json {
                output::json(&json!({"username": username, "status": "disabled"}));
            } else {
                output::line(&format!(
                    "Disabled {username}: sessions ended, authorized tokens and the API keys \
                     they own (`keys create --owner {username}`) revoked. \
                     `gatehouse users enable {username}` lets them sign in again."
                ));
            }
        }
        UsersCommand::Enable { username, json } => {
            let username = normalize_username(&username);
            if !store.enable_user(&username).await? {
                bail!("no disabled user {username:?}");
            }
            user_changed(
                store.as_ref(),
                "users/enable",
                "user_enabled",
                &username,
                format!("user {username} enabled"),
            )
            .await?
            .record(ctx, &store, now)
            .await?;
            if json.json {
                output::json(&json!({"username": username, "status": "active"}));
            } else {
                output::line(&format!(
                    "Enabled {username}: they may sign in again. Tokens revoked when they were \
                     disabled stay revoked."
                ));
            }
        }
        UsersCommand::Passwd {
            username,
            password_stdin,
            keep_grants,
            json,
        } => {
            let username = normalize_username(&username);
            let (password, generated) = password(password_stdin)?;
            let hash = hash(&password).await?;
            if !store
                .change_user_password(&username, &hash, !keep_grants, now)
                .await?
            {
                bail!("no user {username:?}");
            }
            if json.json {
                let mut value = json!({
                    "username": username,
                    "sessions_ended": true,
                    "grants_revoked": !keep_grants,
                });
                if generated {
                    value["password"] = json!(password);
                }
                output::json(&value);
            } else {
                output::line(&format!(
                    "Password of {username} changed; their browser sessions ended."
                ));
                output::line(if keep_grants {
                    "Tokens they authorized were kept (--keep-grants)."
                } else {
                    "Every token they authorized was revoked; their clients sign in again."
                });
                if generated {
                    output::line(&format!("  password: {password}"));
                }
            }
            user_changed(
                store.as_ref(),
                "users/passwd",
                "user_password_changed",
                &username,
                format!(
                    "password of {username} changed; sessions ended; authorized tokens {}",
                    if keep_grants { "kept" } else { "revoked" }
                ),
            )
            .await?
            .record(ctx, &store, now)
            .await?;
        }
        UsersCommand::Unlock { username, json } => {
            let username = normalize_username(&username);
            store.clear_login_failures(&username).await?;
            user_changed(
                store.as_ref(),
                "users/unlock",
                "user_logins_cleared",
                &username,
                format!("failed logins and sign-in locks of {username} cleared"),
            )
            .await?
            .record(ctx, &store, now)
            .await?;
            if json.json {
                output::json(&json!({"username": username, "unlocked": true}));
            } else {
                output::line(&format!(
                    "Cleared failed logins and sign-in locks of {username}, from every address."
                ));
            }
        }
    }
    Ok(())
}
