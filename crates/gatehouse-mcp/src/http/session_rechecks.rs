//! A session's credential, checked again while the session lives.
//!
//! Every request of a session is authenticated, but the session's stream
//! (its `GET`) stays open between requests and carries what the session
//! hears (catalogue changes, updates of the resources it subscribed to).
//! So when credentials change anywhere (the credential generation moves:
//! a key or token revoked, a user disabled, a role taken away, a task
//! grant revoked), the credential each session's requests last presented,
//! and the task grant the session was declared with, are checked again; a
//! session whose credential no longer authenticates the same principal, or
//! whose grant was revoked or ran out, is ended: unbound (its id answers
//! 404 from the next request on), closed in the SDK (its stream ends), and
//! recorded. Its client must authenticate and start a new session.
//!
//! What ends no session: a token that merely expired (the session's next
//! request must bring a fresh one anyway; the session's `GET` stream ends
//! with it, `session_stream.rs`), and a check that could not be
//! made (the store, the identity provider's keys or its introspection
//! endpoint unavailable): gate 1 refuses the session's requests meanwhile,
//! and ending every session on a database blip would make every client
//! start over. Such a session is checked again at the next look.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_authn::AuthnError;
use gatehouse_core::Principal;
use tokio_util::sync::CancellationToken;

use super::router::AppState;
use crate::Caller;
use crate::stream_credential::{LapsedStream, could_not_check, same_authority};

/// How long a lapsed session's record may take before the session is ended
/// all the same.
const RECORD_BEFORE_CLOSE: Duration = Duration::from_secs(2);

/// How often the credential generation is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often sessions are checked while checks cannot be made, or the
/// generation is unknown (each check then reads the store).
const LOOK_WHILE_UNSURE: Duration = Duration::from_secs(5);

/// Runs until `shutdown`.
pub(super) fn spawn(state: Arc<AppState>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = state.authenticator.credential_generation();
        let mut wait = LOOK_EVERY;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let current = state.authenticator.credential_generation();
            if current.is_some() && current == seen {
                continue;
            }
            let decided = check_sessions(&state, &shutdown).await;
            // Unknown, or undecided for some: looked at again, less often.
            (seen, wait) = match (current, decided) {
                (Some(_), true) => (current, LOOK_EVERY),
                _ => (None, LOOK_WHILE_UNSURE),
            };
        }
    });
}

/// What checking a credential or a grant said.
#[derive(Clone, Copy)]
enum Verdict {
    Holds,
    /// Ended, with the reason.
    Lapsed(&'static str),
    /// Could not be checked now.
    Unsure,
}

/// Checks every session once; ends those whose credential or grant no
/// longer holds. `false` when some could not be checked.
async fn check_sessions(state: &AppState, shutdown: &CancellationToken) -> bool {
    let mut decided = true;
    // A key may back many sessions: each credential is checked once.
    let mut checked: HashMap<Arc<str>, Result<Principal, AuthnError>> = HashMap::new();
    for (session, presented) in state.sessions.presented() {
        if shutdown.is_cancelled() {
            return decided;
        }
        let now = state.gateway.clock().now();
        if presented.principal.expires_at.is_some_and(|at| at <= now) {
            continue;
        }
        let fresh = match checked.get(&presented.credential) {
            Some(fresh) => fresh.clone(),
            None => {
                let fresh = state
                    .authenticator
                    .authenticate(Some(&presented.credential), now)
                    .await;
                checked.insert(Arc::clone(&presented.credential), fresh.clone());
                fresh
            }
        };
        let mut verdict = match fresh {
            Ok(principal) if same_authority(&principal, &presented.principal) => Verdict::Holds,
            Ok(_) => Verdict::Lapsed("credential_changed"),
            Err(error) if could_not_check(&error) => Verdict::Unsure,
            Err(error) => Verdict::Lapsed(error.code()),
        };
        if let (Verdict::Holds, Some(grant)) = (verdict, &presented.grant) {
            verdict = if grant.expires_at <= now {
                Verdict::Lapsed("task_grant_expired")
            } else {
                match state.authenticator.is_revoked(&grant.id, now).await {
                    Ok(false) => Verdict::Holds,
                    Ok(true) => Verdict::Lapsed("task_grant_revoked"),
                    Err(_) => Verdict::Unsure,
                }
            };
        }
        let lapse = match verdict {
            Verdict::Holds => continue,
            Verdict::Unsure => {
                decided = false;
                continue;
            }
            Verdict::Lapsed(lapse) => lapse,
        };
        // Only if the session still rests on what was checked: a request
        // may have brought a newer credential meanwhile, or ended it.
        if !state
            .sessions
            .unbind_if_presented(&session, &presented.credential)
        {
            continue;
        }
        // Recorded before its stream ends: whoever sees the stream end
        // finds the reason on record. A stalled audit log does not keep
        // the stream open: the session is ended after a moment anyway (the
        // record is still written when the log takes it).
        let caller = Caller {
            principal: presented.principal,
            session: Some(session.clone()),
            source: None,
            request_id: None,
        };
        let gateway = Arc::clone(&state.gateway);
        let record = tokio::spawn(async move {
            gateway
                .record_stream_lapsed(&caller, LapsedStream::Session, lapse)
                .await;
        });
        let _ = tokio::time::timeout(RECORD_BEFORE_CLOSE, record).await;
        state.sdk_sessions.close(&session).await;
    }
    decided
}
