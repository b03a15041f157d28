//! Typed settings. Loaded from a TOML file (`--config PATH`, default
//! `/etc/repayd/repayd.toml`) and then from environment overrides `REPAYD__SECTION__KEY`.
//! Unknown keys are rejected; [`Settings::check`] names the bad key and says why.
//! Secrets are `SecretString`s: they cannot be printed by accident.

use crate::domain::{BusinessDayRule, RemainderPlacement, RoundingMode};
use crate::gateway::GatewaySettings;
use crate::mail::MailSettings;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/repayd/repayd.toml";
/// sysexits.h EX_CONFIG: what `check-config` and `run` exit with on bad configuration.
pub const EXIT_CONFIG: i32 = 78;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
    #[error("{} configuration problems:\n  - {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  - "))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub schedule: ScheduleDefaults,
    #[serde(default)]
    pub debit: DebitSettings,
    #[serde(default)]
    pub retry: RetrySettings,
    #[serde(default)]
    pub reminders: ReminderSettings,
    #[serde(default)]
    pub engine: EngineSettings,
    #[serde(default)]
    pub overdue: crate::engine::overdue::OverdueSettings,
    #[serde(default)]
    pub payments: crate::engine::overdue::PaymentSettings,
    #[serde(default)]
    pub alerts: crate::engine::alerts::AlertSettings,
    pub gateway: GatewaySettings,
    pub mail: MailSettings,
    /// The operations endpoint: /healthz, /readyz, /metrics.
    #[serde(default)]
    pub http: crate::http::HttpSettings,
    /// The operations console's time zone (its sign-in is in `[http]`).
    #[serde(default)]
    pub console: crate::console::ConsoleSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`. Secret: it may carry a
    /// password. Give it inline, via REPAYD__DATABASE__URL, or as `url_file`.
    #[serde(default)]
    pub url: Option<SecretString>,
    /// A file holding the URL (e.g. `$CREDENTIALS_DIRECTORY/database-url`).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// SQLite: the page cache of each connection (every reader, the writer outside a
    /// planning pass, and the group committer's own), KiB. Kept while the connection is
    /// open: the daemon holds up to `max_connections + 2` of them.
    #[serde(default = "default_sqlite_cache_kib")]
    pub sqlite_cache_kib: u32,
    /// SQLite: the writer's page cache during a planning pass, KiB (freed after it).
    #[serde(default = "default_sqlite_planning_cache_kib")]
    pub sqlite_planning_cache_kib: u32,
}

fn default_max_connections() -> u32 {
    8
}

fn default_sqlite_cache_kib() -> u32 {
    crate::store::SqliteCaches::DEFAULT.connection_kib
}

fn default_sqlite_planning_cache_kib() -> u32 {
    crate::store::SqliteCaches::DEFAULT.planning_kib
}

impl DatabaseSettings {
    /// How the store opens its connections.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            max_connections: self.max_connections,
            caches: crate::store::SqliteCaches {
                connection_kib: self.sqlite_cache_kib,
                planning_kib: self.sqlite_planning_cache_kib,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `repayd=debug,sqlx=warn`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Defaults used when an imported agreement gives terms without these details.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleDefaults {
    pub rounding: RoundingMode,
    pub remainder: RemainderPlacement,
    pub business_day: BusinessDayRule,
    /// A holiday calendar file, or a directory of them merged (one per year, see
    /// `config/calendars/`); none means weekends only.
    pub calendar: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebitSettings {
    /// Local time, in the customer's time zone, at which due installments are debited.
    pub local_time: String,
    /// How far ahead the planner materializes debit attempts.
    pub horizon_days: u32,
    /// How many due attempts a worker claims at once.
    pub batch_size: u32,
    /// How many requests (funds checks, debits, look-ups) a daemon's debit loop has at
    /// the gateway at once; on SQLite the loop carries twice as many attempts, so attempts
    /// being recorded hold no bank slot. Enough to hide the gateway's latency: debits per
    /// second approach `max_in_flight / (2 x latency)` (two calls a debit) until the
    /// database's commit rate bounds them.
    pub max_in_flight: u32,
    /// How long a claim holds before another worker may take the attempt over.
    pub lease_seconds: u32,
    /// Prefix of every idempotency key sent to the gateway; distinct per deployment.
    pub key_prefix: String,
    /// How often the daemon reads the gateway's returns feed (protocol 1.1), in seconds.
    pub returns_poll_seconds: u32,
    /// Partial collection: debit what is there when the account is a little short.
    pub partial: PartialSettings,
}

/// `[debit.partial]`: when the funds check says short and the shortfall is at most
/// `max_shortfall_percent` of what is owed, debit what the bank says is available (never
/// less than `minimum`), and keep the rest due with its own retries and reminders. Needs a
/// gateway that reports `available` (protocol 1.1); off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialSettings {
    pub enabled: bool,
    /// Largest shortfall, as a percentage of the amount owed, at which a partial debit is
    /// made (1 to 99).
    pub max_shortfall_percent: u32,
    /// Smallest partial debit, a decimal amount in the agreement's currency (`"50.00"`).
    pub minimum: String,
}

impl Default for PartialSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            max_shortfall_percent: 50,
            minimum: "1".into(),
        }
    }
}

impl Default for DebitSettings {
    fn default() -> Self {
        Self {
            local_time: "06:00".into(),
            horizon_days: 35,
            batch_size: 50,
            max_in_flight: 64,
            lease_seconds: 300,
            key_prefix: "repayd".into(),
            returns_poll_seconds: 300,
            partial: PartialSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Attempts per installment, the first included.
    pub max_attempts: u32,
    /// Days after a short balance to try again, at the local debit time.
    pub insufficient_funds_days: Vec<u32>,
    /// Days after a soft decline (e.g. bank temporarily unavailable) to try again.
    pub soft_decline_days: Vec<u32>,
    /// Minutes to wait after a technical failure before reconciling / trying again.
    pub technical_backoff_minutes: Vec<u32>,
    /// At least this many days between two attempts of one installment, counted from the
    /// outcome that caused the retry (at the local debit time), so that after downtime or
    /// a late import retries are re-spaced from now instead of running all at once.
    pub min_spacing_days: u32,
    /// Payday-aware retries after a short balance (`[retry.payday]`); off by default.
    pub payday: PaydaySettings,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            insufficient_funds_days: vec![1, 3, 5],
            soft_decline_days: vec![1, 3],
            technical_backoff_minutes: vec![5, 15, 60, 240],
            min_spacing_days: 1,
            payday: PaydaySettings::default(),
        }
    }
}

/// `[retry.payday]`: after a short balance, place the retry on the customer's usual
/// payday, learned from their own funds checks (docs/retry.md), when it falls within the
/// window; otherwise the fixed offsets hold. Off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaydaySettings {
    pub enabled: bool,
    /// Months in which the balance turned sufficient on the payday, at least (2 to 12).
    pub min_observations: u32,
    /// How far back the funds checks are read, in months (1 to 24).
    pub lookback_months: u32,
    /// Latest payday-aware retry, in days after the due date. At most the policy's own
    /// window (the last of `retry.insufficient_funds_days`), which is the default.
    pub window_days: Option<u32>,
}

impl Default for PaydaySettings {
    fn default() -> Self {
        Self {
            enabled: false,
            min_observations: 3,
            lookback_months: 6,
            window_days: None,
        }
    }
}

impl RetrySettings {
    /// `[retry.payday]`'s problems, each naming its key.
    fn check_payday(&self) -> Vec<ConfigError> {
        let p = &self.payday;
        let mut problems = Vec::new();
        if !(2..=12).contains(&p.min_observations) {
            problems.push(ConfigError::invalid(
                "retry.payday.min_observations",
                "must be between 2 and 12 (months in which the money arrived on the payday)",
            ));
        }
        if !(1..=24).contains(&p.lookback_months) {
            problems.push(ConfigError::invalid(
                "retry.payday.lookback_months",
                "must be between 1 and 24",
            ));
        } else if p.lookback_months < p.min_observations {
            problems.push(ConfigError::invalid(
                "retry.payday.lookback_months",
                format!(
                    "is {} but retry.payday.min_observations asks for {} months: the payday could never be learned",
                    p.lookback_months, p.min_observations
                ),
            ));
        }
        let policy_window = self
            .insufficient_funds_days
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        if let Some(w) = p.window_days
            && (w == 0 || w > policy_window)
        {
            problems.push(ConfigError::invalid(
                "retry.payday.window_days",
                format!(
                    "must be between 1 and the policy's retry window ({policy_window} days, the last of retry.insufficient_funds_days)"
                ),
            ));
        }
        if p.enabled && policy_window == 0 {
            problems.push(ConfigError::invalid(
                "retry.payday.enabled",
                "needs retry.insufficient_funds_days: there is no retry window to place a payday in",
            ));
        }
        problems
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReminderSettings {
    /// Days before the due date at which the customer is reminded, e.g. [7, 3, 1].
    pub offsets_days: Vec<u32>,
    /// Local time (customer's time zone) at which pre-due reminders go out.
    pub local_time: String,
    /// Quiet hours in the customer's local time: no email from start to end (may wrap
    /// midnight). Equal start and end means no quiet hours.
    pub quiet_hours_start: String,
    pub quiet_hours_end: String,
    /// Kinds of message that may be sent inside quiet hours (e.g. `["debit_succeeded"]`
    /// for a lender that wants receipts at once). Default: none.
    pub quiet_hours_exempt: Vec<String>,
    /// Messages to one customer due within this many minutes of each other are decided
    /// together: the most important one about an agreement supersedes the others.
    pub merge_window_minutes: u32,
    /// At most this many messages to one customer per local day; more wait for the next
    /// day (and are cancelled if no longer true by then).
    pub max_per_customer_per_day: u32,
    /// How many customers' messages the sender prepares and sends at once (each
    /// customer's own one after another): enough to keep the SMTP connections and the
    /// database's group commits full while each message waits for its reads, the relay
    /// and its commit.
    pub max_in_flight: u32,
}

impl Default for ReminderSettings {
    fn default() -> Self {
        Self {
            offsets_days: vec![7, 3, 1],
            local_time: "09:00".into(),
            quiet_hours_start: "21:00".into(),
            quiet_hours_end: "08:00".into(),
            quiet_hours_exempt: Vec::new(),
            merge_window_minutes: 30,
            max_per_customer_per_day: 3,
            max_in_flight: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// UTC cron expression (6 fields, seconds first) that wakes the planner.
    pub planner_cron: String,
    /// How often workers look for due rows, in seconds.
    pub poll_seconds: u32,
    /// How long in-flight work may take to finish after SIGTERM.
    pub drain_seconds: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            planner_cron: "0 */5 * * * *".into(),
            poll_seconds: 5,
            drain_seconds: 30,
        }
    }
}

impl Settings {
    /// Loads the file at `path`, then `REPAYD__SECTION__KEY` environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // Read here rather than by the config crate, which names the file relative to the
        // working directory (`../../../etc/repayd/repayd.toml` under systemd).
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Load {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let builder = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("REPAYD")
                    .prefix_separator("__")
                    .separator("__")
                    // Values stay text: numbers and booleans are converted when a key asks for
                    // one, so a numeric password (leading zeros included) stays a string.
                    .try_parsing(false),
            );
        let raw = builder.build().map_err(|e| ConfigError::Load {
            path: path.display().to_string(),
            reason: match std::fs::read_to_string(path)
                .ok()
                .and_then(|t| toml_problem_at(&t))
            {
                // The TOML layer's own messages ("number too large to fit in target type")
                // name no key: say which, and on which line (never the value: a secret).
                Some(place) => format!("{place}: {e}"),
                None => e.to_string(),
            },
        })?;
        // The path of the failing key goes into the message: some errors (a number too
        // large for its type) do not name it themselves.
        let settings: Settings = serde_path_to_error::deserialize(raw).map_err(|e| {
            let key = e.path().to_string();
            let reason = e.into_inner().to_string();
            ConfigError::Load {
                path: path.display().to_string(),
                reason: if key == "." || reason.contains(&key) {
                    reason
                } else {
                    format!("key `{key}`: {reason}")
                },
            }
        })?;
        let mut settings = settings;
        settings.database.url = resolve_secret(
            "database.url",
            settings.database.url.as_ref(),
            settings.database.url_file.as_deref(),
        )?;
        settings.alerts.webhook_secret = resolve_secret(
            "alerts.webhook_secret",
            settings.alerts.webhook_secret.as_ref(),
            settings.alerts.webhook_secret_file.as_deref(),
        )?;
        settings.check()?;
        Ok(settings)
    }

    /// The database URL, resolved from `url` or `url_file` by [`Settings::load`].
    pub fn database_url(&self) -> SecretString {
        self.database
            .url
            .clone()
            .unwrap_or_else(|| SecretString::from(String::new()))
    }

    /// The key the database URL came from, for messages: `database.url_file` when the
    /// URL was read from a file, else `database.url`.
    pub fn database_url_key(&self) -> &'static str {
        if self.database.url_file.is_some() {
            "database.url_file"
        } else {
            "database.url"
        }
    }

    /// The expiry of the TLS material in use (`gateway.http` when the gateway is HTTP,
    /// `mail.smtp` when mail goes by SMTP) at `now`: an expired client certificate is an
    /// error, anything ending within 30 days a warning. `check-config`, start-up and every
    /// reload ask.
    pub fn certificate_expiry(&self, now: chrono::DateTime<chrono::Utc>) -> crate::tls::Expiry {
        let mut found = crate::tls::Expiry::default();
        if self.gateway.kind == crate::gateway::GatewayKind::Http
            && let Some(http) = &self.gateway.http
        {
            found.merge(http.certificate_expiry(now));
        }
        if self.mail.kind == crate::mail::MailKind::Smtp
            && let Some(smtp) = &self.mail.smtp
        {
            found.merge(smtp.certificate_expiry(now));
        }
        found
    }

    /// Semantic checks beyond the types: every problem, each naming its key.
    pub fn check(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let mut problems = Vec::new();
        let url = self
            .database
            .url
            .as_ref()
            .map(|u| u.expose_secret().to_string())
            .unwrap_or_default();
        if url.is_empty() {
            problems.push(ConfigError::invalid(
                "database.url",
                "is required (inline, REPAYD__DATABASE__URL, or database.url_file)",
            ));
        } else if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(ConfigError::invalid(
                self.database_url_key(),
                "must start with sqlite: or postgres:// (the URL itself is not shown, it may hold a password)",
            ));
        }
        // Every number has a documented range (README, "Limits"): nothing a setting
        // accepts can overflow a date, a duration or a sum later.
        for (key, value, min, max) in [
            (
                "database.max_connections",
                self.database.max_connections,
                1,
                1_000,
            ),
            (
                "database.sqlite_cache_kib",
                self.database.sqlite_cache_kib,
                64,
                1_048_576,
            ),
            (
                "database.sqlite_planning_cache_kib",
                self.database.sqlite_planning_cache_kib,
                64,
                1_048_576,
            ),
            ("debit.horizon_days", self.debit.horizon_days, 0, 366),
            ("debit.batch_size", self.debit.batch_size, 1, 10_000),
            ("debit.lease_seconds", self.debit.lease_seconds, 0, 86_400),
            (
                "debit.returns_poll_seconds",
                self.debit.returns_poll_seconds,
                1,
                86_400,
            ),
            (
                "debit.partial.max_shortfall_percent",
                self.debit.partial.max_shortfall_percent,
                1,
                99,
            ),
            ("retry.max_attempts", self.retry.max_attempts, 1, 100),
            ("engine.poll_seconds", self.engine.poll_seconds, 1, 3_600),
            ("engine.drain_seconds", self.engine.drain_seconds, 0, 3_600),
        ] {
            if let Some(problem) = out_of_range(key, value, min, max) {
                problems.push(problem);
            }
        }
        for (key, values, max) in [
            (
                "retry.insufficient_funds_days",
                &self.retry.insufficient_funds_days,
                366,
            ),
            (
                "retry.soft_decline_days",
                &self.retry.soft_decline_days,
                366,
            ),
            (
                "retry.technical_backoff_minutes",
                &self.retry.technical_backoff_minutes,
                10_080,
            ),
        ] {
            problems.extend(list_out_of_range(key, values, 0, max));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(ConfigError::invalid("log.level", e.to_string()));
        }
        if let Err(e) = crate::domain::worktime::parse_local_time(&self.debit.local_time) {
            problems.push(ConfigError::invalid("debit.local_time", e.to_string()));
        }
        if self.debit.max_in_flight == 0 || self.debit.max_in_flight > 4096 {
            problems.push(ConfigError::invalid(
                "debit.max_in_flight",
                "must be between 1 and 4096",
            ));
        }
        match crate::domain::money::parse_decimal(self.debit.partial.minimum.trim()) {
            Some(m) if m > rust_decimal::Decimal::ZERO => {}
            _ => problems.push(ConfigError::invalid(
                "debit.partial.minimum",
                format!(
                    "{:?} is not a positive decimal amount such as \"50.00\"",
                    self.debit.partial.minimum
                ),
            )),
        }
        if self.debit.lease_seconds < 30 {
            problems.push(ConfigError::invalid(
                "debit.lease_seconds",
                "must be at least 30 so a slow gateway call cannot outlive its lease",
            ));
        }
        if self.debit.key_prefix.is_empty()
            || !self
                .debit
                .key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(ConfigError::invalid(
                "debit.key_prefix",
                "must be non-empty ASCII letters, digits, '-' or '_'",
            ));
        }
        if let Err(e) = crate::domain::worktime::parse_local_time(&self.reminders.local_time) {
            problems.push(ConfigError::invalid("reminders.local_time", e.to_string()));
        }
        for (key, value) in [
            (
                "reminders.quiet_hours_start",
                &self.reminders.quiet_hours_start,
            ),
            ("reminders.quiet_hours_end", &self.reminders.quiet_hours_end),
        ] {
            if let Err(e) = crate::domain::worktime::parse_local_time(value) {
                problems.push(ConfigError::invalid(key, e.to_string()));
            }
        }
        if self
            .reminders
            .offsets_days
            .iter()
            .any(|d| *d == 0 || *d > 60)
        {
            problems.push(ConfigError::invalid(
                "reminders.offsets_days",
                "each offset must be between 1 and 60 days before the due date",
            ));
        }
        if let Ok(t) = crate::domain::worktime::parse_local_time(&self.reminders.local_time)
            && let Ok(q) = crate::domain::worktime::QuietHours::parse(
                &self.reminders.quiet_hours_start,
                &self.reminders.quiet_hours_end,
            )
            && q.is_quiet(t)
        {
            problems.push(ConfigError::invalid(
                "reminders.local_time",
                "falls inside the quiet hours; reminders would always be delayed",
            ));
        }
        for kind in &self.reminders.quiet_hours_exempt {
            if !crate::engine::conversation::MESSAGE_KINDS.contains(&kind.as_str()) {
                problems.push(ConfigError::invalid(
                    "reminders.quiet_hours_exempt",
                    format!(
                        "unknown message kind {kind:?} (expected one of {})",
                        crate::engine::conversation::MESSAGE_KINDS.join(", ")
                    ),
                ));
            }
        }
        if self.reminders.merge_window_minutes > 24 * 60 {
            problems.push(ConfigError::invalid(
                "reminders.merge_window_minutes",
                "must be at most 1440 (one day)",
            ));
        }
        if self.reminders.max_per_customer_per_day == 0
            || self.reminders.max_per_customer_per_day > 50
        {
            problems.push(ConfigError::invalid(
                "reminders.max_per_customer_per_day",
                "must be between 1 and 50",
            ));
        }
        if self.reminders.max_in_flight == 0 || self.reminders.max_in_flight > 1024 {
            problems.push(ConfigError::invalid(
                "reminders.max_in_flight",
                "must be between 1 and 1024",
            ));
        }
        if self.retry.min_spacing_days == 0 || self.retry.min_spacing_days > 31 {
            problems.push(ConfigError::invalid(
                "retry.min_spacing_days",
                "must be between 1 and 31: retries of one installment never run on the same day",
            ));
        }
        problems.extend(self.retry.check_payday());
        if self.retry.technical_backoff_minutes.is_empty() {
            problems.push(ConfigError::invalid(
                "retry.technical_backoff_minutes",
                "needs at least one entry: unknown outcomes must be reconciled",
            ));
        }
        if let Err(e) = self.engine.planner_cron.parse::<CronCheck>() {
            problems.push(ConfigError::invalid("engine.planner_cron", e));
        }
        if let Some(cal) = &self.schedule.calendar
            && let Err(e) = crate::domain::HolidayCalendar::load(cal)
        {
            problems.push(ConfigError::invalid("schedule.calendar", e.to_string()));
        }
        problems.extend(self.gateway.check());
        problems.extend(self.mail.check());
        problems.extend(self.overdue.check());
        problems.extend(self.payments.check());
        problems.extend(self.alerts.check());
        problems.extend(self.http.check());
        problems.extend(self.console.check());
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Many(problems)),
        }
    }
}

/// Where a TOML text fails to parse, as "key `section.key` (line N)", if it fails on a
/// `key = value` line.
fn toml_problem_at(text: &str) -> Option<String> {
    let err = toml::from_str::<toml::Table>(text).err()?;
    let offset = err.span()?.start;
    let before = text.get(..offset)?;
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1)?;
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || !line.contains('=') {
        return Some(format!("line {line_no}"));
    }
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match table {
        Some(t) => format!("key `{t}.{key}` (line {line_no})"),
        None => format!("key `{key}` (line {line_no})"),
    })
}

/// `key` must lie in `min..=max`; the problem names the key and the range.
pub fn out_of_range(key: &str, value: u32, min: u32, max: u32) -> Option<ConfigError> {
    (!(min..=max).contains(&value))
        .then(|| ConfigError::invalid(key, format!("is {value}; must be between {min} and {max}")))
}

/// Each entry of the list `key` must lie in `min..=max`.
pub fn list_out_of_range(key: &str, values: &[u32], min: u32, max: u32) -> Vec<ConfigError> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| out_of_range(&format!("{key}[{i}]"), *v, min, max))
        .collect()
}

/// Validates a cron expression the way the engine's scheduler will read it: six fields,
/// seconds first, in UTC.
struct CronCheck;

impl std::str::FromStr for CronCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let fields = s.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "needs 6 fields (seconds first, UTC), e.g. \"0 */5 * * * *\"; got {fields}"
            ));
        }
        Ok(CronCheck)
    }
}

/// A secret given inline (`password = "..."`, best from the environment) or as a file
/// (`password_file = "..."`, e.g. a systemd credential). `$CREDENTIALS_DIRECTORY` in a
/// file path is expanded. Trailing newlines in the file are dropped.
pub fn resolve_secret(
    key: &str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("give either `{key}` or `{key}_file`, not both"),
        )),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(path)) => {
            let expanded = expand_credentials_dir(path);
            let text = std::fs::read_to_string(&expanded).map_err(|e| {
                ConfigError::invalid(
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", expanded.display()),
                )
            })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\n', '\r']).to_string(),
            )))
        }
        (None, None) => Ok(None),
    }
}

pub(crate) fn expand_credentials_dir(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    if text.contains("$CREDENTIALS_DIRECTORY")
        && let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY")
    {
        return PathBuf::from(text.replace("$CREDENTIALS_DIRECTORY", &dir));
    }
    path.to_path_buf()
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Loading never panics on any configuration text: it is read, or refused with an
    /// error (no file or database is touched by a refusal: `check()` only reads).
    #[test]
    fn fuzz_config_loader() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut seeds = vec![std::fs::read(root.join("config/repayd.toml")).unwrap()];
        for entry in std::fs::read_dir(root.join("tests/corpus/config")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            seeds.push(
                text.replace("@DIR@", &dir.path().display().to_string())
                    .into_bytes(),
            );
        }
        let path = dir.path().join("fuzz.toml");
        crate::fuzzing::run("config loader", crate::fuzzing::mutated(seeds), |bytes| {
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = Settings::load(&path) {
                proptest::prop_assert!(!e.to_string().is_empty());
            }
            Ok(())
        });
    }
}
