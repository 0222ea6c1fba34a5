//! Dynamic client registration (RFC 7591) for MCP clients that predate
//! Client ID Metadata Documents. Registrations are validated strictly,
//! limited per source address, audited, and expire when unused.

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use serde_json::json;

use crate::registration::{AuthMethod, parse_registration};
use crate::server::{AuthorizationServer, REGISTERED_BY_DYNAMIC, RegistrationPolicy, unavailable};
use crate::{ClientSpec, OAuthError, issue_client};

/// A registration that obtained no grant (no person signed in with it and
/// consented) is removed after this long: a client registers right before
/// it signs its user in.
pub const UNGRANTED_REGISTRATION_TTL_MS: i64 = 3_600_000;

impl AuthorizationServer {
    /// Whether a registration request may proceed: open registration, or
    /// the configured initial access token (compared as a keyed hash).
    pub fn registration_allowed(&self, bearer: Option<&str>) -> bool {
        match &self.config.registration {
            RegistrationPolicy::Open => true,
            RegistrationPolicy::Disabled => false,
            RegistrationPolicy::InitialAccessToken(hash) => {
                bearer.is_some_and(|token| self.pepper.verify(token.as_bytes(), hash))
            }
        }
    }

    /// Deletes the registrations unused for `dynamic_client_ttl`, and those
    /// that obtained no grant within [`UNGRANTED_REGISTRATION_TTL_MS`].
    pub(crate) async fn delete_expired_dynamic_clients(
        &self,
        now: Timestamp,
    ) -> Result<u64, OAuthError> {
        let unused_since =
            now.plus_millis(-self.config.dynamic_client_ttl_secs.saturating_mul(1000));
        let never_granted_since = now.plus_millis(-UNGRANTED_REGISTRATION_TTL_MS);
        self.store
            .delete_unused_dynamic_clients(unused_since, never_granted_since)
            .await
            .map_err(unavailable)
    }

    /// Stores a registered client while fewer than `max_dynamic_clients`
    /// exist. When full, expired ones are removed first; then the oldest
    /// registration that never obtained a grant makes room. Registration is
    /// open to anyone (20 a minute per address): a table full of
    /// registrations no person ever signed in with must not refuse every
    /// new client for weeks. Only when every one of them holds a grant is
    /// the registration refused (503).
    async fn insert_within_limit(
        &self,
        record: &gatehouse_store::ClientRecord,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let max = self.config.max_dynamic_clients;
        for attempt in 0..3 {
            if self
                .store
                .insert_client_within_limit(record, max)
                .await
                .map_err(unavailable)?
            {
                return Ok(());
            }
            match attempt {
                0 => {
                    self.delete_expired_dynamic_clients(now).await?;
                }
                1 => {
                    let evicted = self
                        .store
                        .evict_oldest_never_granted_client(REGISTERED_BY_DYNAMIC, now)
                        .await
                        .map_err(unavailable)?;
                    if evicted {
                        tracing::warn!(
                            max,
                            "dynamically registered client table full \
                             (oauth.registration_max_clients); the oldest registration that \
                             never obtained a grant was removed to make room"
                        );
                    }
                }
                _ => {}
            }
        }
        tracing::warn!(
            max,
            "dynamically registered client table full (oauth.registration_max_clients); registration refused"
        );
        Err(OAuthError::TemporarilyUnavailable(format!(
            "{max} dynamically registered clients are kept already (oauth.registration_max_clients)"
        )))
    }

    /// RFC 7591 §3.1–3.2. Returns the client information response.
    pub async fn register(
        &self,
        body: &[u8],
        source: Option<String>,
        now: Timestamp,
    ) -> Result<serde_json::Value, OAuthError> {
        if let Err(retry_ms) = self
            .registrations
            .attempt(source.as_deref().unwrap_or("unknown"), now)
        {
            return Err(OAuthError::TooManyRequests {
                retry_after_secs: gatehouse_core::retry_after_secs(retry_ms),
            });
        }
        let request = parse_registration(body).map_err(|e| match e.code() {
            "invalid_redirect_uri" => OAuthError::InvalidRedirectUri(e.to_string()),
            _ => OAuthError::InvalidClientMetadata(e.to_string()),
        })?;
        let scopes = match request.scope.as_deref() {
            Some(scope) => {
                let scopes = self
                    .check_scope(scope, &None)
                    .map_err(|e| OAuthError::InvalidClientMetadata(e.to_string()))?;
                (!scopes.is_empty()).then_some(scopes)
            }
            None => None,
        };
        let name = request
            .client_name
            .clone()
            .unwrap_or_else(|| "unnamed client".to_string());
        let issued = issue_client(
            &self.pepper,
            ClientSpec {
                name,
                tenant: String::new(),
                role: String::new(),
                scopes,
                redirect_uris: request.redirect_uris.clone(),
                grant_types: request.grant_types.clone(),
                auth_method: request.token_endpoint_auth_method.as_str().to_string(),
                registered_by: REGISTERED_BY_DYNAMIC.to_string(),
                may_introspect: false,
                jwks: None,
                jwks_uri: None,
            },
            now,
        )?;
        self.insert_within_limit(&issued.record, now).await?;
        let event = EventBuilder::new(AuditKind::Registration, Outcome::Success, now)
            .agent(&issued.record.id)
            .source(source)
            .tool("oauth/register")
            .decision("allow")
            .reason("client_registered")
            .arguments(json!({
                "client_name": issued.record.name,
                "redirect_uris": issued.record.redirect_uris,
                "grant_types": issued.record.grant_types,
                "token_endpoint_auth_method": issued.record.auth_method,
            }))
            .build();
        self.record(event).await?;
        let record = &issued.record;
        let mut response = json!({
            "client_id": record.id,
            "client_id_issued_at": record.created_at.as_secs(),
            "client_name": record.name,
            "redirect_uris": record.redirect_uris,
            "grant_types": record.grant_types,
            "response_types": request.response_types,
            "token_endpoint_auth_method": record.auth_method,
        });
        if let Some(scopes) = &record.scopes {
            response["scope"] = json!(scopes.join(" "));
        }
        if let Some(secret) = &issued.secret {
            response["client_secret"] = json!(secret);
            // RFC 7591: when the secret expires, 0 for never. The lifecycle
            // revokes the client at the secret's maximum age (an unused
            // registration goes earlier, `dynamic_client_ttl`).
            let expires_at = self
                .config
                .client_secret_max_age_secs
                .map_or(0, |age| record.created_at.as_secs().saturating_add(age));
            response["client_secret_expires_at"] = json!(expires_at);
        }
        debug_assert!(
            issued.secret.is_some() != (request.token_endpoint_auth_method == AuthMethod::None)
        );
        Ok(response)
    }
}
