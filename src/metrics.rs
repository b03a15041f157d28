//! Prometheus metrics: latency histograms and outcome counters kept in this process (by
//! the [`MeteredGateway`] and [`MeteredMailer`] decorators), and gauges read from the
//! database (work by state, amounts debited, due work waiting), written in the Prometheus
//! text format (0.0.4). What work is due and in flight is read on each scrape; the tallies
//! over all history are read in the background ([`TallyCache`]).
//!
//! Why no metrics crate: the database gauges are computed per scrape, which a registry
//! crate would need custom collectors for, and the rest is two histograms and a counter.
//! The text format is small and stable; [`escape`] covers its one subtlety.

use crate::clock::to_epoch_ms;
use crate::domain::Money;
use crate::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
    ReturnsPage,
};
use crate::mail::{MailError, Mailer, OutgoingEmail};
use crate::store::Store;
use crate::store::metrics::DueWork;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency buckets: a bank answers in tens of milliseconds
/// to seconds; a debit over 10 s is close to timing out.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Debit attempt states, as in the `debit_attempts` CHECK constraint: every one is
/// exported, zero included, so alerts never meet a missing series.
const ATTEMPT_STATES: [&str; 11] = [
    "scheduled",
    "claimed",
    "funds_checked",
    "submitted",
    "succeeded",
    "insufficient_funds",
    "declined",
    "unknown",
    "pending",
    "cancelled",
    "failed",
];

const GATEWAY_OPERATIONS: [&str; 4] = ["check_funds", "debit", "lookup", "returns"];
const DEBIT_OUTCOMES: [&str; 5] = [
    "succeeded",
    "pending",
    "declined_soft",
    "declined_hard",
    "error",
];

#[derive(Debug, Clone)]
struct Histogram {
    /// Cumulative counts are computed when rendering; these are per bucket.
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [0; LATENCY_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, n) in LATENCY_BUCKETS.iter().zip(self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// This process's metrics. Shared as `Arc<Metrics>` by the decorators and the server.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (operation, result) -> latency of gateway calls.
    gateway: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
    /// result -> latency of email sends.
    mail: Mutex<BTreeMap<&'static str, Histogram>>,
    /// outcome -> debit calls that came to it.
    debit_outcomes: Mutex<BTreeMap<&'static str, u64>>,
    /// The database's tallies over all history, read in the background.
    tallies: TallyCache,
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Self::default();
        // Every series exists from the start, so rate() and alerts see zeros, not gaps.
        {
            let mut gateway = lock(&metrics.gateway);
            for op in GATEWAY_OPERATIONS {
                for result in ["ok", "error"] {
                    gateway.entry((op, result)).or_default();
                }
            }
            let mut mail = lock(&metrics.mail);
            for result in ["ok", "error"] {
                mail.entry(result).or_default();
            }
            let mut outcomes = lock(&metrics.debit_outcomes);
            for outcome in DEBIT_OUTCOMES {
                outcomes.entry(outcome).or_default();
            }
        }
        metrics
    }

    pub fn observe_gateway(&self, operation: &'static str, ok: bool, took: Duration) {
        lock(&self.gateway)
            .entry((operation, if ok { "ok" } else { "error" }))
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub fn observe_mail(&self, ok: bool, took: Duration) {
        lock(&self.mail)
            .entry(if ok { "ok" } else { "error" })
            .or_default()
            .observe(took.as_secs_f64());
    }

    pub fn count_debit_outcome(&self, outcome: &'static str) {
        *lock(&self.debit_outcomes).entry(outcome).or_default() += 1;
    }

    /// The metrics this process keeps, in the text format.
    pub fn render_process(&self, out: &mut String) {
        header(
            out,
            "repayd_build_info",
            "gauge",
            "The running version (value is always 1).",
        );
        let _ = writeln!(
            out,
            "repayd_build_info{{version=\"{}\"}} 1",
            escape(env!("CARGO_PKG_VERSION"))
        );
        header(
            out,
            "repayd_gateway_request_duration_seconds",
            "histogram",
            "Latency of payment gateway calls, by operation and result (error: no usable answer).",
        );
        for ((op, result), h) in lock(&self.gateway).iter() {
            h.render(
                out,
                "repayd_gateway_request_duration_seconds",
                &format!("operation=\"{op}\",result=\"{result}\""),
            );
        }
        header(
            out,
            "repayd_gateway_debit_outcomes_total",
            "counter",
            "Debit calls by what the gateway answered (declined_hard: must not be retried).",
        );
        for (outcome, n) in lock(&self.debit_outcomes).iter() {
            let _ = writeln!(
                out,
                "repayd_gateway_debit_outcomes_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        header(
            out,
            "repayd_mail_send_duration_seconds",
            "histogram",
            "Latency of handing an email to the mailer (SMTP relay or outbox), by result.",
        );
        for (result, h) in lock(&self.mail).iter() {
            h.render(
                out,
                "repayd_mail_send_duration_seconds",
                &format!("result=\"{result}\""),
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves numbers, not invariants: keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value in the text format: backslash, double quote and newline escaped.
pub fn escape(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Debit attempt states that work is still in: counted on every scrape (each has a
/// partial index), where the finished states are tallies.
const OPEN_ATTEMPT_STATES: [&str; 7] = [
    "scheduled",
    "claimed",
    "funds_checked",
    "submitted",
    "unknown",
    "pending",
    "rejected",
];

/// Tallies are read again at most this often, however quick the read.
const TALLY_MIN_INTERVAL: Duration = Duration::from_secs(15);
/// ... and no sooner than this many times the last read's duration after it, so reading
/// them costs at most a twentieth of one core however long the history grows.
const TALLY_SPACING: u32 = 20;

/// What the database says: the tallies over all history (as last read, see
/// [`TallyCache`]) and what a scrape reads now (due work, attempts in open states).
#[derive(Debug, Clone, Default)]
pub struct DatabaseGauges {
    pub attempts: Vec<(String, i64)>,
    pub debited_minor: Vec<(String, i64)>,
    pub reminders: Vec<(String, String, i64)>,
    pub due_debits: DueWork,
    pub due_reminders: DueWork,
    pub last_debit_succeeded_ms: Option<i64>,
    /// `None` when the database has no delinquency table yet.
    pub overdue_by_bucket: Option<Vec<(String, i64)>>,
    /// How old the tallies are (`None`: not read yet, so they are left out).
    pub tallies_age: Option<Duration>,
}

impl DatabaseGauges {
    /// The tallies over all history: attempts by state, amounts debited, emails by kind and
    /// state, the last success, overdue agreements by bucket. Full scans of what the
    /// portfolio has accumulated (2 s at 1,080,000 debit attempts on SQLite).
    pub async fn read_tallies(store: &Store) -> crate::store::Result<Self> {
        Ok(Self {
            attempts: store.attempt_state_counts().await?,
            debited_minor: store.debited_minor_by_currency().await?,
            reminders: store.reminder_state_counts().await?,
            last_debit_succeeded_ms: store.last_debit_succeeded_ms().await?,
            overdue_by_bucket: store.overdue_agreements_by_bucket().await.ok(),
            tallies_age: Some(Duration::ZERO),
            ..Self::default()
        })
    }

    /// Reads what a scrape must see now over these tallies: due work, and the attempts in
    /// open states (replacing the tallies' counts of those states).
    pub async fn read_live(
        mut self,
        store: &Store,
        now: DateTime<Utc>,
    ) -> crate::store::Result<Self> {
        let now_ms = to_epoch_ms(now);
        self.due_debits = store.due_debit_work(now_ms).await?;
        self.due_reminders = store.due_reminder_work(now_ms).await?;
        let open = store.open_attempt_state_counts().await?;
        self.attempts
            .retain(|(state, _)| !OPEN_ATTEMPT_STATES.contains(&state.as_str()));
        self.attempts.extend(open);
        self.attempts.sort();
        Ok(self)
    }

    pub fn render(&self, out: &mut String, now: DateTime<Utc>) {
        let now_ms = to_epoch_ms(now);
        header(
            out,
            "repayd_debit_attempts",
            "gauge",
            "Debit attempts in the database, by state (outcome once finished).",
        );
        let counts: BTreeMap<&str, i64> = self
            .attempts
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect();
        // Before the first tallies only the open states are known: a finished state is
        // left out rather than shown as 0.
        let mut states: Vec<&str> = if self.tallies_age.is_some() {
            ATTEMPT_STATES.to_vec()
        } else {
            OPEN_ATTEMPT_STATES.to_vec()
        };
        states.extend(
            counts
                .keys()
                .filter(|s| !states.contains(s))
                .copied()
                .collect::<Vec<_>>(),
        );
        for state in states {
            let n = counts.get(state).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "repayd_debit_attempts{{state=\"{}\"}} {n}",
                escape(state)
            );
        }
        header(
            out,
            "repayd_debited_amount",
            "counter",
            "Money debited by succeeded attempts, per currency, in major units (e.g. 12.34).",
        );
        header(
            out,
            "repayd_debited_minor_units",
            "counter",
            "Money debited by succeeded attempts, per currency, in minor units (exact).",
        );
        for (currency, minor) in &self.debited_minor {
            let major = crate::domain::Currency::parse(currency)
                .map(|c| Money::from_minor(*minor, c).plain())
                .unwrap_or_else(|_| minor.to_string());
            let currency = escape(currency);
            let _ = writeln!(
                out,
                "repayd_debited_amount{{currency=\"{currency}\"}} {major}"
            );
            let _ = writeln!(
                out,
                "repayd_debited_minor_units{{currency=\"{currency}\"}} {minor}"
            );
        }
        header(
            out,
            "repayd_reminders",
            "gauge",
            "Customer emails (reminders and notices) in the database, by kind and state.",
        );
        for (kind, state, n) in &self.reminders {
            let _ = writeln!(
                out,
                "repayd_reminders{{kind=\"{}\",state=\"{}\"}} {n}",
                escape(kind),
                escape(state)
            );
        }
        header(
            out,
            "repayd_due_work_rows",
            "gauge",
            "Work rows whose time has come and that no worker has finished.",
        );
        header(
            out,
            "repayd_oldest_due_work_age_seconds",
            "gauge",
            "How long the oldest due, unprocessed work row has waited (0 when none).",
        );
        for (work, due) in [
            ("debit", &self.due_debits),
            ("reminder", &self.due_reminders),
        ] {
            let age = due
                .oldest_due_ms
                .map(|ms| ((now_ms - ms).max(0) as f64) / 1000.0)
                .unwrap_or(0.0);
            let _ = writeln!(out, "repayd_due_work_rows{{work=\"{work}\"}} {}", due.rows);
            let _ = writeln!(
                out,
                "repayd_oldest_due_work_age_seconds{{work=\"{work}\"}} {age}"
            );
        }
        if let Some(age) = self.tallies_age {
            header(
                out,
                "repayd_last_debit_succeeded_timestamp_seconds",
                "gauge",
                "When a debit last succeeded, Unix time (0 if none ever did).",
            );
            let _ = writeln!(
                out,
                "repayd_last_debit_succeeded_timestamp_seconds {}",
                self.last_debit_succeeded_ms
                    .map(|ms| ms as f64 / 1000.0)
                    .unwrap_or(0.0)
            );
            header(
                out,
                "repayd_database_tallies_age_seconds",
                "gauge",
                "How old the tallies over all history are (attempts in finished states, amounts debited, emails, last success, overdue): read in the background.",
            );
            let _ = writeln!(
                out,
                "repayd_database_tallies_age_seconds {:.3}",
                age.as_secs_f64()
            );
        }
        if let Some(buckets) = &self.overdue_by_bucket {
            header(
                out,
                "repayd_overdue_agreements",
                "gauge",
                "Agreements past due now, by delinquency bucket.",
            );
            for (bucket, n) in buckets {
                let _ = writeln!(
                    out,
                    "repayd_overdue_agreements{{bucket=\"{}\"}} {n}",
                    escape(bucket)
                );
            }
        }
    }
}

/// The last tallies read ([`DatabaseGauges::read_tallies`]) and when. A scrape serves
/// them as they are and, when they are older than `max(15 s, 20 x the last read's
/// duration)` and no read is under way, starts a new read in the background: a scrape
/// never waits for a scan of the whole history (beyond the first, which waits up to its
/// time limit), and the scans cost at most a twentieth of a core. A failed read is
/// logged and the previous tallies stay.
#[derive(Debug)]
struct TallyCache {
    latest: tokio::sync::watch::Sender<Option<Arc<Tallies>>>,
    reading: AtomicBool,
    min_interval: Duration,
}

#[derive(Debug)]
struct Tallies {
    gauges: DatabaseGauges,
    read_at: Instant,
    took: Duration,
}

impl Default for TallyCache {
    fn default() -> Self {
        Self {
            latest: tokio::sync::watch::Sender::new(None),
            reading: AtomicBool::new(false),
            min_interval: TALLY_MIN_INTERVAL,
        }
    }
}

impl Metrics {
    /// With the tallies read again as soon as `interval` has passed (15 s by default;
    /// still no sooner than 20 times the last read's duration): for tests.
    pub fn with_tally_min_interval(mut self, interval: Duration) -> Self {
        self.tallies.min_interval = interval;
        self
    }

    /// The database's gauges for a scrape: the tallies as last read (a new read started in
    /// the background when they are due one; before the first, waiting up to half of
    /// `wait` for it), with what is due and in flight read now. Errs, or times out after
    /// `wait`, only on the reading of now.
    pub async fn database_gauges(
        self: &Arc<Self>,
        store: &Store,
        now: DateTime<Utc>,
        wait: Duration,
    ) -> Result<DatabaseGauges, String> {
        let current = self.tallies.latest.borrow().clone();
        let due_again = current.as_ref().is_none_or(|t| {
            t.read_at.elapsed() >= self.tallies.min_interval.max(t.took * TALLY_SPACING)
        });
        if due_again && !self.tallies.reading.swap(true, Ordering::AcqRel) {
            let metrics = Arc::clone(self);
            let store = store.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                match DatabaseGauges::read_tallies(&store).await {
                    Ok(gauges) => {
                        metrics.tallies.latest.send_replace(Some(Arc::new(Tallies {
                            gauges,
                            read_at: Instant::now(),
                            took: began.elapsed(),
                        })));
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics: cannot read the tallies"),
                }
                metrics.tallies.reading.store(false, Ordering::Release);
            });
        }
        let current = match current {
            Some(t) => Some(t),
            None => {
                // The first scrape waits for half its time limit at most (the rest of
                // the read goes on, for the next scrape); what is due is read anyway.
                let mut first = self.tallies.latest.subscribe();
                tokio::time::timeout(wait / 2, first.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(|r| r.ok().and_then(|t| t.clone()))
            }
        };
        let base = match &current {
            Some(t) => DatabaseGauges {
                tallies_age: Some(t.read_at.elapsed()),
                ..t.gauges.clone()
            },
            None => DatabaseGauges::default(),
        };
        tokio::time::timeout(wait, base.read_live(store, now))
            .await
            .map_err(|_| format!("no answer within {} s", wait.as_secs()))?
            .map_err(|e| e.to_string())
    }
}

/// A gateway that times every call and counts debit outcomes, then answers as `inner`.
#[derive(Debug)]
pub struct MeteredGateway {
    inner: Arc<dyn PaymentGateway>,
    metrics: Arc<Metrics>,
}

impl MeteredGateway {
    pub fn new(inner: Arc<dyn PaymentGateway>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl PaymentGateway for MeteredGateway {
    async fn check_funds(
        &self,
        account_ref: &str,
        amount: &Money,
    ) -> Result<FundsAnswer, GatewayError> {
        let started = Instant::now();
        let answer = self.inner.check_funds(account_ref, amount).await;
        self.metrics
            .observe_gateway("check_funds", answer.is_ok(), started.elapsed());
        answer
    }

    async fn debit(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        let started = Instant::now();
        let outcome = self.inner.debit(request).await;
        self.metrics
            .observe_gateway("debit", outcome.is_ok(), started.elapsed());
        self.metrics.count_debit_outcome(match &outcome {
            Ok(DebitOutcome::Succeeded { .. }) => "succeeded",
            Ok(DebitOutcome::Pending { .. }) => "pending",
            Ok(DebitOutcome::Declined { hard: false, .. }) => "declined_soft",
            Ok(DebitOutcome::Declined { hard: true, .. }) => "declined_hard",
            Err(_) => "error",
        });
        outcome
    }

    async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, GatewayError> {
        let started = Instant::now();
        let outcome = self.inner.lookup(idempotency_key).await;
        self.metrics
            .observe_gateway("lookup", outcome.is_ok(), started.elapsed());
        outcome
    }

    // Forwarded explicitly: the trait's default (no feed) would hide the bank's returns
    // feed from the daemon, which always talks to the bank through this wrapper.
    async fn returns_after(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Option<ReturnsPage>, GatewayError> {
        let started = Instant::now();
        let page = self.inner.returns_after(cursor, limit).await;
        self.metrics
            .observe_gateway("returns", page.is_ok(), started.elapsed());
        page
    }
}

/// A mailer that times every send, then behaves as `inner`.
#[derive(Debug)]
pub struct MeteredMailer {
    inner: Arc<dyn Mailer>,
    metrics: Arc<Metrics>,
}

impl MeteredMailer {
    pub fn new(inner: Arc<dyn Mailer>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait::async_trait]
impl Mailer for MeteredMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let started = Instant::now();
        let sent = self.inner.send(email).await;
        self.metrics.observe_mail(sent.is_ok(), started.elapsed());
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled() {
        let metrics = Metrics::new();
        metrics.observe_gateway("debit", true, Duration::from_millis(30));
        metrics.observe_gateway("debit", true, Duration::from_millis(300));
        metrics.observe_gateway("debit", true, Duration::from_secs(60));
        let mut out = String::new();
        metrics.render_process(&mut out);
        let line = |prefix: &str| {
            out.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix} in\n{out}"))
                .to_string()
        };
        let bucket =
            "repayd_gateway_request_duration_seconds_bucket{operation=\"debit\",result=\"ok\",";
        assert_eq!(
            line(&format!("{bucket}le=\"0.025\"}}")),
            format!("{bucket}le=\"0.025\"}} 0")
        );
        assert_eq!(
            line(&format!("{bucket}le=\"0.05\"}}")),
            format!("{bucket}le=\"0.05\"}} 1")
        );
        assert_eq!(
            line(&format!("{bucket}le=\"0.5\"}}")),
            format!("{bucket}le=\"0.5\"}} 2")
        );
        assert_eq!(
            line(&format!("{bucket}le=\"30\"}}")),
            format!("{bucket}le=\"30\"}} 2")
        );
        assert_eq!(
            line(&format!("{bucket}le=\"+Inf\"}}")),
            format!("{bucket}le=\"+Inf\"}} 3")
        );
        assert!(out.contains(
            "repayd_gateway_request_duration_seconds_count{operation=\"debit\",result=\"ok\"} 3"
        ));
        assert!(out.contains("repayd_mail_send_duration_seconds_count{result=\"ok\"} 0"));
        assert!(out.contains("repayd_gateway_debit_outcomes_total{outcome=\"declined_hard\"} 0"));
    }

    #[test]
    fn database_gauges_render_every_state_and_amounts_in_both_units() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let gauges = DatabaseGauges {
            attempts: vec![("succeeded".into(), 3)],
            debited_minor: vec![("CNY".into(), 123_456), ("JPY".into(), 500)],
            reminders: vec![("upcoming".into(), "sent".into(), 2)],
            due_debits: DueWork {
                rows: 2,
                oldest_due_ms: Some(to_epoch_ms(now) - 90_000),
            },
            due_reminders: DueWork::default(),
            last_debit_succeeded_ms: Some(to_epoch_ms(now)),
            overdue_by_bucket: None,
            tallies_age: Some(Duration::from_millis(1500)),
        };
        let mut out = String::new();
        gauges.render(&mut out, now);
        assert!(out.contains("repayd_debit_attempts{state=\"succeeded\"} 3\n"));
        assert!(out.contains("repayd_debit_attempts{state=\"unknown\"} 0\n"));
        assert!(out.contains("repayd_debited_amount{currency=\"CNY\"} 1234.56\n"));
        assert!(out.contains("repayd_debited_minor_units{currency=\"CNY\"} 123456\n"));
        assert!(out.contains("repayd_debited_amount{currency=\"JPY\"} 500\n"));
        assert!(out.contains("repayd_reminders{kind=\"upcoming\",state=\"sent\"} 2\n"));
        assert!(out.contains("repayd_oldest_due_work_age_seconds{work=\"debit\"} 90\n"));
        assert!(out.contains("repayd_oldest_due_work_age_seconds{work=\"reminder\"} 0\n"));
        assert!(!out.contains("repayd_overdue_agreements"));
        assert!(out.contains("repayd_database_tallies_age_seconds 1.500\n"));

        // Before the first tallies: the open states only, no finished state shown as 0.
        let first = DatabaseGauges {
            attempts: vec![("scheduled".into(), 4)],
            tallies_age: None,
            ..DatabaseGauges::default()
        };
        let mut out = String::new();
        first.render(&mut out, now);
        assert!(out.contains("repayd_debit_attempts{state=\"scheduled\"} 4\n"));
        assert!(out.contains("repayd_debit_attempts{state=\"unknown\"} 0\n"));
        assert!(!out.contains("state=\"succeeded\""), "{out}");
        assert!(!out.contains("repayd_last_debit_succeeded_timestamp_seconds "));
        assert!(!out.contains("repayd_database_tallies_age_seconds "));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
