//! The admin HTTP API (`/admin/...`) behind gate 1 and its own gate: only
//! an admin of its tenant, outside any task grant, and, for a credential
//! narrowed by scopes, one holding `tools:admin`. Every admin request,
//! admitted or refused, is an audit record with its reason.

use serde_json::{Value, json};

use super::harness::Server;

const CHECK: &str = "/admin/policy/check";

/// POSTs a policy question; returns (status, `WWW-Authenticate`, body).
pub(super) async fn ask(server: &Server, key: &str, body: Value) -> (u16, Option<String>, Value) {
    let response = server
        .http
        .post(format!("{}{CHECK}", server.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (status, challenge, response.json().await.unwrap())
}

fn question() -> Value {
    json!({"roles": ["reader"], "tool": "whoami"})
}

/// The admin API's records for `key_id`, oldest first.
fn records(server: &Server, key_id: &str) -> Vec<Value> {
    server
        .audit(&["--kind", "tool_decision", "--tool", CHECK])
        .into_iter()
        .filter(|r| r["credential"] == key_id)
        .collect()
}

#[tokio::test]
async fn a_scope_narrowed_admin_key_is_refused_at_the_admin_api_and_both_are_audited() {
    let server = Server::start(None);
    let (narrow_id, narrow) = server.create_key("ops-read", "admin", &["--scopes", "tools:read"]);
    let (scoped_id, scoped) = server.create_key("ops-admin", "admin", &["--scopes", "tools:admin"]);
    let (plain_id, plain) = server.create_key("ops", "admin", &[]);

    // An admin key narrowed to tools:read is not an admin credential here:
    // 403 insufficient_scope, naming the scope to ask for (body and challenge).
    let (status, challenge, body) = ask(&server, &narrow, question()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(body["scope"], "tools:admin");
    let challenge = challenge.expect("a WWW-Authenticate challenge");
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"tools:admin\""), "{challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    // Holding tools:admin, or no scopes at all, it may ask.
    for key in [&scoped, &plain] {
        let (status, _, body) = ask(&server, key, question()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decision"], "allow");
    }

    // Refused and admitted requests alike are audited, with the path.
    let refused = records(&server, &narrow_id);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["outcome"], "denied");
    assert_eq!(refused[0]["decision"], "deny");
    assert_eq!(refused[0]["reason"], "insufficient_scope");
    for id in [&scoped_id, &plain_id] {
        let admitted = records(&server, id);
        assert_eq!(admitted.len(), 1, "{admitted:?}");
        assert_eq!(admitted[0]["outcome"], "success");
        assert_eq!(admitted[0]["decision"], "allow");
        assert_eq!(admitted[0]["reason"], "admin");
    }
}

#[tokio::test]
async fn refusals_of_the_admin_api_are_audited_with_their_reason() {
    let server = Server::start(None);
    let (reader_id, reader) = server.create_key("agent", "reader", &[]);
    let (admin_id, admin) = server.create_key("ops", "admin", &[]);

    // Not an admin.
    let (status, _, body) = ask(&server, &reader, question()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["reason"], "not_admin");
    // An admin asking about another tenant.
    let mut other = question();
    other["tenant"] = json!("globex");
    let (status, _, body) = ask(&server, &admin, other).await;
    assert_eq!(status, 403, "{body}");

    let refused = records(&server, &reader_id);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (
            refused[0]["decision"].as_str(),
            refused[0]["reason"].as_str()
        ),
        (Some("deny"), Some("not_admin"))
    );
    let refused = records(&server, &admin_id);
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (
            refused[0]["decision"].as_str(),
            refused[0]["reason"].as_str()
        ),
        (Some("deny"), Some("other_tenant"))
    );
    assert_eq!(refused[0]["outcome"], "denied");
}
