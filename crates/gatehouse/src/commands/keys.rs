use std::sync::Arc;

use anyhow::{Context as _, bail};
use gatehouse_authn::{IssuedApiKey, LockSubject, issue_api_key};
use gatehouse_authz::Policy;
use gatehouse_core::{Clock, SystemClock, Timestamp};
use gatehouse_store::{ApiKeyRecord, AuthLock, Store};
use serde_json::json;

use crate::cli::{KeyCreateArgs, KeysCommand};
use crate::commands::lifecycle::{Status, default_overlap};
use crate::commands::operator_audit::OperatorAction;
use crate::context::Context;
use crate::lifecycle::pass::api_key_subject;
use crate::lifecycle::policy::CredentialKind;
use crate::output;

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub fn validate_name(kind: &str, value: &str) -> anyhow::Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        bail!("{kind} {value:?}: use 1-64 characters from A-Z a-z 0-9 - _ . @");
    }
    Ok(())
}

/// Roles and scopes are checked against the policy in effect (the
/// configured file or the shipped default).
pub fn validate_role(policy: &Policy, role: &str) -> anyhow::Result<()> {
    if !policy.is_known_role(role) {
        let known: Vec<&str> = policy.roles().collect();
        bail!("unknown role {role:?} (known: {})", known.join(", "));
    }
    Ok(())
}

/// With tenants declared in the policy, a credential for any other tenant
/// would be refused on every request: refuse to create it.
pub fn validate_tenant(policy: &Policy, tenant: &str) -> anyhow::Result<()> {
    if policy.tenancy_enabled() && !policy.tenant_allowed(tenant) {
        bail!("tenant {tenant:?} is not declared in the policy ([tenants.{tenant}])");
    }
    Ok(())
}

pub fn validate_scopes(policy: &Policy, scopes: &Option<Vec<String>>) -> anyhow::Result<()> {
    let known = policy.scopes();
    for scope in scopes.iter().flatten() {
        let per_tool = scope
            .strip_prefix("tool:")
            .is_some_and(|t| policy.rule(t).is_some());
        if !known.contains(scope) && !per_tool {
            bail!(
                "unknown scope {scope:?} (known: {}, or tool:<tool name>)",
                known.join(", ")
            );
        }
    }
    Ok(())
}

pub fn ts_text(ts: Option<Timestamp>) -> String {
    ts.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into())
}

fn key_json(record: &ApiKeyRecord, now: Timestamp) -> serde_json::Value {
    key_json_with(record, now, None)
}

/// With its lifecycle status, also its age and what the policy does next.
fn key_json_with(
    record: &ApiKeyRecord,
    now: Timestamp,
    lifecycle: Option<&Status>,
) -> serde_json::Value {
    let status = if record.is_revoked() {
        "revoked"
    } else if record.is_expired(now) {
        "expired"
    } else if record.rotated_to.is_some() {
        "rotating"
    } else {
        "active"
    };
    let mut value = json!({
        "id": record.id,
        "name": record.name,
        "tenant": record.tenant,
        "role": record.role,
        "scopes": record.scopes,
        "owner": record.owner,
        "status": status,
        "created_at": record.created_at.to_rfc3339(),
        "expires_at": record.expires_at.map(|t| t.to_rfc3339()),
        "revoked_at": record.revoked_at.map(|t| t.to_rfc3339()),
        "last_used_at": record.last_used_at.map(|t| t.to_rfc3339()),
        "rotated_to": record.rotated_to,
    });
    if let Some(status) = lifecycle {
        value["lifecycle"] = status.json(now);
    }
    value
}

fn print_issued(issued: &IssuedApiKey, json: bool, now: Timestamp) {
    if json {
        let mut value = key_json(&issued.record, now);
        value["key"] = json!(issued.key);
        output::json(&value);
    } else {
        output::line(&format!(
            "Created key {} ({}, role {}, tenant {}).",
            issued.record.id, issued.record.name, issued.record.role, issued.record.tenant
        ));
        output::line("The key is shown only this once; store it now:");
        output::line("");
        output::line(&format!("  {}", issued.key));
    }
}

/// (kind, key id or address, the address a key is locked for) of a lock,
/// as `keys unlock` takes it back.
fn lock_target(subject: &str) -> (&'static str, String, Option<String>) {
    match LockSubject::parse(subject) {
        Some(LockSubject::Key { id, source }) => ("key", id, source),
        Some(LockSubject::Source(source)) => ("source", source, None),
        // Not written by Gatehouse; shown as stored.
        None => ("other", subject.to_string(), None),
    }
}

fn lock_json(lock: &AuthLock) -> serde_json::Value {
    let (kind, target, from) = lock_target(&lock.subject);
    json!({
        "subject": lock.subject,
        "kind": kind,
        "target": target,
        "from": from,
        "failures": lock.failures,
        "locked_until": lock.locked_until.to_rfc3339(),
    })
}

/// Clears the lock and failure count of a key id (from every source) or of
/// a source address. Nothing to clear is not an error: the state asked for
/// holds.
async fn unlock(
    ctx: &Context,
    id: Option<String>,
    source: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let subject = match (id, source) {
        (None, Some(address)) => LockSubject::source(&address)
            .with_context(|| format!("--source {address:?} is not an IP address"))?,
        (Some(id), None) => LockSubject::Key { id, source: None },
        _ => bail!("give either a key id or --source ADDRESS"),
    };
    let stored = subject.to_string();
    let store = ctx.open_store().await?;
    let cleared = store.clear_auth_lock(&stored).await?;
    let (kind, target, _) = lock_target(&stored);
    if cleared {
        OperatorAction {
            command: "keys/unlock",
            reason: "lock_cleared",
            subject: stored.clone(),
            tenant: None,
            detail: format!("lock and failure count of {kind} {target} cleared"),
        }
        .record(ctx, &store, SystemClock.now())
        .await?;
    }
    if json {
        output::json(&json!({
            "subject": stored,
            "kind": kind,
            "target": target,
            "cleared": cleared,
        }));
    } else if cleared {
        output::line(&format!(
            "Cleared the lock and failure count of {kind} {target}. \
             Servers accept it again within a second."
        ));
    } else {
        output::line(&format!(
            "Nothing to clear: {kind} {target} has no lock and no recorded failures."
        ));
    }
    Ok(())
}

async fn list_locks(ctx: &Context, now: Timestamp, json: bool) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let locks = store.auth_locks(now).await?;
    if json {
        output::json(&json!(locks.iter().map(lock_json).collect::<Vec<_>>()));
    } else if locks.is_empty() {
        output::line("Nothing is locked.");
    } else {
        let rows: Vec<Vec<String>> = locks
            .iter()
            .map(|lock| {
                let (kind, target, from) = lock_target(&lock.subject);
                vec![
                    kind.to_string(),
                    match from {
                        Some(from) => format!("{target} from {from}"),
                        None => target,
                    },
                    lock.failures.to_string(),
                    lock.locked_until.to_rfc3339(),
                ]
            })
            .collect();
        output::table(
            &["KIND", "KEY ID / ADDRESS", "FAILURES", "LOCKED UNTIL"],
            &rows,
        );
    }
    Ok(())
}

/// The audit record of a key issued.
pub fn key_created(record: &ApiKeyRecord) -> OperatorAction {
    OperatorAction {
        command: "keys/create",
        reason: "api_key_created",
        subject: record.id.clone(),
        tenant: Some(record.tenant.clone()),
        detail: format!(
            "API key {} ({}) issued: role {}, scopes {}, expires {}",
            record.id,
            record.name,
            record.role,
            record
                .scopes
                .as_ref()
                .map_or_else(|| "those of its role".to_string(), |s| s.join(" ")),
            record
                .expires_at
                .map_or_else(|| "never".to_string(), |t| t.to_rfc3339())
        ),
    }
}

/// The audit record of the signing key a first start makes (none signed).
pub fn first_signing_key(record: &gatehouse_store::SigningKeyRecord) -> OperatorAction {
    OperatorAction {
        command: "serve/first-start",
        reason: "signing_key_added",
        subject: record.kid.clone(),
        tenant: None,
        detail: format!("signing key {} made: no key signed yet", record.kid),
    }
}

/// Creates and stores a key. Shared with the first-run admin key.
pub async fn create_key(
    ctx: &Context,
    store: &Arc<dyn Store>,
    args: &KeyCreateArgs,
    now: Timestamp,
) -> anyhow::Result<IssuedApiKey> {
    validate_name("name", &args.name)?;
    validate_name("tenant", &args.tenant)?;
    if let Some(owner) = &args.owner {
        validate_name("owner", owner)?;
    }
    // An owner is a user's name, compared as user names are (in lower
    // case): `users disable` finds the keys it names.
    let owner = args
        .owner
        .as_deref()
        .map(gatehouse_oauth::normalize_username);
    let policy = crate::policy_file::load(ctx)?;
    validate_role(&policy, &args.role)?;
    validate_scopes(&policy, &args.scopes)?;
    let pepper = ctx.servers_pepper(store).await?;
    let expires_at = args.expires.map(|d| now.plus_millis(millis(d.into())));
    let issued = issue_api_key(
        &pepper,
        &args.name,
        &args.tenant,
        &args.role,
        args.scopes.clone(),
        owner,
        now,
        expires_at,
    )?;
    store.insert_api_key(&issued.record).await?;
    Ok(issued)
}

pub async fn run(ctx: &Context, command: KeysCommand) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match command {
        KeysCommand::Create(args) => {
            validate_tenant(&crate::policy_file::load(ctx)?, &args.tenant)?;
            let store = ctx.open_store().await?;
            let issued = create_key(ctx, &store, &args, now).await?;
            // Shown first: a key whose record cannot be written still
            // exists, and its holder must not lose it (the command fails).
            print_issued(&issued, args.json, now);
            key_created(&issued.record).record(ctx, &store, now).await?;
        }
        KeysCommand::List(flag) => {
            let store = ctx.open_store().await?;
            let keys = store.list_api_keys().await?;
            let policy = ctx.config.lifecycle.policy();
            let mut statuses = Vec::with_capacity(keys.len());
            for key in &keys {
                let subject = api_key_subject(key, now);
                statuses.push(Status::of(&store, subject, key.created_at, &policy, now).await?);
            }
            if flag.json {
                // Written key by key: as one JSON value, 100,000 keys took
                // about 1 GB.
                let mut array = output::JsonArray::start();
                for (key, status) in keys.iter().zip(&statuses) {
                    array.push(&key_json_with(key, now, Some(status)));
                }
                array.finish();
            } else {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .zip(&statuses)
                    .map(|(k, status)| {
                        let v = key_json(k, now);
                        let [age, next] = status.columns(now);
                        vec![
                            k.id.clone(),
                            k.name.clone(),
                            k.tenant.clone(),
                            k.role.clone(),
                            v["status"].as_str().unwrap_or_default().to_string(),
                            k.created_at.to_rfc3339(),
                            age,
                            ts_text(k.expires_at),
                            ts_text(k.last_used_at),
                            next,
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "ID",
                        "NAME",
                        "TENANT",
                        "ROLE",
                        "STATUS",
                        "CREATED",
                        "AGE",
                        "EXPIRES",
                        "LAST USED",
                        "NEXT (LIFECYCLE)",
                    ],
                    &rows,
                );
            }
        }
        KeysCommand::Revoke { id, json } => {
            let store = ctx.open_store().await?;
            let key = store.api_key(&id).await?;
            if !store.revoke_api_key(&id, now).await? {
                bail!("no active key with id {id:?}");
            }
            OperatorAction {
                command: "keys/revoke",
                reason: "api_key_revoked",
                subject: id.clone(),
                tenant: key.as_ref().map(|k| k.tenant.clone()),
                detail: format!(
                    "API key {id} ({}) revoked",
                    key.as_ref().map_or("?", |k| k.name.as_str())
                ),
            }
            .record(ctx, &store, now)
            .await?;
            if json.json {
                output::json(
                    &json!({"id": id, "status": "revoked", "revoked_at": now.to_rfc3339()}),
                );
            } else {
                output::line(&format!(
                    "Revoked key {id}. It is refused from the next request on."
                ));
            }
        }
        KeysCommand::Unlock { id, source, json } => unlock(ctx, id, source, json.json).await?,
        KeysCommand::Locks(flag) => list_locks(ctx, now, flag.json).await?,
        KeysCommand::RotateSigning {
            publish_ahead,
            json,
        } => {
            let store = ctx.open_store().await?;
            let master = ctx.servers_master_key(&*store).await?;
            let activates_at = now.plus_millis(millis(publish_ahead.into()));
            let record =
                gatehouse_oauth::add_signing_key(&store, &master, now, activates_at).await?;
            OperatorAction {
                command: "keys/rotate-signing",
                reason: "signing_key_added",
                subject: record.kid.clone(),
                tenant: None,
                detail: format!(
                    "signing key {} added: published now, signs from {}",
                    record.kid,
                    activates_at.to_rfc3339()
                ),
            }
            .record(ctx, &store, now)
            .await?;
            if json.json {
                output::json(&json!({
                    "kid": record.kid,
                    "published_at": now.to_rfc3339(),
                    "signs_from": activates_at.to_rfc3339(),
                }));
            } else {
                output::line(&format!(
                    "Added signing key {}. It is published now and signs new tokens from {}.",
                    record.kid,
                    activates_at.to_rfc3339()
                ));
                output::line(
                    "The current key stays published until the tokens it signed have expired.",
                );
            }
        }
        KeysCommand::ListSigning(flag) => {
            crate::commands::signing_keys::list(ctx, now, flag.json).await?
        }
        KeysCommand::RevokeSigning { kid, force, json } => {
            crate::commands::signing_keys::revoke(ctx, &kid, force, json.json, now).await?
        }
        KeysCommand::Rotate { id, overlap, json } => {
            let store = ctx.open_store().await?;
            let old = store
                .api_key(&id)
                .await?
                .with_context(|| format!("no key with id {id:?}"))?;
            let pepper = ctx.servers_pepper(&store).await?;
            let remaining = old.expires_at.map(|at| at.as_millis() - now.as_millis());
            let issued = issue_api_key(
                &pepper,
                &old.name,
                &old.tenant,
                &old.role,
                old.scopes.clone(),
                old.owner.clone(),
                now,
                // The new key keeps the old one's remaining lifetime, if any.
                remaining.map(|ms| now.plus_millis(ms.max(0))),
            )?;
            let overlap = match overlap {
                Some(overlap) => overlap.into(),
                None => default_overlap(
                    &ctx.config.lifecycle.policy(),
                    CredentialKind::ApiKey,
                    &old.tenant,
                ),
            };
            let old_valid_until = now.plus_millis(millis(overlap));
            if !store
                .rotate_api_key(&id, &issued.record, old_valid_until)
                .await?
            {
                bail!("key {id:?} is revoked or was already rotated");
            }
            if json.json {
                let mut value = key_json(&issued.record, now);
                value["key"] = serde_json::json!(issued.key);
                value["replaces"] = serde_json::json!(id);
                value["old_key_valid_until"] = serde_json::json!(old_valid_until.to_rfc3339());
                output::json(&value);
            } else {
                print_issued(&issued, false, now);
                output::line("");
                output::line(&format!(
                    "The old key {id} keeps working until {}.",
                    old_valid_until.to_rfc3339()
                ));
            }
            // After the new key is shown, as for `keys create`.
            OperatorAction {
                command: "keys/rotate",
                reason: "api_key_rotated",
                subject: id.clone(),
                tenant: Some(old.tenant.clone()),
                detail: format!(
                    "API key {id} ({}) replaced by {}; the old key works until {}",
                    old.name,
                    issued.record.id,
                    old_valid_until.to_rfc3339()
                ),
            }
            .record(ctx, &store, now)
            .await?;
        }
    }
    Ok(())
}
