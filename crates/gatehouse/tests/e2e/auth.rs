//! Gate 1 over HTTP: challenges, metadata, refused credential forms.

use serde_json::json;

use super::harness::Server;

#[tokio::test]
async fn no_credential_gets_401_with_resource_metadata_and_no_error() {
    let server = Server::start(None);
    let response = server
        .http
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"gatehouse\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            server.base
        )
    );
}

#[tokio::test]
async fn bad_credential_gets_invalid_token() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let mut wrong = admin.clone();
    wrong.pop();
    wrong.push(if admin.ends_with('A') { 'B' } else { 'A' });
    for key in [wrong.as_str(), "ghk_nonsense", "sk-not-ours"] {
        let (status, _) = server.rpc(Some(key), "tools/list", json!({})).await;
        assert_eq!(status, 401, "{key}");
    }
    let response = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&wrong)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    // The failure is audited with its reason and the key's public id only.
    let failures = server.audit(&["--kind", "authentication", "--outcome", "failure"]);
    assert!(failures.iter().any(|r| r["reason"] == "invalid_secret"));
    assert!(
        failures
            .iter()
            .any(|r| r["reason"] == "malformed_credential")
    );
}

#[tokio::test]
async fn x_api_key_header_is_accepted() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let response = server
        .http
        .post(server.mcp_url())
        .header("x-api-key", &admin)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn credentials_in_the_query_string_are_refused() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    for param in ["access_token", "api_key"] {
        let response = server
            .http
            .post(format!("{}?{param}={admin}", server.mcp_url()))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{param}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("invalid_request"));
    }
}

#[tokio::test]
async fn two_different_credentials_are_refused() {
    let server = Server::start(None);
    let admin = server.admin_key.clone().unwrap();
    let (_, reader) = server.create_key("r", "reader", &[]);
    let response = server
        .http
        .post(server.mcp_url())
        .bearer_auth(&admin)
        .header("x-api-key", &reader)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn protected_resource_metadata_matches_each_well_known_uri() {
    let server = Server::start(None);
    let suffixed = server
        .get_json("/.well-known/oauth-protected-resource/mcp")
        .await;
    assert_eq!(suffixed["resource"], format!("{}/mcp", server.base));
    assert_eq!(suffixed["bearer_methods_supported"], json!(["header"]));
    assert!(
        suffixed["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("tools:read"))
    );
    let root = server
        .get_json("/.well-known/oauth-protected-resource")
        .await;
    assert_eq!(root["resource"], server.base);
}

#[tokio::test]
async fn public_url_is_the_base_of_the_resource() {
    let server = Server::start(Some(
        "version = 1\n[server]\npublic_url = \"https://mcp.example.com\"\n",
    ));
    let response = server
        .http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/mcp",
            server.base
        ))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = response.json().await.unwrap();
    assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
    let (status, _) = server.rpc(None, "tools/list", json!({})).await;
    assert_eq!(status, 401);
}
