//! `repayd funding-sources set CUSTOMER ACCOUNT_REF...`: the order in which a debit tries
//! a customer's funding accounts (a balance first, then cards, as the customer chose).
//! Every account keeps its own mandate: a revoked one is skipped, never reactivated here.
//! `repayd agreements show` lists the order an agreement's debits follow.

use crate::store::Store;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct FundingArgs {
    #[command(subcommand)]
    pub command: FundingCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum FundingCommand {
    /// Set the order of a customer's funding accounts: the first is tried first.
    Set {
        /// The customer's external id.
        #[arg(value_name = "CUSTOMER_ID")]
        customer: String,
        /// The customer's account references, first tried first.
        #[arg(value_name = "ACCOUNT_REF", required = true)]
        accounts: Vec<String>,
        /// Who sets it (recorded in the event log).
        #[arg(long)]
        actor: String,
        /// Why, e.g. "customer's request of 2027-01-10" (recorded in the event log).
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(
    store: &Store,
    now: DateTime<Utc>,
    args: &FundingArgs,
) -> anyhow::Result<ExitCode> {
    match &args.command {
        FundingCommand::Set {
            customer,
            accounts,
            actor,
            reason,
        } => {
            anyhow::ensure!(
                !actor.trim().is_empty(),
                "--actor must name who sets the order"
            );
            anyhow::ensure!(!reason.trim().is_empty(), "--reason must say why");
            let rows = store
                .set_funding_order(
                    customer,
                    accounts,
                    actor.trim(),
                    reason.trim(),
                    crate::clock::to_epoch_ms(now),
                )
                .await?;
            println!("funding sources of customer {customer}, in the order debits try them:");
            for r in &rows {
                println!(
                    "  {}  {}  mandate {} ({}){}",
                    r.priority
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into()),
                    crate::mask::account(&r.account_ref),
                    r.mandate_ref,
                    r.mandate_status,
                    match (r.priority, r.mandate_status.as_str()) {
                        (None, _) => ", only for the agreements that name it",
                        (_, "active") => "",
                        _ => ", skipped until its mandate is active",
                    }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
