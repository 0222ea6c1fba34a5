//! The MCP enterprise-managed authorization extension
//! (`io.modelcontextprotocol/enterprise-managed-authorization`): a client
//! exchanges an identity assertion (ID-JAG, `typ: oauth-id-jag+jwt`) that
//! a trusted identity provider issued for it, with the JWT bearer grant
//! (RFC 7523 §2.1), for a Gatehouse access token.
//!
//! The assertion must be signed by the provider's keys, name Gatehouse's
//! issuer as its one audience, the authenticated client as `client_id`,
//! this server's MCP resource as `resource`, carry `iat` and a `jti`, and
//! live five minutes at most; each `jti` is accepted once (remembered in
//! the store until the assertion expires). The person is the user linked
//! to the provider's `iss` + `sub` (`identity_providers.rs`). Only a
//! client that authenticates (a secret or `private_key_jwt`) may exchange
//! one, and no refresh token is issued: the client asks the provider for a
//! new assertion, so the provider's policy is consulted again.

use gatehouse_authn::external::{AssertionKeys, AssertionRules, AssertionType, verify_assertion};
use gatehouse_authn::jwt::JwtError;
use gatehouse_core::Timestamp;
use gatehouse_store::{ClientRecord, GrantRecord, NewGrant};
use serde_json::Value;

use crate::OAuthError;
use crate::grants::{Attempt, Refresh};
use crate::server::{AuthorizationServer, TokenRequest, TokenResponse, random_token, unavailable};

/// RFC 7523 §2.1.
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The `typ` of an identity assertion JWT authorization grant.
pub const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";
const MAX_ID_JAG_LIFETIME_SECS: i64 = 300;
const ID_JAG_LEEWAY_SECS: u64 = 30;
/// Where the `jti` of a provider's assertions are remembered.
const USED_BY_PROVIDER_PREFIX: &str = "provider:";

fn refused(why: &str) -> OAuthError {
    OAuthError::InvalidGrant(format!("the identity assertion is refused: {why}"))
}

impl AuthorizationServer {
    pub(crate) async fn identity_assertion(
        &self,
        client: &ClientRecord,
        request: &TokenRequest,
        attempt: &mut Attempt<'_>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        if client.is_public() {
            return Err(OAuthError::UnauthorizedClient(
                "identity assertions are exchanged only by a client that authenticates".into(),
            ));
        }
        let assertion = request
            .assertion
            .as_deref()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("assertion is required".into()))?;
        let provider = gatehouse_authn::external::unverified_issuer(assertion)
            .and_then(|iss| self.identity_providers.by_issuer(&iss).cloned())
            .filter(|p| p.identity_assertions)
            .ok_or_else(|| refused("its issuer is not a trusted identity provider"))?;
        let audiences = [self.config.issuer.clone()];
        let rules = AssertionRules {
            issuer: &provider.issuer,
            subject: None,
            audiences: &audiences,
            typ: AssertionType::Exactly(ID_JAG_TYPE),
            max_lifetime_secs: MAX_ID_JAG_LIFETIME_SECS,
            leeway_secs: ID_JAG_LEEWAY_SECS,
            algorithms: &provider.algorithms,
        };
        let verified = verify_assertion(
            assertion,
            AssertionKeys::Fetched(&provider.keys),
            &rules,
            now,
        )
        .await
        .map_err(|e| match e {
            JwtError::KeysUnavailable => OAuthError::TemporarilyUnavailable(
                "the identity provider's keys cannot be fetched now".into(),
            ),
            other => refused(other.code()),
        })?;
        let claims = &verified.claims;
        if !claims.get("iat").is_some_and(Value::is_i64) {
            return Err(refused("missing_claim iat"));
        }
        if claims.get("client_id").and_then(Value::as_str) != Some(client.id.as_str()) {
            return Err(refused("it was issued to another client"));
        }
        if claims.get("resource").and_then(Value::as_str) != Some(self.config.resource.as_str()) {
            return Err(OAuthError::InvalidTarget(
                "the identity assertion is for another resource".into(),
            ));
        }
        let leeway = i64::try_from(ID_JAG_LEEWAY_SECS).unwrap_or(0);
        let first_use = self
            .store
            .use_assertion(
                &format!("{USED_BY_PROVIDER_PREFIX}{}", provider.issuer),
                &verified.jti,
                Timestamp::from_secs(verified.exp.saturating_add(leeway)),
                now,
            )
            .await
            .map_err(unavailable)?;
        if !first_use {
            tracing::warn!(provider = %provider.name, client_id = %client.id,
                "identity assertion replayed");
            return Err(refused("it was used before"));
        }
        let user = self.provider_user(&provider, claims, now).await?;
        attempt.human = Some(user.username.clone());
        // Asked for, else what the assertion carries, else everything;
        // then only what the client may have and the user's roles can use.
        // The provider's scope is its decision about this client: a request
        // may narrow it, never widen it (there is no consent step here).
        let asserted = match claims.get("scope") {
            None => None,
            Some(Value::String(scope)) => Some(scope.as_str()),
            // A scope claim that is no string cannot be narrowed to.
            Some(_) => return Err(refused("its scope claim is not a string")),
        };
        let requested = request
            .scope
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .or(asserted)
            .map(str::to_owned)
            .unwrap_or_else(|| self.known_scopes().join(" "));
        let requested = self.check_scope(&requested, &client.scopes)?;
        if let Some(asserted) = asserted
            && let Some(beyond) = requested
                .iter()
                .find(|scope| !asserted.split(' ').any(|a| a == scope.as_str()))
        {
            return Err(OAuthError::InvalidScope(format!(
                "scope {beyond:?} is not in the identity assertion"
            )));
        }
        let scope = self.scopes_for_user(&requested, &user.roles).join(" ");
        let grant = GrantRecord {
            id: format!("grant_{}", random_token(16)?),
            client_id: client.id.clone(),
            username: user.username.clone(),
            tenant: user.tenant.clone(),
            roles: user.roles.clone(),
            scope: scope.clone(),
            resource: self.config.resource.clone(),
            created_at: now,
            revoked_at: None,
        };
        let stored = self
            .store
            .insert_grant(NewGrant {
                grant: &grant,
                password_hash: &user.password_hash,
            })
            .await
            .map_err(unavailable)?;
        if !stored {
            return Err(crate::authorize::user_changed());
        }
        attempt.grant_id = Some(grant.id.clone());
        // Recorded under the grant, so disabling the user revokes it.
        self.issue_for_grant(client, &grant, &scope, Refresh::Never, now)
            .await
    }
}
