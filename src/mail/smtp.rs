//! Delivery to an SMTP relay through lettre: a pool of kept-open connections (several
//! messages each), STARTTLS or TLS, a rate limit, and a few quick tries on temporary
//! failures before the engine's own retry.
//!
//! The pool is this module's own, over lettre's `AsyncSmtpConnection`, rather than
//! lettre's pooled transport, for two reasons measured with `repayd bench --only smtp`:
//! lettre's transport opens its sockets without TCP_NODELAY and writes the message and
//! its closing `.` separately, so every message waited out a delayed ACK (about 40 ms:
//! 20-25 messages/s per connection whatever the relay), and it sends NOOP before every
//! reuse, one more round trip per message. Here each socket has TCP_NODELAY, and a
//! connection is only probed with NOOP after it sat idle. lettre 0.11 does not pipeline
//! (PIPELINING); a message costs MAIL, RCPT, DATA and the body: four round trips.

use super::settings::{SmtpSettings, TlsMode};
use super::{MailError, Mailer, OutgoingEmail, message};
use crate::config::ConfigError;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use std::fmt;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// A kept-open connection idle longer than this is probed with NOOP before reuse.
const PROBE_AFTER_IDLE: Duration = Duration::from_secs(5);
/// A connection idle longer than this is closed rather than reused (relays drop idle
/// clients after a minute or so).
const CLOSE_AFTER_IDLE: Duration = Duration::from_secs(50);

pub struct SmtpMailer {
    host: String,
    port: u16,
    /// TLS parameters and whether TLS is implicit (port 465); replaced by
    /// [`SmtpMailer::reload_tls`].
    tls: std::sync::RwLock<Option<(TlsParameters, bool)>>,
    credentials: Option<Credentials>,
    timeout: Duration,
    hello: ClientId,
    /// At most `pool_size` connections, each used by one send at a time.
    slots: Semaphore,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    from: Mailbox,
    limiter: RateLimiter,
    retry_delays: Vec<Duration>,
    /// `host:port`, for error messages and logs.
    relay: String,
}

/// TLS parameters built by [`SmtpMailer::prepare_tls`], waiting to be installed.
pub struct PreparedTls(Option<(TlsParameters, bool)>);

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("relay", &self.relay)
            .field("retry_delays", &self.retry_delays)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Builds the mailer; nothing connects until the first send. Must run inside the
    /// tokio runtime (as every send does).
    pub fn new(settings: &SmtpSettings, from: Mailbox) -> Result<Self, ConfigError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::invalid(
                "mail.smtp",
                "the SMTP mailer must be built inside the tokio runtime (a bug in the caller)",
            ));
        }
        let host = settings.host.trim().to_string();
        let tls = std::sync::RwLock::new(tls_parameters(settings)?);
        let credentials = match (&settings.username, settings.password()?) {
            (Some(user), Some(password)) => Some(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            )),
            _ => None,
        };
        let pool_size = settings.pool_size.max(1) as usize;
        Ok(Self {
            relay: format!("{host}:{}", settings.port()),
            port: settings.port(),
            host,
            tls,
            credentials,
            timeout: settings.timeout(),
            hello: ClientId::default(),
            slots: Semaphore::new(pool_size),
            idle: Mutex::new(Vec::with_capacity(pool_size)),
            from,
            limiter: RateLimiter::new(settings.rate_per_second),
            retry_delays: settings.retry_delays(),
        })
    }

    /// Applies a new CA bundle (or TLS mode) to connections opened from now on; pooled
    /// connections, already verified, are used until they close. On an error (an
    /// unreadable or invalid bundle) the parameters in force stay.
    pub fn reload_tls(&self, settings: &SmtpSettings) -> Result<(), ConfigError> {
        let prepared = Self::prepare_tls(settings)?;
        self.install_tls(prepared);
        Ok(())
    }

    /// The first half of [`SmtpMailer::reload_tls`]: the parameters, not yet in use.
    pub fn prepare_tls(settings: &SmtpSettings) -> Result<PreparedTls, ConfigError> {
        Ok(PreparedTls(tls_parameters(settings)?))
    }

    /// The second half: connections opened from now on use `prepared`.
    pub fn install_tls(&self, prepared: PreparedTls) {
        *self.tls.write().unwrap_or_else(|e| e.into_inner()) = prepared.0;
        tracing::info!(relay = %self.relay, "SMTP TLS settings reloaded");
    }

    /// A new connection: TCP with TCP_NODELAY, TLS or STARTTLS as configured, EHLO, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, MailError> {
        let lettre_err = |e: lettre::transport::smtp::Error| classify(&e, &self.relay);
        let tls = self.tls.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut conn = match &tls {
            Some((params, true)) => {
                // Implicit TLS: lettre connects (its socket keeps Nagle's algorithm).
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &self.hello,
                    Some(params.clone()),
                    None,
                )
                .await
                .map_err(lettre_err)?
            }
            _ => {
                let io_err =
                    |e: std::io::Error| MailError::Transient(format!("{}: {e}", self.relay));
                let tcp = tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| MailError::Transient(format!("{}: connection timed out", self.relay)))?
                .map_err(io_err)?;
                tcp.set_nodelay(true).map_err(io_err)?;
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                        .await
                        .map_err(lettre_err)?;
                if let Some((params, false)) = &tls {
                    conn.starttls(params.clone(), &self.hello)
                        .await
                        .map_err(lettre_err)?;
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(lettre_err)?;
        }
        Ok(conn)
    }

    /// An idle connection that is still good, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, MailError> {
        loop {
            let next = self.idle.lock().await.pop();
            let Some((mut conn, since)) = next else {
                return self.connect().await;
            };
            let idle = since.elapsed();
            if idle > CLOSE_AFTER_IDLE {
                conn.abort().await;
                continue;
            }
            if idle <= PROBE_AFTER_IDLE || conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    /// One try: a connection from the pool, the message, the connection back.
    async fn try_send(
        &self,
        envelope: &lettre::address::Envelope,
        bytes: &[u8],
    ) -> Result<(), MailError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| MailError::Transient("the mailer is shutting down".into()))?;
        let attempt = async {
            let mut conn = self.checkout().await?;
            match conn.send(envelope, bytes).await {
                Ok(_) => Ok(conn),
                Err(e) => {
                    conn.abort().await;
                    Err(classify(&e, &self.relay))
                }
            }
        };
        match tokio::time::timeout(self.timeout * 4, attempt).await {
            Ok(Ok(conn)) => {
                if !conn.has_broken() {
                    self.idle.lock().await.push((conn, Instant::now()));
                }
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(MailError::Transient(format!(
                "{}: no answer within {} s",
                self.relay,
                (self.timeout * 4).as_secs()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let message = message::build(&self.from, email)?;
        let envelope = message.envelope().clone();
        let bytes = message.formatted();
        let mut delays = self.retry_delays.iter();
        let mut tries = 0;
        loop {
            tries += 1;
            self.limiter.acquire().await;
            let error = match self.try_send(&envelope, &bytes).await {
                Ok(()) => {
                    tracing::info!(
                        to = %crate::mask::email(&email.to),
                        message_id = %email.message_id,
                        tries,
                        "email accepted by relay"
                    );
                    return Ok(());
                }
                Err(e) => e,
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

/// The TLS parameters the settings ask for: the public (webpki) roots, or only the CAs of
/// `ca_bundle_file` when it is set.
fn tls_parameters(settings: &SmtpSettings) -> Result<Option<(TlsParameters, bool)>, ConfigError> {
    use lettre::transport::smtp::client::{Certificate, CertificateStore};
    let implicit = match settings.tls {
        TlsMode::None => return Ok(None),
        TlsMode::Starttls => false,
        TlsMode::Tls => true,
    };
    let mut builder = TlsParameters::builder(settings.host.trim().to_string());
    if let Some(bundle) = settings.ca_bundle()? {
        builder = builder.certificate_store(CertificateStore::None);
        for der in bundle.certs() {
            let cert = Certificate::from_der(der.to_vec()).map_err(|e| {
                ConfigError::invalid(
                    "mail.smtp.ca_bundle_file",
                    format!("{}: {e}", bundle.path.display()),
                )
            })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    let params = builder
        .build()
        .map_err(|e| ConfigError::invalid("mail.smtp.host", format!("cannot set up TLS: {e}")))?;
    Ok(Some((params, implicit)))
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
        // After a quiet spell the next send goes at once and the one after it a whole
        // interval later: the slot taken is "now" (between the two readings around the
        // call), not a slot carried over from before the spell. Read from the limiter's
        // state, so a busy machine delaying this task cannot break it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = Instant::now();
        limiter.acquire().await;
        let after = Instant::now();
        let next = limiter.next_slot.lock().await.expect("a slot was taken");
        let interval = limiter.interval;
        assert!(
            next >= before + interval && next <= after + interval,
            "next slot {:?} after the call, not within [{:?}, {:?}]",
            next - before,
            interval,
            after - before + interval
        );
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
}
