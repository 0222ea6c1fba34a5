//! `LifecycleStore` for SQLite.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use sqlx::Row;

use crate::lifecycle::{GrantUse, LifecycleStore, SIGNING_KEY_ROTATED};
use crate::sqlite::signing_key_insert;
use crate::{SigningKeyRecord, SqliteStore, StoreResult};

#[async_trait]
impl LifecycleStore for SqliteStore {
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool> {
        // The same statement as on PostgreSQL: the conflict branch updates
        // only a lease that is ours or has run out.
        let taken = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at <= $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn record_lifecycle_notice(
        &self,
        credential_kind: &str,
        credential_id: &str,
        code: &str,
        basis: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let recorded = sqlx::query(
            "INSERT INTO lifecycle_notices (credential_kind, credential_id, code, basis, given_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(credential_kind)
        .bind(credential_id)
        .bind(code)
        .bind(basis.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(recorded == 1)
    }

    async fn lifecycle_notice_given(
        &self,
        credential_kind: &str,
        credential_id: &str,
        code: &str,
        basis: Timestamp,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM lifecycle_notices \
             WHERE credential_kind = $1 AND credential_id = $2 AND code = $3 AND basis = $4",
        )
        .bind(credential_kind)
        .bind(credential_id)
        .bind(code)
        .bind(basis.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn live_grants(&self) -> StoreResult<Vec<GrantUse>> {
        let rows = sqlx::query(
            "SELECT id, client_id, username, tenant, created_at, last_used_at FROM grants \
             WHERE revoked_at IS NULL ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(GrantUse {
                    id: row.try_get("id")?,
                    client_id: row.try_get("client_id")?,
                    username: row.try_get("username")?,
                    tenant: row.try_get("tenant")?,
                    created_at: Timestamp(row.try_get("created_at")?),
                    last_used_at: row
                        .try_get::<Option<i64>, _>("last_used_at")?
                        .map(Timestamp),
                })
            })
            .collect()
    }

    async fn add_successor_signing_key(
        &self,
        replaces: &str,
        successor: &SigningKeyRecord,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let change = self.announce_change();
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO lifecycle_notices (credential_kind, credential_id, code, basis, given_at) \
             VALUES ('signing_key', $1, $2, 0, $3) ON CONFLICT DO NOTHING",
        )
        .bind(replaces)
        .bind(SIGNING_KEY_ROTATED)
        .bind(now.0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            return Ok(false);
        }
        signing_key_insert(successor).execute(&mut *tx).await?;
        tx.commit().await?;
        change.announce();
        Ok(true)
    }
}
