//! `tenant:NAME` upstream credentials, read from the tenant's secrets in
//! the store (`gatehouse secrets set`): each tenant reaches an upstream
//! with its own credential, and a rotated or deleted secret is used no
//! more from the next call on (a change moves the credential generation,
//! and a tenant's connection made with another value is ended:
//! `gatehouse_upstream`'s `Upstream::connection`).

use std::sync::Arc;

use gatehouse_core::SecretCipher;
use gatehouse_store::Store;
use gatehouse_upstream::{Secret, SecretError, TenantSecrets};

/// The store, and the cipher that opens what it holds (secrets are stored
/// sealed).
pub struct StoreSecrets(pub Arc<dyn Store>, pub Arc<dyn SecretCipher>);

#[async_trait::async_trait]
impl TenantSecrets for StoreSecrets {
    async fn resolve(&self, tenant: &str, name: &str) -> Result<Option<Secret>, SecretError> {
        let stored = self
            .0
            .secret(tenant, name)
            .await
            // The store's error names no value.
            .map_err(|e| SecretError::Lookup(e.to_string()))?;
        stored
            .map(|stored| {
                self.1
                    .open(tenant, name, &stored)
                    .map(Secret::new)
                    .map_err(SecretError::Lookup)
            })
            .transpose()
    }

    /// `gatehouse secrets set` and `delete` move the store's credential
    /// generation, on every instance.
    fn generation(&self) -> Option<u64> {
        self.0.credential_generation()
    }
}
