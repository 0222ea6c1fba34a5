//! `PinStore` for PostgreSQL.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::pins::{
    APPROVE_PENDING, EXTEND_PIN, PinColumns, PinStore, ToolDefinitionRecord, ToolPinRecord,
};
use crate::postgres::bump_generation;
use crate::{PostgresStore, StoreResult};

fn pin_from_row(row: &PgRow) -> StoreResult<ToolPinRecord> {
    ToolPinRecord::try_from(PinColumns {
        upstream: row.try_get("upstream")?,
        tool: row.try_get("tool")?,
        sha256: row.try_get("sha256")?,
        definition: row.try_get("definition")?,
        pinned_at: row.try_get("pinned_at")?,
        pinned_by: row.try_get("pinned_by")?,
        pending_sha256: row.try_get("pending_sha256")?,
        pending_definition: row.try_get("pending_definition")?,
        pending_since: row.try_get("pending_since")?,
    })
}

#[async_trait]
impl PinStore for PostgresStore {
    async fn tool_pin(&self, upstream: &str, tool: &str) -> StoreResult<Option<ToolPinRecord>> {
        let row = sqlx::query("SELECT * FROM upstream_tool_pins WHERE upstream = $1 AND tool = $2")
            .bind(upstream)
            .bind(tool)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(pin_from_row).transpose()
    }

    async fn tool_pins(&self, upstream: Option<&str>) -> StoreResult<Vec<ToolPinRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM upstream_tool_pins WHERE $1::text IS NULL OR upstream = $1 \
             ORDER BY upstream, tool",
        )
        .bind(upstream)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pin_from_row).collect()
    }

    async fn count_tool_pins(&self, upstream: &str) -> StoreResult<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM upstream_tool_pins WHERE upstream = $1")
                .bind(upstream)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn insert_tool_pin(
        &self,
        upstream: &str,
        tool: &str,
        definition: &ToolDefinitionRecord,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO upstream_tool_pins (upstream, tool, sha256, definition, pinned_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (upstream, tool) DO NOTHING",
        )
        .bind(upstream)
        .bind(tool)
        .bind(&definition.sha256)
        .bind(&definition.definition)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn set_pending_tool_definition(
        &self,
        upstream: &str,
        tool: &str,
        pinned_sha256: &str,
        seen: &ToolDefinitionRecord,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let updated = sqlx::query(
            "UPDATE upstream_tool_pins \
             SET pending_sha256 = $4, pending_definition = $5, pending_since = $6 \
             WHERE upstream = $1 AND tool = $2 AND sha256 = $3 \
             AND (pending_sha256 IS NULL OR pending_sha256 <> $4)",
        )
        .bind(upstream)
        .bind(tool)
        .bind(pinned_sha256)
        .bind(&seen.sha256)
        .bind(&seen.definition)
        .bind(now.0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    async fn clear_pending_tool_definition(
        &self,
        upstream: &str,
        tool: &str,
        pinned_sha256: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE upstream_tool_pins \
             SET pending_sha256 = NULL, pending_definition = NULL, pending_since = NULL \
             WHERE upstream = $1 AND tool = $2 AND sha256 = $3 AND pending_sha256 IS NOT NULL",
        )
        .bind(upstream)
        .bind(tool)
        .bind(pinned_sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn approve_tool_definition(
        &self,
        upstream: &str,
        tool: &str,
        pending_sha256: &str,
        by: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.update_one_pin(
            sqlx::query(APPROVE_PENDING)
                .bind(upstream)
                .bind(tool)
                .bind(pending_sha256)
                .bind(now.0)
                .bind(by),
        )
        .await
    }

    async fn extend_tool_pin(
        &self,
        upstream: &str,
        tool: &str,
        old_sha256: &str,
        extended: &ToolDefinitionRecord,
    ) -> StoreResult<bool> {
        self.update_one_pin(
            sqlx::query(EXTEND_PIN)
                .bind(upstream)
                .bind(tool)
                .bind(old_sha256)
                .bind(&extended.sha256)
                .bind(&extended.definition),
        )
        .await
    }
}

impl PostgresStore {
    /// Runs a conditional UPDATE of one pin; when it changed the pin, the
    /// credential generation is bumped in the same transaction, so every
    /// instance judges by the new pin from its next request. `false`: the
    /// pin was not as the statement required (another instance was quicker).
    async fn update_one_pin(
        &self,
        update: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        if update.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        let generation = bump_generation(&mut tx).await?;
        tx.commit().await?;
        self.note_bump(generation);
        Ok(true)
    }
}
