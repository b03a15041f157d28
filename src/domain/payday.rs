//! Paydays: when a customer's money usually arrives, learned from their own funds checks,
//! and where a retry after a short balance goes once it is known. Pure: the engine reads
//! the history, this decides. Days are the customer's local calendar dates, so daylight
//! saving changes cannot move a payday.
//!
//! Learning (see docs/retry.md): walk the checks in time order; a sufficient check that
//! follows a short one (at most [`MAX_GAP_DAYS`] earlier) is an *arrival*, dated on the
//! day of the sufficient check; the first arrival of each calendar month counts. Each
//! arrival supports the patterns it fits (its day of the month, the last day of the month,
//! the last business day Monday to Friday, its weekday), and the pattern with the most
//! support wins when that is at least `min_observations` months and more than half of the
//! months with an arrival. Ties go to the day of the month, then the last business day,
//! then the weekday (the most specific first), then the smallest value.

use super::calendar::HolidayCalendar;
use chrono::{Datelike, Days, NaiveDate, Weekday};
use std::collections::BTreeMap;
use std::fmt;

/// A short check this long before a sufficient one no longer says when money arrived.
pub const MAX_GAP_DAYS: i64 = 31;

/// One funds check: the customer's local date and whether the balance was enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FundsObservation {
    pub date: NaiveDate,
    pub sufficient: bool,
}

/// A rule for the day money arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payday {
    /// This day of every month (1 to 31); in a shorter month, its last day (the 31st in
    /// a 30-day month is the 30th). `DayOfMonth(31)` is "the last day of the month".
    DayOfMonth(u32),
    /// The month's last Monday-to-Friday day.
    LastBusinessDay,
    /// This weekday, every week (weekly wages).
    Weekly(Weekday),
}

/// The last day of `date`'s month.
fn month_end(date: NaiveDate) -> NaiveDate {
    let first_next = if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    };
    first_next
        .and_then(|d| d.pred_opt())
        .unwrap_or(NaiveDate::MAX)
}

fn last_business_day(date: NaiveDate) -> NaiveDate {
    last_business_day_in(date, &HolidayCalendar::default())
}

/// The last business day of `date`'s month in `calendar` (weekends, holidays and make-up
/// working days); the month's first day if it has none at all.
fn last_business_day_in(date: NaiveDate, calendar: &HolidayCalendar) -> NaiveDate {
    let mut d = month_end(date);
    while !calendar.is_business_day(d) && d.day() > 1 {
        d = d.pred_opt().unwrap_or(d);
    }
    d
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

impl Payday {
    /// The payday in `date`'s month (for `Weekly`, `date` itself if it is that weekday).
    fn in_month_of(self, date: NaiveDate) -> Option<NaiveDate> {
        match self {
            Payday::DayOfMonth(day) => {
                let end = month_end(date);
                Some(if day >= end.day() {
                    end
                } else {
                    end.with_day(day.max(1))?
                })
            }
            Payday::LastBusinessDay => Some(last_business_day(date)),
            Payday::Weekly(w) => (date.weekday() == w).then_some(date),
        }
    }

    /// Whether money arriving on `date` fits this rule (business days: Monday to Friday).
    pub fn matches(self, date: NaiveDate) -> bool {
        self.in_month_of(date) == Some(date)
    }

    /// Whether `date` is a payday of this rule when business days are `calendar`'s: the
    /// last business day of a month whose last Friday is a public holiday is the day
    /// before it. The other rules do not depend on the calendar.
    pub fn matches_in(self, date: NaiveDate, calendar: &HolidayCalendar) -> bool {
        match self {
            Payday::LastBusinessDay => last_business_day_in(date, calendar) == date,
            other => other.matches(date),
        }
    }

    /// The first payday on or after `from` (business days: Monday to Friday).
    pub fn next_on_or_after(self, from: NaiveDate) -> Option<NaiveDate> {
        self.next_on_or_after_in(from, &HolidayCalendar::default())
    }

    /// The first payday on or after `from` when business days are `calendar`'s.
    pub fn next_on_or_after_in(
        self,
        from: NaiveDate,
        calendar: &HolidayCalendar,
    ) -> Option<NaiveDate> {
        // Every rule recurs within two months.
        let mut d = from;
        for _ in 0..62 {
            if self.matches_in(d, calendar) {
                return Some(d);
            }
            d = d.succ_opt()?;
        }
        None
    }

    /// In words: "the 10th", "the last day of the month", "a Friday".
    pub fn describe(self) -> String {
        match self {
            Payday::DayOfMonth(31) => "the last day of the month".into(),
            Payday::DayOfMonth(d) => format!("the {}", ordinal(d)),
            Payday::LastBusinessDay => "the last business day of the month".into(),
            Payday::Weekly(w) => format!("a {}", weekday_name(w)),
        }
    }

    /// Rank for ties: the most specific rule first.
    fn rank(self) -> (u8, u32) {
        match self {
            Payday::DayOfMonth(d) => (0, d),
            Payday::LastBusinessDay => (1, 0),
            Payday::Weekly(w) => (2, w.num_days_from_monday()),
        }
    }
}

fn weekday_name(w: Weekday) -> &'static str {
    match w {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// The text form used in configuration and the sandbox's income schedules:
/// `monthly:10`, `monthly:last`, `monthly:last-business-day`, `weekly:fri`.
impl fmt::Display for Payday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payday::DayOfMonth(31) => f.write_str("monthly:last"),
            Payday::DayOfMonth(d) => write!(f, "monthly:{d}"),
            Payday::LastBusinessDay => f.write_str("monthly:last-business-day"),
            Payday::Weekly(w) => write!(f, "weekly:{}", w.to_string().to_lowercase()),
        }
    }
}

impl std::str::FromStr for Payday {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a payday (expected monthly:1 to monthly:31, monthly:last, \
                 monthly:last-business-day or weekly:mon to weekly:sun)"
            )
        };
        let (kind, value) = s.trim().split_once(':').ok_or_else(bad)?;
        match (kind, value) {
            ("monthly", "last") => Ok(Payday::DayOfMonth(31)),
            ("monthly", "last-business-day") => Ok(Payday::LastBusinessDay),
            ("monthly", d) => match d.parse::<u32>() {
                Ok(d @ 1..=31) => Ok(Payday::DayOfMonth(d)),
                _ => Err(bad()),
            },
            ("weekly", w) => w.parse::<Weekday>().map(Payday::Weekly).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// A payday learned from a customer's funds checks, with the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnedPayday {
    pub payday: Payday,
    /// Months whose arrival fits the payday.
    pub support: u32,
    /// Months with an arrival at all.
    pub months: u32,
}

impl LearnedPayday {
    /// The evidence in words an auditor can read: "funds arrived on the 10th in 3 of the
    /// last 4 months with a short balance".
    pub fn evidence(&self) -> String {
        format!(
            "funds arrived on {} in {} of the last {} months with a short balance",
            self.payday.describe(),
            self.support,
            self.months
        )
    }
}

/// The arrivals in `observations`: one date per calendar month, the first.
pub fn arrivals(observations: &[FundsObservation]) -> Vec<NaiveDate> {
    let mut sorted = observations.to_vec();
    // Short before sufficient on one day: the order does not depend on the input's.
    sorted.sort_by_key(|o| (o.date, o.sufficient));
    let mut by_month: BTreeMap<(i32, u32), NaiveDate> = BTreeMap::new();
    let mut last_short: Option<NaiveDate> = None;
    for o in sorted {
        if !o.sufficient {
            last_short = Some(o.date);
            continue;
        }
        if let Some(short) = last_short.take()
            && (o.date - short).num_days() <= MAX_GAP_DAYS
        {
            by_month
                .entry((o.date.year(), o.date.month()))
                .or_insert(o.date);
        }
    }
    by_month.into_values().collect()
}

/// When money usually arrives, or `None` when the history does not say so with at least
/// `min_observations` months of support (and a majority of the months with an arrival).
/// Business days: Monday to Friday.
pub fn learn(observations: &[FundsObservation], min_observations: u32) -> Option<LearnedPayday> {
    learn_in(observations, min_observations, &HolidayCalendar::default())
}

/// [`learn`] when business days are `calendar`'s: an arrival on the Thursday before a
/// Friday holiday at the month's end is a last-business-day salary, and one on a Saturday
/// made a working day can be too.
pub fn learn_in(
    observations: &[FundsObservation],
    min_observations: u32,
    calendar: &HolidayCalendar,
) -> Option<LearnedPayday> {
    let arrivals = arrivals(observations);
    let months = arrivals.len() as u32;
    if months < min_observations.max(1) {
        return None;
    }
    let mut candidates: Vec<Payday> = Vec::new();
    for a in &arrivals {
        candidates.push(Payday::DayOfMonth(a.day()));
        if *a == month_end(*a) {
            candidates.push(Payday::DayOfMonth(31));
        }
        if *a == last_business_day_in(*a, calendar) {
            candidates.push(Payday::LastBusinessDay);
        }
        candidates.push(Payday::Weekly(a.weekday()));
    }
    candidates.sort_by_key(|p| p.rank());
    candidates.dedup();
    let best = candidates
        .into_iter()
        .map(|p| {
            let support = arrivals
                .iter()
                .filter(|a| p.matches_in(**a, calendar))
                .count() as u32;
            (p, support)
        })
        // Most support first; among equals the earliest rank (sorted above) wins.
        .fold(None::<(Payday, u32)>, |best, (p, s)| match best {
            Some((_, bs)) if bs >= s => best,
            _ => Some((p, s)),
        })?;
    let (payday, support) = best;
    (support >= min_observations && support * 2 > months).then_some(LearnedPayday {
        payday,
        support,
        months,
    })
}

/// The retry date after a short balance: the first payday on or after `earliest` (the
/// fixed policy's minimum spacing from now), if it is no later than `latest` (the end of
/// the policy's retry window). `None`: keep the fixed offsets.
pub fn place_retry(payday: Payday, earliest: NaiveDate, latest: NaiveDate) -> Option<NaiveDate> {
    place_retry_in(payday, earliest, latest, &HolidayCalendar::default())
}

/// [`place_retry`] when business days are `calendar`'s.
pub fn place_retry_in(
    payday: Payday,
    earliest: NaiveDate,
    latest: NaiveDate,
    calendar: &HolidayCalendar,
) -> Option<NaiveDate> {
    if latest < earliest {
        return None;
    }
    payday
        .next_on_or_after_in(earliest, calendar)
        .filter(|d| *d <= latest)
}

/// `date` plus `days`, saturating.
pub fn add_days(date: NaiveDate, days: u32) -> NaiveDate {
    date.checked_add_days(Days::new(u64::from(days)))
        .unwrap_or(NaiveDate::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn short(date: NaiveDate) -> FundsObservation {
        FundsObservation {
            date,
            sufficient: false,
        }
    }

    fn enough(date: NaiveDate) -> FundsObservation {
        FundsObservation {
            date,
            sufficient: true,
        }
    }

    /// Due on the 5th, retried on the 6th and 8th (short), sufficient on the 10th.
    fn salary_on_the_10th(months: &[(i32, u32)]) -> Vec<FundsObservation> {
        months
            .iter()
            .flat_map(|(y, m)| {
                [
                    short(d(*y, *m, 5)),
                    short(d(*y, *m, 6)),
                    short(d(*y, *m, 8)),
                    enough(d(*y, *m, 10)),
                ]
            })
            .collect()
    }

    #[test]
    fn a_salary_on_the_10th_is_learned_from_three_months() {
        let obs = salary_on_the_10th(&[(2026, 8), (2026, 9), (2026, 10)]);
        let learned = learn(&obs, 3).unwrap();
        assert_eq!(learned.payday, Payday::DayOfMonth(10));
        assert_eq!((learned.support, learned.months), (3, 3));
        assert_eq!(
            learned.evidence(),
            "funds arrived on the 10th in 3 of the last 3 months with a short balance"
        );
        // Two months are not enough at min_observations = 3.
        assert_eq!(learn(&obs[..8], 3), None);
        // One odd month out of four still leaves a majority.
        let mut obs = obs;
        obs.extend([short(d(2026, 11, 5)), enough(d(2026, 11, 12))]);
        let learned = learn(&obs, 3).unwrap();
        assert_eq!(learned.payday, Payday::DayOfMonth(10));
        assert_eq!((learned.support, learned.months), (3, 4));
    }

    #[test]
    fn a_sufficient_check_without_a_short_one_before_says_nothing() {
        let obs: Vec<_> = (1..=6).map(|m| enough(d(2026, m, 10))).collect();
        assert_eq!(learn(&obs, 3), None);
        // A short check long before does not date an arrival either.
        let obs = [short(d(2026, 1, 1)), enough(d(2026, 3, 10))];
        assert!(arrivals(&obs).is_empty());
    }

    #[test]
    fn the_end_of_month_salary_is_the_last_day_whatever_the_month_length() {
        // 31 Jan, 28 Feb, 31 Mar, 30 Apr.
        let obs: Vec<_> = [
            d(2027, 1, 31),
            d(2027, 2, 28),
            d(2027, 3, 31),
            d(2027, 4, 30),
        ]
        .into_iter()
        .flat_map(|a| [short(a - chrono::Duration::days(2)), enough(a)])
        .collect();
        let learned = learn(&obs, 3).unwrap();
        assert_eq!(learned.payday, Payday::DayOfMonth(31));
        assert_eq!(learned.support, 4);
        assert_eq!(learned.payday.describe(), "the last day of the month");
        // The 31st in a 30-day month is its last day.
        assert_eq!(
            Payday::DayOfMonth(31).next_on_or_after(d(2027, 6, 2)),
            Some(d(2027, 6, 30))
        );
        assert_eq!(
            Payday::DayOfMonth(30).next_on_or_after(d(2028, 2, 1)),
            Some(d(2028, 2, 29))
        );
    }

    #[test]
    fn the_last_business_day_skips_weekends() {
        // Last business days: Fri 29 Jan 2027, Fri 26 Feb, Wed 31 Mar, Fri 30 Apr.
        let obs: Vec<_> = [
            d(2027, 1, 29),
            d(2027, 2, 26),
            d(2027, 3, 31),
            d(2027, 4, 30),
        ]
        .into_iter()
        .flat_map(|a| [short(a - chrono::Duration::days(3)), enough(a)])
        .collect();
        let learned = learn(&obs, 3).unwrap();
        assert_eq!(learned.payday, Payday::LastBusinessDay);
        assert_eq!(learned.support, 4);
        assert_eq!(
            Payday::LastBusinessDay.next_on_or_after(d(2027, 7, 1)),
            Some(d(2027, 7, 30)),
            "31 July 2027 is a Saturday"
        );
    }

    #[test]
    fn the_last_business_day_of_a_calendar_skips_its_holidays() {
        // 31 Dec 2027 is a Friday; a calendar with it as a holiday moves the payday to
        // Thursday the 30th, and a make-up Saturday (as in China) can be the last one.
        let cal = HolidayCalendar::from_toml(
            "name = \"test\"\nholidays = [\"2027-12-31\"]\nworking_days = [\"2027-07-31\"]",
        )
        .unwrap();
        let p = Payday::LastBusinessDay;
        assert!(p.matches(d(2027, 12, 31)));
        assert!(!p.matches_in(d(2027, 12, 31), &cal));
        assert!(p.matches_in(d(2027, 12, 30), &cal));
        assert!(
            p.matches_in(d(2027, 7, 31), &cal),
            "a make-up working Saturday"
        );
        assert!(!p.matches_in(d(2027, 7, 30), &cal));
        // Other rules do not care.
        assert!(Payday::DayOfMonth(31).matches_in(d(2027, 12, 31), &cal));
    }

    #[test]
    fn the_learner_and_the_retry_use_the_calendars_business_days() {
        // A salary on the last business day of a calendar in which 30 Apr 2027 (a
        // Friday) is a holiday and 31 Jul 2027 (a Saturday) a working day: it came on
        // Fri 26 Feb, Wed 31 Mar, Thu 29 Apr, Sat 31 Jul. Read with weekends only, two of
        // the four fit (Feb, Mar) and nothing is learned; with the calendar, all four.
        let cal = HolidayCalendar::from_toml(
            "name = \"test\"\nholidays = [\"2027-04-30\"]\nworking_days = [\"2027-07-31\"]",
        )
        .unwrap();
        let obs: Vec<_> = [
            d(2027, 2, 26),
            d(2027, 3, 31),
            d(2027, 4, 29),
            d(2027, 7, 31),
        ]
        .into_iter()
        .flat_map(|a| [short(a - chrono::Duration::days(3)), enough(a)])
        .collect();
        assert_eq!(learn(&obs, 3), None);
        let learned = learn_in(&obs, 3, &cal).unwrap();
        assert_eq!(learned.payday, Payday::LastBusinessDay);
        assert_eq!((learned.support, learned.months), (4, 4));
        // The retry goes on the calendar's last business day: Thu 29 Apr, not the
        // holiday; weekends-only would say Fri 30 Apr.
        assert_eq!(
            place_retry(Payday::LastBusinessDay, d(2027, 4, 20), d(2027, 5, 5)),
            Some(d(2027, 4, 30))
        );
        assert_eq!(
            place_retry_in(Payday::LastBusinessDay, d(2027, 4, 20), d(2027, 5, 5), &cal),
            Some(d(2027, 4, 29))
        );
    }

    #[test]
    fn weekly_wages_on_friday_are_a_weekday() {
        // Fridays in different weeks of the month.
        let obs: Vec<_> = [d(2027, 1, 8), d(2027, 2, 12), d(2027, 3, 5), d(2027, 4, 16)]
            .into_iter()
            .flat_map(|a| [short(a - chrono::Duration::days(1)), enough(a)])
            .collect();
        let learned = learn(&obs, 3).unwrap();
        assert_eq!(learned.payday, Payday::Weekly(Weekday::Fri));
        assert_eq!(
            learned.evidence(),
            "funds arrived on a Friday in 4 of the last 4 months with a short balance"
        );
    }

    #[test]
    fn irregular_arrivals_give_no_payday() {
        let obs: Vec<_> = [d(2027, 1, 3), d(2027, 2, 17), d(2027, 3, 9), d(2027, 4, 25)]
            .into_iter()
            .flat_map(|a| [short(a - chrono::Duration::days(1)), enough(a)])
            .collect();
        assert_eq!(learn(&obs, 3), None);
    }

    #[test]
    fn placement_is_the_next_payday_within_the_window() {
        let p = Payday::DayOfMonth(10);
        assert_eq!(
            place_retry(p, d(2027, 1, 6), d(2027, 1, 12)),
            Some(d(2027, 1, 10))
        );
        assert_eq!(place_retry(p, d(2027, 1, 11), d(2027, 1, 20)), None);
        assert_eq!(
            place_retry(p, d(2027, 1, 10), d(2027, 1, 10)),
            Some(d(2027, 1, 10))
        );
        assert_eq!(place_retry(p, d(2027, 1, 12), d(2027, 1, 11)), None);
    }

    #[test]
    fn paydays_read_and_write_their_text_form() {
        for s in [
            "monthly:1",
            "monthly:10",
            "monthly:last",
            "monthly:last-business-day",
            "weekly:fri",
        ] {
            let p: Payday = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert_eq!("monthly:31".parse::<Payday>(), Ok(Payday::DayOfMonth(31)));
        for bad in ["monthly:0", "monthly:32", "weekly:funday", "10", "daily:1"] {
            let e = bad.parse::<Payday>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn learning_is_deterministic_and_placement_stays_in_the_window(
            raw in proptest::collection::vec((0_i64..400, proptest::bool::ANY), 0..60),
            min_obs in 2_u32..5,
            earliest_off in 0_i64..400,
            window in 0_u32..40,
        ) {
            let base = d(2026, 1, 1);
            let obs: Vec<_> = raw
                .iter()
                .map(|(off, ok)| FundsObservation { date: base + chrono::Duration::days(*off), sufficient: *ok })
                .collect();
            let learned = learn(&obs, min_obs);
            // The same history in another order learns the same.
            let mut reversed = obs.clone();
            reversed.reverse();
            proptest::prop_assert_eq!(learned, learn(&reversed, min_obs));
            if let Some(l) = learned {
                proptest::prop_assert!(l.support >= min_obs && l.support * 2 > l.months);
                let earliest = base + chrono::Duration::days(earliest_off);
                let latest = add_days(earliest, window);
                if let Some(at) = place_retry(l.payday, earliest, latest) {
                    proptest::prop_assert!(at >= earliest && at <= latest);
                    proptest::prop_assert!(l.payday.matches(at));
                }
            }
        }
    }
}
