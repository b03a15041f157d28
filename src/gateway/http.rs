//! The HTTP connector: the JSON-over-HTTPS protocol in `docs/gateway-protocol.md`.

use crate::config::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGatewaySettings {}

impl HttpGatewaySettings {
    pub fn check(&self) -> Vec<ConfigError> {
        Vec::new()
    }
}
