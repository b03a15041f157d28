//! Read-only aggregates for `/metrics`: what has been debited, how much work is due and
//! waiting, when money last moved. The counts of work in progress and due are read from
//! partial indexes, cheap enough for every scrape; the tallies over all history (attempts
//! by state, amounts debited, emails by state) scan what the portfolio has accumulated and
//! are read in the background ([`crate::metrics::TallyCache`]).

use super::{Result, Store};

/// Due work that no worker has finished yet: how many rows and the oldest due instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueWork {
    pub rows: i64,
    /// The earliest `scheduled_at` (or expired lease) among them, epoch milliseconds.
    pub oldest_due_ms: Option<i64>,
}

impl Store {
    /// Sum of succeeded debit attempts per currency, in minor units.
    pub async fn debited_minor_by_currency(&self) -> Result<Vec<(String, i64)>> {
        // The cast: PostgreSQL's SUM(bigint) is numeric, which does not decode as i64.
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT currency, CAST(SUM(amount_minor) AS BIGINT) FROM debit_attempts \
                 WHERE state = 'succeeded' GROUP BY currency ORDER BY currency",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Debit attempts in the states work is still in (scheduled, claimed, funds checked,
    /// submitted, unknown, pending, rejected), by state, each read from the partial index
    /// of its claim kind: what the work in flight is now, at the cost of the rows in those
    /// states, not of the table's history.
    pub async fn open_attempt_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                // Each WHERE is its partial index's own (a single state as a literal: an
                // equality does not match an index on `state IN (...)`).
                "SELECT 'scheduled', CAST(COUNT(*) AS BIGINT) FROM debit_attempts \
                  WHERE state = 'scheduled' \
                 UNION ALL \
                 SELECT 'rejected', CAST(COUNT(*) AS BIGINT) FROM debit_attempts \
                  WHERE state = 'rejected' \
                 UNION ALL \
                 SELECT state, CAST(COUNT(*) AS BIGINT) FROM debit_attempts \
                  WHERE state IN ('unknown', 'pending') GROUP BY state \
                 UNION ALL \
                 SELECT state, CAST(COUNT(*) AS BIGINT) FROM debit_attempts \
                  WHERE state IN ('claimed', 'funds_checked', 'submitted') GROUP BY state",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Debit attempts due at `now_ms` and not yet processed: scheduled ones (and unknown or
    /// pending ones waiting for reconciliation) whose time has come, and claimed ones whose
    /// lease has run out (the worker died). The same rule as `next_attempt_due_ms`.
    pub async fn due_debit_work(&self, now_ms: i64) -> Result<DueWork> {
        let (rows, oldest) = on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, Option<i64>)>(
                // One range per claim kind, each read from its partial index.
                "SELECT COUNT(*), MIN(due_ms) FROM ( \
                   SELECT scheduled_at_ms AS due_ms FROM debit_attempts \
                    WHERE state = 'scheduled' AND scheduled_at_ms <= $1 \
                   UNION ALL \
                   SELECT scheduled_at_ms FROM debit_attempts \
                    WHERE state IN ('unknown', 'pending') AND scheduled_at_ms <= $1 \
                   UNION ALL \
                   SELECT lease_until_ms FROM debit_attempts \
                    WHERE state IN ('claimed', 'funds_checked', 'submitted') AND lease_until_ms <= $1 \
                 ) AS open_attempts",
            )
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(DueWork {
            rows,
            oldest_due_ms: oldest,
        })
    }

    /// Whether any debit attempt, and whether any message (reminder), is due at `now_ms`
    /// or in flight: the question a poll asks, answered from the first live entry of each
    /// claim index (where [`Store::due_debit_work`] counts every due row).
    pub async fn work_left(&self, now_ms: i64) -> Result<(bool, bool)> {
        let left = on_read!(self, |pool| {
            sqlx::query_as::<_, (bool, bool)>(
                "SELECT \
                   EXISTS (SELECT 1 FROM debit_attempts \
                           WHERE state = 'scheduled' AND scheduled_at_ms <= $1) \
                   OR EXISTS (SELECT 1 FROM debit_attempts \
                              WHERE state IN ('unknown', 'pending') AND scheduled_at_ms <= $1) \
                   OR EXISTS (SELECT 1 FROM debit_attempts \
                              WHERE state IN ('claimed', 'funds_checked', 'submitted')), \
                   EXISTS (SELECT 1 FROM reminders \
                           WHERE state = 'pending' AND scheduled_at_ms <= $1) \
                   OR EXISTS (SELECT 1 FROM reminders WHERE state = 'sending')",
            )
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(left)
    }

    /// Reminders due at `now_ms` and not yet sent (pending, or sending with an expired
    /// lease).
    pub async fn due_reminder_work(&self, now_ms: i64) -> Result<DueWork> {
        let (rows, oldest) = on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, Option<i64>)>(
                "SELECT COUNT(*), MIN(due_ms) FROM ( \
                   SELECT scheduled_at_ms AS due_ms FROM reminders \
                    WHERE state = 'pending' AND scheduled_at_ms <= $1 \
                   UNION ALL \
                   SELECT lease_until_ms FROM reminders \
                    WHERE state = 'sending' AND lease_until_ms <= $1 \
                 ) AS open_reminders",
            )
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(DueWork {
            rows,
            oldest_due_ms: oldest,
        })
    }

    /// When the last debit succeeded, epoch milliseconds; `None` if none ever did.
    pub async fn last_debit_succeeded_ms(&self) -> Result<Option<i64>> {
        let last = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(finished_at_ms) FROM debit_attempts WHERE state = 'succeeded'",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(last)
    }
}

impl Store {
    /// Agreements overdue now (days past due above zero), per delinquency bucket. Errs if
    /// the delinquency table is missing (a database not yet migrated to it).
    pub async fn overdue_agreements_by_bucket(&self) -> Result<Vec<(String, i64)>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT COALESCE(bucket, 'unbucketed'), COUNT(*) FROM delinquency \
                 WHERE dpd > 0 GROUP BY COALESCE(bucket, 'unbucketed') ORDER BY 1",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
