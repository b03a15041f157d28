//! Delivery to an SMTP relay through lettre: pooled connections, STARTTLS or TLS, a rate
//! limit, and a few quick tries on temporary failures before the engine's own retry.

use super::settings::{SmtpSettings, TlsMode};
use super::{MailError, Mailer, OutgoingEmail, message};
use crate::config::ConfigError;
use lettre::message::Mailbox;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

pub struct SmtpMailer {
    /// Always `Some` until dropped (see the `Drop` impl).
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    limiter: RateLimiter,
    retry_delays: Vec<Duration>,
    /// `host:port`, for error messages and logs.
    relay: String,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("relay", &self.relay)
            .field("retry_delays", &self.retry_delays)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Builds the transport; nothing connects until the first send. Must run inside the
    /// tokio runtime: lettre's connection pool starts its housekeeping task right away.
    pub fn new(settings: &SmtpSettings, from: Mailbox) -> Result<Self, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::invalid(
                "mail.smtp",
                "the SMTP mailer must be built inside the tokio runtime (a bug in the caller)",
            ));
        }
        let host = settings.host.trim();
        let tls = match settings.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls | TlsMode::Tls => {
                let params = TlsParameters::new(host.to_string()).map_err(|e| {
                    ConfigError::invalid("mail.smtp.host", format!("cannot set up TLS: {e}"))
                })?;
                if settings.tls == TlsMode::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(settings.port())
            .tls(tls)
            .timeout(Some(settings.timeout()))
            .pool_config(PoolConfig::new().max_size(settings.pool_size.max(1)));
        if let (Some(user), Some(password)) = (&settings.username, settings.password()?) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Self {
            transport: Some(builder.build()),
            from,
            limiter: RateLimiter::new(settings.rate_per_second),
            retry_delays: settings.retry_delays(),
            relay: format!("{host}:{}", settings.port()),
        })
    }
}

impl Drop for SmtpMailer {
    fn drop(&mut self) {
        // lettre's pool spawns a task to close its connections when dropped, which panics
        // outside a runtime (e.g. the last `Arc` released after the runtime shut down).
        // Then there is nothing left to close politely: let the process exit do it.
        if let Some(transport) = self.transport.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            std::mem::forget(transport);
        }
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let message = message::build(&self.from, email)?;
        let mut delays = self.retry_delays.iter();
        let mut tries = 0;
        loop {
            tries += 1;
            self.limiter.acquire().await;
            let transport = self.transport.as_ref().expect("present until dropped");
            let error = match transport.send(message.clone()).await {
                Ok(_) => {
                    tracing::info!(
                        to = %crate::mask::email(&email.to),
                        message_id = %email.message_id,
                        tries,
                        "email accepted by relay"
                    );
                    return Ok(());
                }
                Err(e) => classify(&e, &self.relay),
            };
            match (&error, delays.next()) {
                (MailError::Transient(reason), Some(delay)) => {
                    tracing::warn!(
                        message_id = %email.message_id,
                        tries,
                        retry_in_ms = delay.as_millis() as u64,
                        "temporary mail failure, trying again: {}", crate::mask::emails_in(&reason.to_string())
                    );
                    tokio::time::sleep(*delay).await;
                }
                _ => {
                    tracing::warn!(
                        to = %crate::mask::email(&email.to),
                        message_id = %email.message_id,
                        tries,
                        "email not sent: {}", crate::mask::emails_in(&error.to_string())
                    );
                    return Err(error);
                }
            }
        }
    }
}

/// 5xx is permanent (with the server's words); 4xx and every kind of connection trouble
/// may pass; a client-side refusal (e.g. the relay lacks a needed extension) will not.
fn classify(e: &lettre::transport::smtp::Error, relay: &str) -> MailError {
    // lettre's Display carries the code and every line of the server's reply.
    let text = e.to_string();
    if e.is_permanent() {
        MailError::Permanent(text)
    } else if e.is_transient() || e.is_timeout() || e.is_tls() || e.is_transport_shutdown() {
        MailError::Transient(format!("{relay}: {text}"))
    } else if e.is_client() {
        MailError::Permanent(format!("{relay}: {text}"))
    } else {
        // Connection refused, reset, unreadable reply: the relay may be back soon.
        MailError::Transient(format!("{relay}: {text}"))
    }
}

/// At most `rate` sends per second across every caller: each send takes the next free
/// slot, `1/rate` after the previous one. No burst, so a relay's per-second limit holds.
struct RateLimiter {
    interval: Duration,
    next_slot: tokio::sync::Mutex<Option<Instant>>,
}

impl RateLimiter {
    fn new(rate_per_second: f64) -> Self {
        let interval = if rate_per_second.is_finite() && rate_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / rate_per_second)
        } else {
            Duration::ZERO
        };
        Self {
            interval,
            next_slot: tokio::sync::Mutex::new(None),
        }
    }

    async fn acquire(&self) {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = match *next {
                Some(at) if at > now => at,
                _ => now,
            };
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time (tokio's test-util clock is not enabled in this crate): only lower bounds
    // are asserted, which a busy machine cannot break.
    #[tokio::test]
    async fn the_limiter_spaces_sends_evenly() {
        let limiter = std::sync::Arc::new(RateLimiter::new(50.0));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                Instant::now() - start
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        for (i, elapsed) in times.iter().enumerate() {
            let slot = Duration::from_millis(20 * i as u64);
            assert!(
                *elapsed >= slot,
                "send {i} at {elapsed:?}, before its slot {slot:?}"
            );
        }
        // After a quiet spell the next send goes at once: no debt is carried over.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = Instant::now();
        limiter.acquire().await;
        assert!(before.elapsed() < Duration::from_millis(15));
    }

    #[tokio::test]
    async fn builds_for_every_tls_mode() {
        for (tls, port) in [("starttls", 587), ("tls", 465), ("none", 25)] {
            let settings: SmtpSettings = toml::from_str(&format!(
                "host = \"localhost\"\ntls = \"{tls}\"\nusername = \"u\"\npassword = \"p\""
            ))
            .unwrap();
            let mailer = SmtpMailer::new(&settings, "a@example.com".parse().unwrap()).unwrap();
            assert_eq!(mailer.relay, format!("localhost:{port}"));
            assert!(!format!("{mailer:?}").contains("\"p\""));
        }
    }

    #[test]
    fn outside_a_runtime_it_is_an_error_not_a_panic() {
        let settings: SmtpSettings = toml::from_str("host = \"localhost\"").unwrap();
        let err = SmtpMailer::new(&settings, "a@example.com".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }

    #[test]
    fn dropping_after_the_runtime_is_gone_does_not_panic() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let settings: SmtpSettings = toml::from_str("host = \"localhost\"").unwrap();
        let mailer = runtime
            .block_on(async { SmtpMailer::new(&settings, "a@example.com".parse().unwrap()) })
            .unwrap();
        drop(runtime);
        drop(mailer);
    }
}
