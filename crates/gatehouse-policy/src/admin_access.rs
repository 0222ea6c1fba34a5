//! Who may use the admin HTTP API (`/admin/...`). The role alone is not
//! enough: a credential narrowed with scopes reaches it only if one of them
//! is [`ADMIN_SCOPE`], the scope of the administrative tools, so narrowing
//! an admin key to `tools:read` really takes administration away.

use gatehouse_core::Principal;

use crate::Policy;

/// The scope a scoped credential needs for the admin HTTP API. The same
/// scope guards the administrative tools (and tools the policy does not
/// name), so one scope means "may administer".
pub const ADMIN_SCOPE: &str = "tools:admin";

/// Why a principal may not use the admin HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    #[error("only an admin may use the admin API")]
    NotAdmin,
    /// An admin confined to a task grant is not acting as an admin.
    #[error("a credential confined to a task grant may not use the admin API")]
    TaskGrant,
    #[error("the admin API needs the scope tools:admin")]
    MissingScope,
}

impl AdminRefusal {
    /// Stable reason code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            AdminRefusal::NotAdmin => "not_admin",
            AdminRefusal::TaskGrant => "task_grant",
            AdminRefusal::MissingScope => "insufficient_scope",
        }
    }

    /// The scope to ask for, when asking would help.
    pub fn required_scope(self) -> Option<&'static str> {
        (self == AdminRefusal::MissingScope).then_some(ADMIN_SCOPE)
    }
}

impl Policy {
    /// Whether the principal may use the admin HTTP API: an admin of its
    /// tenant, not confined to a task grant, and, when its credential is
    /// narrowed by scopes, holding [`ADMIN_SCOPE`].
    pub fn admin_api_access(&self, principal: &Principal) -> Result<(), AdminRefusal> {
        if !self.is_tenant_admin(&principal.roles) {
            return Err(AdminRefusal::NotAdmin);
        }
        if principal.task.is_some() {
            return Err(AdminRefusal::TaskGrant);
        }
        match &principal.scopes {
            Some(scopes) if !scopes.iter().any(|s| s == ADMIN_SCOPE) => {
                Err(AdminRefusal::MissingScope)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_core::{CredentialKind, CredentialRef, TaskGrant, Timestamp};

    use super::*;

    fn principal(role: &str, scopes: Option<&[&str]>) -> Principal {
        Principal {
            tenant: "default".into(),
            human: None,
            agent: "k".into(),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: "k".into(),
            },
            roles: vec![role.into()],
            scopes: scopes.map(|s| s.iter().map(|x| x.to_string()).collect()),
            expires_at: None,
            task: None,
            issuer: None,
        }
    }

    #[test]
    fn an_admin_needs_the_admin_scope_only_when_scoped() {
        let policy = Policy::default_matrix();
        assert_eq!(policy.admin_api_access(&principal("admin", None)), Ok(()));
        assert_eq!(
            policy.admin_api_access(&principal("admin", Some(&["tools:admin"]))),
            Ok(())
        );
        for scopes in [
            &["tools:read"][..],
            &[],
            &["tools:read", "tool:access_secrets"],
        ] {
            assert_eq!(
                policy.admin_api_access(&principal("admin", Some(scopes))),
                Err(AdminRefusal::MissingScope),
                "{scopes:?}"
            );
        }
        assert_eq!(
            AdminRefusal::MissingScope.required_scope(),
            Some("tools:admin")
        );
    }

    #[test]
    fn non_admins_and_task_grants_are_refused_whatever_their_scopes() {
        let policy = Policy::default_matrix();
        assert_eq!(
            policy.admin_api_access(&principal("executor", Some(&["tools:admin"]))),
            Err(AdminRefusal::NotAdmin)
        );
        let mut tasked = principal("admin", None);
        tasked.task = Some(TaskGrant {
            id: "tg_1".into(),
            task: "research".into(),
            tools: vec!["whoami".into()],
            expires_at: Timestamp(1),
            issued_at: None,
        });
        assert_eq!(
            policy.admin_api_access(&tasked),
            Err(AdminRefusal::TaskGrant)
        );
    }

    /// Roles the policy no longer defines are denied everything, `admin`
    /// included: replacing it with another admin role demotes its holders.
    #[test]
    fn an_admin_role_the_policy_dropped_administers_nothing() {
        let policy = Policy::from_toml(
            "version = 1\n[roles.owner]\nadmin = true\n[tools.whoami]\nscope = \"tools:read\"\nroles = [\"owner\"]\n",
        )
        .unwrap();
        assert_eq!(
            policy.admin_api_access(&principal("admin", None)),
            Err(AdminRefusal::NotAdmin)
        );
        assert!(!policy.is_tenant_admin(&["admin".to_string()]));
        assert!(policy.is_tenant_admin(&["owner".to_string()]));
    }

    #[test]
    fn the_admin_scope_is_known_to_every_policy_with_an_admin() {
        let policy = Policy::from_toml(
            "version = 1\n[roles.boss]\nadmin = true\n[tools.whoami]\nscope = \"tools:read\"\nroles = [\"boss\"]\n",
        )
        .unwrap();
        assert!(policy.scopes().contains(&ADMIN_SCOPE.to_string()));
        assert!(
            policy
                .scopes_for_role("boss")
                .contains(&ADMIN_SCOPE.to_string())
        );
    }
}
