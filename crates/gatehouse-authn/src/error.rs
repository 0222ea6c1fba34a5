/// Why authentication failed. `code()` is the reason written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("no credential was presented")]
    Missing,
    #[error("the credential is malformed")]
    Malformed,
    #[error("more than one credential was presented")]
    Ambiguous,
    #[error("credentials are not accepted in the query string")]
    InQuery,
    #[error("the credential is not valid")]
    Unknown,
    #[error("the credential is not valid")]
    BadSecret,
    #[error("the credential has been revoked")]
    Revoked,
    #[error("the credential has expired")]
    Expired,
    /// A bearer token failed validation; the payload is the reason code.
    #[error("the access token is not valid")]
    InvalidToken(&'static str),
    /// Too many recent failures for this credential or source address. The
    /// message does not say which, so it tells a guesser nothing new.
    #[error("too many failed attempts; retry in {retry_after_secs} s")]
    Locked { retry_after_secs: u64 },
    /// The store could not be read: authentication fails closed.
    #[error("authentication is temporarily unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl AuthnError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthnError::Missing => "missing_credential",
            AuthnError::Malformed => "malformed_credential",
            AuthnError::Ambiguous => "ambiguous_credential",
            AuthnError::InQuery => "credential_in_query",
            AuthnError::Unknown => "unknown_credential",
            AuthnError::BadSecret => "invalid_secret",
            AuthnError::Revoked => "revoked",
            AuthnError::Expired => "expired",
            AuthnError::InvalidToken(code) => code,
            AuthnError::Locked { .. } => "locked",
            AuthnError::Unavailable(_) => "store_unavailable",
            AuthnError::Internal(_) => "internal_error",
        }
    }

    /// Whether this failure looks like guessing and counts toward a
    /// lockout. A missing credential is a client discovering that it must
    /// authenticate; revoked and expired answers go only to holders of the
    /// secret; an outage says nothing about the caller.
    pub fn counts_toward_lockout(&self) -> bool {
        match self {
            AuthnError::Unknown
            | AuthnError::BadSecret
            | AuthnError::InvalidToken(_)
            | AuthnError::Malformed => true,
            AuthnError::Missing
            | AuthnError::Ambiguous
            | AuthnError::InQuery
            | AuthnError::Revoked
            | AuthnError::Expired
            | AuthnError::Locked { .. }
            | AuthnError::Unavailable(_)
            | AuthnError::Internal(_) => false,
        }
    }
}
