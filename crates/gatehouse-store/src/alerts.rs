//! What alerts need from the store: the alert list with its
//! acknowledgements, and the webhook outbox (claimed one alert at a time,
//! so two instances never send the same attempt).

use async_trait::async_trait;
use gatehouse_core::Timestamp;

use crate::StoreResult;

/// Where an alert's webhook delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// No webhook was configured when it was raised.
    None,
    Pending,
    Delivered,
    /// Every attempt failed; it stays in the list, marked.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::None => "none",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "none" => Some(DeliveryState::None),
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    /// The id of the alert's audit record.
    pub id: String,
    pub raised_at: Timestamp,
    /// Stable code (`auth_failure_burst`, `policy_incident`, …).
    pub code: String,
    pub tenant: Option<String>,
    /// What it is about, e.g. `credential gk_…` or `source 203.0.113.7`.
    pub subject: String,
    /// What happened, for people; never a secret.
    pub detail: String,
    pub acked_at: Option<Timestamp>,
    pub acked_by: Option<String>,
    pub delivery_state: DeliveryState,
    pub delivery_attempts: u32,
    pub next_delivery_at: Option<Timestamp>,
    pub last_delivery_error: Option<String>,
}

/// What `ack_alert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    Acked,
    /// Someone had acknowledged it already: when and who.
    AlreadyAcked {
        at: Timestamp,
        by: String,
    },
    NotFound,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    Delivered,
    /// Try again at `next_at`.
    Retry {
        next_at: Timestamp,
        error: String,
    },
    /// No attempts left.
    Failed {
        error: String,
    },
}

#[async_trait]
pub trait AlertStore {
    async fn insert_alert(&self, alert: &AlertRecord) -> StoreResult<()>;

    /// Alerts, newest first, at most `limit`; acknowledged ones only with
    /// `include_acked`.
    async fn alerts(&self, include_acked: bool, limit: u32) -> StoreResult<Vec<AlertRecord>>;

    async fn alert(&self, id: &str) -> StoreResult<Option<AlertRecord>>;

    /// Acknowledges an alert once (one conditional statement).
    async fn ack_alert(&self, id: &str, by: &str, now: Timestamp) -> StoreResult<AckOutcome>;

    /// Claims the pending alert whose delivery is due longest (at or before
    /// `now`) until `until`, so no other instance sends it meanwhile. One
    /// statement: of instances racing for it one gets it.
    async fn claim_alert_delivery(
        &self,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<Option<AlertRecord>>;

    /// Records how the attempt on a claimed alert ended (counting it).
    async fn finish_alert_delivery(&self, id: &str, result: &DeliveryResult) -> StoreResult<()>;
}

/// The columns every alert query selects, in `AlertRecord` order (a macro:
/// sqlx takes only literal SQL, which `concat!` keeps).
macro_rules! alert_columns {
    () => {
        "id, raised_at, code, tenant, subject, detail, acked_at, acked_by, delivery_state, \
         delivery_attempts, next_delivery_at, last_delivery_error"
    };
}

/// `(state, next_at, error)` to store for a finished attempt.
pub(crate) fn finished(result: &DeliveryResult) -> (DeliveryState, Option<i64>, Option<&str>) {
    match result {
        DeliveryResult::Delivered => (DeliveryState::Delivered, None, None),
        DeliveryResult::Retry { next_at, error } => (
            DeliveryState::Pending,
            Some(next_at.0),
            Some(error.as_str()),
        ),
        DeliveryResult::Failed { error } => (DeliveryState::Failed, None, Some(error.as_str())),
    }
}

/// Reads an alert row (either backend: the column types agree).
pub(crate) fn alert_from_row<'r, R>(row: &'r R) -> StoreResult<AlertRecord>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let state: &str = row.try_get(8)?;
    let attempts: i32 = row.try_get(9)?;
    Ok(AlertRecord {
        id: row.try_get(0)?,
        raised_at: Timestamp(row.try_get(1)?),
        code: row.try_get(2)?,
        tenant: row.try_get(3)?,
        subject: row.try_get(4)?,
        detail: row.try_get(5)?,
        acked_at: row.try_get::<Option<i64>, _>(6)?.map(Timestamp),
        acked_by: row.try_get(7)?,
        delivery_state: DeliveryState::parse(state)
            .ok_or_else(|| crate::StoreError::Corrupt(format!("alert delivery state {state:?}")))?,
        delivery_attempts: u32::try_from(attempts).unwrap_or(0),
        next_delivery_at: row.try_get::<Option<i64>, _>(10)?.map(Timestamp),
        last_delivery_error: row.try_get(11)?,
    })
}

/// The one implementation of `AlertStore`, for each backend: the SQL is the
/// same on both but for the claim's row lock.
macro_rules! alert_store {
    ($store:ty, $claim_lock:literal) => {
        #[async_trait]
        impl AlertStore for $store {
            async fn insert_alert(&self, alert: &AlertRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO alerts (id, raised_at, code, tenant, subject, detail, delivery_state, \
                     next_delivery_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&alert.id)
                .bind(alert.raised_at.0)
                .bind(&alert.code)
                .bind(&alert.tenant)
                .bind(&alert.subject)
                .bind(&alert.detail)
                .bind(alert.delivery_state.as_str())
                .bind(alert.next_delivery_at.map(|t| t.0))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn alerts(&self, include_acked: bool, limit: u32) -> StoreResult<Vec<AlertRecord>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    alert_columns!(),
                    " FROM alerts WHERE ($1 OR acked_at IS NULL) \
                     ORDER BY raised_at DESC, id DESC LIMIT $2"
                ))
                .bind(include_acked)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(alert_from_row).collect()
            }

            async fn alert(&self, id: &str) -> StoreResult<Option<AlertRecord>> {
                let row = sqlx::query(concat!("SELECT ", alert_columns!(), " FROM alerts WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(alert_from_row).transpose()
            }

            async fn ack_alert(&self, id: &str, by: &str, now: Timestamp) -> StoreResult<AckOutcome> {
                let acked = sqlx::query(
                    "UPDATE alerts SET acked_at = $1, acked_by = $2 WHERE id = $3 AND acked_at IS NULL",
                )
                .bind(now.0)
                .bind(by)
                .bind(id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if acked == 1 {
                    return Ok(AckOutcome::Acked);
                }
                Ok(match self.alert(id).await? {
                    Some(AlertRecord {
                        acked_at: Some(at),
                        acked_by,
                        ..
                    }) => AckOutcome::AlreadyAcked {
                        at,
                        by: acked_by.unwrap_or_default(),
                    },
                    // Acknowledged and un-acknowledged cannot happen; treat a row
                    // without `acked_at` as not found rather than loop.
                    _ => AckOutcome::NotFound,
                })
            }

            async fn claim_alert_delivery(
                &self,
                now: Timestamp,
                until: Timestamp,
            ) -> StoreResult<Option<AlertRecord>> {
                // The outer condition is checked again on the row being updated,
                // so a row another claim took meanwhile is not taken twice.
                let row = sqlx::query(concat!(
                    "UPDATE alerts SET next_delivery_at = $2 WHERE id = \
                     (SELECT id FROM alerts WHERE delivery_state = 'pending' AND next_delivery_at <= $1 \
                      ORDER BY next_delivery_at, id LIMIT 1",
                    $claim_lock,
                    ") AND delivery_state = 'pending' AND next_delivery_at <= $1 RETURNING ",
                    alert_columns!()
                ))
                .bind(now.0)
                .bind(until.0)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(alert_from_row).transpose()
            }

            async fn finish_alert_delivery(&self, id: &str, result: &DeliveryResult) -> StoreResult<()> {
                let (state, next_at, error) = finished(result);
                sqlx::query(
                    "UPDATE alerts SET delivery_state = $1, next_delivery_at = $2, \
                     last_delivery_error = COALESCE($3, last_delivery_error), \
                     delivery_attempts = delivery_attempts + 1 WHERE id = $4",
                )
                .bind(state.as_str())
                .bind(next_at)
                .bind(error)
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    };
}

// SQLite serializes writers: the choice and the update cannot interleave.
alert_store!(crate::SqliteStore, "");
// SKIP LOCKED: a claim racing this one takes the next alert instead of
// waiting for this row.
alert_store!(crate::PostgresStore, " FOR UPDATE SKIP LOCKED");
