use std::io::Read;

use anyhow::{Context as _, bail};
use serde_json::json;

use gatehouse_core::{Clock, SecretCipher, SystemClock};

use crate::cli::SecretsCommand;
use crate::commands::operator_audit::OperatorAction;
use crate::context::Context;
use crate::output;

const MAX_SECRET_BYTES: usize = 64 * 1024;

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
            // The servers' key: a new one made here would seal a secret
            // the servers could not open.
            let master = ctx.servers_master_key(store.as_ref()).await?;
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
