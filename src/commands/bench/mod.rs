//! `repayd bench`: the benchmark harness. Generates portfolios, runs this very binary as
//! a real importer and daemon against real databases, a loopback SMTP sink and the
//! sandbox bank, and prints every figure beside the machine's limit measured in the same
//! run (a raw bulk insert, the disk's commit rate, pgbench, the sink's own rate). No
//! figure is asserted: targets are read by people (docs/benchmarks.md).
//!
//! Scenarios: `import` (N x 12 against a python sqlite3 bulk insert of the same rows),
//! `plan` (first planning pass at two sizes, and how linear it is), `due-day` (debits and
//! reminders due now, gateway at 0 and 20 ms, SQLite with one daemon and PostgreSQL with
//! one and three), `daemon` (time to READY and peak RSS with the import's portfolio),
//! `smtp` (the mail transport against the sink), `console` (the operations console's
//! pages on a large portfolio, `console.rs`).

mod console;
pub mod portfolio;
mod probe;
mod sink;

use crate::clock::{Clock, SystemClock, to_epoch_ms};
use crate::config::Settings;
use crate::engine::Engine;
use crate::engine::policy::EnginePolicy;
use crate::store::Store;
use anyhow::Context;
use portfolio::{FirstDue, PortfolioSpec};
use probe::{Daemon, run_measured};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BULK_INSERT_PY: &str = include_str!("limits/bulk_insert.py");
const SQLITE_COMMITS_PY: &str = include_str!("limits/sqlite_commits.py");
const SMTP_CLIENT_PY: &str = include_str!("limits/smtp_client.py");

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// `smoke`: tiny sizes, a minute or so (CI); `full`: the sizes of docs/benchmarks.md.
    #[arg(long, value_enum, default_value = "full")]
    pub size: BenchSize,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Scenario>,
    /// Where databases, files and logs go (default: a temporary directory, removed at
    /// the end unless --keep).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the work directory, and the due day's prepared databases (on PostgreSQL
    /// `bench<pid>_pg_prep`, to be dropped by hand).
    #[arg(long)]
    pub keep: bool,
    /// A PostgreSQL server on which the benchmark may create and drop databases
    /// (`bench<pid>_*`, unique to the run); without it the PostgreSQL runs are skipped.
    #[arg(long, env = "REPAYD_BENCH_POSTGRES_URL", value_name = "URL")]
    pub postgres_url: Option<String>,
    /// Longest a due-day run goes on before its rates are taken as they stand.
    #[arg(long, value_name = "SECONDS")]
    pub run_seconds: Option<u64>,
    /// Keep a pristine copy of each imported portfolio in --work-dir
    /// (`import-N.pristine.db`) and, when one is there from an earlier run, start from a
    /// copy of it instead of generating and importing again (for repeated planning
    /// measurements; the import scenario itself always imports).
    #[arg(long, requires = "work_dir")]
    pub reuse_imports: bool,
    /// The two portfolio sizes (agreements) of the planning scenario, instead of the
    /// size's own (full: 100000,1000000).
    #[arg(long, value_delimiter = ',', value_name = "SMALL,LARGE")]
    pub plan_sizes: Option<Vec<usize>>,
    /// Run the due-day and plan scenarios on these databases only (comma-separated;
    /// default both).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub backends: Vec<BackendChoice>,
    /// The PostgreSQL due-day runs start from copies of this database, a prepared one
    /// kept by an earlier run (`--keep` names it), instead of importing and planning again.
    /// It is left as it is.
    #[arg(long, value_name = "DATABASE")]
    pub pg_prep: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchSize {
    Smoke,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Import,
    Plan,
    DueDay,
    Daemon,
    Smtp,
    Console,
}

/// How long [`Bench::watch_daemon`] watches a daemon.
#[derive(Debug, Clone, Copy)]
enum Watch {
    For(Duration),
    /// Until its first planning pass has ended.
    FirstPass,
}

/// What [`Bench::watch_daemon`] saw.
struct Watched {
    ready: Option<f64>,
    peak_mib: f64,
    /// Seconds from start to the end of the first planning pass, if it ended.
    pass_secs: Option<f64>,
}

struct Sizes {
    import: usize,
    plan: [usize; 2],
    due_debits: usize,
    run_cap: Duration,
    plan_cap: Duration,
    limit_seconds: f64,
    daemon_watch: Duration,
    /// Agreements of the console scenario's portfolio.
    console: usize,
}

impl Sizes {
    fn of(size: BenchSize) -> Self {
        match size {
            BenchSize::Smoke => Sizes {
                import: 1_000,
                plan: [100, 1_000],
                due_debits: 50,
                run_cap: Duration::from_secs(5),
                plan_cap: Duration::from_secs(60),
                limit_seconds: 0.5,
                daemon_watch: Duration::from_secs(1),
                console: 1_000,
            },
            BenchSize::Full => Sizes {
                import: 1_000_000,
                plan: [100_000, 1_000_000],
                due_debits: 100_000,
                run_cap: Duration::from_secs(90),
                plan_cap: Duration::from_secs(300),
                limit_seconds: 5.0,
                daemon_watch: Duration::from_secs(60),
                console: 1_000_000,
            },
        }
    }
}

/// One line of the closing table.
struct Row {
    scenario: String,
    figure: String,
    limit: String,
    ratio: String,
}

struct Bench {
    exe: PathBuf,
    work: PathBuf,
    sizes: Sizes,
    postgres: Option<String>,
    sink: sink::SmtpSink,
    rows: Vec<Row>,
    /// SQLite databases with an imported standard portfolio, by size.
    imported: Vec<(usize, PathBuf)>,
    /// The sizes whose imported database the plan scenario planned in place: a daemon
    /// started on one has no first planning pass to make.
    planned: Vec<usize>,
    python: bool,
    /// The sink's own rate with a plain smtplib client, once measured.
    sink_rate: Option<f64>,
    /// Commits per unit of work (debit outcome or message) and per debit, from the first
    /// run that could count them.
    commits_per_item: Option<(f64, f64)>,
    reuse_imports: bool,
    /// The daemon scenario runs: the import of its size is kept unplanned
    /// (`import-N.pristine.db`), for the daemon that makes the first planning pass itself.
    keep_for_daemon: bool,
    /// Prefix of every database (and SQLite file) this run creates: `bench` and the
    /// process id, so two runs on one server never drop each other's databases.
    db_prefix: String,
    /// The databases of the due-day and plan scenarios (empty: both).
    backends: Vec<BackendChoice>,
    /// `--keep`: the due day's prepared databases are kept too (PostgreSQL's included).
    keep: bool,
    /// `--pg-prep`: a prepared PostgreSQL due-day database kept by an earlier run.
    pg_prep: Option<String>,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding the repayd binary")?;
    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("repayd-bench-").tempdir()?;
            if args.keep {
                temp.keep()
            } else {
                temp.path().to_path_buf()
            }
        }
    };
    let mut sizes = Sizes::of(args.size);
    if let Some(s) = args.run_seconds {
        sizes.run_cap = Duration::from_secs(s);
    }
    match args.plan_sizes.as_deref() {
        None => {}
        Some([small, large]) => sizes.plan = [*small, *large],
        Some(other) => anyhow::bail!("--plan-sizes takes two sizes, SMALL,LARGE (got {other:?})"),
    }
    let python = probe::have("python3");
    let mut bench = Bench {
        exe,
        work,
        sizes,
        postgres: args.postgres_url.clone(),
        sink: sink::SmtpSink::start()
            .await
            .context("starting the SMTP sink")?,
        rows: Vec::new(),
        imported: Vec::new(),
        planned: Vec::new(),
        python,
        sink_rate: None,
        commits_per_item: None,
        reuse_imports: args.reuse_imports,
        keep_for_daemon: args.only.is_empty() || args.only.contains(&Scenario::Daemon),
        db_prefix: format!("bench{}", std::process::id()),
        backends: args.backends.clone(),
        keep: args.keep,
        pg_prep: args.pg_prep.clone(),
    };
    println!(
        "repayd bench --size {:?}: binary {} ({} build), work directory {}",
        args.size,
        bench.exe.display(),
        if cfg!(debug_assertions) {
            "DEBUG: figures are not representative"
        } else {
            "release"
        },
        bench.work.display()
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if !bench.python {
        println!("python3 not found: limits measured with python are skipped");
    }
    let all = args.only.is_empty();
    let wants = |s: Scenario| all || args.only.contains(&s);
    let started = Instant::now();
    if wants(Scenario::Smtp) {
        bench.smtp().await?;
    }
    if wants(Scenario::Import) {
        bench.import().await?;
    }
    if wants(Scenario::Plan) {
        bench.plan().await?;
    }
    if wants(Scenario::Daemon) {
        bench.daemon().await?;
    }
    if wants(Scenario::DueDay) {
        bench.due_day().await?;
    }
    if wants(Scenario::Console) {
        bench.console().await?;
    }
    println!(
        "\n## Figures and limits ({:.0} s in all)\n",
        started.elapsed().as_secs_f64()
    );
    println!("| scenario | figure | limit, same run | ratio |");
    println!("|---|---|---|---|");
    for r in &bench.rows {
        println!(
            "| {} | {} | {} | {} |",
            r.scenario, r.figure, r.limit, r.ratio
        );
    }
    if args.work_dir.is_none() && !args.keep {
        let _ = std::fs::remove_dir_all(&bench.work);
    }
    Ok(ExitCode::SUCCESS)
}

fn num(n: f64) -> String {
    let whole = n.round() as i64;
    let s = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 { format!("-{out}") } else { out }
}

fn ratio(figure: f64, limit: f64) -> String {
    if limit > 0.0 && figure.is_finite() {
        format!("{:.2}", figure / limit)
    } else {
        "-".into()
    }
}

/// The URL of database `name` on the server of `admin` (a `postgres://.../db` URL).
fn pg_url(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

impl Bench {
    /// Whether the due-day and plan scenarios run on `backend` (`--backends`).
    fn wants(&self, backend: BackendChoice) -> bool {
        self.backends.is_empty() || self.backends.contains(&backend)
    }

    fn row(&mut self, scenario: String, figure: String, limit: String, ratio: String) {
        println!("  => {scenario}: {figure} | limit: {limit} | ratio {ratio}");
        self.rows.push(Row {
            scenario,
            figure,
            limit,
            ratio,
        });
    }

    fn today(&self) -> chrono::NaiveDate {
        SystemClock.now().date_naive()
    }

    /// A configuration for one run: the database, the sandbox bank with `latency_ms`,
    /// email to the sink at a raised rate cap, JSON logs at info.
    fn config(&self, name: &str, url: &str, latency_ms: u64) -> anyhow::Result<PathBuf> {
        let path = self.work.join(format!("{name}.toml"));
        let text = format!(
            r#"# Written by repayd bench.
[database]
url = "{url}"
max_connections = 8

[log]
format = "json"
level = "info"

[debit]
key_prefix = "bench"

[engine]
planner_cron = "0 0 * * * *"
poll_seconds = 1
drain_seconds = 10

[gateway]
kind = "sandbox"

[gateway.sandbox]
opening_balance = "5000.00"
latency_ms = {latency_ms}

[mail]
kind = "smtp"
from = "Repayments <repayments@example.com>"
lender_name = "Bench Lending"
support_contact = "support@example.com"

[mail.smtp]
host = "127.0.0.1"
port = {port}
tls = "none"
rate_per_second = 1000
retry_delays_ms = []

[http]
enabled = true
listen = "127.0.0.1:0"
"#,
            port = self.sink.port
        );
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn repayd(&self, config: &Path) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--config").arg(config);
        cmd
    }

    fn python_script(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.work.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Runs `repayd import` on `csv` into the database of `config`; fails loudly.
    async fn import_file(
        &self,
        config: &Path,
        csv: &Path,
        tag: &str,
    ) -> anyhow::Result<probe::Measured> {
        let mut cmd = self.repayd(config);
        cmd.arg("import").arg(csv);
        let m = run_measured(cmd, &self.work.join(format!("{tag}.log"))).await?;
        if !m.status.success() {
            anyhow::bail!(
                "repayd import of {} failed ({}):\n{}",
                csv.display(),
                m.status,
                m.output_tail
            );
        }
        Ok(m)
    }

    /// The configuration of a SQLite database holding the standard portfolio of `n`
    /// agreements: the one imported earlier in this run, a copy of a pristine one kept by
    /// an earlier run (`--reuse-imports`), or a fresh import.
    async fn imported_portfolio(&mut self, n: usize) -> anyhow::Result<PathBuf> {
        if let Some((_, c)) = self.imported.iter().find(|(size, _)| *size == n) {
            return Ok(c.clone());
        }
        let db = self.import_db(n);
        let config = self.config(
            &format!("import-{n}"),
            &format!("sqlite://{}", db.display()),
            0,
        )?;
        if self.reuse_imports && self.restore_pristine(n)? {
            println!(
                "  (reusing the import kept in {})",
                self.pristine_db(n).display()
            );
        } else {
            println!("  (importing the portfolio first)");
            let csv = self.work.join(format!("portfolio-{n}.csv"));
            portfolio::write_csv(&csv, &PortfolioSpec::standard(n, self.today()))?;
            self.import_file(&config, &csv, &format!("import-{n}"))
                .await?;
            self.keep_pristine(n, &db)?;
        }
        self.imported.push((n, config.clone()));
        Ok(config)
    }

    /// Keeps a copy of the fresh import `db` of `n` agreements as `import-N.pristine.db`,
    /// for later runs (`--reuse-imports`) or for this run's first-pass daemon (the plan
    /// scenario plans the import in place).
    fn keep_pristine(&self, n: usize, db: &Path) -> anyhow::Result<()> {
        if self.reuse_imports || (self.keep_for_daemon && n == self.sizes.import) {
            let pristine = self.pristine_db(n);
            // `repayd import` has exited: its WAL is checkpointed into the file.
            std::fs::copy(db, &pristine)
                .with_context(|| format!("keeping {}", pristine.display()))?;
        }
        Ok(())
    }

    /// Copies the kept import of `n` agreements over its working database (whose WAL and
    /// shared-memory files go first); `false` if none was kept.
    fn restore_pristine(&self, n: usize) -> anyhow::Result<bool> {
        let (db, pristine) = (self.import_db(n), self.pristine_db(n));
        if !pristine.exists() {
            return Ok(false);
        }
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        std::fs::copy(&pristine, &db).with_context(|| format!("copying {}", pristine.display()))?;
        Ok(true)
    }

    /// The SQLite file the standard portfolio of `n` agreements is imported into.
    fn import_db(&self, n: usize) -> PathBuf {
        self.work.join(format!("import-{n}.db"))
    }

    /// The unplanned copy of [`Self::import_db`] kept by [`Self::keep_pristine`].
    fn pristine_db(&self, n: usize) -> PathBuf {
        self.work.join(format!("import-{n}.pristine.db"))
    }

    /// The engine of `config`, in this process (for a planning pass).
    async fn engine(&self, config: &Path) -> anyhow::Result<(Arc<Engine>, Store)> {
        let settings = Settings::load(config)?;
        // The configuration's page caches (as the daemon's), with four readers.
        let options = crate::store::StoreOptions {
            max_connections: 4,
            ..settings.database.store_options()
        };
        let store = Store::connect_with(&settings.database_url(), options).await?;
        store.migrate().await?;
        let gateway = super::run::build_gateway(&settings, &store).await?;
        let mail = super::run::build_mail(&settings)?;
        let policy = EnginePolicy::from_settings(&settings)?;
        let engine = Engine::new(
            store.clone(),
            gateway,
            Arc::new(SystemClock),
            policy,
            "bench-planner",
        )
        .with_mail(mail);
        Ok((Arc::new(engine), store))
    }

    /// A first planning pass, at most `plan_cap`: seconds and what it created.
    async fn planning_pass(&self, config: &Path) -> anyhow::Result<(Option<f64>, String)> {
        let (engine, store) = self.engine(config).await?;
        let cpu = probe::own_cpu_seconds();
        let threads = probe::thread_cpu_seconds();
        let t = Instant::now();
        let outcome = tokio::time::timeout(self.sizes.plan_cap, engine.plan()).await;
        let secs = t.elapsed().as_secs_f64();
        // CPU time beside the wall time: on a shared machine the wall time includes the
        // time other processes had the cores. The busiest thread (SQLite's writer) bounds
        // the wall time from below on a machine with cores to spare.
        let busiest = probe::thread_cpu_seconds()
            .iter()
            .map(|(tid, b)| b - threads.get(tid).copied().unwrap_or(0.0))
            .fold(0.0_f64, f64::max);
        let cpu = match (cpu, probe::own_cpu_seconds()) {
            (Some(a), Some(b)) => format!(", {:.1} CPU s (busiest thread {busiest:.1} s)", b - a),
            _ => String::new(),
        };
        // As the daemon does after a pass (not counted in the pass's time).
        if let Ok(Ok(report)) = &outcome {
            engine.refresh_statistics_after(report).await;
        }
        let result = match outcome {
            Ok(Ok(report)) => (
                Some(secs),
                format!(
                    "{} debit attempts, {} reminders{cpu}",
                    num(report.attempts_created as f64),
                    num(report.reminders_created as f64)
                ),
            ),
            Ok(Err(e)) => anyhow::bail!("planning failed: {e}"),
            Err(_) => {
                let attempts: i64 = store
                    .attempt_state_counts()
                    .await?
                    .iter()
                    .map(|(_, n)| n)
                    .sum();
                (
                    None,
                    format!(
                        "did not finish in {} s ({} debit attempts planned by then)",
                        self.sizes.plan_cap.as_secs(),
                        num(attempts as f64)
                    ),
                )
            }
        };
        store.close().await;
        Ok(result)
    }

    /// The sink's own rate, measured once with a plain smtplib client.
    fn sink_rate(&mut self) -> anyhow::Result<Option<f64>> {
        if self.sink_rate.is_none() && self.python {
            let script = self.python_script("smtp_client.py", SMTP_CLIENT_PY)?;
            let out = probe::output(
                Command::new("python3")
                    .arg(&script)
                    .arg(self.sink.port.to_string())
                    .arg(self.sizes.limit_seconds.max(1.0).to_string()),
            )?;
            self.sink_rate = json_number(&out, "per_second");
            println!(
                "  the sink's own rate (plain smtplib client, one connection): {}",
                self.sink_rate
                    .map_or("-".into(), |r| format!("{} msg/s", num(r)))
            );
        }
        Ok(self.sink_rate)
    }

    // ---------------------------------------------------------------- smtp

    async fn smtp(&mut self) -> anyhow::Result<()> {
        println!("\n# smtp: the mail transport against the loopback sink");
        let secs = self.sizes.limit_seconds.max(1.0);
        let limit = self.sink_rate()?;
        for (label, rate) in [
            ("default rate_per_second", None),
            ("rate cap raised", Some(1e6)),
        ] {
            let settings: crate::mail::settings::SmtpSettings = toml::from_str(&format!(
                "host = \"127.0.0.1\"\nport = {}\ntls = \"none\"{}",
                self.sink.port,
                rate.map(|r| format!("\nrate_per_second = {r}"))
                    .unwrap_or_default()
            ))?;
            let pool = settings.pool_size as usize;
            let mailer = Arc::new(crate::mail::smtp::SmtpMailer::new(
                &settings,
                "Repayments <repayments@example.com>".parse()?,
            )?);
            let before = self.sink.accepted();
            let t = Instant::now();
            let deadline = t + Duration::from_secs_f64(secs);
            let mut tasks = tokio::task::JoinSet::new();
            for worker in 0..pool {
                let mailer = Arc::clone(&mailer);
                tasks.spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let email = sample_email(worker, n);
                        crate::mail::Mailer::send(&*mailer, &email).await?;
                        n += 1;
                    }
                    Ok::<u64, crate::mail::MailError>(n)
                });
            }
            while let Some(r) = tasks.join_next().await {
                r??;
            }
            let sent = self.sink.accepted() - before;
            let rate_got = sent as f64 / t.elapsed().as_secs_f64();
            let cap = settings.rate_per_second;
            self.row(
                format!("SMTP transport, {label} ({cap}/s), pool {pool}, {pool} senders"),
                format!("{} msg/s", num(rate_got)),
                match limit {
                    Some(l) => format!("sink's own rate, plain smtplib client: {} msg/s", num(l)),
                    None => "sink's rate not measured (python3 missing)".into(),
                },
                limit.map_or("-".into(), |l| ratio(rate_got, l)),
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- import

    async fn import(&mut self) -> anyhow::Result<()> {
        let n = self.sizes.import;
        println!("\n# import: {} agreements x 12 installments", num(n as f64));
        let csv = self.work.join(format!("portfolio-{n}.csv"));
        let t = Instant::now();
        let stats = portfolio::write_csv(&csv, &PortfolioSpec::standard(n, self.today()))?;
        println!(
            "  generated {} ({} MiB, {} short accounts) in {:.1} s",
            csv.display(),
            stats.bytes / 1_048_576,
            num(stats.short as f64),
            t.elapsed().as_secs_f64()
        );
        let db = self.import_db(n);
        let config = self.config(
            &format!("import-{n}"),
            &format!("sqlite://{}", db.display()),
            0,
        )?;
        let m = self
            .import_file(&config, &csv, &format!("import-{n}"))
            .await?;
        let rows = stats.installments as f64;
        self.keep_pristine(n, &db)?;
        self.imported.push((n, config.clone()));

        let limit = if self.python {
            let limit_db = self.work.join("limit-bulk.db");
            let limit_config =
                self.config("limit-bulk", &format!("sqlite://{}", limit_db.display()), 0)?;
            probe::output(self.repayd(&limit_config).arg("migrate"))?;
            let script = self.python_script("bulk_insert.py", BULK_INSERT_PY)?;
            let mut cmd = Command::new("python3");
            cmd.arg(&script).arg(&limit_db).arg(&csv);
            let l = run_measured(cmd, &self.work.join("limit-bulk.log")).await?;
            if !l.status.success() {
                anyhow::bail!("the bulk insert failed:\n{}", l.output_tail);
            }
            let _ = std::fs::remove_file(&limit_db);
            Some(l)
        } else {
            None
        };
        let label = format!("import {} x 12 (SQLite)", num(n as f64));
        self.row(
            format!("{label}, time"),
            format!(
                "{:.1} s ({} installment rows/s)",
                m.seconds,
                num(rows / m.seconds)
            ),
            limit.as_ref().map_or("not measured".into(), |l| {
                format!(
                    "raw bulk insert of the same rows (python sqlite3 executemany): {:.1} s",
                    l.seconds
                )
            }),
            limit.as_ref().map_or("-".into(), |l| {
                format!("{:.2}x the time", m.seconds / l.seconds)
            }),
        );
        self.row(
            format!("{label}, peak RSS"),
            format!("{:.0} MiB", m.peak_rss_mib),
            format!(
                "target 128 MiB; the bulk insert: {}",
                limit
                    .as_ref()
                    .map_or("-".into(), |l| format!("{:.0} MiB", l.peak_rss_mib))
            ),
            ratio(m.peak_rss_mib, 128.0),
        );
        Ok(())
    }

    // ---------------------------------------------------------------- plan

    async fn plan(&mut self) -> anyhow::Result<()> {
        println!("\n# plan: the first planning pass over a fresh import");
        if let Some(admin) = self.postgres.clone()
            && self.wants(BackendChoice::Postgres)
            && probe::have("psql")
        {
            self.plan_postgres(&admin, self.sizes.plan[0]).await?;
        }
        if !self.wants(BackendChoice::Sqlite) {
            return Ok(());
        }
        let mut times = Vec::new();
        for n in self.sizes.plan {
            let config = self.imported_portfolio(n).await?;
            let (secs, what) = self.planning_pass(&config).await?;
            self.planned.push(n);
            times.push(secs);
            self.row(
                format!(
                    "first planning pass, {} agreements x 12 (SQLite)",
                    num(n as f64)
                ),
                match secs {
                    Some(s) => format!("{s:.1} s: {what}"),
                    None => what,
                },
                if n >= 1_000_000 {
                    "target 60 s at 1,000,000".into()
                } else {
                    "-".into()
                },
                match secs {
                    Some(s) if n >= 1_000_000 => ratio(s, 60.0),
                    _ => "-".into(),
                },
            );
        }
        let [small, large] = self.sizes.plan;
        let data = large as f64 / small as f64;
        if let [Some(a), Some(b)] = times[..] {
            self.row(
                "planning pass linearity".into(),
                format!("{:.1}x the time for {data:.0}x the data", b / a),
                format!("linear: {data:.0}x (target at most {:.0}x)", data * 1.1),
                format!("{:.2}", (b / a) / data),
            );
        } else {
            self.row(
                "planning pass linearity".into(),
                "not measured: a pass did not finish".into(),
                format!("linear: {data:.0}x"),
                "-".into(),
            );
        }
        Ok(())
    }

    /// The first planning pass on PostgreSQL, in a daemon, beside due debits: `n`
    /// agreements x 12 imported after a tenth as many agreements due today were imported
    /// and planned. The daemon's first pass plans the large portfolio while its debit loop
    /// works through the due ones: the pass's time, and the debits finished during it and
    /// after it, say whether planning holds debits back.
    async fn plan_postgres(&mut self, admin: &str, n: usize) -> anyhow::Result<()> {
        let backend = Backend::Postgres(admin.to_string());
        let db = format!("{}_pg_plan", self.db_prefix);
        let url = backend.url(&db, &self.work)?;
        let config = self.config("pg-plan", &url, 0)?;
        let now = SystemClock.now();
        let due = (n / 10).max(1);
        let csv = self.work.join(format!("pg-plan-due-{due}.csv"));
        portfolio::write_csv(
            &csv,
            &PortfolioSpec {
                agreements: due,
                installments: 1,
                zones: portfolio::zones_in_hours(now, 9, 19),
                first_due: FirstDue::LocalToday { now, days: 0 },
                short_every: 10,
                id_prefix: "D".into(),
            },
        )?;
        self.import_file(&config, &csv, "pg-plan-import-due")
            .await?;
        self.planning_pass(&config).await?;
        mark_earlier_reminders_sent(&url, now).await?;
        let csv = self.work.join(format!("portfolio-{n}.csv"));
        if !csv.exists() {
            portfolio::write_csv(&csv, &PortfolioSpec::standard(n, self.today()))?;
        }
        let imported = self.import_file(&config, &csv, "pg-plan-import").await?;
        println!(
            "  PostgreSQL: {} due today planned; {} x 12 imported in {:.1} s",
            num(due as f64),
            num(n as f64),
            imported.seconds
        );
        let store = Store::connect(&secrecy::SecretString::from(url.clone()), 1).await?;
        let due_now = |store: Store| async move {
            anyhow::Ok(
                store
                    .due_debit_work(to_epoch_ms(SystemClock.now()))
                    .await?
                    .rows,
            )
        };
        let due_at_start = due_now(store.clone()).await?;
        let log = self.work.join("pg-plan-daemon.log");
        let mut cmd = self.repayd(&config);
        cmd.arg("run");
        let mut daemon = Daemon::spawn(cmd, &self.work.join("pg-plan.sock"), &log)?;
        if daemon.ready(Duration::from_secs(120)).await.is_none() {
            anyhow::bail!(
                "the daemon did not become ready:\n{}",
                probe::tail(&log, 20)
            );
        }
        // The pass starts as the daemon does; it ends with the "planned work" line.
        let started = Instant::now();
        let mut pass: Option<(f64, u64, String)> = None;
        let mut debits_done_at = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let at = started.elapsed().as_secs_f64();
            let left = due_now(store.clone()).await?;
            if pass.is_none()
                && let Some(line) = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.contains("\"planned work\""))
            {
                let fields = serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("fields").cloned())
                    .unwrap_or_default();
                let field = |k: &str| fields.get(k).and_then(|n| n.as_f64()).unwrap_or(0.0);
                let what = format!(
                    "{} debit attempts, {} reminders",
                    num(field("debit_attempts")),
                    num(field("reminders"))
                );
                pass = Some((at, (due_at_start - left).max(0) as u64, what));
            }
            if left == 0 {
                debits_done_at.get_or_insert(at);
            }
            if (pass.is_some() && debits_done_at.is_some())
                || started.elapsed() > self.sizes.plan_cap
                || daemon.exited()
            {
                break;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let done = (due_at_start - due_now(store.clone()).await?).max(0) as u64;
        daemon.stop(Duration::from_secs(30)).await;
        store.close().await;
        if !self.keep {
            backend.drop_db(&db)?;
        }
        let scenario = format!(
            "first planning pass, {} agreements x 12 (PostgreSQL, in a daemon debiting {} due)",
            num(n as f64),
            num(due_at_start as f64)
        );
        match pass {
            Some((secs, during, what)) => {
                let after_secs = debits_done_at.unwrap_or(elapsed) - secs;
                let after = done.saturating_sub(during);
                self.row(
                    scenario,
                    format!(
                        "{secs:.1} s: {what}; debits meanwhile {} ({}/s), after it {} ({}/s)",
                        num(during as f64),
                        num(during as f64 / secs.max(0.001)),
                        num(after as f64),
                        if after_secs > 0.5 {
                            num(after as f64 / after_secs)
                        } else {
                            "-".into()
                        }
                    ),
                    "-".into(),
                    "-".into(),
                );
            }
            None => self.row(
                scenario,
                format!(
                    "did not finish in {elapsed:.0} s; {} debits finished meanwhile",
                    num(done as f64)
                ),
                "-".into(),
                "-".into(),
            ),
        }
        Ok(())
    }

    // ---------------------------------------------------------------- daemon

    async fn daemon(&mut self) -> anyhow::Result<()> {
        let n = self.sizes.import;
        println!(
            "\n# daemon: time to READY and peak RSS with {} agreements",
            num(n as f64)
        );
        let config = self.imported_portfolio(n).await?;
        // First a daemon on the portfolio as imported, which makes the first planning pass
        // itself (the plan scenario of this run may have planned the import in place:
        // then on the unplanned copy kept for this), watched until that pass ends.
        if self.planned.contains(&n) && self.restore_pristine(n)? {
            self.planned.retain(|&size| size != n);
        }
        let agreements = format!("daemon with {} agreements x 12 (SQLite", num(n as f64));
        if self.planned.contains(&n) {
            println!("  (no unplanned copy of the import: the first-pass daemon is skipped)");
        } else {
            let first = self.watch_daemon(&config, Watch::FirstPass).await?;
            let label = format!("{agreements}, its first planning pass inside)");
            self.ready_row(&label, first.ready);
            self.row(
                format!("{label}, peak RSS until the pass ended"),
                match first.pass_secs {
                    Some(secs) => format!("{:.0} MiB (pass {secs:.1} s)", first.peak_mib),
                    None => format!(
                        "{:.0} MiB (the pass had not ended after {} s)",
                        first.peak_mib,
                        self.sizes.plan_cap.as_secs()
                    ),
                },
                "target 64 MiB".into(),
                ratio(first.peak_mib, 64.0),
            );
            if first.pass_secs.is_some() {
                self.planned.push(n);
            }
        }
        // Then the same portfolio planned: a daemon restarted after its first pass.
        let restarted = self
            .watch_daemon(&config, Watch::For(self.sizes.daemon_watch))
            .await?;
        let label = format!(
            "{agreements}, {})",
            if self.planned.contains(&n) {
                "planned before it starts"
            } else {
                "its first planning pass unfinished"
            }
        );
        self.ready_row(&label, restarted.ready);
        self.row(
            format!(
                "{label}, peak RSS over its first {} s",
                self.sizes.daemon_watch.as_secs()
            ),
            format!("{:.0} MiB", restarted.peak_mib),
            "target 64 MiB".into(),
            ratio(restarted.peak_mib, 64.0),
        );
        Ok(())
    }

    fn ready_row(&mut self, label: &str, ready: Option<f64>) {
        self.row(
            format!("{label}, time to READY"),
            ready.map_or("no READY within 60 s".into(), |s| format!("{s:.2} s")),
            "target 1 s".into(),
            ready.map_or("-".into(), |s| ratio(s, 1.0)),
        );
    }

    /// Runs the daemon of `config` and samples its peak RSS: for a while, or until its
    /// first planning pass has ended (its "planned work" line; at most the plan cap).
    async fn watch_daemon(&self, config: &Path, watch: Watch) -> anyhow::Result<Watched> {
        let log = self.work.join("daemon.log");
        let mut d = Daemon::spawn(
            self.repayd(config).arg("run").to_owned_cmd(),
            &self.work.join("daemon.sock"),
            &log,
        )?;
        let ready = d.ready(Duration::from_secs(60)).await;
        let mut follower = probe::LogFollower::new(&log);
        let watch_for = match watch {
            Watch::For(span) => span,
            Watch::FirstPass => self.sizes.plan_cap,
        };
        let mut peak: f64 = 0.0;
        let mut pass_secs = None;
        while d.started.elapsed() < watch_for && !d.exited() {
            peak = peak.max(d.peak_rss_mib());
            if matches!(watch, Watch::FirstPass) && follower.saw("planned work") {
                pass_secs = Some(d.started.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak = peak.max(d.peak_rss_mib());
        let exited = d.exited();
        d.stop(Duration::from_secs(30)).await;
        if exited {
            anyhow::bail!("the daemon exited early:\n{}", probe::tail(&log, 20));
        }
        Ok(Watched {
            ready,
            peak_mib: peak,
            pass_secs,
        })
    }

    // ---------------------------------------------------------------- due day

    async fn due_day(&mut self) -> anyhow::Result<()> {
        let n = self.sizes.due_debits;
        println!(
            "\n# due day: {} debits due now and {} reminders due now",
            num(n as f64),
            num(2.0 * n as f64)
        );
        let commit_rate = if self.python {
            let script = self.python_script("sqlite_commits.py", SQLITE_COMMITS_PY)?;
            let db = self.work.join("limit-commits.db");
            let out = probe::output(
                Command::new("python3")
                    .arg(&script)
                    .arg(&db)
                    .arg(self.sizes.limit_seconds.to_string()),
            )?;
            let _ = std::fs::remove_file(&db);
            json_number(&out, "per_second")
        } else {
            None
        };
        println!(
            "  SQLite commit rate (python sqlite3, WAL, synchronous=FULL): {}",
            commit_rate.map_or("not measured".into(), |r| format!("{} commits/s", num(r)))
        );
        self.sink_rate()?;
        let (sqlite, postgres) = (
            self.wants(BackendChoice::Sqlite),
            self.wants(BackendChoice::Postgres),
        );
        // 20 ms first: where only strace can count SQLite's commits (fsyncs), that run is
        // traced and the untraced 0 ms runs use its count.
        if sqlite {
            self.due_day_backend(
                Backend::Sqlite,
                &[(1, 20, true), (1, 0, true), (1, 0, false)],
                commit_rate,
            )
            .await?;
        }
        match self.postgres.clone() {
            _ if !postgres => {}
            Some(admin) if probe::have("psql") => {
                let tps = self.pgbench(&admin)?;
                println!(
                    "  pgbench: {}",
                    tps.map_or("not measured".into(), |t| format!("{} tps", num(t)))
                );
                let runs = [
                    (1, 20, true),
                    (1, 0, true),
                    (1, 0, false),
                    (3, 20, true),
                    (3, 0, true),
                ];
                self.due_day_backend(Backend::Postgres(admin), &runs, tps)
                    .await?;
            }
            _ => println!("  PostgreSQL runs skipped: no --postgres-url (or psql missing)"),
        }
        Ok(())
    }

    fn pgbench(&self, admin: &str) -> anyhow::Result<Option<f64>> {
        if !probe::have("pgbench") {
            return Ok(None);
        }
        let name = format!("{}_pgbench", self.db_prefix);
        psql(admin, &format!("DROP DATABASE IF EXISTS {name}"))?;
        psql(admin, &format!("CREATE DATABASE {name}"))?;
        let url = pg_url(admin, &name);
        probe::output(Command::new("pgbench").args(["-i", "-q", "-s", "1", &url]))?;
        let secs = (self.sizes.limit_seconds.ceil() as u64).max(1).to_string();
        let out = probe::output(
            Command::new("pgbench").args(["-n", "-N", "-c", "8", "-j", "2", "-T", &secs, &url]),
        )?;
        psql(admin, &format!("DROP DATABASE IF EXISTS {name}"))?;
        Ok(out
            .lines()
            .find_map(|l| l.trim().strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|t| t.parse().ok()))
    }

    /// The due day's database `prep`: `due_debits` agreements due today and twice as many
    /// due in five days, imported, planned, and the pre-due reminders of today's
    /// installments marked sent.
    async fn prepare_due_day(
        &mut self,
        backend: &Backend,
        prep: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let n = self.sizes.due_debits;
        let tag = backend.tag();
        let backend_name = match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        };
        // Customers in the working day now, so reminders are not held back by quiet hours.
        let zones = portfolio::zones_in_hours(now, 9, 19);
        let prep_url = backend.url(prep, &self.work)?;
        let prep_config = self.config(&format!("{tag}-prep"), &prep_url, 0)?;
        let t = Instant::now();
        for (prefix, count, days) in [("D", n, 0), ("R", 2 * n, 5)] {
            let csv = self.work.join(format!("dueday-{prefix}-{n}.csv"));
            portfolio::write_csv(
                &csv,
                &PortfolioSpec {
                    agreements: count,
                    installments: 1,
                    zones: zones.clone(),
                    first_due: FirstDue::LocalToday { now, days },
                    short_every: 10,
                    id_prefix: prefix.into(),
                },
            )?;
            self.import_file(&prep_config, &csv, &format!("{tag}-import-{prefix}"))
                .await?;
        }
        let imported = t.elapsed().as_secs_f64();
        let (planned, what) = self.planning_pass(&prep_config).await?;
        println!(
            "  {backend_name}: imported {} + {} agreements in {imported:.1} s; planned in {}: {what}",
            num(n as f64),
            num(2.0 * n as f64),
            planned.map_or("-".into(), |s| format!("{s:.1} s"))
        );
        let earlier = mark_earlier_reminders_sent(&prep_url, now).await?;
        println!(
            "  {backend_name}: {} pre-due reminders of the installments due today marked sent \
             on their day (a due day has the days before it behind it)",
            num(earlier as f64)
        );

        Ok(())
    }

    async fn due_day_backend(
        &mut self,
        backend: Backend,
        runs: &[(usize, u64, bool)],
        commit_limit: Option<f64>,
    ) -> anyhow::Result<()> {
        let backend_name = match &backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres(_) => "PostgreSQL",
        };
        let now = SystemClock.now();
        let tag = backend.tag();
        let sync_counter = match backend {
            Backend::Sqlite => {
                let counter = SyncCounter::detect(&self.work);
                println!(
                    "  SQLite commits (fsync + fdatasync calls) counted with {}",
                    match counter {
                        Some(SyncCounter::Perf) => "perf stat, in every run",
                        Some(SyncCounter::Strace) =>
                            "strace in the 20 ms run (perf cannot count here; strace stops the daemon at each commit, which lowers that run's rate)",
                        None => "nothing: neither perf nor strace can count here",
                    }
                );
                counter
            }
            Backend::Postgres(_) => None,
        };
        let reused = match (&backend, &self.pg_prep) {
            (Backend::Postgres(_), Some(name)) => Some(name.clone()),
            _ => None,
        };
        let prep = reused
            .clone()
            .unwrap_or_else(|| format!("{}_{tag}_prep", self.db_prefix));
        if reused.is_some() {
            println!("  {backend_name}: reusing the prepared database {prep} (--pg-prep)");
        } else {
            self.prepare_due_day(&backend, &prep, now).await?;
        }
        for &(daemons, latency, with_debits) in runs {
            // Without debits: the same database with every due debit moved a month out,
            // so the message loop has the writer (and the machine) to itself.
            let name = format!(
                "{backend_name}, {daemons} daemon{}{}",
                if daemons > 1 { "s" } else { "" },
                if with_debits { "" } else { ", no debit due" }
            );
            let tag = if with_debits {
                format!("{tag}{daemons}")
            } else {
                format!("{tag}{daemons}mail")
            };
            let run_db = format!("{}_{tag}_{latency}", self.db_prefix);
            let run_url = backend.copy(&prep, &run_db, &self.work)?;
            let config = self.config(&format!("{tag}-{latency}ms"), &run_url, latency)?;
            // The latency bound: each daemon carries `debit.max_in_flight` attempts at once,
            // and each debit waits for two calls to the bank (the funds check, the debit).
            let in_flight = f64::from(Settings::load(&config)?.debit.max_in_flight);
            let store = Store::connect(&secrecy::SecretString::from(run_url.clone()), 2).await?;
            if !with_debits {
                postpone_debits(&store, chrono::Duration::days(30)).await?;
            }
            let due_debits = store
                .due_debit_work(to_epoch_ms(SystemClock.now()))
                .await?
                .rows;
            let due_reminders = store
                .due_reminder_work(to_epoch_ms(SystemClock.now()))
                .await?
                .rows;
            let sent_before = sent_upcoming(&store.reminder_state_counts().await?);
            let finished_before = AttemptCounts::of(&store).await?.finished;
            let processed_before = processed_work(&store).await?;
            let commits_before = backend.commits(&run_url)?;
            let sink_before = self.sink.accepted();
            // Commits are counted on SQLite as fsync and fdatasync calls: with perf in every
            // run, with strace (which costs the daemon) only in the 20 ms run, whose count
            // the 0 ms runs then use.
            let counter = sync_counter.filter(|c| *c == SyncCounter::Perf || latency == 20);
            let syncs = self.work.join(format!("{tag}-{latency}-syncs.txt"));
            let mut running = Vec::new();
            for i in 0..daemons {
                let mut cmd = match counter {
                    Some(counter) => {
                        let mut c = counter.command(&syncs);
                        c.arg(&self.exe).arg("--config").arg(&config).arg("run");
                        c
                    }
                    None => {
                        let mut c = self.repayd(&config);
                        c.arg("run");
                        c
                    }
                };
                let mut d = Daemon::spawn(
                    cmd.to_owned_cmd(),
                    &self.work.join(format!("{tag}-{latency}-{i}.sock")),
                    &self.work.join(format!("{tag}-{latency}ms-{i}.log")),
                )?;
                d.traced = counter.is_some();
                running.push(d);
            }
            for d in &mut running {
                if d.ready(Duration::from_secs(120)).await.is_none() {
                    anyhow::bail!(
                        "a daemon did not become ready:\n{}",
                        probe::tail(&self.work.join(format!("{tag}-{latency}ms-0.log")), 20)
                    );
                }
            }
            // Rates count from READY. Poll until nothing is due or in flight, or the cap.
            // The poll is the harness's own load on the database the daemons use, so it
            // only asks whether any work is left (`Store::work_left`: each EXISTS stops at
            // the first live entry of a claim index). Counting what was done (every
            // attempt and every reminder by state: 2-4 s a count over 900,000 reminders
            // on PostgreSQL, and a snapshot held that long) is left to the end.
            let started = Instant::now();
            let mut debits_done_at = None;
            let mut reminders_done_at = None;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now_ms = to_epoch_ms(SystemClock.now());
                let (debits_left, reminders_left) = store.work_left(now_ms).await?;
                let at = started.elapsed().as_secs_f64();
                if !debits_left {
                    debits_done_at.get_or_insert(at);
                }
                if !reminders_left {
                    reminders_done_at.get_or_insert(at);
                }
                if (!debits_left && !reminders_left)
                    || started.elapsed() > self.sizes.run_cap
                    || running.iter_mut().any(|d| d.exited())
                {
                    break;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            // What was done by now: one snapshot each, taken before the daemons stop (their
            // drain would add the attempts in flight).
            let finished = AttemptCounts::of(&store).await?.finished - finished_before;
            let sent =
                sent_upcoming(&store.reminder_state_counts().await?).saturating_sub(sent_before);
            let debit_secs = debits_done_at.unwrap_or(elapsed);
            let reminder_secs = reminders_done_at.unwrap_or(elapsed);
            for d in running {
                d.stop(Duration::from_secs(30)).await;
            }
            let commits = match (&backend, counter) {
                (Backend::Sqlite, Some(counter)) => counter.count(&syncs),
                (Backend::Sqlite, None) => None,
                (Backend::Postgres(_), _) => match (commits_before, backend.commits(&run_url)?) {
                    (Some(a), Some(b)) => Some((b - a) as f64),
                    _ => None,
                },
            };
            let messages = self.sink.accepted() - sink_before;
            let processed = processed_work(&store)
                .await?
                .saturating_sub(processed_before);
            // With the drain's: the same span as the commits.
            let debits_all = AttemptCounts::of(&store).await?.finished - finished_before;
            store.close().await;
            backend.drop_db(&run_db)?;
            // Commits per unit of work (debit outcome or message), and per debit: every
            // commit of the run, the messages' included, charged to the debits. The debit
            // rate is held against the bound per debit; the bound per unit of work is in
            // units (debits and messages) per second.
            let measured = commits.map(|c| {
                (
                    c / (processed.max(1) as f64),
                    c / (debits_all.max(1) as f64),
                )
            });
            if let Some(k) = measured {
                self.commits_per_item.get_or_insert(k);
            }
            let k = measured.or(self.commits_per_item);
            let scenario = format!("due day, {name}, gateway {latency} ms");
            let debit_rate = finished as f64 / debit_secs.max(0.001);
            let reminder_rate = sent as f64 / reminder_secs.max(0.001);
            let commit_bound = match (commit_limit, k) {
                (Some(c), Some((_, d))) if d > 0.0 => Some(c / d),
                _ => None,
            };
            let latency_bound =
                (latency > 0).then(|| in_flight * daemons as f64 / (2.0 * latency as f64 / 1000.0));
            let bound = match (commit_bound, latency_bound) {
                (Some(c), Some(l)) => Some(c.min(l)),
                (c, l) => c.or(l),
            };
            let disk = match &backend {
                Backend::Sqlite => "SQLite commits/s",
                Backend::Postgres(_) => "pgbench tps",
            };
            let mut limit = String::new();
            match (commit_limit, k) {
                (Some(c), Some((item, debit))) => {
                    let _ = write!(
                        limit,
                        "{disk} {} / {debit:.2} commits per debit = {}/s ({item:.2} per unit of work, debit or message: {} units/s)",
                        num(c),
                        num(c / debit),
                        num(c / item)
                    );
                }
                (Some(c), None) => {
                    let _ = write!(limit, "{disk} {} (commits per debit not measured)", num(c));
                }
                _ => limit.push_str("commit rate not measured"),
            }
            if let Some(l) = latency_bound {
                let _ = write!(
                    limit,
                    "; latency: {} in flight x {daemons} / (2 calls x {latency} ms) = {}/s",
                    in_flight,
                    num(l)
                );
            }
            if with_debits {
                self.row(
                    format!("{scenario}: debits"),
                    format!(
                        "{}/s ({} of {} due finished in {debit_secs:.0} s)",
                        num(debit_rate),
                        num(finished as f64),
                        num(due_debits as f64),
                    ),
                    limit.clone(),
                    bound.map_or("-".into(), |b| ratio(debit_rate, b)),
                );
            }
            self.row(
                format!("{scenario}: reminders"),
                format!(
                    "{}/s ({} sent of {} reminder rows due; {} messages accepted by the sink in {elapsed:.0} s)",
                    num(reminder_rate),
                    num(sent as f64),
                    num(due_reminders as f64),
                    num(messages as f64),
                ),
                self.sink_rate.map_or("sink rate not measured".into(), |s| format!("sink's own rate {} msg/s", num(s))),
                self.sink_rate.map_or("-".into(), |s| ratio(reminder_rate, s)),
            );
        }
        if reused.is_some() {
        } else if self.keep {
            println!("  {backend_name}: kept the prepared database {prep} (--keep)");
        } else {
            backend.drop_db(&prep)?;
        }
        Ok(())
    }
}

/// Debit attempts by what became of them, from one count by state.
struct AttemptCounts {
    /// First debit attempts that reached an outcome (a retry planned later counts once).
    finished: u64,
}

impl AttemptCounts {
    async fn of(store: &Store) -> anyhow::Result<Self> {
        let mut counts = AttemptCounts { finished: 0 };
        for (state, n) in store.attempt_state_counts().await? {
            if matches!(
                state.as_str(),
                "succeeded"
                    | "insufficient_funds"
                    | "declined"
                    | "rejected"
                    | "failed"
                    | "unknown"
                    | "pending"
            ) {
                counts.finished += n as u64;
            }
        }
        Ok(counts)
    }
}

fn sent_upcoming(counts: &[(String, String, i64)]) -> u64 {
    counts
        .iter()
        .filter(|(kind, state, _)| kind == "upcoming" && state == "sent")
        .map(|(_, _, n)| *n as u64)
        .sum()
}

/// The pre-due reminders of the installments due today (up to two days ahead in UTC, so
/// every time zone's today, and none of the installments due in five days) marked sent at
/// their planned time: on a real due day they went out on the days before. Left pending
/// they are due now too, and the sending loop first works through them (cancelling
/// them: too late) before it reaches the reminders the scenario is about.
async fn mark_earlier_reminders_sent(
    url: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<u64> {
    let store = Store::connect(&secrecy::SecretString::from(url.to_string()), 1).await?;
    let cut = (now + chrono::Duration::days(2))
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let marked = crate::store::on_pool!(store, |pool| {
        sqlx::query(
            "UPDATE reminders SET state = 'sent', sent_at_ms = scheduled_at_ms, \
                 updated_at_ms = scheduled_at_ms \
             WHERE kind = 'upcoming' AND state = 'pending' \
               AND installment_id IN (SELECT id FROM installments WHERE due_date <= $1)",
        )
        .bind(cut)
        .execute(pool)
        .await?
        .rows_affected()
    });
    store.close().await;
    Ok(marked)
}

/// Moves every scheduled debit attempt `by` later: a due day with only its messages.
async fn postpone_debits(store: &Store, by: chrono::Duration) -> anyhow::Result<()> {
    crate::store::on_pool!(store, |pool| {
        sqlx::query(
            "UPDATE debit_attempts SET scheduled_at_ms = scheduled_at_ms + $1 \
             WHERE state = 'scheduled'",
        )
        .bind(by.num_milliseconds())
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Debit attempts with an outcome plus customer messages sent, cancelled or failed: the
/// units of work the commits are divided by.
async fn processed_work(store: &Store) -> anyhow::Result<u64> {
    let messages: u64 = store
        .reminder_state_counts()
        .await?
        .iter()
        .filter(|(_, state, _)| matches!(state.as_str(), "sent" | "cancelled" | "failed"))
        .map(|(_, _, n)| *n as u64)
        .sum();
    Ok(AttemptCounts::of(store).await?.finished + messages)
}

fn json_number(text: &str, key: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(text.lines().last()?).ok()?;
    v.get(key)?.as_f64()
}

/// How the harness counts a SQLite daemon's commits: its fsync and fdatasync calls (one
/// per commit with `synchronous = FULL` in WAL mode, and the checkpoints').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncCounter {
    /// `perf stat` on the two system calls' tracepoints: the kernel counts, and nothing
    /// stops the daemon.
    Perf,
    /// `strace -c --seccomp-bpf`: only the counted calls stop the daemon, but each is a
    /// group commit in the committer's path. Measured by hand on the 20 ms due day: 490
    /// debits/s under strace, 752 under perf, 802 with neither (docs/benchmarks.md).
    Strace,
}

const SYNC_EVENTS: &str = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync";

impl SyncCounter {
    /// perf where it can count the tracepoints (root, a kernel with them), else strace.
    fn detect(work: &Path) -> Option<Self> {
        let out = work.join("perf-probe.txt");
        let perf = Self::Perf
            .command(&out)
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Self::Perf.count(&out).is_some();
        let _ = std::fs::remove_file(&out);
        if perf {
            Some(Self::Perf)
        } else if probe::have("strace") {
            Some(Self::Strace)
        } else {
            None
        }
    }

    /// The counter's command line, writing its summary to `out`; the daemon's own command
    /// follows.
    fn command(self, out: &Path) -> Command {
        // --seccomp-bpf: only the traced calls stop the daemon. Without it ptrace stops
        // every system call of every thread (each futex wake-up of sqlx's connection
        // threads), and the run measured strace: 44-53 debits/s at 20 ms where the
        // latency bound is 1,600/s.
        let (program, args): (&str, &[&str]) = match self {
            Self::Perf => ("perf", &["stat", "-x,", "-e", SYNC_EVENTS, "-o"]),
            Self::Strace => (
                "strace",
                &[
                    "-f",
                    "--seccomp-bpf",
                    "-qq",
                    "-c",
                    "-e",
                    "trace=fsync,fdatasync",
                    "-o",
                ],
            ),
        };
        let mut c = Command::new(program);
        c.args(args).arg(out);
        if self == Self::Perf {
            c.arg("--");
        }
        c
    }

    /// fsync + fdatasync calls in the counter's summary.
    fn count(self, path: &Path) -> Option<f64> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut calls = 0.0;
        let mut found = 0;
        for line in text.lines() {
            match self {
                // `perf stat -x,`: count,unit,event,... ("<not counted>" is no count).
                Self::Perf => {
                    let fields: Vec<&str> = line.split(',').collect();
                    if let (Some(count), Some(event)) = (fields.first(), fields.get(2))
                        && SYNC_EVENTS.split(',').any(|e| e == *event)
                    {
                        calls += count.parse::<f64>().ok()?;
                        found += 1;
                    }
                }
                // `strace -c`: % time, seconds, usecs/call, calls, [errors,] syscall.
                Self::Strace => {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    if let Some(name) = fields.last()
                        && (*name == "fsync" || *name == "fdatasync")
                        && let Some(n) = fields.get(3).and_then(|c| c.parse::<f64>().ok())
                    {
                        calls += n;
                        found += 1;
                    }
                }
            }
        }
        match self {
            Self::Perf => (found == 2).then_some(calls),
            Self::Strace => (found > 0).then_some(calls),
        }
    }
}

fn psql(admin: &str, sql: &str) -> anyhow::Result<String> {
    probe::output(Command::new("psql").args([admin, "-v", "ON_ERROR_STOP=1", "-Atqc", sql]))
}

enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// Names this backend's files and databases; on PostgreSQL with this process's id,
    /// so two benchmarks on one server (several people, one machine) never drop each
    /// other's databases.
    fn tag(&self) -> String {
        match self {
            Backend::Sqlite => "sqlite".into(),
            Backend::Postgres(_) => format!("pg{}", std::process::id()),
        }
    }

    /// A fresh, empty database `name`: its URL.
    fn url(&self, name: &str, work: &Path) -> anyhow::Result<String> {
        match self {
            Backend::Sqlite => {
                let path = work.join(format!("{name}.db"));
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                Ok(format!("sqlite://{}", path.display()))
            }
            Backend::Postgres(admin) => {
                psql(admin, &format!("DROP DATABASE IF EXISTS {name}"))?;
                psql(admin, &format!("CREATE DATABASE {name}"))?;
                Ok(pg_url(admin, name))
            }
        }
    }

    /// A copy of database `from` named `to`: its URL.
    fn copy(&self, from: &str, to: &str, work: &Path) -> anyhow::Result<String> {
        match self {
            Backend::Sqlite => {
                for suffix in ["", "-wal", "-shm"] {
                    let src = work.join(format!("{from}.db{suffix}"));
                    let dst = work.join(format!("{to}.db{suffix}"));
                    let _ = std::fs::remove_file(&dst);
                    if src.exists() {
                        std::fs::copy(&src, &dst)?;
                    }
                }
                Ok(format!(
                    "sqlite://{}",
                    work.join(format!("{to}.db")).display()
                ))
            }
            Backend::Postgres(admin) => {
                psql(admin, &format!("DROP DATABASE IF EXISTS {to}"))?;
                psql(admin, &format!("CREATE DATABASE {to} TEMPLATE {from}"))?;
                Ok(pg_url(admin, to))
            }
        }
    }

    fn drop_db(&self, name: &str) -> anyhow::Result<()> {
        if let Backend::Postgres(admin) = self {
            psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )?;
        }
        Ok(())
    }

    /// Transactions committed in the database so far (PostgreSQL's statistics).
    fn commits(&self, url: &str) -> anyhow::Result<Option<i64>> {
        match self {
            Backend::Sqlite => Ok(None),
            Backend::Postgres(_) => {
                // The statistics are flushed by each backend now and then; ask them fresh.
                let out = psql(
                    url,
                    "SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                )?;
                Ok(out
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .next_back())
            }
        }
    }
}

fn sample_email(worker: usize, n: u64) -> crate::mail::OutgoingEmail {
    crate::mail::OutgoingEmail {
        to: format!("customer{worker}-{n}@example.com"),
        to_name: "Bench Customer".into(),
        subject: "Your installment is due soon".into(),
        text: "Hello,\n\nyour installment of 500.00 is due on Saturday.\n".repeat(20),
        html: "<p>Hello,</p><p>your installment of 500.00 is due on Saturday.</p>".repeat(20),
        message_id: format!("bench.{worker}.{n}@example.com"),
        locale: "en".into(),
    }
}

/// `&mut Command` to an owned one (builders hand out `&mut`).
trait ToOwnedCmd {
    fn to_owned_cmd(&mut self) -> Command;
}

impl ToOwnedCmd for Command {
    fn to_owned_cmd(&mut self) -> Command {
        let mut cmd = Command::new(self.get_program());
        cmd.args(self.get_args());
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(999.0), "999");
        assert_eq!(num(-1000.0), "-1,000");
    }

    #[test]
    fn database_urls_on_the_same_server() {
        assert_eq!(
            pg_url("postgres://postgres@127.0.0.1:5432/postgres", "bench_x"),
            "postgres://postgres@127.0.0.1:5432/bench_x"
        );
        assert_eq!(
            pg_url("postgres://u@h/db?sslmode=disable", "b"),
            "postgres://u@h/b?sslmode=disable"
        );
        assert_eq!(pg_url("postgres://u@h", "b"), "postgres://u@h/b");
    }

    #[test]
    fn strace_summaries_count_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.txt");
        std::fs::write(
            &path,
            "% time     seconds  usecs/call     calls    errors syscall\n\
             ------ ----------- ----------- --------- --------- ----------------\n\
             100.00    1.000000         100     10000           fdatasync\n\
               0.00    0.000000           0        12           fsync\n\
             ------ ----------- ----------- --------- --------- ----------------\n\
             100.00    1.000000         100     10012           total\n",
        )
        .unwrap();
        assert_eq!(SyncCounter::Strace.count(&path), Some(10012.0));
        assert_eq!(SyncCounter::Perf.count(&path), None);
    }

    #[test]
    fn perf_summaries_count_syncs_and_refuse_events_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        std::fs::write(
            &path,
            "# started on Mon Dec  7 21:59:52 2026\n\n\
             13262,,syscalls:sys_enter_fsync,32026770781,100.00,,\n\
             7,,syscalls:sys_enter_fdatasync,32026770781,100.00,,\n",
        )
        .unwrap();
        assert_eq!(SyncCounter::Perf.count(&path), Some(13269.0));
        assert_eq!(SyncCounter::Strace.count(&path), None);
        std::fs::write(
            &path,
            "<not supported>,,syscalls:sys_enter_fsync,0,100.00,,\n\
             <not supported>,,syscalls:sys_enter_fdatasync,0,100.00,,\n",
        )
        .unwrap();
        assert_eq!(SyncCounter::Perf.count(&path), None);
    }
}
