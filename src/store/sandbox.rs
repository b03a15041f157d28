//! The sandbox bank's ledger: accounts with balances (`sandbox_accounts`) and the debits
//! booked against them, keyed by idempotency key (`sandbox_debits`), and the debits it
//! returned (`sandbox_returns`, its returns feed). Only the sandbox gateway
//! (`crate::gateway::sandbox`) and `repayd sandbox return` use these tables.

use super::{Result, Store, StoreError, WriteTx};

/// `sandbox_accounts.status` values.
pub const STATUS_OPEN: &str = "open";
pub const STATUS_FROZEN: &str = "frozen";
pub const STATUS_CLOSED: &str = "closed";

/// `sandbox_debits.status` values.
pub const DEBIT_SUCCEEDED: &str = "succeeded";
pub const DEBIT_PENDING: &str = "pending";
pub const DEBIT_DECLINED: &str = "declined";

/// Decline codes the ledger itself decides on (the gateway adds injected ones).
pub const DECLINE_INSUFFICIENT_FUNDS: &str = "insufficient_funds";
pub const DECLINE_ACCOUNT_FROZEN: &str = "account_frozen";
pub const DECLINE_ACCOUNT_CLOSED: &str = "account_closed";
pub const DECLINE_CURRENCY_MISMATCH: &str = "currency_mismatch";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SandboxAccountRow {
    pub account_ref: String,
    pub currency: String,
    pub balance_minor: i64,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SandboxDebitRow {
    pub idempotency_key: String,
    pub account_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub decline_code: Option<String>,
    pub gateway_ref: String,
    pub created_at_ms: i64,
}

/// A debit the sandbox bank returned: one row per debit, `seq` is the feed's cursor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SandboxReturnRow {
    pub seq: i64,
    pub return_id: String,
    pub idempotency_key: String,
    pub gateway_ref: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason_code: String,
    pub hard: i64,
    pub created_at_ms: i64,
}

/// A debit to book. The account is opened with `opening_balance_minor` (in `currency`) and
/// `opening_status` if it has never been used.
#[derive(Debug, Clone)]
pub struct SandboxDebitBooking<'a> {
    pub idempotency_key: &'a str,
    pub account_ref: &'a str,
    pub amount_minor: i64,
    pub currency: &'a str,
    pub opening_balance_minor: i64,
    pub opening_status: &'a str,
    /// Decline with this code whatever the balance (an injected fault).
    pub forced_decline: Option<&'a str>,
    /// Record a successful debit as pending (the money is taken either way).
    pub pending: bool,
    pub gateway_ref: &'a str,
    pub at_ms: i64,
}

/// What [`Store::sandbox_book_debit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxBooking {
    /// This call recorded the row (a debit or a decline).
    New(SandboxDebitRow),
    /// A row for the key already existed; nothing was changed.
    Existing(SandboxDebitRow),
}

/// Why a booking was undone: another one under the same key committed first.
const LOST_RACE: &str = "a concurrent booking under the same idempotency key committed first";

/// [`SandboxDebitBooking`] owned, to run on the SQLite group committer's task.
struct OwnedBooking {
    idempotency_key: String,
    account_ref: String,
    amount_minor: i64,
    currency: String,
    opening_balance_minor: i64,
    opening_status: String,
    forced_decline: Option<String>,
    pending: bool,
    gateway_ref: String,
    at_ms: i64,
}

impl OwnedBooking {
    /// The answer for this booking once its row is written with `status` and `decline`.
    fn booked(&self, status: &str, decline: Option<&str>) -> SandboxBooking {
        SandboxBooking::New(SandboxDebitRow {
            idempotency_key: self.idempotency_key.clone(),
            account_ref: self.account_ref.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            status: status.to_string(),
            decline_code: decline.map(str::to_string),
            gateway_ref: self.gateway_ref.clone(),
            created_at_ms: self.at_ms,
        })
    }
}

impl From<&SandboxDebitBooking<'_>> for OwnedBooking {
    fn from(b: &SandboxDebitBooking<'_>) -> Self {
        Self {
            idempotency_key: b.idempotency_key.to_string(),
            account_ref: b.account_ref.to_string(),
            amount_minor: b.amount_minor,
            currency: b.currency.to_string(),
            opening_balance_minor: b.opening_balance_minor,
            opening_status: b.opening_status.to_string(),
            forced_decline: b.forced_decline.map(str::to_string),
            pending: b.pending,
            gateway_ref: b.gateway_ref.to_string(),
            at_ms: b.at_ms,
        }
    }
}

impl Store {
    /// Books a debit, or records why it was declined, in one transaction; a key seen before
    /// changes nothing and answers with the row recorded the first time.
    ///
    /// Safe under concurrency on both backends: the balance only moves through a
    /// conditional `UPDATE ... WHERE balance_minor >= amount`, and the debit row is inserted
    /// with `ON CONFLICT DO NOTHING`; a booking that loses the race on the key rolls back
    /// (undoing its balance change) and answers with the winner's row.
    ///
    /// On SQLite the booking joins the writer's group commit (a savepoint of its own in a
    /// transaction that also carries other debits' changes): the answer comes back only
    /// after that commit, so the bank has durably booked the debit before repayd hears of
    /// it, and the booking is never in the transaction that records its own outcome.
    pub async fn sandbox_book_debit(&self, b: &SandboxDebitBooking<'_>) -> Result<SandboxBooking> {
        let booking = OwnedBooking::from(b);
        let booked = if let (super::Inner::Sqlite(_), Some(group)) = (&self.inner, &self.group) {
            // SQLite's writer: on the group committer's own connection.
            group
                .run_native(move |conn| book_debit_native(conn, &booking))
                .await
        } else {
            super::write_tx!(self, |conn| {
                let b = &booking;
                // A key seen before: nothing is written (a replay under a wrong account opens
                // no account).
                let existing = sqlx::query_as::<_, SandboxDebitRow>(DEBIT_BY_KEY)
                    .bind(b.idempotency_key.as_str())
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(row) = existing {
                    return Ok(SandboxBooking::Existing(row));
                }
                // Opens the account on its first use.
                sqlx::query(OPEN_ACCOUNT)
                    .bind(b.account_ref.as_str())
                    .bind(b.currency.as_str())
                    .bind(b.opening_balance_minor)
                    .bind(b.opening_status.as_str())
                    .execute(&mut *conn)
                    .await?;
                // The usual case first: an open account in the debit's currency holding the
                // amount is debited by the conditional update alone. Only when it changes
                // nothing is the account read, to say why (status, currency, then balance;
                // on PostgreSQL the row may have changed since the update, which is why the
                // update checks all three itself).
                let decline = if let Some(code) = b.forced_decline.as_deref() {
                    Some(code)
                } else {
                    let taken = sqlx::query(TAKE_FROM_ACCOUNT)
                        .bind(b.amount_minor)
                        .bind(b.account_ref.as_str())
                        .bind(b.currency.as_str())
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if taken == 1 {
                        None
                    } else {
                        let account = sqlx::query_as::<_, SandboxAccountRow>(ACCOUNT_BY_REF)
                            .bind(b.account_ref.as_str())
                            .fetch_one(&mut *conn)
                            .await?;
                        Some(decline_of(&account.status, &account.currency, &b.currency))
                    }
                };
                let status = status_of(decline, b.pending);
                let inserted = sqlx::query(INSERT_DEBIT)
                    .bind(b.idempotency_key.as_str())
                    .bind(b.account_ref.as_str())
                    .bind(b.amount_minor)
                    .bind(b.currency.as_str())
                    .bind(status)
                    .bind(decline)
                    .bind(b.gateway_ref.as_str())
                    .bind(b.at_ms)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if inserted == 0 {
                    // PostgreSQL: a concurrent booking under the same key committed first. An
                    // error undoes this booking (its balance change included).
                    return Err(StoreError::Conflict(LOST_RACE.into()));
                }
                Ok(b.booked(status, decline))
            })
        };
        match booked {
            Ok(booking) => Ok(booking),
            Err(StoreError::Conflict(why)) if why == LOST_RACE => {
                let row = self
                    .sandbox_debit(b.idempotency_key)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("{LOST_RACE}, yet it is not there"))
                    })?;
                Ok(SandboxBooking::Existing(row))
            }
            Err(e) => Err(e),
        }
    }

    /// The account, if it has been opened.
    pub async fn sandbox_account(&self, account_ref: &str) -> Result<Option<SandboxAccountRow>> {
        let row = on_read!(self, |pool| {
            sqlx::query_as::<_, SandboxAccountRow>(ACCOUNT_BY_REF)
                .bind(account_ref)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Every opened account, by reference.
    pub async fn sandbox_accounts(&self) -> Result<Vec<SandboxAccountRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, SandboxAccountRow>(
                "SELECT account_ref, currency, balance_minor, status \
                 FROM sandbox_accounts ORDER BY account_ref",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Sets the balance (and currency) of an account, opening it with `status_if_new` if it
    /// has never been used.
    pub async fn sandbox_set_balance(
        &self,
        account_ref: &str,
        currency: &str,
        balance_minor: i64,
        status_if_new: &str,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO sandbox_accounts (account_ref, currency, balance_minor, status) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_ref) DO UPDATE \
                 SET currency = excluded.currency, balance_minor = excluded.balance_minor",
            )
            .bind(account_ref)
            .bind(currency)
            .bind(balance_minor)
            .bind(status_if_new)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Sets the balance of an opened account, keeping its currency. False if it was never
    /// opened.
    pub async fn sandbox_update_balance(
        &self,
        account_ref: &str,
        balance_minor: i64,
    ) -> Result<bool> {
        let changed = on_pool!(self, |pool| {
            sqlx::query("UPDATE sandbox_accounts SET balance_minor = $1 WHERE account_ref = $2")
                .bind(balance_minor)
                .bind(account_ref)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Sets an opened account's status (`open`, `frozen`, `closed`). False if it was never
    /// opened.
    pub async fn sandbox_set_status(&self, account_ref: &str, status: &str) -> Result<bool> {
        if ![STATUS_OPEN, STATUS_FROZEN, STATUS_CLOSED].contains(&status) {
            return Err(StoreError::Conflict(format!(
                "sandbox account status must be open, frozen or closed, not {status:?}"
            )));
        }
        let changed = on_pool!(self, |pool| {
            sqlx::query("UPDATE sandbox_accounts SET status = $1 WHERE account_ref = $2")
                .bind(status)
                .bind(account_ref)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// The debit recorded under `idempotency_key`, if any.
    pub async fn sandbox_debit(&self, idempotency_key: &str) -> Result<Option<SandboxDebitRow>> {
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, SandboxDebitRow>(DEBIT_BY_KEY)
                .bind(idempotency_key)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Settles a pending debit. False if it was not pending (already settled, declined or
    /// unknown), so concurrent look-ups settle it once.
    pub async fn sandbox_settle_pending(&self, idempotency_key: &str) -> Result<bool> {
        let changed = on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE sandbox_debits SET status = 'succeeded' \
                 WHERE idempotency_key = $1 AND status = 'pending'",
            )
            .bind(idempotency_key)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// How many debits took money from the account (succeeded or pending; declines do not
    /// count).
    pub async fn sandbox_debit_count(&self, account_ref: &str) -> Result<i64> {
        let n = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM sandbox_debits \
                 WHERE account_ref = $1 AND status IN ('succeeded', 'pending')",
            )
            .bind(account_ref)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// How many debits took money under `idempotency_key`: 0 or 1, whatever happened.
    pub async fn sandbox_debits_for_key(&self, idempotency_key: &str) -> Result<i64> {
        let n = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM sandbox_debits \
                 WHERE idempotency_key = $1 AND status IN ('succeeded', 'pending')",
            )
            .bind(idempotency_key)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Returns the succeeded debit booked under `idempotency_key`: the money goes back to
    /// the account and the return joins the feed, in one transaction. A debit is returned
    /// at most once; `Conflict` if it was already returned, never booked, or not settled.
    pub async fn sandbox_return_debit(
        &self,
        idempotency_key: &str,
        reason_code: &str,
        hard: bool,
        at_ms: i64,
    ) -> Result<SandboxReturnRow> {
        let row = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let debit: Option<(String, i64, String, String, String)> = sqlx::query_as(
                "SELECT account_ref, amount_minor, currency, status, gateway_ref                  FROM sandbox_debits WHERE idempotency_key = $1",
            )
            .bind(idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((account_ref, amount_minor, currency, status, gateway_ref)) = debit else {
                return Err(StoreError::NotFound {
                    what: "sandbox debit with idempotency key",
                    id: idempotency_key.to_string(),
                });
            };
            if status != DEBIT_SUCCEEDED {
                return Err(StoreError::Conflict(format!(
                    "the debit under {idempotency_key} is {status}: only a succeeded debit can be returned"
                )));
            }
            let return_id = format!("ret_{}", gateway_ref.trim_start_matches("sbx_"));
            let inserted = sqlx::query_as::<_, SandboxReturnRow>(
                "INSERT INTO sandbox_returns (return_id, idempotency_key, gateway_ref,                      amount_minor, currency, reason_code, hard, created_at_ms)                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING                  RETURNING seq, return_id, idempotency_key, gateway_ref, amount_minor,                      currency, reason_code, hard, created_at_ms",
            )
            .bind(&return_id)
            .bind(idempotency_key)
            .bind(&gateway_ref)
            .bind(amount_minor)
            .bind(&currency)
            .bind(reason_code)
            .bind(i64::from(hard))
            .bind(at_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = inserted else {
                return Err(StoreError::Conflict(format!(
                    "the debit under {idempotency_key} was already returned"
                )));
            };
            sqlx::query(
                "UPDATE sandbox_accounts SET balance_minor = balance_minor + $1                  WHERE account_ref = $2",
            )
            .bind(amount_minor)
            .bind(&account_ref)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            row
        });
        Ok(row)
    }

    /// The sandbox's returns after `after_seq`, oldest first, at most `limit`.
    pub async fn sandbox_returns_after(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<SandboxReturnRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, SandboxReturnRow>(
                "SELECT seq, return_id, idempotency_key, gateway_ref, amount_minor, currency,                      reason_code, hard, created_at_ms                  FROM sandbox_returns WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}

/// One account's income schedule (see `crate::gateway::income`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SandboxIncomeRow {
    pub account_ref: String,
    /// A `crate::domain::payday::Payday` in its text form (`monthly:10`, `weekly:fri`).
    pub payday: String,
    pub amount_minor: i64,
    pub keep_minor: i64,
    pub spent_after_days: i64,
    pub time_zone: String,
    /// The local date (`YYYY-MM-DD`) up to which the schedule has been applied.
    pub applied_through: String,
}

impl Store {
    /// Sets (replaces) income schedules and removes those of `without` (accounts with no
    /// income), in one transaction.
    pub async fn sandbox_set_income(
        &self,
        rows: &[SandboxIncomeRow],
        without: &[&str],
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            for account_ref in without {
                sqlx::query("DELETE FROM sandbox_income WHERE account_ref = $1")
                    .bind(*account_ref)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in rows {
                sqlx::query("DELETE FROM sandbox_income WHERE account_ref = $1")
                    .bind(&r.account_ref)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO sandbox_income (account_ref, payday, amount_minor, keep_minor, \
                         spent_after_days, time_zone, applied_through) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&r.account_ref)
                .bind(&r.payday)
                .bind(r.amount_minor)
                .bind(r.keep_minor)
                .bind(r.spent_after_days)
                .bind(&r.time_zone)
                .bind(&r.applied_through)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Whether any account has an income schedule (the bank skips the look-ups if none).
    pub async fn sandbox_has_income(&self) -> Result<bool> {
        let n: i64 = on_read!(self, |pool| {
            sqlx::query_scalar("SELECT COUNT(*) FROM sandbox_income")
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }

    pub async fn sandbox_income(&self, account_ref: &str) -> Result<Option<SandboxIncomeRow>> {
        let row = on_read!(self, |pool| {
            sqlx::query_as::<_, SandboxIncomeRow>(
                "SELECT account_ref, payday, amount_minor, keep_minor, \
                        CAST(spent_after_days AS BIGINT) AS spent_after_days, \
                        time_zone, applied_through \
                 FROM sandbox_income WHERE account_ref = $1",
            )
            .bind(account_ref)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Moves the schedule from `from` (its `applied_through`) to `to` and applies what
    /// those days did to the balance, `min(balance + add, cap)`, in one transaction. False
    /// (nothing changed) when another caller moved it first.
    pub async fn sandbox_apply_income(
        &self,
        account_ref: &str,
        from: &str,
        to: &str,
        add: i64,
        cap: Option<i64>,
    ) -> Result<bool> {
        let applied = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let moved = sqlx::query(
                "UPDATE sandbox_income SET applied_through = $1 \
                 WHERE account_ref = $2 AND applied_through = $3",
            )
            .bind(to)
            .bind(account_ref)
            .bind(from)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 1 {
                sqlx::query(
                    "UPDATE sandbox_accounts SET balance_minor = CASE \
                         WHEN $2 IS NOT NULL AND balance_minor + $1 > $2 THEN $2 \
                         ELSE balance_minor + $1 END \
                     WHERE account_ref = $3",
                )
                .bind(add)
                .bind(cap)
                .bind(account_ref)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            moved == 1
        });
        Ok(applied)
    }
}

super::group_commit::native_row!(SandboxDebitRow {
    idempotency_key,
    account_ref,
    amount_minor,
    currency,
    status,
    decline_code,
    gateway_ref,
    created_at_ms,
});

super::group_commit::native_row!(SandboxAccountRow {
    account_ref,
    currency,
    balance_minor,
    status,
});

/// A debit booked before, by its key (`$1`).
const DEBIT_BY_KEY: &str = "SELECT idempotency_key, account_ref, amount_minor, currency, \
        status, decline_code, gateway_ref, created_at_ms \
     FROM sandbox_debits WHERE idempotency_key = $1";

/// Account `$1` in currency `$2` opened with balance `$3` and status `$4` on its first use.
const OPEN_ACCOUNT: &str = "INSERT INTO sandbox_accounts (account_ref, currency, \
        balance_minor, status) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (account_ref) DO NOTHING";

/// `$1` taken from account `$2` if it is open, in currency `$3` and holds it.
const TAKE_FROM_ACCOUNT: &str = "UPDATE sandbox_accounts SET balance_minor = balance_minor - $1 \
     WHERE account_ref = $2 AND status = 'open' AND currency = $3 AND balance_minor >= $1";

/// Account `$1` as it stands.
const ACCOUNT_BY_REF: &str = "SELECT account_ref, currency, balance_minor, status \
     FROM sandbox_accounts WHERE account_ref = $1";

/// The debit's row (`$1`-`$8`), unless its key was taken meanwhile.
const INSERT_DEBIT: &str = "INSERT INTO sandbox_debits (idempotency_key, account_ref, \
        amount_minor, currency, status, decline_code, gateway_ref, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (idempotency_key) DO NOTHING";

/// Why an account that did not give the amount declined: its status, its currency, then
/// its balance.
fn decline_of(status: &str, currency: &str, debit_currency: &str) -> &'static str {
    if status == STATUS_CLOSED {
        DECLINE_ACCOUNT_CLOSED
    } else if status == STATUS_FROZEN {
        DECLINE_ACCOUNT_FROZEN
    } else if currency != debit_currency {
        DECLINE_CURRENCY_MISMATCH
    } else {
        DECLINE_INSUFFICIENT_FUNDS
    }
}

/// A debit's status from its decline, if any.
fn status_of(decline: Option<&str>, pending: bool) -> &'static str {
    match decline {
        Some(_) => DEBIT_DECLINED,
        None if pending => DEBIT_PENDING,
        None => DEBIT_SUCCEEDED,
    }
}

/// [`Store::sandbox_book_debit`] on SQLite's writer: the group committer's own connection
/// ([`super::group_commit::GroupCommit::run_native`]), the statements of the other path
/// in its order. The daemon has one writer, so no booking of its own takes the key
/// meanwhile; one by another process on the file is answered as on the other path.
fn book_debit_native(conn: &rusqlite::Connection, b: &OwnedBooking) -> Result<SandboxBooking> {
    use super::group_commit::{NativeRow, execute_numbered, query_numbered};
    let existing = query_numbered(
        conn,
        DEBIT_BY_KEY,
        &[&b.idempotency_key],
        SandboxDebitRow::from_native,
    )?;
    if let Some(row) = existing {
        return Ok(SandboxBooking::Existing(row));
    }
    execute_numbered(
        conn,
        OPEN_ACCOUNT,
        &[
            &b.account_ref,
            &b.currency,
            &b.opening_balance_minor,
            &b.opening_status,
        ],
    )?;
    let decline: Option<&str> = if let Some(code) = b.forced_decline.as_deref() {
        Some(code)
    } else if execute_numbered(
        conn,
        TAKE_FROM_ACCOUNT,
        &[&b.amount_minor, &b.account_ref, &b.currency],
    )? == 1
    {
        None
    } else {
        let account = query_numbered(
            conn,
            ACCOUNT_BY_REF,
            &[&b.account_ref],
            SandboxAccountRow::from_native,
        )?
        .ok_or_else(|| StoreError::NotFound {
            what: "sandbox account",
            id: b.account_ref.clone(),
        })?;
        Some(decline_of(&account.status, &account.currency, &b.currency))
    };
    let status = status_of(decline, b.pending);
    let inserted = execute_numbered(
        conn,
        INSERT_DEBIT,
        &[
            &b.idempotency_key,
            &b.account_ref,
            &b.amount_minor,
            &b.currency,
            &status,
            &decline,
            &b.gateway_ref,
            &b.at_ms,
        ],
    )?;
    if inserted == 0 {
        // Another process on the file booked the key since the read above: this
        // booking is undone (its balance change included) and the winner's row answers.
        return Err(StoreError::Conflict(LOST_RACE.into()));
    }
    Ok(b.booked(status, decline))
}
