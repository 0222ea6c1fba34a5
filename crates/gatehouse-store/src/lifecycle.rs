//! What the credential lifecycle (issue 12) needs from the store: a lease
//! so one instance at a time runs the housekeeping pass, notices given once
//! whichever instance gives them, the grants with their last use, and an
//! automatic signing-key rotation that happens once.

use async_trait::async_trait;
use gatehouse_core::Timestamp;

use crate::{SigningKeyRecord, StoreResult};

/// A user's grant (a refresh-token family) as the lifecycle sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantUse {
    pub id: String,
    pub client_id: String,
    pub username: String,
    pub tenant: String,
    pub created_at: Timestamp,
    /// When its code or one of its refresh tokens was last redeemed.
    pub last_used_at: Option<Timestamp>,
}

/// A grant's `last_used_at` is written at most this often, so a client
/// refreshing in a loop does not turn each refresh into a second write.
pub const GRANT_TOUCH_INTERVAL_MS: i64 = gatehouse_core::LAST_USE_INTERVAL_MS;

/// The code under which an automatic signing-key rotation is claimed in
/// `lifecycle_notices` (one successor per replaced key).
pub const SIGNING_KEY_ROTATED: &str = "signing_key_rotated";

#[async_trait]
pub trait LifecycleStore {
    /// Takes the lease `name` for `holder` until `until` when nobody holds
    /// it, its holder's time ran out (`expires_at <= now`), or `holder`
    /// holds it already (renewal). One statement: of instances racing for
    /// it exactly one gets it. Whether `holder` holds it now.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        until: Timestamp,
    ) -> StoreResult<bool>;

    /// Gives up the lease if `holder` holds it, so another instance (or the
    /// next pass) need not wait for it to expire.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;

    /// Records that notice `code` about a credential was given for `basis`
    /// (the timestamp it is about: a creation or a last use). Whether this
    /// call recorded it: false when it had been given already, so the
    /// caller audits it only when true. One statement.
    async fn record_lifecycle_notice(
        &self,
        credential_kind: &str,
        credential_id: &str,
        code: &str,
        basis: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Whether that notice was given (for a dry run).
    async fn lifecycle_notice_given(
        &self,
        credential_kind: &str,
        credential_id: &str,
        code: &str,
        basis: Timestamp,
    ) -> StoreResult<bool>;

    /// Grants that are not revoked.
    async fn live_grants(&self) -> StoreResult<Vec<GrantUse>>;

    /// Adds `successor` as the automatic successor of signing key
    /// `replaces`, unless a successor of it was added already (by another
    /// instance or an earlier pass): the claim and the insert are one
    /// transaction, so two instances cannot both add one. Whether it was
    /// added. Moves the credential generation, like `insert_signing_key`.
    async fn add_successor_signing_key(
        &self,
        replaces: &str,
        successor: &SigningKeyRecord,
        now: Timestamp,
    ) -> StoreResult<bool>;
}
