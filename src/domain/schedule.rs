//! Installment schedules: four methods, three frequencies, configurable rounding.
//! Every schedule sums exactly to principal + fees + interest, to the minor unit.

use super::calendar::{BusinessDayRule, HolidayCalendar};
use super::money::{Currency, Money, MoneyError};
use chrono::{Days, Months, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// How a schedule's amounts are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Principal split evenly, no interest, no fee.
    InterestFree,
    /// Principal split evenly plus a per-period fee = principal x fee rate.
    FlatFee,
    /// Level payment (PMT) at the periodic rate; interest on the outstanding balance.
    Annuity,
    /// Principal split evenly, interest on the outstanding balance.
    EqualPrincipal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Frequency {
    Monthly,
    Biweekly,
    Weekly,
}

impl Frequency {
    pub fn periods_per_year(self) -> u32 {
        match self {
            Frequency::Monthly => 12,
            Frequency::Biweekly => 26,
            Frequency::Weekly => 52,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum RoundingMode {
    #[default]
    HalfUp,
    HalfEven,
    Down,
    Up,
}

/// Which installment takes the remainder of an even split.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum RemainderPlacement {
    First,
    #[default]
    Last,
}

/// Everything needed to generate a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    pub currency: Currency,
    /// Exact, with no more places than the currency has.
    pub principal: Decimal,
    pub installments: u32,
    pub method: Method,
    /// Nominal annual rate as a fraction (0.12 = 12 %); used by annuity and equal-principal.
    pub annual_rate: Decimal,
    /// Fee per period as a fraction of the principal (0.006 = 0.6 %); used by flat-fee.
    pub fee_rate: Decimal,
    /// The unadjusted first due date; later dates keep its day of month.
    pub first_due: NaiveDate,
    pub frequency: Frequency,
    pub rounding: RoundingMode,
    pub remainder: RemainderPlacement,
    pub business_day: BusinessDayRule,
}

/// One line of a schedule. `due_date` is already business-day adjusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledInstallment {
    pub seq: u32,
    pub due_date: NaiveDate,
    pub principal: Decimal,
    pub interest: Decimal,
    pub fee: Decimal,
    pub total: Decimal,
    /// Principal still outstanding after this installment is paid.
    pub balance_after: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub currency: Currency,
    pub principal: Decimal,
    pub total_interest: Decimal,
    pub total_fee: Decimal,
    pub total: Decimal,
    pub installments: Vec<ScheduledInstallment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("principal must be greater than zero, got {0}")]
    NonPositivePrincipal(Decimal),
    #[error("principal {principal} has more decimal places than {currency} allows")]
    PrincipalTooPrecise {
        principal: Decimal,
        currency: &'static str,
    },
    #[error("number of installments must be between 1 and 600, got {0}")]
    BadInstallmentCount(u32),
    #[error("{field} must be between 0 and 1 (a fraction), got {value}")]
    BadRate { field: &'static str, value: Decimal },
    #[error("due dates run past the supported calendar range")]
    DateOutOfRange,
    #[error("the schedule would have a negative {part} in installment {seq}")]
    NegativePart { part: &'static str, seq: u32 },
    #[error(
        "principal {principal} is too small for {installments} installments \
         (each needs at least one minor unit)"
    )]
    PrincipalTooSmall {
        principal: Decimal,
        installments: u32,
    },
    #[error("installment {seq} would be zero: the principal is too small for this rounding")]
    EmptyInstallment { seq: u32 },
    #[error("{field} is {value} but the {method} method does not use it; set it to 0")]
    UnusedRate {
        field: &'static str,
        value: Decimal,
        method: &'static str,
    },
    #[error("amount {0} is too large to hold in minor units")]
    AmountTooLarge(Decimal),
    #[error("{field} {value} has more than {MAX_RATE_PLACES} decimal places")]
    RateTooPrecise { field: &'static str, value: Decimal },
}

/// Rates carry at most this many decimal places (0.123456789012345678), so a period's
/// interest, balance x rate in minor units, is exact in 128-bit integers.
pub const MAX_RATE_PLACES: u32 = 18;

/// Generates the schedule for `terms`, adjusting due dates against `calendar`.
///
/// Remainder placement applies to every even split of the principal (interest-free,
/// flat-fee, equal-principal, and annuity at a zero rate, which is an even split). An
/// annuity with interest always settles on its last installment: that one repays whatever
/// principal is left, so its total differs from the level payment by a few minor units.
///
/// Adjusted due dates never go backwards, but two may coincide when a holiday block is
/// longer than the period (a weekly schedule across the 9-day Spring Festival with
/// `following`): both installments are then due on the first business day after it.
pub fn generate(terms: &Terms, calendar: &HolidayCalendar) -> Result<Schedule, ScheduleError> {
    generate_from(terms, calendar, 1)
}

/// [`generate`] for a schedule whose first installment falls in period `first_period`
/// (1-based) counted from `terms.first_due`: installment `seq` is due on the nominal date
/// of period `first_period + seq - 1`. A reschedule re-spreads what is left from a later
/// period of the same anchor, so month ends do not drift (anchored on Jan 31, period 4 is
/// Apr 30 and period 5 May 31, never May 30).
pub fn generate_from(
    terms: &Terms,
    calendar: &HolidayCalendar,
    first_period: u32,
) -> Result<Schedule, ScheduleError> {
    let principal = validate(terms)?;
    let offset = first_period
        .checked_sub(1)
        .ok_or(ScheduleError::DateOutOfRange)?;
    let digits = terms.currency.minor_digits();
    let mode = terms.rounding;
    let n = terms.installments;
    // The periodic rate only shapes the annuity's level payment; every period's interest
    // is computed exactly from the annual rate (period_interest).
    let rate = terms.annual_rate / Decimal::from(terms.frequency.periods_per_year());

    let parts = match terms.method {
        Method::InterestFree => even_split(principal, n, digits, mode, terms.remainder)?
            .into_iter()
            .map(|p| Parts::new(p, Decimal::ZERO, Decimal::ZERO))
            .collect(),
        Method::FlatFee => {
            // Rounded once, so every period carries the same fee and total_fee = fee x n.
            let fee = flat_fee(terms);
            even_split(principal, n, digits, mode, terms.remainder)?
                .into_iter()
                .map(|p| Parts::new(p, Decimal::ZERO, fee))
                .collect()
        }
        Method::EqualPrincipal => {
            let mut balance = principal;
            even_split(principal, n, digits, mode, terms.remainder)?
                .into_iter()
                .map(|p| {
                    let interest = period_interest(balance, terms, digits)?;
                    balance -= p;
                    Ok(Parts::new(p, interest, Decimal::ZERO))
                })
                .collect::<Result<_, ScheduleError>>()?
        }
        Method::Annuity if rate.is_zero() => {
            even_split(principal, n, digits, mode, terms.remainder)?
                .into_iter()
                .map(|p| Parts::new(p, Decimal::ZERO, Decimal::ZERO))
                .collect()
        }
        Method::Annuity => annuity(principal, terms, rate, digits)?,
    };

    let mut installments = Vec::with_capacity(parts.len());
    let mut balance = principal;
    for (seq, part) in (1..=n).zip(parts) {
        let nominal = seq
            .checked_add(offset)
            .and_then(|period| nominal_due_date(terms.first_due, terms.frequency, period))
            .ok_or(ScheduleError::DateOutOfRange)?;
        balance -= part.principal;
        // Every amount carries exactly the currency's places (zero is `0.00`, not `0`).
        let line = ScheduledInstallment {
            seq,
            due_date: calendar.adjust(nominal, terms.business_day),
            principal: rescaled(part.principal, digits),
            interest: rescaled(part.interest, digits),
            fee: rescaled(part.fee, digits),
            total: rescaled(part.principal + part.interest + part.fee, digits),
            balance_after: rescaled(balance, digits),
        };
        check_line(&line)?;
        installments.push(line);
    }
    if !balance.is_zero() {
        // Every method ends on the balance by construction; this guards future edits.
        return Err(ScheduleError::NegativePart {
            part: "balance",
            seq: n,
        });
    }

    let total_interest: Decimal = installments.iter().map(|i| i.interest).sum();
    let total_fee: Decimal = installments.iter().map(|i| i.fee).sum();
    let total: Decimal = installments.iter().map(|i| i.total).sum();
    if Money::from_decimal(total, terms.currency).is_err() {
        return Err(ScheduleError::AmountTooLarge(total));
    }
    Ok(Schedule {
        currency: terms.currency,
        principal,
        total_interest: rescaled(total_interest, digits),
        total_fee: rescaled(total_fee, digits),
        total: rescaled(total, digits),
        installments,
    })
}

/// The flat-fee method's fee per period: principal x fee rate, rounded once by the terms'
/// rounding (zero for the other methods, whose fee rate must be zero).
pub fn flat_fee(terms: &Terms) -> Decimal {
    let digits = terms.currency.minor_digits();
    round(terms.principal * terms.fee_rate, digits, terms.rounding)
}

/// Unadjusted due date of installment `seq` (1-based): monthly dates keep the first due
/// date's day of month, clamped to the month's end without drift. `None` for `seq` 0 or a
/// date past chrono's range.
pub fn nominal_due_date(first_due: NaiveDate, frequency: Frequency, seq: u32) -> Option<NaiveDate> {
    let k = seq.checked_sub(1)?;
    match frequency {
        // Always from the first due date: Jan 31 + 2 months is Mar 31, whereas stepping
        // month by month would drift to Mar 28 after clamping to Feb 28.
        Frequency::Monthly => first_due.checked_add_months(Months::new(k)),
        Frequency::Biweekly => first_due.checked_add_days(Days::new(14 * u64::from(k))),
        Frequency::Weekly => first_due.checked_add_days(Days::new(7 * u64::from(k))),
    }
}

impl Method {
    /// The name used on the command line and in files (`equal-principal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::InterestFree => "interest-free",
            Method::FlatFee => "flat-fee",
            Method::Annuity => "annuity",
            Method::EqualPrincipal => "equal-principal",
        }
    }
}

impl Frequency {
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Monthly => "monthly",
            Frequency::Biweekly => "biweekly",
            Frequency::Weekly => "weekly",
        }
    }
}

impl RoundingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RoundingMode::HalfUp => "half-up",
            RoundingMode::HalfEven => "half-even",
            RoundingMode::Down => "down",
            RoundingMode::Up => "up",
        }
    }

    pub fn strategy(self) -> RoundingStrategy {
        match self {
            RoundingMode::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            RoundingMode::HalfEven => RoundingStrategy::MidpointNearestEven,
            RoundingMode::Down => RoundingStrategy::ToZero,
            RoundingMode::Up => RoundingStrategy::AwayFromZero,
        }
    }
}

impl RemainderPlacement {
    pub fn as_str(self) -> &'static str {
        match self {
            RemainderPlacement::First => "first",
            RemainderPlacement::Last => "last",
        }
    }
}

/// One installment's amounts before dates and balances are attached.
struct Parts {
    principal: Decimal,
    interest: Decimal,
    fee: Decimal,
}

impl Parts {
    fn new(principal: Decimal, interest: Decimal, fee: Decimal) -> Self {
        Parts {
            principal,
            interest,
            fee,
        }
    }
}

/// Rounds to the currency's minor unit and pins the scale, so `1000` prints as `1000.00`.
fn round(value: Decimal, digits: u32, mode: RoundingMode) -> Decimal {
    rescaled(
        value.round_dp_with_strategy(digits, mode.strategy()),
        digits,
    )
}

/// Sets the scale of an amount that already has at most `digits` places (exact).
fn rescaled(mut value: Decimal, digits: u32) -> Decimal {
    value.rescale(digits);
    value
}

fn validate(terms: &Terms) -> Result<Decimal, ScheduleError> {
    let principal = terms.principal;
    if principal <= Decimal::ZERO {
        return Err(ScheduleError::NonPositivePrincipal(principal));
    }
    // Money::from_decimal fails only on too many places or an amount beyond i64 minor units.
    let principal = match Money::from_decimal(principal, terms.currency) {
        Ok(m) => m.amount(),
        Err(MoneyError::TooPrecise { .. }) => {
            return Err(ScheduleError::PrincipalTooPrecise {
                principal,
                currency: terms.currency.code(),
            });
        }
        Err(_) => return Err(ScheduleError::AmountTooLarge(principal)),
    };
    let n = terms.installments;
    if !(1..=600).contains(&n) {
        return Err(ScheduleError::BadInstallmentCount(n));
    }
    for (field, value) in [
        ("annual_rate", terms.annual_rate),
        ("fee_rate", terms.fee_rate),
    ] {
        if value < Decimal::ZERO || value >= Decimal::ONE {
            return Err(ScheduleError::BadRate { field, value });
        }
        if value.normalize().scale() > MAX_RATE_PLACES {
            return Err(ScheduleError::RateTooPrecise { field, value });
        }
    }
    // A rate the method ignores is a mistake in the terms, not something to drop quietly:
    // a quote that reads "interest-free" must not have been asked for at 12 %.
    let (unused, value) = match terms.method {
        Method::InterestFree if !terms.annual_rate.is_zero() => ("annual_rate", terms.annual_rate),
        Method::InterestFree | Method::Annuity | Method::EqualPrincipal
            if !terms.fee_rate.is_zero() =>
        {
            ("fee_rate", terms.fee_rate)
        }
        Method::FlatFee if !terms.annual_rate.is_zero() => ("annual_rate", terms.annual_rate),
        _ => ("", Decimal::ZERO),
    };
    if !unused.is_empty() {
        return Err(ScheduleError::UnusedRate {
            field: unused,
            value,
            method: terms.method.as_str(),
        });
    }
    // Fewer minor units than installments would leave installments with nothing in them.
    if principal < terms.currency.minor_unit() * Decimal::from(n) {
        return Err(ScheduleError::PrincipalTooSmall {
            principal,
            installments: n,
        });
    }
    Ok(principal)
}

/// One period's interest: balance x annual rate / periods per year, rounded once at the
/// end. Computed exactly in integer minor units (never through a periodic rate cut to
/// 28 digits, which lands a cent low at exact half-cents: 1002.00 at 13 % for a month is
/// exactly 10.855, so 10.86 half-up).
fn period_interest(balance: Decimal, terms: &Terms, digits: u32) -> Result<Decimal, ScheduleError> {
    let too_large = || ScheduleError::AmountTooLarge(balance);
    let mut minor = balance;
    minor.rescale(digits);
    let rate = terms.annual_rate.normalize();
    // balance_minor x rate_mantissa / (10^rate_scale x periods per year)
    let numerator = minor
        .mantissa()
        .checked_mul(rate.mantissa())
        .ok_or_else(too_large)?;
    let denominator = 10_i128
        .checked_pow(rate.scale())
        .and_then(|p| p.checked_mul(i128::from(terms.frequency.periods_per_year())))
        .ok_or_else(too_large)?;
    let quotient = round_ratio(numerator, denominator, terms.rounding);
    Decimal::try_from_i128_with_scale(quotient, digits).map_err(|_| too_large())
}

/// `numerator / denominator` (denominator > 0) rounded to an integer by `mode`, with the
/// same meaning as the Decimal strategies (half-up and up are away from zero).
pub fn round_ratio(numerator: i128, denominator: i128, mode: RoundingMode) -> i128 {
    let magnitude = numerator.unsigned_abs();
    let den = denominator.unsigned_abs();
    let (q, r) = (magnitude / den, magnitude % den);
    let twice = 2 * r; // r < den <= i128::MAX, so this fits in u128
    let up = match mode {
        RoundingMode::Down => false,
        RoundingMode::Up => r > 0,
        RoundingMode::HalfUp => twice >= den,
        RoundingMode::HalfEven => twice > den || (twice == den && q % 2 == 1),
    };
    let q = (q + u128::from(up)) as i128;
    if numerator < 0 { -q } else { q }
}

/// Splits `principal` into `n` rounded parts; the remainder of the split (positive or, when
/// rounding up, negative) lands on the first or last part.
fn even_split(
    principal: Decimal,
    n: u32,
    digits: u32,
    mode: RoundingMode,
    placement: RemainderPlacement,
) -> Result<Vec<Decimal>, ScheduleError> {
    let base = round(principal / Decimal::from(n), digits, mode);
    let odd = principal - base * Decimal::from(n - 1);
    let odd_seq = match placement {
        RemainderPlacement::First => 1,
        RemainderPlacement::Last => n,
    };
    // Rounding up a tiny principal over many installments can overshoot it.
    if odd < Decimal::ZERO {
        return Err(ScheduleError::NegativePart {
            part: "principal",
            seq: odd_seq,
        });
    }
    Ok((1..=n)
        .map(|seq| if seq == odd_seq { odd } else { base })
        .collect())
}

/// `base^exp` by square-and-multiply in Decimal: at most ~20 multiplications for 600
/// periods, each exact to 28 significant digits, which is far below a minor unit.
fn power(base: Decimal, mut exp: u32) -> Decimal {
    let mut result = Decimal::ONE;
    let mut square = base;
    while exp > 0 {
        if exp & 1 == 1 {
            result *= square;
        }
        exp >>= 1;
        if exp > 0 {
            square *= square;
        }
    }
    result
}

/// Level payment PMT = P*r/(1-(1+r)^-n), computed as P * (r*g/(g-1)) with g = (1+r)^n so
/// that no intermediate exceeds Decimal's range (g reaches ~1e21 at 600 months of 99 %).
fn annuity(
    principal: Decimal,
    terms: &Terms,
    rate: Decimal,
    digits: u32,
) -> Result<Vec<Parts>, ScheduleError> {
    let (n, mode) = (terms.installments, terms.rounding);
    let growth = power(Decimal::ONE + rate, n);
    let payment = round(
        principal * (rate * growth / (growth - Decimal::ONE)),
        digits,
        mode,
    );
    let mut balance = principal;
    let mut parts = Vec::with_capacity(n as usize);
    for seq in 1..=n {
        let interest = period_interest(balance, terms, digits)?;
        let principal_part = if seq == n {
            balance
        } else {
            payment - interest
        };
        if principal_part < Decimal::ZERO {
            return Err(ScheduleError::NegativePart {
                part: "principal",
                seq,
            });
        }
        if principal_part > balance {
            // A payment rounded up on a tiny loan repays it early; the last would go negative.
            return Err(ScheduleError::NegativePart {
                part: "balance",
                seq,
            });
        }
        balance -= principal_part;
        parts.push(Parts::new(principal_part, interest, Decimal::ZERO));
    }
    Ok(parts)
}

/// Every line must be payable: no negative part, nothing owed after it below zero, and
/// something to collect.
fn check_line(line: &ScheduledInstallment) -> Result<(), ScheduleError> {
    let seq = line.seq;
    for (part, value) in [
        ("principal", line.principal),
        ("interest", line.interest),
        ("fee", line.fee),
        ("balance", line.balance_after),
    ] {
        if value < Decimal::ZERO {
            return Err(ScheduleError::NegativePart { part, seq });
        }
    }
    if line.total.is_zero() {
        return Err(ScheduleError::EmptyInstallment { seq });
    }
    Ok(())
}

impl Schedule {
    /// Checks the exactness invariants; used by import for explicit schedules too.
    pub fn sums_exactly(&self) -> bool {
        let sum: Decimal = self.installments.iter().map(|i| i.total).sum();
        sum == self.total && self.total == self.principal + self.total_interest + self.total_fee
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("valid test decimal")
    }

    fn cur(code: &str) -> Currency {
        Currency::parse(code).expect("known test currency")
    }

    fn terms(code: &str, principal: &str, n: u32, method: Method) -> Terms {
        Terms {
            currency: cur(code),
            principal: dec(principal),
            installments: n,
            method,
            annual_rate: Decimal::ZERO,
            fee_rate: Decimal::ZERO,
            first_due: d(2026, 1, 31),
            frequency: Frequency::Monthly,
            rounding: RoundingMode::HalfUp,
            remainder: RemainderPlacement::Last,
            business_day: BusinessDayRule::None,
        }
    }

    fn gen_plain(t: &Terms) -> Schedule {
        generate(t, &HolidayCalendar::default()).expect("valid terms")
    }

    fn principals(s: &Schedule) -> Vec<Decimal> {
        s.installments.iter().map(|i| i.principal).collect()
    }

    fn interests(s: &Schedule) -> Vec<Decimal> {
        s.installments.iter().map(|i| i.interest).collect()
    }

    fn decs(values: &[&str]) -> Vec<Decimal> {
        values.iter().map(|v| dec(v)).collect()
    }

    fn cn2026() -> HolidayCalendar {
        HolidayCalendar::from_toml(include_str!("../../config/calendars/cn-2026.toml"))
            .expect("the shipped calendar parses")
    }

    #[test]
    fn interest_free_remainder_goes_last_or_first() {
        // 1000.00 / 3 = 333.333.. -> 333.33 (half-up); 1000.00 - 2 x 333.33 = 333.34.
        let mut t = terms("CNY", "1000.00", 3, Method::InterestFree);
        let s = gen_plain(&t);
        assert_eq!(principals(&s), decs(&["333.33", "333.33", "333.34"]));
        assert_eq!(s.total, dec("1000.00"));
        assert_eq!(s.total_interest, Decimal::ZERO);
        assert_eq!(s.total_fee, Decimal::ZERO);
        let balances: Vec<_> = s.installments.iter().map(|i| i.balance_after).collect();
        // 1000.00 - 333.33 = 666.67; - 333.33 = 333.34; - 333.34 = 0.
        assert_eq!(balances, decs(&["666.67", "333.34", "0.00"]));
        assert!(s.sums_exactly());

        t.remainder = RemainderPlacement::First;
        let s = gen_plain(&t);
        assert_eq!(principals(&s), decs(&["333.34", "333.33", "333.33"]));
        assert_eq!(s.installments[0].balance_after, dec("666.66"));

        // Rounding up: 333.34 each for two, 1000.00 - 666.68 = 333.32 last.
        t.remainder = RemainderPlacement::Last;
        t.rounding = RoundingMode::Up;
        assert_eq!(
            principals(&gen_plain(&t)),
            decs(&["333.34", "333.34", "333.32"])
        );
        // Rounding down is 333.33 like half-up here.
        t.rounding = RoundingMode::Down;
        assert_eq!(
            principals(&gen_plain(&t)),
            decs(&["333.33", "333.33", "333.34"])
        );
    }

    #[test]
    fn amounts_carry_the_currency_scale() {
        let s = gen_plain(&terms("CNY", "1200", 12, Method::InterestFree));
        assert_eq!(s.principal.to_string(), "1200.00");
        assert_eq!(s.installments[0].principal.to_string(), "100.00");
        assert_eq!(s.installments[0].interest.to_string(), "0.00");
        assert_eq!(s.total.to_string(), "1200.00");
        let jpy = gen_plain(&terms("JPY", "5000", 2, Method::InterestFree));
        assert_eq!(jpy.installments[0].total.to_string(), "2500");
    }

    #[test]
    fn flat_fee_12000_over_12_at_0_6_percent() {
        // Principal 12000.00 / 12 = 1000.00 a month.
        // Fee 12000.00 x 0.006 = 72.00 a month, total fee 72.00 x 12 = 864.00.
        // Each installment 1000.00 + 72.00 = 1072.00; total 12000.00 + 864.00 = 12864.00.
        let mut t = terms("CNY", "12000", 12, Method::FlatFee);
        t.fee_rate = dec("0.006");
        let s = gen_plain(&t);
        for line in &s.installments {
            assert_eq!(line.principal, dec("1000.00"));
            assert_eq!(line.fee, dec("72.00"));
            assert_eq!(line.interest, Decimal::ZERO);
            assert_eq!(line.total, dec("1072.00"));
        }
        assert_eq!(s.total_fee, dec("864.00"));
        assert_eq!(s.total, dec("12864.00"));
        assert!(s.sums_exactly());
    }

    #[test]
    fn flat_fee_kwd_three_digits_and_rounding_modes() {
        // KWD has 3 digits. 1000.000 / 3 = 333.333 twice, last 1000.000 - 666.666 = 333.334.
        // Fee 1000.000 x 0.0012345 = 1.2345, exactly half a fils:
        //   half-up 1.235, half-even 1.234 (4 is even), down 1.234, up 1.235.
        let mut t = terms("KWD", "1000", 3, Method::FlatFee);
        t.fee_rate = dec("0.0012345");
        for (mode, fee, total_fee) in [
            (RoundingMode::HalfUp, "1.235", "3.705"),
            (RoundingMode::HalfEven, "1.234", "3.702"),
            (RoundingMode::Down, "1.234", "3.702"),
            (RoundingMode::Up, "1.235", "3.705"),
        ] {
            t.rounding = mode;
            let s = gen_plain(&t);
            assert!(s.installments.iter().all(|i| i.fee == dec(fee)), "{mode:?}");
            assert_eq!(s.total_fee, dec(total_fee), "{mode:?}");
            assert!(s.sums_exactly());
        }
        t.rounding = RoundingMode::HalfUp;
        let s = gen_plain(&t);
        assert_eq!(principals(&s), decs(&["333.333", "333.333", "333.334"]));
        assert_eq!(s.installments[0].fee.to_string(), "1.235");
        // 1000.000 + 3.705 = 1003.705.
        assert_eq!(s.total, dec("1003.705"));
    }

    #[test]
    fn annuity_12000_over_12_months_at_12_percent() {
        // r = 0.12 / 12 = 0.01. (1.01)^12 = 1.12682503013196972066..
        // PMT = 12000 x 0.01 x 1.1268250301 / 0.1268250301 = 1066.18546.. -> 1066.19.
        // 1: interest 12000.00 x 0.01 = 120.00, principal 1066.19 - 120.00 = 946.19,
        //    balance 12000.00 - 946.19 = 11053.81.
        // 2: interest 11053.81 x 0.01 = 110.5381 -> 110.54, principal 955.65,
        //    balance 10098.16.
        // 3: 100.9816 -> 100.98, principal 965.21, balance 9132.95.
        // 4: 91.3295 -> 91.33, 974.86, 8158.09.   5: 81.58, 984.61, 7173.48.
        // 6: 71.73, 994.46, 6179.02.               7: 61.79, 1004.40, 5174.62.
        // 8: 51.75, 1014.44, 4160.18.              9: 41.60, 1024.59, 3135.59.
        // 10: 31.36, 1034.83, 2100.76.             11: 21.01, 1045.18, 1055.58.
        // 12 (last): principal = the balance 1055.58, interest 10.5558 -> 10.56,
        //    total 1066.14 (5 fen less than the level payment).
        // Interest 120.00+110.54+100.98+91.33+81.58+71.73+61.79+51.75+41.60+31.36+21.01
        //    +10.56 = 794.23; total 12000.00 + 794.23 = 12794.23 = 11 x 1066.19 + 1066.14.
        let mut t = terms("CNY", "12000", 12, Method::Annuity);
        t.annual_rate = dec("0.12");
        let s = gen_plain(&t);
        for line in &s.installments[..11] {
            assert_eq!(line.total, dec("1066.19"), "installment {}", line.seq);
        }
        assert_eq!(
            interests(&s),
            decs(&[
                "120.00", "110.54", "100.98", "91.33", "81.58", "71.73", "61.79", "51.75", "41.60",
                "31.36", "21.01", "10.56"
            ])
        );
        assert_eq!(s.installments[0].principal, dec("946.19"));
        assert_eq!(s.installments[0].balance_after, dec("11053.81"));
        assert_eq!(s.installments[1].principal, dec("955.65"));
        assert_eq!(s.installments[10].balance_after, dec("1055.58"));
        let last = &s.installments[11];
        assert_eq!(last.principal, dec("1055.58"));
        assert_eq!(last.total, dec("1066.14"));
        assert_eq!(last.balance_after, Decimal::ZERO);
        assert_eq!(s.total_interest, dec("794.23"));
        assert_eq!(s.total, dec("12794.23"));
        assert!(s.sums_exactly());
    }

    #[test]
    fn annuity_jpy_rounds_to_whole_yen() {
        // JPY has 0 digits. 100000 JPY, 6 months, 12 %: r = 0.01, (1.01)^6 = 1.0615201506..
        // PMT = 100000 x 0.01 x 1.0615201506 / 0.0615201506 = 17254.84 -> 17255 (half-even).
        // 1: interest 1000, principal 16255, balance 83745.
        // 2: 837.45 -> 837, 16418, 67327.   3: 673.27 -> 673, 16582, 50745.
        // 4: 507.45 -> 507, 16748, 33997.   5: 339.97 -> 340, 16915, 17082.
        // 6: principal 17082, interest 170.82 -> 171, total 17253.
        // Interest 1000+837+673+507+340+171 = 3528.
        let mut t = terms("JPY", "100000", 6, Method::Annuity);
        t.annual_rate = dec("0.12");
        t.rounding = RoundingMode::HalfEven;
        let s = gen_plain(&t);
        assert_eq!(
            principals(&s),
            decs(&["16255", "16418", "16582", "16748", "16915", "17082"])
        );
        assert_eq!(
            interests(&s),
            decs(&["1000", "837", "673", "507", "340", "171"])
        );
        assert_eq!(s.installments[5].total, dec("17253"));
        assert_eq!(s.total_interest, dec("3528"));
        assert_eq!(s.total.to_string(), "103528");
    }

    #[test]
    fn annuity_at_zero_rate_is_an_even_split() {
        let mut t = terms("CNY", "1000.00", 3, Method::Annuity);
        let s = gen_plain(&t);
        assert_eq!(principals(&s), decs(&["333.33", "333.33", "333.34"]));
        assert_eq!(s.total_interest, Decimal::ZERO);
        t.remainder = RemainderPlacement::First;
        assert_eq!(
            principals(&gen_plain(&t)),
            decs(&["333.34", "333.33", "333.33"])
        );
    }

    #[test]
    fn equal_principal_12000_over_12_at_12_percent() {
        // Principal 12000.00 / 12 = 1000.00 each; r = 0.01.
        // Interest k = (12000.00 - 1000.00 x (k-1)) x 0.01 = 120.00, 110.00, .., 10.00.
        // First 1000.00 + 120.00 = 1120.00; last 1000.00 + 10.00 = 1010.00.
        // Total interest 10.00 x (12 + 11 + .. + 1) = 10.00 x 78 = 780.00.
        let mut t = terms("CNY", "12000", 12, Method::EqualPrincipal);
        t.annual_rate = dec("0.12");
        let s = gen_plain(&t);
        assert_eq!(s.installments[0].total, dec("1120.00"));
        assert_eq!(s.installments[11].total, dec("1010.00"));
        assert_eq!(s.installments[11].interest, dec("10.00"));
        for (k, line) in s.installments.iter().enumerate() {
            assert_eq!(line.principal, dec("1000.00"));
            assert_eq!(line.interest, Decimal::from(120 - 10 * k as i64));
        }
        assert_eq!(s.total_interest, dec("780.00"));
        assert_eq!(s.total, dec("12780.00"));
        assert!(s.sums_exactly());
    }

    #[test]
    fn equal_principal_jpy_midpoint_by_rounding_mode() {
        // 10050 JPY over 2 months at 12 %: 5025 each.
        // Interest 1: 10050 x 0.01 = 100.5 (a midpoint); interest 2: 5025 x 0.01 = 50.25.
        let mut t = terms("JPY", "10050", 2, Method::EqualPrincipal);
        t.annual_rate = dec("0.12");
        for (mode, first, second) in [
            (RoundingMode::HalfUp, "101", "50"),
            (RoundingMode::HalfEven, "100", "50"),
            (RoundingMode::Down, "100", "50"),
            (RoundingMode::Up, "101", "51"),
        ] {
            t.rounding = mode;
            let s = gen_plain(&t);
            assert_eq!(interests(&s), decs(&[first, second]), "{mode:?}");
            assert_eq!(principals(&s), decs(&["5025", "5025"]));
            assert!(s.sums_exactly());
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let cal = HolidayCalendar::default();
        let base = terms("CNY", "1000", 3, Method::InterestFree);
        let check = |f: &dyn Fn(&mut Terms), expected: ScheduleError| {
            let mut t = base.clone();
            f(&mut t);
            assert_eq!(generate(&t, &cal), Err(expected));
        };
        check(
            &|t| t.principal = Decimal::ZERO,
            ScheduleError::NonPositivePrincipal(Decimal::ZERO),
        );
        check(
            &|t| t.principal = dec("-5"),
            ScheduleError::NonPositivePrincipal(dec("-5")),
        );
        check(
            &|t| t.principal = dec("10.005"),
            ScheduleError::PrincipalTooPrecise {
                principal: dec("10.005"),
                currency: "CNY",
            },
        );
        check(
            &|t| t.installments = 0,
            ScheduleError::BadInstallmentCount(0),
        );
        check(
            &|t| t.installments = 601,
            ScheduleError::BadInstallmentCount(601),
        );
        check(
            &|t| {
                t.method = Method::Annuity;
                t.annual_rate = Decimal::ONE;
            },
            ScheduleError::BadRate {
                field: "annual_rate",
                value: Decimal::ONE,
            },
        );
        check(
            &|t| {
                t.method = Method::FlatFee;
                t.fee_rate = dec("-0.01");
            },
            ScheduleError::BadRate {
                field: "fee_rate",
                value: dec("-0.01"),
            },
        );
        check(
            &|t| t.annual_rate = dec("0.12"),
            ScheduleError::UnusedRate {
                field: "annual_rate",
                value: dec("0.12"),
                method: "interest-free",
            },
        );
        check(
            &|t| {
                t.method = Method::Annuity;
                t.fee_rate = dec("0.01");
            },
            ScheduleError::UnusedRate {
                field: "fee_rate",
                value: dec("0.01"),
                method: "annuity",
            },
        );
        check(
            &|t| t.principal = dec("0.02"),
            ScheduleError::PrincipalTooSmall {
                principal: dec("0.02"),
                installments: 3,
            },
        );
        // 1.00 trailing zeros beyond the currency's digits are fine: 1.000 CNY = 1.00.
        let mut t = base.clone();
        t.principal = dec("3.000");
        assert_eq!(gen_plain(&t).principal.to_string(), "3.00");
        // i64 minor units hold ~9.2e16 CNY.
        let mut t = base.clone();
        t.principal = dec("100000000000000000");
        assert!(matches!(
            generate(&t, &cal),
            Err(ScheduleError::AmountTooLarge(_))
        ));
        // The error text is for an operator.
        let err = generate(
            &Terms {
                installments: 700,
                ..base.clone()
            },
            &cal,
        )
        .expect_err("too many");
        assert_eq!(
            err.to_string(),
            "number of installments must be between 1 and 600, got 700"
        );
    }

    #[test]
    fn tiny_principals_rounded_up_are_refused_not_negative() {
        // 0.09 over 6 (half-up): 0.015 -> 0.02 each; 5 x 0.02 = 0.10 > 0.09, so the last
        // would be -0.01.
        let cal = HolidayCalendar::default();
        let t = terms("CNY", "0.09", 6, Method::InterestFree);
        assert_eq!(
            generate(&t, &cal),
            Err(ScheduleError::NegativePart {
                part: "principal",
                seq: 6
            })
        );
        // 0.06 over 4 (half-up): 0.015 -> 0.02; 3 x 0.02 = 0.06 leaves 0.00 for the last.
        let t = terms("CNY", "0.06", 4, Method::InterestFree);
        assert_eq!(
            generate(&t, &cal),
            Err(ScheduleError::EmptyInstallment { seq: 4 })
        );
        // Annuity: 0.09 over 6 at 1 %: PMT 0.015.. -> 0.02 (half-up), interest
        // 0.09 x 0.01/12 = 0.000075 -> 0.00, so 0.02 principal a month: balances 0.07, 0.05,
        // 0.03, 0.01, and the 5th would take 0.02 out of 0.01.
        let mut t = terms("CNY", "0.09", 6, Method::Annuity);
        t.annual_rate = dec("0.01");
        assert_eq!(
            generate(&t, &cal),
            Err(ScheduleError::NegativePart {
                part: "balance",
                seq: 5
            })
        );
    }

    #[test]
    fn monthly_dates_clamp_to_month_end_without_drift() {
        // Starting Jan 31 2027, through 2027 (not leap) into 2028 (leap).
        let expected = [
            d(2027, 1, 31),
            d(2027, 2, 28),
            d(2027, 3, 31),
            d(2027, 4, 30),
            d(2027, 5, 31),
            d(2027, 6, 30),
            d(2027, 7, 31),
            d(2027, 8, 31),
            d(2027, 9, 30),
            d(2027, 10, 31),
            d(2027, 11, 30),
            d(2027, 12, 31),
            d(2028, 1, 31),
            d(2028, 2, 29),
            d(2028, 3, 31),
        ];
        for (seq, want) in (1..).zip(expected) {
            assert_eq!(
                nominal_due_date(d(2027, 1, 31), Frequency::Monthly, seq),
                Some(want)
            );
        }
        // Feb 29 start keeps the 29th, and finds Feb 29 again in the next leap year.
        let leap = d(2028, 2, 29);
        assert_eq!(
            nominal_due_date(leap, Frequency::Monthly, 2),
            Some(d(2028, 3, 29))
        );
        assert_eq!(
            nominal_due_date(leap, Frequency::Monthly, 13),
            Some(d(2029, 2, 28))
        );
        assert_eq!(
            nominal_due_date(leap, Frequency::Monthly, 49),
            Some(d(2032, 2, 29))
        );
        // Aug 31: Sep 30, Oct 31, Nov 30, Dec 31, Jan 31, Feb 28 (2027).
        let aug: Vec<_> = (1..=7)
            .map(|seq| nominal_due_date(d(2026, 8, 31), Frequency::Monthly, seq))
            .collect();
        assert_eq!(
            aug,
            [
                d(2026, 8, 31),
                d(2026, 9, 30),
                d(2026, 10, 31),
                d(2026, 11, 30),
                d(2026, 12, 31),
                d(2027, 1, 31),
                d(2027, 2, 28)
            ]
            .map(Some)
        );
    }

    #[test]
    fn weekly_and_biweekly_dates_and_edges() {
        let start = d(2026, 1, 31);
        assert_eq!(
            nominal_due_date(start, Frequency::Biweekly, 2),
            Some(d(2026, 2, 14))
        );
        assert_eq!(
            nominal_due_date(start, Frequency::Biweekly, 3),
            Some(d(2026, 2, 28))
        );
        assert_eq!(
            nominal_due_date(start, Frequency::Weekly, 2),
            Some(d(2026, 2, 7))
        );
        assert_eq!(
            nominal_due_date(start, Frequency::Weekly, 53),
            Some(d(2027, 1, 30))
        );
        assert_eq!(nominal_due_date(start, Frequency::Weekly, 0), None);
        assert_eq!(
            nominal_due_date(NaiveDate::MAX, Frequency::Monthly, 2),
            None
        );
        let mut t = terms("CNY", "1000", 3, Method::InterestFree);
        t.first_due = NaiveDate::MAX;
        assert_eq!(
            generate(&t, &HolidayCalendar::default()),
            Err(ScheduleError::DateOutOfRange)
        );
    }

    fn due_dates(s: &Schedule) -> Vec<NaiveDate> {
        s.installments.iter().map(|i| i.due_date).collect()
    }

    #[test]
    fn due_dates_follow_the_china_calendar() {
        let cal = cn2026();
        let mut t = terms("CNY", "3000", 3, Method::InterestFree);
        // Jan 14 (Wed); Feb 14 is a make-up Saturday, a business day; Mar 14 (Sat) moves to
        // Mon Mar 16.
        t.first_due = d(2026, 1, 14);
        t.business_day = BusinessDayRule::Following;
        let s = generate(&t, &cal).expect("valid");
        assert_eq!(
            due_dates(&s),
            [d(2026, 1, 14), d(2026, 2, 14), d(2026, 3, 16)]
        );
        // Jan 17 (Sat) -> Mon Jan 19; Feb 17 (Spring Festival) -> Tue Feb 24; Mar 17 (Tue).
        t.first_due = d(2026, 1, 17);
        assert_eq!(
            due_dates(&generate(&t, &cal).expect("valid")),
            [d(2026, 1, 19), d(2026, 2, 24), d(2026, 3, 17)]
        );
        // Preceding: Feb 17 -> make-up Saturday Feb 14.
        t.business_day = BusinessDayRule::Preceding;
        assert_eq!(
            due_dates(&generate(&t, &cal).expect("valid")),
            [d(2026, 1, 16), d(2026, 2, 14), d(2026, 3, 17)]
        );
    }

    #[test]
    fn modified_following_at_month_end() {
        let cal = cn2026();
        let mut t = terms("CNY", "6000", 6, Method::InterestFree);
        t.first_due = d(2026, 1, 31);
        t.business_day = BusinessDayRule::ModifiedFollowing;
        let s = generate(&t, &cal).expect("valid");
        // Jan 31 (Sat) -> Fri Jan 30 (Mon Feb 2 is next month).
        // Feb 28 (make-up Sat) stays. Mar 31 (Tue), Apr 30 (Thu) stay.
        // May 31 (Sun) -> Fri May 29 (Mon Jun 1 is next month). Jun 30 (Tue) stays.
        assert_eq!(
            due_dates(&s),
            [
                d(2026, 1, 30),
                d(2026, 2, 28),
                d(2026, 3, 31),
                d(2026, 4, 30),
                d(2026, 5, 29),
                d(2026, 6, 30)
            ]
        );
        // Plain following would leave the month: Jan 31 -> Mon Feb 2, May 31 -> Mon Jun 1.
        t.business_day = BusinessDayRule::Following;
        let s = generate(&t, &cal).expect("valid");
        assert_eq!(s.installments[0].due_date, d(2026, 2, 2));
        assert_eq!(s.installments[4].due_date, d(2026, 6, 1));
        // And without a rule, the nominal dates.
        t.business_day = BusinessDayRule::None;
        let s = generate(&t, &cal).expect("valid");
        assert_eq!(s.installments[0].due_date, d(2026, 1, 31));
    }

    #[test]
    fn weekly_installments_can_share_a_day_after_a_long_holiday() {
        // Sun Feb 15 and Sun Feb 22 both fall in the Spring Festival block; following moves
        // both to Tue Feb 24. Two installments then fall due that day, in order.
        let mut t = terms("CNY", "400", 4, Method::InterestFree);
        t.first_due = d(2026, 2, 8);
        t.frequency = Frequency::Weekly;
        t.business_day = BusinessDayRule::Following;
        let s = generate(&t, &cn2026()).expect("valid");
        assert_eq!(
            due_dates(&s),
            [d(2026, 2, 9), d(2026, 2, 24), d(2026, 2, 24), d(2026, 3, 2)]
        );
    }

    #[test]
    fn interest_at_an_exact_half_cent_rounds_by_the_mode() {
        // 1002.00 x 13 % / 12 = 10.855 exactly: half-up 10.86, half-even 10.86, down 10.85.
        for (mode, want) in [
            (RoundingMode::HalfUp, "10.86"),
            (RoundingMode::HalfEven, "10.86"),
            (RoundingMode::Down, "10.85"),
            (RoundingMode::Up, "10.86"),
        ] {
            let mut t = terms("CNY", "1002.00", 1, Method::EqualPrincipal);
            t.annual_rate = dec("0.13");
            t.rounding = mode;
            let s = gen_plain(&t);
            assert_eq!(interests(&s), decs(&[want]), "{mode:?}");
        }
        // 1200.00 x 13 % / 12 = 13.00 exactly, whatever the mode.
        for mode in [RoundingMode::Down, RoundingMode::Up, RoundingMode::HalfUp] {
            let mut t = terms("GBP", "1200.00", 1, Method::EqualPrincipal);
            t.annual_rate = dec("0.13");
            t.rounding = mode;
            assert_eq!(interests(&gen_plain(&t)), decs(&["13.00"]), "{mode:?}");
        }
        // The annuity's first period charges the same exact interest.
        let mut t = terms("CNY", "1002.00", 3, Method::Annuity);
        t.annual_rate = dec("0.13");
        assert_eq!(interests(&gen_plain(&t))[0], dec("10.86"));
    }

    #[test]
    fn rates_beyond_the_supported_places_are_refused() {
        let mut t = terms("CNY", "1000", 3, Method::Annuity);
        t.annual_rate = dec("0.1234567890123456789");
        assert!(matches!(
            generate(&t, &HolidayCalendar::default()),
            Err(ScheduleError::RateTooPrecise {
                field: "annual_rate",
                ..
            })
        ));
        t.annual_rate = dec("0.123456789012345678");
        assert!(generate(&t, &HolidayCalendar::default()).is_ok());
    }

    #[test]
    fn round_ratio_follows_each_mode() {
        use RoundingMode::*;
        for (n, d, mode, want) in [
            (5, 2, HalfUp, 3),
            (5, 2, HalfEven, 2),
            (7, 2, HalfEven, 4),
            (5, 2, Down, 2),
            (5, 2, Up, 3),
            (4, 2, Up, 2),
            (-5, 2, HalfUp, -3),
            (-5, 2, Down, -2),
            (-5, 2, Up, -3),
            (0, 7, Up, 0),
        ] {
            assert_eq!(round_ratio(n, d, mode), want, "{n}/{d} {mode:?}");
        }
    }

    /// Exact rational oracle: a decimal as a BigRational.
    fn exact(value: Decimal) -> num_rational::BigRational {
        use num_bigint::BigInt;
        num_rational::BigRational::new(
            BigInt::from(value.mantissa()),
            BigInt::from(10u8).pow(value.scale()),
        )
    }

    /// Rounds an exact non-negative value to the currency's minor unit by `mode`.
    fn oracle_round(value: &num_rational::BigRational, digits: u32, mode: RoundingMode) -> Decimal {
        use num_bigint::BigInt;
        use num_rational::BigRational;
        let scaled = value * BigRational::from_integer(BigInt::from(10u8).pow(digits));
        let floor = scaled.floor();
        let frac = &scaled - &floor;
        let half = BigRational::new(BigInt::from(1), BigInt::from(2));
        let zero = BigRational::from_integer(BigInt::from(0));
        let floor = floor.to_integer();
        let odd = (&floor % BigInt::from(2)) == BigInt::from(1);
        let up = match mode {
            RoundingMode::Down => false,
            RoundingMode::Up => frac > zero,
            RoundingMode::HalfUp => frac >= half,
            RoundingMode::HalfEven => frac > half || (frac == half && odd),
        };
        let minor = if up { floor + 1 } else { floor };
        let minor: i128 = minor.try_into().expect("fits");
        Decimal::from_i128_with_scale(minor, digits)
    }

    fn oracle_terms() -> impl Strategy<Value = Terms> {
        let currency = prop_oneof![
            Just("CNY"),
            Just("GBP"),
            Just("USD"),
            Just("JPY"),
            Just("KWD")
        ];
        let method = prop_oneof![Just(Method::Annuity), Just(Method::EqualPrincipal)];
        let rounding = prop_oneof![
            Just(RoundingMode::HalfUp),
            Just(RoundingMode::HalfEven),
            Just(RoundingMode::Down),
            Just(RoundingMode::Up)
        ];
        let frequency = prop_oneof![
            Just(Frequency::Monthly),
            Just(Frequency::Biweekly),
            Just(Frequency::Weekly)
        ];
        // Whole and half percents hit exact half minor units often (1002.00 at 13 %);
        // rates with many places exercise the wide products.
        let rate = prop_oneof![
            3 => (1i64..=36).prop_map(|p| Decimal::new(p, 2)),
            2 => (1i64..=72).prop_map(|p| Decimal::new(p * 5, 3)),
            1 => (1i64..=360_000_000_000).prop_map(|p| Decimal::new(p, 12)),
        ];
        let magnitude = (2u32..=11).prop_flat_map(|e| 10i64.pow(e)..10i64.pow(e + 1));
        (
            currency,
            1u32..=60,
            method,
            rounding,
            frequency,
            rate,
            magnitude,
        )
            .prop_map(
                |(code, n, method, rounding, frequency, annual_rate, extra)| {
                    let currency = cur(code);
                    Terms {
                        currency,
                        principal: Decimal::new(
                            i64::from(n) * 10_000 + extra,
                            currency.minor_digits(),
                        ),
                        installments: n,
                        method,
                        annual_rate,
                        fee_rate: Decimal::ZERO,
                        first_due: d(2026, 1, 31),
                        frequency,
                        rounding,
                        remainder: RemainderPlacement::Last,
                        business_day: BusinessDayRule::None,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Every period's interest is exactly balance x annual rate / periods per year,
        /// rounded once, as an exact rational computes it; the annuity's level payment is
        /// within one minor unit of the exact one.
        #[test]
        fn interest_matches_the_exact_rational_oracle(t in oracle_terms()) {
            use num_bigint::BigInt;
            use num_rational::BigRational;
            let s = generate(&t, &HolidayCalendar::default())
                .map_err(|e| TestCaseError::fail(format!("{t:?}: {e}")))?;
            let digits = t.currency.minor_digits();
            let ppy = BigRational::from_integer(BigInt::from(t.frequency.periods_per_year()));
            let rate = exact(t.annual_rate) / &ppy;
            let mut balance = t.principal;
            for line in &s.installments {
                let want = oracle_round(&(exact(balance) * &rate), digits, t.rounding);
                prop_assert_eq!(line.interest, want, "installment {} of {:?}", line.seq, t);
                balance = line.balance_after;
            }
            if t.method == Method::Annuity && t.installments > 1 {
                let one = BigRational::from_integer(BigInt::from(1));
                let mut growth = one.clone();
                for _ in 0..t.installments {
                    growth *= &one + &rate;
                }
                let payment = exact(t.principal) * &rate * &growth / (&growth - &one);
                let unit = exact(t.currency.minor_unit());
                let level = exact(s.installments[0].total);
                let gap = if level > payment { &level - &payment } else { &payment - &level };
                prop_assert!(gap <= unit, "payment {} vs exact {} in {:?}", level, payment, t);
            }
        }
    }

    /// The invariants every generated schedule must satisfy.
    fn assert_invariants(
        t: &Terms,
        s: &Schedule,
        cal: &HolidayCalendar,
    ) -> Result<(), TestCaseError> {
        let digits = t.currency.minor_digits();
        let n = t.installments as usize;
        prop_assert_eq!(s.installments.len(), n);
        prop_assert!(s.sums_exactly());
        let totals: Decimal = s.installments.iter().map(|i| i.total).sum();
        prop_assert_eq!(totals, s.principal + s.total_interest + s.total_fee);
        let principal_sum: Decimal = s.installments.iter().map(|i| i.principal).sum();
        prop_assert_eq!(principal_sum, t.principal);
        prop_assert_eq!(s.principal, t.principal);
        let mut previous_balance = s.principal;
        for (k, line) in s.installments.iter().enumerate() {
            prop_assert_eq!(line.seq as usize, k + 1);
            for amount in [
                line.principal,
                line.interest,
                line.fee,
                line.total,
                line.balance_after,
            ] {
                prop_assert!(amount >= Decimal::ZERO, "negative amount in {:?}", line);
                prop_assert_eq!(amount.scale(), digits);
            }
            prop_assert!(line.total > Decimal::ZERO);
            prop_assert_eq!(line.total, line.principal + line.interest + line.fee);
            prop_assert!(line.balance_after <= previous_balance);
            prop_assert_eq!(line.balance_after, previous_balance - line.principal);
            previous_balance = line.balance_after;
            let nominal = nominal_due_date(t.first_due, t.frequency, line.seq);
            prop_assert_eq!(
                Some(line.due_date),
                nominal.map(|d| cal.adjust(d, t.business_day))
            );
            if t.business_day != BusinessDayRule::None {
                prop_assert!(cal.is_business_day(line.due_date));
            }
        }
        prop_assert_eq!(previous_balance, Decimal::ZERO);
        // Nominal dates strictly increase; adjusted ones never go back, and only weekly
        // schedules across a long holiday block may put two on one day.
        let nominal: Vec<_> = (1..=t.installments)
            .map(|seq| nominal_due_date(t.first_due, t.frequency, seq))
            .collect();
        prop_assert!(nominal.windows(2).all(|w| w[0] < w[1]));
        let may_coincide = t.frequency == Frequency::Weekly && !cal.holidays.is_empty();
        for w in s.installments.windows(2) {
            if may_coincide {
                prop_assert!(w[0].due_date <= w[1].due_date);
            } else {
                prop_assert!(
                    w[0].due_date < w[1].due_date,
                    "{} !< {}",
                    w[0].due_date,
                    w[1].due_date
                );
            }
        }
        if t.method == Method::FlatFee {
            let fee = s.installments[0].fee;
            prop_assert!(s.installments.iter().all(|i| i.fee == fee));
            prop_assert_eq!(s.total_fee, fee * Decimal::from(t.installments));
        } else {
            prop_assert!(s.total_fee.is_zero());
        }
        if t.method == Method::InterestFree || t.method == Method::FlatFee {
            prop_assert!(s.total_interest.is_zero());
        }
        Ok(())
    }

    fn any_terms(tiny: bool) -> impl Strategy<Value = (Terms, bool)> {
        let currency = prop_oneof![Just("CNY"), Just("JPY"), Just("KWD")];
        let method = prop_oneof![
            Just(Method::InterestFree),
            Just(Method::FlatFee),
            Just(Method::Annuity),
            Just(Method::EqualPrincipal)
        ];
        let rounding = prop_oneof![
            Just(RoundingMode::HalfUp),
            Just(RoundingMode::HalfEven),
            Just(RoundingMode::Down),
            Just(RoundingMode::Up)
        ];
        let remainder = prop_oneof![
            Just(RemainderPlacement::First),
            Just(RemainderPlacement::Last)
        ];
        let frequency = prop_oneof![
            Just(Frequency::Monthly),
            Just(Frequency::Biweekly),
            Just(Frequency::Weekly)
        ];
        let rule = prop_oneof![
            Just(BusinessDayRule::None),
            Just(BusinessDayRule::Following),
            Just(BusinessDayRule::Preceding),
            Just(BusinessDayRule::ModifiedFollowing)
        ];
        // Rates 0 to 0.36 with up to 8 places; zero often, since it is a special case.
        let rate = prop_oneof![1 => Just(0i64), 4 => 0i64..=36_000_000];
        // Principal in minor units: log-uniform so small and large loans are both tried.
        let magnitude = (0u32..=11).prop_flat_map(|e| 10i64.pow(e)..10i64.pow(e + 1));
        (
            (currency, 1u32..=120, method, rounding, remainder),
            (frequency, rule, rate, magnitude, 0i64..1500, any::<bool>()),
        )
            .prop_map(
                move |(
                    (code, n, method, rounding, remainder),
                    (frequency, rule, rate, extra, day, china),
                )| {
                    let currency = cur(code);
                    let digits = currency.minor_digits();
                    // Sane loans carry at least 10 000 minor units per installment (100.00 CNY,
                    // 10 000 JPY, 10.000 KWD). Below that an annuity at 36 % over 120 months can
                    // legitimately be refused: interest rounding errors compound by (1+r)^k, up
                    // to u x ((1+r)^(n-1) - 1) / r (~1 100 minor units) on the last installment,
                    // which a small loan's last balance cannot absorb. Tiny loans range from the
                    // one-unit-each floor up to that bound.
                    let floor = i64::from(n) * 10_000;
                    let minor = if tiny {
                        i64::from(n) + extra % floor
                    } else {
                        floor + extra
                    };
                    let rate = Decimal::new(rate, 8);
                    let (annual_rate, fee_rate) = match method {
                        Method::InterestFree => (Decimal::ZERO, Decimal::ZERO),
                        Method::FlatFee => (Decimal::ZERO, rate / Decimal::from(10)),
                        Method::Annuity | Method::EqualPrincipal => (rate, Decimal::ZERO),
                    };
                    let terms = Terms {
                        currency,
                        principal: Decimal::new(minor, digits),
                        installments: n,
                        method,
                        annual_rate,
                        fee_rate,
                        first_due: d(2025, 1, 1) + chrono::Duration::days(day),
                        frequency,
                        rounding,
                        remainder,
                        business_day: rule,
                    };
                    (terms, china)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn sane_terms_always_give_an_exact_schedule((t, china) in any_terms(false)) {
            let cal = if china { cn2026() } else { HolidayCalendar::default() };
            match generate(&t, &cal) {
                Ok(s) => assert_invariants(&t, &s, &cal)?,
                Err(e) => prop_assert!(false, "{:?} failed: {}", t, e),
            }
        }

        #[test]
        fn tiny_terms_are_exact_or_refused((t, china) in any_terms(true)) {
            let cal = if china { cn2026() } else { HolidayCalendar::default() };
            match generate(&t, &cal) {
                Ok(s) => assert_invariants(&t, &s, &cal)?,
                Err(e) => prop_assert!(
                    matches!(e, ScheduleError::NegativePart { .. } | ScheduleError::EmptyInstallment { .. }),
                    "{:?}: unexpected {}", t, e
                ),
            }
        }

        /// The corner where rounding errors compound most: long monthly annuities at up to
        /// 36 % with a principal near the sane floor, in every rounding mode.
        #[test]
        fn annuity_worst_corner_stays_exact(
            n in 100u32..=120,
            rate in 30_000_000i64..=36_000_000,
            extra in 0i64..200_000,
            rounding in prop_oneof![
                Just(RoundingMode::HalfUp),
                Just(RoundingMode::HalfEven),
                Just(RoundingMode::Down),
                Just(RoundingMode::Up)
            ],
        ) {
            let mut t = terms("CNY", "1", n, Method::Annuity);
            t.principal = Decimal::new(i64::from(n) * 10_000 + extra, 2);
            t.annual_rate = Decimal::new(rate, 8);
            t.rounding = rounding;
            let cal = HolidayCalendar::default();
            match generate(&t, &cal) {
                Ok(s) => assert_invariants(&t, &s, &cal)?,
                Err(e) => prop_assert!(false, "{:?} failed: {}", t, e),
            }
        }

        #[test]
        fn monthly_dates_keep_the_day_of_month(
            day in 0i64..3000,
            seq in 1u32..=600,
        ) {
            let first = d(2024, 1, 1) + chrono::Duration::days(day);
            let due = nominal_due_date(first, Frequency::Monthly, seq).expect("in range");
            let months = i64::from(due.year() - first.year()) * 12
                + i64::from(due.month()) - i64::from(first.month());
            prop_assert_eq!(months, i64::from(seq - 1));
            // Either the same day, or the month is shorter and it is the month's last day.
            prop_assert!(
                due.day() == first.day()
                    || (due.day() < first.day() && due.succ_opt().map(|n| n.month()) != Some(due.month()))
            );
        }
    }
}
