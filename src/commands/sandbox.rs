//! `repayd sandbox return KEY`: the embedded sandbox bank returns a debit it booked, as a
//! real bank does after a failed settlement or a dispute, for demos and tests. The money
//! goes back to the account and the return joins the sandbox's returns feed; the running
//! daemon picks it up on its next read of the feed (`debit.returns_poll_seconds`).

use crate::store::Store;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SandboxCommand {
    /// Return the succeeded debit booked under an idempotency key (see `repayd attempts
    /// list --state succeeded` or `agreements show`).
    Return {
        #[arg(value_name = "IDEMPOTENCY_KEY")]
        key: String,
        /// The reason code the bank gives, e.g. insufficient_funds, debit_disputed.
        #[arg(long, default_value = "insufficient_funds")]
        reason: String,
        /// A return after which the lender must not debit again without the customer
        /// (mandate cancelled, account closed, dispute).
        #[arg(long)]
        hard: bool,
    },
    /// Load income schedules from a CSV file (header `account_ref,currency,payday,amount,
    /// keep,spent_after_days,time_zone`): balances rise on each payday and fall back to
    /// `keep` after `spent_after_days` (docs/retry.md). Each account is set to `keep` now.
    /// Payday `none`: no income, the account only holds `keep`.
    Income {
        #[arg(long, value_name = "FILE")]
        file: std::path::PathBuf,
    },
}

#[derive(Debug, serde::Deserialize)]
struct IncomeRecord {
    account_ref: String,
    currency: String,
    payday: String,
    amount: String,
    keep: String,
    spent_after_days: u32,
    time_zone: String,
}

/// One line of an income file: the account's schedule (`None` for payday `none`), its
/// currency and what it holds now.
#[derive(Debug)]
struct IncomeLine {
    account_ref: String,
    currency: crate::domain::Currency,
    keep_minor: i64,
    schedule: Option<crate::store::sandbox::SandboxIncomeRow>,
}

/// Reads and checks an income file; errors name the line and the field.
fn read_income(path: &std::path::Path, today: DateTime<Utc>) -> anyhow::Result<Vec<IncomeLine>> {
    use anyhow::Context;
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, record) in reader.deserialize::<IncomeRecord>().enumerate() {
        let line = i + 2;
        let at = |what: &str| format!("{} line {line}: {what}", path.display());
        let r = record.with_context(|| at("not a valid income record"))?;
        let currency = crate::domain::Currency::parse(&r.currency)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at("currency")))?;
        let payday: Option<crate::domain::payday::Payday> = match r.payday.trim() {
            "none" => None,
            text => Some(
                text.parse()
                    .map_err(|e| anyhow::anyhow!("{}: {e} or none", at("payday")))?,
            ),
        };
        let tz: chrono_tz::Tz = r.time_zone.parse().map_err(|_| {
            anyhow::anyhow!("{}: unknown time zone {:?}", at("time_zone"), r.time_zone)
        })?;
        let money = |field: &str, text: &str| -> anyhow::Result<i64> {
            let value = crate::domain::parse_decimal(text.trim()).ok_or_else(|| {
                anyhow::anyhow!("{}: {text:?} is not a decimal amount", at(field))
            })?;
            Ok(crate::domain::Money::from_decimal(value, currency)
                .map_err(|e| anyhow::anyhow!("{}: {e}", at(field)))?
                .minor())
        };
        let amount_minor = money("amount", &r.amount)?;
        anyhow::ensure!(
            amount_minor > 0 || payday.is_none(),
            "{}: must be positive",
            at("amount")
        );
        let keep_minor = money("keep", &r.keep)?;
        anyhow::ensure!(keep_minor >= 0, "{}: must not be negative", at("keep"));
        rows.push(IncomeLine {
            schedule: payday.map(|payday| crate::store::sandbox::SandboxIncomeRow {
                account_ref: r.account_ref.clone(),
                payday: payday.to_string(),
                amount_minor,
                keep_minor,
                spent_after_days: i64::from(r.spent_after_days),
                time_zone: r.time_zone,
                applied_through: crate::domain::worktime::local_date(today, tz)
                    .format("%Y-%m-%d")
                    .to_string(),
            }),
            account_ref: r.account_ref,
            currency,
            keep_minor,
        });
    }
    Ok(rows)
}

pub async fn run(
    store: &Store,
    now: DateTime<Utc>,
    args: &SandboxArgs,
) -> anyhow::Result<ExitCode> {
    match &args.command {
        SandboxCommand::Income { file } => {
            let lines = read_income(file, now)?;
            for l in &lines {
                store
                    .sandbox_set_balance(&l.account_ref, l.currency.code(), l.keep_minor, "open")
                    .await?;
            }
            let without: Vec<&str> = lines
                .iter()
                .filter(|l| l.schedule.is_none())
                .map(|l| l.account_ref.as_str())
                .collect();
            let schedules: Vec<_> = lines.iter().filter_map(|l| l.schedule.clone()).collect();
            store.sandbox_set_income(&schedules, &without).await?;
            println!(
                "sandbox: {} income schedules loaded from {} ({} accounts without income); \
                 balances set to what each keeps",
                schedules.len(),
                file.display(),
                without.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Return { key, reason, hard } => {
            let reason = reason.trim();
            anyhow::ensure!(
                !reason.is_empty()
                    && reason
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "--reason must be a code of letters, digits, '_' or '-', e.g. insufficient_funds"
            );
            let row = store
                .sandbox_return_debit(key, reason, *hard, crate::clock::to_epoch_ms(now))
                .await?;
            println!(
                "sandbox returned debit {} ({} minor units {}), return {} ({reason}{}); the daemon applies it at its next read of the returns feed",
                row.gateway_ref,
                row.amount_minor,
                row.currency,
                row.return_id,
                if *hard { ", hard" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> anyhow::Result<Vec<IncomeLine>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("income.csv");
        std::fs::write(
            &path,
            format!("account_ref,currency,payday,amount,keep,spent_after_days,time_zone\n{text}"),
        )
        .unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T12:00:00Z")
            .unwrap()
            .to_utc();
        read_income(&path, now)
    }

    #[test]
    fn an_income_file_takes_paydays_and_accounts_without_income() {
        let lines = read(
            "ACC-1,CNY,monthly:10,3000.00,20.00,3,Asia/Shanghai\n\
             ACC-2,USD,none,0.00,150.50,0,America/New_York\n",
        )
        .unwrap();
        let s = lines[0].schedule.as_ref().unwrap();
        assert_eq!((s.payday.as_str(), s.amount_minor), ("monthly:10", 300_000));
        assert_eq!(s.applied_through, "2026-11-28");
        assert!(lines[1].schedule.is_none());
        assert_eq!(
            (lines[1].keep_minor, lines[1].currency.code()),
            (15_050, "USD")
        );
        // Nothing paid on a payday is a mistake; with `none` it is what it says.
        let e = read("ACC-1,CNY,monthly:10,0.00,20.00,3,Asia/Shanghai\n").unwrap_err();
        assert!(e.to_string().contains("line 2: amount"), "{e}");
        let e = read("ACC-1,CNY,sometimes,1.00,20.00,3,Asia/Shanghai\n").unwrap_err();
        assert!(format!("{e:#}").contains("or none"), "{e:#}");
    }
}
