//! The credential of a long-lived stream, checked again while it is open.
//!
//! Gate 1 checks a request's credential once, when the request arrives. A
//! 2026-07-28 `subscriptions/listen` stream is one request that stays open
//! for as long as its client likes, and what it hears (which resource
//! changed, which catalogue) is for its principal alone. So while it is
//! open its credential is checked again whenever credentials change
//! anywhere (the credential generation moves: a key revoked, a token or
//! grant revoked, a user disabled, a role taken away) and once it expires;
//! a stream whose credential no longer authenticates the principal it was
//! opened for ends, and its client must connect again, through gate 1.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_authn::{Authenticator, AuthnError, presented_credential};
use gatehouse_core::{Clock, Principal, Timestamp};

/// How often an open stream looks at the credential generation (a `stat`
/// of the marker file on SQLite, a memory read on PostgreSQL).
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Why a stream's credential no longer holds: the audit reason.
pub(crate) type Lapse = &'static str;

/// Which long-lived stream a lapsed credential ended, for its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LapsedStream {
    /// A 2025-11-25 session, ended whole.
    Session,
    /// A session's `GET` stream; the session stays, for requests that
    /// bring a credential that holds.
    SessionStream,
    /// A 2026-07-28 `subscriptions/listen` stream.
    ListenStream,
    /// The stdio connection.
    Stdio,
}

impl LapsedStream {
    pub(crate) fn described(self) -> &'static str {
        match self {
            LapsedStream::Session => "a session",
            LapsedStream::SessionStream => "a session's GET stream",
            LapsedStream::ListenStream => "a subscriptions/listen stream",
            LapsedStream::Stdio => "the stdio connection",
        }
    }
}

pub(crate) struct StreamCredential {
    authenticator: Arc<Authenticator>,
    clock: Arc<dyn Clock>,
    /// The secret the stream was opened with: kept in memory only, never
    /// logged (no `Debug`).
    credential: String,
    principal: Arc<Principal>,
}

impl StreamCredential {
    /// The credential presented with `headers`, for the principal gate 1
    /// made of it. `None` when none was presented (authentication is off).
    pub(crate) fn presented(
        authenticator: Arc<Authenticator>,
        clock: Arc<dyn Clock>,
        parts: &http::request::Parts,
        principal: Arc<Principal>,
    ) -> Option<StreamCredential> {
        let credential = presented_credential(&parts.headers, parts.uri.query())
            .ok()
            .flatten()?
            .to_string();
        Some(StreamCredential::new(
            authenticator,
            clock,
            credential,
            principal,
        ))
    }

    /// `credential`, as gate 1 read it, for the principal it made of it.
    pub(crate) fn new(
        authenticator: Arc<Authenticator>,
        clock: Arc<dyn Clock>,
        credential: String,
        principal: Arc<Principal>,
    ) -> StreamCredential {
        StreamCredential {
            authenticator,
            clock,
            credential,
            principal,
        }
    }

    /// Returns once the credential no longer authenticates the principal
    /// (revoked, expired, its roles or grant changed, or it cannot be
    /// checked: the store is down, so fail closed), with why.
    pub(crate) async fn lapsed(&self) -> Lapse {
        // Checked at the first look whatever the generation: a change made
        // between gate 1 and the stream's opening (its subscriptions may
        // take a while) is not missed.
        let mut seen = None;
        let mut expires_at = self.principal.expires_at;
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let now = self.clock.now();
            if expires_at.is_some_and(|at| at <= now) {
                return "expired";
            }
            let current = self.authenticator.credential_generation();
            // An unknown generation (the marker unreadable, the database's
            // notifications lost) trusts nothing: check every time.
            if current.is_some() && current == seen {
                continue;
            }
            seen = current;
            match self
                .authenticator
                .authenticate(Some(&self.credential), now)
                .await
            {
                Ok(principal) if same_authority(&principal, &self.principal) => {
                    // A key rotated meanwhile expires at the end of its
                    // overlap: the stream ends with it.
                    expires_at = earlier(expires_at, principal.expires_at);
                }
                Ok(_) => return "credential_changed",
                Err(error) => return error.code(),
            }
        }
    }
}

/// The earlier of two expiry times (`None`: never).
pub(crate) fn earlier(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a failure says the check could not be made (the store, the
/// introspection endpoint or the issuer's keys unavailable), rather than
/// that the credential does not hold.
pub(crate) fn could_not_check(error: &AuthnError) -> bool {
    matches!(error, AuthnError::Unavailable(_) | AuthnError::Internal(_))
        || matches!(
            error.code(),
            "introspection_unavailable" | "issuer_keys_unavailable" | "jwks_unavailable"
        )
}

/// Whether a fresh authentication gives the stream's principal the same
/// authority: the same subject, roles, scopes and task grant.
pub(crate) fn same_authority(fresh: &Principal, opened: &Principal) -> bool {
    fresh.subject_key() == opened.subject_key()
        && fresh.roles == opened.roles
        && fresh.scopes == opened.scopes
        && fresh.task.as_ref().map(|t| &t.id) == opened.task.as_ref().map(|t| &t.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{CredentialKind, CredentialRef};

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            tenant: "default".into(),
            human: None,
            agent: "agent".into(),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: "k1".into(),
            },
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: None,
            expires_at: None,
            task: None,
            issuer: None,
        }
    }

    #[test]
    fn the_earlier_expiry_counts() {
        let (one, two) = (Some(Timestamp(1)), Some(Timestamp(2)));
        assert_eq!(earlier(one, two), one);
        assert_eq!(earlier(None, two), two);
        assert_eq!(earlier(one, None), one);
        assert_eq!(earlier(None, None), None);
    }

    #[test]
    fn a_role_taken_away_is_another_authority() {
        assert!(same_authority(
            &principal(&["admin"]),
            &principal(&["admin"])
        ));
        assert!(!same_authority(
            &principal(&["reader"]),
            &principal(&["admin"])
        ));
        let mut other = principal(&["admin"]);
        other.agent = "someone-else".into();
        assert!(!same_authority(&other, &principal(&["admin"])));
    }
}
