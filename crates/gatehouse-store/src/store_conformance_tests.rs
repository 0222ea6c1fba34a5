//! Behaviour every `Store` must show, written once and run against each
//! implementation: `conformance_tests!` expands to one `#[tokio::test]` per
//! check, given a runner that makes a fresh store and runs the check on it.
//! Serial checks get any store; concurrent ones need a store whose
//! connections really race (several connections to one database).

use std::collections::BTreeSet;
use std::sync::Arc;

use gatehouse_core::{AuditEvent, AuditKind, ChainLink, Outcome, Timestamp};

use crate::{
    AccountSeen, AckOutcome, AlertRecord, ApiKeyRecord, ApprovalCall, ApprovalDecision,
    ApprovalRecord, ApprovalRequester, ApprovalStatus, AuditCheckpoint, AuditQuery, AuthCodeRecord,
    AuthLock, ClientRecord, CodeRedemption, DeliveryResult, DeliveryState, DeviceDecision,
    DevicePoll, DeviceRecord, DeviceStatus, GrantRecord, LoginCounter, LoginThrottle, NewGrant,
    OperationBinding, PreviousSecret, RefreshRotation, RefreshTokenRecord, RolesChange,
    SigningKeyRecord, Store, StoreError, TaskGrantRecord, ToolDefinitionRecord, UserRecord,
};

pub(crate) type TestStore = Arc<dyn Store>;

/// Expands to the conformance tests for one implementation. `serial` and
/// `concurrent` are async fns taking a closure `FnOnce(TestStore) -> Future`.
macro_rules! conformance_tests {
    (serial: $serial:path, concurrent: $concurrent:path $(,)?) => {
        $crate::store_conformance_tests::conformance_tests!(@tests $serial;
            api_key_round_trip,
            api_keys_are_paged_in_id_order_each_once,
            api_key_revoke_is_once,
            api_key_rotate_limits_old_key_and_happens_once,
            api_key_rotate_never_extends_an_earlier_expiry,
            audit_append_and_filter,
            audit_batch_is_all_or_nothing,
            audit_chain_links_and_checkpoints_round_trip,
            records_and_checkpoints_of_a_batch_are_stored_together,
            large_audit_batches_span_several_inserts,
            secrets_are_tenant_scoped,
            unsealed_secrets_are_found_and_replaced_only_if_unchanged,
            settings_round_trip,
            clients_round_trip_and_revoke_once,
            a_client_secret_rotation_keeps_one_previous_secret,
            signing_keys_round_trip_in_order,
            a_signing_key_is_revoked_once,
            revoked_tokens_are_listed_until_past_the_leeway,
            a_code_is_redeemed_once_and_a_replay_names_its_grant,
            an_expired_code_is_invalid,
            revoking_a_grant_revokes_its_access_tokens_and_refresh_tokens,
            refresh_rotation_and_its_grant,
            authorization_requests_are_taken_once,
            users_round_trip,
            consents_round_trip,
            login_failures_count_per_source_and_per_name,
            disabling_a_user_ends_sessions_and_grants,
            changing_a_password_ends_sessions_and_what_the_user_authorized,
            a_password_change_may_keep_the_grants_but_never_the_sessions,
            an_enabled_user_signs_in_again_without_what_the_disable_revoked,
            a_browser_session_is_deleted_once,
            a_session_starts_only_under_the_password_the_sign_in_checked,
            an_approval_is_decided_only_by_the_account_the_decision_saw,
            a_grant_is_stored_only_for_the_user_its_decision_saw,
            device_polls_pending_slow_down_approved_once,
            a_denied_device_authorization_reports_denied,
            unused_dynamic_clients_are_deleted,
            registrations_never_granted_expire_and_the_oldest_makes_room,
            metadata_document_clients_are_capped_and_unused_ones_deleted,
            purge_removes_only_expired_records,
            task_grants_round_trip_and_only_live_ones_are_listed,
            revoking_a_task_grant_revokes_its_token_once,
            approvals_round_trip_and_list,
            a_calls_pending_approval_is_found_and_requesters_counted,
            an_approval_is_decided_once,
            a_denied_approval_is_final_and_issues_no_token,
            an_expired_approval_cannot_be_decided,
            an_operation_token_is_redeemed_once,
            a_mismatching_binding_redeems_nothing,
            only_an_approved_unexpired_token_is_redeemed,
            auth_failures_count_within_a_window_lock_and_clear,
            clearing_a_keys_lock_clears_it_from_every_source,
            purge_removes_gating_records_a_day_after_they_end,
            tool_pins_record_a_change_once_and_approve_only_what_was_reviewed,
            an_assertion_is_used_once_until_it_expires,
            federated_users_are_created_with_their_link_and_nothing_half,
            a_grant_without_a_code_is_revoked_with_its_user,
            a_role_taken_away_revokes_what_the_user_authorized,
            roles_from_older_claims_do_not_replace_newer_ones,
            a_lease_is_held_until_it_expires_and_then_taken_over,
            a_lifecycle_notice_is_recorded_once_per_basis,
            grant_use_is_recorded_coalesced_and_only_live_grants_are_listed,
            a_signing_key_gets_one_automatic_successor,
            alerts_are_listed_newest_first_and_acknowledged_once,
            alert_deliveries_are_claimed_when_due_retried_and_finished,
        );
        $crate::store_conformance_tests::conformance_tests!(@tests $concurrent;
            concurrent_redemptions_of_one_code_let_exactly_one_through,
            concurrent_refreshes_rotate_exactly_once,
            concurrent_issue_and_revoke_never_leave_a_token_unlisted,
            concurrent_takes_of_a_request_succeed_once,
            concurrent_device_polls_are_slowed_down,
            concurrent_device_decisions_decide_once,
            concurrent_consents_and_a_password_change_leave_no_live_grant,
            concurrent_key_rotations_rotate_once,
            concurrent_revocations_revoke_once,
            concurrent_client_secret_rotations_rotate_once,
            concurrent_redemptions_of_one_operation_token_let_exactly_one_through,
            concurrent_decisions_of_one_approval_decide_once,
            concurrent_task_grant_revocations_revoke_once,
            concurrent_auth_failures_each_count,
            concurrent_login_failures_each_count,
            concurrent_sightings_of_one_change_record_it_once,
            a_pin_is_extended_only_from_the_definition_it_holds,
            concurrent_uses_of_one_assertion_let_exactly_one_through,
            concurrent_role_settings_end_with_the_latest_claims,
            concurrent_lease_takers_get_it_once,
            concurrent_notices_are_recorded_once,
            concurrent_signing_key_successors_are_added_once,
            concurrent_claims_of_one_alert_deliver_it_once,
            concurrent_acks_of_one_alert_ack_it_once,
        );
    };
    (@tests $run:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $run(|store| $crate::store_conformance_tests::$name(store)).await;
            }
        )*
    };
}
pub(crate) use conformance_tests;

// --- fixtures ---------------------------------------------------------------

pub(crate) fn key(id: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: format!("name-{id}"),
        tenant: "default".into(),
        role: "reader".into(),
        scopes: Some(vec!["tools:read".into()]),
        owner: Some("alice".into()),
        secret_hash: "00".repeat(32),
        created_at: Timestamp(1_000),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        rotated_to: None,
    }
}

fn event(id: &str, ts: i64, tool: &str, outcome: Outcome) -> AuditEvent {
    AuditEvent {
        id: id.into(),
        ts: Timestamp(ts),
        kind: AuditKind::ToolDecision,
        tenant: Some("default".into()),
        human: Some("alice".into()),
        agent: Some("k1".into()),
        credential: Some("k1".into()),
        issuer: None,
        session: None,
        source: Some("127.0.0.1".into()),
        tool: Some(tool.into()),
        arguments: Some(serde_json::json!({"path": "a.txt"})),
        args_sha256: Some("cd".repeat(32)),
        approval: Some("apr_x".into()),
        decision: Some("allow".into()),
        reason: None,
        outcome,
        error: None,
        latency_us: Some(12),
        result_bytes: Some(3),
        request_id: Some("0197a1b2-req".into()),
        link: None,
    }
}

fn client(id: &str) -> ClientRecord {
    ClientRecord {
        id: id.into(),
        name: "bot".into(),
        tenant: "default".into(),
        role: "reader".into(),
        scopes: Some(vec!["tools:read".into()]),
        secret_hash: Some("ab".repeat(32)),
        created_at: Timestamp(10),
        revoked_at: None,
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        grant_types: vec!["client_credentials".into()],
        auth_method: "client_secret_basic".into(),
        registered_by: "operator".into(),
        last_used_at: None,
        may_introspect: false,
        jwks: None,
        jwks_uri: None,
        secret_issued_at: None,
        previous_secret: None,
        machine_tokens_not_before: None,
    }
}

fn grant(id: &str) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        client_id: "ghc_app".into(),
        username: "alice".into(),
        tenant: "acme".into(),
        roles: vec!["reader".into()],
        scope: "tools:read".into(),
        resource: "https://gh.example/mcp".into(),
        created_at: Timestamp(1_000),
        revoked_at: None,
    }
}

/// A grant to store as a decision made under the user's current password
/// hash would (`user(..)` has `STUB_HASH`).
fn decided(grant: &GrantRecord) -> NewGrant<'_> {
    NewGrant {
        grant,
        password_hash: STUB_HASH,
    }
}

fn code(hash: &str, grant_id: &str) -> AuthCodeRecord {
    AuthCodeRecord {
        code_hash: hash.into(),
        grant_id: grant_id.into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        code_challenge: "c".repeat(43),
        expires_at: Timestamp(61_000),
    }
}

fn refresh(hash: &str, grant_id: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        token_hash: hash.into(),
        grant_id: grant_id.into(),
        scope: "tools:read".into(),
        resource: "https://gh.example/mcp".into(),
        created_at: Timestamp(1_000),
        expires_at: Timestamp(1_000_000),
    }
}

/// The password hash of [`user`].
const STUB_HASH: &str = "$argon2id$stub";

fn user(name: &str) -> UserRecord {
    UserRecord {
        username: name.into(),
        tenant: "acme".into(),
        roles: vec!["reader".into()],
        password_hash: STUB_HASH.into(),
        created_at: Timestamp(0),
        disabled_at: None,
    }
}

fn device(hash: &str, user_code: &str) -> DeviceRecord {
    DeviceRecord {
        device_code_hash: hash.into(),
        user_code: user_code.into(),
        client_id: "ghc_tv".into(),
        scope: "tools:read".into(),
        resource: "https://gh.example/mcp".into(),
        created_at: Timestamp(0),
        expires_at: Timestamp(600_000),
        interval_secs: 5,
        status: DeviceStatus::Pending,
        grant_id: None,
    }
}

/// Runs `n` copies of `f` at once and collects their results.
async fn race<T, F, Fut>(store: &TestStore, n: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(TestStore, usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(f(Arc::clone(store), i)))
        .collect();
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

// --- API keys, audit, secrets, settings --------------------------------------

pub(crate) async fn api_keys_are_paged_in_id_order_each_once(store: TestStore) {
    for id in ["k07", "k03", "k11", "k01", "k05", "k09", "k02"] {
        store.insert_api_key(&key(id)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.api_keys_page(&after, 3).await.unwrap();
        assert!(page.len() <= 3, "{page:?}");
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        seen.extend(page.into_iter().map(|k| k.id));
    }
    assert_eq!(seen, ["k01", "k02", "k03", "k05", "k07", "k09", "k11"]);
    assert!(store.api_keys_page("k11", 3).await.unwrap().is_empty());
}

pub(crate) async fn api_key_round_trip(store: TestStore) {
    assert_eq!(store.count_api_keys().await.unwrap(), 0);
    store.insert_api_key(&key("k1")).await.unwrap();
    assert_eq!(store.api_key("k1").await.unwrap(), Some(key("k1")));
    assert_eq!(store.api_key("nope").await.unwrap(), None);
    assert_eq!(store.count_api_keys().await.unwrap(), 1);
    assert!(matches!(
        store.insert_api_key(&key("k1")).await,
        Err(StoreError::Conflict)
    ));
    let mut bare = key("k0");
    bare.scopes = None;
    bare.owner = None;
    bare.expires_at = Some(Timestamp(5));
    bare.last_used_at = Some(Timestamp(4));
    store.insert_api_key(&bare).await.unwrap();
    store.touch_api_key("k0", Timestamp(6)).await.unwrap();
    bare.last_used_at = Some(Timestamp(6));
    assert_eq!(store.list_api_keys().await.unwrap(), vec![bare, key("k1")]);
}

pub(crate) async fn api_key_revoke_is_once(store: TestStore) {
    store.insert_api_key(&key("k1")).await.unwrap();
    let before = store.credential_generation();
    assert!(before.is_some());
    assert!(store.revoke_api_key("k1", Timestamp(5)).await.unwrap());
    assert_ne!(store.credential_generation(), before);
    assert!(!store.revoke_api_key("k1", Timestamp(6)).await.unwrap());
    assert!(!store.revoke_api_key("missing", Timestamp(6)).await.unwrap());
    let stored = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(Timestamp(5)));
}

pub(crate) async fn api_key_rotate_limits_old_key_and_happens_once(store: TestStore) {
    store.insert_api_key(&key("k1")).await.unwrap();
    let before = store.credential_generation();
    assert!(
        store
            .rotate_api_key("k1", &key("k2"), Timestamp(9_000))
            .await
            .unwrap()
    );
    assert_ne!(store.credential_generation(), before);
    let old = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(old.expires_at, Some(Timestamp(9_000)));
    assert_eq!(old.rotated_to.as_deref(), Some("k2"));
    assert_eq!(store.api_key("k2").await.unwrap(), Some(key("k2")));
    // A second rotation of the same key is refused and inserts nothing.
    assert!(
        !store
            .rotate_api_key("k1", &key("k3"), Timestamp(9_000))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("k3").await.unwrap(), None);
    // So is rotating a revoked key.
    store.revoke_api_key("k2", Timestamp(1)).await.unwrap();
    assert!(
        !store
            .rotate_api_key("k2", &key("k4"), Timestamp(9_000))
            .await
            .unwrap()
    );
    assert_eq!(store.count_api_keys().await.unwrap(), 2);
}

pub(crate) async fn api_key_rotate_never_extends_an_earlier_expiry(store: TestStore) {
    let mut short = key("k1");
    short.expires_at = Some(Timestamp(2_000));
    store.insert_api_key(&short).await.unwrap();
    assert!(
        store
            .rotate_api_key("k1", &key("k2"), Timestamp(9_000))
            .await
            .unwrap()
    );
    let old = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(old.expires_at, Some(Timestamp(2_000)));
}

/// The audit writer's batch (records and checkpoints) is one transaction:
/// a checkpoint the store refuses takes the batch's records with it, so
/// the writer, told the batch failed, never links over records that were
/// kept.
pub(crate) async fn records_and_checkpoints_of_a_batch_are_stored_together(store: TestStore) {
    let checkpoint = AuditCheckpoint {
        chain: "i-a".into(),
        seq: 1,
        hash: format!("{:064}", 1),
        ts: Timestamp(9_000),
        jws: "h.p.s".into(),
    };
    let first = event("e1", 100, "read_file", Outcome::Success);
    store
        .append_audit_batch(vec![first.clone()], std::slice::from_ref(&checkpoint))
        .await
        .unwrap();
    // The same checkpoint again is refused, and the record beside it goes too.
    let second = event("e2", 200, "read_file", Outcome::Success);
    assert!(
        store
            .append_audit_batch(vec![second], std::slice::from_ref(&checkpoint))
            .await
            .is_err()
    );
    let rows = store.query_audit(&AuditQuery::default()).await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["e1"]);
    assert_eq!(store.audit_checkpoints().await.unwrap(), vec![checkpoint]);
    // Without checkpoints, a batch is records only.
    let third = event("e3", 300, "read_file", Outcome::Success);
    store.append_audit_batch(vec![third], &[]).await.unwrap();
    assert_eq!(
        store
            .query_audit(&AuditQuery::default())
            .await
            .unwrap()
            .len(),
        2
    );
}

/// A record's chain link and the chain's checkpoints come back exactly as
/// written (`audit verify` recomputes hashes over what it reads), the head
/// of a chain is its highest seq, and pages run oldest first.
pub(crate) async fn audit_chain_links_and_checkpoints_round_trip(store: TestStore) {
    let linked = |id: &str, chain: &str, seq: u64| {
        let mut e = event(id, 100 + seq as i64, "read_file", Outcome::Success);
        e.arguments = Some(serde_json::json!({"b": [1.5, -2, "x"], "a": {"z": null}}));
        // The provider that named the caller is kept too.
        e.issuer = (seq == 2).then(|| "https://idp.example".to_string());
        e.link = Some(ChainLink {
            chain: chain.into(),
            seq,
            prev_hash: format!("{:064}", seq - 1),
            hash: format!("{seq:064}"),
        });
        e
    };
    assert_eq!(store.audit_chain_head("i-a").await.unwrap(), None);
    let mut unlinked = event("u0", 50, "read_file", Outcome::Success);
    unlinked.link = None;
    let written = vec![
        unlinked,
        linked("a1", "i-a", 1),
        linked("b1", "i-b", 1),
        linked("a2", "i-a", 2),
        linked("a3", "i-a", 3),
    ];
    store.append_audit(written.clone()).await.unwrap();
    assert_eq!(
        store.audit_chain_head("i-a").await.unwrap(),
        Some((3, format!("{:064}", 3)))
    );
    assert_eq!(
        store.audit_chain_head("i-b").await.unwrap(),
        Some((1, format!("{:064}", 1)))
    );
    // The records of one provider's callers.
    let from_idp = store
        .query_audit(&AuditQuery {
            issuer: Some("https://idp.example".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = from_idp.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["a2"]);
    let first = store.audit_page(0, 2).await.unwrap();
    let rest = store.audit_page(first[1].seq, 10).await.unwrap();
    let read: Vec<AuditEvent> = first.into_iter().chain(rest).map(|r| r.event).collect();
    assert_eq!(read, written);

    let checkpoint = AuditCheckpoint {
        chain: "i-a".into(),
        seq: 3,
        hash: format!("{:064}", 3),
        ts: Timestamp(9_000),
        jws: "h.p.s".into(),
    };
    let earlier = AuditCheckpoint {
        seq: 1,
        ..checkpoint.clone()
    };
    store.append_audit_checkpoint(&checkpoint).await.unwrap();
    store.append_audit_checkpoint(&earlier).await.unwrap();
    // One checkpoint per chain and seq.
    assert!(store.append_audit_checkpoint(&earlier).await.is_err());
    assert_eq!(
        store.audit_checkpoints().await.unwrap(),
        vec![earlier.clone(), checkpoint.clone()]
    );
    // By time, for the servers that witness other processes' chains.
    let run = AuditCheckpoint {
        chain: "run-b".into(),
        seq: 2,
        hash: format!("{:064}", 2),
        ts: Timestamp(8_000),
        jws: "h.p.s".into(),
    };
    store.append_audit_checkpoint(&run).await.unwrap();
    assert_eq!(
        store
            .audit_checkpoints_since(Timestamp(8_000), 10)
            .await
            .unwrap(),
        vec![run.clone(), earlier.clone(), checkpoint.clone()]
    );
    assert_eq!(
        store
            .audit_checkpoints_since(Timestamp(8_001), 10)
            .await
            .unwrap(),
        vec![earlier, checkpoint.clone()]
    );
    assert_eq!(
        store
            .audit_checkpoints_since(Timestamp(0), 1)
            .await
            .unwrap(),
        vec![run]
    );
    assert_eq!(
        store.audit_last_checkpoint("i-a").await.unwrap(),
        Some(checkpoint)
    );
    assert_eq!(store.audit_last_checkpoint("i-z").await.unwrap(), None);
}

pub(crate) async fn audit_append_and_filter(store: TestStore) {
    store.append_audit(Vec::new()).await.unwrap();
    let mut other = event("e4", 400, "read_file", Outcome::Success);
    other.tenant = Some("other".into());
    other.human = Some("bob".into());
    other.kind = AuditKind::Authentication;
    other.arguments = None;
    other.latency_us = None;
    // A record made outside any HTTP request (the CLI) has no request id.
    other.request_id = None;
    store
        .append_audit(vec![
            event("e1", 100, "read_file", Outcome::Success),
            event("e2", 200, "send_email", Outcome::Denied),
            event("e3", 300, "read_file", Outcome::Denied),
        ])
        .await
        .unwrap();
    store.append_audit(vec![other.clone()]).await.unwrap();
    let all = store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        all[0].event,
        event("e1", 100, "read_file", Outcome::Success)
    );
    assert_eq!(all[3].event, other);

    let ids = |rows: Vec<crate::AuditRow>| {
        rows.into_iter()
            .map(|r| r.event.id)
            .collect::<Vec<String>>()
    };
    let query = |q: AuditQuery| {
        let store = Arc::clone(&store);
        async move { ids(store.query_audit(&q).await.unwrap()) }
    };
    assert_eq!(
        query(AuditQuery {
            outcome: Some(Outcome::Denied),
            tool: Some("read_file".into()),
            ..Default::default()
        })
        .await,
        ["e3"]
    );
    assert_eq!(
        query(AuditQuery {
            since: Some(Timestamp(200)),
            ..Default::default()
        })
        .await,
        ["e2", "e3", "e4"]
    );
    assert_eq!(
        query(AuditQuery {
            limit: Some(2),
            ..Default::default()
        })
        .await,
        ["e3", "e4"]
    );
    assert_eq!(
        query(AuditQuery {
            after_seq: Some(all[1].seq),
            ..Default::default()
        })
        .await,
        ["e3", "e4"]
    );
    assert_eq!(
        query(AuditQuery {
            tenant: Some("other".into()),
            ..Default::default()
        })
        .await,
        ["e4"]
    );
    assert_eq!(
        query(AuditQuery {
            principal: Some("bob".into()),
            ..Default::default()
        })
        .await,
        ["e4"]
    );
    // The credential id matches too.
    assert_eq!(
        query(AuditQuery {
            principal: Some("k1".into()),
            tool: Some("send_email".into()),
            ..Default::default()
        })
        .await,
        ["e2"]
    );
    assert_eq!(
        query(AuditQuery {
            kind: Some(AuditKind::ToolDecision),
            outcome: Some(Outcome::Success),
            ..Default::default()
        })
        .await,
        ["e1"]
    );
    assert_eq!(
        query(AuditQuery {
            kind: Some(AuditKind::Authentication),
            ..Default::default()
        })
        .await,
        ["e4"]
    );
    assert!(
        query(AuditQuery {
            principal: Some("nobody".into()),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    // The records of one request (e4 was made outside any).
    assert_eq!(
        query(AuditQuery {
            request_id: Some("0197a1b2-req".into()),
            ..Default::default()
        })
        .await,
        ["e1", "e2", "e3"]
    );
}

pub(crate) async fn audit_batch_is_all_or_nothing(store: TestStore) {
    store
        .append_audit(vec![event("dup", 1, "t", Outcome::Success)])
        .await
        .unwrap();
    // The second event reuses an id, so the whole batch must be rejected.
    let result = store
        .append_audit(vec![
            event("fresh", 2, "t", Outcome::Success),
            event("dup", 3, "t", Outcome::Success),
        ])
        .await;
    assert!(result.is_err());
    let all = store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1);
}

pub(crate) async fn large_audit_batches_span_several_inserts(store: TestStore) {
    // More rows than fit in one statement on either engine.
    let events: Vec<_> = (0..5_000)
        .map(|n| event(&format!("e{n}"), n, "t", Outcome::Success))
        .collect();
    store.append_audit(events.clone()).await.unwrap();
    let rows = store
        .query_audit(&AuditQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 5_000);
    assert_eq!(rows[4_999].event, events[4_999]);
    assert_eq!(rows[0].event, events[0]);
    // A failing last chunk takes the earlier ones with it.
    let mut failing: Vec<_> = (0..4_000)
        .map(|n| event(&format!("f{n}"), n, "t", Outcome::Success))
        .collect();
    failing.push(event("e0", 1, "t", Outcome::Success));
    assert!(store.append_audit(failing).await.is_err());
    let count = store
        .query_audit(&AuditQuery {
            limit: Some(20_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    assert_eq!(count, 5_000);
}

pub(crate) async fn secrets_are_tenant_scoped(store: TestStore) {
    store.put_secret("a", "db", "one").await.unwrap();
    store.put_secret("a", "db", "two").await.unwrap();
    store.put_secret("a", "B", "x").await.unwrap();
    store.put_secret("b", "other", "three").await.unwrap();
    assert_eq!(
        store.secret("a", "db").await.unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(store.secret("b", "db").await.unwrap(), None);
    // Byte order, the same on every engine.
    assert_eq!(store.secret_names("a").await.unwrap(), vec!["B", "db"]);
    assert!(store.delete_secret("a", "db").await.unwrap());
    assert!(!store.delete_secret("a", "db").await.unwrap());
}

pub(crate) async fn unsealed_secrets_are_found_and_replaced_only_if_unchanged(store: TestStore) {
    let sealed = format!("{}abc", gatehouse_core::SEALED_PREFIX);
    store.put_secret("a", "old", "plain-1").await.unwrap();
    store.put_secret("a", "new", &sealed).await.unwrap();
    store.put_secret("b", "old", "plain-2").await.unwrap();
    // Nearly the prefix is not the prefix.
    store.put_secret("b", "odd", "sealed:v1").await.unwrap();
    assert_eq!(
        store.sealed_secrets().await.unwrap(),
        [("a".to_string(), "new".to_string(), sealed.clone())]
    );
    let unsealed = store.unsealed_secrets().await.unwrap();
    let found: Vec<_> = unsealed
        .iter()
        .map(|(t, n, v)| (t.as_str(), n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("a", "old", "plain-1"),
            ("b", "odd", "sealed:v1"),
            ("b", "old", "plain-2")
        ]
    );
    assert!(
        store
            .replace_secret("a", "old", "plain-1", &sealed)
            .await
            .unwrap()
    );
    assert_eq!(
        store.secret("a", "old").await.unwrap(),
        Some(sealed.clone())
    );
    // Set meanwhile by an operator: left as it is.
    store.put_secret("b", "old", "set-meanwhile").await.unwrap();
    assert!(
        !store
            .replace_secret("b", "old", "plain-2", &sealed)
            .await
            .unwrap()
    );
    assert_eq!(
        store.secret("b", "old").await.unwrap().as_deref(),
        Some("set-meanwhile")
    );
    // Deleted meanwhile: not brought back.
    store.delete_secret("b", "odd").await.unwrap();
    assert!(
        !store
            .replace_secret("b", "odd", "sealed:v1", &sealed)
            .await
            .unwrap()
    );
    assert_eq!(store.secret("b", "odd").await.unwrap(), None);
}

pub(crate) async fn settings_round_trip(store: TestStore) {
    store.put_setting("t", "k", "v1").await.unwrap();
    store.put_setting("t", "k", "v2").await.unwrap();
    assert_eq!(
        store.setting("t", "k").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(store.setting("t", "missing").await.unwrap(), None);
    assert_eq!(
        store.settings("t").await.unwrap(),
        vec![("k".to_string(), "v2".to_string())]
    );
    assert!(store.settings("other").await.unwrap().is_empty());
}

pub(crate) async fn clients_round_trip_and_revoke_once(store: TestStore) {
    store.insert_client(&client("c1")).await.unwrap();
    let mut public = client("c0");
    public.secret_hash = None;
    public.scopes = None;
    public.grant_types = vec!["authorization_code".into(), "refresh_token".into()];
    public.auth_method = "none".into();
    store.insert_client(&public).await.unwrap();
    assert_eq!(store.client("c1").await.unwrap(), Some(client("c1")));
    assert_eq!(store.client("c0").await.unwrap(), Some(public));
    let mut introspector = client("c2");
    introspector.may_introspect = true;
    store.insert_client(&introspector).await.unwrap();
    assert_eq!(store.client("c2").await.unwrap(), Some(introspector));
    let mut signer = client("c3");
    signer.secret_hash = None;
    signer.auth_method = "private_key_jwt".into();
    signer.jwks = Some(r#"{"keys":[]}"#.into());
    store.insert_client(&signer).await.unwrap();
    let stored = store.client("c3").await.unwrap().unwrap();
    assert_eq!(stored, signer);
    assert!(!stored.is_public() && stored.signs_assertions());
    let mut fetched = client("c4");
    fetched.secret_hash = None;
    fetched.auth_method = "private_key_jwt".into();
    fetched.jwks_uri = Some("https://app.example.com/jwks.json".into());
    assert!(
        store
            .insert_client_within_limit(&fetched, 10)
            .await
            .unwrap()
    );
    assert_eq!(store.client("c4").await.unwrap(), Some(fetched));

    assert!(matches!(
        store.insert_client(&client("c1")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.list_clients().await.unwrap().len(), 5);
    let before = store.credential_generation();
    assert!(store.revoke_client("c1", Timestamp(20)).await.unwrap());
    assert_ne!(store.credential_generation(), before);
    assert!(!store.revoke_client("c1", Timestamp(21)).await.unwrap());
    assert_eq!(
        store.client("c1").await.unwrap().unwrap().revoked_at,
        Some(Timestamp(20))
    );
}

pub(crate) async fn a_client_secret_rotation_keeps_one_previous_secret(store: TestStore) {
    let (first, second, third) = ("ab".repeat(32), "cd".repeat(32), "ef".repeat(32));
    store.insert_client(&client("c1")).await.unwrap();
    let stored = store.client("c1").await.unwrap().unwrap();
    assert_eq!(stored.secret_issued_at(), Timestamp(10));
    assert_eq!(stored.previous_secret, None);

    // Not the current hash: nothing changes.
    assert!(
        !store
            .rotate_client_secret("c1", &third, &second, Timestamp(20), Timestamp(120), None)
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_client_secret("c1", &first, &second, Timestamp(20), Timestamp(120), None)
            .await
            .unwrap()
    );
    let rotated = store.client("c1").await.unwrap().unwrap();
    assert_eq!(rotated.secret_hash.as_deref(), Some(second.as_str()));
    assert_eq!(rotated.secret_issued_at, Some(Timestamp(20)));
    assert_eq!(rotated.created_at, Timestamp(10));
    assert_eq!(
        rotated.previous_secret,
        Some(PreviousSecret {
            hash: first.clone(),
            valid_until: Timestamp(120),
        })
    );
    assert_eq!(
        rotated.previous_secret_hash(Timestamp(119)),
        Some(first.as_str())
    );
    assert_eq!(rotated.previous_secret_hash(Timestamp(120)), None);
    assert_eq!(
        store.list_clients().await.unwrap()[0].previous_secret,
        rotated.previous_secret
    );

    assert_eq!(rotated.machine_tokens_not_before, None);

    // A second rotation keeps only the secret it replaces; this one also
    // cuts off the client's own tokens, which every instance must see.
    let before = store.credential_generation();
    assert!(
        store
            .rotate_client_secret(
                "c1",
                &second,
                &third,
                Timestamp(30),
                Timestamp(40),
                Some(Timestamp(2_000))
            )
            .await
            .unwrap()
    );
    assert_ne!(store.credential_generation(), before);
    let again = store.client("c1").await.unwrap().unwrap();
    assert_eq!(again.machine_tokens_not_before, Some(Timestamp(2_000)));
    assert_eq!(again.secret_hash.as_deref(), Some(third.as_str()));
    assert_eq!(
        again.previous_secret.map(|p| (p.hash, p.valid_until)),
        Some((second.clone(), Timestamp(40)))
    );
    // A later rotation with an earlier cut (its operator's clock behind)
    // does not bring back tokens the first one cut off.
    let fourth = "12".repeat(32);
    assert!(
        store
            .rotate_client_secret(
                "c1",
                &third,
                &fourth,
                Timestamp(45),
                Timestamp(46),
                Some(Timestamp(1_000))
            )
            .await
            .unwrap()
    );
    let later = store.client("c1").await.unwrap().unwrap();
    assert_eq!(later.machine_tokens_not_before, Some(Timestamp(2_000)));

    // Revoked, unknown or public clients are not rotated.
    assert!(store.revoke_client("c1", Timestamp(50)).await.unwrap());
    assert!(
        !store
            .rotate_client_secret("c1", &third, &first, Timestamp(60), Timestamp(70), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .rotate_client_secret(
                "nobody",
                &first,
                &second,
                Timestamp(60),
                Timestamp(70),
                None
            )
            .await
            .unwrap()
    );
    store
        .insert_client(&ClientRecord {
            secret_hash: None,
            auth_method: "none".into(),
            ..client("public")
        })
        .await
        .unwrap();
    assert!(
        !store
            .rotate_client_secret("public", "", &first, Timestamp(60), Timestamp(70), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.client("public").await.unwrap().unwrap().secret_hash,
        None
    );
}

pub(crate) async fn signing_keys_round_trip_in_order(store: TestStore) {
    let before = store.credential_generation();
    for (kid, at) in [("b", 2), ("a", 1)] {
        store
            .insert_signing_key(&SigningKeyRecord {
                kid: kid.into(),
                sealed_pkcs8: vec![0, 1, 2, 255],
                public_jwk: "{}".into(),
                created_at: Timestamp(at),
                activates_at: Timestamp(at),
                revoked_at: None,
            })
            .await
            .unwrap();
    }
    assert_ne!(store.credential_generation(), before);
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(keys[0].sealed_pkcs8, vec![0, 1, 2, 255]);
}

pub(crate) async fn a_signing_key_is_revoked_once(store: TestStore) {
    for kid in ["a", "b"] {
        store
            .insert_signing_key(&SigningKeyRecord {
                kid: kid.into(),
                sealed_pkcs8: vec![1],
                public_jwk: "{}".into(),
                created_at: Timestamp(1),
                activates_at: Timestamp(1),
                revoked_at: None,
            })
            .await
            .unwrap();
    }
    let before = store.credential_generation();
    assert!(store.revoke_signing_key("a", Timestamp(5)).await.unwrap());
    assert_ne!(store.credential_generation(), before);
    assert!(!store.revoke_signing_key("a", Timestamp(6)).await.unwrap());
    assert!(
        !store
            .revoke_signing_key("nope", Timestamp(6))
            .await
            .unwrap()
    );
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(keys[0].revoked_at, Some(Timestamp(5)));
    assert_eq!(keys[1].revoked_at, None);
}

pub(crate) async fn revoked_tokens_are_listed_until_past_the_leeway(store: TestStore) {
    let before = store.credential_generation();
    store
        .revoke_token("j1", Timestamp(100_000), Timestamp(10))
        .await
        .unwrap();
    store
        .revoke_token("j1", Timestamp(100_000), Timestamp(10))
        .await
        .unwrap();
    store
        .revoke_token("j2", Timestamp(50_000), Timestamp(10))
        .await
        .unwrap();
    assert_ne!(store.credential_generation(), before);
    assert_eq!(
        store.revoked_tokens(Timestamp(20)).await.unwrap(),
        vec!["j1", "j2"]
    );
    // An expired token may still be accepted within the verifier's
    // leeway: it stays listed (and survives a purge) until that is over.
    store.purge_expired(Timestamp(80_000)).await.unwrap();
    assert_eq!(
        store.revoked_tokens(Timestamp(80_000)).await.unwrap(),
        vec!["j1", "j2"]
    );
    assert_eq!(
        store
            .revoked_tokens(Timestamp(50_000 + crate::REVOCATION_GRACE_MS + 1))
            .await
            .unwrap(),
        vec!["j1"]
    );
    // Entries past that are dropped on the next revocation, once no
    // instance's clock can be behind enough to still accept the token.
    store
        .revoke_token(
            "j3",
            Timestamp(900_000),
            Timestamp(100_000 + crate::REVOCATION_GRACE_MS),
        )
        .await
        .unwrap();
    assert_eq!(
        store.revoked_tokens(Timestamp(0)).await.unwrap(),
        vec!["j1", "j2", "j3"]
    );
    store
        .revoke_token(
            "j3",
            Timestamp(900_000),
            Timestamp(100_000 + crate::REVOCATION_GRACE_MS + crate::TRIM_CLOCK_SKEW_MS),
        )
        .await
        .unwrap();
    assert_eq!(
        store.revoked_tokens(Timestamp(0)).await.unwrap(),
        vec!["j3"]
    );
}

// --- Authorization --------------------------------------------------------

pub(crate) async fn a_code_is_redeemed_once_and_a_replay_names_its_grant(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    match store.redeem_code("h1", Timestamp(2_000)).await.unwrap() {
        CodeRedemption::Redeemed(c, g) => {
            assert_eq!(c, code("h1", "g1"));
            assert_eq!(g, grant("g1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.redeem_code("h1", Timestamp(3_000)).await.unwrap(),
        CodeRedemption::Replayed {
            grant_id: "g1".into()
        }
    );
    assert_eq!(
        store.redeem_code("nope", Timestamp(3_000)).await.unwrap(),
        CodeRedemption::Invalid
    );
    // A grant and code are stored together or not at all.
    assert!(
        store
            .insert_code_grant(decided(&grant("g2")), &code("h1", "g2"))
            .await
            .is_err()
    );
    assert!(
        !store
            .record_issued("g2", "jti-x", Timestamp(900_000), None)
            .await
            .unwrap()
    );
}

pub(crate) async fn an_expired_code_is_invalid(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_code("h1", Timestamp(61_000)).await.unwrap(),
        CodeRedemption::Invalid
    );
    // A code of a revoked grant is no good either.
    store
        .insert_code_grant(decided(&grant("g2")), &code("h2", "g2"))
        .await
        .unwrap();
    store.revoke_grant("g2", Timestamp(1_500)).await.unwrap();
    assert_eq!(
        store.redeem_code("h2", Timestamp(2_000)).await.unwrap(),
        CodeRedemption::Invalid
    );
}

pub(crate) async fn revoking_a_grant_revokes_its_access_tokens_and_refresh_tokens(
    store: TestStore,
) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    assert!(
        store
            .record_issued(
                "g1",
                "jti-1",
                Timestamp(900_000),
                Some(&refresh("r1", "g1"))
            )
            .await
            .unwrap()
    );
    let before = store.credential_generation();
    assert!(store.revoke_grant("g1", Timestamp(5_000)).await.unwrap());
    assert_ne!(store.credential_generation(), before);
    // Revoked again: nothing changes, and no instance is made to reload.
    let revoked = store.credential_generation();
    assert!(!store.revoke_grant("g1", Timestamp(5_001)).await.unwrap());
    assert_eq!(store.credential_generation(), revoked);
    assert_eq!(
        store.revoked_tokens(Timestamp(5_000)).await.unwrap(),
        vec!["jti-1".to_string()]
    );
    // The refresh token is dead, and presenting it again counts as reuse.
    assert!(matches!(
        store
            .rotate_refresh_token("r1", Timestamp(6_000))
            .await
            .unwrap(),
        RefreshRotation::Reused { .. }
    ));
    // Nothing more can be issued from a revoked grant.
    assert!(
        !store
            .record_issued("g1", "jti-2", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_grant("missing", Timestamp(5_000))
            .await
            .unwrap()
    );
}

pub(crate) async fn refresh_rotation_and_its_grant(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    store
        .record_issued(
            "g1",
            "jti-1",
            Timestamp(900_000),
            Some(&refresh("r1", "g1")),
        )
        .await
        .unwrap();
    assert_eq!(
        store.refresh_token_grant("r1").await.unwrap(),
        Some(grant("g1"))
    );
    assert_eq!(store.refresh_token_grant("nope").await.unwrap(), None);
    assert_eq!(
        store
            .rotate_refresh_token("r1", Timestamp(2_000))
            .await
            .unwrap(),
        RefreshRotation::Rotated(refresh("r1", "g1"), grant("g1"))
    );
    assert_eq!(
        store
            .rotate_refresh_token("r1", Timestamp(3_000))
            .await
            .unwrap(),
        RefreshRotation::Reused {
            grant_id: "g1".into()
        }
    );
    assert_eq!(
        store
            .rotate_refresh_token("nope", Timestamp(3_000))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
    // An expired refresh token is invalid.
    store
        .record_issued(
            "g1",
            "jti-2",
            Timestamp(900_000),
            Some(&refresh("r2", "g1")),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate_refresh_token("r2", Timestamp(1_000_000))
            .await
            .unwrap(),
        RefreshRotation::Invalid
    );
}

pub(crate) async fn authorization_requests_are_taken_once(store: TestStore) {
    store
        .insert_authorization_request("t1", "ghc_app", "{}", Timestamp(0), Timestamp(100))
        .await
        .unwrap();
    assert_eq!(
        store
            .authorization_request("t1", Timestamp(50))
            .await
            .unwrap(),
        Some("{}".into())
    );
    assert_eq!(
        store
            .authorization_request("t1", Timestamp(100))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_authorization_request("t1", Timestamp(100))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_authorization_request("t1", Timestamp(50))
            .await
            .unwrap(),
        Some("{}".into())
    );
    assert_eq!(
        store
            .take_authorization_request("t1", Timestamp(50))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn users_round_trip(store: TestStore) {
    assert_eq!(store.count_users().await.unwrap(), 0);
    store.insert_user(&user("bob")).await.unwrap();
    store.insert_user(&user("alice")).await.unwrap();
    assert!(matches!(
        store.insert_user(&user("bob")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.count_users().await.unwrap(), 2);
    assert_eq!(store.user("bob").await.unwrap(), Some(user("bob")));
    assert_eq!(store.user("carol").await.unwrap(), None);
    assert_eq!(
        store
            .list_users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.username)
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert!(
        store
            .change_user_password("bob", "$new", true, Timestamp(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .change_user_password("carol", "$new", true, Timestamp(5))
            .await
            .unwrap()
    );
    assert_eq!(
        store.user("bob").await.unwrap().unwrap().password_hash,
        "$new"
    );
}

pub(crate) async fn consents_round_trip(store: TestStore) {
    let alice = user("alice");
    store.insert_user(&alice).await.unwrap();
    assert_eq!(store.consent("alice", "ghc_app").await.unwrap(), None);
    assert!(
        store
            .put_consent(&alice, "ghc_app", "tools:read", Timestamp(1))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_consent(&alice, "ghc_app", "tools:read tools:write", Timestamp(2))
            .await
            .unwrap()
    );
    assert_eq!(
        store.consent("alice", "ghc_app").await.unwrap().as_deref(),
        Some("tools:read tools:write")
    );
    assert_eq!(store.consent("bob", "ghc_app").await.unwrap(), None);

    // A consent decided on the account as it was before an operator reset
    // its password (revoking what it authorized), disabled it or took a
    // role away is not written: it would come back after the reset.
    assert!(
        store
            .change_user_password("alice", "$reset", true, Timestamp(3))
            .await
            .unwrap()
    );
    assert_eq!(store.consent("alice", "ghc_app").await.unwrap(), None);
    assert!(
        !store
            .put_consent(&alice, "ghc_app", "tools:read", Timestamp(4))
            .await
            .unwrap()
    );
    assert_eq!(store.consent("alice", "ghc_app").await.unwrap(), None);
    let reset = store.user("alice").await.unwrap().unwrap();
    let mut fewer_roles = reset.clone();
    fewer_roles.roles = vec!["admin".into()];
    assert!(
        !store
            .put_consent(&fewer_roles, "ghc_app", "tools:read", Timestamp(5))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_consent(&reset, "ghc_app", "tools:read", Timestamp(6))
            .await
            .unwrap()
    );
    assert!(store.disable_user("alice", Timestamp(7)).await.unwrap());
    assert!(
        !store
            .put_consent(&reset, "other_app", "tools:read", Timestamp(8))
            .await
            .unwrap()
    );
}

pub(crate) async fn login_failures_count_per_source_and_per_name(store: TestStore) {
    let window = 900_000;
    let a = LoginCounter::Source("192.0.2.1");
    let b = LoginCounter::Source("2001:db8::/64");
    let name = LoginCounter::Name;
    assert_eq!(store.login_throttle("bob", a).await.unwrap(), None);
    for (counter, expected) in [(a, 1), (name, 1), (a, 2), (name, 2), (b, 1), (name, 3)] {
        assert_eq!(
            store
                .record_login_failure("bob", counter, Timestamp(10), window)
                .await
                .unwrap(),
            expected,
            "{counter:?}"
        );
    }
    // Another name's counters are its own.
    assert_eq!(
        store
            .record_login_failure("carol", a, Timestamp(10), window)
            .await
            .unwrap(),
        1
    );
    store.lock_login("bob", a, Timestamp(5_000)).await.unwrap();
    // A lock is never shortened.
    store.lock_login("bob", a, Timestamp(4_000)).await.unwrap();
    // A lock may be set on a counter without failures (another instance's view).
    store
        .lock_login("dave", name, Timestamp(7_000))
        .await
        .unwrap();
    assert_eq!(
        store.login_throttle("bob", a).await.unwrap(),
        Some(LoginThrottle {
            failures: 2,
            locked_until: Timestamp(5_000)
        })
    );
    assert_eq!(
        store.login_throttle("bob", name).await.unwrap(),
        Some(LoginThrottle {
            failures: 3,
            locked_until: Timestamp(0)
        })
    );
    assert_eq!(
        store
            .login_throttle("dave", name)
            .await
            .unwrap()
            .map(|t| t.locked_until),
        Some(Timestamp(7_000))
    );
    // The window runs from the first failure, not the last: a steady
    // trickle does not keep a count alive forever.
    assert_eq!(
        store
            .record_login_failure("bob", name, Timestamp(10 + window - 1), window)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store
            .record_login_failure("bob", name, Timestamp(10 + window + 1), window)
            .await
            .unwrap(),
        1
    );
    // A source that signs in forgets only its own count.
    store.clear_login_counter("bob", a).await.unwrap();
    assert_eq!(store.login_throttle("bob", a).await.unwrap(), None);
    assert!(store.login_throttle("bob", b).await.unwrap().is_some());
    assert!(store.login_throttle("bob", name).await.unwrap().is_some());
    // The operator's unlock forgets every count and lock of the name.
    store.clear_login_failures("bob").await.unwrap();
    for counter in [a, b, name] {
        assert_eq!(store.login_throttle("bob", counter).await.unwrap(), None);
    }
    assert!(store.login_throttle("carol", a).await.unwrap().is_some());
    // A day after they ended, counts and locks are purged.
    store
        .purge_expired(Timestamp(7_000 + 86_400_000))
        .await
        .unwrap();
    assert_eq!(store.login_throttle("carol", a).await.unwrap(), None);
    assert_eq!(store.login_throttle("dave", name).await.unwrap(), None);
}

pub(crate) async fn concurrent_login_failures_each_count(store: TestStore) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let source = format!("192.0.2.{i}");
                store
                    .record_login_failure("bob", LoginCounter::Name, Timestamp(i), 900_000)
                    .await
                    .unwrap();
                store
                    .record_login_failure(
                        "bob",
                        LoginCounter::Source(&source),
                        Timestamp(i),
                        900_000,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 1);
    }
    assert_eq!(
        store
            .login_throttle("bob", LoginCounter::Name)
            .await
            .unwrap()
            .map(|t| t.failures),
        Some(20)
    );
}

pub(crate) async fn disabling_a_user_ends_sessions_and_grants(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    assert!(!format!("{:?}", user("alice")).contains("argon2"));
    store
        .insert_browser_session("s1", "alice", STUB_HASH, Timestamp(0), Timestamp(10_000))
        .await
        .unwrap();
    assert_eq!(
        store.browser_session("s1", Timestamp(5)).await.unwrap(),
        Some("alice".into())
    );
    assert_eq!(
        store
            .browser_session("s1", Timestamp(10_000))
            .await
            .unwrap(),
        None
    );
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    store
        .record_issued("g1", "jti-1", Timestamp(900_000), None)
        .await
        .unwrap();
    // Keys naming alice as owner (in her tenant, in another), one of hers
    // already revoked, and bob's.
    let owned = |id: &str, tenant: &str, owner: &str| ApiKeyRecord {
        tenant: tenant.into(),
        owner: Some(owner.into()),
        ..key(id)
    };
    store
        .insert_api_key(&owned("kalice", "acme", "alice"))
        .await
        .unwrap();
    store
        .insert_api_key(&owned("kelse", "default", "alice"))
        .await
        .unwrap();
    store
        .insert_api_key(&owned("kbob", "acme", "bob"))
        .await
        .unwrap();
    store
        .insert_api_key(&ApiKeyRecord {
            revoked_at: Some(Timestamp(50)),
            ..owned("kold", "acme", "alice")
        })
        .await
        .unwrap();
    let before = store.credential_generation();
    assert!(store.disable_user("alice", Timestamp(100)).await.unwrap());
    assert_ne!(store.credential_generation(), before);
    // Disabling her again changes nothing (the command then records no
    // disable either): a key made since stays.
    store
        .insert_api_key(&owned("klate", "acme", "alice"))
        .await
        .unwrap();
    let between = store.credential_generation();
    assert!(!store.disable_user("alice", Timestamp(101)).await.unwrap());
    assert_eq!(store.credential_generation(), between);
    assert_eq!(
        store.api_key("klate").await.unwrap().unwrap().revoked_at,
        None
    );
    let revoked_at = |id: &'static str| {
        let store = &store;
        async move { store.api_key(id).await.unwrap().unwrap().revoked_at }
    };
    assert_eq!(revoked_at("kalice").await, Some(Timestamp(100)));
    assert_eq!(revoked_at("kold").await, Some(Timestamp(50)));
    // User names are unique across tenants: her key in another tenant too.
    // (Owners are stored in lower case, by `keys create` and migration 0022.)
    assert_eq!(revoked_at("kelse").await, Some(Timestamp(100)));
    assert_eq!(revoked_at("kbob").await, None);
    assert_eq!(
        store.browser_session("s1", Timestamp(200)).await.unwrap(),
        None
    );
    assert_eq!(
        store.revoked_tokens(Timestamp(200)).await.unwrap(),
        vec!["jti-1".to_string()]
    );
    assert!(
        !store
            .record_issued("g1", "jti-2", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().disabled_at,
        Some(Timestamp(100))
    );
}

/// Alice and bob, each with two browser sessions, a grant with an
/// issued access token and a refresh token, a remembered consent, an
/// approved operation token not yet used, and failed logins.
async fn users_with_sessions_and_grants(store: &TestStore) {
    for name in ["alice", "bob"] {
        store.insert_user(&user(name)).await.unwrap();
        for n in 1..=2 {
            store
                .insert_browser_session(
                    &format!("s-{name}-{n}"),
                    name,
                    STUB_HASH,
                    Timestamp(0),
                    Timestamp(100_000),
                )
                .await
                .unwrap();
        }
        let mut g = grant(&format!("g-{name}"));
        g.username = name.into();
        store
            .insert_code_grant(decided(&g), &code(&format!("c-{name}"), &g.id))
            .await
            .unwrap();
        assert!(
            store
                .record_issued(
                    &g.id,
                    &format!("jti-{name}"),
                    Timestamp(900_000),
                    Some(&refresh(&format!("r-{name}"), &g.id)),
                )
                .await
                .unwrap()
        );
        let account = store.user(name).await.unwrap().unwrap();
        assert!(
            store
                .put_consent(&account, "ghc_app", "tools:read", Timestamp(1))
                .await
                .unwrap()
        );
        let id = format!("apr-{name}");
        store
            .insert_approval(&approval(&id, "acme", 1_000))
            .await
            .unwrap();
        store
            .decide_approval(
                &id,
                &approve(&format!("h-{name}")),
                name,
                None,
                Timestamp(2_000),
            )
            .await
            .unwrap()
            .unwrap();
        store
            .record_login_failure(name, LoginCounter::Name, Timestamp(10), 900_000)
            .await
            .unwrap();
    }
}

pub(crate) async fn changing_a_password_ends_sessions_and_what_the_user_authorized(
    store: TestStore,
) {
    users_with_sessions_and_grants(&store).await;
    let at = Timestamp(3_000);
    let before = store.credential_generation();
    assert!(
        store
            .change_user_password("alice", "$argon2id$new", true, at)
            .await
            .unwrap()
    );
    assert_ne!(store.credential_generation(), before);
    let alice = store.user("alice").await.unwrap().unwrap();
    assert_eq!(alice.password_hash, "$argon2id$new");
    assert_eq!(alice.disabled_at, None);
    for n in 1..=2 {
        let id = format!("s-alice-{n}");
        assert_eq!(store.browser_session(&id, at).await.unwrap(), None);
    }
    // Her access token is on the revocation list; her grant issues
    // nothing more and her refresh token and code are dead.
    assert_eq!(
        store.revoked_tokens(at).await.unwrap(),
        vec!["jti-alice".to_string()]
    );
    assert!(
        !store
            .record_issued("g-alice", "jti-new", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.rotate_refresh_token("r-alice", at).await.unwrap(),
        RefreshRotation::Invalid
    );
    assert_eq!(
        store.redeem_code("c-alice", at).await.unwrap(),
        CodeRedemption::Invalid
    );
    assert_eq!(store.consent("alice", "ghc_app").await.unwrap(), None);
    // The operation token she approved and nobody used has expired, also
    // for an instance whose clock runs behind the revoking one's.
    for now in [at, Timestamp(at.0 - 500)] {
        assert_eq!(
            store
                .redeem_operation_token(&binding("h-alice"), now)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .approval("apr-alice")
            .await
            .unwrap()
            .unwrap()
            .token_expires_at,
        Some(Timestamp(0))
    );
    assert_eq!(
        store
            .login_throttle("alice", LoginCounter::Name)
            .await
            .unwrap(),
        None
    );
    // Bob keeps everything.
    assert_eq!(
        store.browser_session("s-bob-1", at).await.unwrap(),
        Some("bob".into())
    );
    assert!(
        store
            .record_issued("g-bob", "jti-bob-2", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert!(store.consent("bob", "ghc_app").await.unwrap().is_some());
    assert!(
        store
            .redeem_operation_token(&binding("h-bob"), at)
            .await
            .unwrap()
            .is_some()
    );
    // No such user: nothing happens.
    assert!(
        !store
            .change_user_password("carol", "$x", true, at)
            .await
            .unwrap()
    );
}

pub(crate) async fn a_password_change_may_keep_the_grants_but_never_the_sessions(store: TestStore) {
    users_with_sessions_and_grants(&store).await;
    let at = Timestamp(3_000);
    assert!(
        store
            .change_user_password("alice", "$argon2id$new", false, at)
            .await
            .unwrap()
    );
    assert_eq!(store.browser_session("s-alice-1", at).await.unwrap(), None);
    assert_eq!(store.browser_session("s-alice-2", at).await.unwrap(), None);
    assert_eq!(
        store.revoked_tokens(at).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(matches!(
        store.rotate_refresh_token("r-alice", at).await.unwrap(),
        RefreshRotation::Rotated(..)
    ));
    assert!(store.consent("alice", "ghc_app").await.unwrap().is_some());
    assert!(
        store
            .redeem_operation_token(&binding("h-alice"), at)
            .await
            .unwrap()
            .is_some()
    );
}

pub(crate) async fn an_enabled_user_signs_in_again_without_what_the_disable_revoked(
    store: TestStore,
) {
    users_with_sessions_and_grants(&store).await;
    let at = Timestamp(3_000);
    assert!(!store.enable_user("alice").await.unwrap(), "not disabled");
    assert!(store.disable_user("alice", at).await.unwrap());
    assert_eq!(store.consent("alice", "ghc_app").await.unwrap(), None);
    assert!(store.enable_user("alice").await.unwrap());
    assert!(!store.enable_user("alice").await.unwrap(), "enabled once");
    assert!(!store.enable_user("carol").await.unwrap());
    assert_eq!(
        store.user("alice").await.unwrap().unwrap().disabled_at,
        None
    );
    // Old sessions and grants stay dead; a new session works.
    assert_eq!(store.browser_session("s-alice-1", at).await.unwrap(), None);
    assert_eq!(
        store.revoked_tokens(at).await.unwrap(),
        vec!["jti-alice".to_string()]
    );
    assert_eq!(
        store.rotate_refresh_token("r-alice", at).await.unwrap(),
        RefreshRotation::Invalid
    );
    store
        .insert_browser_session("s-alice-3", "alice", STUB_HASH, at, Timestamp(100_000))
        .await
        .unwrap();
    assert_eq!(
        store.browser_session("s-alice-3", at).await.unwrap(),
        Some("alice".into())
    );
}

/// A sign-in checks the password, then starts the session: a password
/// change or a disable that commits in between must leave no session
/// (the session insert is bound to the hash the sign-in checked).
pub(crate) async fn a_session_starts_only_under_the_password_the_sign_in_checked(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    let start = |id: &'static str, hash: &'static str| {
        let store = &store;
        async move {
            store
                .insert_browser_session(id, "alice", hash, Timestamp(0), Timestamp(10_000))
                .await
                .unwrap()
        }
    };
    assert!(!start("s0", "$argon2id$other").await);
    assert!(start("s1", STUB_HASH).await);
    // `users passwd` commits while another sign-in (with the old password,
    // already checked) is under way: that sign-in starts nothing.
    assert!(
        store
            .change_user_password("alice", "$argon2id$new", true, Timestamp(5))
            .await
            .unwrap()
    );
    assert!(!start("s2", STUB_HASH).await);
    assert_eq!(
        store.browser_session("s2", Timestamp(6)).await.unwrap(),
        None
    );
    assert!(start("s3", "$argon2id$new").await);
    // Disabled meanwhile: nothing either.
    assert!(store.disable_user("alice", Timestamp(7)).await.unwrap());
    assert!(!start("s4", "$argon2id$new").await);
    assert!(
        !store
            .insert_browser_session("s5", "nobody", STUB_HASH, Timestamp(0), Timestamp(10_000))
            .await
            .unwrap()
    );
}

pub(crate) async fn a_grant_is_stored_only_for_the_user_its_decision_saw(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    let stale = |grant| NewGrant {
        grant,
        password_hash: "$argon2id$old",
    };
    // A consent decided under another password hash stores nothing.
    let g1 = grant("g1");
    assert!(
        !store
            .insert_code_grant(stale(&g1), &code("h1", "g1"))
            .await
            .unwrap()
    );
    assert_eq!(
        store.redeem_code("h1", Timestamp(2_000)).await.unwrap(),
        CodeRedemption::Invalid
    );
    // Another tenant or other roles than the user has now: nothing either
    // (the provider took a role away while the consent page was open).
    let mut other_roles = grant("g2");
    other_roles.roles = vec!["reader".into(), "admin".into()];
    assert!(
        !store
            .insert_code_grant(decided(&other_roles), &code("h2", "g2"))
            .await
            .unwrap()
    );
    let mut other_tenant = grant("g3");
    other_tenant.tenant = "globex".into();
    assert!(!store.insert_grant(decided(&other_tenant)).await.unwrap());
    // A device approved under the old password stays pending, grantless.
    let mut g4 = grant("g4");
    g4.client_id = "ghc_tv".into();
    assert_eq!(
        store
            .decide_device("BCDFGHJK", Some(stale(&g4)), Timestamp(1_000))
            .await
            .unwrap(),
        DeviceDecision::UserChanged
    );
    assert_eq!(
        store
            .device_by_user_code("BCDFGHJK", Timestamp(1_000))
            .await
            .unwrap()
            .map(|d| (d.status, d.grant_id)),
        Some((DeviceStatus::Pending, None))
    );
    // Under the user as they are, everything is stored.
    assert!(
        store
            .insert_code_grant(decided(&grant("g5")), &code("h5", "g5"))
            .await
            .unwrap()
    );
    assert!(store.insert_grant(decided(&grant("g6"))).await.unwrap());
    assert_eq!(
        store
            .decide_device("BCDFGHJK", Some(decided(&g4)), Timestamp(1_000))
            .await
            .unwrap(),
        DeviceDecision::Decided
    );
    // A disabled user gets nothing, whatever the hash.
    assert!(store.disable_user("alice", Timestamp(3_000)).await.unwrap());
    assert!(!store.insert_grant(decided(&grant("g7"))).await.unwrap());
    assert!(
        !store
            .insert_grant(decided(&GrantRecord {
                username: "nobody".into(),
                ..grant("g8")
            }))
            .await
            .unwrap()
    );
    for id in ["g1", "g2", "g3", "g7", "g8"] {
        assert!(
            !store
                .record_issued(id, &format!("jti-{id}"), Timestamp(900_000), None)
                .await
                .unwrap(),
            "{id} must not exist"
        );
    }
}

pub(crate) async fn an_approval_is_decided_only_by_the_account_the_decision_saw(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    for id in ["apr_1", "apr_2", "apr_3"] {
        store
            .insert_approval(&approval(id, "acme", 1_000))
            .await
            .unwrap();
    }
    let seen = AccountSeen {
        password_hash: STUB_HASH.into(),
        roles: vec!["reader".into()],
    };
    let stale = AccountSeen {
        password_hash: "$argon2id$old".into(),
        ..seen.clone()
    };
    let demoted = AccountSeen {
        roles: vec!["reader".into(), "admin".into()],
        ..seen.clone()
    };
    for account in [&stale, &demoted] {
        assert_eq!(
            store
                .decide_approval(
                    "apr_1",
                    &approve("h1"),
                    "alice",
                    Some(account),
                    Timestamp(2_000)
                )
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store.approval("apr_1").await.unwrap().unwrap().status,
        ApprovalStatus::Pending,
        "an account that changed decides nothing"
    );
    let decided = store
        .decide_approval(
            "apr_1",
            &approve("h1"),
            "alice",
            Some(&seen),
            Timestamp(2_000),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    // Another user's name with alice's account: nothing.
    assert_eq!(
        store
            .decide_approval(
                "apr_2",
                &approve("h2"),
                "bob",
                Some(&seen),
                Timestamp(2_000)
            )
            .await
            .unwrap(),
        None
    );
    // Disabled meanwhile: nothing either.
    assert!(store.disable_user("alice", Timestamp(3_000)).await.unwrap());
    assert_eq!(
        store
            .decide_approval(
                "apr_3",
                &approve("h3"),
                "alice",
                Some(&seen),
                Timestamp(3_500)
            )
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn a_browser_session_is_deleted_once(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    for id in ["s1", "s2"] {
        store
            .insert_browser_session(id, "alice", STUB_HASH, Timestamp(0), Timestamp(10_000))
            .await
            .unwrap();
    }
    assert_eq!(
        store.delete_browser_session("s1").await.unwrap(),
        Some("alice".into())
    );
    assert_eq!(store.delete_browser_session("s1").await.unwrap(), None);
    assert_eq!(
        store.browser_session("s1", Timestamp(5)).await.unwrap(),
        None
    );
    assert_eq!(
        store.browser_session("s2", Timestamp(5)).await.unwrap(),
        Some("alice".into())
    );
}

pub(crate) async fn device_polls_pending_slow_down_approved_once(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    assert!(
        store
            .insert_device(&device("d2", "BCDFGHJK"))
            .await
            .is_err()
    );
    assert_eq!(
        store
            .device_by_user_code("BCDFGHJK", Timestamp(1))
            .await
            .unwrap(),
        Some(device("d1", "BCDFGHJK"))
    );
    let poll = |t: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .poll_device("d1", "ghc_tv", Timestamp(t))
                .await
                .unwrap()
        }
    };
    assert_eq!(poll(1_000).await, DevicePoll::Pending);
    // 2 s later is faster than the 5 s interval; the interval becomes 10 s.
    assert_eq!(poll(3_000).await, DevicePoll::SlowDown);
    assert_eq!(poll(9_000).await, DevicePoll::SlowDown);
    assert_eq!(poll(30_000).await, DevicePoll::Pending);
    assert_eq!(
        store
            .device_by_user_code("BCDFGHJK", Timestamp(1))
            .await
            .unwrap()
            .unwrap()
            .interval_secs,
        15
    );
    // Another client cannot poll it.
    assert_eq!(
        store
            .poll_device("d1", "ghc_other", Timestamp(60_000))
            .await
            .unwrap(),
        DevicePoll::Invalid
    );
    let mut g = grant("g-dev");
    g.client_id = "ghc_tv".into();
    assert_eq!(
        store
            .decide_device("BCDFGHJK", Some(decided(&g)), Timestamp(40_000))
            .await
            .unwrap(),
        DeviceDecision::Decided
    );
    // A decision is final.
    assert_eq!(
        store
            .decide_device("BCDFGHJK", None, Timestamp(41_000))
            .await
            .unwrap(),
        DeviceDecision::NotPending
    );
    assert_eq!(poll(100_000).await, DevicePoll::Approved(g));
    assert_eq!(poll(200_000).await, DevicePoll::Invalid);
    assert_eq!(poll(600_000).await, DevicePoll::Expired);
    assert_eq!(
        store
            .device_by_user_code("BCDFGHJK", Timestamp(600_000))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn a_denied_device_authorization_reports_denied(store: TestStore) {
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    assert_eq!(
        store
            .decide_device("BCDFGHJK", None, Timestamp(1_000))
            .await
            .unwrap(),
        DeviceDecision::Decided
    );
    assert_eq!(
        store
            .poll_device("d1", "ghc_tv", Timestamp(10_000))
            .await
            .unwrap(),
        DevicePoll::Denied
    );
    // An expired authorization cannot be decided.
    store
        .insert_device(&device("d2", "XXXXYYYY"))
        .await
        .unwrap();
    assert_eq!(
        store
            .decide_device("XXXXYYYY", None, Timestamp(600_000))
            .await
            .unwrap(),
        DeviceDecision::NotPending
    );
}

pub(crate) async fn registrations_never_granted_expire_and_the_oldest_makes_room(store: TestStore) {
    let dynamic = |id: &str, created_at: i64| ClientRecord {
        registered_by: "dynamic".into(),
        created_at: Timestamp(created_at),
        ..client(id)
    };
    store.insert_client(&dynamic("ghc_a", 10)).await.unwrap();
    store.insert_client(&dynamic("ghc_b", 20)).await.unwrap();
    store.insert_client(&dynamic("ghc_c", 40)).await.unwrap();
    // A sign-in under way with ghc_p (older than ghc_c) until 500.
    store.insert_client(&dynamic("ghc_p", 30)).await.unwrap();
    store
        .insert_authorization_request("req_p", "ghc_p", "{}", Timestamp(30), Timestamp(500))
        .await
        .unwrap();
    // Presenting a public client's id (anyone may) is no use that counts.
    store.touch_client("ghc_c", Timestamp(45)).await.unwrap();
    // A person signed in with ghc_b.
    store.insert_user(&user("alice")).await.unwrap();
    let granted = GrantRecord {
        client_id: "ghc_b".into(),
        ..grant("g_b")
    };
    store
        .insert_code_grant(decided(&granted), &code("h_b", "g_b"))
        .await
        .unwrap();
    store.insert_client(&client("ghc_op")).await.unwrap();
    assert_eq!(
        store
            .delete_unused_dynamic_clients(Timestamp(0), Timestamp(15))
            .await
            .unwrap(),
        1
    );
    assert!(store.client("ghc_a").await.unwrap().is_none());
    assert!(
        store
            .evict_oldest_never_granted_client("dynamic", Timestamp(0))
            .await
            .unwrap()
    );
    assert!(store.client("ghc_c").await.unwrap().is_none());
    // One in a sign-in goes last (anyone may start one), but goes.
    assert!(store.client("ghc_p").await.unwrap().is_some());
    assert!(
        store
            .evict_oldest_never_granted_client("dynamic", Timestamp(0))
            .await
            .unwrap()
    );
    assert!(store.client("ghc_p").await.unwrap().is_none());
    // One with a grant, or the operator's, is never evicted.
    assert!(
        !store
            .evict_oldest_never_granted_client("dynamic", Timestamp(0))
            .await
            .unwrap()
    );
    assert!(store.client("ghc_b").await.unwrap().is_some());
    assert!(store.client("ghc_op").await.unwrap().is_some());
}

pub(crate) async fn unused_dynamic_clients_are_deleted(store: TestStore) {
    let mut dynamic = client("ghc_dyn");
    dynamic.registered_by = "dynamic".into();
    store.insert_client(&dynamic).await.unwrap();
    store.insert_client(&client("ghc_op")).await.unwrap();
    let mut used = client("ghc_used");
    used.registered_by = "dynamic".into();
    store.insert_client(&used).await.unwrap();
    store
        .touch_client("ghc_used", Timestamp(1_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_unused_dynamic_clients(Timestamp(500), Timestamp(0))
            .await
            .unwrap(),
        1
    );
    assert!(store.client("ghc_dyn").await.unwrap().is_none());
    assert!(store.client("ghc_op").await.unwrap().is_some());
    assert_eq!(
        store
            .client("ghc_used")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(Timestamp(1_000))
    );
}

fn metadata_client(id: &str, created_at: i64) -> ClientRecord {
    ClientRecord {
        registered_by: "metadata_document".into(),
        secret_hash: None,
        auth_method: "none".into(),
        created_at: Timestamp(created_at),
        ..client(id)
    }
}

pub(crate) async fn metadata_document_clients_are_capped_and_unused_ones_deleted(store: TestStore) {
    // Clients of other kinds do not count against the cap.
    store.insert_client(&client("ghc_op")).await.unwrap();
    let mut dynamic = client("ghc_dyn");
    dynamic.registered_by = "dynamic".into();
    store.insert_client(&dynamic).await.unwrap();
    for (id, at) in [("https://a.example/c", 100), ("https://b.example/c", 200)] {
        assert!(
            store
                .insert_client_within_limit(&metadata_client(id, at), 2)
                .await
                .unwrap()
        );
    }
    // The table is full: the third is refused, nothing evicted.
    let third = metadata_client("https://c.example/c", 300);
    assert!(!store.insert_client_within_limit(&third, 2).await.unwrap());
    assert!(store.client("https://c.example/c").await.unwrap().is_none());
    // A revoked one no longer counts, and is never deleted as unused: the
    // revocation must outlive it.
    assert!(
        store
            .revoke_client("https://a.example/c", Timestamp(400))
            .await
            .unwrap()
    );
    assert!(store.insert_client_within_limit(&third, 2).await.unwrap());
    // An id that exists is a conflict, as for insert_client.
    assert!(matches!(
        store.insert_client_within_limit(&third, 10).await,
        Err(StoreError::Conflict)
    ));
    // Unused since 250: "b" (created at 200, never used) goes, "c"
    // (created at 300) stays, and so does revoked "a".
    assert_eq!(
        store
            .delete_unused_metadata_document_clients(Timestamp(250), Timestamp(0))
            .await
            .unwrap(),
        1
    );
    assert!(store.client("https://b.example/c").await.unwrap().is_none());
    assert!(store.client("https://c.example/c").await.unwrap().is_some());
    let revoked = store.client("https://a.example/c").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(Timestamp(400)));
    // Use counts, not creation: "c" used at 1000 stays until unused since.
    store
        .touch_client("https://c.example/c", Timestamp(1_000))
        .await
        .unwrap();
    let unused_since =
        |at| store.delete_unused_metadata_document_clients(Timestamp(at), Timestamp(0));
    assert_eq!(unused_since(500).await.unwrap(), 0);
    assert_eq!(unused_since(2_000).await.unwrap(), 1);
    assert!(store.client("https://c.example/c").await.unwrap().is_none());
    assert!(store.client("https://a.example/c").await.unwrap().is_some());
    // Operator and dynamic clients are not touched by this.
    assert!(store.client("ghc_op").await.unwrap().is_some());
    assert!(store.client("ghc_dyn").await.unwrap().is_some());
    // One no person signed in with goes after its hour; the oldest such
    // makes room in a full table; a revoked one is never evicted.
    let d = metadata_client("https://d.example/c", 3_000);
    let e = metadata_client("https://e.example/c", 4_000);
    store.insert_client(&d).await.unwrap();
    store.insert_client(&e).await.unwrap();
    assert_eq!(
        store
            .delete_unused_metadata_document_clients(Timestamp(0), Timestamp(3_500))
            .await
            .unwrap(),
        1
    );
    assert!(store.client("https://d.example/c").await.unwrap().is_none());
    assert!(
        store
            .evict_oldest_never_granted_client("metadata_document", Timestamp(0))
            .await
            .unwrap()
    );
    assert!(store.client("https://e.example/c").await.unwrap().is_none());
    assert!(
        !store
            .evict_oldest_never_granted_client("metadata_document", Timestamp(0))
            .await
            .unwrap()
    );
    assert!(store.client("https://a.example/c").await.unwrap().is_some());
}

pub(crate) async fn purge_removes_only_expired_records(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_authorization_request("old", "c", "{}", Timestamp(0), Timestamp(100))
        .await
        .unwrap();
    store
        .insert_authorization_request("new", "c", "{}", Timestamp(0), Timestamp(10_000))
        .await
        .unwrap();
    store
        .revoke_token("j-old", Timestamp(100), Timestamp(0))
        .await
        .unwrap();
    store
        .revoke_token("j-new", Timestamp(10_000), Timestamp(0))
        .await
        .unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    store.purge_expired(Timestamp(5_000)).await.unwrap();
    assert_eq!(
        store
            .take_authorization_request("new", Timestamp(200))
            .await
            .unwrap(),
        Some("{}".into())
    );
    assert_eq!(
        store
            .take_authorization_request("old", Timestamp(50))
            .await
            .unwrap(),
        None
    );
    // An expired token's revocation outlives it by the verifier's leeway.
    assert_eq!(
        store.revoked_tokens(Timestamp(0)).await.unwrap(),
        vec!["j-new", "j-old"]
    );
    // A used code survives its expiry by a day, so a replay is recognised.
    store.redeem_code("h1", Timestamp(2_000)).await.unwrap();
    store
        .purge_expired(Timestamp(100 + crate::REVOCATION_GRACE_MS))
        .await
        .unwrap();
    assert_eq!(
        store.revoked_tokens(Timestamp(0)).await.unwrap(),
        vec!["j-new", "j-old"],
        "trimmed while another instance's clock may still accept it"
    );
    store
        .purge_expired(Timestamp(
            100 + crate::REVOCATION_GRACE_MS + crate::TRIM_CLOCK_SKEW_MS,
        ))
        .await
        .unwrap();
    assert_eq!(
        store.revoked_tokens(Timestamp(0)).await.unwrap(),
        vec!["j-new"]
    );
    store.purge_expired(Timestamp(70_000)).await.unwrap();
    assert!(matches!(
        store.redeem_code("h1", Timestamp(70_000)).await.unwrap(),
        CodeRedemption::Replayed { .. }
    ));
    store
        .purge_expired(Timestamp(61_000 + 86_400_000))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_code("h1", Timestamp(70_000)).await.unwrap(),
        CodeRedemption::Invalid
    );
}

// --- Gating: task grants, approvals, authentication lockouts ----------------

fn task_grant(id: &str, tenant: &str, created_at: i64) -> TaskGrantRecord {
    TaskGrantRecord {
        id: id.into(),
        tenant: tenant.into(),
        human: Some("alice".into()),
        agent: "k1".into(),
        credential_kind: "api_key".into(),
        credential_id: "k1".into(),
        task: "fix the build".into(),
        tools: vec!["fs.read".into(), "fs.write".into()],
        session_id: Some("s1".into()),
        created_at: Timestamp(created_at),
        expires_at: Timestamp(100_000),
        revoked_at: None,
    }
}

fn approval(id: &str, tenant: &str, created_at: i64) -> ApprovalRecord {
    ApprovalRecord {
        id: id.into(),
        tenant: tenant.into(),
        human: Some("alice".into()),
        human_issuer: Some("https://idp.example".into()),
        agent: "k1".into(),
        credential_id: "k1".into(),
        task_grant: Some("tg_1".into()),
        task: Some("deploy".into()),
        tool: "deploy.run".into(),
        arguments_hash: "ab".repeat(32),
        arguments: r#"{"env":"prod","note":"[REDACTED]"}"#.into(),
        masked_fields: [("note".to_string(), "ef".repeat(32))].into(),
        status: ApprovalStatus::Pending,
        created_at: Timestamp(created_at),
        expires_at: Timestamp(60_000),
        decided_by: None,
        decided_at: None,
        token_hash: None,
        token_expires_at: None,
        redeemed_at: None,
    }
}

fn approve(token_hash: &str) -> ApprovalDecision {
    ApprovalDecision::Approve {
        token_hash: token_hash.into(),
        token_expires_at: Timestamp(30_000),
    }
}

/// The binding that matches `approval(…, "acme", …)` approved with `token_hash`.
fn binding(token_hash: &str) -> OperationBinding {
    OperationBinding {
        token_hash: token_hash.into(),
        tenant: "acme".into(),
        agent: "k1".into(),
        credential_id: "k1".into(),
        task_grant: Some("tg_1".into()),
        tool: "deploy.run".into(),
        arguments_hash: "ab".repeat(32),
    }
}

pub(crate) async fn task_grants_round_trip_and_only_live_ones_are_listed(store: TestStore) {
    let first = task_grant("tg_1", "acme", 1_000);
    let mut second = task_grant("tg_2", "acme", 2_000);
    second.human = None;
    second.session_id = None;
    second.tools = Vec::new();
    let other = task_grant("tg_3", "globex", 3_000);
    let mut expired = task_grant("tg_4", "acme", 4_000);
    expired.expires_at = Timestamp(5_000);
    let mut revoked = task_grant("tg_5", "acme", 5_000);
    revoked.revoked_at = Some(Timestamp(6_000));
    for grant in [&first, &second, &other, &expired, &revoked] {
        store.insert_task_grant(grant).await.unwrap();
    }
    assert!(matches!(
        store.insert_task_grant(&first).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.task_grant("tg_1").await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.task_grant("tg_2").await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(store.task_grant("tg_4").await.unwrap(), Some(expired));
    assert_eq!(store.task_grant("nope").await.unwrap(), None);
    assert_eq!(
        store
            .list_task_grants(Some("acme"), Timestamp(10_000))
            .await
            .unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        store
            .list_task_grants(None, Timestamp(10_000))
            .await
            .unwrap(),
        vec![other, second, first]
    );
    assert_eq!(
        store
            .list_task_grants(Some("nobody"), Timestamp(10_000))
            .await
            .unwrap(),
        Vec::new()
    );
    assert_eq!(
        store
            .list_task_grants(None, Timestamp(100_000))
            .await
            .unwrap(),
        Vec::new()
    );
}

pub(crate) async fn revoking_a_task_grant_revokes_its_token_once(store: TestStore) {
    store
        .insert_task_grant(&task_grant("tg_1", "acme", 1_000))
        .await
        .unwrap();
    let before = store.credential_generation();
    assert!(before.is_some());
    assert!(
        store
            .revoke_task_grant("tg_1", Timestamp(2_000))
            .await
            .unwrap()
    );
    assert_ne!(store.credential_generation(), before);
    // Its task token is refused everywhere until it would have expired.
    assert_eq!(
        store.revoked_tokens(Timestamp(2_000)).await.unwrap(),
        vec!["tg_1"]
    );
    assert_eq!(
        store
            .revoked_tokens(Timestamp(100_000 + crate::REVOCATION_GRACE_MS))
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.task_grant("tg_1").await.unwrap().unwrap().revoked_at,
        Some(Timestamp(2_000))
    );
    assert_eq!(
        store
            .list_task_grants(None, Timestamp(2_000))
            .await
            .unwrap(),
        Vec::new()
    );
    assert!(
        !store
            .revoke_task_grant("tg_1", Timestamp(3_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_task_grant("missing", Timestamp(3_000))
            .await
            .unwrap()
    );
    // The first revocation time stands.
    assert_eq!(
        store.task_grant("tg_1").await.unwrap().unwrap().revoked_at,
        Some(Timestamp(2_000))
    );
}

pub(crate) async fn a_calls_pending_approval_is_found_and_requesters_counted(store: TestStore) {
    let no_grant = ApprovalRecord {
        task_grant: None,
        human_issuer: None,
        ..approval("apr_a", "acme", 1)
    };
    let with_grant = approval("apr_b", "acme", 2);
    let unowned = ApprovalRecord {
        human: None,
        human_issuer: None,
        credential_id: "jti-9".into(),
        agent: "ghc_9".into(),
        ..approval("apr_c", "acme", 3)
    };
    for record in [&no_grant, &with_grant, &unowned] {
        store.insert_approval(record).await.unwrap();
    }
    let hash = "ab".repeat(32);
    let found = |grant: Option<&'static str>, now: i64| {
        let store = &store;
        let hash = hash.clone();
        async move {
            let asked = ApprovalCall {
                tenant: "acme",
                agent: "k1",
                credential_id: "k1",
                task_grant: grant,
                tool: "deploy.run",
                arguments_hash: &hash,
            };
            store
                .pending_approval_for(&asked, Timestamp(now))
                .await
                .unwrap()
                .map(|a| a.id)
        }
    };
    assert_eq!(found(None, 10).await.as_deref(), Some("apr_a"));
    assert_eq!(found(Some("tg_1"), 10).await.as_deref(), Some("apr_b"));
    assert_eq!(found(Some("tg_2"), 10).await, None);
    // Expired: pending no more.
    assert_eq!(found(None, 60_000).await, None);
    let other_tool = ApprovalCall {
        tool: "deploy.other",
        task_grant: None,
        tenant: "acme",
        agent: "k1",
        credential_id: "k1",
        arguments_hash: &hash,
    };
    assert_eq!(
        store
            .pending_approval_for(&other_tool, Timestamp(10))
            .await
            .unwrap(),
        None
    );

    let count = |requester: ApprovalRequester<'static>, tenant: &'static str| {
        let store = &store;
        async move {
            store
                .count_pending_approvals(tenant, &requester, Timestamp(10))
                .await
                .unwrap()
        }
    };
    let alice = |issuer| ApprovalRequester::Human {
        name: "alice",
        issuer,
    };
    assert_eq!(count(alice(None), "acme").await, 1);
    assert_eq!(count(alice(Some("https://idp.example")), "acme").await, 1);
    assert_eq!(count(alice(Some("https://other.example")), "acme").await, 0);
    assert_eq!(count(alice(None), "globex").await, 0);
    let agent = |id, issuer| ApprovalRequester::Agent { id, issuer };
    assert_eq!(count(agent("ghc_9", None), "acme").await, 1);
    // By its agent, not its credential; another issuer's agent of that
    // name is another.
    assert_eq!(count(agent("jti-9", None), "acme").await, 0);
    assert_eq!(
        count(agent("ghc_9", Some("https://idp.example")), "acme").await,
        0
    );
    // An agent counts only where no person stands behind it.
    assert_eq!(count(agent("k1", None), "acme").await, 0);
}

pub(crate) async fn approvals_round_trip_and_list(store: TestStore) {
    let first = approval("apr_1", "acme", 1_000);
    let mut second = approval("apr_2", "acme", 2_000);
    second.human = None;
    second.task_grant = None;
    second.task = None;
    let other = approval("apr_3", "globex", 3_000);
    let mut expired = approval("apr_4", "acme", 500);
    expired.expires_at = Timestamp(5_000);
    let mut denied = approval("apr_5", "acme", 4_000);
    denied.status = ApprovalStatus::Denied;
    denied.decided_by = Some("admin".into());
    denied.decided_at = Some(Timestamp(4_500));
    for record in [&first, &second, &other, &expired, &denied] {
        store.insert_approval(record).await.unwrap();
    }
    assert!(matches!(
        store.insert_approval(&first).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.approval("apr_1").await.unwrap(), Some(first.clone()));
    assert_eq!(store.approval("apr_2").await.unwrap(), Some(second.clone()));
    assert_eq!(store.approval("apr_5").await.unwrap(), Some(denied.clone()));
    assert_eq!(store.approval("nope").await.unwrap(), None);
    assert_eq!(store.approval_by_token("nope").await.unwrap(), None);
    let now = Timestamp(10_000);
    assert_eq!(
        store
            .list_approvals(Some("acme"), false, now)
            .await
            .unwrap(),
        vec![
            denied.clone(),
            second.clone(),
            first.clone(),
            expired.clone()
        ]
    );
    assert_eq!(
        store.list_approvals(Some("acme"), true, now).await.unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        store.list_approvals(None, true, now).await.unwrap(),
        vec![other.clone(), second.clone(), first.clone()]
    );
    assert_eq!(
        store.list_approvals(None, false, now).await.unwrap(),
        vec![denied, other, second, first, expired]
    );
    assert_eq!(
        store
            .list_approvals(Some("nobody"), false, now)
            .await
            .unwrap(),
        Vec::new()
    );
}

pub(crate) async fn an_approval_is_decided_once(store: TestStore) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    let decided = store
        .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    let mut expected = approval("apr_1", "acme", 1_000);
    expected.status = ApprovalStatus::Approved;
    expected.decided_by = Some("alice".into());
    expected.decided_at = Some(Timestamp(2_000));
    expected.token_hash = Some("h1".into());
    expected.token_expires_at = Some(Timestamp(30_000));
    assert_eq!(decided, expected);
    assert_eq!(
        store.approval("apr_1").await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.approval_by_token("h1").await.unwrap(),
        Some(expected.clone())
    );
    // Neither a second approval nor a late denial changes it.
    assert_eq!(
        store
            .decide_approval("apr_1", &approve("h2"), "bob", None, Timestamp(2_500))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .decide_approval(
                "apr_1",
                &ApprovalDecision::Deny,
                "bob",
                None,
                Timestamp(2_500)
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.approval("apr_1").await.unwrap(), Some(expected));
    assert_eq!(store.approval_by_token("h2").await.unwrap(), None);
    assert_eq!(
        store
            .decide_approval("missing", &approve("h3"), "alice", None, Timestamp(2_000))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn a_denied_approval_is_final_and_issues_no_token(store: TestStore) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    let denied = store
        .decide_approval(
            "apr_1",
            &ApprovalDecision::Deny,
            "alice",
            None,
            Timestamp(2_000),
        )
        .await
        .unwrap()
        .unwrap();
    let mut expected = approval("apr_1", "acme", 1_000);
    expected.status = ApprovalStatus::Denied;
    expected.decided_by = Some("alice".into());
    expected.decided_at = Some(Timestamp(2_000));
    assert_eq!(denied, expected);
    assert_eq!(
        store
            .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(2_500))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.approval("apr_1").await.unwrap(), Some(expected));
    assert_eq!(
        store
            .list_approvals(None, true, Timestamp(2_500))
            .await
            .unwrap(),
        Vec::new()
    );
}

pub(crate) async fn an_expired_approval_cannot_be_decided(store: TestStore) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    // It expires at 60 000, inclusive.
    assert_eq!(
        store
            .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(60_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .decide_approval(
                "apr_1",
                &ApprovalDecision::Deny,
                "alice",
                None,
                Timestamp(70_000)
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.approval("apr_1").await.unwrap(),
        Some(approval("apr_1", "acme", 1_000))
    );
    assert_eq!(store.approval_by_token("h1").await.unwrap(), None);
}

pub(crate) async fn an_operation_token_is_redeemed_once(store: TestStore) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    store
        .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    let redeemed = store
        .redeem_operation_token(&binding("h1"), Timestamp(3_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.id, "apr_1");
    assert_eq!(redeemed.status, ApprovalStatus::Redeemed);
    assert_eq!(redeemed.redeemed_at, Some(Timestamp(3_000)));
    assert_eq!(redeemed.token_hash.as_deref(), Some("h1"));
    assert_eq!(
        store.approval("apr_1").await.unwrap(),
        Some(redeemed.clone())
    );
    assert_eq!(
        store
            .redeem_operation_token(&binding("h1"), Timestamp(3_500))
            .await
            .unwrap(),
        None
    );
    // The token still names its approval, to say why it was refused.
    assert_eq!(store.approval_by_token("h1").await.unwrap(), Some(redeemed));
}

pub(crate) async fn a_mismatching_binding_redeems_nothing(store: TestStore) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    let approved = store
        .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    let right = binding("h1");
    let mismatches = [
        (
            "token",
            OperationBinding {
                token_hash: "h2".into(),
                ..right.clone()
            },
        ),
        (
            "tenant",
            OperationBinding {
                tenant: "globex".into(),
                ..right.clone()
            },
        ),
        (
            "agent",
            OperationBinding {
                agent: "k2".into(),
                ..right.clone()
            },
        ),
        (
            "credential",
            OperationBinding {
                credential_id: "k2".into(),
                ..right.clone()
            },
        ),
        (
            "no task grant",
            OperationBinding {
                task_grant: None,
                ..right.clone()
            },
        ),
        (
            "other task grant",
            OperationBinding {
                task_grant: Some("tg_2".into()),
                ..right.clone()
            },
        ),
        (
            "tool",
            OperationBinding {
                tool: "deploy.rollback".into(),
                ..right.clone()
            },
        ),
        (
            "arguments",
            OperationBinding {
                arguments_hash: "cd".repeat(32),
                ..right.clone()
            },
        ),
    ];
    for (what, wrong) in mismatches {
        assert_eq!(
            store
                .redeem_operation_token(&wrong, Timestamp(3_000))
                .await
                .unwrap(),
            None,
            "a binding with another {what} was accepted"
        );
        assert_eq!(
            store.approval("apr_1").await.unwrap().as_ref(),
            Some(&approved),
            "a binding with another {what} changed the approval"
        );
    }
    assert!(
        store
            .redeem_operation_token(&right, Timestamp(3_000))
            .await
            .unwrap()
            .is_some()
    );

    // Approved outside any task grant: a binding naming one does not match.
    let mut outside = approval("apr_2", "acme", 1_000);
    outside.task_grant = None;
    store.insert_approval(&outside).await.unwrap();
    store
        .decide_approval("apr_2", &approve("h2"), "alice", None, Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .redeem_operation_token(&binding("h2"), Timestamp(3_000))
            .await
            .unwrap(),
        None
    );
    let mut without_grant = binding("h2");
    without_grant.task_grant = None;
    assert!(
        store
            .redeem_operation_token(&without_grant, Timestamp(3_000))
            .await
            .unwrap()
            .is_some()
    );
}

pub(crate) async fn only_an_approved_unexpired_token_is_redeemed(store: TestStore) {
    // Expired: the token lives until 30 000, exclusive.
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    store
        .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .redeem_operation_token(&binding("h1"), Timestamp(30_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.approval("apr_1").await.unwrap().unwrap().status,
        ApprovalStatus::Approved
    );
    // Pending or denied, even with a token hash on the record: refused.
    for (id, token, status) in [
        ("apr_2", "h2", ApprovalStatus::Pending),
        ("apr_3", "h3", ApprovalStatus::Denied),
    ] {
        let mut record = approval(id, "acme", 1_000);
        record.status = status;
        record.token_hash = Some(token.into());
        record.token_expires_at = Some(Timestamp(30_000));
        store.insert_approval(&record).await.unwrap();
        assert_eq!(
            store
                .redeem_operation_token(&binding(token), Timestamp(3_000))
                .await
                .unwrap(),
            None,
            "{status:?}"
        );
        assert_eq!(store.approval(id).await.unwrap(), Some(record));
    }
    // A denied approval decided through the store has no token at all.
    store
        .insert_approval(&approval("apr_4", "acme", 1_000))
        .await
        .unwrap();
    store
        .decide_approval(
            "apr_4",
            &ApprovalDecision::Deny,
            "alice",
            None,
            Timestamp(2_000),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .redeem_operation_token(&binding("h4"), Timestamp(3_000))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn auth_failures_count_within_a_window_lock_and_clear(store: TestStore) {
    let window = 900_000;
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(0), window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(10), window)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.auth_locks(Timestamp(10)).await.unwrap(), Vec::new());
    store.lock_auth("key:k1", Timestamp(5_000)).await.unwrap();
    // A lock is never shortened.
    store.lock_auth("key:k1", Timestamp(4_000)).await.unwrap();
    // A failure counts but leaves the lock as it is.
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(20), window)
            .await
            .unwrap(),
        3
    );
    // A subject can be locked without recorded failures.
    store
        .lock_auth("source:10.0.0.1", Timestamp(9_000))
        .await
        .unwrap();
    assert_eq!(
        store.auth_locks(Timestamp(100)).await.unwrap(),
        vec![
            AuthLock {
                subject: "key:k1".into(),
                failures: 3,
                locked_until: Timestamp(5_000),
            },
            AuthLock {
                subject: "source:10.0.0.1".into(),
                failures: 0,
                locked_until: Timestamp(9_000),
            },
        ]
    );
    // Locks end at `locked_until`, exclusive.
    assert_eq!(
        store.auth_locks(Timestamp(5_000)).await.unwrap(),
        vec![AuthLock {
            subject: "source:10.0.0.1".into(),
            failures: 0,
            locked_until: Timestamp(9_000),
        }]
    );
    // The count restarts once its window (started at 0) has passed, even
    // though the last failure is recent.
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(window), window)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(window + 1), window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(window + 2), window)
            .await
            .unwrap(),
        2
    );
    assert!(store.clear_auth_lock("key:k1").await.unwrap());
    assert!(!store.clear_auth_lock("key:k1").await.unwrap());
    assert!(store.clear_auth_lock("source:10.0.0.1").await.unwrap());
    assert_eq!(store.auth_locks(Timestamp(0)).await.unwrap(), Vec::new());
    // Cleared means forgotten: counting starts over.
    assert_eq!(
        store
            .record_auth_failure("key:k1", Timestamp(window + 3), window)
            .await
            .unwrap(),
        1
    );
}

pub(crate) async fn clearing_a_keys_lock_clears_it_from_every_source(store: TestStore) {
    let window = 900_000;
    for subject in [
        "key:k_1@10.0.0.1",
        "key:k_1@2001:db8::/64",
        "key:k_1",
        "key:kx1@10.0.0.1",
        "key:k_10@10.0.0.1",
        "source:10.0.0.1",
    ] {
        store
            .record_auth_failure(subject, Timestamp(0), window)
            .await
            .unwrap();
        store.lock_auth(subject, Timestamp(5_000)).await.unwrap();
    }
    assert!(store.clear_auth_lock("key:k_1").await.unwrap());
    let mut left: Vec<String> = store
        .auth_locks(Timestamp(0))
        .await
        .unwrap()
        .into_iter()
        .map(|lock| lock.subject)
        .collect();
    left.sort();
    // `_` is no wildcard, and a longer id is another key.
    assert_eq!(
        left,
        ["key:k_10@10.0.0.1", "key:kx1@10.0.0.1", "source:10.0.0.1"]
    );
    assert!(!store.clear_auth_lock("key:k_1").await.unwrap());
}

pub(crate) async fn purge_removes_gating_records_a_day_after_they_end(store: TestStore) {
    const DAY: i64 = 86_400_000;
    let mut old_grant = task_grant("tg_old", "acme", 0);
    old_grant.expires_at = Timestamp(10_000);
    let mut new_grant = task_grant("tg_new", "acme", 0);
    new_grant.expires_at = Timestamp(10_000 + DAY);
    store.insert_task_grant(&old_grant).await.unwrap();
    store.insert_task_grant(&new_grant).await.unwrap();
    // Pending until 60 000, never decided.
    store
        .insert_approval(&approval("apr_pending", "acme", 0))
        .await
        .unwrap();
    // Approved with a token that outlives the pending window.
    store
        .insert_approval(&approval("apr_token", "acme", 0))
        .await
        .unwrap();
    store
        .decide_approval(
            "apr_token",
            &ApprovalDecision::Approve {
                token_hash: "h1".into(),
                token_expires_at: Timestamp(60_000 + DAY),
            },
            "alice",
            None,
            Timestamp(1_000),
        )
        .await
        .unwrap()
        .unwrap();
    store
        .record_auth_failure("key:quiet", Timestamp(0), 900_000)
        .await
        .unwrap();
    store
        .record_auth_failure("key:locked", Timestamp(0), 900_000)
        .await
        .unwrap();
    store
        .lock_auth("key:locked", Timestamp(DAY + 100_000))
        .await
        .unwrap();

    // Just over a day after the first ones ended.
    store.purge_expired(Timestamp(60_000 + DAY)).await.unwrap();
    assert_eq!(store.task_grant("tg_old").await.unwrap(), None);
    assert_eq!(store.task_grant("tg_new").await.unwrap(), Some(new_grant));
    assert_eq!(store.approval("apr_pending").await.unwrap(), None);
    assert!(store.approval("apr_token").await.unwrap().is_some());
    assert!(!store.clear_auth_lock("key:quiet").await.unwrap());
    assert!(store.clear_auth_lock("key:locked").await.unwrap());

    store
        .purge_expired(Timestamp(60_000 + 2 * DAY))
        .await
        .unwrap();
    assert_eq!(store.task_grant("tg_new").await.unwrap(), None);
    assert_eq!(store.approval("apr_token").await.unwrap(), None);
}

// --- Concurrency ----------------------------------------------------------

pub(crate) async fn concurrent_redemptions_of_one_code_let_exactly_one_through(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    let results = race(&store, 8, |store, _| async move {
        store.redeem_code("h1", Timestamp(2_000)).await.unwrap()
    })
    .await;
    let mut redeemed = 0;
    for result in results {
        match result {
            CodeRedemption::Redeemed(..) => redeemed += 1,
            CodeRedemption::Replayed { grant_id } => assert_eq!(grant_id, "g1"),
            CodeRedemption::Invalid => panic!("a concurrent attempt saw the code as unknown"),
        }
    }
    assert_eq!(redeemed, 1);
}

pub(crate) async fn concurrent_refreshes_rotate_exactly_once(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    store
        .record_issued(
            "g1",
            "jti-1",
            Timestamp(900_000),
            Some(&refresh("r1", "g1")),
        )
        .await
        .unwrap();
    let results = race(&store, 8, |store, _| async move {
        store
            .rotate_refresh_token("r1", Timestamp(2_000))
            .await
            .unwrap()
    })
    .await;
    let mut rotated = 0;
    for result in results {
        match result {
            RefreshRotation::Rotated(token, grant) => {
                assert_eq!(token.grant_id, "g1");
                assert_eq!(grant.id, "g1");
                rotated += 1;
            }
            RefreshRotation::Reused { grant_id } => assert_eq!(grant_id, "g1"),
            RefreshRotation::Invalid => panic!("a concurrent refresh saw the token as unknown"),
        }
    }
    assert_eq!(rotated, 1);
}

pub(crate) async fn concurrent_issue_and_revoke_never_leave_a_token_unlisted(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    for round in 0..20 {
        let grant_id = format!("g{round}");
        store
            .insert_code_grant(
                decided(&grant(&grant_id)),
                &code(&format!("h{round}"), &grant_id),
            )
            .await
            .unwrap();
        // Seven issuers and one revoker (index 3) race on one grant.
        let results = race(&store, 8, |store, i| {
            let grant_id = grant_id.clone();
            async move {
                if i == 3 {
                    store
                        .revoke_grant(&grant_id, Timestamp(2_000))
                        .await
                        .unwrap();
                    return None;
                }
                let jti = format!("{grant_id}-jti-{i}");
                let refresh = refresh(&format!("{grant_id}-r-{i}"), &grant_id);
                let issued = store
                    .record_issued(&grant_id, &jti, Timestamp(900_000), Some(&refresh))
                    .await
                    .unwrap();
                Some((jti, refresh.token_hash, issued))
            }
        })
        .await;
        let revoked: BTreeSet<String> = store
            .revoked_tokens(Timestamp(2_000))
            .await
            .unwrap()
            .into_iter()
            .collect();
        for (jti, refresh_hash, issued) in results.into_iter().flatten() {
            if issued {
                assert!(
                    revoked.contains(&jti),
                    "round {round}: {jti} was issued but is not revoked"
                );
                // Its refresh token died with the grant.
                assert!(matches!(
                    store
                        .rotate_refresh_token(&refresh_hash, Timestamp(3_000))
                        .await
                        .unwrap(),
                    RefreshRotation::Reused { .. }
                ));
            } else {
                assert!(!revoked.contains(&jti));
                assert_eq!(
                    store.refresh_token_grant(&refresh_hash).await.unwrap(),
                    None
                );
            }
        }
    }
}

pub(crate) async fn an_assertion_is_used_once_until_it_expires(store: TestStore) {
    assert!(
        store
            .use_assertion("ghc_a", "j1", Timestamp(100), Timestamp(0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_assertion("ghc_a", "j1", Timestamp(100), Timestamp(50))
            .await
            .unwrap()
    );
    // The same jti from another issuer is another assertion.
    assert!(
        store
            .use_assertion("ghc_b", "j1", Timestamp(100), Timestamp(50))
            .await
            .unwrap()
    );
    // Once expired, the old use protects nothing (and the assertion itself
    // is refused for its exp before the store is asked).
    assert!(
        store
            .use_assertion("ghc_a", "j1", Timestamp(300), Timestamp(100))
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_assertion("ghc_a", "j1", Timestamp(300), Timestamp(200))
            .await
            .unwrap()
    );
    store.purge_expired(Timestamp(300)).await.unwrap();
    assert!(
        store
            .use_assertion("ghc_a", "j1", Timestamp(400), Timestamp(300))
            .await
            .unwrap()
    );
}

pub(crate) async fn federated_users_are_created_with_their_link_and_nothing_half(store: TestStore) {
    const IDP: &str = "https://login.acme.example";
    store
        .insert_federated_user(&user("acme:u1"), IDP, "U1", Timestamp(5))
        .await
        .unwrap();
    assert_eq!(
        store.federated_user(IDP, "U1").await.unwrap().as_deref(),
        Some("acme:u1")
    );
    assert_eq!(
        store
            .federated_user("https://other.example", "U1")
            .await
            .unwrap(),
        None
    );
    // The same identity again, under another name: refused, and the other
    // name not created.
    assert!(matches!(
        store
            .insert_federated_user(&user("acme:again"), IDP, "U1", Timestamp(5))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.user("acme:again").await.unwrap(), None);
    // A taken name for a new identity: refused, and no link made.
    store.insert_user(&user("alice")).await.unwrap();
    assert!(matches!(
        store
            .insert_federated_user(&user("alice"), IDP, "U2", Timestamp(5))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.federated_user(IDP, "U2").await.unwrap(), None);
    // An existing user linked to a new identity, once.
    store
        .link_federated_user(IDP, "U3", "alice", Timestamp(5))
        .await
        .unwrap();
    assert_eq!(
        store.federated_user(IDP, "U3").await.unwrap().as_deref(),
        Some("alice")
    );
    assert!(matches!(
        store
            .link_federated_user(IDP, "U3", "acme:u1", Timestamp(6))
            .await,
        Err(StoreError::Conflict)
    ));
    let roles = vec!["executor".to_string(), "reader".to_string()];
    let created = store.user("acme:u1").await.unwrap().unwrap().roles;
    // Claims issued before the creation's decide nothing.
    assert_eq!(
        store
            .set_user_roles("acme:u1", &roles, Timestamp(4), Timestamp(7))
            .await
            .unwrap(),
        RolesChange::Superseded {
            current: created.clone()
        }
    );
    assert_eq!(
        store
            .set_user_roles("acme:u1", &roles, Timestamp(6), Timestamp(7))
            .await
            .unwrap(),
        RolesChange::Applied {
            previous: created,
            revoked: false
        }
    );
    assert_eq!(store.user("acme:u1").await.unwrap().unwrap().roles, roles);
    assert_eq!(
        store
            .set_user_roles("nobody", &roles, Timestamp(6), Timestamp(7))
            .await
            .unwrap(),
        RolesChange::NoSuchUser
    );
}

fn admins_and_reader() -> Vec<String> {
    vec!["admin".to_string(), "reader".to_string()]
}

/// Two sign-ins race: one carries the provider's claims from before a role
/// was taken away, one from after. Whichever is written last, the roles are
/// those of the claims issued last; the time of those claims is kept even
/// by a sign-in that changes no role; claims of the same second that only
/// add roles decide nothing, and those that take one away and add another
/// apply the removal only; claims that decide nothing revoke nothing.
pub(crate) async fn roles_from_older_claims_do_not_replace_newer_ones(store: TestStore) {
    users_with_sessions_and_grants(&store).await;
    let at = Timestamp(3_000);
    let ops = vec!["executor".to_string(), "reader".to_string()];
    let readers = vec!["reader".to_string()];
    let set = |roles: &[String], issued: i64| {
        let (store, roles) = (&store, roles.to_vec());
        async move {
            store
                .set_user_roles("alice", &roles, Timestamp(issued), at)
                .await
                .unwrap()
        }
    };
    let applied = |previous: &[String], revoked: bool| RolesChange::Applied {
        previous: previous.to_vec(),
        revoked,
    };
    let superseded = |current: &[String]| RolesChange::Superseded {
        current: current.to_vec(),
    };
    let roles = || async { store.user("alice").await.unwrap().unwrap().roles };
    assert_eq!(set(&ops, 1_000).await, applied(&readers, false));
    // The role taken away, by claims issued at 2 s.
    assert_eq!(set(&readers, 2_000).await, applied(&ops, true));
    // Claims issued at 1.5 s, written after: nothing changes, and nothing
    // is revoked (the generation stays).
    let generation = store.credential_generation();
    assert_eq!(set(&ops, 1_500).await, superseded(&readers));
    assert_eq!(roles().await, readers);
    assert_eq!(store.credential_generation(), generation);
    // The same second: only a role more decides nothing; the same roles,
    // fewer or others do.
    assert_eq!(set(&ops, 2_000).await, superseded(&readers));
    assert_eq!(set(&readers, 2_000).await, applied(&readers, false));
    // Others in the same second: the role taken away goes, the one added
    // does not come (`{admin}` after `{reader}` kept admin).
    let admins = vec!["admin".to_string()];
    let writers = vec!["reader".to_string(), "writer".to_string()];
    assert_eq!(set(&writers, 3_000).await, applied(&readers, false));
    assert_eq!(
        set(&admins, 3_000).await,
        RolesChange::Narrowed {
            previous: writers.clone(),
            current: vec![],
            revoked: true,
        }
    );
    assert!(roles().await.is_empty());
    assert_eq!(set(&readers, 3_000).await, superseded(&[]));
    let four = vec!["reader".to_string(), "auditor".to_string()];
    assert_eq!(set(&four, 4_000).await, applied(&[], false));
    assert_eq!(
        set(&admins_and_reader(), 4_000).await,
        RolesChange::Narrowed {
            previous: four.clone(),
            current: readers.clone(),
            revoked: true,
        }
    );
    assert_eq!(roles().await, readers);
    // Later claims apply, with the role and without it.
    assert_eq!(set(&ops, 5_000).await, applied(&readers, false));
    assert_eq!(set(&readers, 5_000).await, applied(&ops, true));
    // Unchanged roles still move the time on: claims from before it lose.
    assert_eq!(set(&readers, 9_000).await, applied(&readers, false));
    assert_eq!(set(&ops, 8_000).await, superseded(&readers));
    assert_eq!(roles().await, readers);
    assert_eq!(
        store
            .set_user_roles("nobody", &ops, Timestamp(9_500), at)
            .await
            .unwrap(),
        RolesChange::NoSuchUser
    );
}

pub(crate) async fn a_role_taken_away_revokes_what_the_user_authorized(store: TestStore) {
    users_with_sessions_and_grants(&store).await;
    let at = Timestamp(3_000);
    // A role only added: every grant and token lives on.
    let before = store.credential_generation();
    let more = vec!["admin".to_string(), "reader".to_string()];
    assert_eq!(
        store
            .set_user_roles("alice", &more, Timestamp(1_000), at)
            .await
            .unwrap(),
        RolesChange::Applied {
            previous: vec!["reader".to_string()],
            revoked: false
        }
    );
    assert_eq!(store.user("alice").await.unwrap().unwrap().roles, more);
    assert_eq!(store.credential_generation(), before);
    assert_eq!(
        store.revoked_tokens(at).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(
        store
            .record_issued("g-alice", "jti-alice-2", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    // A role taken away: the roles change and everything she authorized
    // ends with them, and the generation moves for the other instances.
    let fewer = vec!["reader".to_string()];
    assert_eq!(
        store
            .set_user_roles("alice", &fewer, Timestamp(2_000), at)
            .await
            .unwrap(),
        RolesChange::Applied {
            previous: more,
            revoked: true
        }
    );
    assert_eq!(store.user("alice").await.unwrap().unwrap().roles, fewer);
    assert_ne!(store.credential_generation(), before);
    let mut revoked = store.revoked_tokens(at).await.unwrap();
    revoked.sort();
    assert_eq!(
        revoked,
        vec!["jti-alice".to_string(), "jti-alice-2".to_string()]
    );
    assert!(
        !store
            .record_issued("g-alice", "jti-new", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.rotate_refresh_token("r-alice", at).await.unwrap(),
        RefreshRotation::Invalid
    );
    assert_eq!(
        store.redeem_code("c-alice", at).await.unwrap(),
        CodeRedemption::Invalid
    );
    assert_eq!(store.consent("alice", "ghc_app").await.unwrap(), None);
    // Bob keeps everything.
    assert!(
        store
            .record_issued("g-bob", "jti-bob-2", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert!(store.consent("bob", "ghc_app").await.unwrap().is_some());
}

pub(crate) async fn a_grant_without_a_code_is_revoked_with_its_user(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_grant(decided(&grant("g-assert")))
        .await
        .unwrap();
    assert!(
        store
            .record_issued("g-assert", "jti-a", Timestamp(900_000), None)
            .await
            .unwrap()
    );
    assert!(store.disable_user("alice", Timestamp(100)).await.unwrap());
    assert_eq!(
        store.revoked_tokens(Timestamp(200)).await.unwrap(),
        vec!["jti-a".to_string()]
    );
}

pub(crate) async fn concurrent_uses_of_one_assertion_let_exactly_one_through(store: TestStore) {
    let results = race(&store, 8, |store, _| async move {
        store
            .use_assertion("ghc_a", "race", Timestamp(100), Timestamp(10))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|used| **used).count(), 1);
}

/// Sign-ins racing with claims issued at different times, some with a
/// role and some without: whatever the order of their writes, the roles
/// end as the latest claims say, and the claims' time is the latest.
pub(crate) async fn concurrent_role_settings_end_with_the_latest_claims(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    let roles = |n: usize| -> Vec<String> {
        if n.is_multiple_of(2) {
            vec!["executor".into(), "reader".into()]
        } else {
            vec!["reader".into()]
        }
    };
    for round in 0..8 {
        let base = 1_000_000 * (round + 1);
        // Spawned newest first, so that the older claims tend to be
        // written last. Fewer racers than `ROLES_SWAP_ATTEMPTS`: each
        // failed swap is another racer's success, so none runs out.
        let n = 8;
        race(&store, n, move |store, i| async move {
            let issued = n - 1 - i;
            store
                .set_user_roles(
                    "alice",
                    &roles(issued + round),
                    Timestamp((base + issued * 1_000) as i64),
                    Timestamp(10),
                )
                .await
                .unwrap()
        })
        .await;
        let user = store.user("alice").await.unwrap().unwrap();
        assert_eq!(user.roles, roles(n - 1 + round), "round {round}");
        // Claims of the round's start no longer apply.
        assert!(matches!(
            store
                .set_user_roles(
                    "alice",
                    &roles(round + 1),
                    Timestamp(base as i64),
                    Timestamp(10)
                )
                .await
                .unwrap(),
            RolesChange::Superseded { .. }
        ));
    }
}

pub(crate) async fn concurrent_takes_of_a_request_succeed_once(store: TestStore) {
    store
        .insert_authorization_request("t1", "ghc_app", "{}", Timestamp(0), Timestamp(100))
        .await
        .unwrap();
    let results = race(&store, 8, |store, _| async move {
        store
            .take_authorization_request("t1", Timestamp(50))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
}

pub(crate) async fn concurrent_device_polls_are_slowed_down(store: TestStore) {
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    let results = race(&store, 8, |store, _| async move {
        store
            .poll_device("d1", "ghc_tv", Timestamp(1_000))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == DevicePoll::Pending)
            .count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == DevicePoll::SlowDown)
            .count(),
        7
    );
    // Each slow-down added 5 s to the interval.
    assert_eq!(
        store
            .device_by_user_code("BCDFGHJK", Timestamp(1))
            .await
            .unwrap()
            .unwrap()
            .interval_secs,
        5 + 7 * 5
    );
}

/// `users passwd` (revoking) races consents decided under the old password:
/// whichever order the database puts them in, no grant made under the old
/// password is left live.
pub(crate) async fn concurrent_consents_and_a_password_change_leave_no_live_grant(
    store: TestStore,
) {
    store.insert_user(&user("alice")).await.unwrap();
    let results = race(&store, 12, |store, i| async move {
        if i == 6 {
            store
                .change_user_password("alice", "$argon2id$new", true, Timestamp(5_000))
                .await
                .unwrap();
            return None;
        }
        let id = format!("g{i}");
        let stored = store
            .insert_code_grant(decided(&grant(&id)), &code(&format!("h{i}"), &id))
            .await
            .unwrap();
        Some((id, stored))
    })
    .await;
    for (id, stored) in results.into_iter().flatten() {
        let live = store
            .record_issued(&id, &format!("jti-{id}"), Timestamp(900_000), None)
            .await
            .unwrap();
        assert!(
            !live,
            "grant {id} (stored: {stored}) outlived the password change"
        );
    }
}

pub(crate) async fn concurrent_device_decisions_decide_once(store: TestStore) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    let results = race(&store, 8, |store, i| async move {
        let mut g = grant(&format!("g-dev-{i}"));
        g.client_id = "ghc_tv".into();
        let approve = i % 2 == 0;
        let decided = store
            .decide_device("BCDFGHJK", approve.then(|| decided(&g)), Timestamp(1_000))
            .await
            .unwrap()
            == DeviceDecision::Decided;
        (decided, approve.then_some(g))
    })
    .await;
    let winners: Vec<_> = results.into_iter().filter(|(d, _)| *d).collect();
    assert_eq!(winners.len(), 1);
    let expected = match &winners[0].1 {
        Some(g) => DevicePoll::Approved(g.clone()),
        None => DevicePoll::Denied,
    };
    assert_eq!(
        store
            .poll_device("d1", "ghc_tv", Timestamp(10_000))
            .await
            .unwrap(),
        expected
    );
}

pub(crate) async fn concurrent_key_rotations_rotate_once(store: TestStore) {
    store.insert_api_key(&key("k1")).await.unwrap();
    let results = race(&store, 8, |store, i| async move {
        store
            .rotate_api_key("k1", &key(&format!("k2-{i}")), Timestamp(9_000))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|r| **r).count(), 1);
    // Only the winner's key was stored.
    assert_eq!(store.count_api_keys().await.unwrap(), 2);
    let old = store.api_key("k1").await.unwrap().unwrap();
    let new = old.rotated_to.unwrap();
    assert!(store.api_key(&new).await.unwrap().is_some());
}

pub(crate) async fn concurrent_revocations_revoke_once(store: TestStore) {
    store.insert_api_key(&key("k1")).await.unwrap();
    store.insert_client(&client("c1")).await.unwrap();
    let keys = race(&store, 8, |store, i| async move {
        store
            .revoke_api_key("k1", Timestamp(i as i64))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(keys.iter().filter(|r| **r).count(), 1);
    let clients = race(&store, 8, |store, i| async move {
        store
            .revoke_client("c1", Timestamp(i as i64))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(clients.iter().filter(|r| **r).count(), 1);
}

pub(crate) async fn concurrent_client_secret_rotations_rotate_once(store: TestStore) {
    store.insert_client(&client("c1")).await.unwrap();
    let first = "ab".repeat(32);
    let rotated = race(&store, 8, move |store, i| {
        let first = first.clone();
        async move {
            let new = format!("{i:02}").repeat(32);
            store
                .rotate_client_secret("c1", &first, &new, Timestamp(20), Timestamp(120), None)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(rotated.iter().filter(|r| **r).count(), 1);
    let winner = rotated.iter().position(|r| *r).unwrap();
    let stored = store.client("c1").await.unwrap().unwrap();
    assert_eq!(stored.secret_hash, Some(format!("{winner:02}").repeat(32)));
    assert_eq!(stored.previous_secret.unwrap().hash, "ab".repeat(32));
}

pub(crate) async fn concurrent_redemptions_of_one_operation_token_let_exactly_one_through(
    store: TestStore,
) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    store
        .decide_approval("apr_1", &approve("h1"), "alice", None, Timestamp(2_000))
        .await
        .unwrap()
        .unwrap();
    let results = race(&store, 16, |store, _| async move {
        store
            .redeem_operation_token(&binding("h1"), Timestamp(3_000))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_some()).count(), 1);
    assert_eq!(
        store.approval("apr_1").await.unwrap().unwrap().status,
        ApprovalStatus::Redeemed
    );
}

pub(crate) async fn concurrent_decisions_of_one_approval_decide_once(store: TestStore) {
    store
        .insert_approval(&approval("apr_1", "acme", 1_000))
        .await
        .unwrap();
    let results = race(&store, 8, |store, i| async move {
        let decision = if i % 2 == 0 {
            approve(&format!("h{i}"))
        } else {
            ApprovalDecision::Deny
        };
        store
            .decide_approval(
                "apr_1",
                &decision,
                &format!("admin-{i}"),
                None,
                Timestamp(2_000),
            )
            .await
            .unwrap()
    })
    .await;
    let winners: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(winners.len(), 1);
    // What is stored is the winner's decision.
    assert_eq!(
        store.approval("apr_1").await.unwrap().as_ref(),
        Some(&winners[0])
    );
}

pub(crate) async fn concurrent_task_grant_revocations_revoke_once(store: TestStore) {
    store
        .insert_task_grant(&task_grant("tg_1", "acme", 1_000))
        .await
        .unwrap();
    let results = race(&store, 8, |store, i| async move {
        store
            .revoke_task_grant("tg_1", Timestamp(2_000 + i as i64))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(results.iter().filter(|r| **r).count(), 1);
    assert_eq!(
        store.revoked_tokens(Timestamp(2_000)).await.unwrap(),
        vec!["tg_1"]
    );
}

pub(crate) async fn concurrent_auth_failures_each_count(store: TestStore) {
    let results = race(&store, 16, |store, _| async move {
        store
            .record_auth_failure("source:10.0.0.1", Timestamp(1_000), 900_000)
            .await
            .unwrap()
    })
    .await;
    let counts: BTreeSet<u32> = results.into_iter().collect();
    assert_eq!(counts, (1..=16).collect());
}

// --- upstream tool pins -------------------------------------------------------

fn definition(text: &str) -> ToolDefinitionRecord {
    ToolDefinitionRecord {
        sha256: format!("sha-{text}"),
        definition: format!("{{\"description\":\"{text}\"}}"),
    }
}

pub(crate) async fn tool_pins_record_a_change_once_and_approve_only_what_was_reviewed(
    store: TestStore,
) {
    let (a, b, c) = (definition("a"), definition("b"), definition("c"));
    assert!(store.tool_pin("files", "read").await.unwrap().is_none());
    assert!(
        store
            .insert_tool_pin("files", "read", &a, Timestamp(1))
            .await
            .unwrap()
    );
    // A second first sighting keeps the first pin.
    assert!(
        !store
            .insert_tool_pin("files", "read", &b, Timestamp(2))
            .await
            .unwrap()
    );
    store
        .insert_tool_pin("crm", "find", &a, Timestamp(1))
        .await
        .unwrap();
    let pin = store.tool_pin("files", "read").await.unwrap().unwrap();
    assert_eq!(
        (pin.pinned.clone(), pin.pinned_by.clone()),
        (a.clone(), None)
    );
    assert_eq!(pin.pending, None);

    // A change is recorded once; against a stale pin, not at all.
    let set = |seen: ToolDefinitionRecord, pinned: &'static str, at| {
        let store = store.clone();
        async move {
            store
                .set_pending_tool_definition("files", "read", pinned, &seen, Timestamp(at))
                .await
                .unwrap()
        }
    };
    assert!(set(b.clone(), "sha-a", 3).await);
    assert!(!set(b.clone(), "sha-a", 4).await);
    assert!(!set(c.clone(), "sha-b", 4).await);
    let pending = store
        .tool_pin("files", "read")
        .await
        .unwrap()
        .unwrap()
        .pending
        .unwrap();
    assert_eq!(
        (pending.definition, pending.since),
        (b.clone(), Timestamp(3))
    );

    // Back to the pinned definition: nothing is pending any more.
    store
        .clear_pending_tool_definition("files", "read", "sha-a")
        .await
        .unwrap();
    assert_eq!(
        store
            .tool_pin("files", "read")
            .await
            .unwrap()
            .unwrap()
            .pending,
        None
    );

    // Approving pins exactly the reviewed definition, once.
    assert!(set(c.clone(), "sha-a", 5).await);
    let before = store.credential_generation();
    assert!(
        !store
            .approve_tool_definition("files", "read", "sha-b", "operator:ann", Timestamp(6))
            .await
            .unwrap(),
        "b is not what is pending"
    );
    assert!(
        store
            .approve_tool_definition("files", "read", "sha-c", "operator:ann", Timestamp(6))
            .await
            .unwrap()
    );
    assert!(
        !store
            .approve_tool_definition("files", "read", "sha-c", "operator:ann", Timestamp(7))
            .await
            .unwrap()
    );
    let pin = store.tool_pin("files", "read").await.unwrap().unwrap();
    assert_eq!(pin.pinned, c);
    assert_eq!(pin.pinned_at, Timestamp(6));
    assert_eq!(pin.pinned_by.as_deref(), Some("operator:ann"));
    assert_eq!(pin.pending, None);
    // Every instance hears of it, as of a credential change.
    assert_ne!(store.credential_generation(), before);

    let all: Vec<_> = store
        .tool_pins(None)
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.upstream, p.tool))
        .collect();
    assert_eq!(
        all,
        [
            ("crm".into(), "find".into()),
            ("files".into(), "read".into())
        ]
    );
    assert_eq!(store.tool_pins(Some("crm")).await.unwrap().len(), 1);
    assert!(store.tool_pins(Some("none")).await.unwrap().is_empty());
}

pub(crate) async fn concurrent_sightings_of_one_change_record_it_once(store: TestStore) {
    store
        .insert_tool_pin("files", "read", &definition("a"), Timestamp(1))
        .await
        .unwrap();
    let recorded = race(&store, 8, |store, i| async move {
        store
            .set_pending_tool_definition(
                "files",
                "read",
                "sha-a",
                &definition("b"),
                Timestamp(10 + i as i64),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(recorded.iter().filter(|r| **r).count(), 1);
}

pub(crate) async fn a_pin_is_extended_only_from_the_definition_it_holds(store: TestStore) {
    let (a, b, extended) = (definition("a"), definition("b"), definition("a+"));
    store
        .insert_tool_pin("files", "read", &a, Timestamp(1))
        .await
        .unwrap();
    store
        .set_pending_tool_definition("files", "read", "sha-a", &b, Timestamp(2))
        .await
        .unwrap();
    // Not from another definition than the pinned one.
    assert!(
        !store
            .extend_tool_pin("files", "read", "sha-b", &extended)
            .await
            .unwrap()
    );
    let before = store.credential_generation();
    assert!(
        store
            .extend_tool_pin("files", "read", "sha-a", &extended)
            .await
            .unwrap()
    );
    // Once: a second instance finds it done.
    assert!(
        !store
            .extend_tool_pin("files", "read", "sha-a", &extended)
            .await
            .unwrap()
    );
    let pin = store.tool_pin("files", "read").await.unwrap().unwrap();
    assert_eq!(pin.pinned, extended);
    // Who pinned it and when stay; the stale change is forgotten.
    assert_eq!((pin.pinned_at, pin.pinned_by), (Timestamp(1), None));
    assert_eq!(pin.pending, None);
    assert_ne!(store.credential_generation(), before);
}

// --- credential lifecycle ---------------------------------------------------

fn lifecycle_signing_key(kid: &str, at: i64) -> SigningKeyRecord {
    SigningKeyRecord {
        kid: kid.into(),
        sealed_pkcs8: vec![7],
        public_jwk: "{}".into(),
        created_at: Timestamp(at),
        activates_at: Timestamp(at),
        revoked_at: None,
    }
}

pub(crate) async fn a_lease_is_held_until_it_expires_and_then_taken_over(store: TestStore) {
    let lease = "lifecycle";
    assert!(
        store
            .take_lease(lease, "a", Timestamp(1_000), Timestamp(61_000))
            .await
            .unwrap()
    );
    // Another instance cannot take it while it runs...
    assert!(
        !store
            .take_lease(lease, "b", Timestamp(60_999), Timestamp(120_999))
            .await
            .unwrap()
    );
    // ...its holder renews it...
    assert!(
        store
            .take_lease(lease, "a", Timestamp(30_000), Timestamp(90_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease(lease, "b", Timestamp(89_999), Timestamp(150_000))
            .await
            .unwrap()
    );
    // ...and once the holder stops renewing (a dead instance), it is taken over.
    assert!(
        store
            .take_lease(lease, "b", Timestamp(90_000), Timestamp(150_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_lease(lease, "a", Timestamp(100_000), Timestamp(160_000))
            .await
            .unwrap()
    );
    // Leases of other names are independent.
    assert!(
        store
            .take_lease("other", "a", Timestamp(100_000), Timestamp(160_000))
            .await
            .unwrap()
    );
    // A released lease is free at once; releasing someone else's does nothing.
    store.release_lease(lease, "a").await.unwrap();
    assert!(
        !store
            .take_lease(lease, "c", Timestamp(100_000), Timestamp(160_000))
            .await
            .unwrap()
    );
    store.release_lease(lease, "b").await.unwrap();
    assert!(
        store
            .take_lease(lease, "c", Timestamp(100_000), Timestamp(160_000))
            .await
            .unwrap()
    );
}

pub(crate) async fn a_lifecycle_notice_is_recorded_once_per_basis(store: TestStore) {
    let give = |id: &'static str, code: &'static str, basis: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .record_lifecycle_notice("api_key", id, code, Timestamp(basis), Timestamp(9))
                .await
                .unwrap()
        }
    };
    assert!(
        !store
            .lifecycle_notice_given("api_key", "k1", "credential_unused", Timestamp(5))
            .await
            .unwrap()
    );
    assert!(give("k1", "credential_unused", 5).await);
    assert!(!give("k1", "credential_unused", 5).await);
    assert!(
        store
            .lifecycle_notice_given("api_key", "k1", "credential_unused", Timestamp(5))
            .await
            .unwrap()
    );
    // A new basis (the key was used again, then left unused) is a new notice;
    // so is another code or another credential.
    assert!(give("k1", "credential_unused", 7).await);
    assert!(give("k1", "credential_expiring", 5).await);
    assert!(give("k2", "credential_unused", 5).await);
    assert!(
        store
            .record_lifecycle_notice(
                "grant",
                "k1",
                "credential_unused",
                Timestamp(5),
                Timestamp(9)
            )
            .await
            .unwrap()
    );
}

pub(crate) async fn grant_use_is_recorded_coalesced_and_only_live_grants_are_listed(
    store: TestStore,
) {
    store.insert_user(&user("alice")).await.unwrap();
    store
        .insert_code_grant(decided(&grant("g1")), &code("h1", "g1"))
        .await
        .unwrap();
    store
        .insert_code_grant(decided(&grant("g2")), &code("h2", "g2"))
        .await
        .unwrap();
    let used = |grants: &[crate::GrantUse], id: &str| {
        grants
            .iter()
            .find(|g| g.id == id)
            .map(|g| g.last_used_at)
            .unwrap()
    };
    let listed = store.live_grants().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].username, "alice");
    assert_eq!(listed[0].tenant, "acme");
    assert_eq!(listed[0].client_id, "ghc_app");
    assert_eq!(listed[0].created_at, Timestamp(1_000));
    assert_eq!(used(&listed, "g1"), None);

    // Redeeming the code is the first use.
    assert!(matches!(
        store.redeem_code("h1", Timestamp(2_000)).await.unwrap(),
        CodeRedemption::Redeemed(..)
    ));
    assert_eq!(
        used(&store.live_grants().await.unwrap(), "g1"),
        Some(Timestamp(2_000))
    );
    store
        .record_issued(
            "g1",
            "jti-1",
            Timestamp(900_000),
            Some(&refresh("r1", "g1")),
        )
        .await
        .unwrap();
    store
        .record_issued(
            "g1",
            "jti-2",
            Timestamp(900_000),
            Some(&refresh("r2", "g1")),
        )
        .await
        .unwrap();
    // A refresh within a minute of the last recorded use writes nothing...
    assert!(matches!(
        store
            .rotate_refresh_token("r1", Timestamp(61_999))
            .await
            .unwrap(),
        RefreshRotation::Rotated(..)
    ));
    assert_eq!(
        used(&store.live_grants().await.unwrap(), "g1"),
        Some(Timestamp(2_000))
    );
    // ...one a minute later does.
    assert!(matches!(
        store
            .rotate_refresh_token("r2", Timestamp(62_000))
            .await
            .unwrap(),
        RefreshRotation::Rotated(..)
    ));
    assert_eq!(
        used(&store.live_grants().await.unwrap(), "g1"),
        Some(Timestamp(62_000))
    );
    // A reused refresh token is no use of the grant.
    store
        .rotate_refresh_token("r2", Timestamp(900_000))
        .await
        .unwrap();
    // Revoked grants are not listed.
    assert!(store.revoke_grant("g2", Timestamp(3_000)).await.unwrap());
    let listed = store.live_grants().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "g1");
    assert_eq!(listed[0].last_used_at, Some(Timestamp(62_000)));
}

pub(crate) async fn a_signing_key_gets_one_automatic_successor(store: TestStore) {
    store
        .insert_signing_key(&lifecycle_signing_key("old", 1))
        .await
        .unwrap();
    let before = store.credential_generation();
    assert!(
        store
            .add_successor_signing_key("old", &lifecycle_signing_key("new-1", 5), Timestamp(5))
            .await
            .unwrap()
    );
    if let (Some(before), Some(after)) = (before, store.credential_generation()) {
        assert!(after > before, "a new signing key moves the generation");
    }
    // A second pass (or another instance) adds nothing.
    assert!(
        !store
            .add_successor_signing_key("old", &lifecycle_signing_key("new-2", 6), Timestamp(6))
            .await
            .unwrap()
    );
    let kids: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["old", "new-1"]);
    // The successor, replaced in its turn, gets its own.
    assert!(
        store
            .add_successor_signing_key("new-1", &lifecycle_signing_key("new-3", 7), Timestamp(7))
            .await
            .unwrap()
    );
    assert_eq!(store.signing_keys().await.unwrap().len(), 3);
}

pub(crate) async fn concurrent_lease_takers_get_it_once(store: TestStore) {
    let taken = race(&store, 8, |store, i| async move {
        store
            .take_lease(
                "lifecycle",
                &format!("instance-{i}"),
                Timestamp(1_000),
                Timestamp(61_000),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(taken.iter().filter(|t| **t).count(), 1);
    // Expired: again exactly one of the racers takes it over.
    let taken = race(&store, 8, |store, i| async move {
        store
            .take_lease(
                "lifecycle",
                &format!("successor-{i}"),
                Timestamp(61_000),
                Timestamp(121_000),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(taken.iter().filter(|t| **t).count(), 1);
}

pub(crate) async fn concurrent_notices_are_recorded_once(store: TestStore) {
    let recorded = race(&store, 8, |store, i| async move {
        store
            .record_lifecycle_notice(
                "client_secret",
                "ghc_1",
                "credential_expiring",
                Timestamp(1_000),
                Timestamp(i as i64),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(recorded.iter().filter(|r| **r).count(), 1);
}

pub(crate) async fn concurrent_signing_key_successors_are_added_once(store: TestStore) {
    store
        .insert_signing_key(&lifecycle_signing_key("old", 1))
        .await
        .unwrap();
    let added = race(&store, 8, |store, i| async move {
        store
            .add_successor_signing_key(
                "old",
                &lifecycle_signing_key(&format!("new-{i}"), 5),
                Timestamp(5),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(added.iter().filter(|a| **a).count(), 1);
    assert_eq!(store.signing_keys().await.unwrap().len(), 2);
}

// --- alerts -------------------------------------------------------------------

fn alert(id: &str, raised_at: i64, state: DeliveryState) -> AlertRecord {
    AlertRecord {
        id: id.into(),
        raised_at: Timestamp(raised_at),
        code: "auth_failure_burst".into(),
        tenant: Some("default".into()),
        subject: format!("source 203.0.113.{raised_at}"),
        detail: "4 failed authentications within 60 s".into(),
        acked_at: None,
        acked_by: None,
        delivery_state: state,
        delivery_attempts: 0,
        next_delivery_at: (state == DeliveryState::Pending).then_some(Timestamp(raised_at)),
        last_delivery_error: None,
    }
}

pub(crate) async fn alerts_are_listed_newest_first_and_acknowledged_once(store: TestStore) {
    store
        .insert_alert(&alert("a1", 10, DeliveryState::None))
        .await
        .unwrap();
    store
        .insert_alert(&alert("a2", 20, DeliveryState::Pending))
        .await
        .unwrap();
    assert_eq!(
        store
            .insert_alert(&alert("a1", 30, DeliveryState::None))
            .await
            .err()
            .map(|e| e.to_string()),
        Some(StoreError::Conflict.to_string()),
        "an alert id is its audit record's: never two",
    );
    let listed = store.alerts(false, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a2", "a1"]
    );
    assert_eq!(listed[1], alert("a1", 10, DeliveryState::None));
    assert_eq!(store.alerts(false, 1).await.unwrap().len(), 1);

    assert_eq!(
        store.ack_alert("a1", "alice", Timestamp(40)).await.unwrap(),
        AckOutcome::Acked
    );
    assert_eq!(
        store.ack_alert("a1", "bob", Timestamp(50)).await.unwrap(),
        AckOutcome::AlreadyAcked {
            at: Timestamp(40),
            by: "alice".into()
        }
    );
    assert_eq!(
        store.ack_alert("nope", "bob", Timestamp(50)).await.unwrap(),
        AckOutcome::NotFound
    );
    let open = store.alerts(false, 10).await.unwrap();
    assert_eq!(
        open.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a2"]
    );
    let all = store.alerts(true, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    let acked = store.alert("a1").await.unwrap().unwrap();
    assert_eq!(acked.acked_at, Some(Timestamp(40)));
    assert_eq!(acked.acked_by.as_deref(), Some("alice"));
}

pub(crate) async fn alert_deliveries_are_claimed_when_due_retried_and_finished(store: TestStore) {
    store
        .insert_alert(&alert("none", 1, DeliveryState::None))
        .await
        .unwrap();
    store
        .insert_alert(&alert("p5", 5, DeliveryState::Pending))
        .await
        .unwrap();
    store
        .insert_alert(&alert("p7", 7, DeliveryState::Pending))
        .await
        .unwrap();
    // Nothing is due before its time; an alert without a webhook never is.
    assert_eq!(
        store
            .claim_alert_delivery(Timestamp(4), Timestamp(100))
            .await
            .unwrap(),
        None
    );
    // The longest due first; claimed until 100, so not claimed again before.
    let first = store
        .claim_alert_delivery(Timestamp(10), Timestamp(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, "p5");
    assert_eq!(first.next_delivery_at, Some(Timestamp(100)));
    let second = store
        .claim_alert_delivery(Timestamp(10), Timestamp(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, "p7");
    assert_eq!(
        store
            .claim_alert_delivery(Timestamp(10), Timestamp(100))
            .await
            .unwrap(),
        None
    );
    store
        .finish_alert_delivery(
            "p5",
            &DeliveryResult::Retry {
                next_at: Timestamp(20),
                error: "HTTP 500".into(),
            },
        )
        .await
        .unwrap();
    store
        .finish_alert_delivery("p7", &DeliveryResult::Delivered)
        .await
        .unwrap();
    let p7 = store.alert("p7").await.unwrap().unwrap();
    assert_eq!(p7.delivery_state, DeliveryState::Delivered);
    assert_eq!(p7.delivery_attempts, 1);
    assert_eq!(p7.next_delivery_at, None);
    // The retry is due at 20, not before.
    assert_eq!(
        store
            .claim_alert_delivery(Timestamp(19), Timestamp(200))
            .await
            .unwrap(),
        None
    );
    let again = store
        .claim_alert_delivery(Timestamp(20), Timestamp(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, "p5");
    assert_eq!(again.delivery_attempts, 1);
    assert_eq!(again.last_delivery_error.as_deref(), Some("HTTP 500"));
    store
        .finish_alert_delivery(
            "p5",
            &DeliveryResult::Failed {
                error: "HTTP 503".into(),
            },
        )
        .await
        .unwrap();
    let p5 = store.alert("p5").await.unwrap().unwrap();
    assert_eq!(p5.delivery_state, DeliveryState::Failed);
    assert_eq!(p5.delivery_attempts, 2);
    assert_eq!(p5.last_delivery_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        store
            .claim_alert_delivery(Timestamp(1_000), Timestamp(2_000))
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn concurrent_claims_of_one_alert_deliver_it_once(store: TestStore) {
    store
        .insert_alert(&alert("p1", 1, DeliveryState::Pending))
        .await
        .unwrap();
    let claimed = race(&store, 8, |store, _| async move {
        store
            .claim_alert_delivery(Timestamp(10), Timestamp(100))
            .await
            .unwrap()
            .is_some()
    })
    .await;
    assert_eq!(claimed.iter().filter(|c| **c).count(), 1);
}

pub(crate) async fn concurrent_acks_of_one_alert_ack_it_once(store: TestStore) {
    store
        .insert_alert(&alert("a1", 1, DeliveryState::None))
        .await
        .unwrap();
    let acked = race(&store, 8, |store, i| async move {
        store
            .ack_alert("a1", &format!("user{i}"), Timestamp(10))
            .await
            .unwrap()
            == AckOutcome::Acked
    })
    .await;
    assert_eq!(acked.iter().filter(|a| **a).count(), 1);
}
