use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::{Principal, TaskGrant, Timestamp};

use super::*;
use crate::test_support::principal;
use crate::{Decision, DenyReason};

/// The principal working under a grant for `task`, as the gateway sees it.
fn granted(policy: &Policy, role: &str, task: &str) -> Arc<Principal> {
    let mut p = principal(role);
    let tools = policy.task_allowlist(&p, task).unwrap();
    p.task = Some(TaskGrant {
        id: "tg_test".into(),
        task: task.into(),
        tools,
        expires_at: Timestamp(i64::MAX),
        issued_at: None,
    });
    Arc::new(p)
}

fn outcome(policy: &Policy, p: &Arc<Principal>, tool: &str) -> &'static str {
    match policy.authorize(p, tool) {
        Decision::Permit(_) => "allow",
        Decision::NeedsApproval(_) => "approval",
        Decision::Deny(d) => d.reason.code(),
    }
}

#[test]
fn a_grant_is_the_intersection_of_role_and_task() {
    let policy = Policy::default_matrix();
    let cases: [(&str, &str, &[&str]); 8] = [
        (
            "reader",
            "research",
            &["whoami", "read_file", "search_database"],
        ),
        (
            "analyst",
            "research",
            &["whoami", "read_file", "search_database", "web_fetch"],
        ),
        (
            "admin",
            "research",
            &["whoami", "read_file", "search_database", "web_fetch"],
        ),
        ("reader", "outreach", &["whoami", "search_database"]),
        ("analyst", "outreach", &["whoami", "search_database"]),
        (
            "executor",
            "outreach",
            &["whoami", "search_database", "send_email"],
        ),
        (
            "admin",
            "outreach",
            &["whoami", "search_database", "send_email"],
        ),
        (
            "executor",
            "research",
            &["whoami", "read_file", "search_database", "web_fetch"],
        ),
    ];
    for (role, task, want) in cases {
        assert_eq!(
            policy.task_allowlist(&principal(role), task).unwrap(),
            want,
            "{role} claiming {task}"
        );
    }
}

#[test]
fn a_grant_never_widens_the_role_nor_narrows_approval() {
    let policy = Policy::default_matrix();
    // A reader under research: web_fetch is in the task but not the role.
    let reader = granted(&policy, "reader", "research");
    assert_eq!(outcome(&policy, &reader, "read_file"), "allow");
    assert_eq!(outcome(&policy, &reader, "web_fetch"), "outside_task");
    // An executor under outreach: send_email still needs approval, and
    // read_file, which the role allows, is outside the task (never union).
    let executor = granted(&policy, "executor", "outreach");
    assert_eq!(outcome(&policy, &executor, "send_email"), "approval");
    assert_eq!(outcome(&policy, &executor, "search_database"), "allow");
    for tool in ["read_file", "web_fetch", "write_file", "upstream_tool"] {
        assert_eq!(outcome(&policy, &executor, tool), "outside_task", "{tool}");
    }
    let Decision::Deny(deny) = policy.authorize(&executor, "read_file") else {
        panic!("outside the task but not denied");
    };
    assert_eq!(
        deny.reason,
        DenyReason::OutsideTask {
            task: "outreach".into()
        }
    );
    assert!(deny.message().contains("outreach"), "{}", deny.message());
}

#[test]
fn outside_task_comes_before_every_other_check() {
    let policy = Policy::default_matrix();
    // A grant naming a tool the role may not call (a forged or stale
    // grant) still cannot widen the role.
    let mut p = principal("reader");
    p.task = Some(TaskGrant {
        id: "tg_x".into(),
        task: "research".into(),
        tools: vec!["web_fetch".into()],
        expires_at: Timestamp(i64::MAX),
        issued_at: None,
    });
    let p = Arc::new(p);
    assert_eq!(outcome(&policy, &p, "web_fetch"), "role_not_allowed");
    // Unknown tools and unknown roles are reported as outside the task.
    assert_eq!(outcome(&policy, &p, "no_such_tool"), "outside_task");
    let mut stranger = principal("intruder");
    stranger.task = p.task.clone();
    assert_eq!(
        outcome(&policy, &Arc::new(stranger), "read_file"),
        "outside_task"
    );
}

#[test]
fn visible_tools_under_a_grant_are_the_grant() {
    let policy = Policy::default_matrix();
    let list = |p: &Arc<Principal>| -> Vec<(String, Access)> {
        policy
            .visible_tools(p)
            .into_iter()
            .map(|(name, access)| (name.to_string(), access))
            .collect()
    };
    let reader = granted(&policy, "reader", "research");
    assert_eq!(
        list(&reader),
        [
            ("read_file".to_string(), Access::Allow),
            ("search_database".to_string(), Access::Allow),
            ("whoami".to_string(), Access::Allow),
        ]
    );
    let executor = granted(&policy, "executor", "outreach");
    assert_eq!(
        list(&executor),
        [
            ("search_database".to_string(), Access::Allow),
            ("send_email".to_string(), Access::NeedsApproval),
            ("whoami".to_string(), Access::Allow),
        ]
    );
}

#[test]
fn a_principal_in_a_grant_may_not_claim_another_task() {
    let policy = Policy::default_matrix();
    let executor = granted(&policy, "executor", "research");
    for task in ["outreach", "research", "no-such-task"] {
        let refusal = policy.task_allowlist(&executor, task).unwrap_err();
        assert_eq!(
            refusal,
            TaskRefusal::AlreadyInTask {
                current: "research".into()
            },
            "{task}"
        );
        assert_eq!(refusal.code(), "task_escalation");
    }
}

#[test]
fn unknown_tasks_are_refused() {
    let policy = Policy::default_matrix();
    let refusal = policy
        .task_allowlist(&principal("admin"), "summarize-reports")
        .unwrap_err();
    assert_eq!(
        refusal,
        TaskRefusal::UnknownTask {
            task: "summarize-reports".into()
        }
    );
    assert_eq!(refusal.code(), "unknown_task");
    assert!(refusal.to_string().contains("summarize-reports"));
}

const WITH_ROLES: &str = r#"
version = 1
[roles.reader]
[roles.analyst]
inherits = ["reader"]
[roles.executor]
inherits = ["analyst"]
[roles.auditor]

[tools.read_file]
scope = "tools:read"
roles = ["reader", "auditor"]
[tools.send_email]
scope = "tools:write"
approval_roles = ["executor"]

[tasks.analysis]
tools = ["read_file"]
roles = ["analyst"]
max_duration = "20m"

[tasks.mail]
tools = ["send_email"]
"#;

#[test]
fn a_task_with_roles_may_be_claimed_by_them_and_their_heirs_only() {
    let policy = Policy::from_toml(WITH_ROLES).unwrap();
    let spec = policy.task("analysis").unwrap();
    assert_eq!(spec.roles(), ["analyst"]);
    assert!(spec.may_claim("analyst"));
    assert!(spec.may_claim("executor"));
    assert!(!spec.may_claim("reader"));
    assert!(!spec.may_claim("auditor"));
    assert!(policy.task("mail").unwrap().may_claim("reader"));
    assert!(policy.task("mail").unwrap().roles().is_empty());

    for role in ["analyst", "executor"] {
        assert_eq!(
            policy.task_allowlist(&principal(role), "analysis").unwrap(),
            ["read_file"],
            "{role}"
        );
    }
    // Reader and auditor may call read_file, but the task is not theirs.
    for role in ["reader", "auditor", "nobody"] {
        let refusal = policy
            .task_allowlist(&principal(role), "analysis")
            .unwrap_err();
        assert_eq!(
            refusal,
            TaskRefusal::NotAllowed {
                task: "analysis".into()
            },
            "{role}"
        );
        assert_eq!(refusal.code(), "task_not_allowed");
    }
    // One claiming role among several is enough.
    let mut both = principal("reader");
    both.roles.push("analyst".into());
    assert!(policy.task_allowlist(&both, "analysis").is_ok());
}

#[test]
fn a_task_whose_tools_the_role_may_not_call_is_not_allowed() {
    let policy = Policy::from_toml(WITH_ROLES).unwrap();
    // Nobody names mail's roles, but an analyst may not call send_email.
    let refusal = policy
        .task_allowlist(&principal("analyst"), "mail")
        .unwrap_err();
    assert_eq!(
        refusal,
        TaskRefusal::NotAllowed {
            task: "mail".into()
        }
    );
    // With approval counts: the executor gets send_email.
    assert_eq!(
        policy
            .task_allowlist(&principal("executor"), "mail")
            .unwrap(),
        ["send_email"]
    );
    // Scopes narrow the grant as they narrow the role.
    let mut scoped = principal("executor");
    scoped.scopes = Some(vec!["tools:read".into()]);
    assert!(policy.task_allowlist(&scoped, "mail").is_err());
    assert_eq!(
        policy.task_allowlist(&scoped, "analysis").unwrap(),
        ["read_file"]
    );
}

#[test]
fn task_durations() {
    let policy = Policy::from_toml(WITH_ROLES).unwrap();
    assert_eq!(
        policy.task_duration("analysis"),
        Some(Duration::from_secs(1200))
    );
    assert_eq!(policy.task_duration("mail"), Some(MAX_TASK_DURATION));
    assert_eq!(policy.task_duration("other"), None);
    assert_eq!(
        policy.task_max_duration("analysis"),
        Duration::from_secs(1200)
    );
    assert_eq!(policy.task_max_duration("other"), MAX_TASK_DURATION);
    let default = Policy::default_matrix();
    assert_eq!(
        default.task_duration("research"),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        default.task_duration("outreach"),
        Some(Duration::from_secs(1800))
    );
    assert_eq!(
        default.task("research").and_then(|t| t.expected_duration()),
        Some(Duration::from_secs(1800))
    );
    assert_eq!(
        default.task("outreach").and_then(|t| t.expected_duration()),
        Some(Duration::from_secs(900))
    );
}
