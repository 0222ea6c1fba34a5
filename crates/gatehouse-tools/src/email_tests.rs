use serde_json::json;

use super::*;
use crate::test_support::{self, code, harness, ok};

fn outbox_files(h: &test_support::Harness, tenant: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(h.tools.outbox_dir(tenant))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn send_email_writes_an_eml_file_to_the_outbox() {
    let h = harness().await;
    let output = ok(h
        .call(
            "acme",
            "send_email",
            json!({"to": ["bob@example.com", "carol@example.org"], "subject": "Quarterly report", "body": "Hi,\nsee attached.\n"}),
        )
        .await);
    let structured = output.structured.unwrap_or_default();
    let file = structured["file"].as_str().unwrap_or_default().to_string();
    assert!(
        file.starts_with("20231114T221320123Z-") && file.ends_with(".eml"),
        "{file}"
    );
    assert_eq!(structured["sent"], false);
    let files = outbox_files(&h, "acme");
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with(&file));
    let eml = std::fs::read_to_string(&files[0]).unwrap_or_default();
    for line in [
        "From: gatehouse@localhost\r\n",
        "To: bob@example.com, carol@example.org\r\n",
        "Subject: Quarterly report\r\n",
        "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
        "X-Gatehouse-Agent: test-agent\r\n",
        "X-Gatehouse-Tenant: acme\r\n",
        "\r\n\r\nHi,\r\nsee attached.\r\n",
    ] {
        assert!(eml.contains(line), "missing {line:?} in\n{eml}");
    }
    assert!(eml.contains("Message-ID: <") && eml.contains("@gatehouse.localhost>\r\n"));
    // Tenant-scoped: another tenant's outbox is empty.
    assert!(outbox_files(&h, "other").is_empty());
}

#[tokio::test]
async fn send_email_refuses_header_injection() {
    let h = harness().await;
    for args in [
        json!({"to": "bob@example.com", "subject": "hi\r\nBcc: eve@example.com", "body": "x"}),
        json!({"to": "bob@example.com", "subject": "hi\nBcc: eve@example.com", "body": "x"}),
        json!({"to": "bob@example.com\r\nBcc: eve@example.com", "subject": "hi", "body": "x"}),
        json!({"to": ["bob@example.com", "x@example.com\nCc: eve@example.com"], "subject": "hi", "body": "x"}),
    ] {
        assert_eq!(
            code(&h.call("acme", "send_email", args.clone()).await),
            "refused",
            "{args}"
        );
    }
    assert!(outbox_files(&h, "acme").is_empty());
}

#[tokio::test]
async fn send_email_validates_recipients_and_fields() {
    let h = harness().await;
    let many: Vec<String> = (0..21).map(|i| format!("u{i}@example.com")).collect();
    for args in [
        json!({"to": "not-an-address", "subject": "s", "body": "b"}),
        json!({"to": "Bob <bob@example.com>", "subject": "s", "body": "b"}),
        json!({"to": [], "subject": "s", "body": "b"}),
        json!({"to": many, "subject": "s", "body": "b"}),
        json!({"to": 5, "subject": "s", "body": "b"}),
        json!({"to": "bob@example.com", "subject": "s"}),
        json!({"to": "bob@example.com", "subject": "x".repeat(201), "body": "b"}),
        json!({"to": "bob@example.com", "subject": "s", "body": "b", "cc": "eve@example.com"}),
    ] {
        assert_eq!(
            code(&h.call("acme", "send_email", args.clone()).await),
            "invalid_arguments",
            "{args}"
        );
    }
    assert!(outbox_files(&h, "acme").is_empty());
}

#[test]
fn addresses() {
    for good in [
        "a@example.com",
        "first.last+tag@sub.example.org",
        "root@localhost",
    ] {
        assert!(is_valid_address(good), "{good}");
    }
    for bad in [
        "",
        "plain",
        "@example.com",
        "a@",
        "a@@b.c",
        "a b@example.com",
        "a@exa mple.com",
        ".a@example.com",
        "a..b@example.com",
        "a@-example.com",
        "a@example..com",
        "a@example.com, b@example.com",
        "Name <a@example.com>",
    ] {
        assert!(!is_valid_address(bad), "{bad}");
    }
}

#[test]
fn recipient_lists() {
    assert_eq!(
        recipients(&json!("a@example.com")).ok(),
        Some(vec!["a@example.com".to_string()])
    );
    assert!(recipients(&json!([])).is_err());
    assert!(recipients(&json!(["a@example.com", 3])).is_err());
    assert!(recipients(&json!(7)).is_err());
    let many: Vec<String> = (0..21).map(|i| format!("u{i}@example.com")).collect();
    assert!(recipients(&json!(many)).is_err());
    let err = recipients(&json!("a@example.com\r\nBcc: evil@example.com")).err();
    assert_eq!(err.map(|e| e.code()), Some("refused"));
}

#[test]
fn compact_time_sorts() {
    assert_eq!(
        compact_utc(Timestamp(1_700_000_000_123)).ok().as_deref(),
        Some("20231114T221320123Z")
    );
}

/// Fills acme's outbox to `messages`: one sent (which makes the folder),
/// the rest written beside it.
async fn outbox_holding(h: &crate::test_support::Harness, messages: usize) {
    ok(h.call(
        "acme",
        "send_email",
        json!({"to": ["bob@example.com"], "subject": "first", "body": "x"}),
    )
    .await);
    let outbox = h.tools.outbox_dir("acme");
    for i in 1..messages {
        std::fs::write(outbox.join(format!("filler-{i}.eml")), "x").unwrap();
    }
}

/// Nothing but the operator empties the outbox, and it shares its volume
/// with the database and the audit log: it holds at most `MAX_QUEUED`.
#[tokio::test]
async fn a_full_outbox_refuses_more() {
    let h = harness().await;
    outbox_holding(&h, MAX_QUEUED).await;
    let refused = h
        .call(
            "acme",
            "send_email",
            json!({"to": ["bob@example.com"], "subject": "one too many", "body": "x"}),
        )
        .await;
    assert_eq!(code(&refused), "refused");
    assert_eq!(outbox_files(&h, "acme").len(), MAX_QUEUED);
    // Another tenant's outbox is its own.
    ok(h.call(
        "globex",
        "send_email",
        json!({"to": ["bob@example.com"], "subject": "hi", "body": "x"}),
    )
    .await);
}

/// Calls side by side near the cap each counted the same outbox and all
/// wrote: the count and the write now happen under the outbox's lock.
#[tokio::test]
async fn calls_side_by_side_cannot_pass_the_outbox_cap_together() {
    let h = harness().await;
    outbox_holding(&h, MAX_QUEUED - 5).await;
    let calls = (0..40).map(|i| {
        h.call(
            "acme",
            "send_email",
            json!({"to": ["bob@example.com"], "subject": format!("n{i}"), "body": "x"}),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let refused = answers.iter().filter(|a| code(a) == "refused").count();
    assert_eq!(refused, 35);
    assert_eq!(outbox_files(&h, "acme").len(), MAX_QUEUED);
}
