//! The sandbox bank: accounts and balances in the database, for the default setup, demos
//! and tests, with switches for latency and faults.

use crate::config::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {}

impl SandboxSettings {
    pub fn check(&self) -> Vec<ConfigError> {
        Vec::new()
    }
}
