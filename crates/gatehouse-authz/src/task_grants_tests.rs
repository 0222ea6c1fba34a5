use std::sync::Arc;

use gatehouse_audit::AuditLog;
use gatehouse_core::{AuditKind, CredentialKind, CredentialRef, Principal, Timestamp};
use gatehouse_store::{AuditQuery, SqliteStore, Store};

use super::*;

fn reader() -> Principal {
    Principal {
        tenant: "default".into(),
        human: Some("alice".into()),
        agent: "ghk_bot".into(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "ghk_bot".into(),
        },
        roles: vec!["reader".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    }
}

async fn setup() -> (Arc<dyn Store>, TaskGrants) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let (audit, _writer) = AuditLog::start(Arc::clone(&store), None, false).unwrap();
    (Arc::clone(&store), TaskGrants::new(store, audit))
}

const T0: Timestamp = Timestamp(1_000_000);

fn origin() -> GrantOrigin {
    GrantOrigin {
        via: "token_exchange",
        source: None,
        session: None,
    }
}

#[tokio::test]
async fn a_grant_holds_the_intersection_and_is_revocable_by_id() {
    let (store, grants) = setup().await;
    let policy = Policy::default_matrix();
    let grant = grants
        .grant(&policy, &reader(), "research", origin(), T0)
        .await
        .unwrap();
    assert!(grant.id.starts_with(TASK_GRANT_PREFIX));
    // research names web_fetch too, which a reader may not call.
    assert!(!grant.tools.contains(&"web_fetch".to_string()));
    assert!(grant.tools.contains(&"read_file".to_string()));
    assert!(grant.expires_at <= T0.plus_millis(3_600_000));
    assert!(grants.live(&grant.id, T0).await.unwrap().is_some());
    assert!(grants.revoke(&grant.id, "operator", T0).await.unwrap());
    assert!(grants.live(&grant.id, T0).await.unwrap().is_none());
    assert!(store.revoked_tokens(T0).await.unwrap().contains(&grant.id));
    assert!(!grants.revoke(&grant.id, "operator", T0).await.unwrap());
}

#[tokio::test]
async fn a_grant_never_outlives_its_credential() {
    let (_store, grants) = setup().await;
    let mut p = reader();
    p.expires_at = Some(T0.plus_millis(60_000));
    let grant = grants
        .grant(&Policy::default_matrix(), &p, "research", origin(), T0)
        .await
        .unwrap();
    assert_eq!(grant.expires_at, T0.plus_millis(60_000));
}

#[tokio::test]
async fn refusals_are_recorded_as_anomalies() {
    let (store, grants) = setup().await;
    let policy = Policy::default_matrix();
    let refused = grants
        .grant(&policy, &reader(), "no-such-task", origin(), T0)
        .await;
    assert!(matches!(refused, Err(TaskGrantError::Refused(_))));
    let mut in_task = reader();
    in_task.task = Some(gatehouse_core::TaskGrant {
        id: "tg_1".into(),
        task: "research".into(),
        tools: vec!["read_file".into()],
        expires_at: Timestamp(i64::MAX),
        issued_at: None,
    });
    let escalation = grants
        .grant(&policy, &in_task, "outreach", origin(), T0)
        .await;
    assert!(matches!(escalation, Err(TaskGrantError::Refused(_))));
    let rows = store
        .query_audit(&AuditQuery {
            kind: Some(AuditKind::Anomaly),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let reasons: Vec<_> = rows.iter().filter_map(|r| r.event.reason.clone()).collect();
    assert!(reasons.contains(&"unknown_task".to_string()), "{reasons:?}");
    assert!(
        reasons.contains(&"task_escalation".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn an_expired_grant_is_not_live() {
    let (_store, grants) = setup().await;
    let grant = grants
        .grant(
            &Policy::default_matrix(),
            &reader(),
            "research",
            origin(),
            T0,
        )
        .await
        .unwrap();
    assert!(
        grants
            .live(&grant.id, grant.expires_at.plus_millis(-1))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        grants
            .live(&grant.id, grant.expires_at)
            .await
            .unwrap()
            .is_none()
    );
}
