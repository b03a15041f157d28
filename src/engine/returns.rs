//! Returned debits (protocol 1.1): the daemon reads the gateway's returns feed from where
//! it last stopped and applies each return once. For each, the engine decides what follows
//! (the retry by policy unless the bank said `hard`, the customer's notice) and the store
//! applies it all with the cursor's move in one transaction (`store::returns`), so a crash
//! between reading a page and committing it simply reads the page again, and a page read
//! twice changes nothing the second time. Delinquency is then reassessed, so days past due
//! count again from the installment's original due date.

use super::policy::RetryKind;
use super::{Engine, EngineError, parse_date, parse_tz};
use crate::clock::to_epoch_ms;
use crate::store::StoreError;
use crate::store::debits::NewAttempt;
use crate::store::reminders::NewReminder;
use crate::store::returns::{ReturnToApply, ReturnsApplied};

/// The feed's name in `gateway_cursors`.
const RETURNS_FEED: &str = "returns";
/// Returns read per page (and applied per transaction).
const RETURNS_PAGE: u32 = 100;

impl Engine {
    /// Reads the returns feed to its end and applies what is new. Does nothing for a
    /// gateway without a feed.
    pub async fn poll_returns(&self) -> Result<ReturnsApplied, EngineError> {
        let mut total = ReturnsApplied::default();
        loop {
            let cursor = self.store.gateway_cursor(RETURNS_FEED).await?;
            let page = match self
                .gateway
                .returns_after(cursor.as_deref(), RETURNS_PAGE)
                .await
            {
                Ok(None) => return Ok(total),
                Ok(Some(page)) => page,
                Err(e) => return Err(EngineError::Gateway(format!("returns feed: {e}"))),
            };
            let mut batch = Vec::with_capacity(page.returns.len());
            for r in &page.returns {
                batch.push(self.return_to_apply(r).await?);
            }
            let now_ms = to_epoch_ms(self.clock.now());
            let done = match self
                .store
                .apply_returns(
                    RETURNS_FEED,
                    cursor.as_deref(),
                    &page.next_cursor,
                    &batch,
                    now_ms,
                )
                .await
            {
                Ok(done) => done,
                // Another daemon applied this page first: read on from where it stopped.
                Err(StoreError::Conflict(reason)) => {
                    tracing::info!(%reason, "returns page taken by another daemon");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for r in &page.returns {
                tracing::warn!(
                    return_id = %r.return_id,
                    key = %r.idempotency_key,
                    amount = %r.amount,
                    reason = %r.reason_code,
                    hard = r.hard,
                    "debit returned by the bank"
                );
            }
            total.applied += done.applied;
            total.repeated += done.repeated;
            total.unmatched += done.unmatched;
            if page.returns.is_empty() || cursor.as_deref() == Some(page.next_cursor.as_str()) {
                break;
            }
        }
        if total.applied > 0 {
            // Days past due from the original due date, at once rather than at the next tick.
            self.assess_overdue().await?;
        }
        Ok(total)
    }

    /// What one return leads to: its attempt, the retry by policy and the notice.
    async fn return_to_apply(
        &self,
        r: &crate::gateway::DebitReturn,
    ) -> Result<ReturnToApply, EngineError> {
        let mut apply = ReturnToApply {
            return_id: r.return_id.clone(),
            debit_id: r.debit_id.clone(),
            idempotency_key: r.idempotency_key.clone(),
            amount_minor: r.amount.minor(),
            currency: r.amount.currency().code().to_string(),
            reason_code: r.reason_code.clone(),
            hard: r.hard,
            attempt: None,
            next_attempt: None,
            notice: None,
        };
        let Some(attempt) = self.store.returned_attempt(&r.idempotency_key).await? else {
            tracing::error!(key = %r.idempotency_key, "a return for a debit this deployment never sent; operations must check");
            return Ok(apply);
        };
        if attempt.state != "succeeded" || attempt.currency != apply.currency {
            tracing::error!(key = %r.idempotency_key, state = %attempt.state, "a return for a debit that did not succeed here; recorded, nothing reversed");
            apply.attempt = Some(attempt);
            return Ok(apply);
        }
        let policy = self.policy();
        let now = self.clock.now();
        let tz = parse_tz(&attempt.time_zone)?;
        let (last_no, planned) = self
            .store
            .installment_attempt_state(attempt.installment_id)
            .await?;
        // A hard return (mandate cancelled, account closed, dispute) is never retried
        // automatically; nor is one whose installment already has an attempt planned.
        if !r.hard && !planned {
            let at = policy.retry.next_attempt_at(
                RetryKind::Returned,
                attempt.attempt_no as u32,
                parse_date(&attempt.due_date)?,
                now,
                tz,
                policy.debit.local_time,
            );
            if let Some(at) = at {
                let next_no = last_no + 1;
                apply.next_attempt = Some(NewAttempt {
                    installment_id: attempt.installment_id,
                    agreement_id: attempt.agreement_id,
                    attempt_no: next_no,
                    idempotency_key: Self::idempotency_key(
                        &policy.debit.key_prefix,
                        self.deployment_id().await?,
                        attempt.installment_id,
                        next_no,
                    ),
                    scheduled_at_ms: to_epoch_ms(at),
                    amount_minor: attempt.amount_minor,
                    currency: attempt.currency.clone(),
                    retry_reason: None,
                });
            }
        }
        if self.mail.is_some() {
            let ctx = self.store.debit_context(attempt.attempt_id).await?;
            apply.notice = Some(NewReminder {
                installment_id: attempt.installment_id,
                agreement_id: attempt.agreement_id,
                kind: "debit_returned",
                // One notice per returned attempt.
                offset_key: attempt.attempt_no,
                scheduled_at_ms: to_epoch_ms(policy.reminders.quiet.next_allowed(now, tz)),
                detail: serde_json::json!({
                    "amount_minor": r.amount.minor().min(attempt.amount_minor),
                    "reason_code": r.reason_code,
                    "hard": r.hard,
                    "debit_id": r.debit_id,
                    "account_ref": ctx.account_ref,
                    "paid_at_ms": self.store.attempt_finished_ms(attempt.attempt_id).await?,
                }),
            });
        }
        apply.attempt = Some(attempt);
        Ok(apply)
    }
}
