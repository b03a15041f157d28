//! The sandbox bank's income schedules: balances that rise on each customer's payday over
//! (simulated) time, so `repayd simulate` and the generated portfolio behave like
//! customers who are paid on the 10th, at month end, on the 1st (pensions) or every
//! Friday, and spend most of it within days.
//!
//! One schedule per sandbox account (`sandbox_income`): on every payday (a
//! [`Payday`] rule, on the account's local dates in `time_zone`) the balance rises by
//! `amount`; `spent_after_days` days later whatever is above `keep` has been spent (the
//! balance falls to `keep`, or stays lower if less is left). `spent_after_days = 0` means
//! the money stays. The bank applies the days since it last looked before every funds
//! check and debit on the account (lazily, so virtual time needs no ticking), in one
//! atomic update: `balance = min(balance + add, cap)`.

use crate::domain::HolidayCalendar;
use crate::domain::payday::Payday;
use chrono::{Days, NaiveDate};

/// One account's schedule, amounts in minor units of the account's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomeSchedule {
    pub payday: Payday,
    pub amount_minor: i64,
    pub keep_minor: i64,
    pub spent_after_days: u32,
}

/// What the days between two looks do to a balance: `min(balance + add, cap)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceEffect {
    pub add: i64,
    pub cap: Option<i64>,
}

impl BalanceEffect {
    pub fn apply(self, balance: i64) -> i64 {
        let b = balance.saturating_add(self.add);
        self.cap.map_or(b, |c| b.min(c))
    }
}

impl IncomeSchedule {
    /// The effect of the days after `from` up to and including `to` (spending first,
    /// then the day's income, on a day with both). Business days (for
    /// `monthly:last-business-day`) are `calendar`'s.
    pub fn effect(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        calendar: &HolidayCalendar,
    ) -> BalanceEffect {
        let mut effect = BalanceEffect { add: 0, cap: None };
        let mut day = from;
        while day < to {
            let Some(next) = day.succ_opt() else { break };
            day = next;
            if self.spent_after_days > 0
                && let Some(paid_on) =
                    day.checked_sub_days(Days::new(u64::from(self.spent_after_days)))
                && self.payday.matches_in(paid_on, calendar)
            {
                // min(b + add, cap), then min(., keep): the cap becomes min(cap, keep).
                effect.cap = Some(
                    effect
                        .cap
                        .map_or(self.keep_minor, |c| c.min(self.keep_minor)),
                );
            }
            if self.payday.matches_in(day, calendar) {
                effect.add = effect.add.saturating_add(self.amount_minor);
                effect.cap = effect.cap.map(|c| c.saturating_add(self.amount_minor));
            }
        }
        effect
    }
}

#[cfg(test)]
// Minor units written major_minor (`3_000_00` is 3,000.00).
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2027, m, day).unwrap()
    }

    /// Weekends only.
    fn none() -> HolidayCalendar {
        HolidayCalendar::default()
    }

    #[test]
    fn the_last_business_day_salary_comes_before_a_holiday() {
        let s = IncomeSchedule {
            payday: Payday::LastBusinessDay,
            amount_minor: 2_000_00,
            keep_minor: 0,
            spent_after_days: 0,
        };
        // Fri 31 Dec 2027 is a holiday in this calendar: paid on Thursday the 30th.
        let cal =
            HolidayCalendar::from_toml("name = \"test\"\nholidays = [\"2027-12-31\"]").unwrap();
        let dec = |day| NaiveDate::from_ymd_opt(2027, 12, day).unwrap();
        assert_eq!(s.effect(dec(28), dec(30), &cal).apply(0), 2_000_00);
        assert_eq!(s.effect(dec(28), dec(30), &none()).apply(0), 0);
        assert_eq!(s.effect(dec(28), dec(31), &none()).apply(0), 2_000_00);
        // Once a month either way.
        assert_eq!(s.effect(dec(1), dec(31), &cal).apply(0), 2_000_00);
    }

    #[test]
    fn the_salary_arrives_on_the_payday_and_is_spent_down_to_what_is_kept() {
        let s = IncomeSchedule {
            payday: Payday::DayOfMonth(10),
            amount_minor: 3_000_00,
            keep_minor: 50_00,
            spent_after_days: 3,
        };
        // Nothing before the 10th.
        assert_eq!(s.effect(d(1, 1), d(1, 9), &none()).apply(20_00), 20_00);
        // The 10th: + 3,000.00.
        assert_eq!(s.effect(d(1, 9), d(1, 10), &none()).apply(20_00), 3_020_00);
        // The 13th: spent down to 50.00.
        assert_eq!(s.effect(d(1, 10), d(1, 13), &none()).apply(3_020_00), 50_00);
        // Over both at once: the same.
        assert_eq!(s.effect(d(1, 1), d(1, 13), &none()).apply(20_00), 50_00);
        // A balance already below what is kept stays.
        assert_eq!(s.effect(d(1, 12), d(1, 13), &none()).apply(10_00), 10_00);
        // Two months in one look: the second month's salary is there.
        assert_eq!(
            s.effect(d(1, 1), d(2, 11), &none()).apply(0),
            50_00 + 3_000_00
        );
        // Money that stays.
        let stays = IncomeSchedule {
            spent_after_days: 0,
            ..s
        };
        assert_eq!(stays.effect(d(1, 1), d(3, 31), &none()).apply(0), 9_000_00);
    }

    #[test]
    fn weekly_wages_arrive_every_friday() {
        let s = IncomeSchedule {
            payday: Payday::Weekly(chrono::Weekday::Fri),
            amount_minor: 500_00,
            keep_minor: 0,
            spent_after_days: 2,
        };
        // Fri 8 Jan 2027: 500.00; Sun 10 Jan: spent.
        assert_eq!(s.effect(d(1, 7), d(1, 8), &none()).apply(0), 500_00);
        assert_eq!(s.effect(d(1, 8), d(1, 10), &none()).apply(500_00), 0);
        assert_eq!(s.effect(d(1, 7), d(1, 15), &none()).apply(0), 500_00);
    }

    proptest::proptest! {
        #[test]
        fn one_look_or_many_come_to_the_same_balance(
            start in 0_i64..1_000_00,
            cuts in proptest::collection::vec(1_u32..20, 1..10),
            day in 1_u32..=31,
            spent in 0_u32..6,
        ) {
            let s = IncomeSchedule {
                payday: Payday::DayOfMonth(day),
                amount_minor: 1_000_00,
                keep_minor: 30_00,
                spent_after_days: spent,
            };
            let from = d(1, 1);
            let mut at = from;
            let mut balance = start;
            for c in &cuts {
                let next = at + chrono::Duration::days(i64::from(*c));
                balance = s.effect(at, next, &none()).apply(balance);
                at = next;
            }
            proptest::prop_assert_eq!(balance, s.effect(from, at, &none()).apply(start));
        }
    }
}
