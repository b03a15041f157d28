//! `repayd generate man|completions` (hidden): the man pages and shell completions, made
//! from the same clap definitions as the command line, so they can never disagree with
//! it. Used when packaging (see docs/operations.md, "Building the package").

use crate::cli::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: GenerateWhat,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GenerateWhat {
    /// The man pages (roff): repayd(1) to stdout, or with --out-dir repayd.1 and one
    /// repayd-<subcommand>.1 per subcommand in that directory.
    Man {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// A portfolio with paydays, for trying payday-aware retries (docs/retry.md):
    /// DIR/portfolio.csv (import format, two agreements per customer, 12 monthly
    /// installments, first due dates over 28 days from --from) and DIR/income.csv (the
    /// sandbox's income schedules: monthly salaries on a fixed day, month end, pensions on
    /// the 1st, weekly wages on Friday; one customer in ten irregular, without one).
    Portfolio {
        #[arg(long, default_value_t = 10_000)]
        agreements: usize,
        /// First due dates start the day after this date (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// The completion script for SHELL, to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match &args.what {
        GenerateWhat::Man { out_dir: None } => {
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout().lock())
                .context("writing the man page")?;
        }
        GenerateWhat::Man { out_dir: Some(dir) } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        GenerateWhat::Portfolio {
            agreements,
            from,
            out_dir,
        } => {
            use crate::commands::bench::portfolio;
            std::fs::create_dir_all(out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let mut spec = portfolio::PortfolioSpec::standard(*agreements, *from);
            // Paydays decide who is short, not the amounts.
            spec.short_every = 0;
            let csv = out_dir.join("portfolio.csv");
            let stats = portfolio::write_csv(&csv, &spec)
                .with_context(|| format!("writing {}", csv.display()))?;
            let income = out_dir.join("income.csv");
            let schedules = portfolio::write_income_csv(&income, &spec)
                .with_context(|| format!("writing {}", income.display()))?;
            println!(
                "{} agreements of {} customers in {}; {schedules} income schedules in {}",
                stats.agreements,
                stats.customers,
                csv.display(),
                income.display()
            );
        }
        GenerateWhat::Completions { shell } => {
            let mut cmd = cmd;
            clap_complete::generate(*shell, &mut cmd, "repayd", &mut std::io::stdout().lock());
        }
    }
    Ok(ExitCode::SUCCESS)
}
