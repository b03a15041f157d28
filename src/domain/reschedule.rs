//! Rescheduling what is left of an agreement, with the same arithmetic as an import
//! ([`schedule::generate_from`]): a payment holiday (the next N periods skipped: the
//! installments being moved fall N periods later, as many as before) or a new term (the
//! outstanding principal re-spread over N installments from the next one's period).
//!
//! The new installments keep the agreement's anchor (its first due date), so month ends
//! and 29 February follow the same clamping as the original schedule, and due dates get
//! the same business-day adjustment. Interest (annuity, equal principal) is computed on the
//! outstanding principal over the new periods; a holiday's skipped periods carry none. A
//! flat fee stays what it was per period (principal x fee rate of the original principal).
//! Money balances exactly: the new installments' principal is the moved installments'
//! principal, to the minor unit.

use super::calendar::HolidayCalendar;
use super::money::{Currency, Money};
use super::schedule::{self, Frequency, Method, ScheduleError, ScheduledInstallment, Terms};
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// The longest payment holiday, in periods (ten years of months).
pub const MAX_HOLIDAY_PERIODS: u32 = 120;

/// What the reschedule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Skip this many periods: the moved installments fall that many periods later.
    Holiday { periods: u32 },
    /// Re-spread the outstanding principal over this many installments.
    Term { installments: u32 },
}

/// Which period of the anchor a stored installment sequence number falls in: installment
/// `seq` (at or after `seq`) is due in period `period + (seq - self.seq)`. An imported
/// schedule is `{seq: 1, period: 1}`; each reschedule moves it to its first new installment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u32,
    pub period: u32,
}

impl Default for Anchor {
    fn default() -> Self {
        Anchor { seq: 1, period: 1 }
    }
}

impl Anchor {
    /// The period of installment `seq`; `None` before the anchor.
    pub fn period_of(&self, seq: u32) -> Option<u32> {
        seq.checked_sub(self.seq)?.checked_add(self.period)
    }
}

/// One installment being moved: not paid at all, nothing in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedInstallment {
    pub seq: u32,
    pub due_date: NaiveDate,
    pub principal: Decimal,
    pub total: Decimal,
}

/// The new installments replacing the moved ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescheduled {
    /// Numbered from the `next_seq` asked for.
    pub installments: Vec<ScheduledInstallment>,
    /// Where the schedule is anchored from now on.
    pub anchor: Anchor,
    pub principal: Decimal,
    pub total: Decimal,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RescheduleError {
    #[error("nothing to reschedule: no unpaid installment is left to move")]
    NothingToMove,
    #[error("a payment holiday must be 1 to {MAX_HOLIDAY_PERIODS} periods, got {0}")]
    BadHoliday(u32),
    #[error("the new term must be 1 to 600 installments, got {0}")]
    BadTerm(u32),
    #[error("installment {0} comes before the schedule's anchor; it cannot be moved")]
    BeforeAnchor(u32),
    #[error("the installments to move must follow one another (installment {0} is missing)")]
    NotContiguous(u32),
    #[error("the new schedule cannot be made: {0}")]
    Schedule(#[from] ScheduleError),
}

/// Recomputes the moved installments (in sequence order, contiguous) under `change`.
/// `terms` are the agreement's terms as imported (their principal is the original one,
/// used for the flat fee); `next_seq` numbers the new installments.
pub fn reschedule(
    terms: &Terms,
    anchor: Anchor,
    moved: &[MovedInstallment],
    change: Change,
    next_seq: u32,
    calendar: &HolidayCalendar,
) -> Result<Rescheduled, RescheduleError> {
    let first = moved.first().ok_or(RescheduleError::NothingToMove)?;
    for pair in moved.windows(2) {
        if pair[1].seq != pair[0].seq + 1 {
            return Err(RescheduleError::NotContiguous(pair[0].seq + 1));
        }
    }
    let first_period = anchor
        .period_of(first.seq)
        .ok_or(RescheduleError::BeforeAnchor(first.seq))?;
    let count = u32::try_from(moved.len()).map_err(|_| RescheduleError::BadTerm(u32::MAX))?;
    let (first_period, installments) = match change {
        Change::Holiday { periods } => {
            if !(1..=MAX_HOLIDAY_PERIODS).contains(&periods) {
                return Err(RescheduleError::BadHoliday(periods));
            }
            (first_period + periods, count)
        }
        Change::Term { installments } => {
            if !(1..=600).contains(&installments) {
                return Err(RescheduleError::BadTerm(installments));
            }
            (first_period, installments)
        }
    };
    let principal: Decimal = moved.iter().map(|m| m.principal).sum();
    let fee = schedule::flat_fee(terms);
    let mut new_terms = Terms {
        principal,
        installments,
        ..terms.clone()
    };
    if terms.method == Method::FlatFee {
        // The fee is per period of the original principal: split the principal alone, then
        // add the same fee to every new period.
        new_terms.method = Method::InterestFree;
        new_terms.fee_rate = Decimal::ZERO;
    }
    let generated = schedule::generate_from(&new_terms, calendar, first_period)?;
    let digits = terms.currency.minor_digits();
    let mut lines = generated.installments;
    for (i, line) in lines.iter_mut().enumerate() {
        line.seq = next_seq + i as u32;
        if terms.method == Method::FlatFee {
            line.fee = fee;
            line.total = line.principal + line.interest + fee;
            line.total.rescale(digits);
        }
    }
    let total: Decimal = lines.iter().map(|l| l.total).sum();
    if Money::from_decimal(total, terms.currency).is_err() {
        return Err(ScheduleError::AmountTooLarge(total).into());
    }
    Ok(Rescheduled {
        installments: lines,
        anchor: Anchor {
            seq: next_seq,
            period: first_period,
        },
        principal,
        total,
    })
}

/// The terms stored with an agreement (`agreements.terms_json`, written by import) as
/// domain terms, with the anchor a reschedule left there (`{"anchor": {"seq", "period"}}`;
/// the default when absent). `principal` and `currency` come from the agreement's row.
pub fn stored_terms(
    json: &str,
    currency: Currency,
    principal: Decimal,
) -> Result<(Terms, Anchor), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("stored terms are not JSON: {e}"))?;
    let text = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .ok_or_else(|| format!("stored terms lack {k:?}"))
    };
    fn choice<T: clap::ValueEnum>(name: &str, text: &str) -> Result<T, String> {
        T::from_str(text, true).map_err(|_| format!("stored terms: {name} {text:?} is unknown"))
    }
    let rate = |k: &str| -> Result<Decimal, String> {
        super::parse_rate(text(k)?).map_err(|e| format!("stored terms: {k}: {e}"))
    };
    let first_due = NaiveDate::parse_from_str(text("first_due")?, "%Y-%m-%d")
        .map_err(|_| "stored terms: first_due is not a date".to_string())?;
    let installments = v
        .get("installments")
        .and_then(|x| x.as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .ok_or("stored terms lack \"installments\"")?;
    let terms = Terms {
        currency,
        principal,
        installments,
        method: choice("method", text("method")?)?,
        annual_rate: rate("annual_rate")?,
        fee_rate: rate("fee_rate")?,
        first_due,
        frequency: choice::<Frequency>("frequency", text("frequency")?)?,
        rounding: choice("rounding", text("rounding")?)?,
        remainder: choice("remainder", text("remainder")?)?,
        business_day: choice("business_day", text("business_day")?)?,
    };
    let anchor = match v.get("anchor") {
        None | Some(serde_json::Value::Null) => Anchor::default(),
        Some(a) => {
            let field = |k: &str| {
                a.get(k)
                    .and_then(|x| x.as_u64())
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| format!("stored terms: anchor.{k} is not a number"))
            };
            Anchor {
                seq: field("seq")?,
                period: field("period")?,
            }
        }
    };
    Ok((terms, anchor))
}

/// The stored terms with the anchor a reschedule leaves (everything else unchanged).
pub fn with_anchor(json: &str, anchor: Anchor) -> Result<String, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("stored terms are not JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or("stored terms are not a JSON object")?;
    obj.insert(
        "anchor".into(),
        serde_json::json!({"seq": anchor.seq, "period": anchor.period}),
    );
    Ok(v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::calendar::BusinessDayRule;
    use crate::domain::schedule::{RemainderPlacement, RoundingMode, nominal_due_date};
    use chrono::Datelike;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn terms(principal: &str, n: u32, method: Method, first_due: NaiveDate) -> Terms {
        Terms {
            currency: Currency::parse("CNY").unwrap(),
            principal: dec(principal),
            installments: n,
            method,
            annual_rate: Decimal::ZERO,
            fee_rate: Decimal::ZERO,
            first_due,
            frequency: Frequency::Monthly,
            rounding: RoundingMode::HalfUp,
            remainder: RemainderPlacement::Last,
            business_day: BusinessDayRule::None,
        }
    }

    fn moved_from(s: &schedule::Schedule, paid: usize) -> Vec<MovedInstallment> {
        s.installments[paid..]
            .iter()
            .map(|l| MovedInstallment {
                seq: l.seq,
                due_date: l.due_date,
                principal: l.principal,
                total: l.total,
            })
            .collect()
    }

    #[test]
    fn a_holiday_moves_month_ends_without_drift() {
        // 1200.00 over 6 from 31 Jan 2028 (a leap year); two paid, two months' holiday.
        let t = terms("1200.00", 6, Method::InterestFree, d(2028, 1, 31));
        let cal = HolidayCalendar::default();
        let s = schedule::generate(&t, &cal).unwrap();
        let moved = moved_from(&s, 2);
        let r = reschedule(
            &t,
            Anchor::default(),
            &moved,
            Change::Holiday { periods: 2 },
            7,
            &cal,
        )
        .unwrap();
        let dates: Vec<_> = r.installments.iter().map(|l| l.due_date).collect();
        // Installments 3..6 (Mar 31, Apr 30, May 31, Jun 30) move to periods 5..8.
        assert_eq!(
            dates,
            vec![
                d(2028, 5, 31),
                d(2028, 6, 30),
                d(2028, 7, 31),
                d(2028, 8, 31)
            ]
        );
        assert_eq!(
            r.installments.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
        assert_eq!(r.total, dec("800.00"));
        assert_eq!(r.anchor, Anchor { seq: 7, period: 5 });
    }

    #[test]
    fn a_new_term_respreads_the_principal_and_recomputes_interest() {
        let mut t = terms("12000.00", 12, Method::Annuity, d(2026, 1, 29));
        t.annual_rate = dec("0.12");
        let cal = HolidayCalendar::default();
        let s = schedule::generate(&t, &cal).unwrap();
        let moved = moved_from(&s, 3);
        let principal: Decimal = moved.iter().map(|m| m.principal).sum();
        let r = reschedule(
            &t,
            Anchor::default(),
            &moved,
            Change::Term { installments: 24 },
            13,
            &cal,
        )
        .unwrap();
        assert_eq!(r.installments.len(), 24);
        assert_eq!(r.principal, principal);
        assert_eq!(
            r.installments.iter().map(|l| l.principal).sum::<Decimal>(),
            principal
        );
        // From the next installment's own period: 29 Apr 2026, then 29 May...
        assert_eq!(r.installments[0].due_date, d(2026, 4, 29));
        // ...and 29 Feb in 2028 (period 26 of the anchor).
        assert_eq!(r.installments[22].due_date, d(2028, 2, 29));
        assert_eq!(r.installments[23].due_date, d(2028, 3, 29));
        // Interest of the first new period: 9132.95 x 1 % = 91.33 (as in the original).
        assert_eq!(r.installments[0].interest, dec("91.33"));
    }

    #[test]
    fn a_flat_fee_stays_per_period() {
        let mut t = terms("1000.00", 4, Method::FlatFee, d(2026, 3, 15));
        t.fee_rate = dec("0.01");
        let cal = HolidayCalendar::default();
        let s = schedule::generate(&t, &cal).unwrap();
        let moved = moved_from(&s, 1);
        let r = reschedule(
            &t,
            Anchor::default(),
            &moved,
            Change::Term { installments: 5 },
            5,
            &cal,
        )
        .unwrap();
        assert!(r.installments.iter().all(|l| l.fee == dec("10.00")));
        assert_eq!(r.principal, dec("750.00"));
        assert_eq!(r.total, dec("800.00"));
    }

    #[test]
    fn bad_changes_are_refused() {
        let t = terms("100.00", 2, Method::InterestFree, d(2026, 3, 15));
        let cal = HolidayCalendar::default();
        let s = schedule::generate(&t, &cal).unwrap();
        let moved = moved_from(&s, 0);
        let a = Anchor::default();
        let hol = |n| reschedule(&t, a, &moved, Change::Holiday { periods: n }, 3, &cal);
        assert_eq!(hol(0), Err(RescheduleError::BadHoliday(0)));
        assert_eq!(hol(121), Err(RescheduleError::BadHoliday(121)));
        let term = |n| reschedule(&t, a, &moved, Change::Term { installments: n }, 3, &cal);
        assert_eq!(term(0), Err(RescheduleError::BadTerm(0)));
        assert_eq!(term(601), Err(RescheduleError::BadTerm(601)));
        // 100.00 over 400 periods is 0.25 each; over 600, 0.17 x 599 overshoots it.
        assert_eq!(term(400).unwrap().installments.len(), 400);
        assert!(matches!(term(600), Err(RescheduleError::Schedule(_))));
        assert_eq!(
            reschedule(&t, a, &[], Change::Term { installments: 2 }, 3, &cal),
            Err(RescheduleError::NothingToMove)
        );
        let gap = vec![moved[0].clone(), {
            let mut m = moved[1].clone();
            m.seq = 5;
            m
        }];
        assert_eq!(
            reschedule(&t, a, &gap, Change::Term { installments: 2 }, 6, &cal),
            Err(RescheduleError::NotContiguous(2))
        );
    }

    #[test]
    fn stored_terms_round_trip_with_the_anchor() {
        let json = r#"{"method":"annuity","installments":12,"annual_rate":"0.12","fee_rate":"0","first_due":"2026-01-31","frequency":"monthly","rounding":"half-up","remainder":"last","business_day":"following","calendar":"cn-2026"}"#;
        let cny = Currency::parse("CNY").unwrap();
        let (t, a) = stored_terms(json, cny, dec("12000.00")).unwrap();
        assert_eq!(a, Anchor::default());
        assert_eq!(t.method, Method::Annuity);
        assert_eq!(t.business_day, BusinessDayRule::Following);
        assert_eq!(t.annual_rate, dec("0.12"));
        let moved = with_anchor(json, Anchor { seq: 13, period: 6 }).unwrap();
        let (t2, a2) = stored_terms(&moved, cny, dec("12000.00")).unwrap();
        assert_eq!((t2, a2), (t, Anchor { seq: 13, period: 6 }));
        assert!(stored_terms("{}", cny, dec("1")).is_err());
    }

    fn any_case() -> impl Strategy<Value = (Terms, usize, Change, bool)> {
        let method = prop_oneof![
            Just(Method::InterestFree),
            Just(Method::FlatFee),
            Just(Method::Annuity),
            Just(Method::EqualPrincipal)
        ];
        let frequency = prop_oneof![
            3 => Just(Frequency::Monthly),
            1 => Just(Frequency::Biweekly),
            1 => Just(Frequency::Weekly)
        ];
        let rounding = prop_oneof![
            Just(RoundingMode::HalfUp),
            Just(RoundingMode::HalfEven),
            Just(RoundingMode::Down),
            Just(RoundingMode::Up)
        ];
        let rule = prop_oneof![
            Just(BusinessDayRule::None),
            Just(BusinessDayRule::Following),
            Just(BusinessDayRule::ModifiedFollowing)
        ];
        // First due dates crowd month ends and 29 February (2028 is a leap year).
        let first_due = prop_oneof![
            Just(d(2028, 2, 29)),
            Just(d(2028, 1, 31)),
            Just(d(2027, 12, 30)),
            Just(d(2026, 8, 31)),
            (0i64..730).prop_map(|k| d(2026, 1, 1) + chrono::Duration::days(k)),
        ];
        let change = prop_oneof![
            (1u32..=24).prop_map(|p| Change::Holiday { periods: p }),
            (1u32..=72).prop_map(|n| Change::Term { installments: n }),
        ];
        (
            (method, frequency, rounding, rule, first_due),
            (2u32..=48, 0i64..=36_000_000, 1i64..=100_000_000_000 / 1000),
            (0usize..48, change, any::<bool>()),
        )
            .prop_map(
                |(
                    (method, frequency, rounding, rule, first_due),
                    (n, rate, p),
                    (paid, change, china),
                )| {
                    let rate = Decimal::new(rate, 8);
                    let mut t = Terms {
                        currency: Currency::parse("CNY").unwrap(),
                        // At least 100.00 per installment, the floor of a sane loan.
                        principal: Decimal::new(i64::from(n) * 10_000 + p * 100, 2),
                        installments: n,
                        method,
                        annual_rate: Decimal::ZERO,
                        fee_rate: Decimal::ZERO,
                        first_due,
                        frequency,
                        rounding,
                        remainder: RemainderPlacement::Last,
                        business_day: rule,
                    };
                    match method {
                        Method::Annuity | Method::EqualPrincipal => t.annual_rate = rate,
                        Method::FlatFee => t.fee_rate = rate / Decimal::from(10),
                        Method::InterestFree => {}
                    }
                    let paid = paid % n as usize;
                    (t, paid, change, china)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the agreement, the holiday or the term: the new installments carry
        /// exactly the moved principal, each sums its parts, dates are the anchor's periods
        /// adjusted as at import (month ends clamped, 29 February kept in leap years), and a
        /// holiday on a schedule without interest asks for exactly what was outstanding.
        #[test]
        fn rescheduled_money_balances((t, paid, change, china) in any_case()) {
            let cal = if china {
                HolidayCalendar::from_toml(include_str!("../../config/calendars/cn-2026.toml")).unwrap()
            } else {
                HolidayCalendar::default()
            };
            let s = schedule::generate(&t, &cal)
                .map_err(|e| TestCaseError::fail(format!("{t:?}: {e}")))?;
            let moved = moved_from(&s, paid);
            let next_seq = t.installments + 1;
            let r = match reschedule(&t, Anchor::default(), &moved, change, next_seq, &cal) {
                Ok(r) => r,
                // A long annuity re-spread can be refused like any schedule; never money lost.
                Err(RescheduleError::Schedule(ScheduleError::NegativePart { .. })) => return Ok(()),
                Err(e) => return Err(TestCaseError::fail(format!("{t:?} {change:?}: {e}"))),
            };
            let moved_principal: Decimal = moved.iter().map(|m| m.principal).sum();
            let moved_total: Decimal = moved.iter().map(|m| m.total).sum();
            let new_principal: Decimal = r.installments.iter().map(|l| l.principal).sum();
            prop_assert_eq!(new_principal, moved_principal);
            prop_assert_eq!(r.principal, moved_principal);
            prop_assert_eq!(r.installments.iter().map(|l| l.total).sum::<Decimal>(), r.total);
            let first_period = paid as u32 + 1;
            let (periods, count) = match change {
                Change::Holiday { periods } => (periods, moved.len()),
                Change::Term { installments } => (0, installments as usize),
            };
            prop_assert_eq!(r.installments.len(), count);
            for (j, l) in r.installments.iter().enumerate() {
                prop_assert_eq!(l.total, l.principal + l.interest + l.fee);
                prop_assert!(l.total > Decimal::ZERO && l.principal >= Decimal::ZERO);
                prop_assert_eq!(l.seq, next_seq + j as u32);
                let nominal = nominal_due_date(t.first_due, t.frequency, first_period + periods + j as u32).unwrap();
                prop_assert_eq!(l.due_date, cal.adjust(nominal, t.business_day));
                if t.frequency == Frequency::Monthly && t.business_day == BusinessDayRule::None {
                    let last = nominal_due_date(nominal.with_day(1).unwrap(), Frequency::Monthly, 2).unwrap().pred_opt().unwrap();
                    prop_assert_eq!(l.due_date.day(), t.first_due.day().min(last.day()));
                }
            }
            let no_interest = t.method == Method::InterestFree || t.method == Method::FlatFee
                || t.annual_rate.is_zero();
            if let Change::Holiday { periods } = change {
                // Nothing comes due sooner than it was.
                for (old, new) in moved.iter().zip(&r.installments) {
                    prop_assert!(new.due_date >= old.due_date, "{:?} {:?}", old, new);
                }
                prop_assert!(periods >= 1);
                if no_interest {
                    prop_assert_eq!(r.total, moved_total);
                }
            }
            if no_interest && t.method == Method::FlatFee {
                let fee = schedule::flat_fee(&t);
                prop_assert_eq!(r.total, moved_principal + fee * Decimal::from(count as u32));
            }
        }
    }
}
