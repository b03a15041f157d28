//! Logging setup: human-readable by default, JSON (`log.format = "json"`, one object per
//! line) for machines; stdout, which journald collects under systemd.
//!
//! Personal data: log call sites pass emails and account numbers through [`crate::mask`];
//! the daemon's integration test scans the real binary's output for the unmasked values.

use crate::config::{LogFormat, LogSettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(quiet_dependencies(&settings.level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: in journald or a file they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// The configured filter, with the cron scheduler's start-up chatter ("Uninited", "Job
/// creator created" at INFO) turned down unless the filter names that crate itself.
fn quiet_dependencies(level: &str) -> String {
    if level.contains("tokio_cron_scheduler") {
        level.to_string()
    } else {
        format!("{level},tokio_cron_scheduler=warn")
    }
}

/// Logging for commands that run before the configuration is read: warnings to stderr.
pub fn init_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_chatter_is_turned_down_unless_asked_for() {
        assert_eq!(quiet_dependencies("info"), "info,tokio_cron_scheduler=warn");
        assert_eq!(
            quiet_dependencies("info,tokio_cron_scheduler=debug"),
            "info,tokio_cron_scheduler=debug"
        );
        assert!(EnvFilter::try_new(quiet_dependencies("repayd=debug,sqlx=warn")).is_ok());
    }
}
