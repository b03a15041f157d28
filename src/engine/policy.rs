//! Debit and retry policy: the settings the engine works by, parsed once (and again on
//! reload) from the configuration.

use crate::config::Settings;
use crate::domain::worktime;
use chrono::{Duration, NaiveTime};

#[derive(Debug, Clone)]
pub struct DebitPolicy {
    /// Local time at which due installments are debited, in the customer's time zone.
    pub local_time: NaiveTime,
    pub horizon_days: u32,
    pub batch_size: u32,
    pub lease: Duration,
    /// Prefix of every idempotency key, so two deployments sharing one gateway never
    /// collide.
    pub key_prefix: String,
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
                lease: Duration::seconds(i64::from(settings.debit.lease_seconds)),
                key_prefix: settings.debit.key_prefix.clone(),
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
            },
            reminders: ReminderPolicy {
                offsets_days: settings.reminders.offsets_days.clone(),
                local_time: worktime::parse_local_time(&settings.reminders.local_time)?,
                quiet: worktime::QuietHours::parse(
                    &settings.reminders.quiet_hours_start,
                    &settings.reminders.quiet_hours_end,
                )?,
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
}
