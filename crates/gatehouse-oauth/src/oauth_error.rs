//! Protocol errors. `code()` is the wire value from RFC 6749 §4.1.2.1 /
//! §5.2, RFC 7591 §3.2.2, RFC 8628 §3.5 and RFC 8707.

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
    /// A code, refresh token or device code that is unknown, expired, used,
    /// or bound to another client, redirect URI or verifier. One message
    /// for all, so the answer does not help guessing.
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    UnsupportedGrantType(String),
    #[error("{0}")]
    UnsupportedResponseType(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("the resource owner denied the request")]
    AccessDenied,
    #[error("the user has not yet approved the device")]
    AuthorizationPending,
    #[error("polling too fast; wait longer between requests")]
    SlowDown,
    #[error("the device code has expired")]
    ExpiredToken,
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// RFC 9396 §5: the task named in `authorization_details` (or `task`)
    /// cannot be granted.
    #[error("{0}")]
    InvalidAuthorizationDetails(String),
    /// An identity provider's claims older than those the user's roles last
    /// came from, saying otherwise (a sign-in racing a newer one): an
    /// `invalid_grant` with a reason of its own in the audit log.
    #[error(
        "the identity provider said something newer about this person meanwhile; sign in again"
    )]
    ClaimsSuperseded,
    /// Rate-limited or locked out; answered with 429 and `Retry-After`.
    #[error("too many requests; try again in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
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
            OAuthError::InvalidGrant(_) | OAuthError::ClaimsSuperseded => "invalid_grant",
            OAuthError::UnauthorizedClient(_) => "unauthorized_client",
            OAuthError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OAuthError::UnsupportedResponseType(_) => "unsupported_response_type",
            OAuthError::InvalidScope(_) => "invalid_scope",
            OAuthError::InvalidTarget(_) => "invalid_target",
            OAuthError::AccessDenied => "access_denied",
            OAuthError::AuthorizationPending => "authorization_pending",
            OAuthError::SlowDown => "slow_down",
            OAuthError::ExpiredToken => "expired_token",
            OAuthError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            OAuthError::InvalidClientMetadata(_) => "invalid_client_metadata",
            OAuthError::InvalidAuthorizationDetails(_) => "invalid_authorization_details",
            // RFC 6749 has no code for a rate limit; the 429 status (RFC
            // 6585) and `Retry-After` carry it. Of the registered codes,
            // `temporarily_unavailable` ("temporary overloading", RFC 6749
            // §4.1.2.1) says "later". `slow_down` is the device flow's
            // polling signal (RFC 8628 §3.5), meaningless to other
            // clients: a device-code poll over the limit gets `SlowDown`.
            OAuthError::TooManyRequests { .. } => "temporarily_unavailable",
            OAuthError::TemporarilyUnavailable(_) => "temporarily_unavailable",
            OAuthError::ServerError(_) => "server_error",
        }
    }

    /// The same error for every way a presented grant can be wrong.
    pub fn invalid_grant() -> OAuthError {
        OAuthError::InvalidGrant(
            "the grant is invalid, expired, already used, or was issued to another client".into(),
        )
    }
}
