use anyhow::{Context as _, bail};
use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::{
    ClientSpec, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE,
    GRANT_REFRESH_TOKEN, PRIVATE_KEY_JWT, REGISTERED_BY_OPERATOR, issue_client, redirect_uri,
    validate_jwks, validate_jwks_uri,
};
use gatehouse_store::ClientRecord;
use serde_json::json;

use crate::cli::{ClientCreateArgs, ClientsCommand};
use crate::commands::keys::{
    ts_text, validate_name, validate_role, validate_scopes, validate_tenant,
};
use crate::commands::lifecycle::Status;
use crate::context::Context;
use crate::lifecycle::pass::client_subject;
use crate::output;

fn client_json(client: &ClientRecord) -> serde_json::Value {
    json!({
        "client_id": client.id,
        "name": client.name,
        "tenant": client.tenant,
        "role": client.role,
        "scopes": client.scopes,
        "type": if client.is_public() { "public" } else { "confidential" },
        "auth_method": client.auth_method,
        "jwks_uri": client.jwks_uri,
        "registered_by": client.registered_by,
        "redirect_uris": client.redirect_uris,
        "grant_types": client.grant_types,
        "introspect": client.may_introspect,
        "last_used_at": client.last_used_at.map(|t| t.to_rfc3339()),
        "status": if client.revoked_at.is_some() { "revoked" } else { "active" },
        "created_at": client.created_at.to_rfc3339(),
        "revoked_at": client.revoked_at.map(|t| t.to_rfc3339()),
    })
}

async fn create(ctx: &Context, args: &ClientCreateArgs) -> anyhow::Result<()> {
    validate_name("name", &args.name)?;
    validate_name("tenant", &args.tenant)?;
    let policy = crate::policy_file::load(ctx)?;
    validate_tenant(&policy, &args.tenant)?;
    validate_role(&policy, &args.role)?;
    validate_scopes(&policy, &args.scopes)?;
    for uri in &args.redirect_uris {
        if let Err(e) = redirect_uri::validate_registered(uri) {
            bail!("--redirect-uri {uri:?}: {e}");
        }
    }
    // Device and refresh grants suit every operator client; the code grant
    // needs somewhere to redirect to, and only a client that can keep a
    // secret acts on its own behalf.
    let mut grant_types = vec![
        GRANT_DEVICE_CODE.to_string(),
        GRANT_REFRESH_TOKEN.to_string(),
    ];
    if !args.redirect_uris.is_empty() {
        grant_types.insert(0, GRANT_AUTHORIZATION_CODE.to_string());
    }
    if !args.public {
        grant_types.push(GRANT_CLIENT_CREDENTIALS.to_string());
    }
    // Keys instead of a secret: checked now, so a typo is found here and
    // not at the client's first token request.
    let jwks = match &args.jwks {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --jwks {}", path.display()))?;
            validate_jwks(&text).map_err(|e| anyhow::anyhow!("--jwks {}: {e}", path.display()))?;
            Some(text)
        }
        None => None,
    };
    if let Some(uri) = &args.jwks_uri {
        validate_jwks_uri(uri, &ctx.config.oauth.client_metadata_dev_hosts)
            .map_err(|e| anyhow::anyhow!("--jwks-uri: {e}"))?;
    }
    let signs = jwks.is_some() || args.jwks_uri.is_some();
    let store = ctx.open_store().await?;
    let pepper = ctx.pepper()?;
    let issued = issue_client(
        &pepper,
        ClientSpec {
            name: args.name.clone(),
            tenant: args.tenant.clone(),
            role: args.role.clone(),
            scopes: args.scopes.clone(),
            redirect_uris: args.redirect_uris.clone(),
            grant_types,
            auth_method: if args.public {
                "none".into()
            } else if signs {
                PRIVATE_KEY_JWT.into()
            } else {
                "client_secret_basic".into()
            },
            registered_by: REGISTERED_BY_OPERATOR.into(),
            may_introspect: args.introspect,
            jwks,
            jwks_uri: args.jwks_uri.clone(),
        },
        SystemClock.now(),
    )?;
    store.insert_client(&issued.record).await?;
    if args.json {
        let mut value = client_json(&issued.record);
        if let Some(secret) = &issued.secret {
            value["client_secret"] = json!(secret);
        }
        output::json(&value);
        return Ok(());
    }
    let record = &issued.record;
    output::line(&format!(
        "Created OAuth client {} ({}, {}).",
        record.id,
        record.name,
        if record.is_public() {
            "public"
        } else {
            "confidential"
        }
    ));
    output::line("");
    output::line(&format!("  client_id:     {}", record.id));
    if let Some(secret) = &issued.secret {
        output::line(&format!("  client_secret: {secret}"));
        output::line("");
        output::line("The client secret is shown only this once; store it now.");
        output::line(&format!(
            "Machine tokens (client credentials, role {}, tenant {}):",
            record.role, record.tenant
        ));
        output::line(&format!(
            "  curl -s -u '{}:<secret>' -d grant_type=client_credentials {}/oauth/token",
            record.id,
            ctx.public_origin()
        ));
    }
    if record.signs_assertions() {
        output::line("");
        output::line(
            "It authenticates with private_key_jwt: a JWT signed with one of its keys, with",
        );
        output::line(&format!(
            "iss = sub = {}, aud = {}, a unique jti and exp at most 5 minutes ahead, sent as",
            record.id,
            ctx.public_origin()
        ));
        output::line(&format!(
            "  curl -s -d grant_type=client_credentials -d client_assertion_type={} \\",
            gatehouse_oauth::CLIENT_ASSERTION_TYPE
        ));
        output::line(&format!(
            "       -d client_assertion=<jwt> {}/oauth/token",
            ctx.public_origin()
        ));
    }
    if record.may_introspect {
        output::line(&format!(
            "It may introspect the tokens of every client of tenant {} at /oauth/introspect.",
            record.tenant
        ));
    }
    if !record.redirect_uris.is_empty() {
        output::line(&format!(
            "Users sign in at {}/authorize; redirect URIs: {}",
            ctx.public_origin(),
            record.redirect_uris.join(", ")
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
            let policy = ctx.config.lifecycle.policy();
            let now = SystemClock.now();
            let mut statuses = Vec::with_capacity(clients.len());
            for client in &clients {
                let subject = client_subject(client);
                statuses.push(Status::of(&store, subject, client.created_at, &policy, now).await?);
            }
            if flag.json {
                output::json(&json!(
                    clients
                        .iter()
                        .zip(&statuses)
                        .map(|(c, status)| {
                            let mut value = client_json(c);
                            value["lifecycle"] = status.json(now);
                            value
                        })
                        .collect::<Vec<_>>()
                ));
            } else {
                let rows: Vec<Vec<String>> = clients
                    .iter()
                    .zip(&statuses)
                    .map(|(c, status)| {
                        let v = client_json(c);
                        let [age, next] = status.columns(now);
                        vec![
                            c.id.clone(),
                            c.name.clone(),
                            c.tenant.clone(),
                            c.role.clone(),
                            v["status"].as_str().unwrap_or_default().to_string(),
                            if c.may_introspect { "yes" } else { "no" }.to_string(),
                            c.created_at.to_rfc3339(),
                            age,
                            ts_text(c.last_used_at),
                            next,
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "CLIENT ID",
                        "NAME",
                        "TENANT",
                        "ROLE",
                        "STATUS",
                        "INTROSPECT",
                        "CREATED",
                        "AGE",
                        "LAST USED",
                        "NEXT (LIFECYCLE)",
                    ],
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
