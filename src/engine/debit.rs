//! One debit attempt from claim to outcome, and the reconciler for unknown and pending
//! outcomes. The order is the invariant: the attempt and its idempotency key are
//! committed (at planning), the funds check passes, its record and the `submitted` mark
//! are committed (in one transaction), and only then is the gateway asked to debit. An outcome we
//! did not hear is looked up by the same key, never retried under a new one.

use super::policy::{RetryKind, RetryPolicy};
use super::{Engine, EngineError, RunReport, parse_date, parse_tz};
use crate::clock::to_epoch_ms;
use crate::domain::{Currency, Money};
use crate::gateway::{DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome};
use crate::mask;
use crate::store::debits::{
    AttemptChange, AttemptRow, DebitContext, Effects, Fence, NewAttempt, PaymentApplied,
};
use crate::store::{NewEvent, StoreError};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What [`Engine::read_batch`] read for one claimed attempt: its context, and its
/// funding sources when it is to be debited (not reconciled).
struct BatchRead {
    context: DebitContext,
    sources: Option<Vec<crate::store::debits::FundingSource>>,
}

/// What became of one attempt in this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Succeeded,
    InsufficientFunds,
    Declined,
    Unknown,
    Pending,
    Cancelled,
    Failed,
    Rescheduled,
    Rejected,
    LostLease,
}

impl Engine {
    /// Claims and processes due attempts until none is due or `shutdown` fires. In-flight
    /// attempts always finish (and are recorded) before this returns.
    ///
    /// A bounded pipeline, not batch-and-wait: up to `debit.max_in_flight` times
    /// [`carried_per_permit`](super::permits::carried_per_permit) attempts are carried at
    /// once, at most `debit.max_in_flight` of them at the gateway at a time, and as they
    /// finish more are claimed (a quarter of what is carried, or a batch, at a time, so one
    /// claim's commit serves several attempts), so a slow gateway answer never holds up the
    /// rest of a batch. The claim (a commit, and the batch's reads) runs beside the
    /// attempts in flight: while it is on its way, the attempts that finish are recorded
    /// and their slots counted for the next claim, which leaves as soon as this one is
    /// back. A claim waits for the writer's next group, so a loop that stopped for it
    /// would hold every debit to one claim per group (measured: some 500 debits/s at 64 in
    /// flight, whatever else was made faster).
    pub async fn run_due(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
    ) -> Result<RunReport, EngineError> {
        type Claimed = (
            usize,
            Result<Vec<AttemptRow>, StoreError>,
            HashMap<i64, BatchRead>,
        );
        let mut report = RunReport::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut drained = false;
        // The claim on its way, if any: how many attempts it asked for, what it took and
        // their batch's reads.
        let mut claiming: Option<futures_util::future::BoxFuture<'static, Claimed>> = None;
        loop {
            let policy = self.policy();
            // Attempts carried: several per request the gateway may have at once, so the
            // commits of some run while others are at the bank (`permits`).
            let carried = policy.debit.max_in_flight.max(1) as usize
                * super::permits::carried_per_permit(self.store.backend());
            let batch = policy.debit.batch_size.max(1) as usize;
            if claiming.is_none() && !drained && !shutdown.is_cancelled() {
                let free = carried.saturating_sub(tasks.len());
                if free >= (carried / 4).min(batch).max(1) || tasks.is_empty() {
                    let want = free.min(batch);
                    let engine = Arc::clone(self);
                    let lease = policy.debit.lease;
                    claiming = Some(Box::pin(async move {
                        let now = engine.clock.now();
                        let claimed = engine
                            .store
                            .claim_due_attempts(
                                &engine.owner,
                                to_epoch_ms(now),
                                to_epoch_ms(now + lease),
                                want as i64,
                            )
                            .await;
                        let read = match &claimed {
                            Ok(batch) => engine.read_batch(batch).await,
                            Err(_) => HashMap::new(),
                        };
                        (want, claimed, read)
                    }));
                }
            }
            if tasks.is_empty() && claiming.is_none() {
                break;
            }
            tokio::select! {
                // A claim that is back is taken first: its attempts start, and the next
                // claim can leave.
                biased;
                (want, claimed, mut read) = async { claiming.as_mut().expect("claiming").await },
                    if claiming.is_some() =>
                {
                    claiming = None;
                    let batch = match claimed {
                        Ok(batch) => batch,
                        Err(e) => {
                            // Let what is in flight finish and be recorded before giving up.
                            while let Some(joined) = tasks.join_next().await {
                                settle(&mut report, joined);
                            }
                            return Err(e.into());
                        }
                    };
                    // Fewer than asked: nothing else is due now. Finish what is in flight.
                    drained = batch.len() < want;
                    report.claimed += batch.len() as u64;
                    // Started even when `shutdown` fired meanwhile: they are claimed, and
                    // the drain finishes them like any attempt in flight.
                    for attempt in batch {
                        let engine = Arc::clone(self);
                        let read = read.remove(&attempt.id);
                        let span = tracing::info_span!(
                            "debit_attempt",
                            attempt_id = attempt.id,
                            agreement_id = attempt.agreement_id,
                            installment_id = attempt.installment_id,
                            attempt_no = attempt.attempt_no,
                        );
                        tasks.spawn(
                            async move { engine.process(attempt, read).await }.instrument(span),
                        );
                    }
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    settle(&mut report, joined);
                }
                // A claim on its way or attempts in flight: one of the two answers.
                else => {}
            }
        }
        Ok(report)
    }

    /// What the attempts of a claimed batch need from the database before their first
    /// gateway call (context, funding sources), read for the whole batch in two
    /// statements instead of two per attempt. An attempt left out (or a failed read)
    /// reads its own when it runs.
    async fn read_batch(&self, batch: &[AttemptRow]) -> HashMap<i64, BatchRead> {
        if batch.is_empty() {
            return HashMap::new();
        }
        let ids: Vec<i64> = batch.iter().map(|a| a.id).collect();
        let debiting: Vec<i64> = batch
            .iter()
            .filter(|a| matches!(a.state.as_str(), "claimed" | "funds_checked"))
            .map(|a| a.agreement_id)
            .collect();
        let (contexts, sources) = match tokio::try_join!(
            self.store.debit_contexts(&ids),
            self.store.funding_sources_of(&debiting)
        ) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "reading a claimed batch failed; each attempt reads its own");
                return HashMap::new();
            }
        };
        let mut read = HashMap::with_capacity(batch.len());
        for attempt in batch {
            if let Some(context) = contexts.get(&attempt.id) {
                let sources =
                    matches!(attempt.state.as_str(), "claimed" | "funds_checked").then(|| {
                        sources
                            .get(&attempt.agreement_id)
                            .cloned()
                            .unwrap_or_default()
                    });
                read.insert(
                    attempt.id,
                    BatchRead {
                        context: context.clone(),
                        sources,
                    },
                );
            }
        }
        read
    }

    async fn process(
        &self,
        attempt: AttemptRow,
        read: Option<BatchRead>,
    ) -> Result<Step, EngineError> {
        let fence = Fence {
            attempt_id: attempt.id,
            expected_state: attempt.state.clone(),
            owner: self.owner.clone(),
        };
        let result = match attempt.state.as_str() {
            "claimed" | "funds_checked" => self.debit_flow(&attempt, fence, read).await,
            "submitted" | "unknown" | "pending" => {
                self.reconcile(&attempt, fence, read.map(|r| r.context))
                    .await
            }
            other => Err(EngineError::Data(format!(
                "claimed attempt in unexpected state {other}"
            ))),
        };
        match result {
            Err(EngineError::Store(StoreError::Fenced { .. })) => {
                tracing::warn!("lease lost to another worker; leaving the attempt to it");
                Ok(Step::LostLease)
            }
            other => other,
        }
    }

    /// Claim -> context checks -> funds check -> submitted -> debit -> outcome.
    ///
    /// The customer's funding sources are checked in their order; the first that holds
    /// the whole amount is debited. When none does and partial collection is on, the
    /// first whose available amount the policy accepts is debited for that amount, and
    /// the rest stays due (see [`super::policy::PartialCollection`]).
    async fn debit_flow(
        &self,
        attempt: &AttemptRow,
        fence: Fence,
        read: Option<BatchRead>,
    ) -> Result<Step, EngineError> {
        let (ctx, sources) = match read {
            Some(BatchRead {
                context,
                sources: Some(sources),
            }) => (context, sources),
            _ => (
                self.store.debit_context(attempt.id).await?,
                self.store.funding_sources(attempt.agreement_id).await?,
            ),
        };
        let currency = currency_of(&ctx)?;
        let active: Vec<_> = sources
            .iter()
            .filter(|s| s.mandate_status == "active")
            .collect();
        // A revoked or pending mandate is skipped; only when no source may be debited is
        // the attempt stopped (worded by the agreement's own account's mandate).
        let mut gate = ctx.clone();
        if !active.is_empty() {
            gate.mandate_status = "active".into();
        }
        if let Some(step) = self.stop_if_not_debitable(attempt, &fence, &gate).await? {
            return Ok(step);
        }
        // The installment and its open charges (late fees) in one debit.
        let owed = ctx.total_minor - ctx.paid_minor + ctx.open_charges_minor;
        let amount = Money::from_minor(owed, currency);
        let now = self.clock.now();
        let policy = self.policy();

        // The funds checks, in this attempt, before any debit.
        let mut checked = Vec::with_capacity(active.len());
        let mut chosen: Option<(&crate::store::debits::FundingSource, Money)> = None;
        let mut partial: Option<(&crate::store::debits::FundingSource, Money)> = None;
        let mut first_shortfall: Option<Option<Money>> = None;
        for source in &active {
            match self
                .gateway_permits
                .at_gateway(self.gateway.check_funds(&source.account_ref, &amount))
                .await
            {
                Err(e) => return self.funds_check_failed(attempt, &fence, &ctx, e).await,
                Ok(FundsAnswer::Available) => {
                    checked.push(serde_json::json!({
                        "account": mask::account(&source.account_ref), "enough": true,
                    }));
                    chosen = Some((source, amount));
                    break;
                }
                Ok(FundsAnswer::Insufficient {
                    shortfall,
                    available,
                }) => {
                    checked.push(serde_json::json!({
                        "account": mask::account(&source.account_ref), "enough": false,
                        "shortfall": shortfall.map(|s| s.plain()),
                        "available": available.map(|a| a.plain()),
                    }));
                    first_shortfall.get_or_insert(shortfall);
                    if partial.is_none()
                        && let Some(take) = policy
                            .debit
                            .partial
                            .amount_to_debit(&amount, available.as_ref())
                    {
                        partial = Some((source, Money::from_minor(take, currency)));
                    }
                }
            }
        }
        let now_ms = to_epoch_ms(self.clock.now());
        let Some((source, debit_amount)) = chosen.or(partial) else {
            let shortfall = first_shortfall.flatten();
            let next = self
                .next_attempt(
                    attempt,
                    &ctx,
                    RetryKind::InsufficientFunds,
                    now,
                    &policy.retry,
                )
                .await?;
            tracing::info!(
                account = %mask::account(&ctx.account_ref),
                sources = active.len(),
                amount = %amount,
                shortfall = %shortfall.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                next_attempt = %next.as_ref().map(|n| fmt_ms(n.scheduled_at_ms)).unwrap_or_else(|| "none".into()),
                "insufficient funds: not debiting"
            );
            let change = AttemptChange {
                state: "insufficient_funds",
                amount_minor: Some(owed),
                funds_checked_at_ms: Some(now_ms),
                finished_at_ms: Some(now_ms),
                outcome_code: Some("insufficient_funds".into()),
                outcome_detail: shortfall.map(|s| format!("shortfall {s}")),
                release_lease: true,
                ..Default::default()
            };
            let mut events = vec![self.event(
                attempt,
                now_ms,
                "funds_insufficient",
                serde_json::json!({
                    "attempt_no": attempt.attempt_no,
                    "amount": amount.plain(),
                    "currency": currency.code(),
                    "shortfall": shortfall.map(|s| s.plain()),
                    "sources": checked,
                    "next_attempt_at": next.as_ref().map(|n| fmt_ms(n.scheduled_at_ms)),
                }),
            )];
            if next.is_none() {
                events.push(self.event(
                    attempt,
                    now_ms,
                    "debit_retries_exhausted",
                    serde_json::json!({
                        "attempt_no": attempt.attempt_no, "last_outcome": "insufficient_funds"
                    }),
                ));
            }
            self.record_failure(
                attempt,
                &fence,
                &ctx,
                change,
                events,
                next,
                serde_json::json!({
                    "failure": "insufficient_funds",
                    "amount_minor": owed,
                    "shortfall_minor": shortfall.map(|s| s.minor()),
                }),
                now_ms,
            )
            .await?;
            return Ok(Step::InsufficientFunds);
        };
        let is_partial = debit_amount.minor() < owed;
        if is_partial {
            tracing::info!(
                account = %mask::account(&source.account_ref),
                owed = %amount,
                debit = %debit_amount,
                "short, within the partial-collection share: debiting what is available"
            );
        }
        // Recorded in the same commit as `submitted` (one fsync, not two): the funds check
        // and the submission are both durable before the gateway is asked to debit.
        let funds_confirmed = self.event(
            attempt,
            now_ms,
            "funds_confirmed",
            serde_json::json!({
                "attempt_no": attempt.attempt_no,
                "amount": debit_amount.plain(),
                "currency": currency.code(),
                "owed": amount.plain(),
                "partial": is_partial,
                "account": mask::account(&source.account_ref),
                "sources": checked,
            }),
        );
        let mut ctx = ctx;
        ctx.account_ref = source.account_ref.clone();
        ctx.mandate_ref = source.mandate_ref.clone();
        ctx.mandate_status = source.mandate_status.clone();
        ctx.funding_account_id = source.funding_account_id;
        self.submit(
            attempt,
            fence,
            &ctx,
            debit_amount,
            Some((now_ms, funds_confirmed)),
        )
        .await
    }

    /// Marks the attempt submitted (committed), then sends the debit under its key.
    /// `funds_checked` is the instant and event of a funds check passed in this claim: it
    /// is recorded in the same commit. Without it this is a re-submission under the key.
    async fn submit(
        &self,
        attempt: &AttemptRow,
        mut fence: Fence,
        ctx: &DebitContext,
        amount: Money,
        funds_checked: Option<(i64, NewEvent)>,
    ) -> Result<Step, EngineError> {
        let now_ms = to_epoch_ms(self.clock.now());
        let resubmission = funds_checked.is_none();
        let change = AttemptChange {
            state: "submitted",
            submitted_at_ms: Some(now_ms),
            amount_minor: funds_checked.as_ref().map(|_| amount.minor()),
            funds_checked_at_ms: funds_checked.as_ref().map(|(at, _)| *at),
            funding_account_id: Some(ctx.funding_account_id),
            ..Default::default()
        };
        let mut events: Vec<NewEvent> = funds_checked.into_iter().map(|(_, ev)| ev).collect();
        events.push(self.event(
            attempt,
            now_ms,
            if resubmission {
                "debit_resubmitted"
            } else {
                "debit_submitted"
            },
            serde_json::json!({
                "attempt_no": attempt.attempt_no,
                "idempotency_key": attempt.idempotency_key,
                "amount": amount.plain(),
                "currency": amount.currency().code(),
            }),
        ));
        self.record_change(&fence, &change, events, now_ms).await?;
        fence.expected_state = "submitted".into();

        let request = DebitRequest {
            account_ref: ctx.account_ref.clone(),
            mandate_ref: ctx.mandate_ref.clone(),
            amount,
            idempotency_key: attempt.idempotency_key.clone(),
            reference: format!(
                "{} {}/{}",
                ctx.agreement_external_id, ctx.seq, ctx.installment_count
            ),
        };
        tracing::info!(account = %mask::account(&ctx.account_ref), amount = %amount, "debit submitted");
        let outcome = self
            .gateway_permits
            .at_gateway(self.gateway.debit(&request))
            .await;
        self.record_outcome(attempt, &fence, ctx, amount, outcome)
            .await
    }

    /// Records what the gateway said about a submitted debit.
    async fn record_outcome(
        &self,
        attempt: &AttemptRow,
        fence: &Fence,
        ctx: &DebitContext,
        amount: Money,
        outcome: Result<DebitOutcome, GatewayError>,
    ) -> Result<Step, EngineError> {
        let now = self.clock.now();
        let now_ms = to_epoch_ms(now);
        let policy = self.policy();
        let retry = &policy.retry;
        let count = attempt.reconcile_count as u32;
        match outcome {
            Ok(DebitOutcome::Succeeded { gateway_ref }) => {
                // A partial debit leaves the rest of the installment due: it gets its own
                // next attempt now, by the short-balance policy (and its own reminders).
                let owed = ctx.total_minor - ctx.paid_minor + ctx.open_charges_minor;
                let remaining = (owed - amount.minor()).max(0);
                let partial = ctx.total_minor - ctx.paid_minor > amount.minor();
                let next = if partial {
                    self.next_attempt(attempt, ctx, RetryKind::InsufficientFunds, now, retry)
                        .await?
                        .map(|mut n| {
                            n.amount_minor = remaining;
                            n
                        })
                } else {
                    None
                };
                let change = AttemptChange {
                    state: "succeeded",
                    finished_at_ms: Some(now_ms),
                    outcome_code: Some(if partial { "partial" } else { "succeeded" }.into()),
                    gateway_ref: Some(gateway_ref.clone()),
                    release_lease: true,
                    ..Default::default()
                };
                let events = vec![self.event(
                    attempt,
                    now_ms,
                    "debit_succeeded",
                    serde_json::json!({
                        "attempt_no": attempt.attempt_no,
                        "amount": amount.plain(),
                        "currency": amount.currency().code(),
                        "gateway_ref": gateway_ref,
                        "partial": partial,
                        "remaining": partial.then(|| Money::from_minor(remaining, amount.currency()).plain()),
                        "next_attempt_at": next.as_ref().map(|n| fmt_ms(n.scheduled_at_ms)),
                    }),
                )];
                let payment = PaymentApplied {
                    installment_id: attempt.installment_id,
                    agreement_id: attempt.agreement_id,
                    amount_minor: amount.minor(),
                    at_ms: now_ms,
                };
                let reminder = self.debit_notice(
                    attempt,
                    ctx,
                    "debit_succeeded",
                    serde_json::json!({
                        "amount_minor": amount.minor(),
                        "paid_at_ms": now_ms,
                        "gateway_ref": gateway_ref,
                        "account_ref": ctx.account_ref,
                        "partial": partial,
                        "owed_minor": owed,
                    }),
                )?;
                let applied = self
                    .store
                    .apply_attempt_change(
                        fence,
                        &change,
                        &Effects {
                            events,
                            next_attempt: next,
                            payment: Some(payment),
                            reminder,
                        },
                        now_ms,
                    )
                    .await?;
                if applied.excess_minor > 0 {
                    let excess = Money::from_minor(applied.excess_minor, amount.currency());
                    tracing::error!(excess = %excess, "debit exceeded what was owed (paid by other means meanwhile): refund needed");
                    self.store
                        .append_event(&self.event(
                            attempt,
                            now_ms,
                            "overpayment",
                            serde_json::json!({
                                "excess": excess.plain(), "currency": excess.currency().code(),
                            }),
                        ))
                        .await?;
                }
                tracing::info!(amount = %amount, installment_paid = applied.installment_paid, agreement_completed = applied.agreement_completed, "debit succeeded");
                Ok(Step::Succeeded)
            }
            Ok(DebitOutcome::Pending { gateway_ref }) => {
                let wait = retry.technical_wait(count);
                let change = AttemptChange {
                    state: "pending",
                    gateway_ref: Some(gateway_ref.clone()),
                    scheduled_at_ms: Some(to_epoch_ms(now + wait)),
                    bump_reconcile_count: true,
                    release_lease: true,
                    ..Default::default()
                };
                let events = if fence.expected_state == "pending" {
                    Vec::new()
                } else {
                    vec![self.event(
                        attempt,
                        now_ms,
                        "debit_pending",
                        serde_json::json!({
                            "attempt_no": attempt.attempt_no, "gateway_ref": gateway_ref,
                        }),
                    )]
                };
                self.record_change(fence, &change, events, now_ms).await?;
                tracing::info!(next_lookup = %(now + wait).to_rfc3339(), "debit pending at the gateway");
                Ok(Step::Pending)
            }
            Ok(DebitOutcome::Declined { code, reason, hard }) => {
                let kind = if hard {
                    None
                } else if code == "insufficient_funds" {
                    Some(RetryKind::InsufficientFunds)
                } else {
                    Some(RetryKind::SoftDecline)
                };
                let next = match kind {
                    Some(k) => self.next_attempt(attempt, ctx, k, now, retry).await?,
                    None => None,
                };
                let change = AttemptChange {
                    state: "declined",
                    finished_at_ms: Some(now_ms),
                    outcome_code: Some(code.clone()),
                    outcome_detail: Some(reason.clone()),
                    release_lease: true,
                    ..Default::default()
                };
                let mut events = vec![self.event(
                    attempt,
                    now_ms,
                    if hard {
                        "debit_declined_hard"
                    } else {
                        "debit_declined"
                    },
                    serde_json::json!({
                        "attempt_no": attempt.attempt_no,
                        "code": code,
                        "reason": reason,
                        "hard": hard,
                        "next_attempt_at": next.as_ref().map(|n| fmt_ms(n.scheduled_at_ms)),
                    }),
                )];
                if next.is_none() && !hard {
                    events.push(self.event(
                        attempt,
                        now_ms,
                        "debit_retries_exhausted",
                        serde_json::json!({
                            "attempt_no": attempt.attempt_no, "last_outcome": code,
                        }),
                    ));
                }
                let failure = if code == "insufficient_funds" {
                    "insufficient_funds"
                } else if code.contains("mandate") {
                    "mandate_invalid"
                } else {
                    "declined"
                };
                self.record_failure(
                    attempt,
                    fence,
                    ctx,
                    change,
                    events,
                    next,
                    serde_json::json!({
                        "failure": failure,
                        "amount_minor": amount.minor(),
                    }),
                    now_ms,
                )
                .await?;
                if hard {
                    tracing::warn!(code = %code, reason = %reason, account = %mask::account(&ctx.account_ref), "hard decline: no further debits for this installment; operations must act");
                } else {
                    tracing::info!(code = %code, reason = %reason, "debit declined");
                }
                Ok(Step::Declined)
            }
            Err(GatewayError::Rejected(detail)) => {
                self.reject(attempt, fence, "debit", &detail).await
            }
            Err(e) => {
                let wait = retry.technical_wait(count);
                let change = AttemptChange {
                    state: "unknown",
                    scheduled_at_ms: Some(to_epoch_ms(now + wait)),
                    outcome_detail: Some(e.to_string()),
                    bump_reconcile_count: true,
                    release_lease: true,
                    ..Default::default()
                };
                let events = vec![self.event(
                    attempt,
                    now_ms,
                    "debit_outcome_unknown",
                    serde_json::json!({
                        "attempt_no": attempt.attempt_no,
                        "error": e.to_string(),
                        "next_lookup_at": (now + wait).to_rfc3339(),
                    }),
                )];
                self.record_change(fence, &change, events, now_ms).await?;
                if retry.technical_exhausted(count + 1) {
                    tracing::error!(error = %e, lookups = count + 1, "debit outcome still unknown after repeated look-ups; operations should check with the gateway");
                } else {
                    tracing::warn!(error = %e, next_lookup = %(now + wait).to_rfc3339(), "debit outcome unknown; will look it up by key");
                }
                Ok(Step::Unknown)
            }
        }
    }

    /// Settles a submitted, unknown or pending attempt by looking its key up. Re-submits
    /// under the same key only when the gateway says it never saw it.
    async fn reconcile(
        &self,
        attempt: &AttemptRow,
        fence: Fence,
        ctx: Option<DebitContext>,
    ) -> Result<Step, EngineError> {
        let ctx = match ctx {
            Some(ctx) => ctx,
            None => self.store.debit_context(attempt.id).await?,
        };
        let currency = currency_of(&ctx)?;
        let amount = Money::from_minor(attempt.amount_minor, currency);
        let looked_up = self
            .gateway_permits
            .at_gateway(self.gateway.lookup(&attempt.idempotency_key))
            .await;
        if looked_up.is_ok() {
            self.lookup_refusal_reported
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        match looked_up {
            Ok(LookupOutcome::Found(outcome)) => {
                tracing::info!(?outcome, "reconciled by idempotency key");
                self.record_outcome(attempt, &fence, &ctx, amount, Ok(outcome))
                    .await
            }
            Ok(LookupOutcome::NotFound) if fence.expected_state == "pending" => {
                // The gateway told us it had it; now it does not. Keep looking, loudly.
                self.record_outcome(
                    attempt,
                    &fence,
                    &ctx,
                    amount,
                    Err(GatewayError::Protocol(
                        "a pending debit is no longer known to the gateway".into(),
                    )),
                )
                .await
            }
            Ok(LookupOutcome::NotFound) => {
                // Never reached the gateway: send it again, under the same key, if it is
                // still owed and allowed. The funds check of this attempt already passed.
                if attempt.funds_checked_at_ms.is_none() {
                    return Err(EngineError::Data(format!(
                        "attempt {} was submitted without a recorded funds check",
                        attempt.id
                    )));
                }
                if let Some(step) = self.stop_if_not_debitable(attempt, &fence, &ctx).await? {
                    return Ok(step);
                }
                tracing::info!("gateway never saw this debit; re-submitting under the same key");
                self.submit(attempt, fence, &ctx, amount, None).await
            }
            Err(GatewayError::Rejected(detail)) => {
                self.lookup_refused(attempt, &fence, &detail).await
            }
            Err(e) => {
                self.record_outcome(attempt, &fence, &ctx, amount, Err(e))
                    .await
            }
        }
    }

    /// The gateway refused a look-up (401/403: token or client certificate): the debit's
    /// outcome is still unknown, so the attempt can be neither `rejected` nor sent again.
    /// It stays as it was and is looked up again after the technical backoff (clamped at
    /// its last step). Operations are told once per episode: one error line naming the
    /// status and one `gateway_lookup_refused` alert, until a look-up is answered again.
    async fn lookup_refused(
        &self,
        attempt: &AttemptRow,
        fence: &Fence,
        detail: &str,
    ) -> Result<Step, EngineError> {
        let now = self.clock.now();
        let now_ms = to_epoch_ms(now);
        let wait = self
            .policy()
            .retry
            .technical_wait(attempt.reconcile_count as u32);
        let first = !self
            .lookup_refusal_reported
            .swap(true, std::sync::atomic::Ordering::Relaxed);
        let (state, step) = if fence.expected_state == "pending" {
            ("pending", Step::Pending)
        } else {
            ("unknown", Step::Unknown)
        };
        let change = AttemptChange {
            state,
            scheduled_at_ms: Some(to_epoch_ms(now + wait)),
            outcome_detail: Some(detail.to_string()),
            bump_reconcile_count: true,
            release_lease: true,
            ..Default::default()
        };
        let kind = if first {
            "gateway_lookup_refused"
        } else {
            "debit_lookup_refused"
        };
        let events = vec![self.event(
            attempt,
            now_ms,
            kind,
            serde_json::json!({
                "attempt_no": attempt.attempt_no,
                "reason": detail,
                "next_lookup_at": (now + wait).to_rfc3339(),
            }),
        )];
        self.record_change(fence, &change, events, now_ms).await?;
        if first {
            tracing::error!(
                next_lookup = %(now + wait).to_rfc3339(),
                "the gateway refuses look-ups ({detail}); debits of unknown outcome stay unknown, nothing is sent again, and they are looked up with backoff until gateway.http.token or the client certificate is fixed"
            );
        } else {
            tracing::debug!(next_lookup = %(now + wait).to_rfc3339(), "look-up refused again: {detail}");
        }
        Ok(step)
    }

    /// Cancels or fails the attempt when the installment may not be debited (paid,
    /// agreement not active, no active mandate). `None` means go ahead.
    async fn stop_if_not_debitable(
        &self,
        attempt: &AttemptRow,
        fence: &Fence,
        ctx: &DebitContext,
    ) -> Result<Option<Step>, EngineError> {
        let now_ms = to_epoch_ms(self.clock.now());
        let (state, code, step) =
            if ctx.installment_status != "unpaid" || ctx.total_minor <= ctx.paid_minor {
                (
                    "cancelled",
                    format!("installment_{}", ctx.installment_status),
                    Step::Cancelled,
                )
            } else if ctx.agreement_status != "active" {
                (
                    "cancelled",
                    format!("agreement_{}", ctx.agreement_status),
                    Step::Cancelled,
                )
            } else if ctx.mandate_status != "active" {
                (
                    "failed",
                    format!("mandate_{}", ctx.mandate_status),
                    Step::Failed,
                )
            } else {
                return Ok(None);
            };
        let change = AttemptChange {
            state,
            finished_at_ms: Some(now_ms),
            outcome_code: Some(code.clone()),
            release_lease: true,
            ..Default::default()
        };
        let kind = if state == "failed" {
            "debit_blocked"
        } else {
            "debit_attempt_cancelled"
        };
        let events = vec![self.event(
            attempt,
            now_ms,
            kind,
            serde_json::json!({
                "attempt_no": attempt.attempt_no, "reason": code,
            }),
        )];
        // The customer must know to pay another way when we may not debit: one notice per
        // agreement (the message gate drops repeats), worded by the mandate's status.
        let reminder = if state == "failed" {
            self.debit_notice(
                attempt,
                ctx,
                "mandate_notice",
                serde_json::json!({
                    "mandate_status": ctx.mandate_status,
                    "amount_minor": ctx.total_minor - ctx.paid_minor,
                }),
            )?
            .map(|mut notice| {
                notice.offset_key = 0;
                notice
            })
        } else {
            None
        };
        self.store
            .apply_attempt_change(
                fence,
                &change,
                &Effects {
                    events,
                    reminder,
                    ..Default::default()
                },
                now_ms,
            )
            .await?;
        if state == "failed" {
            tracing::warn!(reason = %code, account = %mask::account(&ctx.account_ref), "no debit without an active mandate; operations must act");
        } else {
            tracing::info!(reason = %code, "debit attempt cancelled");
        }
        Ok(Some(step))
    }

    /// The funds check itself failed (gateway trouble): nothing was debited, so the same
    /// attempt is tried again after a backoff, until the backoff list is used up.
    async fn funds_check_failed(
        &self,
        attempt: &AttemptRow,
        fence: &Fence,
        ctx: &DebitContext,
        error: GatewayError,
    ) -> Result<Step, EngineError> {
        if let GatewayError::Rejected(detail) = &error {
            return self.reject(attempt, fence, "funds_check", detail).await;
        }
        let now = self.clock.now();
        let now_ms = to_epoch_ms(now);
        let policy = self.policy();
        let count = attempt.reconcile_count as u32;
        if !policy.retry.technical_exhausted(count) {
            let wait = policy.retry.technical_wait(count);
            let change = AttemptChange {
                state: "scheduled",
                scheduled_at_ms: Some(to_epoch_ms(now + wait)),
                outcome_detail: Some(error.to_string()),
                bump_reconcile_count: true,
                release_lease: true,
                ..Default::default()
            };
            let events = vec![self.event(attempt, now_ms, "funds_check_failed", serde_json::json!({
                "attempt_no": attempt.attempt_no, "error": error.to_string(), "retry_at": (now + wait).to_rfc3339(),
            }))];
            self.record_change(fence, &change, events, now_ms).await?;
            tracing::warn!(error = %error, retry_at = %(now + wait).to_rfc3339(), "funds check failed; no debit, trying again later");
            return Ok(Step::Rescheduled);
        }
        let next = self
            .next_attempt(attempt, ctx, RetryKind::SoftDecline, now, &policy.retry)
            .await?;
        let change = AttemptChange {
            state: "failed",
            finished_at_ms: Some(now_ms),
            outcome_code: Some("gateway_unavailable".into()),
            outcome_detail: Some(error.to_string()),
            release_lease: true,
            ..Default::default()
        };
        let events = vec![self.event(
            attempt,
            now_ms,
            "funds_check_failed",
            serde_json::json!({
                "attempt_no": attempt.attempt_no, "error": error.to_string(), "final": true,
                "next_attempt_at": next.as_ref().map(|n| fmt_ms(n.scheduled_at_ms)),
            }),
        )];
        self.record_failure(
            attempt,
            fence,
            ctx,
            change,
            events,
            next,
            serde_json::json!({
                "failure": "technical",
                "amount_minor": ctx.total_minor - ctx.paid_minor,
            }),
            now_ms,
        )
        .await?;
        tracing::error!(error = %error, "funds check kept failing; attempt given up");
        Ok(Step::Failed)
    }

    /// The gateway refused a funds check or a debit before acting on it (400, 401, 403,
    /// 415, 422): nothing happened and repeating it cannot help until a human fixes the
    /// cause. The attempt ends `rejected` (terminal: no retry, no look-up, no customer
    /// email); the `debit_rejected` event raises an operations alert, and an operator
    /// re-queues the attempt with `repayd attempts requeue` after the fix.
    async fn reject(
        &self,
        attempt: &AttemptRow,
        fence: &Fence,
        stage: &'static str,
        detail: &str,
    ) -> Result<Step, EngineError> {
        let now_ms = to_epoch_ms(self.clock.now());
        let change = AttemptChange {
            state: "rejected",
            finished_at_ms: Some(now_ms),
            outcome_code: Some(format!("{stage}_rejected")),
            outcome_detail: Some(detail.to_string()),
            release_lease: true,
            ..Default::default()
        };
        let events = vec![self.event(
            attempt,
            now_ms,
            "debit_rejected",
            serde_json::json!({
                "attempt_no": attempt.attempt_no,
                "stage": stage,
                "code": format!("{stage}_rejected"),
                "reason": detail,
            }),
        )];
        self.record_change(fence, &change, events, now_ms).await?;
        tracing::error!(
            stage,
            error = %detail,
            "gateway rejected the request: attempt stopped, nothing will be resent; fix the cause, then `repayd attempts requeue {}`",
            attempt.id
        );
        Ok(Step::Rejected)
    }

    /// The next attempt after a refusal, by policy, at the local debit time; never in the
    /// past and never on the same local day (see [`RetryPolicy::next_attempt_at`]). After a
    /// short balance, on the customer's usual payday when `[retry.payday]` places it there
    /// (see [`RetryPolicy::payday_retry_at`]), with the reason on the attempt.
    async fn next_attempt(
        &self,
        attempt: &AttemptRow,
        ctx: &DebitContext,
        kind: RetryKind,
        now: DateTime<Utc>,
        retry: &RetryPolicy,
    ) -> Result<Option<NewAttempt>, EngineError> {
        let tz = parse_tz(&ctx.time_zone)?;
        // After a short balance, the customer's usual payday may place it (off by default).
        let payday = match kind {
            RetryKind::InsufficientFunds => self.payday_retry(attempt, ctx, now, tz, retry).await?,
            _ => None,
        };
        let (at, retry_reason) = match payday {
            Some(p) => (p.at, Some(p.reason)),
            None => match retry.next_attempt_at(
                kind,
                attempt.attempt_no as u32,
                parse_date(&ctx.due_date)?,
                now,
                tz,
                self.policy().debit.local_time,
            ) {
                Some(at) => (at, None),
                None => return Ok(None),
            },
        };
        let next_no = attempt.attempt_no + 1;
        Ok(Some(NewAttempt {
            installment_id: attempt.installment_id,
            agreement_id: attempt.agreement_id,
            attempt_no: next_no,
            idempotency_key: Self::idempotency_key(
                &self.policy().debit.key_prefix,
                self.deployment_id().await?,
                attempt.installment_id,
                next_no,
            ),
            scheduled_at_ms: to_epoch_ms(at),
            amount_minor: ctx.total_minor - ctx.paid_minor,
            currency: ctx.currency.clone(),
            retry_reason,
        }))
    }

    /// Records an attempt that ended without money moving: its final change and events,
    /// the next attempt when the policy gives one, and the customer's failure notice
    /// (saying when the next try is), all in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn record_failure(
        &self,
        attempt: &AttemptRow,
        fence: &Fence,
        ctx: &DebitContext,
        change: AttemptChange,
        events: Vec<NewEvent>,
        next: Option<NewAttempt>,
        mut notice: serde_json::Value,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        notice["next_attempt_at_ms"] = serde_json::json!(next.as_ref().map(|n| n.scheduled_at_ms));
        let reminder = self.debit_notice(attempt, ctx, "debit_failed", notice)?;
        let effects = Effects {
            events,
            next_attempt: next,
            payment: None,
            reminder,
        };
        self.store
            .apply_attempt_change(fence, &change, &effects, now_ms)
            .await?;
        Ok(())
    }

    /// The customer email about an attempt's outcome, at the first decent local hour;
    /// `None` when no mailer is configured.
    fn debit_notice(
        &self,
        attempt: &AttemptRow,
        ctx: &DebitContext,
        kind: &'static str,
        detail: serde_json::Value,
    ) -> Result<Option<crate::store::reminders::NewReminder>, EngineError> {
        if self.mail.is_none() {
            return Ok(None);
        }
        let tz = parse_tz(&ctx.time_zone)?;
        let at = self
            .policy()
            .reminders
            .quiet
            .next_allowed(self.clock.now(), tz);
        Ok(Some(crate::store::reminders::NewReminder {
            installment_id: attempt.installment_id,
            agreement_id: attempt.agreement_id,
            kind,
            offset_key: attempt.attempt_no,
            scheduled_at_ms: to_epoch_ms(at),
            detail,
        }))
    }

    /// Applies a fenced change to an attempt with its events, in one transaction.
    async fn record_change(
        &self,
        fence: &Fence,
        change: &AttemptChange,
        events: Vec<NewEvent>,
        now_ms: i64,
    ) -> Result<(), EngineError> {
        self.store
            .apply_attempt_change(
                fence,
                change,
                &Effects {
                    events,
                    ..Default::default()
                },
                now_ms,
            )
            .await?;
        Ok(())
    }

    fn event(
        &self,
        attempt: &AttemptRow,
        at_ms: i64,
        kind: &'static str,
        detail: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            at_ms,
            kind,
            agreement_id: Some(attempt.agreement_id),
            installment_id: Some(attempt.installment_id),
            attempt_id: Some(attempt.id),
            detail,
        }
    }
}

fn currency_of(ctx: &DebitContext) -> Result<Currency, EngineError> {
    Currency::parse(&ctx.currency).map_err(|e| EngineError::Data(e.to_string()))
}

fn fmt_ms(ms: i64) -> String {
    crate::clock::from_epoch_ms(ms).to_rfc3339()
}

/// Counts a finished debit task in `report` and logs what went wrong, if anything.
fn settle(
    report: &mut RunReport,
    joined: Result<Result<Step, EngineError>, tokio::task::JoinError>,
) {
    match joined {
        Ok(Ok(step)) => tally(report, step),
        Ok(Err(e)) if e.is_retryable() => {
            tracing::warn!(error = %e, "debit attempt interrupted; it will be picked up again when its lease expires");
        }
        Ok(Err(e)) => tracing::error!(error = %e, "debit attempt failed"),
        Err(e) => tracing::error!(error = %e, "debit task panicked"),
    }
}

fn tally(report: &mut RunReport, step: Step) {
    match step {
        Step::Succeeded => report.succeeded += 1,
        Step::InsufficientFunds => report.insufficient_funds += 1,
        Step::Declined => report.declined += 1,
        Step::Unknown => report.unknown += 1,
        Step::Pending => report.pending += 1,
        Step::Cancelled => report.cancelled += 1,
        Step::Failed => report.failed += 1,
        Step::Rescheduled => report.rescheduled += 1,
        Step::Rejected => report.rejected += 1,
        Step::LostLease => report.lost_lease += 1,
    }
}
