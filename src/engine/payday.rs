//! Payday-aware retries (`[retry.payday]`, docs/retry.md): after a short balance, read the
//! customer's own funds checks from the event log, learn when their money usually arrives
//! (`crate::domain::payday`) and let the policy place the retry on that day when it falls
//! within the retry window. The reason goes on the attempt, in words.

use super::policy::{PaydayRetry, RetryPolicy};
use super::{Engine, EngineError, parse_date};
use crate::clock::{from_epoch_ms, to_epoch_ms};
use crate::domain::payday::{self, FundsObservation};
use crate::domain::worktime;
use crate::store::debits::{AttemptRow, DebitContext};
use chrono::{DateTime, Months, Utc};
use chrono_tz::Tz;

impl Engine {
    /// The payday-aware retry after attempt `attempt` ended short, or `None` to keep the
    /// fixed offsets (off, nothing learned, or the payday outside the window).
    pub(super) async fn payday_retry(
        &self,
        attempt: &AttemptRow,
        ctx: &DebitContext,
        now: DateTime<Utc>,
        tz: Tz,
        retry: &RetryPolicy,
    ) -> Result<Option<PaydayRetry>, EngineError> {
        if !retry.payday.enabled {
            return Ok(None);
        }
        let since = now
            .checked_sub_months(Months::new(retry.payday.lookback_months))
            .unwrap_or(now);
        let observations: Vec<FundsObservation> = self
            .store
            .funds_history(attempt.agreement_id, to_epoch_ms(since))
            .await?
            .into_iter()
            .map(|c| FundsObservation {
                date: worktime::local_date(from_epoch_ms(c.at_ms), tz),
                sufficient: c.sufficient,
            })
            .collect();
        // Business days are the configured calendar's, for learning a last-business-day
        // salary and for placing the retry on one.
        let calendar = self.business_days();
        let learned = payday::learn_in(&observations, retry.payday.min_observations, &calendar);
        Ok(retry.payday_retry_at(
            learned.as_ref(),
            attempt.attempt_no as u32,
            parse_date(&ctx.due_date)?,
            now,
            tz,
            self.policy().debit.local_time,
            &calendar,
        ))
    }
}
