//! Where a credential Gatehouse presents comes from (an upstream's token,
//! the client secret it uses at an identity provider), and the resolved value.
//!
//! The configuration names a secret (`env:NAME`, `file:PATH`,
//! `tenant:NAME`), never contains it. The resolved [`Secret`] prints as
//! `[redacted]` in every format, so neither a log line nor an error text can
//! carry it by accident.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A reference to a secret, as written in the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable of the Gatehouse process, read at connect time.
    Env(String),
    /// A file (its content without the trailing newline), read at connect time.
    File(PathBuf),
    /// A per-tenant secret, resolved at call time by the caller's [`TenantSecrets`].
    Tenant(String),
}

impl SecretRef {
    pub fn is_tenant(&self) -> bool {
        matches!(self, SecretRef::Tenant(_))
    }

    /// The value now. `tenant` and `tenants` are needed only for `tenant:`.
    pub async fn resolve(
        &self,
        tenant: Option<&str>,
        tenants: Option<&dyn TenantSecrets>,
    ) -> Result<Secret, SecretError> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Secret(value)),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretRef::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    // Only the kind: an io::Error never holds file content,
                    // but keep the text short and predictable.
                    .map_err(|e| SecretError::File {
                        path: path.clone(),
                        reason: e.kind().to_string(),
                    })?;
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(SecretError::File {
                        path: path.clone(),
                        reason: "the file is empty".into(),
                    });
                }
                Ok(Secret(value.to_owned()))
            }
            SecretRef::Tenant(name) => {
                let tenants = tenants.ok_or(SecretError::NoResolver)?;
                let tenant = tenant.ok_or_else(|| SecretError::NoTenant(name.clone()))?;
                match tenants.resolve(tenant, name).await? {
                    Some(secret) => Ok(secret),
                    None => Err(SecretError::TenantMissing {
                        tenant: tenant.to_owned(),
                        name: name.clone(),
                    }),
                }
            }
        }
    }
}

impl FromStr for SecretRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            "a secret reference is env:NAME, file:PATH or tenant:NAME (the value itself does not belong in the configuration)".to_owned()
        })?;
        if rest.is_empty() {
            return Err(format!("{kind}: needs a name after the colon"));
        }
        match kind {
            "env" => {
                let valid = rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !rest.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!("env:{rest}: not an environment variable name"));
                }
                Ok(SecretRef::Env(rest.to_owned()))
            }
            // A relative path would be read from whatever directory the
            // process started in (a desktop client starts `gatehouse stdio`
            // anywhere), perhaps a file someone else put there.
            "file" if !std::path::Path::new(rest).is_absolute() => Err(format!(
                "file:{rest}: use an absolute path (a relative one would be read from whatever \
                 directory Gatehouse was started in)"
            )),
            "file" => Ok(SecretRef::File(PathBuf::from(rest))),
            "tenant" => Ok(SecretRef::Tenant(rest.to_owned())),
            _ => Err(format!(
                "unknown secret source {kind:?}: use env:NAME, file:PATH or tenant:NAME"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The reference is not secret (it says where the value is), so it prints.
impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Tenant(name) => write!(f, "tenant:{name}"),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({self})")
    }
}

/// A resolved secret value. It has no `Display`, and `Debug` hides it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Per-tenant upstream credentials, supplied by the caller (the store, a
/// vault). Asked at call time, so a rotated credential is used at once.
#[async_trait::async_trait]
pub trait TenantSecrets: Send + Sync {
    /// `Ok(None)` when the tenant has no such secret.
    async fn resolve(&self, tenant: &str, name: &str) -> Result<Option<Secret>, SecretError>;

    /// A number that changes whenever a tenant's secret may have changed
    /// (the store's credential generation), so that a connection made with
    /// a secret can tell when to read it again; `None` when unknown, and
    /// then it is read again at every use.
    fn generation(&self) -> Option<u64> {
        None
    }
}

/// Why a secret could not be resolved. Names the reference, never a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set or empty")]
    EnvMissing(String),
    #[error("cannot read secret file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("tenant {tenant} has no secret {name}")]
    TenantMissing { tenant: String, name: String },
    #[error("tenant:{0} needs a tenant, and the call has none")]
    NoTenant(String),
    #[error("tenant: secrets need a tenant secret resolver, and none is configured")]
    NoResolver,
    #[error("tenant secret lookup failed: {0}")]
    Lookup(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_sources() {
        assert_eq!(
            "env:CRM_TOKEN".parse::<SecretRef>().unwrap(),
            SecretRef::Env("CRM_TOKEN".into())
        );
        assert_eq!(
            "file:/run/secret".parse::<SecretRef>().unwrap(),
            SecretRef::File("/run/secret".into())
        );
        assert_eq!(
            "tenant:crm".parse::<SecretRef>().unwrap(),
            SecretRef::Tenant("crm".into())
        );
    }

    #[test]
    fn refuses_a_literal_value() {
        let err = "sk-live-123".parse::<SecretRef>().unwrap_err();
        assert!(!err.contains("sk-live-123"), "{err}");
        assert!("env:".parse::<SecretRef>().is_err());
        assert!("env:A-B".parse::<SecretRef>().is_err());
        assert!("vault:x".parse::<SecretRef>().is_err());
    }

    #[test]
    fn a_file_must_be_named_by_an_absolute_path() {
        for relative in ["file:token", "file:./token", "file:../secrets/token"] {
            let err = relative.parse::<SecretRef>().unwrap_err();
            assert!(err.contains("absolute path"), "{relative}: {err}");
        }
        assert!("file:/run/secrets/token".parse::<SecretRef>().is_ok());
    }

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert!(!format!("{:?}", Some(secret)).contains("hunter2"));
    }

    #[tokio::test]
    async fn a_file_secret_loses_its_newline_and_errors_name_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-value\n").unwrap();
        let secret = SecretRef::File(path.clone())
            .resolve(None, None)
            .await
            .unwrap();
        assert_eq!(secret.expose(), "s3cr3t-value");

        let missing = SecretRef::File(dir.path().join("absent"))
            .resolve(None, None)
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
    }

    #[tokio::test]
    async fn tenant_secrets_need_a_resolver_and_a_tenant() {
        struct One;
        #[async_trait::async_trait]
        impl TenantSecrets for One {
            async fn resolve(
                &self,
                tenant: &str,
                name: &str,
            ) -> Result<Option<Secret>, SecretError> {
                Ok((tenant == "acme" && name == "crm").then(|| Secret::new("acme-token")))
            }
        }
        let r = SecretRef::Tenant("crm".into());
        assert!(matches!(
            r.resolve(Some("acme"), None).await,
            Err(SecretError::NoResolver)
        ));
        assert!(matches!(
            r.resolve(None, Some(&One)).await,
            Err(SecretError::NoTenant(_))
        ));
        assert!(matches!(
            r.resolve(Some("other"), Some(&One)).await,
            Err(SecretError::TenantMissing { .. })
        ));
        let ok = r.resolve(Some("acme"), Some(&One)).await.unwrap();
        assert_eq!(ok.expose(), "acme-token");
    }
}
