//! MCP over stdio for local clients. The credential comes from the
//! environment; it is checked before the first message and again on every
//! request.

use std::sync::Arc;

use gatehouse_authn::Authenticator;

use crate::gate1::{self, Gate1Error, RequestOrigin};
use crate::{Caller, Gateway};

pub struct StdioAuthenticator {
    authenticator: Arc<Authenticator>,
    gateway: Arc<Gateway>,
    key: Option<String>,
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
        }
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
