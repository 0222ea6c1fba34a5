//! Storage for interactive OAuth: local users, browser sessions, pending
//! authorization requests, consents, and token families ("grants") with
//! the codes, refresh tokens and access tokens issued from them.
//!
//! Every single-use step (redeeming a code, rotating a refresh token,
//! redeeming a device code, taking a pending request) is one conditional
//! SQL statement, so two concurrent attempts cannot both succeed.

use async_trait::async_trait;
use gatehouse_core::Timestamp;

use crate::StoreResult;

/// A grant about to be stored, with the password hash its user had when
/// the grant was decided. It is stored only while the user still has that
/// hash, the grant's tenant and roles, and is not disabled, checked in the
/// statement that stores it (on PostgreSQL it also waits for a change to the
/// user's row in flight). Otherwise a `users passwd`, a `users disable` or a
/// role the identity provider took away, committed while a consent or a
/// device approval was being decided, would revoke everything the user had
/// authorized and then see the new grant appear after it.
#[derive(Clone, Copy)]
pub struct NewGrant<'a> {
    pub grant: &'a GrantRecord,
    pub password_hash: &'a str,
}

/// What deciding a device authorization did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDecision {
    /// Approved (the grant is stored) or denied, as asked.
    Decided,
    /// It was no longer pending (decided in another tab) or had expired.
    NotPending,
    /// An approval whose user changed while it was decided (see
    /// [`NewGrant`]); nothing was stored and the code is still pending.
    UserChanged,
}

/// A local user who can log in at the embedded authorization server.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: String,
    pub tenant: String,
    pub roles: Vec<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("tenant", &self.tenant)
            .field("roles", &self.roles)
            .field("password_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("disabled_at", &self.disabled_at)
            .finish()
    }
}

/// Failed logins of one counter of a name (known or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottle {
    pub failures: u32,
    pub locked_until: Timestamp,
}

/// Which failed logins of a name a counter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCounter<'a> {
    /// From one source: an IPv4 address or an IPv6 /64 (never `*`).
    Source(&'a str),
    /// From every source.
    Name,
}

impl LoginCounter<'_> {
    /// The stored `source` column.
    pub fn stored(&self) -> &str {
        match self {
            LoginCounter::Source(source) => source,
            LoginCounter::Name => "*",
        }
    }
}

/// One authorization: a user let a client act for them with a scope and
/// a resource. Codes, refresh tokens and access tokens belong to it, so
/// revoking it reaches all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    pub id: String,
    pub client_id: String,
    pub username: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub scope: String,
    pub resource: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCodeRecord {
    pub code_hash: String,
    pub grant_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub grant_id: String,
    pub scope: String,
    pub resource: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What happened to a presented authorization code.
// Returned once per token request and matched at once: boxing would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    Redeemed(AuthCodeRecord, GrantRecord),
    /// The code was used before: the caller revokes its grant (RFC 9700 §4.5).
    Replayed {
        grant_id: String,
    },
    /// Unknown, expired, or its grant is revoked.
    Invalid,
}

/// What happened to a presented refresh token.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshRotation {
    Rotated(RefreshTokenRecord, GrantRecord),
    /// A rotated token came back: the caller revokes its grant (RFC 9700 §4.14.2).
    Reused {
        grant_id: String,
    },
    Invalid,
}

/// What [`AuthorizationStore::set_user_roles`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolesChange {
    /// The roles are the claims', and `previous` are the roles they
    /// replaced (the same ones when nothing changed but the time). With
    /// `revoked`, a role was taken away, and everything the user authorized
    /// was revoked with it.
    Applied {
        previous: Vec<String>,
        revoked: bool,
    },
    /// Claims issued later were applied already (or in the same second,
    /// and these would only add roles): nothing changed. `current` are the
    /// roles stored.
    Superseded { current: Vec<String> },
    /// Claims of the same second as the stored ones, which take roles away
    /// and add others: only the removals were applied (which of the two is
    /// newer cannot be told, and an addition could be an older sign-in
    /// giving back a role the newer one took away). `current` are the
    /// roles stored now; `revoked` as for `Applied`.
    Narrowed {
        previous: Vec<String>,
        current: Vec<String>,
        revoked: bool,
    },
    /// There is no such user: nothing changed.
    NoSuchUser,
}

/// The roles to store when claims issued at `issued` (ms) give `roles` and
/// the stored `previous` came from claims issued at `stored` (`None`: no
/// claims applied yet); `None` when nothing is to change. Later claims
/// replace the roles. Of claims issued in the same second (`iat` has
/// one-second steps) it cannot be told which is newer: their removals are
/// applied (a removal is always safe) and their additions are not (an
/// addition could be an older sign-in giving back a role the newer one took
/// away; `{admin}` after `{reader}` in one second kept `admin`). Claims
/// that only add decide nothing; the refused arrival signs in again.
pub(crate) fn roles_to_store(
    stored: Option<i64>,
    previous: &[String],
    issued: i64,
    roles: &[String],
) -> Option<Vec<String>> {
    match stored {
        None => Some(roles.to_vec()),
        Some(stored) if issued > stored => Some(roles.to_vec()),
        Some(stored) if issued == stored => {
            let kept: Vec<String> = previous
                .iter()
                .filter(|role| roles.contains(role))
                .cloned()
                .collect();
            let adds = roles.iter().any(|role| !previous.contains(role));
            if adds && kept.len() == previous.len() {
                None
            } else {
                Some(kept)
            }
        }
        Some(_) => None,
    }
}

/// Whether `roles` lack one of `previous`: a role taken away, which revokes
/// what the user authorized (`set_user_roles`).
pub(crate) fn takes_a_role_away(previous: &[String], roles: &[String]) -> bool {
    previous.iter().any(|role| !roles.contains(role))
}

/// How often `set_user_roles` reads and swaps again when another writer
/// changed the roles between its read and its write.
pub(crate) const ROLES_SWAP_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    Pending,
    Approved,
    Denied,
    Redeemed,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Approved => "approved",
            DeviceStatus::Denied => "denied",
            DeviceStatus::Redeemed => "redeemed",
        }
    }

    pub fn parse(text: &str) -> Option<DeviceStatus> {
        match text {
            "pending" => Some(DeviceStatus::Pending),
            "approved" => Some(DeviceStatus::Approved),
            "denied" => Some(DeviceStatus::Denied),
            "redeemed" => Some(DeviceStatus::Redeemed),
            _ => None,
        }
    }
}

/// An RFC 8628 device authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_code_hash: String,
    /// Normalised: upper case, no separator.
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub resource: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub interval_secs: i64,
    pub status: DeviceStatus,
    pub grant_id: Option<String>,
}

/// The answer to one poll of the token endpoint with a device code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevicePoll {
    Pending,
    /// Polled faster than the interval; the interval grew by 5 s.
    SlowDown,
    Denied,
    Expired,
    Approved(GrantRecord),
    /// Unknown, another client's, or already redeemed.
    Invalid,
}

#[async_trait]
pub trait AuthorizationStore: Send + Sync {
    // --- Users ------------------------------------------------------------
    async fn insert_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn user(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    async fn count_users(&self) -> StoreResult<u64>;
    /// Disables the user and ends their browser sessions, everything they
    /// authorized (as `change_user_password` with `revoke_grants`) and the
    /// API keys of their tenant that name them as owner.
    /// Returns false when the user does not exist or is already disabled.
    async fn disable_user(&self, username: &str, at: Timestamp) -> StoreResult<bool>;
    /// Lets a disabled user sign in again. What the disable revoked stays
    /// revoked. Returns false when the user does not exist or is not
    /// disabled.
    async fn enable_user(&self, username: &str) -> StoreResult<bool>;
    /// The only way to change a password (the CLI, and any later
    /// self-service page, come through here): in one transaction, replaces
    /// the hash, ends every browser session of the user and forgets their
    /// failed logins. With `revoke_grants` it also revokes every grant the
    /// user authorized (the access tokens issued from them go on the
    /// revocation list, so their refresh tokens and codes die too, and task
    /// tokens made from those access tokens), forgets the user's remembered
    /// consents, and expires the operation tokens they approved that are
    /// still unused; the credential generation moves, so every instance sees
    /// it on its next request. Returns false, changing nothing, when the
    /// user does not exist.
    async fn change_user_password(
        &self,
        username: &str,
        password_hash: &str,
        revoke_grants: bool,
        at: Timestamp,
    ) -> StoreResult<bool>;

    // --- Login throttling -------------------------------------------------
    async fn login_throttle(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
    ) -> StoreResult<Option<LoginThrottle>>;
    /// Counts a failure and returns the new count, in one statement so
    /// concurrent failures each count. A count whose window (from its
    /// first failure) is older than `window_ms` starts over.
    async fn record_login_failure(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
        now: Timestamp,
        window_ms: i64,
    ) -> StoreResult<u32>;
    /// Locks the counter until `until`; a lock is never shortened.
    async fn lock_login(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
        until: Timestamp,
    ) -> StoreResult<()>;
    /// Forgets one counter (a source that signed in).
    async fn clear_login_counter(
        &self,
        username: &str,
        counter: LoginCounter<'_>,
    ) -> StoreResult<()>;
    /// Forgets every failure and lock of the name, from every source.
    async fn clear_login_failures(&self, username: &str) -> StoreResult<()>;

    // --- Browser sessions -------------------------------------------------
    /// Starts a browser session for a user whose password hash is still
    /// `password_hash` (the one the sign-in checked) and who is not
    /// disabled, in one statement: a `users passwd` or `users disable` that
    /// commits while the sign-in runs leaves no session behind. False when
    /// it was not started.
    async fn insert_browser_session(
        &self,
        id_hash: &str,
        username: &str,
        password_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<bool>;
    /// The user of a live session.
    async fn browser_session(&self, id_hash: &str, now: Timestamp) -> StoreResult<Option<String>>;
    /// Deletes a session (logout); returns the user it belonged to.
    async fn delete_browser_session(&self, id_hash: &str) -> StoreResult<Option<String>>;

    // --- Pending authorization requests ----------------------------------
    async fn insert_authorization_request(
        &self,
        id: &str,
        client_id: &str,
        request: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> StoreResult<()>;
    /// The stored request JSON, if it is live.
    async fn authorization_request(&self, id: &str, now: Timestamp) -> StoreResult<Option<String>>;
    /// Removes and returns the request: only one decision can use it.
    async fn take_authorization_request(
        &self,
        id: &str,
        now: Timestamp,
    ) -> StoreResult<Option<String>>;

    // --- Consents ---------------------------------------------------------
    async fn consent(&self, username: &str, client_id: &str) -> StoreResult<Option<String>>;
    /// Remembers `user`'s consent to `client_id`, only while the account is
    /// as `user` shows it (tenant, roles, password, not disabled), in one
    /// statement: a consent decided while an operator changed the account
    /// (a password reset that revokes grants, a disable, a role taken
    /// away) is not written after the change removed the others. `false`:
    /// the account changed, nothing was written.
    async fn put_consent(
        &self,
        user: &UserRecord,
        client_id: &str,
        scope: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;

    // --- Grants, codes, refresh tokens -----------------------------------
    /// Stores a new grant and its authorization code together, while the
    /// grant's user is still as the decision saw them (see [`NewGrant`]).
    /// False, storing nothing, when the user changed in the meantime.
    async fn insert_code_grant(
        &self,
        grant: NewGrant<'_>,
        code: &AuthCodeRecord,
    ) -> StoreResult<bool>;
    async fn redeem_code(&self, code_hash: &str, now: Timestamp) -> StoreResult<CodeRedemption>;
    /// Records an access token (and optionally a new refresh token) issued
    /// from a grant. Returns false, storing nothing, when the grant was
    /// revoked in the meantime: the caller must not hand the tokens out.
    async fn record_issued(
        &self,
        grant_id: &str,
        jti: &str,
        access_expires_at: Timestamp,
        refresh: Option<&RefreshTokenRecord>,
    ) -> StoreResult<bool>;
    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<RefreshRotation>;
    /// Revokes a grant and every access token issued from it (their ids go
    /// to the revocation list). Moves the credential generation.
    async fn revoke_grant(&self, grant_id: &str, now: Timestamp) -> StoreResult<bool>;
    /// The grant a refresh token belongs to (for RFC 7009 revocation).
    async fn refresh_token_grant(&self, token_hash: &str) -> StoreResult<Option<GrantRecord>>;

    // --- Device authorization (RFC 8628) ---------------------------------
    async fn insert_device(&self, device: &DeviceRecord) -> StoreResult<()>;
    async fn device_by_user_code(
        &self,
        user_code: &str,
        now: Timestamp,
    ) -> StoreResult<Option<DeviceRecord>>;
    /// Approves (storing the grant, see [`NewGrant`]) or denies a pending,
    /// live device authorization.
    async fn decide_device(
        &self,
        user_code: &str,
        grant: Option<NewGrant<'_>>,
        now: Timestamp,
    ) -> StoreResult<DeviceDecision>;
    async fn poll_device(
        &self,
        device_code_hash: &str,
        client_id: &str,
        now: Timestamp,
    ) -> StoreResult<DevicePoll>;

    // --- Clients ------------------------------------------------------------
    async fn touch_client(&self, id: &str, at: Timestamp) -> StoreResult<()>;
    /// Deletes dynamically registered clients unused since `unused_since`,
    /// and those that never obtained a grant, registered before
    /// `never_granted_since`. (A client's use of its credential alone does
    /// not count: anyone may present a public client's id.)
    async fn delete_unused_dynamic_clients(
        &self,
        unused_since: Timestamp,
        never_granted_since: Timestamp,
    ) -> StoreResult<u64>;
    /// Deletes the oldest client registered by `registered_by` (`dynamic`,
    /// `metadata_document`) that never obtained a grant and is not revoked
    /// (a revoked metadata document's revocation must outlast it), if any;
    /// those with a sign-in under way at `now` (an authorization request or
    /// a device code) last: anyone may start one, so they cannot be spared
    /// outright.
    async fn evict_oldest_never_granted_client(
        &self,
        registered_by: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Deletes metadata-document clients unused since `unused_since`, and
    /// those that never obtained a grant, known before `never_granted_since`,
    /// except revoked ones: their revocation must outlast them.
    async fn delete_unused_metadata_document_clients(
        &self,
        unused_since: Timestamp,
        never_granted_since: Timestamp,
    ) -> StoreResult<u64>;

    /// Deletes expired codes, requests, sessions, device authorizations and
    /// refresh tokens, and (a day after they ended) task grants, approvals
    /// and authentication failure records.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<()>;

    // --- People of identity providers ---------------------------------------
    /// The user linked to `subject` at `issuer`, if any.
    async fn federated_user(&self, issuer: &str, subject: &str) -> StoreResult<Option<String>>;
    /// Creates `user` linked to `subject` at `issuer`, in one transaction;
    /// `Conflict` (and nothing stored) when the name or the link exists.
    /// Its roles came from claims issued at `claims_issued_at` (see
    /// `set_user_roles`).
    async fn insert_federated_user(
        &self,
        user: &UserRecord,
        issuer: &str,
        subject: &str,
        claims_issued_at: Timestamp,
    ) -> StoreResult<()>;
    /// Links an existing user to `subject` at `issuer` (matched by verified
    /// email); `Conflict` when that identity is linked already.
    async fn link_federated_user(
        &self,
        issuer: &str,
        subject: &str,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Sets a user's roles to those of an identity provider's claims,
    /// issued at `claims_issued_at` (the ID token's or assertion's `iat`),
    /// and keeps that time. Two sign-ins racing a change at the provider
    /// must not let the older claims win because they were written last:
    /// the roles change only as `roles_to_store` allows, decided
    /// against the stored row and swapped only while it is unchanged (read,
    /// then a conditional UPDATE; again when another writer came between).
    /// Callers pass the roles even when they are unchanged, so that the
    /// time moves on.
    ///
    /// When a role of the replaced ones is missing from the new ones (the
    /// provider took it away), the same transaction revokes everything the
    /// user authorized, as `change_user_password` with `revoke_grants`
    /// does: grants copy the roles they were made with, so a refresh would
    /// otherwise keep signing the removed role. The credential generation
    /// then moves, so every instance refuses the access tokens already
    /// issued at once.
    async fn set_user_roles(
        &self,
        username: &str,
        roles: &[String],
        claims_issued_at: Timestamp,
        at: Timestamp,
    ) -> StoreResult<RolesChange>;
    /// Stores a grant made without a code or device (an identity
    /// assertion), while its user is still as the decision saw them (see
    /// [`NewGrant`]). False, storing nothing, when the user changed.
    async fn insert_grant(&self, grant: NewGrant<'_>) -> StoreResult<bool>;

    // --- Single-use assertions ----------------------------------------------
    /// Remembers the `jti` of a signed assertion from `issuer` until
    /// `expires_at`. True the first time; false, in one atomic statement,
    /// while an earlier use is remembered (a replay, however concurrent).
    async fn use_assertion(
        &self,
        issuer: &str,
        jti: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool>;
}
