//! Operations alerts: a JSON webhook signed with HMAC-SHA256 and/or an email to an
//! operations address, on hard declines, blocked debits and requests the gateway rejected
//! (found in the event log), on
//! entry into configured overdue buckets and when an account becomes reportable. Alerts
//! are work rows (`alerts`), one per cause and channel, delivered with backoff: a restart
//! or an unreachable receiver loses nothing.
//!
//! Webhook request: `POST <url>` with body `{"id", "kind", "at", "agreement", ...}` and
//! headers `X-Repayd-Alert-Id` (the dedupe key: receivers de-duplicate on it),
//! `X-Repayd-Timestamp` (Unix seconds) and `X-Repayd-Signature: sha256=<hex>`, the
//! HMAC-SHA256 under the shared secret of `<timestamp>.<body>`. Any 2xx is delivered.

use super::{Engine, EngineError};
use crate::clock::to_epoch_ms;
use crate::config::ConfigError;
use crate::store::NewEvent;
use crate::store::delinquency::{AlertRow, NewAlert};
use chrono::Duration;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// `[alerts]`: where operations hear about accounts at risk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// HTTPS (or loopback HTTP) endpoint receiving signed JSON alerts; none: no webhook.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key, inline (best from REPAYD__ALERTS__WEBHOOK_SECRET) ...
    pub webhook_secret: Option<SecretString>,
    /// ... or in a file, e.g. `$CREDENTIALS_DIRECTORY/alerts-webhook-secret`.
    pub webhook_secret_file: Option<PathBuf>,
    /// Operations mailbox; none: no alert emails. Sent through `[mail]`.
    pub ops_email: Option<String>,
    /// Alert on `debit_declined_hard` and `debit_blocked` events.
    pub on_hard_decline: bool,
    /// Alert when an account becomes reportable to the credit bureau.
    pub on_reportable: bool,
    /// Waits between delivery tries, in seconds; the last repeats until `max_tries`.
    pub backoff_seconds: Vec<u32>,
    pub max_tries: u32,
    pub timeout_seconds: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: None,
            webhook_secret_file: None,
            ops_email: None,
            on_hard_decline: true,
            on_reportable: true,
            backoff_seconds: vec![30, 120, 600, 3600],
            max_tries: 12,
            timeout_seconds: 10,
        }
    }
}

impl AlertSettings {
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if let Some(url) = &self.webhook_url {
            match reqwest::Url::parse(url) {
                Ok(u) => {
                    let loopback =
                        matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
                    if u.scheme() != "https" && !(u.scheme() == "http" && loopback) {
                        problems.push(ConfigError::invalid(
                            "alerts.webhook_url",
                            "must be https:// (plain http only to loopback)",
                        ));
                    }
                }
                Err(e) => problems.push(ConfigError::invalid("alerts.webhook_url", e.to_string())),
            }
            if self.webhook_secret.is_none() && self.webhook_secret_file.is_none() {
                problems.push(ConfigError::invalid(
                    "alerts.webhook_secret",
                    "is required with alerts.webhook_url (or alerts.webhook_secret_file)",
                ));
            }
        }
        if let Some(addr) = &self.ops_email
            && addr.parse::<lettre::Address>().is_err()
        {
            problems.push(ConfigError::invalid(
                "alerts.ops_email",
                format!("{addr:?} is not an email address"),
            ));
        }
        if self.backoff_seconds.is_empty() {
            problems.push(ConfigError::invalid(
                "alerts.backoff_seconds",
                "needs at least one entry",
            ));
        }
        problems.extend(crate::config::out_of_range(
            "alerts.max_tries",
            self.max_tries,
            1,
            1_000,
        ));
        problems.extend(crate::config::out_of_range(
            "alerts.timeout_seconds",
            self.timeout_seconds,
            1,
            600,
        ));
        problems.extend(crate::config::list_out_of_range(
            "alerts.backoff_seconds",
            &self.backoff_seconds,
            0,
            86_400,
        ));
        problems
    }
}

/// The alert settings the engine works by.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<SecretString>,
    pub ops_email: Option<String>,
    pub on_hard_decline: bool,
    pub on_reportable: bool,
    pub backoff: Vec<Duration>,
    pub max_tries: u32,
    pub timeout: std::time::Duration,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self::from_settings(&AlertSettings::default())
    }
}

impl AlertPolicy {
    /// Assumes the secret was resolved (`webhook_secret_file` read) by `Settings::load`.
    pub fn from_settings(s: &AlertSettings) -> Self {
        Self {
            webhook_url: s.webhook_url.clone(),
            webhook_secret: s.webhook_secret.clone(),
            ops_email: s.ops_email.clone(),
            on_hard_decline: s.on_hard_decline,
            on_reportable: s.on_reportable,
            backoff: s
                .backoff_seconds
                .iter()
                .map(|x| Duration::seconds(i64::from(*x)))
                .collect(),
            max_tries: s.max_tries,
            timeout: std::time::Duration::from_secs(u64::from(s.timeout_seconds)),
        }
    }

    /// The channels alerts go to.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.webhook_url.is_some() {
            c.push("webhook");
        }
        if self.ops_email.is_some() {
            c.push("email");
        }
        c
    }

    /// One alert row per configured channel for one cause.
    pub fn rows(
        &self,
        kind: &str,
        key: &str,
        agreement_id: Option<i64>,
        source_event_id: Option<i64>,
        payload: serde_json::Value,
        at_ms: i64,
    ) -> Vec<NewAlert> {
        self.channels()
            .into_iter()
            .map(|channel| NewAlert {
                kind: kind.to_string(),
                channel,
                dedupe_key: format!("{key}:{channel}"),
                agreement_id,
                source_event_id,
                payload: payload.clone(),
                scheduled_at_ms: at_ms,
            })
            .collect()
    }

    fn wait(&self, tries: u32) -> Duration {
        let idx = (tries as usize).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(idx)
            .copied()
            .unwrap_or_else(|| Duration::minutes(5))
    }
}

/// HMAC-SHA256 (RFC 2104) over `message` with `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0_u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36_u8; BLOCK];
    let mut opad = [0x5c_u8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// The `X-Repayd-Signature` value for a body sent at `timestamp` (Unix seconds).
pub fn signature(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.expose_secret().as_bytes(), &signed))
    )
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AlertReport {
    pub enqueued: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
}

impl Engine {
    /// Turns new hard-decline, blocked-debit, gateway-rejected and returned-debit events
    /// into alert rows.
    pub async fn enqueue_event_alerts(&self) -> Result<u64, EngineError> {
        let policy = self.policy();
        let alerts = &policy.overdue.alerts;
        if alerts.channels().is_empty() {
            return Ok(0);
        }
        // A request the gateway rejected (4xx needing a human) always alerts: nothing else
        // will happen to that debit until an operator re-queues it.
        // So does a debit the bank returned: money the ledger counted is gone again.
        // So does a gateway that refuses look-ups (once per episode, see
        // `Engine::lookup_refused`): unknown outcomes cannot be settled until then.
        let kinds: &[&str] = if alerts.on_hard_decline {
            &[
                "debit_declined_hard",
                "debit_blocked",
                "debit_rejected",
                "debit_returned",
                "gateway_lookup_refused",
            ]
        } else {
            &["debit_rejected", "debit_returned", "gateway_lookup_refused"]
        };
        let now_ms = to_epoch_ms(self.clock.now());
        let events = self.store.alertable_events(kinds, 500).await?;
        let mut rows = Vec::new();
        for e in events {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap_or_default();
            let payload = serde_json::json!({
                "id": format!("event-{}", e.id),
                "kind": e.kind,
                "at": crate::clock::from_epoch_ms(e.at_ms).to_rfc3339(),
                "agreement": e.agreement_external_id,
                "agreement_id": e.agreement_id,
                "installment_id": e.installment_id,
                "attempt_id": e.attempt_id,
                "code": detail.get("code").or_else(|| detail.get("reason")),
                "reason": detail.get("reason"),
            });
            rows.extend(alerts.rows(
                &e.kind,
                &format!("event-{}", e.id),
                e.agreement_id,
                Some(e.id),
                payload,
                now_ms,
            ));
        }
        if rows.is_empty() {
            return Ok(0);
        }
        Ok(self.store.insert_alerts(&rows, now_ms).await?)
    }

    /// Delivers due alerts until none is due.
    pub async fn run_alerts(&self) -> Result<AlertReport, EngineError> {
        let mut report = AlertReport {
            enqueued: self.enqueue_event_alerts().await?,
            ..Default::default()
        };
        let policy = self.policy();
        let alerts = &policy.overdue.alerts;
        let client = if alerts.webhook_url.is_some() {
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                reqwest::Client::builder()
                    .timeout(alerts.timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("repayd/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| EngineError::Data(format!("alerts webhook client: {e}")))?,
            )
        } else {
            None
        };
        loop {
            let now = self.clock.now();
            let batch = self
                .store
                .claim_due_alerts(
                    &self.owner,
                    to_epoch_ms(now),
                    to_epoch_ms(now + policy.debit.lease),
                    50,
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            for alert in batch {
                let outcome = match alert.channel.as_str() {
                    "webhook" => self.deliver_webhook(client.as_ref(), &alert).await,
                    _ => self.deliver_email(&alert).await,
                };
                let now = self.clock.now();
                let now_ms = to_epoch_ms(now);
                let ev = |kind: &'static str, detail: serde_json::Value| NewEvent {
                    at_ms: now_ms,
                    kind,
                    agreement_id: alert.agreement_id,
                    installment_id: None,
                    attempt_id: None,
                    detail,
                };
                let tries = alert.tries as u32 + 1;
                let result = match outcome {
                    Ok(()) => {
                        report.sent += 1;
                        self.store
                            .finish_alert(
                                alert.id,
                                &self.owner,
                                "sent",
                                None,
                                None,
                                &ev(
                                    "alert_sent",
                                    serde_json::json!({"alert_id": alert.id, "kind": alert.kind, "channel": alert.channel}),
                                ),
                                now_ms,
                            )
                            .await
                    }
                    Err(e) if tries < alerts.max_tries => {
                        report.retried += 1;
                        let at = now + alerts.wait(alert.tries as u32);
                        tracing::warn!(alert_id = alert.id, channel = %alert.channel, error = %e, retry_at = %at.to_rfc3339(), "alert not delivered; will retry");
                        self.store
                            .finish_alert(
                                alert.id,
                                &self.owner,
                                "pending",
                                Some(to_epoch_ms(at)),
                                Some(&e),
                                &ev(
                                    "alert_retry",
                                    serde_json::json!({"alert_id": alert.id, "error": e, "retry_at": at.to_rfc3339()}),
                                ),
                                now_ms,
                            )
                            .await
                    }
                    Err(e) => {
                        report.failed += 1;
                        tracing::error!(alert_id = alert.id, channel = %alert.channel, error = %e, "alert given up after repeated failures");
                        self.store
                            .finish_alert(
                                alert.id,
                                &self.owner,
                                "failed",
                                None,
                                Some(&e),
                                &ev(
                                    "alert_failed",
                                    serde_json::json!({"alert_id": alert.id, "error": e}),
                                ),
                                now_ms,
                            )
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(alert_id = alert.id, error = %e, "alert outcome not recorded; it is retried when its lease expires");
                }
            }
        }
        Ok(report)
    }

    async fn deliver_webhook(
        &self,
        client: Option<&reqwest::Client>,
        alert: &AlertRow,
    ) -> Result<(), String> {
        let policy = self.policy();
        let alerts = &policy.overdue.alerts;
        let (Some(client), Some(url), Some(secret)) =
            (client, &alerts.webhook_url, &alerts.webhook_secret)
        else {
            return Err("webhook no longer configured".into());
        };
        let body = alert.payload.clone().into_bytes();
        let timestamp = self.clock.now().timestamp();
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("x-repayd-alert-id", alert.dedupe_key.as_str())
            .header("x-repayd-timestamp", timestamp.to_string())
            .header("x-repayd-signature", signature(secret, timestamp, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("webhook request failed: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", response.status()))
        }
    }

    async fn deliver_email(&self, alert: &AlertRow) -> Result<(), String> {
        let policy = self.policy();
        let Some(to) = &policy.overdue.alerts.ops_email else {
            return Err("ops_email no longer configured".into());
        };
        let Some(mail) = &self.mail else {
            return Err("no mailer configured".into());
        };
        let payload: serde_json::Value = serde_json::from_str(&alert.payload).unwrap_or_default();
        let agreement = payload["agreement"].as_str().unwrap_or("-");
        let subject = format!("[repayd] {} on agreement {agreement}", alert.kind);
        let text = format!(
            "repayd alert: {}\n\n{}\n",
            alert.kind,
            serde_json::to_string_pretty(&payload).unwrap_or_default()
        );
        let html = format!(
            "<p>repayd alert: <b>{}</b></p><pre>{}</pre>",
            html_escape(&alert.kind),
            html_escape(&serde_json::to_string_pretty(&payload).unwrap_or_default())
        );
        let email = crate::mail::OutgoingEmail {
            to: to.clone(),
            to_name: String::new(),
            subject,
            text,
            html,
            message_id: format!(
                "repayd.alert{}@{}",
                alert.id,
                mail.settings.message_id_domain()
            ),
            locale: "en".into(),
        };
        mail.mailer.send(&email).await.map_err(|e| e.to_string())
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn settings_check_names_keys() {
        let s = AlertSettings {
            webhook_url: Some("http://example.com/hook".into()),
            ops_email: Some("not an address".into()),
            max_tries: 0,
            ..Default::default()
        };
        let keys: Vec<String> = s
            .check()
            .into_iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key,
                other => other.to_string(),
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                "alerts.webhook_url",
                "alerts.webhook_secret",
                "alerts.ops_email",
                "alerts.max_tries"
            ]
        );
    }
}
