//! Agreement life cycle on the command line: `repayd agreements pause|resume|cancel ID`
//! and `repayd mandates revoke ACCOUNT_REF`. The actions themselves (and what each one
//! does) are in [`crate::engine::operator`]; this file parses, calls and prints.

use super::{ActorArgs, refused};
use crate::engine::operator::{self, AgreementChanged, MandateChanged};
use crate::engine::policy::EnginePolicy;
use crate::store::Store;
use chrono::{DateTime, Utc};
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
    #[command(flatten)]
    pub actor: ActorArgs,
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
        #[command(flatten)]
        actor: ActorArgs,
    },
    /// Reinstate a revoked mandate (the only way one becomes active again; an import
    /// never does it): debits are planned again.
    Reinstate {
        /// The funding account's reference, as imported.
        #[arg(value_name = "ACCOUNT_REF")]
        account_ref: String,
        #[command(flatten)]
        actor: ActorArgs,
    },
}

pub fn render_agreement_change(outcome: &AgreementChanged) -> String {
    let verb = match outcome.status.as_str() {
        "paused" => "paused: scheduled debits and reminders cancelled",
        "active" => "resumed",
        _ => "cancelled: nothing more is planned, sent or debited",
    };
    format!(
        "agreement {} {verb} (was {}){}\n",
        outcome.agreement_id,
        outcome.previous_status,
        if outcome.attempts_planned > 0 {
            format!("; {} debit attempt(s) re-planned", outcome.attempts_planned)
        } else {
            String::new()
        }
    )
}

pub fn render_mandate_change(outcome: &MandateChanged) -> String {
    if outcome.mandate_status == "active" {
        return format!(
            "mandate of account {} reinstated by {}; debits planned again on {} agreement(s)\n",
            outcome.account,
            outcome.actor,
            outcome.agreements.len()
        );
    }
    format!(
        "mandate of account {} revoked; scheduled debits stopped on {} agreement(s); \
         customers are emailed to pay by other means\n",
        outcome.account,
        outcome.agreements.len()
    )
}

pub async fn run_agreements(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    command: &LifecycleCommand,
) -> anyhow::Result<ExitCode> {
    let policy = EnginePolicy::from_settings(settings)?;
    let (args, action) = match command {
        LifecycleCommand::Pause(a) => (a, "pause"),
        LifecycleCommand::Resume(a) => (a, "resume"),
        LifecycleCommand::Cancel(a) => (a, "cancel"),
    };
    let actor = match args.actor.resolve(None) {
        Ok(a) => a,
        Err(e) => return refused("agreement not changed", &e.into()),
    };
    let outcome = match action {
        "pause" => operator::pause_agreement(store, &policy, now, &actor, &args.agreement).await,
        "resume" => operator::resume_agreement(store, &policy, now, &actor, &args.agreement).await,
        _ => operator::cancel_agreement(store, &policy, now, &actor, &args.agreement).await,
    };
    match outcome {
        Ok(o) => {
            print!("{}", render_agreement_change(&o));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refused("agreement not changed", &e),
    }
}

pub async fn run_mandates(
    store: &Store,
    settings: &crate::config::Settings,
    now: DateTime<Utc>,
    args: &MandatesArgs,
) -> anyhow::Result<ExitCode> {
    let policy = EnginePolicy::from_settings(settings)?;
    match &args.command {
        MandatesCommand::Revoke { account_ref, actor } => {
            let actor = match actor.resolve(None) {
                Ok(a) => a,
                Err(e) => return refused("mandate not changed", &e.into()),
            };
            match operator::revoke_mandate(store, &policy, now, &actor, account_ref).await {
                Ok(o) => {
                    print!("{}", render_mandate_change(&o));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused("mandate not changed", &e),
            }
        }
        MandatesCommand::Reinstate { account_ref, actor } => {
            let actor = match actor.resolve(None) {
                Ok(a) => a,
                Err(e) => return refused("mandate not changed", &e.into()),
            };
            match operator::reinstate_mandate(store, &policy, now, &actor, account_ref).await {
                Ok(o) => {
                    print!("{}", render_mandate_change(&o));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => refused("mandate not changed", &e),
            }
        }
    }
}
