//! `search_database`: literal substring search over the demo dataset that
//! ships inside the binary. The search term is only ever a bound parameter.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection, Row};

use crate::ToolOutput;
use crate::error::ToolError;

const DATASET_SQL: &str = include_str!("../data/dataset.sql");
/// Must equal the `PRAGMA user_version` in `dataset.sql`; a mismatch rebuilds
/// the file, so a new release's data replaces an old copy.
const DATASET_VERSION: i64 = 1;
pub(crate) const FILE_NAME: &str = "dataset.sqlite";
pub(crate) const MAX_TERM_CHARS: usize = 200;
pub(crate) const MAX_LIMIT: u64 = 50;
pub(crate) const DEFAULT_LIMIT: u64 = 10;

const SEARCH_PRODUCTS: &str = "SELECT id, name, category, description, price FROM products \
     WHERE name LIKE ?1 ESCAPE '\\' OR category LIKE ?1 ESCAPE '\\' OR description LIKE ?1 ESCAPE '\\' \
     ORDER BY id LIMIT ?2";
const SEARCH_CUSTOMERS: &str = "SELECT id, name, city, plan FROM customers \
     WHERE name LIKE ?1 ESCAPE '\\' OR city LIKE ?1 ESCAPE '\\' OR plan LIKE ?1 ESCAPE '\\' \
     ORDER BY id LIMIT ?2";

#[derive(Debug, Clone)]
pub(crate) struct Dataset {
    pool: SqlitePool,
}

impl Dataset {
    /// Creates `<sandbox>/dataset.sqlite` when missing or outdated, then opens
    /// it read-only.
    pub(crate) async fn open(sandbox_root: &Path) -> Result<Self, ToolError> {
        let path = sandbox_root.join(FILE_NAME);
        if !is_current(&path).await {
            build(sandbox_root, &path).await?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(read_only(&path))
            .await
            .map_err(|e| dataset_failure("open", &e))?;
        Ok(Dataset { pool })
    }

    pub(crate) async fn search(&self, term: &str, limit: u64) -> Result<ToolOutput, ToolError> {
        let pattern = like_pattern(term);
        let limit = i64::try_from(limit.clamp(1, MAX_LIMIT)).unwrap_or(DEFAULT_LIMIT as i64);
        let products = sqlx::query(SEARCH_PRODUCTS)
            .bind(&pattern)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| dataset_failure("search", &e))?;
        let customers = sqlx::query(SEARCH_CUSTOMERS)
            .bind(&pattern)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| dataset_failure("search", &e))?;

        let mut results = Vec::new();
        for row in &products {
            results.push(json!({ "table": "products", "row": product(row)? }));
        }
        for row in &customers {
            results.push(json!({ "table": "customers", "row": customer(row)? }));
        }
        results.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let structured = json!({ "query": term, "count": results.len(), "results": results });
        Ok(ToolOutput {
            text: serde_json::to_string_pretty(&structured).unwrap_or_default(),
            structured: Some(structured),
        })
    }
}

fn read_only(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new().filename(path).read_only(true)
}

async fn is_current(path: &Path) -> bool {
    if !path.exists() {
        return false;
    }
    let version = async {
        let mut conn = read_only(path).connect().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(version)
    };
    matches!(version.await, Ok(v) if v == DATASET_VERSION)
}

/// Builds into a temporary file and renames it into place, so a reader never
/// sees a half-filled dataset and a crash leaves no broken file behind.
async fn build(dir: &Path, path: &Path) -> Result<(), ToolError> {
    let temp = dir.join(format!(
        ".{FILE_NAME}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let filled = async {
        let mut conn = SqliteConnectOptions::new()
            .filename(&temp)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Delete)
            .connect()
            .await?;
        sqlx::raw_sql(DATASET_SQL).execute(&mut conn).await?;
        conn.close().await
    };
    if let Err(e) = filled.await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(dataset_failure("create", &e));
    }
    if let Err(e) = tokio::fs::rename(&temp, path).await {
        let _ = tokio::fs::remove_file(&temp).await;
        tracing::warn!(error = %e, "could not move the demo dataset into place");
        return Err(ToolError::failed("could not create the demo dataset"));
    }
    Ok(())
}

/// `%term%` with LIKE's wildcards escaped, so `%` and `_` match themselves.
fn like_pattern(term: &str) -> String {
    let mut pattern = String::with_capacity(term.len() + 2);
    pattern.push('%');
    for c in term.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

fn product(row: &sqlx::sqlite::SqliteRow) -> Result<Value, ToolError> {
    let get = |e: sqlx::Error| dataset_failure("read", &e);
    Ok(json!({
        "id": row.try_get::<i64, _>("id").map_err(get)?,
        "name": row.try_get::<String, _>("name").map_err(get)?,
        "category": row.try_get::<String, _>("category").map_err(get)?,
        "description": row.try_get::<String, _>("description").map_err(get)?,
        "price": row.try_get::<f64, _>("price").map_err(get)?,
    }))
}

fn customer(row: &sqlx::sqlite::SqliteRow) -> Result<Value, ToolError> {
    let get = |e: sqlx::Error| dataset_failure("read", &e);
    Ok(json!({
        "id": row.try_get::<i64, _>("id").map_err(get)?,
        "name": row.try_get::<String, _>("name").map_err(get)?,
        "city": row.try_get::<String, _>("city").map_err(get)?,
        "plan": row.try_get::<String, _>("plan").map_err(get)?,
    }))
}

fn dataset_failure(action: &str, err: &sqlx::Error) -> ToolError {
    tracing::warn!(error = %err, action, "demo dataset error");
    ToolError::failed(format!("could not {action} the demo dataset"))
}

#[cfg(test)]
#[path = "dataset_tests.rs"]
mod tests;
