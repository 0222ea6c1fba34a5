//! Notifications that an upstream's catalogue changed, for the caller to
//! refresh what it lists, or that one of its resources changed, for the
//! callers watching it.

use std::sync::Arc;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Tools,
    Prompts,
    Resources,
    /// The upstream (re)connected: anything may have changed.
    Reconnected,
    /// `notifications/resources/updated`: the resource `ListChanged::uri`
    /// changed (sent only for resources subscribed to at the upstream).
    ResourceUpdated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChanged {
    pub upstream: Arc<str>,
    pub kind: ChangeKind,
    /// The resource that changed, for [`ChangeKind::ResourceUpdated`].
    pub uri: Option<Arc<str>>,
}

/// Events kept for a slow receiver; beyond that it sees `Lagged` and
/// should refresh everything.
pub(crate) const CHANNEL_CAPACITY: usize = 256;
