use std::sync::Arc;

use gatehouse_authn::Pepper;
use gatehouse_core::{CredentialKind, CredentialRef, Principal, TaskGrant, Timestamp};
use gatehouse_store::{ApprovalStatus, SqliteStore, Store, UserRecord};
use serde_json::json;

use super::*;

fn principal(tenant: &str, human: &str, agent: &str) -> Principal {
    Principal {
        tenant: tenant.into(),
        human: Some(human.into()),
        agent: agent.into(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: agent.into(),
        },
        roles: vec!["executor".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    }
}

const STUB_HASH: &str = "$argon2id$stub";

/// A user signed in at the approval page, with the account stored for them
/// by `approvals()`.
fn user(username: &str, tenant: &str, admin: bool) -> Decider {
    Decider::User {
        username: username.into(),
        tenant: tenant.into(),
        admin,
        account: AccountSeen {
            password_hash: STUB_HASH.into(),
            roles: vec!["reader".into()],
        },
    }
}

fn alice(tenant: &str) -> Decider {
    user("alice", tenant, false)
}

async fn approvals() -> Approvals {
    approvals_in(Arc::new(SqliteStore::in_memory().await.unwrap())).await
}

async fn approvals_in(store: Arc<dyn Store>) -> Approvals {
    for (name, tenant) in [
        ("alice", "acme"),
        ("bob", "acme"),
        ("carol", "acme"),
        ("root", "globex"),
    ] {
        store
            .insert_user(&UserRecord {
                username: name.into(),
                tenant: tenant.into(),
                roles: vec!["reader".into()],
                password_hash: STUB_HASH.into(),
                created_at: Timestamp(0),
                disabled_at: None,
            })
            .await
            .unwrap();
    }
    Approvals::new(
        store,
        Pepper::new(vec![7; 32]).unwrap(),
        ApprovalSettings {
            page_base: Some("http://127.0.0.1:1/approvals/".into()),
            ..ApprovalSettings::default()
        },
    )
}

const T0: Timestamp = Timestamp(1_000_000);

#[tokio::test]
async fn asking_again_for_the_same_call_reuses_the_pending_approval() {
    let a = approvals().await;
    let p = principal("acme", "alice", "ghk_bot");
    let args = json!({"to": "x@example.com", "subject": "hi"});
    let first = a.request(&p, "send_email", &args, &[], T0).await.unwrap();
    assert!(first.id.starts_with(APPROVAL_PREFIX));
    assert_eq!(
        a.url(&first.id).unwrap(),
        format!("http://127.0.0.1:1/approvals/{}", first.id)
    );
    // The same call with keys in another order is the same call.
    let same: serde_json::Value =
        serde_json::from_str(r#"{"subject":"hi","to":"x@example.com"}"#).unwrap();
    let again = a.request(&p, "send_email", &same, &[], T0).await.unwrap();
    assert_eq!(first.id, again.id);
    let other = json!({"to": "y@example.com", "subject": "hi"});
    let different = a.request(&p, "send_email", &other, &[], T0).await.unwrap();
    assert_ne!(first.id, different.id);
}

/// Requests arriving together are counted one after another: 64 filed at
/// once by one requester leave 32 pending, not 64 (each counted before any
/// was stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_filed_at_once_do_not_pass_the_cap_together() {
    let a = Arc::new(approvals_in(Arc::new(SqliteStore::in_memory().await.unwrap())).await);
    let filed: Vec<_> = (0..64)
        .map(|n| {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                let p = principal("acme", "alice", "ghk_one");
                a.request(&p, "send_email", &json!({ "n": n }), &[], T0)
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut accepted = 0;
    for one in filed {
        if one.await.unwrap() {
            accepted += 1;
        }
    }
    assert_eq!(
        accepted,
        usize::try_from(MAX_PENDING_PER_REQUESTER).unwrap()
    );
}

/// Each pending approval holds its call's arguments and is listed to every
/// approver: a requester may not file them without end, across its agents
/// and credentials; another person, or the same call asked again, still
/// may. (Each request read every pending approval of the tenant before.)
#[tokio::test]
async fn a_requester_may_have_only_so_many_approvals_pending() {
    let a = approvals().await;
    let max = usize::try_from(MAX_PENDING_PER_REQUESTER).unwrap();
    for n in 0..max {
        // Alice's requests through two agents count together.
        let agent = if n % 2 == 0 { "ghk_one" } else { "ghk_two" };
        let p = principal("acme", "alice", agent);
        a.request(&p, "send_email", &json!({ "n": n }), &[], T0)
            .await
            .unwrap();
    }
    let alice_bot = principal("acme", "alice", "ghk_three");
    assert!(matches!(
        a.request(&alice_bot, "send_email", &json!({"n": "more"}), &[], T0)
            .await,
        Err(ApprovalError::TooManyPending { max: 32 })
    ));
    // Asking again for a call already filed is no new approval.
    let again = principal("acme", "alice", "ghk_one");
    assert!(
        a.request(&again, "send_email", &json!({"n": 0}), &[], T0)
            .await
            .is_ok()
    );
    // Bob, or alice's namesake named by an external issuer, are others.
    let bob = principal("acme", "bob", "ghk_one");
    assert!(
        a.request(&bob, "send_email", &json!({}), &[], T0)
            .await
            .is_ok()
    );
    let external = Principal {
        issuer: Some("https://idp.example".into()),
        ..principal("acme", "alice", "ghk_ext")
    };
    assert!(
        a.request(&external, "send_email", &json!({}), &[], T0)
            .await
            .is_ok()
    );
    // Expired ones no longer count.
    let later = T0.plus_millis(ApprovalSettings::default().pending_ttl_ms + 1);
    assert!(
        a.request(&alice_bot, "send_email", &json!({"n": "more"}), &[], later)
            .await
            .is_ok()
    );
}

/// Without a person behind it, the agent is the requester, whatever
/// credential it asks with: a client's every access token is a credential
/// of its own, and counting by credential gave each new token 32 more.
#[tokio::test]
async fn without_a_person_each_agent_is_a_requester() {
    let a = approvals().await;
    let unowned = |agent: &str| Principal {
        human: None,
        ..principal("acme", "x", agent)
    };
    let new_token = |n: u32| Principal {
        credential: CredentialRef {
            kind: CredentialKind::AccessToken,
            id: format!("jti-{n}"),
        },
        ..unowned("ghc_bot")
    };
    for n in 0..MAX_PENDING_PER_REQUESTER {
        a.request(&new_token(n), "send_email", &json!({ "n": n }), &[], T0)
            .await
            .unwrap();
    }
    assert!(matches!(
        a.request(&new_token(99), "send_email", &json!({}), &[], T0)
            .await,
        Err(ApprovalError::TooManyPending { .. })
    ));
    assert!(
        a.request(&unowned("ghk_other"), "send_email", &json!({}), &[], T0)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn only_the_human_an_admin_of_the_tenant_or_the_operator_may_decide() {
    let a = approvals().await;
    let p = principal("acme", "alice", "ghk_bot");
    let args = json!({"to": "x@example.com"});
    let req = a.request(&p, "send_email", &args, &[], T0).await.unwrap();
    let bob = user("bob", "acme", false);
    assert!(matches!(
        a.decide(&req.id, true, &bob, T0).await,
        Err(ApprovalError::Forbidden)
    ));
    // Another tenant's admin does not even learn that it exists.
    let other_admin = user("root", "globex", true);
    assert!(matches!(
        a.decide(&req.id, true, &other_admin, T0).await,
        Err(ApprovalError::NotFound)
    ));
    assert!(a.pending(&other_admin, T0).await.unwrap().is_empty());
    assert_eq!(a.pending(&alice("acme"), T0).await.unwrap().len(), 1);
    let admin = user("carol", "acme", true);
    let decided = a.decide(&req.id, false, &admin, T0).await.unwrap();
    assert_eq!(decided.approval.status, ApprovalStatus::Denied);
    assert!(decided.token.is_none());
    assert!(matches!(
        a.decide(&req.id, true, &alice("acme"), T0).await,
        Err(ApprovalError::NotPending)
    ));
}

#[tokio::test]
async fn an_external_issuers_subject_is_not_the_local_user_of_that_name() {
    let a = approvals().await;
    let mut p = principal("acme", "alice", "ghk_bot");
    p.issuer = Some("https://idp.example".into());
    let args = json!({"to": "x@example.com"});
    let req = a.request(&p, "send_email", &args, &[], T0).await.unwrap();
    assert_eq!(req.human_issuer.as_deref(), Some("https://idp.example"));
    // The local alice neither sees nor decides it as her own.
    assert!(a.pending(&alice("acme"), T0).await.unwrap().is_empty());
    assert!(matches!(
        a.decide(&req.id, true, &alice("acme"), T0).await,
        Err(ApprovalError::Forbidden)
    ));
    // An admin of the tenant still may.
    let admin = user("carol", "acme", true);
    let decided = a.decide(&req.id, true, &admin, T0).await.unwrap();
    assert_eq!(decided.approval.status, ApprovalStatus::Approved);
}

#[tokio::test]
async fn an_operation_token_runs_exactly_the_approved_call_once() {
    let a = approvals().await;
    let p = principal("acme", "alice", "ghk_bot");
    let args = json!({"to": "x@example.com", "subject": "hi"});
    let req = a.request(&p, "send_email", &args, &[], T0).await.unwrap();
    let token = a
        .decide(&req.id, true, &alice("acme"), T0)
        .await
        .unwrap()
        .token
        .unwrap();
    assert!(token.starts_with(OPERATION_TOKEN_PREFIX));
    let redeem = |p: Principal, tool: &'static str, args: serde_json::Value, token: String| {
        let a = &a;
        async move { a.redeem(&p, tool, &args, &token, T0).await.unwrap() }
    };
    // Every mismatch is refused and burns nothing.
    let other_args = json!({"to": "evil@example.net", "subject": "hi"});
    assert_eq!(
        redeem(p.clone(), "send_email", other_args, token.clone()).await,
        Err(TokenRefusal::Mismatch)
    );
    assert_eq!(
        redeem(p.clone(), "write_file", args.clone(), token.clone()).await,
        Err(TokenRefusal::Mismatch)
    );
    assert_eq!(
        redeem(
            principal("acme", "alice", "ghk_other"),
            "send_email",
            args.clone(),
            token.clone()
        )
        .await,
        Err(TokenRefusal::Mismatch)
    );
    assert_eq!(
        redeem(
            principal("globex", "alice", "ghk_bot"),
            "send_email",
            args.clone(),
            token.clone()
        )
        .await,
        Err(TokenRefusal::Invalid)
    );
    let mut in_task = p.clone();
    in_task.task = Some(TaskGrant {
        id: "tg_x".into(),
        task: "outreach".into(),
        tools: vec!["send_email".into()],
        expires_at: Timestamp(i64::MAX),
        issued_at: None,
    });
    assert_eq!(
        redeem(in_task, "send_email", args.clone(), token.clone()).await,
        Err(TokenRefusal::Mismatch)
    );
    assert_eq!(
        redeem(p.clone(), "send_email", args.clone(), "gho_forged".into()).await,
        Err(TokenRefusal::Invalid)
    );
    let redeemed = redeem(p.clone(), "send_email", args.clone(), token.clone())
        .await
        .unwrap();
    assert_eq!(redeemed.id, req.id);
    assert_eq!(redeemed.status, ApprovalStatus::Redeemed);
    assert_eq!(
        redeem(p.clone(), "send_email", args.clone(), token.clone()).await,
        Err(TokenRefusal::Used)
    );
}

#[tokio::test]
async fn an_operation_token_expires_after_its_lifetime() {
    let a = approvals().await;
    let p = principal("acme", "alice", "ghk_bot");
    let args = json!({"to": "x@example.com"});
    let req = a.request(&p, "send_email", &args, &[], T0).await.unwrap();
    let token = a
        .decide(&req.id, true, &alice("acme"), T0)
        .await
        .unwrap()
        .token
        .unwrap();
    let late = T0.plus_millis(ApprovalSettings::default().token_ttl_ms);
    assert_eq!(
        a.redeem(&p, "send_email", &args, &token, late)
            .await
            .unwrap(),
        Err(TokenRefusal::Expired)
    );
}

#[tokio::test]
async fn a_pending_approval_cannot_be_decided_after_it_expired() {
    let a = approvals().await;
    let p = principal("acme", "alice", "ghk_bot");
    let args = json!({});
    let req = a.request(&p, "send_email", &args, &[], T0).await.unwrap();
    let late = T0.plus_millis(ApprovalSettings::default().pending_ttl_ms);
    assert!(matches!(
        a.decide(&req.id, true, &alice("acme"), late).await,
        Err(ApprovalError::NotPending)
    ));
}

/// Issue 9 item 5: the record holds the arguments as called (nothing the
/// audit heuristics would redact is hidden from the approver); only the
/// policy's `redact` fields are masked, each with the SHA-256 of its value.
#[tokio::test]
async fn the_record_shows_the_exact_arguments_but_masks_the_policys_fields() {
    let a = approvals().await;
    let p = principal("acme", "alice", "ghk_bot");
    let args = json!({
        "to": "Q3Xk9mPqR7vT2nWz8yLb4cHd6fJg1sAe@exfil.example",
        "subject": "Basic dXNlcjpwYXNz",
        "body": "the numbers",
        "cc": null,
    });
    let req = a
        .request(&p, "send_email", &args, &["Body".into(), "cc".into()], T0)
        .await
        .unwrap();
    let shown: serde_json::Value = serde_json::from_str(&req.arguments).unwrap();
    assert_eq!(shown["to"], args["to"]);
    assert_eq!(shown["subject"], args["subject"]);
    assert_eq!(shown["body"], "[REDACTED]");
    assert_eq!(shown["cc"], serde_json::Value::Null);
    // The masked field's fingerprint and the binding are keyed with the
    // pepper: a reader of the record cannot try guesses against them (a
    // plain SHA-256 of "the numbers" or of the arguments would match).
    let plain = |v: &serde_json::Value| {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(crate::canonical_json(v).as_bytes()))
    };
    let masked = &req.masked_fields["body"];
    assert_eq!(masked.len(), 64);
    assert_ne!(*masked, plain(&json!("the numbers")));
    assert!(!req.arguments.contains("the numbers"));
    // The binding is the keyed hash of the exact arguments.
    assert_eq!(req.arguments_hash, a.arguments_hash(&args));
    assert_ne!(req.arguments_hash, plain(&args));
    // The same value in another approval has another fingerprint.
    let other = a
        .request(
            &p,
            "send_email",
            &json!({"to": "x@example.com", "body": "the numbers"}),
            &["body".into()],
            T0,
        )
        .await
        .unwrap();
    assert_ne!(other.masked_fields["body"], *masked);
}

#[tokio::test]
async fn a_decision_made_as_an_account_that_changed_decides_nothing() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let a = approvals_in(Arc::clone(&store)).await;
    let p = principal("acme", "alice", "ghk_bot");
    let req = a
        .request(&p, "send_email", &json!({"to": "x@example.com"}), &[], T0)
        .await
        .unwrap();
    // `users passwd alice` committed while her approval page was posted.
    assert!(
        store
            .change_user_password("alice", "$argon2id$new", true, T0)
            .await
            .unwrap()
    );
    assert!(matches!(
        a.decide(&req.id, true, &alice("acme"), T0).await,
        Err(ApprovalError::AccountChanged)
    ));
    assert_eq!(
        store.approval(&req.id).await.unwrap().unwrap().status,
        ApprovalStatus::Pending
    );
    // Signed in again (the account as it is now): decided.
    let now_alice = Decider::User {
        username: "alice".into(),
        tenant: "acme".into(),
        admin: false,
        account: AccountSeen {
            password_hash: "$argon2id$new".into(),
            roles: vec!["reader".into()],
        },
    };
    let decided = a.decide(&req.id, true, &now_alice, T0).await.unwrap();
    assert_eq!(decided.approval.status, ApprovalStatus::Approved);
    assert!(decided.token.is_some());
}
