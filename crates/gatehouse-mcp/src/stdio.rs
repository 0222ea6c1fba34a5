//! MCP over stdio for local clients. The credential comes from the
//! environment; it is checked before the first message and again on every
//! request.

use std::sync::Arc;

use gatehouse_authn::Authenticator;
use gatehouse_authz::{TaskGrantError, grant_of};
use gatehouse_core::TaskGrant;

use crate::bound_grant::{self, GrantRefused};
use crate::gate1::{self, Gate1Error, RequestOrigin};
use crate::{Caller, Gateway};

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

/// Verifies the key, then serves MCP on stdin/stdout until the client
/// closes it. Fails before reading any message when the key is not valid.
pub async fn serve_stdio(
    gateway: Arc<Gateway>,
    authenticator: Arc<StdioAuthenticator>,
) -> Result<(), StdioError> {
    authenticator
        .caller()
        .await
        .map_err(StdioError::Unauthenticated)?;
    crate::sdk::serve(gateway, authenticator)
        .await
        .map_err(StdioError::Transport)
}

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("GATEHOUSE_API_KEY was not accepted: {0}")]
    Unauthenticated(Gate1Error),
    #[error("stdio transport failed: {0}")]
    Transport(std::io::Error),
}
