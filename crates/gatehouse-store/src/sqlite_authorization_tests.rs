//! SQLite runs the shared `Store` behaviour tests (`store_conformance_tests.rs`):
//! serial checks on an in-memory store, concurrent ones on a file database.

use std::sync::Arc;

use super::*;

/// A file database with several connections, so concurrent statements
/// really race (an in-memory store has one connection).
async fn file_store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// The shared `Store` conformance tests (see `store_conformance_tests.rs`).
mod conformance {
    use super::*;
    use crate::store_conformance_tests::TestStore;

    async fn in_memory<F: FnOnce(TestStore) -> Fut, Fut: Future<Output = ()>>(test: F) {
        test(Arc::new(SqliteStore::in_memory().await.unwrap())).await;
    }

    async fn on_file<F: FnOnce(TestStore) -> Fut, Fut: Future<Output = ()>>(test: F) {
        let (_dir, store) = file_store().await;
        test(store).await;
    }

    crate::store_conformance_tests::conformance_tests!(serial: in_memory, concurrent: on_file);
}
