//! Upstream sections, prompts and resources in the policy (issue 10).

use std::sync::Arc;

use gatehouse_core::{TaskGrant, Timestamp};
use serde_json::json;

use super::*;
use crate::test_support::principal;
use crate::{Access, Decision, Policy};

const POLICY: &str = r#"
version = 1
[roles.reader]
[roles.analyst]
inherits = ["reader"]
[roles.executor]
inherits = ["analyst"]
[roles.admin]
inherits = ["executor"]
admin = true

[tools.whoami]
scope = "tools:read"
roles = ["reader"]

[upstreams.crm]
scope = "crm:read"
roles = ["analyst"]
rate_limit = "5/min"
redact = ["note"]

[tools.crm__delete_contact]
scope = "crm:write"
roles = ["admin"]
approval_roles = ["executor"]
[tools.crm__delete_contact.constraints]
id = { pattern = "^c[0-9]+$" }

[prompts.crm__summarize]
scope = "prompts:read"
roles = ["reader"]

[resources."file:///srv/shared/report.csv"]
scope = "files:read"
roles = ["analyst"]

[tasks.triage]
tools = ["whoami", "crm__list_contacts"]
"#;

fn decide(policy: &Policy, role: &str, target: Target<'_>) -> (&'static str, String) {
    match policy.authorize_target(&Arc::new(principal(role)), &target) {
        Decision::Permit(p) => ("allow", p.rule().to_string()),
        Decision::NeedsApproval(n) => ("approval", n.rule().to_string()),
        Decision::Deny(d) => (d.reason.code(), d.message()),
    }
}

fn crm(kind: Kind, name: &str) -> Target<'_> {
    Target::upstream(kind, name, "crm")
}

/// A section's argument constraints narrow its tools; a resource has no
/// arguments, so the section does not cover the server's resources: a
/// reader limited by the tools' constraints read everything it listed.
#[test]
fn a_section_with_constraints_does_not_cover_its_resources() {
    let policy = Policy::from_toml(&POLICY.replace(
        "redact = [\"note\"]\n",
        "redact = [\"note\"]\n[upstreams.crm.constraints]\npath = { prefix = [\"public/\"] }\n",
    ))
    .unwrap();
    let memo = crm(Kind::Resource, "memo://team/note");
    assert_eq!(decide(&policy, "analyst", memo).0, "unknown_tool");
    // Its tools are still covered (with the constraints), and a resource
    // named by an entry of its own still is.
    assert_eq!(
        decide(&policy, "analyst", crm(Kind::Tool, "crm__list_contacts")).0,
        "allow"
    );
    assert_eq!(
        decide(
            &policy,
            "analyst",
            crm(Kind::Resource, "file:///srv/shared/report.csv")
        )
        .0,
        "allow"
    );
    // Without constraints the section covers them.
    let open = Policy::from_toml(POLICY).unwrap();
    assert_eq!(decide(&open, "analyst", memo).0, "allow");
}

/// An admin-only entry written with `{+rest}` governs the whole subtree,
/// not only the URIs one level below it.
#[test]
fn a_reserved_expression_entry_governs_every_uri_below_it() {
    let policy = Policy::from_toml(&format!(
        "{POLICY}\n[resources.\"file:///srv/hr/{{+rest}}\"]\nscope = \"files:read\"\nroles = [\"admin\"]\n"
    ))
    .unwrap();
    let deep = crm(Kind::Resource, "file:///srv/hr/2024/salaries.csv");
    assert_eq!(decide(&policy, "analyst", deep).0, "role_not_allowed");
    assert_eq!(decide(&policy, "admin", deep).0, "allow");
}

#[test]
fn an_upstream_section_sets_the_rule_for_every_tool_it_does_not_name() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let list = crm(Kind::Tool, "crm__list_contacts");
    let (outcome, rule) = decide(&policy, "analyst", list);
    assert_eq!(outcome, "allow");
    assert!(rule.contains("defaults of upstream crm"), "{rule}");
    assert_eq!(decide(&policy, "reader", list).0, "role_not_allowed");
    // The section's extras apply too.
    assert_eq!(policy.rate_limit_for(&list).map(|l| l.limit), Some(5));
    assert_eq!(policy.redact_fields_for(&list), ["note".to_string()]);
    // A scoped credential needs the section's scope.
    let mut scoped = principal("analyst");
    scoped.scopes = Some(vec!["tools:read".into()]);
    let Decision::Deny(deny) = policy.authorize_target(&Arc::new(scoped), &list) else {
        panic!("a credential without crm:read was allowed");
    };
    assert_eq!(deny.required_scope(), Some("crm:read"));
}

#[test]
fn a_tool_entry_overrides_its_upstreams_section() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let delete = crm(Kind::Tool, "crm__delete_contact");
    assert_eq!(decide(&policy, "analyst", delete).0, "role_not_allowed");
    assert_eq!(decide(&policy, "executor", delete).0, "approval");
    let (outcome, rule) = decide(&policy, "admin", delete);
    assert_eq!(outcome, "allow");
    assert!(!rule.contains("defaults"), "{rule}");
    // Its own constraints, not the section's extras.
    let admin = Arc::new(principal("admin"));
    let bad = policy.authorize_target_call(&admin, &delete, &json!({"id": "../all"}));
    assert!(matches!(bad, Decision::Deny(d) if d.reason.code() == "constraint_violated"));
    assert!(policy.redact_fields_for(&delete).is_empty());
    assert_eq!(policy.rate_limit_for(&delete), None);
}

#[test]
fn what_no_entry_or_section_covers_is_refused_and_hidden_even_for_admins() {
    let policy = Policy::from_toml(POLICY).unwrap();
    // An upstream the policy has no section for.
    let files = Target::upstream(Kind::Tool, "files__read_text_file", "files");
    let (outcome, message) = decide(&policy, "admin", files);
    assert_eq!(outcome, "unknown_tool");
    assert!(
        message.contains("tool 'files__read_text_file'"),
        "{message}"
    );
    assert_eq!(policy.visibility(&principal("admin"), &files), Access::Deny);
    // A prompt nobody named, of an upstream without a section.
    let prompt = Target::upstream(Kind::Prompt, "files__explain", "files");
    let (outcome, message) = decide(&policy, "admin", prompt);
    assert_eq!(outcome, "unknown_tool");
    assert!(message.starts_with("prompt 'files__explain'"), "{message}");
    // Built-in tools the policy does not name stay callable by admins.
    assert_eq!(
        decide(&policy, "admin", Target::tool("run_report")).0,
        "allow"
    );
    assert_eq!(
        decide(&policy, "executor", Target::tool("run_report")).0,
        "unknown_tool"
    );
}

#[test]
fn prompts_and_resources_are_authorized_like_tools() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let prompt = crm(Kind::Prompt, "crm__summarize");
    let (outcome, rule) = decide(&policy, "reader", prompt);
    assert_eq!(
        (outcome, rule.as_str()),
        ("allow", "role reader allows prompt crm__summarize")
    );
    let report = Target::upstream(Kind::Resource, "file:///srv/shared/report.csv", "files");
    assert_eq!(decide(&policy, "analyst", report).0, "allow");
    let (outcome, message) = decide(&policy, "reader", report);
    assert_eq!(outcome, "role_not_allowed");
    assert_eq!(
        message,
        "role reader may not use resource 'file:///srv/shared/report.csv'"
    );
    // Another resource of crm falls back to crm's section.
    let other = crm(Kind::Resource, "crm://contacts/42");
    assert_eq!(decide(&policy, "analyst", other).0, "allow");
    assert_eq!(decide(&policy, "reader", other).0, "role_not_allowed");
    // A prompt's name is not a tool's: `tool:<name>` scopes are for tools.
    let mut scoped = principal("reader");
    scoped.scopes = Some(vec!["tool:crm__summarize".into()]);
    assert!(matches!(
        policy.authorize_target(&Arc::new(scoped), &prompt),
        Decision::Deny(_)
    ));
}

#[test]
fn a_template_entry_governs_every_uri_the_template_names() {
    let policy = Policy::from_toml(&format!(
        r#"{POLICY}
[resources."crm://contacts/{{id}}"]
scope = "crm:read"
roles = ["admin"]
rate_limit = "2/min"
[resources."crm://{{kind}}/{{id}}"]
scope = "crm:read"
roles = ["executor"]
[resources."crm://contacts/7"]
scope = "crm:read"
roles = ["reader"]
"#
    ))
    .unwrap();
    // Not the section's (analyst): the most specific template's (admin).
    let contact = crm(Kind::Resource, "crm://contacts/42");
    assert_eq!(decide(&policy, "executor", contact).0, "role_not_allowed");
    assert_eq!(decide(&policy, "admin", contact).0, "allow");
    assert_eq!(
        policy.visibility(&principal("executor"), &contact),
        Access::Deny
    );
    assert_eq!(policy.rate_limit_for(&contact).map(|l| l.limit), Some(2));
    // Spelt otherwise, the URI counts against the same limit, under one name.
    for spelt in [
        "crm://contacts/42?1",
        "crm://contacts/42#a",
        "crm://contacts/%342",
    ] {
        let (limits, counted) = policy.rate_limits_for(&crm(Kind::Resource, spelt));
        assert_eq!(
            limits.iter().map(|l| l.limit).collect::<Vec<_>>(),
            [2],
            "{spelt}"
        );
        assert_eq!(counted, "crm://contacts/42", "{spelt}");
    }
    // A less specific template covers what the first does not name.
    let deal = crm(Kind::Resource, "crm://deals/9");
    assert_eq!(decide(&policy, "executor", deal).0, "allow");
    assert_eq!(decide(&policy, "analyst", deal).0, "role_not_allowed");
    // A URI's own entry outranks every template.
    let seven = crm(Kind::Resource, "crm://contacts/7");
    assert_eq!(decide(&policy, "reader", seven).0, "allow");
    // What no template names still follows the section.
    let nested = crm(Kind::Resource, "crm://contacts/42/notes");
    assert_eq!(decide(&policy, "analyst", nested).0, "allow");
}

/// An upstream may read `crm://contacts/ceo?`, `…/x/../ceo` or `…/%63eo`
/// as `crm://contacts/ceo` (the TypeScript SDK parses URIs as URLs and
/// matches templates without the query): each is decided as that URI too,
/// so no spelling walks round its entry or a template entry that narrows
/// the section.
#[test]
fn a_uri_is_decided_under_every_reading_an_upstream_may_make() {
    let policy = Policy::from_toml(&format!(
        r#"{POLICY}
[resources."crm://contacts/ceo"]
scope = "crm:read"
roles = ["admin"]
[resources."crm://deals/{{id}}"]
scope = "crm:read"
roles = ["admin"]
[resources."crm://notes/{{id}}"]
scope = "crm:read"
roles = ["admin"]
approval_roles = ["analyst"]
"#
    ))
    .unwrap();
    for uri in [
        "crm://contacts/ceo?",
        "crm://contacts/ceo?x=1",
        "crm://contacts/ceo#x",
        "crm://contacts/x/../ceo",
        "crm://contacts/x/%2E%2E/ceo",
        "crm://contacts//ceo",
        "crm://contacts/42/..%2Fceo",
        "crm://contacts/%63eo",
        "CRM://contacts/ceo",
        // Claimed through another template by the `/` in its query.
        "crm://deals/42?x=/y",
    ] {
        let target = crm(Kind::Resource, uri);
        assert_eq!(
            decide(&policy, "analyst", target).0,
            "role_not_allowed",
            "{uri}"
        );
        assert_eq!(
            policy.visibility(&principal("analyst"), &target),
            Access::Deny,
            "{uri}"
        );
        assert_eq!(decide(&policy, "admin", target).0, "allow", "{uri}");
    }
    // What the section allows stays allowed however it is written.
    let other = crm(Kind::Resource, "crm://contacts/42?x=1");
    assert_eq!(decide(&policy, "analyst", other).0, "allow");
    // A URI with a NUL or a control character is refused to everyone.
    for uri in ["crm://contacts/ceo%00", "crm://contacts/43%00.txt"] {
        let target = crm(Kind::Resource, uri);
        for role in ["analyst", "admin"] {
            assert_eq!(
                decide(&policy, role, target).0,
                "non_canonical_uri",
                "{uri}"
            );
            assert_eq!(policy.visibility(&principal(role), &target), Access::Deny);
        }
    }
    // So is one longer than any a server lists, before any reading of it.
    let long = format!(
        "crm://contacts/42?x={}",
        "a".repeat(crate::MAX_RESOURCE_URI_BYTES)
    );
    assert_eq!(
        decide(&policy, "admin", crm(Kind::Resource, &long)).0,
        "uri_too_long"
    );
    // A reading that needs approval makes the request need it.
    let note = crm(Kind::Resource, "crm://notes/1?x");
    assert_eq!(decide(&policy, "analyst", note).0, "approval");
    assert_eq!(
        policy.visibility(&principal("analyst"), &note),
        Access::NeedsApproval
    );
}

#[test]
fn a_task_lists_upstream_tools_and_refuses_everything_else() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let mut p = principal("analyst");
    let tools = policy.task_allowlist(&p, "triage").unwrap();
    assert_eq!(tools, ["whoami", "crm__list_contacts"]);
    p.task = Some(TaskGrant {
        id: "tg_1".into(),
        task: "triage".into(),
        tools,
        expires_at: Timestamp(i64::MAX),
        issued_at: None,
    });
    let p = Arc::new(p);
    let decide = |target| match policy.authorize_target(&p, &target) {
        Decision::Permit(_) => "allow",
        Decision::NeedsApproval(_) => "approval",
        Decision::Deny(d) => d.reason.code(),
    };
    assert_eq!(decide(crm(Kind::Tool, "crm__list_contacts")), "allow");
    assert_eq!(decide(crm(Kind::Tool, "crm__export")), "outside_task");
    // Grants list tools: prompts and resources are outside every task.
    assert_eq!(decide(crm(Kind::Prompt, "crm__summarize")), "outside_task");
    assert_eq!(
        policy.visibility(&p, &crm(Kind::Prompt, "crm__summarize")),
        Access::Deny
    );
    // A reader's grant leaves out the upstream tool its role may not call.
    let reader = principal("reader");
    assert_eq!(
        policy.task_allowlist(&reader, "triage").unwrap(),
        ["whoami"]
    );
}

#[test]
fn tenants_reach_upstream_targets_the_policy_covers() {
    let text =
        format!("{POLICY}\n[tenants.acme]\ntools = [\"crm__list_contacts\"]\n[tenants.globex]\n");
    let policy = Policy::from_toml(&text).unwrap();
    let list = crm(Kind::Tool, "crm__list_contacts");
    let prompt = crm(Kind::Prompt, "crm__summarize");
    assert!(policy.tenant_allows("acme", &list));
    assert!(!policy.tenant_allows("acme", &crm(Kind::Tool, "crm__export")));
    assert!(
        !policy.tenant_allows("acme", &prompt),
        "a tool list admits no prompts"
    );
    assert!(policy.tenant_allows("globex", &list));
    assert!(policy.tenant_allows("globex", &prompt));
    let files = Target::upstream(Kind::Tool, "files__read", "files");
    assert!(
        !policy.tenant_allows("globex", &files),
        "not covered: no tenant gets it"
    );
}

#[test]
fn sections_are_validated_and_name_the_entry() {
    let cases = [
        (
            "[upstreams.CRM]\nscope = \"a:b\"\nroles = [\"reader\"]",
            "upstreams.CRM",
        ),
        (
            "[upstreams.a__b]\nscope = \"a:b\"\nroles = [\"reader\"]",
            "upstreams.a__b",
        ),
        (
            "[upstreams.crm]\nscope = \"nope\"\nroles = [\"reader\"]",
            "upstreams.crm.scope",
        ),
        (
            "[prompts.crm__p]\nscope = \"a:b\"\nroles = [\"editor\"]",
            "prompts.crm__p.roles",
        ),
        (
            "[resources.\"\"]\nscope = \"a:b\"\nroles = [\"reader\"]",
            "resources.\"\"",
        ),
        ("[tasks.t]\ntools = [\"zzz__list\"]", "tasks.t.tools"),
        (
            "[tenants.acme]\ntools = [\"zzz__list\"]",
            "tenants.acme.tools",
        ),
    ];
    for (section, path) in cases {
        let text = format!("version = 1\n[roles.reader]\n{section}\n");
        let err = Policy::from_toml(&text).expect_err(section);
        assert_eq!(err.path(), path, "{err}");
    }
}

#[test]
fn every_scope_of_every_section_is_known() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let scopes = policy.scopes();
    for scope in [
        "tools:read",
        "crm:read",
        "crm:write",
        "prompts:read",
        "files:read",
    ] {
        assert!(
            scopes.contains(&scope.to_string()),
            "{scope} missing from {scopes:?}"
        );
    }
    let analyst = policy.scopes_for_role("analyst");
    assert!(analyst.contains(&"crm:read".to_string()), "{analyst:?}");
    assert!(analyst.contains(&"files:read".to_string()), "{analyst:?}");
    assert!(!analyst.contains(&"crm:write".to_string()), "{analyst:?}");
}

/// An upstream with a prefix of its own (`prefix = "sales"` for `crm`)
/// names its tools otherwise than the default naming: the check must take
/// the gateway's routing, or it says `unknown_tool` where the gateway
/// applies the section's rule.
#[test]
fn a_policy_check_of_a_prefixed_upstreams_tool_takes_the_gateways_routing() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let now = Timestamp(0);
    let by_naming = policy.check(principal("analyst"), "sales__list", &json!({}), None, now);
    assert_eq!(by_naming.reason, "unknown_tool");
    let routed = policy.check_routed(
        principal("analyst"),
        "sales__list",
        Some("crm"),
        &json!({}),
        None,
        now,
    );
    assert_eq!(routed.decision, "allow", "{}", routed.rule);
    assert!(
        routed.rule.contains("defaults of upstream crm"),
        "{}",
        routed.rule
    );
}

/// `crm__SUMMARIZE` or `crm__summarize ` is not the admin-only prompt's
/// name, and was covered by the section's looser rule: an upstream that
/// matches names loosely would serve the protected prompt. Such a name is
/// covered by nothing now.
#[test]
fn a_name_that_is_a_named_entrys_but_for_case_is_covered_by_nothing() {
    let policy = Policy::from_toml(&format!(
        "{POLICY}\n[prompts.crm__secret]\nscope = \"prompts:read\"\nroles = [\"admin\"]\n"
    ))
    .unwrap();
    for spelt in [
        "crm__SECRET",
        "crm__secret ",
        " Crm__Secret",
        // What Unicode-aware comparisons (casefold, toUpperCase, trim,
        // strip) take for the same name.
        "crm__\u{17F}ecret",
        "crm__secret\u{200B}",
        "crm__secret\u{FEFF}",
        "crm__secret\u{1F}",
        "crm__sec\u{AD}ret",
    ] {
        assert_eq!(
            decide(&policy, "analyst", crm(Kind::Prompt, spelt)).0,
            "unknown_tool",
            "{spelt:?}"
        );
    }
    for spelt in [
        "crm__DELETE_CONTACT",
        "crm__delete_contact ",
        "crm__delete_\u{FF43}ontact",
        "ｃｒｍ__delete_contact",
    ] {
        assert_eq!(
            decide(&policy, "analyst", crm(Kind::Tool, spelt)).0,
            "unknown_tool",
            "{spelt:?}"
        );
    }
    // Other names are the section's as before.
    assert_eq!(
        decide(&policy, "analyst", crm(Kind::Prompt, "crm__other")).0,
        "allow"
    );
    assert_eq!(
        decide(&policy, "analyst", crm(Kind::Tool, "crm__list_contacts")).0,
        "allow"
    );
}

#[test]
fn a_policy_check_applies_the_upstream_rule_the_gateway_applies() {
    let policy = Policy::from_toml(POLICY).unwrap();
    let now = Timestamp(0);
    // An upstream tool the policy does not name: its section's rule, not
    // the admin's licence for unnamed built-in tools.
    let check = policy.check(
        principal("reader"),
        "crm__list_contacts",
        &json!({}),
        None,
        now,
    );
    assert_eq!((check.decision, check.reason), ("deny", "role_not_allowed"));
    let check = policy.check(
        principal("analyst"),
        "crm__list_contacts",
        &json!({}),
        None,
        now,
    );
    assert_eq!(check.decision, "allow");
    assert!(
        check.rule.contains("defaults of upstream crm"),
        "{}",
        check.rule
    );
}

/// A completion of a resource template's variable could suggest names that
/// narrower `[resources.*]` entries keep from the caller (the reader
/// completing `path` from `hr/`): such a template's suggestions are not
/// passed on.
#[test]
fn a_template_with_narrower_entries_within_it_is_told() {
    let policy = Policy::from_toml(&format!(
        "{POLICY}\n[resources.\"file:///srv/{{+path}}\"]\nscope = \"crm:read\"\nroles = [\"reader\"]\n\
         [resources.\"file:///srv/hr/{{+rest}}\"]\nscope = \"crm:read\"\nroles = [\"admin\"]\n"
    ))
    .unwrap();
    assert!(policy.has_entries_within("file:///srv/{+path}"));
    assert!(policy.has_entries_within("file:///{+path}"));
    assert!(!policy.has_entries_within("file:///srv/hr/{+rest}"));
    assert!(!policy.has_entries_within("memo://{id}"));
}

/// A tool or prompt the section covers is counted under its loose key:
/// `crm__Summarize_deals` and `crm__summarize_deals\u{200b}` reach the same
/// tool at an upstream that matches names loosely, and each started a
/// counter of its own. A named entry keeps its own name (its other
/// spellings are covered by nothing).
#[test]
fn spellings_of_a_section_covered_name_share_one_rate_limit() {
    let policy = Policy::from_toml(POLICY).unwrap();
    for kind in [Kind::Tool, Kind::Prompt] {
        let counted: Vec<String> = [
            "crm__summarize_deals",
            "crm__Summarize_Deals",
            "crm__summarize_deals\u{200b}",
            "crm__\u{17F}ummarize_deals",
        ]
        .into_iter()
        .map(|spelt| {
            let (limits, counted) = policy.rate_limits_for(&crm(kind, spelt));
            assert_eq!(
                limits.iter().map(|l| l.limit).collect::<Vec<_>>(),
                [5],
                "{spelt}"
            );
            counted.into_owned()
        })
        .collect();
        assert!(
            counted.iter().all(|c| c == "crm__summarize_deals"),
            "{kind:?}: {counted:?}"
        );
    }
    let named = Policy::from_toml(&POLICY.replace(
        "[tools.crm__delete_contact]\n",
        "[tools.crm__Export]\nscope = \"crm:read\"\nroles = [\"analyst\"]\nrate_limit = \"1/min\"\n\n[tools.crm__delete_contact]\n",
    ))
    .unwrap();
    let (limits, counted) = named.rate_limits_for(&crm(Kind::Tool, "crm__Export"));
    assert_eq!(limits.iter().map(|l| l.limit).collect::<Vec<_>>(), [1]);
    assert_eq!(counted, "crm__Export");
}

/// A name of 20 KiB was decided (and, for a prompt or an upstream whose
/// names are not pinned, sent on) while its record kept 4 KiB of it: the
/// record did not name what was called. Names longer than
/// `MAX_NAME_BYTES` are refused, and resource URIs longer than
/// `MAX_RESOURCE_URI_BYTES`, each below what a record keeps whole.
#[test]
fn names_and_uris_longer_than_a_record_keeps_are_refused() {
    let policy = Policy::from_toml(POLICY).unwrap();
    for kind in [Kind::Tool, Kind::Prompt] {
        let long = format!("crm__{}", "a".repeat(crate::MAX_NAME_BYTES));
        assert_eq!(
            decide(&policy, "admin", crm(kind, &long)).0,
            "name_too_long"
        );
        // Nor listed: it could not be called.
        assert_eq!(
            policy.visibility(&principal("admin"), &crm(kind, &long)),
            Access::Deny
        );
        let fits = format!("crm__{}", "a".repeat(crate::MAX_NAME_BYTES - 5));
        assert_ne!(
            decide(&policy, "admin", crm(kind, &fits)).0,
            "name_too_long"
        );
    }
    let uri = format!("memo://{}", "a".repeat(4 * 1024));
    assert_eq!(
        decide(&policy, "admin", crm(Kind::Resource, &uri)).0,
        "uri_too_long"
    );
}
