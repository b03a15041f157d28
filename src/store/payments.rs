//! Payments received by other means (bank transfer, cash, early settlement): recorded
//! once per reference with their allocation over charges and installment components, all
//! in one transaction that also cancels the paid installments' planned debits and
//! reminders (through `apply_payment_sql!`) and clears the overdue state when nothing is
//! overdue any more. And the agreement life cycle: pause, resume, cancel, mandate revoke.

use super::debits::{Applied, NewAttempt, PaymentApplied, apply_payment_sql};
use super::delinquency::clear_delinquency_sql;
use super::{NewEvent, Result, Store, StoreError};
use crate::domain::Actor;
use crate::domain::delinquency::{Allocation, Component};

/// The agreement a payment or life-cycle command names, by id or external id.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AgreementRef {
    pub id: i64,
    pub external_id: String,
    pub status: String,
    pub currency: String,
    pub time_zone: String,
    pub funding_account_id: i64,
}

/// A payment to record, with its allocation computed from the state it was read in.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub agreement_id: i64,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub received_at_ms: i64,
    pub settlement: bool,
    pub allocations: Vec<Allocation>,
    /// Settlement only: future interest and fees forgiven, per installment.
    pub waived: Vec<Allocation>,
    /// `paid_minor` of every open installment as read: the fence.
    pub expected_paid: Vec<(i64, i64)>,
    /// Installments due on or before this date (YYYY-MM-DD) count as overdue today: if
    /// none is left unpaid, the delinquency state is cleared in the same transaction.
    pub overdue_cutoff: String,
    pub now_ms: i64,
    /// Who recorded it and why (into the event's detail).
    pub actor: Actor,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordedPayment {
    pub payment_id: i64,
    pub installments_paid: Vec<i64>,
    pub agreement_completed: bool,
    pub delinquency_cleared: bool,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct PaymentRow {
    pub id: i64,
    pub agreement_id: i64,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub received_at_ms: i64,
    pub settlement: i64,
    pub waived_minor: i64,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AllocationRow {
    pub payment_id: i64,
    pub installment_id: i64,
    pub charge_id: Option<i64>,
    pub component: String,
    pub amount_minor: i64,
}

/// Installments of an agreement whose attempts were cancelled by a pause and that need a
/// new attempt on resume: unpaid, no live attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResumeCandidate {
    pub installment_id: i64,
    pub due_date: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub max_attempt_no: i64,
}

/// Marks installments paid that a settlement closes (their interest and fees waived),
/// cancelling their planned work, inside a transaction.
macro_rules! close_installment_sql {
    ($conn:expr, $installment_id:expr, $now_ms:expr) => {{
        let n = sqlx::query(
            "UPDATE installments SET status = 'paid', paid_at_ms = $1 \
             WHERE id = $2 AND status = 'unpaid'",
        )
        .bind($now_ms)
        .bind($installment_id)
        .execute($conn)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE reminders SET state = 'cancelled', cancel_reason = 'installment_paid', \
                updated_at_ms = $1 \
             WHERE installment_id = $2 AND state = 'pending'",
        )
        .bind($now_ms)
        .bind($installment_id)
        .execute($conn)
        .await?;
        sqlx::query(
            "UPDATE debit_attempts SET state = 'cancelled', finished_at_ms = $1, \
                outcome_code = 'installment_paid', updated_at_ms = $1 \
             WHERE installment_id = $2 AND state = 'scheduled'",
        )
        .bind($now_ms)
        .bind($installment_id)
        .execute($conn)
        .await?;
        n
    }};
}

impl Store {
    /// Finds an agreement by numeric id or external id (external id first).
    pub async fn agreement_ref(&self, key: &str) -> Result<AgreementRef> {
        let by_id: Option<i64> = key.trim().parse().ok();
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, AgreementRef>(
                "SELECT a.id, a.external_id, a.status, a.currency, c.time_zone, \
                        a.funding_account_id \
                 FROM agreements a JOIN customers c ON c.id = a.customer_id \
                 WHERE a.external_id = $1 OR a.id = $2 \
                 ORDER BY CASE WHEN a.external_id = $1 THEN 0 ELSE 1 END LIMIT 1",
            )
            .bind(key.trim())
            .bind(by_id.unwrap_or(-1))
            .fetch_optional(pool)
            .await?
        });
        row.ok_or(StoreError::NotFound {
            what: "agreement",
            id: key.to_string(),
        })
    }

    pub async fn payment_by_reference(&self, reference: &str) -> Result<Option<PaymentRow>> {
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, PaymentRow>(
                "SELECT id, agreement_id, reference, amount_minor, currency, received_at_ms, \
                        settlement, waived_minor FROM payments WHERE reference = $1",
            )
            .bind(reference)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn payment_allocations(&self, payment_id: i64) -> Result<Vec<AllocationRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AllocationRow>(
                "SELECT payment_id, installment_id, charge_id, component, amount_minor \
                 FROM payment_allocations WHERE payment_id = $1 ORDER BY id",
            )
            .bind(payment_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Records a payment and everything it does, in one transaction; nothing is written
    /// if the reference was recorded before ([`StoreError::Conflict`]) or any open
    /// installment changed since it was read ([`StoreError::Conflict`], try again).
    pub async fn record_payment(&self, p: &NewPayment) -> Result<RecordedPayment> {
        let now_ms = p.now_ms;
        let result = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let seen: Option<i64> =
                sqlx::query_scalar("SELECT id FROM payments WHERE reference = $1")
                    .bind(p.reference.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if seen.is_some() {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "payment reference {:?} was already recorded; nothing was changed",
                    p.reference
                )));
            }
            // The fence: every open installment still as it was read (and locked).
            for (installment_id, paid) in &p.expected_paid {
                let n = sqlx::query(
                    "UPDATE installments SET paid_minor = paid_minor \
                     WHERE id = $1 AND paid_minor = $2 AND status = 'unpaid'",
                )
                .bind(installment_id)
                .bind(paid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    tx.rollback().await?;
                    return Err(StoreError::Conflict(format!(
                        "installment {installment_id} changed while the payment was being \
                         allocated (a debit ran?); nothing was changed, record it again"
                    )));
                }
            }
            let waived_minor: i64 = p.waived.iter().map(|w| w.amount_minor).sum();
            let payment_id: i64 = match sqlx::query_scalar(
                "INSERT INTO payments (agreement_id, reference, amount_minor, currency, \
                     received_at_ms, settlement, waived_minor, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(p.agreement_id)
            .bind(p.reference.as_str())
            .bind(p.amount_minor)
            .bind(p.currency.as_str())
            .bind(p.received_at_ms)
            .bind(i64::from(p.settlement))
            .bind(waived_minor)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            {
                Ok(id) => id,
                Err(e) => {
                    let e = StoreError::from(e);
                    if e.is_unique_violation() {
                        return Err(StoreError::Conflict(format!(
                            "payment reference {:?} was already recorded; nothing was changed",
                            p.reference
                        )));
                    }
                    return Err(e);
                }
            };
            let mut per_installment: Vec<(i64, i64)> = Vec::new();
            for a in &p.allocations {
                sqlx::query(
                    "INSERT INTO payment_allocations (payment_id, installment_id, charge_id, \
                         component, amount_minor) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(payment_id)
                .bind(a.installment_id)
                .bind(a.charge_id)
                .bind(a.component.as_str())
                .bind(a.amount_minor)
                .execute(&mut *tx)
                .await?;
                if let Some(charge_id) = a.charge_id {
                    let n = sqlx::query(
                        "UPDATE charges SET paid_minor = paid_minor + $1, \
                            status = CASE WHEN paid_minor + waived_minor + $1 >= amount_minor THEN 'paid' ELSE status END, \
                            settled_at_ms = CASE WHEN paid_minor + waived_minor + $1 >= amount_minor THEN $2 ELSE settled_at_ms END, \
                            updated_at_ms = $2 \
                         WHERE id = $3 AND status = 'open' AND paid_minor + waived_minor + $1 <= amount_minor",
                    )
                    .bind(a.amount_minor)
                    .bind(now_ms)
                    .bind(charge_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if n != 1 {
                        tx.rollback().await?;
                        return Err(StoreError::Conflict(format!(
                            "charge {charge_id} changed while the payment was being allocated; \
                             nothing was changed, record it again"
                        )));
                    }
                } else {
                    match per_installment
                        .iter_mut()
                        .find(|(id, _)| *id == a.installment_id)
                    {
                        Some((_, sum)) => *sum += a.amount_minor,
                        None => per_installment.push((a.installment_id, a.amount_minor)),
                    }
                }
            }
            let mut recorded = RecordedPayment {
                payment_id,
                ..Default::default()
            };
            for (installment_id, amount) in &per_installment {
                let pa = PaymentApplied {
                    installment_id: *installment_id,
                    agreement_id: p.agreement_id,
                    amount_minor: *amount,
                    at_ms: p.received_at_ms,
                };
                let applied: Applied = apply_payment_sql!(&mut *tx, &pa, None);
                if applied.excess_minor != 0 {
                    tx.rollback().await?;
                    return Err(StoreError::Corrupt(format!(
                        "allocation gave installment {installment_id} more than it owes"
                    )));
                }
                if applied.installment_paid {
                    recorded.installments_paid.push(*installment_id);
                }
                recorded.agreement_completed |= applied.agreement_completed;
            }
            for w in &p.waived {
                let component = match w.component {
                    Component::Interest => "waived_interest",
                    _ => "waived_fees",
                };
                sqlx::query(
                    "INSERT INTO payment_allocations (payment_id, installment_id, charge_id, \
                         component, amount_minor) VALUES ($1, $2, NULL, $3, $4)",
                )
                .bind(payment_id)
                .bind(w.installment_id)
                .bind(component)
                .bind(w.amount_minor)
                .execute(&mut *tx)
                .await?;
            }
            if p.settlement {
                // Whatever is still unpaid now has only waived interest and fees left.
                let left: Vec<i64> = sqlx::query_scalar(
                    "SELECT id FROM installments WHERE agreement_id = $1 AND status = 'unpaid'",
                )
                .bind(p.agreement_id)
                .fetch_all(&mut *tx)
                .await?;
                for id in left {
                    if close_installment_sql!(&mut *tx, id, p.received_at_ms) == 1 {
                        recorded.installments_paid.push(id);
                    }
                }
                let n = sqlx::query(
                    "UPDATE agreements SET status = 'completed', updated_at_ms = $1 \
                     WHERE id = $2 AND status IN ('active', 'paused')",
                )
                .bind(now_ms)
                .bind(p.agreement_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                recorded.agreement_completed |= n == 1;
            }
            let allocation_detail: Vec<serde_json::Value> = p
                .allocations
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "installment_id": a.installment_id, "charge_id": a.charge_id,
                        "component": a.component.as_str(), "amount_minor": a.amount_minor,
                    })
                })
                .collect();
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: if p.settlement {
                        "agreement_settled"
                    } else {
                        "payment_received"
                    },
                    agreement_id: Some(p.agreement_id),
                    installment_id: None,
                    attempt_id: None,
                    detail: p.actor.stamp(serde_json::json!({
                        "payment_id": payment_id,
                        "reference": p.reference,
                        "amount_minor": p.amount_minor,
                        "currency": p.currency,
                        "received_at_ms": p.received_at_ms,
                        "allocations": allocation_detail,
                        "waived_minor": waived_minor,
                        "installments_paid": recorded.installments_paid,
                    })),
                }
            )?;
            let still_overdue: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM installments \
                 WHERE agreement_id = $1 AND status = 'unpaid' AND due_date <= $2",
            )
            .bind(p.agreement_id)
            .bind(p.overdue_cutoff.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if still_overdue == 0 {
                recorded.delinquency_cleared =
                    clear_delinquency_sql!(&mut *tx, p.agreement_id, now_ms);
            }
            tx.commit().await?;
            recorded
        });
        Ok(result)
    }

    /// Pauses, resumes or cancels an agreement (fenced on its current status), with its
    /// event. Pause and cancel cancel its scheduled debit attempts and pending reminders
    /// (receipts excepted); resuming re-opens the pre-due reminders the pause stopped.
    pub async fn change_agreement_status(
        &self,
        agreement_id: i64,
        from: &[&str],
        to: &'static str,
        event_kind: &'static str,
        now_ms: i64,
        actor: &Actor,
    ) -> Result<String> {
        let previous = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let current: Option<String> =
                sqlx::query_scalar("SELECT status FROM agreements WHERE id = $1")
                    .bind(agreement_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(current) = current else {
                return Err(StoreError::NotFound {
                    what: "agreement",
                    id: agreement_id.to_string(),
                });
            };
            if !from.contains(&current.as_str()) {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "agreement is {current}; it can be made {to} only from {}",
                    from.join(" or ")
                )));
            }
            let n = sqlx::query(
                "UPDATE agreements SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4",
            )
            .bind(to)
            .bind(now_ms)
            .bind(agreement_id)
            .bind(current.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "agreement changed meanwhile; try again".into(),
                ));
            }
            let mut cancelled_attempts = 0;
            let mut cancelled_reminders = 0;
            if to != "active" {
                let reason = format!("agreement_{to}");
                cancelled_attempts = sqlx::query(
                    "UPDATE debit_attempts SET state = 'cancelled', finished_at_ms = $1, \
                        outcome_code = $2, updated_at_ms = $1 \
                     WHERE agreement_id = $3 AND state = 'scheduled'",
                )
                .bind(now_ms)
                .bind(reason.as_str())
                .bind(agreement_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Receipts stay: they are about money already collected.
                cancelled_reminders = sqlx::query(
                    "UPDATE reminders SET state = 'cancelled', cancel_reason = $2, \
                        updated_at_ms = $1 \
                     WHERE agreement_id = $3 AND state = 'pending' AND kind <> 'debit_succeeded'",
                )
                .bind(now_ms)
                .bind(reason.as_str())
                .bind(agreement_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            let mut reopened_reminders = 0;
            if current == "paused" && to == "active" {
                // Pre-due reminders the pause stopped go back to pending; the sender still
                // drops any that are too late or overtaken by a later one.
                reopened_reminders = sqlx::query(
                    "UPDATE reminders SET state = 'pending', cancel_reason = NULL, \
                        updated_at_ms = $1 \
                     WHERE agreement_id = $2 AND state = 'cancelled' AND kind = 'upcoming' \
                       AND cancel_reason = 'agreement_paused'",
                )
                .bind(now_ms)
                .bind(agreement_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            if to == "cancelled" {
                clear_delinquency_sql!(&mut *tx, agreement_id, now_ms);
            }
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: event_kind,
                    agreement_id: Some(agreement_id),
                    installment_id: None,
                    attempt_id: None,
                    detail: actor.stamp(serde_json::json!({
                        "from": current, "to": to,
                        "cancelled_attempts": cancelled_attempts,
                        "cancelled_reminders": cancelled_reminders,
                        "reopened_reminders": reopened_reminders,
                    })),
                }
            )?;
            tx.commit().await?;
            current
        });
        Ok(previous)
    }

    /// Unpaid installments of an agreement due by `horizon` with no live attempt (none
    /// scheduled or in flight) but with earlier attempts: what a resume must re-plan.
    pub async fn resume_candidates(
        &self,
        agreement_id: i64,
        horizon: &str,
    ) -> Result<Vec<ResumeCandidate>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, ResumeCandidate>(
                "SELECT i.id AS installment_id, i.due_date, i.total_minor, i.paid_minor, \
                        (SELECT MAX(d.attempt_no) FROM debit_attempts d WHERE d.installment_id = i.id) \
                            AS max_attempt_no \
                 FROM installments i \
                 WHERE i.agreement_id = $1 AND i.status = 'unpaid' AND i.due_date <= $2 \
                   AND EXISTS (SELECT 1 FROM debit_attempts d WHERE d.installment_id = i.id) \
                   AND NOT EXISTS (SELECT 1 FROM debit_attempts d WHERE d.installment_id = i.id \
                        AND d.state IN ('scheduled', 'claimed', 'funds_checked', 'submitted', \
                                        'unknown', 'pending')) \
                 ORDER BY i.due_date",
            )
            .bind(agreement_id)
            .bind(horizon)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Revokes the mandate of a funding account: its agreements' scheduled attempts are
    /// failed with `mandate_revoked`, and the customer is told once (per installment) to
    /// pay by other means. Returns the agreements touched.
    pub async fn revoke_mandate(
        &self,
        account_ref: &str,
        notices: bool,
        notice_at_ms: i64,
        now_ms: i64,
        actor: &Actor,
    ) -> Result<Vec<i64>> {
        let touched = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let (account_id, status) = super::account_mandate!(&mut *tx, account_ref);
            if status == "revoked" {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "the mandate is already revoked; nothing was changed".into(),
                ));
            }
            sqlx::query(
                "UPDATE funding_accounts SET mandate_status = 'revoked', updated_at_ms = $1 \
                 WHERE id = $2 AND mandate_status = $3",
            )
            .bind(now_ms)
            .bind(account_id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
            // Scheduled attempts will never run: fail them as the debit flow would, and tell
            // the customer (one notice per installment, keyed by its attempt number).
            let attempts: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
                "SELECT d.id, d.installment_id, d.agreement_id, d.attempt_no, \
                        i.total_minor - i.paid_minor \
                 FROM debit_attempts d \
                 JOIN installments i ON i.id = d.installment_id \
                 JOIN agreements a ON a.id = d.agreement_id \
                 WHERE a.funding_account_id = $1 AND d.state = 'scheduled' \
                 ORDER BY d.agreement_id, d.scheduled_at_ms, d.id",
            )
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut agreements: Vec<i64> = Vec::new();
            for (attempt_id, installment_id, agreement_id, attempt_no, owed) in attempts {
                let n = sqlx::query(
                    "UPDATE debit_attempts SET state = 'failed', finished_at_ms = $1, \
                        outcome_code = 'mandate_revoked', updated_at_ms = $1 \
                     WHERE id = $2 AND state = 'scheduled'",
                )
                .bind(now_ms)
                .bind(attempt_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    continue;
                }
                insert_event!(
                    &mut *tx,
                    &NewEvent {
                        at_ms: now_ms,
                        kind: "debit_blocked",
                        agreement_id: Some(agreement_id),
                        installment_id: Some(installment_id),
                        attempt_id: Some(attempt_id),
                        detail: serde_json::json!({
                            "attempt_no": attempt_no, "reason": "mandate_revoked",
                        }),
                    }
                )?;
                // One "pay another way" notice per agreement, about its next installment.
                if notices && !agreements.contains(&agreement_id) {
                    let r = super::reminders::NewReminder {
                        installment_id,
                        agreement_id,
                        kind: "mandate_notice",
                        offset_key: 0,
                        scheduled_at_ms: notice_at_ms,
                        detail: serde_json::json!({
                            "mandate_status": "revoked", "amount_minor": owed,
                        }),
                    };
                    super::reminders::insert_reminder_sql!(&mut *tx, &r, now_ms);
                }
                if !agreements.contains(&agreement_id) {
                    agreements.push(agreement_id);
                }
            }
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: "mandate_revoked",
                    agreement_id: None,
                    installment_id: None,
                    attempt_id: None,
                    detail: actor.stamp(serde_json::json!({
                        "account": crate::mask::account(account_ref),
                        "funding_account_id": account_id,
                        "agreements": agreements,
                    })),
                }
            )?;
            tx.commit().await?;
            agreements
        });
        Ok(touched)
    }

    /// The time zone of the customer who owns a funding account.
    pub async fn account_time_zone(&self, account_ref: &str) -> Result<Option<String>> {
        let tz = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT c.time_zone FROM funding_accounts f \
                 JOIN customers c ON c.id = f.customer_id WHERE f.external_ref = $1",
            )
            .bind(account_ref)
            .fetch_optional(pool)
            .await?
        });
        Ok(tz)
    }

    /// Plans a debit attempt with its event (idempotent on installment and attempt number).
    pub async fn plan_extra_attempt(&self, attempt: &NewAttempt, event: &NewEvent) -> Result<bool> {
        self.insert_attempt(attempt, event).await
    }
}
