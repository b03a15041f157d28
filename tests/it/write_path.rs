//! The write path under load: many debits in flight at once on one SQLite file (one
//! writer connection, readers beside it) and on PostgreSQL, each debited exactly once with
//! its events; claims that put outcomes to settle ahead of new debits; a planner whose
//! pages follow the index order and plan every installment exactly once.

use crate::both_backends;
use crate::helpers::TestDb;
use chrono::{DateTime, Duration, TimeZone, Utc};
use repayd::clock::{ManualClock, to_epoch_ms};
use repayd::domain::{Currency, Money};
use repayd::engine::Engine;
use repayd::engine::policy::{DebitPolicy, EnginePolicy, RetryPolicy};
use repayd::gateway::sandbox::{SandboxBank, SandboxSettings};
use repayd::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
};
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use repayd::store::debits::{AttemptChange, Effects, Fence, NewAttempt};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn policy(max_in_flight: u32) -> EnginePolicy {
    EnginePolicy {
        debit: DebitPolicy {
            local_time: chrono::NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            horizon_days: 35,
            batch_size: 50,
            max_in_flight,
            lease: Duration::seconds(300),
            key_prefix: "wp".into(),
            returns_poll: std::time::Duration::from_secs(300),
            partial: Default::default(),
        },
        retry: RetryPolicy {
            max_attempts: 4,
            insufficient_funds_days: vec![1, 3, 5],
            soft_decline_days: vec![1, 3],
            technical_backoff: vec![Duration::minutes(5), Duration::minutes(15)],
            min_spacing_days: 1,
            payday: Default::default(),
        },
        reminders: repayd::engine::policy::ReminderPolicy {
            offsets_days: vec![7, 3, 1],
            local_time: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            quiet: repayd::domain::worktime::QuietHours::parse("21:00", "08:00").unwrap(),
            quiet_exempt: Vec::new(),
            merge_window: Duration::minutes(30),
            max_per_customer_per_day: 3,
            max_in_flight: 32,
        },
        overdue: Default::default(),
        poll: std::time::Duration::from_secs(1),
        drain: std::time::Duration::from_secs(5),
    }
}

fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// `n` agreements in UTC, each with installments on the given due dates.
async fn load(store: &Store, n: usize, due_dates: &[&str]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(n);
    for k in 0..n {
        let customer = store
            .insert_customer(
                &NewCustomer {
                    external_id: format!("C-{k}"),
                    name: format!("Customer {k}"),
                    email: format!("c{k}@example.com"),
                    locale: "en".into(),
                    time_zone: "UTC".into(),
                },
                0,
            )
            .await
            .unwrap();
        let account = store
            .insert_funding_account(
                customer,
                &NewFundingAccount {
                    external_ref: format!("ACC-{k}"),
                    mandate_ref: format!("MND-{k}"),
                    mandate_status: "active".into(),
                },
                0,
            )
            .await
            .unwrap();
        let installments: Vec<NewInstallment> = due_dates
            .iter()
            .enumerate()
            .map(|(i, due)| NewInstallment {
                seq: i as i64 + 1,
                due_date: (*due).into(),
                principal_minor: 10_000 + k as i64,
                interest_minor: 0,
                fee_minor: 0,
            })
            .collect();
        let principal = installments.iter().map(|i| i.principal_minor).sum();
        ids.push(
            store
                .insert_agreement(
                    &NewAgreement {
                        external_id: format!("A-{k}"),
                        customer_id: customer,
                        funding_account_id: account,
                        currency: "USD".into(),
                        principal_minor: principal,
                        total_interest_minor: 0,
                        total_fee_minor: 0,
                        method: None,
                        terms_json: None,
                        content_hash: format!("hash-{k}"),
                        installments,
                    },
                    0,
                )
                .await
                .unwrap(),
        );
    }
    ids
}

/// The sandbox on `clock`, answering each call after `latency_ms`, with the accounts
/// `ACC-0` to `ACC-{n-1}` of [`load`] holding 10,000.00 USD each.
async fn funded_bank(
    store: &Store,
    clock: &ManualClock,
    n: usize,
    latency_ms: u64,
) -> Arc<SandboxBank> {
    let settings = SandboxSettings {
        opening_balance: "1000000.00".into(),
        latency_ms,
        ..SandboxSettings::default()
    };
    let bank = Arc::new(
        SandboxBank::new(store.clone(), settings)
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );
    let usd = Currency::parse("USD").unwrap();
    for k in 0..n {
        bank.set_balance(&format!("ACC-{k}"), usd, 1_000_000)
            .await
            .unwrap();
    }
    bank
}

/// Two engines (as two worker tasks would be) on one store carry 240 due debits at up to
/// 32 in flight each: every installment is debited exactly once, every attempt's funds
/// check, submission and success are in the event log once each, in that order, and no
/// write failed on a busy database.
async fn many_debits_in_flight_each_exactly_once(db: TestDb) {
    const N: usize = 240;
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 3, 1, 0));
    let ids = load(&store, N, &["2027-03-02"]).await;
    let bank = funded_bank(&store, &clock, N, 0).await;
    let engine = |owner: &str| {
        Arc::new(Engine::new(
            store.clone(),
            bank.clone(),
            Arc::new(clock.clone()),
            policy(32),
            owner,
        ))
    };
    let (a, b) = (engine("worker-a"), engine("worker-b"));
    let planned = a.plan().await.unwrap();
    assert_eq!(planned.attempts_created, N as u64);

    clock.set(utc(2027, 3, 2, 7));
    let shutdown = CancellationToken::new();
    let (ra, rb) = tokio::join!(a.run_due(&shutdown), b.run_due(&shutdown));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.claimed + rb.claimed, N as u64, "{ra:?} {rb:?}");
    assert_eq!(ra.succeeded + rb.succeeded, N as u64, "{ra:?} {rb:?}");
    assert!(
        ra.claimed > 0 && rb.claimed > 0,
        "both workers took part: {ra:?} {rb:?}"
    );

    let events = store.events(None).await.unwrap();
    for (k, agreement_id) in ids.iter().enumerate() {
        let attempts = store.attempts_for_agreement(*agreement_id).await.unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        let attempt = &attempts[0];
        assert_eq!(attempt.state, "succeeded");
        assert!(attempt.funds_checked_at_ms.is_some());
        assert!(attempt.submitted_at_ms.is_some());
        assert_eq!(
            bank.debits_for_key(&attempt.idempotency_key).await.unwrap(),
            1
        );
        assert_eq!(
            bank.balance(&format!("ACC-{k}")).await.unwrap(),
            Some(1_000_000 - 10_000 - k as i64)
        );
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| e.attempt_id == Some(attempt.id))
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "debit_attempt_planned",
                "funds_confirmed",
                "debit_submitted",
                "debit_succeeded"
            ],
            "attempt {}",
            attempt.id
        );
        let agreement = store.agreement(*agreement_id).await.unwrap().unwrap();
        assert_eq!(agreement.status, "completed");
    }
    // Nothing left to do: a second pass claims nothing.
    let again = a.run_due(&shutdown).await.unwrap();
    assert_eq!(again.claimed, 0);
}
both_backends!(
    many_debits_in_flight_each_exactly_once,
    super::many_debits_in_flight_each_exactly_once
);

/// Counts the calls at the bank at once, and the attempts between their funds check and
/// their debit's answer (by account: one agreement an account here).
#[derive(Debug)]
struct Watched {
    bank: Arc<SandboxBank>,
    calls: std::sync::Mutex<(usize, usize)>,
    open: std::sync::Mutex<(std::collections::HashSet<String>, usize)>,
}

impl Watched {
    async fn call<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        {
            let mut c = self.calls.lock().unwrap();
            c.0 += 1;
            c.1 = c.1.max(c.0);
        }
        let out = f.await;
        self.calls.lock().unwrap().0 -= 1;
        out
    }
}

#[async_trait::async_trait]
impl PaymentGateway for Watched {
    async fn check_funds(&self, a: &str, m: &Money) -> Result<FundsAnswer, GatewayError> {
        {
            let mut o = self.open.lock().unwrap();
            o.0.insert(a.to_string());
            o.1 = o.1.max(o.0.len());
        }
        self.call(self.bank.check_funds(a, m)).await
    }
    async fn debit(&self, r: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        let out = self.call(self.bank.debit(r)).await;
        self.open.lock().unwrap().0.remove(&r.account_ref);
        out
    }
    async fn lookup(&self, k: &str) -> Result<LookupOutcome, GatewayError> {
        self.call(self.bank.lookup(k)).await
    }
}

/// `debit.max_in_flight` is the number of requests at the bank at once: the debit loop
/// never has more calls open, on SQLite it carries more attempts than that (their commits
/// run while others are at the bank; on PostgreSQL it carries as many), and each
/// installment is still debited once.
async fn max_in_flight_bounds_the_calls_at_the_bank(db: TestDb) {
    const N: usize = 60;
    const LIMIT: u32 = 4;
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 3, 1, 0));
    load(&store, N, &["2027-03-02"]).await;
    let bank = funded_bank(&store, &clock, N, 5).await;
    let watched = Arc::new(Watched {
        bank: bank.clone(),
        calls: Default::default(),
        open: Default::default(),
    });
    let engine = Arc::new(Engine::new(
        store.clone(),
        watched.clone(),
        Arc::new(clock.clone()),
        policy(LIMIT),
        "worker-a",
    ));
    engine.plan().await.unwrap();
    clock.set(utc(2027, 3, 2, 7));
    let report = engine.run_due(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.succeeded, N as u64, "{report:?}");
    let (open_calls, most_calls) = *watched.calls.lock().unwrap();
    assert_eq!(open_calls, 0);
    assert_eq!(
        most_calls, LIMIT as usize,
        "at most max_in_flight calls at the bank at once, and the limit is used"
    );
    let most_carried = watched.open.lock().unwrap().1;
    if repayd::engine::permits::carried_per_permit(store.backend()) > 1 {
        assert!(
            most_carried > LIMIT as usize,
            "attempts between funds check and answer: at most {most_carried}"
        );
    } else {
        assert!(most_carried <= LIMIT as usize, "{most_carried}");
    }
    for k in 0..N {
        assert_eq!(
            bank.balance(&format!("ACC-{k}")).await.unwrap(),
            Some(1_000_000 - 10_000 - k as i64)
        );
    }
}
both_backends!(
    max_in_flight_bounds_the_calls_at_the_bank,
    super::max_in_flight_bounds_the_calls_at_the_bank
);

/// An unknown outcome whose look-up is due is claimed before new debits that have been
/// due for longer, and in-flight work whose lease ran out comes before both.
async fn claims_put_outcomes_before_new_debits(db: TestDb) {
    let store = db.store.clone();
    let ids = load(&store, 3, &["2027-03-02"]).await;
    let t0 = to_epoch_ms(utc(2027, 3, 2, 6));
    let mut installment_ids = Vec::new();
    for agreement_id in &ids {
        let inst = store.installments(*agreement_id).await.unwrap();
        installment_ids.push((inst[0].id, *agreement_id));
    }
    for (n, (installment_id, agreement_id)) in installment_ids.iter().enumerate() {
        let attempt = NewAttempt {
            installment_id: *installment_id,
            agreement_id: *agreement_id,
            attempt_no: 1,
            idempotency_key: format!("claim-test-{installment_id}"),
            scheduled_at_ms: t0 + n as i64,
            amount_minor: 100,
            currency: "USD".into(),
            retry_reason: None,
        };
        let event = repayd::store::NewEvent {
            at_ms: 0,
            kind: "debit_attempt_planned",
            agreement_id: Some(*agreement_id),
            installment_id: Some(*installment_id),
            attempt_id: None,
            detail: serde_json::json!({}),
        };
        assert!(store.insert_attempt(&attempt, &event).await.unwrap());
    }
    // Attempt 0 (the oldest) is claimed and its outcome is lost: unknown, looked up at
    // t0 + 10 min, later than the other two became due.
    let lease = t0 + 300_000;
    let first = store.claim_due_attempts("w1", t0, lease, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let unknown_id = first[0].id;
    let lookup_at = t0 + 600_000;
    store
        .apply_attempt_change(
            &Fence {
                attempt_id: unknown_id,
                expected_state: "claimed".into(),
                owner: "w1".into(),
            },
            &AttemptChange {
                state: "unknown",
                scheduled_at_ms: Some(lookup_at),
                release_lease: true,
                ..Default::default()
            },
            &Effects::default(),
            t0,
        )
        .await
        .unwrap();
    // Attempt 1 is claimed by a worker that then dies (its lease runs out at t0 + 1 s).
    let dying = store
        .claim_due_attempts("w2", t0 + 1, t0 + 1_000, 1)
        .await
        .unwrap();
    assert_eq!(dying.len(), 1);
    let orphan_id = dying[0].id;
    assert_ne!(orphan_id, unknown_id);

    let now = lookup_at + 1;
    let claimed = store
        .claim_due_attempts("w3", now, now + 300_000, 3)
        .await
        .unwrap();
    let order: Vec<(i64, &str)> = claimed.iter().map(|r| (r.id, r.state.as_str())).collect();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(
        order[0],
        (orphan_id, "claimed"),
        "expired lease first: {order:?}"
    );
    assert_eq!(
        order[1],
        (unknown_id, "unknown"),
        "then the look-up: {order:?}"
    );
    assert_eq!(order[2].1, "claimed", "new work last: {order:?}");
    assert!(
        claimed
            .iter()
            .all(|r| r.lease_owner.as_deref() == Some("w3"))
    );
    // Everything is leased now: nothing more to claim.
    assert!(
        store
            .claim_due_attempts("w4", now, now + 300_000, 3)
            .await
            .unwrap()
            .is_empty()
    );
}
both_backends!(
    claims_put_outcomes_before_new_debits,
    super::claims_put_outcomes_before_new_debits
);

/// The planner pages in id order over more than one page: installments with due dates
/// out of id order are each planned exactly once, those past the horizon not at all, and
/// a second pass plans nothing.
async fn planner_pages_plan_each_installment_once(db: TestDb) {
    let store = db.store.clone();
    // Later ids have earlier due dates, so id order and due-date order disagree; 2,400
    // due installments span several planner pages of at most 500 (windows of 1,000 ids).
    let due = ["2027-03-20", "2027-03-05", "2027-03-12", "2027-09-01"];
    let ids = load(&store, 800, &due).await;
    let clock = ManualClock::new(utc(2027, 3, 1, 0));
    let settings = SandboxSettings::default();
    let bank = Arc::new(SandboxBank::new(store.clone(), settings).await.unwrap());
    let engine = Engine::new(
        store.clone(),
        bank,
        Arc::new(clock.clone()),
        policy(8),
        "planner",
    )
    .with_plan_pages(500, 1_000);
    let report = engine.plan().await.unwrap();
    assert_eq!(report.attempts_created, 3 * 800);
    let mut per_installment: HashMap<i64, usize> = HashMap::new();
    for agreement_id in &ids {
        for attempt in store.attempts_for_agreement(*agreement_id).await.unwrap() {
            *per_installment.entry(attempt.installment_id).or_default() += 1;
        }
        let inst = store.installments(*agreement_id).await.unwrap();
        let beyond = inst.iter().find(|i| i.due_date == "2027-09-01").unwrap();
        assert!(
            !per_installment.contains_key(&beyond.id),
            "past the horizon"
        );
    }
    assert_eq!(per_installment.len(), 3 * 800);
    assert!(per_installment.values().all(|n| *n == 1));
    let again = engine.plan().await.unwrap();
    assert_eq!(again.attempts_created, 0);
}
both_backends!(
    planner_pages_plan_each_installment_once,
    super::planner_pages_plan_each_installment_once
);
