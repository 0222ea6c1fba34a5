//! Servers witness the chains of other processes.
//!
//! A command (`gatehouse keys revoke`, `approvals decide`, …) and a
//! `gatehouse stdio` run link their records into a chain of their own
//! (`run-…`) and sign its head before they end. Nothing else refers to
//! such a chain, so whoever can write the database (and the file) could
//! delete one whole, checkpoints included, and `audit verify` would still
//! find a consistent trail. A server therefore writes into its own chain,
//! for each such checkpoint it finds in the store, a `witness` record
//! naming it; `audit verify` requires every witnessed checkpoint to be
//! there, and the chain's records under it.
//!
//! Servers do not witness each other's chains: each witness record moves
//! the witnessing chain, whose next checkpoint the other server would
//! witness in turn, one record per interval each, forever, with no
//! traffic at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gatehouse_core::{AuditEvent, AuditKind, Outcome, Timestamp};
use gatehouse_store::{AuditCheckpoint, AuditQuery, Store};
use serde::{Deserialize, Serialize};

use crate::chain::RUN_CHAIN_PREFIX;
use crate::{AuditLog, EventBuilder};

/// How far behind a server's clock another host's may run: checkpoints
/// stored with a time up to this much before the last read are read again
/// (and those already witnessed skipped).
const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// Checkpoints read from the store per round.
const PAGE: u32 = 500;

/// The `reason` of a witness record.
pub const WITNESSED: &str = "chain_witnessed";

/// What a witness record's `arguments` hold: the checkpoint seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessedCheckpoint {
    pub chain: String,
    pub seq: u64,
    pub hash: String,
}

impl WitnessedCheckpoint {
    /// The checkpoint a witness record names; `None` for any other record
    /// (or a witness record whose arguments are not one: `audit verify`
    /// reports that as an edit).
    pub fn of(event: &AuditEvent) -> Option<Result<WitnessedCheckpoint, String>> {
        if event.kind != AuditKind::Witness {
            return None;
        }
        Some(
            event
                .arguments
                .clone()
                .ok_or_else(|| "a witness record without the checkpoint it witnessed".to_string())
                .and_then(|a| {
                    serde_json::from_value(a)
                        .map_err(|e| format!("a witness record that names no checkpoint ({e})"))
                }),
        )
    }

    fn record(checkpoint: &AuditCheckpoint, now: Timestamp) -> AuditEvent {
        let witnessed = WitnessedCheckpoint {
            chain: checkpoint.chain.clone(),
            seq: checkpoint.seq,
            hash: checkpoint.hash.clone(),
        };
        EventBuilder::new(AuditKind::Witness, Outcome::Success, now)
            .reason(WITNESSED)
            .arguments(serde_json::to_value(witnessed).unwrap_or_default())
            .build()
    }
}

/// A server's witness of other processes' chains, asked once per
/// checkpoint interval (before the server signs its own head, so the
/// witness records are signed with it).
pub struct Witness {
    store: Arc<dyn Store>,
    /// When the server started: a chain with no checkpoint yet (a new
    /// server) witnesses from then on, not every run chain ever stored.
    started: Timestamp,
    /// The server's own chain and the time checkpoints are next read
    /// from; `None` until the first round.
    position: Option<(String, Timestamp)>,
    /// Per chain: the highest seq witnessed, and that checkpoint's time
    /// (forgotten once it is before the window read).
    witnessed: HashMap<String, (u64, Timestamp)>,
}

impl Witness {
    pub fn new(store: Arc<dyn Store>, started: Timestamp) -> Witness {
        Witness {
            store,
            started,
            position: None,
            witnessed: HashMap::new(),
        }
    }

    /// Writes a witness record for the latest checkpoint of each
    /// process's chain stored since the last round; returns how many.
    /// A process that is not a server witnesses nothing.
    pub async fn round(&mut self, audit: &AuditLog, now: Timestamp) -> Result<usize, String> {
        let (own, since) = match &self.position {
            Some(position) => position.clone(),
            None => {
                let (own, _, _) = audit.durable_head().await.map_err(|e| e.to_string())?;
                if own.starts_with(RUN_CHAIN_PREFIX) {
                    return Ok(0);
                }
                let since = self.start(&own).await?;
                (own, since)
            }
        };
        let list = self
            .store
            .audit_checkpoints_since(since, PAGE)
            .await
            .map_err(|e| format!("cannot read the stored checkpoints: {e}"))?;
        let mut latest: BTreeMap<&str, &AuditCheckpoint> = BTreeMap::new();
        for checkpoint in &list {
            let seen = self.witnessed.get(&checkpoint.chain).map(|(seq, _)| *seq);
            if !checkpoint.chain.starts_with(RUN_CHAIN_PREFIX)
                || seen.is_some_and(|seq| checkpoint.seq <= seq)
            {
                continue;
            }
            latest
                .entry(&checkpoint.chain)
                .and_modify(|c| {
                    if checkpoint.seq > c.seq {
                        *c = checkpoint;
                    }
                })
                .or_insert(checkpoint);
        }
        let records: Vec<AuditEvent> = latest
            .values()
            .map(|c| WitnessedCheckpoint::record(c, now))
            .collect();
        if !records.is_empty() {
            audit
                .record_all(records)
                .await
                .map_err(|e| format!("cannot write the witness records: {e}"))?;
        }
        for checkpoint in latest.values() {
            self.witnessed
                .insert(checkpoint.chain.clone(), (checkpoint.seq, checkpoint.ts));
        }
        // A full page goes on from its last time (those of that same
        // millisecond again); otherwise everything up to now was read,
        // and the next round reads again as far back as clocks may differ.
        let next = match list.last() {
            Some(last) if list.len() == PAGE as usize => last.ts,
            _ => now.plus_millis(-CLOCK_SKEW_MS).max(since),
        };
        self.witnessed.retain(|_, (_, ts)| *ts >= next);
        self.position = Some((own, next));
        Ok(latest.len())
    }

    /// Where a server's first round reads from (less the clock skew): a
    /// restart goes on from its chain's last checkpoint; a new chain from
    /// the newest witness record of any server (a server whose instance id
    /// file is not kept starts a new chain each time, and what came while
    /// it was down must still be witnessed), else from its own start. What
    /// was witnessed in that window, by any server, is noted, so it is not
    /// witnessed again.
    async fn start(&mut self, own: &str) -> Result<Timestamp, String> {
        let last = self
            .store
            .audit_last_checkpoint(own)
            .await
            .map_err(|e| format!("cannot read the chain's last checkpoint: {e}"))?;
        let from = match last {
            Some(last) => last.ts,
            None => {
                let newest = self
                    .store
                    .query_audit(&AuditQuery {
                        kind: Some(AuditKind::Witness),
                        limit: Some(1),
                        ..AuditQuery::default()
                    })
                    .await
                    .map_err(|e| format!("cannot read the latest witness record: {e}"))?;
                newest
                    .first()
                    .map_or(self.started, |row| row.event.ts.min(self.started))
            }
        };
        let since = from.plus_millis(-CLOCK_SKEW_MS);
        let rows = self
            .store
            .query_audit(&AuditQuery {
                since: Some(since),
                kind: Some(AuditKind::Witness),
                limit: Some(10_000),
                ..AuditQuery::default()
            })
            .await
            .map_err(|e| format!("cannot read the witness records: {e}"))?;
        for row in rows {
            if let Some(Ok(w)) = WitnessedCheckpoint::of(&row.event) {
                let entry = self.witnessed.entry(w.chain).or_insert((0, row.event.ts));
                entry.0 = entry.0.max(w.seq);
            }
        }
        Ok(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditOptions, Chain};
    use gatehouse_store::SqliteStore;

    fn checkpoint(chain: &str, seq: u64, ts: i64) -> AuditCheckpoint {
        AuditCheckpoint {
            chain: chain.into(),
            seq,
            hash: format!("{seq:064}"),
            ts: Timestamp(ts),
            jws: "h.p.s".into(),
        }
    }

    fn server_log(store: &Arc<dyn Store>, chain: &str) -> (AuditLog, crate::AuditWriterHandle) {
        let options = AuditOptions {
            file: None,
            fsync: false,
            chain: Chain::resume(chain.into(), None),
            rotation: None,
            syslog: None,
        };
        AuditLog::start_with(Arc::clone(store), options).unwrap()
    }

    async fn witnessed(store: &Arc<dyn Store>) -> Vec<WitnessedCheckpoint> {
        store
            .query_audit(&AuditQuery {
                kind: Some(AuditKind::Witness),
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .iter()
            .map(|row| WitnessedCheckpoint::of(&row.event).unwrap().unwrap())
            .collect()
    }

    /// A server records the latest checkpoint of each run's chain once,
    /// never a server's, and a restart does not record them again.
    #[tokio::test]
    async fn a_server_witnesses_each_runs_latest_checkpoint_once() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let now = Timestamp(10_000_000);
        // Long before the server started: the other servers' to witness.
        store
            .append_audit_checkpoint(&checkpoint("run-old", 1, 1_000))
            .await
            .unwrap();
        for c in [
            checkpoint("run-a", 3, 9_900_000),
            checkpoint("run-a", 5, 9_910_000),
            checkpoint("run-b", 1, 9_920_000),
            checkpoint("i-other", 7, 9_920_000),
        ] {
            store.append_audit_checkpoint(&c).await.unwrap();
        }
        let (log, _handle) = server_log(&store, "i-me");
        let mut witness = Witness::new(Arc::clone(&store), Timestamp(9_950_000));
        assert_eq!(witness.round(&log, now).await.unwrap(), 2);
        let seen = witnessed(&store).await;
        let names: Vec<(&str, u64)> = seen.iter().map(|w| (w.chain.as_str(), w.seq)).collect();
        assert_eq!(names, [("run-a", 5), ("run-b", 1)]);
        assert_eq!(seen[0].hash, format!("{:064}", 5));

        // Nothing new: nothing recorded; a new checkpoint of a run: that one.
        assert_eq!(witness.round(&log, now).await.unwrap(), 0);
        store
            .append_audit_checkpoint(&checkpoint("run-c", 2, 9_999_000))
            .await
            .unwrap();
        assert_eq!(witness.round(&log, now.plus_millis(1)).await.unwrap(), 1);
        assert_eq!(witnessed(&store).await.len(), 3);

        // A restarted server, its chain signed just now, goes on without
        // witnessing the recent ones again; a run's newer checkpoint counts.
        crate::checkpoint::checkpoint(&log, &TestSigner, now.plus_millis(2), 0)
            .await
            .unwrap();
        store
            .append_audit_checkpoint(&checkpoint("run-c", 4, 9_999_500))
            .await
            .unwrap();
        let mut restarted = Witness::new(Arc::clone(&store), now.plus_millis(3));
        assert_eq!(restarted.round(&log, now.plus_millis(3)).await.unwrap(), 1);
        let last = witnessed(&store).await.pop().unwrap();
        assert_eq!((last.chain.as_str(), last.seq), ("run-c", 4));
    }

    /// A server whose id file is not kept starts a new chain each time:
    /// what came while it was down is witnessed all the same.
    #[tokio::test]
    async fn a_new_chain_goes_on_from_the_last_witness_of_any_server() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        store
            .append_audit_checkpoint(&checkpoint("run-a", 1, 1_000_000))
            .await
            .unwrap();
        let (old, _h1) = server_log(&store, "i-old");
        let mut before = Witness::new(Arc::clone(&store), Timestamp(999_000));
        assert_eq!(before.round(&old, Timestamp(1_000_500)).await.unwrap(), 1);
        // Down for an hour; a command signs meanwhile.
        store
            .append_audit_checkpoint(&checkpoint("run-b", 1, 2_000_000))
            .await
            .unwrap();
        let (new, _h2) = server_log(&store, "i-new");
        let mut after = Witness::new(Arc::clone(&store), Timestamp(4_600_000));
        assert_eq!(after.round(&new, Timestamp(4_600_500)).await.unwrap(), 1);
        let last = witnessed(&store).await.pop().unwrap();
        assert_eq!(last.chain, "run-b");
    }

    /// A run's own chain (a stdio run, a command) witnesses nothing.
    #[tokio::test]
    async fn a_run_witnesses_nothing() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        store
            .append_audit_checkpoint(&checkpoint("run-a", 3, 1_000))
            .await
            .unwrap();
        let (log, _handle) = server_log(&store, "run-me");
        let mut witness = Witness::new(Arc::clone(&store), Timestamp(1_000));
        assert_eq!(witness.round(&log, Timestamp(5_000)).await.unwrap(), 0);
        assert!(witnessed(&store).await.is_empty());
    }

    struct TestSigner;

    impl crate::CheckpointSigner for TestSigner {
        fn issuer(&self) -> &str {
            "test"
        }
        fn sign<'a>(
            &'a self,
            _: &'a crate::CheckpointClaims,
            _: Timestamp,
        ) -> futures::future::BoxFuture<'a, Result<String, String>> {
            Box::pin(async { Ok("h.p.s".to_string()) })
        }
    }
}
