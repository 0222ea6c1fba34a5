//! Notifications that an upstream's catalogue changed, for the caller to
//! refresh what it lists.

use std::sync::Arc;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Tools,
    Prompts,
    Resources,
    /// The upstream (re)connected: anything may have changed.
    Reconnected,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChanged {
    pub upstream: Arc<str>,
    pub kind: ChangeKind,
}

/// Events kept for a slow receiver; beyond that it sees `Lagged` and
/// should refresh everything.
pub(crate) const CHANNEL_CAPACITY: usize = 256;
