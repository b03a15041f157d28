//! The SQL of a reschedule (`repayd agreements reschedule`): the moved installments are
//! cancelled with their planned work, the new ones written in their place, the agreement's
//! totals and terms updated, the customer's notice queued and the event (with the actor)
//! appended, all in one transaction fenced on the state the plan was computed from.

use super::agreements::NewInstallment;
use super::{NewEvent, Result, Store, StoreError, WriteTx};

/// Debit attempt states in which money may be moving: a reschedule waits for them.
pub const IN_FLIGHT_STATES: [&str; 5] = [
    "claimed",
    "funds_checked",
    "submitted",
    "unknown",
    "pending",
];

/// A reschedule to write: computed by `engine::operator::reschedule_agreement` from rows
/// read before; every moved installment must still be unpaid, untouched and idle.
#[derive(Debug, Clone)]
pub struct RescheduleWrite {
    pub agreement_id: i64,
    /// The installments replaced (ids), each still `unpaid` with nothing paid.
    pub moved: Vec<i64>,
    pub new_installments: Vec<NewInstallment>,
    /// The agreement's totals after (principal is unchanged).
    pub total_interest_minor: i64,
    pub total_fee_minor: i64,
    pub total_minor: i64,
    /// The agreement's `updated_at_ms` when read: a concurrent import or reschedule fails.
    pub expected_updated_at_ms: i64,
    pub terms_json: String,
    pub event: NewEvent,
    /// The customer's `schedule_changed` notice: due at this instant, about the first new
    /// installment (its id is known only once written).
    pub notice_at_ms: Option<i64>,
    pub notice_detail: serde_json::Value,
}

/// What the transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescheduleWritten {
    pub new_installment_ids: Vec<i64>,
    pub attempts_cancelled: u64,
    pub reminders_cancelled: u64,
    pub notice_id: Option<i64>,
}

impl Store {
    /// Writes a computed reschedule (see [`RescheduleWrite`]). `Conflict`, with nothing
    /// written, when the agreement or a moved installment changed since it was read, or a
    /// debit of a moved installment is in flight.
    pub async fn write_reschedule(
        &self,
        w: &RescheduleWrite,
        now_ms: i64,
    ) -> Result<RescheduleWritten> {
        let in_flight = IN_FLIGHT_STATES
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let written = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let mut out = RescheduleWritten::default();
            let n = sqlx::query(
                "UPDATE agreements SET total_interest_minor = $1, total_fee_minor = $2, \
                     total_minor = $3, terms_json = $4, updated_at_ms = $5 \
                 WHERE id = $6 AND updated_at_ms = $7 AND status IN ('active', 'paused')",
            )
            .bind(w.total_interest_minor)
            .bind(w.total_fee_minor)
            .bind(w.total_minor)
            .bind(w.terms_json.as_str())
            .bind(now_ms)
            .bind(w.agreement_id)
            .bind(w.expected_updated_at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "the agreement changed meanwhile (an import, a status change or another \
                     reschedule); nothing was changed, look again"
                        .into(),
                ));
            }
            for id in &w.moved {
                // Planned attempts first: a worker that claimed one before this point is
                // seen by the in-flight check below, one that comes after finds it cancelled.
                out.attempts_cancelled += sqlx::query(
                    "UPDATE debit_attempts SET state = 'cancelled', finished_at_ms = $1, \
                         outcome_code = 'schedule_changed', updated_at_ms = $1 \
                     WHERE installment_id = $2 AND state = 'scheduled'",
                )
                .bind(now_ms)
                .bind(*id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let busy: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT id FROM debit_attempts WHERE installment_id = $1 \
                       AND state IN ({in_flight}) LIMIT 1"
                )))
                .bind(*id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(attempt) = busy {
                    tx.rollback().await?;
                    return Err(StoreError::Conflict(format!(
                        "debit attempt {attempt} is in flight; nothing was changed: wait for \
                         its outcome and look again"
                    )));
                }
                let n = sqlx::query(
                    "UPDATE installments SET status = 'cancelled' \
                     WHERE id = $1 AND agreement_id = $2 AND status = 'unpaid' AND paid_minor = 0",
                )
                .bind(*id)
                .bind(w.agreement_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    tx.rollback().await?;
                    return Err(StoreError::Conflict(format!(
                        "installment {id} was paid or changed meanwhile; nothing was changed, \
                         look again"
                    )));
                }
                // Reminders for the old dates are no longer true: never sent. Receipts and
                // returned-debit notices are about money that moved: they stay.
                out.reminders_cancelled += sqlx::query(
                    "UPDATE reminders SET state = 'cancelled', cancel_reason = 'schedule_changed', \
                         updated_at_ms = $1 \
                     WHERE installment_id = $2 AND state = 'pending' \
                       AND kind NOT IN ('debit_succeeded', 'debit_returned')",
                )
                .bind(now_ms)
                .bind(*id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            for i in &w.new_installments {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO installments (agreement_id, seq, due_date, principal_minor, \
                         interest_minor, fee_minor, total_minor) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(w.agreement_id)
                .bind(i.seq)
                .bind(i.due_date.as_str())
                .bind(i.principal_minor)
                .bind(i.interest_minor)
                .bind(i.fee_minor)
                .bind(i.principal_minor + i.interest_minor + i.fee_minor)
                .fetch_one(&mut *tx)
                .await?;
                out.new_installment_ids.push(id);
            }
            if let (Some(at_ms), Some(first)) = (w.notice_at_ms, out.new_installment_ids.first()) {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO reminders (installment_id, agreement_id, customer_id, kind, \
                         offset_key, scheduled_at_ms, state, detail, created_at_ms, updated_at_ms) \
                     SELECT $1, a.id, a.customer_id, 'schedule_changed', 0, $2, 'pending', $3, \
                            $4, $4 \
                     FROM agreements a WHERE a.id = $5 RETURNING id",
                )
                .bind(*first)
                .bind(at_ms)
                .bind(w.notice_detail.to_string())
                .bind(now_ms)
                .bind(w.agreement_id)
                .fetch_one(&mut *tx)
                .await?;
                out.notice_id = Some(id);
            }
            let mut event = w.event.clone();
            if let Some(obj) = event.detail.as_object_mut() {
                obj.insert(
                    "new_installment_ids".into(),
                    serde_json::json!(out.new_installment_ids),
                );
                obj.insert(
                    "attempts_cancelled".into(),
                    serde_json::json!(out.attempts_cancelled),
                );
                obj.insert(
                    "reminders_cancelled".into(),
                    serde_json::json!(out.reminders_cancelled),
                );
            }
            insert_event!(&mut *tx, &event)?;
            tx.commit().await?;
            out
        });
        Ok(written)
    }
}
