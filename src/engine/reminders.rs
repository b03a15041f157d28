//! Customer emails as work: the planner materializes pre-due reminders (one per
//! installment and offset) at the configured local time, moved out of quiet hours; the
//! sender claims due rows, decides whether each is still useful, runs a funds check for
//! pre-due reminders so the email can say whether the account holds enough, renders the
//! customer's language, and sends with a deterministic Message-ID. A crash between the
//! SMTP server's accept and the commit can repeat a message once, with the same id.

use super::conversation::Verdict;
use super::policy::PAYDAY_REASON_PREFIX;
use super::{Engine, EngineError, parse_date, parse_tz};
use crate::clock::{from_epoch_ms, to_epoch_ms};
use crate::domain::{Currency, Money, worktime};
use crate::gateway::FundsAnswer;
use crate::mail::{
    ChargeLine, DebitFailure, EmailKind, Locale, MailError, RenderedEmail, TemplateContext,
};
use crate::mask;
use crate::store::NewEvent;
use crate::store::reminders::{ReminderChange, ReminderContext, ReminderOutcome, ReminderRow};
use chrono::Duration;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What one pass over due reminders did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReminderReport {
    pub claimed: u64,
    pub sent: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub deferred: u64,
}

impl ReminderReport {
    fn add(&mut self, other: &ReminderReport) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.cancelled += other.cancelled;
        self.failed += other.failed;
        self.deferred += other.deferred;
    }
}

fn join_error(e: tokio::task::JoinError) -> EngineError {
    EngineError::Data(format!("a message task ended abnormally: {e}"))
}

/// What one customer's task hands back: its report, and the messages it merged into
/// its emails (rows of that customer claimed meanwhile and waiting their turn are done
/// if they are among them).
type GroupDone = (i64, ReminderReport, std::collections::HashSet<i64>);

/// A message that passed the gate, with what it will say.
pub(crate) struct Ready {
    r: ReminderRow,
    ctx: ReminderContext,
    kind: EmailKind,
    locale: Locale,
    tc: TemplateContext,
    funds: &'static str,
    tz: chrono_tz::Tz,
}

enum Prepared {
    Ready(Box<Ready>),
    Done(Sent),
}

enum Rendering {
    Whole(RenderedEmail),
    Part(crate::mail::DigestPart),
}

/// The order of the sections of a merged email: what needs the customer to act first.
fn urgency(kind: EmailKind) -> u8 {
    match kind {
        EmailKind::CreditWarning => 0,
        EmailKind::MandateNotice => 1,
        EmailKind::DebitReturned => 1,
        EmailKind::Overdue => 2,
        EmailKind::DebitFailed => 3,
        EmailKind::BalanceLow => 4,
        EmailKind::Upcoming => 5,
        EmailKind::ScheduleChanged => 6,
        EmailKind::DebitSucceeded => 7,
    }
}

pub(crate) enum Sent {
    Delivered,
    Cancelled,
    Failed,
    Deferred,
}

/// When the pre-due reminders of an installment due on `due` (local date in `tz`) go
/// out: for each configured offset, that many days before, at the reminders' local time,
/// moved out of quiet hours. `(offset in days, UTC epoch ms)`.
pub(crate) fn upcoming_times(
    policy: &super::policy::EnginePolicy,
    due: chrono::NaiveDate,
    tz: chrono_tz::Tz,
) -> Vec<(i64, i64)> {
    policy
        .reminders
        .offsets_days
        .iter()
        .map(|days| {
            let day = due - Duration::days(i64::from(*days));
            let at = worktime::local_instant(day, policy.reminders.local_time, tz);
            let at = policy.reminders.quiet.next_allowed(at, tz);
            (i64::from(*days), to_epoch_ms(at))
        })
        .collect()
}

impl Engine {
    /// Claims and sends due reminders until none is due or `shutdown` fires; what is
    /// claimed is always finished (sent, deferred or cancelled, and recorded) before this
    /// returns.
    ///
    /// A bounded pipeline, like the debits' (`run_due`): up to `reminders.max_in_flight`
    /// customers at once, each customer's messages one after another, in order (merging,
    /// supersession and the daily budget are per customer, and each message's outcome is
    /// committed before the customer's next one is decided); as customers finish, more
    /// rows are claimed. A row claimed for a customer whose task is running waits for
    /// it. On SQLite every outcome joins the writer's group commit, so the commits of the
    /// messages in flight share their fsyncs; the SMTP transport has its own pool and
    /// rate limit.
    pub async fn run_reminders(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Result<ReminderReport, EngineError> {
        use std::collections::{HashMap, VecDeque};
        let mut report = ReminderReport::default();
        if self.mail.is_none() {
            return Ok(report);
        }
        let mut running: tokio::task::JoinSet<GroupDone> = tokio::task::JoinSet::new();
        // Customers with a running task, and their rows claimed since, in order.
        let mut busy: HashMap<i64, Vec<ReminderRow>> = HashMap::new();
        // Customers ready to start, in the order their first row was claimed.
        let mut ready: VecDeque<(i64, Vec<ReminderRow>)> = VecDeque::new();
        let mut drained = false;
        let mut failure = None;
        loop {
            let policy = self.policy();
            let max_in_flight = policy.reminders.max_in_flight.max(1) as usize;
            while running.len() < max_in_flight
                && let Some((customer, group)) = ready.pop_front()
            {
                busy.insert(customer, Vec::new());
                let engine = Arc::clone(self);
                running.spawn(async move { engine.send_customer_group(customer, group).await });
            }
            if !drained && ready.is_empty() && running.len() < max_in_flight {
                if shutdown.is_cancelled() {
                    drained = true;
                    continue;
                }
                let want = i64::from(policy.debit.batch_size.max(1));
                let now = self.clock.now();
                let claimed = self
                    .messages
                    .claim_due_reminders(
                        &self.owner,
                        to_epoch_ms(now),
                        to_epoch_ms(now + policy.debit.lease),
                        want,
                    )
                    .await;
                match claimed {
                    Ok(batch) => {
                        // Fewer than asked: nothing else is due now.
                        drained = (batch.len() as i64) < want;
                        report.claimed += batch.len() as u64;
                        for reminder in batch {
                            let customer = reminder.customer_id;
                            if let Some(waiting) = busy.get_mut(&customer) {
                                waiting.push(reminder);
                            } else if let Some((_, group)) =
                                ready.iter_mut().find(|(c, _)| *c == customer)
                            {
                                group.push(reminder);
                            } else {
                                ready.push_back((customer, vec![reminder]));
                            }
                        }
                        if !ready.is_empty() {
                            continue;
                        }
                    }
                    Err(e) => {
                        // What is claimed is finished before the error is reported.
                        drained = true;
                        failure = Some(e);
                    }
                }
            }
            match running.join_next().await {
                Some(done) => {
                    let (customer, done, merged) = done.map_err(join_error)?;
                    report.add(&done);
                    let waiting = busy.remove(&customer).unwrap_or_default();
                    let waiting: Vec<ReminderRow> = waiting
                        .into_iter()
                        .filter(|r| !merged.contains(&r.id))
                        .collect();
                    if !waiting.is_empty() {
                        // Its turn comes before customers claimed after it.
                        ready.push_front((customer, waiting));
                    }
                }
                None if ready.is_empty() && (drained || shutdown.is_cancelled()) => break,
                None => {}
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    /// Sends one customer's claimed messages in order; a message merged into an earlier
    /// one is done already.
    async fn send_customer_group(&self, customer: i64, group: Vec<ReminderRow>) -> GroupDone {
        let mut report = ReminderReport::default();
        let mut merged = std::collections::HashSet::new();
        for reminder in group {
            if merged.contains(&reminder.id) {
                continue;
            }
            let span = tracing::info_span!(
                "reminder",
                reminder_id = reminder.id,
                agreement_id = reminder.agreement_id,
                installment_id = reminder.installment_id,
                kind = %reminder.kind,
                offset = reminder.offset_key,
            );
            match self.send_one(&reminder, &mut merged).instrument(span).await {
                Ok(Sent::Delivered) => report.sent += 1,
                Ok(Sent::Cancelled) => report.cancelled += 1,
                Ok(Sent::Failed) => report.failed += 1,
                Ok(Sent::Deferred) => report.deferred += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "reminder interrupted; it is picked up again when its lease expires")
                }
            }
        }
        (customer, report, merged)
    }

    /// Sends one due message, merged with the customer's other messages due within the
    /// merge window (see [`super::conversation`]).
    async fn send_one(
        &self,
        r: &ReminderRow,
        merged: &mut std::collections::HashSet<i64>,
    ) -> Result<Sent, EngineError> {
        // What the sections of one email already asked the bank about, per account: a
        // section says "enough" only if the account covers it and the sections before it.
        let mut asked = std::collections::HashMap::new();
        let first = match self.prepare(r, false, &mut asked).await? {
            Prepared::Done(sent) => return Ok(sent),
            Prepared::Ready(ready) => ready,
        };
        let policy = self.policy();
        let now = self.clock.now();
        let mut parts = vec![*first];
        if policy.reminders.merge_window > Duration::zero() {
            let companions = self
                .messages
                .claim_customer_messages(
                    parts[0].ctx.customer_id,
                    r.id,
                    &self.owner,
                    to_epoch_ms(now),
                    to_epoch_ms(now + policy.reminders.merge_window),
                    to_epoch_ms(now + policy.debit.lease),
                )
                .await?;
            for c in companions {
                merged.insert(c.id);
                match self.prepare(&c, true, &mut asked).await {
                    Ok(Prepared::Ready(ready)) => parts.push(*ready),
                    Ok(Prepared::Done(_)) => {}
                    Err(e) => {
                        tracing::warn!(reminder_id = c.id, error = %e, "message to merge interrupted; it is picked up again when its lease expires")
                    }
                }
            }
        }
        self.deliver(parts).await
    }

    /// Runs the gate for one claimed message and, if it may go, builds what it will say
    /// from the ledger now. A `companion` is merged into another email, which alone
    /// counts against the customer's daily budget.
    async fn prepare(
        &self,
        r: &ReminderRow,
        companion: bool,
        asked: &mut std::collections::HashMap<(String, String), i64>,
    ) -> Result<Prepared, EngineError> {
        let mail = self.mail.as_ref().expect("checked by run_reminders");
        let ctx = self.messages.reminder_context(r.id).await?;
        let now = self.clock.now();
        let now_ms = to_epoch_ms(now);
        let tz = parse_tz(&ctx.time_zone)?;
        let currency =
            Currency::parse(&ctx.currency).map_err(|e| EngineError::Data(e.to_string()))?;
        let locale = Locale::from_tag(&ctx.locale);
        let policy = self.policy();
        let due = parse_date(&ctx.due_date)?;
        let today = worktime::local_date(now, tz);
        let debit_at = worktime::local_instant(due, policy.debit.local_time, tz);
        let owed = ctx.total_minor - ctx.paid_minor;
        let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();

        // Overdue escalations speak of the agreement's current delinquency state.
        let delinquency = if matches!(r.kind.as_str(), "overdue" | "credit_warning") {
            self.messages.delinquency(r.agreement_id).await?
        } else {
            None
        };

        // The gate: quiet hours now, truth now, then the customer's conversation.
        let verdict = match self
            .stale_reason(r, &ctx, delinquency.as_ref(), now, debit_at)
            .await?
        {
            Some(reason) => Verdict::Cancel(reason),
            None => self.conversation_gate(r, &ctx, now, tz, companion).await?,
        };
        match verdict {
            Verdict::Send => {}
            Verdict::Cancel(reason) => {
                return Ok(Prepared::Done(
                    self.cancel_message(r, &reason, now_ms).await?,
                ));
            }
            Verdict::Defer(at, reason) => {
                return Ok(Prepared::Done(
                    self.defer_message(r, at, &reason, now).await?,
                ));
            }
        }

        // What the email asserts, read from the ledger now. A receipt speaks of the
        // payment and the balance left (in the context), never of arrears or charges: two
        // reads fewer on every debit.
        let ledger = if r.kind == "debit_succeeded" {
            crate::store::conversation::AgreementLedger::default()
        } else {
            self.messages
                .agreement_ledger(r.agreement_id, &today.format("%Y-%m-%d").to_string())
                .await?
        };
        let this_in_arrears = due < today && owed > 0;
        let arrears_other = ledger.arrears_minor - if this_in_arrears { owed } else { 0 };
        let charges_minor = ledger.charges_minor();
        let total_due = owed + arrears_other + charges_minor;

        let mut tc = mail.settings.base_context();
        tc.customer_name = ctx.customer_name.clone();
        tc.agreement_ref = ctx.agreement_external_id.clone();
        tc.installment_seq = ctx.seq as u32;
        tc.installment_count = ctx.installment_count as u32;
        tc.currency = currency.code().to_string();
        tc.due_date = locale.date(due);
        tc.due_date_short = locale.date_short(due);
        tc.set_account(&ctx.account_ref);
        tc.installment_state = if due > today {
            "pre_due"
        } else if due == today {
            "due"
        } else {
            "overdue"
        }
        .to_string();
        let money = |minor: i64| locale.money(&Money::from_minor(minor, currency));
        let local = |ms: i64| from_epoch_ms(ms).with_timezone(&tz);
        if r.kind != "debit_succeeded" {
            if arrears_other > 0 {
                tc.arrears = Some(money(arrears_other));
            }
            tc.charges = ledger
                .charges
                .iter()
                .map(|c| ChargeLine {
                    kind: c.kind.clone(),
                    installment_seq: c.seq as u32,
                    amount: money(c.open_minor),
                })
                .collect();
            if arrears_other > 0 || charges_minor > 0 {
                tc.total_due = Some(money(total_due));
            }
        }

        let (kind, funds) = match r.kind.as_str() {
            "upcoming" => {
                tc.amount = money(owed);
                // The check that sets repayd apart: say whether the money is there, for
                // everything that will be collected (arrears and fees included), on top of
                // what earlier sections of the same email already counted on.
                let earlier = asked
                    .entry((ctx.account_ref.clone(), ctx.currency.clone()))
                    .or_insert(0);
                let ask = total_due.saturating_add(*earlier);
                *earlier = ask;
                let answer = self
                    .gateway
                    .check_funds(&ctx.account_ref, &Money::from_minor(ask, currency))
                    .await;
                match answer {
                    Ok(FundsAnswer::Available) => {
                        tc.funds_sufficient = Some(true);
                        (EmailKind::Upcoming, "sufficient")
                    }
                    Ok(FundsAnswer::Insufficient {
                        shortfall: Some(short),
                        ..
                    }) => {
                        tc.funds_sufficient = Some(false);
                        tc.shortfall = Some(locale.money(&short));
                        tc.top_up_by = Some(locale.date_time_at(debit_at.with_timezone(&tz)));
                        tc.top_up_by_short =
                            Some(locale.date_time_short_at(debit_at.with_timezone(&tz)));
                        (EmailKind::BalanceLow, "short")
                    }
                    Ok(FundsAnswer::Insufficient {
                        shortfall: None, ..
                    }) => {
                        tc.funds_sufficient = Some(false);
                        (EmailKind::Upcoming, "short")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "funds check for the reminder failed; sending without the balance");
                        (EmailKind::Upcoming, "unchecked")
                    }
                }
            }
            "debit_succeeded" => {
                let amount = detail["amount_minor"].as_i64().unwrap_or(ctx.total_minor);
                tc.amount = money(amount);
                tc.paid_on = Some(
                    locale
                        .date(local(detail["paid_at_ms"].as_i64().unwrap_or(now_ms)).date_naive()),
                );
                tc.reference = Some(detail["gateway_ref"].as_str().unwrap_or("-").to_string());
                tc.remaining_balance = Some(money(ctx.remaining_minor));
                // The account the money came from (a funding source other than the
                // agreement's own, perhaps).
                if let Some(account_ref) = detail["account_ref"].as_str() {
                    tc.set_account(account_ref);
                }
                // A partial debit: what was asked, and what is still due now, from the
                // ledger (nothing said if it has been paid meanwhile), with the retry
                // that is planned at this minute.
                if detail["partial"].as_bool() == Some(true) && owed > 0 {
                    let asked = detail["owed_minor"].as_i64().unwrap_or(ctx.total_minor);
                    tc.partial_of = Some(money(asked));
                    tc.still_due = Some(money(owed));
                    if let Some(ms) = self
                        .messages
                        .next_planned_attempt_ms(r.installment_id, now_ms)
                        .await?
                    {
                        tc.next_attempt = Some(locale.date_time_at(local(ms)));
                    }
                }
                if let (Some(d), Some(m)) = (&ctx.next_due_date, ctx.next_due_minor) {
                    tc.next_due_date = Some(locale.date(parse_date(d)?));
                    tc.next_due_amount = Some(money(m));
                }
                (EmailKind::DebitSucceeded, "")
            }
            "debit_failed" => {
                tc.amount = money(owed);
                tc.failure = Some(match detail["failure"].as_str() {
                    Some("insufficient_funds") => DebitFailure::InsufficientFunds,
                    Some("mandate_invalid") => DebitFailure::MandateInvalid,
                    Some("technical") => DebitFailure::Technical,
                    _ => DebitFailure::Declined,
                });
                if let Some(s) = detail["shortfall_minor"].as_i64() {
                    tc.shortfall = Some(money(s));
                }
                // Promise only the attempt that is planned now, at the minute it runs, and
                // say it follows the usual payday only when that is why it was placed then.
                if let Some((ms, reason)) = self
                    .messages
                    .next_planned_attempt(r.installment_id, now_ms)
                    .await?
                {
                    tc.next_attempt = Some(locale.date_time_at(local(ms)));
                    tc.after_payday = reason.is_some_and(|r| r.starts_with(PAYDAY_REASON_PREFIX));
                }
                (EmailKind::DebitFailed, "")
            }
            "mandate_notice" => {
                tc.amount = money(owed);
                tc.mandate_status = Some(ctx.mandate_status.clone());
                (EmailKind::MandateNotice, "")
            }
            "debit_returned" => {
                // What came back, as the bank said; what is due again, from the ledger now.
                tc.amount = money(detail["amount_minor"].as_i64().unwrap_or(owed));
                tc.paid_on = detail["paid_at_ms"]
                    .as_i64()
                    .map(|ms| locale.date(local(ms).date_naive()));
                tc.reference = detail["debit_id"].as_str().map(str::to_string);
                tc.return_reason = Some(
                    detail["reason_code"]
                        .as_str()
                        .unwrap_or("returned")
                        .to_string(),
                );
                if let Some(account_ref) = detail["account_ref"].as_str() {
                    tc.set_account(account_ref);
                }
                tc.still_due = Some(money(owed));
                if let Some(ms) = self
                    .messages
                    .next_planned_attempt_ms(r.installment_id, now_ms)
                    .await?
                {
                    tc.next_attempt = Some(locale.date_time_at(local(ms)));
                }
                (EmailKind::DebitReturned, "")
            }
            "schedule_changed" => {
                // The payments still to come of the new schedule, from the ledger now
                // (arrears, left out of a reschedule, are stated apart).
                let rows = self.messages.installments(r.agreement_id).await?;
                let mut entries = Vec::new();
                let mut remaining = 0;
                let mut first: Option<(chrono::NaiveDate, i64)> = None;
                for row in rows
                    .iter()
                    .filter(|x| x.status == "unpaid" && x.due_date >= ctx.due_date)
                {
                    let day = parse_date(&row.due_date)?;
                    let open = row.total_minor - row.paid_minor;
                    first.get_or_insert((day, open));
                    remaining += open;
                    entries.push(crate::mail::ScheduleEntry {
                        due_date: locale.date(day),
                        amount: money(open),
                    });
                }
                let Some((next_day, next_minor)) = first else {
                    return Err(EngineError::Data(
                        "schedule notice without a schedule".into(),
                    ));
                };
                tc.amount = money(next_minor);
                tc.due_date = locale.date(next_day);
                tc.due_date_short = locale.date_short(next_day);
                tc.set_schedule(entries);
                tc.remaining_balance = Some(money(remaining));
                tc.schedule_change = Some(detail["mode"].as_str().unwrap_or("term").to_string());
                if let Some(old) = detail["old_first_due"].as_str() {
                    tc.old_due_date = Some(locale.date(parse_date(old)?));
                }
                (EmailKind::ScheduleChanged, "")
            }
            "overdue" | "credit_warning" => {
                let d = delinquency
                    .as_ref()
                    .ok_or_else(|| EngineError::Data("overdue reminder without state".into()))?;
                tc.amount = money(owed);
                tc.days_past_due = Some(d.dpd);
                // Everything needed to become current, from the ledger now.
                tc.amount_overdue = Some(money(ledger.arrears_minor + charges_minor));
                tc.total_due = Some(money(ledger.arrears_minor + charges_minor));
                if let Some(ms) = self
                    .messages
                    .next_planned_arrears_attempt_ms(
                        r.agreement_id,
                        &today.format("%Y-%m-%d").to_string(),
                        now_ms,
                    )
                    .await?
                {
                    tc.next_attempt = Some(locale.date_time_at(local(ms)));
                }
                if r.kind == "credit_warning" {
                    let oldest = match d.oldest_due_date.as_deref() {
                        Some(text) => parse_date(text)?,
                        None => due,
                    };
                    let reportable_on = policy
                        .overdue
                        .rules
                        .reportable_on(oldest)
                        .ok_or_else(|| EngineError::Data("credit reporting is off".into()))?;
                    // Reported at the assessment time on that day: pay by the end of the day before.
                    let last_day = reportable_on - Duration::days(1);
                    let end = worktime::local_instant(
                        last_day,
                        chrono::NaiveTime::from_hms_opt(23, 59, 0).unwrap_or_default(),
                        tz,
                    );
                    tc.pay_by = Some(locale.date_time_at(end.with_timezone(&tz)));
                    tc.pay_by_short = Some(locale.date_short(last_day));
                    (EmailKind::CreditWarning, "")
                } else {
                    (EmailKind::Overdue, "")
                }
            }
            other => return Err(EngineError::Data(format!("unknown reminder kind {other}"))),
        };

        Ok(Prepared::Ready(Box::new(Ready {
            r: r.clone(),
            ctx,
            kind,
            locale,
            tc,
            funds,
            tz,
        })))
    }

    /// Renders and sends one email for the prepared messages (one, or several merged), and
    /// records the outcome on every one of them.
    async fn deliver(&self, mut parts: Vec<Ready>) -> Result<Sent, EngineError> {
        let mail = self.mail.as_ref().expect("checked by run_reminders");
        let templates = mail.templates();
        let now = self.clock.now();
        let now_ms = to_epoch_ms(now);
        let policy = self.policy();

        // Render each part; one that cannot render is an operator's problem, not a
        // customer's: it is recorded loudly and left out, never sent half-made.
        let mut rendered_parts = Vec::with_capacity(parts.len());
        let mut kept = Vec::with_capacity(parts.len());
        let merged = parts.len() > 1;
        for p in parts.drain(..) {
            let result = if merged {
                templates
                    .render_part(p.kind, p.locale, &p.tc)
                    .map(Rendering::Part)
            } else {
                templates
                    .render_in(p.kind, p.locale, &p.tc)
                    .map(Rendering::Whole)
            };
            match result {
                Ok(x) => {
                    rendered_parts.push(x);
                    kept.push(p);
                }
                Err(e) => {
                    self.record_failed(&p.r, &e.to_string(), now_ms).await?;
                    tracing::error!(reminder_id = p.r.id, error = %e, "reminder could not be rendered");
                }
            }
        }
        let Some(first) = kept.first() else {
            return Ok(Sent::Failed);
        };
        let message_id = crate::mail::message_id(
            self.deployment_id().await?,
            first.r.installment_id,
            &first.r.kind,
            first.r.offset_key,
            &mail.settings.message_id_domain(),
        );
        // The most urgent first: what needs the customer to act before what informs.
        if kept.len() > 1 {
            let mut both: Vec<(Ready, Rendering)> = kept.into_iter().zip(rendered_parts).collect();
            both.sort_by_key(|(p, _)| urgency(p.kind));
            (kept, rendered_parts) = both.into_iter().unzip();
        }
        let first = &kept[0];
        let rendered = if kept.len() == 1 {
            match rendered_parts.remove(0) {
                Rendering::Whole(whole) => whole,
                Rendering::Part(_) => {
                    // The others failed to render: send this one on its own.
                    match templates.render_in(first.kind, first.locale, &first.tc) {
                        Ok(whole) => whole,
                        Err(e) => return Err(EngineError::Data(e.to_string())),
                    }
                }
            }
        } else {
            let mut base = first.tc.clone();
            let mut refs: Vec<&str> = kept.iter().map(|p| p.tc.agreement_ref.as_str()).collect();
            refs.dedup();
            base.agreement_ref = refs.join(", ");
            let parts: Vec<crate::mail::DigestPart> = rendered_parts
                .into_iter()
                .filter_map(|x| match x {
                    Rendering::Part(p) => Some(p),
                    Rendering::Whole(_) => None,
                })
                .collect();
            match templates.render_digest(first.locale, &base, &parts) {
                Ok(x) => x,
                Err(e) => return Err(EngineError::Data(e.to_string())),
            }
        };
        // The email as sent, kept with its event: the console's timeline shows it.
        let (sent_subject, sent_text) = (rendered.subject.clone(), rendered.text.clone());
        let email = rendered.into_outgoing(
            first.ctx.email.clone(),
            first.ctx.customer_name.clone(),
            message_id.clone(),
            first.locale,
        );
        let ids: Vec<i64> = kept.iter().map(|p| p.r.id).collect();
        match mail.mailer.send(&email).await {
            Ok(()) => {
                // Accepted by the relay: only now is it recorded as sent, every section in
                // one transaction (on SQLite, in the writer's next group). A crash before
                // that commit leaves the rows `sending` under a lease: they are sent again
                // when it expires, with the same Message-ID.
                let sent_at = to_epoch_ms(self.clock.now());
                let outcomes = kept
                    .iter()
                    .map(|p| ReminderOutcome {
                        reminder_id: p.r.id,
                        change: ReminderChange {
                            state: "sent",
                            message_id: Some(message_id.clone()),
                            template: Some(p.kind.as_str().to_string()),
                            sent_at_ms: Some(sent_at),
                            bump_tries: true,
                            release_lease: true,
                            ..Default::default()
                        },
                        event: Some(self.reminder_event(
                            &p.r,
                            now_ms,
                            "reminder_sent",
                            serde_json::json!({
                                "kind": p.r.kind, "offset": p.r.offset_key, "template": p.kind.as_str(),
                                "message_id": message_id, "locale": p.locale.as_str(), "funds": p.funds,
                                "merged_with": ids.iter().filter(|id| **id != p.r.id).collect::<Vec<_>>(),
                                "subject": sent_subject, "text": sent_text,
                            }),
                        )),
                    })
                    .collect();
                self.record_outcomes(outcomes, now_ms).await?;
                tracing::info!(to = %mask::email(&first.ctx.email), template = first.kind.as_str(), merged = kept.len(), "reminder sent");
                Ok(Sent::Delivered)
            }
            Err(MailError::Transient(e)) => {
                // An outage delays, it loses nothing: back to pending after a backoff.
                let mut outcomes = Vec::with_capacity(kept.len());
                for p in &kept {
                    let wait = policy.retry.technical_wait(p.r.tries as u32);
                    // The retry, too, waits for the end of quiet hours.
                    let retry_at = if policy.reminders.respects_quiet_hours(&p.r.kind) {
                        policy.reminders.quiet.next_allowed(now + wait, p.tz)
                    } else {
                        now + wait
                    };
                    outcomes.push(ReminderOutcome {
                        reminder_id: p.r.id,
                        change: ReminderChange {
                            state: "pending",
                            scheduled_at_ms: Some(to_epoch_ms(retry_at)),
                            last_error: Some(e.clone()),
                            bump_tries: true,
                            release_lease: true,
                            ..Default::default()
                        },
                        event: Some(self.reminder_event(
                            &p.r,
                            now_ms,
                            "reminder_deferred",
                            serde_json::json!({
                                "kind": p.r.kind, "offset": p.r.offset_key,
                                "error": mask::emails_in(&e),
                                "retry_at": retry_at.to_rfc3339(),
                            }),
                        )),
                    });
                    tracing::warn!(reminder_id = p.r.id, error = %mask::emails_in(&e), retry_at = %retry_at.to_rfc3339(), "mail server unavailable; reminder deferred");
                }
                self.record_outcomes(outcomes, now_ms).await?;
                Ok(Sent::Deferred)
            }
            Err(e) => {
                let error = e.to_string();
                let outcomes = kept
                    .iter()
                    .map(|p| self.failed_outcome(&p.r, &error, now_ms))
                    .collect();
                self.record_outcomes(outcomes, now_ms).await?;
                tracing::error!(error = %mask::emails_in(&error), to = %mask::email(&first.ctx.email), "reminder rejected by the mail server");
                Ok(Sent::Failed)
            }
        }
    }

    /// Records the outcomes of one email (every message merged into it) together: one
    /// transaction, on SQLite in the writer's next group commit, returning once it is
    /// durable. A row that is no longer this worker's (its lease was taken over) is left
    /// to its new holder and said in the log; the others are recorded.
    pub(crate) async fn record_outcomes(
        &self,
        outcomes: Vec<ReminderOutcome>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        let ids: Vec<i64> = outcomes.iter().map(|o| o.reminder_id).collect();
        let applied = self
            .messages
            .apply_reminder_changes(&self.owner, outcomes, now_ms)
            .await?;
        for (id, ok) in ids.iter().zip(&applied) {
            if !ok {
                tracing::warn!(
                    reminder_id = id,
                    "lease lost to another worker; its outcome is left to it"
                );
            }
        }
        if applied.len() == 1 && !applied[0] {
            return Err(EngineError::Store(crate::store::StoreError::Fenced {
                attempt_id: ids[0],
                expected_state: "sending".into(),
            }));
        }
        Ok(())
    }

    fn failed_outcome(&self, r: &ReminderRow, error: &str, now_ms: i64) -> ReminderOutcome {
        ReminderOutcome {
            reminder_id: r.id,
            change: ReminderChange {
                state: "failed",
                last_error: Some(error.to_string()),
                bump_tries: true,
                release_lease: true,
                ..Default::default()
            },
            event: Some(self.reminder_event(
                r,
                now_ms,
                "reminder_failed",
                serde_json::json!({"kind": r.kind, "error": mask::emails_in(error)}),
            )),
        }
    }

    /// Records a message as failed (it cannot be rendered, or the mail server refused it
    /// for good), with the error and its event: an operator's problem, never retried.
    async fn record_failed(
        &self,
        r: &ReminderRow,
        error: &str,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.record_outcomes(vec![self.failed_outcome(r, error, now_ms)], now_ms)
            .await
    }

    pub(crate) fn reminder_event(
        &self,
        r: &ReminderRow,
        at_ms: i64,
        kind: &'static str,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            at_ms,
            kind,
            agreement_id: Some(r.agreement_id),
            installment_id: Some(r.installment_id),
            attempt_id: None,
            detail,
        }
    }
}
