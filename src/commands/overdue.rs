//! `repayd overdue report`: one row per overdue agreement (customer, amounts overdue,
//! days past due, bucket, credit flag, last debit attempt and its outcome), as CSV or
//! JSON: the input of a credit-bureau or collections file. Computed from the installments
//! and the configured rules for the date asked, so it does not depend on the daemon
//! having run; amounts are decimal strings in the agreement's currency.

use crate::clock::from_epoch_ms;
use crate::domain::delinquency::DelinquencyRules;
use crate::domain::{Currency, Money};
use crate::engine::overdue::{OverduePolicy, overdue_cutoff};
use crate::store::Store;
use crate::store::delinquency::OverdueReportLine;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct OverdueArgs {
    #[command(subcommand)]
    pub command: OverdueCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OverdueCommand {
    /// One row per overdue agreement, for collections or a credit-bureau file.
    Report(ReportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Csv,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Assess as of this local date (YYYY-MM-DD) in every customer's time zone; default
    /// each customer's current date.
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<NaiveDate>,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ReportFormat,
}

/// One overdue agreement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OverdueReportRow {
    pub as_of: String,
    pub agreement: String,
    pub agreement_status: String,
    pub customer: String,
    pub customer_name: String,
    pub customer_email: String,
    pub currency: String,
    pub oldest_due_date: String,
    pub days_past_due: u32,
    pub bucket: String,
    pub credit_flag: String,
    pub installments_overdue: u32,
    /// Unpaid installment amounts past their grace period.
    pub amount_overdue: String,
    /// Open late fees and other charges on those installments.
    pub charges_overdue: String,
    pub total_overdue: String,
    /// Everything still unpaid on the agreement, overdue or not (without charges).
    pub outstanding_balance: String,
    pub last_attempt_at: String,
    pub last_attempt_state: String,
    pub last_attempt_outcome: String,
}

/// The report's rows, oldest agreement id first.
pub async fn report_rows(
    store: &Store,
    rules: &DelinquencyRules,
    now: DateTime<Utc>,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<Vec<OverdueReportRow>> {
    let cutoff = match as_of {
        Some(d) => d - Duration::days(i64::from(rules.grace_days) + 1),
        None => overdue_cutoff(now, rules.grace_days),
    };
    let lines = store
        .overdue_report_lines(&cutoff.format("%Y-%m-%d").to_string())
        .await?;
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let j = lines[i..]
            .iter()
            .position(|l| l.agreement_id != lines[i].agreement_id)
            .map_or(lines.len(), |n| i + n);
        if let Some(row) = agreement_row(rules, now, as_of, &lines[i..j])? {
            rows.push(row);
        }
        i = j;
    }
    Ok(rows)
}

fn agreement_row(
    rules: &DelinquencyRules,
    now: DateTime<Utc>,
    as_of: Option<NaiveDate>,
    lines: &[OverdueReportLine],
) -> anyhow::Result<Option<OverdueReportRow>> {
    let first = &lines[0];
    let tz: chrono_tz::Tz = first
        .time_zone
        .parse()
        .map_err(|_| anyhow::anyhow!("bad time zone {:?} in the database", first.time_zone))?;
    let currency = Currency::parse(&first.currency)?;
    let on = as_of.unwrap_or_else(|| rules.assessment_date(now, tz));
    let mut dpd_max = 0;
    let mut oldest: Option<NaiveDate> = None;
    let (mut count, mut amount, mut charges) = (0_u32, 0_i64, 0_i64);
    for l in lines {
        let due = NaiveDate::parse_from_str(&l.due_date, "%Y-%m-%d")?;
        let dpd = rules.days_past_due(due, on);
        if dpd == 0 {
            continue;
        }
        count += 1;
        amount += l.total_minor - l.paid_minor;
        charges += l.charges_open_minor;
        dpd_max = dpd_max.max(dpd);
        if oldest.is_none_or(|o| due < o) {
            oldest = Some(due);
        }
    }
    let Some(oldest) = oldest else {
        return Ok(None);
    };
    let a = rules.assess(Some(oldest), on);
    let fmt = |m: i64| Money::from_minor(m, currency).plain();
    Ok(Some(OverdueReportRow {
        as_of: on.format("%Y-%m-%d").to_string(),
        agreement: first.agreement_external_id.clone(),
        agreement_status: first.agreement_status.clone(),
        customer: first.customer_external_id.clone(),
        customer_name: first.customer_name.clone(),
        customer_email: first.customer_email.clone(),
        currency: currency.code().to_string(),
        oldest_due_date: oldest.format("%Y-%m-%d").to_string(),
        days_past_due: a.dpd,
        bucket: a
            .bucket_index
            .map(|i| rules.buckets[i].name.clone())
            .unwrap_or_default(),
        credit_flag: a.flag.as_str().to_string(),
        installments_overdue: count,
        amount_overdue: fmt(amount),
        charges_overdue: fmt(charges),
        total_overdue: fmt(amount + charges),
        outstanding_balance: fmt(first.remaining_minor),
        last_attempt_at: first
            .last_attempt_at_ms
            .map(|ms| from_epoch_ms(ms).to_rfc3339())
            .unwrap_or_default(),
        last_attempt_state: first.last_attempt_state.clone().unwrap_or_default(),
        last_attempt_outcome: first.last_attempt_outcome.clone().unwrap_or_default(),
    }))
}

/// CSV with a header row; fields quoted where needed (names with commas, quotes).
pub fn render_csv(rows: &[OverdueReportRow]) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if rows.is_empty() {
        // The header alone, so an empty day is still a well-formed file.
        w.write_record([
            "as_of",
            "agreement",
            "agreement_status",
            "customer",
            "customer_name",
            "customer_email",
            "currency",
            "oldest_due_date",
            "days_past_due",
            "bucket",
            "credit_flag",
            "installments_overdue",
            "amount_overdue",
            "charges_overdue",
            "total_overdue",
            "outstanding_balance",
            "last_attempt_at",
            "last_attempt_state",
            "last_attempt_outcome",
        ])?;
    }
    for r in rows {
        w.serialize(r)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

pub async fn run(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    args: &OverdueArgs,
) -> anyhow::Result<ExitCode> {
    let policy =
        OverduePolicy::from_settings(&settings.overdue, &settings.payments, &settings.alerts)?;
    match &args.command {
        OverdueCommand::Report(r) => {
            let rows = report_rows(store, &policy.rules, now, r.as_of).await?;
            match r.format {
                ReportFormat::Csv => print!("{}", render_csv(&rows)?),
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
