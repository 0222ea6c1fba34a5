//! Local users at the login page: password checks with lockout, browser
//! sessions and logout, and CSRF tokens for the forms.

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_store::UserRecord;

use crate::OAuthError;
use crate::login_lockout::{self, Attempt, LoginLock};
use crate::password::PasswordError;
use crate::server::{AuthorizationServer, random_token, unavailable};

/// A browser stays logged in this long.
pub const SESSION_TTL_MS: i64 = 8 * 3_600_000;
/// The longest name the sign-in form takes: local names have at most 64
/// characters (`users add`), a provider's `name:subject` a few more.
pub const MAX_LOGIN_NAME_BYTES: usize = 256;

/// Usernames are compared case-insensitively and without surrounding space.
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

#[derive(Debug)]
pub enum LoginError {
    /// Wrong name or password; deliberately one answer for both.
    Invalid,
    /// Too many failures for this name, from this source or from
    /// everywhere; try again later.
    Locked(LoginLock),
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
    /// locked name is refused before any hashing. Failures are counted per
    /// name and source and per name (see `login_lockout`).
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
            self.audit_login_refusal(&username, "rate_limited", Some(source.clone()), now)
                .await?;
            return Err(LoginError::RateLimited);
        }
        // No user can have such a name (`users add` refuses them), and
        // printed raw it would forge lines in the audit output; a name of a
        // megabyte would be a megabyte in every failure count and alert
        // it reaches.
        if username.len() > MAX_LOGIN_NAME_BYTES
            || username.chars().any(gatehouse_core::is_unsafe_to_show)
        {
            self.audit_login_refusal(&username, "invalid_username", source, now)
                .await?;
            return Err(LoginError::Invalid);
        }
        let counted_source = login_lockout::login_source(source.as_deref());
        let store = self.store.as_ref();
        // The user is looked up and the password hashed even when the name
        // is unknown or disabled, so the answer takes the same time.
        let verify = async {
            let user = store.user(&username).await?;
            let matches = self
                .passwords
                .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
                .await;
            // Busy: nothing was checked, so nothing is counted against the
            // name (a flood of sign-ins must not lock its owner out).
            let matches = match matches {
                Ok(matches) => matches,
                Err(PasswordError::Busy) => {
                    return Err(gatehouse_store::StoreError::Unavailable(
                        "every password hashing slot is busy; try again in a moment".into(),
                    ));
                }
                Err(_) => false,
            };
            Ok::<_, gatehouse_store::StoreError>(
                user.filter(|u| matches && u.disabled_at.is_none()),
            )
        };
        let attempt = login_lockout::attempt(
            store,
            &self.login_turns,
            &username,
            &counted_source,
            now,
            verify,
        )
        .await
        .map_err(unavailable)?;
        match attempt {
            None => {
                self.audit_login_refusal(&username, "rate_limited", source, now)
                    .await?;
                Err(LoginError::RateLimited)
            }
            Some(Attempt::Locked(lock)) => {
                self.audit_login_refusal(&username, lock.reason(), source, now)
                    .await?;
                Err(LoginError::Locked(lock))
            }
            Some(Attempt::Verified(user)) => {
                self.audit_login(&username, "login", true, source, now)
                    .await?;
                Ok(user)
            }
            Some(Attempt::Failed(locks)) => {
                self.audit_login(&username, "invalid_credentials", false, source.clone(), now)
                    .await?;
                if let Some((until, failures)) = locks.name {
                    // An attack on the name from many places: worth an
                    // operator's attention, as the owner is locked out too.
                    // The name as Debug: typed by anyone, it may hold
                    // control characters that must not forge log lines.
                    tracing::warn!(
                        user = ?username,
                        failures,
                        "sign-in locked for every source after repeated failures"
                    );
                    let event = EventBuilder::new(AuditKind::Authentication, Outcome::Failure, now)
                        .human(&username)
                        .source(source)
                        .tool("oauth/login")
                        .decision("deny")
                        .reason("name_locked")
                        .error(format!(
                            "sign-in locked for every source until {} after {failures} failed attempts",
                            until.to_rfc3339()
                        ))
                        .build();
                    self.record(event).await?;
                }
                Err(LoginError::Invalid)
            }
        }
    }

    /// A sign-in refused before any password was checked (nothing counted
    /// toward a lockout): recorded within the source's budget
    /// ([`AuthorizationServer::record_refusal`]).
    async fn audit_login_refusal(
        &self,
        username: &str,
        reason: &str,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let event = EventBuilder::new(AuditKind::Authentication, Outcome::Failure, now)
            .human(username)
            .source(source)
            .tool("oauth/login")
            .decision("deny")
            .reason(reason)
            .build();
        self.record_refusal(event, now).await
    }

    pub(crate) async fn audit_login(
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

    /// Starts a browser session for the user as the sign-in found it;
    /// returns the cookie value. Only its keyed hash is stored. A password
    /// changed (or the user disabled) while the sign-in ran starts none.
    pub async fn create_browser_session(
        &self,
        user: &UserRecord,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        let id = random_token(32)?;
        let started = self
            .store
            .insert_browser_session(
                &self.pepper.hash(id.as_bytes()),
                &user.username,
                &user.password_hash,
                now,
                now.plus_millis(SESSION_TTL_MS),
            )
            .await
            .map_err(unavailable)?;
        if !started {
            return Err(OAuthError::InvalidGrant(
                "the account changed while you were signing in (a new password, or disabled); sign in again".into(),
            ));
        }
        Ok(id)
    }

    /// Logout: deletes the browser's session on the server, so a copy of
    /// the cookie is worth nothing afterwards, and audits it. Returns the
    /// user it belonged to (none when it had already ended).
    pub async fn end_browser_session(
        &self,
        session: Option<&str>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<Option<String>, OAuthError> {
        let Some(session) = session.filter(|s| !s.is_empty() && s.len() <= 128) else {
            return Ok(None);
        };
        let user = self
            .store
            .delete_browser_session(&self.pepper.hash(session.as_bytes()))
            .await
            .map_err(unavailable)?;
        if let Some(username) = &user {
            let event = EventBuilder::new(AuditKind::Authentication, Outcome::Success, now)
                .human(username)
                .source(source)
                .tool("oauth/logout")
                .decision("allow")
                .reason("logout")
                .build();
            self.record(event).await?;
        }
        Ok(user)
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

    /// A CSRF token for a form: a keyed hash of the browser's CSRF cookie,
    /// its session cookie (`None` for the sign-in form, which comes before
    /// one) and the form's purpose (the pending request, or the device
    /// page). A page from another browser, another session or another
    /// transaction does not fit. The session matters where cookies cross
    /// ports: on `http://127.0.0.1`, any program on another loopback port
    /// can set a CSRF cookie of its choosing in the browser (cookies are
    /// not kept apart by port) and fetch a token for it from Gatehouse,
    /// but cannot know the session it would have to be made for.
    pub fn csrf_token(&self, browser: &str, session: Option<&str>, purpose: &str) -> String {
        self.pepper
            .hash(csrf_input(browser, session, purpose).as_bytes())
    }

    pub fn check_csrf(
        &self,
        browser: Option<&str>,
        session: Option<&str>,
        purpose: &str,
        presented: &str,
    ) -> bool {
        let Some(browser) = browser.filter(|b| !b.is_empty()) else {
            return false;
        };
        self.pepper
            .verify(csrf_input(browser, session, purpose).as_bytes(), presented)
    }
}

/// What a CSRF token is the keyed hash of. Cookie values hold no
/// `\u{1f}` (they are tokens of letters, digits, `-` and `_`).
fn csrf_input(browser: &str, session: Option<&str>, purpose: &str) -> String {
    let session = session.unwrap_or_default();
    format!("gatehouse-csrf\u{1f}{browser}\u{1f}{session}\u{1f}{purpose}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised() {
        assert_eq!(normalize_username("  Alice "), "alice");
    }
}
