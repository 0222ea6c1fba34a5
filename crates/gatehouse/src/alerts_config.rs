//! `[alerts]`: the detectors' thresholds, the response to an incident, and
//! the webhook.

use std::time::Duration;

use gatehouse_alerts::{AlertSettings, OnIncident, WebhookSettings, webhook};
use gatehouse_core::duration_setting::parse as duration;
use gatehouse_core::secret_ref::SecretRef;
use serde::Deserialize;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnIncidentName {
    Revoke,
    Alert,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// An alert when one credential, user or source fails more than this
    /// many times within `auth_failure_window`. 0 switches it off.
    pub auth_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub auth_failure_window: Duration,
    /// Calls refused by role or outside a task grant that make an incident
    /// in one grant or session. 0 switches it off.
    pub violations: u32,
    #[serde(deserialize_with = "duration")]
    pub violation_window: Duration,
    pub on_incident: OnIncidentName,
    /// An alert when a task grant is used after its task's expected_duration.
    pub task_overrun: bool,
    pub webhook: Option<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let defaults = AlertSettings::default();
        AlertsConfig {
            auth_failures: defaults.auth_failures,
            auth_failure_window: defaults.auth_failure_window,
            violations: defaults.violations,
            violation_window: defaults.violation_window,
            on_incident: OnIncidentName::Revoke,
            task_overrun: defaults.task_overrun,
            webhook: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: Url,
    /// `env:NAME` or `file:PATH`: the HMAC-SHA256 key (at least 32 characters).
    pub secret: SecretRef,
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_first_retry", deserialize_with = "duration")]
    pub first_retry: Duration,
    #[serde(default = "default_max_retry", deserialize_with = "duration")]
    pub max_retry: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_attempts() -> u32 {
    12
}
fn default_first_retry() -> Duration {
    Duration::from_secs(5)
}
fn default_max_retry() -> Duration {
    Duration::from_secs(60 * 60)
}

impl AlertsConfig {
    pub fn settings(&self) -> AlertSettings {
        AlertSettings {
            auth_failures: self.auth_failures,
            auth_failure_window: self.auth_failure_window,
            violations: self.violations,
            violation_window: self.violation_window,
            on_incident: match self.on_incident {
                OnIncidentName::Revoke => OnIncident::Revoke,
                OnIncidentName::Alert => OnIncident::Alert,
            },
            task_overrun: self.task_overrun,
        }
    }

    /// What start-up refuses: `(key, reason)`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.auth_failures > 0 && self.auth_failure_window < Duration::from_secs(1) {
            return Err(("alerts.auth_failure_window", "must be at least 1s".into()));
        }
        if self.violations > 0 && self.violation_window < Duration::from_secs(1) {
            return Err(("alerts.violation_window", "must be at least 1s".into()));
        }
        let Some(hook) = &self.webhook else {
            return Ok(());
        };
        webhook::check_url(&hook.url).map_err(|e| ("alerts.webhook.url", e))?;
        if hook.secret.is_tenant() {
            return Err((
                "alerts.webhook.secret",
                "must be env:NAME or file:PATH (the webhook is not a tenant's)".into(),
            ));
        }
        if hook.timeout < Duration::from_secs(1) || hook.timeout > Duration::from_secs(60) {
            return Err((
                "alerts.webhook.timeout",
                "must be between 1s and 60s".into(),
            ));
        }
        if hook.max_attempts == 0 {
            return Err(("alerts.webhook.max_attempts", "must be at least 1".into()));
        }
        if hook.first_retry.is_zero() || hook.first_retry > hook.max_retry {
            return Err((
                "alerts.webhook.first_retry",
                "must be above 0 and at most max_retry".into(),
            ));
        }
        Ok(())
    }

    /// The webhook with its secret read (at start-up: a secret that cannot
    /// be read stops it, naming where it was looked for, never the value).
    pub async fn webhook_settings(&self) -> anyhow::Result<Option<WebhookSettings>> {
        let Some(hook) = &self.webhook else {
            return Ok(None);
        };
        let secret = hook
            .secret
            .resolve(None, None)
            .await
            .map_err(|e| anyhow::anyhow!("alerts.webhook.secret: {e}"))?;
        let secret = secret.expose().as_bytes().to_vec();
        if secret.len() < webhook::MIN_SECRET_LEN {
            anyhow::bail!(
                "alerts.webhook.secret: must be at least {} characters",
                webhook::MIN_SECRET_LEN
            );
        }
        Ok(Some(WebhookSettings {
            url: hook.url.clone(),
            secret,
            timeout: hook.timeout,
            max_attempts: hook.max_attempts,
            first_retry: hook.first_retry,
            max_retry: hook.max_retry,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AlertsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_match_the_detectors() {
        assert_eq!(AlertsConfig::default().settings(), AlertSettings::default());
        let settings = parse("").settings();
        assert_eq!(settings.auth_failures, 3);
        assert_eq!(settings.violations, 5);
        assert_eq!(settings.on_incident, OnIncident::Revoke);
    }

    #[test]
    fn settings_are_read() {
        let config = parse(
            r#"
            auth_failures = 10
            auth_failure_window = "5m"
            violations = 0
            on_incident = "alert"
            task_overrun = false
            [webhook]
            url = "https://siem.example/hook"
            secret = "env:GATEHOUSE_ALERT_SECRET"
            max_attempts = 3
            "#,
        );
        assert_eq!(config.check(), Ok(()));
        let settings = config.settings();
        assert_eq!(settings.auth_failures, 10);
        assert_eq!(settings.auth_failure_window, Duration::from_secs(300));
        assert_eq!(settings.violations, 0);
        assert_eq!(settings.on_incident, OnIncident::Alert);
        assert!(!settings.task_overrun);
        let hook = config.webhook.unwrap();
        assert_eq!(hook.max_attempts, 3);
        assert_eq!(hook.first_retry, Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_name_their_key() {
        for (text, key) in [
            (r#"on_incident = "ignore""#, None),
            (
                r#"auth_failure_window = "0s""#,
                Some("alerts.auth_failure_window"),
            ),
            (
                "[webhook]\nurl = \"http://siem.example/\"\nsecret = \"env:X\"",
                Some("alerts.webhook.url"),
            ),
            (
                "[webhook]\nurl = \"https://siem.example/\"\nsecret = \"tenant:X\"",
                Some("alerts.webhook.secret"),
            ),
            (
                "[webhook]\nurl = \"https://siem.example/\"\nsecret = \"env:X\"\nmax_attempts = 0",
                Some("alerts.webhook.max_attempts"),
            ),
        ] {
            match (toml::from_str::<AlertsConfig>(text), key) {
                (Err(_), None) => {}
                (Ok(config), Some(key)) => assert_eq!(config.check().unwrap_err().0, key),
                (result, _) => panic!("{text}: {:?}", result.map(|c| c.check())),
            }
        }
    }
}
