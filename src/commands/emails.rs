//! `repayd emails list|resend`: customer emails that need an operator. An email the mail
//! server refused for good, or that could not be rendered, stops in `failed` and is never
//! sent again by itself; one the server deferred is retried with backoff. After fixing
//! the cause an operator sends it again through [`operator::resend_email`], with a name
//! and a reason that go into the event log; the conversation gate still decides, just
//! before it leaves, whether it is true and may go now.

use crate::engine::operator;
use crate::store::Store;
use crate::store::console::QueuedEmailRow;
use chrono::{DateTime, Utc};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct EmailsArgs {
    #[command(subcommand)]
    pub command: EmailsCommand,
}

/// Which emails `emails list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmailQueue {
    /// Refused for good by the mail server, or not renderable: latest first.
    Failed,
    /// Waiting for another try after a transient mail server failure: next first.
    Deferred,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum EmailsCommand {
    /// List failed emails (default) or those deferred after a mail server failure.
    List {
        #[arg(long, value_enum, default_value = "failed")]
        state: EmailQueue,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send a failed (or deferred) email again, now. It passes the conversation gate
    /// like any other: if what it says is no longer true (e.g. the installment was paid
    /// since) it is cancelled with the reason instead of sent; quiet hours still apply.
    Resend {
        #[arg(value_name = "EMAIL_ID")]
        reminder_id: i64,
        /// `--reason`: why it may go now, e.g. "mailbox fixed, customer called".
        #[command(flatten)]
        actor: super::ActorArgs,
    },
}

pub async fn run(store: &Store, now: DateTime<Utc>, args: &EmailsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        EmailsCommand::List { state, limit } => {
            let limit = i64::from(*limit);
            let (rows, total) = match state {
                EmailQueue::Failed => store.console_failed_emails(limit).await?,
                EmailQueue::Deferred => store.console_deferred_emails(limit).await?,
            };
            print!("{}", render_list(&rows, total));
            Ok(ExitCode::SUCCESS)
        }
        EmailsCommand::Resend { reminder_id, actor } => {
            let result = match actor.resolve(None) {
                Ok(actor) => operator::resend_email(store, now, &actor, *reminder_id).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(r) => {
                    println!(
                        "email {} ({}, agreement {}, installment {}) was {}; re-queued by {}: \
                         the daemon's message loop sends it now, unless the conversation gate \
                         finds it no longer true (then it is cancelled, with the reason) or \
                         it is quiet hours for the customer (then it waits)",
                        r.reminder_id,
                        r.kind,
                        r.agreement_id,
                        r.installment_id,
                        r.previous_state,
                        r.actor
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => super::refused("email not re-queued", &e),
            }
        }
    }
}

fn render_list(rows: &[QueuedEmailRow], total: i64) -> String {
    let mut out = String::from("ID\tAGREEMENT\tKIND\tSTATE\tTRIES\tUPDATED\tERROR\n");
    for r in rows {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            r.id,
            r.agreement_external_id,
            r.kind,
            r.state,
            r.tries,
            crate::clock::from_epoch_ms(r.updated_at_ms).to_rfc3339(),
            r.last_error
                .as_deref()
                .map(crate::mask::emails_in)
                .unwrap_or_else(|| "-".into()),
        ));
    }
    out.push_str(&format!("{} of {total}\n", rows.len()));
    out
}
