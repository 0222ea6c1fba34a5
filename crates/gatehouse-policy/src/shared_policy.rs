//! The policy in force, shared by the gateway and the authorization server
//! and replaced as a whole when the policy file changes.

use std::sync::{Arc, RwLock};

use crate::Policy;

pub struct SharedPolicy {
    current: RwLock<Arc<Policy>>,
}

impl std::fmt::Debug for SharedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPolicy").finish_non_exhaustive()
    }
}

impl SharedPolicy {
    pub fn new(policy: Policy) -> Self {
        SharedPolicy {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// A snapshot: each request decides with one, so a reload never mixes
    /// two policies in one decision. A poisoned lock cannot hold a
    /// half-written policy (the swap is one assignment), so its value is
    /// still used.
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(policy) => Arc::clone(&policy),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Installs a new policy for every request that starts afterwards.
    pub fn replace(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.current.write() {
            Ok(mut current) => *current = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}
