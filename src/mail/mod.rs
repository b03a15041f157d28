//! Email: the `Mailer` trait, SMTP (lettre) and the file outbox, and the templates.

use crate::config::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {}

impl MailSettings {
    pub fn check(&self) -> Vec<ConfigError> {
        Vec::new()
    }
}
