//! Who is calling, told to an upstream that asks for it
//! (`forward_identity = true`): a short-lived JWT signed by Gatehouse, never
//! plain headers the upstream could not tell from forgeries.
//!
//! It travels in the request's `_meta` under [`IDENTITY_META`] (a key the
//! caller cannot set: Gatehouse's own `_meta` keys are dropped from what a
//! caller sends). Its `typ` is [`IDENTITY_TYP`], not `at+jwt`, so no
//! validator of access tokens — Gatehouse's own included — accepts it as one.

use std::sync::Arc;

use futures::future::BoxFuture;
use gatehouse_core::{Principal, Timestamp};
use serde::Serialize;

/// The `_meta` key holding the identity JWT.
pub const IDENTITY_META: &str = "io.gatehouse/identity";
/// The JWT's `typ` header.
pub const IDENTITY_TYP: &str = "gatehouse-identity+jwt";
/// How long the JWT is valid: one call, with room for clock skew.
pub const IDENTITY_LIFETIME_SECS: i64 = 60;

/// Signs identity JWTs with the key the JWKS publishes (the embedded
/// authorization server's).
pub trait IdentitySigner: Send + Sync {
    fn issuer(&self) -> &str;
    /// A compact JWS of `claims` with `typ` = [`IDENTITY_TYP`].
    fn sign<'a>(
        &'a self,
        claims: &'a IdentityClaims,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// The task grant a call is made under.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TaskClaim {
    pub grant: String,
    pub task: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IdentityClaims {
    pub iss: String,
    /// The upstream (its URL, or `urn:gatehouse:upstream:NAME`).
    pub aud: String,
    /// The human when there is one, else the agent; for a caller an
    /// external identity provider vouched for, prefixed with that
    /// provider (`https://idp.example#alice`), so that its `alice` is
    /// never the local user `alice` to an upstream that keys on `sub`.
    pub sub: String,
    /// The external identity provider (`[[issuers]]`) whose token named
    /// the caller; absent when Gatehouse itself did (its users, keys and
    /// clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    pub tenant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human: Option<String>,
    pub agent: String,
    pub roles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskClaim>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

impl IdentityClaims {
    pub fn new(
        issuer: &str,
        audience: String,
        principal: &Principal,
        now: Timestamp,
    ) -> Result<IdentityClaims, String> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| e.to_string())?;
        let iat = now.as_secs();
        Ok(IdentityClaims {
            iss: issuer.to_string(),
            aud: audience,
            sub: subject(principal),
            idp: principal.issuer.clone(),
            tenant: principal.tenant.clone(),
            human: principal.human.clone(),
            agent: principal.agent.clone(),
            roles: principal.roles.clone(),
            task: principal.task.as_ref().map(|grant| TaskClaim {
                grant: grant.id.clone(),
                task: grant.task.clone(),
            }),
            iat,
            exp: iat + IDENTITY_LIFETIME_SECS,
            jti: hex::encode(jti),
        })
    }
}

/// The human when there is one, else the agent, qualified by the external
/// provider that named them.
fn subject(principal: &Principal) -> String {
    let name = principal.human.as_deref().unwrap_or(&principal.agent);
    match &principal.issuer {
        Some(issuer) => format!("{issuer}#{name}"),
        None => name.to_string(),
    }
}

/// The signer, set once the authorization server that owns the keys runs
/// (it starts after the gateway).
#[derive(Default)]
pub struct IdentitySlot(std::sync::OnceLock<Arc<dyn IdentitySigner>>);

impl IdentitySlot {
    pub fn set(&self, signer: Arc<dyn IdentitySigner>) {
        let _ = self.0.set(signer);
    }

    pub fn get(&self) -> Option<&Arc<dyn IdentitySigner>> {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::{CredentialKind, CredentialRef, TaskGrant};

    use super::*;

    #[test]
    fn claims_name_the_human_the_agent_and_the_task_grant() {
        let mut principal = Principal {
            tenant: "acme".into(),
            human: Some("alice".into()),
            agent: "agent-1".into(),
            credential: CredentialRef {
                kind: CredentialKind::AccessToken,
                id: "jti-1".into(),
            },
            roles: vec!["analyst".into()],
            scopes: None,
            expires_at: None,
            task: Some(TaskGrant {
                id: "tg_1".into(),
                task: "review".into(),
                tools: vec![],
                expires_at: Timestamp(0),
                issued_at: None,
            }),
            issuer: None,
        };
        let now = Timestamp::from_secs(1_000);
        let claims = IdentityClaims::new(
            "https://gh.example",
            "https://crm.example/mcp".into(),
            &principal,
            now,
        )
        .unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!((claims.iat, claims.exp), (1_000, 1_060));
        assert_eq!(
            claims.task,
            Some(TaskClaim {
                grant: "tg_1".into(),
                task: "review".into()
            })
        );
        // Without a human the agent is the subject; every JWT is unique.
        principal.human = None;
        let other = IdentityClaims::new("https://gh.example", "x".into(), &principal, now).unwrap();
        assert_eq!(other.sub, "agent-1");
        assert_ne!(other.jti, claims.jti);
        let json = serde_json::to_value(&other).unwrap();
        assert!(json.get("human").is_none());
        assert!(json.get("idp").is_none());
    }

    /// `alice` at an external provider is not the local `alice` to an
    /// upstream: the JWT names the provider, and its `sub` carries it.
    #[test]
    fn a_caller_an_external_provider_named_is_told_apart_from_a_local_one() {
        let principal = Principal {
            tenant: "acme".into(),
            human: Some("alice".into()),
            agent: "partner-app".into(),
            credential: CredentialRef {
                kind: CredentialKind::ExternalToken,
                id: "jti-1".into(),
            },
            roles: vec!["analyst".into()],
            scopes: None,
            expires_at: None,
            task: None,
            issuer: Some("https://partner-idp.example".into()),
        };
        let now = Timestamp::from_secs(1_000);
        let claims =
            IdentityClaims::new("https://gh.example", "x".into(), &principal, now).unwrap();
        assert_eq!(claims.sub, "https://partner-idp.example#alice");
        assert_eq!(claims.idp.as_deref(), Some("https://partner-idp.example"));
        assert_eq!(claims.human.as_deref(), Some("alice"));
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["idp"], "https://partner-idp.example");
    }
}
