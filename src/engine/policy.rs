//! Debit and retry policy: the settings the engine works by, parsed once (and again on
//! reload) from the configuration.

use crate::config::Settings;
use crate::domain::Money;
use crate::domain::payday;
use crate::domain::worktime;
use chrono::{DateTime, Days, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

#[derive(Debug, Clone)]
pub struct DebitPolicy {
    /// Local time at which due installments are debited, in the customer's time zone.
    pub local_time: NaiveTime,
    pub horizon_days: u32,
    pub batch_size: u32,
    /// Requests at the gateway at once from one daemon's debit loop (it carries
    /// [`carried_per_permit`](super::permits::carried_per_permit) times as many attempts).
    pub max_in_flight: u32,
    pub lease: Duration,
    /// Prefix of every idempotency key, so two deployments sharing one gateway never
    /// collide.
    pub key_prefix: String,
    /// How often the gateway's returns feed is read.
    pub returns_poll: std::time::Duration,
    pub partial: PartialCollection,
}

/// Partial collection (`[debit.partial]`): how much to take from an account that is a
/// little short. Off by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialCollection {
    pub enabled: bool,
    /// Largest shortfall, in percent of what is owed, at which a partial debit is made.
    pub max_shortfall_percent: u32,
    /// Smallest partial debit, in the agreement's currency's major units.
    pub minimum: Decimal,
}

impl Default for PartialCollection {
    fn default() -> Self {
        Self {
            enabled: false,
            max_shortfall_percent: 50,
            minimum: Decimal::ONE,
        }
    }
}

impl PartialCollection {
    /// The amount (minor units) to debit when `owed` is asked and the bank says
    /// `available` could be debited now, or `None` for no partial debit: off, nothing
    /// available (or not said), the shortfall above the share, or below the minimum.
    pub fn amount_to_debit(&self, owed: &Money, available: Option<&Money>) -> Option<i64> {
        let available = available?;
        if !self.enabled
            || available.currency() != owed.currency()
            || available.minor() <= 0
            || available.minor() >= owed.minor()
        {
            return None;
        }
        let shortfall = i128::from(owed.minor() - available.minor());
        if shortfall * 100 > i128::from(owed.minor()) * i128::from(self.max_shortfall_percent) {
            return None;
        }
        // The minimum in minor units, rounded up: never below what was configured.
        let scale = Decimal::from(10_i64.pow(owed.currency().minor_digits()));
        let minimum = (self.minimum * scale).ceil();
        if Decimal::from(available.minor()) < minimum {
            return None;
        }
        Some(available.minor())
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// Days after the due date at which attempt 2, 3, ... run after a short balance.
    pub insufficient_funds_days: Vec<u32>,
    /// Days after a soft decline at which the next attempt runs.
    pub soft_decline_days: Vec<u32>,
    /// Waits before reconciling an unknown outcome, polling a pending one, or retrying a
    /// failed funds check; the last one repeats.
    pub technical_backoff: Vec<Duration>,
    /// Days between two attempts of one installment, at least (see `retry.min_spacing_days`).
    pub min_spacing_days: u32,
    pub payday: PaydayPolicy,
}

/// Payday-aware retries (`[retry.payday]`): off by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaydayPolicy {
    pub enabled: bool,
    pub min_observations: u32,
    pub lookback_months: u32,
    /// Latest payday-aware retry, in days after the due date (within the policy's window).
    pub window_days: u32,
}

impl Default for PaydayPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            min_observations: 3,
            lookback_months: 6,
            window_days: 0,
        }
    }
}

/// How every payday-aware retry reason starts (the failure notice looks for it).
pub const PAYDAY_REASON_PREFIX: &str = "payday: ";

/// A retry placed on the customer's payday: when, and why in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaydayRetry {
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// What ended an attempt that may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    InsufficientFunds,
    SoftDecline,
    /// A debit that succeeded came back (returns feed): tried again like after a soft
    /// decline (`soft_decline_days`' first entry, from today), whatever attempts were used
    /// before, since the return is news the earlier attempts did not know.
    Returned,
}

/// The next try after a refusal: which attempt, how many days out, counted from what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBase {
    DueDate,
    Today,
}

impl RetryPolicy {
    /// Days (and from when) for the attempt after `attempt_no` ended with a short balance,
    /// or `None` when no further attempt may be made.
    pub fn after_insufficient_funds(&self, attempt_no: u32) -> Option<(u32, RetryBase)> {
        if attempt_no >= self.max_attempts {
            return None;
        }
        self.insufficient_funds_days
            .get(attempt_no as usize - 1)
            .map(|d| (*d, RetryBase::DueDate))
    }

    pub fn after_soft_decline(&self, attempt_no: u32) -> Option<(u32, RetryBase)> {
        if attempt_no >= self.max_attempts {
            return None;
        }
        let idx = (attempt_no as usize - 1).min(self.soft_decline_days.len().checked_sub(1)?);
        self.soft_decline_days
            .get(idx)
            .map(|d| (*d, RetryBase::Today))
    }

    /// When the attempt after `attempt_no` runs, if the policy gives one: the policy's date
    /// at the local debit time, but never sooner than `min_spacing_days` local days after
    /// `now` (the outcome that caused the retry). So a retry is never in the past, two
    /// attempts of one installment never run on the same local day, and after downtime or
    /// a late import the rest of the schedule is re-spaced from now.
    pub fn next_attempt_at(
        &self,
        kind: RetryKind,
        attempt_no: u32,
        due_date: NaiveDate,
        now: DateTime<Utc>,
        tz: Tz,
        debit_time: NaiveTime,
    ) -> Option<DateTime<Utc>> {
        let (days, base) = match kind {
            RetryKind::InsufficientFunds => self.after_insufficient_funds(attempt_no)?,
            RetryKind::SoftDecline => self.after_soft_decline(attempt_no)?,
            RetryKind::Returned => (*self.soft_decline_days.first()?, RetryBase::Today),
        };
        let today = worktime::local_date(now, tz);
        let base_date = match base {
            RetryBase::DueDate => due_date,
            RetryBase::Today => today,
        };
        let by_policy = base_date.checked_add_days(Days::new(u64::from(days)))?;
        let earliest =
            today.checked_add_days(Days::new(u64::from(self.min_spacing_days.max(1))))?;
        Some(worktime::local_instant(
            by_policy.max(earliest),
            debit_time,
            tz,
        ))
    }

    /// The retry after a short balance on attempt `attempt_no`, moved to the customer's
    /// learned payday when that falls between the fixed policy's earliest allowed day
    /// (`min_spacing_days` from now) and `payday.window_days` after the due date; `None`
    /// when payday-aware retries are off, no payday was learned, no further attempt may be
    /// made, or the payday falls outside the window (the fixed offsets then hold).
    #[allow(clippy::too_many_arguments)]
    /// Business days are `calendar`'s (the configured holiday calendar; weekends only
    /// without one): a last-business-day payday is its last business day.
    #[allow(clippy::too_many_arguments)]
    pub fn payday_retry_at(
        &self,
        learned: Option<&payday::LearnedPayday>,
        attempt_no: u32,
        due_date: NaiveDate,
        now: DateTime<Utc>,
        tz: Tz,
        debit_time: NaiveTime,
        calendar: &crate::domain::HolidayCalendar,
    ) -> Option<PaydayRetry> {
        let learned = learned.filter(|_| self.payday.enabled)?;
        let fixed = self.next_attempt_at(
            RetryKind::InsufficientFunds,
            attempt_no,
            due_date,
            now,
            tz,
            debit_time,
        )?;
        let today = worktime::local_date(now, tz);
        let earliest = payday::add_days(today, self.min_spacing_days.max(1));
        let latest = payday::add_days(due_date, self.payday.window_days);
        let date = payday::place_retry_in(learned.payday, earliest, latest, calendar)?;
        let fixed_date = worktime::local_date(fixed, tz);
        let fixed_words = if fixed_date == date {
            "the same day as the fixed offset".to_string()
        } else {
            format!(
                "instead of {} (fixed offset)",
                fixed_date.format("%a %-d %b %Y")
            )
        };
        Some(PaydayRetry {
            at: worktime::local_instant(date, debit_time, tz),
            reason: format!(
                "{PAYDAY_REASON_PREFIX}{}; retry on {}, {}",
                learned.evidence(),
                date.format("%a %-d %b %Y"),
                fixed_words
            ),
        })
    }

    /// Wait before the `count`-th technical retry (0-based); the last entry repeats.
    pub fn technical_wait(&self, count: u32) -> Duration {
        let idx = (count as usize).min(self.technical_backoff.len().saturating_sub(1));
        self.technical_backoff
            .get(idx)
            .copied()
            .unwrap_or_else(|| Duration::minutes(5))
    }

    /// Whether technical retries of a funds check are used up.
    pub fn technical_exhausted(&self, count: u32) -> bool {
        count as usize >= self.technical_backoff.len()
    }
}

/// When customers hear from us before a due date, and when they never do.
#[derive(Debug, Clone)]
pub struct ReminderPolicy {
    /// Days before the due date at which an `upcoming` reminder goes out.
    pub offsets_days: Vec<u32>,
    /// Local time of day for pre-due reminders.
    pub local_time: NaiveTime,
    /// No email in these local hours; anything due then waits for their end.
    pub quiet: worktime::QuietHours,
    /// Message kinds that may go out inside quiet hours.
    pub quiet_exempt: Vec<String>,
    /// Messages to one customer due this close together are decided together.
    pub merge_window: Duration,
    /// At most this many messages to one customer per local day.
    pub max_per_customer_per_day: u32,
    /// Customers whose messages are prepared and sent at once by one daemon.
    pub max_in_flight: u32,
}

impl ReminderPolicy {
    /// A policy with the given offsets, send time and quiet hours, and the default
    /// conversation rules (no exempt kinds, a 30-minute window, 3 messages a day) and 32
    /// customers in flight.
    pub fn new(offsets_days: Vec<u32>, local_time: NaiveTime, quiet: worktime::QuietHours) -> Self {
        Self {
            offsets_days,
            local_time,
            quiet,
            quiet_exempt: Vec::new(),
            merge_window: Duration::minutes(30),
            max_per_customer_per_day: 3,
            max_in_flight: 32,
        }
    }

    /// Whether a message of `kind` must wait for the end of quiet hours.
    pub fn respects_quiet_hours(&self, kind: &str) -> bool {
        !self.quiet_exempt.iter().any(|k| k == kind)
    }
}

#[derive(Debug, Clone)]
pub struct EnginePolicy {
    pub debit: DebitPolicy,
    pub retry: RetryPolicy,
    pub reminders: ReminderPolicy,
    /// Delinquency assessment, late fees, payment allocation and operations alerts.
    pub overdue: super::overdue::OverduePolicy,
    pub poll: std::time::Duration,
    pub drain: std::time::Duration,
}

impl EnginePolicy {
    /// Assumes `settings` passed `check()`.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            debit: DebitPolicy {
                local_time: worktime::parse_local_time(&settings.debit.local_time)?,
                horizon_days: settings.debit.horizon_days,
                batch_size: settings.debit.batch_size,
                max_in_flight: settings.debit.max_in_flight,
                lease: Duration::seconds(i64::from(settings.debit.lease_seconds)),
                key_prefix: settings.debit.key_prefix.clone(),
                returns_poll: std::time::Duration::from_secs(u64::from(
                    settings.debit.returns_poll_seconds,
                )),
                partial: PartialCollection {
                    enabled: settings.debit.partial.enabled,
                    max_shortfall_percent: settings.debit.partial.max_shortfall_percent,
                    minimum: crate::domain::parse_decimal(settings.debit.partial.minimum.trim())
                        .unwrap_or(Decimal::ONE),
                },
            },
            retry: RetryPolicy {
                max_attempts: settings.retry.max_attempts,
                insufficient_funds_days: settings.retry.insufficient_funds_days.clone(),
                soft_decline_days: settings.retry.soft_decline_days.clone(),
                technical_backoff: settings
                    .retry
                    .technical_backoff_minutes
                    .iter()
                    .map(|m| Duration::minutes(i64::from(*m)))
                    .collect(),
                min_spacing_days: settings.retry.min_spacing_days,
                payday: PaydayPolicy {
                    enabled: settings.retry.payday.enabled,
                    min_observations: settings.retry.payday.min_observations,
                    lookback_months: settings.retry.payday.lookback_months,
                    window_days: settings.retry.payday.window_days.unwrap_or_else(|| {
                        settings
                            .retry
                            .insufficient_funds_days
                            .iter()
                            .copied()
                            .max()
                            .unwrap_or(0)
                    }),
                },
            },
            reminders: ReminderPolicy {
                offsets_days: settings.reminders.offsets_days.clone(),
                local_time: worktime::parse_local_time(&settings.reminders.local_time)?,
                quiet: worktime::QuietHours::parse(
                    &settings.reminders.quiet_hours_start,
                    &settings.reminders.quiet_hours_end,
                )?,
                quiet_exempt: settings.reminders.quiet_hours_exempt.clone(),
                merge_window: Duration::minutes(i64::from(settings.reminders.merge_window_minutes)),
                max_per_customer_per_day: settings.reminders.max_per_customer_per_day,
                max_in_flight: settings.reminders.max_in_flight,
            },
            overdue: super::overdue::OverduePolicy::from_settings(
                &settings.overdue,
                &settings.payments,
                &settings.alerts,
            )?,
            poll: std::time::Duration::from_secs(u64::from(settings.engine.poll_seconds)),
            drain: std::time::Duration::from_secs(u64::from(settings.engine.drain_seconds)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            insufficient_funds_days: vec![1, 3, 5],
            soft_decline_days: vec![1, 3],
            technical_backoff: vec![Duration::minutes(5), Duration::minutes(15)],
            min_spacing_days: 1,
            payday: PaydayPolicy::default(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_retry_after_downtime_is_respaced_from_the_outcome_never_in_the_past() {
        let p = policy();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
        let due = NaiveDate::from_ymd_opt(2026, 10, 19).unwrap();
        // Imported 40 days past due: the first attempt runs now (2026-11-28 10:00 local);
        // the policy's "due + 1 day" is long gone, so the retry is tomorrow 06:00 local.
        let now = at("2026-11-28T02:00:00Z");
        let next = p
            .next_attempt_at(RetryKind::InsufficientFunds, 1, due, now, tz, six)
            .unwrap();
        assert_eq!(next, at("2026-11-28T22:00:00Z"), "29 Nov 06:00 in Shanghai");
        // The one after that is another day later, not at the same time.
        let next2 = p
            .next_attempt_at(RetryKind::InsufficientFunds, 2, due, next, tz, six)
            .unwrap();
        assert_eq!(next2, at("2026-11-29T22:00:00Z"));
        // On time, the policy's own dates hold: due + 3 days.
        let due = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let on_time = at("2026-11-30T22:00:00Z"); // 1 Dec 06:00 local
        let retry = p
            .next_attempt_at(RetryKind::InsufficientFunds, 1, due, on_time, tz, six)
            .unwrap();
        assert_eq!(retry, at("2026-12-01T22:00:00Z"), "2 Dec 06:00: due + 1");
        let retry = p
            .next_attempt_at(RetryKind::InsufficientFunds, 2, due, retry, tz, six)
            .unwrap();
        assert_eq!(retry, at("2026-12-03T22:00:00Z"), "4 Dec 06:00: due + 3");
        assert_eq!(
            p.next_attempt_at(RetryKind::InsufficientFunds, 4, due, retry, tz, six),
            None
        );
    }

    #[test]
    fn a_retry_across_a_dst_change_keeps_the_local_debit_time() {
        let p = policy();
        let tz: Tz = "America/New_York".parse().unwrap();
        let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
        let due = NaiveDate::from_ymd_opt(2027, 3, 13).unwrap();
        let now = at("2027-03-13T11:00:00Z"); // 06:00 EST
        let next = p
            .next_attempt_at(RetryKind::InsufficientFunds, 1, due, now, tz, six)
            .unwrap();
        assert_eq!(
            next,
            at("2027-03-14T10:00:00Z"),
            "06:00 EDT after the change"
        );
    }

    proptest::proptest! {
        #[test]
        fn retries_are_never_in_the_past_nor_on_the_same_local_day(
            due_offset in -400_i64..60,
            minutes in 0_i64..(3 * 24 * 60),
            attempt_no in 1_u32..4,
            tz_index in 0_usize..4,
            soft in proptest::bool::ANY,
        ) {
            let p = policy();
            let tz: Tz = ["Asia/Shanghai", "America/New_York", "Europe/London", "Pacific/Auckland"][tz_index]
                .parse()
                .unwrap();
            let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
            let now = at("2026-06-01T00:00:00Z") + Duration::minutes(minutes);
            let due = worktime::local_date(now, tz) + Duration::days(due_offset);
            let kind = if soft { RetryKind::SoftDecline } else { RetryKind::InsufficientFunds };
            if let Some(next) = p.next_attempt_at(kind, attempt_no, due, now, tz, six) {
                proptest::prop_assert!(next > now);
                proptest::prop_assert!(worktime::local_date(next, tz) > worktime::local_date(now, tz));
                proptest::prop_assert_eq!(next.with_timezone(&tz).time(), six);
            }
        }
    }

    fn payday_policy() -> RetryPolicy {
        RetryPolicy {
            insufficient_funds_days: vec![1, 3, 7],
            payday: PaydayPolicy {
                enabled: true,
                min_observations: 3,
                lookback_months: 6,
                window_days: 7,
            },
            ..policy()
        }
    }

    fn on_the_10th() -> payday::LearnedPayday {
        payday::LearnedPayday {
            payday: payday::Payday::DayOfMonth(10),
            support: 3,
            months: 4,
        }
    }

    #[test]
    fn a_short_balance_before_the_payday_is_retried_on_the_payday_with_the_reason() {
        let p = payday_policy();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
        let weekdays = crate::domain::HolidayCalendar::default();
        let due = NaiveDate::from_ymd_opt(2027, 1, 5).unwrap();
        let now = at("2027-01-04T22:00:00Z"); // 5 Jan 06:00 in Shanghai
        let learned = on_the_10th();
        let retry = p
            .payday_retry_at(Some(&learned), 1, due, now, tz, six, &weekdays)
            .unwrap();
        assert_eq!(retry.at, at("2027-01-09T22:00:00Z"), "10 Jan 06:00 local");
        assert_eq!(
            retry.reason,
            "payday: funds arrived on the 10th in 3 of the last 4 months with a short balance; \
             retry on Sun 10 Jan 2027, instead of Wed 6 Jan 2027 (fixed offset)"
        );
        // Off, or nothing learned: the fixed offsets hold.
        let off = RetryPolicy {
            payday: PaydayPolicy::default(),
            ..p.clone()
        };
        assert_eq!(
            off.payday_retry_at(Some(&learned), 1, due, now, tz, six, &weekdays),
            None
        );
        assert_eq!(
            p.payday_retry_at(None, 1, due, now, tz, six, &weekdays),
            None
        );
        // The payday past the window (due + 7 = 12 Jan): fixed offsets.
        let due = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
        let now = at("2026-12-31T22:00:00Z");
        assert_eq!(
            p.payday_retry_at(Some(&learned), 1, due, now, tz, six, &weekdays),
            None
        );
        // No attempt left: none either.
        let due = NaiveDate::from_ymd_opt(2027, 1, 5).unwrap();
        assert_eq!(
            p.payday_retry_at(Some(&learned), 4, due, now, tz, six, &weekdays),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn payday_retries_stay_in_the_window_and_keep_the_minimum_spacing(
            due_offset in -20_i64..20,
            minutes in 0_i64..(40 * 24 * 60),
            attempt_no in 1_u32..5,
            tz_index in 0_usize..4,
            day in 1_u32..=31,
            weekly in proptest::bool::ANY,
        ) {
            let p = payday_policy();
            let tz: Tz = ["Asia/Shanghai", "America/New_York", "Europe/London", "Pacific/Auckland"][tz_index]
                .parse()
                .unwrap();
            let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
            let weekdays = crate::domain::HolidayCalendar::default();
            let now = at("2027-02-15T00:00:00Z") + Duration::minutes(minutes);
            let today = worktime::local_date(now, tz);
            let due = today + Duration::days(due_offset);
            let learned = payday::LearnedPayday {
                payday: if weekly {
                    payday::Payday::Weekly(chrono::Weekday::try_from((day % 7) as u8).unwrap())
                } else {
                    payday::Payday::DayOfMonth(day)
                },
                support: 3,
                months: 3,
            };
            let first = p.payday_retry_at(Some(&learned), attempt_no, due, now, tz, six, &weekdays);
            proptest::prop_assert_eq!(&first, &p.payday_retry_at(Some(&learned), attempt_no, due, now, tz, six, &weekdays));
            if let Some(r) = first {
                let date = worktime::local_date(r.at, tz);
                proptest::prop_assert!(r.at > now);
                proptest::prop_assert!(date >= today + Duration::days(i64::from(p.min_spacing_days)));
                proptest::prop_assert!(date <= due + Duration::days(i64::from(p.payday.window_days)));
                proptest::prop_assert!(learned.payday.matches(date));
                proptest::prop_assert_eq!(r.at.with_timezone(&tz).time(), six);
                // Only where the fixed policy would retry at all.
                proptest::prop_assert!(p.next_attempt_at(RetryKind::InsufficientFunds, attempt_no, due, now, tz, six).is_some());
            }
        }
    }

    #[test]
    fn insufficient_funds_retries_follow_the_due_date_offsets_then_stop() {
        let p = policy();
        assert_eq!(p.after_insufficient_funds(1), Some((1, RetryBase::DueDate)));
        assert_eq!(p.after_insufficient_funds(2), Some((3, RetryBase::DueDate)));
        assert_eq!(p.after_insufficient_funds(3), Some((5, RetryBase::DueDate)));
        assert_eq!(p.after_insufficient_funds(4), None, "max_attempts reached");
        let short = RetryPolicy {
            max_attempts: 10,
            ..p.clone()
        };
        assert_eq!(short.after_insufficient_funds(4), None, "offsets used up");
    }

    #[test]
    fn soft_declines_repeat_the_last_wait_until_max_attempts() {
        let p = policy();
        assert_eq!(p.after_soft_decline(1), Some((1, RetryBase::Today)));
        assert_eq!(p.after_soft_decline(3), Some((3, RetryBase::Today)));
        assert_eq!(p.after_soft_decline(4), None);
    }

    #[test]
    fn technical_waits_clamp_to_the_last_entry() {
        let p = policy();
        assert_eq!(p.technical_wait(0), Duration::minutes(5));
        assert_eq!(p.technical_wait(7), Duration::minutes(15));
        assert!(!p.technical_exhausted(1));
        assert!(p.technical_exhausted(2));
    }

    #[test]
    // Minor units written major_minor (`500_00` is 500.00).
    #[allow(clippy::inconsistent_digit_grouping)]
    fn partial_collection_takes_what_is_there_within_the_share_and_above_the_minimum() {
        let cny = crate::domain::Currency::parse("CNY").unwrap();
        let m = |minor| Money::from_minor(minor, cny);
        let on = PartialCollection {
            enabled: true,
            max_shortfall_percent: 40,
            minimum: Decimal::new(5000, 2),
        };
        // 300 of 500: short by 40 %, at the share: taken.
        assert_eq!(
            on.amount_to_debit(&m(500_00), Some(&m(300_00))),
            Some(300_00)
        );
        // Short by 40.01 %: not taken.
        assert_eq!(on.amount_to_debit(&m(500_00), Some(&m(299_95))), None);
        // Below the minimum (50.00), even within the share.
        assert_eq!(on.amount_to_debit(&m(60_00), Some(&m(49_99))), None);
        assert_eq!(on.amount_to_debit(&m(60_00), Some(&m(50_00))), Some(50_00));
        // The bank did not say what is available (protocol 1.0), or nothing is.
        assert_eq!(on.amount_to_debit(&m(500_00), None), None);
        assert_eq!(on.amount_to_debit(&m(500_00), Some(&m(0))), None);
        // Everything available is not partial; another currency is never taken.
        assert_eq!(on.amount_to_debit(&m(500_00), Some(&m(500_00))), None);
        let usd = crate::domain::Currency::parse("USD").unwrap();
        assert_eq!(
            on.amount_to_debit(&m(500_00), Some(&Money::from_minor(400_00, usd))),
            None
        );
        // Off by default.
        assert_eq!(
            PartialCollection::default().amount_to_debit(&m(500_00), Some(&m(499_00))),
            None
        );
        // The minimum in a currency without minor units is rounded up, never down.
        let jpy = crate::domain::Currency::parse("JPY").unwrap();
        let yen = PartialCollection {
            minimum: Decimal::new(5005, 1),
            ..on
        };
        let y = |minor| Money::from_minor(minor, jpy);
        assert_eq!(yen.amount_to_debit(&y(800), Some(&y(500))), None);
        assert_eq!(yen.amount_to_debit(&y(800), Some(&y(501))), Some(501));
    }
}
