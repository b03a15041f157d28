//! All SQL lives here. One `Store` over SQLite (the embedded default) or PostgreSQL
//! (scale-out), without sqlx's `Any` driver: each query is written once with `$N`
//! placeholders and dispatched to the concrete pool by [`on_pool!`], so both backends
//! decode into the same types. Dialect differences stay in this module tree.
//!
//! Conventions: money is `i64` minor units plus a currency code, instants are `i64` UTC
//! epoch milliseconds, local due dates are `YYYY-MM-DD` text.

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Runs `$body` with `$pool` bound to the concrete pool of `$store`. The body is the same
/// text for both backends; the compiler checks it once per backend. On SQLite this is the
/// single writer connection (see [`Store::connect`]): anything may run here, writes in
/// particular. Reads that need no writer go through [`on_read!`] instead.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.inner {
            $crate::store::Inner::Sqlite($pool) => $body,
            $crate::store::Inner::Postgres($pool) => $body,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_pool;

/// Like [`on_pool!`] for statements that only read: on SQLite they run on the read-only
/// reader pool, beside the writer, so a long read never queues behind writes (WAL lets
/// readers and the writer run at once). PostgreSQL has one pool for both.
macro_rules! on_read {
    ($store:expr, |$pool:ident| $body:expr) => {
        match (&$store.inner, &$store.readers) {
            (_, Some($pool)) => $body,
            ($crate::store::Inner::Sqlite($pool), None) => $body,
            ($crate::store::Inner::Postgres($pool), _) => $body,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_read;

/// Runs `$body` (statements on `$conn`, evaluating to `Result<T>`) as one write
/// transaction and evaluates to its result once it is committed. On SQLite the body joins
/// the next group of the group committer ([`group_commit`]): it runs in a savepoint of
/// the group's transaction, and one commit (one fsync) covers the whole group; an `Err`
/// undoes the body's statements alone. On PostgreSQL it is a transaction of its own. The
/// body must own what it uses (it may run on the committer's task) and must not commit.
macro_rules! write_tx {
    ($store:expr, |$conn:ident| $body:expr) => {{
        match (&$store.inner, &$store.group) {
            ($crate::store::Inner::Sqlite(_), Some(group)) => {
                group
                    .run(move |$conn: &mut sqlx::SqliteConnection| Box::pin(async move { $body }))
                    .await
            }
            ($crate::store::Inner::Sqlite(pool), None) => {
                let mut tx = $crate::store::WriteTx::begin_write(pool).await?;
                let $conn = &mut *tx;
                let result: $crate::store::Result<_> = async { $body }.await;
                if result.is_ok() {
                    tx.commit().await?;
                }
                result
            }
            ($crate::store::Inner::Postgres(pool), _) => {
                let mut tx = $crate::store::WriteTx::begin_write(pool).await?;
                let $conn = &mut *tx;
                let result: $crate::store::Result<_> = async { $body }.await;
                if result.is_ok() {
                    tx.commit().await?;
                }
                result
            }
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use write_tx;

/// Binds one event's six columns (at_ms, kind, agreement_id, installment_id, attempt_id,
/// detail), in that order, to a query on either backend.
macro_rules! bind_event {
    ($q:expr, $ev:expr) => {{
        let ev: &$crate::store::NewEvent = $ev;
        $q.bind(ev.at_ms)
            .bind(ev.kind)
            .bind(ev.agreement_id)
            .bind(ev.installment_id)
            .bind(ev.attempt_id)
            .bind(ev.detail.to_string())
    }};
}
#[allow(unused_imports)]
pub(crate) use bind_event;

/// Appends one row to the event log on `$conn` (a transaction, normally, so the event
/// commits or rolls back with the change it describes).
macro_rules! insert_event {
    ($conn:expr, $ev:expr) => {{
        let q = sqlx::query($crate::store::INSERT_EVENT);
        $crate::store::bind_event!(q, $ev)
            .execute($conn)
            .await
            .map(|r| r.rows_affected())
    }};
}
#[allow(unused_imports)]
pub(crate) use insert_event;

/// One event row (`$1`-`$6`, bound by [`bind_event!`] or [`insert_event_native`]).
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events \
     (at_ms, kind, agreement_id, installment_id, attempt_id, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// What [`insert_event!`] does, on the SQLite group committer's own connection.
pub(crate) fn insert_event_native(conn: &rusqlite::Connection, ev: &NewEvent) -> Result<usize> {
    Ok(group_commit::execute_numbered(
        conn,
        INSERT_EVENT,
        &[
            &ev.at_ms,
            &ev.kind,
            &ev.agreement_id,
            &ev.installment_id,
            &ev.attempt_id,
            &ev.detail.to_string(),
        ],
    )?)
}

/// Appends event-log rows on `$conn` (a transaction) with one multi-row INSERT per
/// [`ROWS_PER_INSERT`] events, in order: a statement per row costs more than the row.
macro_rules! insert_events {
    ($conn:expr, $backend:expr, $events:expr) => {{
        let events: &[$crate::store::NewEvent] = $events;
        for chunk in events.chunks($crate::store::ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO events (at_ms, kind, agreement_id, installment_id, attempt_id, detail) \
                 VALUES {}",
                $crate::store::placeholders($backend, 6, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .persistent($crate::store::keep_prepared(chunk.len()));
            for ev in chunk {
                q = $crate::store::bind_event!(q, ev);
            }
            q.execute($conn).await?;
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use insert_events;

/// A funding account's id and mandate status, by its external reference, on `$conn` (a
/// transaction); `NotFound` naming the masked reference when there is none. The mandate
/// changes (revoke, reinstate) read it first, then decide.
macro_rules! account_mandate {
    ($conn:expr, $account_ref:expr) => {{
        let account_ref: &str = $account_ref;
        let found: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, mandate_status FROM funding_accounts WHERE external_ref = $1",
        )
        .bind(account_ref)
        .fetch_optional($conn)
        .await?;
        match found {
            Some(found) => found,
            None => {
                return Err($crate::store::StoreError::NotFound {
                    what: "funding account",
                    id: $crate::mask::account(account_ref),
                });
            }
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use account_mandate;

/// Writes planned debit attempts (multi-row INSERTs, an existing attempt skipped) and
/// each new attempt's event, with its id, on `$conn`, a write transaction; evaluates to
/// the number of new attempts. A chunk's events are written after the chunk, so only a
/// chunk's copies with their ids are held at a time, not a planning page's. One copy for
/// the single attempt ([`Store::insert_attempts`]) and the planner's pages.
macro_rules! insert_attempt_rows {
    ($conn:expr, $backend:expr, $planned:expr) => {{
        let planned: &[($crate::store::debits::NewAttempt, $crate::store::NewEvent)] = $planned;
        let mut created = 0_u64;
        let mut events = Vec::new();
        for chunk in planned.chunks($crate::store::ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO debit_attempts (installment_id, agreement_id, attempt_no, \
                     idempotency_key, scheduled_at_ms, amount_minor, currency, state, \
                     reconcile_count, created_at_ms, updated_at_ms) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                        v.column7, 'scheduled', 0, v.column8, v.column8 \
                 FROM (VALUES {}) AS v WHERE true \
                 ON CONFLICT DO NOTHING RETURNING id, installment_id, attempt_no",
                $crate::store::placeholders($backend, 8, chunk.len())
            );
            let mut q = sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(sql))
                .persistent($crate::store::keep_prepared(chunk.len()));
            for (a, ev) in chunk {
                q = q
                    .bind(a.installment_id)
                    .bind(a.agreement_id)
                    .bind(a.attempt_no)
                    .bind(a.idempotency_key.as_str())
                    .bind(a.scheduled_at_ms)
                    .bind(a.amount_minor)
                    .bind(a.currency.as_str())
                    .bind(ev.at_ms);
            }
            let ids: std::collections::HashMap<(i64, i64), i64> = q
                .fetch_all(&mut *$conn)
                .await?
                .into_iter()
                .map(|(id, inst, no)| ((inst, no), id))
                .collect();
            events.clear();
            for (a, ev) in chunk {
                if let Some(id) = ids.get(&(a.installment_id, a.attempt_no)) {
                    let mut ev = ev.clone();
                    ev.attempt_id = Some(*id);
                    events.push(ev);
                }
            }
            created += events.len() as u64;
            $crate::store::insert_events!(&mut *$conn, $backend, &events);
        }
        created
    }};
}
#[allow(unused_imports)]
pub(crate) use insert_attempt_rows;

/// Rows per multi-row INSERT: well under SQLite's 32,766 and PostgreSQL's 65,535 bound
/// parameters at up to 8 columns a row.
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// Whether a statement of `rows` rows built by [`placeholders`] stays prepared on its
/// connection (sqlx keeps up to 100 a connection): the full shape ([`ROWS_PER_INSERT`]
/// rows, every full chunk of a page) and short ones (a single attempt or event, a claimed
/// batch's reads), which are small. Any other row count is a statement of its own, and
/// SQLite's program for a long one is large (some 0.8 MiB at 1,000 rows of 8 columns):
/// kept, each planning page's shorter last chunks filled the writer's cache with them
/// (the daemon's peak RSS at 1,000,000 agreements grew by tens of MiB). Those are
/// prepared, run and freed.
pub(crate) fn keep_prepared(rows: usize) -> bool {
    rows <= KEPT_SHORT_ROWS || rows == ROWS_PER_INSERT
}

/// Statements of up to this many rows stay prepared whatever their row count
/// ([`keep_prepared`]): at most this many shapes of at most this many rows each.
const KEPT_SHORT_ROWS: usize = 16;

/// `(…), (…), …`: `rows` tuples of `width` placeholders, for a statement that has no
/// other parameters. SQLite gets anonymous `?` (bound in order): sqlx looks up the name of
/// every numbered parameter, and SQLite finds a name by walking the list of them, which
/// made binding a 1,000-row statement quadratic. PostgreSQL gets `$1`, `$2`, ….
pub(crate) fn placeholders(backend: Backend, width: usize, rows: usize) -> String {
    let mut out = String::with_capacity(rows * width * 6);
    let numbered = backend == Backend::Postgres;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            if numbered {
                out.push('$');
                out.push_str(&(1 + r * width + c).to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

pub mod agreements;
pub mod calendar;
pub mod console;
pub mod conversation;
pub mod debits;
pub mod delinquency;
pub mod funding;
pub(crate) mod group_commit;
pub mod import_scratch;
pub mod metrics;
pub mod operator;
pub mod payments;
pub mod planner;
pub mod reminders;
pub mod reschedule;
pub mod returns;
pub mod sandbox;
pub mod snapshot;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// An error on the SQLite group committer's own connection (its native changes).
    #[error("database error: {0}")]
    Native(#[from] rusqlite::Error),
    #[error("database URL is invalid: {0}")]
    BadUrl(String),
    #[error(
        "another repayd process holds {path}: only one daemon may run on a SQLite file \
         (stop the other one, or move to PostgreSQL to run several)"
    )]
    Locked { path: String },
    #[error("{0}")]
    Conflict(String),
    /// A fenced change found the row no longer in the expected state or lease: another
    /// worker took it over. Nothing was changed.
    #[error("debit attempt {attempt_id} is no longer {expected_state} under this worker's lease")]
    Fenced {
        attempt_id: i64,
        expected_state: String,
    },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A grouped write's transaction did not commit (see [`Store::connect`]): nothing of
    /// it happened.
    #[error("write not committed: {0}")]
    CommitFailed(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (connection trouble, a busy
    /// database), as opposed to a fault in the data or the code.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Db(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
                ) || e
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "5" || c == "517" || c == "40001" || c == "40P01")
            }
            StoreError::Native(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            StoreError::CommitFailed(_) => true,
            _ => false,
        }
    }

    /// Whether connecting failed for a reason that waiting will not cure: a malformed
    /// URL, failed authentication, a missing database or role, an SQLite file that cannot
    /// be opened. The daemon then exits 78 instead of being restarted in a loop; a refused
    /// or timed-out connection stays retryable.
    pub fn is_permanent_connect_error(&self) -> bool {
        match self {
            StoreError::BadUrl(_) => true,
            StoreError::Db(sqlx::Error::Configuration(_)) => true,
            StoreError::Db(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|c| {
                    // PostgreSQL: invalid authorization (28xxx: bad password, no such role,
                    // no pg_hba entry), no such database (3D000). SQLite: CANTOPEN (14).
                    c.starts_with("28") || c == "3D000" || c == "14"
                }),
            _ => false,
        }
    }

    /// Whether this is a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(e) => e
                .as_database_error()
                .is_some_and(|d| d.is_unique_violation()),
            // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY.
            StoreError::Native(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == 2067 || e.extended_code == 1555
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub(crate) enum Inner {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database: cheap to clone (pools are shared).
#[derive(Debug, Clone)]
pub struct Store {
    /// On SQLite the writer: one connection, so writes queue in the process (in order,
    /// without SQLite's busy-handler sleeps) instead of fighting over the file lock.
    pub(crate) inner: Inner,
    /// On SQLite, read-only connections for [`on_read!`]; `None` on PostgreSQL.
    pub(crate) readers: Option<SqlitePool>,
    /// On SQLite, the group committer of the writer ([`write_tx!`], and its own connection
    /// for the hot path's native changes); `None` on PostgreSQL.
    pub(crate) group: Option<group_commit::GroupCommit>,
    sqlite_path: Option<PathBuf>,
    /// The page caches the connections were opened with (SQLite only).
    pub(crate) caches: SqliteCaches,
    /// On PostgreSQL, the pools of the [`Lane`]s; `None` on SQLite, whose writes all
    /// queue for one writer anyway.
    lanes: Option<PgLanes>,
}

/// A part of the daemon that has connections of its own on PostgreSQL ([`Store::lane`]),
/// so that the debit loop's transactions never hold every connection it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// The customer-message loop: on a due day the debit loop's tasks (up to
    /// `debit.max_in_flight`, each a transaction at a time) held every connection of one
    /// shared pool, and the messages, a handful of statements each, waited in its queue
    /// behind them (docs/benchmarks.md, "The message loop's own connections").
    Messages,
    /// The sandbox bank, which keeps its ledger in the daemon's database: a bank is
    /// another server, and its answers do not wait for the daemon's own connections.
    SandboxBank,
}

/// The lanes' pools, each as large as the main one and opened as connections are needed.
#[derive(Debug, Clone)]
struct PgLanes {
    messages: PgPool,
    sandbox_bank: PgPool,
}

/// How [`Store::connect_with`] opens its connections: the `[database]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// SQLite: read-only reader connections; PostgreSQL: the one pool.
    pub max_connections: u32,
    /// SQLite's page caches (ignored on PostgreSQL, whose cache is the server's).
    pub caches: SqliteCaches,
}

/// SQLite's page caches, KiB. Each connection has its own, allocated as pages are read and
/// kept until the connection closes, so the daemon's memory is bounded by
/// `connection_kib` x (readers + 2: the writer and the group committer's own) +
/// `planning_kib` beside its other needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteCaches {
    /// Every connection (each reader, the writer outside a planning pass, the group
    /// committer's own).
    pub connection_kib: u32,
    /// The writer during a planning pass: each page of a pass adds rows at a few hundred
    /// places of the claim indexes (keyed by time), whose leaves a larger cache keeps
    /// between pages instead of reading them back from the file.
    pub planning_kib: u32,
}

impl SqliteCaches {
    /// SQLite's own default per connection (2,000 KiB) and 8 MiB for planning: a
    /// daemon's first pass over 1,000,000 agreements peaked at 61 MiB with it and at
    /// 84 MiB with 32 MiB, for no steady difference in the pass's time
    /// (docs/benchmarks.md, "The allocator"): see `database.sqlite_cache_kib` and
    /// `database.sqlite_planning_cache_kib` in the README.
    pub const DEFAULT: Self = Self {
        connection_kib: 2_000,
        planning_kib: 8_192,
    };
}

impl Default for SqliteCaches {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One event-log row to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub at_ms: i64,
    pub kind: &'static str,
    pub agreement_id: Option<i64>,
    pub installment_id: Option<i64>,
    pub attempt_id: Option<i64>,
    pub detail: serde_json::Value,
}

/// One event-log row as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at_ms: i64,
    pub kind: String,
    pub agreement_id: Option<i64>,
    pub installment_id: Option<i64>,
    pub attempt_id: Option<i64>,
    pub detail: String,
}

/// How to claim rows of one leased work table (see [`Store::claim_rows`]).
pub(crate) struct Claim<'a> {
    pub table: &'a str,
    /// Which rows are claimable, most urgent kind first. Each is one condition (`$2` is
    /// now) and the column its rows are taken in order of; a partial index on
    /// `(column, id)` with the same condition serves it, so a claim reads only the rows
    /// it takes, never the whole backlog.
    pub kinds: &'a [(&'a str, &'a str)],
    /// The state change of a claim, e.g. `state = 'sending'`.
    pub set_state: &'a str,
    /// Comma-separated columns to return.
    pub columns: &'a str,
}

impl<'a> Claim<'a> {
    /// Outgoing messages (reminders, alerts): ones whose sender died mid-send first, then
    /// pending ones that are due; claiming marks them `sending`.
    pub(crate) fn messages(table: &'a str, columns: &'a str) -> Self {
        Claim {
            table,
            kinds: &[
                (
                    "state = 'sending' AND lease_until_ms < $2",
                    "lease_until_ms",
                ),
                (
                    "state = 'pending' AND scheduled_at_ms <= $2",
                    "scheduled_at_ms",
                ),
            ],
            set_state: "state = 'sending'",
            columns,
        }
    }

    fn statement(&self, backend: Backend, due: &str, order: &str) -> String {
        let Claim {
            table,
            set_state,
            columns,
            ..
        } = self;
        match backend {
            Backend::Sqlite => format!(
                "UPDATE {table} SET {set_state}, lease_owner = $1, lease_until_ms = $3, \
                    updated_at_ms = $2 \
                 WHERE id IN (SELECT id FROM {table} WHERE {due} \
                              ORDER BY {order}, id LIMIT $4) \
                 RETURNING {columns}"
            ),
            Backend::Postgres => {
                let returning = columns
                    .split(',')
                    .map(|c| format!("w.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ");
                // `id = ANY(ARRAY(...))`, not a CTE joined in: the prepared statement's
                // generic plan cannot know `LIMIT $4`, guessed a tenth of the table and
                // merge-joined the picked ids with the whole primary key index, which read
                // every row up to the highest id picked (5,635 rows for 16 early on a due
                // day, all 100,000 by its end). As an array the ids are looked up one by one.
                format!(
                    "UPDATE {table} w SET {set_state}, lease_owner = $1, lease_until_ms = $3, \
                        updated_at_ms = $2 \
                     WHERE w.id = ANY(ARRAY(SELECT id FROM {table} WHERE {due} \
                                            ORDER BY {order}, id LIMIT $4 \
                                            FOR UPDATE SKIP LOCKED)) \
                     RETURNING {returning}"
                )
            }
        }
    }
}

/// Starts a write transaction. On SQLite `BEGIN IMMEDIATE` takes the write lock at once,
/// so a transaction that reads before it writes can never fail half-way with `SQLITE_BUSY`
/// when another process (a command run beside the daemon) wrote in between.
pub(crate) trait WriteTx {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Db>>> + Send;
}

impl WriteTx for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WriteTx for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
}

/// libpq's Unix-socket form `postgres://USER@/DB?host=/var/run/postgresql` has an empty
/// host after the `@`, which the URL parser under sqlx rejects ("empty host"). The socket
/// named by `host=` wins over the URL's host in sqlx, so a placeholder host is filled in.
/// `postgres:///DB?host=/var/run/postgresql&user=USER` needs no change.
pub(crate) fn postgres_socket_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let socket_named = tail
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("host=/")));
    if authority.ends_with('@') && socket_named {
        format!("{scheme}://{authority}localhost{tail}").into()
    } else {
        url.into()
    }
}

/// Held by a daemon running on SQLite: while it lives, no other daemon may open the file.
#[derive(Debug)]
pub struct DaemonLock {
    _file: std::fs::File,
}

impl Store {
    /// Connects to `url` (`sqlite://...` or `postgres://...`). SQLite files (and their
    /// directory) are created if missing, with WAL, foreign keys and a busy timeout.
    ///
    /// On SQLite every write goes through one writer connection and its transactions
    /// start with `BEGIN IMMEDIATE` where it matters ([`WriteTx`]): SQLite allows one
    /// writer at a time anyway, and queueing in the pool costs nothing while several
    /// connections would sleep in the busy handler. `max_connections` sizes the
    /// read-only reader pool. On PostgreSQL it sizes the one pool.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self> {
        Self::connect_with(
            url,
            StoreOptions {
                max_connections,
                caches: SqliteCaches::DEFAULT,
            },
        )
        .await
    }

    /// [`Store::connect`] with the page caches of `options` (the daemon's and the
    /// commands' `[database]` settings).
    pub async fn connect_with(url: &SecretString, options: StoreOptions) -> Result<Self> {
        // FULL: a committed debit outcome survives power loss, not only kill -9.
        Self::connect_synchronous(url, options, SqliteSynchronous::Full).await
    }

    /// A throwaway SQLite copy (`repayd simulate`): as [`Store::connect`] with four
    /// readers, but commits do not wait for the disk (`synchronous = OFF`). A crash may
    /// lose or corrupt the copy, which is deleted anyway; the engine's own rules (one
    /// writer, fencing, savepoints) are unchanged.
    pub async fn connect_scratch(url: &SecretString) -> Result<Self> {
        if !url.expose_secret().starts_with("sqlite:") {
            return Err(StoreError::BadUrl(
                "a scratch copy must be a SQLite file".into(),
            ));
        }
        let options = StoreOptions {
            max_connections: 4,
            caches: SqliteCaches::DEFAULT,
        };
        Self::connect_synchronous(url, options, SqliteSynchronous::Off).await
    }

    async fn connect_synchronous(
        url: &SecretString,
        options: StoreOptions,
        synchronous: SqliteSynchronous,
    ) -> Result<Self> {
        let StoreOptions {
            max_connections,
            caches,
        } = options;
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(format!("sqlite URL: {e}")))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // Negative: KiB rather than pages.
                .pragma("cache_size", format!("-{}", caches.connection_kib));
            let path = options.get_filename().to_path_buf();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::BadUrl(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            // No test before a connection is handed out: a SQLite connection is a file
            // and a thread in this process, with no far end to lose, and the test is a
            // round trip to that thread on every acquire, a read's or a group's (sqlx
            // still tests each connection as it comes back to the pool).
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options.clone())
                .await?;
            let readers = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .test_before_acquire(false)
                .connect_with(options.create_if_missing(false).read_only(true))
                .await?;
            let native = group_commit::NativeDb {
                path: path.clone(),
                full_sync: matches!(synchronous, SqliteSynchronous::Full),
                cache_kib: caches.connection_kib,
            };
            Ok(Store {
                group: Some(group_commit::GroupCommit::start(writer.clone(), native)),
                inner: Inner::Sqlite(writer),
                readers: Some(readers),
                sqlite_path: Some(path),
                caches,
                lanes: None,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let url = postgres_socket_url(url);
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(&url)
                .await?;
            // Opened as they are first needed, like the main pool's beyond its first.
            let lane = || {
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_lazy(&url)
            };
            Ok(Store {
                inner: Inner::Postgres(pool),
                readers: None,
                group: None,
                sqlite_path: None,
                caches,
                lanes: Some(PgLanes {
                    messages: lane()?,
                    sandbox_bank: lane()?,
                }),
            })
        } else {
            Err(StoreError::BadUrl(
                "must start with sqlite: or postgres://".into(),
            ))
        }
    }

    /// The store `lane` works through. On PostgreSQL each lane has a pool of its own, as
    /// large as the main one, so a daemon holds up to three times
    /// `database.max_connections` on the server (the sandbox bank's only with the sandbox
    /// configured). On SQLite the same store: its writes queue for the one writer and its
    /// reads have the reader pool.
    pub fn lane(&self, lane: Lane) -> Store {
        match &self.lanes {
            Some(lanes) => Store {
                inner: Inner::Postgres(match lane {
                    Lane::Messages => lanes.messages.clone(),
                    Lane::SandboxBank => lanes.sandbox_bank.clone(),
                }),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// What `check-config` does with the database URL: reaches its target without
    /// changing anything. A SQLite file that exists is opened read-only; one that does not
    /// must have a directory to be created in (the nearest existing ancestor must be a
    /// directory: a path under a regular file fails). A PostgreSQL URL is parsed and
    /// connected to. The error never shows the URL (it may hold a password).
    pub async fn probe(url: &SecretString) -> Result<()> {
        use sqlx::ConnectOptions;
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::BadUrl(format!("sqlite URL: {e}")))?;
            let path = options.get_filename().to_path_buf();
            if path.exists() {
                let mut conn = options.read_only(true).connect().await.map_err(|e| {
                    StoreError::BadUrl(format!("cannot open {}: {e}", path.display()))
                })?;
                sqlx::query("SELECT COUNT(*) FROM sqlite_master")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| {
                        StoreError::BadUrl(format!(
                            "{} is not a SQLite database: {e}",
                            path.display()
                        ))
                    })?;
                return Ok(());
            }
            let mut ancestor = path.parent();
            while let Some(dir) = ancestor {
                let dir = if dir.as_os_str().is_empty() {
                    std::path::Path::new(".")
                } else {
                    dir
                };
                match std::fs::metadata(dir) {
                    Ok(m) if m.is_dir() => return Ok(()),
                    Ok(_) => {
                        return Err(StoreError::BadUrl(format!(
                            "{} cannot be created: {} is not a directory",
                            path.display(),
                            dir.display()
                        )));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        ancestor = dir.parent();
                    }
                    Err(e) => {
                        return Err(StoreError::BadUrl(format!(
                            "{} cannot be created: {}: {e}",
                            path.display(),
                            dir.display()
                        )));
                    }
                }
            }
            Ok(())
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = sqlx::postgres::PgConnectOptions::from_str(&postgres_socket_url(url))
                .map_err(|e| StoreError::BadUrl(format!("PostgreSQL URL: {e}")))?;
            let connect = options.connect();
            let mut conn = tokio::time::timeout(Duration::from_secs(10), connect)
                .await
                .map_err(|_| StoreError::BadUrl("PostgreSQL did not answer within 10 s".into()))?
                .map_err(|e| StoreError::BadUrl(format!("cannot connect to PostgreSQL: {e}")))?;
            sqlx::query("SELECT 1").execute(&mut conn).await?;
            Ok(())
        } else {
            Err(StoreError::BadUrl(
                "must start with sqlite: or postgres://".into(),
            ))
        }
    }

    /// Names of the explicitly created indexes on `table` (for the migration tests: a
    /// table rebuilt by a later migration must keep every index of the earlier ones).
    pub async fn index_names(&self, table: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = match &self.inner {
            Inner::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT name FROM sqlite_master \
                     WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL",
                )
                .bind(table)
                .fetch_all(pool)
                .await?
            }
            Inner::Postgres(pool) => {
                sqlx::query_scalar(
                    "SELECT indexname::TEXT FROM pg_indexes \
                     WHERE tablename = $1 AND schemaname = current_schema()",
                )
                .bind(table)
                .fetch_all(pool)
                .await?
            }
        };
        names.sort();
        Ok(names)
    }

    /// On SQLite, the group committer's work since this store was opened: groups
    /// committed and the write transactions they held (a ratio above one is fsyncs
    /// saved). `None` on PostgreSQL, where each write transaction commits alone.
    pub fn write_groups(&self) -> Option<(u64, u64)> {
        self.group.as_ref().map(|g| g.committed())
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations for this backend.
    pub async fn migrate(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await?,
            Inner::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// Whether every embedded migration has been applied (for readiness checks).
    pub async fn migrations_current(&self) -> Result<bool> {
        let (expected, applied): (usize, i64) = match &self.inner {
            Inner::Sqlite(pool) => (
                sqlx::migrate!("migrations/sqlite").iter().count(),
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(pool)
                    .await?,
            ),
            Inner::Postgres(pool) => (
                sqlx::migrate!("migrations/postgres").iter().count(),
                sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                    .fetch_one(pool)
                    .await?,
            ),
        };
        Ok(applied as usize == expected)
    }

    /// On SQLite, takes an exclusive lock beside the database file so a second daemon on
    /// the same file refuses to start. On PostgreSQL several daemons may share the work,
    /// so there is nothing to lock.
    pub fn lock_for_daemon(&self) -> Result<Option<DaemonLock>> {
        let Some(path) = &self.sqlite_path else {
            return Ok(None);
        };
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::BadUrl(format!("cannot open {}: {e}", lock_path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(DaemonLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
                path: path.display().to_string(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::BadUrl(format!(
                "cannot lock {}: {e}",
                lock_path.display()
            ))),
        }
    }

    /// Ends the leases of work left in flight by a previous process, so it is picked up
    /// (and reconciled by key) at once instead of when the lease would have expired.
    /// Only sound where no other daemon can be running: on SQLite, under the
    /// [`DaemonLock`]. Returns how many rows were taken over.
    pub async fn take_over_orphaned_leases(&self, _lock: &DaemonLock) -> Result<u64> {
        let n = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let mut n = 0;
            for sql in [
                "UPDATE debit_attempts SET lease_until_ms = 0 \
                 WHERE state IN ('claimed', 'funds_checked', 'submitted') AND lease_owner IS NOT NULL",
                "UPDATE reminders SET lease_until_ms = 0 WHERE state = 'sending'",
                "UPDATE alerts SET lease_until_ms = 0 WHERE state = 'sending'",
            ] {
                n += sqlx::query(sql).execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            n
        });
        Ok(n)
    }

    /// This database's deployment id: random, created with the database by the first
    /// migration, part of every idempotency key and Message-ID so that no identifier
    /// leaving the process repeats across databases (a recreated one included).
    pub async fn deployment_id(&self) -> Result<String> {
        let id = on_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>("SELECT id FROM deployment WHERE singleton = 1")
                .fetch_one(pool)
                .await?
        });
        Ok(id)
    }

    /// Refreshes the query planner's statistics, after a bulk change (an import): with
    /// them the planner knows how selective the open-by-due and claim indexes are. On
    /// SQLite `ANALYZE` samples (analysis_limit) so it takes well under a second at
    /// millions of rows; PostgreSQL samples anyway.
    pub async fn refresh_statistics(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(pool) => {
                sqlx::raw_sql("PRAGMA analysis_limit = 1000; ANALYZE; PRAGMA optimize;")
                    .execute(pool)
                    .await?;
            }
            Inner::Postgres(pool) => {
                sqlx::query("ANALYZE").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Refreshes the statistics of the tables a planning pass fills (debit attempts,
    /// reminders) while it runs, so that the debits beside it are planned with their
    /// size as it is (see [`crate::engine::Engine::plan`]). Sampled on both backends.
    pub async fn refresh_planned_statistics(&self) -> Result<()> {
        match &self.inner {
            Inner::Sqlite(pool) => {
                sqlx::raw_sql(
                    "PRAGMA analysis_limit = 1000; ANALYZE debit_attempts; ANALYZE reminders;",
                )
                .execute(pool)
                .await?;
            }
            Inner::Postgres(pool) => {
                sqlx::raw_sql("ANALYZE debit_attempts; ANALYZE reminders;")
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    pub async fn append_event(&self, event: &NewEvent) -> Result<()> {
        on_pool!(self, |pool| insert_event!(pool, event))?;
        Ok(())
    }

    /// Events in the order they were written, optionally for one agreement.
    pub async fn events(&self, agreement_id: Option<i64>) -> Result<Vec<EventRow>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, EventRow>(
                "SELECT id, at_ms, kind, agreement_id, installment_id, attempt_id, detail \
                 FROM events WHERE ($1 IS NULL OR agreement_id = $1) ORDER BY id",
            )
            .bind(agreement_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Runs one administrative statement built at run time (CREATE/DROP DATABASE in
    /// test set-up). Never pass user input here.
    pub async fn execute_admin(&self, sql: &str) -> Result<()> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        on_pool!(self, |pool| {
            sqlx::raw_sql(sql).execute(pool).await?;
        });
        Ok(())
    }

    /// Claims up to `limit` rows of a leased work table (`debit_attempts`, `reminders`,
    /// `alerts`): rows of each of the claim's kinds in turn (most urgent first), oldest
    /// first within a kind, get `set_state` and this worker's lease (`$1` owner, `$3`
    /// expiry). PostgreSQL skips rows another daemon has locked; SQLite has one writer, so
    /// the UPDATE itself is the claim. Returns the rows kind by kind.
    pub(crate) async fn claim_rows<R>(
        &self,
        claim: &Claim<'_>,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + group_commit::NativeRow
            + Send
            + Unpin,
    {
        if let (Inner::Sqlite(_), Some(group)) = (&self.inner, &self.group) {
            // SQLite's writer: every kind in one change on the group committer's own
            // connection, committed with its group (and undone together if one fails).
            let statements: Vec<String> = claim
                .kinds
                .iter()
                .map(|(due, order)| claim.statement(Backend::Sqlite, due, order))
                .collect();
            let owner = owner.to_string();
            return group
                .run_native(move |conn| {
                    let mut claimed: Vec<R> = Vec::new();
                    for sql in &statements {
                        let want = limit - claimed.len() as i64;
                        if want <= 0 {
                            break;
                        }
                        claimed.extend(group_commit::query_all_numbered(
                            conn,
                            sql,
                            &[&owner, &now_ms, &lease_until_ms, &want],
                            R::from_native,
                        )?);
                    }
                    Ok(claimed)
                })
                .await;
        }
        let mut claimed: Vec<R> = Vec::new();
        for (due, order) in claim.kinds {
            let want = limit - claimed.len() as i64;
            if want <= 0 {
                break;
            }
            let sql = claim.statement(self.backend(), due, order);
            let rows = on_pool!(self, |pool| {
                sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql))
                    .bind(owner)
                    .bind(now_ms)
                    .bind(lease_until_ms)
                    .bind(want)
                    .fetch_all(pool)
                    .await?
            });
            claimed.extend(rows);
        }
        Ok(claimed)
    }

    pub async fn close(&self) {
        if let Some(readers) = &self.readers {
            readers.close().await;
        }
        if let Some(lanes) = &self.lanes {
            lanes.messages.close().await;
            lanes.sandbox_bank.close().await;
        }
        on_pool!(self, |pool| pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        Backend, Inner, KEPT_SHORT_ROWS, ROWS_PER_INSERT, SqliteCaches, Store, StoreOptions,
        keep_prepared, placeholders, postgres_socket_url,
    };
    use secrecy::SecretString;

    #[test]
    fn the_libpq_socket_form_gets_a_placeholder_host() {
        assert_eq!(
            postgres_socket_url("postgres://repayd@/repayd?host=/var/run/postgresql"),
            "postgres://repayd@localhost/repayd?host=/var/run/postgresql"
        );
        assert_eq!(
            postgres_socket_url("postgresql://u:p%40ss@/db?sslmode=disable&host=/run/pg"),
            "postgresql://u:p%40ss@localhost/db?sslmode=disable&host=/run/pg"
        );
        // Already parseable, or no socket named: unchanged.
        for url in [
            "postgres:///repayd?host=/var/run/postgresql&user=repayd",
            "postgres://repayd@db.internal/repayd",
            "postgres://repayd@/repayd",
        ] {
            assert_eq!(postgres_socket_url(url), url);
        }
    }

    /// `PRAGMA cache_size` of the writer and of a reader, as SQLite reports it
    /// (negative: KiB).
    async fn cache_sizes(store: &Store) -> (i64, i64) {
        let (Inner::Sqlite(writer), Some(readers)) = (&store.inner, &store.readers) else {
            panic!("a SQLite store");
        };
        let size = "PRAGMA cache_size";
        (
            sqlx::query_scalar(size).fetch_one(writer).await.unwrap(),
            sqlx::query_scalar(size).fetch_one(readers).await.unwrap(),
        )
    }

    /// Every connection gets the configured page cache; the writer gets the planning one
    /// for the length of a pass and its own back after it.
    #[tokio::test]
    async fn sqlite_connections_get_the_configured_page_caches() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("caches.db").display());
        let options = StoreOptions {
            max_connections: 2,
            caches: SqliteCaches {
                connection_kib: 1_000,
                planning_kib: 4_096,
            },
        };
        let store = Store::connect_with(&SecretString::from(url), options)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        assert_eq!(cache_sizes(&store).await, (-1_000, -1_000));
        store.planning_cache(true).await.unwrap();
        assert_eq!(cache_sizes(&store).await, (-4_096, -1_000));
        store.planning_cache(false).await.unwrap();
        assert_eq!(cache_sizes(&store).await, (-1_000, -1_000));
        store.close().await;
    }

    #[test]
    fn only_short_and_full_multi_row_shapes_stay_prepared() {
        assert!(keep_prepared(1) && keep_prepared(KEPT_SHORT_ROWS));
        assert!(keep_prepared(ROWS_PER_INSERT));
        assert!(!keep_prepared(KEPT_SHORT_ROWS + 1) && !keep_prepared(ROWS_PER_INSERT - 1));
    }

    #[test]
    fn placeholders_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(placeholders(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(
            placeholders(Backend::Postgres, 3, 2),
            "($1, $2, $3), ($4, $5, $6)"
        );
    }
}
