//! `repayd payments record`: money received by other means (bank transfer, cash), or an
//! early settlement with `--settle`. The action is [`operator::record_payment`] (what is
//! allocated where, what a settlement takes); this file parses, calls and prints.

use super::ActorArgs;
use crate::engine::operator::{self, PaymentSummary, RecordRequest};
use crate::engine::policy::EnginePolicy;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct PaymentsArgs {
    #[command(subcommand)]
    pub command: PaymentsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PaymentsCommand {
    /// Record money received by other means, or settle an agreement early (--settle).
    Record(RecordArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// The agreement's external id or numeric id.
    #[arg(long, value_name = "ID_OR_EXTERNAL_ID")]
    pub agreement: String,
    /// Amount received, in the agreement's currency, e.g. 1066.19.
    #[arg(long, allow_negative_numbers = true)]
    pub amount: String,
    /// The payment's reference (bank transaction id, receipt number); accepted once.
    #[arg(long)]
    pub reference: String,
    /// When the money was received (RFC 3339); default now.
    #[arg(long, value_name = "RFC3339")]
    pub received_at: Option<DateTime<chrono::FixedOffset>>,
    /// Settle the whole agreement: the amount must be the settlement figure (remaining
    /// principal + charges + everything already due; future interest and fees waived).
    #[arg(long)]
    pub settle: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: crate::cli::OutputFormat,
    /// `--reason` defaults to "payment received" (the reference says which).
    #[command(flatten)]
    pub actor: ActorArgs,
}

pub fn render_table(s: &PaymentSummary) -> String {
    let mut out = format!(
        "payment {} recorded: {} {} on agreement {} (reference {}, received {})\n",
        s.payment_id, s.amount, s.currency, s.agreement, s.reference, s.received_at
    );
    for a in &s.allocations {
        out.push_str(&format!(
            "  installment {:>3}  {:<10} {:>14}\n",
            a.seq, a.component, a.amount
        ));
    }
    if s.settlement {
        out.push_str(&format!(
            "early settlement: future interest and fees waived: {} {}\n",
            s.waived_total, s.currency
        ));
        for w in &s.waived {
            out.push_str(&format!(
                "  installment {:>3}  waived {:<10} {:>7}\n",
                w.seq, w.component, w.amount
            ));
        }
    }
    if !s.installments_paid.is_empty() {
        out.push_str(&format!(
            "installments now paid: {:?}\n",
            s.installments_paid
        ));
    }
    if s.delinquency_cleared {
        out.push_str("nothing is overdue any more: overdue state and credit flag cleared\n");
    }
    if s.agreement_completed {
        out.push_str("agreement completed\n");
    }
    out.push_str(&format!("still owed: {} {}\n", s.remaining, s.currency));
    out
}

pub async fn run(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    args: &PaymentsArgs,
) -> anyhow::Result<ExitCode> {
    let policy = EnginePolicy::from_settings(settings)?;
    match &args.command {
        PaymentsCommand::Record(r) => {
            let req = RecordRequest {
                agreement: r.agreement.clone(),
                amount: r.amount.clone(),
                reference: r.reference.clone(),
                received_at: r.received_at.map(|t| t.with_timezone(&Utc)),
                settle: r.settle,
            };
            let result = match r.actor.resolve(Some("payment received")) {
                Ok(actor) => operator::record_payment(store, &policy, now, &actor, &req).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(summary) => {
                    match r.format {
                        crate::cli::OutputFormat::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(&summary).unwrap_or_default()
                        ),
                        crate::cli::OutputFormat::Table => print!("{}", render_table(&summary)),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => super::refused("payment not recorded", &e),
            }
        }
    }
}
