//! A cheap signal that credentials changed (keys revoked or rotated, tokens
//! revoked, ...), shared by every process that opens the same SQLite
//! database: a marker file next to it holding a counter that only increases.
//! Reading it is one small file read per request.
//!
//! A change takes an exclusive lock on a lock file beside the marker, reads
//! the counter, and renames a file holding the next value into place, so
//! two changes (from any processes) never give the same value and readers
//! always see a whole number. The lock file keeps the last value as well: a
//! deleted marker continues from it. Only when both are gone does the
//! counter start from the clock (in microseconds), above any value a
//! counter started earlier can have reached at one change per microsecond.
//!
//! A marker is never written after it was renamed into place, so its value
//! is known for as long as the path names the same file. A reader keeps the
//! marker it read open, which keeps that file's inode from being reused,
//! and on later reads only compares the path's inode (and size and times)
//! with it: one `stat` per request instead of open, read and close.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub enum CredentialGeneration {
    /// Next to a database file: seen by every process using it.
    File {
        marker: PathBuf,
        lock: PathBuf,
        last_read: Mutex<Option<MarkerRead>>,
    },
    /// In-memory databases live in one process: a counter suffices.
    Counter(AtomicU64),
}

/// The marker file last read, held open so its inode cannot be reused by
/// a later marker while its value is trusted.
#[derive(Debug)]
pub struct MarkerRead {
    _file: std::fs::File,
    identity: FileIdentity,
    value: u64,
}

/// Which file a path names (device and inode), and its size and change
/// time, so that a marker written in place (by hand, or by an older
/// version) is read again too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

#[cfg(unix)]
fn identity(metadata: &std::fs::Metadata) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    Some(FileIdentity {
        dev: metadata.dev(),
        ino: metadata.ino(),
        len: metadata.len(),
        ctime: (metadata.ctime(), metadata.ctime_nsec()),
        mtime: (metadata.mtime(), metadata.mtime_nsec()),
    })
}

/// Without inode numbers every read opens the marker.
#[cfg(not(unix))]
fn identity(_metadata: &std::fs::Metadata) -> Option<FileIdentity> {
    None
}

/// Opens and reads the marker; the open file comes back with its value.
fn read_marker(marker: &Path) -> Option<MarkerRead> {
    let mut file = std::fs::File::open(marker).ok()?;
    let identity = identity(&file.metadata().ok()?)?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let value = text.trim().parse().ok()?;
    Some(MarkerRead {
        _file: file,
        identity,
        value,
    })
}

fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn read_counter(marker: &Path) -> Option<u64> {
    std::fs::read_to_string(marker).ok()?.trim().parse().ok()
}

/// The first value of a new counter: above any counter an earlier marker
/// of this database can have reached, since that one started from an
/// earlier clock reading and counts one per change.
fn first_value() -> u64 {
    use gatehouse_core::Clock as _;
    let millis = gatehouse_core::SystemClock.now().as_millis();
    u64::try_from(millis.saturating_mul(1000))
        .unwrap_or(0)
        .max(1)
}

fn owner_only() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

impl CredentialGeneration {
    pub fn for_database(path: &Path) -> Self {
        CredentialGeneration::File {
            marker: beside(path, "-credentials"),
            lock: beside(path, "-credentials.lock"),
            last_read: Mutex::new(None),
        }
    }

    pub fn in_memory() -> Self {
        CredentialGeneration::Counter(AtomicU64::new(1))
    }

    /// The current generation; `None` when it cannot be read, in which case
    /// callers must not trust anything they cached.
    pub fn current(&self) -> Option<u64> {
        match self {
            CredentialGeneration::Counter(n) => Some(n.load(Ordering::SeqCst)),
            CredentialGeneration::File {
                marker, last_read, ..
            } => {
                let now_named = identity(&std::fs::metadata(marker).ok()?)?;
                let mut last_read = last_read.lock().ok()?;
                if let Some(read) = last_read.as_ref()
                    && read.identity == now_named
                {
                    return Some(read.value);
                }
                // Another file (or none yet read): read it. If the path was
                // replaced again meanwhile, the identity kept is that of the
                // file read, so the next call reads again.
                let read = read_marker(marker);
                let value = read.as_ref().map(|r| r.value);
                *last_read = read;
                value
            }
        }
    }

    /// Announces a change. Called after the change is committed. Blocks
    /// briefly while another process announces one.
    ///
    /// When the next value cannot be written (no file descriptor left, a
    /// full disk), the marker is removed instead: a reader that finds no
    /// marker trusts none of its caches and reads the database, until a
    /// later change writes a marker again. Without that, a revocation
    /// would be committed and every cache, this process's too, would keep
    /// the revoked credential. Errs only when neither could be done.
    pub fn bump(&self) -> std::io::Result<()> {
        match self {
            CredentialGeneration::Counter(n) => {
                n.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            CredentialGeneration::File { marker, lock, .. } => {
                let Err(error) = write_next(marker, lock) else {
                    return Ok(());
                };
                match std::fs::remove_file(marker) {
                    Ok(()) => {}
                    Err(removal) if removal.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => return Err(error),
                }
                tracing::error!(
                    %error,
                    "cannot write the next credential generation: the marker is removed, so \
                     every process reads credentials from the database until a later change \
                     writes one"
                );
                Ok(())
            }
        }
    }
}

/// Writes the next counter value into place (see the module's comment).
fn write_next(marker: &Path, lock_path: &Path) -> std::io::Result<()> {
    let mut lock = owner_only().truncate(false).open(lock_path)?;
    // Released when `lock` is closed, also on an early return.
    lock.lock()?;
    // The lock file keeps the last value too, so a lost marker continues
    // from it; only when both are gone does the counter restart from the
    // clock.
    let previous = read_counter(marker).or_else(|| read_counter(lock_path));
    let next = match previous {
        Some(value) => value.checked_add(1).ok_or_else(|| {
            std::io::Error::other("the credential generation counter is exhausted")
        })?,
        None => first_value(),
    };
    lock.set_len(0)?;
    lock.write_all(next.to_string().as_bytes())?;
    let temp = beside(marker, &format!(".{}", std::process::id()));
    let mut file = owner_only().truncate(true).open(&temp)?;
    file.write_all(next.to_string().as_bytes())?;
    drop(file);
    std::fs::rename(&temp, marker)
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
    fn a_lost_marker_continues_above_every_earlier_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let one = CredentialGeneration::for_database(&db);
        one.bump().unwrap();
        one.bump().unwrap();
        let before = one.current().unwrap();
        std::fs::remove_file(dir.path().join("g.db-credentials")).unwrap();
        assert_eq!(one.current(), None);
        one.bump().unwrap();
        assert!(one.current().unwrap() > before);
        // A marker of the earlier inode-and-mtime kind (empty) is replaced too.
        std::fs::write(dir.path().join("g.db-credentials"), b"").unwrap();
        assert_eq!(one.current(), None);
        one.bump().unwrap();
        assert!(one.current().is_some());
    }

    #[test]
    fn every_replacement_of_the_marker_is_seen_even_when_inodes_are_reused() {
        // Freed inode numbers come back quickly on most file systems; a
        // reader that trusted an inode number alone would miss changes.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let writer = CredentialGeneration::for_database(&db);
        let reader = CredentialGeneration::for_database(&db);
        writer.bump().unwrap();
        let mut last = reader.current().unwrap();
        for _ in 0..200 {
            writer.bump().unwrap();
            let now = reader.current().unwrap();
            assert_eq!(now, last + 1);
            assert_eq!(reader.current(), Some(now), "a repeated read agrees");
            last = now;
        }
    }

    #[test]
    fn a_change_that_cannot_be_announced_leaves_no_cache_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let writer = CredentialGeneration::for_database(&db);
        let reader = CredentialGeneration::for_database(&db);
        writer.bump().unwrap();
        let before = reader.current().unwrap();
        assert_eq!(writer.current(), Some(before));
        // The next value cannot be written: a directory where the file
        // holding it would be made.
        let temp = beside(&db, &format!("-credentials.{}", std::process::id()));
        std::fs::create_dir(&temp).unwrap();
        writer.bump().unwrap();
        assert_eq!(reader.current(), None, "the other process trusts no cache");
        assert_eq!(writer.current(), None, "nor does this one");
        // The next change that can be written restores the marker, above
        // every earlier value.
        std::fs::remove_dir(&temp).unwrap();
        writer.bump().unwrap();
        assert!(reader.current().unwrap() > before);
    }

    #[test]
    fn counter_generation_changes_on_bump() {
        let counter = CredentialGeneration::in_memory();
        let before = counter.current();
        counter.bump().unwrap();
        assert_ne!(counter.current(), before);
    }
}
