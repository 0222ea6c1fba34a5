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
    /// A bearer token failed validation in a way a guess can cause (it is
    /// malformed, names an unknown key, or its signature is wrong); the
    /// payload is the reason code.
    #[error("the access token is not valid")]
    InvalidToken(&'static str),
    /// A bearer token that carries our valid signature but is not accepted
    /// now or here: expired, not yet valid, for another issuer or audience,
    /// or its client or base credential is gone. It was genuinely issued,
    /// so it never counts toward a lockout. The payload is the reason code.
    #[error("the access token is not valid")]
    TokenNotAccepted(&'static str),
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
    /// A token's validation failure: a guess, or a token we issued that is
    /// not accepted now (see `JwtError::signature_was_valid`).
    pub fn from_jwt(error: &crate::jwt::JwtError) -> Self {
        if error.signature_was_valid() {
            AuthnError::TokenNotAccepted(error.code())
        } else {
            AuthnError::InvalidToken(error.code())
        }
    }

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
            AuthnError::InvalidToken(code) | AuthnError::TokenNotAccepted(code) => code,
            AuthnError::Locked { .. } => "locked",
            AuthnError::Unavailable(_) => "store_unavailable",
            AuthnError::Internal(_) => "internal_error",
        }
    }

    /// Whether this failure looks like guessing and counts toward a
    /// lockout: an unknown key id, a wrong secret, a malformed credential,
    /// a token whose signature does not verify. A missing credential is a
    /// client discovering that it must authenticate; revoked, expired and
    /// otherwise unaccepted credentials that were genuinely issued (the
    /// answer goes only to holders of the secret, or of a token we signed)
    /// are an ordinary client's life, and counting them would lock out
    /// everyone behind its address; an outage says nothing about the caller.
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
            | AuthnError::TokenNotAccepted(_)
            | AuthnError::Locked { .. }
            | AuthnError::Unavailable(_)
            | AuthnError::Internal(_) => false,
        }
    }
}
