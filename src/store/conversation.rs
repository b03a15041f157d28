//! What the message gate reads before a customer email leaves: what else is due or was
//! sent to the same customer and agreement, what the ledger says is owed now, and which
//! debit attempt a message may promise.

use super::{Result, Store};

/// Another message about the same agreement, near in time to the one being decided.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NearbyMessage {
    pub id: i64,
    pub installment_id: i64,
    pub kind: String,
    pub state: String,
    pub scheduled_at_ms: i64,
    pub sent_at_ms: Option<i64>,
}

/// An open charge (late fee), with the installment it belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenCharge {
    pub kind: String,
    pub seq: i64,
    pub open_minor: i64,
}

/// What the ledger says an agreement owes at send time.
#[derive(Debug, Clone, Default)]
pub struct AgreementLedger {
    /// Unpaid amount of installments due before the given date (arrears).
    pub arrears_minor: i64,
    /// How many installments that is.
    pub arrears_count: i64,
    /// Open charges, oldest installment first.
    pub charges: Vec<OpenCharge>,
}

impl AgreementLedger {
    pub fn charges_minor(&self) -> i64 {
        self.charges.iter().map(|c| c.open_minor).sum()
    }
}

impl Store {
    /// Messages about `agreement_id` other than `exclude_id` that are pending (or being
    /// sent) and due by `until_ms`, or that were sent at or after `since_ms`.
    pub async fn agreement_messages_near(
        &self,
        agreement_id: i64,
        exclude_id: i64,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<NearbyMessage>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, NearbyMessage>(
                "SELECT id, installment_id, kind, state, scheduled_at_ms, sent_at_ms \
                 FROM reminders \
                 WHERE agreement_id = $1 AND id <> $2 \
                   AND ((state IN ('pending', 'sending') AND scheduled_at_ms <= $4) \
                        OR (state = 'sent' AND sent_at_ms >= $3)) \
                 ORDER BY scheduled_at_ms, id",
            )
            .bind(agreement_id)
            .bind(exclude_id)
            .bind(since_ms)
            .bind(until_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// When a message of `kind` about `agreement_id` (and `installment_id`, if given) was
    /// last sent at or after `since_ms`.
    pub async fn last_sent(
        &self,
        agreement_id: i64,
        kind: &str,
        installment_id: Option<i64>,
        since_ms: i64,
    ) -> Result<Option<i64>> {
        let at = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MAX(sent_at_ms) FROM reminders \
                 WHERE agreement_id = $1 AND kind = $2 AND state = 'sent' \
                   AND ($3 IS NULL OR installment_id = $3) AND sent_at_ms >= $4",
            )
            .bind(agreement_id)
            .bind(kind)
            .bind(installment_id)
            .bind(since_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(at)
    }

    /// When the installment's next pending message of `kind` with a smaller offset (a
    /// later pre-due reminder) is scheduled, if there is one.
    pub async fn next_pending_reminder_ms(
        &self,
        installment_id: i64,
        kind: &str,
        below_offset: i64,
    ) -> Result<Option<i64>> {
        let at = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(scheduled_at_ms) FROM reminders \
                 WHERE installment_id = $1 AND kind = $2 AND offset_key < $3 \
                   AND state = 'pending'",
            )
            .bind(installment_id)
            .bind(kind)
            .bind(below_offset)
            .fetch_one(pool)
            .await?
        });
        Ok(at)
    }

    /// How many emails went to a customer at or after `since_ms` (a merged email counts
    /// once).
    pub async fn messages_sent_to_customer(&self, customer_id: i64, since_ms: i64) -> Result<i64> {
        let n = on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(DISTINCT message_id) FROM reminders \
                 WHERE customer_id = $1 AND state = 'sent' AND sent_at_ms >= $2",
            )
            .bind(customer_id)
            .bind(since_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// The next planned debit attempt of an installment after `after_ms`: the only retry
    /// a message about it may promise.
    pub async fn next_planned_attempt_ms(
        &self,
        installment_id: i64,
        after_ms: i64,
    ) -> Result<Option<i64>> {
        let at = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(scheduled_at_ms) FROM debit_attempts \
                 WHERE installment_id = $1 AND state = 'scheduled' AND scheduled_at_ms > $2",
            )
            .bind(installment_id)
            .bind(after_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(at)
    }

    /// The next planned debit attempt of the installment after `after_ms`, with the reason
    /// it was placed then when it was not by the fixed offsets (payday-aware retries).
    pub async fn next_planned_attempt(
        &self,
        installment_id: i64,
        after_ms: i64,
    ) -> Result<Option<(i64, Option<String>)>> {
        let row = on_read!(self, |pool| {
            sqlx::query_as::<_, (i64, Option<String>)>(
                "SELECT scheduled_at_ms, retry_reason FROM debit_attempts \
                 WHERE installment_id = $1 AND state = 'scheduled' AND scheduled_at_ms > $2 \
                 ORDER BY scheduled_at_ms LIMIT 1",
            )
            .bind(installment_id)
            .bind(after_ms)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The next planned debit attempt for any unpaid installment of the agreement that
    /// fell due before `before_date` (the arrears), after `after_ms`.
    pub async fn next_planned_arrears_attempt_ms(
        &self,
        agreement_id: i64,
        before_date: &str,
        after_ms: i64,
    ) -> Result<Option<i64>> {
        let at = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(d.scheduled_at_ms) FROM debit_attempts d \
                 JOIN installments i ON i.id = d.installment_id \
                 WHERE d.agreement_id = $1 AND d.state = 'scheduled' \
                   AND d.scheduled_at_ms > $3 \
                   AND i.status = 'unpaid' AND i.due_date < $2",
            )
            .bind(agreement_id)
            .bind(before_date)
            .bind(after_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(at)
    }

    /// The agreement's arrears (installments due before `before_date`, unpaid) and open
    /// charges, read from the ledger now.
    pub async fn agreement_ledger(
        &self,
        agreement_id: i64,
        before_date: &str,
    ) -> Result<AgreementLedger> {
        let (arrears_minor, arrears_count, charges) = on_read!(self, |pool| {
            let (minor, count): (i64, i64) = sqlx::query_as(
                "SELECT CAST(COALESCE(SUM(total_minor - paid_minor), 0) AS BIGINT), COUNT(*) \
                 FROM installments \
                 WHERE agreement_id = $1 AND status = 'unpaid' AND due_date < $2",
            )
            .bind(agreement_id)
            .bind(before_date)
            .fetch_one(pool)
            .await?;
            let charges = sqlx::query_as::<_, OpenCharge>(
                "SELECT g.kind, i.seq, CAST(SUM(g.amount_minor - g.paid_minor - g.waived_minor) AS BIGINT) AS open_minor \
                 FROM charges g JOIN installments i ON i.id = g.installment_id \
                 WHERE g.agreement_id = $1 AND g.status = 'open' \
                 GROUP BY g.kind, i.seq ORDER BY i.seq, g.kind",
            )
            .bind(agreement_id)
            .fetch_all(pool)
            .await?;
            (minor, count, charges)
        });
        Ok(AgreementLedger {
            arrears_minor,
            arrears_count,
            charges,
        })
    }
}
