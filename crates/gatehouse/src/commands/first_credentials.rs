//! Where the credentials of a first start go: to the terminal that started
//! the server, or, when standard output is not one, to a file that only the
//! server's user can read.
//!
//! Output that is not a terminal is usually kept: a service manager's
//! journal, `docker logs`, a log shipper, a file. Other people and systems
//! read those, for as long as they are kept, and an admin key or password
//! printed there is a credential handed to all of them. So a secret is
//! printed only to a terminal, where the person who started the server sees
//! it once.

use std::io::{ErrorKind, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::json;

/// The file in the data directory that receives them.
pub const FILE_NAME: &str = "first-start-credentials.json";

/// Whether secrets may be printed on standard output.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The credentials file, when a first start left it in the data
/// directory: it should be stored elsewhere and deleted.
pub fn left_behind(data_dir: &Path) -> Option<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    path.exists().then_some(path)
}

/// Writes the first start's admin key and user to the data directory's
/// credentials file, readable and writable by its owner only, and returns
/// its path.
pub fn write(
    data_dir: &Path,
    key: Option<&str>,
    user: Option<(&str, &str)>,
) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(FILE_NAME);
    // A file left by an earlier first start (of a store emptied since) is
    // replaced. Removing it first means the new one is created here, with
    // these permissions: `create_new` neither follows a link someone put in
    // its place nor keeps an old file's mode.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot replace {}", path.display()));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut body = json!({
        "note": "Created by Gatehouse's first start and shown nowhere else. Store these, then delete this file.",
    });
    if let Some(key) = key {
        body["api_key"] = json!(key);
        body["role"] = json!("admin");
    }
    if let Some((username, password)) = user {
        body["user"] = json!({"username": username, "password": password});
    }
    let mut text = serde_json::to_string_pretty(&body).context("credentials as JSON")?;
    text.push('\n');
    options
        .open(&path)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_the_owners_alone_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(FILE_NAME);
        std::fs::write(&old, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let path = write(dir.path(), Some("ghk_a_b"), Some(("admin", "pw"))).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(written["api_key"], "ghk_a_b");
        assert_eq!(written["user"]["password"], "pw");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_link_in_the_files_place_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join(FILE_NAME)).unwrap();
        let path = write(dir.path(), Some("ghk_a_b"), None).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    }
}
