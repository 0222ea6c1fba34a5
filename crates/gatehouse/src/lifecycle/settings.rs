//! `[lifecycle]` in the configuration file: the credential lifecycle
//! policy per credential kind, overridable per tenant, and the
//! housekeeping task that applies it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::lifecycle::policy::{CredentialKind, LifecyclePolicy, Thresholds};

/// A duration as humans write it ("90d", "24h", "0s").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        gatehouse_core::duration_setting::parse(d).map(Span)
    }
}

/// A threshold that can be switched off: a duration, or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    After(Duration),
    Off,
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(Limit::Off);
        }
        humantime::parse_duration(&text)
            .map(Limit::After)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} (a duration such as \"90d\", or \"off\"): {e}"
                ))
            })
    }
}

/// One credential kind's settings. Every key is optional: a kind's section
/// falls back to the built-in defaults, a tenant's to the kind's section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindSettings {
    /// Revoked (signing keys: replaced) at this age.
    pub max_age: Option<Limit>,
    /// A `credential_expiring` warning this long before the maximum age.
    pub warn_before: Option<Span>,
    /// API keys: how long `keys rotate` keeps the old key working.
    /// Signing keys: how long the successor is published before it signs.
    pub rotation_overlap: Option<Span>,
    /// A `credential_unused` alert after this long without use.
    pub unused_alert: Option<Limit>,
    /// Revoked after this long without use.
    pub unused_revoke: Option<Limit>,
}

/// What a tenant may override (signing keys belong to no tenant).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSettings {
    pub api_keys: KindSettings,
    pub client_secrets: KindSettings,
    pub grants: KindSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Run the housekeeping task in `serve` (one instance at a time, by a
    /// lease in the store). `gatehouse lifecycle run` works either way.
    pub enabled: bool,
    /// How often the housekeeping pass runs.
    #[serde(deserialize_with = "gatehouse_core::duration_setting::parse")]
    pub interval: Duration,
    pub api_keys: KindSettings,
    pub client_secrets: KindSettings,
    pub grants: KindSettings,
    pub signing_keys: KindSettings,
    /// Per-tenant overrides: `[lifecycle.tenants.<name>.api_keys]` ...
    pub tenants: BTreeMap<String, TenantSettings>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            enabled: true,
            interval: Duration::from_secs(10 * 60),
            api_keys: KindSettings::default(),
            client_secrets: KindSettings::default(),
            grants: KindSettings::default(),
            signing_keys: KindSettings::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// Rejects keys that mean nothing for a kind, so a setting that would be
/// silently ignored stops start-up instead.
fn check_kind(settings: &KindSettings, kind: CredentialKind) -> Result<(), String> {
    if settings.rotation_overlap.is_some() && kind == CredentialKind::Grant {
        return Err(format!(
            "rotation_overlap applies to api_keys, client_secrets and signing_keys only ({} are not rotated with an overlap)",
            kind.section()
        ));
    }
    if kind == CredentialKind::SigningKey
        && (settings.unused_alert.is_some() || settings.unused_revoke.is_some())
    {
        return Err(
            "signing_keys have no unused_alert / unused_revoke: the key that signs is in use by definition"
                .into(),
        );
    }
    Ok(())
}

fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

impl LifecycleConfig {
    /// Checks what serde cannot: which keys a kind takes, tenant names, the
    /// interval. The message names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval < Duration::from_secs(1) {
            return Err(("lifecycle.interval", "must be at least 1s".into()));
        }
        let kinds = [
            ("lifecycle.api_keys", &self.api_keys, CredentialKind::ApiKey),
            (
                "lifecycle.client_secrets",
                &self.client_secrets,
                CredentialKind::ClientSecret,
            ),
            ("lifecycle.grants", &self.grants, CredentialKind::Grant),
            (
                "lifecycle.signing_keys",
                &self.signing_keys,
                CredentialKind::SigningKey,
            ),
        ];
        for (key, settings, kind) in kinds {
            check_kind(settings, kind).map_err(|reason| (key, reason))?;
        }
        for (tenant, settings) in &self.tenants {
            if !valid_tenant_name(tenant) {
                return Err((
                    "lifecycle.tenants",
                    format!("{tenant:?}: use 1-64 characters from A-Z a-z 0-9 - _ . @"),
                ));
            }
            for (settings, kind) in [
                (&settings.api_keys, CredentialKind::ApiKey),
                (&settings.client_secrets, CredentialKind::ClientSecret),
                (&settings.grants, CredentialKind::Grant),
            ] {
                check_kind(settings, kind)
                    .map_err(|reason| ("lifecycle.tenants", format!("{tenant}: {reason}")))?;
            }
        }
        Ok(())
    }

    /// The policy in milliseconds, every fallback applied.
    pub fn policy(&self) -> LifecyclePolicy {
        let resolve = |kind, global: &KindSettings, tenant: Option<&KindSettings>| {
            let defaults = Thresholds::defaults(kind);
            let pick_limit =
                |get: fn(&KindSettings) -> Option<Limit>, default: Option<i64>| match tenant
                    .and_then(get)
                    .or_else(|| get(global))
                {
                    Some(Limit::After(d)) => Some(millis(d)),
                    Some(Limit::Off) => None,
                    None => default,
                };
            let pick_span = |get: fn(&KindSettings) -> Option<Span>, default: i64| {
                tenant
                    .and_then(get)
                    .or_else(|| get(global))
                    .map_or(default, |s| millis(s.0))
            };
            Thresholds {
                max_age: pick_limit(|s| s.max_age, defaults.max_age),
                warn_before: pick_span(|s| s.warn_before, defaults.warn_before),
                rotation_overlap: pick_span(|s| s.rotation_overlap, defaults.rotation_overlap),
                unused_alert: pick_limit(|s| s.unused_alert, defaults.unused_alert),
                unused_revoke: pick_limit(|s| s.unused_revoke, defaults.unused_revoke),
            }
        };
        let mut policy = LifecyclePolicy {
            api_keys: resolve(CredentialKind::ApiKey, &self.api_keys, None),
            client_secrets: resolve(CredentialKind::ClientSecret, &self.client_secrets, None),
            grants: resolve(CredentialKind::Grant, &self.grants, None),
            signing_keys: resolve(CredentialKind::SigningKey, &self.signing_keys, None),
            tenants: BTreeMap::new(),
        };
        for (name, tenant) in &self.tenants {
            policy.tenants.insert(
                name.clone(),
                [
                    resolve(
                        CredentialKind::ApiKey,
                        &self.api_keys,
                        Some(&tenant.api_keys),
                    ),
                    resolve(
                        CredentialKind::ClientSecret,
                        &self.client_secrets,
                        Some(&tenant.client_secrets),
                    ),
                    resolve(CredentialKind::Grant, &self.grants, Some(&tenant.grants)),
                ],
            );
        }
        policy
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1000;

    fn parse(text: &str) -> Result<LifecycleConfig, String> {
        toml::from_str::<LifecycleConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_issue() {
        let policy = LifecycleConfig::default().policy();
        let keys = policy.thresholds(CredentialKind::ApiKey, "default");
        assert_eq!(keys.max_age, Some(90 * DAY));
        assert_eq!(keys.warn_before, 14 * DAY);
        assert_eq!(keys.rotation_overlap, DAY);
        assert_eq!(keys.unused_alert, Some(15 * DAY));
        assert_eq!(keys.unused_revoke, Some(30 * DAY));
        let signing = policy.thresholds(CredentialKind::SigningKey, "default");
        assert_eq!(signing.max_age, Some(90 * DAY));
        assert_eq!(signing.rotation_overlap, DAY);
        assert_eq!(signing.unused_alert, None);
        assert_eq!(signing.unused_revoke, None);
    }

    #[test]
    fn a_tenant_overrides_only_what_it_names() {
        let config = parse(
            r#"
            [api_keys]
            max_age = "30d"
            unused_alert = "off"
            [grants]
            unused_revoke = "7d"
            [tenants.acme.api_keys]
            unused_revoke = "2d"
            [tenants.acme.grants]
            unused_revoke = "off"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        let policy = config.policy();
        let acme = policy.thresholds(CredentialKind::ApiKey, "acme");
        assert_eq!(acme.unused_revoke, Some(2 * DAY));
        assert_eq!(acme.max_age, Some(30 * DAY), "from [lifecycle.api_keys]");
        assert_eq!(acme.unused_alert, None, "off in [lifecycle.api_keys]");
        assert_eq!(acme.warn_before, 14 * DAY, "built-in default");
        let other = policy.thresholds(CredentialKind::ApiKey, "other");
        assert_eq!(other.unused_revoke, Some(30 * DAY));
        assert_eq!(
            policy
                .thresholds(CredentialKind::Grant, "acme")
                .unused_revoke,
            None
        );
        assert_eq!(
            policy
                .thresholds(CredentialKind::Grant, "other")
                .unused_revoke,
            Some(7 * DAY)
        );
        assert_eq!(
            policy
                .thresholds(CredentialKind::ClientSecret, "acme")
                .max_age,
            Some(90 * DAY)
        );
    }

    #[test]
    fn keys_that_mean_nothing_for_a_kind_are_refused() {
        for (text, key) in [
            ("[grants]\nrotation_overlap = \"1h\"\n", "lifecycle.grants"),
            (
                "[signing_keys]\nunused_revoke = \"1d\"\n",
                "lifecycle.signing_keys",
            ),
            (
                "[tenants.acme.grants]\nrotation_overlap = \"1h\"\n",
                "lifecycle.tenants",
            ),
            (
                "[tenants.\"a b\".grants]\nmax_age = \"1d\"\n",
                "lifecycle.tenants",
            ),
            ("interval = \"0s\"\n", "lifecycle.interval"),
        ] {
            let config = parse(text).unwrap();
            assert_eq!(config.validate().unwrap_err().0, key, "{text}");
        }
        // A client's secret is rotated with an overlap, like a key.
        let config = parse("[client_secrets]\nrotation_overlap = \"1h\"\n").unwrap();
        config.validate().unwrap();
        assert_eq!(
            config
                .policy()
                .thresholds(CredentialKind::ClientSecret, "acme")
                .rotation_overlap,
            3_600_000
        );
        // Signing keys belong to no tenant; unknown keys are refused by serde.
        assert!(parse("[tenants.acme.signing_keys]\nmax_age = \"1d\"\n").is_err());
        assert!(parse("[api_keys]\nmax_agee = \"1d\"\n").is_err());
        assert!(parse("[api_keys]\nmax_age = \"soon\"\n").is_err());
    }
}
