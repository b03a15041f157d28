//! A consistent copy of a SQLite database, for `repayd simulate` (and backups): `VACUUM
//! INTO` on a read-only connection. The source file is never written to: no journal mode
//! is set, no migration runs, and the connection cannot write even by mistake.

use super::{Result, StoreError};
use sqlx::ConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Copies the SQLite database at `source_url` (`sqlite://...`) into a new file at
/// `target`, which must not exist. Safe while a daemon runs on the source: the copy is
/// one read transaction, so it is consistent, and committed WAL frames are included.
pub async fn sqlite_snapshot(source_url: &str, target: &Path) -> Result<()> {
    let options = SqliteConnectOptions::from_str(source_url)
        .map_err(|e| StoreError::BadUrl(format!("sqlite URL: {e}")))?
        // Read-only: neither a missing file is created nor a byte of the source changed.
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(10));
    // A read-only connection to a WAL database creates the -wal and -shm files when they
    // are missing, and leaves them behind, owned by whoever ran the copy: a daemon running
    // as another user could then not open its own database. No -wal file means no process
    // has the database open and every commit is in the main file, so it is read as
    // immutable (no locks, no side files). Otherwise the side files exist already and the
    // normal read-only path, which sees a running daemon's commits, creates nothing.
    let wal = PathBuf::from(format!("{}-wal", options.get_filename().display()));
    let options = options.immutable(!wal.exists());
    let mut conn = options.connect().await?;
    let target_text = target
        .to_str()
        .ok_or_else(|| StoreError::BadUrl(format!("{} is not UTF-8", target.display())))?;
    let copied = sqlx::query("VACUUM INTO $1")
        .bind(target_text)
        .execute(&mut conn)
        .await;
    use sqlx::Connection;
    let _ = conn.close().await;
    copied?;
    Ok(())
}

impl super::Store {
    /// The id of the newest event-log row, 0 when the log is empty.
    pub async fn last_event_id(&self) -> Result<i64> {
        let id = super::on_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM events")
                .fetch_one(pool)
                .await?
        });
        Ok(id.unwrap_or(0))
    }

    /// How many event-log rows of these kinds were written after `after_id`.
    pub async fn events_of_kinds_after(&self, after_id: i64, kinds: &[&str]) -> Result<i64> {
        let mut n = 0;
        for kind in kinds {
            n += super::on_pool!(self, |pool| {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM events WHERE kind = $1 AND id > $2",
                )
                .bind(*kind)
                .bind(after_id)
                .fetch_one(pool)
                .await?
            });
        }
        Ok(n)
    }

    /// How many messages of `kind` (`debit_failed`, ...) have been sent.
    pub async fn sent_messages_of_kind(&self, kind: &str) -> Result<i64> {
        let n = super::on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM reminders WHERE kind = $1 AND state = 'sent'",
            )
            .bind(kind)
            .fetch_one(pool)
            .await?
        });
        Ok(n)
    }

    /// Event-log rows written after `after_id`, oldest first.
    pub async fn events_after(&self, after_id: i64) -> Result<Vec<super::EventRow>> {
        let rows = super::on_pool!(self, |pool| {
            sqlx::query_as::<_, super::EventRow>(
                "SELECT id, at_ms, kind, agreement_id, installment_id, attempt_id, detail \
                 FROM events WHERE id > $1 ORDER BY id",
            )
            .bind(after_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
