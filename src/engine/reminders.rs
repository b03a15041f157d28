//! Customer emails as work: the planner materializes pre-due reminders (one per
//! installment and offset) at the configured local time, moved out of quiet hours; the
//! sender claims due rows, decides whether each is still useful, runs a funds check for
//! pre-due reminders so the email can say whether the account holds enough, renders the
//! customer's language, and sends with a deterministic Message-ID. A crash between the
//! SMTP server's accept and the commit can repeat a message once, with the same id.

use super::conversation::Verdict;
use super::{Engine, EngineError, parse_date, parse_tz};
use crate::clock::{from_epoch_ms, to_epoch_ms};
use crate::domain::{Currency, Money, worktime};
use crate::gateway::FundsAnswer;
use crate::mail::{ChargeLine, DebitFailure, EmailKind, Locale, MailError};
use crate::mask;
use crate::store::NewEvent;
use crate::store::reminders::{NewReminder, ReminderChange, ReminderRow};
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

pub(crate) enum Sent {
    Delivered,
    Cancelled,
    Failed,
    Deferred,
}

impl Engine {
    /// Plans the pre-due reminders of installments due by `horizon` that have none yet.
    pub(crate) async fn plan_reminders(&self, horizon: &str) -> Result<u64, EngineError> {
        let policy = self.policy();
        let now_ms = to_epoch_ms(self.clock.now());
        let mut created = 0;
        let mut after = crate::store::debits::PlanCursor::default();
        loop {
            let batch = self
                .store
                .reminder_candidates(horizon, &after, super::PLAN_PAGE)
                .await?;
            let Some(last) = batch.last() else { break };
            after = crate::store::debits::PlanCursor::after(&last.due_date, last.installment_id);
            let mut rows = Vec::with_capacity(batch.len() * policy.reminders.offsets_days.len());
            for c in &batch {
                let tz = parse_tz(&c.time_zone)?;
                let due = parse_date(&c.due_date)?;
                for days in &policy.reminders.offsets_days {
                    let day = due - Duration::days(i64::from(*days));
                    let at = worktime::local_instant(day, policy.reminders.local_time, tz);
                    let at = policy.reminders.quiet.next_allowed(at, tz);
                    rows.push(NewReminder {
                        installment_id: c.installment_id,
                        agreement_id: c.agreement_id,
                        kind: "upcoming",
                        offset_key: i64::from(*days),
                        scheduled_at_ms: to_epoch_ms(at),
                        detail: serde_json::json!({}),
                    });
                }
            }
            created += self.store.insert_reminders(&rows, now_ms).await?;
        }
        Ok(created)
    }

    /// Claims and sends due reminders until none is due or `shutdown` fires.
    pub async fn run_reminders(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Result<ReminderReport, EngineError> {
        let mut report = ReminderReport::default();
        if self.mail.is_none() {
            return Ok(report);
        }
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let policy = self.policy();
            let now = self.clock.now();
            let batch = self
                .store
                .claim_due_reminders(
                    &self.owner,
                    to_epoch_ms(now),
                    to_epoch_ms(now + policy.debit.lease),
                    i64::from(policy.debit.batch_size),
                )
                .await?;
            if batch.is_empty() {
                break;
            }
            report.claimed += batch.len() as u64;
            // One at a time: the SMTP transport has its own pool and rate limit.
            for reminder in batch {
                let span = tracing::info_span!(
                    "reminder",
                    reminder_id = reminder.id,
                    agreement_id = reminder.agreement_id,
                    installment_id = reminder.installment_id,
                    kind = %reminder.kind,
                    offset = reminder.offset_key,
                );
                match self.send_one(&reminder).instrument(span).await {
                    Ok(Sent::Delivered) => report.sent += 1,
                    Ok(Sent::Cancelled) => report.cancelled += 1,
                    Ok(Sent::Failed) => report.failed += 1,
                    Ok(Sent::Deferred) => report.deferred += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "reminder interrupted; it is picked up again when its lease expires")
                    }
                }
            }
        }
        Ok(report)
    }

    async fn send_one(&self, r: &ReminderRow) -> Result<Sent, EngineError> {
        let mail = self.mail.as_ref().expect("checked by run_reminders");
        let ctx = self.store.reminder_context(r.id).await?;
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
            self.store.delinquency(r.agreement_id).await?
        } else {
            None
        };

        // The gate: quiet hours now, truth now, then the customer's conversation.
        let verdict = match self
            .stale_reason(r, &ctx, delinquency.as_ref(), now, debit_at)
            .await?
        {
            Some(reason) => Verdict::Cancel(reason),
            None => self.conversation_gate(r, &ctx, now, tz).await?,
        };
        match verdict {
            Verdict::Send => {}
            Verdict::Cancel(reason) => return self.cancel_message(r, &reason, now_ms).await,
            Verdict::Defer(at, reason) => return self.defer_message(r, at, &reason, now).await,
        }

        // What the email asserts, read from the ledger now.
        let ledger = self
            .store
            .agreement_ledger(r.agreement_id, &today.format("%Y-%m-%d").to_string())
            .await?;
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
                // everything that will be collected (arrears and fees included).
                let answer = self
                    .gateway
                    .check_funds(&ctx.account_ref, &Money::from_minor(total_due, currency))
                    .await;
                match answer {
                    Ok(FundsAnswer::Available) => {
                        tc.funds_sufficient = Some(true);
                        (EmailKind::Upcoming, "sufficient")
                    }
                    Ok(FundsAnswer::Insufficient {
                        shortfall: Some(short),
                    }) => {
                        tc.funds_sufficient = Some(false);
                        tc.shortfall = Some(locale.money(&short));
                        tc.top_up_by = Some(locale.date_time_at(debit_at.with_timezone(&tz)));
                        tc.top_up_by_short =
                            Some(locale.date_time_short_at(debit_at.with_timezone(&tz)));
                        (EmailKind::BalanceLow, "short")
                    }
                    Ok(FundsAnswer::Insufficient { shortfall: None }) => {
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
                // Promise only the attempt that is planned now, at the minute it runs.
                if let Some(ms) = self
                    .store
                    .next_planned_attempt_ms(r.installment_id, now_ms)
                    .await?
                {
                    tc.next_attempt = Some(locale.date_time_at(local(ms)));
                }
                (EmailKind::DebitFailed, "")
            }
            "mandate_notice" => {
                tc.amount = money(owed);
                tc.mandate_status = Some(ctx.mandate_status.clone());
                (EmailKind::MandateNotice, "")
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
                    .store
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

        let message_id = crate::mail::message_id(
            self.deployment_id().await?,
            r.installment_id,
            &r.kind,
            r.offset_key,
            &mail.settings.message_id_domain(),
        );
        let rendered = match mail.templates().render_in(kind, locale, &tc) {
            Ok(x) => x,
            Err(e) => {
                // A template that cannot render is an operator's problem, not a customer's:
                // record it loudly and do not send a half-made email.
                let change = ReminderChange {
                    state: "failed",
                    last_error: Some(e.to_string()),
                    bump_tries: true,
                    release_lease: true,
                    ..Default::default()
                };
                let ev = self.reminder_event(
                    r,
                    now_ms,
                    "reminder_failed",
                    serde_json::json!({"kind": r.kind, "error": e.to_string()}),
                );
                self.store
                    .apply_reminder_change(r.id, &self.owner, &change, Some(&ev), now_ms)
                    .await?;
                tracing::error!(error = %e, "reminder could not be rendered");
                return Ok(Sent::Failed);
            }
        };
        let email = rendered.into_outgoing(
            ctx.email.clone(),
            ctx.customer_name.clone(),
            message_id.clone(),
            locale,
        );
        match mail.mailer.send(&email).await {
            Ok(()) => {
                let change = ReminderChange {
                    state: "sent",
                    message_id: Some(message_id.clone()),
                    template: Some(kind.as_str().to_string()),
                    sent_at_ms: Some(to_epoch_ms(self.clock.now())),
                    bump_tries: true,
                    release_lease: true,
                    ..Default::default()
                };
                let ev = self.reminder_event(
                    r,
                    now_ms,
                    "reminder_sent",
                    serde_json::json!({
                        "kind": r.kind, "offset": r.offset_key, "template": kind.as_str(),
                        "message_id": message_id, "locale": locale.as_str(), "funds": funds,
                    }),
                );
                self.store
                    .apply_reminder_change(r.id, &self.owner, &change, Some(&ev), now_ms)
                    .await?;
                tracing::info!(to = %mask::email(&ctx.email), template = kind.as_str(), "reminder sent");
                Ok(Sent::Delivered)
            }
            Err(MailError::Transient(e)) => {
                // An outage delays, it loses nothing: back to pending after a backoff.
                let wait = policy.retry.technical_wait(r.tries as u32);
                // The retry, too, waits for the end of quiet hours.
                let retry_at = if policy.reminders.respects_quiet_hours(&r.kind) {
                    policy.reminders.quiet.next_allowed(now + wait, tz)
                } else {
                    now + wait
                };
                let change = ReminderChange {
                    state: "pending",
                    scheduled_at_ms: Some(to_epoch_ms(retry_at)),
                    last_error: Some(e.clone()),
                    bump_tries: true,
                    release_lease: true,
                    ..Default::default()
                };
                let ev = self.reminder_event(
                    r,
                    now_ms,
                    "reminder_deferred",
                    serde_json::json!({
                        "kind": r.kind, "offset": r.offset_key,
                        "error": mask::emails_in(&e),
                        "retry_at": retry_at.to_rfc3339(),
                    }),
                );
                self.store
                    .apply_reminder_change(r.id, &self.owner, &change, Some(&ev), now_ms)
                    .await?;
                tracing::warn!(error = %mask::emails_in(&e), retry_at = %retry_at.to_rfc3339(), "mail server unavailable; reminder deferred");
                Ok(Sent::Deferred)
            }
            Err(e) => {
                let change = ReminderChange {
                    state: "failed",
                    last_error: Some(e.to_string()),
                    bump_tries: true,
                    release_lease: true,
                    ..Default::default()
                };
                let ev = self.reminder_event(
                    r,
                    now_ms,
                    "reminder_failed",
                    serde_json::json!({"kind": r.kind, "error": e.to_string()}),
                );
                self.store
                    .apply_reminder_change(r.id, &self.owner, &change, Some(&ev), now_ms)
                    .await?;
                tracing::error!(error = %mask::emails_in(&e.to_string()), to = %mask::email(&ctx.email), "reminder rejected by the mail server");
                Ok(Sent::Failed)
            }
        }
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
