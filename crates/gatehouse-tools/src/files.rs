//! `read_file` and `write_file`: text files in the tenant's `files/` area.
//!
//! Confinement happens twice: lexically (`RelativePath`) and on the real file
//! system (canonical paths must stay under the canonical root), which is what
//! stops symbolic links from leading out. Tools themselves cannot create
//! links, so only the operator can plant one; the canonical check covers it.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::ToolOutput;
use crate::error::ToolError;
use crate::sandbox::{RelativePath, ensure_inside, io_failure};

pub(crate) async fn read(
    root: PathBuf,
    path: RelativePath,
    limit: u64,
) -> Result<ToolOutput, ToolError> {
    let text = blocking(move || read_text(&root, &path, limit)).await?;
    Ok(ToolOutput {
        text,
        structured: None,
    })
}

/// What one tenant's file area may hold. The sandbox shares its volume
/// with the database and the audit log: a tenant that filled it (or its
/// inodes) would stop every tenant's calls, since no call runs without its
/// audit record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub(crate) bytes: u64,
    pub(crate) entries: u64,
}

pub(crate) const TENANT_QUOTA: Quota = Quota {
    bytes: 100 * 1024 * 1024,
    entries: 10_000,
};

pub(crate) async fn write(
    root: PathBuf,
    path: RelativePath,
    content: String,
    limit: u64,
) -> Result<ToolOutput, ToolError> {
    let shown = path.display();
    // The quota is checked and the file written under the area's lock.
    let turn = crate::area_locks::lock(&root).await;
    let bytes = blocking(move || {
        let written = write_text(&root, &path, content.as_bytes(), limit, TENANT_QUOTA);
        drop(turn);
        written
    })
    .await?;
    Ok(ToolOutput {
        text: format!("wrote {bytes} bytes to {shown}"),
        structured: Some(json!({ "path": shown, "bytes": bytes })),
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ToolError::failed("the file operation was interrupted"))?
}

fn not_found(path: &RelativePath) -> ToolError {
    ToolError::NotFound(format!("'{}' does not exist", path.display()))
}

fn is_missing(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn read_text(root: &Path, path: &RelativePath, limit: u64) -> Result<String, ToolError> {
    let canonical = match fs::canonicalize(path.under(root)) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => return Err(not_found(path)),
        Err(e) => return Err(io_failure("resolve the path", &e)),
    };
    ensure_inside(root, &canonical)?;
    // Checked before opening: opening a FIFO for reading would block forever.
    let meta = fs::metadata(&canonical).map_err(|e| io_failure("inspect the file", &e))?;
    if meta.is_dir() {
        return Err(ToolError::invalid(format!(
            "'{}' is a folder, not a file",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(ToolError::refused(format!(
            "'{}' is not a regular file",
            path.display()
        )));
    }
    let too_large = || {
        ToolError::refused(format!(
            "'{}' is larger than the {limit}-byte read limit",
            path.display()
        ))
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let file = fs::File::open(&canonical).map_err(|e| io_failure("open the file", &e))?;
    let mut bytes = Vec::new();
    // The file may grow between the size check and the read.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_failure("read the file", &e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    String::from_utf8(bytes)
        .map_err(|_| ToolError::failed(format!("'{}' is not UTF-8 text", path.display())))
}

fn write_text(
    root: &Path,
    path: &RelativePath,
    content: &[u8],
    limit: u64,
    quota: Quota,
) -> Result<u64, ToolError> {
    let size = content.len() as u64;
    if size > limit {
        return Err(ToolError::invalid(format!(
            "'content' is {size} bytes; the write limit is {limit} bytes"
        )));
    }
    let (dirs, name) = path.split();
    // The caller holds the area's lock (`area_locks`) from here to the end.
    within_quota(root, dirs, name, size, quota)?;
    let parent = prepare_parent(root, dirs)?;
    let target = parent.join(name);
    match fs::symlink_metadata(&target) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(ToolError::refused(format!(
                "'{}' is a symbolic link; writing through links is not allowed",
                path.display()
            )));
        }
        Ok(meta) if meta.is_dir() => {
            return Err(ToolError::invalid(format!(
                "'{}' is a folder, not a file",
                path.display()
            )));
        }
        Ok(meta) if !meta.is_file() => {
            return Err(ToolError::refused(format!(
                "'{}' is not a regular file",
                path.display()
            )));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_failure("inspect the file", &e)),
    }
    replace_atomically(&parent, &target, content)?;
    Ok(size)
}

/// Refuses a write that would take the file area past its quota: its
/// bytes with this file's new size (less what it replaces), its entries
/// with the folders and the file it adds.
fn within_quota(
    root: &Path,
    dirs: &[String],
    name: &str,
    size: u64,
    quota: Quota,
) -> Result<(), ToolError> {
    let (bytes, entries) = usage(root, quota.entries)?;
    let mut current = root.to_path_buf();
    let mut added = 0u64;
    for dir in dirs {
        current.push(dir);
        if added > 0 || fs::symlink_metadata(&current).is_err() {
            added += 1;
        }
    }
    current.push(name);
    let replaced = match fs::symlink_metadata(&current) {
        Ok(meta) if added == 0 => meta.len(),
        _ => {
            added += 1;
            0
        }
    };
    let full = |what: &str| {
        ToolError::refused(format!(
            "your file area is full ({what}); delete files, or ask the operator"
        ))
    };
    if bytes.saturating_sub(replaced).saturating_add(size) > quota.bytes {
        return Err(full(&format!("at most {} bytes", quota.bytes)));
    }
    if entries.saturating_add(added) > quota.entries {
        return Err(full(&format!(
            "at most {} files and folders",
            quota.entries
        )));
    }
    Ok(())
}

/// The bytes and entries (files and folders) under `root`, links not
/// followed; counting stops past `max_entries`.
fn usage(root: &Path, max_entries: u64) -> Result<(u64, u64), ToolError> {
    let mut bytes = 0u64;
    let mut entries = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_failure("measure the file area", &e)),
        };
        for entry in listing {
            let entry = entry.map_err(|e| io_failure("measure the file area", &e))?;
            // Gone since it was listed (another write's temporary file,
            // renamed into place): nothing to count.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_failure("measure the file area", &e)),
            };
            entries += 1;
            if entries > max_entries {
                return Ok((bytes, entries));
            }
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                bytes = bytes.saturating_add(meta.len());
            }
        }
    }
    Ok((bytes, entries))
}

/// Walks the folders one by one, creating missing ones only after the part
/// already walked has been verified to be inside the root.
fn prepare_parent(root: &Path, dirs: &[String]) -> Result<PathBuf, ToolError> {
    let mut current = root.to_path_buf();
    for dir in dirs {
        let next = current.join(dir);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.is_dir() => current = next,
            Ok(meta) if meta.file_type().is_symlink() => {
                let resolved = fs::canonicalize(&next).map_err(|_| {
                    ToolError::refused(format!("folder '{dir}' is a dangling symbolic link"))
                })?;
                ensure_inside(root, &resolved)?;
                if !resolved.is_dir() {
                    return Err(ToolError::invalid(format!("'{dir}' is not a folder")));
                }
                current = resolved;
            }
            Ok(_) => return Err(ToolError::invalid(format!("'{dir}' is not a folder"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next).map_err(|e| io_failure("create a folder", &e))?;
                current = next;
            }
            Err(e) => return Err(io_failure("inspect a folder", &e)),
        }
    }
    let canonical = fs::canonicalize(&current).map_err(|e| io_failure("resolve the folder", &e))?;
    ensure_inside(root, &canonical)?;
    Ok(canonical)
}

/// Readers see the old content or the new, never a half-written file.
fn replace_atomically(dir: &Path, target: &Path, content: &[u8]) -> Result<(), ToolError> {
    let temp = dir.join(format!(".gatehouse-tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temp, target)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_failure("write the file", &e)
    })
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
