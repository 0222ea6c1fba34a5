//! A store that is always down, for tests that check Gatehouse fails
//! closed. Compiled only with the `testing` feature.

use async_trait::async_trait;
use gatehouse_core::{AuditEvent, Timestamp};

use crate::{
    AccountSeen, AckOutcome, AlertRecord, AlertStore, ApiKeyRecord, ApprovalCall, ApprovalDecision,
    ApprovalRecord, ApprovalRequester, AuditCheckpoint, AuditQuery, AuditRow, AuthCodeRecord,
    AuthLock, AuthorizationStore, ClientRecord, CodeRedemption, DeliveryResult, DeviceDecision,
    DevicePoll, DeviceRecord, GatingStore, GrantRecord, GrantUse, LifecycleStore, LoginCounter,
    LoginThrottle, NewGrant, OperationBinding, PinStore, RefreshRotation, RefreshTokenRecord,
    SigningKeyRecord, Store, StoreError, StoreResult, TaskGrantRecord, ToolDefinitionRecord,
    ToolPinRecord, UserRecord,
};

/// A store whose every call fails, to check that tools fail closed.
pub struct DownStore;

/// A store that is down (every call fails) except, perhaps, for writing
/// audit records: [`DownStore`] and [`AuditTakesBatches`] are such stores.
pub trait FailingStore: Send + Sync + 'static {
    /// Whether a batch of audit records is written; by default it fails.
    fn takes_audit_batch(&self) -> StoreResult<()> {
        down()
    }

    /// Given each batch of audit records; by default `takes_audit_batch`
    /// decides.
    fn audit_batch(&self, _events: &[AuditEvent]) -> StoreResult<()> {
        self.takes_audit_batch()
    }

    /// The last record of `chain` this store holds; by default it fails.
    fn audit_head(&self, _chain: &str) -> StoreResult<Option<(u64, String)>> {
        down()
    }
}

impl FailingStore for DownStore {}

/// A down store whose audit log keeps every batch but answers its `lost`th
/// (counted from 1) with an error, as a database does whose connection
/// drops after the commit and before its answer.
pub struct AuditAnswerLost {
    kept: std::sync::Mutex<Vec<AuditEvent>>,
    lost: usize,
    batches: std::sync::atomic::AtomicUsize,
}

impl AuditAnswerLost {
    pub fn new(lost: usize) -> Self {
        AuditAnswerLost {
            kept: std::sync::Mutex::new(Vec::new()),
            lost,
            batches: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Every record kept, in the order given.
    pub fn kept(&self) -> Vec<AuditEvent> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl FailingStore for AuditAnswerLost {
    fn audit_batch(&self, events: &[AuditEvent]) -> StoreResult<()> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(events.iter().cloned());
        let batch = self
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        if batch == self.lost { down() } else { Ok(()) }
    }

    fn audit_head(&self, chain: &str) -> StoreResult<Option<(u64, String)>> {
        Ok(self
            .kept()
            .iter()
            .rev()
            .filter_map(|event| event.link.as_ref())
            .find(|link| link.chain == chain)
            .map(|link| (link.seq, link.hash.clone())))
    }
}

/// A down store whose audit log takes its first `n` batches and then
/// fails: a call whose decision is written and whose outcome is not.
pub struct AuditTakesBatches(std::sync::atomic::AtomicUsize);

impl AuditTakesBatches {
    pub fn new(batches: usize) -> Self {
        AuditTakesBatches(std::sync::atomic::AtomicUsize::new(batches))
    }
}

impl FailingStore for AuditTakesBatches {
    fn takes_audit_batch(&self) -> StoreResult<()> {
        use std::sync::atomic::Ordering;
        match self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Ok(()),
            Err(_) => down(),
        }
    }
}

fn down<T>() -> StoreResult<T> {
    Err(StoreError::Unavailable(
        "database is locked at /var/lib/gatehouse/db".into(),
    ))
}

#[async_trait]
impl<T: FailingStore> Store for T {
    async fn insert_api_key(&self, _: &ApiKeyRecord) -> StoreResult<()> {
        down()
    }
    async fn api_key(&self, _: &str) -> StoreResult<Option<ApiKeyRecord>> {
        down()
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        down()
    }
    async fn api_keys_page(&self, _: &str, _: u32) -> StoreResult<Vec<ApiKeyRecord>> {
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
    async fn insert_client_within_limit(&self, _: &ClientRecord, _: u64) -> StoreResult<bool> {
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
    async fn rotate_client_secret(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
        _: Timestamp,
        _: Option<Timestamp>,
    ) -> StoreResult<bool> {
        down()
    }
    async fn revoke_token(&self, _: &str, _: Timestamp, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn revoked_tokens(&self, _: Timestamp) -> StoreResult<Vec<String>> {
        down()
    }
    async fn ping(&self) -> StoreResult<()> {
        down()
    }
    async fn insert_signing_key(&self, _: &SigningKeyRecord) -> StoreResult<()> {
        down()
    }
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        down()
    }
    async fn revoke_signing_key(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    fn credential_generation(&self) -> Option<u64> {
        None
    }
    async fn query_audit(&self, _: &AuditQuery) -> StoreResult<Vec<AuditRow>> {
        down()
    }
    async fn audit_page(&self, _: i64, _: u32) -> StoreResult<Vec<AuditRow>> {
        down()
    }
    async fn audit_chain_head(&self, chain: &str) -> StoreResult<Option<(u64, String)>> {
        self.audit_head(chain)
    }
    async fn append_audit_checkpoint(&self, _: &AuditCheckpoint) -> StoreResult<()> {
        down()
    }
    async fn append_audit_batch(
        &self,
        events: Vec<AuditEvent>,
        _: &[AuditCheckpoint],
    ) -> StoreResult<()> {
        self.audit_batch(&events)
    }
    async fn audit_checkpoints(&self) -> StoreResult<Vec<AuditCheckpoint>> {
        down()
    }
    async fn audit_checkpoints_since(
        &self,
        _: Timestamp,
        _: u32,
    ) -> StoreResult<Vec<AuditCheckpoint>> {
        down()
    }
    async fn audit_last_checkpoint(&self, _: &str) -> StoreResult<Option<AuditCheckpoint>> {
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
    async fn unsealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>> {
        down()
    }
    async fn sealed_secrets(&self) -> StoreResult<Vec<(String, String, String)>> {
        down()
    }
    async fn replace_secret(&self, _: &str, _: &str, _: &str, _: &str) -> StoreResult<bool> {
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

#[async_trait]
impl<T: FailingStore> AuthorizationStore for T {
    async fn insert_user(&self, _: &UserRecord) -> StoreResult<()> {
        down()
    }
    async fn user(&self, _: &str) -> StoreResult<Option<UserRecord>> {
        down()
    }
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        down()
    }
    async fn count_users(&self) -> StoreResult<u64> {
        down()
    }
    async fn disable_user(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn enable_user(&self, _: &str) -> StoreResult<bool> {
        down()
    }
    async fn change_user_password(
        &self,
        _: &str,
        _: &str,
        _: bool,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn login_throttle(
        &self,
        _: &str,
        _: LoginCounter<'_>,
    ) -> StoreResult<Option<LoginThrottle>> {
        down()
    }
    async fn record_login_failure(
        &self,
        _: &str,
        _: LoginCounter<'_>,
        _: Timestamp,
        _: i64,
    ) -> StoreResult<u32> {
        down()
    }
    async fn lock_login(&self, _: &str, _: LoginCounter<'_>, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn clear_login_counter(&self, _: &str, _: LoginCounter<'_>) -> StoreResult<()> {
        down()
    }
    async fn clear_login_failures(&self, _: &str) -> StoreResult<()> {
        down()
    }
    async fn insert_browser_session(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn browser_session(&self, _: &str, _: Timestamp) -> StoreResult<Option<String>> {
        down()
    }
    async fn delete_browser_session(&self, _: &str) -> StoreResult<Option<String>> {
        down()
    }
    async fn insert_authorization_request(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<()> {
        down()
    }
    async fn authorization_request(&self, _: &str, _: Timestamp) -> StoreResult<Option<String>> {
        down()
    }
    async fn take_authorization_request(
        &self,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<Option<String>> {
        down()
    }
    async fn consent(&self, _: &str, _: &str) -> StoreResult<Option<String>> {
        down()
    }
    async fn put_consent(
        &self,
        _: &UserRecord,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn insert_code_grant(&self, _: NewGrant<'_>, _: &AuthCodeRecord) -> StoreResult<bool> {
        down()
    }
    async fn redeem_code(&self, _: &str, _: Timestamp) -> StoreResult<CodeRedemption> {
        down()
    }
    async fn record_issued(
        &self,
        _: &str,
        _: &str,
        _: Timestamp,
        _: Option<&RefreshTokenRecord>,
    ) -> StoreResult<bool> {
        down()
    }
    async fn rotate_refresh_token(&self, _: &str, _: Timestamp) -> StoreResult<RefreshRotation> {
        down()
    }
    async fn revoke_grant(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn refresh_token_grant(&self, _: &str) -> StoreResult<Option<GrantRecord>> {
        down()
    }
    async fn insert_device(&self, _: &DeviceRecord) -> StoreResult<()> {
        down()
    }
    async fn device_by_user_code(
        &self,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<Option<DeviceRecord>> {
        down()
    }
    async fn decide_device(
        &self,
        _: &str,
        _: Option<NewGrant<'_>>,
        _: Timestamp,
    ) -> StoreResult<DeviceDecision> {
        down()
    }
    async fn poll_device(&self, _: &str, _: &str, _: Timestamp) -> StoreResult<DevicePoll> {
        down()
    }
    async fn touch_client(&self, _: &str, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn delete_unused_dynamic_clients(&self, _: Timestamp, _: Timestamp) -> StoreResult<u64> {
        down()
    }
    async fn evict_oldest_never_granted_client(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn delete_unused_metadata_document_clients(
        &self,
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<u64> {
        down()
    }
    async fn purge_expired(&self, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn use_assertion(
        &self,
        _: &str,
        _: &str,
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn federated_user(&self, _: &str, _: &str) -> StoreResult<Option<String>> {
        down()
    }
    async fn insert_federated_user(
        &self,
        _: &UserRecord,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<()> {
        down()
    }
    async fn set_user_roles(
        &self,
        _: &str,
        _: &[String],
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<crate::RolesChange> {
        down()
    }
    async fn link_federated_user(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<()> {
        down()
    }
    async fn insert_grant(&self, _: NewGrant<'_>) -> StoreResult<bool> {
        down()
    }
}

#[async_trait]
impl<T: FailingStore> GatingStore for T {
    async fn insert_task_grant(&self, _: &TaskGrantRecord) -> StoreResult<()> {
        down()
    }
    async fn task_grant(&self, _: &str) -> StoreResult<Option<TaskGrantRecord>> {
        down()
    }
    async fn list_task_grants(
        &self,
        _: Option<&str>,
        _: Timestamp,
    ) -> StoreResult<Vec<TaskGrantRecord>> {
        down()
    }
    async fn revoke_task_grant(&self, _: &str, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn insert_approval(&self, _: &ApprovalRecord) -> StoreResult<()> {
        down()
    }
    async fn approval(&self, _: &str) -> StoreResult<Option<ApprovalRecord>> {
        down()
    }
    async fn list_approvals(
        &self,
        _: Option<&str>,
        _: bool,
        _: Timestamp,
    ) -> StoreResult<Vec<ApprovalRecord>> {
        down()
    }
    async fn pending_approval_for(
        &self,
        _: &ApprovalCall<'_>,
        _: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        down()
    }
    async fn count_pending_approvals(
        &self,
        _: &str,
        _: &ApprovalRequester<'_>,
        _: Timestamp,
    ) -> StoreResult<u64> {
        down()
    }
    async fn decide_approval(
        &self,
        _: &str,
        _: &ApprovalDecision,
        _: &str,
        _: Option<&AccountSeen>,
        _: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        down()
    }
    async fn redeem_operation_token(
        &self,
        _: &OperationBinding,
        _: Timestamp,
    ) -> StoreResult<Option<ApprovalRecord>> {
        down()
    }
    async fn approval_by_token(&self, _: &str) -> StoreResult<Option<ApprovalRecord>> {
        down()
    }
    async fn record_auth_failure(&self, _: &str, _: Timestamp, _: i64) -> StoreResult<u32> {
        down()
    }
    async fn lock_auth(&self, _: &str, _: Timestamp) -> StoreResult<()> {
        down()
    }
    async fn auth_locks(&self, _: Timestamp) -> StoreResult<Vec<AuthLock>> {
        down()
    }
    async fn clear_auth_lock(&self, _: &str) -> StoreResult<bool> {
        down()
    }
}

#[async_trait]
impl<T: FailingStore> PinStore for T {
    async fn tool_pin(&self, _: &str, _: &str) -> StoreResult<Option<ToolPinRecord>> {
        down()
    }
    async fn tool_pins(&self, _: Option<&str>) -> StoreResult<Vec<ToolPinRecord>> {
        down()
    }
    async fn count_tool_pins(&self, _: &str) -> StoreResult<u64> {
        down()
    }
    async fn insert_tool_pin(
        &self,
        _: &str,
        _: &str,
        _: &ToolDefinitionRecord,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn set_pending_tool_definition(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &ToolDefinitionRecord,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn clear_pending_tool_definition(&self, _: &str, _: &str, _: &str) -> StoreResult<()> {
        down()
    }
    async fn approve_tool_definition(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn extend_tool_pin(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &ToolDefinitionRecord,
    ) -> StoreResult<bool> {
        down()
    }
}

#[async_trait]
impl<T: FailingStore> LifecycleStore for T {
    async fn take_lease(&self, _: &str, _: &str, _: Timestamp, _: Timestamp) -> StoreResult<bool> {
        down()
    }
    async fn release_lease(&self, _: &str, _: &str) -> StoreResult<()> {
        down()
    }
    async fn record_lifecycle_notice(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn lifecycle_notice_given(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
    async fn live_grants(&self) -> StoreResult<Vec<GrantUse>> {
        down()
    }
    async fn add_successor_signing_key(
        &self,
        _: &str,
        _: &SigningKeyRecord,
        _: Timestamp,
    ) -> StoreResult<bool> {
        down()
    }
}

#[async_trait]
impl<T: FailingStore> AlertStore for T {
    async fn insert_alert(&self, _: &AlertRecord) -> StoreResult<()> {
        down()
    }
    async fn alerts(&self, _: bool, _: u32) -> StoreResult<Vec<AlertRecord>> {
        down()
    }
    async fn alert(&self, _: &str) -> StoreResult<Option<AlertRecord>> {
        down()
    }
    async fn ack_alert(&self, _: &str, _: &str, _: Timestamp) -> StoreResult<AckOutcome> {
        down()
    }
    async fn claim_alert_delivery(
        &self,
        _: Timestamp,
        _: Timestamp,
    ) -> StoreResult<Option<AlertRecord>> {
        down()
    }
    async fn finish_alert_delivery(&self, _: &str, _: &DeliveryResult) -> StoreResult<()> {
        down()
    }
}
