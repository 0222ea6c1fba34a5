//! Key records cached in memory, valid only while the store's credential
//! generation is unchanged. A revocation or rotation by any process moves
//! the generation, so the next request reads the store again: revocation
//! stays effective on the next request without a database read per request.

use std::collections::HashMap;
use std::sync::Mutex;

use gatehouse_store::ApiKeyRecord;

/// Only existing keys are cached, so this bounds memory to the key count;
/// beyond it the cache starts over.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (ApiKeyRecord, u64)>>,
}

impl KeyCache {
    pub fn get(&self, id: &str, generation: u64) -> Option<ApiKeyRecord> {
        let entries = self.entries.lock().ok()?;
        match entries.get(id) {
            Some((record, g)) if *g == generation => Some(record.clone()),
            _ => None,
        }
    }

    /// `generation` must have been read before the record was fetched, so a
    /// change committed in between is seen as a newer generation.
    pub fn put(&self, record: &ApiKeyRecord, generation: u64) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(record.id.clone(), (record.clone(), generation));
        }
    }
}
