//! `tenant:NAME` upstream credentials, read from the tenant's secrets in
//! the store (`gatehouse secrets set`), at call time: a rotated secret is
//! used from the next call on, and each tenant reaches an upstream with
//! its own credential.

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
}
