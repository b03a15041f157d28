//! Agreement life cycle: `repayd agreements pause|resume|cancel ID` and
//! `repayd mandates revoke ACCOUNT_REF`.
//!
//! - pause: no debits are planned or run (scheduled attempts and pending reminders are
//!   cancelled; the planner and the assessment's emails skip paused agreements; overdue
//!   state is still tracked, a pause does not stop the clock on what is owed).
//! - resume: back to active, and every unpaid installment due within the planning horizon
//!   whose attempts were cancelled gets its next attempt number planned explicitly (the
//!   planner only creates attempt 1 for installments with no attempt at all).
//! - cancel: final; planned work cancelled, overdue state cleared.
//! - mandate revoke: no more debits on that account; scheduled attempts fail with
//!   `mandate_revoked` and the customer gets one `debit_failed` email (failure
//!   MandateInvalid) per installment, asking them to pay another way.

use crate::clock::to_epoch_ms;
use crate::domain::worktime;
use crate::engine::Engine;
use crate::engine::policy::EnginePolicy;
use crate::store::debits::NewAttempt;
use crate::store::{NewEvent, Store};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LifecycleCommand {
    /// Pause an agreement: no debits planned or run, reminders stop, until resumed.
    Pause(LifecycleArgs),
    /// Resume a paused agreement and re-plan its debits.
    Resume(LifecycleArgs),
    /// Cancel an agreement for good: nothing more is planned, sent or debited.
    Cancel(LifecycleArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct LifecycleArgs {
    /// The agreement's external id or numeric id.
    #[arg(value_name = "ID_OR_EXTERNAL_ID")]
    pub agreement: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct MandatesArgs {
    #[command(subcommand)]
    pub command: MandatesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MandatesCommand {
    /// Revoke the debit mandate of a funding account: no more debits; customers are
    /// emailed to pay by other means.
    Revoke {
        /// The funding account's reference, as imported.
        #[arg(value_name = "ACCOUNT_REF")]
        account_ref: String,
    },
}

/// What a life-cycle change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleOutcome {
    pub agreement_id: i64,
    pub previous_status: String,
    pub attempts_planned: u64,
}

/// Pauses, resumes or cancels one agreement.
pub async fn change(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    command: &LifecycleCommand,
) -> anyhow::Result<LifecycleOutcome> {
    let now_ms = to_epoch_ms(now);
    let (key, from, to, kind): (&str, &[&str], &'static str, &'static str) = match command {
        LifecycleCommand::Pause(a) => (&a.agreement, &["active"], "paused", "agreement_paused"),
        LifecycleCommand::Resume(a) => (&a.agreement, &["paused"], "active", "agreement_resumed"),
        LifecycleCommand::Cancel(a) => (
            &a.agreement,
            &["active", "paused"],
            "cancelled",
            "agreement_cancelled",
        ),
    };
    let agreement = store.agreement_ref(key).await?;
    let previous = store
        .change_agreement_status(agreement.id, from, to, kind, now_ms)
        .await?;
    let mut outcome = LifecycleOutcome {
        agreement_id: agreement.id,
        previous_status: previous,
        attempts_planned: 0,
    };
    if to == "active" {
        let tz: chrono_tz::Tz = agreement
            .time_zone
            .parse()
            .map_err(|_| anyhow::anyhow!("bad time zone {:?}", agreement.time_zone))?;
        let horizon = (now + Duration::days(i64::from(policy.debit.horizon_days) + 1))
            .date_naive()
            .format("%Y-%m-%d")
            .to_string();
        let deployment = store.deployment_id().await?;
        for c in store.resume_candidates(agreement.id, &horizon).await? {
            let due = NaiveDate::parse_from_str(&c.due_date, "%Y-%m-%d")?;
            let today = worktime::local_date(now, tz);
            let mut at = worktime::local_instant(due.max(today), policy.debit.local_time, tz);
            if at < now {
                at =
                    worktime::local_instant(today + Duration::days(1), policy.debit.local_time, tz);
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
            };
            let event = NewEvent {
                at_ms: now_ms,
                kind: "debit_attempt_planned",
                agreement_id: Some(agreement.id),
                installment_id: Some(c.installment_id),
                attempt_id: None,
                detail: serde_json::json!({
                    "attempt_no": attempt_no, "scheduled_at": at.to_rfc3339(),
                    "amount_minor": attempt.amount_minor, "reason": "resume",
                }),
            };
            if store.insert_attempt(&attempt, &event).await? {
                outcome.attempts_planned += 1;
            }
        }
    }
    Ok(outcome)
}

/// Revokes a mandate; returns the agreements whose planned debits were stopped.
pub async fn revoke_mandate(
    store: &Store,
    policy: &EnginePolicy,
    now: DateTime<Utc>,
    account_ref: &str,
) -> anyhow::Result<Vec<i64>> {
    let tz = store
        .account_time_zone(account_ref)
        .await?
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    let notice_at = policy.reminders.quiet.next_allowed(now, tz);
    Ok(store
        .revoke_mandate(account_ref, true, to_epoch_ms(notice_at), to_epoch_ms(now))
        .await?)
}

pub async fn run_agreements(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    command: &LifecycleCommand,
) -> anyhow::Result<ExitCode> {
    let policy = EnginePolicy::from_settings(settings)?;
    let outcome = change(store, &policy, now, command).await?;
    let verb = match command {
        LifecycleCommand::Pause(_) => "paused: scheduled debits and reminders cancelled",
        LifecycleCommand::Resume(_) => "resumed",
        LifecycleCommand::Cancel(_) => "cancelled: nothing more is planned, sent or debited",
    };
    println!(
        "agreement {} {verb} (was {}){}",
        outcome.agreement_id,
        outcome.previous_status,
        if outcome.attempts_planned > 0 {
            format!("; {} debit attempt(s) re-planned", outcome.attempts_planned)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run_mandates(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    args: &MandatesArgs,
) -> anyhow::Result<ExitCode> {
    let policy = EnginePolicy::from_settings(settings)?;
    match &args.command {
        MandatesCommand::Revoke { account_ref } => {
            let agreements = revoke_mandate(store, &policy, now, account_ref).await?;
            println!(
                "mandate of account {} revoked; scheduled debits stopped on {} agreement(s); \
                 customers are emailed to pay by other means",
                crate::mask::account(account_ref),
                agreements.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
