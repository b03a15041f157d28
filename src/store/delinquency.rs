//! Overdue state: which agreements to assess, their open installments and charges, the
//! fenced write of one agreement's new delinquency state (with its events, escalation
//! emails, late-fee lines and operations alerts in the same transaction), the overdue
//! report's rows, and operations alerts as leased work rows.

use super::reminders::{NewReminder, insert_reminder_sql};
use super::{NewEvent, Result, Store, StoreError};

/// An agreement that may be overdue (an unpaid installment due on or before the cutoff)
/// or that is flagged and may need clearing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DelinquencyCandidate {
    pub agreement_id: i64,
    pub agreement_external_id: String,
    pub agreement_status: String,
    pub currency: String,
    pub time_zone: String,
    pub dpd: Option<i64>,
    pub bucket_index: Option<i64>,
    pub credit_flag: Option<String>,
    pub amount_overdue_minor: Option<i64>,
}

/// An unpaid installment with what it is made of.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OpenInstallmentRow {
    pub id: i64,
    pub agreement_id: i64,
    pub seq: i64,
    pub due_date: String,
    pub principal_minor: i64,
    pub interest_minor: i64,
    pub fee_minor: i64,
    pub total_minor: i64,
    pub paid_minor: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ChargeRow {
    pub id: i64,
    pub installment_id: i64,
    pub agreement_id: i64,
    pub kind: String,
    pub accrual_key: i64,
    pub amount_minor: i64,
    pub paid_minor: i64,
    /// Waived by an operator (`repayd fees waive`); never collected.
    pub waived_minor: i64,
    pub currency: String,
    pub status: String,
}

impl ChargeRow {
    /// Still to be paid: nothing unless the charge is open.
    pub fn open_minor(&self) -> i64 {
        if self.status == "open" {
            self.amount_minor - self.paid_minor - self.waived_minor
        } else {
            0
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct DelinquencyRow {
    pub agreement_id: i64,
    pub dpd: i64,
    pub bucket_index: Option<i64>,
    pub bucket: Option<String>,
    pub credit_flag: String,
    pub oldest_due_date: Option<String>,
    pub amount_overdue_minor: i64,
    pub overdue_since_ms: Option<i64>,
    pub reportable_since_ms: Option<i64>,
    pub assessed_at_ms: i64,
}

/// The state an assessment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelinquencyState {
    pub dpd: i64,
    pub bucket_index: Option<i64>,
    pub bucket: Option<String>,
    pub credit_flag: &'static str,
    pub oldest_due_date: Option<String>,
    pub amount_overdue_minor: i64,
}

/// What the previous state was, as read: the fence of the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousState {
    pub dpd: i64,
    pub bucket_index: Option<i64>,
    pub credit_flag: String,
}

#[derive(Debug, Clone)]
pub struct NewCharge {
    pub installment_id: i64,
    pub agreement_id: i64,
    pub kind: &'static str,
    pub accrual_key: i64,
    pub amount_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone)]
pub struct NewAlert {
    pub kind: String,
    pub channel: &'static str,
    pub dedupe_key: String,
    pub agreement_id: Option<i64>,
    pub source_event_id: Option<i64>,
    pub payload: serde_json::Value,
    pub scheduled_at_ms: i64,
}

/// One agreement's new delinquency state and everything that goes with it.
#[derive(Debug, Clone)]
pub struct DelinquencyChange {
    pub agreement_id: i64,
    /// `None`: no row yet.
    pub previous: Option<PreviousState>,
    pub next: DelinquencyState,
    pub events: Vec<NewEvent>,
    pub reminders: Vec<NewReminder>,
    pub charges: Vec<NewCharge>,
    pub alerts: Vec<NewAlert>,
    /// Nothing is overdue any more: pending escalation emails are cancelled.
    pub cancel_escalations: bool,
    pub now_ms: i64,
}

/// One unpaid installment of the overdue report, with its agreement and customer.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OverdueReportLine {
    pub agreement_id: i64,
    pub agreement_external_id: String,
    pub agreement_status: String,
    pub currency: String,
    pub customer_external_id: String,
    pub customer_name: String,
    pub customer_email: String,
    pub time_zone: String,
    pub installment_id: i64,
    pub seq: i64,
    pub due_date: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub charges_open_minor: i64,
    pub remaining_minor: i64,
    pub last_attempt_at_ms: Option<i64>,
    pub last_attempt_state: Option<String>,
    pub last_attempt_outcome: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub kind: String,
    pub channel: String,
    pub dedupe_key: String,
    pub agreement_id: Option<i64>,
    pub source_event_id: Option<i64>,
    pub payload: String,
    pub state: String,
    pub tries: i64,
    pub scheduled_at_ms: i64,
    pub last_error: Option<String>,
    pub sent_at_ms: Option<i64>,
}

super::group_commit::native_row!(AlertRow {
    id,
    kind,
    channel,
    dedupe_key,
    agreement_id,
    source_event_id,
    payload,
    state,
    tries,
    scheduled_at_ms,
    last_error,
    sent_at_ms,
});

const ALERT_COLUMNS: &str = "id, kind, channel, dedupe_key, agreement_id, source_event_id, \
    payload, state, tries, scheduled_at_ms, last_error, sent_at_ms";

/// An event that should raise an operations alert.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlertableEvent {
    pub id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub agreement_id: Option<i64>,
    pub installment_id: Option<i64>,
    pub attempt_id: Option<i64>,
    pub detail: String,
    pub agreement_external_id: Option<String>,
}

/// Inserts an alert with `ON CONFLICT DO NOTHING` (its dedupe key); evaluates to whether
/// it was new.
macro_rules! insert_alert_sql {
    ($conn:expr, $a:expr, $now_ms:expr) => {{
        let a: &NewAlert = $a;
        sqlx::query_scalar::<_, i64>(
            "INSERT INTO alerts (kind, channel, dedupe_key, agreement_id, source_event_id, \
                 payload, state, tries, scheduled_at_ms, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, $8) \
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(a.kind.as_str())
        .bind(a.channel)
        .bind(a.dedupe_key.as_str())
        .bind(a.agreement_id)
        .bind(a.source_event_id)
        .bind(a.payload.to_string())
        .bind(a.scheduled_at_ms)
        .bind($now_ms)
        .fetch_optional($conn)
        .await?
        .is_some()
    }};
}
#[allow(unused_imports)]
pub(crate) use insert_alert_sql;

/// Resets an agreement's delinquency to current and cancels its pending escalation
/// emails, inside a transaction; evaluates to whether a flagged row was cleared.
macro_rules! clear_delinquency_sql {
    ($conn:expr, $agreement_id:expr, $now_ms:expr) => {{
        let agreement_id: i64 = $agreement_id;
        let now_ms: i64 = $now_ms;
        let previous: Option<(i64, Option<String>, String)> = sqlx::query_as(
            "SELECT dpd, bucket, credit_flag FROM delinquency WHERE agreement_id = $1",
        )
        .bind(agreement_id)
        .fetch_optional($conn)
        .await?;
        sqlx::query(
            "UPDATE reminders SET state = 'cancelled', cancel_reason = 'no_longer_overdue', \
                updated_at_ms = $1 \
             WHERE agreement_id = $2 AND state = 'pending' \
               AND kind IN ('overdue', 'credit_warning')",
        )
        .bind(now_ms)
        .bind(agreement_id)
        .execute($conn)
        .await?;
        match previous {
            Some((dpd, bucket, flag)) if dpd > 0 || flag != "none" => {
                sqlx::query(
                    "UPDATE delinquency SET dpd = 0, bucket_index = NULL, bucket = NULL, \
                        credit_flag = 'none', oldest_due_date = NULL, amount_overdue_minor = 0, \
                        overdue_since_ms = NULL, reportable_since_ms = NULL, \
                        assessed_at_ms = $1, updated_at_ms = $1 \
                     WHERE agreement_id = $2",
                )
                .bind(now_ms)
                .bind(agreement_id)
                .execute($conn)
                .await?;
                insert_event!(
                    $conn,
                    &NewEvent {
                        at_ms: now_ms,
                        kind: "delinquency_cleared",
                        agreement_id: Some(agreement_id),
                        installment_id: None,
                        attempt_id: None,
                        detail: serde_json::json!({
                            "previous_dpd": dpd, "previous_bucket": bucket,
                            "previous_credit_flag": flag,
                        }),
                    }
                )?;
                true
            }
            _ => false,
        }
    }};
}
pub(crate) use clear_delinquency_sql;

impl Store {
    /// Agreements to assess, in id order after `after_id`: active or paused ones with an
    /// unpaid installment due on or before `cutoff` (YYYY-MM-DD), and any with a
    /// delinquency row that is not clean (to clear or re-assess it).
    pub async fn delinquency_candidates(
        &self,
        cutoff: &str,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<DelinquencyCandidate>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, DelinquencyCandidate>(
                "SELECT a.id AS agreement_id, a.external_id AS agreement_external_id, \
                        a.status AS agreement_status, a.currency, \
                        c.time_zone, d.dpd, d.bucket_index, d.credit_flag, d.amount_overdue_minor \
                 FROM agreements a \
                 JOIN customers c ON c.id = a.customer_id \
                 LEFT JOIN delinquency d ON d.agreement_id = a.id \
                 WHERE a.id > $1 AND ( \
                    (a.status IN ('active', 'paused') AND EXISTS ( \
                        SELECT 1 FROM installments i WHERE i.agreement_id = a.id \
                          AND i.status = 'unpaid' AND i.due_date <= $2)) \
                    OR (d.agreement_id IS NOT NULL AND (d.dpd > 0 OR d.credit_flag <> 'none'))) \
                 ORDER BY a.id LIMIT $3",
            )
            .bind(after_id)
            .bind(cutoff)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Unpaid installments of an agreement, oldest due first.
    pub async fn open_installments(&self, agreement_id: i64) -> Result<Vec<OpenInstallmentRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, OpenInstallmentRow>(
                "SELECT id, agreement_id, seq, due_date, principal_minor, interest_minor, \
                        fee_minor, total_minor, paid_minor \
                 FROM installments WHERE agreement_id = $1 AND status = 'unpaid' \
                 ORDER BY due_date, seq",
            )
            .bind(agreement_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Every charge line of an agreement (all states), oldest first.
    pub async fn charges_for_agreement(&self, agreement_id: i64) -> Result<Vec<ChargeRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, ChargeRow>(
                "SELECT id, installment_id, agreement_id, kind, accrual_key, amount_minor, \
                        paid_minor, waived_minor, currency, status \
                 FROM charges WHERE agreement_id = $1 ORDER BY id",
            )
            .bind(agreement_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    pub async fn delinquency(&self, agreement_id: i64) -> Result<Option<DelinquencyRow>> {
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, DelinquencyRow>(
                "SELECT agreement_id, dpd, bucket_index, bucket, credit_flag, oldest_due_date, \
                        amount_overdue_minor, overdue_since_ms, reportable_since_ms, assessed_at_ms \
                 FROM delinquency WHERE agreement_id = $1",
            )
            .bind(agreement_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// The earliest scheduled (not yet run) debit attempt of an agreement, if any.
    pub async fn next_scheduled_attempt_ms(&self, agreement_id: i64) -> Result<Option<i64>> {
        let at = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(scheduled_at_ms) FROM debit_attempts \
                 WHERE agreement_id = $1 AND state = 'scheduled'",
            )
            .bind(agreement_id)
            .fetch_one(pool)
            .await?
        });
        Ok(at)
    }

    /// Writes one agreement's new delinquency state, fenced on the state it was read in,
    /// with its events, reminders, charges and alerts, all in one transaction. Fails with
    /// [`StoreError::Fenced`] (changing nothing) if another assessment got there first.
    pub async fn apply_delinquency(&self, change: &DelinquencyChange) -> Result<()> {
        let next = &change.next;
        let now_ms = change.now_ms;
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let written = match &change.previous {
                None => sqlx::query(
                    // The agreement's currency is copied for the console's Overdue
                    // buckets (migration 0018); it never changes.
                    "INSERT INTO delinquency (agreement_id, dpd, bucket_index, bucket, \
                         credit_flag, oldest_due_date, amount_overdue_minor, overdue_since_ms, \
                         reportable_since_ms, assessed_at_ms, updated_at_ms, currency) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, \
                             CASE WHEN $2 > 0 THEN $8 END, \
                             CASE WHEN $5 = 'reportable' THEN $8 END, $8, $8, \
                             (SELECT a.currency FROM agreements a WHERE a.id = $1)) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(change.agreement_id)
                .bind(next.dpd)
                .bind(next.bucket_index)
                .bind(next.bucket.as_deref())
                .bind(next.credit_flag)
                .bind(next.oldest_due_date.as_deref())
                .bind(next.amount_overdue_minor)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                Some(prev) => sqlx::query(
                    "UPDATE delinquency SET dpd = $1, bucket_index = $2, bucket = $3, \
                        credit_flag = $4, oldest_due_date = $5, amount_overdue_minor = $6, \
                        overdue_since_ms = CASE WHEN $1 = 0 THEN NULL \
                                                ELSE COALESCE(overdue_since_ms, $7) END, \
                        reportable_since_ms = CASE WHEN $4 <> 'reportable' THEN NULL \
                                                   ELSE COALESCE(reportable_since_ms, $7) END, \
                        assessed_at_ms = $7, updated_at_ms = $7 \
                     WHERE agreement_id = $8 AND dpd = $9 AND credit_flag = $10 \
                       AND COALESCE(bucket_index, -1) = $11",
                )
                .bind(next.dpd)
                .bind(next.bucket_index)
                .bind(next.bucket.as_deref())
                .bind(next.credit_flag)
                .bind(next.oldest_due_date.as_deref())
                .bind(next.amount_overdue_minor)
                .bind(now_ms)
                .bind(change.agreement_id)
                .bind(prev.dpd)
                .bind(prev.credit_flag.as_str())
                .bind(prev.bucket_index.unwrap_or(-1))
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if written != 1 {
                tx.rollback().await?;
                return Err(StoreError::Fenced {
                    attempt_id: change.agreement_id,
                    expected_state: "the delinquency state it was assessed from".into(),
                });
            }
            if change.cancel_escalations {
                sqlx::query(
                    "UPDATE reminders SET state = 'cancelled', cancel_reason = 'no_longer_overdue', \
                        updated_at_ms = $1 \
                     WHERE agreement_id = $2 AND state = 'pending' \
                       AND kind IN ('overdue', 'credit_warning')",
                )
                .bind(now_ms)
                .bind(change.agreement_id)
                .execute(&mut *tx)
                .await?;
            }
            for c in &change.charges {
                sqlx::query(
                    "INSERT INTO charges (installment_id, agreement_id, kind, accrual_key, \
                         amount_minor, paid_minor, currency, status, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, 0, $6, 'open', $7, $7) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(c.installment_id)
                .bind(c.agreement_id)
                .bind(c.kind)
                .bind(c.accrual_key)
                .bind(c.amount_minor)
                .bind(c.currency.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            for r in &change.reminders {
                insert_reminder_sql!(&mut *tx, r, now_ms);
            }
            for a in &change.alerts {
                let _new = insert_alert_sql!(&mut *tx, a, now_ms);
            }
            for ev in &change.events {
                insert_event!(&mut *tx, ev)?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Unpaid installments due on or before `cutoff` with their agreement, customer,
    /// open charges and the agreement's latest debit attempt that ran (not merely planned
    /// or cancelled): the overdue report's input.
    pub async fn overdue_report_lines(&self, cutoff: &str) -> Result<Vec<OverdueReportLine>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, OverdueReportLine>(
                "SELECT a.id AS agreement_id, a.external_id AS agreement_external_id, \
                        a.status AS agreement_status, a.currency, \
                        c.external_id AS customer_external_id, c.name AS customer_name, \
                        c.email AS customer_email, c.time_zone, \
                        i.id AS installment_id, i.seq, i.due_date, i.total_minor, i.paid_minor, \
                        (SELECT CAST(COALESCE(SUM(g.amount_minor - g.paid_minor - g.waived_minor), 0) AS BIGINT) \
                           FROM charges g WHERE g.installment_id = i.id AND g.status = 'open') \
                            AS charges_open_minor, \
                        (SELECT CAST(COALESCE(SUM(x.total_minor - x.paid_minor), 0) AS BIGINT) \
                           FROM installments x WHERE x.agreement_id = a.id AND x.status = 'unpaid') \
                            AS remaining_minor, \
                        la.scheduled_at_ms AS last_attempt_at_ms, la.state AS last_attempt_state, \
                        la.outcome_code AS last_attempt_outcome \
                 FROM installments i \
                 JOIN agreements a ON a.id = i.agreement_id \
                 JOIN customers c ON c.id = a.customer_id \
                 LEFT JOIN debit_attempts la ON la.id = ( \
                    SELECT d.id FROM debit_attempts d WHERE d.agreement_id = a.id \
                      AND d.state NOT IN ('scheduled', 'cancelled') \
                    ORDER BY d.scheduled_at_ms DESC, d.id DESC LIMIT 1) \
                 WHERE i.status = 'unpaid' AND a.status IN ('active', 'paused') \
                   AND i.due_date <= $1 \
                 ORDER BY a.id, i.due_date, i.seq",
            )
            .bind(cutoff)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    // ----- operations alerts -----------------------------------------------------------

    /// Events of `kinds` with no alert yet (by source event), oldest first.
    pub async fn alertable_events(
        &self,
        kinds: &[&str],
        limit: i64,
    ) -> Result<Vec<AlertableEvent>> {
        let mut out = Vec::new();
        for kind in kinds {
            let rows = on_pool!(self, |pool| {
                sqlx::query_as::<_, AlertableEvent>(
                    "SELECT e.id, e.at_ms, e.kind, e.agreement_id, e.installment_id, \
                            e.attempt_id, e.detail, a.external_id AS agreement_external_id \
                     FROM events e LEFT JOIN agreements a ON a.id = e.agreement_id \
                     WHERE e.kind = $1 \
                       AND NOT EXISTS (SELECT 1 FROM alerts x WHERE x.source_event_id = e.id) \
                     ORDER BY e.id LIMIT $2",
                )
                .bind(*kind)
                .bind(limit)
                .fetch_all(pool)
                .await?
            });
            out.extend(rows);
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    /// Enqueues alerts (idempotent by dedupe key); returns how many were new.
    pub async fn insert_alerts(&self, alerts: &[NewAlert], now_ms: i64) -> Result<u64> {
        let n = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut n = 0;
            for a in alerts {
                if insert_alert_sql!(&mut *tx, a, now_ms) {
                    n += 1;
                }
            }
            tx.commit().await?;
            n
        });
        Ok(n)
    }

    /// Claims due alerts (and ones whose sender died), like reminders.
    pub async fn claim_due_alerts(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<AlertRow>> {
        let claim = super::Claim::messages("alerts", ALERT_COLUMNS);
        let mut rows: Vec<AlertRow> = self
            .claim_rows(&claim, owner, now_ms, lease_until_ms, limit)
            .await?;
        rows.sort_by_key(|r| (r.scheduled_at_ms, r.id));
        Ok(rows)
    }

    /// Records a delivery outcome, fenced by state `sending` and the lease owner.
    /// `next_at_ms = Some(..)` puts it back to pending for a retry.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_alert(
        &self,
        alert_id: i64,
        owner: &str,
        state: &'static str,
        next_at_ms: Option<i64>,
        error: Option<&str>,
        event: &NewEvent,
        now_ms: i64,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE alerts SET state = $1, tries = tries + 1, \
                    scheduled_at_ms = COALESCE($2, scheduled_at_ms), \
                    last_error = COALESCE($3, last_error), \
                    sent_at_ms = CASE WHEN $1 = 'sent' THEN $4 ELSE sent_at_ms END, \
                    lease_owner = NULL, lease_until_ms = NULL, updated_at_ms = $4 \
                 WHERE id = $5 AND state = 'sending' AND lease_owner = $6",
            )
            .bind(state)
            .bind(next_at_ms)
            .bind(error)
            .bind(now_ms)
            .bind(alert_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                tx.rollback().await?;
                return Err(StoreError::Fenced {
                    attempt_id: alert_id,
                    expected_state: "sending".into(),
                });
            }
            insert_event!(&mut *tx, event)?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn alerts(&self) -> Result<Vec<AlertRow>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts ORDER BY id");
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AlertRow>(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    pub async fn next_alert_due_ms(&self) -> Result<Option<i64>> {
        let next = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(CASE WHEN state = 'pending' THEN scheduled_at_ms ELSE lease_until_ms END) \
                 FROM alerts WHERE state IN ('pending', 'sending')",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(next)
    }
}
