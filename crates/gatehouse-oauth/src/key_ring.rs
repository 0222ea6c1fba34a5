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

/// Whether `record` is a signing key Gatehouse made: its private half,
/// sealed with `master` and bound to its kid, opens, and is the key the
/// record publishes under that kid (the key's thumbprint).
pub fn proves(master: &MasterKey, record: &SigningKeyRecord) -> bool {
    unseal(master, record).is_ok_and(|key| publishes(&key, record))
}

/// Whether `record` publishes `key` (its unsealed private half) under the
/// key's own kid.
fn publishes(key: &SigningKey, record: &SigningKeyRecord) -> bool {
    serde_json::from_str::<crate::PublicJwk>(&record.public_jwk)
        .is_ok_and(|published| key.kid() == record.kid && published == key.public_jwk())
}

/// [`proves`] as the resource server's validator takes it.
pub fn signing_key_proof(master: MasterKey) -> gatehouse_authn::SigningKeyProof {
    Arc::new(move |record: &SigningKeyRecord| proves(&master, record))
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

    /// Whether `record` is a key Gatehouse made (see [`proves`]). A key
    /// once unsealed is kept, so the public JWKS endpoint, which anyone
    /// may ask, costs a comparison per key, not an unsealing.
    pub(crate) fn proves(&self, record: &SigningKeyRecord) -> bool {
        let cached = self
            .unsealed
            .lock()
            .ok()
            .and_then(|unsealed| unsealed.get(&record.kid).cloned());
        let key = match cached {
            Some(key) => key,
            None => match unseal(&self.master, record) {
                Ok(key) => {
                    let key = Arc::new(key);
                    if let Ok(mut unsealed) = self.unsealed.lock() {
                        unsealed.insert(record.kid.clone(), Arc::clone(&key));
                    }
                    key
                }
                Err(_) => return false,
            },
        };
        publishes(&key, record)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_signing_key;

    /// A key Gatehouse made is proven; one written into the database by
    /// someone without the master key is not, whether its sealed half is
    /// junk, another key's, or sealed with another master key.
    #[test]
    fn only_keys_sealed_with_the_master_key_and_publishing_themselves_are_proven() {
        let master = MasterKey::generate().unwrap();
        let genuine = new_signing_key(&master, Timestamp(0), Timestamp(0)).unwrap();
        assert!(proves(&master, &genuine));

        let attackers = SigningKey::generate().unwrap();
        let planted = SigningKeyRecord {
            kid: attackers.kid().to_string(),
            public_jwk: serde_json::to_string(&attackers.public_jwk()).unwrap(),
            sealed_pkcs8: b"junk".to_vec(),
            ..genuine.clone()
        };
        assert!(!proves(&master, &planted));
        // A genuine sealed half beside another key's public half.
        let swapped = SigningKeyRecord {
            public_jwk: planted.public_jwk.clone(),
            ..genuine.clone()
        };
        assert!(!proves(&master, &swapped));
        // Sealed whole, but with a master key the servers do not have.
        let other_master = MasterKey::generate().unwrap();
        let elsewhere = new_signing_key(&other_master, Timestamp(0), Timestamp(0)).unwrap();
        assert!(!proves(&master, &elsewhere));
    }
}
