//! Nothing of this process's memory or environment is readable by another
//! process of the same user, in particular not by the stdio upstreams it
//! starts.
//!
//! A stdio upstream runs as Gatehouse's user with a minimal environment of
//! its own, but the kernel lets any process of the same user read
//! `/proc/<gatehouse>/environ` and `/proc/<gatehouse>/mem` (and attach a
//! debugger) while the process is "dumpable": the master key, the pepper
//! and every `env:` secret would be one `cat` away for a child that went
//! rogue. A process that is not dumpable has those files owned by root and
//! cannot be attached to; it also writes no core dump, which would hold the
//! same secrets. Children do not inherit the setting (`execve` resets it),
//! so they are not restricted by it.
//!
//! This does not stop a child from reading files Gatehouse's user can read
//! (the data directory); running upstreams as another user does that.

/// Makes the process non-dumpable. On systems without the setting there is
/// nothing to do.
#[cfg(target_os = "linux")]
pub fn keep_memory_private() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, set_dumpable_behavior};
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
pub fn keep_memory_private() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use rustix::process::{DumpableBehavior, dumpable_behavior};

    #[test]
    fn the_process_is_no_longer_dumpable() {
        super::keep_memory_private().unwrap();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
    }
}
