//! Rescheduling an agreement by hand: a payment holiday or a new term
//! ([`crate::domain::reschedule`] computes it, [`crate::store::reschedule`] writes it).
//!
//! What moves: the unpaid installments due today or later, all of them, nothing paid on
//! them and no debit of theirs in flight. What never moves: paid installments, and
//! installments already past their due date (arrears): they stay due on their dates, keep
//! counting days past due and keep their retries, so a reschedule cannot hide an overdue
//! account; arrears are cleared by paying them (`payments record`), not by moving them.
//! The moved installments are cancelled (kept, with the event, for the audit trail) with
//! their planned debits and reminders, and the new ones are written after them: the
//! planner plans their debits and pre-due reminders like any others, and the customer
//! gets one `schedule_changed` email listing the new dates and amounts.

use super::{OperatorError, Result};
use crate::clock::to_epoch_ms;
use crate::domain::reschedule::{self, Change, MovedInstallment};
use crate::domain::{Actor, Currency, HolidayCalendar, Money, worktime};
use crate::engine::policy::EnginePolicy;
use crate::store::agreements::{InstallmentRow, NewInstallment};
use crate::store::reschedule::{IN_FLIGHT_STATES, RescheduleWrite};
use crate::store::{NewEvent, Store};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

/// What to do, as asked on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescheduleRequest {
    /// `--holiday N`: skip N periods.
    Holiday(u32),
    /// `--term N`: the agreement ends with N installments in all (those kept included).
    Term(u32),
    /// `--remaining-installments N`: what is moved becomes N installments.
    Remaining(u32),
}

/// One line of a schedule as shown (amounts are decimal strings in the currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleLine {
    pub seq: i64,
    pub due_date: String,
    pub principal: String,
    pub interest: String,
    pub fee: String,
    pub total: String,
}

/// A reschedule, previewed or applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RescheduleSummary {
    pub agreement_id: i64,
    pub external_id: String,
    pub currency: String,
    /// `holiday` or `term`.
    pub mode: String,
    /// Periods skipped (holiday) or installments the moved part became (term).
    pub n: u32,
    pub applied: bool,
    /// Past their due date and unpaid: left as they are (see the module docs).
    pub arrears: Vec<ScheduleLine>,
    /// The installments replaced, and what replaces them.
    pub old: Vec<ScheduleLine>,
    pub new: Vec<ScheduleLine>,
    pub principal_moved: String,
    pub old_total: String,
    pub new_total: String,
    pub attempts_cancelled: u64,
    pub reminders_cancelled: u64,
    /// When the customer's `schedule_changed` email is due (RFC 3339), once applied.
    pub notice_at: Option<String>,
    pub actor: String,
    pub reason: String,
}

/// Computes the reschedule of `agreement` and, with `apply`, writes it (see the module
/// docs). Without `apply` nothing is written: the summary is the preview.
#[allow(clippy::too_many_arguments)]
pub async fn reschedule_agreement(
    store: &Store,
    policy: &EnginePolicy,
    calendar: &HolidayCalendar,
    now: DateTime<Utc>,
    actor: &Actor,
    agreement: &str,
    request: RescheduleRequest,
    apply: bool,
) -> Result<RescheduleSummary> {
    let refuse = |m: String| Err(OperatorError::Refused(m));
    let Some(detail) = store.agreement_detail(agreement).await? else {
        return refuse(format!("agreement {agreement} not found"));
    };
    let a = &detail.agreement;
    if !matches!(a.status.as_str(), "active" | "paused") {
        return refuse(format!(
            "agreement {} is {}: only an active or paused agreement can be rescheduled",
            a.external_id, a.status
        ));
    }
    let Some(terms_json) = a.terms_json.as_deref() else {
        return refuse(format!(
            "agreement {} has an explicit schedule (no terms to recompute it from); \
             re-import it with the new schedule instead",
            a.external_id
        ));
    };
    let currency =
        Currency::parse(&a.currency).map_err(|e| OperatorError::Refused(e.to_string()))?;
    let minor_to_dec = |m: i64| Money::from_minor(m, currency).amount();
    let (terms, anchor) =
        reschedule::stored_terms(terms_json, currency, minor_to_dec(a.principal_minor))
            .map_err(|e| OperatorError::Refused(format!("agreement {}: {e}", a.external_id)))?;
    let tz: chrono_tz::Tz = detail.customer.time_zone.parse().map_err(|_| {
        OperatorError::Refused(format!("bad time zone {:?}", detail.customer.time_zone))
    })?;
    let today = worktime::local_date(now, tz).format("%Y-%m-%d").to_string();

    let live: Vec<&InstallmentRow> = detail
        .installments
        .iter()
        .filter(|i| i.status != "cancelled")
        .collect();
    let arrears: Vec<&InstallmentRow> = live
        .iter()
        .copied()
        .filter(|i| i.status == "unpaid" && i.due_date < today)
        .collect();
    let moved: Vec<&InstallmentRow> = live
        .iter()
        .copied()
        .filter(|i| i.status == "unpaid" && i.due_date >= today)
        .collect();
    let Some(first) = moved.first() else {
        return refuse(format!(
            "agreement {} has no unpaid installment due today or later to reschedule",
            a.external_id
        ));
    };
    if let Some(part) = moved.iter().find(|i| i.paid_minor > 0) {
        return refuse(format!(
            "installment {} (due {}) is partly paid ({} of {}); a reschedule moves only \
             installments with nothing paid: record the rest first",
            part.seq,
            part.due_date,
            Money::from_minor(part.paid_minor, currency).plain(),
            Money::from_minor(part.total_minor, currency).plain()
        ));
    }
    if let Some(ahead) = live
        .iter()
        .find(|i| i.status == "paid" && i.seq > first.seq)
    {
        return refuse(format!(
            "installment {} was paid ahead of installment {}; a reschedule moves only the \
             unpaid installments after the last paid one",
            ahead.seq, first.seq
        ));
    }
    let attempts = store.attempts_for_agreement(a.id).await?;
    if let Some(busy) = attempts.iter().find(|x| {
        IN_FLIGHT_STATES.contains(&x.state.as_str())
            && moved.iter().any(|i| i.id == x.installment_id)
    }) {
        let seq = moved
            .iter()
            .find(|i| i.id == busy.installment_id)
            .map_or(0, |i| i.seq);
        return refuse(format!(
            "installment {seq} has a debit in flight (attempt {}, {}); nothing was changed: \
             wait for its outcome and try again",
            busy.id, busy.state
        ));
    }

    let change = match request {
        RescheduleRequest::Holiday(n) => Change::Holiday { periods: n },
        RescheduleRequest::Remaining(n) => Change::Term { installments: n },
        RescheduleRequest::Term(n) => {
            let kept = (live.len() - moved.len()) as u32;
            if n <= kept {
                return refuse(format!(
                    "--term {n}: the agreement keeps {kept} installment(s) (paid or past due), \
                     so the term must be more than {kept}"
                ));
            }
            Change::Term {
                installments: n - kept,
            }
        }
    };
    let moved_lines: Vec<MovedInstallment> = moved
        .iter()
        .map(|i| {
            Ok(MovedInstallment {
                seq: u32::try_from(i.seq).map_err(|_| bad_row(i))?,
                due_date: NaiveDate::parse_from_str(&i.due_date, "%Y-%m-%d")
                    .map_err(|_| bad_row(i))?,
                principal: minor_to_dec(i.principal_minor),
                total: minor_to_dec(i.total_minor),
            })
        })
        .collect::<Result<_>>()?;
    let next_seq = detail.installments.iter().map(|i| i.seq).max().unwrap_or(0) + 1;
    let next_seq = u32::try_from(next_seq).map_err(|_| bad_row(first))?;
    let computed = reschedule::reschedule(&terms, anchor, &moved_lines, change, next_seq, calendar)
        .map_err(|e| OperatorError::Refused(format!("agreement {}: {e}", a.external_id)))?;

    let minor = |d: Decimal| {
        Money::from_decimal(d, currency)
            .map(|m| m.minor())
            .map_err(|e| OperatorError::Refused(e.to_string()))
    };
    let mut new_rows = Vec::with_capacity(computed.installments.len());
    for l in &computed.installments {
        new_rows.push(NewInstallment {
            seq: i64::from(l.seq),
            due_date: l.due_date.format("%Y-%m-%d").to_string(),
            principal_minor: minor(l.principal)?,
            interest_minor: minor(l.interest)?,
            fee_minor: minor(l.fee)?,
        });
    }
    let sum = |rows: &[&InstallmentRow], f: fn(&InstallmentRow) -> i64| -> i64 {
        rows.iter().map(|i| f(i)).sum()
    };
    let old_total = sum(&moved, |i| i.total_minor);
    let new_total: i64 = new_rows
        .iter()
        .map(|r| r.principal_minor + r.interest_minor + r.fee_minor)
        .sum();
    let new_interest: i64 = new_rows.iter().map(|r| r.interest_minor).sum();
    let new_fee: i64 = new_rows.iter().map(|r| r.fee_minor).sum();
    let total_interest = a.total_interest_minor - sum(&moved, |i| i.interest_minor) + new_interest;
    let total_fee = a.total_fee_minor - sum(&moved, |i| i.fee_minor) + new_fee;
    let moved_principal = sum(&moved, |i| i.principal_minor);
    debug_assert_eq!(
        moved_principal,
        new_rows.iter().map(|r| r.principal_minor).sum::<i64>()
    );

    let fmt = |m: i64| Money::from_minor(m, currency).plain();
    let line = |seq: i64, due: &str, p: i64, i: i64, f: i64| ScheduleLine {
        seq,
        due_date: due.to_string(),
        principal: fmt(p),
        interest: fmt(i),
        fee: fmt(f),
        total: fmt(p + i + f),
    };
    let row_line = |r: &&InstallmentRow| {
        line(
            r.seq,
            &r.due_date,
            r.principal_minor,
            r.interest_minor,
            r.fee_minor,
        )
    };
    let (mode, n) = match change {
        Change::Holiday { periods } => ("holiday", periods),
        Change::Term { installments } => ("term", installments),
    };
    let mut summary = RescheduleSummary {
        agreement_id: a.id,
        external_id: a.external_id.clone(),
        currency: currency.code().to_string(),
        mode: mode.to_string(),
        n,
        applied: false,
        arrears: arrears.iter().map(row_line).collect(),
        old: moved.iter().map(row_line).collect(),
        new: new_rows
            .iter()
            .map(|r| {
                line(
                    r.seq,
                    &r.due_date,
                    r.principal_minor,
                    r.interest_minor,
                    r.fee_minor,
                )
            })
            .collect(),
        principal_moved: fmt(moved_principal),
        old_total: fmt(old_total),
        new_total: fmt(new_total),
        attempts_cancelled: 0,
        reminders_cancelled: 0,
        notice_at: None,
        actor: actor.name().to_string(),
        reason: actor.reason().to_string(),
    };
    if !apply {
        return Ok(summary);
    }

    let terms_json = reschedule::with_anchor(terms_json, computed.anchor)
        .map_err(|e| OperatorError::Refused(format!("agreement {}: {e}", a.external_id)))?;
    let notice_at = policy.reminders.quiet.next_allowed(now, tz);
    let event = NewEvent {
        at_ms: to_epoch_ms(now),
        kind: "agreement_rescheduled",
        agreement_id: Some(a.id),
        installment_id: None,
        attempt_id: None,
        detail: actor.stamp(serde_json::json!({
            "mode": mode,
            "n": n,
            "moved": moved.iter().map(|i| serde_json::json!({
                "id": i.id, "seq": i.seq, "due_date": i.due_date, "total_minor": i.total_minor,
            })).collect::<Vec<_>>(),
            "new": new_rows.iter().map(|r| serde_json::json!({
                "seq": r.seq, "due_date": r.due_date,
                "total_minor": r.principal_minor + r.interest_minor + r.fee_minor,
            })).collect::<Vec<_>>(),
            "arrears_kept": arrears.iter().map(|i| i.seq).collect::<Vec<_>>(),
            "principal_moved_minor": moved_principal,
            "old_total_minor": old_total,
            "new_total_minor": new_total,
            "currency": currency.code(),
        })),
    };
    let written = store
        .write_reschedule(
            &RescheduleWrite {
                agreement_id: a.id,
                moved: moved.iter().map(|i| i.id).collect(),
                new_installments: new_rows,
                total_interest_minor: total_interest,
                total_fee_minor: total_fee,
                total_minor: a.principal_minor + total_interest + total_fee,
                expected_updated_at_ms: a.updated_at_ms,
                terms_json,
                event,
                notice_at_ms: Some(to_epoch_ms(notice_at)),
                notice_detail: serde_json::json!({
                    "mode": mode, "n": n,
                    "old_first_due": first.due_date,
                    "old_count": moved.len(),
                }),
            },
            to_epoch_ms(now),
        )
        .await?;
    summary.applied = true;
    summary.attempts_cancelled = written.attempts_cancelled;
    summary.reminders_cancelled = written.reminders_cancelled;
    summary.notice_at = Some(notice_at.to_rfc3339());
    Ok(summary)
}

fn bad_row(i: &InstallmentRow) -> OperatorError {
    OperatorError::Refused(format!(
        "installment {} has a stored seq or due date that cannot be read ({:?})",
        i.seq, i.due_date
    ))
}
