//! The operations console's reads (`/console`, see `src/console/`). Every query here is
//! served by an index (migration 0010 adds the ones the pages need) and reads only the
//! rows a page counts or shows: a day's installments, the overdue agreements, the head of
//! each queue, one agreement's or one customer's rows. Lists are bounded by `limit`.

use super::agreements::{AgreementRow, CustomerRow, FundingAccountRow};
use super::{EventRow, Result, Store};

/// Replaces the kept figures of `$day` with `$rows` (`&[DueFigureRow]`) on `$conn` (a
/// transaction of either backend), stamped `$now_ms`.
macro_rules! keep_day_figures {
    ($conn:expr, $day:expr, $now_ms:expr, $rows:expr) => {{
        let (day, rows): (&str, &[DueFigureRow]) = ($day, $rows);
        sqlx::query(
            "INSERT INTO console_days (due_date, refreshed_at_ms) VALUES ($1, $2) \
             ON CONFLICT (due_date) DO UPDATE SET refreshed_at_ms = excluded.refreshed_at_ms",
        )
        .bind(day)
        .bind($now_ms)
        .execute(&mut *$conn)
        .await?;
        sqlx::query("DELETE FROM console_day_figures WHERE due_date = $1")
            .bind(day)
            .execute(&mut *$conn)
            .await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO console_day_figures (due_date, currency, state, installments, \
                     due_minor, paid_minor, funds_checked) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(day)
            .bind(&r.currency)
            .bind(&r.state)
            .bind(r.installments)
            .bind(r.due_minor)
            .bind(r.paid_minor)
            .bind(r.funds_checked)
            .execute(&mut *$conn)
            .await?;
        }
    }};
}

/// Installments due on one day, of one currency, whose latest debit attempt is in one
/// state (`none` when no attempt was planned yet).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueFigureRow {
    pub currency: String,
    pub state: String,
    pub installments: i64,
    pub due_minor: i64,
    pub paid_minor: i64,
    /// Of these, how many had their funds checked by that latest attempt.
    pub funds_checked: i64,
}

/// A kept day's figure ([`Store::console_kept_days`]): `currency` and the rest are `None`
/// for a day with no installment due.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct KeptDayRow {
    pub due_date: String,
    pub currency: Option<String>,
    pub state: Option<String>,
    pub installments: Option<i64>,
    pub due_minor: Option<i64>,
    pub paid_minor: Option<i64>,
    pub funds_checked: Option<i64>,
}

impl KeptDayRow {
    /// The figure, unless the row only says the day is kept.
    pub fn figure(&self) -> Option<DueFigureRow> {
        Some(DueFigureRow {
            currency: self.currency.clone()?,
            state: self.state.clone()?,
            installments: self.installments?,
            due_minor: self.due_minor?,
            paid_minor: self.paid_minor?,
            funds_checked: self.funds_checked?,
        })
    }
}

/// Overdue agreements of one currency in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BucketRow {
    pub currency: String,
    pub bucket_index: Option<i64>,
    pub bucket: Option<String>,
    pub agreements: i64,
    pub amount_minor: i64,
}

/// An overdue agreement with its customer (credit-warning list, overdue lists).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OverdueAccountRow {
    pub agreement_id: i64,
    pub agreement_external_id: String,
    pub customer_id: i64,
    pub customer_external_id: String,
    pub customer_name: String,
    pub customer_email: String,
    pub currency: String,
    pub dpd: i64,
    pub bucket: Option<String>,
    pub credit_flag: String,
    pub amount_overdue_minor: i64,
}

/// How many events of one kind moved agreements into one bucket (`bucket` `None`: out
/// of overdue, or a move whose detail names no bucket).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MoveRow {
    pub kind: String,
    pub bucket: Option<String>,
    pub moves: i64,
}

/// Retries planned in one 15-minute slot (`slot` counts [`RETRY_SLOT_MS`] since
/// 1970-01-01 UTC): the console folds slots into the operations' local days, whatever
/// their zone's offset (whole, half or quarter hours).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RetrySlotRow {
    pub slot: i64,
    pub currency: String,
    pub attempts: i64,
    pub amount_minor: i64,
}

/// A debit attempt waiting in a queue, with its agreement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedAttemptRow {
    pub id: i64,
    pub agreement_id: i64,
    pub agreement_external_id: String,
    pub attempt_no: i64,
    pub idempotency_key: String,
    pub scheduled_at_ms: i64,
    pub updated_at_ms: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub state: String,
    pub outcome_code: Option<String>,
    pub outcome_detail: Option<String>,
    pub reconcile_count: i64,
}

/// A customer email waiting in a queue (deferred or failed), with its agreement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedEmailRow {
    pub id: i64,
    pub agreement_id: i64,
    pub agreement_external_id: String,
    pub kind: String,
    pub state: String,
    pub tries: i64,
    pub scheduled_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_error: Option<String>,
}

/// A payment received for an agreement.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentListRow {
    pub id: i64,
    pub reference: String,
    pub amount_minor: i64,
    pub currency: String,
    pub received_at_ms: i64,
    pub settlement: i64,
    pub waived_minor: i64,
}

/// One search hit: an agreement with its customer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SearchHit {
    pub agreement_id: i64,
    pub agreement_external_id: String,
    pub agreement_status: String,
    pub currency: String,
    pub total_minor: i64,
    pub customer_id: i64,
    pub customer_external_id: String,
    pub customer_name: String,
    pub customer_email: String,
}

/// The slot of [`RetrySlotRow`]: 15 minutes, the finest offset any time zone has.
pub const RETRY_SLOT_MS: i64 = 900_000;

/// One day's figures ([`Store::console_due_figures`]) on PostgreSQL, `$1` the day. Each
/// installment's currency and latest attempt are looked up by index, one row at a time:
/// as joins, PostgreSQL hashes the whole agreements and debit_attempts tables for a few
/// thousand rows.
const DUE_FIGURES_SQL_POSTGRES: &str = "WITH t AS MATERIALIZED ( \
         SELECT i.total_minor, i.paid_minor, \
             (SELECT a.currency FROM agreements a WHERE a.id = i.agreement_id) AS currency, \
             (SELECT d.state FROM debit_attempts d WHERE d.installment_id = i.id \
              ORDER BY d.attempt_no DESC LIMIT 1) AS state, \
             (SELECT CASE WHEN d.funds_checked_at_ms IS NULL THEN 0 ELSE 1 END \
              FROM debit_attempts d WHERE d.installment_id = i.id \
              ORDER BY d.attempt_no DESC LIMIT 1) AS checked \
         FROM installments i \
         WHERE i.due_date = $1 AND i.status IN ('paid', 'unpaid')) \
     SELECT currency, COALESCE(state, 'none') AS state, \
         CAST(COUNT(*) AS BIGINT) AS installments, \
         CAST(SUM(total_minor) AS BIGINT) AS due_minor, \
         CAST(SUM(paid_minor) AS BIGINT) AS paid_minor, \
         CAST(SUM(COALESCE(checked, 0)) AS BIGINT) AS funds_checked \
     FROM t GROUP BY 1, 2 ORDER BY 1, 2";

/// The same on SQLite. Each installment's latest attempt (its number from the unique
/// index, then the row's state, funds check and currency from debit_attempts_latest, an
/// index-only read: migration 0018) and, only for an installment with no attempt yet, its
/// agreement's currency. Looking up the agreement for every installment was most of the
/// Today page's time at 1,000,000 agreements (a descent in the largest table per row).
/// INDEXED BY keeps the index-only read whether or not statistics know the index.
/// MATERIALIZED keeps SQLite from looking the rows up again to group them.
const DUE_FIGURES_SQL_SQLITE: &str = "WITH t AS MATERIALIZED ( \
         SELECT i.total_minor, i.paid_minor, \
             COALESCE(d.currency, \
                 (SELECT a.currency FROM agreements a WHERE a.id = i.agreement_id)) AS currency, \
             d.state AS state, \
             CASE WHEN d.funds_checked_at_ms IS NULL THEN 0 ELSE 1 END AS checked \
         FROM installments i \
         LEFT JOIN debit_attempts d INDEXED BY debit_attempts_latest \
             ON d.installment_id = i.id \
             AND d.attempt_no = (SELECT MAX(x.attempt_no) FROM debit_attempts x \
                                 WHERE x.installment_id = i.id) \
         WHERE i.due_date = $1 AND i.status IN ('paid', 'unpaid')) \
     SELECT currency, COALESCE(state, 'none') AS state, \
         CAST(COUNT(*) AS BIGINT) AS installments, \
         CAST(SUM(total_minor) AS BIGINT) AS due_minor, \
         CAST(SUM(paid_minor) AS BIGINT) AS paid_minor, \
         CAST(SUM(checked) AS BIGINT) AS funds_checked \
     FROM t GROUP BY 1, 2 ORDER BY 1, 2";

const HIT_COLUMNS: &str = "a.id AS agreement_id, a.external_id AS agreement_external_id, \
    a.status AS agreement_status, a.currency, a.total_minor, c.id AS customer_id, \
    c.external_id AS customer_external_id, c.name AS customer_name, c.email AS customer_email";

const QUEUED_ATTEMPT_COLUMNS: &str = "d.id, d.agreement_id, a.external_id AS agreement_external_id, \
    d.attempt_no, d.idempotency_key, d.scheduled_at_ms, d.updated_at_ms, d.amount_minor, \
    d.currency, d.state, d.outcome_code, d.outcome_detail, d.reconcile_count";

const QUEUED_EMAIL_COLUMNS: &str = "r.id, r.agreement_id, a.external_id AS agreement_external_id, \
    r.kind, r.state, r.tries, r.scheduled_at_ms, r.updated_at_ms, r.last_error";

const OVERDUE_ACCOUNT_COLUMNS: &str = "a.id AS agreement_id, a.external_id AS agreement_external_id, \
    c.id AS customer_id, c.external_id AS customer_external_id, c.name AS customer_name, \
    c.email AS customer_email, a.currency, d.dpd, d.bucket, d.credit_flag, d.amount_overdue_minor";

impl Store {
    fn due_figures_sql(&self) -> &'static str {
        match self.backend() {
            super::Backend::Sqlite => DUE_FIGURES_SQL_SQLITE,
            super::Backend::Postgres => DUE_FIGURES_SQL_POSTGRES,
        }
    }

    /// The installments due on `day` (YYYY-MM-DD, not cancelled) by currency and by the
    /// state of each one's latest debit attempt, read live. One index range over the
    /// day's installments, index probes each for its agreement and its latest attempt.
    pub async fn console_due_figures(&self, day: &str) -> Result<Vec<DueFigureRow>> {
        let sql = self.due_figures_sql();
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, DueFigureRow>(sql)
                .bind(day)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// The days in `[from, to]` whose figures are kept (migration 0017) and still true:
    /// no installment or debit attempt due that day changed since they were refreshed.
    /// One row per kept figure, and one with `currency` `None` for a day with none. One
    /// statement, so one snapshot: a day is listed only with the figures of that moment.
    pub async fn console_kept_days(&self, from: &str, to: &str) -> Result<Vec<KeptDayRow>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, KeptDayRow>(
                "SELECT s.due_date, f.currency, f.state, f.installments, f.due_minor, \
                        f.paid_minor, f.funds_checked \
                 FROM console_days s \
                 LEFT JOIN console_day_figures f ON f.due_date = s.due_date \
                 WHERE s.due_date >= $1 AND s.due_date <= $2 \
                   AND NOT EXISTS (SELECT 1 FROM console_day_changes c \
                                   WHERE c.due_date = s.due_date) \
                 ORDER BY s.due_date, f.currency, f.state",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The last day whose changes the triggers of migration 0017 note: tomorrow in UTC by
    /// the database's clock. A day after it may not be kept (its changes would go
    /// unnoticed).
    pub async fn console_noted_until(&self) -> Result<String> {
        let day = match &self.inner {
            super::Inner::Sqlite(pool) => {
                sqlx::query_scalar::<_, String>("SELECT date('now', '+1 day')")
                    .fetch_one(pool)
                    .await?
            }
            super::Inner::Postgres(pool) => {
                sqlx::query_scalar::<_, String>("SELECT console_day_horizon()")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(day)
    }

    /// Reads `day`'s figures live and keeps them (`console_day_figures`), removing the
    /// notes of changes they take in; a change committed after the read keeps its note,
    /// so the day is read live until the next refresh. Returns the figures kept.
    ///
    /// SQLite: the figures and the largest note id are read in one snapshot on a reader,
    /// then written in a short write transaction (the writer is not held during the
    /// read); note ids only grow and writes are serial, so the notes up to that id are
    /// exactly those the read took in. PostgreSQL: one REPEATABLE READ transaction reads
    /// and writes, and its DELETE sees only the notes of its snapshot.
    pub async fn refresh_console_day(&self, day: &str, now_ms: i64) -> Result<Vec<DueFigureRow>> {
        match &self.inner {
            super::Inner::Sqlite(writer) => {
                let pool = self.readers.as_ref().unwrap_or(writer);
                let mut tx = pool.begin().await?;
                let seen = sqlx::query_scalar::<_, i64>(
                    "SELECT COALESCE(MAX(id), 0) FROM console_day_changes",
                )
                .fetch_one(&mut *tx)
                .await?;
                let rows = sqlx::query_as::<_, DueFigureRow>(DUE_FIGURES_SQL_SQLITE)
                    .bind(day)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                let (day, kept) = (day.to_string(), rows.clone());
                super::write_tx!(self, |conn| {
                    keep_day_figures!(conn, &day, now_ms, &kept);
                    sqlx::query("DELETE FROM console_day_changes WHERE due_date = $1 AND id <= $2")
                        .bind(&day)
                        .bind(seen)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })?;
                Ok(rows)
            }
            super::Inner::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .execute(&mut *tx)
                    .await?;
                let rows = sqlx::query_as::<_, DueFigureRow>(DUE_FIGURES_SQL_POSTGRES)
                    .bind(day)
                    .fetch_all(&mut *tx)
                    .await?;
                keep_day_figures!(tx, day, now_ms, &rows);
                sqlx::query("DELETE FROM console_day_changes WHERE due_date = $1")
                    .bind(day)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(rows)
            }
        }
    }

    /// Forgets the kept figures and the notes of days before `day` (out of the chart).
    pub async fn console_forget_days_before(&self, day: &str) -> Result<()> {
        let day = day.to_string();
        super::write_tx!(self, |conn| {
            for sql in [
                "DELETE FROM console_day_figures WHERE due_date < $1",
                "DELETE FROM console_days WHERE due_date < $1",
                "DELETE FROM console_day_changes WHERE due_date < $1",
            ] {
                sqlx::query(sql).bind(&day).execute(&mut *conn).await?;
            }
            Ok(())
        })
    }

    /// Overdue agreements (days past due above zero) by currency and bucket.
    pub async fn console_overdue_buckets(&self) -> Result<Vec<BucketRow>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, BucketRow>(
                // The currency kept on the row (migration 0018), so this reads only
                // the delinquency_overdue index; the agreement's only for a row without.
                "SELECT COALESCE(d.currency, (SELECT a.currency FROM agreements a \
                                              WHERE a.id = d.agreement_id)) AS currency, \
                        d.bucket_index, d.bucket, \
                        CAST(COUNT(*) AS BIGINT) AS agreements, \
                        CAST(SUM(d.amount_overdue_minor) AS BIGINT) AS amount_minor \
                 FROM delinquency d \
                 WHERE d.dpd > 0 \
                 GROUP BY 1, d.bucket_index, d.bucket \
                 ORDER BY 1, d.bucket_index",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// How many agreements became overdue at or after `since_ms`.
    pub async fn console_newly_overdue(&self, since_ms: i64) -> Result<i64> {
        let n = on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                // `IS NOT NULL` (implied by `>=`) steers SQLite to the partial index
                // delinquency_overdue_since instead of every overdue row's table row.
                "SELECT CAST(COUNT(*) AS BIGINT) FROM delinquency \
                 WHERE dpd > 0 AND overdue_since_ms IS NOT NULL AND overdue_since_ms >= $1",
            )
            .bind(since_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Bucket changes and clearings written at or after `since_ms`, counted by kind and
    /// by the bucket moved into (`None` for a clearing), in the database: the events'
    /// details are read where they lie, not brought out to be parsed.
    pub async fn console_moves_since(&self, since_ms: i64) -> Result<Vec<MoveRow>> {
        // The bucket moved into is the detail's "to" (JSON text on both backends).
        let to = match self.backend() {
            super::Backend::Sqlite => "json_extract(detail, '$.to')",
            super::Backend::Postgres => "(detail::jsonb ->> 'to')",
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT kind, CASE WHEN kind = 'delinquency_cleared' THEN NULL ELSE {to} END \
                    AS bucket, CAST(COUNT(*) AS BIGINT) AS moves \
             FROM events \
             WHERE kind IN ('delinquency_bucket_changed', 'delinquency_cleared') \
               AND at_ms >= $1 \
             GROUP BY 1, 2 ORDER BY 1, 2"
        ));
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, MoveRow>(sql)
                .bind(since_ms)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Overdue agreements with `min_dpd <= dpd <= max_dpd`, most days first: with
    /// `max_dpd` one less than the reporting day, the accounts that become reportable
    /// within `max_dpd - min_dpd + 1` days. At most `limit`, and how many there are.
    pub async fn console_overdue_between(
        &self,
        min_dpd: i64,
        max_dpd: i64,
        limit: i64,
    ) -> Result<(Vec<OverdueAccountRow>, i64)> {
        let sql = format!(
            "SELECT {OVERDUE_ACCOUNT_COLUMNS} FROM delinquency d \
             JOIN agreements a ON a.id = d.agreement_id \
             JOIN customers c ON c.id = a.customer_id \
             WHERE d.dpd >= $1 AND d.dpd <= $2 AND d.credit_flag <> 'reportable' \
             ORDER BY d.dpd DESC, d.agreement_id LIMIT $3"
        );
        let sql = sqlx::AssertSqlSafe(sql);
        let (rows, count) = on_read!(self, |pool| {
            let rows = sqlx::query_as::<_, OverdueAccountRow>(sql)
                .bind(min_dpd)
                .bind(max_dpd)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let count = sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM delinquency \
                 WHERE dpd >= $1 AND dpd <= $2 AND credit_flag <> 'reportable'",
            )
            .bind(min_dpd)
            .bind(max_dpd)
            .fetch_one(pool)
            .await?;
            (rows, count)
        });
        Ok((rows, count))
    }

    /// Retries (attempt 2 and later) planned in `[from_ms, to_ms)`, by 15-minute slot and
    /// currency.
    pub async fn console_retries_by_slot(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<RetrySlotRow>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, RetrySlotRow>(
                "SELECT CAST(scheduled_at_ms / 900000 AS BIGINT) AS slot, currency, \
                        CAST(COUNT(*) AS BIGINT) AS attempts, \
                        CAST(SUM(amount_minor) AS BIGINT) AS amount_minor \
                 FROM debit_attempts \
                 WHERE state = 'scheduled' AND attempt_no > 1 \
                   AND scheduled_at_ms >= $1 AND scheduled_at_ms < $2 \
                 GROUP BY 1, currency ORDER BY 1, currency",
            )
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Attempts whose outcome is being looked up (`unknown`, `pending`), oldest first.
    pub async fn console_lookups(&self, limit: i64) -> Result<(Vec<QueuedAttemptRow>, i64)> {
        self.queued_attempts(
            "d.state IN ('unknown', 'pending')",
            "d.scheduled_at_ms, d.id",
            limit,
        )
        .await
    }

    /// Attempts the gateway rejected, waiting for a human, latest first.
    pub async fn console_rejected(&self, limit: i64) -> Result<(Vec<QueuedAttemptRow>, i64)> {
        self.queued_attempts(
            "d.state = 'rejected'",
            "d.updated_at_ms DESC, d.id DESC",
            limit,
        )
        .await
    }

    async fn queued_attempts(
        &self,
        condition: &str,
        order: &str,
        limit: i64,
    ) -> Result<(Vec<QueuedAttemptRow>, i64)> {
        let list = sqlx::AssertSqlSafe(format!(
            "SELECT {QUEUED_ATTEMPT_COLUMNS} FROM debit_attempts d \
             JOIN agreements a ON a.id = d.agreement_id \
             WHERE {condition} ORDER BY {order} LIMIT $1"
        ));
        let count = sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM debit_attempts d WHERE {condition}"
        ));
        let out = on_read!(self, |pool| {
            let rows = sqlx::query_as::<_, QueuedAttemptRow>(list)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let n = sqlx::query_scalar::<_, i64>(count).fetch_one(pool).await?;
            (rows, n)
        });
        Ok(out)
    }

    /// Emails waiting for another try after a transient failure, next first.
    pub async fn console_deferred_emails(&self, limit: i64) -> Result<(Vec<QueuedEmailRow>, i64)> {
        self.queued_emails(
            "r.state = 'pending' AND r.last_error IS NOT NULL",
            "r.scheduled_at_ms, r.id",
            limit,
        )
        .await
    }

    /// Emails that failed for good, latest first.
    pub async fn console_failed_emails(&self, limit: i64) -> Result<(Vec<QueuedEmailRow>, i64)> {
        self.queued_emails(
            "r.state = 'failed'",
            "r.updated_at_ms DESC, r.id DESC",
            limit,
        )
        .await
    }

    async fn queued_emails(
        &self,
        condition: &str,
        order: &str,
        limit: i64,
    ) -> Result<(Vec<QueuedEmailRow>, i64)> {
        let list = sqlx::AssertSqlSafe(format!(
            "SELECT {QUEUED_EMAIL_COLUMNS} FROM reminders r \
             JOIN agreements a ON a.id = r.agreement_id \
             WHERE {condition} ORDER BY {order} LIMIT $1"
        ));
        let count = sqlx::AssertSqlSafe(format!(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM reminders r WHERE {condition}"
        ));
        let out = on_read!(self, |pool| {
            let rows = sqlx::query_as::<_, QueuedEmailRow>(list)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            let n = sqlx::query_scalar::<_, i64>(count).fetch_one(pool).await?;
            (rows, n)
        });
        Ok(out)
    }

    /// The events of some agreements, in the order they were written (one index range
    /// per agreement).
    pub async fn console_events(&self, agreement_ids: &[i64], limit: i64) -> Result<Vec<EventRow>> {
        let mut all = Vec::new();
        for id in agreement_ids {
            let rows = on_read!(self, |pool| {
                sqlx::query_as::<_, EventRow>(
                    "SELECT id, at_ms, kind, agreement_id, installment_id, attempt_id, detail \
                     FROM events WHERE agreement_id = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(id)
                .bind(limit)
                .fetch_all(pool)
                .await?
            });
            all.extend(rows);
        }
        all.sort_by_key(|e| e.id);
        Ok(all)
    }

    /// Mandate events (written per funding account, with no agreement) of these accounts,
    /// among the latest `scan` of their kinds: one index range on the kind.
    pub async fn console_mandate_events(
        &self,
        account_ids: &[i64],
        scan: i64,
    ) -> Result<Vec<EventRow>> {
        if account_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, EventRow>(
                "SELECT id, at_ms, kind, agreement_id, installment_id, attempt_id, detail \
                 FROM events WHERE kind IN ('mandate_revoked', 'mandate_reinstated') \
                 ORDER BY id DESC LIMIT $1",
            )
            .bind(scan)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter(|e| {
                serde_json::from_str::<serde_json::Value>(&e.detail)
                    .ok()
                    .and_then(|d| d["funding_account_id"].as_i64())
                    .is_some_and(|id| account_ids.contains(&id))
            })
            .collect())
    }

    /// Payments received for an agreement, oldest first.
    pub async fn console_payments(&self, agreement_id: i64) -> Result<Vec<PaymentListRow>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, PaymentListRow>(
                "SELECT id, reference, amount_minor, currency, received_at_ms, \
                        CAST(settlement AS BIGINT) AS settlement, waived_minor \
                 FROM payments WHERE agreement_id = $1 ORDER BY received_at_ms, id",
            )
            .bind(agreement_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// A customer by internal id or external id.
    pub async fn console_customer(&self, key: &str) -> Result<Option<CustomerRow>> {
        let id: Option<i64> = key.parse().ok();
        let row = on_read!(self, |pool| {
            sqlx::query_as::<_, CustomerRow>(
                "SELECT id, external_id, name, email, locale, time_zone, created_at_ms, \
                        updated_at_ms FROM customers WHERE external_id = $1 \
                 UNION ALL \
                 SELECT id, external_id, name, email, locale, time_zone, created_at_ms, \
                        updated_at_ms FROM customers WHERE id = $2 \
                 LIMIT 1",
            )
            .bind(key)
            .bind(id.unwrap_or(-1))
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// An agreement by internal id or external id.
    pub async fn console_agreement(&self, key: &str) -> Result<Option<AgreementRow>> {
        if let Some(row) = self.agreement_by_external_id(key).await? {
            return Ok(Some(row));
        }
        match key.parse::<i64>() {
            Ok(id) => self.agreement(id).await,
            Err(_) => Ok(None),
        }
    }

    /// A customer's agreements and funding accounts.
    pub async fn console_customer_holdings(
        &self,
        customer_id: i64,
    ) -> Result<(Vec<AgreementRow>, Vec<FundingAccountRow>)> {
        let out = on_read!(self, |pool| {
            let agreements = sqlx::query_as::<_, AgreementRow>(
                "SELECT id, external_id, customer_id, funding_account_id, currency, \
                        principal_minor, total_interest_minor, total_fee_minor, total_minor, \
                        method, terms_json, status, content_hash, created_at_ms, updated_at_ms \
                 FROM agreements WHERE customer_id = $1 ORDER BY id",
            )
            .bind(customer_id)
            .fetch_all(pool)
            .await?;
            let accounts = sqlx::query_as::<_, FundingAccountRow>(
                "SELECT id, customer_id, external_ref, mandate_ref, mandate_status, \
                        created_at_ms, updated_at_ms \
                 FROM funding_accounts WHERE customer_id = $1 ORDER BY id",
            )
            .bind(customer_id)
            .fetch_all(pool)
            .await?;
            (agreements, accounts)
        });
        Ok(out)
    }

    /// Agreements matching `q`: an agreement id, a customer id, a debit's idempotency key
    /// or an email exactly, or the start of a customer's name. Each is one index probe or
    /// one index range; at most `limit` hits.
    pub async fn console_search(&self, q: &str, limit: i64) -> Result<Vec<SearchHit>> {
        let q = q.trim();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        // The name range: every name that starts with `q` sorts at or after `q` and
        // before `q` followed by the highest character.
        let upper = format!("{q}\u{10FFFF}");
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {HIT_COLUMNS} FROM agreements a JOIN customers c ON c.id = a.customer_id \
             WHERE a.external_id = $1 \
             UNION \
             SELECT {HIT_COLUMNS} FROM agreements a JOIN customers c ON c.id = a.customer_id \
             WHERE c.external_id = $1 \
             UNION \
             SELECT {HIT_COLUMNS} FROM agreements a JOIN customers c ON c.id = a.customer_id \
             WHERE c.email IN ($1, $2) \
             UNION \
             SELECT {HIT_COLUMNS} FROM agreements a JOIN customers c ON c.id = a.customer_id \
             WHERE a.id = (SELECT d.agreement_id FROM debit_attempts d \
                           WHERE d.idempotency_key = $1) \
             UNION \
             SELECT {HIT_COLUMNS} FROM agreements a JOIN customers c ON c.id = a.customer_id \
             WHERE c.id IN (SELECT n.id FROM customers n WHERE n.name >= $1 AND n.name < $3 \
                            ORDER BY n.name LIMIT $4) \
             ORDER BY 8, 2 LIMIT $4"
        ));
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, SearchHit>(sql)
                .bind(q)
                .bind(q.to_lowercase())
                .bind(&upper)
                .bind(limit)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Runs a script of several statements on SQLite: the benchmark's synthetic
    /// portfolio (`repayd bench --only console`). Never pass user input here.
    pub async fn execute_script(&self, sql: &str) -> Result<()> {
        match &self.inner {
            super::Inner::Sqlite(pool) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(pool)
                    .await?;
                Ok(())
            }
            super::Inner::Postgres(_) => Err(super::StoreError::Conflict(
                "the console benchmark's portfolio script is written for SQLite".into(),
            )),
        }
    }
}
