//! `repayd sandbox return KEY`: the embedded sandbox bank returns a debit it booked, as a
//! real bank does after a failed settlement or a dispute, for demos and tests. The money
//! goes back to the account and the return joins the sandbox's returns feed; the running
//! daemon picks it up on its next read of the feed (`debit.returns_poll_seconds`).

use crate::store::Store;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: SandboxCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SandboxCommand {
    /// Return the succeeded debit booked under an idempotency key (see `repayd attempts
    /// list --state succeeded` or `agreements show`).
    Return {
        #[arg(value_name = "IDEMPOTENCY_KEY")]
        key: String,
        /// The reason code the bank gives, e.g. insufficient_funds, debit_disputed.
        #[arg(long, default_value = "insufficient_funds")]
        reason: String,
        /// A return after which the lender must not debit again without the customer
        /// (mandate cancelled, account closed, dispute).
        #[arg(long)]
        hard: bool,
    },
}

pub async fn run(
    store: &Store,
    now: DateTime<Utc>,
    args: &SandboxArgs,
) -> anyhow::Result<ExitCode> {
    match &args.command {
        SandboxCommand::Return { key, reason, hard } => {
            let reason = reason.trim();
            anyhow::ensure!(
                !reason.is_empty()
                    && reason
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "--reason must be a code of letters, digits, '_' or '-', e.g. insufficient_funds"
            );
            let row = store
                .sandbox_return_debit(key, reason, *hard, crate::clock::to_epoch_ms(now))
                .await?;
            println!(
                "sandbox returned debit {} ({} minor units {}), return {} ({reason}{}); the daemon applies it at its next read of the returns feed",
                row.gateway_ref,
                row.amount_minor,
                row.currency,
                row.return_id,
                if *hard { ", hard" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
