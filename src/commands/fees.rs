//! `repayd fees waive CHARGE_ID [--amount X]`: an operator waives a charge (a late fee),
//! fully or partly, through [`operator::waive_charge`]. Charge ids are in
//! `repayd agreements show` and `repayd customers show`.

use super::{ActorArgs, refused};
use crate::cli::OutputFormat;
use crate::engine::operator::{self, ChargeWaiverSummary};
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct FeesArgs {
    #[command(subcommand)]
    pub command: FeesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum FeesCommand {
    /// Waive a charge (a late fee), all that is open or --amount of it.
    Waive {
        #[arg(value_name = "CHARGE_ID")]
        charge_id: i64,
        /// How much to waive, in the charge's currency, exact to its minor unit
        /// (default: everything still open).
        #[arg(long, allow_negative_numbers = true)]
        amount: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        #[command(flatten)]
        actor: ActorArgs,
    },
}

pub fn render_table(s: &ChargeWaiverSummary) -> String {
    format!(
        "charge {} ({}, agreement {}) waived {} {} by {}: open {} -> {} {}; now {}\n",
        s.charge_id,
        s.kind,
        s.agreement_id,
        s.waived,
        s.currency,
        s.actor,
        s.open_before,
        s.open_after,
        s.currency,
        s.status
    )
}

pub async fn run(store: &Store, now: DateTime<Utc>, args: &FeesArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        FeesCommand::Waive {
            charge_id,
            amount,
            format,
            actor,
        } => {
            let result = match actor.resolve(None) {
                Ok(a) => {
                    operator::waive_charge(store, now, &a, *charge_id, amount.as_deref()).await
                }
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(s) => {
                    match format {
                        OutputFormat::Json => {
                            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default())
                        }
                        OutputFormat::Table => print!("{}", render_table(&s)),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused("charge not waived", &e),
            }
        }
    }
}
