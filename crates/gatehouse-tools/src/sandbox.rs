//! Where tools may touch the file system: one directory per tenant under the
//! sandbox root, and caller-supplied paths confined to it.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::ToolError;

const MAX_TENANT_LEN: usize = 64;
const MAX_PATH_LEN: usize = 1024;
const MAX_COMPONENT_LEN: usize = 255;
/// Folders a path may go down (its file name aside): each missing one is
/// created, and 500 of them in one 1 KiB path cost inodes and directory
/// blocks for nothing.
const MAX_DEPTH: usize = 16;

/// Checks a tenant name before it becomes a path component: only
/// `[A-Za-z0-9_-]`, 1..=64 characters, so it can never be `..`, contain a
/// separator or be empty.
pub(crate) fn check_tenant(tenant: &str) -> Result<&str, ToolError> {
    let valid = (1..=MAX_TENANT_LEN).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(tenant)
    } else {
        Err(ToolError::refused(
            "the caller's tenant name is not usable as a sandbox directory",
        ))
    }
}

/// `<root>/tenants/<tenant>/<area>`, created if missing. The tenant name must
/// already be checked.
pub(crate) async fn tenant_area(
    root: &Path,
    tenant: &str,
    area: &str,
) -> Result<PathBuf, ToolError> {
    let tenant = check_tenant(tenant)?;
    let tenant_dir = root.join("tenants").join(tenant);
    let dir = tenant_dir.join(area);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io_failure("create the tenant directory", &e))?;
    claim_tenant_dir(&tenant_dir, tenant).await?;
    // Canonical, so containment checks compare like with like.
    tokio::fs::canonicalize(&dir)
        .await
        .map_err(|e| io_failure("open the tenant directory", &e))
}

/// The file in a tenant's directory that names the tenant it belongs to.
const TENANT_MARKER: &str = ".tenant";

/// Makes sure `dir` is `tenant`'s own: the first use writes the tenant's
/// exact name into it, and a later use by a tenant of another name is
/// refused. On a file system that ignores case (macOS, Windows, ext4 with
/// casefold, SMB), tenants `Acme` and `acme` would otherwise share one
/// directory and read and write each other's files and outbox.
async fn claim_tenant_dir(dir: &Path, tenant: &str) -> Result<(), ToolError> {
    let marker = dir.join(TENANT_MARKER);
    if let Some(owner) = read_marker(&marker).await? {
        return owned_by(&owner, tenant, dir);
    }
    // Written whole (and on disk) under a name of its own, then linked into
    // place: the link fails if another use claimed the directory meanwhile,
    // and the marker is never seen half written. Where the file system has
    // no hard links, the marker is made in place (exclusively) instead.
    let spare = dir.join(format!("{TENANT_MARKER}.{}", uuid::Uuid::new_v4()));
    let linked = match write_synced(&spare, tenant, false).await {
        Ok(()) => tokio::fs::hard_link(&spare, &marker).await,
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&spare).await;
    let claimed = match linked {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            write_synced(&marker, tenant, true).await
        }
        other => other,
    };
    match claimed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_marker(&marker).await? {
            Some(owner) => owned_by(&owner, tenant, dir),
            None => Err(ToolError::failed(
                "could not read the tenant directory's owner",
            )),
        },
        Err(e) => Err(io_failure("claim the tenant directory", &e)),
    }
}

/// `text` written to `path` and synced; `exclusive`: only if `path` does
/// not exist yet.
async fn write_synced(path: &Path, text: &str, exclusive: bool) -> io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true);
    if exclusive {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut file = options.open(path).await?;
    file.write_all(text.as_bytes()).await?;
    file.sync_all().await
}

/// The marker's contents; `None` when there is none. An empty marker is
/// one being written by another use (where it is made in place), or one a
/// crash cut short: read again for a moment, then taken as absent so the
/// directory can be claimed.
async fn read_marker(marker: &Path) -> Result<Option<Vec<u8>>, ToolError> {
    for _ in 0..20 {
        match tokio::fs::read(marker).await {
            Ok(owner) if owner.is_empty() => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(owner) => return Ok(Some(owner)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_failure("read the tenant directory's owner", &e)),
        }
    }
    let _ = tokio::fs::remove_file(marker).await;
    Ok(None)
}

/// Whether the marker's contents name `tenant`.
fn owned_by(owner: &[u8], tenant: &str, dir: &Path) -> Result<(), ToolError> {
    if owner == tenant.as_bytes() {
        return Ok(());
    }
    tracing::error!(
        tenant,
        directory = %dir.display(),
        "a tenant directory belongs to another tenant (names differing only in case on a \
         case-insensitive file system?)"
    );
    Err(ToolError::refused(
        "the caller's tenant directory belongs to another tenant",
    ))
}

/// A caller-supplied path that is lexically safe: relative, no `..`, no NUL,
/// no backslash. `.` and empty segments are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelativePath {
    components: Vec<String>,
}

impl RelativePath {
    pub(crate) fn parse(raw: &str) -> Result<Self, ToolError> {
        if raw.is_empty() {
            return Err(ToolError::invalid("'path' must not be empty"));
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(ToolError::invalid(format!(
                "'path' is longer than {MAX_PATH_LEN} bytes"
            )));
        }
        if raw.contains('\0') {
            return Err(ToolError::refused("'path' contains a NUL byte"));
        }
        if raw.contains('\\') {
            return Err(ToolError::refused(
                "'path' contains a backslash; use '/' as the separator",
            ));
        }
        if raw.starts_with('/') {
            return Err(ToolError::refused(
                "'path' is absolute; give a path relative to your file area",
            ));
        }
        if matches!(raw.rsplit('/').next(), Some("" | ".")) {
            return Err(ToolError::invalid(
                "'path' ends in '/' or '/.', so it names a folder, not a file",
            ));
        }
        let mut components = Vec::new();
        for part in raw.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(ToolError::refused(
                        "'path' contains '..'; paths may not leave your file area",
                    ));
                }
                _ if part.len() > MAX_COMPONENT_LEN => {
                    return Err(ToolError::invalid(format!(
                        "a segment of 'path' is longer than {MAX_COMPONENT_LEN} bytes"
                    )));
                }
                _ if part.chars().any(char::is_control) => {
                    return Err(ToolError::refused("'path' contains a control character"));
                }
                _ => components.push(part.to_string()),
            }
        }
        if components.is_empty() {
            return Err(ToolError::invalid(
                "'path' names the file area itself, not a file",
            ));
        }
        if components.len() > MAX_DEPTH + 1 {
            return Err(ToolError::invalid(format!(
                "'path' goes down more than {MAX_DEPTH} folders"
            )));
        }
        Ok(RelativePath { components })
    }

    /// The folders leading to the file, and the file name.
    pub(crate) fn split(&self) -> (&[String], &str) {
        match self.components.split_last() {
            Some((file, dirs)) => (dirs, file),
            None => (&[], ""),
        }
    }

    pub(crate) fn under(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(&self.components);
        path
    }

    pub(crate) fn display(&self) -> String {
        self.components.join("/")
    }
}

/// The last line of defence against symlinks: a canonical path must still
/// lie inside the canonical root.
pub(crate) fn ensure_inside(root: &Path, canonical: &Path) -> Result<(), ToolError> {
    if canonical.starts_with(root) {
        Ok(())
    } else {
        Err(ToolError::refused(
            "the path leads outside your file area (through a symbolic link)",
        ))
    }
}

/// An I/O error as the client sees it: what was attempted and the error
/// kind, never the server-side absolute path.
pub(crate) fn io_failure(action: &str, err: &io::Error) -> ToolError {
    tracing::debug!(error = %err, action, "sandbox I/O failed");
    ToolError::failed(format!("could not {action}: {}", err.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_restricted() {
        for good in ["default", "acme-corp", "A_1", &"x".repeat(64)] {
            assert!(check_tenant(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "a\\b",
            "a b",
            "ténant",
            "a\0",
            &"x".repeat(65),
        ] {
            let err = check_tenant(bad).err();
            assert_eq!(err.map(|e| e.code()), Some("refused"), "{bad:?}");
        }
    }

    /// A case-insensitive file system, stood in for by a link: `acme` opens
    /// the directory `Acme` made.
    #[tokio::test]
    async fn a_tenant_directory_another_tenant_made_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let own = tenant_area(root.path(), "Acme", "files").await.unwrap();
        assert!(own.ends_with("tenants/Acme/files"));
        assert!(tenant_area(root.path(), "Acme", "outbox").await.is_ok());
        std::os::unix::fs::symlink(
            root.path().join("tenants/Acme"),
            root.path().join("tenants/acme"),
        )
        .unwrap();
        let other = tenant_area(root.path(), "acme", "files").await;
        assert_eq!(other.err().map(|e| e.code()), Some("refused"));
        // Another tenant's own directory is its own.
        assert!(tenant_area(root.path(), "globex", "files").await.is_ok());
    }

    #[test]
    fn traversal_and_absolute_paths_are_rejected() {
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "..",
            "/etc/passwd",
            "//etc/passwd",
            "a\\..\\b",
            "a\0b",
        ] {
            let err = RelativePath::parse(bad).err();
            assert_eq!(err.map(|e| e.code()), Some("refused"), "{bad:?}");
        }
        for invalid in ["", ".", "./", "a/./", "a/", "a/."] {
            assert!(RelativePath::parse(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn harmless_spellings_are_normalised() {
        let parsed = RelativePath::parse("./notes//todo.txt").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.display(), "notes/todo.txt");
        let (dirs, file) = parsed.split();
        assert_eq!(dirs, ["notes"]);
        assert_eq!(file, "todo.txt");
        // Percent-encoding is not decoded: this is a literal, harmless name.
        let literal = RelativePath::parse("%2e%2e/x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(literal.display(), "%2e%2e/x");
        assert!(RelativePath::parse("...").is_ok());
    }
}
