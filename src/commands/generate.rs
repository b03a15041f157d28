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
    /// the 1st, weekly wages on Friday, one customer in ten irregular). Most customers
    /// keep a balance that covers their installments; --short-share live paycheck to
    /// paycheck, --chronic-share are paid less than they owe. The shares are assumptions
    /// (docs/operations.md, "Payday-aware retries in simulation").
    Portfolio {
        #[arg(long, default_value_t = 10_000)]
        agreements: usize,
        /// First due dates start the day after this date (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        #[arg(long)]
        out_dir: PathBuf,
        /// Percent of customers living paycheck to paycheck: all but 20.00 of the pay is
        /// spent some days after payday, so a due date outside that stretch finds them
        /// short.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(0..=100))]
        short_share: u32,
        /// Percent of customers paid half of what they owe each month.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
        chronic_share: u32,
        /// The same seed writes the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
            short_share,
            chronic_share,
            seed,
        } => {
            use crate::commands::bench::portfolio;
            anyhow::ensure!(
                short_share + chronic_share <= 100,
                "--short-share and --chronic-share add up to more than 100 percent"
            );
            std::fs::create_dir_all(out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let mut spec = portfolio::PortfolioSpec::standard(*agreements, *from);
            // Income decides who is short, not the amounts.
            spec.short_every = 0;
            let mix = portfolio::IncomeMix {
                seed: *seed,
                short_percent: *short_share,
                chronic_percent: *chronic_share,
            };
            let csv = out_dir.join("portfolio.csv");
            let stats = portfolio::write_csv(&csv, &spec)
                .with_context(|| format!("writing {}", csv.display()))?;
            let income = out_dir.join("income.csv");
            let incomes = portfolio::write_income_csv(&income, &spec, &mix)
                .with_context(|| format!("writing {}", income.display()))?;
            println!(
                "{} agreements of {} customers in {}; their income in {}: {} paycheck to \
                 paycheck, {} chronically short, {} irregular (no payday)",
                stats.agreements,
                stats.customers,
                csv.display(),
                income.display(),
                incomes.paycheck_to_paycheck,
                incomes.chronically_short,
                incomes.customers - incomes.schedules,
            );
        }
        GenerateWhat::Completions { shell } => {
            let mut cmd = cmd;
            clap_complete::generate(*shell, &mut cmd, "repayd", &mut std::io::stdout().lock());
        }
    }
    Ok(ExitCode::SUCCESS)
}
