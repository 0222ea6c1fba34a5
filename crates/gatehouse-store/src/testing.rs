//! A store that is always down, for tests that check Gatehouse fails
//! closed. Compiled only with the `testing` feature.

use async_trait::async_trait;
use gatehouse_core::{AuditEvent, Timestamp};

use crate::{
    ApiKeyRecord, AuditQuery, AuditRow, ClientRecord, SigningKeyRecord, Store, StoreError,
    StoreResult,
};

/// A store whose every call fails, to check that tools fail closed.
pub struct DownStore;

fn down<T>() -> StoreResult<T> {
    Err(StoreError::Unavailable(
        "database is locked at /var/lib/gatehouse/db".into(),
    ))
}

#[async_trait]
impl Store for DownStore {
    async fn insert_api_key(&self, _: &ApiKeyRecord) -> StoreResult<()> {
        down()
    }
    async fn api_key(&self, _: &str) -> StoreResult<Option<ApiKeyRecord>> {
        down()
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        down()
    }
    async fn count_api_keys(&self) -> StoreResult<u64> {
        down()
    }
    async fn revoke_api_key(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn rotate_api_key(&self, _: &str, _: &ApiKeyRecord, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn touch_api_key(&self, _: &str, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn insert_client(&self, _: &ClientRecord) -> StoreResult<()> {
        down()
    }
    async fn client(&self, _: &str) -> StoreResult<Option<ClientRecord>> {
        down()
    }
    async fn list_clients(&self) -> StoreResult<Vec<ClientRecord>> {
        down()
    }
    async fn revoke_client(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn revoke_token(&self, _: &str, _: Timestamp, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn revoked_tokens(&self, _: Timestamp) -> StoreResult<Vec<String>> {
        down()
    }
    async fn insert_signing_key(&self, _: &SigningKeyRecord) -> StoreResult<()> {
        down()
    }
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        down()
    }
    fn credential_generation(&self) -> Option<u64> {
        None
    }
    async fn append_audit(&self, _: Vec<AuditEvent>) -> StoreResult<()> {
        down()
    }
    async fn query_audit(&self, _: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        down()
    }
    async fn put_secret(&self, _: &str, _: &str, _: &str) -> StoreResult<()> {
        down()
    }
    async fn secret(&self, _: &str, _: &str) -> StoreResult<Option<String>> {
        down()
    }
    async fn secret_names(&self, _: &str) -> StoreResult<Vec<String>> {
        down()
    }
    async fn delete_secret(&self, _: &str, _: &str) -> StoreResult<bool> {
        down()
    }
    async fn put_setting(&self, _: &str, _: &str, _: &str) -> StoreResult<()> {
        down()
    }
    async fn setting(&self, _: &str, _: &str) -> StoreResult<Option<String>> {
        down()
    }
    async fn settings(&self, _: &str) -> StoreResult<Vec<(String, String)>> {
        down()
    }
}
