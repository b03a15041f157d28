//! `repayd bench --only console`: the operations console's pages on a large portfolio.
//! A migrated SQLite file gets N agreements x 12 with the state a running daemon leaves
//! (`console_portfolio.sql`), the operations server is started on it in this process,
//! and each page is fetched over loopback HTTP as an operator's browser would (bearer
//! token): the first fetch and the median of five more. Before the pages, the past days of
//! Today's 30-day chart are kept as a daemon's console keeps them in the background
//! (`console::refresh_past_days`), timed on a row of its own. Target: every page
//! under 200 ms at 1,000,000 agreements (docs/benchmarks.md).

use super::{Bench, ratio};
use crate::clock::{Clock, SystemClock, to_epoch_ms};
use crate::http::{HttpServer, HttpSettings, HttpState};
use crate::metrics::Metrics;
use crate::store::Store;
use anyhow::Context;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

const PORTFOLIO_SQL: &str = include_str!("console_portfolio.sql");
const TOKEN: &str = "bench-console-token";
const TARGET_MS: f64 = 200.0;

impl Bench {
    pub(super) async fn console(&mut self) -> anyhow::Result<()> {
        let n = self.sizes.console;
        println!(
            "\n## console: pages over {} agreements x 12",
            super::num(n as f64)
        );
        // A console.db of the same size left in --work-dir by an earlier run (--keep) is
        // read as it is: writing the portfolio takes minutes, reading it does not.
        let path = self.work.join("console.db");
        let url = SecretString::from(format!("sqlite://{}", path.display()));
        let existing = if path.exists() {
            let store = Store::connect(&url, 1).await?;
            let counts = store.table_counts().await.ok();
            store.close().await;
            counts.is_some_and(|c| c.agreements == n as i64)
        } else {
            false
        };
        if !existing {
            let _ = std::fs::remove_file(&path);
        }
        let store = Store::connect(&url, 4).await?;
        store.migrate().await?;
        if existing {
            println!("  reusing {} (written by an earlier run)", path.display());
        } else {
            let now = SystemClock.now();
            let started = Instant::now();
            let sql = PORTFOLIO_SQL
                .replace("{N}", &n.to_string())
                .replace("{TODAY}", &now.date_naive().to_string())
                .replace("{NOW_MS}", &to_epoch_ms(now).to_string());
            store
                .execute_script(&sql)
                .await
                .context("writing the console portfolio")?;
            store.refresh_statistics().await?;
            println!(
                "  portfolio written in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }

        // What a daemon's console keeps in the background (the Today chart's past days),
        // done here before the first page so that no page is timed against it.
        let started = Instant::now();
        let refreshed =
            crate::console::refresh_past_days(&store, &SystemClock, chrono_tz::UTC).await?;
        let refresh_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.row(
            format!(
                "console past days kept (background), {} agreements",
                super::num(n as f64)
            ),
            format!("{refreshed} days in {refresh_ms:.0} ms"),
            "no target (not a page)".to_string(),
            "-".to_string(),
        );

        let settings = HttpSettings {
            listen: "127.0.0.1:0".into(),
            token: Some(SecretString::from(TOKEN)),
            ..HttpSettings::default()
        };
        let state = HttpState {
            store: store.clone(),
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(SystemClock),
            gateway: "sandbox".into(),
            mailer: "outbox".into(),
            stopping: CancellationToken::new(),
            console: crate::console::ConsoleOptions {
                credit_report_after_days: 90,
                time_zone: chrono_tz::UTC,
                policy: None,
            },
        };
        let server = HttpServer::start(&settings, state).await?;
        let addr = server.local_addr();
        let middle = (n / 2).max(1);
        let pages = [
            ("Today".to_string(), "/console/today".to_string()),
            ("Overdue".into(), "/console/overdue".into()),
            ("Queues".into(), "/console/queues".into()),
            (
                "Search by name".into(),
                format!("/console/search?q=Customer%20{middle}"),
            ),
            (
                "Search by debit key".into(),
                format!("/console/search?q=bench-{}", middle * 12),
            ),
            (
                "Agreement".into(),
                format!("/console/agreements/BA-{middle}"),
            ),
            ("Customer".into(), format!("/console/customers/BC-{middle}")),
        ];
        for (name, path) in pages {
            let first = fetch(addr, &path).await?;
            let mut warm = Vec::new();
            for _ in 0..5 {
                warm.push(fetch(addr, &path).await?);
            }
            warm.sort_by(f64::total_cmp);
            let median = warm[warm.len() / 2];
            self.row(
                format!("console {name}, {} agreements", super::num(n as f64)),
                format!("first {first:.0} ms, then median {median:.0} ms"),
                format!("target {TARGET_MS:.0} ms"),
                ratio(first.max(median), TARGET_MS),
            );
        }
        server.stop().await;
        store.close().await;
        Ok(())
    }
}

/// One GET with the bearer token: milliseconds to the whole answer (checked to be 200).
async fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).to_string();
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
    Ok(ms)
}
