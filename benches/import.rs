//! Import throughput: generates N agreements x 12 installments into a temporary CSV (the
//! portfolio generator of `repayd bench`) and imports it through the library API into a
//! fresh SQLite file (release build, batched transactions), then imports it again (all
//! unchanged: the read-and-compare path). `repayd bench --only import` runs the same
//! import as a separate process, beside a raw bulk insert of the same rows.
//!
//!     cargo bench --bench import
//!     REPAYD_BENCH_AGREEMENTS=10000 cargo bench --bench import
//!
//! Also: `REPAYD_BENCH_BATCH` (agreements per transaction, default 1000) and
//! `REPAYD_BENCH_DATABASE_URL` (an empty, migrated-or-not database instead of the
//! temporary SQLite file, e.g. a PostgreSQL database made for the purpose).

use repayd::clock::SystemClock;
use repayd::commands::bench::portfolio::{self, PortfolioSpec};
use repayd::config::ScheduleDefaults;
use repayd::import::{DEFAULT_BATCH_SIZE, ImportOptions, import_file};
use repayd::store::Store;
use secrecy::SecretString;
use std::time::Instant;

const INSTALLMENTS: usize = 12;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {v:?}")),
        Err(_) => default,
    }
}

/// Peak resident memory of this process, from /proc (Linux); `None` elsewhere.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let n = env_number("REPAYD_BENCH_AGREEMENTS", 100_000);
    let batch_size = env_number("REPAYD_BENCH_BATCH", DEFAULT_BATCH_SIZE);
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("agreements.csv");
    let t = Instant::now();
    let today = repayd::clock::Clock::now(&SystemClock).date_naive();
    portfolio::write_csv(&csv, &PortfolioSpec::standard(n, today)).expect("generate the CSV");
    let csv_mib = std::fs::metadata(&csv).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    println!(
        "generated {n} agreements x {INSTALLMENTS} installments ({csv_mib:.1} MiB CSV) in {:.2?}",
        t.elapsed()
    );

    let url = std::env::var("REPAYD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = Store::connect(&SecretString::from(url), 4)
            .await
            .expect("open the database");
        store.migrate().await.expect("migrate");
        let options = ImportOptions {
            batch_size,
            ..Default::default()
        };
        let defaults = ScheduleDefaults::default();

        let t = Instant::now();
        let summary = import_file(&store, &csv, None, &options, &defaults, &SystemClock)
            .await
            .expect("import");
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(summary.agreements_new as usize, n);
        assert_eq!(summary.installments_written as usize, n * INSTALLMENTS);
        println!(
            "import ({:?}, batches of {batch_size}): {n} agreements, {} installments in {secs:.2} s \
             = {:.0} installment rows/s, {:.0} agreements/s",
            store.backend(),
            summary.installments_written,
            summary.installments_written as f64 / secs,
            n as f64 / secs
        );

        if let Some(peak) = peak_rss_mib() {
            println!("peak RSS after the import (VmHWM): {peak:.0} MiB");
        }

        let t = Instant::now();
        let again = import_file(&store, &csv, None, &options, &defaults, &SystemClock)
            .await
            .expect("re-import");
        assert_eq!(again.agreements_unchanged as usize, n);
        println!(
            "re-import (all unchanged, nothing written): {:.2} s",
            t.elapsed().as_secs_f64()
        );
        store.close().await;
    });
    if let Some(peak) = peak_rss_mib() {
        println!("peak RSS after the re-import (VmHWM): {peak:.0} MiB");
    }
    let db = dir.path().join("bench.db");
    if let Ok(m) = std::fs::metadata(&db) {
        println!("SQLite file: {:.0} MiB", m.len() as f64 / 1048576.0);
    }
}
