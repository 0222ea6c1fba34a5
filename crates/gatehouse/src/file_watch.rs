//! Reading files again while the server runs: on SIGHUP, and when one of
//! them changed (size or modification time, checked every second) and then
//! stayed the same for a whole second. The policy file and the syslog
//! sink's TLS files are reloaded this way.
//!
//! A file rewritten in place (`cat > policy.toml`, an editor that writes
//! in several steps) is read only once it stopped changing: a prefix cut
//! at a line is often valid TOML, and a policy that lost its last lines
//! (an `approval = true`, a constraint) must not be in force even for a
//! second. Replacing the file by a rename is still the safe way.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Calls `reload` on SIGHUP and whenever a file of `paths` changed, until
/// `shutdown`, one reload at a time (each awaited before the next, so they
/// take effect in the order the files were read). `what` names the files
/// in the warning when SIGHUP cannot be listened for. With `read_first`,
/// the files are also read at the first poll: the caller read them before
/// this started, and a change in between would otherwise be taken as read.
pub fn watch<F>(
    what: &'static str,
    paths: Vec<PathBuf>,
    read_first: bool,
    shutdown: CancellationToken,
    mut reload: impl FnMut() -> F + Send + 'static,
) where
    F: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the {what} is still watched");
                None
            }
        };
        let stamps = |paths: &[PathBuf]| paths.iter().map(stamp).collect::<Vec<_>>();
        let mut changes = Settled::new(stamps(&paths));
        if read_first {
            // No stamps at all: unlike any the files can have.
            changes.last_read = Vec::new();
        }
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            #[cfg(unix)]
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let signalled = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = signalled => true,
                _ = interval.tick() => false,
            };
            let current = stamps(&paths);
            let read_now = if forced {
                changes.reloaded(current);
                true
            } else {
                changes.settled(current)
            };
            if !read_now {
                continue;
            }
            reload().await;
        }
    });
}

/// When a watched file's change has settled: it differs from what was last
/// read, and is the same as one poll earlier.
struct Settled<T> {
    last_read: T,
    last_seen: T,
}

impl<T: PartialEq + Clone> Settled<T> {
    fn new(read: T) -> Settled<T> {
        Settled {
            last_seen: read.clone(),
            last_read: read,
        }
    }

    /// Whether to read the files now (they are then taken as read).
    fn settled(&mut self, current: T) -> bool {
        if current != self.last_seen {
            self.last_seen = current;
            return false;
        }
        if current == self.last_read {
            return false;
        }
        self.last_read = current;
        true
    }

    /// Read now whatever the stamps (SIGHUP).
    fn reloaded(&mut self, current: T) {
        self.last_seen = current.clone();
        self.last_read = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_read_once_it_stayed_the_same_for_a_poll() {
        let mut changes = Settled::new(1);
        assert!(!changes.settled(1), "nothing changed");
        assert!(!changes.settled(2), "changed: not yet");
        assert!(!changes.settled(3), "still changing");
        assert!(changes.settled(3), "the same for a poll: read");
        assert!(!changes.settled(3), "read already");
        changes.reloaded(4);
        assert!(!changes.settled(4), "read on SIGHUP");
    }
}
