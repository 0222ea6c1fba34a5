//! Reading files again while the server runs: on SIGHUP, and when one of
//! them changes (size or modification time, checked every second). The
//! policy file and the syslog sink's TLS files are reloaded this way.

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
/// in the warning when SIGHUP cannot be listened for.
pub fn watch<F>(
    what: &'static str,
    paths: Vec<PathBuf>,
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
        let mut last = stamps(&paths);
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
            if !forced && current == last {
                continue;
            }
            last = current;
            reload().await;
        }
    });
}
