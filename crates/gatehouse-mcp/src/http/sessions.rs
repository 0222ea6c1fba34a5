//! Binds each MCP session to the principal that created it, and to the
//! task grant declared at `initialize`, if any. A session id presented by
//! anyone else is answered as if it did not exist.
//!
//! The table is capped twice: in total, and per principal, so that one
//! credential cannot take every slot (each session also costs the SDK a
//! worker and its buffers). Sessions idle longer than the idle timeout do
//! not count: they are forgotten here and ended in the SDK too
//! (`take_forgotten`). The SDK does not end them by itself: its idle timer
//! starts again with every notification the session is sent, so a
//! subscribed session would outlive its binding, its count and the
//! rechecks of its credential.
//!
//! A binding also holds the session's lane (`session_lane.rs`), once the
//! SDK has opened one, and when the SDK last saw the session. The SDK ends
//! a session it has not seen for the idle timeout, whatever the fast path
//! answered meanwhile, so the fast path shows it the session (`touch`)
//! when a call starts or ends and the SDK has not seen the session for an
//! eighth of that time: the session then lives as long as on the SDK's
//! own path, within that eighth.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::sync::Arc;

use gatehouse_core::{Principal, TaskGrant};

use crate::refusal::Refusal;
use crate::session_lane::SessionLane;

/// Above this many bindings, idle ones are pruned on insert.
const PRUNE_ABOVE: usize = 1024;
/// Hard cap on sessions in total: new sessions are refused beyond it.
pub const MAX_SESSIONS: usize = 100_000;
/// Default cap on the sessions of one principal (`server.max_sessions_per_principal`).
pub const MAX_SESSIONS_PER_PRINCIPAL: usize = 16;

struct Binding {
    /// Who may use the session (`Principal::session_owner_key`).
    owner: String,
    /// Whose cap the session counts against (`Principal::limit_key`: the
    /// person, across every client acting for them).
    counted_as: String,
    last_seen: Instant,
    grant: Option<TaskGrant>,
    /// When a request of the session last went to the SDK.
    sdk_seen: Instant,
    lane: Option<Arc<SessionLane>>,
    /// The credential the session's requests last presented, and the
    /// principal gate 1 made of it: checked again when credentials change,
    /// since the session's stream stays open between requests
    /// (`session_rechecks.rs`). Kept in memory only.
    presented: Option<Presented>,
    /// The request ids of the session's requests the SDK is handling
    /// (`request_key`): the SDK keeps each request's routes by id and
    /// overwrites them for a repeated id, losing the first request's answer
    /// and leaking its routes for the session's life.
    sdk_requests: HashSet<String>,
    /// Of those, the ones whose stream was closed mid-call (SEP-1699): the
    /// SDK runs them on, so their ids stay taken when their streams end.
    paused_requests: HashSet<String>,
}

/// Requests one session may have in the SDK's hands at once.
pub const MAX_SDK_REQUESTS_PER_SESSION: usize = 256;

/// Why a session's request is not handed to the SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SdkRequestRefusal {
    /// A request of the session with this id is still being handled.
    IdInFlight,
    /// `MAX_SDK_REQUESTS_PER_SESSION` are.
    TooMany,
}

/// How long a request id stays taken after its request was dropped before
/// its answer was sent (the client reset the stream or closed the
/// connection): the SDK may still be handling it, and a repeated id would
/// take its routes over. Longer than any call may run.
pub const KEPT_AFTER_DROP: Duration = Duration::from_secs(10 * 60);

/// A session's request in the SDK's hands. Its id is free again at once
/// when its answer was sent whole (`sent`), or `KEPT_AFTER_DROP` after it
/// is dropped otherwise.
pub(crate) struct SdkRequest(Option<TakenId>);

/// Frees the id when dropped.
struct TakenId {
    bindings: Arc<SessionBindings>,
    session: String,
    key: String,
}

impl Drop for TakenId {
    fn drop(&mut self) {
        if let Some(mut table) = self.bindings.table()
            && let Some(binding) = table.bindings.get_mut(&self.session)
        {
            binding.sdk_requests.remove(&self.key);
            binding.paused_requests.remove(&self.key);
        }
    }
}

impl SdkRequest {
    /// Its stream ended: the id is free, unless the stream was closed
    /// mid-call (the SDK still runs the request).
    pub(crate) fn sent(mut self) {
        let Some(taken) = self.0.take() else {
            return;
        };
        if taken.bindings.take_paused(&taken.session, &taken.key) {
            keep_for_a_while(taken);
        }
    }
}

impl Drop for SdkRequest {
    fn drop(&mut self) {
        if let Some(taken) = self.0.take() {
            keep_for_a_while(taken);
        }
    }
}

/// Frees the id `KEPT_AFTER_DROP` from now.
fn keep_for_a_while(taken: TakenId) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                tokio::time::sleep(KEPT_AFTER_DROP).await;
                drop(taken);
            });
        }
        Err(_) => drop(taken),
    }
}

/// A credential a session's request presented, and its principal; with
/// the task grant the session was declared with, when read back.
#[derive(Clone)]
pub(crate) struct Presented {
    pub(crate) credential: Arc<str>,
    pub(crate) principal: Arc<Principal>,
    pub(crate) grant: Option<TaskGrant>,
}

/// How many sessions may exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub idle_timeout: Duration,
    pub max_total: usize,
    pub max_per_principal: usize,
}

#[derive(Default)]
struct Table {
    bindings: HashMap<String, Binding>,
    /// The sessions of each subject, for the per-principal cap.
    by_subject: HashMap<String, HashSet<String>>,
    /// Sessions forgotten for idleness, for the SDK to end
    /// (`SessionBindings::take_forgotten`).
    forgotten: Vec<String>,
}

impl Table {
    fn remove(&mut self, session: &str) {
        let Some(binding) = self.bindings.remove(session) else {
            return;
        };
        if let Some(lane) = &binding.lane {
            lane.cancel_all();
        }
        if let Some(sessions) = self.by_subject.get_mut(&binding.counted_as) {
            sessions.remove(session);
            if sessions.is_empty() {
                self.by_subject.remove(&binding.counted_as);
            }
        }
    }

    /// The subject's sessions that are not idle; idle ones are forgotten.
    fn live_sessions_of(&mut self, subject: &str, idle_timeout: Duration) -> usize {
        let Some(sessions) = self.by_subject.get(subject) else {
            return 0;
        };
        let idle: Vec<String> = sessions
            .iter()
            .filter(|id| {
                self.bindings
                    .get(*id)
                    .is_none_or(|b| b.last_seen.elapsed() >= idle_timeout)
            })
            .cloned()
            .collect();
        for id in &idle {
            self.remove(id);
        }
        self.forgotten.extend(idle);
        self.by_subject.get(subject).map_or(0, HashSet::len)
    }

    fn prune_idle(&mut self, idle_timeout: Duration) {
        let idle: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, b)| b.last_seen.elapsed() >= idle_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            self.remove(id);
        }
        self.forgotten.extend(idle);
    }
}

pub struct SessionBindings {
    limits: SessionLimits,
    table: Mutex<Table>,
}

/// What a request's session id means for its principal.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionCheck {
    /// No binding: a new or unknown session (rmcp answers unknown ones with 404).
    Unbound,
    /// The caller's own session, with the task grant it was declared with.
    Owned(Option<TaskGrant>),
    /// Bound to someone else.
    Foreign,
}

/// Why a new session cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRefusal {
    /// The principal already has `max_per_principal` sessions.
    PrincipalFull { limit: usize },
    /// Every slot is taken.
    TableFull,
}

/// Whether two credentials are the same, in constant time (they are
/// secrets, even if both were verified already).
fn same_secret(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

/// Keeps the credential a request of the session presented.
fn note(binding: &mut Binding, credential: &str, principal: &Arc<Principal>) {
    if binding
        .presented
        .as_ref()
        .is_some_and(|p| same_secret(&p.credential, credential) && p.principal == *principal)
    {
        return;
    }
    binding.presented = Some(Presented {
        credential: Arc::from(credential),
        principal: Arc::clone(principal),
        grant: None,
    });
}

impl SessionBindings {
    pub fn new(limits: SessionLimits) -> Self {
        SessionBindings {
            limits,
            table: Mutex::new(Table::default()),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    /// Why a session cannot be had, as gate 2 refuses it.
    pub(crate) fn refusal_for(&self, refusal: SessionRefusal) -> Refusal {
        match refusal {
            SessionRefusal::PrincipalFull { limit } => Refusal::TooManySessions {
                limit,
                idle_timeout: self.limits.idle_timeout,
            },
            SessionRefusal::TableFull => {
                tracing::warn!("session table full; refusing new session");
                Refusal::SessionTableFull
            }
        }
    }

    /// The sessions forgotten for idleness since the last call, for the
    /// caller to end in the SDK (`authenticate::end_forgotten_sessions`).
    pub fn take_forgotten(&self) -> Vec<String> {
        self.table()
            .map(|mut table| std::mem::take(&mut table.forgotten))
            .unwrap_or_default()
    }

    fn table(&self) -> Option<MutexGuard<'_, Table>> {
        // A poisoned lock may hold a half-updated table: the callers read
        // `None` as "refuse".
        self.table.lock().ok()
    }

    /// What `session` means for `owner` (`Principal::session_owner_key`).
    /// For its owner, notes the credential the request presented, with its
    /// principal (a client refreshes its token: the newest counts; copied
    /// only when it changed).
    pub fn check(
        &self,
        session: &str,
        owner: &str,
        presented: Option<(&str, &Arc<Principal>)>,
    ) -> SessionCheck {
        let Some(mut table) = self.table() else {
            return SessionCheck::Foreign;
        };
        match table.bindings.get_mut(session) {
            None => SessionCheck::Unbound,
            Some(b) if b.owner == owner => {
                b.last_seen = Instant::now();
                if let Some((credential, principal)) = presented {
                    note(b, credential, principal);
                }
                SessionCheck::Owned(b.grant.clone())
            }
            Some(_) => SessionCheck::Foreign,
        }
    }

    /// Whether `counted_as` (`Principal::limit_key`) may start a session
    /// now, asked before the SDK makes one. `bind` asks again: two requests
    /// may pass this at once.
    pub fn may_start(&self, counted_as: &str) -> Result<(), SessionRefusal> {
        let Some(mut table) = self.table() else {
            return Err(SessionRefusal::TableFull);
        };
        self.room_for(&mut table, counted_as)
    }

    fn room_for(&self, table: &mut Table, subject: &str) -> Result<(), SessionRefusal> {
        let limits = self.limits;
        if table.live_sessions_of(subject, limits.idle_timeout) >= limits.max_per_principal {
            return Err(SessionRefusal::PrincipalFull {
                limit: limits.max_per_principal,
            });
        }
        if table.bindings.len() > PRUNE_ABOVE {
            table.prune_idle(limits.idle_timeout);
        }
        if table.bindings.len() >= limits.max_total {
            return Err(SessionRefusal::TableFull);
        }
        Ok(())
    }

    /// Binds a session the SDK has just created to its `owner`, counted
    /// against `counted_as`'s cap; on a refusal the caller must end the
    /// SDK's session.
    pub fn bind(
        &self,
        session: &str,
        owner: &str,
        counted_as: &str,
        grant: Option<TaskGrant>,
    ) -> Result<(), SessionRefusal> {
        let Some(mut table) = self.table() else {
            return Err(SessionRefusal::TableFull);
        };
        self.room_for(&mut table, counted_as)?;
        table.remove(session);
        table.bindings.insert(
            session.to_string(),
            Binding {
                owner: owner.to_string(),
                counted_as: counted_as.to_string(),
                last_seen: Instant::now(),
                grant,
                sdk_seen: Instant::now(),
                lane: None,
                presented: None,
                sdk_requests: HashSet::new(),
                paused_requests: HashSet::new(),
            },
        );
        table
            .by_subject
            .entry(counted_as.to_string())
            .or_default()
            .insert(session.to_string());
        Ok(())
    }

    pub fn unbind(&self, session: &str) {
        if let Some(mut table) = self.table() {
            table.remove(session);
        }
    }

    /// Every session with the credential its requests last presented, and
    /// the task grant it was declared with.
    pub(crate) fn presented(&self) -> Vec<(String, Presented)> {
        let Some(table) = self.table() else {
            return Vec::new();
        };
        table
            .bindings
            .iter()
            .filter_map(|(id, b)| {
                let presented = b.presented.as_ref()?;
                Some((
                    id.clone(),
                    Presented {
                        credential: Arc::clone(&presented.credential),
                        principal: Arc::clone(&presented.principal),
                        grant: b.grant.clone(),
                    },
                ))
            })
            .collect()
    }

    /// Ends a session's binding if it still rests on `credential` (a
    /// request may have brought a newer one since it was checked); whether
    /// it did.
    pub(crate) fn unbind_if_presented(&self, session: &str, credential: &str) -> bool {
        let Some(mut table) = self.table() else {
            return false;
        };
        let rests_on_it = table
            .bindings
            .get(session)
            .and_then(|b| b.presented.as_ref())
            .is_some_and(|p| same_secret(&p.credential, credential));
        if rests_on_it {
            table.remove(session);
        }
        rests_on_it
    }

    /// The SDK opened the session's lane (its `initialized` notification).
    /// Once only: a lane closed when the client initialized the session
    /// again is not replaced, so the session's calls stay with the SDK,
    /// and those still running on the old lane can still be cancelled.
    pub(crate) fn open_lane(&self, session: &str, lane: SessionLane) {
        if let Some(mut table) = self.table()
            && let Some(binding) = table.bindings.get_mut(session)
            && binding.lane.is_none()
        {
            binding.lane = Some(Arc::new(lane));
        }
    }

    /// The session's lane, if the SDK opened one.
    pub(crate) fn lane(&self, session: &str) -> Option<Arc<SessionLane>> {
        self.table()?.bindings.get(session)?.lane.clone()
    }

    /// Whether the SDK should be shown the session now (see the module's
    /// comment); if so, it counts as seen from now.
    pub(crate) fn touch_due(&self, session: &str) -> bool {
        let Some(mut table) = self.table() else {
            return false;
        };
        let Some(binding) = table.bindings.get_mut(session) else {
            return false;
        };
        if binding.sdk_seen.elapsed() < self.limits.idle_timeout / 8 {
            return false;
        }
        binding.sdk_seen = Instant::now();
        true
    }

    /// Takes request id `key` of `session` for a request handed to the SDK.
    /// An unbound session takes nothing (the SDK answers it 404).
    pub(crate) fn start_sdk_request(
        self: &Arc<Self>,
        session: &str,
        key: String,
    ) -> Result<Option<SdkRequest>, SdkRequestRefusal> {
        let Some(mut table) = self.table() else {
            return Ok(None);
        };
        let Some(binding) = table.bindings.get_mut(session) else {
            return Ok(None);
        };
        if binding.sdk_requests.contains(&key) {
            return Err(SdkRequestRefusal::IdInFlight);
        }
        if binding.sdk_requests.len() >= MAX_SDK_REQUESTS_PER_SESSION {
            return Err(SdkRequestRefusal::TooMany);
        }
        binding.sdk_requests.insert(key.clone());
        Ok(Some(SdkRequest(Some(TakenId {
            bindings: Arc::clone(self),
            session: session.to_string(),
            key,
        }))))
    }

    /// The stream of the session's request `key` was closed mid-call: the
    /// SDK runs it on, so its id stays taken when the stream ends.
    pub(crate) fn request_paused(&self, session: &str, key: String) {
        if let Some(mut table) = self.table()
            && let Some(binding) = table.bindings.get_mut(session)
            && binding.sdk_requests.contains(&key)
        {
            binding.paused_requests.insert(key);
        }
    }

    /// Whether request `key` of `session` was paused (and forgets it).
    fn take_paused(&self, session: &str, key: &str) -> bool {
        self.table()
            .and_then(|mut table| {
                table
                    .bindings
                    .get_mut(session)
                    .map(|b| b.paused_requests.remove(key))
            })
            .unwrap_or(false)
    }

    /// The SDK answered a request of the session.
    pub(crate) fn sdk_saw(&self, session: &str) {
        if let Some(mut table) = self.table()
            && let Some(binding) = table.bindings.get_mut(session)
        {
            binding.sdk_seen = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bindings(max_total: usize, max_per_principal: usize) -> SessionBindings {
        SessionBindings::new(SessionLimits {
            idle_timeout: Duration::from_secs(60),
            max_total,
            max_per_principal,
        })
    }

    /// The newest credential a session's requests presented is the one
    /// checked again; a session never given one is not listed.
    #[test]
    fn the_newest_credential_a_session_presented_is_kept() {
        let b = bindings(10, 10);
        b.bind("s1", "alice", "alice", None).unwrap();
        b.bind("s2", "alice", "alice", None).unwrap();
        let principal = Arc::new(Principal {
            tenant: "default".into(),
            human: None,
            agent: "alice".into(),
            credential: gatehouse_core::CredentialRef {
                kind: gatehouse_core::CredentialKind::ApiKey,
                id: "k".into(),
            },
            roles: vec!["reader".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        });
        b.check("s1", "alice", Some(("old-token", &principal)));
        b.check("s1", "alice", Some(("new-token", &principal)));
        b.check("gone", "alice", Some(("x", &principal)));
        let presented = b.presented();
        assert_eq!(presented.len(), 1);
        assert_eq!(presented[0].0, "s1");
        assert_eq!(&*presented[0].1.credential, "new-token");
        // Checked with the old token, the session is not ended for it.
        assert!(!b.unbind_if_presented("s1", "old-token"));
        assert_eq!(b.presented().len(), 1);
        assert!(b.unbind_if_presented("s1", "new-token"));
        assert!(b.presented().is_empty());
    }

    #[test]
    fn a_session_belongs_to_its_creator() {
        let bindings = bindings(10, 10);
        assert_eq!(bindings.check("s1", "alice", None), SessionCheck::Unbound);
        assert_eq!(bindings.bind("s1", "alice", "alice", None), Ok(()));
        assert_eq!(
            bindings.check("s1", "alice", None),
            SessionCheck::Owned(None)
        );
        assert_eq!(bindings.check("s1", "bob", None), SessionCheck::Foreign);
        bindings.unbind("s1");
        assert_eq!(bindings.check("s1", "bob", None), SessionCheck::Unbound);
    }

    #[test]
    fn a_session_keeps_the_task_grant_it_was_declared_with() {
        let bindings = bindings(10, 10);
        let grant = TaskGrant {
            id: "tg_1".into(),
            task: "research".into(),
            tools: vec!["read_file".into()],
            expires_at: gatehouse_core::Timestamp(1),
            issued_at: None,
        };
        assert_eq!(
            bindings.bind("s1", "alice", "alice", Some(grant.clone())),
            Ok(())
        );
        assert_eq!(
            bindings.check("s1", "alice", None),
            SessionCheck::Owned(Some(grant))
        );
    }

    #[test]
    fn each_principal_has_its_own_cap_and_ending_a_session_frees_a_slot() {
        let bindings = bindings(10, 2);
        assert_eq!(bindings.bind("a1", "alice", "alice", None), Ok(()));
        assert_eq!(bindings.bind("a2", "alice", "alice", None), Ok(()));
        let full = Err(SessionRefusal::PrincipalFull { limit: 2 });
        assert_eq!(bindings.may_start("alice"), full);
        assert_eq!(bindings.bind("a3", "alice", "alice", None), full);
        assert_eq!(bindings.check("a3", "alice", None), SessionCheck::Unbound);
        assert_eq!(bindings.may_start("bob"), Ok(()));
        assert_eq!(bindings.bind("b1", "bob", "bob", None), Ok(()));
        bindings.unbind("a1");
        assert_eq!(bindings.bind("a3", "alice", "alice", None), Ok(()));
    }

    /// Sessions are owned by the principal (with its task grant) and
    /// counted against the person: another client of the same person is
    /// not the owner, and takes from the same cap.
    #[test]
    fn a_session_is_owned_by_its_principal_and_counted_against_its_person() {
        let bindings = bindings(100, 2);
        assert_eq!(bindings.bind("d1", "alice/desktop", "alice", None), Ok(()));
        assert_eq!(
            bindings.check("d1", "alice/desktop/task", None),
            SessionCheck::Foreign
        );
        assert_eq!(bindings.bind("v1", "alice/vscode", "alice", None), Ok(()));
        assert_eq!(
            bindings.bind("i1", "alice/inspector", "alice", None),
            Err(SessionRefusal::PrincipalFull { limit: 2 })
        );
        assert_eq!(bindings.may_start("bob"), Ok(()));
    }

    /// An id the SDK is still handling in the session is refused, and free
    /// again once that request is done; other sessions are not affected.
    /// A request dropped before its answer was sent (the client went away)
    /// may still be in the SDK's hands: its id stays taken for a while.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_requests_id_stays_taken_for_a_while() {
        let bindings = Arc::new(bindings(100, 16));
        bindings.bind("s1", "alice", "alice", None).unwrap();
        let dropped = bindings.start_sdk_request("s1", "7".into()).unwrap();
        drop(dropped);
        assert_eq!(
            bindings.start_sdk_request("s1", "7".into()).err(),
            Some(SdkRequestRefusal::IdInFlight)
        );
        tokio::time::sleep(KEPT_AFTER_DROP + Duration::from_secs(1)).await;
        assert!(
            bindings
                .start_sdk_request("s1", "7".into())
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_request_id_in_the_sdks_hands_is_not_taken_twice() {
        let bindings = Arc::new(bindings(100, 16));
        bindings.bind("s1", "alice", "alice", None).unwrap();
        bindings.bind("s2", "alice", "alice", None).unwrap();
        let first = bindings.start_sdk_request("s1", "7".into()).unwrap();
        assert!(first.is_some());
        assert_eq!(
            bindings.start_sdk_request("s1", "7".into()).err(),
            Some(SdkRequestRefusal::IdInFlight)
        );
        assert!(
            bindings
                .start_sdk_request("s2", "7".into())
                .unwrap()
                .is_some()
        );
        first.unwrap().sent();
        // A request whose stream was closed mid-call keeps its id when the
        // stream ends (no runtime here: kept until dropped, at once).
        let paused = bindings
            .start_sdk_request("s2", "9".into())
            .unwrap()
            .unwrap();
        bindings.request_paused("s2", "9".into());
        assert!(bindings.take_paused("s2", "9"));
        bindings.request_paused("s2", "9".into());
        drop(paused);
        assert!(
            bindings
                .start_sdk_request("s1", "7".into())
                .unwrap()
                .is_some()
        );
        let held: Vec<_> = (0..MAX_SDK_REQUESTS_PER_SESSION)
            .map(|n| bindings.start_sdk_request("s1", format!("n{n}")).unwrap())
            .collect();
        assert_eq!(
            bindings.start_sdk_request("s1", "one more".into()).err(),
            Some(SdkRequestRefusal::TooMany)
        );
        drop(held);
        assert!(
            bindings
                .start_sdk_request("gone", "7".into())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_whole_table_is_capped_too() {
        let bindings = bindings(2, 5);
        assert_eq!(bindings.bind("a1", "alice", "alice", None), Ok(()));
        assert_eq!(bindings.bind("b1", "bob", "bob", None), Ok(()));
        assert_eq!(
            bindings.bind("c1", "carol", "carol", None),
            Err(SessionRefusal::TableFull)
        );
    }

    fn lane() -> SessionLane {
        crate::session_lane::tests::lane_keeping(Default::default(), Default::default())
    }

    #[test]
    fn a_lane_is_offered_once_opened_and_ends_with_the_binding() {
        let bindings = bindings(10, 10);
        bindings.open_lane("s1", lane());
        assert!(bindings.lane("s1").is_none(), "no binding, no lane");
        assert_eq!(bindings.bind("s1", "alice", "alice", None), Ok(()));
        assert!(bindings.lane("s1").is_none(), "not opened yet");
        bindings.open_lane("s1", lane());
        let open = bindings.lane("s1").unwrap();
        let running = open.start(&serde_json::json!(1)).unwrap();
        // A second `initialized` does not replace it.
        bindings.open_lane("s1", lane());
        assert!(Arc::ptr_eq(&open, &bindings.lane("s1").unwrap()));
        bindings.unbind("s1");
        assert!(bindings.lane("s1").is_none());
        // A call still running when the session ends is cancelled.
        assert!(running.token().is_cancelled());
    }

    #[test]
    fn the_sdk_is_shown_a_session_once_per_eighth_of_the_idle_timeout() {
        let bindings = bindings(10, 10);
        assert_eq!(bindings.bind("s1", "alice", "alice", None), Ok(()));
        // Just bound (the SDK saw its `initialize`): not due.
        assert!(!bindings.touch_due("s1"));
        assert!(!bindings.touch_due("unknown"));
        let quick = SessionBindings::new(SessionLimits {
            idle_timeout: Duration::ZERO,
            max_total: 10,
            max_per_principal: 10,
        });
        assert_eq!(quick.bind("s1", "alice", "alice", None), Ok(()));
        assert!(quick.touch_due("s1"));
    }

    #[test]
    fn idle_sessions_do_not_count() {
        let bindings = SessionBindings::new(SessionLimits {
            idle_timeout: Duration::ZERO,
            max_total: 10,
            max_per_principal: 1,
        });
        assert_eq!(bindings.bind("a1", "alice", "alice", None), Ok(()));
        // Idle at once: forgotten when alice starts another.
        assert_eq!(bindings.bind("a2", "alice", "alice", None), Ok(()));
        assert_eq!(bindings.check("a1", "alice", None), SessionCheck::Unbound);
        // And handed over to be ended in the SDK, once.
        assert_eq!(bindings.take_forgotten(), ["a1"]);
        assert!(bindings.take_forgotten().is_empty());
    }
}
