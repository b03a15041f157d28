//! `repayd run`: the daemon. Opens (and on SQLite locks) the database, applies
//! migrations, builds the gateway and mailer (both metered), starts the planner, the
//! workers and the operations endpoint (/healthz, /readyz, /metrics), tells systemd it is
//! ready, pings its watchdog, reloads policy and templates on SIGHUP or a `reload` request on
//! its control socket (see [`super::reload`]), and stops cleanly
//! on SIGTERM/SIGINT: in-flight debits finish and are recorded, then the endpoint closes.

use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, Settings};
use crate::engine::Engine;
use crate::engine::daemon::Daemon;
use crate::engine::policy::EnginePolicy;
use crate::gateway::http::{HttpGateway, PreparedConnection};
use crate::gateway::{GatewayKind, PaymentGateway};
use crate::http::{HttpServer, HttpState};
use crate::mail::smtp::PreparedTls;
use crate::mail::{MailKind, SmtpMailer};
use crate::metrics::{MeteredGateway, MeteredMailer, Metrics};
use crate::store::Store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use sd_notify::NotifyState;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(settings: Settings, config_path: PathBuf) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&settings).await?;
    // Before anything writes: a second daemon on the same SQLite file must not start.
    let lock = store.lock_for_daemon()?;
    store.migrate().await.context("applying migrations")?;
    if let Some(lock) = &lock {
        // We hold the only lock on this file: whatever is in flight was left by a process
        // that died. Take it over now rather than after its lease runs out.
        let n = store.take_over_orphaned_leases(lock).await?;
        if n > 0 {
            tracing::warn!(
                rows = n,
                "work left in flight by a previous run (crash or kill -9) is taken over; debits are reconciled by idempotency key"
            );
        }
    }
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // An expired client certificate stops the start (the bank would refuse every call);
    // one that ends soon is said now and on every reload.
    for warning in settings.certificate_expiry(clock.now()).into_result()? {
        tracing::warn!("{warning}");
    }
    let mut transports = Transports::default();
    let gateway: Arc<dyn PaymentGateway> = match (&settings.gateway.kind, &settings.gateway.http) {
        (GatewayKind::Http, Some(http)) => {
            let http = Arc::new(HttpGateway::new(http)?);
            transports.gateway = Some(Arc::clone(&http));
            http
        }
        _ => build_gateway(&settings, &store).await?,
    };
    let gateway: Arc<dyn PaymentGateway> =
        Arc::new(MeteredGateway::new(gateway, Arc::clone(&metrics)));
    let policy = EnginePolicy::from_settings(&settings)?;
    let (mut mail, smtp) = build_mail_parts(&settings)?;
    transports.smtp = smtp;
    mail.mailer = Arc::new(MeteredMailer::new(mail.mailer, Arc::clone(&metrics)));
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            gateway,
            Arc::clone(&clock),
            policy.clone(),
            worker_name(),
        )
        .with_mail(mail),
    );
    engine.set_calendar(load_calendar(&settings)?.as_ref());
    let shutdown = CancellationToken::new();
    // The endpoint is up before READY=1, so a unit ordered after this one can probe it.
    let http = if settings.http.enabled {
        let state = HttpState {
            store: store.clone(),
            metrics: Arc::clone(&metrics),
            clock: Arc::clone(&clock),
            gateway: format!("{:?}", settings.gateway.kind).to_lowercase(),
            mailer: format!("{:?}", settings.mail.kind).to_lowercase(),
            stopping: shutdown.clone(),
            console: crate::console::ConsoleOptions {
                credit_report_after_days: settings.overdue.credit_report_after_days,
                time_zone: settings.console.zone().0,
                policy: Some(Arc::new(policy.clone())),
            },
        };
        Some(
            HttpServer::start(&settings.http, state)
                .await
                .context("starting the operations endpoint ([http])")?,
        )
    } else {
        None
    };
    if let Some(http) = &http
        && settings.http.console
    {
        // The quick start's pointer to the console; a log line (not a bare stdout line), so
        // `log.format = "json"` stays one JSON object per line under journald.
        let (zone, from) = settings.console.zone();
        tracing::info!(url = %format!("http://{}/console", http.local_addr()), time_zone = %zone, time_zone_from = from, "operations console");
    }
    let daemon = Daemon::start(
        Arc::clone(&engine),
        &settings.engine.planner_cron,
        shutdown.clone(),
    )
    .await?;
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&engine),
        transports,
        Arc::clone(&clock),
        config_path.clone(),
    ));
    spawn_signal_handlers(shutdown.clone(), Arc::clone(&reloader));
    // `systemctl reload` (ExecReload=repayd reload) asks here and learns the outcome.
    let control = match super::reload::daemon_socket_path() {
        Some(path) => {
            let reloader = Arc::clone(&reloader);
            Some(super::reload::serve(path, move || reloader.reload())?)
        }
        None => None,
    };
    // Pings go on through the drain: a drain longer than WatchdogSec must not get the
    // process killed with in-flight debits.
    let drained = CancellationToken::new();
    spawn_watchdog(drained.clone());
    tracing::info!(
        config = %config_path.display(),
        backend = ?store.backend(),
        gateway = ?settings.gateway.kind,
        worker = engine.owner(),
        "repayd is running"
    );
    let _ = sd_notify::notify(&[NotifyState::Ready]);
    daemon.run_until_stopped(policy.drain).await;
    drained.cancel();
    if let Some(control) = control {
        control.abort();
    }
    // After the drain, so /metrics can be scraped while in-flight debits finish.
    if let Some(http) = http {
        http.stop().await;
    }
    store.close().await;
    tracing::info!("repayd stopped");
    Ok(ExitCode::SUCCESS)
}

/// The gateway named by the configuration.
pub async fn build_gateway(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<Arc<dyn PaymentGateway>> {
    Ok(match settings.gateway.kind {
        GatewayKind::Sandbox => Arc::new(
            crate::gateway::sandbox::SandboxBank::new(
                store.lane(crate::store::Lane::SandboxBank),
                settings.gateway.sandbox.clone(),
            )
            .await
            .context("starting the sandbox bank")?
            .with_calendar(load_calendar(settings)?.unwrap_or_default()),
        ),
        GatewayKind::Http => {
            let http = settings
                .gateway
                .http
                .as_ref()
                .context("gateway.kind = \"http\" needs [gateway.http]")?;
            Arc::new(crate::gateway::http::HttpGateway::new(http)?)
        }
    })
}

/// The mailer and the templates (every one rendered once with sample data first).
pub fn build_mail(settings: &Settings) -> anyhow::Result<crate::engine::MailDeps> {
    Ok(build_mail_parts(settings)?.0)
}

/// [`build_mail`], and the SMTP mailer itself when mail goes by SMTP (for reloads).
fn build_mail_parts(
    settings: &Settings,
) -> anyhow::Result<(crate::engine::MailDeps, Option<Arc<SmtpMailer>>)> {
    let templates = settings
        .mail
        .templates()
        .context("loading email templates")?;
    templates.check_all().context("checking email templates")?;
    let (mailer, smtp): (Arc<dyn crate::mail::Mailer>, _) =
        match (&settings.mail.kind, &settings.mail.smtp) {
            (MailKind::Smtp, Some(smtp)) => {
                let smtp = Arc::new(SmtpMailer::new(smtp, settings.mail.from_mailbox()?)?);
                (Arc::clone(&smtp) as _, Some(smtp))
            }
            _ => (crate::mail::build_mailer(&settings.mail)?, None),
        };
    Ok((
        crate::engine::MailDeps::new(mailer, templates, settings.mail.clone()),
        smtp,
    ))
}

/// The transports whose TLS material (client certificate, CA bundles) and gateway token
/// a reload replaces without a restart.
#[derive(Debug, Default, Clone)]
pub struct Transports {
    pub gateway: Option<Arc<HttpGateway>>,
    pub smtp: Option<Arc<SmtpMailer>>,
}

/// What [`Transports::prepare`] built, to be installed whole.
pub struct PreparedTransports {
    gateway: Option<PreparedConnection>,
    smtp: Option<PreparedTls>,
}

impl Transports {
    /// Builds every transport's new connection settings from `settings` without using
    /// them yet: any unreadable or invalid file is an error and nothing changes. A
    /// change of `gateway.kind` or `mail.kind` needs a restart and is only warned about.
    pub fn prepare(&self, settings: &Settings) -> Result<PreparedTransports, ConfigError> {
        let gateway = match (
            &self.gateway,
            &settings.gateway.kind,
            &settings.gateway.http,
        ) {
            (Some(_), GatewayKind::Http, Some(http)) => Some(HttpGateway::prepare(http)?),
            (Some(_), _, _) => {
                tracing::warn!(
                    "gateway.kind is no longer \"http\": the change takes effect at the next start"
                );
                None
            }
            (None, _, _) => None,
        };
        let smtp = match (&self.smtp, &settings.mail.kind, &settings.mail.smtp) {
            (Some(_), MailKind::Smtp, Some(smtp)) => Some(SmtpMailer::prepare_tls(smtp)?),
            (Some(_), _, _) => {
                tracing::warn!(
                    "mail.kind is no longer \"smtp\": the change takes effect at the next start"
                );
                None
            }
            (None, _, _) => None,
        };
        Ok(PreparedTransports { gateway, smtp })
    }

    /// Puts what [`Transports::prepare`] built in use.
    pub fn install(&self, prepared: PreparedTransports) {
        if let (Some(gateway), Some(connection)) = (&self.gateway, prepared.gateway) {
            gateway.install(connection);
        }
        if let (Some(smtp), Some(tls)) = (&self.smtp, prepared.smtp) {
            smtp.install_tls(tls);
        }
    }

    /// Loads, checks and applies `settings` to the transports: the part of a reload that
    /// concerns them (certificate expiry included). On an error nothing changes.
    /// Returns the expiry warnings.
    pub fn reload(
        &self,
        settings: &Settings,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, ConfigError> {
        let warnings = settings.certificate_expiry(now).into_result()?;
        let prepared = self.prepare(settings)?;
        self.install(prepared);
        Ok(warnings)
    }
}

/// A name for this worker in leases and logs: host, process id and a random suffix, so a
/// restarted process never mistakes an old lease for its own.
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nonce: u32 = {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::process::id()) as u32
    };
    format!("{host}-{}-{nonce:08x}", std::process::id())
}

fn spawn_signal_handlers(shutdown: CancellationToken, reloader: Arc<Reloader>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); stop(&shutdown); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); stop(&shutdown); break; }
                _ = hup.recv() => {
                    let reloader = Arc::clone(&reloader);
                    // The outcome is logged; `repayd reload` (the unit's ExecReload) is the
                    // way to learn it from the exit code.
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
            }
        }
    });
}

/// Tells systemd at once (so `systemctl status` says "deactivating" during the drain) and
/// starts the drain.
fn stop(shutdown: &CancellationToken) {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
    shutdown.cancel();
}

/// Applies new settings on SIGHUP or a `reload` request on the control socket, one
/// reload at a time, and keeps systemd's STATUS= saying which settings are in force.
pub struct Reloader {
    engine: Arc<Engine>,
    transports: Transports,
    clock: Arc<dyn Clock>,
    config_path: PathBuf,
    /// The digest of the file in force; a reload in progress holds the lock.
    in_force: std::sync::Mutex<String>,
}

impl Reloader {
    fn new(
        engine: Arc<Engine>,
        transports: Transports,
        clock: Arc<dyn Clock>,
        config_path: PathBuf,
    ) -> Self {
        let digest = file_digest(&config_path);
        let reloader = Reloader {
            engine,
            transports,
            clock,
            config_path,
            in_force: std::sync::Mutex::new(digest),
        };
        let status = reloader.status_in_force(&reloader.digest());
        let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
        reloader
    }

    fn digest(&self) -> String {
        self.in_force
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn status_in_force(&self, digest: &str) -> String {
        format!(
            "settings in force: {} (sha256 {digest})",
            self.config_path.display()
        )
    }

    /// Re-reads the configuration, then applies the debit, retry and reminder policy, the
    /// email templates and the transports' TLS material (a rotated client certificate, a
    /// new CA bundle, the gateway token); anything bad (TOML, a key, a template, a
    /// calendar, an unreadable, mismatched or expired certificate) keeps all the old
    /// settings. Returns the new status, or why the reload was rejected. systemd
    /// hears RELOADING=1 first and READY=1 with the status before this returns.
    pub fn reload(&self) -> Result<String, String> {
        let mut in_force = self.in_force.lock().unwrap_or_else(|e| e.into_inner());
        let mut reloading = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        let _ = sd_notify::notify(&reloading);
        let digest = file_digest(&self.config_path);
        let loaded = (|| -> anyhow::Result<_> {
            let settings = Settings::load(&self.config_path)?;
            let policy = EnginePolicy::from_settings(&settings)?;
            let templates = settings.mail.templates()?;
            templates.check_all()?;
            let warnings = settings
                .certificate_expiry(self.clock.now())
                .into_result()?;
            let transports = self.transports.prepare(&settings)?;
            let calendar = load_calendar(&settings)?;
            Ok((policy, templates, warnings, transports, calendar))
        })();
        let outcome = match loaded {
            Ok((policy, templates, warnings, transports, calendar)) => {
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                self.transports.install(transports);
                self.engine.set_policy(policy);
                self.engine.set_calendar(calendar.as_ref());
                if let Some(mail) = self.engine.mail() {
                    mail.set_templates(templates);
                }
                *in_force = digest;
                tracing::info!(
                    config = %self.config_path.display(),
                    sha256 = %in_force,
                    "configuration reloaded"
                );
                Ok(self.status_in_force(&in_force))
            }
            Err(e) => {
                let reason = format!("{e:#}");
                // The reason in the message too: it is what `journalctl -p err` shows.
                tracing::error!(
                    config = %self.config_path.display(),
                    "reload rejected; keeping the previous settings: {reason}"
                );
                Err(reason)
            }
        };
        let status = match &outcome {
            Ok(status) => status.clone(),
            Err(_) => format!(
                "{}; the last reload was rejected (see the journal)",
                self.status_in_force(&in_force)
            ),
        };
        let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
        outcome
    }
}

/// The first 12 hex digits of the file's SHA-256, to tell which version is in force.
fn file_digest(path: &std::path::Path) -> String {
    use sha2::Digest;
    match std::fs::read(path) {
        Ok(bytes) => hex::encode(sha2::Sha256::digest(&bytes))[..12].to_string(),
        Err(_) => "unreadable".to_string(),
    }
}

/// Pings systemd's watchdog at half its interval until `drained` (the runtime stays
/// responsive as long as this task gets to run).
fn spawn_watchdog(drained: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = drained.cancelled() => break,
                _ = tick.tick() => { let _ = sd_notify::notify(&[NotifyState::Watchdog]); }
            }
        }
    });
}

/// The configured holiday calendar (file or directory), for the planner's coverage
/// warning and the sandbox's last-business-day income; `None` when none is configured.
pub(crate) fn load_calendar(
    settings: &Settings,
) -> anyhow::Result<Option<crate::domain::HolidayCalendar>> {
    settings
        .schedule
        .calendar
        .as_deref()
        .map(crate::domain::HolidayCalendar::load)
        .transpose()
        .map_err(|e| crate::config::ConfigError::invalid("schedule.calendar", e.to_string()).into())
}
