//! The debit loop's requests at the gateway at once: `debit.max_in_flight` permits, one
//! held for the length of each funds check, debit or look-up the loop sends, and none
//! while an attempt waits for its commits.
//!
//! On SQLite the loop carries more attempts than that ([`carried_per_permit`]: twice as
//! many), so the commits of the attempts on their way to and from the bank run beside the
//! calls of others, and the bank is kept busy at its limit: with a latency `L` per call,
//! debits per second approach `max_in_flight / 2L` (two calls a debit) until the database
//! bounds them. When one permit covered a whole attempt, each debit held its bank slot
//! through three or four commits as well, and at 20 ms the slots spent half their time
//! waiting for the committer (docs/benchmarks.md, "Bank slots held only at the bank").

use crate::store::Backend;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Attempts the debit loop carries per permit (claimed, waiting for a permit, at the
/// bank, or having their outcome recorded). On SQLite the one committer groups the
/// commits of many attempts, so attempts waiting for it cost little, and twice as many
/// keep the bank slots busy (four times gave the debits so much of the committer that
/// the reminders beside them fell to a third of the sink's rate). On PostgreSQL every
/// change is a transaction of its own on one of `database.max_connections` connections:
/// more attempts only queue for those (measured before the message loop had connections
/// of its own, `Store::lane`: debits 342 to 359 a second, within the noise, while the
/// reminders beside them halved), so there one attempt a permit, as before.
pub fn carried_per_permit(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 2,
        Backend::Postgres => 1,
    }
}

#[derive(Debug)]
pub(crate) struct GatewayPermits {
    semaphore: Arc<Semaphore>,
    /// The number of permits asked for (the current `debit.max_in_flight`).
    size: Mutex<u32>,
}

impl GatewayPermits {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(size as usize)),
            size: Mutex::new(size),
        }
    }

    /// Runs `call` holding a permit: at most `size` such calls run at once.
    pub(crate) async fn at_gateway<F: Future>(&self, call: F) -> F::Output {
        // The semaphore is never closed.
        let _permit = self.semaphore.acquire().await;
        call.await
    }

    /// Sets the number of permits (a reload changed `debit.max_in_flight`). Permits in
    /// use are not taken back: a smaller limit holds once as many calls have ended (taken
    /// by a task on the current runtime; reloads run on the daemon's, and outside a
    /// runtime no call can be in flight).
    pub(crate) fn resize(&self, size: u32) {
        let size = size.max(1);
        let mut current = self.size.lock().expect("permits lock poisoned");
        if size > *current {
            self.semaphore.add_permits((size - *current) as usize);
        } else if size < *current {
            let owed = (*current - size) as usize;
            let forgotten = self.semaphore.forget_permits(owed);
            let rest = owed - forgotten;
            if rest > 0 {
                // The rest are in use: taken as they come back, ahead of later callers
                // (the semaphore is fair), and forgotten.
                let semaphore = Arc::clone(&self.semaphore);
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        if let Ok(p) = semaphore.acquire_many_owned(rest as u32).await {
                            p.forget();
                        }
                    });
                }
            }
        }
        *current = size;
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Runs `n` calls of 20 ms through `permits` at once; the most that ran together.
    async fn most_at_once(permits: &Arc<GatewayPermits>, n: usize) -> usize {
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (permits, now, most) = (Arc::clone(permits), Arc::clone(&now), Arc::clone(&most));
            calls.spawn(async move {
                permits
                    .at_gateway(async {
                        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(running, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await
            });
        }
        while calls.join_next().await.is_some() {}
        most.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_calls_run_at_once_than_permits_even_after_a_resize() {
        let permits = Arc::new(GatewayPermits::new(3));
        assert_eq!(most_at_once(&permits, 12).await, 3);
        permits.resize(5);
        assert_eq!(permits.available(), 5);
        assert_eq!(most_at_once(&permits, 12).await, 5);
        permits.resize(2);
        assert_eq!(permits.available(), 2);
        assert_eq!(most_at_once(&permits, 12).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_limit_lowered_while_calls_run_holds_once_they_end() {
        let permits = Arc::new(GatewayPermits::new(4));
        let held = {
            let permits = Arc::clone(&permits);
            tokio::spawn(async move { most_at_once(&permits, 4).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        // All four are in use: none can be forgotten now.
        permits.resize(1);
        assert_eq!(held.await.expect("calls"), 4);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(permits.available(), 1);
        assert_eq!(most_at_once(&permits, 6).await, 1);
    }
}
