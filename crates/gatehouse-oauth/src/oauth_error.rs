//! Token-endpoint errors. `code()` is the RFC 6749 §5.2 / RFC 8707 wire value.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(String),
    /// Unknown client, wrong secret or revoked client: deliberately one message.
    #[error("client authentication failed")]
    InvalidClient {
        /// The client tried HTTP Basic, so the answer carries a Basic challenge.
        basic: bool,
    },
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    /// Storage or the audit log is unavailable: nothing was issued.
    #[error("the authorization server is temporarily unavailable")]
    TemporarilyUnavailable(String),
    #[error("internal error")]
    ServerError(String),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::InvalidRequest(_) => "invalid_request",
            OAuthError::InvalidClient { .. } => "invalid_client",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
            OAuthError::ServerError(_) => "server_error",
        }
    }
}
