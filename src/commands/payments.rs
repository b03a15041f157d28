//! `repayd payments record`: money received by other means (bank transfer, cash), or an
//! early settlement with `--settle`. The action is [`operator::record_payment`] (what is
//! allocated where, what a settlement takes); this file parses, calls and prints.

use super::ActorArgs;
use crate::engine::operator::{
    self, AccrualLine, PaymentSummary, RecordRequest, SettlementSummary,
};
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
    /// What settling an agreement early takes on a date (nothing is recorded): the
    /// figure `record --settle` expects, with the interest policy and day count used.
    Quote(QuoteArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct QuoteArgs {
    /// The agreement's external id or numeric id.
    #[arg(long, value_name = "ID_OR_EXTERNAL_ID")]
    pub agreement: String,
    /// The settlement date, YYYY-MM-DD in the customer's time zone; default today there.
    #[arg(long, value_name = "DATE")]
    pub date: Option<chrono::NaiveDate>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: crate::cli::OutputFormat,
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
    /// principal + charges + everything already due, + accrued interest under
    /// `[payments.settlement] interest = "accrued"`; the rest of future interest and fees
    /// waived). `payments quote` gives the figure.
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
        if let Some(a) = &s.accrual {
            out.push_str(&accrual_text(a, &s.currency));
        }
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

/// The accrued-interest line: the amount, and the policy and day count that made it.
fn accrual_text(a: &AccrualLine, currency: &str) -> String {
    if a.policy == "principal_only" {
        return format!(
            "accrued interest: {} {currency} (policy principal_only: none for the current period)\n",
            a.accrued_interest
        );
    }
    format!(
        "accrued interest: {} {currency} (policy accrued, {}: {} x {} x {} days from {} to {} / {})\n",
        a.accrued_interest,
        a.day_count,
        a.principal,
        a.annual_rate,
        a.days,
        a.from,
        a.to,
        if a.day_count == "act/365" { 365 } else { 360 },
    )
}

pub fn render_quote(q: &SettlementSummary) -> String {
    let c = &q.currency;
    let mut out = format!(
        "settling agreement {} on {} takes {} {c}\n",
        q.agreement, q.date, q.total
    );
    out.push_str(&format!("  open charges         {:>14} {c}\n", q.charges));
    out.push_str(&format!("  already due          {:>14} {c}\n", q.due));
    out.push_str(&format!("  remaining principal  {:>14} {c}\n", q.principal));
    out.push_str(&format!(
        "  accrued interest     {:>14} {c}\n",
        q.accrual.accrued_interest
    ));
    out.push_str(&format!("  total                {:>14} {c}\n", q.total));
    out.push_str(&accrual_text(&q.accrual, c));
    out.push_str(&format!(
        "waived: future interest {} {c}, fees {} {c}\n",
        q.waived_interest, q.waived_fees
    ));
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
        PaymentsCommand::Quote(q) => {
            match operator::settlement_quote(store, &policy, now, &q.agreement, q.date).await {
                Ok(summary) => {
                    match q.format {
                        crate::cli::OutputFormat::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(&summary).unwrap_or_default()
                        ),
                        crate::cli::OutputFormat::Table => print!("{}", render_quote(&summary)),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => super::refused("no settlement quote", &e),
            }
        }
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
