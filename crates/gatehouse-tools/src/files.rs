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

pub(crate) async fn write(
    root: PathBuf,
    path: RelativePath,
    content: String,
    limit: u64,
) -> Result<ToolOutput, ToolError> {
    let shown = path.display();
    let bytes = blocking(move || write_text(&root, &path, content.as_bytes(), limit)).await?;
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
) -> Result<u64, ToolError> {
    let size = content.len() as u64;
    if size > limit {
        return Err(ToolError::invalid(format!(
            "'content' is {size} bytes; the write limit is {limit} bytes"
        )));
    }
    let (dirs, name) = path.split();
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
