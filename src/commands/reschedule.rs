//! `repayd agreements reschedule ID (--holiday N | --term N | --remaining-installments N)`:
//! a payment holiday or a new term, through [`operator::reschedule_agreement`]. Without
//! `--apply` it only shows the old and the new schedule (nothing is written); with it the
//! change is made, recorded with `--actor` and `--reason`, and the customer is emailed.

use super::{ActorArgs, refused};
use crate::cli::OutputFormat;
use crate::domain::HolidayCalendar;
use crate::engine::operator::{self, RescheduleRequest, RescheduleSummary, ScheduleLine};
use crate::engine::policy::EnginePolicy;
use crate::store::Store;
use anyhow::Context;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("change").required(true)
    .args(["holiday", "term", "remaining_installments"])))]
pub struct RescheduleArgs {
    /// The agreement's external id or numeric id.
    #[arg(value_name = "ID_OR_EXTERNAL_ID")]
    pub agreement: String,
    /// A payment holiday: the next N periods are skipped; the unpaid installments due from
    /// today move N periods later and the term grows by N.
    #[arg(long, value_name = "N")]
    pub holiday: Option<u32>,
    /// A new term: the agreement ends with N installments in all (paid and past-due ones
    /// included); the outstanding principal is re-spread over the rest.
    #[arg(long, value_name = "N")]
    pub term: Option<u32>,
    /// A new term given as the number of installments the outstanding principal is
    /// re-spread over.
    #[arg(long, value_name = "N")]
    pub remaining_installments: Option<u32>,
    /// Make the change (default: show the old and new schedule and change nothing).
    #[arg(long)]
    pub apply: bool,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub actor: ActorArgs,
}

fn lines_table(title: &str, lines: &[ScheduleLine], currency: &str) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{title}\n  {:>4}  {:<10}  {:>12}  {:>10}  {:>10}  {:>12}\n",
        "#", "due", "principal", "interest", "fee", "total"
    );
    for l in lines {
        out.push_str(&format!(
            "  {:>4}  {:<10}  {:>12}  {:>10}  {:>10}  {:>12} {currency}\n",
            l.seq, l.due_date, l.principal, l.interest, l.fee, l.total
        ));
    }
    out
}

pub fn render_table(s: &RescheduleSummary) -> String {
    let what = match s.mode.as_str() {
        "holiday" => format!("payment holiday of {} period(s)", s.n),
        _ => format!("new term: {} installment(s) for what is left", s.n),
    };
    let mut out = format!(
        "agreement {} ({}): {what}{}\n",
        s.external_id,
        s.agreement_id,
        if s.applied { "" } else { " (preview)" }
    );
    out.push_str(&lines_table("installments replaced:", &s.old, &s.currency));
    out.push_str(&lines_table("new installments:", &s.new, &s.currency));
    if !s.arrears.is_empty() {
        out.push_str(&lines_table(
            "past due, not moved (still owed on their dates):",
            &s.arrears,
            &s.currency,
        ));
    }
    out.push_str(&format!(
        "principal moved {} {c}; total {} -> {} {c}\n",
        s.principal_moved,
        s.old_total,
        s.new_total,
        c = s.currency
    ));
    if s.applied {
        out.push_str(&format!(
            "applied by {}: {} planned debit(s) and {} reminder(s) cancelled; the customer \
             is emailed the new schedule at {}\n",
            s.actor,
            s.attempts_cancelled,
            s.reminders_cancelled,
            s.notice_at.as_deref().unwrap_or("-")
        ));
    } else {
        out.push_str("nothing was changed: run again with --apply (and --reason) to make it\n");
    }
    out
}

pub async fn run(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    args: &RescheduleArgs,
) -> anyhow::Result<ExitCode> {
    let policy = EnginePolicy::from_settings(settings)?;
    let calendar = match &settings.schedule.calendar {
        Some(path) => HolidayCalendar::load(path).context("schedule.calendar")?,
        None => HolidayCalendar::default(),
    };
    let request = match (args.holiday, args.term, args.remaining_installments) {
        (Some(n), _, _) => RescheduleRequest::Holiday(n),
        (_, Some(n), _) => RescheduleRequest::Term(n),
        (_, _, Some(n)) => RescheduleRequest::Remaining(n),
        _ => anyhow::bail!("one of --holiday, --term, --remaining-installments is needed"),
    };
    // A preview records nothing, so it needs neither a reason nor a name.
    let actor = match args.actor.resolve((!args.apply).then_some("preview")) {
        Ok(a) => a,
        Err(_) if !args.apply => crate::domain::Actor::new("preview", "preview")?,
        Err(e) => return refused("agreement not rescheduled", &e.into()),
    };
    let result = operator::reschedule_agreement(
        store,
        &policy,
        &calendar,
        now,
        &actor,
        &args.agreement,
        request,
        args.apply,
    )
    .await;
    match result {
        Ok(s) => {
            match args.format {
                OutputFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default())
                }
                OutputFormat::Table => print!("{}", render_table(&s)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refused("agreement not rescheduled", &e),
    }
}
