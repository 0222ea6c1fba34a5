//! The JSON-lines file, rotated by size and age.
//!
//! When the file has reached `max_bytes`, or is older than `max_age`, the
//! next batch first renames it to `<stem>.<UTC time>.<ext>` (names that sort
//! in the order written) and starts a new one. Records are never split:
//! a batch goes whole into one file. The hash chain runs on across files,
//! so `gatehouse audit verify --file OLDEST --file … --file audit.jsonl`
//! checks them together. Only the server rotates; a command appending to the
//! same file meanwhile keeps writing to the file it opened.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse_core::{Clock, SystemClock};

use crate::AuditError;

/// When the file is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Size at which it is rotated (0: never by size).
    pub max_bytes: u64,
    /// Age at which it is rotated (zero: never by age).
    pub max_age: Duration,
}

pub(crate) struct AuditFile {
    path: PathBuf,
    file: std::fs::File,
    rotation: Option<Rotation>,
    /// Bytes in the current file.
    size: u64,
    /// When the current file was started, as far as this process knows:
    /// its modification time is not its age, so a file found at start-up
    /// counts from then.
    started: Instant,
}

pub(crate) fn open_append(path: &Path) -> Result<std::fs::File, AuditError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| AuditError::WriteFailed(format!("{}: {e}", parent.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map_err(|e| AuditError::WriteFailed(format!("{}: {e}", path.display())))
}

/// `audit.jsonl` → `audit.2026-12-04T19-58-00.123Z.jsonl` (no colons, for
/// file systems that refuse them).
fn rotated_name(path: &Path, now: gatehouse_core::Timestamp) -> PathBuf {
    let stamp = now.to_rfc3339().replace(':', "-");
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audit");
    let name = match path.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.{stamp}.{ext}"),
        None => format!("{stem}.{stamp}"),
    };
    path.with_file_name(name)
}

impl AuditFile {
    pub(crate) fn open(path: &Path, rotation: Option<Rotation>) -> Result<AuditFile, AuditError> {
        let file = open_append(path)?;
        let size = file
            .metadata()
            .map_err(|e| AuditError::WriteFailed(format!("{}: {e}", path.display())))?
            .len();
        Ok(AuditFile {
            path: path.to_path_buf(),
            file,
            rotation,
            size,
            started: Instant::now(),
        })
    }

    fn due(&self) -> bool {
        let Some(rotation) = self.rotation else {
            return false;
        };
        if self.size == 0 {
            return false;
        }
        (rotation.max_bytes > 0 && self.size >= rotation.max_bytes)
            || (!rotation.max_age.is_zero() && self.started.elapsed() >= rotation.max_age)
    }

    /// Moves the current file aside and starts a new one.
    fn rotate(&mut self) -> Result<(), AuditError> {
        let mut target = rotated_name(&self.path, SystemClock.now());
        // Two rotations within a millisecond: never overwrite a file.
        let mut n = 1;
        while target.exists() {
            target =
                rotated_name(&self.path, SystemClock.now()).with_extension(format!("{n}.jsonl"));
            n += 1;
        }
        std::fs::rename(&self.path, &target).map_err(|e| {
            AuditError::WriteFailed(format!("rotating {}: {e}", self.path.display()))
        })?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        self.started = Instant::now();
        tracing::info!(rotated = %target.display(), "audit file rotated");
        Ok(())
    }

    /// Appends `lines` with one write (rotating first when due), then syncs
    /// if asked. Blocking.
    pub(crate) fn append(&mut self, lines: &[u8], fsync: bool) -> Result<(), AuditError> {
        if self.due() {
            self.rotate()?;
        }
        // One write per batch: with O_APPEND, lines from several processes
        // sharing the file never interleave within a line.
        self.file
            .write_all(lines)
            .map_err(|e| AuditError::WriteFailed(format!("audit file: {e}")))?;
        self.size += lines.len() as u64;
        if fsync {
            self.file
                .sync_data()
                .map_err(|e| AuditError::WriteFailed(format!("audit file sync: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_is_rotated_before_the_next_batch_and_nothing_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 10,
            max_age: Duration::ZERO,
        };
        let mut file = AuditFile::open(&path, Some(rotation)).unwrap();
        file.append(b"{\"a\":1}\n{\"a\":2}\n", false).unwrap();
        file.append(b"{\"a\":3}\n", false).unwrap();
        file.append(b"{\"a\":4}\n", false).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].starts_with("audit.") && names[0].ends_with(".jsonl"));
        assert!(!names[0].contains(':'));
        let rotated = std::fs::read_to_string(dir.path().join(&names[0])).unwrap();
        assert_eq!(rotated, "{\"a\":1}\n{\"a\":2}\n");
        // The batch that found the file full started the new one; the next
        // one (under the limit) joined it.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":3}\n{\"a\":4}\n"
        );
    }

    #[test]
    fn an_old_file_is_rotated_and_no_policy_never_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let rotation = Rotation {
            max_bytes: 0,
            max_age: Duration::from_nanos(1),
        };
        let mut file = AuditFile::open(&path, Some(rotation)).unwrap();
        file.append(b"1\n", false).unwrap();
        file.append(b"2\n", false).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);

        let other = tempfile::tempdir().unwrap();
        let path = other.path().join("audit.jsonl");
        let mut file = AuditFile::open(&path, None).unwrap();
        for _ in 0..3 {
            file.append(b"x\n", false).unwrap();
        }
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);
    }
}
