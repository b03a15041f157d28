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
    /// The savepoint was released or rolled back as it should; `false` poisons the group.
    clean: bool,
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
            if let Err(e) = sqlx::query("SAVEPOINT grouped").execute(&mut *conn).await {
                let why = e.to_string();
                return Ran {
                    clean: false,
                    settle: Box::new(move |_| {
                        let _ = reply.send(Err(StoreError::CommitFailed(why)));
                    }),
                };
            }
            let result = body(&mut *conn).await;
            let end = if result.is_ok() {
                "RELEASE grouped"
            } else {
                "ROLLBACK TO grouped; RELEASE grouped"
            };
            let clean = sqlx::raw_sql(end).execute(&mut *conn).await.is_ok();
            Ran {
                clean,
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
        let mut clean = true;
        let mut next = Some(first);
        while let Some(change) = next.take() {
            let r = change.run(&mut tx).await;
            clean &= r.clean;
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
