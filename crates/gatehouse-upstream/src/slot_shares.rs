//! How many of an upstream's calls in flight one tenant, or one caller,
//! may hold.
//!
//! An upstream's `max_concurrent_calls` are shared by everyone who calls
//! it. Without a cap, whoever sends slow calls (or simply many) holds every
//! slot, and everyone else's calls wait and fail with `upstream_busy`: one
//! tenant, or one agent, denying service to the others. So a caller's
//! request takes, in turn, one of its caller's
//! `max_concurrent_calls_per_caller` slots (the person behind it across
//! their agents, else the agent), one of its tenant's
//! `max_concurrent_calls_per_tenant` slots (with tenancy on), then one of
//! the upstream's. The requests that are not a caller's tool call,
//! prompt, resource read or completion (listings, kept for a while per
//! tenant, and subscriptions, one per resource watched) take no caller's
//! slot.
//!
//! A [`SlotShares`] holds one kind of share (tenants', or callers'),
//! keyed by name. A name's entry exists while one of its calls holds or
//! waits for a slot, so the map stays as small as the set of names calling
//! now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One kind of share of an upstream's slots: `share` slots per name.
pub(crate) struct SlotShares {
    share: usize,
    names: Mutex<HashMap<Arc<str>, Entry>>,
}

/// A name's slots, and how many of its calls hold or wait for one (the
/// entry goes when that falls to zero).
struct Entry {
    slots: Arc<Semaphore>,
    users: usize,
}

/// One of a name's slots, given back when dropped.
pub(crate) struct ShareSlot {
    shares: Arc<SlotShares>,
    name: Arc<str>,
    permit: Option<OwnedSemaphorePermit>,
}

impl SlotShares {
    pub(crate) fn new(share: usize) -> Arc<SlotShares> {
        Arc::new(SlotShares {
            share,
            names: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn share(&self) -> usize {
        self.share
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One of `name`'s slots, waiting for one until `deadline`; `None`
    /// when its share stayed taken until then.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        name: &str,
        deadline: Instant,
    ) -> Option<ShareSlot> {
        let (name, slots) = {
            let mut names = self.lock();
            // The map's own name, when there is one: no allocation per call.
            let name = match names.get_key_value(name) {
                Some((known, _)) => known.clone(),
                None => Arc::from(name),
            };
            let entry = names.entry(name.clone()).or_insert_with(|| Entry {
                slots: Arc::new(Semaphore::new(self.share)),
                users: 0,
            });
            entry.users += 1;
            (name, entry.slots.clone())
        };
        // Counted from here on, so the entry stays while this call waits,
        // and goes (on drop) if the wait fails and nobody else uses it.
        let mut slot = ShareSlot {
            shares: self.clone(),
            name,
            permit: None,
        };
        let permit = tokio::time::timeout_at(deadline, slots.acquire_owned()).await;
        slot.permit = Some(permit.ok()?.ok()?);
        Some(slot)
    }

    /// Names with an entry now (calls holding or waiting for a slot).
    #[cfg(test)]
    fn names(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for ShareSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut names = self.shares.lock();
        if let Some(entry) = names.get_mut(&self.name) {
            entry.users -= 1;
            if entry.users == 0 {
                names.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(50)
    }

    #[tokio::test]
    async fn a_name_holds_at_most_its_share() {
        let shares = SlotShares::new(2);
        let a1 = shares.acquire("a", soon()).await.unwrap();
        let _a2 = shares.acquire("a", soon()).await.unwrap();
        assert!(shares.acquire("a", soon()).await.is_none());
        // Another name is not held back by the first one's calls.
        let _b1 = shares.acquire("b", soon()).await.unwrap();
        // A slot given back is taken again.
        drop(a1);
        assert!(shares.acquire("a", soon()).await.is_some());
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_slot_given_back() {
        let shares = SlotShares::new(1);
        let held = shares.acquire("a", soon()).await.unwrap();
        let waiting = {
            let shares = shares.clone();
            tokio::spawn(async move {
                shares
                    .acquire("a", Instant::now() + Duration::from_secs(30))
                    .await
                    .is_some()
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_name_is_forgotten_once_no_call_holds_or_waits() {
        let shares = SlotShares::new(1);
        let held = shares.acquire("a", soon()).await.unwrap();
        // A wait that fails keeps the entry of the call still holding it.
        assert!(shares.acquire("a", soon()).await.is_none());
        assert_eq!(shares.names(), 1);
        drop(held);
        assert_eq!(shares.names(), 0);
        for n in 0..100 {
            drop(shares.acquire(&format!("t{n}"), soon()).await.unwrap());
        }
        assert_eq!(shares.names(), 0);
    }
}
