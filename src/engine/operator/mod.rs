//! Operator actions: the few things a person does to an agreement by hand, as plain async
//! functions the command line and the console both call. None of them prints; each
//! returns a serializable result for the caller to render, and each records its
//! [`Actor`] (name and reason) in the event it writes, in the same transaction as the
//! change (event detail keys `"actor"` and `"reason"`).
//!
//! The API, one function per action, all taking `(store, policy, now, actor, target...)`:
//!
//! | function | target | result | event kind |
//! | --- | --- | --- | --- |
//! | [`pause_agreement`] | agreement id or external id | [`AgreementChanged`] | `agreement_paused` |
//! | [`resume_agreement`] | agreement | [`AgreementChanged`] (attempts re-planned) | `agreement_resumed` |
//! | [`cancel_agreement`] | agreement | [`AgreementChanged`] | `agreement_cancelled` |
//! | [`revoke_mandate`] | funding account ref | [`MandateChanged`] | `mandate_revoked` |
//! | [`reinstate_mandate`] | funding account ref | [`MandateChanged`] (debits re-planned) | `mandate_reinstated` |
//! | [`waive_charge`] | charge id, optional amount | [`ChargeWaiverSummary`] | `charge_waived` |
//! | [`record_payment`] | [`RecordRequest`] | [`PaymentSummary`] | `payment_received` / `agreement_settled` |
//! | [`settlement_quote`] (reads only) | agreement, optional date | [`SettlementSummary`] | none |
//! | [`requeue_attempt`] | debit attempt id | [`AttemptRequeued`] | `debit_requeued` |
//! | [`resend_email`] | email (reminder) id | [`EmailRequeued`] | `reminder_requeued` |
//! | [`reschedule_agreement`] | agreement, [`RescheduleRequest`], apply? | [`RescheduleSummary`] (a preview unless applied) | `agreement_rescheduled` |
//!
//! Errors: [`OperatorError::Refused`] means nothing was written and the message says why
//! in words an operator can act on (unknown id, wrong state, amount mismatch); anything
//! else is a store failure. `now` comes from the caller's Clock.

mod payment;
mod reschedule;

pub use crate::domain::{Actor, ActorError};
pub use payment::{
    AccrualLine, AllocationLine, PaymentSummary, RecordRequest, SettlementSummary, record_payment,
    settlement_quote,
};
pub use reschedule::{RescheduleRequest, RescheduleSummary, ScheduleLine, reschedule_agreement};

use crate::clock::to_epoch_ms;
use crate::domain::worktime;
use crate::engine::Engine;
use crate::engine::policy::EnginePolicy;
use crate::store::debits::NewAttempt;
use crate::store::{NewEvent, Store, StoreError};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

/// Why an operator action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Refused: nothing was written. The message says why and what would be accepted.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OperatorError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => OperatorError::Refused(m),
            StoreError::NotFound { what, id } => {
                OperatorError::Refused(format!("{what} {id} not found"))
            }
            other => OperatorError::Store(other),
        }
    }
}

impl From<ActorError> for OperatorError {
    fn from(e: ActorError) -> Self {
        OperatorError::Refused(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, OperatorError>;

/// What a pause, resume or cancel did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgreementChanged {
    pub agreement_id: i64,
    pub external_id: String,
    pub previous_status: String,
    pub status: String,
    /// Resume only: debit attempts planned again for installments the pause stopped.
    pub attempts_planned: u64,
    pub actor: String,
    pub reason: String,
}

/// What a mandate revoke (or reinstate) did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MandateChanged {
    /// The account reference, masked.
    pub account: String,
    pub mandate_status: String,
    /// Agreements whose planned debits were stopped (revoke) or planned again (reinstate).
    pub agreements: Vec<i64>,
    pub actor: String,
    pub reason: String,
}

/// A rejected debit attempt sent back to its funds check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRequeued {
    pub attempt_id: i64,
    pub installment_id: i64,
    pub attempt_no: i64,
    pub idempotency_key: String,
    pub actor: String,
    pub reason: String,
}

/// Pause: no debits planned or run (scheduled attempts and pending reminders are
/// cancelled; the planner and the assessment's emails skip paused agreements; overdue
/// state is still tracked, a pause does not stop the clock on what is owed).
pub async fn pause_agreement(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    agreement: &str,
) -> Result<AgreementChanged> {
    change_status(
        store,
        policy,
        now,
        actor,
        agreement,
        &["active"],
        "paused",
        "agreement_paused",
    )
    .await
}

/// Resume: back to active, and every unpaid installment due within the planning horizon
/// whose attempts were cancelled gets its next attempt number planned explicitly (the
/// planner only creates attempt 1 for installments with no attempt at all).
pub async fn resume_agreement(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    agreement: &str,
) -> Result<AgreementChanged> {
    change_status(
        store,
        policy,
        now,
        actor,
        agreement,
        &["paused"],
        "active",
        "agreement_resumed",
    )
    .await
}

/// Cancel: final; planned work cancelled, overdue state cleared.
pub async fn cancel_agreement(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    agreement: &str,
) -> Result<AgreementChanged> {
    change_status(
        store,
        policy,
        now,
        actor,
        agreement,
        &["active", "paused"],
        "cancelled",
        "agreement_cancelled",
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn change_status(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    key: &str,
    from: &[&str],
    to: &'static str,
    kind: &'static str,
) -> Result<AgreementChanged> {
    let agreement = store.agreement_ref(key).await?;
    let previous = store
        .change_agreement_status(agreement.id, from, to, kind, to_epoch_ms(now), actor)
        .await?;
    let mut outcome = AgreementChanged {
        agreement_id: agreement.id,
        external_id: agreement.external_id.clone(),
        previous_status: previous,
        status: to.to_string(),
        attempts_planned: 0,
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    };
    if to == "active" {
        outcome.attempts_planned =
            replan_stopped_attempts(store, policy, now, &agreement, "resume").await?;
    }
    Ok(outcome)
}

/// Plans the next attempt of every unpaid installment of the agreement due within the
/// horizon that has earlier attempts but none live (what a pause, a revoked mandate or a
/// reschedule stopped): at the debit time on its due date, or tomorrow's if that passed.
pub(crate) async fn replan_stopped_attempts(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    agreement: &crate::store::payments::AgreementRef,
    why: &str,
) -> Result<u64> {
    let tz: chrono_tz::Tz = agreement
        .time_zone
        .parse()
        .map_err(|_| OperatorError::Refused(format!("bad time zone {:?}", agreement.time_zone)))?;
    let horizon = (now + Duration::days(i64::from(policy.debit.horizon_days) + 1))
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let deployment = store.deployment_id().await?;
    let mut planned = 0;
    for c in store.resume_candidates(agreement.id, &horizon).await? {
        let due = NaiveDate::parse_from_str(&c.due_date, "%Y-%m-%d").map_err(|_| {
            OperatorError::Refused(format!("stored due date {:?} is not a date", c.due_date))
        })?;
        let today = worktime::local_date(now, tz);
        let mut at = worktime::local_instant(due.max(today), policy.debit.local_time, tz);
        if at < now {
            at = worktime::local_instant(today + Duration::days(1), policy.debit.local_time, tz);
        }
        let attempt_no = c.max_attempt_no + 1;
        let attempt = NewAttempt {
            installment_id: c.installment_id,
            agreement_id: agreement.id,
            attempt_no,
            idempotency_key: Engine::idempotency_key(
                &policy.debit.key_prefix,
                &deployment,
                c.installment_id,
                attempt_no,
            ),
            scheduled_at_ms: to_epoch_ms(at),
            amount_minor: c.total_minor - c.paid_minor,
            currency: agreement.currency.clone(),
            retry_reason: None,
        };
        let event = NewEvent {
            at_ms: to_epoch_ms(now),
            kind: "debit_attempt_planned",
            agreement_id: Some(agreement.id),
            installment_id: Some(c.installment_id),
            attempt_id: None,
            detail: serde_json::json!({
                "attempt_no": attempt_no, "scheduled_at": at.to_rfc3339(),
                "amount_minor": attempt.amount_minor, "reason": why,
            }),
        };
        if store.insert_attempt(&attempt, &event).await? {
            planned += 1;
        }
    }
    Ok(planned)
}

/// Mandate revoke: no more debits on that account; scheduled attempts fail with
/// `mandate_revoked` and the customer gets one `mandate_notice` per agreement (through
/// the conversation gate, at the next hour outside quiet hours), asking them to pay
/// another way. Only [`reinstate_mandate`] makes it active again.
pub async fn revoke_mandate(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    account_ref: &str,
) -> Result<MandateChanged> {
    let tz = store
        .account_time_zone(account_ref)
        .await?
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    let notice_at = policy.reminders.quiet.next_allowed(now, tz);
    let agreements = store
        .revoke_mandate(
            account_ref,
            true,
            to_epoch_ms(notice_at),
            to_epoch_ms(now),
            actor,
        )
        .await?;
    Ok(MandateChanged {
        account: crate::mask::account(account_ref),
        mandate_status: "revoked".into(),
        agreements,
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    })
}

/// Re-queue a `rejected` attempt after fixing its cause: it runs again from its funds
/// check at the daemon's next pass, under the same idempotency key.
pub async fn requeue_attempt(
    store: &Store,
    now: DateTime<Utc>,
    actor: &Actor,
    attempt_id: i64,
) -> Result<AttemptRequeued> {
    let row = store
        .requeue_rejected_attempt(attempt_id, actor, to_epoch_ms(now))
        .await?;
    Ok(AttemptRequeued {
        attempt_id: row.id,
        installment_id: row.installment_id,
        attempt_no: row.attempt_no,
        idempotency_key: row.idempotency_key,
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    })
}

/// What a fee waiver did. Amounts are decimal strings in the charge's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeWaiverSummary {
    pub charge_id: i64,
    pub agreement_id: i64,
    pub installment_id: i64,
    pub kind: String,
    pub currency: String,
    pub charged: String,
    pub waived: String,
    pub open_before: String,
    pub open_after: String,
    /// `open`, `paid` (part of it was paid, the rest waived) or `waived`.
    pub status: String,
    pub actor: String,
    pub reason: String,
}

/// Waives a charge (a late fee), all that is open or `amount` of it (a decimal in the
/// charge's currency, exact to its minor unit: 12.345 CNY is refused, not rounded). The
/// next debit and every message from then on ask for the smaller amount.
pub async fn waive_charge(
    store: &Store,
    now: DateTime<Utc>,
    actor: &Actor,
    charge_id: i64,
    amount: Option<&str>,
) -> Result<ChargeWaiverSummary> {
    let charge = store
        .charge(charge_id)
        .await?
        .ok_or_else(|| OperatorError::Refused(format!("charge {charge_id} not found")))?;
    let currency = crate::domain::Currency::parse(&charge.currency)
        .map_err(|e| OperatorError::Refused(e.to_string()))?;
    let amount_minor = match amount {
        None => None,
        Some(a) => {
            let m = crate::domain::Money::parse(a, currency)
                .map_err(|e| OperatorError::Refused(format!("--amount {a:?}: {e}")))?;
            if m.minor() <= 0 {
                return Err(OperatorError::Refused("--amount must be positive".into()));
            }
            Some(m.minor())
        }
    };
    let w = store
        .waive_charge(charge_id, amount_minor, actor, to_epoch_ms(now))
        .await?;
    let fmt = |m: i64| crate::domain::Money::from_minor(m, currency).plain();
    Ok(ChargeWaiverSummary {
        charge_id,
        agreement_id: w.after.agreement_id,
        installment_id: w.after.installment_id,
        kind: w.after.kind.clone(),
        currency: currency.code().to_string(),
        charged: fmt(w.after.amount_minor),
        waived: fmt(w.waived_minor),
        open_before: fmt(w.before.open_minor()),
        open_after: fmt(w.after.open_minor()),
        status: w.after.status.clone(),
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    })
}

/// Reinstates a revoked mandate: the only way one becomes active again (an import never
/// does it, invariant 8). Unsent "pay another way" notices are cancelled, and every
/// unpaid installment due within the planning horizon whose attempts the revocation
/// failed gets its next attempt planned (later ones are planned by the planner as usual).
pub async fn reinstate_mandate(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    account_ref: &str,
) -> Result<MandateChanged> {
    let agreements = store
        .reinstate_mandate(account_ref, actor, to_epoch_ms(now))
        .await?;
    for id in &agreements {
        let agreement = store.agreement_ref(&id.to_string()).await?;
        replan_stopped_attempts(store, policy, now, &agreement, "mandate_reinstated").await?;
    }
    Ok(MandateChanged {
        account: crate::mask::account(account_ref),
        mandate_status: "active".into(),
        agreements,
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    })
}

/// A failed (or deferred) customer email sent back to the message loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmailRequeued {
    pub reminder_id: i64,
    pub agreement_id: i64,
    pub installment_id: i64,
    /// The message's kind (`upcoming`, `debit_failed`, ...).
    pub kind: String,
    /// `failed`, or `pending` for one deferred after a mail server failure.
    pub previous_state: String,
    /// Why it failed or was deferred, email addresses masked.
    pub previous_error: String,
    pub actor: String,
    pub reason: String,
}

/// Sends a customer email again: one the mail server refused for good or that could not
/// be rendered (`failed`), or one deferred after a transient failure (sent now instead
/// of at its backoff time). It becomes due now and the message loop takes it through
/// the conversation gate like any other message (docs/conversation.md): what it says is
/// checked again just before it leaves, so if it is no longer true (the installment was
/// paid since, the agreement paused, the mandate revoked) it is cancelled with the reason
/// instead of sent; quiet hours and the customer's daily budget still apply. Fix the
/// cause first (the address, the template, the mail server), or it fails again.
pub async fn resend_email(
    store: &Store,
    now: DateTime<Utc>,
    actor: &Actor,
    reminder_id: i64,
) -> Result<EmailRequeued> {
    let before = store
        .requeue_reminder(reminder_id, actor, to_epoch_ms(now))
        .await?;
    Ok(EmailRequeued {
        reminder_id,
        agreement_id: before.agreement_id,
        installment_id: before.installment_id,
        kind: before.kind,
        previous_state: before.state,
        previous_error: before
            .last_error
            .as_deref()
            .map(crate::mask::emails_in)
            .unwrap_or_default(),
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    })
}
