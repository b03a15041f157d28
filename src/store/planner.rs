//! The planner's reads and writes: installments that still need a debit attempt or
//! their pre-due reminders, and one transaction per page that writes both.
//!
//! A pass walks the installments in id order, one id window at a time. Every table the
//! planner writes is keyed by installment or agreement first (unique keys, foreign keys,
//! the per-customer and per-agreement indexes, the event log), and ids grow with the
//! agreement they belong to, so the rows of a page land side by side at the end of each
//! index: the pages a commit dirties are few and stay in SQLite's page cache. Walking in
//! due-date order (as the planner did) put every row of a page into a different leaf of
//! each of those indexes, so each commit wrote a leaf per row and index, and the cost per
//! row grew with the portfolio.

use super::debits::NewAttempt;
use super::reminders::NewReminder;
use super::{NewEvent, Result, Store, WriteTx};

/// An installment due within the planning horizon that lacks its first debit attempt,
/// its pre-due reminders, or both.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlanCandidate {
    pub installment_id: i64,
    pub agreement_id: i64,
    pub customer_id: i64,
    pub seq: i64,
    pub due_date: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub currency: String,
    pub time_zone: String,
    /// No debit attempt exists yet.
    pub needs_attempt: bool,
    /// No pre-due (`upcoming`) reminder exists yet (always false when reminders are not
    /// asked for).
    pub needs_reminders: bool,
}

/// What one page of planning wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanWritten {
    pub attempts: u64,
    pub reminders: u64,
}

impl Store {
    /// On SQLite, the writer's planning page cache ([`super::SqliteCaches`]) for the
    /// length of a planning pass (`on`), and its everyday one after (SQLite frees the
    /// pages over it): each page of a pass adds rows at a few hundred places of the claim
    /// indexes (keyed by time), and with a small cache those leaves were read back from
    /// the file for every page. No-op on PostgreSQL (shared buffers).
    pub async fn planning_cache(&self, on: bool) -> Result<()> {
        if let super::Inner::Sqlite(pool) = &self.inner {
            let kib = if on {
                self.caches.planning_kib
            } else {
                self.caches.connection_kib
            };
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA cache_size = -{kib}")))
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The highest installment id (0 without installments): where a planning pass stops.
    pub async fn last_installment_id(&self) -> Result<i64> {
        let id = on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COALESCE(MAX(id), 0) FROM installments")
                .fetch_one(pool)
                .await?
        });
        Ok(id)
    }

    /// Unpaid installments of active agreements due on or before `horizon_date`, with an
    /// id in `(after_id, upto_id]`, that need a debit attempt or (if `reminders`) their
    /// pre-due reminders: at most `limit`, in id order. The id range is read through the
    /// primary key (a range of the table itself, no sort), so a pass reads each
    /// installment once however many pages it takes.
    pub async fn plan_candidates(
        &self,
        horizon_date: &str,
        after_id: i64,
        upto_id: i64,
        limit: i64,
        reminders: bool,
    ) -> Result<Vec<PlanCandidate>> {
        // SQLite would read the id range through the open-by-due index and sort it (its
        // statistics cannot tell that the id range is the narrow part): NOT INDEXED keeps
        // it on the table's own rowid order. PostgreSQL picks the primary key by itself.
        let table = match self.backend() {
            super::Backend::Sqlite => "installments i NOT INDEXED",
            super::Backend::Postgres => "installments i",
        };
        let sql = format!(
            "SELECT * FROM ( \
                   SELECT i.id AS installment_id, i.agreement_id, a.customer_id, i.seq, i.due_date, \
                          i.total_minor, i.paid_minor, a.currency, c.time_zone, \
                          NOT EXISTS (SELECT 1 FROM debit_attempts d \
                                      WHERE d.installment_id = i.id) AS needs_attempt, \
                          ($5 AND NOT EXISTS (SELECT 1 FROM reminders r \
                                              WHERE r.installment_id = i.id \
                                                AND r.kind = 'upcoming')) AS needs_reminders \
                   FROM {table} \
                   JOIN agreements a ON a.id = i.agreement_id \
                   JOIN customers c ON c.id = a.customer_id \
                   WHERE i.id > $2 AND i.id <= $3 \
                     AND i.status = 'unpaid' AND i.due_date <= $1 \
                     AND a.status = 'active' \
                 ) p \
                 WHERE p.needs_attempt OR p.needs_reminders \
                 ORDER BY p.installment_id LIMIT $4"
        );
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, PlanCandidate>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(horizon_date)
                .bind(after_id)
                .bind(upto_id)
                .bind(limit)
                .bind(reminders)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Writes one page of planning in one transaction: the debit attempts (skipping any
    /// that exist, e.g. planned by another daemon meanwhile), each new attempt's event,
    /// and the reminders, each with its customer's id (likewise). Returns how many of
    /// each were new.
    pub async fn insert_plan(
        &self,
        attempts: &[(NewAttempt, NewEvent)],
        reminders: &[(NewReminder, i64)],
        now_ms: i64,
    ) -> Result<PlanWritten> {
        if attempts.is_empty() && reminders.is_empty() {
            return Ok(PlanWritten::default());
        }
        let backend = self.backend();
        let written = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let attempts_created = insert_attempt_rows!(&mut *tx, backend, attempts);
            let mut created = 0_u64;
            for chunk in reminders.chunks(super::ROWS_PER_INSERT) {
                let sql = format!(
                    "INSERT INTO reminders (installment_id, agreement_id, customer_id, kind, \
                         offset_key, scheduled_at_ms, state, detail, created_at_ms, \
                         updated_at_ms) \
                     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, \
                            v.column6, 'pending', v.column7, v.column8, v.column8 \
                     FROM (VALUES {}) AS v WHERE true \
                     ON CONFLICT DO NOTHING",
                    super::placeholders(backend, 8, chunk.len())
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .persistent(super::keep_prepared(chunk.len()));
                for (r, customer_id) in chunk {
                    q = q
                        .bind(r.installment_id)
                        .bind(r.agreement_id)
                        .bind(*customer_id)
                        .bind(r.kind)
                        .bind(r.offset_key)
                        .bind(r.scheduled_at_ms)
                        .bind(r.detail.to_string())
                        .bind(now_ms);
                }
                created += q.execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            PlanWritten {
                attempts: attempts_created,
                reminders: created,
            }
        });
        Ok(written)
    }
}
