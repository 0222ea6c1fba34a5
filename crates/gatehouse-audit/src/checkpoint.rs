//! Signed checkpoints of the audit chain's head.
//!
//! A hash chain alone shows edits only to someone who cannot recompute it;
//! whoever can write the database can. At intervals the head of the
//! instance's chain (seq and hash of its last durable record) is signed
//! with the store's signing key (the authorization server's) and kept beside the records
//! (the `audit_checkpoints` table and a line of the JSON-lines file). A
//! chain rewritten before a checkpoint no longer matches it, and records
//! cut from the end of a chain are missing below its last checkpoint.
//! Records after the last checkpoint are covered by the chain only.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use gatehouse_core::{Clock, Timestamp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{AuditLog, Witness};

/// The JWS `typ` of a checkpoint, so no other signed object is taken for
/// one, nor a checkpoint for anything else.
pub const CHECKPOINT_TYP: &str = "gatehouse-audit-checkpoint+jwt";

/// What a checkpoint states: record `seq` of `chain` has hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    pub iss: String,
    pub chain: String,
    pub seq: u64,
    pub hash: String,
    /// Seconds since the epoch.
    pub iat: i64,
}

/// Signs checkpoints (the store's signing key that signs now).
pub trait CheckpointSigner: Send + Sync {
    fn issuer(&self) -> &str;
    /// A compact JWS of `claims` with `typ` = [`CHECKPOINT_TYP`].
    fn sign<'a>(
        &'a self,
        claims: &'a CheckpointClaims,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Signs the chain's head every `interval` while it moves, and once more
/// when `shutdown` is cancelled (after the last records are written, the
/// caller awaits the returned task before closing the log). With a
/// `witness`, each round first records the checkpoints other processes
/// signed meanwhile (see `witness.rs`), so they are signed with the head.
pub fn spawn_checkpoints(
    audit: AuditLog,
    signer: Arc<dyn CheckpointSigner>,
    clock: Arc<dyn Clock>,
    interval: Duration,
    mut witness: Option<Witness>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut signed: u64 = 0;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            let last = tokio::select! {
                _ = ticks.tick() => false,
                () = shutdown.cancelled() => true,
            };
            if let Some(witness) = witness.as_mut()
                && let Err(e) = witness.round(&audit, clock.now()).await
            {
                tracing::error!(error = %e, "could not witness other processes' audit chains");
            }
            match checkpoint(&audit, signer.as_ref(), clock.now(), signed).await {
                Ok(Some(seq)) => signed = seq,
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "could not write an audit checkpoint"),
            }
            if last {
                return;
            }
        }
    })
}

/// Signs and writes a checkpoint of the head when it moved past `signed`;
/// returns the seq checkpointed.
pub async fn checkpoint(
    audit: &AuditLog,
    signer: &dyn CheckpointSigner,
    now: Timestamp,
    signed: u64,
) -> Result<Option<u64>, String> {
    let (chain, seq, hash) = audit.durable_head().await.map_err(|e| e.to_string())?;
    if seq <= signed {
        return Ok(None);
    }
    let claims = CheckpointClaims {
        iss: signer.issuer().to_string(),
        chain,
        seq,
        hash,
        iat: now.as_millis() / 1000,
    };
    let jws = signer.sign(&claims, now).await?;
    audit
        .record_checkpoint(gatehouse_store::AuditCheckpoint {
            chain: claims.chain,
            seq,
            hash: claims.hash,
            ts: now,
            jws,
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(seq))
}
