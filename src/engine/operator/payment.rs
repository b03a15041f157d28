//! `payments record` as a library call: money received by other means (bank transfer,
//! cash), or an early settlement. Allocated oldest installment first, within each in the
//! `payments.allocation` order; a reference is accepted once; an amount above what is
//! owed is refused (nothing is written) unless `settle` makes it the settlement figure.
//!
//! Settlement on the customer's local date of receipt: every open charge, everything of
//! installments already due, the principal of installments not yet due and, under
//! `[payments.settlement] interest = "accrued"`, the interest accrued on that principal
//! since the last due date (`domain::settlement`). The rest of their interest and their
//! fees are waived, and the summary says how much. [`settlement_quote`] gives the figure
//! without recording anything.

use super::{Actor, OperatorError, Result};
use crate::clock::{from_epoch_ms, to_epoch_ms};
use crate::domain::delinquency::{
    Allocation, Component, OpenInstallment, SettlementQuote, allocate, allocate_settlement,
    outstanding_future_principal,
};
use crate::domain::settlement::{self, Accrual, SettlementPolicy};
use crate::domain::{Currency, Frequency, Money, worktime};
use crate::engine::overdue::open_for_allocation;
use crate::engine::policy::EnginePolicy;
use crate::store::Store;
use crate::store::payments::NewPayment;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
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
    /// Settlement: the interest charged for the current period and how it was computed.
    pub accrual: Option<AccrualLine>,
    pub installments_paid: Vec<i64>,
    pub agreement_completed: bool,
    pub delinquency_cleared: bool,
    /// Still owed on the agreement after this payment (installments and charges).
    pub remaining: String,
    pub actor: String,
    pub reason: String,
}

/// The interest a settlement charges for the current period, and how it was computed.
#[derive(Debug, Clone, Serialize)]
pub struct AccrualLine {
    /// `accrued` or `principal_only` (`[payments.settlement] interest`).
    pub policy: &'static str,
    /// `act/365`, `act/360` or `30/360` (`[payments.settlement] day_count`).
    pub day_count: &'static str,
    /// The agreement's nominal annual rate ("0" for an explicit schedule: none on record).
    pub annual_rate: String,
    /// Outstanding principal the interest runs on.
    pub principal: String,
    pub from: String,
    pub to: String,
    pub days: i64,
    /// As charged: the accrual, capped at the interest the schedule still holds.
    pub accrued_interest: String,
}

/// What settling an agreement costs on a date, nothing recorded.
#[derive(Debug, Clone, Serialize)]
pub struct SettlementSummary {
    pub agreement: String,
    pub currency: String,
    pub date: String,
    pub charges: String,
    pub due: String,
    pub principal: String,
    pub accrual: AccrualLine,
    pub waived_interest: String,
    pub waived_fees: String,
    pub total: String,
}

/// The interest terms an agreement accrues on: its nominal annual rate and the start of
/// its first period, from the terms it was imported with. An explicit schedule has no rate
/// on record: it accrues nothing (its first period is taken as the month before its first
/// due date).
fn interest_terms(
    terms_json: Option<&str>,
    first_due: Option<NaiveDate>,
) -> (Decimal, Option<NaiveDate>) {
    let terms = terms_json.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok());
    let field = |k: &str| {
        terms
            .as_ref()
            .and_then(|t| t.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let rate = field("annual_rate")
        .and_then(|r| crate::domain::parse_decimal(&r))
        .unwrap_or(Decimal::ZERO);
    let frequency = match field("frequency").as_deref() {
        Some("biweekly") => Frequency::Biweekly,
        Some("weekly") => Frequency::Weekly,
        _ => Frequency::Monthly,
    };
    let first = field("first_due")
        .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
        .or(first_due);
    (
        rate,
        first.and_then(|f| settlement::first_period_start(f, frequency)),
    )
}

/// The settlement figure of an agreement on `today`: the quote and the accrual it used.
async fn settlement_figures(
    store: &Store,
    policy: SettlementPolicy,
    order: &[Component],
    agreement_id: i64,
    insts: &[OpenInstallment],
    today: NaiveDate,
) -> Result<(SettlementQuote, Accrual)> {
    let row = store.agreement(agreement_id).await?;
    let all = store.installments(agreement_id).await?;
    let dues: Vec<NaiveDate> = all
        .iter()
        .filter_map(|i| NaiveDate::parse_from_str(&i.due_date, "%Y-%m-%d").ok())
        .collect();
    let (rate, period_start) = interest_terms(
        row.as_ref().and_then(|a| a.terms_json.as_deref()),
        dues.iter().min().copied(),
    );
    let from = settlement::accrual_start(dues, today, period_start.unwrap_or(today));
    let principal = outstanding_future_principal(order, insts, today);
    let accrual = settlement::accrue(policy, rate, principal, from, today);
    let quote = crate::domain::delinquency::settlement_quote(order, insts, today, accrual.minor);
    Ok((quote, accrual))
}

fn accrual_line(a: &Accrual, q: &SettlementQuote, fmt: &dyn Fn(i64) -> String) -> AccrualLine {
    AccrualLine {
        policy: a.interest.as_str(),
        day_count: a.day_count.as_str(),
        annual_rate: a.annual_rate.normalize().to_string(),
        principal: fmt(a.principal_minor),
        from: a.from.format("%Y-%m-%d").to_string(),
        to: a.to.format("%Y-%m-%d").to_string(),
        days: a.days,
        accrued_interest: fmt(q.accrued_interest_minor),
    }
}

/// What settling `agreement` would take on `date` (the customer's local date; default
/// today there). Nothing is written.
pub async fn settlement_quote(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    agreement: &str,
    date: Option<NaiveDate>,
) -> Result<SettlementSummary> {
    let policy = &policy.overdue;
    let agreement = store.agreement_ref(agreement).await?;
    if agreement.status != "active" && agreement.status != "paused" {
        return Err(OperatorError::Refused(format!(
            "agreement {} is {}: nothing is owed on it",
            agreement.external_id, agreement.status
        )));
    }
    let currency =
        Currency::parse(&agreement.currency).map_err(|e| OperatorError::Refused(e.to_string()))?;
    let tz = agreement
        .time_zone
        .parse::<chrono_tz::Tz>()
        .map_err(|_| OperatorError::Refused(format!("bad time zone {:?}", agreement.time_zone)))?;
    let today = date.unwrap_or_else(|| worktime::local_date(now, tz));
    let open = store.open_installments(agreement.id).await?;
    let charges = store.charges_for_agreement(agreement.id).await?;
    let insts =
        open_for_allocation(&open, &charges).map_err(|e| OperatorError::Refused(e.to_string()))?;
    let (q, accrual) = settlement_figures(
        store,
        policy.settlement,
        &policy.allocation,
        agreement.id,
        &insts,
        today,
    )
    .await?;
    let fmt = |m: i64| Money::from_minor(m, currency).plain();
    Ok(SettlementSummary {
        agreement: agreement.external_id,
        currency: currency.code().to_string(),
        date: today.format("%Y-%m-%d").to_string(),
        charges: fmt(q.charges_minor),
        due: fmt(q.due_minor),
        principal: fmt(q.future_principal_minor),
        accrual: accrual_line(&accrual, &q, &fmt),
        waived_interest: fmt(q.waived_interest_minor),
        waived_fees: fmt(q.waived_fees_minor),
        total: fmt(q.total_minor()),
    })
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
    let mut accrual = None;
    let (allocations, waived) = if req.settle {
        let (quote, a) =
            settlement_figures(store, policy.settlement, order, agreement.id, &insts, today)
                .await?;
        if amount.minor() != quote.total_minor() {
            return Err(OperatorError::Refused(format!(
                "settling agreement {} on {today} takes exactly {} {}: charges {} + due {} + \
                 remaining principal {} + accrued interest {} ({}, {}, {} days from {}; future \
                 interest {} and fees {} waived); --amount {} does not match, nothing was \
                 recorded",
                agreement.external_id,
                fmt(quote.total_minor()),
                currency.code(),
                fmt(quote.charges_minor),
                fmt(quote.due_minor),
                fmt(quote.future_principal_minor),
                fmt(quote.accrued_interest_minor),
                a.interest.as_str(),
                a.day_count.as_str(),
                a.days,
                a.from,
                fmt(quote.waived_interest_minor),
                fmt(quote.waived_fees_minor),
                amount.plain(),
            )));
        }
        accrual = Some(accrual_line(&a, &quote, &fmt));
        allocate_settlement(order, &insts, today, quote.accrued_interest_minor)
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
        accrual,
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
