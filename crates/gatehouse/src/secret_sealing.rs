//! Tenant secrets stored before secrets were sealed are sealed at start-up:
//! a database dump must hold no usable secret, whenever it was stored.

use gatehouse_core::SecretCipher;
use gatehouse_store::Store;

/// Seals every stored secret that is not sealed yet, and returns how many
/// it sealed. A secret changed or deleted meanwhile (another instance, an
/// operator) is left as it is now.
pub async fn seal_stored_secrets(
    store: &dyn Store,
    cipher: &dyn SecretCipher,
) -> anyhow::Result<usize> {
    let mut sealed = 0;
    for (tenant, name, value) in store.unsealed_secrets().await? {
        let stored = cipher.seal(&tenant, &name, &value).map_err(|e| {
            anyhow::anyhow!("cannot seal the secret {name} of tenant {tenant}: {e}")
        })?;
        if store
            .replace_secret(&tenant, &name, &value, &stored)
            .await?
        {
            sealed += 1;
        }
    }
    if sealed > 0 {
        tracing::warn!(
            sealed,
            "tenant secrets stored before secrets were sealed are now sealed with the master key"
        );
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use gatehouse_oauth::MasterKey;
    use gatehouse_store::SqliteStore;

    use super::*;

    #[tokio::test]
    async fn old_plain_secrets_are_sealed_and_still_open() {
        let store = SqliteStore::in_memory().await.unwrap();
        let key = MasterKey::generate().unwrap();
        store
            .put_secret("acme", "crm_token", "s3cret")
            .await
            .unwrap();
        let already = SecretCipher::seal(&key, "acme", "db", "other").unwrap();
        store.put_secret("acme", "db", &already).await.unwrap();

        assert_eq!(seal_stored_secrets(&store, &key).await.unwrap(), 1);
        let stored = store.secret("acme", "crm_token").await.unwrap().unwrap();
        assert!(
            stored.starts_with(gatehouse_core::SEALED_PREFIX),
            "{stored}"
        );
        assert_eq!(
            SecretCipher::open(&key, "acme", "crm_token", &stored).unwrap(),
            "s3cret"
        );
        // Already sealed: untouched; a second start seals nothing.
        assert_eq!(store.secret("acme", "db").await.unwrap().unwrap(), already);
        assert_eq!(seal_stored_secrets(&store, &key).await.unwrap(), 0);
    }
}
