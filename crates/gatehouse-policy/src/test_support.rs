//! What the policy's tests share.

use gatehouse_core::{CredentialKind, CredentialRef, Principal};

/// A caller of the default tenant with one role, an unscoped API key and
/// no task grant: what most decisions are asked about.
pub(crate) fn principal(role: &str) -> Principal {
    Principal {
        tenant: "default".into(),
        human: None,
        agent: "agent".into(),
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: "key1".into(),
        },
        roles: vec![role.into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    }
}
