//! `AuthorizationStore` for PostgreSQL at READ COMMITTED. Single-use steps
//! are conditional UPDATE/DELETE … RETURNING statements: a second writer
//! waits for the first one's row lock, then PostgreSQL re-evaluates the
//! WHERE clause against the committed row, which no longer matches.

use async_trait::async_trait;
use gatehouse_core::Timestamp;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgRow};

use crate::authorization::{ROLES_SWAP_ATTEMPTS, roles_to_store, takes_a_role_away};
use crate::postgres::{bump_generation, opt_ts};
use crate::sqlite::{json_list, list_json};
use crate::{
    AuthCodeRecord, AuthorizationStore, CodeRedemption, DeviceDecision, DevicePoll, DeviceRecord,
    DeviceStatus, GrantRecord, LoginCounter, LoginThrottle, NewGrant, PostgresStore,
    RefreshRotation, RefreshTokenRecord, RolesChange, StoreError, StoreResult, UserRecord,
};

fn user_from_row(row: &PgRow) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        username: row.try_get("username")?,
        tenant: row.try_get("tenant")?,
        roles: json_list(&row.try_get::<String, _>("roles")?, "users.roles")?,
        password_hash: row.try_get("password_hash")?,
        created_at: Timestamp(row.try_get("created_at")?),
        disabled_at: opt_ts(row, "disabled_at")?,
    })
}

fn grant_from_row(row: &PgRow) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        id: row.try_get("id")?,
        client_id: row.try_get("client_id")?,
        username: row.try_get("username")?,
        tenant: row.try_get("tenant")?,
        roles: json_list(&row.try_get::<String, _>("roles")?, "grants.roles")?,
        scope: row.try_get("scope")?,
        resource: row.try_get("resource")?,
        created_at: Timestamp(row.try_get("created_at")?),
        revoked_at: opt_ts(row, "revoked_at")?,
    })
}

fn device_from_row(row: &PgRow) -> StoreResult<DeviceRecord> {
    let status: String = row.try_get("status")?;
    Ok(DeviceRecord {
        device_code_hash: row.try_get("device_code_hash")?,
        user_code: row.try_get("user_code")?,
        client_id: row.try_get("client_id")?,
        scope: row.try_get("scope")?,
        resource: row.try_get("resource")?,
        created_at: Timestamp(row.try_get("created_at")?),
        expires_at: Timestamp(row.try_get("expires_at")?),
        interval_secs: row.try_get("interval_secs")?,
        status: DeviceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown device status {status:?}")))?,
        grant_id: row.try_get("grant_id")?,
    })
}

/// Stores a grant while its user is as the decision saw them (see
/// `NewGrant`). FOR SHARE: a password change, disable or role change in
/// flight (its UPDATE holds the user's row) is waited for, and the row is
/// then read as it committed; a change that begins later waits for this
/// transaction and then revokes the grant with the rest.
async fn insert_grant_for_user(conn: &mut PgConnection, new: NewGrant<'_>) -> StoreResult<bool> {
    let grant = new.grant;
    let inserted = sqlx::query(
        "INSERT INTO grants (id, client_id, username, tenant, roles, scope, resource, created_at, revoked_at) \
         SELECT $1, $2, username, tenant, roles, $6, $7, $8, $9 FROM users \
         WHERE username = $3 AND tenant = $4 AND roles = $5 AND password_hash = $10 \
         AND disabled_at IS NULL FOR SHARE",
    )
    .bind(&grant.id)
    .bind(&grant.client_id)
    .bind(&grant.username)
    .bind(&grant.tenant)
    .bind(list_json(&grant.roles)?)
    .bind(&grant.scope)
    .bind(&grant.resource)
    .bind(grant.created_at.0)
    .bind(grant.revoked_at.map(|t| t.0))
    .bind(new.password_hash)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

impl PostgresStore {
    /// Commits a change to a user; with `revoke`, what they authorized ends
    /// and the credential generation moves in the same transaction, so
    /// every instance drops their tokens.
    async fn commit_user_change(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        username: &str,
        revoke: bool,
        at: Timestamp,
    ) -> StoreResult<()> {
        let generation = if revoke {
            revoke_user_authorizations(&mut tx, username, at).await?;
            Some(bump_generation(&mut tx).await?)
        } else {
            None
        };
        tx.commit().await?;
        if let Some(generation) = generation {
            self.note_bump(generation);
        }
        Ok(())
    }

    /// The grant if it is still live; a revoked grant is as good as none.
    /// A grant was used (its code or a refresh token redeemed): its
    /// `last_used_at` moves, at most once per `GRANT_TOUCH_INTERVAL_MS`,
    /// for the lifecycle's unused-grant rules.
    async fn touch_grant(&self, id: &str, now: Timestamp) -> StoreResult<()> {
        sqlx::query(
            "UPDATE grants SET last_used_at = $2 WHERE id = $1 AND revoked_at IS NULL \
             AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(id)
        .bind(now.0)
        .bind(now.0 - crate::GRANT_TOUCH_INTERVAL_MS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn live_grant(&self, id: &str) -> StoreResult<Option<GrantRecord>> {
        let row = sqlx::query("SELECT * FROM grants WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }
}

/// Ends what a user authorized, inside the caller's transaction (which
/// bumps the credential generation before it commits): their grants, with
/// the access tokens issued from them on the revocation list (their
/// refresh tokens and codes then find no live grant), their remembered
/// consents (else a client the attacker approved would get codes without
/// asking), and the operation tokens they approved that are still unused.
async fn revoke_user_authorizations(
    conn: &mut PgConnection,
    username: &str,
    at: Timestamp,
) -> StoreResult<()> {
    // Grants first: the row locks make a concurrent `record_issued` (which
    // holds FOR SHARE on its grant) finish before the next statement, which
    // then sees the token it recorded.
    sqlx::query("UPDATE grants SET revoked_at = $2 WHERE username = $1 AND revoked_at IS NULL")
        .bind(username)
        .bind(at.0)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) \
         SELECT t.jti, t.expires_at FROM issued_tokens t JOIN grants g ON g.id = t.grant_id \
         WHERE g.username = $1 AND t.expires_at > $2 \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(username)
    .bind(at.0 - crate::REVOCATION_GRACE_MS)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM consents WHERE username = $1")
        .bind(username)
        .execute(&mut *conn)
        .await?;
    // Expired for every clock: an instance whose clock runs behind the
    // revoking one's would still redeem a token expired "now" (the
    // redemption compares with its own clock).
    sqlx::query(
        "UPDATE approvals SET token_expires_at = 0 \
         WHERE decided_by = $1 AND status = 'approved'",
    )
    .bind(username)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait]
impl AuthorizationStore for PostgresStore {
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (username, tenant, roles, password_hash, created_at, disabled_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&user.username)
        .bind(&user.tenant)
        .bind(list_json(&user.roles)?)
        .bind(&user.password_hash)
        .bind(user.created_at.0)
        .bind(user.disabled_at.map(|t| t.0))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn user(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY username COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn count_users(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn disable_user(&self, username: &str, at: Timestamp) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE users SET disabled_at = $1 WHERE username = $2 AND disabled_at IS NULL",
        )
        .bind(at.0)
        .bind(username)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        // Not a user, or disabled already: nothing changes (and nothing is
        // revoked without the record the command writes for a disable).
        if !changed {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM browser_sessions WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await?;
        // The API keys issued for them (`keys create --owner`): a key
        // carries its owner as the human behind its calls. User names are
        // unique across tenants; owners are stored in lower case as they
        // are (migration 0022 for those written before).
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE owner = $2 AND revoked_at IS NULL")
            .bind(at.0)
            .bind(username)
            .execute(&mut *tx)
            .await?;
        self.commit_user_change(tx, username, true, at).await?;
        Ok(changed)
    }

    async fn enable_user(&self, username: &str) -> StoreResult<bool> {
        let result = sqlx::query(
            "UPDATE users SET disabled_at = NULL WHERE username = $1 AND disabled_at IS NOT NULL",
        )
        .bind(username)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn change_user_password(
        &self,
        username: &str,
        password_hash: &str,
        revoke_grants: bool,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("UPDATE users SET password_hash = $1 WHERE username = $2")
            .bind(password_hash)
            .bind(username)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        if !changed {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM browser_sessions WHERE username = $1",
            "DELETE FROM login_failures WHERE username = $1",
        ] {
            sqlx::query(sql).bind(username).execute(&mut *tx).await?;
        }
        self.commit_user_change(tx, username, revoke_grants, at)
            .await?;
        Ok(true)
    }

    async fn login_throttle(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
    ) -> StoreResult<Option<LoginThrottle>> {
        let row = sqlx::query(
            "SELECT failures, locked_until FROM login_failures WHERE username = $1 AND source = $2",
        )
        .bind(username)
        .bind(counter.stored())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(LoginThrottle {
                failures: u32::try_from(row.try_get::<i64, _>("failures")?).unwrap_or(u32::MAX),
                locked_until: Timestamp(row.try_get("locked_until")?),
            })
        })
        .transpose()
    }

    async fn record_login_failure(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
        now: Timestamp,
        window_ms: i64,
    ) -> StoreResult<u32> {
        // SET expressions all read the row as it was, so both CASEs test
        // the old window.
        let failures: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (username, source, failures, window_start, locked_until) \
             VALUES ($1, $2, 1, $3, 0) \
             ON CONFLICT (username, source) DO UPDATE SET \
               failures = CASE WHEN login_failures.window_start < $4 THEN 1 ELSE login_failures.failures + 1 END, \
               window_start = CASE WHEN login_failures.window_start < $4 THEN $3 ELSE login_failures.window_start END \
             RETURNING failures",
        )
        .bind(username)
        .bind(counter.stored())
        .bind(now.0)
        .bind(now.0.saturating_sub(window_ms))
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(failures).unwrap_or(u32::MAX))
    }

    async fn lock_login(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
        until: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO login_failures (username, source, failures, window_start, locked_until) \
             VALUES ($1, $2, 0, 0, $3) \
             ON CONFLICT (username, source) DO UPDATE SET \
               locked_until = GREATEST(login_failures.locked_until, excluded.locked_until)",
        )
        .bind(username)
        .bind(counter.stored())
        .bind(until.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn clear_login_counter(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1 AND source = $2")
            .bind(username)
            .bind(counter.stored())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn clear_login_failures(&self, username: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE username = $1")
            .bind(username)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_browser_session(
        &self,
        id_hash: &str,
        username: &str,
        password_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<bool> {
        // FOR SHARE: a password change or disable in flight (its UPDATE holds
        // the user's row) is waited for, and the row then read as it
        // committed, so the session is not started under the old password.
        let inserted = sqlx::query(
            "INSERT INTO browser_sessions (id_hash, username, created_at, expires_at) \
             SELECT $1, username, $3, $4 FROM users \
             WHERE username = $2 AND password_hash = $5 AND disabled_at IS NULL FOR SHARE",
        )
        .bind(id_hash)
        .bind(username)
        .bind(now.0)
        .bind(expires_at.0)
        .bind(password_hash)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn browser_session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT s.username FROM browser_sessions s JOIN users u ON u.username = s.username \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
        )
        .bind(id_hash)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn delete_browser_session(&self, id_hash: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar(
                "DELETE FROM browser_sessions WHERE id_hash = $1 RETURNING username",
            )
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    async fn insert_authorization_request(
        &self,
        id: &str,
        client_id: &str,
        request: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO authorization_requests (id, client_id, request, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(client_id)
        .bind(request)
        .bind(now.0)
        .bind(expires_at.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT request FROM authorization_requests WHERE id = $1 AND expires_at > $2",
        )
        .bind(id)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn take_authorization_request(
        &self,
        id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<String>> {
        // A concurrent DELETE waits for the first and then finds no row.
        Ok(sqlx::query_scalar(
            "DELETE FROM authorization_requests WHERE id = $1 AND expires_at > $2 RETURNING request",
        )
        .bind(id)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn consent(&self, username: &str, client_id: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT scope FROM consents WHERE username = $1 AND client_id = $2")
                .bind(username)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn put_consent(
        &self,
        user: &UserRecord,
        client_id: &str,
        scope: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let written = sqlx::query(
            "INSERT INTO consents (username, client_id, scope, granted_at) \
             SELECT username, $2, $3, $4 FROM users \
             WHERE username = $1 AND tenant = $5 AND roles = $6 AND password_hash = $7 \
             AND disabled_at IS NULL FOR SHARE \
             ON CONFLICT (username, client_id) DO UPDATE SET scope = $3, granted_at = $4",
        )
        .bind(&user.username)
        .bind(client_id)
        .bind(scope)
        .bind(now.0)
        .bind(&user.tenant)
        .bind(list_json(&user.roles)?)
        .bind(&user.password_hash)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(written == 1)
    }

    async fn insert_code_grant(
        &self,
        grant: NewGrant<'_>,
        code: &AuthCodeRecord,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        if !insert_grant_for_user(&mut tx, grant).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO authorization_codes (code_hash, grant_id, redirect_uri, code_challenge, expires_at, used_at) \
             VALUES ($1, $2, $3, $4, $5, NULL)",
        )
        .bind(&code.code_hash)
        .bind(&code.grant_id)
        .bind(&code.redirect_uri)
        .bind(&code.code_challenge)
        .bind(code.expires_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn redeem_code(&self, code_hash: &str, now: Timestamp) -> StoreResult<CodeRedemption> {
        let redeemed = sqlx::query(
            "UPDATE authorization_codes SET used_at = $2 \
             WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING grant_id, redirect_uri, code_challenge, expires_at",
        )
        .bind(code_hash)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = redeemed {
            let code = AuthCodeRecord {
                code_hash: code_hash.to_string(),
                grant_id: row.try_get("grant_id")?,
                redirect_uri: row.try_get("redirect_uri")?,
                code_challenge: row.try_get("code_challenge")?,
                expires_at: Timestamp(row.try_get("expires_at")?),
            };
            // A revocation after this read is caught by `record_issued`.
            return Ok(match self.live_grant(&code.grant_id).await? {
                Some(grant) => {
                    self.touch_grant(&grant.id, now).await?;
                    CodeRedemption::Redeemed(code, grant)
                }
                None => CodeRedemption::Invalid,
            });
        }
        // The losing UPDATE waited for the winner's commit, so this later
        // statement sees the code as used.
        let used: Option<String> = sqlx::query_scalar(
            "SELECT grant_id FROM authorization_codes WHERE code_hash = $1 AND used_at IS NOT NULL",
        )
        .bind(code_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match used {
            Some(grant_id) => CodeRedemption::Replayed { grant_id },
            None => CodeRedemption::Invalid,
        })
    }

    async fn record_issued(
        &self,
        grant_id: &str,
        jti: &str,
        access_expires_at: Timestamp,
        refresh: Option<&RefreshTokenRecord>,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // FOR SHARE conflicts with revoke_grant's UPDATE of the grant row
        // (the foreign-key check alone takes only KEY SHARE, which does
        // not). So either the revocation waits for this commit and then
        // lists our jti, or this waits for the revocation and finds the
        // grant revoked. Plain EXISTS would let a token slip past it.
        let live: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM grants WHERE id = $1 AND revoked_at IS NULL FOR SHARE",
        )
        .bind(grant_id)
        .fetch_optional(&mut *tx)
        .await?;
        if live.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO issued_tokens (jti, grant_id, expires_at) VALUES ($1, $2, $3)")
            .bind(jti)
            .bind(grant_id)
            .bind(access_expires_at.0)
            .execute(&mut *tx)
            .await?;
        if let Some(refresh) = refresh {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, grant_id, scope, resource, created_at, expires_at, used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, NULL)",
            )
            .bind(&refresh.token_hash)
            .bind(&refresh.grant_id)
            .bind(&refresh.scope)
            .bind(&refresh.resource)
            .bind(refresh.created_at.0)
            .bind(refresh.expires_at.0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<RefreshRotation> {
        let rotated = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING grant_id, scope, resource, created_at, expires_at",
        )
        .bind(token_hash)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = rotated {
            let token = RefreshTokenRecord {
                token_hash: token_hash.to_string(),
                grant_id: row.try_get("grant_id")?,
                scope: row.try_get("scope")?,
                resource: row.try_get("resource")?,
                created_at: Timestamp(row.try_get("created_at")?),
                expires_at: Timestamp(row.try_get("expires_at")?),
            };
            return Ok(match self.live_grant(&token.grant_id).await? {
                Some(grant) => {
                    self.touch_grant(&grant.id, now).await?;
                    RefreshRotation::Rotated(token, grant)
                }
                None => RefreshRotation::Invalid,
            });
        }
        let used: Option<String> = sqlx::query_scalar(
            "SELECT grant_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match used {
            Some(grant_id) => RefreshRotation::Reused { grant_id },
            None => RefreshRotation::Invalid,
        })
    }

    async fn revoke_grant(&self, grant_id: &str, now: Timestamp) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Locks the grant row first: waits for any record_issued holding
        // FOR SHARE on it, and blocks new ones until commit. Each later
        // statement takes a fresh snapshot (READ COMMITTED), so it sees
        // every token recorded before the lock was granted.
        let changed =
            sqlx::query("UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(grant_id)
                .bind(now.0)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
        let listed = sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) \
             SELECT jti, expires_at FROM issued_tokens WHERE grant_id = $1 AND expires_at > $2 \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(grant_id)
        .bind(now.0 - crate::REVOCATION_GRACE_MS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let ended = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $2 WHERE grant_id = $1 AND used_at IS NULL",
        )
        .bind(grant_id)
        .bind(now.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Every instance reloads its revocation list when the generation
        // moves: a grant revoked again (a client repeating /oauth/revoke)
        // must not make them all do so each time.
        if changed || listed > 0 || ended > 0 {
            let generation = bump_generation(&mut tx).await?;
            tx.commit().await?;
            self.note_bump(generation);
        } else {
            tx.commit().await?;
        }
        Ok(changed)
    }

    async fn refresh_token_grant(&self, token_hash: &str) -> StoreResult<Option<GrantRecord>> {
        let row = sqlx::query(
            "SELECT g.* FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    async fn insert_device(&self, device: &DeviceRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO device_authorizations (device_code_hash, user_code, client_id, scope, resource, \
             created_at, expires_at, interval_secs, last_polled_at, slow_down, status, grant_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, 0, $9, $10)",
        )
        .bind(&device.device_code_hash)
        .bind(&device.user_code)
        .bind(&device.client_id)
        .bind(&device.scope)
        .bind(&device.resource)
        .bind(device.created_at.0)
        .bind(device.expires_at.0)
        .bind(device.interval_secs)
        .bind(device.status.as_str())
        .bind(&device.grant_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn device_by_user_code(
        &self,
        user_code: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(
            "SELECT * FROM device_authorizations WHERE user_code = $1 AND expires_at > $2",
        )
        .bind(user_code)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from_row).transpose()
    }

    async fn decide_device(
        &self,
        user_code: &str,
        grant: Option<NewGrant<'_>>,
        now: Timestamp,
    ) -> StoreResult<DeviceDecision> {
        let mut tx = self.pool.begin().await?;
        let (status, grant_id) = match grant {
            Some(g) => (DeviceStatus::Approved, Some(g.grant.id.as_str())),
            None => (DeviceStatus::Denied, None),
        };
        // Of two concurrent decisions, the second waits for the row lock
        // and then no longer matches `status = 'pending'`.
        let decided = sqlx::query(
            "UPDATE device_authorizations SET status = $1, grant_id = $2 \
             WHERE user_code = $3 AND status = 'pending' AND expires_at > $4",
        )
        .bind(status.as_str())
        .bind(grant_id)
        .bind(user_code)
        .bind(now.0)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !decided {
            tx.rollback().await?;
            return Ok(DeviceDecision::NotPending);
        }
        if let Some(grant) = grant
            && !insert_grant_for_user(&mut tx, grant).await?
        {
            tx.rollback().await?;
            return Ok(DeviceDecision::UserChanged);
        }
        tx.commit().await?;
        Ok(DeviceDecision::Decided)
    }

    async fn poll_device(
        &self,
        device_code_hash: &str,
        client_id: &str,
        now: Timestamp,
    ) -> StoreResult<DevicePoll> {
        // One statement notes the poll and decides whether it came too
        // early. A concurrent poll waits for the row lock, and PostgreSQL
        // then recomputes the SET expressions from the updated row, so it
        // sees the first poll's `last_polled_at` and is slowed down.
        let row = sqlx::query(
            "UPDATE device_authorizations SET \
               slow_down = CASE WHEN last_polled_at IS NOT NULL AND $3 - last_polled_at < interval_secs * 1000 \
                                THEN 1 ELSE 0 END, \
               interval_secs = CASE WHEN last_polled_at IS NOT NULL AND $3 - last_polled_at < interval_secs * 1000 \
                                THEN interval_secs + 5 ELSE interval_secs END, \
               last_polled_at = $3 \
             WHERE device_code_hash = $1 AND client_id = $2 \
             RETURNING status, expires_at, slow_down, grant_id",
        )
        .bind(device_code_hash)
        .bind(client_id)
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(DevicePoll::Invalid);
        };
        let status: String = row.try_get("status")?;
        let expires_at = Timestamp(row.try_get("expires_at")?);
        let slow_down: i64 = row.try_get("slow_down")?;
        if now >= expires_at {
            return Ok(DevicePoll::Expired);
        }
        if slow_down == 1 {
            return Ok(DevicePoll::SlowDown);
        }
        match DeviceStatus::parse(&status) {
            Some(DeviceStatus::Pending) => Ok(DevicePoll::Pending),
            Some(DeviceStatus::Denied) => Ok(DevicePoll::Denied),
            Some(DeviceStatus::Redeemed) | None => Ok(DevicePoll::Invalid),
            Some(DeviceStatus::Approved) => {
                // Conditional, so only one poll redeems the approval.
                let grant_id: Option<String> = sqlx::query_scalar(
                    "UPDATE device_authorizations SET status = 'redeemed' \
                     WHERE device_code_hash = $1 AND status = 'approved' RETURNING grant_id",
                )
                .bind(device_code_hash)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
                let grant = match grant_id {
                    Some(id) => self.live_grant(&id).await?,
                    None => None,
                };
                Ok(grant.map_or(DevicePoll::Invalid, DevicePoll::Approved))
            }
        }
    }

    async fn touch_client(&self, id: &str, at: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE oauth_clients SET last_used_at = $1 WHERE id = $2")
            .bind(at.0)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete_unused_dynamic_clients(
        &self,
        unused_since: Timestamp,
        never_used_since: Timestamp,
    ) -> StoreResult<u64> {
        let result = sqlx::query(
            "DELETE FROM oauth_clients WHERE registered_by = 'dynamic' \
             AND (COALESCE(last_used_at, created_at) < $1 \
             OR (created_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM grants WHERE grants.client_id = oauth_clients.id)))",
        )
        .bind(unused_since.0)
        .bind(never_used_since.0)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn evict_oldest_never_granted_client(
        &self,
        registered_by: &str,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let result = sqlx::query(
            "DELETE FROM oauth_clients WHERE id = (SELECT c.id FROM oauth_clients c \
             WHERE c.registered_by = $1 AND c.revoked_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM grants WHERE grants.client_id = c.id) \
             ORDER BY CASE WHEN EXISTS (SELECT 1 FROM authorization_requests r \
             WHERE r.client_id = c.id AND r.expires_at > $2) \
             OR EXISTS (SELECT 1 FROM device_authorizations d \
             WHERE d.client_id = c.id AND d.expires_at > $2) THEN 1 ELSE 0 END, \
             c.created_at, c.id LIMIT 1)",
        )
        .bind(registered_by)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    async fn delete_unused_metadata_document_clients(
        &self,
        unused_since: Timestamp,
        never_granted_since: Timestamp,
    ) -> StoreResult<u64> {
        let result = sqlx::query(
            "DELETE FROM oauth_clients WHERE registered_by = 'metadata_document' \
             AND revoked_at IS NULL AND (COALESCE(last_used_at, created_at) < $1 \
             OR (created_at < $2 AND NOT EXISTS \
             (SELECT 1 FROM grants WHERE grants.client_id = oauth_clients.id)))",
        )
        .bind(unused_since.0)
        .bind(never_granted_since.0)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }

    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for sql in [
            "DELETE FROM authorization_requests WHERE expires_at <= $1",
            "DELETE FROM browser_sessions WHERE expires_at <= $1",
            "DELETE FROM device_authorizations WHERE expires_at <= $1",
            // Used codes are kept a day past expiry, so a late replay is
            // still recognised and revokes what the code produced.
            "DELETE FROM authorization_codes WHERE expires_at <= $1 - 86400000",
            // Expired refresh tokens protect nothing any more.
            "DELETE FROM refresh_tokens WHERE expires_at <= $1",
            // Gating records are kept a day past their end, so a late
            // request is still told what happened rather than "unknown".
            "DELETE FROM task_grants WHERE expires_at <= $1 - 86400000",
            // Both the pending window and (once approved) the token's.
            "DELETE FROM approvals WHERE expires_at <= $1 - 86400000 \
             AND (token_expires_at IS NULL OR token_expires_at <= $1 - 86400000)",
            "DELETE FROM auth_failures WHERE window_start <= $1 - 86400000 \
             AND locked_until <= $1 - 86400000",
            "DELETE FROM login_failures WHERE window_start <= $1 - 86400000 \
             AND locked_until <= $1 - 86400000",
        ] {
            sqlx::query(sql).bind(now.0).execute(&mut *tx).await?;
        }
        // Kept past expiry while an expired token (or assertion) may still
        // be accepted (the verifier's leeway), and as long again as
        // instances' clocks may differ (`TRIM_CLOCK_SKEW_MS`).
        for (sql, kept) in [
            (
                "DELETE FROM issued_tokens WHERE expires_at <= $1",
                crate::REVOCATION_GRACE_MS,
            ),
            (
                "DELETE FROM revoked_tokens WHERE expires_at <= $1",
                crate::REVOCATION_GRACE_MS,
            ),
            ("DELETE FROM used_assertions WHERE expires_at <= $1", 0),
        ] {
            sqlx::query(sql)
                .bind(now.0 - kept - crate::TRIM_CLOCK_SKEW_MS)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn federated_user(&self, issuer: &str, subject: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT username FROM federated_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn insert_federated_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        claims_issued_at: Timestamp,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (username, tenant, roles, password_hash, created_at, disabled_at, \
             roles_claims_issued_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&user.username)
        .bind(&user.tenant)
        .bind(list_json(&user.roles)?)
        .bind(&user.password_hash)
        .bind(user.created_at.0)
        .bind(user.disabled_at.map(|t| t.0))
        .bind(claims_issued_at.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO federated_identities (issuer, subject, username, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(&user.username)
        .bind(user.created_at.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn link_federated_user(
        &self,
        issuer: &str,
        subject: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO federated_identities (issuer, subject, username, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(username)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_user_roles(
        &self,
        username: &str,
        roles: &[String],
        claims_issued_at: Timestamp,
        at: Timestamp,
    ) -> StoreResult<RolesChange> {
        for _ in 0..ROLES_SWAP_ATTEMPTS {
            let Some(row) =
                sqlx::query("SELECT roles, roles_claims_issued_at FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&self.pool)
                    .await?
            else {
                return Ok(RolesChange::NoSuchUser);
            };
            let stored: String = row.try_get("roles")?;
            let stored_at: Option<i64> = row.try_get("roles_claims_issued_at")?;
            let previous = json_list(&stored, "users.roles")?;
            let Some(current) = roles_to_store(stored_at, &previous, claims_issued_at.0, roles)
            else {
                return Ok(RolesChange::Superseded { current: previous });
            };
            let new_roles = list_json(&current)?;
            // Swapped only while the row is as read: the revocation below
            // is decided on the roles this replaces.
            let mut tx = self.pool.begin().await?;
            let swapped = sqlx::query(
                "UPDATE users SET roles = $2, roles_claims_issued_at = $3 \
                 WHERE username = $1 AND roles = $4 AND roles_claims_issued_at IS NOT DISTINCT FROM $5",
            )
            .bind(username)
            .bind(&new_roles)
            .bind(claims_issued_at.0)
            .bind(&stored)
            .bind(stored_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !swapped {
                continue;
            }
            let revoked = takes_a_role_away(&previous, &current);
            self.commit_user_change(tx, username, revoked, at).await?;
            if current != roles {
                return Ok(RolesChange::Narrowed {
                    previous,
                    current,
                    revoked,
                });
            }
            return Ok(RolesChange::Applied { previous, revoked });
        }
        Err(StoreError::Unavailable(
            "the user's roles kept changing while they were being set".into(),
        ))
    }

    async fn insert_grant(&self, grant: NewGrant<'_>) -> StoreResult<bool> {
        let mut conn = self.pool.acquire().await?;
        insert_grant_for_user(&mut conn, grant).await
    }

    async fn use_assertion(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        // A row whose assertion has expired may be taken over (its old use
        // protects nothing); a live one makes the statement change nothing.
        let result = sqlx::query(
            "INSERT INTO used_assertions (issuer, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE used_assertions.expires_at <= $4",
        )
        .bind(issuer)
        .bind(jti)
        .bind(expires_at.0)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}
