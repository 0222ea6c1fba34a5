use std::sync::Arc;

use super::*;
use crate::{
    AuthCodeRecord, AuthorizationStore, CodeRedemption, DevicePoll, DeviceRecord, DeviceStatus,
    GrantRecord, RefreshRotation, RefreshTokenRecord, UserRecord,
};

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

/// A file database with several connections, so concurrent statements
/// really race (an in-memory store has one connection).
async fn file_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

#[tokio::test]
async fn a_code_is_redeemed_once_and_a_replay_names_its_grant() {
    let store = SqliteStore::in_memory().await.unwrap();
    store
        .insert_code_grant(&grant("g1"), &code("h1", "g1"))
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
}

#[tokio::test]
async fn an_expired_code_is_invalid() {
    let store = SqliteStore::in_memory().await.unwrap();
    store
        .insert_code_grant(&grant("g1"), &code("h1", "g1"))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_code("h1", Timestamp(61_000)).await.unwrap(),
        CodeRedemption::Invalid
    );
}

#[tokio::test]
async fn concurrent_redemptions_of_one_code_let_exactly_one_through() {
    let (_dir, store) = file_store().await;
    store
        .insert_code_grant(&grant("g1"), &code("h1", "g1"))
        .await
        .unwrap();
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.redeem_code("h1", Timestamp(2_000)).await.unwrap() })
        })
        .collect();
    let mut redeemed = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            CodeRedemption::Redeemed(..) => redeemed += 1,
            CodeRedemption::Replayed { grant_id } => assert_eq!(grant_id, "g1"),
            CodeRedemption::Invalid => panic!("a concurrent attempt saw the code as unknown"),
        }
    }
    assert_eq!(redeemed, 1);
}

#[tokio::test]
async fn revoking_a_grant_revokes_its_access_tokens_and_refresh_tokens() {
    let store = SqliteStore::in_memory().await.unwrap();
    store
        .insert_code_grant(&grant("g1"), &code("h1", "g1"))
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
}

#[tokio::test]
async fn concurrent_refreshes_rotate_exactly_once() {
    let (_dir, store) = file_store().await;
    store
        .insert_code_grant(&grant("g1"), &code("h1", "g1"))
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
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .rotate_refresh_token("r1", Timestamp(2_000))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut rotated = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
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

#[tokio::test]
async fn authorization_requests_are_taken_once() {
    let store = SqliteStore::in_memory().await.unwrap();
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

fn user(name: &str) -> UserRecord {
    UserRecord {
        username: name.into(),
        tenant: "acme".into(),
        roles: vec!["reader".into()],
        password_hash: "$argon2id$stub".into(),
        created_at: Timestamp(0),
        disabled_at: None,
    }
}

#[tokio::test]
async fn login_failures_count_within_a_window_and_reset() {
    let store = SqliteStore::in_memory().await.unwrap();
    let window = 900_000;
    assert_eq!(
        store
            .record_login_failure("bob", Timestamp(0), window)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_login_failure("bob", Timestamp(10), window)
            .await
            .unwrap(),
        2
    );
    store.lock_login("bob", Timestamp(5_000)).await.unwrap();
    let throttle = store.login_throttle("bob").await.unwrap().unwrap();
    assert_eq!(
        (throttle.failures, throttle.locked_until),
        (2, Timestamp(5_000))
    );
    // A long quiet period forgets earlier failures.
    assert_eq!(
        store
            .record_login_failure("bob", Timestamp(10 + window + 1), window)
            .await
            .unwrap(),
        1
    );
    store.clear_login_failures("bob").await.unwrap();
    assert_eq!(store.login_throttle("bob").await.unwrap(), None);
}

#[tokio::test]
async fn disabling_a_user_ends_sessions_and_grants() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.insert_user(&user("alice")).await.unwrap();
    assert!(!format!("{:?}", user("alice")).contains("argon2"));
    store
        .insert_browser_session("s1", "alice", Timestamp(0), Timestamp(10_000))
        .await
        .unwrap();
    assert_eq!(
        store.browser_session("s1", Timestamp(5)).await.unwrap(),
        Some("alice".into())
    );
    store
        .insert_code_grant(&grant("g1"), &code("h1", "g1"))
        .await
        .unwrap();
    store
        .record_issued("g1", "jti-1", Timestamp(900_000), None)
        .await
        .unwrap();
    assert!(store.disable_user("alice", Timestamp(100)).await.unwrap());
    assert!(!store.disable_user("alice", Timestamp(101)).await.unwrap());
    assert_eq!(
        store.browser_session("s1", Timestamp(200)).await.unwrap(),
        None
    );
    assert_eq!(
        store.revoked_tokens(Timestamp(200)).await.unwrap(),
        vec!["jti-1".to_string()]
    );
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

#[tokio::test]
async fn device_polls_pending_slow_down_approved_once() {
    let store = SqliteStore::in_memory().await.unwrap();
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    let poll = |t: i64| {
        let store = store.clone();
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
    assert!(
        store
            .decide_device("BCDFGHJK", Some(&g), Timestamp(40_000))
            .await
            .unwrap()
    );
    // A decision is final.
    assert!(
        !store
            .decide_device("BCDFGHJK", None, Timestamp(41_000))
            .await
            .unwrap()
    );
    assert_eq!(poll(100_000).await, DevicePoll::Approved(g));
    assert_eq!(poll(200_000).await, DevicePoll::Invalid);
    assert_eq!(poll(600_000).await, DevicePoll::Expired);
}

#[tokio::test]
async fn a_denied_device_authorization_reports_denied() {
    let store = SqliteStore::in_memory().await.unwrap();
    store
        .insert_device(&device("d1", "BCDFGHJK"))
        .await
        .unwrap();
    assert!(
        store
            .decide_device("BCDFGHJK", None, Timestamp(1_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .poll_device("d1", "ghc_tv", Timestamp(10_000))
            .await
            .unwrap(),
        DevicePoll::Denied
    );
}

#[tokio::test]
async fn unused_dynamic_clients_are_deleted() {
    let store = SqliteStore::in_memory().await.unwrap();
    let mut dynamic = super::tests::client("ghc_dyn");
    dynamic.registered_by = "dynamic".into();
    store.insert_client(&dynamic).await.unwrap();
    store
        .insert_client(&super::tests::client("ghc_op"))
        .await
        .unwrap();
    let mut used = super::tests::client("ghc_used");
    used.registered_by = "dynamic".into();
    store.insert_client(&used).await.unwrap();
    store
        .touch_client("ghc_used", Timestamp(1_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .delete_unused_dynamic_clients(Timestamp(500))
            .await
            .unwrap(),
        1
    );
    assert!(store.client("ghc_dyn").await.unwrap().is_none());
    assert!(store.client("ghc_op").await.unwrap().is_some());
    assert!(store.client("ghc_used").await.unwrap().is_some());
}

/// The shared `Store` conformance tests (see `store_conformance_tests.rs`).
mod conformance {
    use super::*;
    use crate::store_conformance_tests::TestStore;

    async fn in_memory<F: FnOnce(TestStore) -> Fut, Fut: Future<Output = ()>>(test: F) {
        test(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
    }

    async fn on_file<F: FnOnce(TestStore) -> Fut, Fut: Future<Output = ()>>(test: F) {
        let (_dir, store) = file_store().await;
        test(store).await;
    }

    crate::store_conformance_tests::conformance_tests!(serial: in_memory, concurrent: on_file);
}
