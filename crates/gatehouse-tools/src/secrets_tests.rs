use std::sync::Arc;

use gatehouse_store::Store;
use serde_json::json;

use crate::test_support::{code, harness, ok};

#[tokio::test]
async fn secrets_are_tenant_scoped() {
    let h = harness().await;
    let put = |tenant: &'static str, name: &'static str, value: &'static str| {
        let store = Arc::clone(&h.store);
        async move {
            store
                .put_secret(tenant, name, value)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    put("acme", "api_token", "acme-s3cr3t").await;
    put("acme", "db_password", "hunter2").await;
    put("globex", "api_token", "globex-s3cr3t").await;

    let output = ok(h
        .call("acme", "access_secrets", json!({"name": "api_token"}))
        .await);
    assert_eq!(output.text, "acme-s3cr3t");
    let output = ok(h
        .call("globex", "access_secrets", json!({"name": "api_token"}))
        .await);
    assert_eq!(output.text, "globex-s3cr3t");
    let result = h
        .call("globex", "access_secrets", json!({"name": "db_password"}))
        .await;
    assert_eq!(code(&result), "not_found");

    let listing = ok(h.call("acme", "access_secrets", json!({})).await);
    assert_eq!(
        listing.structured,
        Some(json!({"names": ["api_token", "db_password"]}))
    );
    assert!(!listing.text.contains("s3cr3t") && !listing.text.contains("hunter2"));

    let result = h
        .call(
            "acme",
            "access_secrets",
            json!({"name": "../globex/api_token"}),
        )
        .await;
    assert_eq!(code(&result), "invalid_arguments");
    let result = h
        .call("acme", "access_secrets", json!({"tenant": "globex"}))
        .await;
    assert_eq!(code(&result), "invalid_arguments");
}

/// A tenant secret an upstream uses as Gatehouse's credential (`tenant:NAME`)
/// is never handed to a caller: a caller holding it could use the upstream
/// past the gateway's policy and audit.
#[tokio::test]
async fn an_upstreams_credential_is_neither_listed_nor_returned() {
    let mut h = harness().await;
    h.tools = h.tools.with_reserved_secrets(["crm_token".to_string()]);
    h.store
        .put_secret("acme", "crm_token", "upstream-s3cr3t")
        .await
        .unwrap();
    h.store
        .put_secret("acme", "api_token", "acme-s3cr3t")
        .await
        .unwrap();
    let result = h
        .call("acme", "access_secrets", json!({"name": "crm_token"}))
        .await;
    assert_eq!(code(&result), "refused");
    assert!(!format!("{result:?}").contains("upstream-s3cr3t"));
    let listing = ok(h.call("acme", "access_secrets", json!({})).await);
    assert_eq!(listing.structured, Some(json!({"names": ["api_token"]})));
}
