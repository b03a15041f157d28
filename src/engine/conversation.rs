//! The gate every customer message passes just before it leaves (design notes, section
//! 9): customers judge repayd only by what reaches them, so all their email is one
//! conversation, not a set of independent notifications.
//!
//! In order, for the message at hand:
//! 1. **Quiet hours now.** The customer's local time is checked at send time, not only
//!    when the message was planned: catch-up after downtime and retries after an SMTP
//!    outage wait for the end of quiet hours too (kinds in `reminders.quiet_hours_exempt`
//!    excepted).
//! 2. **Truth now.** What the message asserts is re-read: still owed (a returned-debit
//!    notice included: it is cancelled once the installment is paid again), agreement active,
//!    mandate active (an `upcoming` reminder promises an automatic collection), still
//!    overdue. A message that is no longer true is cancelled with the reason.
//! 3. **One conversation.** Messages about one agreement that fall due within
//!    `reminders.merge_window_minutes` of each other are decided together: the most
//!    important supersedes the rest (credit warning over overdue over failure notice over
//!    pre-due reminder; a receipt records money taken and is never superseded). A less
//!    important one waits for the more important one (also for one planned later the same
//!    local day) and is then cancelled as superseded, or sent if that one turned out
//!    untrue. At most one failure notice per installment
//!    per local day, one "pay another way" notice per agreement, and at most
//!    `reminders.max_per_customer_per_day` emails per customer per local day (more wait
//!    for the next day, where the truth check runs again).
//!
//! Nothing is dropped silently: a cancelled message keeps its row with the reason, a
//! deferred one its new time, both with an event.

use super::{Engine, EngineError};
use crate::clock::{from_epoch_ms, to_epoch_ms};
use crate::domain::worktime;
use crate::store::delinquency::DelinquencyRow;
use crate::store::reminders::{ReminderChange, ReminderContext, ReminderRow};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

/// Every kind of customer message, as stored in `reminders.kind`.
pub const MESSAGE_KINDS: [&str; 8] = [
    "upcoming",
    "debit_succeeded",
    "debit_failed",
    "mandate_notice",
    "overdue",
    "credit_warning",
    "debit_returned",
    "schedule_changed",
];

/// What the gate decided for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Send,
    /// Not true any more, or superseded: recorded as cancelled with the reason.
    Cancel(String),
    /// Not now: back to pending at that instant, with the reason.
    Defer(DateTime<Utc>, String),
}

/// How important a message is among those about one agreement due together; `None` for
/// receipts and returned-debit notices, which each record money moving (taken, or given
/// back by the bank) and are never superseded and supersede nothing: due together with
/// others they are merged into one email, not dropped.
pub fn rank(kind: &str) -> Option<u8> {
    match kind {
        "upcoming" => Some(1),
        "debit_failed" => Some(2),
        "overdue" => Some(3),
        "credit_warning" => Some(4),
        "mandate_notice" => Some(5),
        _ => None,
    }
}

/// Whether `winner` (kind, installment) makes `loser` redundant when both are due
/// together; `sent` tells whether the winner already went out. Pre-due reminders are
/// covered only by messages about the same installment (or the mandate notice): a
/// reminder of next week's payment says something an overdue email does not. The
/// messages about money not collected (failure notice, overdue, credit warning, mandate
/// notice) each carry the agreement's whole arrears and fees, so the more serious one
/// covers the others about the same agreement; of two equally serious ones, the first
/// sent covers the second, and of two still waiting, the one about the earlier
/// installment (lower id) covers the other: two failure notices about one agreement on
/// one morning would repeat the same ledger twice in one email.
pub fn supersedes(winner: (&str, i64), loser: (&str, i64), sent: bool) -> bool {
    let (Some(w), Some(l)) = (rank(winner.0), rank(loser.0)) else {
        return false;
    };
    let related = winner.1 == loser.1 || winner.0 == "mandate_notice" || loser.0 != "upcoming";
    let first = sent || (winner.1 < loser.1 && loser.0 != "upcoming");
    related && (w > l || (w == l && first))
}

impl Engine {
    /// Why the message is no longer true, if it is not.
    pub(crate) async fn stale_reason(
        &self,
        r: &ReminderRow,
        ctx: &ReminderContext,
        delinquency: Option<&DelinquencyRow>,
        now: DateTime<Utc>,
        debit_at: DateTime<Utc>,
    ) -> Result<Option<String>, EngineError> {
        let policy = self.policy();
        let owed = ctx.total_minor - ctx.paid_minor;
        let not_owed = ctx.installment_status != "unpaid" || owed <= 0;
        let reason = match r.kind.as_str() {
            "overdue" | "credit_warning" => {
                if not_owed {
                    Some(format!("installment_{}", ctx.installment_status))
                } else if ctx.agreement_status != "active" {
                    Some(format!("agreement_{}", ctx.agreement_status))
                } else if delinquency.is_none_or(|d| d.dpd == 0) {
                    Some("no_longer_overdue".to_string())
                } else if r.kind == "credit_warning"
                    && (policy.overdue.rules.credit_report_after_days.is_none()
                        || delinquency.is_some_and(|d| d.credit_flag == "reportable"))
                {
                    Some("too_late: already reportable, or credit reporting is off".to_string())
                } else {
                    None
                }
            }
            "upcoming" => {
                if not_owed {
                    Some(format!("installment_{}", ctx.installment_status))
                } else if ctx.agreement_status != "active" {
                    Some(format!("agreement_{}", ctx.agreement_status))
                } else if ctx.mandate_status != "active" {
                    // It would promise an automatic collection that cannot happen; the
                    // customer gets one "pay another way" notice instead.
                    Some(format!("mandate_{}", ctx.mandate_status))
                } else if now >= debit_at {
                    Some("too_late: the debit time on the due date has passed".to_string())
                } else if let Some(later) = self
                    .messages
                    .superseding_reminder(r.installment_id, r.offset_key, to_epoch_ms(now))
                    .await?
                {
                    Some(format!("superseded by the {later}-day reminder"))
                } else if self.late_and_followed_soon(r, ctx, now).await? {
                    // Caught up after downtime: the next reminder says the same tomorrow.
                    Some(
                        "superseded: caught up late, and the next reminder follows within a day"
                            .to_string(),
                    )
                } else {
                    None
                }
            }
            // A returned-debit notice says the installment is due again: not true any
            // more once it has been paid again (by a retry or another way).
            "debit_failed" | "debit_returned" => {
                if not_owed {
                    Some(format!("installment_{}", ctx.installment_status))
                } else if ctx.agreement_status != "active" {
                    Some(format!("agreement_{}", ctx.agreement_status))
                } else {
                    None
                }
            }
            // The new schedule as agreed (a reschedule): stale once the agreement stops,
            // or once a later reschedule replaced the installments it speaks of (that
            // one's notice says what holds now).
            "schedule_changed" => {
                if ctx.installment_status == "cancelled" {
                    Some("schedule_changed_again: a later notice says what holds".to_string())
                } else if ctx.agreement_status != "active" {
                    Some(format!("agreement_{}", ctx.agreement_status))
                } else if ctx.remaining_minor <= 0 {
                    Some("nothing_owed".to_string())
                } else {
                    None
                }
            }
            "mandate_notice" => {
                if ctx.mandate_status == "active" {
                    Some("mandate_active: the authorization is in force again".to_string())
                } else if ctx.agreement_status != "active" {
                    Some(format!("agreement_{}", ctx.agreement_status))
                } else if ctx.remaining_minor <= 0 {
                    Some("nothing_owed".to_string())
                } else {
                    None
                }
            }
            _ => None,
        };
        Ok(reason)
    }

    /// Whether a pre-due reminder is more than an hour past its planned local time (caught
    /// up after downtime or an outage) while the installment's next reminder is due within
    /// a day: two near-identical emails on consecutive days help nobody.
    async fn late_and_followed_soon(
        &self,
        r: &ReminderRow,
        ctx: &ReminderContext,
        now: DateTime<Utc>,
    ) -> Result<bool, EngineError> {
        let policy = self.policy();
        let tz = super::parse_tz(&ctx.time_zone)?;
        let due = super::parse_date(&ctx.due_date)?;
        let Some(day) = due.checked_sub_days(chrono::Days::new(r.offset_key.max(0) as u64)) else {
            return Ok(false);
        };
        let planned = worktime::local_instant(day, policy.reminders.local_time, tz);
        if now - planned <= Duration::hours(1) {
            return Ok(false);
        }
        let next = self
            .messages
            .next_pending_reminder_ms(r.installment_id, "upcoming", r.offset_key)
            .await?;
        Ok(next.is_some_and(|ms| from_epoch_ms(ms) < now + Duration::days(1)))
    }

    /// Quiet hours, supersession and the customer's daily budget (see the module docs).
    pub(crate) async fn conversation_gate(
        &self,
        r: &ReminderRow,
        ctx: &ReminderContext,
        now: DateTime<Utc>,
        tz: Tz,
        companion: bool,
    ) -> Result<Verdict, EngineError> {
        let policy = self.policy();
        let rules = &policy.reminders;
        let now_ms = to_epoch_ms(now);

        if rules.respects_quiet_hours(&r.kind) {
            let allowed = rules.quiet.next_allowed(now, tz);
            if allowed > now {
                return Ok(Verdict::Defer(
                    allowed,
                    "quiet hours in the customer's time zone".into(),
                ));
            }
        }

        let today = worktime::local_date(now, tz);
        let midnight_ms = to_epoch_ms(worktime::local_instant(today, chrono::NaiveTime::MIN, tz));
        match r.kind.as_str() {
            "debit_failed" => {
                if let Some(at) = self
                    .messages
                    .last_sent(
                        r.agreement_id,
                        "debit_failed",
                        Some(r.installment_id),
                        midnight_ms,
                    )
                    .await?
                {
                    return Ok(Verdict::Cancel(format!(
                        "one failure notice per installment per day: already told at {}",
                        from_epoch_ms(at).with_timezone(&tz).format("%H:%M %Z")
                    )));
                }
            }
            "mandate_notice" => {
                if let Some(at) = self
                    .messages
                    .last_sent(r.agreement_id, "mandate_notice", None, 0)
                    .await?
                {
                    return Ok(Verdict::Cancel(format!(
                        "one mandate notice per agreement: already told on {}",
                        from_epoch_ms(at).with_timezone(&tz).format("%Y-%m-%d")
                    )));
                }
            }
            _ => {}
        }

        if let Some(own_rank) = rank(&r.kind) {
            let window = rules.merge_window;
            // A more serious message about the agreement due later the same local day
            // (the overdue escalation at 09:00 after a failed retry at 06:00) says all
            // this one would, and more: this one waits for it rather than go out an hour
            // earlier as a second email about the same missing money.
            let tomorrow =
                worktime::local_instant(today + Duration::days(1), chrono::NaiveTime::MIN, tz);
            let near = self
                .messages
                .agreement_messages_near(
                    r.agreement_id,
                    r.id,
                    to_epoch_ms(now - window),
                    to_epoch_ms((now + window).max(tomorrow)),
                )
                .await?;
            let window_end_ms = to_epoch_ms(now + window);
            for other in &near {
                let sent = other.state == "sent";
                let later_today = !sent && other.scheduled_at_ms > window_end_ms;
                if later_today && rank(&other.kind).is_none_or(|w| w <= own_rank) {
                    continue;
                }
                if !supersedes(
                    (&other.kind, other.installment_id),
                    (&r.kind, r.installment_id),
                    sent,
                ) {
                    continue;
                }
                if sent {
                    return Ok(Verdict::Cancel(format!(
                        "superseded by the {} message #{} sent at {}",
                        other.kind,
                        other.id,
                        from_epoch_ms(other.sent_at_ms.unwrap_or(now_ms))
                            .with_timezone(&tz)
                            .format("%H:%M %Z")
                    )));
                }
                // Let the more important one go first; then this one is superseded, or
                // sent if that one was no longer true.
                let at = from_epoch_ms(other.scheduled_at_ms.max(now_ms)) + Duration::minutes(1);
                return Ok(Verdict::Defer(
                    at,
                    format!("waiting for the {} message #{}", other.kind, other.id),
                ));
            }
        }

        // A message merged into another email does not count on its own.
        let sent_today = if companion {
            0
        } else {
            self.messages
                .messages_sent_to_customer(ctx.customer_id, midnight_ms)
                .await?
        };
        if sent_today >= i64::from(rules.max_per_customer_per_day) {
            let tomorrow = today + Duration::days(1);
            let at = worktime::local_instant(tomorrow, rules.local_time, tz);
            let at = rules.quiet.next_allowed(at, tz);
            return Ok(Verdict::Defer(
                at,
                format!(
                    "daily limit of {} messages to this customer reached",
                    rules.max_per_customer_per_day
                ),
            ));
        }
        Ok(Verdict::Send)
    }

    /// Records a message as cancelled, with the reason, and its event.
    pub(crate) async fn cancel_message(
        &self,
        r: &ReminderRow,
        reason: &str,
        now_ms: i64,
    ) -> Result<super::reminders::Sent, EngineError> {
        let change = ReminderChange {
            state: "cancelled",
            cancel_reason: Some(reason.to_string()),
            release_lease: true,
            ..Default::default()
        };
        let ev = self.reminder_event(
            r,
            now_ms,
            "reminder_cancelled",
            serde_json::json!({"kind": r.kind, "offset": r.offset_key, "reason": reason}),
        );
        self.messages
            .apply_reminder_change(r.id, &self.owner, &change, Some(&ev), now_ms)
            .await?;
        tracing::info!(reason = %reason, "reminder cancelled");
        Ok(super::reminders::Sent::Cancelled)
    }

    /// Puts a message back to pending until `at`, with the reason, and its event.
    pub(crate) async fn defer_message(
        &self,
        r: &ReminderRow,
        at: DateTime<Utc>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<super::reminders::Sent, EngineError> {
        let now_ms = to_epoch_ms(now);
        let change = ReminderChange {
            state: "pending",
            scheduled_at_ms: Some(to_epoch_ms(at)),
            release_lease: true,
            ..Default::default()
        };
        let ev = self.reminder_event(
            r,
            now_ms,
            "reminder_deferred",
            serde_json::json!({
                "kind": r.kind, "offset": r.offset_key, "reason": reason,
                "until": at.to_rfc3339(),
            }),
        );
        self.messages
            .apply_reminder_change(r.id, &self.owner, &change, Some(&ev), now_ms)
            .await?;
        tracing::info!(reason = %reason, until = %at.to_rfc3339(), "reminder deferred");
        Ok(super::reminders::Sent::Deferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_more_serious_message_wins_and_receipts_stand_apart() {
        assert!(rank("credit_warning") > rank("overdue"));
        assert!(rank("overdue") > rank("debit_failed"));
        assert!(rank("debit_failed") > rank("upcoming"));
        assert_eq!(rank("debit_succeeded"), None);
        for kind in MESSAGE_KINDS {
            assert!(
                matches!(
                    kind,
                    "debit_succeeded" | "debit_returned" | "schedule_changed"
                ) || rank(kind).is_some(),
                "{kind}"
            );
        }
    }

    #[test]
    fn what_covers_what() {
        // Overdue covers a failure notice about another installment of the agreement...
        assert!(supersedes(("overdue", 1), ("debit_failed", 2), false));
        // ...but not a reminder of another installment's coming payment.
        assert!(!supersedes(("overdue", 1), ("upcoming", 2), false));
        assert!(supersedes(("overdue", 1), ("upcoming", 1), false));
        assert!(supersedes(("mandate_notice", 1), ("upcoming", 2), false));
        // Equals: one already sent covers the other.
        // Two waiting failure notices about one agreement: the earlier installment's
        // goes, the other is covered by its ledger.
        assert!(supersedes(("debit_failed", 1), ("debit_failed", 2), false));
        assert!(!supersedes(("debit_failed", 2), ("debit_failed", 1), false));
        assert!(supersedes(("debit_failed", 2), ("debit_failed", 1), true));
        assert!(supersedes(("debit_failed", 1), ("debit_failed", 2), true));
        assert!(!supersedes(("upcoming", 1), ("upcoming", 2), true));
        // The less serious never covers the more serious; receipts never take part.
        assert!(!supersedes(("debit_failed", 1), ("overdue", 1), true));
        assert!(!supersedes(("debit_succeeded", 1), ("upcoming", 1), true));
        assert!(!supersedes(
            ("credit_warning", 1),
            ("debit_succeeded", 1),
            true
        ));
    }
}
