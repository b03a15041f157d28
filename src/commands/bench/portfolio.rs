//! A generated lender's portfolio in the import CSV format (docs/import-format.md): a mix
//! of repayment methods, currencies and customer time zones, two agreements per customer
//! sharing one funding account, and a share of agreements whose installment is larger
//! than the sandbox bank's opening balance (the account is short on the due date).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use std::io::Write;
use std::path::Path;

/// A customer's home: time zone, locale and currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    pub time_zone: &'static str,
    pub locale: &'static str,
    pub currency: &'static str,
}

/// Zones spread around the globe: for any UTC hour some of them are in the working day.
pub const ZONES: &[Zone] = &[
    Zone {
        time_zone: "Asia/Shanghai",
        locale: "zh-CN",
        currency: "CNY",
    },
    Zone {
        time_zone: "America/New_York",
        locale: "en",
        currency: "USD",
    },
    Zone {
        time_zone: "Europe/London",
        locale: "en-GB",
        currency: "GBP",
    },
    Zone {
        time_zone: "Europe/Berlin",
        locale: "en",
        currency: "EUR",
    },
    Zone {
        time_zone: "Asia/Kolkata",
        locale: "en",
        currency: "INR",
    },
    Zone {
        time_zone: "Australia/Sydney",
        locale: "en",
        currency: "AUD",
    },
    Zone {
        time_zone: "America/Los_Angeles",
        locale: "en",
        currency: "USD",
    },
    Zone {
        time_zone: "America/Sao_Paulo",
        locale: "en",
        currency: "BRL",
    },
    Zone {
        time_zone: "Asia/Dubai",
        locale: "en",
        currency: "AED",
    },
    Zone {
        time_zone: "Pacific/Auckland",
        locale: "en",
        currency: "NZD",
    },
    Zone {
        time_zone: "Pacific/Honolulu",
        locale: "en",
        currency: "USD",
    },
    Zone {
        time_zone: "Asia/Singapore",
        locale: "en",
        currency: "SGD",
    },
];

impl Zone {
    pub fn tz(&self) -> Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// The local date at `now`, plus `days`.
    pub fn local_date(&self, now: DateTime<Utc>, days: i64) -> NaiveDate {
        now.with_timezone(&self.tz()).date_naive() + chrono::Duration::days(days)
    }
}

/// The zones whose local time at `now` is between `from` and `to` o'clock (the working
/// day, so reminders due now are not held back by quiet hours); all zones if none is.
pub fn zones_in_hours(now: DateTime<Utc>, from: u32, to: u32) -> Vec<Zone> {
    use chrono::Timelike;
    let open: Vec<Zone> = ZONES
        .iter()
        .copied()
        .filter(|z| {
            let hour = now.with_timezone(&z.tz()).hour();
            (from..to).contains(&hour)
        })
        .collect();
    if open.is_empty() {
        ZONES.to_vec()
    } else {
        open
    }
}

/// When an agreement's first installment falls due.
#[derive(Debug, Clone, Copy)]
pub enum FirstDue {
    /// Spread over `days` days from `from` (agreement `i` on `from + i % days`).
    Spread { from: NaiveDate, days: u32 },
    /// The customer's local date at `now`, plus `days`.
    LocalToday { now: DateTime<Utc>, days: i64 },
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct PortfolioSpec {
    pub agreements: usize,
    pub installments: u32,
    pub zones: Vec<Zone>,
    pub first_due: FirstDue,
    /// Every n-th agreement (0: none) owes more per installment than the sandbox's
    /// opening balance of 5,000.00.
    pub short_every: usize,
    /// Agreement, customer and account ids start with this (distinct per file when
    /// several files go into one database).
    pub id_prefix: String,
}

impl PortfolioSpec {
    /// `n` agreements x 12 monthly installments, first due dates over the next month,
    /// every zone, one in ten short.
    pub fn standard(n: usize, today: NaiveDate) -> Self {
        Self {
            agreements: n,
            installments: 12,
            zones: ZONES.to_vec(),
            first_due: FirstDue::Spread {
                from: today + chrono::Duration::days(1),
                days: 28,
            },
            short_every: 10,
            id_prefix: "P".into(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortfolioStats {
    pub agreements: u64,
    pub installments: u64,
    pub customers: u64,
    pub short: u64,
    pub bytes: u64,
}

pub const CSV_HEADER: &str = "customer_external_id,customer_name,email,locale,time_zone,\
    account_ref,mandate_ref,mandate_status,agreement_id,currency,principal,method,\
    installments,annual_rate,fee_rate,first_due,frequency";

/// Writes the portfolio to `path` as import CSV.
pub fn write_csv(path: &Path, spec: &PortfolioSpec) -> std::io::Result<PortfolioStats> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    writeln!(f, "{CSV_HEADER}")?;
    let zones = if spec.zones.is_empty() {
        ZONES
    } else {
        &spec.zones[..]
    };
    let p = &spec.id_prefix;
    let n_inst = u64::from(spec.installments.max(1));
    let mut stats = PortfolioStats::default();
    for i in 0..spec.agreements {
        // Two agreements per customer, one account per customer.
        let c = i / 2;
        let zone = zones[c % zones.len()];
        let (method, annual, fee) = match i % 4 {
            0 => ("annuity", "0.12", "0"),
            1 => ("equal-principal", "0.099", "0"),
            2 => ("flat-fee", "0", "0.005"),
            _ => ("interest-free", "0", "0"),
        };
        let short = spec.short_every > 0 && i % spec.short_every == spec.short_every - 1;
        // Per installment: 100 to 2,100 normally; 6,000 or more when short.
        let per_installment = if short {
            6_000 + (i * 7) % 1_000
        } else {
            100 + (i * 37) % 2_000
        } as u64;
        let principal = per_installment * n_inst;
        let first_due = match spec.first_due {
            FirstDue::Spread { from, days } => {
                from + chrono::Duration::days((i % days.max(1) as usize) as i64)
            }
            FirstDue::LocalToday { now, days } => zone.local_date(now, days),
        };
        writeln!(
            f,
            "{p}C{c:07},Customer {c},customer{c}@example.com,{},{},{p}ACC{c:07},{p}MND{c:07},\
             active,{p}AGR{i:08},{},{principal}.{:02},{method},{n_inst},{annual},{fee},{first_due},\
             monthly",
            zone.locale,
            zone.time_zone,
            zone.currency,
            i % 100,
        )?;
        stats.agreements += 1;
        stats.installments += n_inst;
        stats.short += u64::from(short);
    }
    f.flush()?;
    stats.customers = spec.agreements.div_ceil(2) as u64;
    stats.bytes = std::fs::metadata(path)?.len();
    Ok(stats)
}

/// The payday of customer `c` in [`write_income_csv`], or `None` for an irregular one:
/// 40 % a monthly salary on a fixed day, 10 % the last day of the month, 10 % the last
/// business day, 15 % a pension on the 1st, 15 % weekly wages on Friday, 10 % irregular.
pub fn payday_of(c: usize) -> Option<&'static str> {
    const FIXED: [&str; 6] = [
        "monthly:10",
        "monthly:15",
        "monthly:25",
        "monthly:5",
        "monthly:20",
        "monthly:28",
    ];
    match c % 20 {
        0..=7 => Some(FIXED[(c / 20) % FIXED.len()]),
        8 | 9 => Some("monthly:last"),
        10 | 11 => Some("monthly:last-business-day"),
        12..=14 => Some("monthly:1"),
        15..=17 => Some("weekly:fri"),
        _ => None,
    }
}

/// The sandbox's income schedules for the customers of [`write_csv`]'s portfolio (same
/// spec): each customer's pay covers both their installments (with interest) once, and
/// all but 20.00 of it is spent 2 to 5 days after payday. Returns how many were written.
pub fn write_income_csv(path: &Path, spec: &PortfolioSpec) -> std::io::Result<u64> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        f,
        "account_ref,currency,payday,amount,keep,spent_after_days,time_zone"
    )?;
    let zones = if spec.zones.is_empty() {
        ZONES
    } else {
        &spec.zones[..]
    };
    let p = &spec.id_prefix;
    let mut written = 0;
    for c in 0..spec.agreements.div_ceil(2) {
        let Some(payday) = payday_of(c) else { continue };
        let zone = zones[c % zones.len()];
        // Both agreements' installments (as write_csv sizes them), plus a margin for interest.
        let owed: usize = [2 * c, 2 * c + 1]
            .iter()
            .filter(|i| **i < spec.agreements)
            .map(|i| 100 + (i * 37) % 2_000)
            .sum();
        let pay = owed + owed / 5;
        writeln!(
            f,
            "{p}ACC{c:07},{},{payday},{pay}.00,20.00,{},{}",
            zone.currency,
            2 + c % 4,
            zone.time_zone
        )?;
        written += 1;
    }
    f.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_mixed_portfolio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let today = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let stats = write_csv(&path, &PortfolioSpec::standard(40, today)).unwrap();
        assert_eq!(stats.agreements, 40);
        assert_eq!(stats.installments, 480);
        assert_eq!(stats.customers, 20);
        assert_eq!(stats.short, 4);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 41);
        assert_eq!(lines[0], CSV_HEADER);
        assert!(text.contains(",annuity,") && text.contains(",interest-free,"));
        assert!(text.contains("Asia/Shanghai") && text.contains("Pacific/Honolulu"));
    }

    #[test]
    fn working_hours_zones_are_in_their_working_day() {
        use chrono::{TimeZone, Timelike};
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap();
        let zones = zones_in_hours(now, 9, 19);
        assert!(!zones.is_empty());
        for z in zones {
            let h = now.with_timezone(&z.tz()).hour();
            assert!((9..19).contains(&h), "{} at {h}", z.time_zone);
        }
    }
}
