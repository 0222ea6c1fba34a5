//! The signing keys of one process: which key signs now (by the stored
//! schedule), each unsealed once with the master key. The authorization
//! server signs its tokens with it; a server without the authorization
//! server (authentication off, or `[oauth] enabled = false`) signs its
//! audit checkpoints with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_core::Timestamp;
use gatehouse_store::{SigningKeyRecord, Store, signing_schedule};
use serde::Serialize;

use gatehouse_authn::REPLACED_KEY_TRUST_MS;

use crate::server::{add_signing_key, unavailable};
use crate::{MasterKey, OAuthError, SigningKey};

pub struct KeyRing {
    store: Arc<dyn Store>,
    master: MasterKey,
    /// Unsealed signing keys by kid, so each is unsealed once.
    unsealed: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// Stored key records, read again only when the credential generation
    /// moves (a key was added), not on every token or JWKS request.
    records: Mutex<Option<(u64, Arc<Vec<SigningKeyRecord>>)>>,
}

fn unseal(master: &MasterKey, record: &SigningKeyRecord) -> Result<SigningKey, OAuthError> {
    let pkcs8 = zeroize::Zeroizing::new(
        master
            .open(&record.sealed_pkcs8, record.kid.as_bytes())
            .map_err(|e| {
                OAuthError::ServerError(format!(
                    "signing key {} cannot be unsealed with this master key: {e}",
                    record.kid
                ))
            })?,
    );
    SigningKey::from_pkcs8(&pkcs8).map_err(|e| OAuthError::ServerError(e.to_string()))
}

impl KeyRing {
    pub fn new(store: Arc<dyn Store>, master: MasterKey) -> KeyRing {
        KeyRing {
            store,
            master,
            unsealed: Mutex::new(HashMap::new()),
            records: Mutex::new(None),
        }
    }

    /// Adds a key that signs from now when none does (a first start);
    /// returns the key it added, for the caller's audit record.
    pub async fn ensure_signer(
        &self,
        now: Timestamp,
    ) -> Result<Option<SigningKeyRecord>, OAuthError> {
        let records = self.store.signing_keys().await.map_err(unavailable)?;
        if signing_schedule(&records, now, REPLACED_KEY_TRUST_MS)
            .signer
            .is_some()
        {
            return Ok(None);
        }
        add_signing_key(&self.store, &self.master, now, now)
            .await
            .map(Some)
    }

    pub(crate) async fn records(&self) -> Result<Arc<Vec<SigningKeyRecord>>, OAuthError> {
        let generation = self.store.credential_generation();
        if let Some(g) = generation
            && let Ok(cache) = self.records.lock()
            && let Some((cached, records)) = cache.as_ref()
            && *cached == g
        {
            return Ok(Arc::clone(records));
        }
        let records = Arc::new(self.store.signing_keys().await.map_err(unavailable)?);
        if let Some(g) = generation
            && let Ok(mut cache) = self.records.lock()
        {
            *cache = Some((g, Arc::clone(&records)));
        }
        Ok(records)
    }

    /// The key that signs now (it changes when a rotated key activates).
    pub(crate) async fn signer(&self, now: Timestamp) -> Result<Arc<SigningKey>, OAuthError> {
        let records = self.records().await?;
        let schedule = signing_schedule(&records, now, REPLACED_KEY_TRUST_MS);
        let record = schedule
            .signer
            // A replaced key never signs again: fail closed until an
            // operator adds one (`keys revoke-signing` never leaves this).
            .ok_or_else(|| {
                OAuthError::ServerError(
                    "no signing key is active; add one with `gatehouse keys rotate-signing --publish-ahead 0s`".into(),
                )
            })?;
        if let Ok(unsealed) = self.unsealed.lock()
            && let Some(key) = unsealed.get(&record.kid)
        {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(unseal(&self.master, record)?);
        if let Ok(mut unsealed) = self.unsealed.lock() {
            unsealed.insert(record.kid.clone(), Arc::clone(&key));
        }
        Ok(key)
    }

    /// A compact JWS of `claims` with header `typ`, by the key that signs now.
    pub async fn sign_typed<C: Serialize + Sync>(
        &self,
        claims: &C,
        typ: &str,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        self.signer(now)
            .await?
            .sign_typed(claims, typ)
            .map_err(|e| OAuthError::ServerError(e.to_string()))
    }
}
