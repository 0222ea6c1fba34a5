use anyhow::{Context as _, bail};
use gatehouse_core::{Clock, SystemClock, Timestamp};
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
use crate::commands::lifecycle::{Status, default_overlap};
use crate::commands::operator_audit::OperatorAction;
use crate::context::Context;
use crate::lifecycle::pass::client_subject;
use crate::lifecycle::policy::CredentialKind;
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
        "secret_issued_at": client.secret_hash.as_ref().map(|_| client.secret_issued_at().to_rfc3339()),
        "previous_secret_valid_until": client.previous_secret.as_ref().map(|p| p.valid_until.to_rfc3339()),
    })
}

/// `clients rotate-secret`: a new secret under the same client id; the
/// old one is accepted until the overlap ends.
async fn rotate_secret(
    ctx: &Context,
    id: &str,
    overlap: Option<std::time::Duration>,
    revoke_tokens: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let store = ctx.open_store().await?;
    let now = SystemClock.now();
    let client = store
        .client(id)
        .await?
        .filter(|c| c.revoked_at.is_none())
        .with_context(|| format!("no active client with id {id:?}"))?;
    let Some(current_hash) = client.secret_hash.clone() else {
        if client.signs_assertions() {
            bail!(
                "client {id} authenticates with private_key_jwt and has no secret; \
                 it rotates its keys itself (publish the new key in its JWKS first)"
            );
        }
        bail!("client {id} is public and has no secret to rotate");
    };
    let overlap = overlap.unwrap_or_else(|| {
        default_overlap(
            &ctx.config.lifecycle.policy(),
            CredentialKind::ClientSecret,
            &client.tenant,
        )
    });
    let old_valid_until = now.plus_millis(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
    // The client's own tokens are cut off at a whole second (as `iat` is)
    // one to two seconds ahead: an instance that read the old secret just
    // before the rotation committed may still be signing a token with it.
    // The new secret is shown only once the cut has passed, so no token
    // made with it falls under the cut.
    let cut = revoke_tokens.then(|| Timestamp::from_secs(now.as_secs() + 2));
    let new = gatehouse_oauth::new_client_secret(&ctx.servers_pepper(&store).await?)?;
    if !store
        .rotate_client_secret(id, &current_hash, &new.hash, now, old_valid_until, cut)
        .await?
    {
        bail!("client {id} was revoked or its secret rotated meanwhile; nothing changed");
    }
    if let Some(cut) = cut {
        let wait = cut.as_millis() - SystemClock.now().as_millis();
        tokio::time::sleep(std::time::Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        ))
        .await;
    }
    // A secret replaced by an earlier rotation whose overlap is still
    // running stops working now: say so, in the record and on screen.
    let dropped = client
        .previous_secret_hash(now)
        .and(client.previous_secret.as_ref().map(|p| p.valid_until));
    let action = OperatorAction {
        command: "clients/rotate-secret",
        reason: "client_secret_rotated",
        subject: id.to_string(),
        tenant: Some(client.tenant.clone()),
        detail: format!(
            "secret of OAuth client {id} ({}) rotated; the old secret works until {}{}{}",
            client.name,
            old_valid_until.to_rfc3339(),
            if dropped.is_some() {
                "; the secret replaced by the previous rotation stopped working"
            } else {
                ""
            },
            if let Some(cut) = cut {
                format!(
                    "; the tokens it obtained for itself before {} are revoked",
                    cut.to_rfc3339()
                )
            } else {
                String::new()
            }
        ),
    };
    if json_out {
        output::json(&json!({
            "client_id": id,
            "client_secret": new.secret,
            "secret_issued_at": now.to_rfc3339(),
            "old_secret_valid_until": old_valid_until.to_rfc3339(),
            "earlier_secret_ended": dropped.is_some(),
            "tokens_revoked_before": cut.map(|t| t.to_rfc3339()),
        }));
    } else {
        let old_ends = (old_valid_until > now).then_some(old_valid_until);
        print_rotated(id, &client.name, &new.secret, old_ends, dropped);
        if let Some(cut) = cut {
            output::line(&format!(
                "Every access token it obtained for itself before {} is refused from the next \
                 request on, on every instance (tokens people authorized for it stay).",
                cut.to_rfc3339()
            ));
        }
    }
    // After the new secret is shown: should its record fail, the secret
    // still works and its holder has it (the command fails).
    action.record(ctx, &store, now).await
}

fn print_rotated(
    id: &str,
    name: &str,
    secret: &str,
    old_ends: Option<Timestamp>,
    dropped: Option<Timestamp>,
) {
    output::line(&format!("New secret for OAuth client {id} ({name})."));
    output::line("");
    output::line(&format!("  client_secret: {secret}"));
    output::line("");
    output::line("The client secret is shown only this once; store it now.");
    output::line(&match old_ends {
        Some(at) => format!("The old secret keeps working until {}.", at.to_rfc3339()),
        None => "The old secret no longer works.".to_string(),
    });
    if let Some(until) = dropped {
        output::line(&format!(
            "The secret replaced by the previous rotation (valid until {}) stopped working now.",
            until.to_rfc3339()
        ));
    }
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
    let pepper = ctx.servers_pepper(&store).await?;
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
    // Shown first: should its record fail, the client still exists and
    // its secret must not be lost (the command fails).
    print_created(ctx, &issued, args.json);
    let record = &issued.record;
    OperatorAction {
        command: "clients/create",
        reason: "client_created",
        subject: record.id.clone(),
        tenant: Some(record.tenant.clone()),
        detail: format!(
            "OAuth client {} ({}) registered: {}, role {}, grants {}",
            record.id,
            record.name,
            record.auth_method,
            record.role,
            record.grant_types.join(" ")
        ),
    }
    .record(ctx, &store, record.created_at)
    .await
}

fn print_created(ctx: &Context, issued: &gatehouse_oauth::IssuedClient, json_out: bool) {
    let record = &issued.record;
    if json_out {
        let mut value = client_json(record);
        if let Some(secret) = &issued.secret {
            value["client_secret"] = json!(secret);
        }
        output::json(&value);
        return;
    }
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
                let issued = client.secret_issued_at();
                statuses.push(Status::of(&store, subject, issued, &policy, now).await?);
            }
            if flag.json {
                // Client by client, as `keys list`: open registration can
                // make many.
                let mut array = output::JsonArray::start();
                for (client, status) in clients.iter().zip(&statuses) {
                    let mut value = client_json(client);
                    value["lifecycle"] = status.json(now);
                    array.push(&value);
                }
                array.finish();
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
            let client = store.client(&id).await?;
            if !store.revoke_client(&id, now).await? {
                bail!("no active client with id {id:?}");
            }
            OperatorAction {
                command: "clients/revoke",
                reason: "client_revoked",
                subject: id.clone(),
                tenant: client.as_ref().map(|c| c.tenant.clone()),
                detail: format!(
                    "OAuth client {id} ({}) revoked",
                    client.as_ref().map_or("?", |c| c.name.as_str())
                ),
            }
            .record(ctx, &store, now)
            .await?;
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
        ClientsCommand::RotateSecret {
            id,
            overlap,
            revoke_tokens,
            json,
        } => {
            let overlap = match (revoke_tokens, overlap) {
                (true, _) => Some(std::time::Duration::ZERO),
                (false, overlap) => overlap.map(Into::into),
            };
            rotate_secret(ctx, &id, overlap, revoke_tokens, json.json).await?
        }
    }
    Ok(())
}
