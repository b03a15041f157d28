//! Returned debits (protocol 1.1's returns feed): each return is applied once, and the
//! feed's cursor moves in the same transaction as the effects of the returns before it,
//! so a crash anywhere repeats nothing and loses nothing. A return reverses what its debit
//! paid (the installment first, then charges, newest first, the reverse of how a debit is
//! allocated), reopens the installment and a completed agreement, plans the retry and the
//! customer's notice, and writes the `debit_returned` event that alerts operations.

use super::debits::{NewAttempt, insert_attempt_sql};
use super::reminders::{NewReminder, insert_reminder_sql};
use super::{NewEvent, Result, Store, StoreError, WriteTx};

/// The returned debit's attempt, found by the idempotency key the return names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReturnedAttempt {
    pub attempt_id: i64,
    pub installment_id: i64,
    pub agreement_id: i64,
    pub attempt_no: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub state: String,
    pub gateway_ref: Option<String>,
    pub due_date: String,
    pub time_zone: String,
}

/// One return to apply, with what the engine decided it leads to.
#[derive(Debug, Clone)]
pub struct ReturnToApply {
    pub return_id: String,
    pub debit_id: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason_code: String,
    pub hard: bool,
    /// `None`: the key is not one of ours (recorded, alerted, nothing reversed).
    pub attempt: Option<ReturnedAttempt>,
    pub next_attempt: Option<NewAttempt>,
    pub notice: Option<NewReminder>,
}

/// What applying a page of returns did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnsApplied {
    /// Returns applied now.
    pub applied: u64,
    /// Returns seen before (a replayed page): nothing done again.
    pub repeated: u64,
    /// Returns whose key is not ours.
    pub unmatched: u64,
}

impl Store {
    /// Where the feed `name` was read to, if it was ever read.
    pub async fn gateway_cursor(&self, name: &str) -> Result<Option<String>> {
        let cursor = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>("SELECT cursor FROM gateway_cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(cursor)
    }

    /// The attempt a return names by idempotency key, with what planning its retry needs.
    pub async fn returned_attempt(&self, idempotency_key: &str) -> Result<Option<ReturnedAttempt>> {
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, ReturnedAttempt>(
                "SELECT d.id AS attempt_id, d.installment_id, d.agreement_id, d.attempt_no, \
                        d.amount_minor, d.currency, d.state, d.gateway_ref, i.due_date, \
                        c.time_zone \
                 FROM debit_attempts d \
                 JOIN installments i ON i.id = d.installment_id \
                 JOIN agreements a ON a.id = d.agreement_id \
                 JOIN customers c ON c.id = a.customer_id \
                 WHERE d.idempotency_key = $1",
            )
            .bind(idempotency_key)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// When an attempt finished (a returned debit's collection date).
    pub async fn attempt_finished_ms(&self, attempt_id: i64) -> Result<Option<i64>> {
        let at = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT finished_at_ms FROM debit_attempts WHERE id = $1",
            )
            .bind(attempt_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(at.flatten())
    }

    /// The highest attempt number of an installment, and whether one is still planned.
    pub async fn installment_attempt_state(&self, installment_id: i64) -> Result<(i64, bool)> {
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT CAST(COALESCE(MAX(attempt_no), 0) AS BIGINT), \
                        CAST(COALESCE(SUM(CASE WHEN state IN ('scheduled', 'claimed', \
                            'funds_checked', 'submitted', 'unknown', 'pending') \
                            THEN 1 ELSE 0 END), 0) AS BIGINT) \
                 FROM debit_attempts WHERE installment_id = $1",
            )
            .bind(installment_id)
            .fetch_one(pool)
            .await?
        });
        Ok((row.0, row.1 > 0))
    }

    /// Applies a page of returns and moves the feed's cursor from `expected` to
    /// `next_cursor`, all in one transaction. A return seen before changes nothing. Fails
    /// with `Conflict` (and changes nothing) if the cursor is no longer `expected`: another
    /// daemon read the page first.
    pub async fn apply_returns(
        &self,
        feed: &str,
        expected: Option<&str>,
        next_cursor: &str,
        returns: &[ReturnToApply],
        now_ms: i64,
    ) -> Result<ReturnsApplied> {
        let applied = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let mut report = ReturnsApplied::default();
            // The cursor first: a second daemon with the same page stops here.
            let moved = match expected {
                None => sqlx::query(
                    "INSERT INTO gateway_cursors (name, cursor, updated_at_ms) \
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(feed)
                .bind(next_cursor)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                Some(old) => sqlx::query(
                    "UPDATE gateway_cursors SET cursor = $1, updated_at_ms = $2 \
                     WHERE name = $3 AND cursor = $4",
                )
                .bind(next_cursor)
                .bind(now_ms)
                .bind(feed)
                .bind(old)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
            };
            if moved != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "the {feed} feed's cursor moved meanwhile (another daemon read this page)"
                )));
            }
            for r in returns {
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO debit_returns (return_id, attempt_id, installment_id, \
                         agreement_id, idempotency_key, debit_id, amount_minor, reversed_minor, \
                         currency, reason_code, hard, applied_at_ms) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10, $11) \
                     ON CONFLICT DO NOTHING RETURNING id",
                )
                .bind(&r.return_id)
                .bind(r.attempt.as_ref().map(|a| a.attempt_id))
                .bind(r.attempt.as_ref().map(|a| a.installment_id))
                .bind(r.attempt.as_ref().map(|a| a.agreement_id))
                .bind(&r.idempotency_key)
                .bind(&r.debit_id)
                .bind(r.amount_minor)
                .bind(&r.currency)
                .bind(&r.reason_code)
                .bind(i64::from(r.hard))
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(return_row) = inserted else {
                    report.repeated += 1;
                    continue;
                };
                let Some(a) = &r.attempt else {
                    report.unmatched += 1;
                    insert_event!(
                        &mut *tx,
                        &NewEvent {
                            at_ms: now_ms,
                            kind: "debit_returned",
                            agreement_id: None,
                            installment_id: None,
                            attempt_id: None,
                            detail: serde_json::json!({
                                "return_id": r.return_id,
                                "idempotency_key": r.idempotency_key,
                                "code": r.reason_code,
                                "reason": "a return for a debit repayd does not know",
                                "matched": false,
                            }),
                        }
                    )?;
                    continue;
                };
                report.applied += 1;
                // Never more than the debit took, and only a debit that took money.
                let reverse = if a.state == "succeeded" {
                    r.amount_minor.min(a.amount_minor).max(0)
                } else {
                    0
                };
                let (paid, status): (i64, String) =
                    sqlx::query_as("SELECT paid_minor, status FROM installments WHERE id = $1")
                        .bind(a.installment_id)
                        .fetch_one(&mut *tx)
                        .await?;
                let from_installment = reverse.min(paid);
                let was_paid = status == "paid";
                sqlx::query(
                    "UPDATE installments SET paid_minor = paid_minor - $1, \
                        status = CASE WHEN status = 'paid' AND paid_minor - $1 < total_minor \
                                 THEN 'unpaid' ELSE status END, \
                        paid_at_ms = CASE WHEN paid_minor - $1 < total_minor THEN NULL \
                                     ELSE paid_at_ms END \
                     WHERE id = $2",
                )
                .bind(from_installment)
                .bind(a.installment_id)
                .execute(&mut *tx)
                .await?;
                // What the debit paid beyond the installment went to its charges.
                let mut rest = reverse - from_installment;
                if rest > 0 {
                    let paid_charges: Vec<(i64, i64)> = sqlx::query_as(
                        "SELECT id, paid_minor FROM charges \
                         WHERE installment_id = $1 AND paid_minor > 0 AND status <> 'waived' \
                         ORDER BY id DESC",
                    )
                    .bind(a.installment_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (charge_id, charge_paid) in paid_charges {
                        let back = rest.min(charge_paid);
                        if back <= 0 {
                            break;
                        }
                        sqlx::query(
                            "UPDATE charges SET paid_minor = paid_minor - $1, status = 'open', \
                                settled_at_ms = NULL, updated_at_ms = $2 WHERE id = $3",
                        )
                        .bind(back)
                        .bind(now_ms)
                        .bind(charge_id)
                        .execute(&mut *tx)
                        .await?;
                        rest -= back;
                    }
                }
                let reversed = reverse - rest;
                sqlx::query("UPDATE debit_returns SET reversed_minor = $1 WHERE id = $2")
                    .bind(reversed)
                    .bind(return_row)
                    .execute(&mut *tx)
                    .await?;
                let reopened_agreement = sqlx::query(
                    "UPDATE agreements SET status = 'active', updated_at_ms = $1 \
                     WHERE id = $2 AND status = 'completed'",
                )
                .bind(now_ms)
                .bind(a.agreement_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                let mut planned = None;
                if let Some(next) = &r.next_attempt
                    && let Some(id) = insert_attempt_sql!(&mut *tx, next, now_ms)
                {
                    planned = Some(next.scheduled_at_ms);
                    insert_event!(
                        &mut *tx,
                        &NewEvent {
                            at_ms: now_ms,
                            kind: "debit_attempt_planned",
                            agreement_id: Some(next.agreement_id),
                            installment_id: Some(next.installment_id),
                            attempt_id: Some(id),
                            detail: serde_json::json!({
                                "attempt_no": next.attempt_no,
                                "scheduled_at_ms": next.scheduled_at_ms,
                                "reason": "returned",
                            }),
                        }
                    )?;
                }
                if let Some(notice) = &r.notice {
                    insert_reminder_sql!(&mut *tx, notice, now_ms);
                }
                insert_event!(
                    &mut *tx,
                    &NewEvent {
                        at_ms: now_ms,
                        kind: "debit_returned",
                        agreement_id: Some(a.agreement_id),
                        installment_id: Some(a.installment_id),
                        attempt_id: Some(a.attempt_id),
                        detail: serde_json::json!({
                            "attempt_no": a.attempt_no,
                            "return_id": r.return_id,
                            "debit_id": r.debit_id,
                            "code": r.reason_code,
                            "reason": r.reason_code,
                            "hard": r.hard,
                            "amount_minor": r.amount_minor,
                            "reversed_minor": reversed,
                            "currency": r.currency,
                            "installment_reopened": was_paid && from_installment > 0,
                            "agreement_reopened": reopened_agreement,
                            "next_attempt_at_ms": planned,
                            "matched": true,
                        }),
                    }
                )?;
            }
            tx.commit().await?;
            report
        });
        Ok(applied)
    }
}
