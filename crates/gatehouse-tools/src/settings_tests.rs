use gatehouse_store::Store;
use serde_json::json;

use super::*;
use crate::test_support::{code, harness, ok};

#[tokio::test]
async fn settings_change_within_the_allowlist() {
    let h = harness().await;
    let listing = ok(h.call("acme", "modify_mcp_config", json!({})).await);
    assert_eq!(
        listing.structured.unwrap_or_default()["settings"],
        json!({})
    );

    let first = ok(h
        .call(
            "acme",
            "modify_mcp_config",
            json!({"key": "banner", "value": "Welcome"}),
        )
        .await);
    assert_eq!(
        first.structured,
        Some(json!({"key": "banner", "previous": null, "value": "Welcome"}))
    );
    let second = ok(h
        .call(
            "acme",
            "modify_mcp_config",
            json!({"key": "banner", "value": "Hello"}),
        )
        .await);
    assert_eq!(second.structured.unwrap_or_default()["previous"], "Welcome");
    ok(h.call(
        "acme",
        "modify_mcp_config",
        json!({"key": "session.idle_timeout_secs", "value": 600}),
    )
    .await);

    let stored = h
        .store
        .setting("acme", "banner")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.as_deref(), Some("Hello"));
    let one = ok(h
        .call(
            "acme",
            "modify_mcp_config",
            json!({"key": "session.idle_timeout_secs"}),
        )
        .await);
    assert_eq!(one.structured.unwrap_or_default()["value"], "600");
    let listing = ok(h.call("acme", "modify_mcp_config", json!({})).await);
    assert_eq!(
        listing.structured.unwrap_or_default()["settings"],
        json!({"banner": "Hello", "session.idle_timeout_secs": "600"})
    );
    // Another tenant is unaffected.
    let other = ok(h.call("globex", "modify_mcp_config", json!({})).await);
    assert_eq!(other.structured.unwrap_or_default()["settings"], json!({}));
}

#[tokio::test]
async fn settings_outside_the_allowlist_or_invalid_are_rejected() {
    let h = harness().await;
    for args in [
        json!({"key": "auth.mode", "value": "none"}),
        json!({"key": "tools.web_fetch_allowlist", "value": "evil.example"}),
        json!({"key": "auth.mode"}),
        json!({"value": "x"}),
        json!({"key": "tools.read_file.max_bytes", "value": 0}),
        json!({"key": "tools.read_file.max_bytes", "value": 10_485_761}),
        json!({"key": "tools.read_file.max_bytes", "value": "1024"}),
        json!({"key": "session.idle_timeout_secs", "value": 30}),
        json!({"key": "session.idle_timeout_secs", "value": true}),
        json!({"key": "banner", "value": 42}),
        json!({"key": "audit.note", "value": "x".repeat(201)}),
        json!({"key": "banner", "value": "two\nlines"}),
        json!({"key": "banner", "value": ["x"]}),
        json!({"key": 1, "value": "x"}),
        json!({"key": "banner", "value": "x", "tenant": "globex"}),
    ] {
        let result = h.call("acme", "modify_mcp_config", args.clone()).await;
        assert_eq!(code(&result), "invalid_arguments", "{args}");
    }
    let all = h
        .store
        .settings("acme")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn validation_per_key() {
    assert_eq!(
        validate(READ_FILE_MAX_BYTES, &json!(4096)).ok().as_deref(),
        Some("4096")
    );
    assert!(validate(READ_FILE_MAX_BYTES, &json!(0)).is_err());
    assert!(validate(READ_FILE_MAX_BYTES, &json!(10 * 1024 * 1024 + 1)).is_err());
    assert!(validate(READ_FILE_MAX_BYTES, &json!("4096")).is_err());
    assert!(validate(READ_FILE_MAX_BYTES, &json!(1.5)).is_err());
    assert!(validate(SESSION_IDLE_TIMEOUT_SECS, &json!(59)).is_err());
    assert!(validate(SESSION_IDLE_TIMEOUT_SECS, &json!(86_400)).is_ok());
    assert!(validate(BANNER, &json!("hello")).is_ok());
    assert!(validate(BANNER, &json!(true)).is_err());
    assert!(validate(BANNER, &json!("x".repeat(201))).is_err());
    assert!(validate(AUDIT_NOTE, &json!("line\nbreak")).is_err());
    assert!(validate("auth.mode", &json!("none")).is_err());
}
