use std::io::Read;

use anyhow::{Context as _, bail};
use serde_json::json;

use gatehouse_core::{Clock, SecretCipher, SystemClock};
use gatehouse_oauth::MasterKey;
use gatehouse_store::Store;

use crate::cli::SecretsCommand;
use crate::commands::operator_audit::OperatorAction;
use crate::context::Context;
use crate::output;

const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The master key to seal with, which must be the servers'. A shell without
/// the servers' `GATEHOUSE_MASTER_KEY` would otherwise make a new key file
/// and seal with it, and the servers could not open the secret. So a new
/// key file is made only while nothing sealed is stored yet; otherwise the
/// key must be there and open what is stored (a signing key, or another
/// secret of the tenant).
async fn sealing_key(ctx: &Context, store: &dyn Store, tenant: &str) -> anyhow::Result<MasterKey> {
    let signing_keys = store.signing_keys().await?;
    let mut secrets = Vec::new();
    for name in store.secret_names(tenant).await? {
        if let Some(stored) = store.secret(tenant, &name).await? {
            secrets.push((name, stored));
        }
    }
    if signing_keys.is_empty() && secrets.is_empty() {
        // Nothing of this tenant's: the rest of the store decides (another
        // tenant's secrets sealed with the servers' key).
        return ctx.servers_master_key(store).await;
    }
    let master = ctx
        .existing_master_key()
        .context("keys or secrets sealed under a master key are already stored, so the servers' master key is needed")?;
    let opens_a_signing_key = signing_keys.iter().any(|k| master.opens(k));
    let opens_a_secret = secrets.iter().any(|(name, stored)| {
        stored.starts_with(gatehouse_core::SEALED_PREFIX)
            && SecretCipher::open(&master, tenant, name, stored).is_ok()
    });
    if !opens_a_signing_key && !opens_a_secret {
        bail!(
            "this master key opens none of the keys and secrets already stored, so the servers \
             could not open a secret sealed with it: run this command with the servers' master key \
             (GATEHOUSE_MASTER_KEY, or the configured oauth.master_key_env or master_key_file)"
        );
    }
    Ok(master)
}

pub async fn run(ctx: &Context, command: SecretsCommand) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    match command {
        SecretsCommand::Set { name, tenant } => {
            let mut value = String::new();
            std::io::stdin()
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_string(&mut value)
                .context("cannot read the secret from standard input")?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() || value.len() > MAX_SECRET_BYTES {
                bail!("the secret must be 1 to {MAX_SECRET_BYTES} bytes, read from standard input");
            }
            // Sealed with the master key: the database never holds the value.
            let master = sealing_key(ctx, store.as_ref(), &tenant).await?;
            let sealed = SecretCipher::seal(&master, &tenant, &name, value)
                .map_err(|e| anyhow::anyhow!("cannot seal the secret: {e}"))?;
            store.put_secret(&tenant, &name, &sealed).await?;
            OperatorAction {
                command: "secrets/set",
                reason: "tenant_secret_stored",
                subject: name.clone(),
                tenant: Some(tenant.clone()),
                detail: format!("secret {name:?} of tenant {tenant:?} stored"),
            }
            .record(ctx, &store, SystemClock.now())
            .await?;
            output::line(&format!("Stored secret {name:?} for tenant {tenant:?}."));
        }
        SecretsCommand::List { tenant, json } => {
            let names = store.secret_names(&tenant).await?;
            if json {
                output::json(&json!({"tenant": tenant, "names": names}));
            } else {
                for name in names {
                    output::line(&output::escape(&name));
                }
            }
        }
        SecretsCommand::Delete { name, tenant } => {
            if !store.delete_secret(&tenant, &name).await? {
                bail!("no secret {name:?} for tenant {tenant:?}");
            }
            OperatorAction {
                command: "secrets/delete",
                reason: "tenant_secret_deleted",
                subject: name.clone(),
                tenant: Some(tenant.clone()),
                detail: format!("secret {name:?} of tenant {tenant:?} deleted"),
            }
            .record(ctx, &store, SystemClock.now())
            .await?;
            output::line(&format!("Deleted secret {name:?} of tenant {tenant:?}."));
        }
    }
    Ok(())
}
