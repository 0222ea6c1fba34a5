use std::sync::Arc;

use gatehouse_core::{Principal, TaskGrant, Timestamp};
use serde_json::json;

use super::*;
use crate::test_support::principal;

fn explain(policy: &Policy, p: Principal, tool: &str, args: Value) -> Explanation {
    policy.explain(&Arc::new(p), tool, &args)
}

#[test]
fn explains_allow_approval_and_deny() {
    let policy = Policy::default_matrix();
    assert_eq!(
        explain(&policy, principal("analyst"), "web_fetch", json!({})),
        Explanation {
            decision: "allow",
            reason: "allowed",
            rule: "role analyst allows web_fetch".into(),
        }
    );
    assert_eq!(
        explain(&policy, principal("executor"), "send_email", json!({})),
        Explanation {
            decision: "approval",
            reason: "approval_required",
            rule: "role executor may call send_email with an approved operation token".into(),
        }
    );
    assert_eq!(
        explain(&policy, principal("reader"), "web_fetch", json!({})),
        Explanation {
            decision: "deny",
            reason: "role_not_allowed",
            rule: "role reader may not call tool 'web_fetch'".into(),
        }
    );
    let unknown = explain(&policy, principal("admin"), "rm_rf", json!({}));
    assert_eq!(unknown.decision, "deny");
    assert_eq!(unknown.reason, "unknown_tool");
    assert!(unknown.rule.contains("'rm_rf'"), "{}", unknown.rule);
}

#[test]
fn explains_task_grants_and_constraints() {
    let policy = Policy::default_matrix();
    let mut p = principal("executor");
    p.task = Some(TaskGrant {
        id: "policy-check".into(),
        task: "outreach".into(),
        tools: vec!["send_email".into()],
        expires_at: Timestamp(i64::MAX),
        issued_at: None,
    });
    let outside = explain(&policy, p.clone(), "read_file", json!({}));
    assert_eq!(outside.decision, "deny");
    assert_eq!(outside.reason, "outside_task");
    assert!(outside.rule.contains("outreach"), "{}", outside.rule);
    assert_eq!(
        explain(&policy, p, "send_email", json!({})).decision,
        "approval"
    );

    // A violated constraint wins over approval.
    let constrained = Policy::from_toml(
        r#"
version = 1
[roles.executor]
[tools.send_email]
scope = "tools:write"
approval_roles = ["executor"]
[tools.send_email.constraints]
to = { domains = ["example.com"] }
"#,
    )
    .unwrap();
    let bad = explain(
        &constrained,
        principal("executor"),
        "send_email",
        json!({"to": "eve@evil.test"}),
    );
    assert_eq!(bad.decision, "deny");
    assert_eq!(bad.reason, "constraint_violated");
    assert!(
        !bad.rule.contains("evil.test"),
        "value leaked: {}",
        bad.rule
    );
    let good = explain(
        &constrained,
        principal("executor"),
        "send_email",
        json!({"to": "bob@example.com"}),
    );
    assert_eq!(good.reason, "approval_required");
}

#[test]
fn explanations_serialize_with_their_field_names() {
    let policy = Policy::default_matrix();
    let e = explain(&policy, principal("reader"), "whoami", json!({}));
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"decision": "allow", "reason": "allowed", "rule": "role reader allows whoami"})
    );
}
