//! The import's scratch index: what step 1 learns of a file (ids, content hashes,
//! customers, accounts, where each first appears) and what step 2 decides, kept in a
//! private SQLite file in a temporary directory rather than in memory, so an import's
//! memory does not grow with the file. It is never the lender's database: nothing here
//! is durable (no journal, no fsync) and the directory is removed when the index is
//! dropped, whatever the outcome.
//!
//! Locations are the importer's own integer codes; rows are kept in file order (rowid),
//! so the plan and the writes walk the file's order in pages.

use super::Result;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// Parameters per statement: well under SQLite's limit (32,766).
const PARAMS: usize = 4_096;

const SCHEMA: &[&str] = &[
    "CREATE TABLE agreements (external_id TEXT NOT NULL UNIQUE, location INTEGER NOT NULL, \
     content_hash TEXT, installments INTEGER NOT NULL)",
    "CREATE TABLE customers (external_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, \
     email TEXT NOT NULL, locale TEXT NOT NULL, time_zone TEXT NOT NULL, \
     location INTEGER NOT NULL)",
    "CREATE TABLE accounts (external_ref TEXT NOT NULL UNIQUE, owner TEXT NOT NULL, \
     mandate_ref TEXT NOT NULL, mandate_status TEXT NOT NULL, location INTEGER NOT NULL, \
     priority INTEGER)",
    "CREATE INDEX accounts_by_priority ON accounts (owner, priority) WHERE priority IS NOT NULL",
    // Step 2's decisions. Agreements: only those that are not new. Customers and accounts:
    // those to write (by rowid of the first table), and the database ids known so far.
    "CREATE TABLE agreement_plan (external_id TEXT PRIMARY KEY, action INTEGER NOT NULL, \
     db_id INTEGER NOT NULL, previous_hash TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE customer_writes (seq INTEGER PRIMARY KEY, db_id INTEGER, changed TEXT NOT NULL)",
    "CREATE TABLE customer_ids (external_id TEXT PRIMARY KEY, db_id INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE account_writes (seq INTEGER PRIMARY KEY, db_id INTEGER, changed TEXT NOT NULL, \
     keep_status TEXT, keep_ref TEXT)",
    "CREATE TABLE account_ids (external_ref TEXT PRIMARY KEY, db_id INTEGER NOT NULL) WITHOUT ROWID",
];

/// A funding account's write: `(seq, db id if it exists, changed fields, mandate status
/// to keep, mandate reference to keep)`.
pub type AccountDecision = (i64, Option<i64>, String, Option<String>, Option<String>);

/// An agreement as first seen in the file.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScratchAgreement {
    pub external_id: String,
    pub location: i64,
    /// `None` when the record had problems (the import is then rejected anyway).
    pub content_hash: Option<String>,
    pub installments: i64,
}

/// A customer as first seen in the file.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScratchCustomer {
    pub external_id: String,
    pub name: String,
    pub email: String,
    pub locale: String,
    pub time_zone: String,
    pub location: i64,
}

/// A funding account as first seen in the file, with its owner's external id.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScratchAccount {
    pub external_ref: String,
    pub owner: String,
    pub mandate_ref: String,
    pub mandate_status: String,
    pub location: i64,
    /// `funding_priority` as given (1 first), if any.
    pub priority: Option<i64>,
}

/// Step 2's decision on an agreement that exists already.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AgreementDecision {
    pub external_id: String,
    /// The importer's own code (unchanged or update).
    pub action: i64,
    pub db_id: i64,
    pub previous_hash: String,
}

/// A customer to write: `db_id` is set for an update, `changed` names the fields.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerToWrite {
    pub seq: i64,
    pub external_id: String,
    pub name: String,
    pub email: String,
    pub locale: String,
    pub time_zone: String,
    pub db_id: Option<i64>,
    pub changed: String,
}

/// An account to write: `db_id` is set for an update; `owner_id` is the owner's database
/// id once known.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountToWrite {
    pub seq: i64,
    pub external_ref: String,
    pub owner: String,
    pub mandate_ref: String,
    pub mandate_status: String,
    pub db_id: Option<i64>,
    pub changed: String,
    pub owner_id: Option<i64>,
}

/// `(external_id, content_hash, action, db_id, previous_hash)` of `agreement_plans`.
type PlanRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// The scratch index; the temporary directory goes when it is dropped.
#[derive(Debug)]
pub struct ImportScratch {
    pool: SqlitePool,
    _dir: tempfile::TempDir,
}

impl ImportScratch {
    /// Creates an empty index in a new temporary directory (`$TMPDIR`, else `/tmp`).
    pub async fn open() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("repayd-import-")
            .tempdir()
            .map_err(|e| {
                super::StoreError::Db(sqlx::Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("creating the import's scratch directory: {e}"),
                )))
            })?;
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("index.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Off)
            .synchronous(SqliteSynchronous::Off)
            // A bounded page cache (KiB when negative): the point of the index.
            .pragma("cache_size", "-16384")
            .pragma("temp_store", "FILE");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for statement in SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(*statement))
                .execute(&pool)
                .await?;
        }
        Ok(Self { pool, _dir: dir })
    }

    /// Agreements among `ids` seen before: `(external_id, location)`.
    pub async fn agreements_seen(&self, ids: &[&str]) -> Result<Vec<(String, i64)>> {
        self.by_keys(
            "SELECT external_id, location FROM agreements WHERE external_id IN (",
            ids,
        )
        .await
    }

    /// Customers among `ids` seen before, with the details given first.
    pub async fn customers_seen(&self, ids: &[&str]) -> Result<Vec<ScratchCustomer>> {
        self.by_keys(
            "SELECT external_id, name, email, locale, time_zone, location FROM customers \
             WHERE external_id IN (",
            ids,
        )
        .await
    }

    /// Accounts among `refs` seen before, with the details given first.
    pub async fn accounts_seen(&self, refs: &[&str]) -> Result<Vec<ScratchAccount>> {
        self.by_keys(
            "SELECT external_ref, owner, mandate_ref, mandate_status, location, priority \
             FROM accounts WHERE external_ref IN (",
            refs,
        )
        .await
    }

    /// Adds first sightings, in file order, in one transaction.
    pub async fn add(
        &self,
        agreements: &[ScratchAgreement],
        customers: &[ScratchCustomer],
        accounts: &[ScratchAccount],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in agreements.chunks(PARAMS / 4) {
            let sql = values(
                "INSERT INTO agreements (external_id, location, content_hash, installments) VALUES ",
                4,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in chunk {
                q = q
                    .bind(&a.external_id)
                    .bind(a.location)
                    .bind(&a.content_hash)
                    .bind(a.installments);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in customers.chunks(PARAMS / 6) {
            let sql = values(
                "INSERT INTO customers (external_id, name, email, locale, time_zone, location) VALUES ",
                6,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(&c.external_id)
                    .bind(&c.name)
                    .bind(&c.email)
                    .bind(&c.locale)
                    .bind(&c.time_zone)
                    .bind(c.location);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in accounts.chunks(PARAMS / 6) {
            let sql = values(
                "INSERT INTO accounts (external_ref, owner, mandate_ref, mandate_status, location, \
                 priority) VALUES ",
                6,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for a in chunk {
                q = q
                    .bind(&a.external_ref)
                    .bind(&a.owner)
                    .bind(&a.mandate_ref)
                    .bind(&a.mandate_status)
                    .bind(a.location)
                    .bind(a.priority);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Customers in file order after rowid `after`: `(rowid, customer)`.
    pub async fn customers_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ScratchCustomer)>> {
        let rows: Vec<(i64, String, String, String, String, String, i64)> = sqlx::query_as(
            "SELECT rowid, external_id, name, email, locale, time_zone, location FROM customers \
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, external_id, name, email, locale, time_zone, location)| {
                    (
                        seq,
                        ScratchCustomer {
                            external_id,
                            name,
                            email,
                            locale,
                            time_zone,
                            location,
                        },
                    )
                },
            )
            .collect())
    }

    /// Funding priorities given to two or more accounts of one customer: `(owner,
    /// priority, first location, last location)`, one row per clash.
    pub async fn priority_clashes(&self) -> Result<Vec<(String, i64, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT owner, priority, MIN(location), MAX(location) FROM accounts \
             WHERE priority IS NOT NULL GROUP BY owner, priority HAVING COUNT(*) > 1 \
             ORDER BY MAX(location)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Accounts given a funding priority, by owner then priority, after `(owner,
    /// priority)`: `(owner, account ref, priority, location)`.
    pub async fn priorities_page(
        &self,
        after: (&str, i64),
        limit: usize,
    ) -> Result<Vec<(String, String, i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT owner, external_ref, priority, location FROM accounts \
             WHERE priority IS NOT NULL AND (owner > ?1 OR (owner = ?1 AND priority > ?2)) \
             ORDER BY owner, priority LIMIT ?3",
        )
        .bind(after.0)
        .bind(after.1)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Accounts in file order after rowid `after`: `(rowid, account)`.
    pub async fn accounts_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ScratchAccount)>> {
        type Row = (i64, String, String, String, String, i64, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT rowid, external_ref, owner, mandate_ref, mandate_status, location, priority \
             FROM accounts WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, external_ref, owner, mandate_ref, mandate_status, location, priority)| {
                    (
                        seq,
                        ScratchAccount {
                            external_ref,
                            owner,
                            mandate_ref,
                            mandate_status,
                            location,
                            priority,
                        },
                    )
                },
            )
            .collect())
    }

    /// Agreements in file order after rowid `after`: `(rowid, agreement)`.
    pub async fn agreements_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ScratchAgreement)>> {
        let rows: Vec<(i64, String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT rowid, external_id, location, content_hash, installments FROM agreements \
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, external_id, location, content_hash, installments)| {
                (
                    seq,
                    ScratchAgreement {
                        external_id,
                        location,
                        content_hash,
                        installments,
                    },
                )
            })
            .collect())
    }

    /// Records step 2's decisions on agreements that exist already.
    pub async fn add_agreement_decisions(&self, decisions: &[AgreementDecision]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in decisions.chunks(PARAMS / 4) {
            let sql = values(
                "INSERT INTO agreement_plan (external_id, action, db_id, previous_hash) VALUES ",
                4,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                q = q
                    .bind(&d.external_id)
                    .bind(d.action)
                    .bind(d.db_id)
                    .bind(&d.previous_hash);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records customers to write (`(rowid, db id for an update, changed fields)`) and the
    /// database ids of customers that exist already.
    pub async fn add_customer_decisions(
        &self,
        writes: &[(i64, Option<i64>, String)],
        ids: &[(String, i64)],
    ) -> Result<()> {
        self.add_decisions(
            "customer_writes",
            "customer_ids",
            "external_id",
            writes,
            ids,
        )
        .await
    }

    /// As [`Self::add_customer_decisions`], for funding accounts; the fourth and fifth
    /// parts of a write are the mandate status and reference to keep instead of the
    /// file's (refused changes).
    pub async fn add_account_decisions(
        &self,
        writes: &[AccountDecision],
        ids: &[(String, i64)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in writes.chunks(PARAMS / 5) {
            let sql = values(
                "INSERT INTO account_writes (seq, db_id, changed, keep_status, keep_ref) VALUES ",
                5,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, db_id, changed, keep, keep_ref) in chunk {
                q = q
                    .bind(seq)
                    .bind(db_id)
                    .bind(changed)
                    .bind(keep)
                    .bind(keep_ref);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.add_account_ids(ids).await
    }

    /// Database ids of customers written (or found) so far.
    pub async fn add_customer_ids(&self, ids: &[(String, i64)]) -> Result<()> {
        self.add_decisions("customer_writes", "customer_ids", "external_id", &[], ids)
            .await
    }

    /// Database ids of funding accounts written (or found) so far.
    pub async fn add_account_ids(&self, ids: &[(String, i64)]) -> Result<()> {
        self.add_decisions("account_writes", "account_ids", "external_ref", &[], ids)
            .await
    }

    async fn add_decisions(
        &self,
        writes_table: &str,
        ids_table: &str,
        key: &str,
        writes: &[(i64, Option<i64>, String)],
        ids: &[(String, i64)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for chunk in writes.chunks(PARAMS / 3) {
            let sql = values(
                &format!("INSERT INTO {writes_table} (seq, db_id, changed) VALUES "),
                3,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (seq, db_id, changed) in chunk {
                q = q.bind(seq).bind(db_id).bind(changed);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in ids.chunks(PARAMS / 2) {
            let sql = values(
                &format!("INSERT OR REPLACE INTO {ids_table} ({key}, db_id) VALUES "),
                2,
                chunk.len(),
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (k, id) in chunk {
                q = q.bind(k).bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Customers to write, in file order after `after` (a `seq`).
    pub async fn customers_to_write(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<CustomerToWrite>> {
        Ok(sqlx::query_as(
            "SELECT w.seq, c.external_id, c.name, c.email, c.locale, c.time_zone, w.db_id, \
             w.changed FROM customer_writes w JOIN customers c ON c.rowid = w.seq \
             WHERE w.seq > ?1 ORDER BY w.seq LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Accounts to write, in file order after `after` (a `seq`), with their owners' ids.
    pub async fn accounts_to_write(&self, after: i64, limit: usize) -> Result<Vec<AccountToWrite>> {
        Ok(sqlx::query_as(
            "SELECT w.seq, a.external_ref, a.owner, \
             COALESCE(w.keep_ref, a.mandate_ref) AS mandate_ref, \
             COALESCE(w.keep_status, a.mandate_status) AS mandate_status, w.db_id, \
             w.changed, i.db_id AS owner_id FROM account_writes w \
             JOIN accounts a ON a.rowid = w.seq \
             LEFT JOIN customer_ids i ON i.external_id = a.owner \
             WHERE w.seq > ?1 ORDER BY w.seq LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// For each of `ids`: its first sighting's content hash, and step 2's decision if it
    /// exists already. `(external_id, content_hash, decision)`.
    pub async fn agreement_plans(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(String, Option<String>, Option<AgreementDecision>)>> {
        let rows: Vec<PlanRow> = self
            .by_keys(
                "SELECT a.external_id, a.content_hash, p.action, p.db_id, p.previous_hash \
                 FROM agreements a LEFT JOIN agreement_plan p ON p.external_id = a.external_id \
                 WHERE a.external_id IN (",
                ids,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, hash, action, db_id, previous_hash)| {
                let decision = match (action, db_id, previous_hash) {
                    (Some(action), Some(db_id), Some(previous_hash)) => Some(AgreementDecision {
                        external_id: id.clone(),
                        action,
                        db_id,
                        previous_hash,
                    }),
                    _ => None,
                };
                (id, hash, decision)
            })
            .collect())
    }

    /// Database ids of these customers.
    pub async fn customer_ids(&self, ids: &[&str]) -> Result<Vec<(String, i64)>> {
        self.by_keys(
            "SELECT external_id, db_id FROM customer_ids WHERE external_id IN (",
            ids,
        )
        .await
    }

    /// Database ids of these funding accounts.
    pub async fn account_ids(&self, refs: &[&str]) -> Result<Vec<(String, i64)>> {
        self.by_keys(
            "SELECT external_ref, db_id FROM account_ids WHERE external_ref IN (",
            refs,
        )
        .await
    }

    /// Runs `select` (ending in `IN (`) per chunk of `keys`, closing the list itself.
    async fn by_keys<R>(&self, select: &str, keys: &[&str]) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let mut out = Vec::new();
        for chunk in keys.chunks(PARAMS) {
            let mut sql = String::with_capacity(select.len() + chunk.len() * 3 + 1);
            sql.push_str(select);
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
            }
            sql.push(')');
            let mut q = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                q = q.bind(*key);
            }
            out.extend(q.fetch_all(&self.pool).await?);
        }
        Ok(out)
    }

    /// Closes the connection (the directory goes on drop).
    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// `prefix (?, ?), (?, ?)...` for `rows` rows of `cols` columns.
fn values(prefix: &str, cols: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(prefix.len() + rows * (cols * 3 + 4));
    sql.push_str(prefix);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            sql.push_str(if c == 0 { "?" } else { ", ?" });
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_first_sightings_and_decisions() {
        let scratch = ImportScratch::open().await.unwrap();
        let agreements: Vec<ScratchAgreement> = (0..3000)
            .map(|i| ScratchAgreement {
                external_id: format!("A{i}"),
                location: i + 2,
                content_hash: Some(format!("h{i}")),
                installments: 12,
            })
            .collect();
        let customers = vec![ScratchCustomer {
            external_id: "C1".into(),
            name: "N".into(),
            email: "e@example.com".into(),
            locale: "en".into(),
            time_zone: "UTC".into(),
            location: 2,
        }];
        let accounts = vec![ScratchAccount {
            external_ref: "ACC1".into(),
            owner: "C1".into(),
            mandate_ref: "M1".into(),
            mandate_status: "active".into(),
            location: 2,
            priority: Some(1),
        }];
        scratch
            .add(&agreements, &customers, &accounts)
            .await
            .unwrap();
        let seen = scratch
            .agreements_seen(&["A5", "B", "A2999"])
            .await
            .unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.contains(&("A5".to_string(), 7)));
        assert_eq!(scratch.customers_seen(&["C1"]).await.unwrap(), customers);
        assert_eq!(scratch.accounts_seen(&["ACC1"]).await.unwrap(), accounts);
        let page = scratch.agreements_page(0, 10).await.unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].1.external_id, "A0");
        let rest = scratch.agreements_page(page[9].0, 5000).await.unwrap();
        assert_eq!(rest.len(), 2990);

        scratch
            .add_agreement_decisions(&[AgreementDecision {
                external_id: "A1".into(),
                action: 2,
                db_id: 41,
                previous_hash: "old".into(),
            }])
            .await
            .unwrap();
        let plans = scratch.agreement_plans(&["A0", "A1"]).await.unwrap();
        assert_eq!(plans.len(), 2);
        for (id, hash, decision) in plans {
            if id == "A1" {
                assert_eq!(decision.unwrap().db_id, 41);
            } else {
                assert_eq!(hash.as_deref(), Some("h0"));
                assert!(decision.is_none());
            }
        }

        let (seq, _) = scratch.customers_page(0, 10).await.unwrap()[0].clone();
        scratch
            .add_customer_decisions(&[(seq, None, String::new())], &[])
            .await
            .unwrap();
        let to_write = scratch.customers_to_write(0, 10).await.unwrap();
        assert_eq!(to_write.len(), 1);
        scratch.add_customer_ids(&[("C1".into(), 7)]).await.unwrap();
        let (seq, _) = scratch.accounts_page(0, 10).await.unwrap()[0].clone();
        scratch
            .add_account_decisions(&[(seq, None, String::new(), None, None)], &[])
            .await
            .unwrap();
        let accounts = scratch.accounts_to_write(0, 10).await.unwrap();
        assert_eq!(accounts[0].owner_id, Some(7));
        scratch
            .add_account_ids(&[("ACC1".into(), 9)])
            .await
            .unwrap();
        assert_eq!(
            scratch.account_ids(&["ACC1"]).await.unwrap(),
            vec![("ACC1".to_string(), 9)]
        );
        scratch.close().await;
    }
}
