//! The device authorization grant (RFC 8628) for headless machines: the
//! device gets a code pair, the user enters the short code in a browser,
//! and the device polls the token endpoint until the user decides.

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_store::{
    ClientRecord, DeviceDecision, DeviceRecord, DeviceStatus, GrantRecord, NewGrant, UserRecord,
};
use serde::Serialize;

use crate::server::{
    AuthorizationServer, ClientAuth, GRANT_DEVICE_CODE, random_token, unavailable,
};
use crate::{OAuthError, routes};

/// RFC 8628 §6.1: consonants only (no vowels, so no words), no look-alikes.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LEN: usize = 8;
/// Marks a device code as Gatehouse's (`gh?_`): presented as a bearer token
/// by mistake, it is never sent to an external identity provider.
pub const DEVICE_CODE_PREFIX: &str = "ghd_";

pub const DEVICE_CODE_TTL_MS: i64 = 10 * 60_000;
pub const DEVICE_POLL_INTERVAL_SECS: i64 = 5;

#[derive(Clone, Serialize)]
pub struct DeviceAuthorizationResponse {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

impl std::fmt::Debug for DeviceAuthorizationResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorizationResponse")
            .field("user_code", &self.user_code)
            .finish_non_exhaustive()
    }
}

/// The stored form of a user code: upper case, separators and spaces
/// dropped. `None` if what is left cannot be a user code.
pub fn normalize_user_code(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == USER_CODE_LEN && code.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
        .then_some(code)
}

/// `BCDF-GHJK`, as shown to the user.
pub fn display_user_code(code: &str) -> String {
    if code.len() == USER_CODE_LEN {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

fn random_user_code() -> Result<String, OAuthError> {
    // Rejection sampling: 256 is not a multiple of 20, so bytes ≥ 240
    // are redrawn to keep every letter equally likely.
    let mut code = String::with_capacity(USER_CODE_LEN);
    while code.len() < USER_CODE_LEN {
        let mut buf = [0u8; 16];
        getrandom::fill(&mut buf).map_err(|e| OAuthError::ServerError(e.to_string()))?;
        for b in buf {
            if code.len() < USER_CODE_LEN && usize::from(b) < 240 {
                code.push(char::from(
                    USER_CODE_ALPHABET[usize::from(b) % USER_CODE_ALPHABET.len()],
                ));
            }
        }
    }
    Ok(code)
}

#[derive(Debug)]
pub enum UserCodeError {
    /// Unknown, expired or already decided: one answer for all.
    Unknown,
    RateLimited,
    Server(OAuthError),
}

impl AuthorizationServer {
    /// RFC 8628 §3.1–3.2.
    pub async fn device_authorization(
        &self,
        auth: &ClientAuth,
        scope: Option<&str>,
        resource: &[String],
        source: Option<&str>,
        now: Timestamp,
    ) -> Result<DeviceAuthorizationResponse, OAuthError> {
        // Each call stores a pending authorization, so a source gets a
        // budget, counted before the client is even authenticated.
        if let Err(wait_ms) = self
            .device_authorizations
            .attempt(source.unwrap_or("unknown"), now)
        {
            return Err(OAuthError::TooManyRequests {
                retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
            });
        }
        let client = self.authenticate_client(auth, now).await?;
        if !client.allows_grant(GRANT_DEVICE_CODE) {
            return Err(OAuthError::UnauthorizedClient(
                "this client may not use the device authorization grant".into(),
            ));
        }
        self.check_resource(resource)?;
        let requested = scope.unwrap_or("");
        let mut scopes = self.check_scope(requested, &client.scopes)?;
        if scopes.is_empty() {
            scopes = client.scopes.clone().unwrap_or_else(|| self.known_scopes());
        }
        let device_code = format!("{DEVICE_CODE_PREFIX}{}", random_token(32)?);
        let user_code = random_user_code()?;
        let record = DeviceRecord {
            device_code_hash: self.pepper.hash(device_code.as_bytes()),
            user_code: user_code.clone(),
            client_id: client.id.clone(),
            scope: scopes.join(" "),
            resource: self.config.resource.clone(),
            created_at: now,
            expires_at: now.plus_millis(DEVICE_CODE_TTL_MS),
            interval_secs: DEVICE_POLL_INTERVAL_SECS,
            status: DeviceStatus::Pending,
            grant_id: None,
        };
        self.store
            .insert_device(&record)
            .await
            .map_err(unavailable)?;
        let verification_uri = self.url(routes::DEVICE);
        let display = display_user_code(&user_code);
        Ok(DeviceAuthorizationResponse {
            device_code,
            verification_uri_complete: format!("{verification_uri}?user_code={display}"),
            verification_uri,
            user_code: display,
            expires_in: DEVICE_CODE_TTL_MS / 1000,
            interval: DEVICE_POLL_INTERVAL_SECS,
        })
    }

    /// The pending authorization a user code names. Every lookup counts
    /// against the source's budget, so codes cannot be guessed at speed
    /// (RFC 8628 §5.1).
    pub async fn device_for_user_code(
        &self,
        input: &str,
        source: Option<&str>,
        now: Timestamp,
    ) -> Result<(DeviceRecord, ClientRecord), UserCodeError> {
        if !self
            .user_code_attempts
            .check(source.unwrap_or("unknown"), now)
        {
            return Err(UserCodeError::RateLimited);
        }
        let Some(code) = normalize_user_code(input) else {
            return Err(UserCodeError::Unknown);
        };
        let device = self
            .store
            .device_by_user_code(&code, now)
            .await
            .map_err(|e| UserCodeError::Server(unavailable(e)))?
            .filter(|d| d.status == DeviceStatus::Pending)
            .ok_or(UserCodeError::Unknown)?;
        let client = self
            .find_client(&device.client_id, now)
            .await
            .map_err(UserCodeError::Server)?
            .ok_or(UserCodeError::Unknown)?;
        Ok((device, client))
    }

    /// The user's decision on a device. Returns false when the code was no
    /// longer pending (decided in another tab, or expired).
    pub async fn decide_device(
        &self,
        device: &DeviceRecord,
        user: &UserRecord,
        approve: bool,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<bool, OAuthError> {
        let grant = approve
            .then(|| -> Result<GrantRecord, OAuthError> {
                Ok(GrantRecord {
                    id: random_token(16)?,
                    client_id: device.client_id.clone(),
                    username: user.username.clone(),
                    tenant: user.tenant.clone(),
                    roles: user.roles.clone(),
                    scope: self
                        .scopes_for_user(
                            &device
                                .scope
                                .split(' ')
                                .map(str::to_string)
                                .collect::<Vec<_>>(),
                            &user.roles,
                        )
                        .join(" "),
                    resource: device.resource.clone(),
                    created_at: now,
                    revoked_at: None,
                })
            })
            .transpose()?;
        let decision = self
            .store
            .decide_device(
                &device.user_code,
                grant.as_ref().map(|grant| NewGrant {
                    grant,
                    password_hash: &user.password_hash,
                }),
                now,
            )
            .await
            .map_err(unavailable)?;
        let decided = match decision {
            DeviceDecision::Decided => true,
            DeviceDecision::NotPending => false,
            DeviceDecision::UserChanged => {
                tracing::warn!(user = %user.username, client = %device.client_id,
                    "device not approved: the user's password, roles or access changed while it was decided");
                return Err(crate::authorize::user_changed());
            }
        };
        if decided {
            let event = EventBuilder::new(
                AuditKind::Authorization,
                if approve {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                now,
            )
            .human(&user.username)
            .tenant(&user.tenant)
            .agent(&device.client_id)
            .source(source)
            .tool("oauth/device")
            .decision(if approve { "allow" } else { "deny" })
            .reason(if approve {
                "device_approved"
            } else {
                "device_denied"
            })
            .arguments(serde_json::json!({"scope": device.scope}))
            .build();
            self.record(event).await?;
        }
        Ok(decided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_alphabet_and_normalise() {
        for _ in 0..50 {
            let code = random_user_code().unwrap();
            assert_eq!(code.len(), USER_CODE_LEN);
            assert_eq!(normalize_user_code(&code), Some(code.clone()));
            let shown = display_user_code(&code);
            assert_eq!(normalize_user_code(&shown.to_lowercase()), Some(code));
        }
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
        assert_eq!(normalize_user_code("ABCD-EFGH"), None, "vowels never occur");
        assert_eq!(normalize_user_code("' OR 1=1 --"), None);
    }
}
