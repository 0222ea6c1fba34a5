use super::*;
use gatehouse_core::{AuditEvent, AuditKind, Outcome, Timestamp};
use std::future::Future;

fn key(id: &str) -> ApiKeyRecord {
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
        args_sha256: None,
        approval: None,
        decision: Some("allow".into()),
        reason: None,
        outcome,
        error: None,
        latency_us: Some(12),
        result_bytes: Some(3),
        request_id: None,
        link: None,
    }
}

#[tokio::test]
async fn revoke_is_once() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.insert_api_key(&key("k1")).await.unwrap();
    assert!(store.revoke_api_key("k1", Timestamp(5)).await.unwrap());
    assert!(!store.revoke_api_key("k1", Timestamp(6)).await.unwrap());
    assert!(!store.revoke_api_key("missing", Timestamp(6)).await.unwrap());
    let stored = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(Timestamp(5)));
}

#[tokio::test]
async fn rotate_limits_old_key_and_happens_once() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.insert_api_key(&key("k1")).await.unwrap();
    assert!(
        store
            .rotate_api_key("k1", &key("k2"), Timestamp(9_000))
            .await
            .unwrap()
    );
    let old = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(old.expires_at, Some(Timestamp(9_000)));
    assert_eq!(old.rotated_to.as_deref(), Some("k2"));
    // A second rotation of the same key is refused and inserts nothing.
    assert!(
        !store
            .rotate_api_key("k1", &key("k3"), Timestamp(9_000))
            .await
            .unwrap()
    );
    assert_eq!(store.api_key("k3").await.unwrap(), None);
}

#[tokio::test]
async fn rotate_never_extends_an_earlier_expiry() {
    let store = SqliteStore::in_memory().await.unwrap();
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

#[tokio::test]
async fn audit_append_and_filter() {
    let store = SqliteStore::in_memory().await.unwrap();
    store
        .append_audit(vec![
            event("e1", 100, "read_file", Outcome::Success),
            event("e2", 200, "send_email", Outcome::Denied),
            event("e3", 300, "read_file", Outcome::Denied),
        ])
        .await
        .unwrap();
    let all = store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all[0].seq < all[1].seq && all[1].seq < all[2].seq);
    assert_eq!(
        all[0].event,
        event("e1", 100, "read_file", Outcome::Success)
    );

    let denied = store
        .query_audit(&AuditQuery {
            outcome: Some(Outcome::Denied),
            tool: Some("read_file".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].event.id, "e3");

    let since = store
        .query_audit(&AuditQuery {
            since: Some(Timestamp(200)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.len(), 2);

    let newest = store
        .query_audit(&AuditQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest[0].event.id, "e3");

    let after = store
        .query_audit(&AuditQuery {
            after_seq: Some(all[1].seq),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);

    let by_principal = store
        .query_audit(&AuditQuery {
            principal: Some("nobody".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(by_principal.is_empty());
}

#[tokio::test]
async fn secrets_are_tenant_scoped() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.put_secret("a", "db", "one").await.unwrap();
    store.put_secret("a", "db", "two").await.unwrap();
    store.put_secret("b", "other", "three").await.unwrap();
    assert_eq!(
        store.secret("a", "db").await.unwrap().as_deref(),
        Some("two")
    );
    assert_eq!(store.secret("b", "db").await.unwrap(), None);
    assert_eq!(store.secret_names("a").await.unwrap(), vec!["db"]);
    assert!(store.delete_secret("a", "db").await.unwrap());
    assert!(!store.delete_secret("a", "db").await.unwrap());
}

#[tokio::test]
async fn file_database_is_shared_between_handles() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let one = SqliteStore::open(&path).await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();
    one.insert_api_key(&key("k1")).await.unwrap();
    assert!(two.revoke_api_key("k1", Timestamp(1)).await.unwrap());
    assert!(one.api_key("k1").await.unwrap().unwrap().is_revoked());
}

#[tokio::test]
async fn key_changes_move_the_generation_for_every_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let server = SqliteStore::open(&path).await.unwrap();
    let cli = SqliteStore::open(&path).await.unwrap();
    server.insert_api_key(&key("k1")).await.unwrap();
    let before = server.credential_generation().unwrap();
    // Using a key is not a change.
    server.touch_api_key("k1", Timestamp(2)).await.unwrap();
    assert_eq!(server.credential_generation(), Some(before));
    cli.revoke_api_key("k1", Timestamp(3)).await.unwrap();
    let after_revoke = server.credential_generation().unwrap();
    assert_ne!(after_revoke, before);
    cli.insert_api_key(&key("k2")).await.unwrap();
    cli.rotate_api_key("k2", &key("k3"), Timestamp(9))
        .await
        .unwrap();
    assert_ne!(server.credential_generation().unwrap(), after_revoke);
}

/// A revocation whose caller's future is dropped mid-write (a client that
/// disconnects) may still be completed by the driver's worker: it must be
/// announced all the same, or every cache keeps the revoked key.
#[tokio::test]
async fn a_revocation_dropped_mid_write_is_announced_if_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("g.db")).await.unwrap();
    for polls in 0..40 {
        let id = format!("k{polls}");
        store.insert_api_key(&key(&id)).await.unwrap();
        let before = store.credential_generation();
        {
            let mut revoke = std::pin::pin!(store.revoke_api_key(&id, Timestamp(5)));
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            for _ in 0..polls {
                if revoke.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        // Whatever the worker still completes lands within this.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let revoked = store.api_key(&id).await.unwrap().unwrap().is_revoked();
        if revoked {
            assert_ne!(store.credential_generation(), before, "after {polls} polls");
        }
    }
    // Nothing changed, nothing announced.
    let before = store.credential_generation();
    store.announce_change().nothing_changed();
    assert_eq!(store.credential_generation(), before);
    store.announce_change().announce();
    assert_ne!(store.credential_generation(), before);
}

/// Issue 9 item 16: the generation was the marker file's inode XOR its
/// mtime, which repeats when the file system hands the freed inode back
/// within one timestamp tick. Every change, from either handle (two
/// processes sharing the file), must give a new, larger generation.
#[tokio::test]
async fn successive_changes_always_give_new_increasing_generations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let server = SqliteStore::open(&path).await.unwrap();
    let cli = SqliteStore::open(&path).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut last = server.credential_generation().unwrap();
    seen.insert(last);
    for n in 0..200 {
        let changer = if n % 2 == 0 { &server } else { &cli };
        changer
            .revoke_token(&format!("jti-{n}"), Timestamp(1_000_000), Timestamp(1))
            .await
            .unwrap();
        let now = server.credential_generation().unwrap();
        assert_eq!(cli.credential_generation(), Some(now), "change {n}");
        assert!(now > last, "change {n}: generation {now} after {last}");
        assert!(seen.insert(now), "change {n}: generation {now} repeats");
        last = now;
    }
    // A reopened handle continues from there, never below.
    drop((server, cli));
    let reopened = SqliteStore::open(&path).await.unwrap();
    assert!(reopened.credential_generation().unwrap() >= last);
}

#[tokio::test]
async fn large_audit_batches_span_several_inserts() {
    let store = SqliteStore::in_memory().await.unwrap();
    let events: Vec<_> = (0..1234)
        .map(|n| event(&format!("e{n}"), n, "t", Outcome::Success))
        .collect();
    store.append_audit(events.clone()).await.unwrap();
    let rows = store
        .query_audit(&AuditQuery {
            limit: Some(5000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1234);
    assert_eq!(rows[1233].event, events[1233]);
}

pub(super) fn client(id: &str) -> ClientRecord {
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

#[tokio::test]
async fn clients_round_trip_and_revoke_once() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.insert_client(&client("c1")).await.unwrap();
    assert_eq!(store.client("c1").await.unwrap(), Some(client("c1")));
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
    let before = store.credential_generation();
    assert!(store.revoke_client("c1", Timestamp(20)).await.unwrap());
    assert_ne!(store.credential_generation(), before);
    assert!(!store.revoke_client("c1", Timestamp(21)).await.unwrap());
    assert_eq!(
        store.client("c1").await.unwrap().unwrap().revoked_at,
        Some(Timestamp(20))
    );
}

#[tokio::test]
async fn signing_keys_round_trip_in_order() {
    let store = SqliteStore::in_memory().await.unwrap();
    for (kid, at) in [("b", 2), ("a", 1)] {
        store
            .insert_signing_key(&SigningKeyRecord {
                kid: kid.into(),
                sealed_pkcs8: vec![1, 2, 3],
                public_jwk: "{}".into(),
                created_at: Timestamp(at),
                activates_at: Timestamp(at),
                revoked_at: None,
            })
            .await
            .unwrap();
    }
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(keys[0].sealed_pkcs8, vec![1, 2, 3]);
}

#[tokio::test]
async fn writes_never_checkpoint_the_log_and_the_stores_thread_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("g.db")).await.unwrap();
    // No commit copies the log into the database file on the write path.
    let automatic: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(automatic, 0);
    assert!(store._checkpoints.is_some());
    let events = (0..200)
        .map(|n| event(&format!("e{n}"), n, "read_file", Outcome::Success))
        .collect();
    store.append_audit(events).await.unwrap();
    // What the checkpoint thread runs: everything written is copied. (The
    // thread itself may have run in between and reset the log, so its
    // length is not asserted.)
    let connection = crate::sqlite_sync::open(&dir.path().join("g.db")).unwrap();
    let (log, checkpointed) = crate::sqlite_checkpointer::checkpoint(&connection).unwrap();
    assert_eq!(log, checkpointed);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(stored, 200);
}

/// The audit writer's own connection stores exactly what `append_audit`
/// stores: every column, the chain link, the checkpoints; a batch with a
/// duplicate id is refused whole (`Conflict`) and leaves nothing behind.
#[tokio::test]
async fn the_audit_appender_stores_what_append_audit_stores() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("g.db")).await.unwrap();
    let mut appender = store.audit_appender().unwrap().expect("a file database");
    let linked = |id: &str, seq: u64| {
        let mut event = event(id, seq as i64, "read_file", Outcome::Error);
        event.tenant = None;
        event.args_sha256 = Some("ab".repeat(32));
        event.approval = Some("apr_1".into());
        event.reason = Some("upstream_failed".into());
        event.error = Some("boom".into());
        event.latency_us = Some(987_654);
        event.request_id = Some(format!("req-{id}"));
        event.link = Some(ChainLink {
            chain: "c1".into(),
            seq,
            prev_hash: "0".repeat(64),
            hash: format!("{seq:064}"),
        });
        event
    };
    let through_sqlx = vec![linked("a1", 1), linked("a2", 2)];
    store.append_audit(through_sqlx.clone()).await.unwrap();
    let own = vec![linked("b1", 3), linked("b2", 4)];
    let checkpoint = AuditCheckpoint {
        chain: "c1".into(),
        seq: 4,
        hash: format!("{:064}", 4),
        ts: Timestamp(9),
        jws: "h.p.s".into(),
    };
    appender
        .append(own.clone(), std::slice::from_ref(&checkpoint))
        .unwrap();
    let rows = store.audit_page(0, 10).await.unwrap();
    let stored: Vec<AuditEvent> = rows.into_iter().map(|r| r.event).collect();
    let mut expected = through_sqlx;
    expected.extend(own);
    assert_eq!(stored, expected);
    assert_eq!(store.audit_checkpoints().await.unwrap(), vec![checkpoint]);

    let refused = appender.append(vec![linked("b3", 5), linked("b1", 6)], &[]);
    assert!(matches!(refused, Err(StoreError::Conflict)), "{refused:?}");
    assert_eq!(store.audit_page(0, 10).await.unwrap().len(), 4);
    // An in-memory database has no file for a second connection.
    let memory = SqliteStore::in_memory().await.unwrap();
    assert!(memory.audit_appender().unwrap().is_none());
}

/// A log longer than `RESTART_ABOVE_FRAMES` is copied whole by one
/// checkpoint step and starts over at the next write. (Whether a steady
/// stream of writes would start it over without the `RESTART` depends on
/// timing; bench/fastpath.sh reports the log's size after its rounds.)
#[tokio::test]
async fn a_checkpointed_long_log_starts_over_at_the_next_write() {
    use crate::sqlite_checkpointer::{RESTART_ABOVE_FRAMES, checkpoint};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut appender = store.audit_appender().unwrap().unwrap();
    let connection = crate::sqlite_sync::open(&path).unwrap();
    let frames = || {
        // The log's length from its file (4 KiB pages, 24-byte frame
        // headers), without checkpointing it.
        let wal = std::fs::metadata(dir.path().join("g.db-wal"))
            .unwrap()
            .len();
        i64::try_from(wal / 4120).unwrap()
    };
    let mut n = 0;
    // A reader keeps the store's own thread from copying (and so from
    // restarting) the log meanwhile.
    let reader = crate::sqlite_sync::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT COUNT(*) FROM api_keys;")
        .unwrap();
    while frames() <= RESTART_ABOVE_FRAMES {
        let batch = (0..10)
            .map(|i| event(&format!("e{n}-{i}"), n, "read_file", Outcome::Success))
            .collect();
        appender.append(batch, &[]).unwrap();
        n += 1;
    }
    reader.execute_batch("COMMIT").unwrap();
    let (log, checkpointed) = checkpoint(&connection).unwrap();
    assert_eq!(log, checkpointed, "one step copies the whole log");
    appender
        .append(vec![event("last", n, "read_file", Outcome::Success)], &[])
        .unwrap();
    let (log, _) = checkpoint(&connection).unwrap();
    assert!(log < 64, "the log did not start over: {log} frames");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(stored, n * 10 + 1);
}

/// Every migration file is in the list the store applies, at the version
/// its name gives, and nothing else is: a file written and never listed
/// was once never applied (indexes missing, owners never lowered).
#[test]
fn every_migration_file_is_applied() {
    crate::migration_files::assert_listed("sqlite", MIGRATIONS);
}

/// A database made before migration 22 holds owners as they were typed
/// (`keys create --owner Alice`); once migrated, disabling `alice` revokes
/// that key too.
#[tokio::test]
async fn owners_typed_in_capitals_before_migration_22_are_revoked_with_their_user() {
    use crate::AuthorizationStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.db");
    {
        let store = SqliteStore::open(&path).await.unwrap();
        store.insert_api_key(&key("k1")).await.unwrap();
        // The database as version 21 left it.
        sqlx::raw_sql(
            "UPDATE api_keys SET owner = 'Alice';
             DROP INDEX authorization_requests_client;
             DROP INDEX device_authorizations_client;
             DELETE FROM schema_migrations WHERE version = 22;",
        )
        .execute(&store.pool)
        .await
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .insert_user(&crate::UserRecord {
            username: "alice".into(),
            tenant: "default".into(),
            roles: vec!["reader".into()],
            password_hash: "x".into(),
            created_at: Timestamp(0),
            disabled_at: None,
        })
        .await
        .unwrap();
    assert!(store.disable_user("alice", Timestamp(50)).await.unwrap());
    let stored = store.api_key("k1").await.unwrap().unwrap();
    assert_eq!(stored.owner.as_deref(), Some("alice"));
    assert_eq!(stored.revoked_at, Some(Timestamp(50)));
}
