//! PostgreSQL tests against a real server: `GATEHOUSE_TEST_POSTGRES_URL`, or
//! `postgres://postgres@127.0.0.1:5432/test`. Each test works in a fresh
//! schema that it drops at the end, so tests run in parallel and leave
//! nothing behind. Without a server the tests are skipped loudly, except
//! under `CI=true`, where they fail.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse_core::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::*;
use crate::store_conformance_tests::{TestStore, key};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Written straight to the process's stderr, past the test harness's
/// output capture, so a skip is seen in a normal `cargo test` run.
fn skipping(reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "!!! SKIPPING PostgreSQL tests: {reason}");
}

/// A schema of its own on the test server.
struct TestSchema {
    admin: PgPool,
    name: String,
    options: PgConnectOptions,
}

impl TestSchema {
    /// `None` (after saying so) when there is no server and not in CI.
    async fn create() -> Option<TestSchema> {
        // Once one test found no server, the others skip at once.
        static UNREACHABLE: OnceLock<String> = OnceLock::new();
        if let Some(reason) = UNREACHABLE.get() {
            skipping(reason);
            return None;
        }
        let url =
            std::env::var("GATEHOUSE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let base =
            PgConnectOptions::from_str(&url).expect("GATEHOUSE_TEST_POSTGRES_URL is not a URL");
        let admin = match PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(base.clone())
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                let reason = format!("cannot reach PostgreSQL ({e})");
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{reason}; CI=true, so PostgreSQL tests must run");
                }
                skipping(&reason);
                let _ = UNREACHABLE.set(reason);
                return None;
            }
        };
        let name: String =
            sqlx::query_scalar("SELECT 'gh_test_' || replace(gen_random_uuid()::text, '-', '')")
                .fetch_one(&admin)
                .await
                .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = base.options([("search_path", name.as_str())]);
        Some(TestSchema {
            admin,
            name,
            options,
        })
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(self.options.clone())
            .await
            .unwrap()
    }

    async fn drop_schema(self) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
        self.admin.close().await;
    }

    /// Runs `test` in a task, so the schema is dropped even when it panics;
    /// the panic is then passed on.
    async fn run<Fut>(self, test: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(test).await;
        self.drop_schema().await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The runner for the shared conformance tests.
async fn with_store<F, Fut>(test: F)
where
    F: FnOnce(TestStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = schema.store().await;
    let pool = store.pool.clone();
    let body = test(Arc::new(store));
    schema
        .run(async move {
            body.await;
            pool.close().await;
        })
        .await;
}

mod conformance {
    use super::with_store;
    // A PostgreSQL store has a pool of connections, so every store races.
    crate::store_conformance_tests::conformance_tests!(serial: with_store, concurrent: with_store);
}

/// Polls (bounded, about 5 s) until `done` holds. Only for waiting on a
/// NOTIFY or a reconnect, which take a moment by nature.
/// The store's generation once its listener has read it lately (on a
/// loaded machine a heartbeat may come late, and the generation is unknown
/// meanwhile: see `TRUSTED_FOR`).
async fn known_generation(store: &PostgresStore) -> u64 {
    for _ in 0..100 {
        if let Some(generation) = store.credential_generation() {
            return generation;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the listener never read the counter");
}

async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_on_one_instance_moves_the_generation_on_another() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let one = schema.store().await;
    let two = schema.store().await;
    schema
        .run(async move {
            one.insert_api_key(&key("k1")).await.unwrap();
            one.insert_client(&crate::ClientRecord {
                id: "c1".into(),
                name: "bot".into(),
                tenant: "t".into(),
                role: "r".into(),
                scopes: None,
                secret_hash: None,
                created_at: Timestamp(0),
                revoked_at: None,
                redirect_uris: Vec::new(),
                grant_types: Vec::new(),
                auth_method: "none".into(),
                registered_by: "operator".into(),
                last_used_at: None,
                may_introspect: false,
                jwks: None,
                jwks_uri: None,
                secret_issued_at: None,
                previous_secret: None,
                machine_tokens_not_before: None,
            })
            .await
            .unwrap();
            // Inserting a key is not a change for caches; touching is not either.
            one.touch_api_key("k1", Timestamp(1)).await.unwrap();
            let before = known_generation(&two).await;
            assert!(one.revoke_api_key("k1", Timestamp(2)).await.unwrap());
            assert!(
                eventually(|| two.credential_generation().is_some_and(|g| g != before)).await,
                "the other instance never saw the revocation"
            );
            // And the other way round, with another kind of change.
            let before = known_generation(&one).await;
            assert!(two.revoke_client("c1", Timestamp(3)).await.unwrap());
            assert!(eventually(|| one.credential_generation().is_some_and(|g| g != before)).await);
            // Both end on the same value.
            assert!(
                eventually(|| one.credential_generation().is_some()
                    && one.credential_generation() == two.credential_generation())
                .await
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_listener_makes_the_generation_unknown_until_it_has_caught_up() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let watcher = schema.store().await;
    let changer = schema.store().await;
    let admin = schema.admin.clone();
    schema
        .run(async move {
            changer.insert_api_key(&key("k1")).await.unwrap();
            let before = known_generation(&watcher).await;
            let pid = watcher.listener_pid();
            assert_ne!(pid, 0);
            // Cut the listener, and change a key while it may be away.
            let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&admin)
                .await
                .unwrap();
            assert!(changer.revoke_api_key("k1", Timestamp(2)).await.unwrap());
            // Whatever happened in between, the watcher ends up on a new
            // connection, knowing the change.
            assert!(
                eventually(|| {
                    watcher.listener_pid() != pid
                        && watcher.listener_pid() != 0
                        && watcher.credential_generation().is_some_and(|g| g != before)
                })
                .await,
                "the listener did not come back with the new generation"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_counter_that_went_back_is_moved_above_every_value_seen() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let watcher = schema.store().await;
    let admin = schema.admin.clone();
    let table = format!("{}.credential_generation", schema.name);
    schema
        .run(async move {
            watcher.insert_api_key(&key("k1")).await.unwrap();
            assert!(watcher.revoke_api_key("k1", Timestamp(2)).await.unwrap());
            let seen = watcher.generation.highest();
            assert!(seen > 1);
            // A restored backup (or a failover that lost commits): the
            // counter is back where it started. Caches stamped with the
            // values it would reach again must not be trusted then.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("UPDATE {table} SET value = 1")))
                .execute(&admin)
                .await
                .unwrap();
            assert!(
                eventually(|| watcher
                    .credential_generation()
                    .is_some_and(|g| g > u64::try_from(seen).unwrap()))
                .await,
                "the watcher never moved the counter above what it had seen"
            );
            let stored: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT value FROM {table}")))
                    .fetch_one(&admin)
                    .await
                    .unwrap();
            assert!(stored > seen, "{stored} <= {seen}");
        })
        .await;
}

#[tokio::test]
async fn the_generation_is_unknown_while_the_listener_is_down() {
    let state = GenerationState::default();
    let t0 = state.started;
    assert_eq!(state.current_at(t0), None);
    state.resume(7, 42, t0);
    assert_eq!(state.current_at(t0), Some(7));
    // Local changes and notifications only move it forward.
    state.advance(9);
    state.advance(8);
    assert_eq!(state.current_at(t0), Some(9));
    state.set_unknown();
    assert_eq!(state.current_at(t0), None);
    // A local change while down does not make it known again.
    state.advance(10);
    assert_eq!(state.current_at(t0), None);
    state.resume(10, 43, t0);
    assert_eq!(state.current_at(t0), Some(10));
}

#[tokio::test]
async fn a_listener_that_has_not_read_the_counter_lately_is_not_trusted() {
    let state = GenerationState::default();
    let t0 = state.started;
    state.resume(7, 42, t0);
    assert_eq!(state.current_at(t0 + TRUSTED_FOR), Some(7));
    // Silent longer than that (a connection cut without a word): unknown,
    // before the read that would notice it has timed out.
    let later = t0 + TRUSTED_FOR + Duration::from_millis(1);
    assert_eq!(state.current_at(later), None);
    // Each read of the counter renews the trust.
    state.confirm_at(later);
    assert_eq!(state.current_at(later + TRUSTED_FOR), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_start_ups_migrate_once_and_a_newer_schema_is_refused() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let options = schema.options.clone();
    let admin = schema.admin.clone();
    let name = schema.name.clone();
    schema
        .run(async move {
            let starts: Vec<_> = (0..4)
                .map(|_| {
                    let options = options.clone();
                    tokio::spawn(async move { PostgresStore::connect_with(options).await })
                })
                .collect();
            for start in starts {
                start.await.unwrap().unwrap();
            }
            let versions: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT version FROM {name}.schema_migrations ORDER BY version"
            )))
            .fetch_all(&admin)
            .await
            .unwrap();
            let listed: Vec<i64> = super::MIGRATIONS.iter().map(|m| m.0).collect();
            assert_eq!(versions, listed);
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {name}.schema_migrations (version) VALUES (99)"
            )))
            .execute(&admin)
            .await
            .unwrap();
            let err = PostgresStore::connect_with(options).await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        })
        .await;
}

/// Every migration file is in the list the store applies (see the SQLite
/// test of the same name).
#[test]
fn every_migration_file_is_applied() {
    crate::migration_files::assert_listed("postgres", MIGRATIONS);
}
