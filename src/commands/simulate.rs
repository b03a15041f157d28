//! `repayd simulate --days N`: a dry run on a virtual clock over the real data. Operations
//! use it before changing a retry or reminder policy: "with this config, what would be
//! sent and debited over the next N days?"
//!
//! How it stays dry: the SQLite database is copied with `VACUUM INTO` over a read-only
//! connection (the file is not changed by a byte, and a running daemon is not disturbed),
//! the engine runs against the copy in a temporary directory, the gateway is the sandbox
//! bank on the copy (or a bank where funds are always available), and email is captured
//! in memory. The timeline is read back from the copy's event log, then the copy is
//! deleted.
//!
//! PostgreSQL is refused: copying a live PostgreSQL database needs either exclusive
//! access (CREATE DATABASE ... TEMPLATE) or a table-by-table export that would have to
//! follow every migration, and running the engine on the live database is out of the
//! question. The documented way is to export the tables into a SQLite file first
//! (docs/operations.md, "Simulate").

use crate::cli::OutputFormat;
use crate::clock::{Clock, ManualClock, SystemClock, from_epoch_ms};
use crate::config::Settings;
use crate::domain::{Currency, Money};
use crate::engine::policy::EnginePolicy;
use crate::engine::{Engine, MailDeps};
use crate::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
};
use crate::mail::CaptureMailer;
use crate::store::{EventRow, Store};
use anyhow::{Context, bail};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The longest simulation: ten years, far beyond any planning horizon.
const MAX_DAYS: u32 = 3660;

#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// How many days to simulate.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
    pub days: u32,
    /// Start at 00:00 UTC of this date (YYYY-MM-DD) instead of now.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// Where funds checks and debits are answered: the sandbox bank on the copy (its
    /// configured balances, 5000.00 for accounts it has not seen), or a bank where every
    /// funds check passes and every debit succeeds.
    #[arg(long, value_enum, default_value = "sandbox")]
    pub funds: FundsModel,
    /// Run twice, on two copies, with fixed-offset retries and with payday-aware retries
    /// (`[retry.payday]` off, then on, the rest of the config as it is), and print for
    /// each the amount collected per currency, the debit attempts made and the failure
    /// notices sent, instead of the timeline (docs/retry.md).
    #[arg(long)]
    pub compare_retry: bool,
    /// Keep the copies in this directory (`simulate.db`, or `compare-false.db` and
    /// `compare-true.db` with --compare-retry) to look into afterwards, e.g. with
    /// `repayd customers show` on a config pointing at one; by default they are deleted.
    #[arg(long, value_name = "DIR")]
    pub keep_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FundsModel {
    Sandbox,
    Always,
}

impl FundsModel {
    fn as_str(self) -> &'static str {
        match self {
            FundsModel::Sandbox => "sandbox",
            FundsModel::Always => "always",
        }
    }
}

/// Runs the simulation and prints the timeline.
pub async fn run(settings: &Settings, args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let url = settings.database_url();
    if !url.expose_secret().starts_with("sqlite:") {
        bail!(
            "repayd simulate runs on a copy of a SQLite database; database.url is PostgreSQL. \
             Export the data into a SQLite file and point a copy of the config at it \
             (docs/operations.md, \"Simulate\")"
        );
    }
    let start = match args.from {
        Some(date) => date.and_time(chrono::NaiveTime::MIN).and_utc(),
        None => SystemClock.now(),
    };
    let until = start + Duration::days(i64::from(args.days));

    let scratch = tempfile::Builder::new()
        .prefix("repayd-simulate-")
        .tempdir()
        .context("creating a temporary directory for the copy")?;
    let dir = match &args.keep_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => scratch.path().to_path_buf(),
    };
    if args.compare_retry {
        let mut runs = Vec::new();
        for payday in [false, true] {
            let mut settings = settings.clone();
            settings.retry.payday.enabled = payday;
            let store = open_copy(&url, &dir.join(format!("compare-{payday}.db"))).await?;
            let started = std::time::Instant::now();
            let label = if payday {
                "payday-aware"
            } else {
                "fixed-offset"
            };
            let outcome = compare_run(&store, &settings, args.funds, start, until, label).await;
            store.close().await;
            runs.push((payday, outcome?, started.elapsed()));
        }
        print!("{}", render_comparison(start, until, &runs));
        return Ok(ExitCode::SUCCESS);
    }
    let copy = open_copy(&url, &dir.join("simulate.db")).await?;
    let timeline = simulate(&copy, settings, args.funds, start, until).await;
    copy.close().await;
    drop(scratch);
    let timeline = timeline?;
    let out = match args.format {
        OutputFormat::Json => render_json(&timeline),
        OutputFormat::Table => render_table(&timeline),
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Copies the database to `path` (replacing a copy an earlier run kept there) and opens
/// the copy, migrated.
async fn open_copy(url: &SecretString, path: &std::path::Path) -> anyhow::Result<Store> {
    remove_copy(path)?;
    crate::store::snapshot::sqlite_snapshot(url.expose_secret(), path)
        .await
        .context("copying the database (VACUUM INTO)")?;
    let store = Store::connect_scratch(&SecretString::from(format!("sqlite://{}", path.display())))
        .await
        .context("opening the copy")?;
    store.migrate().await.context("migrating the copy")?;
    Ok(store)
}

/// Removes a copy left by an earlier run with --keep-dir (and its WAL files).
fn remove_copy(path: &std::path::Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
    Ok(())
}

/// What happened on the copy.
#[derive(Debug)]
pub struct Timeline {
    pub start: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub funds: FundsModel,
    pub events: Vec<TimelineEvent>,
    /// Money debited during the run, per currency (minor units).
    pub debited_minor: BTreeMap<String, i64>,
    pub emails: usize,
    /// Debit attempts planned (not shown one by one in the table).
    pub attempts_planned: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub agreement: Option<String>,
    pub installment: Option<i64>,
    pub attempt_id: Option<i64>,
    pub detail: serde_json::Value,
}

/// What one run of `--compare-retry` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOutcome {
    /// Money collected during the run, per currency (minor units).
    pub collected_minor: BTreeMap<String, i64>,
    /// Debit attempts that checked funds (each funds-checked attempt counts once).
    pub attempts: i64,
    /// Failure notices (`debit_failed`) sent.
    pub failure_notices: i64,
}

/// One run of the comparison: the engine from `start` to `until`, counting instead of
/// keeping a timeline (a portfolio of 10,000 agreements has millions of events).
pub async fn compare_run(
    copy: &Store,
    settings: &Settings,
    funds: FundsModel,
    start: DateTime<Utc>,
    until: DateTime<Utc>,
    label: &str,
) -> anyhow::Result<RetryOutcome> {
    let clock = ManualClock::new(start);
    let (engine, _capture) = build_engine(copy, settings, funds, &clock, true).await?;
    let first_event = copy.last_event_id().await?;
    let before: HashMap<String, i64> = copy
        .debited_minor_by_currency()
        .await?
        .into_iter()
        .collect();
    let notices_before = copy.sent_messages_of_kind("debit_failed").await?;
    drive(&engine, &clock, until, Some(label)).await?;
    let collected_minor = copy
        .debited_minor_by_currency()
        .await?
        .into_iter()
        .map(|(c, n)| {
            let b = before.get(&c).copied().unwrap_or(0);
            (c, n - b)
        })
        .filter(|(_, n)| *n != 0)
        .collect();
    Ok(RetryOutcome {
        collected_minor,
        attempts: copy
            .events_of_kinds_after(first_event, &["funds_confirmed", "funds_insufficient"])
            .await?,
        failure_notices: copy.sent_messages_of_kind("debit_failed").await? - notices_before,
    })
}

pub fn render_comparison(
    start: DateTime<Utc>,
    until: DateTime<Utc>,
    runs: &[(bool, RetryOutcome, std::time::Duration)],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "repayd simulate --compare-retry: {} to {} UTC, on copies of the database.\n",
        start.format("%Y-%m-%d %H:%M"),
        until.format("%Y-%m-%d %H:%M"),
    );
    for (payday, o, took) in runs {
        let _ = writeln!(
            out,
            "{}",
            if *payday {
                "payday-aware retries ([retry.payday] enabled)"
            } else {
                "fixed-offset retries ([retry.payday] off)"
            }
        );
        for (currency, minor) in &o.collected_minor {
            let _ = writeln!(out, "  collected        {}", money(currency, *minor));
        }
        let _ = writeln!(out, "  debit attempts   {}", o.attempts);
        let _ = writeln!(out, "  failure notices  {}", o.failure_notices);
        let _ = writeln!(out, "  (run took {:.0} s)\n", took.as_secs_f64());
    }
    out
}

/// Drives the engine on `copy` from `start` to `until` like the daemon would: planning
/// once a (virtual) day and jumping from one due work row to the next.
pub async fn simulate(
    copy: &Store,
    settings: &Settings,
    funds: FundsModel,
    start: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Timeline> {
    let clock = ManualClock::new(start);
    let (engine, capture) = build_engine(copy, settings, funds, &clock, false).await?;
    let first_event = copy.last_event_id().await?;
    let debited_before: HashMap<String, i64> = copy
        .debited_minor_by_currency()
        .await?
        .into_iter()
        .collect();
    drive(&engine, &clock, until, None).await?;

    let mut agreements: HashMap<i64, (String, HashMap<i64, i64>)> = HashMap::new();
    let mut events = Vec::new();
    let mut attempts_planned = 0;
    for row in copy.events_after(first_event).await? {
        if row.kind == "debit_attempt_planned" {
            attempts_planned += 1;
            continue;
        }
        events.push(timeline_event(copy, &mut agreements, row).await?);
    }
    events.sort_by_key(|e| e.at);
    let debited_minor = copy
        .debited_minor_by_currency()
        .await?
        .into_iter()
        .map(|(c, n)| {
            let before = debited_before.get(&c).copied().unwrap_or(0);
            (c, n - before)
        })
        .filter(|(_, n)| *n != 0)
        .collect();
    Ok(Timeline {
        start,
        until,
        funds,
        events,
        debited_minor,
        emails: capture.sent().len(),
        attempts_planned,
    })
}

/// The engine on `copy` with the sandbox bank (or one where funds are always there) and
/// captured email, on `clock`.
async fn build_engine(
    copy: &Store,
    settings: &Settings,
    funds: FundsModel,
    clock: &ManualClock,
    count_only: bool,
) -> anyhow::Result<(Arc<Engine>, Arc<CaptureMailer>)> {
    let calendar = super::run::load_calendar(settings)?;
    let gateway: Arc<dyn PaymentGateway> = match funds {
        FundsModel::Sandbox => {
            let mut sandbox = settings.gateway.sandbox.clone();
            // Virtual time: waiting for a simulated bank would only slow the run.
            sandbox.latency_ms = 0;
            Arc::new(
                crate::gateway::sandbox::SandboxBank::new(copy.clone(), sandbox)
                    .await
                    .context("starting the sandbox bank on the copy")?
                    .with_clock(Arc::new(clock.clone()))
                    .with_calendar(calendar.clone().unwrap_or_default()),
            )
        }
        FundsModel::Always => Arc::new(FundsAlwaysAvailable::default()),
    };
    let templates = settings
        .mail
        .templates()
        .context("loading email templates")?;
    templates.check_all().context("checking email templates")?;
    let capture = Arc::new(CaptureMailer::new());
    // Counting only: a comparison over a large portfolio must not hold every email.
    let mailer: Arc<dyn crate::mail::Mailer> = if count_only {
        Arc::new(CountingMailer)
    } else {
        capture.clone()
    };
    let mail = MailDeps::new(mailer, templates, settings.mail.clone());
    let policy = EnginePolicy::from_settings(settings)?;
    let engine = Arc::new(
        Engine::new(
            copy.clone(),
            gateway,
            Arc::new(clock.clone()),
            policy,
            "simulate",
        )
        .with_mail(mail),
    );
    // As the daemon does: the calendar's business days for payday-aware retries too.
    engine.set_calendar(calendar.as_ref());

    Ok((engine, capture))
}

/// A mailer that renders nothing further and keeps nothing: `--compare-retry` counts
/// messages from the database.
#[derive(Debug, Default)]
struct CountingMailer;

#[async_trait::async_trait]
impl crate::mail::Mailer for CountingMailer {
    async fn send(
        &self,
        _email: &crate::mail::OutgoingEmail,
    ) -> Result<(), crate::mail::MailError> {
        Ok(())
    }
}

/// Wall-clock time spent in each part of a simulated run, for the progress lines.
#[derive(Debug, Default)]
struct PhaseTimes {
    planning: std::time::Duration,
    overdue: std::time::Duration,
    debits: std::time::Duration,
    reminders: std::time::Duration,
}

impl PhaseTimes {
    fn line(&self) -> String {
        format!(
            "planning {:.0} s, overdue {:.0} s, debits {:.0} s, email {:.0} s",
            self.planning.as_secs_f64(),
            self.overdue.as_secs_f64(),
            self.debits.as_secs_f64(),
            self.reminders.as_secs_f64()
        )
    }
}

/// Times `work` into `slot`.
async fn timed<T>(slot: &mut std::time::Duration, work: impl Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let out = work.await;
    *slot += started.elapsed();
    out
}

/// The daemon's loop on a virtual clock: plan and assess overdue agreements at the start
/// and then once a day, and in between jump straight to the next due debit attempt or
/// reminder. With a `progress` label, each simulated day is reported on stderr (the
/// virtual date and where the wall-clock time went), so a long run shows it is moving.
async fn drive(
    engine: &Arc<Engine>,
    clock: &ManualClock,
    until: DateTime<Utc>,
    progress: Option<&str>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let store = engine.store().clone();
    let started = std::time::Instant::now();
    let first_day = clock.now();
    let days = (until - first_day).num_days().max(1);
    let mut times = PhaseTimes::default();
    let mut next_plan = clock.now();
    let mut last: Option<DateTime<Utc>> = None;
    loop {
        let due_attempt = store.next_attempt_due_ms().await?;
        let due_reminder = store.next_reminder_due_ms().await?;
        let next_due = [due_attempt, due_reminder]
            .into_iter()
            .flatten()
            .min()
            .map(from_epoch_ms);
        let mut now = match next_due {
            Some(due) if due < next_plan => due.max(clock.now()),
            _ => next_plan,
        };
        if last == Some(now) && now < next_plan {
            // Work that stays due after a pass (a permanent fault) must not hold the clock:
            // it is tried again at the next daily planning.
            now = next_plan;
        }
        if now > until {
            break;
        }
        last = Some(now);
        clock.set(now);
        if now >= next_plan {
            if let Some(label) = progress {
                // The pass at `until` itself closes the last day (it is not a day more).
                let day = (now - first_day).num_days() + 1;
                let which = if day > days {
                    format!("end of day {days} of {days}")
                } else {
                    format!("day {day} of {days}")
                };
                eprintln!(
                    "simulate ({label}): {} ({which}), {:.0} s: {}",
                    now.format("%Y-%m-%d"),
                    started.elapsed().as_secs_f64(),
                    times.line()
                );
            }
            timed(&mut times.planning, engine.plan())
                .await
                .context("planning")?;
            // Days past due move once a day. Operations alerts (webhooks) are not run:
            // a dry run must not page anyone.
            timed(&mut times.overdue, engine.assess_overdue())
                .await
                .context("assessing overdue agreements")?;
            next_plan = now + Duration::days(1);
        }
        timed(&mut times.debits, engine.run_due(&shutdown))
            .await
            .context("processing due debits")?;
        timed(&mut times.reminders, engine.run_reminders(&shutdown))
            .await
            .context("sending due reminders")?;
    }
    if let Some(label) = progress {
        eprintln!(
            "simulate ({label}): done in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            times.line()
        );
    }
    Ok(())
}

async fn timeline_event(
    store: &Store,
    agreements: &mut HashMap<i64, (String, HashMap<i64, i64>)>,
    row: EventRow,
) -> anyhow::Result<TimelineEvent> {
    let mut agreement = None;
    let mut installment = None;
    if let Some(id) = row.agreement_id {
        if let std::collections::hash_map::Entry::Vacant(slot) = agreements.entry(id) {
            let external = store
                .agreement(id)
                .await?
                .map(|a| a.external_id)
                .unwrap_or_else(|| format!("#{id}"));
            let seqs = store
                .installments(id)
                .await?
                .into_iter()
                .map(|i| (i.id, i.seq))
                .collect();
            slot.insert((external, seqs));
        }
        let (external, seqs) = &agreements[&id];
        agreement = Some(external.clone());
        installment = row.installment_id.and_then(|i| seqs.get(&i).copied());
    }
    Ok(TimelineEvent {
        at: from_epoch_ms(row.at_ms),
        kind: row.kind,
        agreement,
        installment,
        attempt_id: row.attempt_id,
        detail: serde_json::from_str(&row.detail).unwrap_or(serde_json::Value::Null),
    })
}

fn money(currency: &str, minor: i64) -> String {
    match Currency::parse(currency) {
        Ok(c) => format!("{currency} {}", Money::from_minor(minor, c).plain()),
        Err(_) => format!("{currency} {minor} (minor units)"),
    }
}

fn kind_counts(events: &[TimelineEvent]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.kind.as_str()).or_default() += 1;
    }
    counts
}

pub fn render_json(t: &Timeline) -> String {
    let debited: BTreeMap<&str, String> = t
        .debited_minor
        .iter()
        .map(|(c, n)| (c.as_str(), money(c, *n)))
        .collect();
    let value = serde_json::json!({
        "from": t.start.to_rfc3339(),
        "until": t.until.to_rfc3339(),
        "funds": t.funds.as_str(),
        "events": t.events,
        "summary": {
            "events_by_kind": kind_counts(&t.events),
            "debit_attempts_planned": t.attempts_planned,
            "debited": debited,
            "debited_minor": t.debited_minor,
            "emails": t.emails,
        },
    });
    let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
    out.push('\n');
    out
}

pub fn render_table(t: &Timeline) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "repayd simulate: {} to {} UTC, funds: {}. Run on a copy of the database: nothing was sent, debited or written.\n",
        t.start.format("%Y-%m-%d %H:%M"),
        t.until.format("%Y-%m-%d %H:%M"),
        t.funds.as_str()
    );
    let _ = writeln!(
        out,
        "{:<17} {:<16} {:>4}  {:<27} DETAIL",
        "TIME (UTC)", "AGREEMENT", "INST", "EVENT"
    );
    for e in &t.events {
        let _ = writeln!(
            out,
            "{:<17} {:<16} {:>4}  {:<27} {}",
            e.at.format("%Y-%m-%d %H:%M"),
            e.agreement.as_deref().unwrap_or("-"),
            e.installment
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            e.kind,
            detail_text(&e.detail)
        );
    }
    if t.events.is_empty() {
        let _ = writeln!(out, "(nothing happens in this period)");
    }
    let _ = writeln!(out, "\nSummary");
    for (kind, n) in kind_counts(&t.events) {
        let _ = writeln!(out, "  {kind:<28} {n:>6}");
    }
    let _ = writeln!(
        out,
        "  {:<28} {:>6}",
        "debit attempts planned", t.attempts_planned
    );
    let _ = writeln!(out, "  {:<28} {:>6}", "emails rendered", t.emails);
    for (currency, minor) in &t.debited_minor {
        let _ = writeln!(out, "  debited {}", money(currency, *minor));
    }
    out
}

/// `key=value` pairs of an event's detail, sorted by key; Message-IDs left out
/// (long, and of no use when deciding on a policy).
fn detail_text(detail: &serde_json::Value) -> String {
    let Some(map) = detail.as_object() else {
        return String::new();
    };
    map.iter()
        .filter(|(k, v)| !v.is_null() && *v != "" && k.as_str() != "message_id")
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A bank where every funds check passes and every debit succeeds (once per key).
#[derive(Debug, Default)]
struct FundsAlwaysAvailable {
    booked: Mutex<HashSet<String>>,
}

#[async_trait::async_trait]
impl PaymentGateway for FundsAlwaysAvailable {
    async fn check_funds(
        &self,
        _account_ref: &str,
        _amount: &Money,
    ) -> Result<FundsAnswer, GatewayError> {
        Ok(FundsAnswer::Available)
    }

    async fn debit(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        self.booked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request.idempotency_key.clone());
        Ok(DebitOutcome::Succeeded {
            gateway_ref: format!("sim-{}", request.idempotency_key),
        })
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, GatewayError> {
        let booked = self
            .booked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(idempotency_key);
        Ok(if booked {
            LookupOutcome::Found(DebitOutcome::Succeeded {
                gateway_ref: format!("sim-{idempotency_key}"),
            })
        } else {
            LookupOutcome::NotFound
        })
    }
}
