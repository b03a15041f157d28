//! The command line: clap definitions shared by `main.rs` (and later the man page and
//! shell completions).

use crate::domain::{BusinessDayRule, Frequency, Method, RemainderPlacement, RoundingMode};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "repayd",
    version,
    about = "Keeps installment repayments on track: reminders, funds-checked auto-debit, retries, overdue handling"
)]
pub struct Cli {
    /// Configuration file (TOML). Environment variables REPAYD__SECTION__KEY override it.
    #[arg(
        long,
        global = true,
        env = "REPAYD_CONFIG",
        default_value = crate::config::DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: plan work, check funds, debit, retry, until SIGTERM.
    Run(RunArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration (and everything it names); exit 78 if it is bad.
    CheckConfig,
    /// Ask the running daemon to reload its configuration, templates and calendar, and
    /// wait for the outcome: exit 0 once they are in force, 78 if they were rejected (the
    /// previous settings stay in force). The unit's ExecReload.
    Reload(crate::commands::reload::ReloadArgs),
    /// Preview a repayment schedule. Nothing is stored; no configuration needed.
    Quote(QuoteArgs),
    /// Load agreements from a CSV or JSON file (validated as a whole first).
    Import(crate::commands::import::ImportArgs),
    /// List agreements or show one with its schedule.
    Agreements(crate::commands::agreements::AgreementsArgs),
    /// Show one customer: agreements, arrears, charges, funding sources, debits, messages.
    Customers(crate::commands::customers::CustomersArgs),
    /// Record payments received by other means, or settle an agreement early.
    Payments(crate::commands::payments::PaymentsArgs),
    /// Overdue accounts: the report for collections and credit-bureau files.
    Overdue(crate::commands::overdue::OverdueArgs),
    /// Debit attempts that need an operator: list them, re-queue a rejected one.
    Attempts(crate::commands::attempts::AttemptsArgs),
    /// Customer emails that need an operator: list failed ones, send one again.
    Emails(crate::commands::emails::EmailsArgs),
    /// Debit mandates: revoke one (no more debits; customers asked to pay another way),
    /// or reinstate a revoked one.
    Mandates(crate::commands::lifecycle::MandatesArgs),
    /// A customer's funding accounts in the order debits try them.
    FundingSources(crate::commands::funding::FundingArgs),
    /// The embedded sandbox bank: return a debit it booked (protocol 1.1 returns feed),
    /// for demos and tests.
    Sandbox(crate::commands::sandbox::SandboxArgs),
    /// Charges (late fees): waive one, fully or partly.
    Fees(crate::commands::fees::FeesArgs),
    /// Dry run on a virtual clock over a copy of the data: what would be sent and debited
    /// in the next N days. Nothing is sent, debited or written.
    Simulate(crate::commands::simulate::SimulateArgs),
    /// Benchmarks: generated portfolios through this binary against real databases, a
    /// loopback SMTP sink and the sandbox bank; every figure beside the machine's limit
    /// measured in the same run (see docs/benchmarks.md). Needs no configuration.
    Bench(crate::commands::bench::BenchArgs),
    /// Man pages and shell completions, for packaging.
    #[command(hide = true)]
    Generate(crate::commands::generate::GenerateArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Import this agreements file before starting (as `repayd import` would; importing
    /// the same file again changes nothing). For first runs and demos.
    #[arg(long, value_name = "FILE")]
    pub import: Option<PathBuf>,
    /// Import the sample agreements with their dates moved around today, so the
    /// README's story (a catch-up debit, a balance-low reminder, receipts) happens now.
    #[arg(long, conflicts_with = "import")]
    pub demo: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct QuoteArgs {
    /// Amount financed, e.g. 12000 or 12000.00.
    #[arg(long, allow_negative_numbers = true)]
    pub principal: String,
    /// ISO 4217 currency code, e.g. CNY.
    #[arg(long)]
    pub currency: String,
    /// Number of installments (1 to 600).
    #[arg(long, allow_negative_numbers = true)]
    pub installments: u32,
    #[arg(long, value_enum)]
    pub method: Method,
    /// Nominal annual interest rate as a fraction or a percentage (0.12 or 12%).
    #[arg(long, default_value = "0", allow_negative_numbers = true)]
    pub annual_rate: String,
    /// Fee per period as a fraction of the principal or a percentage (0.006 or 0.6%), for
    /// flat-fee.
    #[arg(long, default_value = "0", allow_negative_numbers = true)]
    pub fee_rate: String,
    /// First due date, YYYY-MM-DD.
    #[arg(long)]
    pub first_due: chrono::NaiveDate,
    #[arg(long, value_enum, default_value = "monthly")]
    pub frequency: Frequency,
    #[arg(long, value_enum, default_value = "half-up")]
    pub rounding: RoundingMode,
    #[arg(long, value_enum, default_value = "last")]
    pub remainder: RemainderPlacement,
    /// Holiday calendar file for business-day adjustment.
    #[arg(long)]
    pub calendar: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "none")]
    pub business_day: BusinessDayRule,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}
