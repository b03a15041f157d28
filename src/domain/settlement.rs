//! Interest on an early settlement (`[payments.settlement]`): either none (`principal_only`:
//! the remaining principal settles the agreement) or the interest accrued since the last
//! due date (`accrued`): outstanding principal x annual rate x days / day-count basis,
//! rounded half-even to the minor unit once, in decimal arithmetic (never floats).

use chrono::{Datelike, Months, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// What a settlement charges for the time since the last due date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum SettlementInterest {
    /// No interest for the current period: remaining principal only (the behaviour before
    /// the setting existed, and the default).
    #[default]
    PrincipalOnly,
    /// Interest accrued daily on the outstanding principal since the last due date.
    Accrued,
}

impl SettlementInterest {
    pub const NAMES: [&'static str; 2] = ["accrued", "principal_only"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "accrued" => Some(Self::Accrued),
            "principal_only" => Some(Self::PrincipalOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accrued => "accrued",
            Self::PrincipalOnly => "principal_only",
        }
    }
}

/// How days are counted and what a year is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum DayCount {
    /// Actual days over a fixed 365-day year (Actual/365 Fixed): a leap year's 366 days
    /// are all counted, so a whole leap year accrues 366/365 of the annual rate.
    #[default]
    Act365,
    /// Actual days over a 360-day year.
    Act360,
    /// 30/360 bond basis (ISDA 2006 4.16(f)): every month counts 30 days; a start on the
    /// 31st counts as the 30th, and an end on the 31st too when the start is the 30th or
    /// 31st. February's end is not adjusted.
    Thirty360,
}

impl DayCount {
    pub const NAMES: [&'static str; 3] = ["act/365", "act/360", "30/360"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "act/365" => Some(Self::Act365),
            "act/360" => Some(Self::Act360),
            "30/360" => Some(Self::Thirty360),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Act365 => "act/365",
            Self::Act360 => "act/360",
            Self::Thirty360 => "30/360",
        }
    }

    /// Days in a year under this convention.
    pub fn basis(self) -> i64 {
        match self {
            Self::Act365 => 365,
            Self::Act360 | Self::Thirty360 => 360,
        }
    }

    /// Days from `from` to `to` under this convention (0 when `to` is not after `from`).
    pub fn days(self, from: NaiveDate, to: NaiveDate) -> i64 {
        if to <= from {
            return 0;
        }
        match self {
            Self::Act365 | Self::Act360 => (to - from).num_days(),
            Self::Thirty360 => {
                let d1 = from.day().min(30);
                let d2 = if to.day() == 31 && d1 == 30 {
                    30
                } else {
                    to.day()
                };
                let years = i64::from(to.year() - from.year());
                let months = i64::from(to.month()) - i64::from(from.month());
                360 * years + 30 * months + i64::from(d2) - i64::from(d1)
            }
        }
    }
}

/// The settlement policy of `[payments.settlement]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SettlementPolicy {
    pub interest: SettlementInterest,
    pub day_count: DayCount,
}

/// Interest accrued on a settlement date, and how it was computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accrual {
    pub interest: SettlementInterest,
    pub day_count: DayCount,
    /// The nominal annual rate used (0 when the agreement has none on record).
    pub annual_rate: Decimal,
    /// Outstanding principal the interest runs on, in minor units.
    pub principal_minor: i64,
    /// The last due date on or before the settlement date, or the start of the first
    /// installment's period.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Days counted from `from` to `to` under `day_count`.
    pub days: i64,
    /// The interest, rounded half-even to the minor unit, before any cap.
    pub minor: i64,
}

/// Interest accrued on `principal_minor` at `annual_rate` from `from` to `to`:
/// principal x rate x days / basis, rounded half-even to the minor unit. Zero under
/// `principal_only`.
pub fn accrue(
    policy: SettlementPolicy,
    annual_rate: Decimal,
    principal_minor: i64,
    from: NaiveDate,
    to: NaiveDate,
) -> Accrual {
    let days = policy.day_count.days(from, to);
    let minor = match policy.interest {
        SettlementInterest::PrincipalOnly => 0,
        SettlementInterest::Accrued => {
            let exact = Decimal::from(principal_minor.max(0))
                * annual_rate.max(Decimal::ZERO)
                * Decimal::from(days)
                / Decimal::from(policy.day_count.basis());
            exact
                .round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
                .try_into()
                .unwrap_or(i64::MAX)
        }
    };
    Accrual {
        interest: policy.interest,
        day_count: policy.day_count,
        annual_rate,
        principal_minor,
        from,
        to,
        days,
        minor,
    }
}

/// Where accrual starts for a settlement on `today`: the latest due date on or before
/// it, else the start of the first installment's period (`period_start`); never after
/// `today` (a settlement before the first period accrues nothing).
pub fn accrual_start(
    due_dates: impl IntoIterator<Item = NaiveDate>,
    today: NaiveDate,
    period_start: NaiveDate,
) -> NaiveDate {
    due_dates
        .into_iter()
        .filter(|d| *d <= today)
        .max()
        .unwrap_or(period_start)
        .min(today)
}

/// The start of the period the first installment's interest covers: one period before
/// `first_due` (a month, two weeks or a week).
pub fn first_period_start(
    first_due: NaiveDate,
    frequency: crate::domain::Frequency,
) -> Option<NaiveDate> {
    use crate::domain::Frequency;
    match frequency {
        Frequency::Monthly => first_due.checked_sub_months(Months::new(1)),
        Frequency::Biweekly => first_due.checked_sub_days(chrono::Days::new(14)),
        Frequency::Weekly => first_due.checked_sub_days(chrono::Days::new(7)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn accrued(dc: DayCount) -> SettlementPolicy {
        SettlementPolicy {
            interest: SettlementInterest::Accrued,
            day_count: dc,
        }
    }

    fn rate(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn names_parse_both_ways() {
        for n in DayCount::NAMES {
            assert_eq!(DayCount::parse(n).unwrap().as_str(), n);
        }
        for n in SettlementInterest::NAMES {
            assert_eq!(SettlementInterest::parse(n).unwrap().as_str(), n);
        }
        assert_eq!(DayCount::parse("ACT/365"), None);
        assert_eq!(SettlementInterest::parse("accrue"), None);
    }

    #[test]
    fn month_ends_under_each_day_count() {
        use DayCount::*;
        // 31 Jan -> 28 Feb (not a leap year).
        assert_eq!(Act365.days(d("2027-01-31"), d("2027-02-28")), 28);
        assert_eq!(Thirty360.days(d("2027-01-31"), d("2027-02-28")), 28);
        // 31 Mar -> 30 Apr: a whole month under 30/360 either way.
        assert_eq!(Act360.days(d("2027-03-31"), d("2027-04-30")), 30);
        assert_eq!(Thirty360.days(d("2027-03-31"), d("2027-04-30")), 30);
        // 30 Jan -> 31 Mar: the 31st counts as the 30th when the start is the 30th.
        assert_eq!(Thirty360.days(d("2027-01-30"), d("2027-03-31")), 60);
        assert_eq!(Act365.days(d("2027-01-30"), d("2027-03-31")), 60);
        // 15 Jan -> 31 Mar: the end stays the 31st when the start is before the 30th.
        assert_eq!(Thirty360.days(d("2027-01-15"), d("2027-03-31")), 76);
        // 28 Feb -> 31 Mar.
        assert_eq!(Thirty360.days(d("2027-02-28"), d("2027-03-31")), 33);
        assert_eq!(Act365.days(d("2027-02-28"), d("2027-03-31")), 31);
        // Across a year end.
        assert_eq!(Thirty360.days(d("2027-12-31"), d("2028-01-31")), 30);
        // Nothing before the start.
        assert_eq!(Act365.days(d("2027-02-01"), d("2027-01-01")), 0);
    }

    #[test]
    fn leap_year_counts_29_february() {
        // 15 Feb -> 15 Mar 2028 holds 29 Feb: 29 actual days, 30 under 30/360.
        assert_eq!(DayCount::Act365.days(d("2028-02-15"), d("2028-03-15")), 29);
        assert_eq!(
            DayCount::Thirty360.days(d("2028-02-15"), d("2028-03-15")),
            30
        );
        // A whole leap year under act/365 accrues 366/365 of the annual rate:
        // 10,000.00 x 12% x 366 / 365 = 1,203.287... -> 1,203.29.
        let a = accrue(
            accrued(DayCount::Act365),
            rate("0.12"),
            1_000_000,
            d("2028-01-01"),
            d("2029-01-01"),
        );
        assert_eq!((a.days, a.minor), (366, 120_329));
        // 29 Feb itself: one day of 10,000.00 at 12% act/365 = 3.2876... -> 3.29.
        let a = accrue(
            accrued(DayCount::Act365),
            rate("0.12"),
            1_000_000,
            d("2028-02-28"),
            d("2028-02-29"),
        );
        assert_eq!((a.days, a.minor), (1, 329));
    }

    #[test]
    fn rounding_is_half_even_in_minor_units() {
        // 1 minor unit x 182.5% x 100 days / 365 = 0.5 -> 0 (even); 3 -> 1.5 -> 2;
        // 5 -> 2.5 -> 2.
        let p = accrued(DayCount::Act365);
        let a = accrue(p, rate("1.825"), 1, d("2027-01-01"), d("2027-04-11"));
        assert_eq!((a.days, a.minor), (100, 0));
        let a = accrue(p, rate("1.825"), 3, d("2027-01-01"), d("2027-04-11"));
        assert_eq!(a.minor, 2);
        let a = accrue(p, rate("1.825"), 5, d("2027-01-01"), d("2027-04-11"));
        assert_eq!(a.minor, 2); // 2.5 -> 2
    }

    #[test]
    fn principal_only_and_zero_rates_accrue_nothing() {
        let a = accrue(
            SettlementPolicy::default(),
            rate("0.12"),
            1_000_000,
            d("2027-01-01"),
            d("2027-01-20"),
        );
        assert_eq!((a.days, a.minor), (19, 0));
        let a = accrue(
            accrued(DayCount::Act360),
            Decimal::ZERO,
            1_000_000,
            d("2027-01-01"),
            d("2027-01-20"),
        );
        assert_eq!(a.minor, 0);
    }

    #[test]
    fn act_360_and_30_360_amounts() {
        // 12,000.00 at 12% from 31 Jan to 15 Mar 2027: 43 actual days, 45 under 30/360.
        let a = accrue(
            accrued(DayCount::Act360),
            rate("0.12"),
            1_200_000,
            d("2027-01-31"),
            d("2027-03-15"),
        );
        // 1,200,000 x 0.12 x 43 / 360 = 17,200 minor.
        assert_eq!((a.days, a.minor), (43, 17_200));
        let a = accrue(
            accrued(DayCount::Thirty360),
            rate("0.12"),
            1_200_000,
            d("2027-01-31"),
            d("2027-03-15"),
        );
        assert_eq!((a.days, a.minor), (45, 18_000));
    }

    #[test]
    fn accrual_starts_at_the_last_due_date_or_the_first_period() {
        let dues = [d("2027-01-31"), d("2027-02-28"), d("2027-03-31")];
        let start = first_period_start(dues[0], crate::domain::Frequency::Monthly).unwrap();
        assert_eq!(start, d("2026-12-31"));
        // Before the first due date: from the first period's start.
        assert_eq!(accrual_start(dues, d("2027-01-10"), start), start);
        // On a due date: from that date (0 days).
        assert_eq!(accrual_start(dues, d("2027-02-28"), start), d("2027-02-28"));
        // Between: from the last one passed.
        assert_eq!(accrual_start(dues, d("2027-03-15"), start), d("2027-02-28"));
        // Before even the first period: nothing accrues.
        assert_eq!(accrual_start(dues, d("2026-12-01"), start), d("2026-12-01"));
        assert_eq!(
            first_period_start(d("2027-03-31"), crate::domain::Frequency::Monthly),
            Some(d("2027-02-28"))
        );
        assert_eq!(
            first_period_start(d("2027-03-31"), crate::domain::Frequency::Biweekly),
            Some(d("2027-03-17"))
        );
    }
}
