//! The daemon's work: the planner turns installments into debit attempts (rows, not
//! timers), the debit worker claims due attempts and carries each through funds check,
//! debit and outcome, and the reconciler settles unknown and pending outcomes by
//! idempotency key. [`daemon`] runs them under cron triggers and signals.

pub mod alerts;
pub mod conversation;
pub mod daemon;
pub mod debit;
pub mod operator;
pub mod overdue;
mod payday;
pub mod permits;
pub mod policy;
pub mod reminders;
pub mod returns;

use crate::clock::{Clock, to_epoch_ms};
use crate::gateway::PaymentGateway;
use crate::store::{Lane, NewEvent, Store, StoreError};
use chrono::{Datelike, Duration, NaiveDate};
use chrono_tz::Tz;
use policy::EnginePolicy;
use std::collections::HashMap;
use std::sync::Arc;

pub use policy::{DebitPolicy, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored data is not usable: {0}")]
    Data(String),
    /// The gateway could not answer now (returns feed); tried again on the next poll.
    #[error("gateway: {0}")]
    Gateway(String),
}

impl EngineError {
    /// Retryable errors are worth another go on the next tick; fatal ones need a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_retryable() || matches!(e, StoreError::Fenced { .. }),
            EngineError::Data(_) => false,
            EngineError::Gateway(_) => true,
        }
    }
}

/// Installments per planner page at most: one read and one short write transaction (so
/// debits are never held up behind the planner for long).
pub(crate) const PLAN_PAGE: i64 = 5000;

/// Installment ids per planner read at most: bounds the rows a read scans when few of
/// them need planning.
pub(crate) const PLAN_WINDOW: i64 = 50_000;

/// What one planner run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PlanReport {
    pub examined: u64,
    pub attempts_created: u64,
    pub reminders_created: u64,
    /// Whether this run logged the daily warning about due dates outside the calendar.
    pub calendar_warning: bool,
}

/// What one pass over due work did, by outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub claimed: u64,
    pub succeeded: u64,
    pub insufficient_funds: u64,
    pub declined: u64,
    pub unknown: u64,
    pub pending: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub rescheduled: u64,
    /// Refused by the gateway before acting (4xx that needs a human): stopped.
    pub rejected: u64,
    pub lost_lease: u64,
}

/// The engine: cheap to share (`Arc`), safe to run in several tasks and processes.
#[derive(Debug)]
pub struct Engine {
    pub(crate) store: Store,
    /// The store of the customer-message loop ([`Lane::Messages`]): on PostgreSQL its
    /// own connections, so a due day's debits do not hold every one of them.
    pub(crate) messages: Store,
    pub(crate) gateway: Arc<dyn PaymentGateway>,
    /// The debit loop's requests at the gateway at once (`debit.max_in_flight`).
    pub(crate) gateway_permits: permits::GatewayPermits,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: std::sync::RwLock<Arc<EnginePolicy>>,
    /// This worker's name in leases: host, process and a random part.
    pub(crate) owner: String,
    /// Customer email; without it no reminders are planned or sent.
    pub(crate) mail: Option<MailDeps>,
    /// The database's deployment id (see [`Store::deployment_id`]), read once.
    pub(crate) deployment: tokio::sync::OnceCell<String>,
    /// Operations were told that the gateway refuses look-ups (401/403); cleared by the
    /// next answered look-up, so a new episode is told again.
    pub(crate) lookup_refusal_reported: std::sync::atomic::AtomicBool,
    /// The holiday calendar's years, when one is configured: the planner warns (once
    /// per day) about due dates outside them.
    pub(crate) calendar: std::sync::RwLock<Option<CalendarCoverage>>,
    /// Installments per planner page and ids per planner read ([`PLAN_PAGE`],
    /// [`PLAN_WINDOW`]; smaller in tests, so that a small portfolio takes many pages).
    pub(crate) plan_page_sizes: (i64, i64),
}

/// The years a configured holiday calendar covers, and the last day the planner warned
/// that a due date lies outside them.
#[derive(Debug, Clone)]
pub struct CalendarCoverage {
    pub name: String,
    pub years: std::collections::BTreeSet<i32>,
    warned_on: Option<NaiveDate>,
    /// The calendar itself: its business days place payday-aware retries.
    pub calendar: Arc<crate::domain::HolidayCalendar>,
}

impl CalendarCoverage {
    pub fn of(calendar: &crate::domain::HolidayCalendar) -> Self {
        Self {
            name: calendar.name.clone(),
            years: calendar.years.clone(),
            warned_on: None,
            calendar: Arc::new(calendar.clone()),
        }
    }
}

/// What the engine needs to email customers.
#[derive(Debug)]
pub struct MailDeps {
    pub mailer: Arc<dyn crate::mail::Mailer>,
    /// Replaced whole on reload; a send in progress keeps the set it started with.
    pub templates: std::sync::RwLock<Arc<crate::mail::Templates>>,
    pub settings: crate::mail::MailSettings,
}

impl MailDeps {
    pub fn new(
        mailer: Arc<dyn crate::mail::Mailer>,
        templates: crate::mail::Templates,
        settings: crate::mail::MailSettings,
    ) -> Self {
        Self {
            mailer,
            templates: std::sync::RwLock::new(Arc::new(templates)),
            settings,
        }
    }

    pub fn templates(&self) -> Arc<crate::mail::Templates> {
        self.templates
            .read()
            .expect("templates lock poisoned")
            .clone()
    }

    pub fn set_templates(&self, templates: crate::mail::Templates) {
        *self.templates.write().expect("templates lock poisoned") = Arc::new(templates);
    }
}

impl Engine {
    pub fn new(
        store: Store,
        gateway: Arc<dyn PaymentGateway>,
        clock: Arc<dyn Clock>,
        policy: EnginePolicy,
        owner: impl Into<String>,
    ) -> Self {
        Self {
            messages: store.lane(Lane::Messages),
            store,
            gateway,
            gateway_permits: permits::GatewayPermits::new(policy.debit.max_in_flight),
            clock,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            owner: owner.into(),
            mail: None,
            deployment: tokio::sync::OnceCell::new(),
            lookup_refusal_reported: std::sync::atomic::AtomicBool::new(false),
            calendar: std::sync::RwLock::new(None),
            plan_page_sizes: (PLAN_PAGE, PLAN_WINDOW),
        }
    }

    /// Planner pages of at most `page` installments, each read over at most `window`
    /// installment ids (tests: a small portfolio then takes many pages).
    #[doc(hidden)]
    pub fn with_plan_pages(mut self, page: i64, window: i64) -> Self {
        self.plan_page_sizes = (page.max(1), window.max(1));
        self
    }

    /// The configured holiday calendar (weekends only without one).
    pub fn business_days(&self) -> Arc<crate::domain::HolidayCalendar> {
        self.calendar
            .read()
            .expect("calendar lock poisoned")
            .as_ref()
            .map(|c| Arc::clone(&c.calendar))
            .unwrap_or_default()
    }

    /// Sets (or, on reload, replaces) the configured holiday calendar's coverage.
    pub fn set_calendar(&self, calendar: Option<&crate::domain::HolidayCalendar>) {
        *self.calendar.write().expect("calendar lock poisoned") =
            calendar.map(CalendarCoverage::of);
    }

    /// Logs a warning, at most once per UTC day, while the due dates the planner works
    /// on (from today to the latest unpaid one within the horizon) reach into a year the
    /// configured calendar does not cover (those dates got weekends-only treatment).
    /// Returns whether it warned.
    async fn check_calendar_coverage(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        horizon: &str,
    ) -> Result<bool, EngineError> {
        let today = now.date_naive();
        let years = match self
            .calendar
            .read()
            .expect("calendar lock poisoned")
            .as_ref()
        {
            Some(cov) if cov.warned_on != Some(today) => cov.years.clone(),
            _ => return Ok(false),
        };
        let Some(latest) = self.store.latest_unpaid_due_date(horizon).await? else {
            return Ok(false);
        };
        let latest = parse_date(&latest)?;
        let uncovered: Vec<i32> = (today.year().min(latest.year())..=latest.year())
            .filter(|y| !years.contains(y))
            .collect();
        if uncovered.is_empty() {
            return Ok(false);
        }
        let mut guard = self.calendar.write().expect("calendar lock poisoned");
        let Some(cov) = guard.as_mut() else {
            return Ok(false);
        };
        if cov.warned_on == Some(today) {
            return Ok(false);
        }
        cov.warned_on = Some(today);
        tracing::warn!(
            calendar = %cov.name,
            calendar_years = ?cov.years,
            uncovered_years = ?uncovered,
            latest_due_date = %latest,
            "planned due dates lie outside every loaded holiday calendar's years: public \
             holidays there are unknown (weekends only); add that year's calendar file \
             (schedule.calendar may name a directory of them)"
        );
        Ok(true)
    }

    /// Enables customer email: pre-due reminders, receipts and failure notices.
    pub fn with_mail(mut self, mail: MailDeps) -> Self {
        self.mail = Some(mail);
        self
    }

    pub fn mail(&self) -> Option<&MailDeps> {
        self.mail.as_ref()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn policy(&self) -> Arc<EnginePolicy> {
        self.policy.read().expect("policy lock poisoned").clone()
    }

    /// Replaces the policy (SIGHUP); work in flight keeps the one it started with.
    pub fn set_policy(&self, policy: EnginePolicy) {
        self.gateway_permits.resize(policy.debit.max_in_flight);
        *self.policy.write().expect("policy lock poisoned") = Arc::new(policy);
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The idempotency key of an attempt: deterministic, so a crash between committing
    /// the attempt and calling the gateway can never produce a second, different key; and
    /// carrying the database's deployment id, so a second database (or a recreated one)
    /// never sends a bank a key it has seen for another debit.
    pub fn idempotency_key(
        prefix: &str,
        deployment: &str,
        installment_id: i64,
        attempt_no: i64,
    ) -> String {
        format!("{prefix}-{deployment}-i{installment_id}-a{attempt_no}")
    }

    /// This database's deployment id, read once and kept.
    pub async fn deployment_id(&self) -> Result<&str, EngineError> {
        let id = self
            .deployment
            .get_or_try_init(|| self.store.deployment_id())
            .await?;
        Ok(id.as_str())
    }

    /// Materializes attempt 1 for every unpaid installment of an active agreement that
    /// falls due within the horizon, and (with mail) its pre-due reminders. Idempotent:
    /// the unique (installment, attempt) and (installment, kind, offset) pairs and the
    /// NOT EXISTS filters make a second run create nothing.
    ///
    /// A pass walks the installments in id order, a page at a time, each page one read
    /// and one write transaction (see [`crate::store::planner`] for why id order). The
    /// local times depend only on (due date, time zone), so they are computed once per
    /// pair, not per row.
    #[tracing::instrument(skip_all, fields(owner = %self.owner))]
    pub async fn plan(&self) -> Result<PlanReport, EngineError> {
        let policy = self.policy();
        let now = self.clock.now();
        let now_ms = to_epoch_ms(now);
        // One day of margin: the horizon is in local dates, and time zones run ahead of UTC.
        let horizon = (now + Duration::days(i64::from(policy.debit.horizon_days) + 1))
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        let deployment = self.deployment_id().await?;
        // The claim indexes (by scheduled time) take the page's rows at a few hundred
        // places each; a larger page cache keeps those leaves between pages.
        self.store.planning_cache(true).await?;
        let planned = self.plan_pages(&policy, now_ms, &horizon, deployment).await;
        self.store.planning_cache(false).await?;
        let mut report = planned?;
        report.calendar_warning = self.check_calendar_coverage(now, &horizon).await?;
        if report.attempts_created > 0 || report.reminders_created > 0 {
            tracing::info!(
                debit_attempts = report.attempts_created,
                reminders = report.reminders_created,
                examined = report.examined,
                "planned work"
            );
        }
        Ok(report)
    }

    /// The pages of a pass. While one page is written (the writer), the next one is read
    /// and its rows built (a reader and this task): the two run at once on separate
    /// connections, so a pass takes about the longer of the two instead of their sum.
    /// The pages' id ranges do not overlap, so what one writes cannot change what the
    /// next reads.
    async fn plan_pages(
        &self,
        policy: &EnginePolicy,
        now_ms: i64,
        horizon: &str,
        deployment: &str,
    ) -> Result<PlanReport, EngineError> {
        let mut report = PlanReport::default();
        let mut times: HashMap<(String, String), Arc<PlanTimes>> = HashMap::new();
        let pass = PlanPass {
            policy,
            now_ms,
            horizon,
            deployment,
            with_reminders: self.mail.is_some(),
            last: self.store.last_installment_id().await?,
        };
        // The tables the pass fills get fresh statistics as they grow (at 10,000 rows
        // created, then each time the count doubles), not only after the pass: PostgreSQL
        // plans the debits running beside a long first pass with the statistics of the
        // tables before it, and took the partial claim index for a few rows; each
        // successful debit's cancelling of the installment's reminders then read every
        // pending reminder (1-2 s a statement, 12 debits/s instead of 194 while a pass over
        // 100,000 x 12 ran).
        let mut refresh_at = daemon::STATISTICS_STALE_ROWS;
        let mut page = self.plan_page(&pass, 0, &mut times).await?;
        while let Some(current) = page.take() {
            report.examined += current.examined;
            let write = async {
                self.store
                    .insert_plan(&current.attempts, &current.reminders, now_ms)
                    .await
                    .map_err(EngineError::from)
            };
            let (written, next) =
                tokio::try_join!(write, self.plan_page(&pass, current.after, &mut times))?;
            report.attempts_created += written.attempts;
            report.reminders_created += written.reminders;
            let created = report.attempts_created + report.reminders_created;
            if created >= refresh_at {
                refresh_at = created.saturating_mul(2);
                if let Err(e) = self.store.refresh_planned_statistics().await {
                    tracing::warn!(error = %e, "refreshing the statistics of planned work failed");
                }
            }
            page = next;
        }
        Ok(report)
    }

    /// Reads the page of installments after id `after` and builds its rows; `None` once
    /// the pass is past the last installment.
    async fn plan_page(
        &self,
        pass: &PlanPass<'_>,
        after: i64,
        times: &mut HashMap<(String, String), Arc<PlanTimes>>,
    ) -> Result<Option<PlanPage>, EngineError> {
        if after >= pass.last {
            return Ok(None);
        }
        let policy = pass.policy;
        let (page_rows, window) = self.plan_page_sizes;
        let upto = after.saturating_add(window).min(pass.last);
        let batch = self
            .store
            .plan_candidates(pass.horizon, after, upto, page_rows, pass.with_reminders)
            .await?;
        let mut page = PlanPage {
            after: match batch.last() {
                Some(c) if batch.len() as i64 >= page_rows => c.installment_id,
                _ => upto,
            },
            examined: batch.len() as u64,
            attempts: Vec::new(),
            reminders: Vec::new(),
        };
        for c in batch {
            let key = (c.due_date, c.time_zone);
            let t = match times.get(&key) {
                Some(t) => Arc::clone(t),
                None => {
                    let t = Arc::new(PlanTimes::new(policy, &key.0, &key.1)?);
                    times.insert(key.clone(), Arc::clone(&t));
                    t
                }
            };
            let (due_date, _) = key;
            if c.needs_reminders {
                for (offset, at_ms) in &t.reminders {
                    page.reminders.push((
                        crate::store::reminders::NewReminder {
                            installment_id: c.installment_id,
                            agreement_id: c.agreement_id,
                            kind: "upcoming",
                            offset_key: *offset,
                            scheduled_at_ms: *at_ms,
                            detail: serde_json::json!({}),
                        },
                        c.customer_id,
                    ));
                }
            }
            if !c.needs_attempt {
                continue;
            }
            let attempt = crate::store::debits::NewAttempt {
                installment_id: c.installment_id,
                agreement_id: c.agreement_id,
                attempt_no: 1,
                idempotency_key: Self::idempotency_key(
                    &policy.debit.key_prefix,
                    pass.deployment,
                    c.installment_id,
                    1,
                ),
                scheduled_at_ms: t.debit_ms,
                amount_minor: c.total_minor - c.paid_minor,
                currency: c.currency,
                retry_reason: None,
            };
            let event = NewEvent {
                at_ms: pass.now_ms,
                kind: "debit_attempt_planned",
                agreement_id: Some(c.agreement_id),
                installment_id: Some(c.installment_id),
                attempt_id: None,
                detail: serde_json::json!({
                    "attempt_no": 1,
                    "seq": c.seq,
                    "due_date": due_date,
                    "scheduled_at": t.debit_rfc3339,
                    "amount_minor": attempt.amount_minor,
                    "currency": attempt.currency,
                    "reason": "due",
                }),
            };
            page.attempts.push((attempt, event));
        }
        Ok(Some(page))
    }
}

/// What stays the same for every page of one planning pass.
struct PlanPass<'a> {
    policy: &'a EnginePolicy,
    now_ms: i64,
    horizon: &'a str,
    deployment: &'a str,
    with_reminders: bool,
    /// The highest installment id when the pass began: where it stops.
    last: i64,
}

/// One page's rows, ready to write.
struct PlanPage {
    /// The id the next page starts after.
    after: i64,
    examined: u64,
    attempts: Vec<(crate::store::debits::NewAttempt, NewEvent)>,
    reminders: Vec<(crate::store::reminders::NewReminder, i64)>,
}

/// The instants planned for installments due on one local date in one time zone.
struct PlanTimes {
    /// The first debit attempt: the due date at the debit's local time.
    debit_ms: i64,
    debit_rfc3339: String,
    /// The pre-due reminders: (offset in days, instant).
    reminders: Vec<(i64, i64)>,
}

impl PlanTimes {
    fn new(policy: &EnginePolicy, due_date: &str, time_zone: &str) -> Result<Self, EngineError> {
        let tz = parse_tz(time_zone)?;
        let due = parse_date(due_date)?;
        let at = crate::domain::worktime::local_instant(due, policy.debit.local_time, tz);
        Ok(Self {
            debit_ms: to_epoch_ms(at),
            debit_rfc3339: at.to_rfc3339(),
            reminders: reminders::upcoming_times(policy, due, tz),
        })
    }
}

pub(crate) fn parse_tz(name: &str) -> Result<Tz, EngineError> {
    name.parse::<Tz>()
        .map_err(|_| EngineError::Data(format!("unknown time zone {name:?} in the database")))
}

pub(crate) fn parse_date(text: &str) -> Result<NaiveDate, EngineError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| EngineError::Data(format!("bad due date {text:?} in the database")))
}
