//! Token exchange (RFC 8693) for task grants: an agent trades its access
//! token or API key for a short-lived task token whose allowlist is its
//! role's tools ∩ the declared task's tools.
//!
//! The task is named by a `task` parameter or by RFC 9396
//! `authorization_details` of type `mcp_task`. The subject token is the
//! proof of identity, so client authentication is optional; when a client
//! does authenticate it must be the subject's own.

use std::sync::Arc;

use gatehouse_authn::{Authenticator, AuthnError};
use gatehouse_authz::{GrantOrigin, SharedPolicy, TaskGrantError, TaskGrants};
use gatehouse_core::{CredentialKind, Principal, Timestamp};
use gatehouse_store::TaskGrantRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::OAuthError;
use crate::grants::Attempt;
use crate::server::{AuthorizationServer, TaskClaims, TokenRequest, TokenResponse, unavailable};

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The `authorization_details` type naming a task (RFC 9396).
pub const MCP_TASK_DETAILS_TYPE: &str = "mcp_task";

/// What token exchange needs beyond the authorization server itself.
pub struct TaskExchange {
    pub authenticator: Arc<Authenticator>,
    pub policy: Arc<SharedPolicy>,
    pub grants: Arc<TaskGrants>,
}

/// The token-exchange fields of a token request.
#[derive(Clone, Default)]
pub struct ExchangeParams {
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub task: Option<String>,
    pub authorization_details: Option<String>,
}

#[derive(Deserialize)]
struct TaskDetails {
    #[serde(rename = "type")]
    kind: String,
    task: Option<String>,
}

/// The task a request names: `task`, or exactly one `mcp_task` entry of
/// `authorization_details`; naming it both ways must agree.
fn requested_task(params: &ExchangeParams) -> Result<String, OAuthError> {
    let from_details = match &params.authorization_details {
        None => None,
        Some(text) => {
            let details: Vec<TaskDetails> = serde_json::from_str(text).map_err(|_| {
                OAuthError::InvalidAuthorizationDetails(
                    "authorization_details must be a JSON array of objects with a type".into(),
                )
            })?;
            let mut tasks = details
                .into_iter()
                .filter(|d| d.kind == MCP_TASK_DETAILS_TYPE);
            match (tasks.next(), tasks.next()) {
                (
                    Some(TaskDetails {
                        task: Some(task), ..
                    }),
                    None,
                ) => Some(task),
                (Some(_), None) => {
                    return Err(OAuthError::InvalidAuthorizationDetails(
                        "an mcp_task entry needs a task".into(),
                    ));
                }
                (None, _) => {
                    return Err(OAuthError::InvalidAuthorizationDetails(
                        "authorization_details holds no mcp_task entry".into(),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(OAuthError::InvalidAuthorizationDetails(
                        "a task token covers one task; send one mcp_task entry".into(),
                    ));
                }
            }
        }
    };
    match (params.task.clone(), from_details) {
        (Some(a), Some(b)) if a != b => Err(OAuthError::InvalidRequest(
            "task and authorization_details name different tasks".into(),
        )),
        (Some(task), _) | (None, Some(task)) if !task.is_empty() => Ok(task),
        _ => Err(OAuthError::InvalidRequest(
            "name the task: task=NAME or authorization_details=[{\"type\":\"mcp_task\",\"task\":NAME}]"
                .into(),
        )),
    }
}

impl AuthorizationServer {
    /// RFC 8693 §2.1: authenticates the subject token, grants the task and
    /// signs a task token for it.
    pub(crate) async fn token_exchange(
        &self,
        request: &TokenRequest,
        attempt: &mut Attempt<'_>,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let exchange = self.task_exchange.as_ref().ok_or_else(|| {
            OAuthError::UnsupportedGrantType("token exchange is not enabled".into())
        })?;
        // RFC 8707: a task token is for this server's resource only; a
        // request naming another is refused, not answered with a token for
        // something it did not ask for.
        self.check_resource(&request.resource)?;
        let params = &request.exchange;
        match params.subject_token_type.as_deref() {
            Some(TOKEN_TYPE_ACCESS_TOKEN) => {}
            Some(other) => {
                return Err(OAuthError::InvalidRequest(format!(
                    "subject_token_type {other:?} is not supported; use {TOKEN_TYPE_ACCESS_TOKEN}"
                )));
            }
            None => {
                return Err(OAuthError::InvalidRequest(
                    "subject_token_type is required".into(),
                ));
            }
        }
        if let Some(requested) = params.requested_token_type.as_deref()
            && requested != TOKEN_TYPE_ACCESS_TOKEN
        {
            return Err(OAuthError::InvalidRequest(format!(
                "requested_token_type {requested:?} is not supported"
            )));
        }
        if request.scope.is_some() {
            return Err(OAuthError::InvalidScope(
                "a task token's reach is set by the task, not by scope".into(),
            ));
        }
        let task = requested_task(params)?;
        let subject = params
            .subject_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::InvalidRequest("subject_token is required".into()))?;
        // The subject token is a credential like any other: the same
        // lockout applies here as at the MCP endpoint.
        // A lock set here is seen in the audit log as the token request's
        // failure and, after it, as `locked` refusals.
        let (checked, _new_locks) = exchange
            .authenticator
            .authenticate_guarded(subject, source.as_deref(), now)
            .await;
        let principal = match checked {
            Ok(principal) => principal,
            Err(AuthnError::Unavailable(detail)) => return Err(unavailable(detail)),
            Err(AuthnError::Locked { retry_after_secs }) => {
                return Err(OAuthError::TooManyRequests { retry_after_secs });
            }
            Err(_) => {
                return Err(OAuthError::InvalidGrant(
                    "the subject_token is not valid".into(),
                ));
            }
        };
        attempt.human = principal.human.clone();
        attempt.client_id = Some(principal.agent.clone());
        // A task token names its person and client as Gatehouse knows them,
        // without the identity provider that vouched for them: exchanged,
        // an external provider's token would pass for a local user of the
        // same name (or never work, its client being unknown here). Such
        // callers declare their task at `initialize` instead.
        if principal.credential.kind == CredentialKind::ExternalToken || principal.issuer.is_some()
        {
            return Err(OAuthError::InvalidGrant(
                "a token from an external identity provider cannot be exchanged for a task \
                 token; declare the task at initialize instead"
                    .into(),
            ));
        }
        // Our own access token (verified above): the task token names the
        // key that signed it, so that withdrawing that key also stops the
        // task token, signed by whatever key signs now.
        let base_kid = (principal.credential.kind == CredentialKind::AccessToken)
            .then(|| {
                jsonwebtoken::decode_header(subject)
                    .ok()
                    .and_then(|h| h.kid)
            })
            .flatten();
        if let Some(auth) = &request.client {
            let client = self.authenticate_client(auth, now).await?;
            if client.id != principal.agent {
                return Err(OAuthError::InvalidGrant(
                    "the subject_token belongs to another client".into(),
                ));
            }
        }
        if let Err(wait_ms) = self.task_tokens.attempt(&principal.limit_key(), now) {
            return Err(OAuthError::TooManyRequests {
                retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
            });
        }
        let policy = exchange.policy.current();
        let origin = GrantOrigin {
            via: "token_exchange",
            source,
            session: None,
        };
        let grant = match exchange
            .grants
            .grant(&policy, &principal, &task, origin, now)
            .await
        {
            Ok(grant) => grant,
            Err(TaskGrantError::Refused(refusal)) => {
                return Err(OAuthError::InvalidAuthorizationDetails(format!(
                    "{}: {refusal}",
                    refusal.code()
                )));
            }
            Err(e) => return Err(unavailable(e)),
        };
        attempt.grant_id = Some(grant.id.clone());
        self.sign_task_token(&principal, &grant, base_kid.as_deref(), now)
            .await
    }

    async fn sign_task_token(
        &self,
        principal: &Principal,
        grant: &TaskGrantRecord,
        base_kid: Option<&str>,
        now: Timestamp,
    ) -> Result<TokenResponse, OAuthError> {
        let scope = principal.scopes.as_ref().map(|s| s.join(" "));
        let sub = principal.human.as_deref().unwrap_or(&principal.agent);
        let signed = self
            .sign_task_access_token(
                TaskClaims {
                    sub,
                    client_id: &principal.agent,
                    scope: scope.as_deref(),
                    tenant: &principal.tenant,
                    roles: &principal.roles,
                    grant,
                    base_kid,
                },
                now,
            )
            .await?;
        let details: Value = json!([{
            "type": MCP_TASK_DETAILS_TYPE,
            "task": grant.task,
            "tools": grant.tools,
            "grant_id": grant.id,
        }]);
        Ok(TokenResponse {
            access_token: signed.token,
            token_type: "Bearer",
            expires_in: signed.ttl_secs,
            scope,
            refresh_token: None,
            issued_token_type: Some(TOKEN_TYPE_ACCESS_TOKEN),
            authorization_details: Some(details),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(task: Option<&str>, details: Option<&str>) -> ExchangeParams {
        ExchangeParams {
            task: task.map(String::from),
            authorization_details: details.map(String::from),
            ..ExchangeParams::default()
        }
    }

    #[test]
    fn the_task_comes_from_task_or_from_one_mcp_task_entry() {
        assert_eq!(
            requested_task(&params(Some("research"), None)).unwrap(),
            "research"
        );
        assert_eq!(
            requested_task(&params(
                None,
                Some(r#"[{"type":"mcp_task","task":"research"}]"#)
            ))
            .unwrap(),
            "research"
        );
        assert_eq!(
            requested_task(&params(
                Some("research"),
                Some(r#"[{"type":"mcp_task","task":"research"}]"#)
            ))
            .unwrap(),
            "research"
        );
    }

    #[test]
    fn ambiguous_or_missing_tasks_are_refused() {
        for (task, details) in [
            (None, None),
            (Some(""), None),
            (Some("a"), Some(r#"[{"type":"mcp_task","task":"b"}]"#)),
            (None, Some("not json")),
            (None, Some(r#"[{"type":"other"}]"#)),
            (None, Some(r#"[{"type":"mcp_task"}]"#)),
            (
                None,
                Some(r#"[{"type":"mcp_task","task":"a"},{"type":"mcp_task","task":"b"}]"#),
            ),
        ] {
            assert!(
                requested_task(&params(task, details)).is_err(),
                "{task:?} {details:?}"
            );
        }
    }
}
