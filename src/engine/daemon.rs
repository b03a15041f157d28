//! Running the engine as a daemon: a planner task woken by a UTC cron trigger (and once
//! at start, which catches up whatever was missed while the daemon was down), a debit
//! loop and a message loop (customer emails, operations alerts) that pick due rows from
//! the database side by side, and a bounded drain on shutdown.
//!
//! tokio-cron-scheduler only wakes the planner: its time-zone jobs drift after DST
//! changes and it never catches up missed runs, so local times are computed by the
//! planner itself and the worker finds due work by `scheduled_at <= now`. The cron job
//! only signals a `Notify` that one planner task waits on, so planner runs can never
//! overlap however slow one is.

use super::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cron trigger {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
}

/// The running daemon's tasks.
pub struct Daemon {
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    scheduler: JobScheduler,
    tasks: tokio::task::JoinSet<()>,
    /// Wakes the worker early (after planning, or on demand).
    work: Arc<Notify>,
}

impl Daemon {
    /// Starts the planner (now, then on every `planner_cron` tick, UTC) and the worker
    /// loop. Returns once every task is up: the moment to tell systemd READY=1.
    pub async fn start(
        engine: Arc<Engine>,
        planner_cron: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, DaemonError> {
        let plan = Arc::new(Notify::new());
        let work = Arc::new(Notify::new());
        let cron_err = |reason: String| DaemonError::Cron {
            expr: planner_cron.to_string(),
            reason,
        };
        let scheduler = JobScheduler::new()
            .await
            .map_err(|e| cron_err(e.to_string()))?;
        let tick = Arc::clone(&plan);
        let job = Job::new_async(planner_cron, move |_id, _sched| {
            let tick = Arc::clone(&tick);
            Box::pin(async move { tick.notify_one() })
        })
        .map_err(|e| cron_err(e.to_string()))?;
        scheduler
            .add(job)
            .await
            .map_err(|e| cron_err(e.to_string()))?;
        scheduler
            .start()
            .await
            .map_err(|e| cron_err(e.to_string()))?;

        let mut tasks = tokio::task::JoinSet::new();
        // Catch up at start: plan once before the first tick.
        plan.notify_one();
        tasks.spawn(planner_loop(
            Arc::clone(&engine),
            Arc::clone(&plan),
            Arc::clone(&work),
            shutdown.clone(),
        ));
        tasks.spawn(worker_loop(
            Arc::clone(&engine),
            Arc::clone(&work),
            shutdown.clone(),
        ));
        tasks.spawn(message_loop(Arc::clone(&engine), shutdown.clone()));
        Ok(Self {
            engine,
            shutdown,
            scheduler,
            tasks,
            work,
        })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Asks the worker to look for due work now.
    pub fn wake(&self) {
        self.work.notify_one();
    }

    /// Waits for shutdown to be requested, then for the tasks to finish their in-flight
    /// work, at most `drain`. Attempts still in flight after that keep their lease and
    /// are reconciled by key after the restart.
    pub async fn run_until_stopped(mut self, drain: Duration) {
        self.shutdown.cancelled().await;
        tracing::info!(
            drain_seconds = drain.as_secs(),
            "stopping: no new work is claimed; finishing in-flight debits"
        );
        let _ = self.scheduler.shutdown().await;
        let finished = tokio::time::timeout(drain, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        match finished {
            Ok(()) => tracing::info!("stopped cleanly: all in-flight work recorded"),
            Err(_) => {
                tracing::warn!(
                    "drain time exceeded: unfinished attempts keep their lease and are reconciled by key after restart"
                );
                self.tasks.abort_all();
            }
        }
    }
}

async fn planner_loop(
    engine: Arc<Engine>,
    plan: Arc<Notify>,
    work: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = plan.notified() => {}
        }
        match engine.plan().await {
            Ok(report) => {
                engine.refresh_statistics_after(&report).await;
                if report.attempts_created > 0 {
                    work.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "planning failed; will try again on the next tick")
            }
        }
        // Delinquency is computed from dates: running it on every tick is idempotent and
        // catches up whatever was missed while the daemon was down.
        match engine.assess_overdue().await {
            Ok(report) if report.changed > 0 => work.notify_one(),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "overdue assessment failed; will try again on the next tick")
            }
        }
    }
}

/// Rows a planning pass must create before the query planner's statistics are refreshed.
pub(super) const STATISTICS_STALE_ROWS: u64 = 10_000;

impl Engine {
    /// Refreshes the database's statistics after a planning pass that created many rows.
    ///
    /// Without this PostgreSQL plans the debit path with the statistics of the table
    /// before planning (after an import: no reminders, no attempts). It then took the
    /// partial claim indexes (`reminders_to_send`, `debit_attempts_to_run`) for a few
    /// rows and ANDed them into the per-installment updates of a successful debit, reading
    /// all 900,000 pending reminders and 300,000 scheduled attempts for each one (135-360 ms
    /// and 100 ms a statement in `EXPLAIN ANALYZE`): 40 debits/s whatever the latency or
    /// number of daemons. Autovacuum would get there eventually, but not in time for the
    /// due day that follows a first planning pass. Failure is logged, not fatal.
    pub async fn refresh_statistics_after(&self, report: &super::PlanReport) {
        if report.attempts_created + report.reminders_created < STATISTICS_STALE_ROWS {
            return;
        }
        let started = std::time::Instant::now();
        match self.store.refresh_statistics().await {
            Ok(()) => tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                "query planner statistics refreshed after planning"
            ),
            Err(e) => tracing::warn!(error = %e, "refreshing the query planner statistics failed"),
        }
    }
}

/// Debits: claims and carries due attempts, woken by the planner or every poll; and the
/// gateway's returns feed, read every `debit.returns_poll_seconds`.
async fn worker_loop(engine: Arc<Engine>, work: Arc<Notify>, shutdown: CancellationToken) {
    // The returns feed is read at start and then every `debit.returns_poll_seconds`.
    let mut returns_read: Option<tokio::time::Instant> = None;
    loop {
        let returns_every = engine.policy().debit.returns_poll;
        if returns_read.is_none_or(|at| at.elapsed() >= returns_every) {
            returns_read = Some(tokio::time::Instant::now());
            match engine.poll_returns().await {
                Ok(report) if report.applied + report.unmatched > 0 => {
                    tracing::warn!(
                        applied = report.applied,
                        unmatched = report.unmatched,
                        "returned debits applied"
                    );
                    work.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, retryable = e.is_retryable(), "reading the returns feed failed; will try again")
                }
            }
        }
        match engine.run_due(&shutdown).await {
            Ok(report) if report.claimed > 0 => {
                tracing::debug!(?report, "processed due debit attempts")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "processing due debits failed; will try again")
            }
        }
        let poll = engine.policy().poll;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(poll) => {}
            _ = work.notified() => {}
        }
    }
}

/// Customer emails and operations alerts, in a loop of their own: a due day with many
/// debits must not hold back the reminders and receipts of that day (it did when one
/// loop ran debits until none was due before sending anything).
async fn message_loop(engine: Arc<Engine>, shutdown: CancellationToken) {
    loop {
        match engine.run_reminders(&shutdown).await {
            Ok(report) if report.claimed > 0 => tracing::debug!(?report, "processed due reminders"),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "sending due reminders failed; will try again")
            }
        }
        match engine.run_alerts().await {
            Ok(report) if report.sent + report.retried + report.failed > 0 => {
                tracing::debug!(?report, "delivered operations alerts")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, retryable = e.is_retryable(), "delivering operations alerts failed; will try again")
            }
        }
        let poll = engine.policy().poll;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
