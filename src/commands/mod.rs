//! One function per `repayd` subcommand. `main.rs` parses the command line and calls
//! [`main`]; everything else happens here and below.

pub mod agreements;
pub mod attempts;
pub mod bench;
pub mod customers;
pub mod demo;
pub mod emails;
pub mod fees;
pub mod funding;
pub mod generate;
pub mod import;
pub mod lifecycle;
pub mod overdue;
pub mod payments;
pub mod quote;
pub mod reload;
pub mod reschedule;
pub mod run;
pub mod sandbox;
pub mod simulate;

use crate::cli::{Cli, Command};
use crate::clock::SystemClock;
use crate::config::{ConfigError, EXIT_CONFIG, Settings};
use crate::store::Store;
use anyhow::Context;
use std::process::ExitCode;

/// sysexits.h EX_DATAERR: the input data was bad (e.g. an import file).
pub const EXIT_DATA: u8 = 65;

/// Runs the parsed command and turns its outcome into the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // Files repayd creates (the database, the outbox and its .eml files) hold customers'
    // personal data: private to the service's user and group wherever it runs, not only
    // under systemd's UMask=.
    private_umask();
    // One TLS crypto provider for sqlx, lettre and reqwest alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("repayd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            crate::telemetry::fatal(&format!("{err:#}"));
            ExitCode::from(exit_code_for(&err))
        }
    }
}

/// The umask every repayd process runs with: files 0640, directories 0750 at most.
pub const UMASK: u32 = 0o027;

/// Adds the bits of [`UMASK`] to the inherited umask (a stricter one is kept).
fn private_umask() {
    use rustix::fs::Mode;
    let inherited = rustix::process::umask(Mode::from_bits_truncate(UMASK));
    rustix::process::umask(inherited | Mode::from_bits_truncate(UMASK));
}

fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err
        .chain()
        .any(|e| e.downcast_ref::<ConfigError>().is_some())
    {
        EXIT_CONFIG as u8
    } else {
        1
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Quote(args) => {
            crate::telemetry::init_stderr();
            quote_command(&args)
        }
        Command::CheckConfig => {
            crate::telemetry::init_stderr();
            let settings = load_settings(&cli.config)?;
            check_components(&settings).await?;
            // Certificates: expired is an error (exit 78), ending within 30 days a warning.
            use crate::clock::Clock;
            for warning in settings
                .certificate_expiry(SystemClock.now())
                .into_result()?
            {
                eprintln!("warning: {warning}");
            }
            Store::probe(&settings.database_url())
                .await
                .map_err(|e| ConfigError::invalid(settings.database_url_key(), e.to_string()))?;
            for warning in calendar_warnings(&settings, now()) {
                eprintln!("repayd: warning: {warning}");
            }
            let (zone, from) = settings.console.zone();
            println!("console: the operations' date is taken in {zone} ({from})");
            println!("configuration OK: {}", cli.config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Reload(args) => {
            crate::telemetry::init_stderr();
            reload::client(&args).await
        }
        Command::Migrate => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init(&settings.log);
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            tracing::info!("migrations applied");
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init(&settings.log);
            if let Some(file) = &args.import {
                let store = open_store(&settings).await?;
                store.migrate().await.context("applying migrations")?;
                let import = import::ImportArgs {
                    file: file.clone(),
                    format: None,
                    update: false,
                    dry_run: false,
                    batch_size: crate::import::DEFAULT_BATCH_SIZE,
                };
                let code = import::run(&store, &import, &settings.schedule, &SystemClock).await?;
                store.close().await;
                if code != ExitCode::SUCCESS {
                    return Ok(code);
                }
            }
            if args.demo {
                let store = open_store(&settings).await?;
                store.migrate().await.context("applying migrations")?;
                let code = demo::load(&store, &settings.schedule, &SystemClock).await?;
                store.close().await;
                if code != ExitCode::SUCCESS {
                    return Ok(code);
                }
            }
            run::run(settings, cli.config.clone()).await
        }
        Command::Simulate(args) => {
            let settings = load_settings(&cli.config)?;
            // Warnings only: the timeline on stdout is the output.
            crate::telemetry::init_stderr();
            simulate::run(&settings, &args).await
        }
        Command::Generate(args) => generate::run(&args),
        Command::Bench(args) => {
            crate::telemetry::init_stderr();
            bench::run(&args).await
        }
        Command::Import(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = import::run(&store, &args, &settings.schedule, &SystemClock).await;
            store.close().await;
            code
        }
        Command::Agreements(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = match &args.command {
                agreements::AgreementsCommand::Lifecycle(lc) => {
                    lifecycle::run_agreements(&store, &settings, now(), lc).await
                }
                agreements::AgreementsCommand::Reschedule(r) => {
                    reschedule::run(&store, &settings, now(), r).await
                }
                _ => agreements::run(&store, &args).await,
            };
            store.close().await;
            code
        }
        Command::Customers(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = customers::run(&store, &args).await;
            store.close().await;
            code
        }
        Command::Payments(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = payments::run(&store, &settings, now(), &args).await;
            store.close().await;
            code
        }
        Command::Overdue(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = overdue::run(&store, &settings, now(), &args).await;
            store.close().await;
            code
        }
        Command::Attempts(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = attempts::run(&store, now(), &args).await;
            store.close().await;
            code
        }
        Command::Emails(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = emails::run(&store, now(), &args).await;
            store.close().await;
            code
        }
        Command::FundingSources(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = funding::run(&store, now(), &args).await;
            store.close().await;
            code
        }
        Command::Sandbox(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            anyhow::ensure!(
                settings.gateway.kind == crate::gateway::GatewayKind::Sandbox,
                "gateway.kind is not \"sandbox\": only the embedded sandbox bank can be told to return a debit"
            );
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = sandbox::run(&store, now(), &args).await;
            store.close().await;
            code
        }
        Command::Fees(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = fees::run(&store, now(), &args).await;
            store.close().await;
            code
        }
        Command::Mandates(args) => {
            let settings = load_settings(&cli.config)?;
            crate::telemetry::init_stderr();
            let store = open_store(&settings).await?;
            store.migrate().await.context("applying migrations")?;
            let code = lifecycle::run_mandates(&store, &settings, now(), &args).await;
            store.close().await;
            code
        }
    }
}

/// Loads and checks the configuration; errors name the file and every bad key.
pub fn load_settings(path: &std::path::Path) -> anyhow::Result<Settings> {
    Ok(Settings::load(path)?)
}

/// Checks what the configuration names beyond its own keys: templates render, the
/// gateway and mailer can be built.
pub async fn check_components(settings: &Settings) -> anyhow::Result<()> {
    // Templates are rendered with sample data by `MailSettings::check` already.
    if let Some(http) = &settings.gateway.http
        && settings.gateway.kind == crate::gateway::GatewayKind::Http
    {
        crate::gateway::http::HttpGateway::new(http).context("gateway.http")?;
    }
    crate::engine::policy::EnginePolicy::from_settings(settings)
        .map_err(|e| ConfigError::invalid("engine policy", format!("{e:#}")))?;
    Ok(())
}

/// What `check-config` warns about the holiday calendar (the configuration is still
/// valid): the current or next year not covered by any loaded calendar file, so public
/// holidays there would be treated as business days.
pub fn calendar_warnings(settings: &Settings, now: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    use chrono::Datelike;
    let Some(path) = &settings.schedule.calendar else {
        return Vec::new();
    };
    let Ok(cal) = crate::domain::HolidayCalendar::load(path) else {
        return Vec::new(); // check() already refused it
    };
    let year = now.year();
    cal.missing_years([year, year + 1])
        .into_iter()
        .map(|y| {
            format!(
                "schedule.calendar ({}, years {:?}) does not cover {y}: due dates in {y} get \
                 weekends-only business days and the planner will warn daily; add a calendar \
                 file for {y} (schedule.calendar may name a directory of yearly files)",
                path.display(),
                cal.years
            )
        })
        .collect()
}

/// `repayd quote`: builds the terms from the arguments and prints the schedule.
fn quote_command(args: &crate::cli::QuoteArgs) -> anyhow::Result<ExitCode> {
    use crate::domain::{Currency, HolidayCalendar, Money, Terms};
    let currency = Currency::parse(&args.currency).context("--currency")?;
    let principal = Money::parse(&args.principal, currency).context("--principal")?;
    // The same spelling as import files: a fraction (0.12) or a percentage (12%).
    let annual_rate = crate::domain::parse_rate(args.annual_rate.trim())
        .map_err(|e| anyhow::anyhow!("--annual-rate: {e}"))?;
    let fee_rate = crate::domain::parse_rate(args.fee_rate.trim())
        .map_err(|e| anyhow::anyhow!("--fee-rate: {e}"))?;
    let calendar = match &args.calendar {
        Some(path) => HolidayCalendar::from_file(path).context("--calendar")?,
        None => HolidayCalendar::default(),
    };
    let terms = Terms {
        currency,
        principal: principal.amount(),
        installments: args.installments,
        method: args.method,
        annual_rate,
        fee_rate,
        first_due: args.first_due,
        frequency: args.frequency,
        rounding: args.rounding,
        remainder: args.remainder,
        business_day: args.business_day,
    };
    let schedule = crate::domain::schedule::generate(&terms, &calendar)?;
    let out = match args.format {
        crate::cli::OutputFormat::Json => quote::render_json(&schedule),
        crate::cli::OutputFormat::Table => quote::render_table(&schedule, &terms),
    };
    print!("{out}");
    if !out.ends_with('\n') {
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects to the configured database. A permanent failure (bad URL, authentication,
/// missing database) is a configuration error naming the key the URL came from, so the
/// process exits 78 and systemd does not restart it in a loop; a refused connection
/// exits 1 and is retried.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let key = settings.database_url_key();
    Store::connect_with(&settings.database_url(), settings.database.store_options())
        .await
        .map_err(|e| {
            if e.is_permanent_connect_error() {
                anyhow::Error::new(ConfigError::invalid(
                    key,
                    format!("cannot open the database: {e}"),
                ))
            } else {
                anyhow::Error::new(e).context(format!("opening the database ({key})"))
            }
        })
}

/// `--actor NAME --reason TEXT` of every operator action. The actor defaults to the
/// login name of the person at the shell (see [`crate::domain::Actor::resolve`]); the
/// reason is required except where an action names a default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ActorArgs {
    /// Who acts, recorded in the event log (default: SUDO_USER, else USER or LOGNAME).
    #[arg(long, value_name = "NAME")]
    pub actor: Option<String>,
    /// Why, recorded in the event log, e.g. "customer called: salary late".
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

impl ActorArgs {
    /// The actor, with `default_reason` when `--reason` is absent (refused when both are).
    pub fn resolve(
        &self,
        default_reason: Option<&str>,
    ) -> Result<crate::domain::Actor, crate::domain::ActorError> {
        let reason = self.reason.as_deref().or(default_reason).unwrap_or("");
        crate::domain::Actor::resolve(self.actor.as_deref(), reason, |k| std::env::var(k).ok())
    }
}

/// Prints why an operator action was refused (nothing was written) and gives exit 65;
/// a store failure goes up as an error (exit 1).
pub fn refused(
    what: &str,
    err: &crate::engine::operator::OperatorError,
) -> anyhow::Result<ExitCode> {
    match err {
        crate::engine::operator::OperatorError::Refused(why) => {
            eprintln!("repayd: {what}: {why}");
            Ok(ExitCode::from(EXIT_DATA))
        }
        crate::engine::operator::OperatorError::Store(e) => Err(anyhow::anyhow!("{what}: {e}")),
    }
}

/// The current instant for a one-shot command, from the same Clock the daemon uses.
fn now() -> chrono::DateTime<chrono::Utc> {
    crate::clock::Clock::now(&SystemClock)
}
