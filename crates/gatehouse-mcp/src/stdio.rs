//! MCP over stdio for local clients. The credential comes from the
//! environment; it is checked before the first message and again on every
//! request, and while the connection lasts: once the key no longer holds
//! (revoked, expired, its roles changed) or the declared task grant was
//! revoked or ran out, the connection ends, as an HTTP session would.
//! Without this, a client that subscribed to resources would go on hearing
//! about them on a key that was revoked.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_authn::Authenticator;
use gatehouse_authz::{TaskGrantError, grant_of};
use gatehouse_core::{Principal, TaskGrant};

use crate::bound_grant::{self, GrantRefused};
use crate::gate1::{self, Gate1Error, RequestOrigin};
use crate::stream_credential::{LapsedStream, could_not_check, same_authority};
use crate::{Caller, Gateway};

/// How often the connection looks at the credential generation.
const LOOK_EVERY: Duration = Duration::from_secs(1);

pub struct StdioAuthenticator {
    authenticator: Arc<Authenticator>,
    gateway: Arc<Gateway>,
    key: Option<String>,
    /// The task grant the client declared at `initialize` (one connection
    /// per process): every later request runs under it, as an HTTP
    /// session's requests run under the grant it declared.
    declared: std::sync::Mutex<Option<TaskGrant>>,
}

impl std::fmt::Debug for StdioAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdioAuthenticator { key: <redacted> }")
    }
}

impl StdioAuthenticator {
    pub fn new(
        authenticator: Arc<Authenticator>,
        gateway: Arc<Gateway>,
        key: Option<String>,
    ) -> Self {
        StdioAuthenticator {
            authenticator,
            gateway,
            key,
            declared: std::sync::Mutex::new(None),
        }
    }

    fn declared(&self) -> Option<TaskGrant> {
        self.declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Grants `task` to the connection (asked at `initialize`), refused by
    /// the task grants as over HTTP (a caller already under a grant, the
    /// connection's or its token's, may not claim another).
    pub(crate) async fn declare_task(
        &self,
        caller: &Caller,
        task: &str,
    ) -> Result<(), TaskGrantError> {
        let record = self.gateway.declare_task(caller, task).await?;
        *self
            .declared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(grant_of(&record));
        Ok(())
    }

    /// The caller under the connection's declared grant, while it is live
    /// (`bound_grant::check`); the caller unchanged without one.
    pub(crate) async fn under_declared_task(&self, caller: Caller) -> Result<Caller, GrantRefused> {
        let Some(grant) = self.declared() else {
            return Ok(caller);
        };
        bound_grant::check(&self.authenticator, &self.gateway, &caller, &grant).await?;
        let mut principal = (*caller.principal).clone();
        principal.task = Some(grant);
        Ok(Caller {
            principal: Arc::new(principal),
            ..caller
        })
    }

    /// Authenticates the environment's key now (and audits the outcome).
    pub async fn caller(&self) -> Result<Caller, Gate1Error> {
        let principal = gate1::authenticate(
            &self.authenticator,
            self.gateway.audit(),
            self.gateway.clock(),
            Ok(self.key.as_deref()),
            RequestOrigin {
                source: Some("stdio".into()),
                session: None,
            },
        )
        .await?;
        Ok(Caller {
            principal: Arc::new(principal),
            session: None,
            source: Some("stdio".into()),
            // stdio has no HTTP requests to name.
            request_id: None,
        })
    }
}

impl StdioAuthenticator {
    /// Returns, with why, once the environment's key no longer gives
    /// `opened` the same authority, or the declared task grant was revoked
    /// or ran out. Looked at whenever credentials change anywhere (the
    /// credential generation moves) and at the key's expiry. A check that
    /// cannot be made now (the store unavailable) ends nothing: requests
    /// are refused meanwhile, and it is made again a second later.
    async fn lapsed(&self, opened: &Principal) -> &'static str {
        let mut seen = None;
        let mut expires_at = opened.expires_at;
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            let now = self.gateway.clock().now();
            if expires_at.is_some_and(|at| at <= now) {
                return "expired";
            }
            let current = self.authenticator.credential_generation();
            if current.is_some() && current == seen {
                continue;
            }
            match self
                .authenticator
                .authenticate(self.key.as_deref(), now)
                .await
            {
                Ok(fresh) if same_authority(&fresh, opened) => {
                    // A key rotated meanwhile expires at the end of its
                    // overlap: the connection ends with it.
                    expires_at = crate::stream_credential::earlier(expires_at, fresh.expires_at);
                }
                Ok(_) => return "credential_changed",
                Err(error) if could_not_check(&error) => continue,
                Err(error) => return error.code(),
            }
            if let Some(grant) = self.declared() {
                if grant.expires_at <= now {
                    return "task_grant_expired";
                }
                match self.authenticator.is_revoked(&grant.id, now).await {
                    Ok(false) => {}
                    Ok(true) => return "task_grant_revoked",
                    Err(_) => continue,
                }
            }
            seen = current;
        }
    }
}

/// Verifies the key, then serves MCP on stdin/stdout until the client
/// closes it or the key no longer holds. Fails before reading any message
/// when the key is not valid.
pub async fn serve_stdio(
    gateway: Arc<Gateway>,
    authenticator: Arc<StdioAuthenticator>,
    max_message_bytes: usize,
) -> Result<(), StdioError> {
    let caller = authenticator
        .caller()
        .await
        .map_err(StdioError::Unauthenticated)?;
    // With authentication off there is no key to lapse.
    if authenticator.key.is_none() {
        return crate::sdk::serve(gateway, authenticator, max_message_bytes)
            .await
            .map_err(StdioError::Transport);
    }
    let watcher = Arc::clone(&authenticator);
    tokio::select! {
        served = crate::sdk::serve(Arc::clone(&gateway), authenticator, max_message_bytes) => {
            served.map_err(StdioError::Transport)
        }
        lapse = watcher.lapsed(&caller.principal) => {
            gateway.record_stream_lapsed(&caller, LapsedStream::Stdio, lapse).await;
            Err(StdioError::Lapsed(lapse))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("GATEHOUSE_API_KEY was not accepted: {0}")]
    Unauthenticated(Gate1Error),
    #[error("the connection was ended: GATEHOUSE_API_KEY no longer holds ({0})")]
    Lapsed(&'static str),
    #[error("stdio transport failed: {0}")]
    Transport(std::io::Error),
}
