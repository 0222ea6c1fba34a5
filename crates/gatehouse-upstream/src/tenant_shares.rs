//! How many of an upstream's calls in flight one tenant may hold.
//!
//! An upstream's `max_concurrent_calls` are shared by everyone who calls
//! it. Without a cap per tenant, one tenant that sends slow calls (or
//! simply many) holds every slot, and every other tenant's calls wait and
//! fail with `upstream_busy`: one tenant denying service to the others. So
//! a call that names a tenant first takes one of its tenant's
//! `max_concurrent_calls_per_tenant` slots, then one of the upstream's.
//! Calls without a tenant (a deployment without tenancy), and the requests
//! that are not a caller's tool call, prompt, resource read or completion
//! (listings, kept for a while per tenant, and subscriptions, one per
//! resource watched), take only the upstream's.
//!
//! A tenant's entry exists while one of its calls holds or waits for a
//! slot, so the map stays as small as the set of tenants calling now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The per-tenant slots of one upstream.
pub(crate) struct TenantShares {
    share: usize,
    tenants: Mutex<HashMap<Arc<str>, Entry>>,
}

/// A tenant's slots, and how many of its calls hold or wait for one (the
/// entry goes when that falls to zero).
struct Entry {
    slots: Arc<Semaphore>,
    users: usize,
}

/// One of a tenant's slots, given back when dropped.
pub(crate) struct TenantSlot {
    shares: Arc<TenantShares>,
    tenant: Arc<str>,
    permit: Option<OwnedSemaphorePermit>,
}

impl TenantShares {
    pub(crate) fn new(share: usize) -> Arc<TenantShares> {
        Arc::new(TenantShares {
            share,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn share(&self) -> usize {
        self.share
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        self.tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One of `tenant`'s slots, waiting for one until `deadline`; `None`
    /// when the tenant's share stayed taken until then.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        deadline: Instant,
    ) -> Option<TenantSlot> {
        let (tenant, slots) = {
            let mut tenants = self.lock();
            // The map's own name, when there is one: no allocation per call.
            let name = match tenants.get_key_value(tenant) {
                Some((name, _)) => name.clone(),
                None => Arc::from(tenant),
            };
            let entry = tenants.entry(name.clone()).or_insert_with(|| Entry {
                slots: Arc::new(Semaphore::new(self.share)),
                users: 0,
            });
            entry.users += 1;
            (name, entry.slots.clone())
        };
        // Counted from here on, so the entry stays while this call waits,
        // and goes (on drop) if the wait fails and nobody else uses it.
        let mut slot = TenantSlot {
            shares: self.clone(),
            tenant,
            permit: None,
        };
        let permit = tokio::time::timeout_at(deadline, slots.acquire_owned()).await;
        slot.permit = Some(permit.ok()?.ok()?);
        Some(slot)
    }

    /// Tenants with an entry now (calls holding or waiting for a slot).
    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut tenants = self.shares.lock();
        if let Some(entry) = tenants.get_mut(&self.tenant) {
            entry.users -= 1;
            if entry.users == 0 {
                tenants.remove(&self.tenant);
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
    async fn a_tenant_holds_at_most_its_share() {
        let shares = TenantShares::new(2);
        let a1 = shares.acquire("a", soon()).await.unwrap();
        let _a2 = shares.acquire("a", soon()).await.unwrap();
        assert!(shares.acquire("a", soon()).await.is_none());
        // Another tenant is not held back by the first one's calls.
        let _b1 = shares.acquire("b", soon()).await.unwrap();
        // A slot given back is taken again.
        drop(a1);
        assert!(shares.acquire("a", soon()).await.is_some());
    }

    #[tokio::test]
    async fn a_waiting_call_gets_the_slot_given_back() {
        let shares = TenantShares::new(1);
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
    async fn a_tenant_is_forgotten_once_no_call_holds_or_waits() {
        let shares = TenantShares::new(1);
        let held = shares.acquire("a", soon()).await.unwrap();
        // A wait that fails keeps the entry of the call still holding it.
        assert!(shares.acquire("a", soon()).await.is_none());
        assert_eq!(shares.tenants(), 1);
        drop(held);
        assert_eq!(shares.tenants(), 0);
        for n in 0..100 {
            drop(shares.acquire(&format!("t{n}"), soon()).await.unwrap());
        }
        assert_eq!(shares.tenants(), 0);
    }
}
