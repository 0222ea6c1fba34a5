//! `GatingStore` for SQLite. Deciding an approval and redeeming its
//! operation token are conditional UPDATE … RETURNING statements: SQLite
//! runs one writer at a time, so of two concurrent attempts exactly one
//! sees the row in its pending (or approved) state.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row};

use crate::gating::{masked_fields_from_json, masked_fields_json};
use crate::sqlite::{json_list, list_json, opt_ts};
use crate::{
    AccountSeen, ApprovalCall, ApprovalDecision, ApprovalRecord, ApprovalRequester, ApprovalStatus,
    AuthLock, GatingStore, OperationBinding, SqliteStore, StoreError, StoreResult, TaskGrantRecord,
};

fn task_grant_from_row(row: &SqliteRow) -> StoreResult<TaskGrantRecord> {
    Ok(TaskGrantRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        human: row.try_get("human")?,
        agent: row.try_get("agent")?,
        credential_kind: row.try_get("credential_kind")?,
        credential_id: row.try_get("credential_id")?,
        task: row.try_get("task")?,
        tools: json_list(&row.try_get::<String, _>("tools")?, "task_grants.tools")?,
        session_id: row.try_get("session_id")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

fn approval_from_row(row: &SqliteRow) -> StoreResult<ApprovalRecord> {
    let status: String = row.try_get("status")?;
    Ok(ApprovalRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        human: row.try_get("human")?,
        human_issuer: row.try_get("human_issuer")?,
        agent: row.try_get("agent")?,
        credential_id: row.try_get("credential_id")?,
        task_grant: row.try_get("task_grant")?,
        task: row.try_get("task")?,
        tool: row.try_get("tool")?,
        arguments_hash: row.try_get("arguments_hash")?,
        arguments: row.try_get("arguments")?,
        masked_fields: masked_fields_from_json(&row.try_get::<String, _>("masked_fields")?)?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown approval status {status:?}")))?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        decided_by: row.try_get("decided_by")?,
        decided_at: opt_ts(row, "decided_at")?,
        token_hash: row.try_get("token_hash")?,
        token_expires_at: opt_ts(row, "token_expires_at")?,
        redeemed_at: opt_ts(row, "redeemed_at")?,
    })
}

#[async_trait]
impl GatingStore for SqliteStore {
    async fn insert_task_grant(&self, grant: &TaskGrantRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO task_grants (id, tenant, human, agent, credential_kind, credential_id, task, \
             tools, session_id, created_at, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&grant.id)
        .bind(&grant.tenant)
        .bind(&grant.human)
        .bind(&grant.agent)
        .bind(&grant.credential_kind)
        .bind(&grant.credential_id)
        .bind(&grant.task)
        .bind(list_json(&grant.tools)?)
        .bind(&grant.session_id)
        .bind(grant.created_at.0)
        .bind(grant.expires_at.0)
        .bind(grant.revoked_at.map(|t| t.0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn task_grant(&self, id: &str) -> StoreResult<Option<TaskGrantRecord>> {
        let row = sqlx::query("SELECT * FROM task_grants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_grant_from_row).transpose()
    }

    async fn list_task_grants(
        &self,
        tenant: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<TaskGrantRecord>> {
        let mut sql = QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT * FROM task_grants WHERE revoked_at IS NULL AND expires_at > ",
        );
        sql.push_bind(now.0);
        if let Some(tenant) = tenant {
            sql.push(" AND tenant = ").push_bind(tenant.to_string());
        }
        sql.push(" ORDER BY created_at DESC, id DESC");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(task_grant_from_row).collect()
    }

    async fn revoke_task_grant(&self, id: &str, now: Timestamp) -> StoreResult<bool> {
        let change = self.announce_change();
        let mut tx = self.pool.begin().await?;
        // Starts with the write, so the transaction holds the write lock
        // from its first statement and a concurrent revocation finds the
        // grant already revoked.
        let expires_at: Option<i64> = sqlx::query_scalar(
            "UPDATE task_grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
             RETURNING expires_at",
        )
        .bind(id)
        .bind(now.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(expires_at) = expires_at else {
            tx.rollback().await?;
            return Ok(false);
        };
        // The grant id is the jti of its task token: listing it makes every
        // instance refuse that token until it would have expired anyway.
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        change.announce();
        Ok(true)
    }

    async fn insert_approval(&self, approval: &ApprovalRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO approvals (id, tenant, human, agent, credential_id, task_grant, task, tool, \
             arguments_hash, arguments, status, created_at, expires_at, decided_by, decided_at, \
             token_hash, token_expires_at, redeemed_at, masked_fields, human_issuer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
             $19, $20)",
        )
        .bind(&approval.id)
        .bind(&approval.tenant)
        .bind(&approval.human)
        .bind(&approval.agent)
        .bind(&approval.credential_id)
        .bind(&approval.task_grant)
        .bind(&approval.task)
        .bind(&approval.tool)
        .bind(&approval.arguments_hash)
        .bind(&approval.arguments)
        .bind(approval.status.as_str())
        .bind(approval.created_at.0)
        .bind(approval.expires_at.0)
        .bind(&approval.decided_by)
        .bind(approval.decided_at.map(|t| t.0))
        .bind(&approval.token_hash)
        .bind(approval.token_expires_at.map(|t| t.0))
        .bind(approval.redeemed_at.map(|t| t.0))
        .bind(masked_fields_json(&approval.masked_fields)?)
        .bind(&approval.human_issuer)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn approval(&self, id: &str) -> StoreResult<Option<ApprovalRecord>> {
        let row = sqlx::query("SELECT * FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn list_approvals(
        &self,
        tenant: Option<&str>,
        pending_only: bool,
        now: Timestamp,
    ) -> StoreResult<Vec<ApprovalRecord>> {
        let mut sql = QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM approvals WHERE 1 = 1");
        if let Some(tenant) = tenant {
            sql.push(" AND tenant = ").push_bind(tenant.to_string());
        }
        if pending_only {
            sql.push(" AND status = 'pending' AND expires_at > ")
                .push_bind(now.0);
        }
        sql.push(" ORDER BY created_at DESC, id DESC");
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(approval_from_row).collect()
    }

    async fn pending_approval_for(
        &self,
        call: &ApprovalCall<'_>,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        let row = sqlx::query(
            "SELECT * FROM approvals WHERE tenant = $1 AND arguments_hash = $2 \
             AND status = 'pending' AND expires_at > $3 AND agent = $4 AND credential_id = $5 \
             AND task_grant IS $6 AND tool = $7 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(call.tenant)
        .bind(call.arguments_hash)
        .bind(now.0)
        .bind(call.agent)
        .bind(call.credential_id)
        .bind(call.task_grant)
        .bind(call.tool)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn count_pending_approvals(
        &self,
        tenant: &str,
        requester: &ApprovalRequester<'_>,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let query = match requester {
            ApprovalRequester::Human { name, issuer } => sqlx::query_scalar(
                "SELECT COUNT(*) FROM approvals WHERE tenant = $1 AND human = $2 \
                 AND human_issuer IS $3 AND status = 'pending' AND expires_at > $4",
            )
            .bind(tenant)
            .bind(*name)
            .bind(*issuer),
            ApprovalRequester::Agent { id, issuer } => sqlx::query_scalar(
                "SELECT COUNT(*) FROM approvals WHERE tenant = $1 AND human IS NULL \
                 AND agent = $2 AND human_issuer IS $3 AND status = 'pending' \
                 AND expires_at > $4",
            )
            .bind(tenant)
            .bind(*id)
            .bind(*issuer),
        };
        let count: i64 = query.bind(now.0).fetch_one(&self.pool).await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn decide_approval(
        &self,
        id: &str,
        decision: &ApprovalDecision,
        decided_by: &str,
        account: Option<&AccountSeen>,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        let (status, token_hash, token_expires_at) = match decision {
            ApprovalDecision::Approve {
                token_hash,
                token_expires_at,
            } => (
                ApprovalStatus::Approved,
                Some(token_hash.as_str()),
                Some(token_expires_at.0),
            ),
            ApprovalDecision::Deny => (ApprovalStatus::Denied, None, None),
        };
        // A user decides only as the account the decision saw; SQLite runs
        // one write at a time, so a password change or disable commits
        // wholly before (no match here) or after (it ends the token).
        let row = sqlx::query(
            "UPDATE approvals SET status = $1, token_hash = $2, token_expires_at = $3, \
             decided_by = $4, decided_at = $5 \
             WHERE id = $6 AND status = 'pending' AND expires_at > $5 \
             AND ($7 IS NULL OR EXISTS (SELECT 1 FROM users WHERE username = $4 \
             AND password_hash = $7 AND roles = $8 AND disabled_at IS NULL)) \
             RETURNING *",
        )
        .bind(status.as_str())
        .bind(token_hash)
        .bind(token_expires_at)
        .bind(decided_by)
        .bind(now.0)
        .bind(id)
        .bind(account.map(|a| a.password_hash.as_str()))
        .bind(account.map(|a| list_json(&a.roles)).transpose()?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn redeem_operation_token(
        &self,
        binding: &OperationBinding,
        now: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        // `IS` compares NULL equal to NULL: a token approved outside any
        // task grant is redeemed only outside one too.
        let row = sqlx::query(
            "UPDATE approvals SET status = 'redeemed', redeemed_at = $1 \
             WHERE token_hash = $2 AND status = 'approved' AND token_expires_at > $1 \
             AND tenant = $3 AND agent = $4 AND credential_id = $5 AND task_grant IS $6 \
             AND tool = $7 AND arguments_hash = $8 \
             RETURNING *",
        )
        .bind(now.0)
        .bind(&binding.token_hash)
        .bind(&binding.tenant)
        .bind(&binding.agent)
        .bind(&binding.credential_id)
        .bind(&binding.task_grant)
        .bind(&binding.tool)
        .bind(&binding.arguments_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn approval_by_token(&self, token_hash: &str) -> StoreResult<Option<ApprovalRecord>> {
        let row = sqlx::query("SELECT * FROM approvals WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(approval_from_row).transpose()
    }

    async fn record_auth_failure(
        &self,
        subject: &str,
        now: Timestamp,
        window_ms: i64,
    ) -> StoreResult<u32> {
        // One upsert, so concurrent failures each count. SET expressions
        // all read the row as it was, so both CASEs test the old window.
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO auth_failures (subject, failures, window_start, locked_until) VALUES ($1, 1, $2, 0) \
             ON CONFLICT (subject) DO UPDATE SET \
               failures = CASE WHEN auth_failures.window_start < $3 THEN 1 ELSE auth_failures.failures + 1 END, \
               window_start = CASE WHEN auth_failures.window_start < $3 THEN $2 ELSE auth_failures.window_start END \
             RETURNING failures",
        )
        .bind(subject)
        .bind(now.0)
        .bind(now.0.saturating_sub(window_ms))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(failures).unwrap_or(u32::MAX))
    }

    async fn lock_auth(&self, subject: &str, until: Timestamp) -> StoreResult<()> {
        // A lock is never shortened: of two instances locking at once, the
        // longer lock stands.
        sqlx::query(
            "INSERT INTO auth_failures (subject, failures, window_start, locked_until) VALUES ($1, 0, 0, $2) \
             ON CONFLICT (subject) DO UPDATE SET \
               locked_until = MAX(auth_failures.locked_until, excluded.locked_until)",
        )
        .bind(subject)
        .bind(until.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn auth_locks(&self, now: Timestamp) -> StoreResult<Vec<AuthLock>> {
        let rows = sqlx::query(
            "SELECT subject, failures, locked_until FROM auth_failures \
             WHERE locked_until > $1 ORDER BY subject",
        )
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuthLock {
                    subject: row.try_get("subject")?,
                    failures: u32::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX),
                    locked_until: Timestamp(row.try_get("locked_until")?),
                })
            })
            .collect()
    }

    async fn clear_auth_lock(&self, subject: &str) -> StoreResult<bool> {
        // A prefix compared as text, not a LIKE pattern: a subject's `_` or
        // `%` matches only itself.
        let result = sqlx::query(
            "DELETE FROM auth_failures WHERE subject = $1 \
             OR substr(subject, 1, length($1) + 1) = $1 || '@'",
        )
        .bind(subject)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }
}
