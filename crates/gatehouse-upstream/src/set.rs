//! All configured upstreams, with one change channel, and the mapping from
//! a gateway tool name (`prefix__tool`) to the upstream that serves it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::changes::{CHANNEL_CAPACITY, ListChanged};
use crate::config::{ConfigError, UpstreamConfig, route_by_config, validate};
use crate::error::UpstreamError;
use crate::health::Health;
use crate::upstream::Upstream;
use gatehouse_core::secret_ref::TenantSecrets;

pub struct UpstreamSet {
    upstreams: BTreeMap<String, Upstream>,
    changes: broadcast::Sender<ListChanged>,
}

impl UpstreamSet {
    /// Validates the entries and starts every enabled one. Must be called
    /// within a Tokio runtime.
    pub fn start(
        configs: Vec<UpstreamConfig>,
        tenants: Option<Arc<dyn TenantSecrets>>,
    ) -> Result<UpstreamSet, ConfigError> {
        validate(&configs)?;
        let (changes, _) = broadcast::channel(CHANNEL_CAPACITY);
        let upstreams = configs
            .into_iter()
            .map(|config| {
                let name = config.name.clone();
                (
                    name,
                    Upstream::start(config, tenants.clone(), changes.clone()),
                )
            })
            .collect();
        Ok(UpstreamSet { upstreams, changes })
    }

    pub fn get(&self, name: &str) -> Result<&Upstream, UpstreamError> {
        self.upstreams
            .get(name)
            .ok_or_else(|| UpstreamError::Unknown(name.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.upstreams.values()
    }

    /// The enabled upstream serving a gateway tool name, and the tool's
    /// name at that upstream. A prefixed upstream wins over an unprefixed
    /// one, also while it is disabled: a name with a configured upstream's
    /// prefix is that upstream's or nobody's, never the unprefixed
    /// upstream's (whose tool of that name would otherwise be called, and
    /// authorized, under the policy written for the prefixed upstream's).
    pub fn route<'a>(&self, tool: &'a str) -> Option<(&Upstream, &'a str)> {
        let name = route_by_config(self.upstreams.values().map(Upstream::config), tool)?;
        let upstream = self.upstreams.get(name)?;
        Some((upstream, upstream.config().own_name(tool).unwrap_or(tool)))
    }

    /// Whether calls of the gateway name `name` go to `upstream` (listings
    /// show a tool or prompt only where its calls go).
    pub fn routes_to(&self, name: &str, upstream: &Upstream) -> bool {
        self.route(name)
            .is_some_and(|(routed, _)| routed.name() == upstream.name())
    }

    /// The gateway's name for an upstream's tool.
    pub fn tool_name(upstream: &Upstream, tool: &str) -> String {
        upstream.config().gateway_name(tool)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ListChanged> {
        self.changes.subscribe()
    }

    pub fn health(&self) -> Vec<Health> {
        self.upstreams.values().map(Upstream::health).collect()
    }

    pub async fn shutdown(&self) {
        futures::future::join_all(self.upstreams.values().map(Upstream::shutdown)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn routes_by_prefix() {
        let mut files = UpstreamConfig::stdio("files", "/nonexistent/mcp-server", &[]);
        files.enabled = false;
        let mut crm = UpstreamConfig::http("crm", "http://127.0.0.1:9/mcp");
        crm.enabled = true;
        let mut bare = UpstreamConfig::http("bare", "http://127.0.0.1:9/mcp");
        bare.prefix = Some(String::new());
        let set = UpstreamSet::start(vec![files, crm, bare], None).unwrap();
        let (u, tool) = set.route("crm__find_contact").unwrap();
        assert_eq!((u.name(), tool), ("crm", "find_contact"));
        // Disabled upstreams serve nothing, and their names are nobody
        // else's: the unprefixed one takes only the rest.
        assert!(set.route("files__read").is_none());
        let (u, tool) = set.route("read").unwrap();
        assert_eq!((u.name(), tool), ("bare", "read"));
        let (u, tool) = set.route("other__read").unwrap();
        assert_eq!((u.name(), tool), ("bare", "other__read"));
        let bare = set.get("bare").unwrap();
        assert!(set.routes_to("read", bare));
        assert!(!set.routes_to("files__read", bare));
        assert!(!set.routes_to("crm__find_contact", bare));
        assert_eq!(
            UpstreamSet::tool_name(set.get("crm").unwrap(), "x"),
            "crm__x"
        );
        assert!(matches!(set.get("nope"), Err(UpstreamError::Unknown(_))));
        set.shutdown().await;
    }
}
