//! Starting and stopping a stdio upstream's process.
//!
//! The child gets a minimal environment: never Gatehouse's own (which may
//! hold the master key, database URLs, upstream tokens of other entries).
//! It runs in its own process group so a stop also reaches what it started
//! (`npx` starts `node`).

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use process_wrap::tokio::{ChildWrapper, CommandWrap, KillOnDrop, ProcessGroup};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

use crate::config::UpstreamConfig;
use gatehouse_core::secret_ref::Secret;

/// POSIX SIGTERM (15 on every Unix Gatehouse runs on).
const SIGTERM: i32 = 15;

/// Variables passed through from Gatehouse's environment when set.
fn inherited(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "LANG" | "TMPDIR") || name.starts_with("LC_")
}

/// The part of Gatehouse's environment a child may see.
pub(crate) fn minimal_env() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| name.to_str().is_some_and(inherited))
        .collect()
}

pub(crate) struct Spawned {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
}

/// A running child; killed (with its process group) when dropped.
pub(crate) struct Child {
    inner: Option<Box<dyn ChildWrapper>>,
    upstream: Arc<str>,
}

fn missing(what: &str) -> std::io::Error {
    std::io::Error::other(format!("the child's {what} was not captured"))
}

pub(crate) fn spawn(
    upstream: &Arc<str>,
    config: &UpstreamConfig,
    command: &str,
    secret_env: &[(String, Secret)],
) -> std::io::Result<Spawned> {
    let mut cmd = tokio::process::Command::new(command);
    cmd.args(&config.args)
        .env_clear()
        .envs(minimal_env())
        .envs(&config.env)
        .envs(secret_env.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = &config.cwd {
        cmd.current_dir(cwd);
    }
    let mut wrap = CommandWrap::from(cmd);
    wrap.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    let mut inner = wrap.spawn()?;
    let stdin = inner.stdin().take().ok_or_else(|| missing("stdin"))?;
    let stdout = inner.stdout().take().ok_or_else(|| missing("stdout"))?;
    let stderr = inner.stderr().take().ok_or_else(|| missing("stderr"))?;
    tracing::info!(upstream = %upstream, pid = inner.id(), "upstream process started");
    Ok(Spawned {
        child: Child {
            inner: Some(inner),
            upstream: upstream.clone(),
        },
        stdin,
        stdout,
        stderr,
    })
}

impl Child {
    pub(crate) fn id(&self) -> Option<u32> {
        self.inner.as_ref().and_then(|c| c.id())
    }

    /// Stops the child: it has `grace` to exit by itself (its stdin is
    /// already closed), then gets SIGTERM and `grace` again, then SIGKILL.
    /// Whatever the leader did, what is left of its process group is then
    /// killed: a grandchild that ignores SIGTERM and stdin's end (the
    /// server `npx` or a shell started) would otherwise outlive every
    /// restart, holding the entry's secrets.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let inner = self.inner.as_mut()?;
        let group = inner.id();
        let status = Self::stop_leader(inner, &self.upstream, grace).await;
        self.inner = None;
        if let Some(group) = group {
            stop_group(group, grace).await;
        }
        status
    }

    async fn stop_leader(
        inner: &mut Box<dyn ChildWrapper>,
        upstream: &str,
        grace: Duration,
    ) -> Option<ExitStatus> {
        if let Ok(Ok(status)) = tokio::time::timeout(grace, inner.wait()).await {
            return Some(status);
        }
        if let Err(e) = inner.signal(SIGTERM) {
            tracing::debug!(upstream, error = %e, "SIGTERM failed");
        }
        if let Ok(Ok(status)) = tokio::time::timeout(grace, inner.wait()).await {
            return Some(status);
        }
        tracing::warn!(upstream, "upstream process ignored SIGTERM; killing it");
        let _ = inner.start_kill();
        let status = tokio::time::timeout(grace, inner.wait()).await;
        status.ok().and_then(Result::ok)
    }
}

/// What is left of the process group `group` led (its id is the leader's):
/// SIGTERM, `grace` to go, then SIGKILL. Nothing left is no error.
async fn stop_group(group: u32, grace: Duration) {
    use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
    let Some(pid) = i32::try_from(group).ok().and_then(Pid::from_raw) else {
        return;
    };
    if kill_process_group(pid, Signal::TERM).is_err() {
        // Nothing left (ESRCH), or not ours to signal.
        return;
    }
    // (A member that died but nobody reaped, when Gatehouse is a
    // container's first process, still counts: the wait then lasts the
    // whole grace.)
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if test_kill_process_group(pid).is_err() {
            // Nothing left: no SIGKILL to a group id someone may reuse.
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match kill_process_group(pid, Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::debug!(group, error = %e, "SIGKILL to the process group failed"),
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut inner) = self.inner.take() {
            // SIGKILL to the whole group; tokio's kill_on_drop reaps the leader.
            let _ = inner.start_kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` has gone (or is only a zombie nobody reaped yet).
    fn has_gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => true,
            Ok(status) => status
                .lines()
                .any(|line| line.starts_with("State:") && line.contains('Z')),
        }
    }

    /// A leader that exits at once, leaving a grandchild that ignores
    /// SIGTERM and its stdin's end: stopping the child kills it too.
    #[tokio::test]
    async fn stopping_a_child_kills_what_is_left_of_its_process_group() {
        let script = "sh -c 'trap \"\" TERM HUP; exec sleep 300' </dev/null >/dev/null 2>&1 & \
                      echo $!";
        let config = UpstreamConfig::stdio("orphans", "sh", &["-c", script]);
        let upstream: Arc<str> = Arc::from("orphans");
        let mut spawned = spawn(&upstream, &config, "sh", &[]).unwrap();
        let mut line = String::new();
        let mut stdout = tokio::io::BufReader::new(spawned.stdout);
        tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
            .await
            .unwrap();
        let grandchild = line.trim().to_string();
        assert!(!grandchild.is_empty());
        assert!(!has_gone(&grandchild), "the grandchild did not start");
        drop(spawned.stdin);
        spawned.child.stop(Duration::from_millis(500)).await;
        let mut waited = 0;
        while !has_gone(&grandchild) {
            assert!(waited < 100, "the grandchild outlived its group's stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
    }

    #[test]
    fn only_the_documented_variables_are_inherited() {
        for name in ["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR"] {
            assert!(inherited(name), "{name}");
        }
        for name in [
            "GATEHOUSE_MASTER_KEY",
            "DATABASE_URL",
            "AWS_SECRET_ACCESS_KEY",
            "LD_PRELOAD",
            "PYTHONPATH",
            "USER",
        ] {
            assert!(!inherited(name), "{name}");
        }
    }
}
