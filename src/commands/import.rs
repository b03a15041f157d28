//! `repayd import FILE`: loads agreements from a CSV or JSON file (see
//! `docs/import-format.md`). A bad file is rejected as a whole: every problem is listed on
//! stderr with its line (CSV) or array index (JSON) and field, the exit code is 65
//! (EX_DATAERR), and nothing is written.

use crate::clock::Clock;
use crate::config::ScheduleDefaults;
use crate::import::{DEFAULT_BATCH_SIZE, Format, ImportError, ImportOptions, exit, import_file};
use crate::store::Store;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The agreements file, .csv or .json (formats: docs/import-format.md).
    pub file: PathBuf,
    /// The file's format, when its extension does not say.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Replace agreements whose content changed, as long as nothing has been paid or
    /// debited on them (their planned debits and reminders are planned again).
    #[arg(long)]
    pub update: bool,
    /// Check the file and compare it with the database; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Agreements per write transaction.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE, value_parser = parse_batch_size)]
    pub batch_size: usize,
}

fn parse_batch_size(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 100000".into()),
    }
}

/// Runs the import and prints the summary (stdout) or the problems (stderr). The exit
/// code says how it went: 0, 65 bad file, 66 unreadable, 75 database trouble (running
/// it again finishes the job), 78 bad schedule defaults.
pub async fn run(
    store: &Store,
    args: &ImportArgs,
    defaults: &ScheduleDefaults,
    clock: &dyn Clock,
) -> anyhow::Result<ExitCode> {
    let options = ImportOptions {
        update: args.update,
        dry_run: args.dry_run,
        batch_size: args.batch_size,
    };
    let result = import_file(store, &args.file, args.format, &options, defaults, clock).await;
    match result {
        Ok(summary) => {
            // The daemon's planner and claims pick their indexes by these statistics. The
            // import itself is committed: a failure here is worth a warning only.
            if !summary.dry_run
                && let Err(e) = store.refresh_statistics().await
            {
                tracing::warn!(error = %e, "could not refresh planner statistics after the import");
            }
            let verb = if summary.dry_run {
                "checked"
            } else {
                "imported"
            };
            println!("{verb} {}\n{summary}", args.file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(ImportError::Invalid(problems)) => {
            // Buffered and locked: a bad 100 000-line file means as many lines here.
            let stderr = std::io::stderr();
            let mut out = std::io::BufWriter::new(stderr.lock());
            writeln!(
                out,
                "repayd import: {} rejected, nothing was written ({} problem{}):",
                args.file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )?;
            for p in &problems {
                writeln!(out, "  {p}")?;
            }
            out.flush()?;
            Ok(ExitCode::from(exit::DATA_ERR))
        }
        Err(e) => {
            eprintln!("repayd import: {e}");
            Ok(ExitCode::from(e.exit_code()))
        }
    }
}
