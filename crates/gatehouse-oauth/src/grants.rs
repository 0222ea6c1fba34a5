//! The token endpoint: one function per grant type. Every outcome is
//! audited before it is returned, so no token leaves without its record.

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_store::{
    ClientRecord, CodeRedemption, DevicePoll, GrantRecord, RefreshRotation, RefreshTokenRecord,
};

use crate::identity_assertion::GRANT_JWT_BEARER;
use crate::server::{
    AccessTokenFor, AuthorizationServer, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN, TokenRequest, TokenResponse, random_token, unavailable,
};
use crate::token_exchange::GRANT_TOKEN_EXCHANGE;
use crate::{OAuthError, pkce};

/// Refresh tokens carry this prefix so secret scanners recognise them.
const REFRESH_TOKEN_PREFIX: &str = "ghr_";

/// Whether a grant's tokens come with a refresh token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// When the client may use the refresh grant.
    IfAllowed,
    /// Never (an identity assertion: the client asks the provider again).
    Never,
}

/// What the audit record of a token request names.
pub(crate) struct Attempt<'a> {
    pub(crate) grant_type: &'a str,
    /// The client, or for token exchange the subject's agent.
    pub(crate) client_id: Option<String>,
    pub(crate) human: Option<String>,
    pub(crate) grant_id: Option<String>,
}

impl AuthorizationServer {
    /// The token endpoint (RFC 6749 §3.2).
    pub async fn token(
        &self,
        request: TokenRequest,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        // Before anything is looked up or audited: a flood costs a counter,
        // not a store write per request.
        if let Err(wait_ms) = self
            .token_requests
            .attempt(source.as_deref().unwrap_or("unknown"), now)
        {
            // A device polling too fast is told what RFC 8628 tells it (it
            // then polls 5 s slower); any other client, when to come back.
            if request.grant_type == GRANT_DEVICE_CODE {
                return Err(OAuthError::SlowDown);
            }
            return Err(OAuthError::TooManyRequests {
                retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
            });
        }
        let grant_type = request.grant_type.clone();
        let mut attempt = Attempt {
            grant_type: &grant_type,
            client_id: request.client.as_ref().map(|c| c.id.clone()),
            human: None,
            grant_id: None,
        };
        let result = if grant_type == GRANT_TOKEN_EXCHANGE {
            self.token_exchange(&request, &mut attempt, source.clone(), now)
                .await
        } else {
            self.dispatch(request, &mut attempt, now).await
        };
        self.audit_token(&attempt, &result, source, now).await?;
        result
    }

    async fn dispatch(
        &self,
        request: TokenRequest,
        attempt: &mut Attempt<'_>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        match request.grant_type.as_str() {
            GRANT_CLIENT_CREDENTIALS
            | GRANT_AUTHORIZATION_CODE
            | GRANT_REFRESH_TOKEN
            | GRANT_DEVICE_CODE => {}
            GRANT_JWT_BEARER if self.identity_providers.accept_identity_assertions() => {}
            "password" | "implicit" => {
                return Err(OAuthError::UnsupportedGrantType(format!(
                    "grant_type {} is not supported (OAuth 2.1)",
                    request.grant_type
                )));
            }
            other => {
                return Err(OAuthError::UnsupportedGrantType(format!(
                    "grant_type {other:?} is not supported"
                )));
            }
        }
        let auth = request
            .client
            .as_ref()
            .ok_or(OAuthError::InvalidClient { basic: false })?;
        let client = self.authenticate_client(auth, now).await?;
        // Which clients may exchange identity assertions is the identity
        // provider's decision (it names the client in each one); here the
        // client only has to authenticate.
        if request.grant_type == GRANT_JWT_BEARER {
            self.check_resource(&request.resource)?;
            return self
                .identity_assertion(&client, &request, attempt, now)
                .await;
        }
        if !client.allows_grant(&request.grant_type) {
            return Err(OAuthError::UnauthorizedClient(format!(
                "this client may not use the {} grant",
                request.grant_type
            )));
        }
        self.check_resource(&request.resource)?;
        match request.grant_type.as_str() {
            GRANT_CLIENT_CREDENTIALS => self.client_credentials(&client, &request, now).await,
            GRANT_AUTHORIZATION_CODE => {
                self.authorization_code(&client, &request, attempt, now)
                    .await
            }
            GRANT_REFRESH_TOKEN => self.refresh(&client, &request, attempt, now).await,
            _ => self.device_code(&client, &request, attempt, now).await,
        }
    }

    async fn audit_token(
        &self,
        attempt: &Attempt<'_>,
        result: &Result<TokenResponse, OAuthError>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<(), OAuthError> {
        let (outcome, reason) = match result {
            Ok(_) => (Outcome::Success, attempt.grant_type),
            Err(e) => (Outcome::Failure, e.code()),
        };
        let mut event = EventBuilder::new(AuditKind::Authentication, outcome, now)
            .credential(attempt.grant_id.clone().or(attempt.client_id.clone()))
            .source(source)
            .decision(if result.is_ok() { "allow" } else { "deny" })
            .reason(reason)
            .tool("oauth/token");
        if let Some(client) = &attempt.client_id {
            event = event.agent(client);
        }
        if let Some(human) = &attempt.human {
            event = event.human(human);
        }
        if let Err(e) = result {
            event = event.error(format!("{}: {e}", attempt.grant_type));
            // A refusal that reached no grant (an unknown client, a bad
            // secret, an unknown code or refresh token) costs its sender
            // nothing: recorded within the source's budget. One about a
            // grant (a reused refresh token revokes it) is always recorded.
            if attempt.grant_id.is_none() && attempt.human.is_none() {
                return self.record_refusal(event.build(), now).await;
            }
        }
        self.record(event.build()).await
    }

    async fn client_credentials(
        &self,
        client: &ClientRecord,
        request: &TokenRequest,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let scope = request.scope.as_deref().filter(|s| !s.trim().is_empty());
        let granted = match scope {
            Some(scope) => Some(self.check_scope(scope, &client.scopes)?.join(" ")),
            // Without a requested scope the client gets what it was registered with.
            None => client.scopes.as_ref().map(|s| s.join(" ")),
        };
        let roles = [client.role.clone()];
        let signed = self
            .sign_access_token(
                AccessTokenFor {
                    sub: &client.id,
                    client_id: &client.id,
                    scope: granted.as_deref(),
                    tenant: &client.tenant,
                    roles: &roles,
                    resource: &self.config.resource,
                },
                now,
            )
            .await?;
        Ok(TokenResponse {
            access_token: signed.token,
            token_type: "Bearer",
            expires_in: signed.ttl_secs,
            scope: granted,
            refresh_token: None,
            issued_token_type: None,
            authorization_details: None,
        })
    }

    /// RFC 6749 §4.1.3 with PKCE (RFC 7636) and RFC 8707: the code must
    /// be this client's, for this redirect URI and verifier, and the
    /// resource must be the one the code was bound to.
    async fn authorization_code(
        &self,
        client: &ClientRecord,
        request: &TokenRequest,
        attempt: &mut Attempt<'_>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let code = request
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("code is required".into()))?;
        // A verifier is checked against the stored challenge below; its
        // absence is always an error, since every code has a challenge.
        let verifier = request
            .code_verifier
            .as_deref()
            .ok_or_else(|| OAuthError::InvalidRequest("code_verifier is required (PKCE)".into()))?;
        let (code, grant) = match self
            .store
            .redeem_code(&self.pepper.hash(code.as_bytes()), now)
            .await
            .map_err(unavailable)?
        {
            CodeRedemption::Redeemed(code, grant) => (code, grant),
            CodeRedemption::Replayed { grant_id } => {
                // RFC 9700 §4.5.3.1: a second use means the code leaked;
                // everything issued from it is withdrawn.
                tracing::warn!(grant = %grant_id, "authorization code replayed; revoking its grant");
                attempt.grant_id = Some(grant_id.clone());
                self.store
                    .revoke_grant(&grant_id, now)
                    .await
                    .map_err(unavailable)?;
                return Err(OAuthError::invalid_grant());
            }
            CodeRedemption::Invalid => return Err(OAuthError::invalid_grant()),
        };
        attempt.grant_id = Some(grant.id.clone());
        attempt.human = Some(grant.username.clone());
        // The code is spent either way; a code presented by another client,
        // for another redirect URI or with the wrong verifier was stolen or
        // forged, so what it would have issued is withdrawn too.
        let bound = grant.client_id == client.id
            && request.redirect_uri.as_deref() == Some(code.redirect_uri.as_str())
            && pkce::verify(verifier, &code.code_challenge).is_ok();
        if !bound {
            self.store
                .revoke_grant(&grant.id, now)
                .await
                .map_err(unavailable)?;
            return Err(OAuthError::invalid_grant());
        }
        if let [resource] = request.resource.as_slice()
            && *resource != grant.resource
        {
            return Err(OAuthError::InvalidTarget(
                "the resource differs from the one authorized".into(),
            ));
        }
        self.issue_for_grant(client, &grant, &grant.scope, Refresh::IfAllowed, now)
            .await
    }

    /// RFC 6749 §6 with rotation: the presented token is spent, a new one
    /// is issued, and a spent token coming back revokes the whole grant.
    async fn refresh(
        &self,
        client: &ClientRecord,
        request: &TokenRequest,
        attempt: &mut Attempt<'_>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = request
            .refresh_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
        let hash = self.pepper.hash(presented.as_bytes());
        // Everything that can be refused is checked before the token is
        // spent, so a refused request (another client presenting a stolen
        // token, a wider scope) burns nothing.
        let mut scope = None;
        if let Some(grant) = self
            .store
            .refresh_token_grant(&hash)
            .await
            .map_err(unavailable)?
        {
            if grant.client_id != client.id {
                return Err(OAuthError::invalid_grant());
            }
            if let [resource] = request.resource.as_slice()
                && *resource != grant.resource
            {
                return Err(OAuthError::InvalidTarget(
                    "the resource differs from the one authorized".into(),
                ));
            }
            // RFC 6749 §6: never beyond what the user originally granted.
            if let Some(requested) = request.scope.as_deref().filter(|s| !s.trim().is_empty()) {
                let granted: Vec<&str> = grant.scope.split(' ').collect();
                let requested = self.check_scope(requested, &None)?;
                if let Some(extra) = requested.iter().find(|s| !granted.contains(&s.as_str())) {
                    return Err(OAuthError::InvalidScope(format!(
                        "scope {extra:?} was not granted"
                    )));
                }
                scope = Some(requested.join(" "));
            }
        }
        let (token, grant) = match self
            .store
            .rotate_refresh_token(&hash, now)
            .await
            .map_err(unavailable)?
        {
            RefreshRotation::Rotated(token, grant) => (token, grant),
            RefreshRotation::Reused { grant_id } => {
                tracing::warn!(grant = %grant_id, "refresh token reused; revoking its grant");
                attempt.grant_id = Some(grant_id.clone());
                self.store
                    .revoke_grant(&grant_id, now)
                    .await
                    .map_err(unavailable)?;
                return Err(OAuthError::invalid_grant());
            }
            RefreshRotation::Invalid => return Err(OAuthError::invalid_grant()),
        };
        attempt.grant_id = Some(grant.id.clone());
        attempt.human = Some(grant.username.clone());
        let scope = scope.unwrap_or(token.scope);
        self.issue_for_grant(client, &grant, &scope, Refresh::IfAllowed, now)
            .await
    }

    /// RFC 8628 §3.4–3.5: the device polls until the user decides.
    async fn device_code(
        &self,
        client: &ClientRecord,
        request: &TokenRequest,
        attempt: &mut Attempt<'_>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let device_code = request
            .device_code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("device_code is required".into()))?;
        let poll = self
            .store
            .poll_device(&self.pepper.hash(device_code.as_bytes()), &client.id, now)
            .await
            .map_err(unavailable)?;
        let grant = match poll {
            DevicePoll::Approved(grant) => grant,
            DevicePoll::Pending => return Err(OAuthError::AuthorizationPending),
            DevicePoll::SlowDown => return Err(OAuthError::SlowDown),
            DevicePoll::Denied => return Err(OAuthError::AccessDenied),
            DevicePoll::Expired => return Err(OAuthError::ExpiredToken),
            DevicePoll::Invalid => return Err(OAuthError::invalid_grant()),
        };
        attempt.grant_id = Some(grant.id.clone());
        attempt.human = Some(grant.username.clone());
        self.issue_for_grant(client, &grant, &grant.scope, Refresh::IfAllowed, now)
            .await
    }

    /// An access token and a fresh refresh token for a user's grant. The
    /// store records both only if the grant is still live, so a grant
    /// revoked concurrently (a replayed code) hands out nothing.
    pub(crate) async fn issue_for_grant(
        &self,
        client: &ClientRecord,
        grant: &GrantRecord,
        scope: &str,
        refresh: Refresh,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let signed = self
            .sign_access_token(
                AccessTokenFor {
                    sub: &grant.username,
                    client_id: &client.id,
                    scope: Some(scope),
                    tenant: &grant.tenant,
                    roles: &grant.roles,
                    resource: &grant.resource,
                },
                now,
            )
            .await?;
        let refresh_token =
            if refresh == Refresh::IfAllowed && client.allows_grant(GRANT_REFRESH_TOKEN) {
                Some(format!("{REFRESH_TOKEN_PREFIX}{}", random_token(32)?))
            } else {
                None
            };
        let refresh_record = refresh_token.as_ref().map(|token| RefreshTokenRecord {
            token_hash: self.pepper.hash(token.as_bytes()),
            grant_id: grant.id.clone(),
            scope: scope.to_string(),
            resource: grant.resource.clone(),
            created_at: now,
            expires_at: now.plus_millis(self.config.refresh_token_ttl_secs.saturating_mul(1000)),
        });
        let recorded = self
            .store
            .record_issued(
                &grant.id,
                &signed.jti,
                signed.expires_at,
                refresh_record.as_ref(),
            )
            .await
            .map_err(unavailable)?;
        if !recorded {
            return Err(OAuthError::invalid_grant());
        }
        Ok(TokenResponse {
            access_token: signed.token,
            token_type: "Bearer",
            expires_in: signed.ttl_secs,
            scope: Some(scope.to_string()),
            refresh_token,
            issued_token_type: None,
            authorization_details: None,
        })
    }
}
