//! A cheap signal that API keys changed (revoked or rotated), shared by every
//! process that opens the same SQLite database: a marker file next to it,
//! replaced atomically after each such change. Reading it is one `stat`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub enum CredentialGeneration {
    /// Next to a database file: seen by every process using it.
    File(PathBuf),
    /// In-memory databases live in one process: a counter suffices.
    Counter(AtomicU64),
}

impl CredentialGeneration {
    pub fn for_database(path: &Path) -> Self {
        let mut marker = path.as_os_str().to_owned();
        marker.push("-credentials");
        CredentialGeneration::File(PathBuf::from(marker))
    }

    pub fn in_memory() -> Self {
        CredentialGeneration::Counter(AtomicU64::new(1))
    }

    /// The current generation; `None` when it cannot be read, in which case
    /// callers must not trust anything they cached.
    pub fn current(&self) -> Option<u64> {
        match self {
            CredentialGeneration::Counter(n) => Some(n.load(Ordering::SeqCst)),
            CredentialGeneration::File(path) => {
                let meta = std::fs::metadata(path).ok()?;
                let modified = meta
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_nanos();
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&meta);
                #[cfg(not(unix))]
                let inode = 0u64;
                // Each bump renames a new file into place: a new inode, so
                // two bumps within one clock tick still differ.
                Some(inode.rotate_left(32) ^ (modified as u64))
            }
        }
    }

    /// Announces a change. Called after the change is committed.
    pub fn bump(&self) -> std::io::Result<()> {
        match self {
            CredentialGeneration::Counter(n) => {
                n.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            CredentialGeneration::File(path) => {
                let mut temp = path.as_os_str().to_owned();
                temp.push(format!(".{}", std::process::id()));
                let temp = PathBuf::from(temp);
                std::fs::write(&temp, b"")?;
                std::fs::rename(&temp, path)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_generation_changes_on_every_bump_and_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let one = CredentialGeneration::for_database(&db);
        let two = CredentialGeneration::for_database(&db);
        assert_eq!(one.current(), None);
        one.bump().unwrap();
        let first = one.current().unwrap();
        assert_eq!(two.current(), Some(first));
        two.bump().unwrap();
        assert_ne!(one.current().unwrap(), first);
    }

    #[test]
    fn counter_generation_changes_on_bump() {
        let counter = CredentialGeneration::in_memory();
        let before = counter.current();
        counter.bump().unwrap();
        assert_ne!(counter.current(), before);
    }
}
