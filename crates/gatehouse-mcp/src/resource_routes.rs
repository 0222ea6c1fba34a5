//! Which upstream serves a resource URI, as routing a `resources/read`
//! (or a watch, or a completion) needs it: every upstream's resources and
//! resource templates, listed per tenant and kept for a moment.
//!
//! Routing runs before the policy and the rate limits (the policy decides
//! on the upstream that serves the URI), so without the cache each read
//! would list every upstream's whole catalogue, up to its page limit: a
//! caller could make Gatehouse list every upstream once per request. Kept
//! for [`LISTING_TTL`], and refreshed when an upstream says its resources
//! changed or reconnects; one listing per tenant at a time (the others
//! wait for it).
//!
//! An upstream whose listing fails (restarting, its breaker open) keeps
//! what it listed last: dropping it from routing for that moment would let
//! another upstream that copies its URIs be their only claimant, and get
//! their reads. One that has never listed for the tenant may serve any URI:
//! until it lists, no read is routed (fail closed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_authz::uri_template;

/// How long a listing serves routing when no upstream says it changed.
const LISTING_TTL: Duration = Duration::from_secs(2);
/// Tenants whose listing is kept at most; beyond, the cache starts over.
const MAX_TENANTS: usize = 10_000;

/// What the upstreams serve, in routing order: each upstream's name with
/// its resources' URIs, and with its templates.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) resources: Vec<(String, Vec<String>)>,
    pub(crate) templates: Vec<(String, Vec<String>)>,
    /// Upstreams whose listing failed with nothing listed before: what
    /// they serve is not known.
    pub(crate) unknown: Vec<String>,
}

/// Templates of one upstream that routing considers; an upstream listing
/// more routes nothing by the rest (their URIs read as served by none).
const MAX_ROUTED_TEMPLATES: usize = 1_000;
/// The longest template routing considers, and the most expressions in it:
/// matching costs up to (expressions × URI length) per template, and the
/// templates are an upstream's to choose, matched before the policy and
/// the rate limits run.
const MAX_ROUTED_TEMPLATE_BYTES: usize = 2_048;
const MAX_ROUTED_TEMPLATE_EXPRESSIONS: usize = 16;

fn is_routed(template: &str) -> bool {
    template.len() <= MAX_ROUTED_TEMPLATE_BYTES
        && template.matches('{').count() <= MAX_ROUTED_TEMPLATE_EXPRESSIONS
}

impl Listing {
    /// The upstreams among those `uses` admits that serve `uri` (list it,
    /// or have a template naming it), in routing order, each once. A URI
    /// longer than the policy decides on is served by none.
    pub(crate) fn claims(&self, uri: &str, uses: impl Fn(&str) -> bool) -> Vec<&str> {
        if uri.len() > gatehouse_authz::MAX_RESOURCE_URI_BYTES {
            return Vec::new();
        }
        let mut claims: Vec<&str> = self
            .resources
            .iter()
            .filter(|(name, uris)| uses(name) && uris.iter().any(|u| u == uri))
            .map(|(name, _)| name.as_str())
            .collect();
        for (name, templates) in &self.templates {
            if claims.contains(&name.as_str()) || !uses(name) {
                continue;
            }
            let names_it = templates
                .iter()
                .take(MAX_ROUTED_TEMPLATES)
                .filter(|t| is_routed(t))
                .any(|t| t == uri || uri_template::template_matches(t, uri));
            if names_it {
                claims.push(name);
            }
        }
        claims
    }
}

/// Each upstream's names (URIs or templates) as listed now: `Err` for one
/// whose listing failed, which keeps what it listed before. The second
/// list names the upstreams that failed with nothing listed before.
pub(crate) fn merged(
    fresh: Vec<(String, Result<Vec<String>, ()>)>,
    before: Option<&[(String, Vec<String>)]>,
) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for (name, listed) in fresh {
        let names = match listed {
            Ok(names) => Some(names),
            Err(()) => before
                .and_then(|before| before.iter().find(|(known, _)| *known == name))
                .map(|(_, names)| names.clone()),
        };
        match names {
            Some(names) => known.push((name, names)),
            None => unknown.push(name),
        }
    }
    (known, unknown)
}

/// When a listing was made, under which epoch, and the listing.
type Kept = Option<(Instant, u64, Arc<Listing>)>;
type Slot = Arc<tokio::sync::Mutex<Kept>>;

#[derive(Default)]
pub(crate) struct ResourceRoutes {
    slots: Mutex<HashMap<String, Slot>>,
    /// Moved when an upstream's resources change: listings of an earlier
    /// epoch are stale (but still what a failing upstream listed last).
    epoch: AtomicU64,
}

impl ResourceRoutes {
    /// The tenant's listing: the kept one while fresh, else `list`'s,
    /// which is given the one before (for upstreams that fail to list).
    pub(crate) async fn listing<F, Fut>(&self, tenant: &str, list: F) -> Arc<Listing>
    where
        F: FnOnce(Option<Arc<Listing>>) -> Fut,
        Fut: Future<Output = Listing>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            if slots.len() >= MAX_TENANTS && !slots.contains_key(tenant) {
                slots.clear();
            }
            Arc::clone(slots.entry(tenant.to_string()).or_default())
        };
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut kept = slot.lock().await;
        if let Some((at, made_in, listing)) = kept.as_ref()
            && *made_in == epoch
            && at.elapsed() < LISTING_TTL
        {
            return Arc::clone(listing);
        }
        let before = kept.as_ref().map(|(_, _, listing)| Arc::clone(listing));
        let listing = Arc::new(list(before).await);
        *kept = Some((Instant::now(), epoch, Arc::clone(&listing)));
        listing
    }

    /// Makes every listing stale (an upstream's resources changed): the
    /// next read lists again.
    pub(crate) fn forget(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Listing {
            resources: vec![
                ("a".into(), vec!["mem://x".into()]),
                ("b".into(), vec!["mem://y".into()]),
            ],
            templates: vec![
                ("a".into(), vec!["mem://{id}".into()]),
                ("c".into(), vec!["file:///{path}".into()]),
            ],
            unknown: Vec::new(),
        }
    }

    #[test]
    fn every_upstream_that_lists_or_templates_a_uri_claims_it_once() {
        let l = listing();
        assert_eq!(l.claims("mem://x", |_| true), ["a"]);
        assert_eq!(l.claims("mem://y", |_| true), ["b", "a"]);
        assert_eq!(l.claims("file:///etc", |_| true), ["c"]);
        assert!(l.claims("other://z", |_| true).is_empty());
    }

    #[test]
    fn only_upstreams_the_tenant_uses_are_matched_and_bounds_hold() {
        let l = listing();
        assert_eq!(l.claims("mem://y", |name| name != "b"), ["a"]);
        assert!(l.claims("mem://x", |name| name != "a").is_empty());
        // A URI past the policy's bound is served by none.
        let long = format!(
            "mem://{}",
            "x".repeat(gatehouse_authz::MAX_RESOURCE_URI_BYTES)
        );
        assert!(l.claims(&long, |_| true).is_empty());
        // Templates an upstream made costly to match route nothing.
        let costly = Listing {
            templates: vec![
                ("many".into(), vec![format!("mem://{}", "{+a}".repeat(17))]),
                (
                    "long".into(),
                    vec![format!("mem://{}{{+id}}", "x".repeat(2_048))],
                ),
                ("fine".into(), vec![format!("mem://{}", "{+a}".repeat(15))]),
            ],
            ..Listing::default()
        };
        let uri = format!("mem://{}", "x".repeat(20));
        assert_eq!(costly.claims(&uri, |_| true), ["fine"]);
        // "long" would name this one, but is not considered.
        let uri = format!("mem://{}abc", "x".repeat(2_048));
        assert_eq!(costly.claims(&uri, |_| true), ["fine"]);
        // Nor is a template past the first thousand of its upstream.
        let mut templates: Vec<String> =
            (0..1_000).map(|n| format!("other://{n}/{{id}}")).collect();
        templates.push("mem://{id}".into());
        let crowded = Listing {
            templates: vec![("crowded".into(), templates)],
            ..Listing::default()
        };
        assert!(crowded.claims("mem://x", |_| true).is_empty());
    }

    #[tokio::test]
    async fn a_listing_is_kept_until_forgotten() {
        let routes = ResourceRoutes::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let list = |_| async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            listing()
        };
        for _ in 0..5 {
            routes.listing("acme", list).await;
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Each tenant has its own.
        routes.listing("globex", list).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        routes.forget();
        routes.listing("acme", list).await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refresh_is_given_the_listing_before_it() {
        let routes = ResourceRoutes::default();
        routes.listing("acme", |_| async { listing() }).await;
        routes.forget();
        let before = std::sync::Mutex::new(None);
        routes
            .listing("acme", |previous| async {
                *before.lock().unwrap() = previous.map(|p| p.resources.len());
                Listing::default()
            })
            .await;
        assert_eq!(*before.lock().unwrap(), Some(2));
    }

    #[test]
    fn an_upstream_that_fails_to_list_keeps_what_it_listed_before() {
        let before = vec![
            ("a".to_string(), vec!["mem://x".to_string()]),
            ("b".to_string(), vec!["mem://y".to_string()]),
        ];
        let fresh = vec![
            ("a".to_string(), Err(())),
            ("b".to_string(), Ok(vec!["mem://z".to_string()])),
            ("c".to_string(), Err(())),
        ];
        assert_eq!(
            merged(fresh, Some(&before)),
            (
                vec![
                    ("a".to_string(), vec!["mem://x".to_string()]),
                    ("b".to_string(), vec!["mem://z".to_string()]),
                ],
                vec!["c".to_string()]
            )
        );
        // Without a listing before, what a failing upstream serves is not
        // known.
        assert_eq!(
            merged(vec![("a".to_string(), Err(()))], None),
            (Vec::new(), vec!["a".to_string()])
        );
    }
}
