//! One lock per tenant area (a file area, an outbox): a write checks its
//! quota and writes under its area's lock, so writes side by side cannot
//! each pass the quota against the same usage.
//!
//! The lock is asynchronous and taken before the blocking work starts: a
//! write waiting for its turn holds no thread of the blocking pool. One
//! lock for every tenant once let a tenant that queued hundreds of slow
//! writes (each walking a full area) take every blocking thread, and with
//! them every other tenant's file tools, sign-in password checks and DNS
//! lookups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::OwnedMutexGuard;

type Locks = HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>;

/// Areas are few (one file area and one outbox per tenant), so the map is
/// not trimmed.
static LOCKS: LazyLock<Mutex<Locks>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Waits for the area's turn; the area is its folder.
pub(crate) async fn lock(area: &Path) -> OwnedMutexGuard<()> {
    let lock = {
        let mut locks = LOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(locks.entry(area.to_path_buf()).or_default())
    };
    lock.lock_owned().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One area's holder does not hold up another area.
    #[tokio::test]
    async fn areas_are_locked_apart() {
        let held = lock(Path::new("/areas-test/acme")).await;
        let other = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            lock(Path::new("/areas-test/globex")),
        )
        .await;
        assert!(other.is_ok(), "another tenant's area waited");
        // The same area waits for its holder.
        let same = lock(Path::new("/areas-test/acme"));
        tokio::pin!(same);
        assert!(futures::poll!(&mut same).is_pending());
        drop(held);
        same.await;
    }
}
