//! Group commit on SQLite's single writer connection.
//!
//! With `synchronous = FULL` every commit is an fsync of the write-ahead log, and one
//! writer commits one transaction at a time, so a commit per state change bounds the debit
//! rate at the disk's commit rate divided by the commits per debit. Here the hot-path
//! changes (a debit attempt's fenced state changes, the sandbox bank's bookings) are
//! queued to one committer task, which runs every change waiting in the queue inside one
//! `BEGIN IMMEDIATE` transaction, each change in a savepoint of its own (a change that
//! fails, a fenced update that finds the row taken, rolls back alone), then commits once:
//! one fsync covers the whole group.
//!
//! What callers may rely on is unchanged: a change's result is handed back only after the
//! commit that made it durable (so an outcome is acted on, a receipt queued or a gateway
//! called, only once it is committed), and if that commit fails every change of the group
//! reports the failure and none of them happened. The group grows with the load: while
//! one group runs, the next one queues.
//!
//! Two kinds of change share the queue, in order. A change written with sqlx runs on the
//! writer pool's connection, where every statement is a message to that connection's
//! thread and an answer back (two thread wake-ups each, whatever the statement does). The
//! hot path's changes (a debit attempt's state changes, the sandbox bank's bookings, a
//! message's outcomes) are native ([`GroupCommit::run_native`]): plain functions over the
//! committer's own connection to the same file ([`NativeDb`]), run on a blocking thread a
//! whole group at a time, so a statement there is a function call. A run of queued native
//! changes makes one group and one transaction on that connection, a run of sqlx changes
//! another on the writer's; the committer holds the writer pool's one connection
//! throughout either, so nothing else in the process writes meanwhile.

use super::{Result, StoreError};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

pub(crate) type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

/// Most changes in one group: bounds how long the write lock is held at a time.
const MAX_GROUP: usize = 512;

/// A change that ran in the open group and waits for the group's commit to report.
struct Ran {
    /// The change succeeded (its writes stand inside its savepoint).
    ok: bool,
    /// Hands the caller its result (`None`) or the group's failure (`Some`).
    settle: Box<dyn FnOnce(Option<String>) + Send>,
}

/// The savepoint statements a sqlx change owes before its own: opening its savepoint,
/// and releasing the one of the change before it when that one succeeded, as one call
/// (every call is a round trip to the connection's thread).
pub(crate) struct Opening {
    sql: &'static str,
    taken: bool,
}

impl Opening {
    /// The statements to run before the change's first statement (empty, or ending in
    /// `; `). It must be taken before the change runs anything: a change that fails
    /// without having taken it is taken to have written nothing.
    pub(crate) fn take(&mut self) -> &'static str {
        self.taken = true;
        self.sql
    }
}

/// What the next change must run before its own statements, and which savepoint (`g0`
/// or `g1`) is open after that. `open`: the savepoint open now (`None` right after
/// `BEGIN`); `dirty`: the change in it succeeded, so it is released and the other one
/// opened. The two names take turns so that when a change's first call did not run at
/// all, the rollback to its savepoint fails (and the group with it) instead of undoing
/// the change before it.
fn opening_after(open: Option<usize>, dirty: bool) -> (&'static str, usize) {
    match (open, dirty) {
        (None, _) => ("SAVEPOINT g0; ", 0),
        (Some(s), false) => ("", s),
        (Some(0), true) => ("RELEASE g0; SAVEPOINT g1; ", 1),
        (Some(_), true) => ("RELEASE g1; SAVEPOINT g0; ", 0),
    }
}

trait Change: Send {
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        opening: &'c mut Opening,
    ) -> BoxFut<'c, Ran>;
    fn fail(self: Box<Self>, why: String);
}

/// A change whose body knows nothing of savepoints: the committer's opening runs first
/// as a call of its own.
struct Queued<T, F> {
    body: F,
    reply: oneshot::Sender<Result<T>>,
}

fn settle_with<T: Send + 'static>(result: Result<T>, reply: oneshot::Sender<Result<T>>) -> Ran {
    Ran {
        ok: result.is_ok(),
        settle: Box::new(move |failed| {
            let _ = reply.send(match failed {
                None => result,
                Some(why) => Err(StoreError::CommitFailed(why)),
            });
        }),
    }
}

impl<T, F> Change for Queued<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        opening: &'c mut Opening,
    ) -> BoxFut<'c, Ran> {
        Box::pin(async move {
            let Queued { body, reply } = *self;
            let sql = opening.take();
            let result = if sql.is_empty() {
                body(&mut *conn).await
            } else {
                match sqlx::raw_sql(sql).execute(&mut *conn).await {
                    Ok(_) => body(&mut *conn).await,
                    Err(e) => Err(e.into()),
                }
            };
            settle_with(result, reply)
        })
    }

    fn fail(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::CommitFailed(why)));
    }
}

/// A change that runs on the committer's own connection ([`GroupCommit::run_native`]).
trait NativeChange: Send {
    fn run(self: Box<Self>, conn: &rusqlite::Connection) -> Ran;
    fn fail(self: Box<Self>, why: String);
}

struct Native<T, F> {
    body: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> NativeChange for Native<T, F>
where
    T: Send + 'static,
    F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &rusqlite::Connection) -> Ran {
        let Native { body, reply } = *self;
        settle_with(body(conn), reply)
    }

    fn fail(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::CommitFailed(why)));
    }
}

/// One queued change of either kind.
enum Work {
    Sqlx(Box<dyn Change>),
    Native(Box<dyn NativeChange>),
}

impl Work {
    fn fail(self, why: String) {
        match self {
            Work::Sqlx(c) => c.fail(why),
            Work::Native(c) => c.fail(why),
        }
    }

    fn sqlx(self) -> std::result::Result<Box<dyn Change>, Work> {
        match self {
            Work::Sqlx(c) => Ok(c),
            other => Err(other),
        }
    }

    fn native(self) -> std::result::Result<Box<dyn NativeChange>, Work> {
        match self {
            Work::Native(c) => Ok(c),
            other => Err(other),
        }
    }
}

/// The next queued change if it is of the kind `pick` takes; one of the other kind ends
/// the group and is kept in `other` for the next.
fn next_of_kind<C>(
    queue: &mut mpsc::UnboundedReceiver<Work>,
    other: &mut Option<Work>,
    pick: impl FnOnce(Work) -> std::result::Result<C, Work>,
) -> Option<C> {
    match pick(queue.try_recv().ok()?) {
        Ok(change) => Some(change),
        Err(work) => {
            *other = Some(work);
            None
        }
    }
}

/// Counts a committed group and tells every change's caller how it ended (`failed`: why
/// the group did not commit). Returns whether it committed.
fn settle_group(ran: Vec<Ran>, failed: Option<String>, stats: &Stats) -> bool {
    if failed.is_none() {
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats.changes.fetch_add(ran.len() as u64, Ordering::Relaxed);
    }
    let committed = failed.is_none();
    for r in ran {
        (r.settle)(failed.clone());
    }
    committed
}

/// How the committer opens its own connection: the writer pool's file with the same
/// settings (WAL is the file's; durability, foreign keys, busy timeout and page cache are
/// the connection's).
#[derive(Debug, Clone)]
pub(crate) struct NativeDb {
    pub(crate) path: PathBuf,
    /// `synchronous = FULL` (a committed change survives power loss) or `OFF` (a scratch
    /// copy).
    pub(crate) full_sync: bool,
    pub(crate) cache_kib: u32,
}

/// Statements each native connection keeps prepared: every native change's statements,
/// with room to spare.
const NATIVE_STATEMENT_CACHE: usize = 64;

impl NativeDb {
    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(NATIVE_STATEMENT_CACHE);
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -{};",
            if self.full_sync { "FULL" } else { "OFF" },
            self.cache_kib
        ))?;
        Ok(conn)
    }
}

/// Binds `values` to `stmt` by number: the `n`th value to the parameter `$n`, wherever
/// the statement names it (SQLite numbers `$n` parameters in the order they first appear,
/// which need not be `n`'s). A value the statement does not name is skipped.
pub(crate) fn bind_numbered(
    stmt: &mut rusqlite::Statement<'_>,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<()> {
    let mut name = String::with_capacity(4);
    for (i, v) in values.iter().enumerate() {
        name.clear();
        std::fmt::Write::write_fmt(&mut name, format_args!("${}", i + 1))
            .expect("writing to a String");
        if let Some(index) = stmt.parameter_index(&name)? {
            stmt.raw_bind_parameter(index, v)?;
        }
    }
    Ok(())
}

/// Runs `sql` (cached on `conn`) with `values` bound by number ([`bind_numbered`]) and
/// returns the rows it changed.
pub(crate) fn execute_numbered(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind_numbered(&mut stmt, values)?;
    stmt.raw_execute()
}

/// A row type that native changes read (a claim's `RETURNING`): by column name, as
/// sqlx's `FromRow` does on the other path.
pub(crate) trait NativeRow: Sized + Send + 'static {
    fn from_native(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self>;
}

/// Implements [`NativeRow`] for a struct whose fields are named as its columns (every
/// field must be listed: the struct literal checks it).
macro_rules! native_row {
    ($ty:ty { $($field:ident),* $(,)? }) => {
        impl $crate::store::group_commit::NativeRow for $ty {
            fn from_native(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
                Ok(Self { $($field: row.get(stringify!($field))?),* })
            }
        }
    };
}
pub(crate) use native_row;

/// Runs `sql` (cached on `conn`) with `values` bound by number and maps every row.
pub(crate) fn query_all_numbered<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
    mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind_numbered(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Runs `sql` (cached on `conn`) with `values` bound by number and maps its first row, if
/// any.
pub(crate) fn query_numbered<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    values: &[&dyn rusqlite::ToSql],
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    bind_numbered(&mut stmt, values)?;
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(row) => map(row).map(Some),
        None => Ok(None),
    }
}

/// The queue to the committer task of one SQLite writer pool.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Work>,
    stats: Arc<Stats>,
}

/// What the committer has done since it started.
#[derive(Debug, Default)]
struct Stats {
    /// Groups that committed.
    groups: AtomicU64,
    /// Changes in those groups.
    changes: AtomicU64,
}

impl GroupCommit {
    /// Starts the committer on `writer` (the one-connection writer pool), with native
    /// changes on a connection of its own to `native`'s file (opened at the first). It
    /// ends when every handle to the queue is gone.
    pub(crate) fn start(writer: SqlitePool, native: NativeDb) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(committer(writer, native, rx, Arc::clone(&stats)));
        Self { queue, stats }
    }

    /// Groups committed and the changes they held, since the committer started.
    pub(crate) fn committed(&self) -> (u64, u64) {
        (
            self.stats.groups.load(Ordering::Relaxed),
            self.stats.changes.load(Ordering::Relaxed),
        )
    }

    /// Runs `body` in the next group and returns its result once the group is committed.
    /// `body` writes on the connection it is given, inside the group's transaction (in a
    /// savepoint: an `Err` undoes what it did and nothing else); it must not commit.
    pub(crate) async fn run<T, F>(&self, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Work::Sqlx(Box::new(Queued { body, reply })), answer)
            .await
    }

    /// Runs `body` in the next group on the committer's own connection and returns its
    /// result once the group is committed. `body` runs synchronously on a blocking
    /// thread, inside the group's transaction (in a savepoint: an `Err` undoes what it did
    /// and nothing else); it must not commit, and must not wait on anything but the
    /// database.
    pub(crate) async fn run_native<T, F>(&self, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Work::Native(Box::new(Native { body, reply })), answer)
            .await
    }

    async fn enqueue<T>(&self, change: Work, answer: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.queue
            .send(change)
            .map_err(|_| StoreError::CommitFailed("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::CommitFailed("the writer stopped mid-group".into()))?
    }
}

/// Longest the committer keeps the writer connection for group after group while changes
/// keep coming: handing it back to the pool and taking it again costs round trips to the
/// connection's thread (sqlx tests a connection as it is returned), and the writer's other
/// users (the planner's pages, imports, the operator's changes) wait at most this long,
/// plus one group, for their turn.
const HOLD: std::time::Duration = std::time::Duration::from_millis(20);

async fn committer(
    writer: SqlitePool,
    native: NativeDb,
    mut queue: mpsc::UnboundedReceiver<Work>,
    stats: Arc<Stats>,
) {
    // The native connection and the queue go to the blocking thread with each native
    // group and come back with it.
    let mut native_conn: Option<rusqlite::Connection> = None;
    // A change of the other kind that ended a group: it starts the next one.
    let mut waiting: Option<Work> = None;
    loop {
        let first = match waiting.take() {
            Some(w) => w,
            None => match queue.recv().await {
                Some(w) => w,
                None => return,
            },
        };
        // Held through either kind of group: the process's write lock.
        let mut conn = match writer.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                first.fail(format!("no writer connection: {e}"));
                continue;
            }
        };
        let held = std::time::Instant::now();
        let mut next = Some(first);
        while let Some(first) = next.take() {
            let started = std::time::Instant::now();
            let native_group = matches!(first, Work::Native(_));
            let before = stats.changes.load(Ordering::Relaxed);
            let (committed, other) = match first {
                Work::Sqlx(first) => run_group(&mut conn, first, &mut queue, &stats).await,
                Work::Native(first) => {
                    let (native, stats_) = (native.clone(), Arc::clone(&stats));
                    let mut db = native_conn.take();
                    let joined = tokio::task::spawn_blocking(move || {
                        let out = run_native_group(&mut db, &native, first, &mut queue, &stats_);
                        (db, queue, out)
                    })
                    .await;
                    match joined {
                        Ok((db, q, out)) => {
                            native_conn = db;
                            queue = q;
                            out
                        }
                        Err(e) => {
                            // The group's changes were dropped with their replies (their
                            // callers hear that the writer stopped), and the queue with
                            // them: every later change fails the same way.
                            tracing::error!(error = %e, "the SQLite committer's thread failed; writes stop");
                            return;
                        }
                    }
                }
            };
            tracing::debug!(
                native = native_group,
                committed,
                changes = stats.changes.load(Ordering::Relaxed) - before,
                micros = started.elapsed().as_micros() as u64,
                "write group"
            );
            // A change of the other kind starts the next group, on the same connection
            // while it has not been held too long, else after the others' turn. The
            // changes that queued while this group ran make the next group, on the same
            // connection, until the connection has been held long enough. After a failed
            // group the connection goes back to the pool, which tests it.
            if let Some(other) = other {
                if committed && held.elapsed() < HOLD {
                    next = Some(other);
                } else {
                    waiting = Some(other);
                }
            } else if committed && held.elapsed() < HOLD {
                next = queue.try_recv().ok();
            }
        }
    }
}

/// Runs `first` and the native changes queued behind it (up to [`MAX_GROUP`], until a
/// change of the other kind, which is handed back) in one `BEGIN IMMEDIATE` transaction on
/// the committer's own connection (opened into `db` if not yet), each change in a
/// savepoint of its own; commits once and tells every change's caller how it ended.
/// Returns whether it committed, and the change of the other kind that ended it.
fn run_native_group(
    db: &mut Option<rusqlite::Connection>,
    native: &NativeDb,
    first: Box<dyn NativeChange>,
    queue: &mut mpsc::UnboundedReceiver<Work>,
    stats: &Stats,
) -> (bool, Option<Work>) {
    let conn: &rusqlite::Connection = match db {
        Some(conn) => conn,
        None => match native.open() {
            Ok(conn) => db.insert(conn),
            Err(e) => {
                first.fail(format!(
                    "cannot open the committer's connection to {}: {e}",
                    native.path.display()
                ));
                return (false, None);
            }
        },
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        first.fail(format!("cannot begin a write transaction: {e}"));
        return (false, None);
    }
    let mut ran = Vec::new();
    let mut other = None;
    let mut clean = true;
    let mut next = Some(first);
    let statement = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]));
    while let Some(change) = next.take() {
        if let Err(e) = statement("SAVEPOINT g") {
            change.fail(format!("cannot open a savepoint: {e}"));
            clean = false;
            break;
        }
        let r = change.run(conn);
        // A failed change is undone to its savepoint alone.
        let closed = if r.ok {
            statement("RELEASE g")
        } else {
            statement("ROLLBACK TO g").and_then(|_| statement("RELEASE g"))
        };
        ran.push(r);
        if closed.is_err() {
            clean = false;
            break;
        }
        if ran.len() >= MAX_GROUP {
            break;
        }
        next = next_of_kind(queue, &mut other, Work::native);
    }
    let failed = if clean {
        match conn.execute_batch("COMMIT") {
            Ok(()) => None,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Some(format!("commit failed: {e}"))
            }
        }
    } else {
        let _ = conn.execute_batch("ROLLBACK");
        Some("a change could not be isolated in its savepoint; the group was rolled back".into())
    };
    (settle_group(ran, failed, stats), other)
}

/// Runs `first` and the sqlx changes queued behind it (up to [`MAX_GROUP`], until a
/// native change, which is handed back) in one transaction, commits it, and tells every
/// change's caller how it ended. Returns whether it committed, and the native change that
/// ended it.
async fn run_group(
    conn: &mut SqliteConnection,
    first: Box<dyn Change>,
    queue: &mut mpsc::UnboundedReceiver<Work>,
    stats: &Stats,
) -> (bool, Option<Work>) {
    let mut tx = match sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            first.fail(format!("cannot begin a write transaction: {e}"));
            return (false, None);
        }
    };
    let mut other = None;
    let mut ran = Vec::new();
    // Each change runs in a savepoint of its own, so one that fails is undone alone.
    // The savepoint statements cost a round trip to the connection's thread each, so
    // they ride with the change's own first call where it can ([`Opening`]): before
    // the first change `SAVEPOINT g0`, between two changes `RELEASE gN; SAVEPOINT
    // gM` (after a failed change, which was rolled back to its savepoint, the same
    // savepoint serves the next one as it stands, with nothing to run), and none
    // after the last: the commit ends it.
    let mut open: Option<usize> = None;
    let mut dirty = false;
    let mut clean = true;
    let mut next = Some(first);
    while let Some(change) = next.take() {
        let (sql, opens) = opening_after(open, dirty);
        let mut opening = Opening { sql, taken: false };
        let r = change.run(&mut tx, &mut opening).await;
        // Taken (or nothing to take): the savepoint `opens` is the one open now, or
        // the change's first call never ran, and the rollback to it below fails.
        let taken = opening.taken || sql.is_empty();
        if taken {
            open = Some(opens);
        }
        if r.ok {
            dirty |= taken;
        } else if taken {
            // Undo the failed change to its savepoint, which stays open at the same
            // point for the next change.
            let undo = if opens == 0 {
                "ROLLBACK TO g0"
            } else {
                "ROLLBACK TO g1"
            };
            clean = sqlx::raw_sql(undo).execute(&mut *tx).await.is_ok();
            dirty = false;
        }
        // Not taken and failed: it ran no statement, so there is nothing to undo.
        ran.push(r);
        if !clean || ran.len() >= MAX_GROUP {
            break;
        }
        next = next_of_kind(queue, &mut other, Work::sqlx);
    }
    let failed = if clean {
        tx.commit()
            .await
            .err()
            .map(|e| format!("commit failed: {e}"))
    } else {
        let _ = tx.rollback().await;
        Some("a change could not be isolated in its savepoint; the group was rolled back".into())
    };
    (settle_group(ran, failed, stats), other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    /// Six changes queued before the committer runs, so they share one group: the
    /// second, fourth and fifth write a row and then fail. Each failed change is undone
    /// alone (two of them back to back, then one that succeeds after them); the others
    /// commit together, and every caller hears its own result.
    #[tokio::test]
    async fn a_failed_change_is_undone_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("group.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&writer)
            .await
            .unwrap();
        let group = GroupCommit::start(writer.clone(), native(&dir));
        let fails = [false, true, false, true, true, false];
        let changes = fails.iter().enumerate().map(|(i, &fail)| {
            let group = group.clone();
            async move {
                group
                    .run(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (id, v) VALUES ($1, 'x')")
                                .bind(i as i64)
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("UPDATE t SET v = 'y' WHERE id < $1")
                                .bind(i as i64)
                                .execute(&mut *conn)
                                .await?;
                            if fail {
                                return Err(StoreError::Conflict(format!("change {i} fails")));
                            }
                            Ok(i)
                        })
                    })
                    .await
            }
        });
        // Polled together on this one thread: all six are queued before the committer
        // takes the first.
        let results = futures_util::future::join_all(changes).await;
        for (i, (result, &fail)) in results.iter().zip(&fails).enumerate() {
            match result {
                Ok(n) => assert!(!fail && *n == i, "change {i}: {result:?}"),
                Err(StoreError::Conflict(why)) => {
                    assert!(fail, "change {i}: {why}");
                    assert_eq!(why, &format!("change {i} fails"));
                }
                Err(e) => panic!("change {i}: unexpected {e}"),
            }
        }
        assert_eq!(group.committed(), (1, 6), "one group held all six");
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, v FROM t ORDER BY id")
            .fetch_all(&writer)
            .await
            .unwrap();
        // Only the rows of changes 0, 2 and 5; the updates of failed changes undone too
        // (row 0 was set to 'y' by change 2 and by change 5, and by nobody else that stands).
        assert_eq!(
            rows,
            vec![
                (0, "y".to_string()),
                (2, "y".to_string()),
                (5, "x".to_string())
            ]
        );
    }

    /// The committer keeps the writer connection from group to group while changes keep
    /// coming, but not for ever: another user of the writer (the planner, an import)
    /// gets it while a flood of changes is still queued, and its write lands between
    /// two groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_is_handed_back_while_changes_keep_coming() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&writer)
            .await
            .unwrap();
        let group = GroupCommit::start(writer.clone(), native(&dir));
        const FLOOD: i64 = 20_000;
        let done = Arc::new(AtomicU64::new(0));
        // Every change queued at once, each by a task of its own: the queue is not empty
        // until the flood is over, so a committer that kept the connection while changes
        // wait would hand it over only then.
        let callers: Vec<_> = (0..FLOOD)
            .map(|i| {
                let (group, done) = (group.clone(), Arc::clone(&done));
                tokio::spawn(async move {
                    group
                        .run(move |conn| {
                            Box::pin(async move {
                                sqlx::query("INSERT INTO t (id, v) VALUES ($1, 'flood')")
                                    .bind(i)
                                    .execute(&mut *conn)
                                    .await?;
                                Ok(())
                            })
                        })
                        .await
                        .unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        while done.load(Ordering::Relaxed) < 100 {
            tokio::task::yield_now().await;
        }
        sqlx::query("INSERT INTO t (id, v) VALUES (-1, 'between')")
            .execute(&writer)
            .await
            .unwrap();
        let when = done.load(Ordering::Relaxed);
        for c in callers {
            c.await.unwrap();
        }
        assert!(
            when < FLOOD as u64 / 2,
            "the other writer got the connection only after {when} of {FLOOD} changes"
        );
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
            .fetch_one(&writer)
            .await
            .unwrap();
        assert_eq!(n, FLOOD + 1);
    }

    /// The committer's own connection to the test's database.
    fn native(dir: &tempfile::TempDir) -> NativeDb {
        NativeDb {
            path: dir.path().join("group.db"),
            full_sync: true,
            cache_kib: 2_000,
        }
    }

    async fn writer(dir: &tempfile::TempDir) -> SqlitePool {
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(dir.path().join("group.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .unwrap()
    }

    /// The committer's own connection writes with the writer's settings: durable commits
    /// (`synchronous = FULL`, or OFF for a scratch copy), foreign keys enforced, the
    /// configured page cache, WAL, and a busy timeout.
    #[tokio::test]
    async fn the_native_connection_has_the_writers_settings() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        for (full_sync, expected_sync) in [(true, 2_i64), (false, 0)] {
            let group = GroupCommit::start(
                writer.clone(),
                NativeDb {
                    full_sync,
                    cache_kib: 4_096,
                    ..native(&dir)
                },
            );
            let settings = group
                .run_native(|conn| {
                    let get = |pragma: &str| -> rusqlite::Result<String> {
                        conn.query_row(&format!("PRAGMA {pragma}"), [], |row| {
                            row.get::<_, rusqlite::types::Value>(0).map(|v| match v {
                                rusqlite::types::Value::Integer(i) => i.to_string(),
                                rusqlite::types::Value::Text(t) => t,
                                other => format!("{other:?}"),
                            })
                        })
                    };
                    Ok([
                        get("synchronous")?,
                        get("foreign_keys")?,
                        get("cache_size")?,
                        get("journal_mode")?,
                        get("busy_timeout")?,
                    ])
                })
                .await
                .unwrap();
            assert_eq!(
                settings,
                [
                    expected_sync.to_string(),
                    "1".into(),
                    "-4096".into(),
                    "wal".into(),
                    "10000".into()
                ],
                "full_sync = {full_sync}"
            );
        }
    }

    /// Native changes (`run_native`) queued together with a sqlx one, in that order: a
    /// run of native changes makes a group on the committer's own connection, the sqlx
    /// change one on the writer's, the native changes after it a third. A fenced update
    /// that finds no row is detected after it ran, and that change alone is undone (its
    /// insert included), back to back with another failure and right after the sqlx
    /// group; a change that fails before writing undoes nothing of the change before it.
    #[tokio::test]
    async fn a_native_change_that_fails_is_undone_alone_between_sqlx_changes() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        sqlx::raw_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL); \
             CREATE TABLE ev (id INTEGER NOT NULL); \
             INSERT INTO t (id, v) VALUES (0, 'free'), (1, 'free'), (2, 'free'), (3, 'free'), \
                (4, 'free'), (5, 'free'), (6, 'free')",
        )
        .execute(&writer)
        .await
        .unwrap();
        let group = GroupCommit::start(writer.clone(), native(&dir));
        // What each change is: plain (sqlx), native and fenced (the fence holds when the
        // row is 'free'), or native and failing before it writes.
        #[derive(Clone, Copy, Debug, PartialEq)]
        enum Kind {
            Plain,
            Fenced { holds: bool },
            EarlyFail,
        }
        use Kind::*;
        let kinds = [
            Fenced { holds: true },
            Fenced { holds: false },
            Fenced { holds: false },
            Fenced { holds: true },
            Plain,
            Fenced { holds: false },
            EarlyFail,
        ];
        // Rows of the changes whose fence fails are taken beforehand.
        for (i, k) in kinds.iter().enumerate() {
            if *k == (Fenced { holds: false }) {
                sqlx::query("UPDATE t SET v = 'taken' WHERE id = $1")
                    .bind(i as i64)
                    .execute(&writer)
                    .await
                    .unwrap();
            }
        }
        let changes = kinds.iter().enumerate().map(|(i, &kind)| {
            let group = group.clone();
            let i = i as i64;
            async move {
                match kind {
                    Plain => {
                        group
                            .run(move |conn| {
                                Box::pin(async move {
                                    sqlx::query("UPDATE t SET v = 'plain' WHERE id = $1")
                                        .bind(i)
                                        .execute(&mut *conn)
                                        .await?;
                                    Ok(i)
                                })
                            })
                            .await
                    }
                    Fenced { .. } => {
                        group
                            .run_native(move |conn| {
                                let taken = execute_numbered(
                                    conn,
                                    "UPDATE t SET v = 'done' WHERE id = $1 AND v = 'free'",
                                    &[&i],
                                )?;
                                execute_numbered(conn, "INSERT INTO ev (id) VALUES ($1)", &[&i])?;
                                execute_numbered(
                                    conn,
                                    "UPDATE t SET v = v || '!' WHERE id = 0",
                                    &[],
                                )?;
                                if taken != 1 {
                                    return Err(StoreError::Conflict(format!("fenced {i}")));
                                }
                                Ok(i)
                            })
                            .await
                    }
                    EarlyFail => {
                        group
                            .run_native(move |_conn| {
                                Err::<i64, _>(StoreError::Conflict(format!("early {i}")))
                            })
                            .await
                    }
                }
            }
        });
        let results = futures_util::future::join_all(changes).await;
        for (i, (result, kind)) in results.iter().zip(&kinds).enumerate() {
            match (kind, result) {
                (Fenced { holds: true } | Plain, Ok(n)) => assert_eq!(*n, i as i64),
                (Fenced { holds: false }, Err(StoreError::Conflict(why))) => {
                    assert_eq!(why, &format!("fenced {i}"))
                }
                (EarlyFail, Err(StoreError::Conflict(why))) => {
                    assert_eq!(why, &format!("early {i}"))
                }
                _ => panic!("change {i} ({kind:?}): {result:?}"),
            }
        }
        assert_eq!(
            group.committed(),
            (3, 7),
            "four native changes, the sqlx one, the last two native ones"
        );
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, v FROM t ORDER BY id")
            .fetch_all(&writer)
            .await
            .unwrap();
        // Row 0 got one '!' from each change whose fence held (0 and 3), none from the
        // three that failed after writing it.
        assert_eq!(
            rows,
            vec![
                (0, "done!!".to_string()),
                (1, "taken".to_string()),
                (2, "taken".to_string()),
                (3, "done".to_string()),
                (4, "plain".to_string()),
                (5, "taken".to_string()),
                (6, "free".to_string()),
            ]
        );
        let events: Vec<i64> = sqlx::query_scalar("SELECT id FROM ev ORDER BY id")
            .fetch_all(&writer)
            .await
            .unwrap();
        assert_eq!(
            events,
            vec![0, 3],
            "the failed changes' inserts were undone"
        );
    }
}
