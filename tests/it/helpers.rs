//! Test databases: a fresh SQLite file per test, and a fresh PostgreSQL database per test
//! (created from `REPAYD_TEST_POSTGRES_URL`, dropped afterwards).

use repayd::store::Store;
use secrecy::SecretString;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

pub const POSTGRES_ENV: &str = "REPAYD_TEST_POSTGRES_URL";

/// A migrated store for one test, and what must be cleaned up after it.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("repayd.db").display());
        let store = Store::connect(&SecretString::from(url.clone()), 4)
            .await
            .expect("open sqlite");
        store.migrate().await.expect("migrate sqlite");
        TestDb {
            store,
            url,
            _dir: Some(dir),
            pg_drop: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (said loudly) when the variable is unset.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
            // Written past the test harness's capture so it shows in every run.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL test ({POSTGRES_ENV} is not set)"
            );
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "repayd_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            chrono::Utc::now().timestamp_micros() % 1_000_000
        );
        let admin = Store::connect(&SecretString::from(admin_url.clone()), 1)
            .await
            .expect("connect to REPAYD_TEST_POSTGRES_URL");
        admin
            .execute_admin(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await;
        let url = replace_db_name(&admin_url, &name);
        let store = Store::connect(&SecretString::from(url.clone()), 8)
            .await
            .expect("connect to test database");
        store.migrate().await.expect("migrate postgres");
        Some(TestDb {
            store,
            url,
            _dir: None,
            pg_drop: Some((admin_url, name)),
        })
    }

    /// A second store on the same database, as a second daemon would have.
    pub async fn reconnect(&self) -> Store {
        Store::connect(&SecretString::from(self.url.clone()), 4)
            .await
            .expect("reconnect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.pg_drop.take() {
            // Drop runs inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(admin) = Store::connect(&SecretString::from(admin_url), 1).await {
                        let _ = admin
                            .execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                        admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// Runs an async test body once against SQLite and once against PostgreSQL:
/// `both_backends!(name, body_fn)` where `body_fn: async fn(TestDb)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:path) => {
        mod $name {
            // Lets `$body` be a bare name from the calling module.
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body($crate::helpers::TestDb::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::helpers::TestDb::postgres().await {
                    $body(db).await
                }
            }
        }
    };
}
