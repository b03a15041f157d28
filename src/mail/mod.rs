//! Email: the [`Mailer`] trait and its three implementations (SMTP through lettre, the
//! file outbox, an in-memory capture), the deterministic Message-ID, and the localized
//! templates customers actually read.

pub mod format;
mod message;
pub mod outbox;
pub mod settings;
pub mod smtp;
pub mod templates;

pub use format::Locale;
pub use outbox::{CaptureMailer, OutboxMailer};
pub use settings::{MailKind, MailSettings, SmtpSettings, TlsMode};
pub use smtp::SmtpMailer;
pub use templates::{
    ChargeLine, DebitFailure, DigestPart, EmailKind, RenderedEmail, ScheduleEntry, TemplateContext,
    TemplateError, Templates,
};

use crate::config::ConfigError;
use std::fmt;
use std::sync::Arc;

/// One email, ready to send: rendered, addressed and identified.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// The recipient's address, e.g. `li.wei@example.com`.
    pub to: String,
    /// The recipient's display name; may be empty.
    pub to_name: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The Message-ID without angle brackets (see [`message_id`]); the same reminder
    /// always gets the same id, so a repeat after a crash is recognisable as one.
    pub message_id: String,
    /// The locale the email was rendered in (`en`, `zh-CN`), sent as Content-Language.
    pub locale: String,
}

// Hand-written so a stray `{:?}` never puts a customer's address or letter into a log.
impl fmt::Debug for OutgoingEmail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingEmail")
            .field("to", &crate::mask::email(&self.to))
            .field("message_id", &self.message_id)
            .field("locale", &self.locale)
            .finish_non_exhaustive()
    }
}

impl RenderedEmail {
    /// Addresses a rendered email.
    pub fn into_outgoing(
        self,
        to: impl Into<String>,
        to_name: impl Into<String>,
        message_id: impl Into<String>,
        locale: Locale,
    ) -> OutgoingEmail {
        OutgoingEmail {
            to: to.into(),
            to_name: to_name.into(),
            subject: self.subject,
            text: self.text,
            html: self.html,
            message_id: message_id.into(),
            locale: locale.as_str().to_string(),
        }
    }
}

/// Why an email was not sent. The engine decides from the variant whether to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// A 4xx reply or connection trouble (refused, timed out, TLS): try again later.
    #[error("temporary mail failure: {0}")]
    Transient(String),
    /// A 5xx reply: the server will not take this message. Record it as failed, with the
    /// server's reply.
    #[error("mail rejected: {0}")]
    Permanent(String),
    /// The message cannot be built (bad address, bad Message-ID): fix the data.
    #[error("invalid email: {0}")]
    Invalid(String),
}

impl MailError {
    /// Whether sending the same message later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, MailError::Transient(_))
    }
}

/// Sends one email. Implementations are shared as `Arc<dyn Mailer>` between workers.
#[async_trait::async_trait]
pub trait Mailer: Send + Sync + fmt::Debug {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError>;
}

/// The deterministic Message-ID of a customer email, without angle brackets:
/// `repayd.3f9a0c1d2b4e.i123.upcoming.7@example.com`. The deployment id (random per
/// database) keeps ids unique across databases, a recreated one included;
/// `offset_or_attempt` tells messages of one kind apart (days before due, attempt number,
/// bucket).
pub fn message_id(
    deployment: &str,
    installment_id: i64,
    kind: &str,
    offset_or_attempt: i64,
    domain: &str,
) -> String {
    // Only dot-atom characters, so the id is valid whatever the caller passes as kind.
    let kind: String = kind
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let deployment: String = deployment
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    format!("repayd.{deployment}.i{installment_id}.{kind}.{offset_or_attempt}@{domain}")
}

/// The mailer the settings ask for: the outbox directory is created if missing, the SMTP
/// transport is built (it connects lazily, on the first send).
pub fn build_mailer(settings: &MailSettings) -> Result<Arc<dyn Mailer>, ConfigError> {
    let from = settings.from_mailbox()?;
    match settings.kind {
        MailKind::Outbox => {
            let mailer = OutboxMailer::new(&settings.outbox_dir, from).map_err(|e| {
                ConfigError::invalid(
                    "mail.outbox_dir",
                    format!("cannot create {}: {e}", settings.outbox_dir.display()),
                )
            })?;
            Ok(Arc::new(mailer))
        }
        MailKind::Smtp => {
            let smtp = settings.smtp.as_ref().ok_or_else(|| {
                ConfigError::invalid(
                    "mail.smtp",
                    "kind = \"smtp\" needs a [mail.smtp] section with at least host",
                )
            })?;
            Ok(Arc::new(SmtpMailer::new(smtp, from)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_deterministic_and_valid() {
        assert_eq!(
            message_id("d1", 123, "upcoming", 7, "example.com"),
            "repayd.d1.i123.upcoming.7@example.com"
        );
        assert_ne!(
            message_id("d1", 123, "upcoming", 7, "example.com"),
            message_id("d2", 123, "upcoming", 7, "example.com"),
            "another database never reuses an id"
        );
        assert_eq!(
            message_id("d1", 123, "upcoming", 7, "example.com"),
            message_id("d1", 123, "upcoming", 7, "example.com")
        );
        assert_eq!(
            message_id("d1", 5, "debit_failed <x>\r\n", 2, "example.com"),
            "repayd.d1.i5.debit_failed--x---.2@example.com"
        );
    }

    #[test]
    fn only_transient_errors_are_retryable() {
        assert!(MailError::Transient("421".into()).is_retryable());
        assert!(!MailError::Permanent("550".into()).is_retryable());
        assert!(!MailError::Invalid("bad".into()).is_retryable());
    }

    #[test]
    fn debug_of_an_email_masks_the_address() {
        let email = OutgoingEmail {
            to: "li.wei@example.com".into(),
            to_name: "Li Wei".into(),
            subject: "s".into(),
            text: "secret letter".into(),
            html: String::new(),
            message_id: "m@x".into(),
            locale: "en".into(),
        };
        let shown = format!("{email:?}");
        assert!(shown.contains("l***@example.com"));
        assert!(!shown.contains("li.wei"));
        assert!(!shown.contains("secret letter"));
    }
}
