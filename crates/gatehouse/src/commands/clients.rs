use anyhow::bail;
use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::issue_client;
use gatehouse_store::ClientRecord;
use serde_json::json;

use crate::cli::{ClientCreateArgs, ClientsCommand};
use crate::commands::keys::{validate_name, validate_role, validate_scopes};
use crate::context::Context;
use crate::output;

fn client_json(client: &ClientRecord) -> serde_json::Value {
    json!({
        "client_id": client.id,
        "name": client.name,
        "tenant": client.tenant,
        "role": client.role,
        "scopes": client.scopes,
        "status": if client.revoked_at.is_some() { "revoked" } else { "active" },
        "created_at": client.created_at.to_rfc3339(),
        "revoked_at": client.revoked_at.map(|t| t.to_rfc3339()),
    })
}

async fn create(ctx: &Context, args: &ClientCreateArgs) -> anyhow::Result<()> {
    validate_name("name", &args.name)?;
    validate_name("tenant", &args.tenant)?;
    validate_role(&args.role)?;
    validate_scopes(&args.scopes)?;
    let store = ctx.open_store().await?;
    let pepper = ctx.pepper()?;
    let issued = issue_client(
        &pepper,
        &args.name,
        &args.tenant,
        &args.role,
        args.scopes.clone(),
        SystemClock.now(),
    )?;
    store.insert_client(&issued.record).await?;
    if args.json {
        let mut value = client_json(&issued.record);
        value["client_secret"] = json!(issued.secret);
        output::json(&value);
    } else {
        output::line(&format!(
            "Created OAuth client {} ({}, role {}, tenant {}).",
            issued.record.id, issued.record.name, issued.record.role, issued.record.tenant
        ));
        output::line("The client secret is shown only this once; store it now:");
        output::line("");
        output::line(&format!("  client_id:     {}", issued.record.id));
        output::line(&format!("  client_secret: {}", issued.secret));
        output::line("");
        output::line("Get an access token with the client-credentials grant:");
        output::line(&format!(
            "  curl -s -u '{}:<secret>' -d grant_type=client_credentials <public-url>/oauth/token",
            issued.record.id
        ));
    }
    Ok(())
}

pub async fn run(ctx: &Context, command: ClientsCommand) -> anyhow::Result<()> {
    match command {
        ClientsCommand::Create(args) => create(ctx, &args).await?,
        ClientsCommand::List(flag) => {
            let store = ctx.open_store().await?;
            let clients = store.list_clients().await?;
            if flag.json {
                output::json(&json!(clients.iter().map(client_json).collect::<Vec<_>>()));
            } else {
                let rows: Vec<Vec<String>> = clients
                    .iter()
                    .map(|c| {
                        let v = client_json(c);
                        vec![
                            c.id.clone(),
                            c.name.clone(),
                            c.tenant.clone(),
                            c.role.clone(),
                            v["status"].as_str().unwrap_or_default().to_string(),
                            c.created_at.to_rfc3339(),
                        ]
                    })
                    .collect();
                output::table(
                    &["CLIENT ID", "NAME", "TENANT", "ROLE", "STATUS", "CREATED"],
                    &rows,
                );
            }
        }
        ClientsCommand::Revoke { id, json } => {
            let store = ctx.open_store().await?;
            let now = SystemClock.now();
            if !store.revoke_client(&id, now).await? {
                bail!("no active client with id {id:?}");
            }
            if json.json {
                output::json(
                    &json!({"client_id": id, "status": "revoked", "revoked_at": now.to_rfc3339()}),
                );
            } else {
                output::line(&format!(
                    "Revoked client {id}. Its access tokens are refused from the next request on."
                ));
            }
        }
    }
    Ok(())
}
