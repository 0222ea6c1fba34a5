//! The one error type every tool returns; `code()` is what the client and
//! the audit log see.

use gatehouse_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments are missing, of the wrong type or out of range.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The call is well-formed but crosses a boundary (sandbox escape, SSRF,
    /// host not allowlisted). The message never contains a secret.
    #[error("refused: {0}")]
    Refused(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The tool ran and failed (I/O error, HTTP error, evaluation error).
    #[error("tool failed: {0}")]
    Failed(String),
    /// A dependency (storage) is down; the call fails closed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl ToolError {
    pub fn code(&self) -> &'static str {
        match self {
            ToolError::InvalidArguments(_) => "invalid_arguments",
            ToolError::Refused(_) => "refused",
            ToolError::NotFound(_) => "not_found",
            ToolError::Failed(_) => "failed",
            ToolError::Unavailable(_) => "unavailable",
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ToolError::InvalidArguments(message.into())
    }

    pub(crate) fn refused(message: impl Into<String>) -> Self {
        ToolError::Refused(message.into())
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        ToolError::Failed(message.into())
    }
}

impl From<StoreError> for ToolError {
    /// Every storage problem fails closed. The detail goes to the operator's
    /// log only: it can name database paths, which the client has no need for.
    fn from(err: StoreError) -> Self {
        tracing::warn!(error = %err, "tool storage call failed");
        ToolError::Unavailable("storage is unavailable; the call was not carried out".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (ToolError::invalid("x"), "invalid_arguments"),
            (ToolError::refused("x"), "refused"),
            (ToolError::NotFound("x".into()), "not_found"),
            (ToolError::failed("x"), "failed"),
            (ToolError::Unavailable("x".into()), "unavailable"),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code);
        }
    }

    #[test]
    fn store_errors_fail_closed_without_detail() {
        let err = ToolError::from(StoreError::Unavailable(
            "/secret/path/db.sqlite locked".into(),
        ));
        assert_eq!(err.code(), "unavailable");
        assert!(!err.to_string().contains("/secret/path"));
    }
}
