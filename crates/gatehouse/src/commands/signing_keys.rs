//! `gatehouse keys list-signing|revoke-signing`: the authorization server's
//! token-signing keys. (`keys rotate-signing` adds one; see `keys.rs`.)

use anyhow::{Context as _, bail};
use gatehouse_authn::REPLACED_KEY_TRUST_MS;
use gatehouse_core::Timestamp;
use gatehouse_store::{ScheduledKey, SigningKeyState, signing_schedule};
use serde_json::json;

use crate::commands::keys::ts_text;
use crate::commands::operator_audit::{OperatorAction, record_all};
use crate::context::Context;
use crate::lifecycle::plan::{Subject, signing_key_rotation};
use crate::lifecycle::policy::{CredentialKind, LifecyclePolicy};
use crate::output;

/// The tool name of the audit records written here.
const AUDIT_TOOL: &str = "keys/revoke-signing";

fn key_json(key: &ScheduledKey<'_>) -> serde_json::Value {
    let ts = |t: Option<Timestamp>| t.map(|t| t.to_rfc3339());
    json!({
        "kid": key.record.kid,
        "state": key.state.as_str(),
        "created_at": key.record.created_at.to_rfc3339(),
        "signs_from": key.record.activates_at.to_rfc3339(),
        "replaced_at": ts(key.replaced_at),
        "retires_at": ts(key.retires_at),
        "revoked_at": ts(key.record.revoked_at),
    })
}

/// When the lifecycle replaces the key that signs now (its successor is
/// published then), for the listing; `None` for every other key.
fn lifecycle_rotation(
    key: &ScheduledKey<'_>,
    has_successor: bool,
    policy: &LifecyclePolicy,
) -> Option<Timestamp> {
    if key.state != SigningKeyState::Active {
        return None;
    }
    let subject = Subject {
        kind: CredentialKind::SigningKey,
        id: key.record.kid.clone(),
        tenant: None,
        human: None,
        created_at: key.record.created_at,
        last_used_at: None,
    };
    signing_key_rotation(&subject, has_successor, &policy.signing_keys).map(|(at, _)| at)
}

pub async fn list(ctx: &Context, now: Timestamp, json_out: bool) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let records = store.signing_keys().await?;
    let schedule = signing_schedule(&records, now, REPLACED_KEY_TRUST_MS);
    let policy = ctx.config.lifecycle.policy();
    let has_successor = schedule
        .keys
        .iter()
        .any(|k| k.state == SigningKeyState::Next);
    let rotation = |k: &ScheduledKey<'_>| lifecycle_rotation(k, has_successor, &policy);
    if json_out {
        output::json(&json!(
            schedule
                .keys
                .iter()
                .map(|k| {
                    let mut value = key_json(k);
                    value["lifecycle_rotation_at"] = json!(rotation(k).map(|t| t.to_rfc3339()));
                    value
                })
                .collect::<Vec<_>>()
        ));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = schedule
        .keys
        .iter()
        .map(|k| {
            vec![
                k.record.kid.clone(),
                k.state.as_str().to_string(),
                k.record.activates_at.to_rfc3339(),
                ts_text(k.replaced_at),
                ts_text(k.retires_at),
                ts_text(k.record.revoked_at),
                ts_text(rotation(k)),
            ]
        })
        .collect();
    output::table(
        &[
            "KID",
            "STATE",
            "SIGNS FROM",
            "REPLACED AT",
            "RETIRES AT",
            "REVOKED AT",
            "LIFECYCLE ROTATES AT",
        ],
        &rows,
    );
    Ok(())
}

/// Withdraws a signing key. The key that signs now is withdrawn only with
/// `force`, after a replacement that signs at once has been added: a
/// replaced key never signs again, so revoking the signer alone would leave
/// the authorization server unable to issue tokens.
pub async fn revoke(
    ctx: &Context,
    kid: &str,
    force: bool,
    json_out: bool,
    now: Timestamp,
) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let records = store.signing_keys().await?;
    let schedule = signing_schedule(&records, now, REPLACED_KEY_TRUST_MS);
    let key = schedule
        .keys
        .iter()
        .find(|k| k.record.kid == kid)
        .with_context(|| {
            format!("no signing key with kid {kid:?} (see `gatehouse keys list-signing`)")
        })?;
    if key.state == SigningKeyState::Revoked {
        bail!("signing key {kid} is already revoked");
    }
    let mut replacement = None;
    if key.state == SigningKeyState::Active {
        if !force {
            bail!(
                "signing key {kid} is the key that signs now; add its successor first \
                 (`gatehouse keys rotate-signing --publish-ahead 0s`), or pass --force to do both"
            );
        }
        let master = ctx.servers_master_key(&*store).await?;
        replacement = Some(gatehouse_oauth::add_signing_key(&store, &master, now, now).await?);
    }
    if !store.revoke_signing_key(kid, now).await? {
        bail!("signing key {kid} was revoked meanwhile");
    }

    let mut changes = Vec::new();
    if let Some(new) = &replacement {
        changes.push(OperatorAction {
            command: AUDIT_TOOL,
            reason: "signing_key_added",
            subject: new.kid.clone(),
            tenant: None,
            detail: format!(
                "signing key {} added: signs from now, replacing {kid}",
                new.kid
            ),
        });
    }
    changes.push(OperatorAction {
        command: AUDIT_TOOL,
        reason: "signing_key_revoked",
        subject: kid.to_string(),
        tenant: None,
        detail: format!("signing key {kid} revoked: its tokens are refused and it leaves the JWKS"),
    });
    record_all(ctx, &store, &changes, now).await?;

    let replaced_by = replacement.as_ref().map(|r| r.kid.clone());
    if json_out {
        output::json(&json!({
            "kid": kid,
            "state": SigningKeyState::Revoked.as_str(),
            "revoked_at": now.to_rfc3339(),
            "replaced_by": replaced_by,
        }));
        return Ok(());
    }
    if let Some(new) = &replaced_by {
        output::line(&format!(
            "Added signing key {new}; it signs new tokens from now on."
        ));
    }
    output::line(&format!(
        "Revoked signing key {kid}. Tokens it signed are refused from the next request on, \
         and it is no longer published in the JWKS."
    ));
    Ok(())
}
