//! RFC 7662 introspection: the same checks as the MCP endpoint, and an
//! answer only for the token's own client or a client allowed to introspect.

use serde_json::{Value, json};

use super::browser::token;
use super::harness::Server;
use super::oauth::token_request;

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const DEFAULT: &str = include_str!("../../../gatehouse-policy/src/default_policy.toml");

fn create_client(server: &Server, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["clients", "create", "--name", name, "--role", "reader"];
    args.extend_from_slice(extra);
    let v = server.cli_json(&args);
    (
        v["client_id"].as_str().unwrap().to_string(),
        v["client_secret"].as_str().unwrap().to_string(),
    )
}

async fn client_token(server: &Server, id: &str, secret: &str) -> String {
    let (status, _, body) = token_request(
        server,
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

async fn introspect(server: &Server, token: &str, client: (&str, &str)) -> Value {
    let response = server
        .http
        .post(format!("{}/oauth/introspect", server.base))
        .basic_auth(client.0, Some(client.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("token", token)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn introspection_refuses_a_task_token_whose_api_key_was_revoked() {
    let server = Server::start(None);
    let (introspector, secret) = create_client(&server, "rs", &["--introspect"]);
    let (key_id, key) = server.create_key("agent", "reader", &[]);
    let (status, body) = token(
        &server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &key),
            ("subject_token_type", ACCESS_TOKEN),
            ("task", "research"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let task_token = body["access_token"].as_str().unwrap().to_string();
    let answer = introspect(&server, &task_token, (&introspector, &secret)).await;
    assert_eq!(answer["active"], true, "{answer}");
    assert_eq!(answer["client_id"], key_id.as_str());

    server.cli_json(&["keys", "revoke", &key_id]);
    let (status, _) = server.rpc(Some(&task_token), "tools/list", json!({})).await;
    assert_eq!(status, 401, "the MCP endpoint refuses it");
    let answer = introspect(&server, &task_token, (&introspector, &secret)).await;
    assert_eq!(answer, json!({"active": false}), "introspection must agree");
}

/// A task token past its task's end is refused at `/mcp` at once (not
/// after the clock leeway); introspection said `active` for the leeway's
/// 30 s more, with an `exp` already past.
#[tokio::test]
async fn introspection_calls_a_task_token_inactive_at_its_tasks_end() {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "{DEFAULT}\n[tasks.brief]\ntools = [\"whoami\"]\nroles = [\"reader\"]\nmax_duration = \"2s\"\n"
    );
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (introspector, secret) = create_client(&server, "rs", &["--introspect"]);
    let (_, key) = server.create_key("agent", "reader", &[]);
    let (status, body) = token(
        &server,
        &[
            ("grant_type", EXCHANGE),
            ("subject_token", &key),
            ("subject_token_type", ACCESS_TOKEN),
            ("task", "brief"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let task_token = body["access_token"].as_str().unwrap().to_string();
    let expires_in = body["expires_in"].as_u64().unwrap();
    let answer = introspect(&server, &task_token, (&introspector, &secret)).await;
    assert_eq!(answer["active"], true, "{answer}");
    std::thread::sleep(std::time::Duration::from_millis(expires_in * 1000 + 1100));
    let (status, _) = server.rpc(Some(&task_token), "tools/list", json!({})).await;
    assert_eq!(status, 401, "the MCP endpoint refuses it");
    let answer = introspect(&server, &task_token, (&introspector, &secret)).await;
    assert_eq!(answer, json!({"active": false}), "introspection must agree");
}

#[tokio::test]
async fn only_the_tokens_client_or_an_introspection_client_learns_about_a_token() {
    let server = Server::start(None);
    let (a, a_secret) = create_client(&server, "a", &[]);
    let (b, b_secret) = create_client(&server, "b", &[]);
    let (rs, rs_secret) = create_client(&server, "rs", &["--introspect"]);
    let token = client_token(&server, &a, &a_secret).await;

    let answer = introspect(&server, &token, (&b, &b_secret)).await;
    assert_eq!(
        answer,
        json!({"active": false}),
        "another client learns nothing"
    );

    let own = introspect(&server, &token, (&a, &a_secret)).await;
    assert_eq!(own["active"], true, "{own}");
    assert_eq!(own["client_id"], a.as_str());

    let allowed = introspect(&server, &token, (&rs, &rs_secret)).await;
    assert_eq!(allowed["active"], true, "{allowed}");
    assert_eq!(allowed["client_id"], a.as_str());
    assert_eq!(allowed["roles"], json!(["reader"]));
    assert_eq!(allowed["tenant"], "default");

    // The permission covers the introspector's own tenant only.
    let (elsewhere, elsewhere_secret) =
        create_client(&server, "rs2", &["--introspect", "--tenant", "acme"]);
    let answer = introspect(&server, &token, (&elsewhere, &elsewhere_secret)).await;
    assert_eq!(
        answer,
        json!({"active": false}),
        "another tenant's introspector"
    );
    // API keys are not OAuth tokens: introspection is no oracle for them.
    let (_, key) = server.create_key("agent", "reader", &[]);
    let answer = introspect(&server, &key, (&rs, &rs_secret)).await;
    assert_eq!(answer, json!({"active": false}));
    // A public client cannot be given the permission.
    let out = server.cli(&[
        "clients",
        "create",
        "--name",
        "p",
        "--public",
        "--introspect",
    ]);
    assert!(!out.status.success());

    // The permission is on the record, and shown.
    let listed = server.cli_json(&["clients", "list"]);
    let introspect_of = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["client_id"] == id)
            .unwrap()["introspect"]
            .clone()
    };
    assert_eq!(introspect_of(&rs), json!(true));
    assert_eq!(introspect_of(&b), json!(false));
}

#[tokio::test]
async fn a_token_of_a_tenant_the_policy_no_longer_serves_is_inactive() {
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(&policy_path, DEFAULT).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let (id, secret) = create_client(&server, "a", &[]);
    let token = client_token(&server, &id, &secret).await;
    assert_eq!(
        introspect(&server, &token, (&id, &secret)).await["active"],
        true
    );
    // Tenancy switched on without "default": /mcp refuses the token...
    std::fs::write(&policy_path, format!("{DEFAULT}\n[tenants.acme]\n")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.rpc(Some(&token), "tools/list", json!({})).await.0 != 403 {
        assert!(std::time::Instant::now() < deadline, "policy not reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // ...and introspection agrees.
    assert_eq!(
        introspect(&server, &token, (&id, &secret)).await,
        json!({"active": false})
    );
}
