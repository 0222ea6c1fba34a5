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
    tenants: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// One of a tenant's slots, given back when dropped.
pub(crate) struct TenantSlot {
    shares: Arc<TenantShares>,
    tenant: Arc<str>,
    /// Taken (and dropped) under the map's lock in `drop`, so two slots of
    /// one tenant ending at once cannot each see the other's reference and
    /// leave the entry behind.
    semaphore: Option<Arc<Semaphore>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<Semaphore>>> {
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
        let (tenant, semaphore) = {
            let mut tenants = self.lock();
            match tenants.get_key_value(tenant) {
                Some((name, semaphore)) => (name.clone(), semaphore.clone()),
                None => {
                    let name: Arc<str> = Arc::from(tenant);
                    let semaphore = Arc::new(Semaphore::new(self.share));
                    tenants.insert(name.clone(), semaphore.clone());
                    (name, semaphore)
                }
            }
        };
        // Held from here on, so the entry is not forgotten while this call
        // waits, and is forgotten (on drop) if the wait fails.
        let mut slot = TenantSlot {
            shares: self.clone(),
            tenant,
            semaphore: Some(semaphore.clone()),
            permit: None,
        };
        let permit = tokio::time::timeout_at(deadline, semaphore.acquire_owned()).await;
        match permit {
            Ok(Ok(permit)) => {
                slot.permit = Some(permit);
                Some(slot)
            }
            _ => None,
        }
    }

    /// Tenants with an entry now (calls holding or waiting for a slot).
    #[cfg(test)]
    fn tenants(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut tenants = self.shares.lock();
        // Dropped before the guard (declared after it): every slot's
        // references come and go under the lock.
        let semaphore = self.semaphore.take();
        drop(self.permit.take());
        // Only the map and this slot hold the semaphore: no call of this
        // tenant holds or waits for a slot any more.
        if let Some(semaphore) = &semaphore
            && Arc::strong_count(semaphore) == 2
            && tenants
                .get(&self.tenant)
                .is_some_and(|s| Arc::ptr_eq(s, semaphore))
        {
            tenants.remove(&self.tenant);
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
