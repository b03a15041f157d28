//! Debit attempts: planning, claiming with leases, fenced state changes, and what a
//! successful debit does to the installment. Every change names the state it expects and
//! the lease owner in its WHERE clause, checks `rows_affected`, and writes its event in
//! the same transaction.

use super::{NewEvent, Result, Store, StoreError, WriteTx};

/// A debit attempt to create.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub installment_id: i64,
    pub agreement_id: i64,
    pub attempt_no: i64,
    pub idempotency_key: String,
    pub scheduled_at_ms: i64,
    pub amount_minor: i64,
    pub currency: String,
    /// Why a retry was placed when it was, when not by the fixed offsets (payday-aware
    /// retries, docs/retry.md). Written by retries only; the planner's first attempts
    /// have none.
    pub retry_reason: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct AttemptRow {
    pub id: i64,
    pub installment_id: i64,
    pub agreement_id: i64,
    pub attempt_no: i64,
    pub idempotency_key: String,
    pub scheduled_at_ms: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub state: String,
    pub lease_owner: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub funds_checked_at_ms: Option<i64>,
    pub submitted_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub outcome_code: Option<String>,
    pub outcome_detail: Option<String>,
    pub gateway_ref: Option<String>,
    pub reconcile_count: i64,
    /// See [`NewAttempt::retry_reason`].
    pub retry_reason: Option<String>,
}

super::group_commit::native_row!(AttemptRow {
    id,
    installment_id,
    agreement_id,
    attempt_no,
    idempotency_key,
    scheduled_at_ms,
    amount_minor,
    currency,
    state,
    lease_owner,
    lease_until_ms,
    funds_checked_at_ms,
    submitted_at_ms,
    finished_at_ms,
    outcome_code,
    outcome_detail,
    gateway_ref,
    reconcile_count,
    retry_reason,
});

const ATTEMPT_COLUMNS: &str = "id, installment_id, agreement_id, attempt_no, idempotency_key, \
    scheduled_at_ms, amount_minor, currency, state, lease_owner, lease_until_ms, \
    funds_checked_at_ms, submitted_at_ms, finished_at_ms, outcome_code, outcome_detail, \
    gateway_ref, reconcile_count, retry_reason";

/// One funds check of a customer, from the event log: when, and whether the balance was
/// enough (see [`Store::funds_history`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FundsCheckRecord {
    pub at_ms: i64,
    pub sufficient: bool,
}

/// Everything the debit flow needs to know about an attempt's installment and account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DebitContext {
    pub installment_status: String,
    /// The installment's place (1-based) among the agreement's installments that a
    /// reschedule did not replace, as the customer counts them.
    pub seq: i64,
    pub due_date: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub agreement_status: String,
    pub agreement_external_id: String,
    pub currency: String,
    pub account_ref: String,
    pub mandate_ref: String,
    pub mandate_status: String,
    pub time_zone: String,
    pub installment_count: i64,
    /// Open charges (late fees) of this installment: the next debit collects them too.
    pub open_charges_minor: i64,
    /// The funding account above: the one the debit was sent to once it was, else the
    /// agreement's own.
    pub funding_account_id: i64,
}

/// One of a customer's funding sources for an agreement, in the order they are tried.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FundingSource {
    pub funding_account_id: i64,
    pub account_ref: String,
    pub mandate_ref: String,
    pub mandate_status: String,
    pub priority: Option<i64>,
}

/// Who holds an attempt and in which state they found it: the fence for every change.
#[derive(Debug, Clone)]
pub struct Fence {
    pub attempt_id: i64,
    pub expected_state: String,
    pub owner: String,
}

/// A change to one attempt. `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct AttemptChange {
    pub state: &'static str,
    pub amount_minor: Option<i64>,
    pub scheduled_at_ms: Option<i64>,
    pub funds_checked_at_ms: Option<i64>,
    pub submitted_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub outcome_code: Option<String>,
    pub outcome_detail: Option<String>,
    pub gateway_ref: Option<String>,
    /// The funding account the debit is sent to (set with `submitted`).
    pub funding_account_id: Option<i64>,
    pub bump_reconcile_count: bool,
    /// Give up the lease (the attempt is final, or waits for a later time).
    pub release_lease: bool,
}

/// Money received on an installment through a debit.
#[derive(Debug, Clone)]
pub struct PaymentApplied {
    pub installment_id: i64,
    pub agreement_id: i64,
    pub amount_minor: i64,
    pub at_ms: i64,
}

/// What a fenced change does besides the attempt row, in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub events: Vec<NewEvent>,
    /// A customer email about this outcome (receipt or failure notice).
    pub reminder: Option<super::reminders::NewReminder>,
    pub next_attempt: Option<NewAttempt>,
    pub payment: Option<PaymentApplied>,
}

/// What applying a change came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The installment is now fully paid.
    pub installment_paid: bool,
    /// Every installment of the agreement is paid: it is completed.
    pub agreement_completed: bool,
    /// Part of a debit that exceeded what was owed (paid by other means meanwhile).
    pub excess_minor: i64,
}

impl Store {
    /// Creates an attempt unless one with the same (installment, attempt number) exists.
    /// Returns whether it was created; the event is written only then.
    pub async fn insert_attempt(&self, attempt: &NewAttempt, event: &NewEvent) -> Result<bool> {
        Ok(self
            .insert_attempts(std::slice::from_ref(&(attempt.clone(), event.clone())))
            .await?
            == 1)
    }

    /// Creates several attempts in one transaction (one commit per planner page, not per
    /// row), skipping those that exist; returns how many were new. Each new attempt's
    /// event is written with it. Multi-row INSERTs: per-statement overhead, not rows,
    /// bounded the planner when it wrote one statement per row.
    pub async fn insert_attempts(&self, planned: &[(NewAttempt, NewEvent)]) -> Result<u64> {
        if planned.is_empty() {
            return Ok(0);
        }
        let backend = self.backend();
        let created = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let created = insert_attempt_rows!(&mut *tx, backend, planned);
            tx.commit().await?;
            created
        });
        Ok(created)
    }

    /// Claims up to `limit` attempts that need work now, in this order: in-flight ones
    /// whose lease expired (their worker died), unknown or pending ones whose next
    /// look-up is due, then scheduled ones that are due. Outcomes to settle come before
    /// new debits. Claiming moves `scheduled` to `claimed`; other states are kept so the
    /// worker knows to reconcile rather than start over.
    pub async fn claim_due_attempts(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<AttemptRow>> {
        let claim = super::Claim {
            table: "debit_attempts",
            // Each condition matches one partial index of migration 0006 word for word.
            kinds: &[
                (
                    "state IN ('claimed', 'funds_checked', 'submitted') AND lease_until_ms < $2",
                    "lease_until_ms",
                ),
                (
                    "state IN ('unknown', 'pending') AND scheduled_at_ms <= $2 \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $2)",
                    "scheduled_at_ms",
                ),
                (
                    "state = 'scheduled' AND scheduled_at_ms <= $2 \
                     AND (lease_until_ms IS NULL OR lease_until_ms < $2)",
                    "scheduled_at_ms",
                ),
            ],
            // Other states are kept so the worker knows to reconcile, not start over.
            set_state: "state = CASE WHEN state = 'scheduled' THEN 'claimed' ELSE state END",
            columns: ATTEMPT_COLUMNS,
        };
        self.claim_rows(&claim, owner, now_ms, lease_until_ms, limit)
            .await
    }

    pub async fn debit_context(&self, attempt_id: i64) -> Result<DebitContext> {
        let mut found = self.debit_contexts(&[attempt_id]).await?;
        found.remove(&attempt_id).ok_or(StoreError::NotFound {
            what: "debit attempt",
            id: attempt_id.to_string(),
        })
    }

    /// [`Store::debit_context`] of several attempts in one statement, by attempt id (an
    /// attempt that does not exist is left out): the debit loop reads a claimed batch's
    /// contexts at once, not one round trip (and one transaction) per attempt.
    pub async fn debit_contexts(
        &self,
        attempt_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, DebitContext>> {
        #[derive(sqlx::FromRow)]
        struct Keyed {
            attempt_id: i64,
            #[sqlx(flatten)]
            context: DebitContext,
        }
        let mut found = std::collections::HashMap::with_capacity(attempt_ids.len());
        for chunk in attempt_ids.chunks(super::ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT d.id AS attempt_id, i.status AS installment_status, \
                        CAST((SELECT COUNT(*) FROM installments x WHERE x.agreement_id = a.id \
                          AND x.status <> 'cancelled' AND x.seq <= i.seq) AS BIGINT) AS seq, \
                        i.due_date, i.total_minor, i.paid_minor, a.status AS agreement_status, \
                        a.external_id AS agreement_external_id, a.currency, \
                        f.external_ref AS account_ref, f.mandate_ref, f.mandate_status, \
                        c.time_zone, \
                        CAST((SELECT COUNT(*) FROM installments x WHERE x.agreement_id = a.id \
                          AND x.status <> 'cancelled') AS BIGINT) \
                            AS installment_count, \
                        (SELECT CAST(COALESCE(SUM(g.amount_minor - g.paid_minor - g.waived_minor), 0) AS BIGINT) \
                           FROM charges g WHERE g.installment_id = i.id AND g.status = 'open') \
                            AS open_charges_minor, \
                        f.id AS funding_account_id \
                 FROM debit_attempts d \
                 JOIN installments i ON i.id = d.installment_id \
                 JOIN agreements a ON a.id = i.agreement_id \
                 JOIN funding_accounts f \
                   ON f.id = COALESCE(d.funding_account_id, a.funding_account_id) \
                 JOIN customers c ON c.id = a.customer_id \
                 WHERE d.id IN (VALUES {})",
                super::placeholders(self.backend(), 1, chunk.len())
            );
            let rows = on_read!(self, |pool| {
                let mut q = sqlx::query_as::<_, Keyed>(sqlx::AssertSqlSafe(sql))
                    .persistent(super::keep_prepared(chunk.len()));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(pool).await?
            });
            found.extend(rows.into_iter().map(|r| (r.attempt_id, r.context)));
        }
        Ok(found)
    }

    /// The funding sources an attempt of `agreement_id` tries, in order: the customer's
    /// accounts with a priority (lowest first) and the agreement's own account (first when
    /// it has no priority). Accounts of other agreements without a priority are not used.
    pub async fn funding_sources(&self, agreement_id: i64) -> Result<Vec<FundingSource>> {
        Ok(self
            .funding_sources_of(&[agreement_id])
            .await?
            .remove(&agreement_id)
            .unwrap_or_default())
    }

    /// [`Store::funding_sources`] of several agreements in one statement, by agreement id
    /// (an agreement without any is left out).
    pub async fn funding_sources_of(
        &self,
        agreement_ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, Vec<FundingSource>>> {
        #[derive(sqlx::FromRow)]
        struct Keyed {
            agreement_id: i64,
            #[sqlx(flatten)]
            source: FundingSource,
        }
        let mut found: std::collections::HashMap<i64, Vec<FundingSource>> =
            std::collections::HashMap::with_capacity(agreement_ids.len());
        for chunk in agreement_ids.chunks(super::ROWS_PER_INSERT) {
            let sql = format!(
                "SELECT a.id AS agreement_id, f.id AS funding_account_id, \
                        f.external_ref AS account_ref, f.mandate_ref, f.mandate_status, f.priority \
                 FROM agreements a \
                 JOIN funding_accounts f ON f.customer_id = a.customer_id \
                 WHERE a.id IN (VALUES {}) \
                   AND (f.id = a.funding_account_id OR f.priority IS NOT NULL) \
                 ORDER BY a.id, COALESCE(f.priority, 0), f.id",
                super::placeholders(self.backend(), 1, chunk.len())
            );
            let rows = on_read!(self, |pool| {
                let mut q = sqlx::query_as::<_, Keyed>(sqlx::AssertSqlSafe(sql))
                    .persistent(super::keep_prepared(chunk.len()));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(pool).await?
            });
            for r in rows {
                found.entry(r.agreement_id).or_default().push(r.source);
            }
        }
        Ok(found)
    }

    /// Applies a fenced change to one attempt with its effects, all in one transaction.
    /// Fails with [`StoreError::Fenced`] (and changes nothing) if the attempt is no longer
    /// in the expected state or held by `fence.owner`.
    pub async fn apply_attempt_change(
        &self,
        fence: &Fence,
        change: &AttemptChange,
        effects: &Effects,
        now_ms: i64,
    ) -> Result<Applied> {
        // Owned: on SQLite the change runs on the group committer's task.
        let (fence, change, effects) = (fence.clone(), change.clone(), effects.clone());
        if let (super::Inner::Sqlite(_), Some(group)) = (&self.inner, &self.group) {
            // The writer's hot path: on the group committer's own connection, where a
            // statement is a function call, not a round trip to a connection's thread.
            return group
                .run_native(move |conn| {
                    apply_attempt_change_native(conn, &fence, &change, &effects, now_ms)
                })
                .await;
        }
        let backend = self.backend();
        super::write_tx!(self, |conn| {
            let (fence, change, effects) = (&fence, &change, &effects);
            let updated = bind_attempt_update!(sqlx::query(UPDATE_ATTEMPT), fence, change, now_ms)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if updated != 1 {
                return Err(StoreError::Fenced {
                    attempt_id: fence.attempt_id,
                    expected_state: fence.expected_state.clone(),
                });
            }
            let mut applied = Applied::default();
            if let Some(p) = &effects.payment {
                applied = apply_payment_sql!(&mut *conn, p, Some(fence.attempt_id));
            }
            if let Some(next) = &effects.next_attempt
                && let Some(id) = insert_attempt_sql!(&mut *conn, next, now_ms)
            {
                insert_event!(&mut *conn, &retry_planned_event(next, id, now_ms))?;
            }
            if let Some(r) = &effects.reminder {
                super::reminders::insert_reminder_sql!(&mut *conn, r, now_ms);
            }
            // One statement for all of them (a funds check and a submission: two).
            insert_events!(&mut *conn, backend, &effects.events);
            Ok(applied)
        })
    }

    /// Records money received for one installment by other means (bank transfer, cash),
    /// with its event, in one transaction. Planned debits and pre-due reminders of a paid
    /// installment are cancelled.
    pub async fn record_installment_payment(
        &self,
        installment_id: i64,
        amount_minor: i64,
        reference: &str,
        at_ms: i64,
    ) -> Result<Applied> {
        let applied = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let agreement_id: Option<i64> =
                sqlx::query_scalar("SELECT agreement_id FROM installments WHERE id = $1")
                    .bind(installment_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(agreement_id) = agreement_id else {
                return Err(StoreError::NotFound {
                    what: "installment",
                    id: installment_id.to_string(),
                });
            };
            let p = PaymentApplied {
                installment_id,
                agreement_id,
                amount_minor,
                at_ms,
            };
            let applied = apply_payment_sql!(&mut *tx, &p, None);
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms,
                    kind: "payment_received",
                    agreement_id: Some(agreement_id),
                    installment_id: Some(installment_id),
                    attempt_id: None,
                    detail: serde_json::json!({
                        "amount_minor": amount_minor,
                        "reference": reference,
                        "excess_minor": applied.excess_minor,
                        "installment_paid": applied.installment_paid,
                    }),
                }
            )?;
            tx.commit().await?;
            applied
        });
        Ok(applied)
    }

    /// The funds checks of the customer behind `agreement_id` (all their agreements) since
    /// `since_ms`, oldest first: the debit attempts' checks (`funds_confirmed`,
    /// `funds_insufficient`) and the balance said in pre-due reminders (`reminder_sent`
    /// with `funds` sufficient or short). What payday-aware retries learn from.
    pub async fn funds_history(
        &self,
        agreement_id: i64,
        since_ms: i64,
    ) -> Result<Vec<FundsCheckRecord>> {
        let rows: Vec<(i64, String, String)> = on_read!(self, |pool| {
            sqlx::query_as(
                "SELECT e.at_ms, e.kind, e.detail FROM events e \
                 WHERE e.agreement_id IN ( \
                     SELECT o.id FROM agreements o \
                     WHERE o.customer_id = (SELECT a.customer_id FROM agreements a WHERE a.id = $1)) \
                   AND e.kind IN ('funds_confirmed', 'funds_insufficient', 'reminder_sent') \
                   AND e.at_ms >= $2 \
                 ORDER BY e.at_ms, e.id",
            )
            .bind(agreement_id)
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(at_ms, kind, detail)| {
                let sufficient = match kind.as_str() {
                    "funds_confirmed" => true,
                    "funds_insufficient" => false,
                    _ => {
                        let detail: serde_json::Value = serde_json::from_str(&detail).ok()?;
                        match detail["funds"].as_str()? {
                            "sufficient" => true,
                            "short" => false,
                            _ => return None,
                        }
                    }
                };
                Some(FundsCheckRecord { at_ms, sufficient })
            })
            .collect())
    }

    pub async fn attempts_for_installment(&self, installment_id: i64) -> Result<Vec<AttemptRow>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM debit_attempts WHERE installment_id = $1 ORDER BY attempt_no"
        );
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, AttemptRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(installment_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    pub async fn attempts_for_agreement(&self, agreement_id: i64) -> Result<Vec<AttemptRow>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM debit_attempts WHERE agreement_id = $1 \
             ORDER BY installment_id, attempt_no"
        );
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, AttemptRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(agreement_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Attempts in `state` (e.g. `rejected`), oldest first, for `repayd attempts list`.
    pub async fn attempts_in_state(&self, state: &str, limit: i64) -> Result<Vec<AttemptRow>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM debit_attempts WHERE state = $1 ORDER BY id LIMIT $2"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AttemptRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(state)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// An operator's re-queue of a `rejected` attempt after fixing the cause: back to
    /// `scheduled` at `now_ms` under the same attempt and idempotency key (the gateway
    /// refused it before acting, so the key is unused), its funds check to be done again,
    /// with a `debit_requeued` event naming the actor and reason, in one transaction.
    /// Fails with `Conflict` unless the attempt is `rejected`.
    pub async fn requeue_rejected_attempt(
        &self,
        attempt_id: i64,
        actor: &crate::domain::Actor,
        now_ms: i64,
    ) -> Result<AttemptRow> {
        let select = format!("SELECT {ATTEMPT_COLUMNS} FROM debit_attempts WHERE id = $1");
        let row = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let before = sqlx::query_as::<_, AttemptRow>(sqlx::AssertSqlSafe(select.clone()))
                .bind(attempt_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "debit attempt",
                    id: attempt_id.to_string(),
                })?;
            let updated = sqlx::query(
                "UPDATE debit_attempts SET state = 'scheduled', scheduled_at_ms = $1, \
                    funds_checked_at_ms = NULL, finished_at_ms = NULL, outcome_code = NULL, \
                    outcome_detail = NULL, reconcile_count = 0, lease_owner = NULL, \
                    lease_until_ms = NULL, updated_at_ms = $1 \
                 WHERE id = $2 AND state = 'rejected'",
            )
            .bind(now_ms)
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "debit attempt {attempt_id} is {}, not rejected: only a rejected attempt can be re-queued",
                    before.state
                )));
            }
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: "debit_requeued",
                    agreement_id: Some(before.agreement_id),
                    installment_id: Some(before.installment_id),
                    attempt_id: Some(attempt_id),
                    detail: actor.stamp(serde_json::json!({
                        "attempt_no": before.attempt_no,
                        "previous_outcome": before.outcome_code,
                    })),
                }
            )?;
            let after = sqlx::query_as::<_, AttemptRow>(sqlx::AssertSqlSafe(select.clone()))
                .bind(attempt_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            after
        });
        Ok(row)
    }

    /// Attempts per state, for logs, metrics and tests.
    pub async fn attempt_state_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT state, COUNT(*) FROM debit_attempts GROUP BY state ORDER BY state",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The earliest instant at which some attempt will need work, if any.
    pub async fn next_attempt_due_ms(&self) -> Result<Option<i64>> {
        let next = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                // One MIN per claim kind: each is read from the end of its partial index.
                "SELECT MIN(t) FROM ( \
                   SELECT MIN(scheduled_at_ms) AS t FROM debit_attempts WHERE state = 'scheduled' \
                   UNION ALL \
                   SELECT MIN(scheduled_at_ms) FROM debit_attempts \
                    WHERE state IN ('unknown', 'pending') \
                   UNION ALL \
                   SELECT MIN(lease_until_ms) FROM debit_attempts \
                    WHERE state IN ('claimed', 'funds_checked', 'submitted')) AS due",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(next)
    }
}

/// The fenced attempt update (`$1`-`$16`, bound by [`bind_attempt_update!`], or by number
/// on the committer's own connection: `$16` appears before `$13`).
const UPDATE_ATTEMPT: &str = "UPDATE debit_attempts SET state = $1, \
        amount_minor = COALESCE($2, amount_minor), \
        scheduled_at_ms = COALESCE($3, scheduled_at_ms), \
        funds_checked_at_ms = COALESCE($4, funds_checked_at_ms), \
        submitted_at_ms = COALESCE($5, submitted_at_ms), \
        finished_at_ms = COALESCE($6, finished_at_ms), \
        outcome_code = COALESCE($7, outcome_code), \
        outcome_detail = COALESCE($8, outcome_detail), \
        gateway_ref = COALESCE($9, gateway_ref), \
        reconcile_count = reconcile_count + $10, \
        lease_owner = CASE WHEN $11 = 1 THEN NULL ELSE lease_owner END, \
        lease_until_ms = CASE WHEN $11 = 1 THEN NULL ELSE lease_until_ms END, \
        updated_at_ms = $12, \
        funding_account_id = COALESCE($16, funding_account_id) \
     WHERE id = $13 AND state = $14 AND lease_owner = $15";

/// Binds [`UPDATE_ATTEMPT`]'s `$1`-`$16` to a query on either backend.
macro_rules! bind_attempt_update {
    ($q:expr, $fence:expr, $change:expr, $now_ms:expr) => {{
        let (fence, change): (&Fence, &AttemptChange) = ($fence, $change);
        $q.bind(change.state)
            .bind(change.amount_minor)
            .bind(change.scheduled_at_ms)
            .bind(change.funds_checked_at_ms)
            .bind(change.submitted_at_ms)
            .bind(change.finished_at_ms)
            .bind(change.outcome_code.as_deref())
            .bind(change.outcome_detail.as_deref())
            .bind(change.gateway_ref.as_deref())
            .bind(i64::from(change.bump_reconcile_count))
            .bind(i64::from(change.release_lease))
            .bind($now_ms)
            .bind(fence.attempt_id)
            .bind(fence.expected_state.as_str())
            .bind(fence.owner.as_str())
            .bind(change.funding_account_id)
    }};
}
use bind_attempt_update;

/// The event of a retry planned by an attempt's outcome (`id` the new attempt's).
fn retry_planned_event(next: &NewAttempt, id: i64, now_ms: i64) -> NewEvent {
    NewEvent {
        at_ms: now_ms,
        kind: "debit_attempt_planned",
        agreement_id: Some(next.agreement_id),
        installment_id: Some(next.installment_id),
        attempt_id: Some(id),
        detail: serde_json::json!({
            "attempt_no": next.attempt_no,
            "scheduled_at_ms": next.scheduled_at_ms,
            "reason": "retry",
            "retry_reason": next.retry_reason,
        }),
    }
}

/// [`Store::apply_attempt_change`] on SQLite's writer: the group committer's own
/// connection ([`super::group_commit::GroupCommit::run_native`]), the same statements as
/// the other path in the same order, each a function call. If the fence did not hold,
/// nothing is written.
fn apply_attempt_change_native(
    conn: &rusqlite::Connection,
    fence: &Fence,
    change: &AttemptChange,
    effects: &Effects,
    now_ms: i64,
) -> Result<Applied> {
    use super::group_commit::{execute_numbered, query_numbered};
    let updated = execute_numbered(
        conn,
        UPDATE_ATTEMPT,
        &[
            &change.state,
            &change.amount_minor,
            &change.scheduled_at_ms,
            &change.funds_checked_at_ms,
            &change.submitted_at_ms,
            &change.finished_at_ms,
            &change.outcome_code,
            &change.outcome_detail,
            &change.gateway_ref,
            &i64::from(change.bump_reconcile_count),
            &i64::from(change.release_lease),
            &now_ms,
            &fence.attempt_id,
            &fence.expected_state,
            &fence.owner,
            &change.funding_account_id,
        ],
    )?;
    if updated != 1 {
        return Err(StoreError::Fenced {
            attempt_id: fence.attempt_id,
            expected_state: fence.expected_state.clone(),
        });
    }
    let mut applied = Applied::default();
    if let Some(p) = &effects.payment {
        applied = apply_payment_native(conn, p, fence.attempt_id)?;
    }
    if let Some(next) = &effects.next_attempt {
        let id: Option<i64> = query_numbered(
            conn,
            INSERT_ATTEMPT,
            &[
                &next.installment_id,
                &next.agreement_id,
                &next.attempt_no,
                &next.idempotency_key,
                &next.scheduled_at_ms,
                &next.amount_minor,
                &next.currency,
                &now_ms,
                &next.retry_reason,
            ],
            |row| row.get(0),
        )?;
        if let Some(id) = id {
            super::insert_event_native(conn, &retry_planned_event(next, id, now_ms))?;
        }
    }
    if let Some(r) = &effects.reminder {
        super::reminders::insert_reminder_native(conn, r, now_ms)?;
    }
    for ev in &effects.events {
        super::insert_event_native(conn, ev)?;
    }
    Ok(applied)
}

/// What [`apply_payment_sql!`] does, on the committer's own connection.
fn apply_payment_native(
    conn: &rusqlite::Connection,
    p: &PaymentApplied,
    except_attempt: i64,
) -> Result<Applied> {
    use super::group_commit::{execute_numbered, query_numbered};
    let mut applied = Applied::default();
    let (total, paid): (i64, i64) =
        query_numbered(conn, INSTALLMENT_AMOUNTS, &[&p.installment_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .ok_or_else(|| StoreError::NotFound {
            what: "installment",
            id: p.installment_id.to_string(),
        })?;
    let take = p.amount_minor.min(total - paid).max(0);
    applied.installment_paid = paid + take >= total;
    // What is left settles the installment's open charges (late fees), oldest first.
    let mut rest = p.amount_minor - take;
    if rest > 0 {
        let open: Vec<(i64, i64)> = super::group_commit::query_all_numbered(
            conn,
            OPEN_CHARGES,
            &[&p.installment_id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        for (charge_id, owed) in open {
            let pay = rest.min(owed);
            if pay <= 0 {
                break;
            }
            execute_numbered(conn, PAY_CHARGE, &[&pay, &p.at_ms, &charge_id])?;
            rest -= pay;
        }
    }
    applied.excess_minor = rest;
    execute_numbered(conn, PAY_INSTALLMENT, &[&take, &p.at_ms, &p.installment_id])?;
    if applied.installment_paid {
        execute_numbered(conn, CANCEL_PAID_REMINDERS, &[&p.at_ms, &p.installment_id])?;
        execute_numbered(
            conn,
            CANCEL_LATER_ATTEMPTS,
            &[&p.at_ms, &p.installment_id, &except_attempt],
        )?;
        applied.agreement_completed =
            execute_numbered(conn, COMPLETE_AGREEMENT, &[&p.at_ms, &p.agreement_id])? == 1;
    }
    Ok(applied)
}

/// A new attempt (`$1`-`$9`, see [`insert_attempt_sql!`]), `ON CONFLICT DO NOTHING`,
/// returning its id.
pub(crate) const INSERT_ATTEMPT: &str = "INSERT INTO debit_attempts (installment_id, agreement_id, \
         attempt_no, idempotency_key, scheduled_at_ms, amount_minor, currency, state, \
         reconcile_count, created_at_ms, updated_at_ms, retry_reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'scheduled', 0, $8, $8, $9) \
     ON CONFLICT DO NOTHING RETURNING id";

/// An installment's total and what is paid of it (`$1` the installment).
pub(crate) const INSTALLMENT_AMOUNTS: &str =
    "SELECT total_minor, paid_minor FROM installments WHERE id = $1";

/// An installment's open charges, oldest first, with what is still owed of each (`$1`).
pub(crate) const OPEN_CHARGES: &str = "SELECT id, amount_minor - paid_minor - waived_minor FROM charges \
     WHERE installment_id = $1 AND status = 'open' ORDER BY id";

/// `$1` paid to the open charge `$3` at `$2`.
pub(crate) const PAY_CHARGE: &str = "UPDATE charges SET paid_minor = paid_minor + $1, \
        status = CASE WHEN paid_minor + waived_minor + $1 >= amount_minor THEN 'paid' ELSE status END, \
        settled_at_ms = CASE WHEN paid_minor + waived_minor + $1 >= amount_minor THEN $2 ELSE settled_at_ms END, \
        updated_at_ms = $2 \
     WHERE id = $3 AND status = 'open'";

/// `$1` (what the installment takes of a payment) paid to installment `$3` at `$2`.
pub(crate) const PAY_INSTALLMENT: &str = "UPDATE installments SET paid_minor = paid_minor + $1, \
        status = CASE WHEN paid_minor + $1 >= total_minor THEN 'paid' ELSE status END, \
        paid_at_ms = CASE WHEN paid_minor + $1 >= total_minor THEN $2 ELSE paid_at_ms END \
     WHERE id = $3";

/// A paid installment's (`$2`) pending pre-due reminders and overdue escalations
/// cancelled at `$1`: they must never go out.
pub(crate) const CANCEL_PAID_REMINDERS: &str = "UPDATE reminders SET state = 'cancelled', \
        cancel_reason = 'installment_paid', updated_at_ms = $1 \
     WHERE installment_id = $2 AND state = 'pending' \
       AND kind IN ('upcoming', 'overdue', 'credit_warning')";

/// A paid installment's (`$2`) later planned attempts, other than `$3`, cancelled at `$1`:
/// they must never run.
pub(crate) const CANCEL_LATER_ATTEMPTS: &str = "UPDATE debit_attempts SET state = 'cancelled', \
        finished_at_ms = $1, outcome_code = 'installment_paid', updated_at_ms = $1 \
     WHERE installment_id = $2 AND state = 'scheduled' AND id <> $3";

/// Agreement `$2` completed at `$1` once no installment of it is unpaid: one statement,
/// whose row count says whether this payment completed it.
pub(crate) const COMPLETE_AGREEMENT: &str = "UPDATE agreements SET status = 'completed', updated_at_ms = $1 \
     WHERE id = $2 AND status = 'active' AND NOT EXISTS \
       (SELECT 1 FROM installments WHERE agreement_id = $2 AND status = 'unpaid')";

/// Inserts an attempt with `ON CONFLICT DO NOTHING`; evaluates to `Option<i64>` (the new
/// id, or `None` if it already existed).
macro_rules! insert_attempt_sql {
    ($conn:expr, $a:expr, $now_ms:expr) => {{
        let a: &NewAttempt = $a;
        sqlx::query_scalar::<_, i64>($crate::store::debits::INSERT_ATTEMPT)
            .bind(a.installment_id)
            .bind(a.agreement_id)
            .bind(a.attempt_no)
            .bind(a.idempotency_key.as_str())
            .bind(a.scheduled_at_ms)
            .bind(a.amount_minor)
            .bind(a.currency.as_str())
            .bind($now_ms)
            .bind(a.retry_reason.as_deref())
            .fetch_optional($conn)
            .await?
    }};
}
pub(crate) use insert_attempt_sql;

/// Settles an installment's open charges (late fees), oldest first, with `$rest` of the
/// payment `$p` (what the installment itself did not take); evaluates to what is left
/// after them (the excess). Nothing is read when nothing is left.
macro_rules! pay_charges_sql {
    ($conn:expr, $p:expr, $rest:expr) => {{
        let p: &PaymentApplied = $p;
        let mut rest: i64 = $rest;
        if rest > 0 {
            let open: Vec<(i64, i64)> = sqlx::query_as($crate::store::debits::OPEN_CHARGES)
                .bind(p.installment_id)
                .fetch_all(&mut *$conn)
                .await?;
            for (charge_id, owed) in open {
                let pay = rest.min(owed);
                if pay <= 0 {
                    break;
                }
                sqlx::query($crate::store::debits::PAY_CHARGE)
                    .bind(pay)
                    .bind(p.at_ms)
                    .bind(charge_id)
                    .execute(&mut *$conn)
                    .await?;
                rest -= pay;
            }
        }
        rest
    }};
}
pub(crate) use pay_charges_sql;

/// Applies money received to one installment inside a transaction: never more than is
/// owed (the excess is reported), and once the installment is paid its pending pre-due
/// reminders and planned debit attempts (other than `except_attempt`) are cancelled and,
/// when nothing is left unpaid, the agreement is completed. Evaluates to [`Applied`].
macro_rules! apply_payment_sql {
    ($conn:expr, $p:expr, $except_attempt:expr) => {{
        let p: &PaymentApplied = $p;
        let except_attempt: Option<i64> = $except_attempt;
        let mut applied = Applied::default();
        let (total, paid): (i64, i64) = sqlx::query_as($crate::store::debits::INSTALLMENT_AMOUNTS)
            .bind(p.installment_id)
            .fetch_one($conn)
            .await?;
        let take = p.amount_minor.min(total - paid).max(0);
        applied.installment_paid = paid + take >= total;
        // What is left settles the installment's open charges (late fees), oldest first.
        applied.excess_minor =
            $crate::store::debits::pay_charges_sql!($conn, p, p.amount_minor - take);
        sqlx::query($crate::store::debits::PAY_INSTALLMENT)
            .bind(take)
            .bind(p.at_ms)
            .bind(p.installment_id)
            .execute($conn)
            .await?;
        if applied.installment_paid {
            // Pre-due reminders and overdue escalations for a paid installment must never
            // go out.
            sqlx::query($crate::store::debits::CANCEL_PAID_REMINDERS)
                .bind(p.at_ms)
                .bind(p.installment_id)
                .execute($conn)
                .await?;
            // Later planned attempts for a paid installment must never run.
            sqlx::query($crate::store::debits::CANCEL_LATER_ATTEMPTS)
                .bind(p.at_ms)
                .bind(p.installment_id)
                .bind(except_attempt.unwrap_or(0))
                .execute($conn)
                .await?;
            // The agreement is complete once no installment is unpaid: one statement,
            // which also says whether this payment completed it.
            applied.agreement_completed = sqlx::query($crate::store::debits::COMPLETE_AGREEMENT)
                .bind(p.at_ms)
                .bind(p.agreement_id)
                .execute($conn)
                .await?
                .rows_affected()
                == 1;
        }
        applied
    }};
}
pub(crate) use apply_payment_sql;
