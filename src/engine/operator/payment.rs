//! `payments record` as a library call: money received by other means (bank transfer,
//! cash), or an early settlement. Allocated oldest installment first, within each in the
//! `payments.allocation` order; a reference is accepted once; an amount above what is
//! owed is refused (nothing is written) unless `settle` makes it the settlement figure.
//!
//! Settlement on the customer's local date of receipt: every open charge, everything of
//! installments already due, and the principal of installments not yet due. Their
//! future interest and fees are waived, and the summary says how much.

use super::{Actor, OperatorError, Result};
use crate::clock::{from_epoch_ms, to_epoch_ms};
use crate::domain::delinquency::{Allocation, allocate, allocate_settlement, settlement_quote};
use crate::domain::{Currency, Money, worktime};
use crate::engine::overdue::open_for_allocation;
use crate::engine::policy::EnginePolicy;
use crate::store::Store;
use crate::store::payments::NewPayment;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// A payment to record, as the library takes it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RecordRequest {
    pub agreement: String,
    pub amount: String,
    pub reference: String,
    pub received_at: Option<DateTime<Utc>>,
    pub settle: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AllocationLine {
    pub installment_id: i64,
    pub seq: i64,
    pub component: &'static str,
    pub charge_id: Option<i64>,
    pub amount: String,
}

/// What was recorded, for the operator.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentSummary {
    pub payment_id: i64,
    pub agreement: String,
    pub reference: String,
    pub currency: String,
    pub amount: String,
    pub received_at: String,
    pub settlement: bool,
    pub allocations: Vec<AllocationLine>,
    /// Settlement: future interest and fees forgiven.
    pub waived: Vec<AllocationLine>,
    pub waived_total: String,
    pub installments_paid: Vec<i64>,
    pub agreement_completed: bool,
    pub delinquency_cleared: bool,
    /// Still owed on the agreement after this payment (installments and charges).
    pub remaining: String,
    pub actor: String,
    pub reason: String,
}

/// Records one payment. Everything or nothing is written.
pub async fn record_payment(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    actor: &Actor,
    req: &RecordRequest,
) -> Result<PaymentSummary> {
    let policy = &policy.overdue;
    let reference = req.reference.trim();
    if reference.is_empty() || reference.len() > 200 {
        return Err(OperatorError::Refused(
            "--reference must be 1 to 200 characters".into(),
        ));
    }
    let agreement = store.agreement_ref(&req.agreement).await?;
    if agreement.status != "active" && agreement.status != "paused" {
        return Err(OperatorError::Refused(format!(
            "agreement {} is {}: nothing is owed on it",
            agreement.external_id, agreement.status
        )));
    }
    if let Some(p) = store.payment_by_reference(reference).await? {
        return Err(OperatorError::Refused(format!(
            "payment reference {reference:?} was already recorded (payment {}, {} {}); nothing was changed",
            p.id,
            Currency::parse(&p.currency)
                .map(|c| Money::from_minor(p.amount_minor, c).plain())
                .unwrap_or_else(|_| p.amount_minor.to_string()),
            p.currency
        )));
    }
    let currency =
        Currency::parse(&agreement.currency).map_err(|e| OperatorError::Refused(e.to_string()))?;
    let amount = Money::parse(&req.amount, currency)
        .map_err(|e| OperatorError::Refused(format!("--amount {:?}: {e}", req.amount)))?;
    if amount.minor() <= 0 {
        return Err(OperatorError::Refused("--amount must be positive".into()));
    }
    let received_at = req.received_at.unwrap_or(now);
    if received_at > now + Duration::minutes(5) {
        return Err(OperatorError::Refused(
            "--received-at is in the future".into(),
        ));
    }
    let tz = agreement
        .time_zone
        .parse::<chrono_tz::Tz>()
        .map_err(|_| OperatorError::Refused(format!("bad time zone {:?}", agreement.time_zone)))?;
    let open = store.open_installments(agreement.id).await?;
    let charges = store.charges_for_agreement(agreement.id).await?;
    let insts =
        open_for_allocation(&open, &charges).map_err(|e| OperatorError::Refused(e.to_string()))?;
    let order = &policy.allocation;
    let owed: i64 = insts
        .iter()
        .map(|i| i.components_open(order).total() + i.charges_open())
        .sum();
    let fmt = |m: i64| Money::from_minor(m, currency).plain();
    let today = worktime::local_date(received_at, tz);
    let (allocations, waived) = if req.settle {
        let quote = settlement_quote(order, &insts, today);
        if amount.minor() != quote.total_minor() {
            return Err(OperatorError::Refused(format!(
                "settling agreement {} on {today} takes exactly {} {}: charges {} + due {} + \
                 remaining principal {} (future interest {} and fees {} waived); --amount {} \
                 does not match, nothing was recorded",
                agreement.external_id,
                fmt(quote.total_minor()),
                currency.code(),
                fmt(quote.charges_minor),
                fmt(quote.due_minor),
                fmt(quote.future_principal_minor),
                fmt(quote.waived_interest_minor),
                fmt(quote.waived_fees_minor),
                amount.plain(),
            )));
        }
        allocate_settlement(order, &insts, today)
    } else {
        if amount.minor() > owed {
            return Err(OperatorError::Refused(format!(
                "{} {} exceeds what is owed on agreement {} ({} {}); nothing was recorded. \
                 To settle the agreement early use --settle",
                amount.plain(),
                currency.code(),
                agreement.external_id,
                fmt(owed),
                currency.code(),
            )));
        }
        let (slices, left) = allocate(order, &insts, amount.minor());
        debug_assert_eq!(left, 0);
        (slices, Vec::new())
    };
    let rules = &policy.rules;
    let overdue_cutoff =
        rules.assessment_date(now, tz) - Duration::days(i64::from(rules.grace_days) + 1);
    let payment = NewPayment {
        agreement_id: agreement.id,
        reference: reference.to_string(),
        amount_minor: amount.minor(),
        currency: currency.code().to_string(),
        received_at_ms: to_epoch_ms(received_at),
        settlement: req.settle,
        allocations: allocations.clone(),
        waived: waived.clone(),
        expected_paid: open.iter().map(|i| (i.id, i.paid_minor)).collect(),
        overdue_cutoff: overdue_cutoff.format("%Y-%m-%d").to_string(),
        now_ms: to_epoch_ms(now),
        actor: actor.clone(),
    };
    let recorded = store.record_payment(&payment).await?;
    let seq_of = |id: i64| open.iter().find(|i| i.id == id).map_or(0, |i| i.seq);
    let lines = |v: &[Allocation]| {
        v.iter()
            .map(|a| AllocationLine {
                installment_id: a.installment_id,
                seq: seq_of(a.installment_id),
                component: a.component.as_str(),
                charge_id: a.charge_id,
                amount: fmt(a.amount_minor),
            })
            .collect::<Vec<_>>()
    };
    let waived_total: i64 = waived.iter().map(|w| w.amount_minor).sum();
    let remaining = if req.settle { 0 } else { owed - amount.minor() };
    tracing::info!(
        agreement = %agreement.external_id,
        amount = %amount,
        settlement = req.settle,
        "payment recorded"
    );
    Ok(PaymentSummary {
        payment_id: recorded.payment_id,
        agreement: agreement.external_id,
        reference: reference.to_string(),
        currency: currency.code().to_string(),
        amount: amount.plain(),
        received_at: from_epoch_ms(to_epoch_ms(received_at)).to_rfc3339(),
        settlement: req.settle,
        allocations: lines(&allocations),
        waived: lines(&waived),
        waived_total: fmt(waived_total),
        installments_paid: recorded
            .installments_paid
            .iter()
            .map(|id| seq_of(*id))
            .collect(),
        agreement_completed: recorded.agreement_completed,
        delinquency_cleared: recorded.delinquency_cleared,
        remaining: fmt(remaining),
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    })
}
