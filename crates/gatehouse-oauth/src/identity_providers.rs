//! `[[oauth.identity_providers]]`: the organisation's OpenID providers,
//! trusted by the embedded authorization server to say who a person is.
//!
//! A provider vouches for a person in two ways: an identity assertion
//! (ID-JAG, `identity_assertion.rs`) a client exchanges at the token
//! endpoint, or a sign-in through the provider from Gatehouse's own login
//! page (`federated_sign_in.rs`). The person is the Gatehouse user
//! linked to the provider's `iss` + `sub`; with `create_users = true` the
//! user is created on first arrival (named `<provider name>:<sub>`), with
//! roles from the provider's groups through `role_map`, or
//! `default_role`. For such a user the provider stays authoritative: the
//! roles follow its groups on every arrival. A user disabled in Gatehouse
//! stays refused whatever the provider says.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gatehouse_audit::EventBuilder;
use gatehouse_authn::external::{
    Endpoints, Issuer, KeySet, algorithm_list, checked_url, mapped_roles,
};
use gatehouse_core::{AuditKind, DEFAULT_TENANT, Outcome, SecretRef, Timestamp};
use gatehouse_store::{RolesChange, StoreError, UserRecord};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::OAuthError;
use crate::server::{AuthorizationServer, unavailable};

/// The password hash of a user an identity provider created: no password
/// verifies against it (it is not a PHC string), so such a user signs in
/// only through the provider until an operator sets a password.
pub const NO_PASSWORD: &str = "!identity-provider";

/// Longest provider name (it prefixes user names).
const MAX_NAME_CHARS: usize = 32;
/// Longest `sub` accepted into a user name.
const MAX_SUBJECT_CHARS: usize = 200;

/// One provider, as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// A short name (lower-case letters, digits, `-`): in audit records and
    /// in the names of the users it creates.
    pub name: String,
    /// The exact `iss` of what it signs; where discovery starts.
    pub issuer: String,
    /// Its key set; found through discovery when absent.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Subset of RS256, PS256, ES256, EdDSA; all four when absent.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// On a private network or loopback: no public-address guard, http allowed.
    #[serde(default)]
    pub internal: bool,
    /// Accept its identity assertions (`oauth-id-jag+jwt`) at the token
    /// endpoint: the MCP enterprise-managed authorization extension.
    #[serde(default)]
    pub identity_assertions: bool,
    /// Create a Gatehouse user the first time one of its people arrives;
    /// otherwise only people already linked are let in.
    #[serde(default)]
    pub create_users: bool,
    /// The tenant of the users it creates (default: the default tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// A claim (dotted path, e.g. `groups`) whose values map to roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Provider value -> Gatehouse role; unmapped values are ignored.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// The role of a person none of whose groups is mapped.
    #[serde(default)]
    pub default_role: Option<String>,
    /// Offer "Sign in with …" on the login page: Gatehouse's client at the
    /// provider (authorization code with PKCE, `state` and `nonce`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Where its secret is: `env:NAME` or `file:PATH`.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// The button's text: "Sign in with <display_name>" (default: the name).
    #[serde(default)]
    pub display_name: Option<String>,
    /// Scopes asked for at sign-in; `openid` is always among them.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// A person not yet linked whose provider says `email_verified: true`
    /// is linked to the existing user named by that email. Off by default:
    /// it trusts the provider's verification of every address.
    #[serde(default)]
    pub link_by_email: bool,
}

/// Sign-in through a provider: Gatehouse's client there.
pub struct SignIn {
    pub client_id: String,
    pub client_secret: SecretRef,
    pub display_name: String,
    pub scopes: String,
}

/// A checked provider entry.
pub struct IdentityProvider {
    pub name: String,
    pub issuer: String,
    pub algorithms: Vec<Algorithm>,
    pub keys: Arc<KeySet>,
    pub identity_assertions: bool,
    pub create_users: bool,
    pub tenant: String,
    pub roles_claim: Option<String>,
    pub role_map: BTreeMap<String, String>,
    pub default_role: Option<String>,
    pub sign_in: Option<SignIn>,
    pub link_by_email: bool,
    pub internal: bool,
    /// The provider's endpoints, discovered on first use.
    pub(crate) endpoints: tokio::sync::RwLock<Option<Endpoints>>,
}

impl IdentityProviderConfig {
    fn compile(&self) -> Result<IdentityProvider, String> {
        let valid_name = !self.name.is_empty()
            && self.name.chars().count() <= MAX_NAME_CHARS
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(format!(
                "name must be 1 to {MAX_NAME_CHARS} lower-case letters, digits or '-'"
            ));
        }
        checked_url(&self.issuer, self.internal, "issuer")?;
        let jwks_uri = self
            .jwks_uri
            .as_deref()
            .map(|u| checked_url(u, self.internal, "jwks_uri"))
            .transpose()?;
        let algorithms = algorithm_list(&self.algorithms)?;
        let sign_in = self.sign_in()?;
        if !self.identity_assertions && sign_in.is_none() {
            return Err(
                "nothing for this provider to do: set identity_assertions = true, or client_id and client_secret for sign-in"
                    .into(),
            );
        }
        if self.roles_claim.as_deref() == Some("") {
            return Err("roles_claim must name a claim".into());
        }
        if self
            .role_map
            .values()
            .chain(&self.default_role)
            .any(String::is_empty)
        {
            return Err("role_map and default_role must name roles".into());
        }
        if self.tenant.as_deref() == Some("") {
            return Err("tenant must not be empty".into());
        }
        let keys = KeySet::new(Arc::new(Issuer::keys_only(
            &self.issuer,
            jwks_uri,
            self.internal,
            algorithms.clone(),
        )));
        Ok(IdentityProvider {
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            algorithms,
            keys,
            identity_assertions: self.identity_assertions,
            create_users: self.create_users,
            tenant: self
                .tenant
                .clone()
                .unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            roles_claim: self.roles_claim.clone(),
            role_map: self.role_map.clone(),
            default_role: self.default_role.clone(),
            sign_in,
            link_by_email: self.link_by_email,
            internal: self.internal,
            endpoints: tokio::sync::RwLock::new(None),
        })
    }

    fn sign_in(&self) -> Result<Option<SignIn>, String> {
        let (client_id, client_secret) = match (&self.client_id, &self.client_secret) {
            (None, None) => return Ok(None),
            (Some(id), Some(secret)) if !id.is_empty() => (id.clone(), secret.clone()),
            _ => return Err("sign-in needs both client_id and client_secret".into()),
        };
        if client_secret.is_tenant() {
            return Err("client_secret: use env:NAME or file:PATH".into());
        }
        let display_name = self
            .display_name
            .clone()
            .unwrap_or_else(|| self.name.clone());
        let displayable = !display_name.trim().is_empty()
            && display_name.chars().count() <= 60
            && !crate::registration::has_deceptive_characters(&display_name);
        if !displayable {
            return Err(
                "display_name must be 1 to 60 characters without control or formatting characters"
                    .into(),
            );
        }
        let mut scopes = vec!["openid".to_string()];
        for scope in &self.scopes {
            let valid = !scope.is_empty()
                && scope
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
            if !valid {
                return Err(format!("scopes: {scope:?} is not a scope"));
            }
            if !scopes.contains(scope) {
                scopes.push(scope.clone());
            }
        }
        Ok(Some(SignIn {
            client_id,
            client_secret,
            display_name,
            scopes: scopes.join(" "),
        }))
    }
}

/// Every configured provider, by issuer.
#[derive(Default)]
pub struct IdentityProviders {
    by_issuer: HashMap<String, Arc<IdentityProvider>>,
}

impl IdentityProviders {
    /// Checks every entry; the error names it by position and name.
    pub fn new(configs: &[IdentityProviderConfig]) -> Result<IdentityProviders, String> {
        let mut by_issuer = HashMap::new();
        let mut names = Vec::new();
        for (n, config) in configs.iter().enumerate() {
            let at = || format!("oauth.identity_providers[{n}] ({})", config.name);
            let provider = config.compile().map_err(|e| format!("{}: {e}", at()))?;
            if names.contains(&provider.name) {
                return Err(format!("{}: the name is used twice", at()));
            }
            names.push(provider.name.clone());
            if by_issuer
                .insert(provider.issuer.clone(), Arc::new(provider))
                .is_some()
            {
                return Err(format!("{}: the issuer is configured twice", at()));
            }
        }
        Ok(IdentityProviders { by_issuer })
    }

    pub fn by_issuer(&self, issuer: &str) -> Option<&Arc<IdentityProvider>> {
        self.by_issuer.get(issuer)
    }

    /// The providers offered on the login page, by name.
    pub fn sign_in_providers(&self) -> Vec<(String, String)> {
        let mut offered: Vec<(String, String)> = self
            .by_issuer
            .values()
            .filter_map(|p| {
                p.sign_in
                    .as_ref()
                    .map(|s| (p.name.clone(), s.display_name.clone()))
            })
            .collect();
        offered.sort();
        offered
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<IdentityProvider>> {
        self.by_issuer.values().find(|p| p.name == name)
    }

    /// Whether the token endpoint takes identity assertions at all.
    pub fn accept_identity_assertions(&self) -> bool {
        self.by_issuer.values().any(|p| p.identity_assertions)
    }
}

impl IdentityProvider {
    /// The roles `claims` give a person: mapped groups, else the default.
    fn roles(&self, claims: &Map<String, Value>) -> Vec<String> {
        let mapped = mapped_roles(claims, self.roles_claim.as_deref(), &self.role_map);
        if mapped.is_empty() {
            self.default_role.iter().cloned().collect()
        } else {
            mapped
        }
    }
}

impl AuthorizationServer {
    /// The Gatehouse user `provider` vouches for with `claims` (verified by
    /// the caller): the one linked to its `iss` + `sub`, created now when
    /// the provider may create users. Refused when unknown and not
    /// creatable, or disabled.
    pub(crate) async fn provider_user(
        &self,
        provider: &IdentityProvider,
        claims: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<UserRecord, OAuthError> {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| OAuthError::InvalidGrant("the assertion names no subject".into()))?;
        let roles = provider.roles(claims);
        // Both ways in (an ID token, an identity assertion) require `iat`.
        let issued_at = claims
            .get("iat")
            .and_then(Value::as_i64)
            .map(Timestamp::from_secs)
            .ok_or_else(|| OAuthError::InvalidGrant("the assertion has no issue time".into()))?;
        let linked = self
            .store
            .federated_user(&provider.issuer, subject)
            .await
            .map_err(unavailable)?;
        let linked = match linked {
            Some(username) => Some(username),
            None => self.link_by_email(provider, subject, claims, now).await?,
        };
        let user = match linked {
            Some(username) => {
                self.linked_user(provider, &username, roles, issued_at, now)
                    .await?
            }
            None if provider.create_users => {
                self.create_provider_user(provider, subject, roles, issued_at, now)
                    .await?
            }
            None => {
                return Err(OAuthError::InvalidGrant(
                    "this person has no Gatehouse user (the provider does not create users)".into(),
                ));
            }
        };
        if user.disabled_at.is_some() {
            return Err(OAuthError::InvalidGrant("the user is disabled".into()));
        }
        Ok(user)
    }

    /// The existing user named by the person's verified email, now linked
    /// to them, when the provider may link by email.
    async fn link_by_email(
        &self,
        provider: &IdentityProvider,
        subject: &str,
        claims: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<Option<String>, OAuthError> {
        if !provider.link_by_email
            || claims.get("email_verified").and_then(Value::as_bool) != Some(true)
        {
            return Ok(None);
        }
        let Some(email) = claims.get("email").and_then(Value::as_str) else {
            return Ok(None);
        };
        let username = crate::login::normalize_username(email);
        let Some(user) = self.store.user(&username).await.map_err(unavailable)? else {
            return Ok(None);
        };
        // A provider vouches for its own tenant's people only: a tenant's
        // provider (administered by that tenant) that may link by email
        // would otherwise hand its people any other tenant's user of the
        // same address, and write its roles onto them.
        if user.tenant != provider.tenant {
            let event = EventBuilder::new(AuditKind::Authentication, Outcome::Failure, now)
                .human(&username)
                .tenant(&provider.tenant)
                .tool("oauth/user_linked")
                .decision("deny")
                .reason("link_refused_other_tenant")
                .error(format!(
                    "not linked to {} (provider {}): the user belongs to another tenant than the provider",
                    provider.issuer, provider.name
                ))
                .build();
            self.record(event).await?;
            return Ok(None);
        }
        match self
            .store
            .link_federated_user(&provider.issuer, subject, &username, now)
            .await
        {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(unavailable(e)),
        }
        let event = EventBuilder::new(AuditKind::Authentication, Outcome::Success, now)
            .human(&username)
            .tool("oauth/user_linked")
            .decision("allow")
            .reason("linked_by_verified_email")
            .error(format!(
                "user linked to {} (provider {}) by its verified email",
                provider.issuer, provider.name
            ))
            .build();
        self.record(event).await?;
        // Whoever won a concurrent link, the link decides.
        self.store
            .federated_user(&provider.issuer, subject)
            .await
            .map_err(unavailable)
    }

    /// A linked user, with the roles the provider gives now when it maps
    /// groups (the provider is authoritative for its people). A role taken
    /// away also revokes everything the user authorized: each grant carries
    /// the roles it was made with, and a refresh signs those, so without
    /// this a demoted user would keep the role for as long as they refresh.
    /// The claims were issued at `issued_at`: older than those the roles
    /// last came from, they decide nothing (`set_user_roles`).
    async fn linked_user(
        &self,
        provider: &IdentityProvider,
        username: &str,
        roles: Vec<String>,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Result<UserRecord, OAuthError> {
        let gone = || OAuthError::InvalidGrant("the linked user no longer exists".into());
        let mut user = self
            .store
            .user(username)
            .await
            .map_err(unavailable)?
            .ok_or_else(gone)?;
        // However the link came about, a provider signs in and sets the
        // roles of its own tenant's users only.
        if user.tenant != provider.tenant {
            return Err(OAuthError::InvalidGrant(
                "the linked user belongs to another tenant than the provider".into(),
            ));
        }
        let follows_groups = provider.roles_claim.is_some() || provider.default_role.is_some();
        if !follows_groups {
            return Ok(user);
        }
        // Written even when the roles stay: the claims' time moves on, so
        // that a sign-in still carrying claims from before this one cannot
        // bring back a role they lack. The store decides on the roles it
        // replaces, and revokes when one is taken away.
        let (previous, current, revoked) = match self
            .store
            .set_user_roles(username, &roles, issued_at, now)
            .await
            .map_err(unavailable)?
        {
            RolesChange::Applied { previous, revoked } => (previous, roles.clone(), revoked),
            // Claims of the same second as the stored ones: only their
            // removals were applied; recorded below, then this sign-in is
            // refused (it signs in again with newer claims).
            RolesChange::Narrowed {
                previous,
                current,
                revoked,
            } => (previous, current, revoked),
            // Newer claims agree with these: nothing to decide.
            RolesChange::Superseded { current } if current == roles => {
                user.roles = current;
                return Ok(user);
            }
            RolesChange::Superseded { .. } => return Err(OAuthError::ClaimsSuperseded),
            RolesChange::NoSuchUser => return Err(gone()),
        };
        if previous != current {
            let reason = if revoked {
                "roles_removed_by_provider"
            } else {
                "roles_from_provider"
            };
            let event = EventBuilder::new(AuditKind::Authentication, Outcome::Success, now)
                .human(username)
                .tool("oauth/user_roles_changed")
                .decision("allow")
                .reason(reason)
                .error(format!(
                    "roles changed by {} (provider {}) from [{}] to [{}]{}",
                    provider.issuer,
                    provider.name,
                    previous.join(", "),
                    current.join(", "),
                    if revoked {
                        "; everything the user authorized is revoked"
                    } else {
                        ""
                    }
                ))
                .build();
            self.record(event).await?;
        }
        if current != roles {
            return Err(OAuthError::ClaimsSuperseded);
        }
        user.roles = roles;
        Ok(user)
    }

    async fn create_provider_user(
        &self,
        provider: &IdentityProvider,
        subject: &str,
        roles: Vec<String>,
        issued_at: Timestamp,
        now: Timestamp,
    ) -> Result<UserRecord, OAuthError> {
        let usable = subject.chars().count() <= MAX_SUBJECT_CHARS
            && !subject.chars().any(gatehouse_core::is_unsafe_to_show);
        if !usable {
            return Err(OAuthError::InvalidGrant(
                "the subject cannot name a user".into(),
            ));
        }
        let user = UserRecord {
            username: format!("{}:{}", provider.name, subject.to_lowercase()),
            tenant: provider.tenant.clone(),
            roles,
            password_hash: NO_PASSWORD.to_owned(),
            created_at: now,
            disabled_at: None,
        };
        match self
            .store
            .insert_federated_user(&user, &provider.issuer, subject, issued_at)
            .await
        {
            Ok(()) => {}
            // Created meanwhile by a concurrent request for the same person.
            Err(StoreError::Conflict) => {
                return match self
                    .store
                    .federated_user(&provider.issuer, subject)
                    .await
                    .map_err(unavailable)?
                {
                    Some(username) => {
                        self.linked_user(provider, &username, user.roles, issued_at, now)
                            .await
                    }
                    None => Err(OAuthError::InvalidGrant(format!(
                        "the user name {} is taken by another user",
                        user.username
                    ))),
                };
            }
            Err(e) => return Err(unavailable(e)),
        }
        let event = EventBuilder::new(AuditKind::Authentication, Outcome::Success, now)
            .human(&user.username)
            .tool("oauth/user_created")
            .decision("allow")
            .reason("created_by_identity_provider")
            .error(format!(
                "user created for {} (provider {}), roles [{}]",
                provider.issuer,
                provider.name,
                user.roles.join(", ")
            ))
            .build();
        self.record(event).await?;
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers(text: &str) -> Result<IdentityProviders, String> {
        #[derive(Deserialize)]
        struct File {
            identity_providers: Vec<IdentityProviderConfig>,
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        IdentityProviders::new(&file.identity_providers)
    }

    const GOOD: &str = "[[identity_providers]]\nname = \"acme\"\n\
        issuer = \"https://login.acme.example\"\nidentity_assertions = true\n";

    #[test]
    fn a_provider_entry_is_checked_and_named_in_errors() {
        let ok = providers(GOOD).unwrap();
        assert!(ok.accept_identity_assertions());
        assert!(ok.by_issuer("https://login.acme.example").is_some());
        let cases = [
            (GOOD.replace("\"acme\"", "\"Acme Corp\""), "name must be"),
            (GOOD.replace("https://", "http://"), "https"),
            (
                GOOD.replace("identity_assertions = true", "identity_assertions = false"),
                "nothing for this provider to do",
            ),
            (
                format!("{GOOD}client_id = \"gatehouse\"\n"),
                "both client_id and client_secret",
            ),
            (
                format!(
                    "{GOOD}client_id = \"g\"\nclient_secret = \"env:S\"\ndisplay_name = \"Acme\u{202E}moc\"\n"
                ),
                "display_name",
            ),
            (format!("{GOOD}algorithms = [\"HS256\"]\n"), "HS256"),
            (format!("{GOOD}default_role = \"\"\n"), "must name roles"),
            (format!("{GOOD}{GOOD}"), "used twice"),
            (
                format!("{GOOD}{}", GOOD.replace("\"acme\"", "\"other\"")),
                "issuer is configured twice",
            ),
        ];
        for (text, expected) in cases {
            let error = providers(&text).err().unwrap_or_default();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(
                error.contains("oauth.identity_providers[") || error.contains("unknown"),
                "{error}"
            );
        }
        assert!(providers(&format!("{GOOD}client_secret = \"x\"\n")).is_err());
        let signing_in = providers(&format!(
            "{GOOD}client_id = \"g\"\nclient_secret = \"env:S\"\ndisplay_name = \"Acme SSO\"\nscopes = [\"email\", \"openid\"]\n"
        ))
        .unwrap();
        assert_eq!(
            signing_in.sign_in_providers(),
            [("acme".to_string(), "Acme SSO".to_string())]
        );
        let acme = signing_in.by_name("acme").unwrap();
        assert_eq!(acme.sign_in.as_ref().unwrap().scopes, "openid email");
    }

    #[test]
    fn roles_come_from_mapped_groups_or_the_default() {
        let set = providers(&format!(
            "{GOOD}roles_claim = \"groups\"\nrole_map = {{ \"ops\" = \"executor\" }}\ndefault_role = \"reader\"\n"
        ))
        .unwrap();
        let provider = set.by_issuer("https://login.acme.example").unwrap();
        let claims = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(
            provider.roles(&claims(serde_json::json!({ "groups": ["ops", "x"] }))),
            ["executor"]
        );
        assert_eq!(
            provider.roles(&claims(serde_json::json!({ "groups": ["x"] }))),
            ["reader"]
        );
        assert_eq!(provider.roles(&claims(serde_json::json!({}))), ["reader"]);
    }
}
