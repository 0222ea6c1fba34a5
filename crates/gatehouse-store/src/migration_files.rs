//! Test support: the migration files on disk against the list a store
//! applies.

use std::collections::BTreeMap;
use std::path::Path;

/// Fails unless `listed` holds exactly the files of `migrations/<backend>`,
/// each at the version its name starts with (`0019_…` is 19) and with its
/// content.
pub(crate) fn assert_listed(backend: &str, listed: &[(i64, &str)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut on_disk = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version: i64 = name
            .split('_')
            .next()
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("{name}: a migration's name starts with its version"));
        let sql = std::fs::read_to_string(&path).unwrap();
        assert!(
            on_disk.insert(version, (name, sql)).is_none(),
            "two {backend} migrations have version {version}"
        );
    }
    let listed: BTreeMap<i64, &str> = listed.iter().copied().collect();
    for (version, (name, sql)) in &on_disk {
        match listed.get(version) {
            Some(applied) => {
                assert_eq!(*applied, sql, "{backend}: version {version} is not {name}")
            }
            None => panic!("{backend}: {name} is never applied"),
        }
    }
    for version in listed.keys() {
        assert!(
            on_disk.contains_key(version),
            "{backend}: version {version} has no file"
        );
    }
}
