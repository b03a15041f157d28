//! Customer emails as work rows: planning, claiming with leases, fenced state changes.

use super::{NewEvent, Result, Store, StoreError, WriteTx};

#[derive(Debug, Clone)]
pub struct NewReminder {
    pub installment_id: i64,
    pub agreement_id: i64,
    pub kind: &'static str,
    pub offset_key: i64,
    pub scheduled_at_ms: i64,
    /// What the email must say that is not in the database later (failure, next try).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ReminderRow {
    pub id: i64,
    pub installment_id: i64,
    pub agreement_id: i64,
    pub customer_id: i64,
    pub kind: String,
    pub offset_key: i64,
    pub scheduled_at_ms: i64,
    pub state: String,
    pub lease_owner: Option<String>,
    pub tries: i64,
    pub message_id: Option<String>,
    pub template: Option<String>,
    pub detail: String,
    pub last_error: Option<String>,
    pub cancel_reason: Option<String>,
    pub sent_at_ms: Option<i64>,
}

super::group_commit::native_row!(ReminderRow {
    id,
    installment_id,
    agreement_id,
    customer_id,
    kind,
    offset_key,
    scheduled_at_ms,
    state,
    lease_owner,
    tries,
    message_id,
    template,
    detail,
    last_error,
    cancel_reason,
    sent_at_ms,
});

pub(crate) const REMINDER_COLUMNS: &str = "id, installment_id, agreement_id, customer_id, kind, offset_key, \
    scheduled_at_ms, state, lease_owner, tries, message_id, template, detail, last_error, \
    cancel_reason, sent_at_ms";

/// Everything an email about one installment needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReminderContext {
    pub customer_id: i64,
    pub customer_name: String,
    pub email: String,
    pub locale: String,
    pub time_zone: String,
    pub agreement_external_id: String,
    pub agreement_status: String,
    pub currency: String,
    pub account_ref: String,
    /// The funding account's debit mandate: `active`, `pending` or `revoked`.
    pub mandate_status: String,
    /// The installment's place (1-based) among the agreement's installments that a
    /// reschedule did not replace, as the customer counts them.
    pub seq: i64,
    pub due_date: String,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub installment_status: String,
    pub installment_count: i64,
    /// Still owed on the whole agreement.
    pub remaining_minor: i64,
    /// The next unpaid installment after this one, if any.
    pub next_due_date: Option<String>,
    pub next_due_minor: Option<i64>,
}

/// A change to one reminder, fenced by state and lease owner.
#[derive(Debug, Clone, Default)]
pub struct ReminderChange {
    pub state: &'static str,
    pub scheduled_at_ms: Option<i64>,
    pub message_id: Option<String>,
    pub template: Option<String>,
    pub last_error: Option<String>,
    pub cancel_reason: Option<String>,
    pub sent_at_ms: Option<i64>,
    pub bump_tries: bool,
    pub release_lease: bool,
}

/// What became of one claimed message: its fenced change and the event that records it
/// (see [`Store::apply_reminder_changes`]).
#[derive(Debug, Clone)]
pub struct ReminderOutcome {
    pub reminder_id: i64,
    pub change: ReminderChange,
    pub event: Option<NewEvent>,
}

/// Inserts a reminder with `ON CONFLICT DO NOTHING`; evaluates to the new id, if any.
macro_rules! insert_reminder_sql {
    ($conn:expr, $r:expr, $now_ms:expr) => {{
        let r: &$crate::store::reminders::NewReminder = $r;
        sqlx::query_scalar::<_, i64>($crate::store::reminders::INSERT_REMINDER)
            .bind(r.installment_id)
            .bind(r.agreement_id)
            .bind(r.kind)
            .bind(r.offset_key)
            .bind(r.scheduled_at_ms)
            .bind(r.detail.to_string())
            .bind($now_ms)
            .fetch_optional($conn)
            .await?
    }};
}
pub(crate) use insert_reminder_sql;

/// One pending reminder of an agreement's customer (`$1`-`$7`, see
/// [`insert_reminder_sql!`]), `ON CONFLICT DO NOTHING`, returning its id.
pub(crate) const INSERT_REMINDER: &str = "INSERT INTO reminders (installment_id, \
         agreement_id, customer_id, kind, offset_key, scheduled_at_ms, state, detail, \
         created_at_ms, updated_at_ms) \
     SELECT $1, $2, a.customer_id, $3, $4, $5, 'pending', $6, $7, $7 \
     FROM agreements a WHERE a.id = $2 \
     ON CONFLICT DO NOTHING RETURNING id";

/// What [`insert_reminder_sql!`] does, on the SQLite group committer's own connection:
/// the new reminder's id, or `None` if it already existed.
pub(crate) fn insert_reminder_native(
    conn: &rusqlite::Connection,
    r: &NewReminder,
    now_ms: i64,
) -> Result<Option<i64>> {
    Ok(super::group_commit::query_numbered(
        conn,
        INSERT_REMINDER,
        &[
            &r.installment_id,
            &r.agreement_id,
            &r.kind,
            &r.offset_key,
            &r.scheduled_at_ms,
            &r.detail.to_string(),
            &now_ms,
        ],
        |row| row.get(0),
    )?)
}

impl Store {
    /// Claims up to `limit` reminders that are due, or whose sender died mid-send (lease
    /// expired: they are sent again, with the same Message-ID).
    pub async fn claim_due_reminders(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<ReminderRow>> {
        let claim = super::Claim::messages("reminders", REMINDER_COLUMNS);
        let mut rows: Vec<ReminderRow> = self
            .claim_rows(&claim, owner, now_ms, lease_until_ms, limit)
            .await?;
        rows.sort_by_key(|r| (r.scheduled_at_ms, r.id));
        Ok(rows)
    }

    /// Claims a customer's other pending messages due by `until_ms` (at most 20), and
    /// those this worker already claimed, to be merged into the email about to be sent:
    /// they become `sending` under this worker's lease. PostgreSQL skips rows another
    /// daemon holds.
    ///
    /// A read on the readers first: most customers have nothing else due, and then
    /// nothing is written. Otherwise the claim is a write transaction (on SQLite, in the
    /// next group of the group committer) and returns once committed.
    pub async fn claim_customer_messages(
        &self,
        customer_id: i64,
        exclude_id: i64,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Vec<ReminderRow>> {
        let candidates: i64 = on_read!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM reminders \
                 WHERE customer_id = $1 AND id <> $2 AND scheduled_at_ms <= $3 \
                   AND (state = 'pending' OR (state = 'sending' AND lease_owner = $4))",
            )
            .bind(customer_id)
            .bind(exclude_id)
            .bind(until_ms)
            .bind(owner)
            .fetch_one(pool)
            .await?
        });
        if candidates == 0 {
            return Ok(Vec::new());
        }
        let lock = match self.backend() {
            super::Backend::Sqlite => "",
            super::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE reminders SET state = 'sending', lease_owner = $1, lease_until_ms = $2, \
                updated_at_ms = $3 \
             WHERE id IN (SELECT id FROM reminders \
                          WHERE customer_id = $4 AND id <> $5 AND scheduled_at_ms <= $6 \
                            AND (state = 'pending' OR (state = 'sending' AND lease_owner = $1)) \
                          ORDER BY scheduled_at_ms, id LIMIT 20 {lock}) \
             RETURNING {REMINDER_COLUMNS}"
        );
        let owner = owner.to_string();
        let mut rows: Vec<ReminderRow> =
            if let (super::Inner::Sqlite(_), Some(group)) = (&self.inner, &self.group) {
                // SQLite's writer: on the group committer's own connection.
                group
                    .run_native(move |conn| {
                        Ok(super::group_commit::query_all_numbered(
                            conn,
                            &sql,
                            &[
                                &owner,
                                &lease_until_ms,
                                &now_ms,
                                &customer_id,
                                &exclude_id,
                                &until_ms,
                            ],
                            <ReminderRow as super::group_commit::NativeRow>::from_native,
                        )?)
                    })
                    .await?
            } else {
                super::write_tx!(self, |conn| {
                    let rows = sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(sql))
                        .bind(owner.as_str())
                        .bind(lease_until_ms)
                        .bind(now_ms)
                        .bind(customer_id)
                        .bind(exclude_id)
                        .bind(until_ms)
                        .fetch_all(&mut *conn)
                        .await?;
                    Ok(rows)
                })?
            };
        rows.sort_by_key(|r| (r.scheduled_at_ms, r.id));
        Ok(rows)
    }

    pub async fn reminder_context(&self, reminder_id: i64) -> Result<ReminderContext> {
        let row = on_read!(self, |pool| {
            sqlx::query_as::<_, ReminderContext>(
                "SELECT c.id AS customer_id, c.name AS customer_name, c.email, c.locale, c.time_zone, \
                        a.external_id AS agreement_external_id, a.status AS agreement_status, \
                        a.currency, f.external_ref AS account_ref, f.mandate_status, \
                        CAST((SELECT COUNT(*) FROM installments x WHERE x.agreement_id = a.id \
                          AND x.status <> 'cancelled' AND x.seq <= i.seq) AS BIGINT) AS seq, \
                        i.due_date, i.total_minor, i.paid_minor, \
                        i.status AS installment_status, \
                        CAST((SELECT COUNT(*) FROM installments x WHERE x.agreement_id = a.id \
                          AND x.status <> 'cancelled') AS BIGINT) \
                            AS installment_count, \
                        (SELECT CAST(COALESCE(SUM(x.total_minor - x.paid_minor), 0) AS BIGINT) FROM installments x \
                          WHERE x.agreement_id = a.id AND x.status = 'unpaid') AS remaining_minor, \
                        (SELECT MIN(x.due_date) FROM installments x \
                          WHERE x.agreement_id = a.id AND x.status = 'unpaid' AND x.seq > i.seq) \
                            AS next_due_date, \
                        (SELECT x.total_minor - x.paid_minor FROM installments x \
                          WHERE x.agreement_id = a.id AND x.status = 'unpaid' AND x.seq > i.seq \
                          ORDER BY x.seq LIMIT 1) AS next_due_minor \
                 FROM reminders r \
                 JOIN installments i ON i.id = r.installment_id \
                 JOIN agreements a ON a.id = i.agreement_id \
                 JOIN customers c ON c.id = a.customer_id \
                 JOIN funding_accounts f ON f.id = a.funding_account_id \
                 WHERE r.id = $1",
            )
            .bind(reminder_id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or(StoreError::NotFound {
            what: "reminder",
            id: reminder_id.to_string(),
        })
    }

    /// The smallest offset among this installment's other pre-due reminders that are
    /// already due and still pending: a later reminder that makes this one redundant.
    pub async fn superseding_reminder(
        &self,
        installment_id: i64,
        offset_key: i64,
        now_ms: i64,
    ) -> Result<Option<i64>> {
        let found = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                "SELECT MIN(offset_key) FROM reminders \
                 WHERE installment_id = $1 AND kind = 'upcoming' AND offset_key < $2 \
                   AND state IN ('pending', 'sending', 'sent') AND scheduled_at_ms <= $3",
            )
            .bind(installment_id)
            .bind(offset_key)
            .bind(now_ms)
            .fetch_one(pool)
            .await?
        });
        Ok(found)
    }

    /// Applies a fenced change to one reminder, with its event, in one transaction (on
    /// SQLite, in the next group of the group committer: see [`Store::apply_reminder_changes`]).
    /// Fails with [`StoreError::Fenced`] if the reminder is no longer `sending` under `owner`.
    pub async fn apply_reminder_change(
        &self,
        reminder_id: i64,
        owner: &str,
        change: &ReminderChange,
        event: Option<&NewEvent>,
        now_ms: i64,
    ) -> Result<()> {
        let outcome = ReminderOutcome {
            reminder_id,
            change: change.clone(),
            event: event.cloned(),
        };
        let applied = self
            .apply_reminder_changes(owner, vec![outcome], now_ms)
            .await?;
        if applied.first() != Some(&true) {
            return Err(StoreError::Fenced {
                attempt_id: reminder_id,
                expected_state: "sending".into(),
            });
        }
        Ok(())
    }

    /// Applies the outcomes of one email (every message merged into it) in one write
    /// transaction, each change fenced by state `sending` and `owner`, each event written
    /// only with its change. Evaluates, per outcome in order, to whether it applied
    /// (`false`: the row was no longer this worker's, and nothing of that outcome was
    /// written). Any other error writes nothing of the set.
    ///
    /// On SQLite the transaction joins the next group of the group committer (one fsync
    /// for every message outcome, debit change and booking queued meanwhile) and this
    /// returns only once that group is committed: a message is acted on (the next one
    /// of the customer decided, the email counted against the budget) only once its
    /// outcome is durable. On PostgreSQL it is a transaction of its own.
    pub async fn apply_reminder_changes(
        &self,
        owner: &str,
        outcomes: Vec<ReminderOutcome>,
        now_ms: i64,
    ) -> Result<Vec<bool>> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.to_string();
        if let (super::Inner::Sqlite(_), Some(group)) = (&self.inner, &self.group) {
            // SQLite's writer: on the group committer's own connection.
            return group
                .run_native(move |conn| {
                    apply_reminder_changes_native(conn, &owner, &outcomes, now_ms)
                })
                .await;
        }
        let backend = self.backend();
        super::write_tx!(self, |conn| {
            let mut applied = Vec::with_capacity(outcomes.len());
            let mut events = Vec::new();
            for o in &outcomes {
                let updated = bind_reminder_change!(sqlx::query(UPDATE_REMINDER), o)
                    .bind(now_ms)
                    .bind(owner.as_str())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                applied.push(updated == 1);
                if updated == 1
                    && let Some(ev) = &o.event
                {
                    events.push(ev.clone());
                }
            }
            if !events.is_empty() {
                insert_events!(&mut *conn, backend, &events);
            }
            Ok(applied)
        })
    }

    pub async fn reminders_for_agreement(&self, agreement_id: i64) -> Result<Vec<ReminderRow>> {
        let sql = format!(
            "SELECT {REMINDER_COLUMNS} FROM reminders WHERE agreement_id = $1 \
             ORDER BY scheduled_at_ms, id"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(agreement_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// The earliest instant at which some reminder needs work, if any.
    pub async fn next_reminder_due_ms(&self) -> Result<Option<i64>> {
        let next = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>(
                // One MIN per state, each read from the end of its partial index; one MIN
                // over both states scanned the table (0.6 s at 260,000 reminders, on every
                // wake-up of `simulate`).
                "SELECT MIN(t) FROM ( \
                   SELECT MIN(scheduled_at_ms) AS t FROM reminders WHERE state = 'pending' \
                   UNION ALL \
                   SELECT MIN(lease_until_ms) FROM reminders WHERE state = 'sending') AS due",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(next)
    }

    /// One reminder by id.
    pub async fn reminder(&self, reminder_id: i64) -> Result<Option<ReminderRow>> {
        let sql = format!("SELECT {REMINDER_COLUMNS} FROM reminders WHERE id = $1");
        let row = on_read!(self, |pool| {
            sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(reminder_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// An operator sends a customer email again: one that failed for good (`failed`), or
    /// one waiting after a transient failure (`pending` with an error) to be tried now.
    /// It becomes `pending`, due now, without its error; the message loop takes it
    /// through the conversation gate like any other (which cancels it if it is no longer
    /// true). Fenced on the state it was read in; `reminder_requeued` event with the
    /// actor. Returns the row as it was. `Conflict` for any other state.
    pub async fn requeue_reminder(
        &self,
        reminder_id: i64,
        actor: &crate::domain::Actor,
        now_ms: i64,
    ) -> Result<ReminderRow> {
        let select = format!("SELECT {REMINDER_COLUMNS} FROM reminders WHERE id = $1");
        let before = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let before = sqlx::query_as::<_, ReminderRow>(sqlx::AssertSqlSafe(select.clone()))
                .bind(reminder_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "email",
                    id: reminder_id.to_string(),
                })?;
            let resendable = before.state == "failed"
                || (before.state == "pending" && before.last_error.is_some());
            if !resendable {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "email {reminder_id} is {}{}: only a failed email, or one deferred after \
                     a mail server failure, can be sent again; nothing was changed",
                    before.state,
                    before
                        .cancel_reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                )));
            }
            let updated = sqlx::query(
                "UPDATE reminders SET state = 'pending', scheduled_at_ms = $1, \
                    last_error = NULL, lease_owner = NULL, lease_until_ms = NULL, \
                    updated_at_ms = $1 \
                 WHERE id = $2 AND state = $3 AND tries = $4",
            )
            .bind(now_ms)
            .bind(reminder_id)
            .bind(&before.state)
            .bind(before.tries)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "the email changed meanwhile (the message loop took it); look again".into(),
                ));
            }
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: "reminder_requeued",
                    agreement_id: Some(before.agreement_id),
                    installment_id: Some(before.installment_id),
                    attempt_id: None,
                    detail: actor.stamp(serde_json::json!({
                        "reminder_id": reminder_id,
                        "kind": before.kind,
                        "previous_state": before.state,
                        "previous_error": before.last_error.as_deref().map(crate::mask::emails_in),
                    })),
                }
            )?;
            tx.commit().await?;
            before
        });
        Ok(before)
    }

    /// Reminders per kind and state, for logs, metrics and tests.
    pub async fn reminder_state_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT kind, state, COUNT(*) FROM reminders GROUP BY kind, state ORDER BY kind, state",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}

/// A message outcome's fenced update: `$1`-`$9` the change and `$10` the row
/// ([`bind_reminder_change!`] binds them in that order), `$11` the instant, `$12` the
/// lease owner.
const UPDATE_REMINDER: &str = "UPDATE reminders SET state = $1, \
        scheduled_at_ms = COALESCE($2, scheduled_at_ms), \
        message_id = COALESCE($3, message_id), \
        template = COALESCE($4, template), \
        last_error = COALESCE($5, last_error), \
        cancel_reason = COALESCE($6, cancel_reason), \
        sent_at_ms = COALESCE($7, sent_at_ms), \
        tries = tries + $8, \
        lease_owner = CASE WHEN $9 = 1 THEN NULL ELSE lease_owner END, \
        lease_until_ms = CASE WHEN $9 = 1 THEN NULL ELSE lease_until_ms END, \
        updated_at_ms = $11 \
     WHERE id = $10 AND state = 'sending' AND lease_owner = $12";

/// Binds a [`ReminderOutcome`]'s change and row, the ten parameters of
/// [`UPDATE_REMINDER`], in order.
macro_rules! bind_reminder_change {
    ($q:expr, $o:expr) => {{
        let o: &ReminderOutcome = $o;
        let change = &o.change;
        $q.bind(change.state)
            .bind(change.scheduled_at_ms)
            .bind(change.message_id.as_deref())
            .bind(change.template.as_deref())
            .bind(change.last_error.as_deref())
            .bind(change.cancel_reason.as_deref())
            .bind(change.sent_at_ms)
            .bind(i64::from(change.bump_tries))
            .bind(i64::from(change.release_lease))
            .bind(o.reminder_id)
    }};
}
use bind_reminder_change;

/// [`Store::apply_reminder_changes`] on SQLite's writer: the group committer's own
/// connection ([`super::group_commit::GroupCommit::run_native`]), each outcome's fenced
/// update and, when it held, its event.
fn apply_reminder_changes_native(
    conn: &rusqlite::Connection,
    owner: &str,
    outcomes: &[ReminderOutcome],
    now_ms: i64,
) -> Result<Vec<bool>> {
    let mut applied = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        let change = &o.change;
        let updated = super::group_commit::execute_numbered(
            conn,
            UPDATE_REMINDER,
            &[
                &change.state,
                &change.scheduled_at_ms,
                &change.message_id,
                &change.template,
                &change.last_error,
                &change.cancel_reason,
                &change.sent_at_ms,
                &i64::from(change.bump_tries),
                &i64::from(change.release_lease),
                &o.reminder_id,
                &now_ms,
                &owner,
            ],
        )?;
        applied.push(updated == 1);
        if updated == 1
            && let Some(ev) = &o.event
        {
            super::insert_event_native(conn, ev)?;
        }
    }
    Ok(applied)
}
