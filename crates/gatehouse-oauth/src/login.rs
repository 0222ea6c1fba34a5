//! Local users at the login page: password checks with lockout, browser
//! sessions, and CSRF tokens for the login, consent and device forms.

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_store::UserRecord;

use crate::OAuthError;
use crate::server::{AuthorizationServer, random_token, unavailable};

/// Failures within this window count toward a lockout.
pub const FAILURE_WINDOW_MS: i64 = 15 * 60_000;
/// Failures before the first lockout.
pub const LOCK_AFTER_FAILURES: u32 = 5;
const FIRST_LOCK_MS: i64 = 30_000;
const MAX_LOCK_MS: i64 = 15 * 60_000;
/// A browser stays logged in this long.
pub const SESSION_TTL_MS: i64 = 8 * 3_600_000;

/// How long a name is locked after `failures` failures: nothing below the
/// threshold, then 30 s doubling per further failure, at most 15 minutes.
pub fn lockout_ms(failures: u32) -> i64 {
    if failures < LOCK_AFTER_FAILURES {
        return 0;
    }
    let doublings = (failures - LOCK_AFTER_FAILURES).min(10);
    (FIRST_LOCK_MS << doublings).min(MAX_LOCK_MS)
}

/// Usernames are compared case-insensitively and without surrounding space.
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

#[derive(Debug)]
pub enum LoginError {
    /// Wrong name or password; deliberately one answer for both.
    Invalid,
    /// Too many failures for this name; try again later.
    Locked,
    /// Too many attempts from this address.
    RateLimited,
    Server(OAuthError),
}

impl From<OAuthError> for LoginError {
    fn from(e: OAuthError) -> Self {
        LoginError::Server(e)
    }
}

impl AuthorizationServer {
    /// Checks a name and password. The password is hashed even for an
    /// unknown or disabled name, so the answer takes the same time; a
    /// locked name is refused before any hashing.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<UserRecord, LoginError> {
        let username = normalize_username(username);
        if let Some(source) = &source
            && !self.login_attempts.check(source, now)
        {
            self.audit_login(&username, "rate_limited", false, Some(source.clone()), now)
                .await?;
            return Err(LoginError::RateLimited);
        }
        // No user can have such a name (`users add` refuses them), and
        // printed raw it would forge lines in the audit output.
        if username.chars().any(gatehouse_core::is_unsafe_to_show) {
            self.audit_login(&username, "invalid_username", false, source, now)
                .await?;
            return Err(LoginError::Invalid);
        }
        let throttle = self
            .store
            .login_throttle(&username)
            .await
            .map_err(unavailable)?;
        if throttle.is_some_and(|t| t.locked_until > now) {
            self.audit_login(&username, "locked", false, source, now)
                .await?;
            return Err(LoginError::Locked);
        }
        let user = self.store.user(&username).await.map_err(unavailable)?;
        let matches = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .unwrap_or(false);
        match user {
            Some(user) if matches && user.disabled_at.is_none() => {
                self.store
                    .clear_login_failures(&username)
                    .await
                    .map_err(unavailable)?;
                self.audit_login(&username, "login", true, source, now)
                    .await?;
                Ok(user)
            }
            _ => {
                let failures = self
                    .store
                    .record_login_failure(&username, now, FAILURE_WINDOW_MS)
                    .await
                    .map_err(unavailable)?;
                let lock = lockout_ms(failures);
                if lock > 0 {
                    self.store
                        .lock_login(&username, now.plus_millis(lock))
                        .await
                        .map_err(unavailable)?;
                }
                self.audit_login(&username, "invalid_credentials", false, source, now)
                    .await?;
                Err(LoginError::Invalid)
            }
        }
    }

    async fn audit_login(
        &self,
        username: &str,
        reason: &str,
        success: bool,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let outcome = if success {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let event = EventBuilder::new(AuditKind::Authentication, outcome, now)
            .human(username)
            .source(source)
            .tool("oauth/login")
            .decision(if success { "allow" } else { "deny" })
            .reason(reason)
            .build();
        self.record(event).await
    }

    /// Starts a browser session; returns the cookie value. Only its keyed
    /// hash is stored.
    pub async fn create_browser_session(
        &self,
        username: &str,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        let id = random_token(32)?;
        self.store
            .insert_browser_session(
                &self.pepper.hash(id.as_bytes()),
                username,
                now,
                now.plus_millis(SESSION_TTL_MS),
            )
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    /// The logged-in user of a browser, if its session is live and the
    /// user is not disabled.
    pub async fn browser_user(
        &self,
        session: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<UserRecord>, OAuthError> {
        let Some(session) = session.filter(|s| !s.is_empty() && s.len() <= 128) else {
            return Ok(None);
        };
        let Some(username) = self
            .store
            .browser_session(&self.pepper.hash(session.as_bytes()), now)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        self.store.user(&username).await.map_err(unavailable)
    }

    /// A CSRF token for a form: a keyed hash of the browser's CSRF cookie
    /// and the form's purpose (the pending request, or the device page).
    /// A page from another browser or another transaction does not fit.
    pub fn csrf_token(&self, browser: &str, purpose: &str) -> String {
        self.pepper
            .hash(format!("gatehouse-csrf\u{1f}{browser}\u{1f}{purpose}").as_bytes())
    }

    pub fn check_csrf(&self, browser: Option<&str>, purpose: &str, presented: &str) -> bool {
        let Some(browser) = browser.filter(|b| !b.is_empty()) else {
            return false;
        };
        self.pepper.verify(
            format!("gatehouse-csrf\u{1f}{browser}\u{1f}{purpose}").as_bytes(),
            presented,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_starts_at_the_threshold_and_doubles_to_a_cap() {
        assert_eq!(lockout_ms(4), 0);
        assert_eq!(lockout_ms(5), 30_000);
        assert_eq!(lockout_ms(6), 60_000);
        assert_eq!(lockout_ms(9), 480_000);
        assert_eq!(lockout_ms(10), MAX_LOCK_MS);
        assert_eq!(lockout_ms(u32::MAX), MAX_LOCK_MS);
    }

    #[test]
    fn usernames_are_normalised() {
        assert_eq!(normalize_username("  Alice "), "alice");
    }
}
