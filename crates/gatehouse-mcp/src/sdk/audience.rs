//! Who hears of what changed at the upstreams: the clients of live
//! 2025-11-25 sessions and the open 2026-07-28 `subscriptions/listen`
//! streams (catalogue changes), and those watching a resource (its
//! updates, each only while the policy lets its caller see it).

// Logging, sampling and resources/subscribe are deprecated by SEP-2577
// (2026-07-28), and still the 2025-11-25 protocol the gateway relays.
#![allow(deprecated)]

// One module split into files: the parent's names are this file's.
use super::*;

/// How long one session or listen stream may take to accept a
/// notification. One task tells everyone of every change, so a client that
/// does not read its stream (its buffers full) would otherwise hold up
/// every other session's and stream's notifications, of every tenant, for
/// good. Everyone is told at once, each within this time; a listen stream
/// that does not take it is ended (its client may listen again).
const TAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Who is told when an upstream's catalogue changed
/// (`notifications/*/list_changed`): the clients of live 2025-11-25
/// sessions, and the open 2026-07-28 `subscriptions/listen` streams (each
/// gets the kinds its filter accepted). The notice carries nothing but
/// "list again", so everyone gets it; each then lists what it may see.
/// A resource's update (`notifications/resources/updated`) names the
/// resource: it goes only to the listen streams and the sessions watching
/// it whose principal the policy (as it is now) lets see it.
#[derive(Clone, Default)]
pub(super) struct SessionPeers(Arc<std::sync::Mutex<Audience>>);

#[derive(Default)]
struct Audience {
    /// Each session's peer and its principal's tenant (`None`: not known,
    /// told only of the changes of connections every tenant shares).
    peers: Vec<(Peer<RoleServer>, Option<Arc<str>>)>,
    listeners: Vec<Listener>,
    session_watches: Vec<SessionWatch>,
}

/// Resources one session, or one listen stream, may watch at once. Each
/// watch costs a gate-2 decision, an audit record and possibly an upstream
/// subscription: without a bound, one caller could make the gateway hold
/// any number of them.
pub(super) const MAX_WATCHES: usize = 64;

pub(super) fn too_many_watches() -> ErrorData {
    ErrorData::invalid_params(
        format!("at most {MAX_WATCHES} resources may be watched by one session or listen stream"),
        Some(json!({"reason": "too_many_subscriptions"})),
    )
}

/// A 2025-11-25 session's `resources/subscribe`, admitted by gate 2; the
/// gateway's subscription at the upstream lasts while any watch does.
pub(super) struct SessionWatch {
    pub(super) session: Arc<()>,
    pub(super) peer: Peer<RoleServer>,
    /// Who subscribed, for the policy's say on each update.
    pub(super) principal: Arc<gatehouse_core::Principal>,
    pub(super) watch: crate::gateway::ResourceWatch,
}

/// One open `subscriptions/listen` stream.
#[derive(Clone)]
pub(super) struct Listener {
    pub(super) sink: SubscriptionSink,
    /// Cancelled when the stream ends (its `listen` returns).
    pub(super) open: CancellationToken,
    /// Who listens, for the policy's say on each resource update.
    pub(super) principal: Arc<gatehouse_core::Principal>,
    /// The upstream resources it watches (upstream, URI), admitted by gate 2.
    pub(super) watched: Vec<(Arc<str>, String)>,
}

impl SessionPeers {
    fn live(&self) -> std::sync::MutexGuard<'_, Audience> {
        let mut audience = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        audience
            .peers
            .retain(|(peer, _)| !peer.is_transport_closed());
        audience
            .listeners
            .retain(|listener| !listener.open.is_cancelled());
        // An ended session's watches end with it.
        audience
            .session_watches
            .retain(|watch| !watch.peer.is_transport_closed());
        audience
    }

    /// Whether `session` may subscribe to `uri`: it watches it already, or
    /// fewer than `MAX_WATCHES` resources.
    pub(super) fn session_may_watch(&self, session: &Arc<()>, uri: &str) -> bool {
        let audience = self.live();
        let mine: Vec<_> = audience
            .session_watches
            .iter()
            .filter(|w| Arc::ptr_eq(&w.session, session))
            .collect();
        mine.len() < MAX_WATCHES || mine.iter().any(|w| w.watch.uri() == uri)
    }

    /// Adds a session's watch; a second `resources/subscribe` of the same
    /// resource by the same session changes nothing. Refused beyond
    /// `MAX_WATCHES` (checked again here: subscriptions may run at once).
    pub(super) fn add_session_watch(&self, watch: SessionWatch) -> Result<(), ErrorData> {
        let mut audience = self.live();
        let mut count = 0;
        for w in audience
            .session_watches
            .iter()
            .filter(|w| Arc::ptr_eq(&w.session, &watch.session))
        {
            if w.watch.upstream() == watch.watch.upstream() && w.watch.uri() == watch.watch.uri() {
                return Ok(());
            }
            count += 1;
        }
        if count >= MAX_WATCHES {
            return Err(too_many_watches());
        }
        audience.session_watches.push(watch);
        Ok(())
    }

    /// Ends a session's watch of `uri` (its `resources/unsubscribe`).
    pub(super) fn remove_session_watch(&self, session: &Arc<()>, uri: &str) {
        self.live()
            .session_watches
            .retain(|w| !(Arc::ptr_eq(&w.session, session) && w.watch.uri() == uri));
    }

    /// Every resource someone watches (upstream, URI), once.
    pub(super) fn watched(&self) -> Vec<(Arc<str>, String)> {
        let audience = self.live();
        let mut watched: Vec<(Arc<str>, String)> = audience
            .session_watches
            .iter()
            .map(|w| (w.watch.upstream().clone(), w.watch.uri().to_string()))
            .chain(
                audience
                    .listeners
                    .iter()
                    .flat_map(|l| l.watched.iter().cloned()),
            )
            .collect();
        watched.sort();
        watched.dedup();
        watched
    }

    pub(super) fn add(&self, peer: Peer<RoleServer>, tenant: Option<Arc<str>>) {
        self.live().peers.push((peer, tenant));
    }

    /// Adds a listen stream, told of changes until its `open` is cancelled.
    pub(super) fn add_listener(&self, listener: Listener) {
        self.live().listeners.push(listener);
    }

    pub(super) async fn announce(&self, change: &ListChanged, policy: &Policy) {
        if change.kind == ChangeKind::ResourceUpdated {
            if let Some(uri) = &change.uri {
                self.resource_updated(&change.upstream, uri, change.tenant.as_deref(), policy)
                    .await;
            }
            return;
        }
        let kind = change.kind;
        // A change one tenant's own connection reported (a reconnection
        // after its secret was rotated, its catalogue) is that tenant's:
        // told to others, it says what that tenant does.
        let (peers, listeners) = {
            let audience = self.live();
            let peers: Vec<Peer<RoleServer>> = audience
                .peers
                .iter()
                .filter(|(_, tenant)| session_hears(tenant.as_deref(), change.tenant.as_deref()))
                .map(|(peer, _)| peer.clone())
                .collect();
            let listeners: Vec<Listener> = audience
                .listeners
                .iter()
                .filter(|l| hears(&l.principal, change.tenant.as_deref()))
                .cloned()
                .collect();
            (peers, listeners)
        };
        let sessions = peers.iter().map(|peer| async move {
            let sent = tokio::time::timeout(TAKE_WITHIN, async {
                match kind {
                    ChangeKind::Tools => peer.notify_tool_list_changed().await,
                    ChangeKind::Prompts => peer.notify_prompt_list_changed().await,
                    ChangeKind::Resources => peer.notify_resource_list_changed().await,
                    ChangeKind::Reconnected => {
                        let tools = peer.notify_tool_list_changed().await;
                        let prompts = peer.notify_prompt_list_changed().await;
                        tools
                            .and(prompts)
                            .and(peer.notify_resource_list_changed().await)
                    }
                    ChangeKind::ResourceUpdated => Ok(()),
                }
            })
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "could not tell a session that a list changed");
                }
                Err(_) => tracing::warn!("a session did not take a list change in time; skipped"),
            }
        });
        let streams = listeners.iter().map(|listener| async move {
            let (tools, prompts, resources) = match kind {
                ChangeKind::Tools => (true, false, false),
                ChangeKind::Prompts => (false, true, false),
                ChangeKind::Resources => (false, false, true),
                ChangeKind::Reconnected => (true, true, true),
                ChangeKind::ResourceUpdated => (false, false, false),
            };
            let sink = &listener.sink;
            let accepted = sink.accepted();
            // The sink refuses what its filter did not accept; asked only
            // for what it did.
            let told = tokio::time::timeout(TAKE_WITHIN, async {
                if tools && accepted.tools_list_changed == Some(true) {
                    listened(sink.notify_tool_list_changed().await);
                }
                if prompts && accepted.prompts_list_changed == Some(true) {
                    listened(sink.notify_prompt_list_changed().await);
                }
                if resources && accepted.resources_list_changed == Some(true) {
                    listened(sink.notify_resource_list_changed().await);
                }
            })
            .await;
            if told.is_err() {
                not_taken(listener);
            }
        });
        futures::future::join(
            futures::future::join_all(sessions),
            futures::future::join_all(streams),
        )
        .await;
    }
}

impl SessionPeers {
    /// Tells the listen streams watching `uri` of `upstream` that it
    /// changed, each only if the policy lets its principal see it now (a
    /// reloaded policy may have taken it away since the stream began), and,
    /// when one tenant's connection said so, only that tenant's.
    async fn resource_updated(
        &self,
        upstream: &Arc<str>,
        uri: &str,
        tenant: Option<&str>,
        policy: &Policy,
    ) {
        let (listeners, sessions) = {
            let audience = self.live();
            let sessions: Vec<_> = audience
                .session_watches
                .iter()
                .filter(|w| w.watch.upstream() == upstream && w.watch.uri() == uri)
                .map(|w| (w.peer.clone(), w.principal.clone()))
                .collect();
            (audience.listeners.clone(), sessions)
        };
        let target = Target::upstream(Kind::Resource, uri, upstream);
        let sessions = sessions
            .iter()
            .filter(|(_, principal)| {
                hears(principal, tenant) && policy.visibility(principal, &target) == Access::Allow
            })
            .map(|(peer, _)| async move {
                let sent = tokio::time::timeout(
                    TAKE_WITHIN,
                    peer.notify_resource_updated(ResourceUpdatedNotificationParam::new(uri)),
                )
                .await;
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "could not tell a session that a resource changed");
                    }
                    Err(_) => {
                        tracing::warn!("a session did not take a resource update in time; skipped");
                    }
                }
            });
        let streams = listeners
            .iter()
            .filter(|listener| {
                listener
                    .watched
                    .iter()
                    .any(|(from, watched)| from == upstream && watched == uri)
                    && hears(&listener.principal, tenant)
                    && policy.visibility(&listener.principal, &target) == Access::Allow
            })
            .map(|listener| async move {
                let told =
                    tokio::time::timeout(TAKE_WITHIN, listener.sink.notify_resource_updated(uri))
                        .await;
                match told {
                    Ok(sent) => listened(sent),
                    Err(_) => not_taken(listener),
                }
            });
        futures::future::join(
            futures::future::join_all(sessions),
            futures::future::join_all(streams),
        )
        .await;
    }
}

/// Whether a principal hears of what a connection said: every tenant of
/// the shared connection, only its own tenant of a tenant's.
fn hears(principal: &gatehouse_core::Principal, tenant: Option<&str>) -> bool {
    tenant.is_none_or(|tenant| principal.tenant == tenant)
}

/// [`hears`] for a session whose principal's tenant is `session` (`None`:
/// not known, so only what every tenant hears).
fn session_hears(session: Option<&str>, tenant: Option<&str>) -> bool {
    tenant.is_none_or(|tenant| session == Some(tenant))
}

/// Ends a listen stream that did not take a notification in time.
fn not_taken(listener: &Listener) {
    tracing::warn!("a listen stream did not take a notification in time; ended");
    listener.open.cancel();
}

/// Logs a notification a listen stream could not take (it may just have
/// ended: it is forgotten at the next change).
fn listened(sent: Result<(), SubscriptionSendError>) {
    if let Err(e) = sent {
        tracing::debug!(error = %e, "could not notify a listen stream");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_connection_is_heard_by_that_tenant_only() {
        let acme = gatehouse_core::Principal {
            tenant: "acme".into(),
            human: None,
            agent: "agent".into(),
            credential: gatehouse_core::CredentialRef {
                kind: gatehouse_core::CredentialKind::ApiKey,
                id: "k".into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        };
        assert!(hears(&acme, None));
        assert!(hears(&acme, Some("acme")));
        assert!(!hears(&acme, Some("globex")));
    }

    /// A list change one tenant's own connection reported (its catalogue,
    /// a reconnection after its secret was rotated) was told to every
    /// session: to others it says what that tenant does.
    #[test]
    fn a_session_hears_only_its_tenants_connections_and_the_shared_one() {
        assert!(session_hears(Some("acme"), None));
        assert!(session_hears(None, None));
        assert!(session_hears(Some("acme"), Some("acme")));
        assert!(!session_hears(Some("globex"), Some("acme")));
        assert!(!session_hears(None, Some("acme")));
    }
}
