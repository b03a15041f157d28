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
    /// The change succeeded, or failed and was rolled back to its savepoint; `false`
    /// (the rollback itself failed) poisons the group.
    clean: bool,
    /// The change succeeded (its writes stand inside the savepoint).
    ok: bool,
    /// Hands the caller its result (`None`) or the group's failure (`Some`).
    settle: Box<dyn FnOnce(Option<String>) + Send>,
}

trait Change: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFut<'c, Ran>;
    fn fail(self: Box<Self>, why: String);
}

struct Queued<T, F> {
    body: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Change for Queued<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFut<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFut<'c, Ran> {
        Box::pin(async move {
            let Queued { body, reply } = *self;
            let result = body(&mut *conn).await;
            let ok = result.is_ok();
            // The committer opened the savepoint; a failed change is undone to it here (the
            // savepoint stays open, at the same point, for the next change).
            let clean = ok
                || sqlx::raw_sql("ROLLBACK TO grouped")
                    .execute(&mut *conn)
                    .await
                    .is_ok();
            Ran {
                clean,
                ok,
                settle: Box::new(move |failed| {
                    let _ = reply.send(match failed {
                        None => result,
                        Some(why) => Err(StoreError::CommitFailed(why)),
                    });
                }),
            }
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
        self.queue
            .send(Box::new(Queued { body, reply }))
            .map_err(|_| StoreError::CommitFailed("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::CommitFailed("the writer stopped mid-group".into()))?
    }
}

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
        let mut tx = match sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => {
                first.fail(format!("cannot begin a write transaction: {e}"));
                continue;
            }
        };
        let mut ran = Vec::new();
        // Each change runs in the savepoint `grouped`, so one that fails is undone alone.
        // The savepoint statements cost a round trip to the connection's thread each, so
        // they are folded: one before the first change, then `RELEASE grouped; SAVEPOINT
        // grouped` between two changes (after a failed change, which was rolled back to
        // the savepoint, the same savepoint serves the next one), and none after the last:
        // the commit ends it.
        let mut clean = sqlx::raw_sql("SAVEPOINT grouped")
            .execute(&mut *tx)
            .await
            .is_ok();
        let mut next = Some(first);
        if !clean && let Some(first) = next.take() {
            first.fail("cannot open a savepoint in the write transaction".into());
        }
        let mut dirty = false;
        while let Some(change) = next.take() {
            if dirty {
                clean = sqlx::raw_sql("RELEASE grouped; SAVEPOINT grouped")
                    .execute(&mut *tx)
                    .await
                    .is_ok();
                if !clean {
                    change.fail("cannot open a savepoint in the write transaction".into());
                    break;
                }
            }
            let r = change.run(&mut tx).await;
            clean &= r.clean;
            // A change that failed was rolled back to the savepoint, which still stands
            // where it was: the next change can use it as it is.
            dirty = r.ok;
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
            Some(
                "a change could not be isolated in its savepoint; the group was rolled back".into(),
            )
        };
        drop(conn);
        if failed.is_none() {
            stats.groups.fetch_add(1, Ordering::Relaxed);
            stats.changes.fetch_add(ran.len() as u64, Ordering::Relaxed);
        }
        for r in ran {
            (r.settle)(failed.clone());
        }
    }
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
}
