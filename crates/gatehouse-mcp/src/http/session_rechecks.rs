//! A session's credential, checked again while the session lives.
//!
//! Every request of a session is authenticated, but the session's stream
//! (its `GET`) stays open between requests and carries what the session
//! hears (catalogue changes, updates of the resources it subscribed to).
//! So when credentials change anywhere (the credential generation moves:
//! a key or token revoked, a user disabled, a role taken away), the
//! credential each session's requests last presented is checked again; a
//! session whose credential no longer authenticates the same principal is
//! ended: unbound (its id answers 404 from the next request on), closed in
//! the SDK (its stream ends), and recorded. Its client must authenticate
//! and start a new session. A token that merely expired ends nothing: the
//! session's next request must bring a fresh one anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::router::AppState;
use crate::Caller;
use crate::stream_credential::same_authority;

/// How often the credential generation is looked at.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Runs until `shutdown`.
pub(super) fn spawn(state: Arc<AppState>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = state.authenticator.credential_generation();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
            let current = state.authenticator.credential_generation();
            // Unknown (the marker unreadable, notifications lost): check.
            if current.is_some() && current == seen {
                continue;
            }
            seen = current;
            check_sessions(&state).await;
        }
    });
}

/// Checks every session's credential once; ends those that no longer hold.
async fn check_sessions(state: &AppState) {
    for (session, presented) in state.sessions.presented() {
        let now = state.gateway.clock().now();
        // A token that merely expired is no revocation: the session's next
        // request brings a fresh one (its client refreshes), and gate 1
        // checks that. Ending the session would make the client start over.
        if presented.principal.expires_at.is_some_and(|at| at <= now) {
            continue;
        }
        let lapse = match state
            .authenticator
            .authenticate(Some(&presented.credential), now)
            .await
        {
            Ok(principal) if same_authority(&principal, &presented.principal) => continue,
            Ok(_) => "credential_changed",
            Err(error) => error.code(),
        };
        state.sessions.unbind(&session);
        state.sdk_sessions.close(&session).await;
        let caller = Caller {
            principal: presented.principal,
            session: Some(session),
            source: None,
            request_id: None,
        };
        if state
            .gateway
            .record_stream_lapsed(&caller, lapse)
            .await
            .is_err()
        {
            tracing::error!(
                reason = lapse,
                "a session was ended, and its record could not be written"
            );
        }
    }
}
