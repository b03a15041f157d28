//! The `[mail]` settings: which mailer, the sender, the SMTP relay, the templates, and
//! the lender details the templates print. [`MailSettings::check`] names every bad key.

use super::templates::{TemplateContext, Templates};
use crate::config::ConfigError;
use lettre::message::Mailbox;
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MailKind {
    /// One `.eml` file per message in `outbox_dir`: the embedded default, nothing leaves
    /// the machine.
    #[default]
    Outbox,
    Smtp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    #[serde(default)]
    pub kind: MailKind,
    /// The sender, e.g. `Repayments <repayments@example.com>`.
    pub from: String,
    /// The domain of every Message-ID; defaults to the domain of `from`.
    #[serde(default)]
    pub message_id_domain: Option<String>,
    #[serde(default = "default_outbox_dir")]
    pub outbox_dir: PathBuf,
    /// A directory whose files replace built-in templates of the same relative path,
    /// e.g. `zh-CN/upcoming.html`.
    #[serde(default)]
    pub templates_dir: Option<PathBuf>,
    /// Who the customer owes, as printed in every email.
    #[serde(default = "default_lender_name")]
    pub lender_name: String,
    /// How customers reach a person: an address, a phone number or both, as free text.
    #[serde(default)]
    pub support_contact: Option<String>,
    /// Where a customer can pay by hand (overdue, failed debits); `https://` only.
    #[serde(default)]
    pub payment_url: Option<String>,
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
}

fn default_outbox_dir() -> PathBuf {
    PathBuf::from("var/outbox")
}

fn default_lender_name() -> String {
    "Your lender".to_string()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on loopback, or with `allow_insecure = true`.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    /// Defaults by `tls`: 587 for starttls, 465 for tls, 25 for none.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    /// Best given by environment (`REPAYD__MAIL__SMTP__PASSWORD`) or as `password_file`.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// A file holding the password, e.g. `$CREDENTIALS_DIRECTORY/smtp-password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connections kept open to the relay.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Timeout of each SMTP command, connecting included.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Messages per second at most, across all workers of this daemon.
    #[serde(default = "default_rate_per_second")]
    pub rate_per_second: f64,
    /// Permits `tls = "none"` to a host that is not loopback.
    #[serde(default)]
    pub allow_insecure: bool,
    /// Pauses before each new try after a temporary failure (4xx, connection trouble);
    /// one try plus one per entry. Empty: no tries beyond the first.
    #[serde(default = "default_retry_delays_ms")]
    pub retry_delays_ms: Vec<u64>,
    /// The CA(s) that sign the relay's certificate (PEM), for a relay with an internal
    /// CA. When set, only these are trusted, not the public roots (see docs/tls.md).
    #[serde(default)]
    pub ca_bundle_file: Option<PathBuf>,
}

fn default_pool_size() -> u32 {
    4
}

fn default_timeout_seconds() -> u64 {
    30
}

/// 50 messages a second: what a lender's own relay (Postfix, Exim) or a transactional
/// provider takes without throttling; 200,000 reminders go out in about an hour. Lower it
/// to the provider's quota where there is one (e.g. Amazon SES starts accounts at 14/s).
fn default_rate_per_second() -> f64 {
    50.0
}

fn default_retry_delays_ms() -> Vec<u64> {
    vec![1_000, 2_000, 4_000]
}

/// Above this, one send() would hold a worker for minutes: the engine's own retry is the
/// place for longer waits.
const MAX_RETRY_DELAY_MS: u64 = 60_000;
const MAX_RETRIES: usize = 10;

impl SmtpSettings {
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        })
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    pub fn retry_delays(&self) -> Vec<Duration> {
        self.retry_delays_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect()
    }

    /// The password from `password` or `password_file`.
    pub fn password(&self) -> Result<Option<SecretString>, ConfigError> {
        crate::config::resolve_secret(
            "mail.smtp.password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )
    }

    /// The CA bundle, read and checked (`None` when not set).
    pub fn ca_bundle(&self) -> Result<Option<crate::tls::CaBundle>, ConfigError> {
        self.ca_bundle_file
            .as_deref()
            .map(|path| crate::tls::CaBundle::load("mail.smtp.ca_bundle_file", path))
            .transpose()
    }

    /// Expiry of the CA bundle's certificates (warnings only; unreadable files are
    /// `check()`'s to report).
    pub fn certificate_expiry(&self, now: chrono::DateTime<chrono::Utc>) -> crate::tls::Expiry {
        match self.ca_bundle() {
            Ok(Some(bundle)) => bundle.check_expiry(now),
            _ => crate::tls::Expiry::default(),
        }
    }

    fn check(&self, problems: &mut Vec<ConfigError>) {
        let host = self.host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) {
            problems.push(ConfigError::invalid(
                "mail.smtp.host",
                "must be a host name or IP address",
            ));
        }
        if self.port == Some(0) {
            problems.push(ConfigError::invalid(
                "mail.smtp.port",
                "must be between 1 and 65535",
            ));
        }
        if self.tls == TlsMode::None && !is_loopback(host) && !self.allow_insecure {
            problems.push(ConfigError::invalid(
                "mail.smtp.tls",
                format!(
                    "\"none\" sends mail and password unencrypted; it is allowed only to a \
                     loopback host (not {host:?}) unless mail.smtp.allow_insecure = true"
                ),
            ));
        }
        match self.password() {
            Ok(password) => match (&self.username, password) {
                (Some(user), None) if !user.is_empty() => problems.push(ConfigError::invalid(
                    "mail.smtp.password",
                    "mail.smtp.username is set, so a password is needed (password or password_file)",
                )),
                (None, Some(_)) => problems.push(ConfigError::invalid(
                    "mail.smtp.username",
                    "a password is set, so a username is needed",
                )),
                _ => {}
            },
            Err(e) => problems.push(e),
        }
        match self.ca_bundle() {
            Ok(Some(_)) if self.tls == TlsMode::None => problems.push(ConfigError::invalid(
                "mail.smtp.ca_bundle_file",
                "is set but mail.smtp.tls = \"none\": use \"starttls\" or \"tls\"",
            )),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
        if self.pool_size == 0 || self.pool_size > 100 {
            problems.push(ConfigError::invalid(
                "mail.smtp.pool_size",
                format!("is {}; must be between 1 and 100", self.pool_size),
            ));
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > 600 {
            problems.push(ConfigError::invalid(
                "mail.smtp.timeout_seconds",
                format!("is {}; must be between 1 and 600", self.timeout_seconds),
            ));
        }
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) {
            problems.push(ConfigError::invalid(
                "mail.smtp.rate_per_second",
                "must be a number above 0 (e.g. 0.5 for one message every two seconds)",
            ));
        }
        if self.retry_delays_ms.len() > MAX_RETRIES
            || self
                .retry_delays_ms
                .iter()
                .any(|ms| *ms > MAX_RETRY_DELAY_MS)
        {
            problems.push(ConfigError::invalid(
                "mail.smtp.retry_delays_ms",
                format!(
                    "at most {MAX_RETRIES} entries of at most {MAX_RETRY_DELAY_MS} ms each; \
                     longer waits belong to the reminder's own retry"
                ),
            ));
        }
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl MailSettings {
    /// The parsed `from` mailbox.
    pub fn from_mailbox(&self) -> Result<Mailbox, ConfigError> {
        self.from.parse::<Mailbox>().map_err(|e| {
            ConfigError::invalid(
                "mail.from",
                format!(
                    "{:?} is not a mailbox like \"Repayments <repayments@example.com>\": {e}",
                    self.from
                ),
            )
        })
    }

    /// The domain Message-IDs end in: `message_id_domain`, else the domain of `from`.
    pub fn message_id_domain(&self) -> String {
        match &self.message_id_domain {
            Some(domain) => domain.clone(),
            None => self
                .from_mailbox()
                .map(|m| m.email.domain().to_string())
                .unwrap_or_else(|_| "localhost".to_string()),
        }
    }

    /// A context with the lender's details filled in; the engine adds the installment's.
    pub fn base_context(&self) -> TemplateContext {
        TemplateContext {
            lender_name: self.lender_name.clone(),
            support_contact: self.support_contact.clone(),
            payment_url: self.payment_url.clone(),
            ..TemplateContext::default()
        }
    }

    /// Loads the templates these settings name (built-ins plus overrides).
    pub fn templates(&self) -> Result<Templates, super::TemplateError> {
        Templates::load(self.templates_dir.as_deref())
    }

    /// Every problem with the mail settings, each naming its key. Also renders every
    /// template with sample data, so a broken override is found by `check-config`.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = self.from_mailbox() {
            problems.push(e);
        }
        if let Some(domain) = &self.message_id_domain
            && !is_domain(domain)
        {
            problems.push(ConfigError::invalid(
                "mail.message_id_domain",
                format!("{domain:?} is not a domain name like example.com"),
            ));
        }
        if self.kind == MailKind::Outbox && self.outbox_dir.as_os_str().is_empty() {
            problems.push(ConfigError::invalid(
                "mail.outbox_dir",
                "must name a directory",
            ));
        }
        if self.lender_name.trim().is_empty() || self.lender_name.contains(char::is_control) {
            problems.push(ConfigError::invalid(
                "mail.lender_name",
                "must be a non-empty name on one line",
            ));
        }
        if let Some(contact) = &self.support_contact
            && (contact.trim().is_empty() || contact.contains(char::is_control))
        {
            problems.push(ConfigError::invalid(
                "mail.support_contact",
                "must be non-empty text on one line, or left out",
            ));
        }
        if let Some(url) = &self.payment_url
            && (!url.starts_with("https://")
                || url.contains(|c: char| c.is_whitespace() || c.is_control()))
        {
            problems.push(ConfigError::invalid(
                "mail.payment_url",
                "must be an https:// URL without spaces",
            ));
        }
        match (&self.kind, &self.smtp) {
            (MailKind::Smtp, None) => problems.push(ConfigError::invalid(
                "mail.smtp",
                "kind = \"smtp\" needs a [mail.smtp] section with at least host",
            )),
            (_, Some(smtp)) => smtp.check(&mut problems),
            (MailKind::Outbox, None) => {}
        }
        if let Some(dir) = &self.templates_dir
            && !dir.is_dir()
        {
            problems.push(ConfigError::invalid(
                "mail.templates_dir",
                format!("{} is not a directory", dir.display()),
            ));
            return problems;
        }
        if let Err(e) = self.templates().and_then(|t| t.check_all()) {
            problems.push(ConfigError::invalid("mail.templates_dir", e.to_string()));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> MailSettings {
        toml::from_str(toml_text).expect("parses")
    }

    fn keys(problems: &[ConfigError]) -> Vec<String> {
        problems
            .iter()
            .map(|p| match p {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_embedded_default_needs_only_a_sender() {
        let s = settings(r#"from = "Repayments <repayments@example.com>""#);
        assert_eq!(s.kind, MailKind::Outbox);
        assert_eq!(s.outbox_dir, PathBuf::from("var/outbox"));
        assert_eq!(s.lender_name, "Your lender");
        assert_eq!(s.message_id_domain(), "example.com");
        assert!(s.check().is_empty(), "{:?}", s.check());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<MailSettings>(
            "from = \"a@example.com\"\nkind = \"outbox\"\nfrmo = \"x\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("frmo"), "{err}");
        let err = toml::from_str::<MailSettings>(
            "from = \"a@example.com\"\n[smtp]\nhost = \"h\"\nprot = 25",
        )
        .unwrap_err();
        assert!(err.to_string().contains("prot"), "{err}");
    }

    #[test]
    fn check_names_every_bad_key() {
        let s = settings(
            r#"
            kind = "smtp"
            from = "not a mailbox"
            message_id_domain = "bad domain"
            lender_name = ""
            payment_url = "javascript:alert(1)"
            [smtp]
            host = "mail.example.com"
            port = 0
            tls = "none"
            username = "repayd"
            pool_size = 0
            timeout_seconds = 0
            rate_per_second = 0
            retry_delays_ms = [1000, 600000]
            "#,
        );
        let keys = keys(&s.check());
        for key in [
            "mail.from",
            "mail.message_id_domain",
            "mail.lender_name",
            "mail.payment_url",
            "mail.smtp.port",
            "mail.smtp.tls",
            "mail.smtp.password",
            "mail.smtp.pool_size",
            "mail.smtp.timeout_seconds",
            "mail.smtp.rate_per_second",
            "mail.smtp.retry_delays_ms",
        ] {
            assert!(
                keys.contains(&key.to_string()),
                "{key} missing from {keys:?}"
            );
        }
    }

    #[test]
    fn unencrypted_smtp_only_to_loopback_unless_allowed() {
        let base = "from = \"a@example.com\"\nkind = \"smtp\"\n[smtp]\ntls = \"none\"\n";
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            let s = settings(&format!("{base}host = \"{host}\""));
            assert!(s.check().is_empty(), "{host}: {:?}", s.check());
            assert_eq!(s.smtp.as_ref().unwrap().port(), 25);
        }
        let s = settings(&format!("{base}host = \"mail.example.com\""));
        assert_eq!(keys(&s.check()), ["mail.smtp.tls"]);
        let s = settings(&format!(
            "{base}host = \"mail.example.com\"\nallow_insecure = true"
        ));
        assert!(s.check().is_empty());
    }

    #[test]
    fn smtp_kind_needs_its_section_and_password_comes_from_a_file() {
        let s = settings("from = \"a@example.com\"\nkind = \"smtp\"");
        assert_eq!(keys(&s.check()), ["mail.smtp"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let s = settings(&format!(
            "from = \"a@example.com\"\nkind = \"smtp\"\n[smtp]\nhost = \"smtp.example.com\"\n\
             username = \"repayd\"\npassword_file = {:?}",
            file.display().to_string()
        ));
        assert!(s.check().is_empty(), "{:?}", s.check());
        use secrecy::ExposeSecret;
        let smtp = s.smtp.as_ref().unwrap();
        assert_eq!(smtp.password().unwrap().unwrap().expose_secret(), "s3cret");
        assert_eq!(smtp.port(), 587);

        let s = settings(
            "from = \"a@example.com\"\n[smtp]\nhost = \"h.example.com\"\npassword_file = \"/nonexistent/pw\"\nusername = \"u\"",
        );
        assert_eq!(keys(&s.check()), ["mail.smtp.password_file"]);
    }

    #[test]
    fn a_missing_templates_dir_is_named() {
        let s = settings("from = \"a@example.com\"\ntemplates_dir = \"/nonexistent/templates\"");
        assert_eq!(keys(&s.check()), ["mail.templates_dir"]);
    }
}
