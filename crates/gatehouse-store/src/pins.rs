//! Storage for pinned upstream tool definitions: the definition each
//! upstream tool had when Gatehouse first saw it, and a changed definition
//! waiting for an operator's review.
//!
//! What counts as a change, and what to do about it, is the gateway's
//! business; this only keeps the rows. Every change of a row is one
//! conditional statement, so two instances (or a server and the CLI) that
//! see the same change at once cannot overwrite each other's view of it.

use async_trait::async_trait;
use gatehouse_core::Timestamp;

use crate::{StoreError, StoreResult};

/// One definition of a tool: its canonical JSON and that JSON's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolDefinitionRecord {
    /// Lower-case hex SHA-256 of `definition`.
    pub sha256: String,
    /// Canonical JSON (sorted keys) of the parts that were pinned.
    pub definition: String,
}

/// A definition seen that differs from the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDefinition {
    pub definition: ToolDefinitionRecord,
    pub since: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPinRecord {
    pub upstream: String,
    /// The tool's name at the upstream (without the gateway's prefix).
    pub tool: String,
    pub pinned: ToolDefinitionRecord,
    pub pinned_at: Timestamp,
    /// Who approved the pinned definition; `None` when it was pinned on
    /// first sight.
    pub pinned_by: Option<String>,
    pub pending: Option<PendingDefinition>,
}

/// A pin's columns as stored, whichever the database.
pub(crate) struct PinColumns {
    pub upstream: String,
    pub tool: String,
    pub sha256: String,
    pub definition: String,
    pub pinned_at: i64,
    pub pinned_by: Option<String>,
    pub pending_sha256: Option<String>,
    pub pending_definition: Option<String>,
    pub pending_since: Option<i64>,
}

impl TryFrom<PinColumns> for ToolPinRecord {
    type Error = StoreError;

    fn try_from(c: PinColumns) -> StoreResult<ToolPinRecord> {
        let pending = match (c.pending_sha256, c.pending_definition, c.pending_since) {
            (Some(sha256), Some(definition), Some(since)) => Some(PendingDefinition {
                definition: ToolDefinitionRecord { sha256, definition },
                since: Timestamp(since),
            }),
            (None, None, None) => None,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "upstream_tool_pins: the pending definition of {}/{} is incomplete",
                    c.upstream, c.tool
                )));
            }
        };
        Ok(ToolPinRecord {
            upstream: c.upstream,
            tool: c.tool,
            pinned: ToolDefinitionRecord {
                sha256: c.sha256,
                definition: c.definition,
            },
            pinned_at: Timestamp(c.pinned_at),
            pinned_by: c.pinned_by,
            pending,
        })
    }
}

/// Accepts a pin's recorded change, if it is still the one reviewed.
/// Binds: upstream, tool, the reviewed pending SHA-256, when, by whom. The
/// same text serves SQLite and PostgreSQL.
pub(crate) const APPROVE_PENDING: &str = "UPDATE upstream_tool_pins \
     SET sha256 = pending_sha256, definition = pending_definition, \
         pinned_at = $4, pinned_by = $5, \
         pending_sha256 = NULL, pending_definition = NULL, pending_since = NULL \
     WHERE upstream = $1 AND tool = $2 AND pending_sha256 = $3";

/// Replaces a pin of the older form by its extended form, if it is still
/// the older one. Binds: upstream, tool, the old SHA-256, the new SHA-256,
/// the new definition.
pub(crate) const EXTEND_PIN: &str = "UPDATE upstream_tool_pins \
     SET sha256 = $4, definition = $5, \
         pending_sha256 = NULL, pending_definition = NULL, pending_since = NULL \
     WHERE upstream = $1 AND tool = $2 AND sha256 = $3";

#[async_trait]
pub trait PinStore {
    async fn tool_pin(&self, upstream: &str, tool: &str) -> StoreResult<Option<ToolPinRecord>>;

    /// Every pin, or those of one upstream, ordered by upstream and tool.
    async fn tool_pins(&self, upstream: Option<&str>) -> StoreResult<Vec<ToolPinRecord>>;

    /// How many tools of `upstream` are pinned.
    async fn count_tool_pins(&self, upstream: &str) -> StoreResult<u64>;

    /// Pins a tool seen for the first time. `false`: it already had a pin
    /// (another instance was quicker), which is left as it is.
    async fn insert_tool_pin(
        &self,
        upstream: &str,
        tool: &str,
        definition: &ToolDefinitionRecord,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Records `seen` as the tool's changed definition, if its pin is still
    /// `pinned_sha256` and `seen` is not already the one recorded. `true`:
    /// this call recorded it (so the change is reported once).
    async fn set_pending_tool_definition(
        &self,
        upstream: &str,
        tool: &str,
        pinned_sha256: &str,
        seen: &ToolDefinitionRecord,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Forgets a recorded change: the upstream offers the pinned definition
    /// again.
    async fn clear_pending_tool_definition(
        &self,
        upstream: &str,
        tool: &str,
        pinned_sha256: &str,
    ) -> StoreResult<()>;

    /// Pins the recorded changed definition, if it is still
    /// `pending_sha256` (the one the operator reviewed). Announced to every
    /// instance like a credential change, so each drops what it cached.
    async fn approve_tool_definition(
        &self,
        upstream: &str,
        tool: &str,
        pending_sha256: &str,
        by: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Replaces a pin recorded before some fields were pinned (`old_sha256`,
    /// whose pinned fields the tool still has) by `extended`, the same
    /// definition with those fields too, keeping who pinned it and when;
    /// a recorded change is forgotten (the tool is as reviewed). `false`:
    /// the pin is no longer `old_sha256` (another instance was quicker).
    async fn extend_tool_pin(
        &self,
        upstream: &str,
        tool: &str,
        old_sha256: &str,
        extended: &ToolDefinitionRecord,
    ) -> StoreResult<bool>;
}
