//! `repayd attempts list|requeue`: debit attempts that need an operator. A funds check or
//! debit the gateway rejected (400/401/403/415/422) stops in `rejected` and is never resent
//! by itself; after fixing the cause (token, settings, data) an operator re-queues it, with
//! a name and a reason that go into the event log.

use crate::clock::from_epoch_ms;
use crate::engine::operator;
use crate::store::Store;
use crate::store::debits::AttemptRow;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct AttemptsArgs {
    #[command(subcommand)]
    pub command: AttemptsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AttemptsCommand {
    /// List debit attempts in one state (default: rejected, those waiting for an operator).
    List {
        #[arg(long, default_value = "rejected")]
        state: String,
        /// At most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Re-queue a rejected attempt after fixing its cause: it runs again from its funds
    /// check, under the same idempotency key.
    Requeue {
        #[arg(value_name = "ATTEMPT_ID")]
        attempt_id: i64,
        /// `--reason`: why it may run now, e.g. "gateway token rotated".
        #[command(flatten)]
        actor: super::ActorArgs,
    },
}

pub async fn run(
    store: &Store,
    now: DateTime<Utc>,
    args: &AttemptsArgs,
) -> anyhow::Result<ExitCode> {
    match &args.command {
        AttemptsCommand::List { state, limit } => {
            let rows = store.attempts_in_state(state, i64::from(*limit)).await?;
            print!("{}", render_list(&rows));
            Ok(ExitCode::SUCCESS)
        }
        AttemptsCommand::Requeue { attempt_id, actor } => {
            let result = match actor.resolve(None) {
                Ok(actor) => operator::requeue_attempt(store, now, &actor, *attempt_id).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(r) => {
                    println!(
                        "debit attempt {} (installment {}, attempt {}) re-queued by {}: it runs \
                         again from its funds check at the daemon's next pass, key {}",
                        r.attempt_id, r.installment_id, r.attempt_no, r.actor, r.idempotency_key
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => super::refused("attempt not re-queued", &e),
            }
        }
    }
}

fn render_list(rows: &[AttemptRow]) -> String {
    let mut out = String::from("ID\tINSTALLMENT\tATTEMPT\tSTATE\tFINISHED\tOUTCOME\tDETAIL\n");
    for r in rows {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            r.id,
            r.installment_id,
            r.attempt_no,
            r.state,
            r.finished_at_ms
                .map(|ms| from_epoch_ms(ms).to_rfc3339())
                .unwrap_or_else(|| "-".into()),
            r.outcome_code.as_deref().unwrap_or("-"),
            r.outcome_detail.as_deref().unwrap_or("-"),
        ));
    }
    out
}
