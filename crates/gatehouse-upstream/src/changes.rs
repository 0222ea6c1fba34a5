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
    /// The tenant whose connection said so, for an upstream with a
    /// credential per tenant (each tenant its own connection, and maybe its
    /// own data behind the same URI); `None`: the connection every tenant
    /// shares. A resource's update is told to that tenant's watchers only.
    pub tenant: Option<Arc<str>>,
}

/// Events kept for a slow receiver; beyond that it sees `Lagged` and
/// should refresh everything.
pub(crate) const CHANNEL_CAPACITY: usize = 256;
