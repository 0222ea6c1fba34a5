//! The alert webhook: each alert POSTed as JSON to one URL, signed so the
//! receiver can tell it came from Gatehouse and is fresh.
//!
//! Signature: header `Gatehouse-Signature: t=<unix seconds>,v1=<hex>`,
//! where `<hex>` is HMAC-SHA256 with the shared secret over
//! `<unix seconds>.<body>` (the exact bytes of the body). A receiver
//! recomputes it, compares in constant time, and rejects a `t` more than a
//! few minutes from its own clock (a replay).
//!
//! Delivery runs from the store's outbox, not the request path: an alert
//! raised on any instance (or by a command) is claimed by one server,
//! POSTed, and on failure (an error, a timeout, a status other than 2xx)
//! retried with exponential backoff until `max_attempts`, then marked
//! failed (it stays in `gatehouse alerts list`).

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use gatehouse_core::{Clock, Timestamp};
use gatehouse_store::{AlertRecord, DeliveryResult, Store, StoreError};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use url::Url;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Gatehouse-Signature";
/// Which attempt this is (1 for the first).
pub const ATTEMPT_HEADER: &str = "Gatehouse-Delivery-Attempt";
/// The alert's id, also in the body.
pub const ALERT_ID_HEADER: &str = "Gatehouse-Alert-Id";
/// A secret shorter than this is refused at start-up.
pub const MIN_SECRET_LEN: usize = 32;
/// How often the outbox is looked at when nothing wakes the sender (an
/// alert raised by another instance or a command, a retry falling due).
const POLL: Duration = Duration::from_secs(2);

#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: Url,
    /// The HMAC key (never logged: `Debug` leaves it out).
    pub secret: Vec<u8>,
    /// For one attempt, connecting included.
    pub timeout: Duration,
    /// Attempts in all before the alert is marked failed.
    pub max_attempts: u32,
    /// The wait after the first failure; doubled after each further one.
    pub first_retry: Duration,
    pub max_retry: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("first_retry", &self.first_retry)
            .field("max_retry", &self.max_retry)
            .finish_non_exhaustive()
    }
}

/// The URL must be https, or http to a loopback address (a receiver on
/// the same host); no userinfo (the secret goes in the signature, and a
/// password in a URL ends up in logs).
pub fn check_url(url: &Url) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the webhook URL must not contain a user name or password".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if gatehouse_core::is_loopback_url(url) => Ok(()),
        "http" => {
            Err("the webhook URL must be https (plain http only to a loopback address)".into())
        }
        other => Err(format!("the webhook URL's scheme {other:?} is not http(s)")),
    }
}

/// The body sent for an alert.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    code: &'a str,
    raised_at: String,
    tenant: Option<&'a str>,
    subject: &'a str,
    detail: &'a str,
}

pub fn payload(alert: &AlertRecord) -> Vec<u8> {
    let payload = Payload {
        kind: "gatehouse.alert",
        id: &alert.id,
        code: &alert.code,
        raised_at: alert.raised_at.to_rfc3339(),
        tenant: alert.tenant.as_deref(),
        subject: &alert.subject,
        detail: &alert.detail,
    };
    // A struct of strings always serializes.
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// The `Gatehouse-Signature` value for `body` sent at `unix_secs`.
pub fn signature(secret: &[u8], unix_secs: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(unix_secs.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("t={unix_secs},v1={}", hex::encode(context.sign().as_ref()))
}

/// The wait before attempt `attempt + 1`, after `attempt` failed ones.
pub fn backoff(settings: &WebhookSettings, failed_attempts: u32) -> Duration {
    let doublings = failed_attempts.saturating_sub(1).min(30);
    settings
        .first_retry
        .saturating_mul(1_u32 << doublings)
        .min(settings.max_retry)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

struct Sender {
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
}

impl Sender {
    /// Delivers one due alert; whether there was one.
    async fn deliver_one(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        // Claimed for longer than an attempt can take; a claim left by an
        // instance that died mid-attempt runs out and another retries.
        let until = now.plus_millis(millis(self.settings.timeout) + 30_000);
        let Some(alert) = self.store.claim_alert_delivery(now, until).await? else {
            return Ok(false);
        };
        let attempt = alert.delivery_attempts + 1;
        let result = match self.post(&alert, attempt).await {
            Ok(()) => {
                tracing::info!(alert = %alert.id, attempt, "alert delivered to the webhook");
                DeliveryResult::Delivered
            }
            Err(error) if attempt >= self.settings.max_attempts => {
                tracing::error!(alert = %alert.id, attempt, %error, "alert webhook: giving up");
                DeliveryResult::Failed { error }
            }
            Err(error) => {
                let wait = backoff(&self.settings, attempt);
                tracing::warn!(
                    alert = %alert.id,
                    attempt,
                    %error,
                    retry_in_ms = millis(wait),
                    "alert webhook failed; will retry"
                );
                DeliveryResult::Retry {
                    next_at: self.clock.now().plus_millis(millis(wait)),
                    error,
                }
            }
        };
        self.store.finish_alert_delivery(&alert.id, &result).await?;
        Ok(true)
    }

    async fn post(&self, alert: &AlertRecord, attempt: u32) -> Result<(), String> {
        let body = payload(alert);
        let sent_at = Timestamp::as_secs(self.clock.now());
        let response = self
            .client
            .post(self.settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(&self.settings.secret, sent_at, &body),
            )
            .header(ATTEMPT_HEADER, attempt.to_string())
            .header(ALERT_ID_HEADER, &alert.id)
            .body(body)
            .send()
            .await
            // Without the URL: reqwest's errors name it, and an operator
            // may have put a token in its query.
            .map_err(|e| format!("request failed: {}", e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// Starts the sender: it delivers what is due, then waits to be woken (a
/// new alert here) or for the next look at the outbox.
pub fn spawn_webhook(
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
) -> Result<JoinHandle<()>, String> {
    check_url(&settings.url)?;
    // No proxy from the environment: the signed deliveries go where the
    // configuration says, as every outbound client of Gatehouse does.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the webhook's HTTP client: {e}"))?;
    let sender = Sender {
        store,
        settings,
        clock,
        client,
    };
    Ok(tokio::spawn(async move {
        loop {
            match sender.deliver_one().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "alert webhook: cannot read the outbox"),
            }
            // Whichever first: a new alert, or the next look (retries and
            // alerts raised elsewhere).
            let _ = tokio::time::timeout(POLL, wake.notified()).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            url: Url::parse("https://siem.example/hook").unwrap(),
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
        }
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Independently computed: python3 -c 'import hmac,hashlib;
        // print(hmac.new(b"secret", b"1700000000.{\"a\":1}", hashlib.sha256).hexdigest())'
        assert_eq!(
            signature(b"secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn a_different_body_time_or_secret_changes_the_signature() {
        let base = signature(b"secret", 1, b"body");
        assert_ne!(base, signature(b"secret", 1, b"bodY"));
        assert_ne!(base, signature(b"secret", 2, b"body"));
        assert_ne!(base, signature(b"secreT", 1, b"body"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let settings = settings();
        let waits: Vec<u64> = (1..=12).map(|n| backoff(&settings, n).as_secs()).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
    }

    #[test]
    fn only_https_or_loopback_http_without_userinfo() {
        for ok in [
            "https://siem.example/hook",
            "http://127.0.0.1:9000/hook",
            "http://[::1]:9000/",
            "http://localhost/x",
        ] {
            assert_eq!(check_url(&Url::parse(ok).unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "http://siem.example/hook",
            "https://user:pw@siem.example/hook",
            "ftp://siem.example/",
        ] {
            assert!(check_url(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let text = format!("{:?}", settings());
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }

    #[test]
    fn the_payload_names_the_alert() {
        let alert = AlertRecord {
            id: "0192-alert".into(),
            raised_at: Timestamp(1_700_000_000_000),
            code: "policy_incident".into(),
            tenant: Some("acme".into()),
            subject: "grant tg_1".into(),
            detail: "5 refused calls; the grant was revoked".into(),
            acked_at: None,
            acked_by: None,
            delivery_state: gatehouse_store::DeliveryState::Pending,
            delivery_attempts: 0,
            next_delivery_at: None,
            last_delivery_error: None,
        };
        let body: serde_json::Value = serde_json::from_slice(&payload(&alert)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "gatehouse.alert",
                "id": "0192-alert",
                "code": "policy_incident",
                "raised_at": "2023-11-14T22:13:20.000Z",
                "tenant": "acme",
                "subject": "grant tg_1",
                "detail": "5 refused calls; the grant was revoked",
            })
        );
    }
}
