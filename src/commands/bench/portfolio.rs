//! A generated lender's portfolio in the import CSV format (docs/import-format.md): a mix
//! of repayment methods, currencies and customer time zones, two agreements per customer
//! sharing one funding account, and a share of agreements whose installment is larger
//! than the sandbox bank's opening balance (the account is short on the due date).

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use rand::{Rng, SeedableRng};
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

/// Whether agreement `i` owes more per installment than the sandbox's opening balance.
fn is_short(spec: &PortfolioSpec, i: usize) -> bool {
    spec.short_every > 0 && i % spec.short_every == spec.short_every - 1
}

/// Agreement `i`'s principal per installment, whole major units: 100 to 2,099 normally,
/// 6,000 or more when short.
fn per_installment(spec: &PortfolioSpec, i: usize) -> u64 {
    (if is_short(spec, i) {
        6_000 + (i * 7) % 1_000
    } else {
        100 + (i * 37) % 2_000
    }) as u64
}

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
        let short = is_short(spec, i);
        let principal = per_installment(spec, i) * n_inst;
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

/// How a generated customer's money behaves over the month. The shares and amounts are
/// this generator's assumptions (docs/operations.md, "Payday-aware retries in
/// simulation"), not statistics measured on any lender's book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Spending {
    /// Keeps a balance that covers a month's installments: pays on the due date.
    Covered,
    /// Lives paycheck to paycheck: the pay arrives on the payday and all but 20.00 of it
    /// is spent some days later, so a due date outside that stretch finds the account
    /// short until the next payday.
    PaycheckToPaycheck,
    /// Paid less than a month's installments: short most of the time.
    ChronicallyShort,
}

/// The income side of a generated portfolio: who is short, in whole percent of
/// customers, drawn with a seeded generator (the same seed writes the same files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomeMix {
    pub seed: u64,
    /// Customers living paycheck to paycheck.
    pub short_percent: u32,
    /// Customers paid less than they owe each month.
    pub chronic_percent: u32,
}

impl Default for IncomeMix {
    fn default() -> Self {
        Self {
            seed: 1,
            short_percent: 15,
            chronic_percent: 3,
        }
    }
}

/// One generated customer's money: amounts in whole major units of their currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerIncome {
    /// The payday rule's text form, or `None` for irregular income (no schedule: the
    /// account holds `keep` at the start and receives nothing the bank can see).
    pub payday: Option<&'static str>,
    pub spending: Spending,
    /// Paid on each payday (0 when irregular).
    pub pay: u64,
    /// What the account holds after spending (and at the start).
    pub keep: u64,
    pub spent_after_days: u32,
}

/// The payday mix: 40 % a monthly salary on the 5th, 10th, 15th, 20th, 25th or 28th,
/// 10 % the last day of the month, 10 % the last business day, 15 % a pension on the 1st,
/// 15 % weekly wages on Friday, 10 % irregular (no schedule).
fn draw_payday(rng: &mut impl Rng) -> Option<&'static str> {
    const FIXED: [&str; 6] = [
        "monthly:5",
        "monthly:10",
        "monthly:15",
        "monthly:20",
        "monthly:25",
        "monthly:28",
    ];
    match rng.random_range(0..100_u32) {
        0..40 => Some(FIXED[rng.random_range(0..FIXED.len())]),
        40..50 => Some("monthly:last"),
        50..60 => Some("monthly:last-business-day"),
        60..75 => Some("monthly:1"),
        75..90 => Some("weekly:fri"),
        _ => None,
    }
}

/// What a customer owes a month over both agreements, before interest (major units).
fn owed_by(spec: &PortfolioSpec, c: usize) -> u64 {
    [2 * c, 2 * c + 1]
        .into_iter()
        .filter(|i| *i < spec.agreements)
        .map(|i| per_installment(spec, i))
        .sum()
}

/// Each customer's income, in customer order: the payday mix above and `mix`'s shares.
///
/// - Covered: pay covers the month's installments plus 20 % (interest and fees); after
///   spending, two months' worth stays (irregular: the whole agreement's worth).
/// - Paycheck to paycheck: the same pay, 20.00 kept; monthly pay is spent 7 to 20 days
///   after payday, weekly pay 1 to 4 days after (irregular: two months' worth at the
///   start and nothing after, so short from the third month).
/// - Chronically short: pay is half of what is owed, 20.00 kept, spent 2 to 5 days after
///   (irregular: 20.00 and nothing after).
pub fn customer_incomes(spec: &PortfolioSpec, mix: &IncomeMix) -> Vec<CustomerIncome> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix.seed);
    let months = u64::from(spec.installments.max(1));
    (0..spec.agreements.div_ceil(2))
        .map(|c| {
            let payday = draw_payday(&mut rng);
            let draw = rng.random_range(0..100_u32);
            let spending = if draw < mix.chronic_percent {
                Spending::ChronicallyShort
            } else if draw < mix.chronic_percent + mix.short_percent {
                Spending::PaycheckToPaycheck
            } else {
                Spending::Covered
            };
            let owed = owed_by(spec, c);
            let monthly = owed + owed / 5;
            let weekly = payday.is_some_and(|p| p.starts_with("weekly:"));
            let (pay, keep, spent_after_days) = match (spending, payday) {
                (Spending::Covered, Some(_)) => (monthly, 2 * monthly, rng.random_range(2..=5)),
                (Spending::Covered, None) => (0, months * monthly, 0),
                (Spending::PaycheckToPaycheck, Some(_)) if weekly => {
                    (monthly, 20, rng.random_range(1..=4))
                }
                (Spending::PaycheckToPaycheck, Some(_)) => (monthly, 20, rng.random_range(7..=20)),
                (Spending::PaycheckToPaycheck, None) => (0, 2 * monthly, 0),
                (Spending::ChronicallyShort, Some(_)) => (owed / 2, 20, rng.random_range(2..=5)),
                (Spending::ChronicallyShort, None) => (0, 20, 0),
            };
            CustomerIncome {
                payday,
                spending,
                pay,
                keep,
                spent_after_days,
            }
        })
        .collect()
}

/// How many customers of each kind [`write_income_csv`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IncomeStats {
    pub customers: u64,
    /// Rows with a payday (the others are irregular: `none`).
    pub schedules: u64,
    pub paycheck_to_paycheck: u64,
    pub chronically_short: u64,
}

/// The sandbox's income file for the customers of [`write_csv`]'s portfolio (same spec),
/// one row per customer ([`customer_incomes`]; irregular ones with payday `none`).
pub fn write_income_csv(
    path: &Path,
    spec: &PortfolioSpec,
    mix: &IncomeMix,
) -> std::io::Result<IncomeStats> {
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
    let mut stats = IncomeStats::default();
    for (c, income) in customer_incomes(spec, mix).into_iter().enumerate() {
        let zone = zones[c % zones.len()];
        writeln!(
            f,
            "{p}ACC{c:07},{},{},{}.00,{}.00,{},{}",
            zone.currency,
            income.payday.unwrap_or("none"),
            income.pay,
            income.keep,
            income.spent_after_days,
            zone.time_zone
        )?;
        stats.customers += 1;
        stats.schedules += u64::from(income.payday.is_some());
        stats.paycheck_to_paycheck += u64::from(income.spending == Spending::PaycheckToPaycheck);
        stats.chronically_short += u64::from(income.spending == Spending::ChronicallyShort);
    }
    f.flush()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

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

    /// The written income, run through the sandbox bank's own income model
    /// (`IncomeSchedule::effect`) against the written due dates: is each installment's
    /// account short on its due date?
    #[allow(clippy::type_complexity)]
    fn short_on_due_dates(dir: &Path, months: u32) -> BTreeMap<String, (u32, u32, u32)> {
        use crate::domain::payday::Payday;
        use crate::gateway::income::IncomeSchedule;
        // Amounts are written with two decimals.
        let major = |s: &str| -> i64 { s.replace('.', "").parse::<i64>().unwrap() };
        // account -> (schedule or none, keep)
        let mut income: HashMap<String, (Option<IncomeSchedule>, i64)> = HashMap::new();
        let mut r = csv::Reader::from_path(dir.join("income.csv")).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            let keep = major(&rec[4]);
            let schedule = (&rec[2] != "none").then(|| IncomeSchedule {
                payday: rec[2].parse::<Payday>().unwrap(),
                amount_minor: major(&rec[3]),
                keep_minor: keep,
                spent_after_days: rec[5].parse().unwrap(),
            });
            income.insert(rec[0].to_string(), (schedule, keep));
        }
        // account -> [(due date, amount)]
        let mut dues: BTreeMap<String, Vec<(NaiveDate, i64)>> = BTreeMap::new();
        let mut r = csv::Reader::from_path(dir.join("portfolio.csv")).unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            let n: i64 = rec[12].parse().unwrap();
            // The principal's share plus at most 10 % interest or fees.
            let amount = major(&rec[10]) / n * 11 / 10;
            let first: NaiveDate = rec[15].parse().unwrap();
            for k in 0..months {
                let due = first.checked_add_months(chrono::Months::new(k)).unwrap();
                dues.entry(rec[5].to_string())
                    .or_default()
                    .push((due, amount));
            }
        }
        let start = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        // account -> (installments, short on the due date, short with a payday within 14
        // days after the due date)
        let mut out = BTreeMap::new();
        for (account, mut due) in dues {
            due.sort();
            let (schedule, keep) = income[&account];
            let (mut balance, mut at) = (keep, start);
            let mut counts = (0, 0, 0);
            for (date, amount) in due {
                if let Some(s) = schedule {
                    balance = s.effect(at, date, &Default::default()).apply(balance);
                }
                at = date;
                counts.0 += 1;
                if balance >= amount {
                    balance -= amount;
                } else {
                    counts.1 += 1;
                    let soon = schedule
                        .and_then(|s| s.payday.next_on_or_after(date + chrono::Duration::days(1)));
                    counts.2 += u32::from(soon.is_some_and(|p| (p - date).num_days() <= 14));
                }
            }
            out.insert(account, counts);
        }
        out
    }

    #[test]
    fn generated_income_is_seeded_and_short_where_it_should_be() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let mut spec = PortfolioSpec::standard(10_000, today);
        spec.short_every = 0;
        let mix = IncomeMix::default();
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        for (dir, seed) in dirs.iter().zip([1, 1, 2]) {
            write_csv(&dir.path().join("portfolio.csv"), &spec).unwrap();
            let stats = write_income_csv(
                &dir.path().join("income.csv"),
                &spec,
                &IncomeMix { seed, ..mix },
            )
            .unwrap();
            assert_eq!(stats.customers, 5_000);
        }
        let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("income.csv")).unwrap();
        assert_eq!(read(&dirs[0]), read(&dirs[1]), "same seed, same file");
        assert_ne!(read(&dirs[0]), read(&dirs[2]), "another seed, another draw");

        // The shares drawn: 5,000 customers, so within a few points of what was asked.
        let incomes = customer_incomes(&spec, &mix);
        let percent = |f: &dyn Fn(&CustomerIncome) -> bool| {
            incomes.iter().filter(|i| f(i)).count() * 100 / incomes.len()
        };
        let p2p = percent(&|i| i.spending == Spending::PaycheckToPaycheck);
        let chronic = percent(&|i| i.spending == Spending::ChronicallyShort);
        let irregular = percent(&|i| i.payday.is_none());
        let weekly = percent(&|i| i.payday == Some("weekly:fri"));
        assert!((13..=17).contains(&p2p), "paycheck to paycheck {p2p} %");
        assert!((2..=4).contains(&chronic), "chronically short {chronic} %");
        assert!((8..=12).contains(&irregular), "irregular {irregular} %");
        assert!((13..=17).contains(&weekly), "weekly {weekly} %");

        // Four months of due dates against the bank's income model.
        let short = short_on_due_dates(dirs[0].path(), 4);
        let kind: HashMap<String, Spending> = incomes
            .iter()
            .enumerate()
            .map(|(c, i)| (format!("PACC{c:07}"), i.spending))
            .collect();
        let mut by_kind: HashMap<Spending, (u32, u32, u32)> = HashMap::new();
        for (account, (n, s, soon)) in &short {
            let e = by_kind.entry(kind[account]).or_default();
            *e = (e.0 + n, e.1 + s, e.2 + soon);
        }
        let covered = by_kind[&Spending::Covered];
        assert_eq!(
            covered.1, 0,
            "covered customers are never short: {covered:?}"
        );
        let p2p = by_kind[&Spending::PaycheckToPaycheck];
        assert!(
            p2p.1 * 5 > p2p.0 && p2p.1 * 5 < p2p.0 * 4,
            "paycheck to paycheck: short on some due dates, not all: {p2p:?}"
        );
        assert!(
            p2p.2 * 3 > p2p.1,
            "a good part of them short because the payday comes soon after: {p2p:?}"
        );
        let chronic = by_kind[&Spending::ChronicallyShort];
        assert!(chronic.1 * 2 > chronic.0, "chronically short: {chronic:?}");
        let (n, s): (u32, u32) = by_kind.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        assert!(
            s * 100 >= n * 4 && s * 100 <= n * 20,
            "short on {s} of {n} due dates: a minority, as on a lender's book"
        );
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
