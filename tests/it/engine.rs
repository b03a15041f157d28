//! The auto-debit engine on a controlled clock, against the sandbox bank in a real
//! database (SQLite file and PostgreSQL): debits at the right local instant, no debit
//! without a funds check, retries after a short balance, hard declines that stop,
//! crash recovery by idempotency key, and a planner that never doubles work.

use crate::both_backends;
use crate::helpers::TestDb;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::domain::Currency;
use repayd::engine::Engine;
use repayd::engine::policy::{DebitPolicy, EnginePolicy, RetryPolicy};
use repayd::gateway::sandbox::{SandboxBank, SandboxFault, SandboxSettings};
use repayd::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
};
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

pub(crate) fn policy() -> EnginePolicy {
    EnginePolicy {
        debit: DebitPolicy {
            local_time: chrono::NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            horizon_days: 35,
            batch_size: 10,
            max_in_flight: 8,
            lease: Duration::seconds(300),
            key_prefix: "test".into(),
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

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

/// The UTC instant of 06:00 local on `date` in `tz`.
pub(crate) fn six_local(date: &str, tz: Tz) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    tz.from_local_datetime(&d.and_hms_opt(6, 0, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

pub(crate) struct Portfolio {
    pub(crate) agreement_ids: Vec<i64>,
}

pub(crate) struct Spec<'a> {
    pub(crate) id: &'a str,
    pub(crate) tz: &'a str,
    pub(crate) currency: &'a str,
    pub(crate) account: &'a str,
    pub(crate) mandate: &'a str,
    /// (due date, total minor units)
    pub(crate) installments: &'a [(&'a str, i64)],
}

pub(crate) async fn load(store: &Store, specs: &[Spec<'_>]) -> Portfolio {
    let mut ids = Vec::new();
    for s in specs {
        let customer = store
            .insert_customer(
                &NewCustomer {
                    external_id: format!("C-{}", s.id),
                    name: format!("Customer {}", s.id),
                    email: format!("{}@example.com", s.id.to_lowercase()),
                    locale: "en".into(),
                    time_zone: s.tz.into(),
                },
                0,
            )
            .await
            .unwrap();
        let account = store
            .insert_funding_account(
                customer,
                &NewFundingAccount {
                    external_ref: s.account.into(),
                    mandate_ref: format!("MND-{}", s.id),
                    mandate_status: s.mandate.into(),
                },
                0,
            )
            .await
            .unwrap();
        let installments: Vec<NewInstallment> = s
            .installments
            .iter()
            .enumerate()
            .map(|(i, (due, total))| NewInstallment {
                seq: i as i64 + 1,
                due_date: (*due).into(),
                principal_minor: *total,
                interest_minor: 0,
                fee_minor: 0,
            })
            .collect();
        let principal = installments.iter().map(|i| i.principal_minor).sum();
        let id = store
            .insert_agreement(
                &NewAgreement {
                    external_id: s.id.into(),
                    customer_id: customer,
                    funding_account_id: account,
                    currency: s.currency.into(),
                    principal_minor: principal,
                    total_interest_minor: 0,
                    total_fee_minor: 0,
                    method: None,
                    terms_json: None,
                    content_hash: format!("hash-{}", s.id),
                    installments,
                },
                0,
            )
            .await
            .unwrap();
        ids.push(id);
    }
    Portfolio { agreement_ids: ids }
}

async fn bank(store: &Store, clock: &ManualClock) -> Arc<SandboxBank> {
    let settings = SandboxSettings {
        opening_balance: "100000.00".into(),
        ..SandboxSettings::default()
    };
    Arc::new(
        SandboxBank::new(store.clone(), settings)
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    )
}

/// An engine with a given policy (other test modules use this harness too).
pub(crate) fn test_engine(
    store: &Store,
    gateway: Arc<dyn PaymentGateway>,
    clock: &ManualClock,
    policy: EnginePolicy,
) -> Arc<Engine> {
    Arc::new(Engine::new(
        store.clone(),
        gateway,
        Arc::new(clock.clone()),
        policy,
        "test-worker",
    ))
}

fn engine(
    store: &Store,
    gateway: Arc<dyn PaymentGateway>,
    clock: &ManualClock,
    owner: &str,
) -> Arc<Engine> {
    Arc::new(Engine::new(
        store.clone(),
        gateway,
        Arc::new(clock.clone()),
        policy(),
        owner,
    ))
}

/// Moves the clock from event to event (the next due work row, or the next daily
/// planner run) up to `until`, planning and processing at each stop, and calling
/// `between` before each step so a test can act (top up an account) at a given time.
async fn drive<F>(engine: &Arc<Engine>, clock: &ManualClock, until: DateTime<Utc>, mut between: F)
where
    F: AsyncFnMut(DateTime<Utc>),
{
    let shutdown = CancellationToken::new();
    let mut next_plan = clock.now();
    loop {
        let next_due = engine
            .store()
            .next_attempt_due_ms()
            .await
            .unwrap()
            .map(from_epoch_ms);
        let now = match next_due {
            Some(due) if due < next_plan => due.max(clock.now()),
            _ => next_plan,
        };
        if now > until {
            break;
        }
        clock.set(now);
        between(now).await;
        if now >= next_plan {
            engine.plan().await.unwrap();
            next_plan = now + Duration::days(1);
        }
        engine.run_due(&shutdown).await.unwrap();
    }
}

async fn attempts(store: &Store, agreement_id: i64) -> Vec<repayd::store::debits::AttemptRow> {
    store.attempts_for_agreement(agreement_id).await.unwrap()
}

async fn portfolio_runs_through_months(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let bank = bank(&store, &clock).await;
    let p = load(
        &store,
        &[
            // Shanghai: 06:00 local is 22:00 UTC the day before; a month-end series.
            Spec {
                id: "SH",
                tz: "Asia/Shanghai",
                currency: "CNY",
                account: "ACC-SH",
                mandate: "active",
                installments: &[
                    ("2027-01-31", 100_000),
                    ("2027-02-28", 100_000),
                    ("2027-03-31", 100_034),
                ],
            },
            // New York: crosses the start of daylight saving time on 2027-03-14; the
            // account is short on the first due date and topped up the day after.
            Spec {
                id: "NY",
                tz: "America/New_York",
                currency: "USD",
                account: "ACC-NY",
                mandate: "active",
                installments: &[("2027-02-14", 25_000), ("2027-03-14", 25_000)],
            },
            // London: the bank declines the debit hard (mandate invalid).
            Spec {
                id: "LN",
                tz: "Europe/London",
                currency: "GBP",
                account: "ACC-LN",
                mandate: "active",
                installments: &[("2027-01-15", 9_999)],
            },
            // A revoked mandate: never debited.
            Spec {
                id: "RV",
                tz: "Asia/Shanghai",
                currency: "CNY",
                account: "ACC-RV",
                mandate: "revoked",
                installments: &[("2027-01-20", 5_000)],
            },
        ],
    )
    .await;
    let usd = Currency::parse("USD").unwrap();
    bank.set_balance("ACC-NY", usd, 10_000).await.unwrap();
    bank.set_balance("ACC-LN", Currency::parse("GBP").unwrap(), 50_000)
        .await
        .unwrap();
    // London's is the first debit of the run: the bank refuses it hard.
    bank.inject(SandboxFault::DeclineNextDebitHard);
    let sh_start = 100_000_00;
    bank.set_balance("ACC-SH", Currency::parse("CNY").unwrap(), sh_start)
        .await
        .unwrap();

    let engine = engine(&store, bank.clone(), &clock, "worker-a");
    let topped_up = AtomicBool::new(false);
    let bank2 = bank.clone();
    drive(&engine, &clock, utc(2027, 5, 1, 0, 0), async |now| {
        // Top up New York after the first short funds check, before the retry.
        if now > six_local("2027-02-14", chrono_tz::America::New_York)
            && !topped_up.swap(true, Ordering::SeqCst)
        {
            bank2.set_balance("ACC-NY", usd, 100_000).await.unwrap();
        }
    })
    .await;

    // Shanghai: three debits, each at 06:00 Asia/Shanghai on its due date.
    let sh = attempts(&store, p.agreement_ids[0]).await;
    assert_eq!(sh.len(), 3, "{sh:#?}");
    for (a, due) in sh.iter().zip(["2027-01-31", "2027-02-28", "2027-03-31"]) {
        assert_eq!(a.state, "succeeded");
        assert_eq!(
            from_epoch_ms(a.scheduled_at_ms),
            six_local(due, chrono_tz::Asia::Shanghai)
        );
        assert_eq!(
            a.finished_at_ms,
            Some(a.scheduled_at_ms),
            "debited at the planned instant"
        );
    }
    assert_eq!(
        from_epoch_ms(sh[0].scheduled_at_ms),
        utc(2027, 1, 30, 22, 0),
        "06:00 in Shanghai is 22:00 UTC the day before"
    );
    assert_eq!(
        bank.balance("ACC-SH").await.unwrap(),
        Some(sh_start - 300_034)
    );
    assert_eq!(bank.debit_count("ACC-SH").await.unwrap(), 3);

    // New York: short on 02-14 (no debit), retried at 06:00 on 02-15 after the top-up;
    // the March debit runs at 06:00 EDT, an hour earlier in UTC than in February.
    let ny = attempts(&store, p.agreement_ids[1]).await;
    let states: Vec<_> = ny
        .iter()
        .map(|a| (a.attempt_no, a.state.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, "insufficient_funds"),
            (2, "succeeded"),
            (1, "succeeded")
        ]
    );
    assert_eq!(
        from_epoch_ms(ny[0].scheduled_at_ms),
        utc(2027, 2, 14, 11, 0),
        "EST"
    );
    assert_eq!(
        from_epoch_ms(ny[1].scheduled_at_ms),
        utc(2027, 2, 15, 11, 0),
        "retry +1 day"
    );
    assert_eq!(
        from_epoch_ms(ny[2].scheduled_at_ms),
        utc(2027, 3, 14, 10, 0),
        "EDT after the change"
    );
    assert_eq!(bank.debit_count("ACC-NY").await.unwrap(), 2);
    assert_eq!(
        bank.balance("ACC-NY").await.unwrap(),
        Some(100_000 - 50_000)
    );

    // London: declined hard once, nothing more planned.
    let ln = attempts(&store, p.agreement_ids[2]).await;
    assert_eq!(ln.len(), 1);
    assert_eq!(ln[0].state, "declined");
    assert_eq!(ln[0].outcome_code.as_deref(), Some("mandate_invalid"));
    assert_eq!(bank.debit_count("ACC-LN").await.unwrap(), 0);

    // Revoked mandate: no funds check, no debit, the failure recorded.
    let rv = attempts(&store, p.agreement_ids[3]).await;
    assert_eq!(rv.len(), 1);
    assert_eq!(rv[0].state, "failed");
    assert_eq!(rv[0].outcome_code.as_deref(), Some("mandate_revoked"));
    assert_eq!(rv[0].funds_checked_at_ms, None);

    // Every installment ends paid or with its failure recorded.
    for id in &p.agreement_ids {
        for inst in store.installments(*id).await.unwrap() {
            let tries = store.attempts_for_installment(inst.id).await.unwrap();
            let last = tries.last().expect("every due installment has an attempt");
            match inst.status.as_str() {
                "paid" => assert_eq!(last.state, "succeeded"),
                _ => assert!(
                    ["declined", "failed", "insufficient_funds"].contains(&last.state.as_str()),
                    "unpaid installment {} ends in {}",
                    inst.id,
                    last.state
                ),
            }
        }
    }
    let sh_agreement = store.agreement(p.agreement_ids[0]).await.unwrap().unwrap();
    assert_eq!(sh_agreement.status, "completed");

    // No debit without a funds check in the same attempt, confirmed before submission.
    let events = store.events(None).await.unwrap();
    for submitted in events.iter().filter(|e| e.kind == "debit_submitted") {
        let confirmed = events.iter().find(|e| {
            e.kind == "funds_confirmed"
                && e.attempt_id == submitted.attempt_id
                && e.id < submitted.id
        });
        assert!(
            confirmed.is_some(),
            "debit without funds check: {submitted:?}"
        );
    }
}
both_backends!(
    portfolio_runs_through_months,
    super::portfolio_runs_through_months
);

async fn planner_twice_creates_nothing_new(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let bank = bank(&store, &clock).await;
    load(
        &store,
        &[Spec {
            id: "P",
            tz: "Europe/London",
            currency: "GBP",
            account: "ACC-P",
            mandate: "active",
            installments: &[
                ("2027-01-10", 1_000),
                ("2027-01-20", 1_000),
                ("2027-06-20", 1_000),
            ],
        }],
    )
    .await;
    let engine = engine(&store, bank, &clock, "w");
    let first = engine.plan().await.unwrap();
    assert_eq!(
        first.attempts_created, 2,
        "only the installments within the horizon"
    );
    let second = engine.plan().await.unwrap();
    assert_eq!(second.attempts_created, 0);
    // Two planners racing (two daemons on PostgreSQL) still create nothing twice.
    let other = Arc::new(Engine::new(
        db.reconnect().await,
        engine_gateway(&store, &clock).await,
        Arc::new(clock.clone()),
        policy(),
        "w2",
    ));
    let (a, b) = tokio::join!(engine.plan(), other.plan());
    assert_eq!(a.unwrap().attempts_created + b.unwrap().attempts_created, 0);
    let counts = store.attempt_state_counts().await.unwrap();
    assert_eq!(counts, vec![("scheduled".to_string(), 2)]);
}
both_backends!(
    planner_twice_creates_nothing_new,
    super::planner_twice_creates_nothing_new
);

async fn engine_gateway(store: &Store, clock: &ManualClock) -> Arc<dyn PaymentGateway> {
    bank(store, clock).await
}

/// A gateway whose debit call never returns once armed: the process "dies" while the
/// request is out, before or after the bank booked it.
#[derive(Debug)]
struct Hang {
    inner: Arc<SandboxBank>,
    hang_after_booking: AtomicBool,
    hang_before_booking: AtomicBool,
}

#[async_trait::async_trait]
impl PaymentGateway for Hang {
    async fn check_funds(
        &self,
        account_ref: &str,
        amount: &repayd::domain::Money,
    ) -> Result<FundsAnswer, GatewayError> {
        self.inner.check_funds(account_ref, amount).await
    }
    async fn debit(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        if self.hang_before_booking.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let outcome = self.inner.debit(request).await;
        if self.hang_after_booking.swap(false, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        outcome
    }
    async fn lookup(&self, key: &str) -> Result<LookupOutcome, GatewayError> {
        self.inner.lookup(key).await
    }
}

async fn crash_between_debit_and_record(db: TestDb, after_booking: bool) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 9, 0, 0));
    let bank = bank(&store, &clock).await;
    let p = load(
        &store,
        &[Spec {
            id: "K",
            tz: "Europe/London",
            currency: "GBP",
            account: "ACC-K",
            mandate: "active",
            installments: &[("2027-01-10", 12_345)],
        }],
    )
    .await;
    bank.set_balance("ACC-K", Currency::parse("GBP").unwrap(), 50_000)
        .await
        .unwrap();
    let hang = Arc::new(Hang {
        inner: bank.clone(),
        hang_after_booking: AtomicBool::new(after_booking),
        hang_before_booking: AtomicBool::new(!after_booking),
    });
    let first = engine(&store, hang.clone(), &clock, "doomed");
    first.plan().await.unwrap();
    clock.set(utc(2027, 1, 10, 6, 0));
    let key = attempts(&store, p.agreement_ids[0]).await[0]
        .idempotency_key
        .clone();

    // Run the worker until the debit is out, then kill it mid-flight.
    let task = {
        let first = first.clone();
        tokio::spawn(async move { first.run_due(&CancellationToken::new()).await })
    };
    for _ in 0..200 {
        let a = &attempts(&store, p.agreement_ids[0]).await[0];
        let booked = bank.debits_for_key(&key).await.unwrap() == 1;
        if a.state == "submitted" && (booked || !after_booking) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    task.abort();
    let _ = task.await;
    let a = &attempts(&store, p.agreement_ids[0]).await[0];
    assert_eq!(a.state, "submitted", "killed between sending and recording");
    assert_eq!(
        bank.debits_for_key(&key).await.unwrap(),
        i64::from(after_booking)
    );

    // A fresh worker (a restarted daemon) waits for the lease, then reconciles by key.
    let second = engine(&db.reconnect().await, bank.clone(), &clock, "restarted");
    let report = second.run_due(&CancellationToken::new()).await.unwrap();
    assert_eq!(report.claimed, 0, "the dead worker's lease still holds");
    clock.advance(Duration::seconds(301));
    second.run_due(&CancellationToken::new()).await.unwrap();

    let a = &attempts(&store, p.agreement_ids[0]).await[0];
    assert_eq!(a.state, "succeeded");
    assert_eq!(a.idempotency_key, key, "reconciled under the same key");
    assert_eq!(
        bank.debits_for_key(&key).await.unwrap(),
        1,
        "exactly one debit at the bank"
    );
    assert_eq!(bank.debit_count("ACC-K").await.unwrap(), 1);
    assert_eq!(bank.balance("ACC-K").await.unwrap(), Some(50_000 - 12_345));
    let inst = &store.installments(p.agreement_ids[0]).await.unwrap()[0];
    assert_eq!((inst.status.as_str(), inst.paid_minor), ("paid", 12_345));
    let kinds: Vec<String> = store
        .events(Some(p.agreement_ids[0]))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "debit_succeeded").count(), 1);
    if !after_booking {
        assert!(
            kinds.contains(&"debit_resubmitted".to_string()),
            "{kinds:?}"
        );
    }
}

async fn crash_after_booking(db: TestDb) {
    crash_between_debit_and_record(db, true).await
}
async fn crash_before_booking(db: TestDb) {
    crash_between_debit_and_record(db, false).await
}
both_backends!(
    killed_after_the_bank_booked_reconciles_to_one_debit,
    super::crash_after_booking
);
both_backends!(
    killed_before_the_bank_booked_resubmits_under_the_same_key,
    super::crash_before_booking
);

async fn lost_answers_and_gateway_faults_never_double_debit(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let bank = bank(&store, &clock).await;
    let p = load(
        &store,
        &[Spec {
            id: "F",
            tz: "Asia/Shanghai",
            currency: "CNY",
            account: "ACC-F",
            mandate: "active",
            installments: &[
                ("2027-01-05", 1_000),
                ("2027-01-06", 2_000),
                ("2027-01-07", 3_000),
                ("2027-01-08", 4_000),
            ],
        }],
    )
    .await;
    bank.set_balance("ACC-F", Currency::parse("CNY").unwrap(), 1_000_000)
        .await
        .unwrap();
    bank.inject(SandboxFault::LoseNextDebitAnswer);
    bank.inject(SandboxFault::FailNextFundsCheck);
    bank.inject(SandboxFault::FailNextDebitBeforeBooking);
    bank.inject(SandboxFault::FailNextLookup);
    let engine = engine(&store, bank.clone(), &clock, "w");
    drive(&engine, &clock, utc(2027, 1, 20, 0, 0), async |_| {}).await;
    for inst in store.installments(p.agreement_ids[0]).await.unwrap() {
        assert_eq!(inst.status, "paid", "{inst:?}");
    }
    assert_eq!(
        bank.debit_count("ACC-F").await.unwrap(),
        4,
        "one debit per installment"
    );
    assert_eq!(
        bank.balance("ACC-F").await.unwrap(),
        Some(1_000_000 - 10_000)
    );
}
both_backends!(
    lost_answers_and_gateway_faults_never_double_debit,
    super::lost_answers_and_gateway_faults_never_double_debit
);

async fn two_workers_share_the_work_without_doubling(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let bank = bank(&store, &clock).await;
    let dues: Vec<(&str, i64)> = (0..30).map(|_| ("2027-01-10", 1_00)).collect();
    let dues: &'static [(&'static str, i64)] = Box::leak(dues.into_boxed_slice());
    let p = load(
        &store,
        &[Spec {
            id: "M",
            tz: "UTC",
            currency: "EUR",
            account: "ACC-M",
            mandate: "active",
            installments: dues,
        }],
    )
    .await;
    let a = engine(&store, bank.clone(), &clock, "worker-a");
    let b = engine(&db.reconnect().await, bank.clone(), &clock, "worker-b");
    a.plan().await.unwrap();
    clock.set(utc(2027, 1, 10, 7, 0));
    let token = CancellationToken::new();
    let (ra, rb) = tokio::join!(a.run_due(&token), b.run_due(&token));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.succeeded + rb.succeeded, 30, "{ra:?} {rb:?}");
    assert_eq!(bank.debit_count("ACC-M").await.unwrap(), 30);
    let paid = store
        .installments(p.agreement_ids[0])
        .await
        .unwrap()
        .iter()
        .filter(|i| i.status == "paid")
        .count();
    assert_eq!(paid, 30);
}
both_backends!(
    two_workers_share_the_work_without_doubling,
    super::two_workers_share_the_work_without_doubling
);

/// The debit loop reads a claimed batch's contexts and funding sources in two statements
/// (`debit_contexts`, `funding_sources_of`): attempt by attempt they must be what the
/// one-attempt reads give. And the bench's poll (`work_left`) sees due and leased work.
async fn batch_reads_match_the_single_reads(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let bank = bank(&store, &clock).await;
    let p = load(
        &store,
        &[
            Spec {
                id: "BA",
                tz: "UTC",
                currency: "EUR",
                account: "ACC-BA",
                mandate: "active",
                installments: &[("2027-01-10", 1_00), ("2027-01-20", 2_00)],
            },
            Spec {
                id: "BB",
                tz: "Asia/Shanghai",
                currency: "CNY",
                account: "ACC-BB",
                mandate: "revoked",
                installments: &[("2027-01-10", 3_00)],
            },
        ],
    )
    .await;
    let a = engine(&store, bank, &clock, "worker-a");
    let at = |t: DateTime<Utc>| t.timestamp_millis();
    assert_eq!(
        store.work_left(at(clock.now())).await.unwrap(),
        (false, false),
        "nothing planned yet"
    );
    a.plan().await.unwrap();
    assert_eq!(
        store.work_left(at(clock.now())).await.unwrap(),
        (false, false),
        "planned, not yet due"
    );
    clock.set(utc(2027, 1, 10, 7, 0));
    let now = at(clock.now());
    assert!(store.work_left(now).await.unwrap().0, "due");
    let claimed = store
        .claim_due_attempts("worker-a", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2, "the installments due on the 10th");
    assert!(store.work_left(now).await.unwrap().0, "leased: in flight");

    let mut ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
    ids.push(i64::MAX);
    let contexts = store.debit_contexts(&ids).await.unwrap();
    assert_eq!(contexts.len(), 2, "an unknown attempt is left out");
    for c in &claimed {
        assert_eq!(
            format!("{:?}", contexts[&c.id]),
            format!("{:?}", store.debit_context(c.id).await.unwrap())
        );
    }
    let mut agreements = p.agreement_ids.clone();
    agreements.push(i64::MAX);
    let sources = store.funding_sources_of(&agreements).await.unwrap();
    assert_eq!(sources.len(), 2, "an unknown agreement is left out");
    for id in &p.agreement_ids {
        let one = store.funding_sources(*id).await.unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(format!("{:?}", sources[id]), format!("{one:?}"));
    }
    assert_eq!(sources[&p.agreement_ids[1]][0].mandate_status, "revoked");
}
both_backends!(
    batch_reads_match_the_single_reads,
    super::batch_reads_match_the_single_reads
);

/// A long planning pass refreshes the statistics of the tables it fills as it goes
/// (`refresh_planned_statistics`): afterwards the database has statistics for them.
async fn planned_tables_get_statistics(db: TestDb) {
    let store = db.store.clone();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let bank = bank(&store, &clock).await;
    load(
        &store,
        &[Spec {
            id: "ST",
            tz: "UTC",
            currency: "EUR",
            account: "ACC-ST",
            mandate: "active",
            installments: &[("2027-01-10", 1_00), ("2027-01-20", 2_00)],
        }],
    )
    .await;
    engine(&store, bank, &clock, "worker-a")
        .plan()
        .await
        .unwrap();
    store.refresh_planned_statistics().await.unwrap();
    let analyzed: i64 = if db.url.starts_with("sqlite:") {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&db.url)
            .await
            .unwrap();
        let n = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT tbl) FROM sqlite_stat1 WHERE tbl = 'debit_attempts'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&db.url)
            .await
            .unwrap();
        let n = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_user_tables \
             WHERE relname IN ('debit_attempts', 'reminders') AND last_analyze IS NOT NULL",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        n
    };
    let expected = if db.url.starts_with("sqlite:") { 1 } else { 2 };
    assert_eq!(analyzed, expected);
}
both_backends!(
    planned_tables_get_statistics,
    super::planned_tables_get_statistics
);

#[tokio::test]
async fn a_second_daemon_on_the_same_sqlite_file_is_refused() {
    let db = TestDb::sqlite().await;
    let first = db.store.lock_for_daemon().unwrap();
    assert!(first.is_some());
    let other = db.reconnect().await;
    let err = other.lock_for_daemon().unwrap_err();
    assert!(err.to_string().contains("another repayd process"), "{err}");
    drop(first);
    assert!(
        other.lock_for_daemon().unwrap().is_some(),
        "free again once the first stops"
    );
}
