//! Each lifecycle action against a real store, with injected time, on
//! SQLite and on PostgreSQL (`GATEHOUSE_TEST_POSTGRES_URL`, default the
//! local `test` database, a fresh schema per test; skipped loudly without
//! a server, except under `CI=true`).

use std::process::Command;
use std::sync::Arc;

use gatehouse_audit::AuditLog;
use gatehouse_core::{AuditKind, Timestamp};
use gatehouse_oauth::MasterKey;
use gatehouse_store::{
    ApiKeyRecord, AuditQuery, AuditRow, ClientRecord, GrantRecord, NewGrant, PostgresStore,
    SigningKeyState, SqliteStore, Store, UserRecord, signing_schedule,
};

use gatehouse_store::testing::DownStore;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::lifecycle::plan::{
    CREDENTIAL_EXPIRING, CREDENTIAL_UNUSED, REVOKED_MAX_AGE, REVOKED_UNUSED, SIGNING_KEY_ROTATED,
};
use crate::lifecycle::settings::LifecycleConfig;

const DAY: i64 = 24 * 3600 * 1000;
/// Day 0 of every test: an arbitrary instant well after the epoch.
const T0: i64 = 1_800_000_000_000;

fn day(d: i64) -> Timestamp {
    Timestamp(T0 + d * DAY)
}

fn postgres_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .arg(postgres_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A PostgreSQL schema of the test's own, dropped at the end.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = psql(&format!("DROP SCHEMA {} CASCADE", self.0));
    }
}

async fn postgres() -> Option<(Arc<dyn Store>, Schema)> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let name = format!("gh_lifecycle_{}", hex::encode(bytes));
    if let Err(e) = psql(&format!("CREATE SCHEMA {name}")) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL is required in CI: {e}");
        }
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "!!! SKIPPING the PostgreSQL lifecycle tests: {e}"
        );
        return None;
    }
    let schema = Schema(name);
    let separator = if postgres_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{separator}options=-c%20search_path%3D{}",
        postgres_url(),
        schema.0
    );
    let store = PostgresStore::connect(&url).await.unwrap();
    Some((Arc::new(store), schema))
}

/// Runs `check` on a fresh SQLite store and a fresh PostgreSQL schema.
async fn on_both<F, Fut>(check: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    check(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
    if let Some((store, _schema)) = postgres().await {
        check(store).await;
    }
}

fn key(id: &str, tenant: &str, created: Timestamp, used: Option<Timestamp>) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        name: id.into(),
        tenant: tenant.into(),
        role: "reader".into(),
        scopes: None,
        owner: Some("alice".into()),
        secret_hash: "00".repeat(32),
        created_at: created,
        expires_at: None,
        revoked_at: None,
        last_used_at: used,
        rotated_to: None,
    }
}

fn client(id: &str, created: Timestamp, secret: bool) -> ClientRecord {
    ClientRecord {
        id: id.into(),
        name: id.into(),
        tenant: "default".into(),
        role: "reader".into(),
        scopes: None,
        secret_hash: secret.then(|| "ab".repeat(32)),
        created_at: created,
        revoked_at: None,
        redirect_uris: Vec::new(),
        grant_types: vec!["client_credentials".into()],
        auth_method: if secret {
            "client_secret_basic".into()
        } else {
            "none".into()
        },
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

fn grant(id: &str, created: Timestamp) -> GrantRecord {
    GrantRecord {
        id: id.into(),
        client_id: "ghc_app".into(),
        username: "bob".into(),
        tenant: "default".into(),
        roles: vec!["reader".into()],
        scope: "tools:read".into(),
        resource: "https://gh.example/mcp".into(),
        created_at: created,
        revoked_at: None,
    }
}

/// Stores a grant of bob's as a consent would: bob exists, and the grant
/// is stored under his password hash.
async fn insert_bobs_grant(store: &dyn Store, grant: &GrantRecord) {
    let bob = UserRecord {
        username: grant.username.clone(),
        tenant: grant.tenant.clone(),
        roles: grant.roles.clone(),
        password_hash: "$argon2id$stub".into(),
        created_at: Timestamp(0),
        disabled_at: None,
    };
    store.insert_user(&bob).await.unwrap();
    assert!(
        store
            .insert_grant(NewGrant {
                grant,
                password_hash: &bob.password_hash,
            })
            .await
            .unwrap()
    );
}

fn policy(toml_text: &str) -> LifecyclePolicy {
    let config: LifecycleConfig = toml::from_str(toml_text).unwrap();
    config.validate().unwrap();
    config.policy()
}

/// One pass at `now`: the plan, then its application with audit records.
async fn pass(
    store: &Arc<dyn Store>,
    policy: &LifecyclePolicy,
    master: Option<&MasterKey>,
    now: Timestamp,
) -> Vec<Applied> {
    let actions = plan(store, policy, master.is_some(), now).await.unwrap();
    apply_planned(store, master, actions, now).await
}

/// Applies `actions` (planned earlier) at `now` with audit records.
async fn apply_planned(
    store: &Arc<dyn Store>,
    master: Option<&MasterKey>,
    actions: Vec<Action>,
    now: Timestamp,
) -> Vec<Applied> {
    let (audit, writer) = AuditLog::start(Arc::clone(store), None, false).unwrap();
    let signing = master.map(|master| SigningKeys { master });
    let alerts = Alerts::new(Arc::clone(store));
    let applied = apply(
        store,
        &audit,
        &alerts,
        signing.as_ref(),
        actions,
        now,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    drop(audit);
    writer.wait().await;
    applied
}

fn codes(applied: &[Applied]) -> Vec<(String, &'static str, bool)> {
    applied
        .iter()
        .map(|a| (a.action.subject.id.clone(), a.action.step.code(), a.done))
        .collect()
}

async fn audit(store: &Arc<dyn Store>, kind: AuditKind) -> Vec<AuditRow> {
    store
        .query_audit(&AuditQuery {
            kind: Some(kind),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_credential_near_its_maximum_age_is_warned_once() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(75))))
            .await
            .unwrap();
        assert!(pass(&store, &policy, None, day(75)).await.is_empty());
        let applied = pass(&store, &policy, None, day(76)).await;
        assert_eq!(codes(&applied), [("k1".into(), CREDENTIAL_EXPIRING, true)]);
        let records = audit(&store, AuditKind::Alert).await;
        assert_eq!(records.len(), 1);
        let event = &records[0].event;
        assert_eq!(event.reason.as_deref(), Some(CREDENTIAL_EXPIRING));
        // The warning is an alert: in the alert list too, under the
        // record's id.
        let listed = store.alerts(false, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, records[0].event.id);
        assert_eq!(listed[0].code, CREDENTIAL_EXPIRING);
        assert_eq!(listed[0].subject, "api_key k1");
        assert_eq!(event.credential.as_deref(), Some("k1"));
        assert_eq!(event.human.as_deref(), Some("alice"));
        assert_eq!(event.tool.as_deref(), Some("lifecycle/api_key"));
        assert!(
            event
                .error
                .as_deref()
                .unwrap()
                .contains(&day(90).to_rfc3339()),
            "{event:?}"
        );
        // Once: later passes (on this instance or another) say nothing more.
        assert!(pass(&store, &policy, None, day(80)).await.is_empty());
        assert_eq!(audit(&store, AuditKind::Alert).await.len(), 1);
        assert!(
            store
                .api_key("k1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn a_credential_at_its_maximum_age_is_revoked_and_audited() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(89))))
            .await
            .unwrap();
        store
            .insert_client(&client("ghc_1", day(0), true))
            .await
            .unwrap();
        store.touch_client("ghc_1", day(89)).await.unwrap();
        insert_bobs_grant(store.as_ref(), &grant("g1", day(0))).await;
        // A dry run (the plan alone) changes nothing.
        let planned = plan(&store, &policy, false, day(90)).await.unwrap();
        assert_eq!(planned.len(), 3);
        assert!(
            store
                .api_key("k1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );

        let mut applied = codes(&pass(&store, &policy, None, day(90)).await);
        applied.sort();
        assert_eq!(
            applied,
            [
                ("g1".into(), REVOKED_MAX_AGE, true),
                ("ghc_1".into(), REVOKED_MAX_AGE, true),
                ("k1".into(), REVOKED_MAX_AGE, true),
            ]
        );
        assert_eq!(
            store.api_key("k1").await.unwrap().unwrap().revoked_at,
            Some(day(90))
        );
        assert!(
            store
                .client("ghc_1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert!(store.live_grants().await.unwrap().is_empty());
        let records = audit(&store, AuditKind::Lifecycle).await;
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| {
            r.event.reason.as_deref() == Some(REVOKED_MAX_AGE)
                && r.event.decision.as_deref() == Some("revoke")
        }));
        // The same actions done again (a racing instance): nothing, no record.
        let again = apply(
            &store,
            &AuditLog::start(Arc::clone(&store), None, false).unwrap().0,
            &Alerts::new(Arc::clone(&store)),
            None,
            planned,
            day(90),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert!(again.iter().all(|a| !a.done));
        assert_eq!(audit(&store, AuditKind::Lifecycle).await.len(), 3);
        assert!(pass(&store, &policy, None, day(91)).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn an_unused_credential_is_alerted_then_revoked() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(10))))
            .await
            .unwrap();
        // A public client holds no secret: the lifecycle leaves it alone.
        store
            .insert_client(&client("ghc_public", day(0), false))
            .await
            .unwrap();
        store
            .insert_client(&client("ghc_1", day(0), true))
            .await
            .unwrap();
        insert_bobs_grant(store.as_ref(), &grant("g1", day(0))).await;
        store.touch_client("ghc_1", day(10)).await.unwrap();

        assert!(
            pass(&store, &policy, None, Timestamp(day(15).0 - 1))
                .await
                .is_empty()
        );
        let mut alerted = codes(&pass(&store, &policy, None, day(25)).await);
        alerted.sort();
        assert_eq!(
            alerted,
            [
                ("g1".into(), CREDENTIAL_UNUSED, true),
                ("ghc_1".into(), CREDENTIAL_UNUSED, true),
                ("k1".into(), CREDENTIAL_UNUSED, true),
            ]
        );
        let mut revoked = codes(&pass(&store, &policy, None, day(40)).await);
        revoked.sort();
        assert_eq!(
            revoked,
            [
                ("g1".into(), REVOKED_UNUSED, true),
                ("ghc_1".into(), REVOKED_UNUSED, true),
                ("k1".into(), REVOKED_UNUSED, true),
            ]
        );
        assert!(store.api_key("k1").await.unwrap().unwrap().is_revoked());
        assert!(
            store
                .client("ghc_public")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        let lifecycle = audit(&store, AuditKind::Lifecycle).await;
        assert_eq!(lifecycle.len(), 3);
        let grant_record = lifecycle
            .iter()
            .find(|r| r.event.credential.as_deref() == Some("g1"))
            .unwrap();
        assert_eq!(grant_record.event.human.as_deref(), Some("bob"));
        assert_eq!(grant_record.event.tool.as_deref(), Some("lifecycle/grant"));
        assert_eq!(grant_record.event.reason.as_deref(), Some(REVOKED_UNUSED));
    })
    .await;
}

/// A pass plans, then writes each warning's records before it reaches the
/// revocations (minutes over many credentials): a key used, or a client's
/// secret rotated, in between is not revoked by the stale plan.
#[tokio::test]
async fn a_credential_used_or_rotated_after_the_plan_is_not_revoked_by_it() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(1))))
            .await
            .unwrap();
        store
            .insert_client(&client("ghc_1", day(0), true))
            .await
            .unwrap();
        store.touch_client("ghc_1", day(1)).await.unwrap();
        let now = day(40);
        let actions = plan(&store, &policy, false, now).await.unwrap();
        assert!(
            actions
                .iter()
                .any(|a| a.step.code() == REVOKED_UNUSED && a.subject.id == "k1"),
            "{:?}",
            actions
                .iter()
                .map(|a| (&a.subject.id, a.step.code()))
                .collect::<Vec<_>>()
        );
        // Meanwhile: the key is used, the client's secret rotated.
        store.touch_api_key("k1", day(39)).await.unwrap();
        let record = store.client("ghc_1").await.unwrap().unwrap();
        assert!(
            store
                .rotate_client_secret(
                    "ghc_1",
                    record.secret_hash.as_deref().unwrap(),
                    "new-hash",
                    day(39),
                    day(39),
                    None,
                )
                .await
                .unwrap()
        );
        let applied = apply_planned(&store, None, actions, now).await;
        assert!(
            applied
                .iter()
                .filter(|a| a.action.step.code() == REVOKED_UNUSED)
                .all(|a| !a.done),
            "{:?}",
            codes(&applied)
        );
        assert!(!store.api_key("k1").await.unwrap().unwrap().is_revoked());
        assert!(
            store
                .client("ghc_1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        assert!(audit(&store, AuditKind::Lifecycle).await.is_empty());
    })
    .await;
}

/// Use says nothing against the maximum age: a key in constant use (a
/// stolen one, say) past it is revoked though it was used after the plan.
#[tokio::test]
async fn a_busy_key_past_its_maximum_age_is_revoked_all_the_same() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("busy", "default", day(0), Some(day(99))))
            .await
            .unwrap();
        let now = day(100);
        let actions = plan(&store, &policy, false, now).await.unwrap();
        assert!(
            actions
                .iter()
                .any(|a| a.step.code() == REVOKED_MAX_AGE && a.subject.id == "busy")
        );
        store.touch_api_key("busy", now).await.unwrap();
        apply_planned(&store, None, actions, now).await;
        assert!(store.api_key("busy").await.unwrap().unwrap().is_revoked());
    })
    .await;
}

#[tokio::test]
async fn a_credential_used_again_is_alerted_again_after_new_disuse() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(1))))
            .await
            .unwrap();
        assert_eq!(
            codes(&pass(&store, &policy, None, day(16)).await),
            [("k1".into(), CREDENTIAL_UNUSED, true)]
        );
        assert!(pass(&store, &policy, None, day(17)).await.is_empty());
        store.touch_api_key("k1", day(20)).await.unwrap();
        assert!(pass(&store, &policy, None, day(30)).await.is_empty());
        assert_eq!(
            codes(&pass(&store, &policy, None, day(35)).await),
            [("k1".into(), CREDENTIAL_UNUSED, true)]
        );
        assert_eq!(audit(&store, AuditKind::Alert).await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn tenants_get_their_own_thresholds() {
    on_both(|store| async move {
        let policy = policy(
            "[api_keys]\nunused_alert = \"off\"\n\
             [tenants.acme.api_keys]\nunused_revoke = \"2d\"\n\
             [tenants.calm.api_keys]\nunused_revoke = \"off\"\nmax_age = \"off\"\n",
        );
        for (id, tenant) in [("k-acme", "acme"), ("k-other", "other"), ("k-calm", "calm")] {
            store
                .insert_api_key(&key(id, tenant, day(0), None))
                .await
                .unwrap();
        }
        assert_eq!(
            codes(&pass(&store, &policy, None, day(2)).await),
            [("k-acme".into(), REVOKED_UNUSED, true)]
        );
        assert_eq!(
            codes(&pass(&store, &policy, None, day(30)).await),
            [("k-other".into(), REVOKED_UNUSED, true)]
        );
        assert!(pass(&store, &policy, None, day(1000)).await.is_empty());
        assert!(!store.api_key("k-calm").await.unwrap().unwrap().is_revoked());
    })
    .await;
}

#[tokio::test]
async fn rotated_and_expired_keys_are_left_to_run_out() {
    on_both(|store| async move {
        let policy = policy("");
        let mut expired = key("k-expired", "default", day(0), None);
        expired.expires_at = Some(day(5));
        store.insert_api_key(&expired).await.unwrap();
        store
            .insert_api_key(&key("k-old", "default", day(0), None))
            .await
            .unwrap();
        assert!(
            store
                .rotate_api_key("k-old", &key("k-new", "default", day(1), None), day(2))
                .await
                .unwrap()
        );
        let applied = codes(&pass(&store, &policy, None, day(31)).await);
        assert_eq!(applied, [("k-new".into(), REVOKED_UNUSED, true)]);
        assert!(
            !store
                .api_key("k-expired")
                .await
                .unwrap()
                .unwrap()
                .is_revoked()
        );
    })
    .await;
}

#[tokio::test]
async fn the_signing_key_is_replaced_at_its_maximum_age_with_the_overlap() {
    on_both(|store| async move {
        let policy = policy("");
        let master = MasterKey::generate().unwrap();
        let first = gatehouse_oauth::add_signing_key(&store, &master, day(0), day(0))
            .await
            .unwrap();
        assert!(
            pass(&store, &policy, Some(&master), day(75))
                .await
                .is_empty()
        );
        assert_eq!(
            codes(&pass(&store, &policy, Some(&master), day(76)).await),
            [(first.kid.clone(), CREDENTIAL_EXPIRING, true)]
        );
        // Without the master key (no authorization server) nothing is rotated.
        assert!(pass(&store, &policy, None, day(89)).await.is_empty());

        let applied = pass(&store, &policy, Some(&master), day(89)).await;
        assert_eq!(
            codes(&applied),
            [(first.kid.clone(), SIGNING_KEY_ROTATED, true)]
        );
        let new_kid = applied[0].new_kid.clone().unwrap();
        let records = store.signing_keys().await.unwrap();
        let schedule = signing_schedule(&records, day(89), gatehouse_authn::REPLACED_KEY_TRUST_MS);
        let state = |kid: &str| {
            schedule
                .keys
                .iter()
                .find(|k| k.record.kid == kid)
                .map(|k| k.state)
        };
        // Published a day ahead, the old key still signs until day 90.
        assert_eq!(state(&new_kid), Some(SigningKeyState::Next));
        assert_eq!(state(&first.kid), Some(SigningKeyState::Active));
        let successor = records.iter().find(|k| k.kid == new_kid).unwrap();
        assert_eq!(successor.activates_at, day(90));
        // It opens with the master key: a real key, not a placeholder.
        assert!(
            master
                .open(&successor.sealed_pkcs8, new_kid.as_bytes())
                .is_ok()
        );
        let lifecycle = audit(&store, AuditKind::Lifecycle).await;
        assert_eq!(lifecycle.len(), 1);
        assert!(
            lifecycle[0]
                .event
                .error
                .as_deref()
                .unwrap()
                .contains(&new_kid)
        );
        // A successor is published: later passes leave it be.
        assert!(
            pass(&store, &policy, Some(&master), day(89))
                .await
                .is_empty()
        );
        assert!(
            pass(&store, &policy, Some(&master), day(95))
                .await
                .is_empty()
        );
        assert_eq!(store.signing_keys().await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn no_successor_is_added_under_a_master_key_that_cannot_open_the_signing_key() {
    on_both(|store| async move {
        let policy = policy("");
        let master = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        gatehouse_oauth::add_signing_key(&store, &master, day(0), day(0))
            .await
            .unwrap();
        let actions = plan(&store, &policy, true, day(89)).await.unwrap();
        let (audit, writer) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        let signing = SigningKeys { master: &other };
        let alerts = Alerts::new(Arc::clone(&store));
        let error = apply(
            &store,
            &audit,
            &alerts,
            Some(&signing),
            actions,
            day(89),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        drop(audit);
        writer.wait().await;
        assert!(error.to_string().contains("does not open"), "{error}");
        assert_eq!(store.signing_keys().await.unwrap().len(), 1);
        assert!(
            store
                .query_audit(&AuditQuery::default())
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}

#[tokio::test]
async fn a_warning_whose_alert_cannot_be_raised_is_raised_by_the_next_pass() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(75))))
            .await
            .unwrap();
        let actions = plan(&store, &policy, false, day(76)).await.unwrap();
        assert_eq!(actions.len(), 1);
        // The audit log cannot write (its database is down): the alert
        // cannot be raised, so the notice that would silence it is not
        // recorded either.
        let down: Arc<dyn Store> = Arc::new(DownStore);
        let (down_audit, writer) = AuditLog::start(Arc::clone(&down), None, false).unwrap();
        let alerts = Alerts::new(Arc::clone(&down));
        let error = apply(
            &store,
            &down_audit,
            &alerts,
            None,
            actions,
            day(76),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        drop(down_audit);
        writer.wait().await;
        assert!(matches!(error, PassError::Alert(_)), "{error}");
        let applied = pass(&store, &policy, None, day(77)).await;
        assert_eq!(codes(&applied), [("k1".into(), CREDENTIAL_EXPIRING, true)]);
        assert_eq!(audit(&store, AuditKind::Alert).await.len(), 1);
        assert!(pass(&store, &policy, None, day(78)).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_stopped_pass_does_nothing_more() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_api_key(&key("k1", "default", day(0), Some(day(89))))
            .await
            .unwrap();
        let actions = plan(&store, &policy, false, day(90)).await.unwrap();
        assert_eq!(actions.len(), 1);
        let (log, writer) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let applied = apply(
            &store,
            &log,
            &Alerts::new(Arc::clone(&store)),
            None,
            actions,
            day(90),
            &stop,
        )
        .await
        .unwrap();
        drop(log);
        writer.wait().await;
        assert!(applied.is_empty());
        assert!(
            store
                .api_key("k1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        // The next pass does it, with its record.
        let applied = pass(&store, &policy, None, day(90)).await;
        assert_eq!(codes(&applied), [("k1".into(), REVOKED_MAX_AGE, true)]);
        assert_eq!(audit(&store, AuditKind::Lifecycle).await.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_rotated_client_secret_is_aged_from_its_rotation_and_warned_again() {
    on_both(|store| async move {
        let policy = policy("");
        store
            .insert_client(&client("ghc_1", day(0), true))
            .await
            .unwrap();
        store.touch_client("ghc_1", day(76)).await.unwrap();
        let applied = pass(&store, &policy, None, day(76)).await;
        assert_eq!(
            codes(&applied),
            [("ghc_1".into(), CREDENTIAL_EXPIRING, true)]
        );

        // Rotated before its maximum age: the new secret is 0 days old,
        // so day 90 revokes nothing and the next warning is the new
        // secret's own, 14 days before its maximum age.
        let issued = store.client("ghc_1").await.unwrap().unwrap();
        assert!(
            store
                .rotate_client_secret(
                    "ghc_1",
                    issued.secret_hash.as_deref().unwrap(),
                    &"cd".repeat(32),
                    day(80),
                    day(81),
                    None,
                )
                .await
                .unwrap()
        );
        store.touch_client("ghc_1", day(100)).await.unwrap();
        assert!(pass(&store, &policy, None, day(100)).await.is_empty());
        assert!(
            store
                .client("ghc_1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        store.touch_client("ghc_1", day(156)).await.unwrap();
        let applied = pass(&store, &policy, None, day(156)).await;
        assert_eq!(
            codes(&applied),
            [("ghc_1".into(), CREDENTIAL_EXPIRING, true)]
        );
        assert_eq!(audit(&store, AuditKind::Alert).await.len(), 2);
        store.touch_client("ghc_1", day(170)).await.unwrap();
        let applied = pass(&store, &policy, None, day(170)).await;
        assert_eq!(codes(&applied), [("ghc_1".into(), REVOKED_MAX_AGE, true)]);
    })
    .await;
}
