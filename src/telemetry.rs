//! Logging setup: human-readable by default, JSON (`log.format = "json"`, one object per
//! line) for machines; stdout. Under systemd, when stdout or stderr is the journal
//! (`JOURNAL_STREAM` names it), events go to journald natively instead, whatever the
//! format: one entry per event (multi-line messages included), the level as PRIORITY
//! (error 3, warn 4, info 6, debug 7), fields as `REPAYD_<NAME>` (`journalctl -o
//! verbose`), identifier `repayd`, and no second timestamp.
//!
//! Personal data: log call sites pass emails and account numbers through [`crate::mask`];
//! the daemon's integration test scans the real binary's output for the unmasked values.

use crate::config::{LogFormat, LogSettings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(settings: &LogSettings) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(quiet_dependencies(&settings.level)))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    if under_journald() && init_journald(filter()) {
        return;
    }
    // Colour codes only on a terminal: in a file they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
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

/// Logging for commands that run before the configuration is read: warnings to stderr
/// (to the journal natively when stderr is the journal, e.g. the unit's ExecReload).
pub fn init_stderr() {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    if under_journald() && init_journald(filter()) {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The error a command ends with: one journal entry at priority 3 under journald, else a
/// line (or several) on stderr.
pub fn fatal(text: &str) {
    if under_journald() {
        // Installs a journald subscriber if the command had not set one up yet (e.g. the
        // configuration could not be read); a subscriber already there is kept.
        init_journald(EnvFilter::new("error"));
        tracing::error!("{text}");
    } else {
        eprintln!("repayd: {text}");
    }
}

/// Whether stdout or stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to
/// the stream's `device:inode`, and a child whose output was redirected elsewhere
/// inherits the variable but not the stream.
pub fn under_journald() -> bool {
    std::env::var("JOURNAL_STREAM")
        .ok()
        .and_then(|v| parse_journal_stream(&v))
        .is_some_and(|stream| {
            use std::os::fd::AsFd;
            [
                fd_identity(std::io::stdout().as_fd()),
                fd_identity(std::io::stderr().as_fd()),
            ]
            .into_iter()
            .flatten()
            .any(|id| id == stream)
        })
}

fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

fn fd_identity(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::from(fd.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Installs the journald subscriber; false if journald's socket cannot be opened (the
/// caller then logs to the stream, which still reaches the journal).
fn init_journald(filter: EnvFilter) -> bool {
    let Ok(layer) = tracing_journald::layer() else {
        return false;
    };
    let layer = layer
        .with_syslog_identifier("repayd".into())
        .with_field_prefix(Some("REPAYD".into()))
        .with_priority_mappings(tracing_journald::PriorityMappings {
            info: tracing_journald::Priority::Informational,
            debug: tracing_journald::Priority::Debug,
            ..tracing_journald::PriorityMappings::new()
        });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
    true
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

    #[test]
    fn journal_stream_is_matched_by_device_and_inode() {
        assert_eq!(parse_journal_stream("8:123456\n"), Some((8, 123456)));
        assert_eq!(parse_journal_stream("8"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
        // A file as the stream: its own device and inode identify it, another file's do not.
        let dir = tempfile::tempdir().unwrap();
        let a = std::fs::File::create(dir.path().join("a")).unwrap();
        let b = std::fs::File::create(dir.path().join("b")).unwrap();
        use std::os::fd::AsFd;
        let (ia, ib) = (
            fd_identity(a.as_fd()).unwrap(),
            fd_identity(b.as_fd()).unwrap(),
        );
        assert_ne!(ia, ib);
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path().join("a")).unwrap();
        assert_eq!(ia, (meta.dev(), meta.ino()));
    }
}
