//! `repayd run --demo`: the sample agreements of `config/samples/agreements.csv` (built
//! in), with every date moved so that the README's story happens on the day it runs: an
//! agreement that fell due five days ago is caught up (funds check, debit, receipt), an
//! account kept short by the sandbox gets a "balance low" reminder naming the shortfall,
//! and a customer in New York gets an English reminder. Without this a newcomer running
//! the quick start a month after the samples were written would see nothing but
//! cancelled reminders.

use crate::clock::Clock;
use crate::store::Store;
use anyhow::Context;
use chrono::{Days, NaiveDate};
use std::process::ExitCode;

/// The sample agreements, as shipped in `config/samples/agreements.csv`.
pub const SAMPLES: &str = include_str!("../../config/samples/agreements.csv");

/// The day the samples' dates tell their story around: AGR-2026-0006 fell due five days
/// before it (two days past due after the three grace days), AGR-2026-0002 falls due
/// three days after it.
pub fn anchor() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).expect("a valid date")
}

/// The samples with every date (`first_due` and the dates of explicit schedules) moved
/// by the number of days between [`anchor`] and `today`.
pub fn shifted_samples(today: NaiveDate) -> anyhow::Result<String> {
    let shift = today.signed_duration_since(anchor()).num_days();
    let move_date = |text: &str| -> anyhow::Result<String> {
        let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .with_context(|| format!("sample date {text:?}"))?;
        let moved = if shift >= 0 {
            date.checked_add_days(Days::new(shift as u64))
        } else {
            date.checked_sub_days(Days::new(shift.unsigned_abs()))
        };
        Ok(moved
            .context("sample date out of range")?
            .format("%Y-%m-%d")
            .to_string())
    };
    let mut reader = csv::Reader::from_reader(SAMPLES.as_bytes());
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("the samples have no {name} column"))
    };
    let (first_due, schedule) = (column("first_due")?, column("schedule")?);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&headers)?;
    for record in reader.records() {
        let record = record?;
        let mut out: Vec<String> = record.iter().map(str::to_string).collect();
        if !out[first_due].is_empty() {
            out[first_due] = move_date(&out[first_due])?;
        }
        if !out[schedule].is_empty() {
            out[schedule] = out[schedule]
                .split('|')
                .map(|item| {
                    let (date, rest) = item.split_once(':').unwrap_or((item, ""));
                    Ok(format!("{}:{rest}", move_date(date)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join("|");
        }
        writer.write_record(&out)?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

/// Imports the demo agreements dated from the clock's today, unless they are there
/// already (a second run carries on where the first stopped).
pub async fn load(
    store: &Store,
    defaults: &crate::config::ScheduleDefaults,
    clock: &dyn Clock,
) -> anyhow::Result<ExitCode> {
    if store.agreement_detail("AGR-2026-0001").await?.is_some() {
        println!(
            "demo agreements already loaded; carrying on (rm -rf var to start the story over)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let today = clock.now().date_naive();
    let dir = tempfile::tempdir().context("a temporary directory for the demo file")?;
    let file = dir.path().join("demo-agreements.csv");
    std::fs::write(&file, shifted_samples(today)?).context("writing the demo file")?;
    println!(
        "demo: the sample agreements dated around today ({today}; samples' own dates moved by {} days)",
        today.signed_duration_since(anchor()).num_days()
    );
    let args = super::import::ImportArgs {
        file,
        format: None,
        update: false,
        dry_run: false,
        batch_size: crate::import::DEFAULT_BATCH_SIZE,
    };
    super::import::run(store, &args, defaults, clock).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_date_moves_by_the_same_days_and_nothing_else_changes() {
        let today = NaiveDate::from_ymd_opt(2027, 3, 1).unwrap();
        let shifted = shifted_samples(today).unwrap();
        assert!(shifted.contains("AGR-2026-0006,CNY,6000.00,interest-free,6,0,0,2027-02-24,"));
        assert!(shifted.contains("2027-03-21:300.00:0.00:5.00|2027-04-21:300.00:0.00:5.00"));
        assert_eq!(shifted.lines().count(), SAMPLES.lines().count());
        assert_eq!(shifted_samples(anchor()).unwrap().trim(), SAMPLES.trim());
    }
}
