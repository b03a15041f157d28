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

use super::{Result, StoreError};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqlitePool;
use std::future::Future;
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

/// The savepoint statements a change owes before its own: opening its savepoint, and
/// releasing the one of the change before it when that one succeeded. Every statement
/// is a round trip to the connection's thread, so a change that knows how
/// ([`GroupCommit::run_opening`]) runs them in its own first call, in front of its first
/// statement (SQLite runs a call's statements in order and stops at the first error).
pub(crate) struct Opening {
    sql: &'static str,
    taken: bool,
}

impl Opening {
    /// The statements to put in front of the change's first statement, in its first call
    /// (empty, or ending in `; `). It must be taken before the change runs anything: a
    /// change that fails without having taken it is taken to have written nothing.
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

/// A change whose body runs the opening itself, in its first call.
struct Opened<T, F> {
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

impl<T, F> Change for Opened<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection, &'c mut Opening) -> BoxFut<'c, Result<T>>
        + Send
        + 'static,
{
    fn run<'c>(
        self: Box<Self>,
        conn: &'c mut SqliteConnection,
        opening: &'c mut Opening,
    ) -> BoxFut<'c, Ran> {
        Box::pin(async move {
            let Opened { body, reply } = *self;
            let result = body(&mut *conn, opening).await;
            settle_with(result, reply)
        })
    }

    fn fail(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::CommitFailed(why)));
    }
}

/// The queue to the committer task of one SQLite writer pool.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Box<dyn Change>>,
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
    /// Starts the committer on `writer` (the one-connection writer pool). It ends when
    /// every handle to the queue is gone.
    pub(crate) fn start(writer: SqlitePool) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(committer(writer, rx, Arc::clone(&stats)));
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
        self.enqueue(Box::new(Queued { body, reply }), answer).await
    }

    /// Like [`GroupCommit::run`], for a body that runs the savepoint statements it is
    /// handed ([`Opening::take`]) in front of its own first statement, in one call: a
    /// round trip to the connection's thread saved per change. The body must take the
    /// opening before running any statement; failing without having taken it, it must
    /// have written nothing.
    pub(crate) async fn run_opening<T, F>(&self, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection, &'c mut Opening) -> BoxFut<'c, Result<T>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Box::new(Opened { body, reply }), answer).await
    }

    async fn enqueue<T>(
        &self,
        change: Box<dyn Change>,
        answer: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
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
    mut queue: mpsc::UnboundedReceiver<Box<dyn Change>>,
    stats: Arc<Stats>,
) {
    while let Some(first) = queue.recv().await {
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
            let committed = run_group(&mut conn, first, &mut queue, &stats).await;
            // The changes that queued while this group ran make the next group, on the
            // same connection, until the connection has been held long enough. After a
            // failed group the connection goes back to the pool, which tests it.
            if committed && held.elapsed() < HOLD {
                next = queue.try_recv().ok();
            }
        }
    }
}

/// Runs `first` and the changes queued behind it (up to [`MAX_GROUP`]) in one
/// transaction, commits it, and tells every change's caller how it ended; whether it
/// committed.
async fn run_group(
    conn: &mut SqliteConnection,
    first: Box<dyn Change>,
    queue: &mut mpsc::UnboundedReceiver<Box<dyn Change>>,
    stats: &Stats,
) -> bool {
    let mut tx = match sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            first.fail(format!("cannot begin a write transaction: {e}"));
            return false;
        }
    };
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
        next = queue.try_recv().ok();
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

/// What one statement of a multi-statement call returned.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) rows: Vec<sqlx::sqlite::SqliteRow>,
    /// `sqlite3_changes()` when it finished: the rows of the last INSERT, UPDATE or
    /// DELETE, so meaningful for those statements only.
    pub(crate) changes: u64,
}

/// Runs several statements on SQLite's connection as one call (one round trip to the
/// connection's thread instead of one per statement) and returns what each returned, in
/// order; the first `skip` (an [`Opening`]'s statements) are left out. SQLite prepares
/// and runs the statements of the text in turn and stops at the first error; every
/// parameter is numbered (`$N`) and bound by its number in every statement that names
/// it (an anonymous `?` would take the next argument after those of the statements
/// before it). The whole text is one entry in the connection's statement cache.
///
/// Only for the writer's group changes, inside their savepoint: an error after some
/// statements ran leaves their writes for the rollback to undo.
pub(crate) async fn run_batch<'q>(
    conn: &mut SqliteConnection,
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    skip: usize,
) -> Result<Vec<Done>> {
    use futures_util::TryStreamExt;
    let mut out = Vec::new();
    let mut rows = Vec::new();
    let mut steps = sqlx::Executor::fetch_many(&mut *conn, query);
    while let Some(step) = steps.try_next().await? {
        match step {
            sqlx::Either::Left(done) => out.push(Done {
                rows: std::mem::take(&mut rows),
                changes: done.rows_affected(),
            }),
            sqlx::Either::Right(row) => rows.push(row),
        }
    }
    drop(steps);
    if out.len() < skip {
        return Err(StoreError::Corrupt(format!(
            "a multi-statement call returned {} results, fewer than its {skip} opening statements",
            out.len()
        )));
    }
    out.drain(..skip);
    Ok(out)
}

/// How many statements the opening text holds (each ends in `;`).
pub(crate) fn statements_in(opening: &str) -> usize {
    opening.matches(';').count()
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
        let group = GroupCommit::start(writer.clone());
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
        let group = GroupCommit::start(writer.clone());
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

    /// One call, several statements: the numbered parameters are bound by number in
    /// every statement that names them, each statement reports its own rows and row
    /// count, and `changes()` inside an INSERT is the count of the UPDATE before it (what
    /// the sandbox bank's batched booking decides a debit's status by).
    #[tokio::test]
    async fn a_batch_binds_numbered_parameters_in_every_statement_and_reports_each() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        sqlx::raw_sql(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL); \
             CREATE TABLE log (taken INTEGER NOT NULL, v TEXT NOT NULL); \
             INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b')",
        )
        .execute(&writer)
        .await
        .unwrap();
        let mut conn = writer.acquire().await.unwrap();
        for (id, taken) in [(1_i64, 1_i64), (3, 0)] {
            let done = run_batch(
                &mut conn,
                sqlx::query(
                    "SAVEPOINT x; \
                     UPDATE t SET v = $2 WHERE id = $1; \
                     INSERT INTO log (taken, v) SELECT c.n, $2 FROM (SELECT changes() AS n) AS c \
                       WHERE true RETURNING taken; \
                     SELECT id, v FROM t WHERE v = $2; \
                     RELEASE x",
                )
                .bind(id)
                .bind(format!("new{id}")),
                1,
            )
            .await
            .unwrap();
            assert_eq!(
                done.len(),
                4,
                "the savepoint left out, the other four reported"
            );
            assert_eq!(done[0].changes, taken as u64);
            assert!(done[0].rows.is_empty());
            let logged: i64 = sqlx::Row::get(&done[1].rows[0], 0);
            assert_eq!(logged, taken, "changes() inside the INSERT is the UPDATE's");
            assert_eq!(done[1].changes, 1);
            assert_eq!(
                done[2].rows.len() as i64,
                taken,
                "$2 bound in the SELECT too"
            );
        }
        // A statement that fails stops the call: the statements after it do not run.
        let failed = run_batch(
            &mut conn,
            sqlx::query(
                "UPDATE t SET v = 'z' WHERE id = $1; \
                 INSERT INTO t (id, v) VALUES ($1, 'dup'); \
                 UPDATE t SET v = 'never' WHERE id = 2",
            )
            .bind(1_i64),
            0,
        )
        .await;
        assert!(failed.is_err());
        let v: String = sqlx::query_scalar("SELECT v FROM t WHERE id = 2")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(v, "b");
    }

    /// Changes that run their savepoint statements in their own call (`run_opening`),
    /// queued together with plain ones so they share one group: a fenced update that
    /// finds no row is detected after the call, and that change alone is undone (its
    /// insert made in the same call included), back to back with another failure, and
    /// after a plain change; a change that fails before taking its opening wrote nothing
    /// and undoes nothing of the change before it.
    #[tokio::test]
    async fn an_opened_change_that_fails_after_its_call_is_undone_alone() {
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
        let group = GroupCommit::start(writer.clone());
        // What each change is: plain, opened and fenced (the fence holds when the row is
        // 'free'), or opened and failing before its first call.
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
                            .run_opening(move |conn, opening| {
                                Box::pin(async move {
                                    let opening = opening.take();
                                    let sql = format!(
                                        "{opening}UPDATE t SET v = 'done' WHERE id = $1 AND v = 'free'; \
                                         INSERT INTO ev (id) VALUES ($1); \
                                         UPDATE t SET v = v || '!' WHERE id = 0"
                                    );
                                    let done = run_batch(
                                        conn,
                                        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i),
                                        statements_in(opening),
                                    )
                                    .await?;
                                    if done[0].changes != 1 {
                                        return Err(StoreError::Conflict(format!("fenced {i}")));
                                    }
                                    Ok(i)
                                })
                            })
                            .await
                    }
                    EarlyFail => {
                        group
                            .run_opening(move |_conn, _opening| {
                                Box::pin(async move {
                                    Err::<i64, _>(StoreError::Conflict(format!("early {i}")))
                                })
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
        assert_eq!(group.committed(), (1, 7), "one group held all seven");
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
