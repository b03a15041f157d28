//! Agreements, customers, funding accounts and installments: every SQL statement that reads
//! or writes them. Bulk writes (the importer's) are multi-row `INSERT`s inside one
//! transaction per batch, each with its events, so a batch commits or rolls back whole.

use super::{Result, Store, StoreError};
use serde::Serialize;
use std::collections::HashMap;

/// Bound parameters per generated statement (multi-row `INSERT`s, `IN (...)` look-ups),
/// below the limits (SQLite 32 766, PostgreSQL 65 535). On PostgreSQL as few statements
/// as possible: over TCP, sqlx 0.9.0 leaves Nagle's algorithm on, and each statement can
/// wait ~40 ms for a delayed ACK (transact-rs/sqlx#4335), so one big statement per table
/// per batch beats many small ones (measured: 1 024 parameters per statement 9 900
/// installment rows/s, 8 192 17 000, 65 000 26 500; 46 000 over a Unix socket).
const SQLITE_PARAMS_PER_STATEMENT: usize = 4_096;
const POSTGRES_PARAMS_PER_STATEMENT: usize = 65_000;

/// Debit attempt states that mean nothing has been asked of the bank yet: an agreement
/// whose attempts are all in these states may still be replaced.
const UNSTARTED_DEBIT_STATES: &str = "('scheduled', 'cancelled')";

/// Reminders for an agreement being replaced are deleted (the planner plans them again
/// for the new schedule), except one being sent at this moment: its sender would then
/// announce a schedule that no longer exists, so the replacement waits for it.
const REMINDER_IN_FLIGHT: &str = "'sending'";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct CustomerRow {
    pub id: i64,
    pub external_id: String,
    pub name: String,
    pub email: String,
    pub locale: String,
    pub time_zone: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct FundingAccountRow {
    pub id: i64,
    pub customer_id: i64,
    pub external_ref: String,
    pub mandate_ref: String,
    pub mandate_status: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A funding account with the external id of the customer it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FundingAccountOwner {
    pub id: i64,
    pub external_ref: String,
    pub mandate_ref: String,
    pub mandate_status: String,
    pub customer_id: i64,
    pub customer_external_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct AgreementRow {
    pub id: i64,
    pub external_id: String,
    pub customer_id: i64,
    pub funding_account_id: i64,
    pub currency: String,
    pub principal_minor: i64,
    pub total_interest_minor: i64,
    pub total_fee_minor: i64,
    pub total_minor: i64,
    /// `None` for an explicit schedule taken as the upstream system computed it.
    pub method: Option<String>,
    pub terms_json: Option<String>,
    pub status: String,
    pub content_hash: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct InstallmentRow {
    pub id: i64,
    pub agreement_id: i64,
    pub seq: i64,
    pub due_date: String,
    pub principal_minor: i64,
    pub interest_minor: i64,
    pub fee_minor: i64,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub status: String,
    pub paid_at_ms: Option<i64>,
}

const CUSTOMER_COLUMNS: &str =
    "id, external_id, name, email, locale, time_zone, created_at_ms, updated_at_ms";
const ACCOUNT_COLUMNS: &str =
    "id, customer_id, external_ref, mandate_ref, mandate_status, created_at_ms, updated_at_ms";
const AGREEMENT_COLUMNS: &str = "id, external_id, customer_id, funding_account_id, currency, \
    principal_minor, total_interest_minor, total_fee_minor, total_minor, method, terms_json, \
    status, content_hash, created_at_ms, updated_at_ms";
const INSTALLMENT_COLUMNS: &str = "id, agreement_id, seq, due_date, principal_minor, \
    interest_minor, fee_minor, total_minor, paid_minor, status, paid_at_ms";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    pub external_id: String,
    pub name: String,
    pub email: String,
    pub locale: String,
    pub time_zone: String,
}

impl NewCustomer {
    /// Names of the fields in which `row` differs from `self` (never their values: they
    /// are personal data and end up in events).
    pub fn changed_fields(&self, row: &CustomerRow) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.name != row.name {
            changed.push("name");
        }
        if self.email != row.email {
            changed.push("email");
        }
        if self.locale != row.locale {
            changed.push("locale");
        }
        if self.time_zone != row.time_zone {
            changed.push("time_zone");
        }
        changed
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFundingAccount {
    pub external_ref: String,
    pub mandate_ref: String,
    /// `active`, `pending` or `revoked`.
    pub mandate_status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstallment {
    pub seq: i64,
    /// `YYYY-MM-DD`, the local due date.
    pub due_date: String,
    pub principal_minor: i64,
    pub interest_minor: i64,
    pub fee_minor: i64,
}

impl NewInstallment {
    pub fn total_minor(&self) -> i64 {
        self.principal_minor + self.interest_minor + self.fee_minor
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgreement {
    pub external_id: String,
    pub customer_id: i64,
    pub funding_account_id: i64,
    pub currency: String,
    pub principal_minor: i64,
    pub total_interest_minor: i64,
    pub total_fee_minor: i64,
    pub method: Option<String>,
    pub terms_json: Option<String>,
    pub content_hash: String,
    pub installments: Vec<NewInstallment>,
}

impl NewAgreement {
    pub fn total_minor(&self) -> i64 {
        self.principal_minor + self.total_interest_minor + self.total_fee_minor
    }
}

/// One customer to create or to bring up to date.
#[derive(Debug, Clone)]
pub enum CustomerWrite {
    Create(NewCustomer),
    Update {
        id: i64,
        customer: NewCustomer,
        changed: Vec<&'static str>,
    },
}

/// One funding account to create or whose mandate changed.
#[derive(Debug, Clone)]
pub enum AccountWrite {
    Create {
        customer_id: i64,
        account: NewFundingAccount,
    },
    Update {
        id: i64,
        account: NewFundingAccount,
        changed: Vec<&'static str>,
    },
}

/// One agreement to create, or to replace (terms and installments) when nothing has been
/// paid or debited on it.
#[derive(Debug, Clone)]
pub enum AgreementWrite {
    Create(NewAgreement),
    Replace {
        id: i64,
        /// The hash the replacement was decided against: if it changed since, another
        /// writer got there first and the batch fails instead of overwriting blind.
        expected_hash: String,
        agreement: NewAgreement,
    },
}

/// What the importer needs to know about an agreement that already exists: its content
/// hash, and the facts that forbid replacing its schedule.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgreementState {
    pub id: i64,
    pub external_id: String,
    pub content_hash: String,
    /// Installments with any money received.
    pub paid_installments: i64,
    /// Payments recorded against the agreement by other means (transfer, cash).
    pub payments: i64,
    /// Charges (late fees) raised on its installments.
    pub charges: i64,
    /// Debit attempts past `scheduled` (claimed, submitted, finished...), cancelled aside.
    pub started_debits: i64,
    /// Reminders being sent right now (a replacement waits for them).
    pub reminders_sending: i64,
}

impl AgreementState {
    /// Why the schedule may not be replaced, if it may not: money has moved or been
    /// asked for, or an email about it is on its way. `None` when it may.
    pub fn replace_refusal(&self) -> Option<String> {
        let facts: Vec<String> = [
            (self.paid_installments, "installment(s) with money received"),
            (self.payments, "payment(s) recorded"),
            (self.charges, "charge(s) raised"),
            (self.started_debits, "debit attempt(s) started"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !facts.is_empty() {
            return Some(format!(
                "agreement {} cannot be replaced: {}",
                self.external_id,
                facts.join(", ")
            ));
        }
        (self.reminders_sending > 0).then(|| {
            format!(
                "agreement {} cannot be replaced while a reminder about it is being sent; \
                 run the import again in a minute",
                self.external_id
            )
        })
    }
}

/// The columns of [`AgreementState`] for agreement `a`.
const AGREEMENT_STATE_COLUMNS: &str = "a.id, a.external_id, a.content_hash, \
    CAST((SELECT COUNT(*) FROM installments i \
          WHERE i.agreement_id = a.id AND i.paid_minor > 0) AS BIGINT) AS paid_installments, \
    CAST((SELECT COUNT(*) FROM payments p WHERE p.agreement_id = a.id) AS BIGINT) AS payments, \
    CAST((SELECT COUNT(*) FROM charges c WHERE c.agreement_id = a.id) AS BIGINT) AS charges, \
    CAST((SELECT COUNT(*) FROM debit_attempts d \
          WHERE d.agreement_id = a.id AND d.state NOT IN ('scheduled', 'cancelled')) AS BIGINT) \
      AS started_debits, \
    CAST((SELECT COUNT(*) FROM reminders r \
          WHERE r.agreement_id = a.id AND r.state = 'sending') AS BIGINT) AS reminders_sending";

/// What one call to [`Store::write_agreements`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgreementsWritten {
    /// `(external_id, id)` of every agreement created or replaced.
    pub ids: Vec<(String, i64)>,
    pub created: u64,
    pub replaced: u64,
    pub installments: u64,
    pub debit_attempts_removed: u64,
    /// Planned, sent, failed or cancelled reminders of replaced agreements, deleted with
    /// the installments they were about.
    pub reminders_removed: u64,
}

/// Filters for [`Store::list_agreements`].
#[derive(Debug, Clone, Default)]
pub struct AgreementFilter {
    pub status: Option<String>,
    pub customer_external_id: Option<String>,
    pub limit: i64,
}

/// One line of `repayd agreements list`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct AgreementListRow {
    pub id: i64,
    pub external_id: String,
    pub customer_external_id: String,
    pub customer_name: String,
    pub currency: String,
    pub principal_minor: i64,
    pub total_minor: i64,
    pub paid_minor: i64,
    pub installment_count: i64,
    pub paid_count: i64,
    /// Earliest due date of an unpaid installment.
    pub next_due_date: Option<String>,
    pub status: String,
    pub method: Option<String>,
    pub mandate_status: String,
}

/// An agreement with its customer, funding account and schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgreementDetail {
    pub agreement: AgreementRow,
    pub customer: CustomerRow,
    pub funding_account: FundingAccountRow,
    pub installments: Vec<InstallmentRow>,
}

/// Row counts of the tables this module owns (and of those that point at them), for
/// tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct TableCounts {
    pub customers: i64,
    pub funding_accounts: i64,
    pub agreements: i64,
    pub installments: i64,
    pub debit_attempts: i64,
    pub reminders: i64,
    pub events: i64,
}

/// How generated bulk statements are written for one backend.
///
/// They are the one exception to the `$N` placeholder convention: on SQLite they use
/// anonymous `?` placeholders, because SQLite resolves each named parameter (`$7`) with a
/// linear scan of the statement's parameter names, which makes binding a statement of n
/// parameters cost n^2 (measured with `benches/import.rs`: at 7 000 parameters per
/// statement the import ran at a fifth of the speed, and `sqlite3_bind_parameter_name`
/// still took a tenth of the database thread at 128). Only placeholders are generated,
/// never data, so the text is safe to run.
#[derive(Debug, Clone, Copy)]
struct Bulk {
    backend: super::Backend,
    /// Parameters per statement.
    budget: usize,
}

impl Bulk {
    /// Rows of `cols` parameters per statement (at least one).
    fn rows(&self, cols: usize) -> usize {
        (self.budget / cols).max(1)
    }

    fn placeholder(&self, sql: &mut String, n: usize) {
        match self.backend {
            super::Backend::Sqlite => sql.push('?'),
            super::Backend::Postgres => {
                sql.push('$');
                sql.push_str(&n.to_string());
            }
        }
    }

    /// `prefix ($1, $2), ($3, $4) suffix` for `rows` rows of `cols` parameters.
    fn values_sql(&self, prefix: &str, cols: usize, rows: usize, suffix: &str) -> String {
        let mut sql = String::with_capacity(prefix.len() + suffix.len() + rows * cols * 7);
        sql.push_str(prefix);
        let mut n = 0;
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..cols {
                n += 1;
                if c > 0 {
                    sql.push_str(", ");
                }
                self.placeholder(&mut sql, n);
            }
            sql.push(')');
        }
        sql.push_str(suffix);
        sql
    }

    /// `$1, $2, ..., $n` for an `IN (...)` list.
    fn in_list(&self, n: usize) -> String {
        let mut sql = String::with_capacity(n * 5);
        for i in 1..=n {
            if i > 1 {
                sql.push_str(", ");
            }
            self.placeholder(&mut sql, i);
        }
        sql
    }
}

impl Store {
    /// Runs `select` (ending in `IN (`) once per chunk of `keys` that fits the backend's
    /// parameter limit, closing the list itself, and collects the rows.
    async fn fetch_by_keys<R>(&self, select: &str, keys: &[&str]) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let mut out = Vec::with_capacity(keys.len());
        let bulk = self.bulk();
        for chunk in keys.chunks(bulk.budget) {
            let sql = format!("{select}{})", bulk.in_list(chunk.len()));
            let rows = on_pool!(self, |pool| {
                let mut q = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql));
                for key in chunk {
                    q = q.bind(*key);
                }
                q.fetch_all(pool).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    fn bulk(&self) -> Bulk {
        let backend = self.backend();
        let budget = match backend {
            super::Backend::Sqlite => SQLITE_PARAMS_PER_STATEMENT,
            super::Backend::Postgres => POSTGRES_PARAMS_PER_STATEMENT,
        };
        Bulk { backend, budget }
    }
}

/// A unique-constraint violation becomes a domain [`StoreError::Conflict`] naming what
/// already exists; anything else stays a database error.
fn unique_as_conflict(err: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if err
        .as_database_error()
        .is_some_and(|d| d.is_unique_violation())
    {
        StoreError::Conflict(what())
    } else {
        StoreError::Db(err)
    }
}

/// One event row for the multi-row event insert.
struct EventRow4 {
    kind: &'static str,
    agreement_id: Option<i64>,
    detail: String,
}

/// Appends `$events` (a `Vec<EventRow4>`) to the event log inside transaction `$tx`, with
/// multi-row inserts. A macro so the one text serves both backends, like `insert_event!`.
macro_rules! insert_events {
    ($tx:ident, $events:expr, $now_ms:expr, $bulk:expr) => {
        for chunk in $events.chunks($bulk.rows(4)) {
            let sql = $bulk.values_sql(
                "INSERT INTO events (at_ms, kind, agreement_id, detail) VALUES ",
                4,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in chunk {
                q = q
                    .bind($now_ms)
                    .bind(e.kind)
                    .bind(e.agreement_id)
                    .bind(&e.detail);
            }
            q.execute(&mut *$tx).await?;
        }
    };
}

impl Store {
    /// Creates one customer; an external id that exists already is a
    /// [`StoreError::Conflict`].
    pub async fn insert_customer(&self, customer: &NewCustomer, now_ms: i64) -> Result<i64> {
        let ids = self
            .write_customers(&[CustomerWrite::Create(customer.clone())], now_ms)
            .await?;
        ids.first()
            .map(|(_, id)| *id)
            .ok_or_else(|| StoreError::Corrupt("insert returned no customer id".into()))
    }

    /// Creates one funding account for `customer_id`; a reference that exists already is
    /// a [`StoreError::Conflict`].
    pub async fn insert_funding_account(
        &self,
        customer_id: i64,
        account: &NewFundingAccount,
        now_ms: i64,
    ) -> Result<i64> {
        let write = AccountWrite::Create {
            customer_id,
            account: account.clone(),
        };
        let ids = self.write_funding_accounts(&[write], now_ms).await?;
        ids.first()
            .map(|(_, id)| *id)
            .ok_or_else(|| StoreError::Corrupt("insert returned no account id".into()))
    }

    /// Creates one agreement with its installments and its event; an external id that
    /// exists already is a [`StoreError::Conflict`].
    pub async fn insert_agreement(&self, agreement: &NewAgreement, now_ms: i64) -> Result<i64> {
        let written = self
            .write_agreements(&[AgreementWrite::Create(agreement.clone())], now_ms)
            .await?;
        written
            .ids
            .first()
            .map(|(_, id)| *id)
            .ok_or_else(|| StoreError::Corrupt("insert returned no agreement id".into()))
    }

    pub async fn customer(&self, id: i64) -> Result<Option<CustomerRow>> {
        let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, CustomerRow>(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Customers with any of these external ids (in no particular order).
    pub async fn customers_by_external_ids(&self, ids: &[&str]) -> Result<Vec<CustomerRow>> {
        let select = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE external_id IN (");
        self.fetch_by_keys(&select, ids).await
    }

    pub async fn funding_account(&self, id: i64) -> Result<Option<FundingAccountRow>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM funding_accounts WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, FundingAccountRow>(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Funding accounts with any of these references, with their owners' external ids.
    pub async fn funding_accounts_by_refs(
        &self,
        refs: &[&str],
    ) -> Result<Vec<FundingAccountOwner>> {
        self.fetch_by_keys(
            "SELECT f.id, f.external_ref, f.mandate_ref, f.mandate_status, f.customer_id, \
             c.external_id AS customer_external_id \
             FROM funding_accounts f JOIN customers c ON c.id = f.customer_id \
             WHERE f.external_ref IN (",
            refs,
        )
        .await
    }

    pub async fn agreement(&self, id: i64) -> Result<Option<AgreementRow>> {
        let sql = format!("SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, AgreementRow>(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    pub async fn agreement_by_external_id(
        &self,
        external_id: &str,
    ) -> Result<Option<AgreementRow>> {
        let sql = format!("SELECT {AGREEMENT_COLUMNS} FROM agreements WHERE external_id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, AgreementRow>(sqlx::AssertSqlSafe(sql))
                .bind(external_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Content hash and paid/debited state of the agreements with these external ids.
    pub async fn agreement_states(&self, external_ids: &[&str]) -> Result<Vec<AgreementState>> {
        let select =
            format!("SELECT {AGREEMENT_STATE_COLUMNS} FROM agreements a WHERE a.external_id IN (");
        self.fetch_by_keys(&select, external_ids).await
    }

    /// An agreement's installments in schedule order.
    pub async fn installments(&self, agreement_id: i64) -> Result<Vec<InstallmentRow>> {
        let sql = format!(
            "SELECT {INSTALLMENT_COLUMNS} FROM installments WHERE agreement_id = $1 ORDER BY seq"
        );
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, InstallmentRow>(sqlx::AssertSqlSafe(sql))
                .bind(agreement_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Creates and updates customers in one transaction, each with its event. Returns
    /// `(external_id, id)` for every customer written.
    pub async fn write_customers(
        &self,
        writes: &[CustomerWrite],
        now_ms: i64,
    ) -> Result<Vec<(String, i64)>> {
        let creates: Vec<&NewCustomer> = writes
            .iter()
            .filter_map(|w| match w {
                CustomerWrite::Create(c) => Some(c),
                CustomerWrite::Update { .. } => None,
            })
            .collect();
        let bulk = self.bulk();
        let ids = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut ids: Vec<(String, i64)> = Vec::with_capacity(writes.len());
            for chunk in creates.chunks(bulk.rows(7)) {
                let sql = bulk.values_sql(
                    "INSERT INTO customers (external_id, name, email, locale, time_zone, \
                     created_at_ms, updated_at_ms) VALUES ",
                    7,
                    chunk.len(),
                    " RETURNING external_id, id",
                );
                let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
                for c in chunk {
                    q = q
                        .bind(&c.external_id)
                        .bind(&c.name)
                        .bind(&c.email)
                        .bind(&c.locale)
                        .bind(&c.time_zone)
                        .bind(now_ms)
                        .bind(now_ms);
                }
                let rows = q.fetch_all(&mut *tx).await.map_err(|e| {
                    unique_as_conflict(e, || {
                        format!(
                            "a customer with one of the external ids {} exists already",
                            chunk
                                .iter()
                                .map(|c| c.external_id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                })?;
                ids.extend(rows);
            }
            for w in writes {
                if let CustomerWrite::Update {
                    id,
                    customer: c,
                    changed: _,
                } = w
                {
                    let done = sqlx::query(
                        "UPDATE customers SET name = $2, email = $3, locale = $4, \
                         time_zone = $5, updated_at_ms = $6 WHERE id = $1 AND external_id = $7",
                    )
                    .bind(id)
                    .bind(&c.name)
                    .bind(&c.email)
                    .bind(&c.locale)
                    .bind(&c.time_zone)
                    .bind(now_ms)
                    .bind(&c.external_id)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::NotFound {
                            what: "customer",
                            id: c.external_id.clone(),
                        });
                    }
                    ids.push((c.external_id.clone(), *id));
                }
            }
            let by_key = ids_by_key(&ids);
            let events: Vec<EventRow4> = writes
                .iter()
                .map(|w| match w {
                    CustomerWrite::Create(c) => EventRow4 {
                        kind: "customer_imported",
                        agreement_id: None,
                        detail: serde_json::json!({
                            "customer_id": by_key.get(c.external_id.as_str()),
                            "external_id": c.external_id,
                        })
                        .to_string(),
                    },
                    CustomerWrite::Update {
                        id,
                        customer: c,
                        changed,
                    } => EventRow4 {
                        kind: "customer_updated",
                        agreement_id: None,
                        detail: serde_json::json!({
                            "customer_id": id,
                            "external_id": c.external_id,
                            "changed": changed,
                        })
                        .to_string(),
                    },
                })
                .collect();
            insert_events!(tx, events, now_ms, bulk);
            tx.commit().await?;
            ids
        });
        Ok(ids)
    }

    /// Creates funding accounts and updates mandates in one transaction, each with its
    /// event. Returns `(external_ref, id)` for every account written.
    pub async fn write_funding_accounts(
        &self,
        writes: &[AccountWrite],
        now_ms: i64,
    ) -> Result<Vec<(String, i64)>> {
        let creates: Vec<(i64, &NewFundingAccount)> = writes
            .iter()
            .filter_map(|w| match w {
                AccountWrite::Create {
                    customer_id,
                    account,
                } => Some((*customer_id, account)),
                AccountWrite::Update { .. } => None,
            })
            .collect();
        let bulk = self.bulk();
        let ids = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut ids: Vec<(String, i64)> = Vec::with_capacity(writes.len());
            for chunk in creates.chunks(bulk.rows(6)) {
                let sql = bulk.values_sql(
                    "INSERT INTO funding_accounts (customer_id, external_ref, mandate_ref, \
                     mandate_status, created_at_ms, updated_at_ms) VALUES ",
                    6,
                    chunk.len(),
                    " RETURNING external_ref, id",
                );
                let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
                for (customer_id, a) in chunk {
                    q = q
                        .bind(*customer_id)
                        .bind(&a.external_ref)
                        .bind(&a.mandate_ref)
                        .bind(&a.mandate_status)
                        .bind(now_ms)
                        .bind(now_ms);
                }
                let rows = q.fetch_all(&mut *tx).await.map_err(|e| {
                    unique_as_conflict(e, || {
                        format!(
                            "a funding account with one of the references {} exists already",
                            chunk
                                .iter()
                                .map(|(_, a)| crate::mask::account(&a.external_ref))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                })?;
                ids.extend(rows);
            }
            for w in writes {
                if let AccountWrite::Update {
                    id,
                    account: a,
                    changed: _,
                } = w
                {
                    let done = sqlx::query(
                        "UPDATE funding_accounts SET mandate_ref = $2, mandate_status = $3, \
                         updated_at_ms = $4 WHERE id = $1 AND external_ref = $5",
                    )
                    .bind(id)
                    .bind(&a.mandate_ref)
                    .bind(&a.mandate_status)
                    .bind(now_ms)
                    .bind(&a.external_ref)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(StoreError::NotFound {
                            what: "funding account",
                            id: crate::mask::account(&a.external_ref),
                        });
                    }
                    ids.push((a.external_ref.clone(), *id));
                }
            }
            let by_key = ids_by_key(&ids);
            let events: Vec<EventRow4> = writes
                .iter()
                .map(|w| match w {
                    AccountWrite::Create {
                        customer_id,
                        account: a,
                    } => EventRow4 {
                        kind: "funding_account_imported",
                        agreement_id: None,
                        detail: serde_json::json!({
                            "funding_account_id": by_key.get(a.external_ref.as_str()),
                            "customer_id": customer_id,
                            "account": crate::mask::account(&a.external_ref),
                            "mandate_status": a.mandate_status,
                        })
                        .to_string(),
                    },
                    AccountWrite::Update {
                        id,
                        account: a,
                        changed,
                    } => EventRow4 {
                        kind: "funding_account_updated",
                        agreement_id: None,
                        detail: serde_json::json!({
                            "funding_account_id": id,
                            "account": crate::mask::account(&a.external_ref),
                            "mandate_status": a.mandate_status,
                            "changed": changed,
                        })
                        .to_string(),
                    },
                })
                .collect();
            insert_events!(tx, events, now_ms, bulk);
            tx.commit().await?;
            ids
        });
        Ok(ids)
    }

    /// Creates and replaces agreements with their installments and events, all in one
    /// transaction.
    ///
    /// A replacement is refused (the whole call fails, nothing is written) when any
    /// installment has money on it, or any debit attempt has gone past `scheduled`
    /// (cancelled ones aside): those are facts the new schedule cannot undo. Its
    /// not-yet-started attempts are deleted for the planner to plan again. Should a debit
    /// worker claim one of them concurrently, the foreign key from the claimed attempt
    /// to its installment makes the installment delete fail, so the race also ends in a
    /// refusal, never in a lost debit.
    pub async fn write_agreements(
        &self,
        writes: &[AgreementWrite],
        now_ms: i64,
    ) -> Result<AgreementsWritten> {
        let creates: Vec<&NewAgreement> = writes
            .iter()
            .filter_map(|w| match w {
                AgreementWrite::Create(a) => Some(a),
                AgreementWrite::Replace { .. } => None,
            })
            .collect();
        let bulk = self.bulk();
        let written = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let mut written = AgreementsWritten::default();
            // (agreement id, agreement) for every installment set to insert, and the
            // events, in the order of `writes` where possible.
            let mut schedules: Vec<(i64, &NewAgreement)> = Vec::with_capacity(writes.len());
            let mut events: Vec<EventRow4> = Vec::with_capacity(writes.len());

            for w in writes {
                let AgreementWrite::Replace {
                    id,
                    expected_hash,
                    agreement: a,
                } = w
                else {
                    continue;
                };
                let state: Option<AgreementState> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {AGREEMENT_STATE_COLUMNS} FROM agreements a WHERE a.id = $1"
                )))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(state) = state else {
                    return Err(StoreError::NotFound {
                        what: "agreement",
                        id: a.external_id.clone(),
                    });
                };
                if &state.content_hash != expected_hash {
                    return Err(StoreError::Conflict(format!(
                        "agreement {} changed while it was being replaced; run the import again",
                        a.external_id
                    )));
                }
                if let Some(refusal) = state.replace_refusal() {
                    return Err(StoreError::Conflict(refusal));
                }
                let removed = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM debit_attempts WHERE agreement_id = $1 \
                     AND state IN {UNSTARTED_DEBIT_STATES}"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let reminders = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM reminders WHERE agreement_id = $1 \
                     AND state <> {REMINDER_IN_FLIGHT}"
                )))
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // Anything else still pointing at the installments (a debit claimed since
                // the check above, a table added later) makes this fail: a refusal, never
                // a dangling reference.
                sqlx::query("DELETE FROM installments WHERE agreement_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        if e.as_database_error().is_some_and(|d| {
                            matches!(d.kind(), sqlx::error::ErrorKind::ForeignKeyViolation)
                        }) {
                            StoreError::Conflict(format!(
                                "agreement {} cannot be replaced: other records refer to its \
                                 installments (a debit may have just started)",
                                a.external_id
                            ))
                        } else {
                            StoreError::Db(e)
                        }
                    })?;
                let done = sqlx::query(
                    "UPDATE agreements SET customer_id = $2, funding_account_id = $3, \
                     currency = $4, principal_minor = $5, total_interest_minor = $6, \
                     total_fee_minor = $7, total_minor = $8, method = $9, terms_json = $10, \
                     content_hash = $11, updated_at_ms = $12 \
                     WHERE id = $1 AND content_hash = $13",
                )
                .bind(id)
                .bind(a.customer_id)
                .bind(a.funding_account_id)
                .bind(&a.currency)
                .bind(a.principal_minor)
                .bind(a.total_interest_minor)
                .bind(a.total_fee_minor)
                .bind(a.total_minor())
                .bind(a.method.as_deref())
                .bind(a.terms_json.as_deref())
                .bind(&a.content_hash)
                .bind(now_ms)
                .bind(expected_hash)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!(
                        "agreement {} changed while it was being replaced; run the import again",
                        a.external_id
                    )));
                }
                written.replaced += 1;
                written.debit_attempts_removed += removed;
                written.reminders_removed += reminders;
                written.ids.push((a.external_id.clone(), *id));
                schedules.push((*id, a));
                events.push(EventRow4 {
                    kind: "agreement_updated",
                    agreement_id: Some(*id),
                    detail: serde_json::json!({
                        "external_id": a.external_id,
                        "installments": a.installments.len(),
                        "previous_content_hash": expected_hash,
                        "content_hash": a.content_hash,
                        "debit_attempts_removed": removed,
                        "reminders_removed": reminders,
                    })
                    .to_string(),
                });
            }

            for chunk in creates.chunks(bulk.rows(13)) {
                let sql = bulk.values_sql(
                    "INSERT INTO agreements (external_id, customer_id, funding_account_id, \
                     currency, principal_minor, total_interest_minor, total_fee_minor, \
                     total_minor, method, terms_json, content_hash, created_at_ms, \
                     updated_at_ms) VALUES ",
                    13,
                    chunk.len(),
                    " RETURNING external_id, id",
                );
                let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
                for a in chunk {
                    q = q
                        .bind(&a.external_id)
                        .bind(a.customer_id)
                        .bind(a.funding_account_id)
                        .bind(&a.currency)
                        .bind(a.principal_minor)
                        .bind(a.total_interest_minor)
                        .bind(a.total_fee_minor)
                        .bind(a.total_minor())
                        .bind(a.method.as_deref())
                        .bind(a.terms_json.as_deref())
                        .bind(&a.content_hash)
                        .bind(now_ms)
                        .bind(now_ms);
                }
                let rows = q.fetch_all(&mut *tx).await.map_err(|e| {
                    unique_as_conflict(e, || {
                        format!(
                            "an agreement with one of the external ids {} exists already",
                            chunk
                                .iter()
                                .map(|a| a.external_id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })
                })?;
                // RETURNING order is not promised for multi-row inserts: match by id.
                let by_external = ids_by_key(&rows);
                for a in chunk {
                    let id = *by_external.get(a.external_id.as_str()).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "insert of agreement {} returned no id",
                            a.external_id
                        ))
                    })?;
                    written.created += 1;
                    written.ids.push((a.external_id.clone(), id));
                    schedules.push((id, a));
                    events.push(EventRow4 {
                        kind: "agreement_imported",
                        agreement_id: Some(id),
                        detail: serde_json::json!({
                            "external_id": a.external_id,
                            "installments": a.installments.len(),
                            "content_hash": a.content_hash,
                        })
                        .to_string(),
                    });
                }
            }

            let lines: Vec<(i64, &NewInstallment)> = schedules
                .iter()
                .flat_map(|(id, a)| a.installments.iter().map(move |i| (*id, i)))
                .collect();
            for chunk in lines.chunks(bulk.rows(7)) {
                let sql = bulk.values_sql(
                    "INSERT INTO installments (agreement_id, seq, due_date, principal_minor, \
                     interest_minor, fee_minor, total_minor) VALUES ",
                    7,
                    chunk.len(),
                    "",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (agreement_id, i) in chunk {
                    q = q
                        .bind(*agreement_id)
                        .bind(i.seq)
                        .bind(&i.due_date)
                        .bind(i.principal_minor)
                        .bind(i.interest_minor)
                        .bind(i.fee_minor)
                        .bind(i.total_minor());
                }
                written.installments += q.execute(&mut *tx).await?.rows_affected();
            }

            insert_events!(tx, events, now_ms, bulk);
            tx.commit().await?;
            written
        });
        Ok(written)
    }

    /// Agreements with their customer, progress and next due date, oldest first.
    pub async fn list_agreements(&self, filter: &AgreementFilter) -> Result<Vec<AgreementListRow>> {
        let rows = on_pool!(self, |pool| {
            sqlx::query_as::<_, AgreementListRow>(
                "SELECT a.id, a.external_id, c.external_id AS customer_external_id, \
                 c.name AS customer_name, a.currency, a.principal_minor, a.total_minor, \
                 CAST(COALESCE((SELECT SUM(i.paid_minor) FROM installments i \
                                WHERE i.agreement_id = a.id), 0) AS BIGINT) AS paid_minor, \
                 CAST((SELECT COUNT(*) FROM installments i WHERE i.agreement_id = a.id \
                       AND i.status <> 'cancelled') AS BIGINT) AS installment_count, \
                 CAST((SELECT COUNT(*) FROM installments i \
                       WHERE i.agreement_id = a.id AND i.status = 'paid') AS BIGINT) AS paid_count, \
                 (SELECT MIN(i.due_date) FROM installments i \
                  WHERE i.agreement_id = a.id AND i.status = 'unpaid') AS next_due_date, \
                 a.status, a.method, f.mandate_status \
                 FROM agreements a \
                 JOIN customers c ON c.id = a.customer_id \
                 JOIN funding_accounts f ON f.id = a.funding_account_id \
                 WHERE ($1 IS NULL OR a.status = $1) AND ($2 IS NULL OR c.external_id = $2) \
                 ORDER BY a.id LIMIT $3",
            )
            .bind(filter.status.as_deref())
            .bind(filter.customer_external_id.as_deref())
            .bind(filter.limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// One agreement by external id or, failing that, by numeric id; with its customer,
    /// funding account and schedule.
    pub async fn agreement_detail(
        &self,
        id_or_external_id: &str,
    ) -> Result<Option<AgreementDetail>> {
        let mut agreement = self.agreement_by_external_id(id_or_external_id).await?;
        if agreement.is_none()
            && let Ok(id) = id_or_external_id.trim().parse::<i64>()
        {
            agreement = self.agreement(id).await?;
        }
        let Some(agreement) = agreement else {
            return Ok(None);
        };
        let customer = self.customer(agreement.customer_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "agreement {} has no customer",
                agreement.external_id
            ))
        })?;
        let funding_account = self
            .funding_account(agreement.funding_account_id)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "agreement {} has no funding account",
                    agreement.external_id
                ))
            })?;
        let installments = self.installments(agreement.id).await?;
        Ok(Some(AgreementDetail {
            agreement,
            customer,
            funding_account,
            installments,
        }))
    }

    /// Row counts, for tests ("nothing was written") and diagnostics.
    pub async fn table_counts(&self) -> Result<TableCounts> {
        let counts = on_pool!(self, |pool| {
            sqlx::query_as::<_, TableCounts>(
                "SELECT \
                 CAST((SELECT COUNT(*) FROM customers) AS BIGINT) AS customers, \
                 CAST((SELECT COUNT(*) FROM funding_accounts) AS BIGINT) AS funding_accounts, \
                 CAST((SELECT COUNT(*) FROM agreements) AS BIGINT) AS agreements, \
                 CAST((SELECT COUNT(*) FROM installments) AS BIGINT) AS installments, \
                 CAST((SELECT COUNT(*) FROM debit_attempts) AS BIGINT) AS debit_attempts, \
                 CAST((SELECT COUNT(*) FROM reminders) AS BIGINT) AS reminders, \
                 CAST((SELECT COUNT(*) FROM events) AS BIGINT) AS events",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(counts)
    }
}

/// Ids by key, as written in this call (creates come back from `RETURNING`).
fn ids_by_key(ids: &[(String, i64)]) -> HashMap<&str, i64> {
    ids.iter().map(|(k, id)| (k.as_str(), *id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_sql_numbers_placeholders_per_backend() {
        let pg = Bulk {
            backend: crate::store::Backend::Postgres,
            budget: POSTGRES_PARAMS_PER_STATEMENT,
        };
        assert_eq!(
            pg.values_sql("INSERT INTO t (a, b) VALUES ", 2, 3, " RETURNING id"),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING id"
        );
        assert_eq!(pg.in_list(3), "$1, $2, $3");
        let lite = Bulk {
            backend: crate::store::Backend::Sqlite,
            budget: SQLITE_PARAMS_PER_STATEMENT,
        };
        assert_eq!(
            lite.values_sql("INSERT INTO t (a, b) VALUES ", 2, 2, ""),
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(lite.in_list(2), "?, ?");
    }

    #[test]
    fn statements_stay_under_both_parameter_limits() {
        for cols in [1, 4, 6, 7, 13] {
            let lite = (SQLITE_PARAMS_PER_STATEMENT / cols).max(1) * cols;
            let pg = (POSTGRES_PARAMS_PER_STATEMENT / cols).max(1) * cols;
            assert!(lite <= 32_766 && pg <= 65_535, "{cols}");
        }
    }
}
