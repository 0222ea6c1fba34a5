//! The upstreams' catalogue changes, followed for as long as the gateway
//! lives: what the gateway knows is refreshed (pins, subscriptions), then
//! the sessions and listen streams are told.
//!
//! Each upstream's changes are handled by a task of its own, one after
//! another, and repeats still waiting are merged. With one task for all,
//! an upstream that announced a change and then never answered its
//! listing held every other upstream's resource updates and catalogue
//! changes, every tenant's, for its call timeout each time; and a burst of
//! notices from one upstream overflowed the channel, which counts as a
//! gap for every upstream (all re-listed, all resubscribed, everyone told).

// Logging, sampling and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

use std::collections::{HashMap, VecDeque};

// One module split into files: the parent's names are this file's.
use super::*;

/// Different changes one upstream may have waiting; beyond, they are
/// dropped and counted as a gap (the upstream reconnected, every watched
/// resource of it updated).
const MAX_PENDING: usize = 256;

/// One upstream's changes are handled at most this often: each may re-list
/// the upstream, make every tenant's resource routing stale and reach every
/// session, and an upstream may announce changes without end. What it
/// announces meanwhile waits, and repeats are merged.
const HANDLED_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// One upstream's changes waiting for its task.
#[derive(Default)]
struct Pending {
    changes: VecDeque<ListChanged>,
    /// Changes were lost (the channel lagged, or too many waited).
    gap: bool,
}

impl Pending {
    /// Queues `change` unless the same is waiting already.
    fn push(&mut self, change: ListChanged) {
        if self.gap || self.changes.contains(&change) {
            return;
        }
        if self.changes.len() >= MAX_PENDING {
            self.mark_gap();
            return;
        }
        self.changes.push_back(change);
    }

    fn mark_gap(&mut self) {
        self.changes.clear();
        self.gap = true;
    }

    fn take(&mut self) -> (Vec<ListChanged>, bool) {
        (
            self.changes.drain(..).collect(),
            std::mem::take(&mut self.gap),
        )
    }
}

/// The queue of one upstream's task.
#[derive(Default)]
struct UpstreamQueue {
    pending: std::sync::Mutex<Pending>,
    /// Holds a permit when something was queued since the task last took.
    queued: tokio::sync::Notify,
}

impl UpstreamQueue {
    fn with(&self, f: impl FnOnce(&mut Pending)) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut pending);
        drop(pending);
        self.queued.notify_one();
    }

    fn take(&self) -> (Vec<ListChanged>, bool) {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Follows the upstreams' catalogue changes for as long as the gateway
/// lives (see the module's comment).
pub(super) fn follow_upstream_changes(gateway: &Arc<Gateway>, sessions: SessionPeers) {
    let Some(mut changes) = gateway.upstream_changes() else {
        return;
    };
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut queues: HashMap<Arc<str>, Arc<UpstreamQueue>> = HashMap::new();
        let mut queue_of = |upstream: &Arc<str>| {
            Arc::clone(queues.entry(Arc::clone(upstream)).or_insert_with(|| {
                let queue = Arc::new(UpstreamQueue::default());
                tokio::spawn(follow_one_upstream(
                    Arc::clone(upstream),
                    Arc::clone(&queue),
                    gateway.clone(),
                    sessions.clone(),
                ));
                queue
            }))
        };
        loop {
            match changes.recv().await {
                Ok(change) => {
                    let queue = queue_of(&change.upstream);
                    queue.with(|pending| pending.push(change));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "missed upstream changes: every upstream counts as reconnected and every watched resource as updated"
                    );
                    let Some(gateway) = gateway.upgrade() else {
                        break;
                    };
                    for upstream in gateway.upstream_names() {
                        queue_of(&upstream).with(Pending::mark_gap);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
        // Each upstream's task wakes, finds the gateway gone, and ends.
        for queue in queues.values() {
            queue.queued.notify_one();
        }
    });
}

/// One upstream's task: takes what is queued and handles it in order.
async fn follow_one_upstream(
    upstream: Arc<str>,
    queue: Arc<UpstreamQueue>,
    gateway: std::sync::Weak<Gateway>,
    sessions: SessionPeers,
) {
    let mut handled_at: Option<tokio::time::Instant> = None;
    loop {
        queue.queued.notified().await;
        if let Some(at) = handled_at {
            tokio::time::sleep_until(at + HANDLED_AT_MOST_EVERY).await;
        }
        let Some(gateway) = gateway.upgrade() else {
            return;
        };
        handled_at = Some(tokio::time::Instant::now());
        let (mut changes, gap) = queue.take();
        if gap {
            let watched = sessions
                .watched()
                .into_iter()
                .filter(|(of, _)| *of == upstream)
                .collect();
            let mut after = after_a_gap(vec![Arc::clone(&upstream)], watched);
            after.append(&mut changes);
            changes = after;
        }
        for change in changes {
            gateway.upstream_changed(&change).await;
            sessions.announce(&change, &gateway.policy()).await;
        }
    }
}

/// What may have happened while changes were missed: any upstream may
/// have reconnected (and forgotten the gateway's subscriptions) or changed
/// its lists, and any watched resource may have changed.
fn after_a_gap(upstreams: Vec<Arc<str>>, watched: Vec<(Arc<str>, String)>) -> Vec<ListChanged> {
    let reconnected = upstreams.into_iter().map(|upstream| ListChanged {
        upstream,
        kind: ChangeKind::Reconnected,
        uri: None,
        tenant: None,
    });
    let updated = watched.into_iter().map(|(upstream, uri)| ListChanged {
        upstream,
        kind: ChangeKind::ResourceUpdated,
        uri: Some(uri.into()),
        tenant: None,
    });
    reconnected.chain(updated).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, uri: Option<&str>) -> ListChanged {
        ListChanged {
            upstream: Arc::from("crm"),
            kind,
            uri: uri.map(Arc::from),
            tenant: None,
        }
    }

    #[test]
    fn repeats_waiting_are_merged_and_a_flood_becomes_a_gap() {
        let mut pending = Pending::default();
        for _ in 0..300 {
            pending.push(change(ChangeKind::Tools, None));
        }
        pending.push(change(ChangeKind::ResourceUpdated, Some("crm://a")));
        let (changes, gap) = pending.take();
        assert_eq!(changes.len(), 2);
        assert!(!gap);
        for i in 0..=MAX_PENDING {
            pending.push(change(
                ChangeKind::ResourceUpdated,
                Some(&format!("crm://{i}")),
            ));
        }
        let (changes, gap) = pending.take();
        assert!(changes.is_empty());
        assert!(gap);
        assert_eq!(pending.take(), (Vec::new(), false));
    }

    #[test]
    fn after_a_gap_every_upstream_reconnects_and_every_watched_resource_is_updated() {
        let changes = after_a_gap(
            vec![Arc::from("files"), Arc::from("crm")],
            vec![(Arc::from("crm"), "crm://contacts/1".to_string())],
        );
        let seen: Vec<_> = changes
            .iter()
            .map(|c| {
                (
                    c.upstream.to_string(),
                    c.kind,
                    c.uri.as_deref().map(str::to_string),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("files".to_string(), ChangeKind::Reconnected, None),
                ("crm".to_string(), ChangeKind::Reconnected, None),
                (
                    "crm".to_string(),
                    ChangeKind::ResourceUpdated,
                    Some("crm://contacts/1".to_string())
                ),
            ]
        );
    }
}
