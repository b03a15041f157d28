//! Collections (issue 13) through the whole engine, on both databases, against the
//! sandbox bank and against the loopback HTTP bank of `gateway_http.rs` speaking protocol
//! 1.1: partial collection, funding sources tried in order, and debits the bank returns
//! days later (applied once, also when the feed is replayed or two daemons read it at the
//! same moment). The customer's inbox (a real SMTP listener) is read as the customer would
//! read it.

use crate::both_backends;
use crate::gateway_http::{TestBank, client_v11, start};
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use crate::overdue::{hook_server, local, utc};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::domain::{Currency, Money};
use repayd::engine::policy::{EnginePolicy, PartialCollection};
use repayd::engine::{Engine, MailDeps};
use repayd::gateway::sandbox::{SandboxBank, SandboxSettings};
use repayd::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
    ReturnsPage,
};
use repayd::mail::Templates;
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

fn cny(minor: i64) -> Money {
    Money::from_minor(minor, Currency::parse("CNY").unwrap())
}

/// The bank behind the engine: the embedded sandbox, or the loopback HTTP bank.
#[derive(Clone)]
pub(crate) enum Bank {
    Sandbox(Arc<SandboxBank>),
    Http(TestBank),
}

impl Bank {
    pub(crate) async fn new(
        http: bool,
        store: &Store,
        clock: &ManualClock,
    ) -> (Bank, Arc<dyn PaymentGateway>) {
        if http {
            let bank = TestBank::default();
            let gw: Arc<dyn PaymentGateway> = Arc::new(client_v11(&start(&bank).await));
            (Bank::Http(bank), gw)
        } else {
            let bank = Arc::new(
                SandboxBank::new(store.clone(), SandboxSettings::default())
                    .await
                    .unwrap()
                    .with_clock(Arc::new(clock.clone())),
            );
            (Bank::Sandbox(bank.clone()), bank)
        }
    }

    pub(crate) async fn set_balance(&self, account: &str, minor: i64) {
        match self {
            Bank::Sandbox(b) => b
                .set_balance(account, Currency::parse("CNY").unwrap(), minor)
                .await
                .unwrap(),
            Bank::Http(b) => b.set_balance(account, cny(minor)),
        }
    }

    async fn balance(&self, account: &str) -> i64 {
        match self {
            Bank::Sandbox(b) => b.balance(account).await.unwrap().unwrap(),
            Bank::Http(b) => b.balance(account).minor(),
        }
    }

    /// The bank returns the debit booked under `key`.
    async fn return_debit(&self, key: &str, reason: &str, hard: bool) {
        match self {
            Bank::Sandbox(b) => {
                b.return_debit(key, reason, hard).await.unwrap();
            }
            Bank::Http(b) => {
                b.return_debit(key, reason, hard);
            }
        }
    }

    fn booked(&self) -> Option<u32> {
        match self {
            Bank::Sandbox(_) => None,
            Bank::Http(b) => Some(b.total_bookings()),
        }
    }
}

/// A gateway that forgets where the returns feed was read to and serves it from the start
/// every time: what a bank that replays its feed (or a lost cursor) looks like.
#[derive(Debug)]
struct ReplayingFeed(Arc<dyn PaymentGateway>);

#[async_trait::async_trait]
impl PaymentGateway for ReplayingFeed {
    async fn check_funds(&self, a: &str, m: &Money) -> Result<FundsAnswer, GatewayError> {
        self.0.check_funds(a, m).await
    }
    async fn debit(&self, r: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        self.0.debit(r).await
    }
    async fn lookup(&self, k: &str) -> Result<LookupOutcome, GatewayError> {
        self.0.lookup(k).await
    }
    async fn returns_after(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Option<ReturnsPage>, GatewayError> {
        // Always from the start; the page's own next cursor is where the feed ends.
        let _ = cursor;
        let page = self.0.returns_after(None, limit).await?;
        Ok(page)
    }
}

pub(crate) fn policy(hook_url: String) -> EnginePolicy {
    let mut p = crate::overdue::policy(Some(hook_url), None);
    p.debit.partial = PartialCollection {
        enabled: true,
        max_shortfall_percent: 50,
        minimum: rust_decimal::Decimal::new(5000, 2),
    };
    p.reminders.offsets_days = vec![3];
    // Late fees are another story (tests/it/overdue.rs): amounts here stay the
    // installment's own.
    p.overdue.late_fee = None;
    p
}

pub(crate) fn engine(
    db: &TestDb,
    gateway: Arc<dyn PaymentGateway>,
    clock: &ManualClock,
    smtp: &SmtpListener,
    policy: EnginePolicy,
) -> Arc<Engine> {
    let settings: repayd::mail::MailSettings = toml::from_str(
        r#"
        kind = "outbox"
        from = "Example Finance <repayments@example.com>"
        lender_name = "Example Finance"
        payment_url = "https://pay.example.com/"
        "#,
    )
    .unwrap();
    let mail = MailDeps::new(
        smtp.mailer("[10]"),
        Templates::load(None).unwrap(),
        settings,
    );
    Arc::new(
        Engine::new(
            db.store.clone(),
            gateway,
            Arc::new(clock.clone()),
            policy,
            "coll-worker",
        )
        .with_mail(mail),
    )
}

/// One customer in Shanghai (English emails) with one agreement of `dues` installments
/// of `amount` each, debited from `account`; returns the agreement id.
pub(crate) async fn customer(
    store: &Store,
    id: &str,
    account: &str,
    dues: &[&str],
    amount: i64,
) -> i64 {
    let customer = store
        .insert_customer(
            &NewCustomer {
                external_id: format!("C-{id}"),
                name: format!("Customer {id}"),
                email: format!("{}@example.com", id.to_lowercase()),
                locale: "en".into(),
                time_zone: "Asia/Shanghai".into(),
            },
            0,
        )
        .await
        .unwrap();
    let funding = store
        .insert_funding_account(
            customer,
            &NewFundingAccount {
                external_ref: account.into(),
                mandate_ref: format!("MND-{id}"),
                mandate_status: "active".into(),
            },
            0,
        )
        .await
        .unwrap();
    let installments: Vec<NewInstallment> = dues
        .iter()
        .enumerate()
        .map(|(i, due)| NewInstallment {
            seq: i as i64 + 1,
            due_date: (*due).into(),
            principal_minor: amount,
            interest_minor: 0,
            fee_minor: 0,
        })
        .collect();
    store
        .insert_agreement(
            &NewAgreement {
                external_id: id.into(),
                customer_id: customer,
                funding_account_id: funding,
                currency: "CNY".into(),
                principal_minor: amount * dues.len() as i64,
                total_interest_minor: 0,
                total_fee_minor: 0,
                method: None,
                terms_json: None,
                content_hash: format!("hash-{id}"),
                installments,
            },
            0,
        )
        .await
        .unwrap()
}

/// Moves the clock from one piece of due work to the next (and a daily planner and
/// assessment tick at 17:00 UTC), reading the returns feed at every stop as the daemon's
/// worker does; `between` acts at a given time (a top-up, a return) before the step.
pub(crate) async fn drive<F>(
    engine: &Arc<Engine>,
    clock: &ManualClock,
    until: DateTime<Utc>,
    mut between: F,
) where
    F: AsyncFnMut(DateTime<Utc>),
{
    let shutdown = CancellationToken::new();
    let mut next_tick = clock.now();
    for step in 0.. {
        assert!(
            step < 10_000,
            "the clock does not move on at {}",
            clock.now()
        );
        let store = engine.store();
        let due = [
            store.next_attempt_due_ms().await.unwrap(),
            store.next_reminder_due_ms().await.unwrap(),
            store.next_alert_due_ms().await.unwrap(),
        ]
        .into_iter()
        .flatten()
        .map(from_epoch_ms)
        .min();
        // Stops at least every six hours, so an action planned by `between` is on time.
        let now = match due {
            Some(d) if d < next_tick => d.max(clock.now()),
            _ => next_tick,
        }
        .min(clock.now() + Duration::hours(6));
        if now > until {
            break;
        }
        clock.set(now);
        between(now).await;
        if now >= next_tick {
            engine.plan().await.unwrap();
            engine.assess_overdue().await.unwrap();
            next_tick += Duration::days(1);
        }
        engine.poll_returns().await.unwrap();
        engine.run_due(&shutdown).await.unwrap();
        engine.run_reminders(&shutdown).await.unwrap();
        engine.run_alerts().await.unwrap();
    }
    clock.set(until);
}

/// The emails to `to`, as (subject, text part), in the order they arrived.
pub(crate) fn inbox(smtp: &SmtpListener, to: &str) -> Vec<(String, String)> {
    smtp.messages()
        .iter()
        .filter(|m| m.to.iter().any(|t| t.contains(to)))
        .map(|m| {
            let p = parse(&m.data);
            (p.subject(), p.part("text/plain").to_string())
        })
        .collect()
}

/// Partial collection, then the bank returns the debit that completed the installment:
/// what the ledger, the bank, the event log, operations and the customer see.
async fn partial_then_returned(db: TestDb, http: bool) {
    let store = db.store.clone();
    let smtp = SmtpListener::start();
    let (hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2027, 1, 13, 17, 0));
    let (bank, gateway) = Bank::new(http, &store, &clock).await;
    let engine = engine(&db, gateway.clone(), &clock, &smtp, policy(url));
    let a = customer(
        &store,
        "PART",
        "ACC-PART-0001",
        &["2027-01-15", "2027-02-15"],
        500_00,
    )
    .await;
    // Short by more than half: never a partial debit.
    let b = customer(&store, "FAR", "ACC-FAR-0002", &["2027-01-15"], 500_00).await;
    bank.set_balance("ACC-PART-0001", 300_00).await;
    bank.set_balance("ACC-FAR-0002", 100_00).await;

    // Due day: 300.00 of 500.00 is taken; the rest is tried the next day. Top up 200.00
    // at noon; the next day's attempt takes it.
    let topped = std::sync::atomic::AtomicBool::new(false);
    drive(
        &engine,
        &clock,
        local("2027-01-16", 12, 0, SHANGHAI),
        async |now| {
            if now >= local("2027-01-15", 12, 0, SHANGHAI)
                && !topped.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                bank.set_balance("ACC-PART-0001", 200_00).await;
            }
        },
    )
    .await;
    let attempts = store.attempts_for_agreement(a).await.unwrap();
    let first: Vec<_> = attempts
        .iter()
        .filter(|x| x.installment_id == attempts[0].installment_id)
        .collect();
    assert_eq!(first.len(), 2, "{first:#?}");
    assert_eq!(
        (
            first[0].state.as_str(),
            first[0].outcome_code.as_deref(),
            first[0].amount_minor
        ),
        ("succeeded", Some("partial"), 300_00)
    );
    assert_eq!(
        from_epoch_ms(first[1].scheduled_at_ms),
        local("2027-01-16", 6, 0, SHANGHAI),
        "the rest is tried by the short-balance policy"
    );
    assert_eq!(
        (first[1].state.as_str(), first[1].amount_minor),
        ("succeeded", 200_00)
    );
    let inst = store.installments(a).await.unwrap();
    assert_eq!(
        (inst[0].status.as_str(), inst[0].paid_minor),
        ("paid", 500_00)
    );
    assert_eq!(bank.balance("ACC-PART-0001").await, 0);
    // The far-short account: nothing taken, a failure notice, a retry planned.
    let far = store.attempts_for_agreement(b).await.unwrap();
    assert_eq!(far[0].state, "insufficient_funds");
    assert_eq!(bank.balance("ACC-FAR-0002").await, 100_00);
    assert_eq!(store.installments(b).await.unwrap()[0].paid_minor, 0);
    let events = store.events(Some(a)).await.unwrap();
    let confirmed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "funds_confirmed")
        .collect();
    assert!(
        confirmed[0].detail.contains("\"partial\":true"),
        "{confirmed:?}"
    );

    // A week after the due date the bank returns the 200.00 (not enough money when it
    // settled).
    let returned_key = first[1].idempotency_key.clone();
    drive(
        &engine,
        &clock,
        local("2027-01-22", 10, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    bank.return_debit(&returned_key, "insufficient_funds", false)
        .await;
    drive(
        &engine,
        &clock,
        local("2027-01-22", 10, 30, SHANGHAI),
        async |_| {},
    )
    .await;
    let inst = store.installments(a).await.unwrap();
    assert_eq!(
        (
            inst[0].status.as_str(),
            inst[0].paid_minor,
            inst[0].paid_at_ms
        ),
        ("unpaid", 300_00, None),
        "the return reversed what its debit paid"
    );
    let d = store
        .delinquency(a)
        .await
        .unwrap()
        .expect("assessed after the return");
    assert_eq!(d.oldest_due_date.as_deref(), Some("2027-01-15"));
    // 22 January - 15 January - 3 days of grace: counted from the original due date.
    assert_eq!(d.dpd, 4, "days past due from the original due date");
    let attempts = store.attempts_for_installment(inst[0].id).await.unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert_eq!(attempts[2].state, "scheduled");
    assert_eq!(
        from_epoch_ms(attempts[2].scheduled_at_ms),
        local("2027-01-23", 6, 0, SHANGHAI),
        "retried like a soft decline: soft_decline_days[0] = 1 day later"
    );
    let events = store.events(Some(a)).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == "debit_returned").count(),
        1
    );

    // The feed served again from the start (a lost cursor, a bank replaying its feed):
    // nothing is applied twice.
    let replaying = Arc::new(ReplayingFeed(gateway.clone()));
    let replay_engine = {
        let (hook2, url2) = hook_server().await;
        drop(hook2);
        crate::collections::engine(&db, replaying, &clock, &smtp, policy(url2))
    };
    for _ in 0..3 {
        let again = replay_engine.poll_returns().await.unwrap();
        assert_eq!((again.applied, again.repeated), (0, 1), "{again:?}");
    }
    assert_eq!(store.installments(a).await.unwrap()[0].paid_minor, 300_00);
    assert_eq!(
        store
            .attempts_for_installment(inst[0].id)
            .await
            .unwrap()
            .len(),
        3
    );

    // The retry collects the 200.00 again (the money came back to the account).
    drive(
        &engine,
        &clock,
        local("2027-01-24", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let inst = store.installments(a).await.unwrap();
    assert_eq!(
        (inst[0].status.as_str(), inst[0].paid_minor),
        ("paid", 500_00)
    );
    assert_eq!(bank.balance("ACC-PART-0001").await, 0);
    if let Some(booked) = bank.booked() {
        assert_eq!(booked, 3, "300.00, 200.00, 200.00 again: each booked once");
    }

    // Operations were alerted once, with the bank's reason.
    let received = hook.received.lock().unwrap().clone();
    let returns: Vec<_> = received
        .iter()
        .filter(|(p, _)| p["kind"] == "debit_returned")
        .collect();
    assert_eq!(returns.len(), 1, "{received:#?}");
    assert_eq!(returns[0].0["code"], "insufficient_funds");

    // The customer's inbox: one clear message for each thing that happened, true amounts.
    let mails = inbox(&smtp, "part@example.com");
    let subjects: Vec<&str> = mails.iter().map(|(s, _)| s.as_str()).collect();
    let partial: Vec<_> = mails
        .iter()
        .filter(|(s, _)| s.starts_with("Part payment received"))
        .collect();
    assert_eq!(partial.len(), 1, "{subjects:#?}");
    let (subject, text) = partial[0];
    assert!(
        subject.contains("300.00") && subject.contains("500.00") && subject.contains("200.00"),
        "{subject}"
    );
    assert!(
        text.contains("200.00 of this payment is still due"),
        "{text}"
    );
    assert!(text.contains("We'll try to collect it at"), "{text}");
    let returned: Vec<_> = mails
        .iter()
        .filter(|(_, t)| t.contains("has been returned by your bank"))
        .collect();
    assert_eq!(returned.len(), 1, "{subjects:#?}");
    let (_, text) = returned[0];
    assert!(
        text.contains("wasn't enough money in the account when the payment settled"),
        "{text}"
    );
    assert!(
        text.contains("unpaid again, and overdue:") && text.contains("200.00 is due now"),
        "{text}"
    );
    assert!(text.contains("We'll try to collect it again at"), "{text}");
    // Receipts: the partial one, the one that completed the installment, the one after the
    // return; no failure notice (nothing failed), and nothing repeated.
    let receipts = mails
        .iter()
        .filter(|(s, _)| s.starts_with("Payment received"))
        .count();
    assert_eq!(receipts, 2, "{subjects:#?}");
    assert!(
        !subjects.iter().any(|s| s.contains("couldn't collect")),
        "{subjects:#?}"
    );
    assert!(mails.len() <= 6, "no flood: {subjects:#?}");
}

async fn partial_then_returned_sandbox(db: TestDb) {
    partial_then_returned(db, false).await
}
async fn partial_then_returned_http(db: TestDb) {
    partial_then_returned(db, true).await
}
both_backends!(
    partial_then_returned_on_the_sandbox,
    super::partial_then_returned_sandbox
);
both_backends!(
    partial_then_returned_on_the_http_gateway,
    super::partial_then_returned_http
);

/// A hard return (the customer disputed the debit) reopens the installment and tells the
/// customer, but is never retried automatically; a return for a key repayd never sent is
/// recorded and alerted, and changes nothing.
async fn hard_returns_are_not_retried(db: TestDb, http: bool) {
    let store = db.store.clone();
    let smtp = SmtpListener::start();
    let (hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2027, 1, 13, 17, 0));
    let (bank, gateway) = Bank::new(http, &store, &clock).await;
    let engine = engine(&db, gateway, &clock, &smtp, policy(url));
    let a = customer(&store, "DISP", "ACC-DISP-0001", &["2027-01-15"], 800_00).await;
    bank.set_balance("ACC-DISP-0001", 1000_00).await;
    drive(
        &engine,
        &clock,
        local("2027-01-15", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let attempts = store.attempts_for_agreement(a).await.unwrap();
    assert_eq!(attempts[0].state, "succeeded");
    // The agreement's only installment was paid: it is completed.
    bank.return_debit(&attempts[0].idempotency_key, "debit_disputed", true)
        .await;
    drive(
        &engine,
        &clock,
        local("2027-01-20", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let inst = store.installments(a).await.unwrap();
    assert_eq!((inst[0].status.as_str(), inst[0].paid_minor), ("unpaid", 0));
    assert_eq!(
        store.agreement(a).await.unwrap().unwrap().status,
        "active",
        "a completed agreement is reopened"
    );
    let attempts = store.attempts_for_agreement(a).await.unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "a hard return plans no retry: {attempts:#?}"
    );
    assert_eq!(bank.balance("ACC-DISP-0001").await, 1000_00);
    let mails = inbox(&smtp, "disp@example.com");
    let returned: Vec<_> = mails
        .iter()
        .filter(|(s, _)| s.contains("was returned by your bank"))
        .collect();
    assert_eq!(returned.len(), 1);
    assert!(
        returned[0].0.starts_with("Action needed"),
        "{}",
        returned[0].0
    );
    assert!(
        returned[0].1.contains("the payment was disputed"),
        "{}",
        returned[0].1
    );
    assert!(
        returned[0]
            .1
            .contains("We won't collect it again automatically")
    );
    let alerts = hook.received.lock().unwrap().clone();
    assert_eq!(
        alerts
            .iter()
            .filter(|(p, _)| p["kind"] == "debit_returned")
            .count(),
        1
    );
}

async fn hard_returns_sandbox(db: TestDb) {
    hard_returns_are_not_retried(db, false).await
}
async fn hard_returns_http(db: TestDb) {
    hard_returns_are_not_retried(db, true).await
}
both_backends!(hard_returns_on_the_sandbox, super::hard_returns_sandbox);
both_backends!(hard_returns_on_the_http_gateway, super::hard_returns_http);

/// Funding sources in order: a customer's first account is short, the second's mandate is
/// revoked (skipped, never debited), the third pays. Next month no account holds it all:
/// the first acceptable one (in order) is debited partially. `agreements show` lists the
/// order.
async fn funding_sources_in_order(db: TestDb, http: bool) {
    let store = db.store.clone();
    let smtp = SmtpListener::start();
    let (_hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2027, 1, 13, 17, 0));
    let (bank, gateway) = Bank::new(http, &store, &clock).await;
    let engine = engine(&db, gateway, &clock, &smtp, policy(url));
    let a = customer(
        &store,
        "SRC",
        "CN-SRC-0001",
        &["2027-01-15", "2027-02-15"],
        500_00,
    )
    .await;
    let customer_id = store.agreement(a).await.unwrap().unwrap().customer_id;
    for (account, mandate) in [("CN-SRC-0002", "revoked"), ("CN-SRC-0003", "active")] {
        store
            .insert_funding_account(
                customer_id,
                &NewFundingAccount {
                    external_ref: account.into(),
                    mandate_ref: format!("MND-{account}"),
                    mandate_status: mandate.into(),
                },
                0,
            )
            .await
            .unwrap();
    }
    let order: Vec<String> = ["CN-SRC-0001", "CN-SRC-0002", "CN-SRC-0003"]
        .map(String::from)
        .to_vec();
    store
        .set_funding_order("C-SRC", &order, "ops-ann", "customer's request", 0)
        .await
        .unwrap();
    // Another customer's account is never one of this customer's sources.
    let err = store
        .set_funding_order("C-SRC", &["ACC-ELSE-0009".to_string()], "ops-ann", "x", 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("****0009"), "{err}");
    bank.set_balance("CN-SRC-0001", 100_00).await;
    bank.set_balance("CN-SRC-0002", 10_000_00).await;
    bank.set_balance("CN-SRC-0003", 1_000_00).await;

    drive(
        &engine,
        &clock,
        local("2027-01-15", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let jan = store.installments(a).await.unwrap()[0].id;
    let attempts = store.attempts_for_installment(jan).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(
        (attempts[0].state.as_str(), attempts[0].amount_minor),
        ("succeeded", 500_00)
    );
    assert_eq!(bank.balance("CN-SRC-0001").await, 100_00);
    assert_eq!(
        bank.balance("CN-SRC-0002").await,
        10_000_00,
        "a revoked mandate is skipped"
    );
    assert_eq!(bank.balance("CN-SRC-0003").await, 500_00);
    let events = store.events(Some(a)).await.unwrap();
    let confirmed = events.iter().find(|e| e.kind == "funds_confirmed").unwrap();
    assert!(
        confirmed.detail.contains("\"account\":\"****0003\""),
        "{confirmed:?}"
    );
    let mails = inbox(&smtp, "src@example.com");
    let receipt = mails
        .iter()
        .find(|(s, _)| s.starts_with("Payment received"))
        .expect("a receipt");
    assert!(
        receipt.1.contains("****0003"),
        "the receipt names the account debited: {}",
        receipt.1
    );

    // February: the first source holds 400.00 of 500.00 (short 20 %), the third 300.00:
    // the first is debited for what it holds, the rest stays due.
    bank.set_balance("CN-SRC-0001", 400_00).await;
    bank.set_balance("CN-SRC-0003", 300_00).await;
    drive(
        &engine,
        &clock,
        local("2027-02-15", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let attempts = store.attempts_for_agreement(a).await.unwrap();
    let feb: Vec<_> = attempts
        .iter()
        .filter(|x| x.installment_id != jan)
        .collect();
    assert_eq!(
        (
            feb[0].state.as_str(),
            feb[0].outcome_code.as_deref(),
            feb[0].amount_minor
        ),
        ("succeeded", Some("partial"), 400_00)
    );
    assert_eq!(feb[1].state, "scheduled", "the rest is tried again");
    assert_eq!(bank.balance("CN-SRC-0001").await, 0);
    assert_eq!(bank.balance("CN-SRC-0003").await, 300_00);

    // `agreements show` lists the sources in the order debits try them.
    let detail = store.agreement_detail("SRC").await.unwrap().unwrap();
    let standing = repayd::commands::agreements::standing(&store, a)
        .await
        .unwrap();
    let table = repayd::commands::agreements::render_detail_table(&detail, &standing);
    assert!(
        table.contains("funding    1. CN-SRC-0001 (active), 2. CN-SRC-0002 (revoked, skipped), 3. CN-SRC-0003 (active)"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &repayd::commands::agreements::render_detail_json(&detail, &standing),
    )
    .unwrap();
    assert_eq!(json["funding_sources"][2]["external_ref"], "CN-SRC-0003");
    assert_eq!(json["funding_sources"][1]["mandate_status"], "revoked");
    let set = store
        .events(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "funding_sources_set")
        .collect::<Vec<_>>();
    assert_eq!(set.len(), 1);
    assert!(set[0].detail.contains("ops-ann") && set[0].detail.contains("customer's request"));
}

async fn funding_sources_sandbox(db: TestDb) {
    funding_sources_in_order(db, false).await
}
async fn funding_sources_http(db: TestDb) {
    funding_sources_in_order(db, true).await
}
both_backends!(
    funding_sources_on_the_sandbox,
    super::funding_sources_sandbox
);
both_backends!(
    funding_sources_on_the_http_gateway,
    super::funding_sources_http
);

/// Two daemons read the same returns feed at the same moment (PostgreSQL: several daemons
/// share one database): the return is applied once; the daemon whose cursor moved under
/// it reads on and finds nothing new.
async fn two_daemons_apply_a_return_once(db: TestDb, http: bool) {
    let store = db.store.clone();
    let smtp = SmtpListener::start();
    let (_hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2027, 1, 13, 17, 0));
    let (bank, gateway) = Bank::new(http, &store, &clock).await;
    let first = engine(&db, gateway.clone(), &clock, &smtp, policy(url.clone()));
    let a = customer(&store, "TWO", "ACC-TWO-0001", &["2027-01-15"], 300_00).await;
    bank.set_balance("ACC-TWO-0001", 1_000_00).await;
    drive(
        &first,
        &clock,
        local("2027-01-15", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let attempts = store.attempts_for_agreement(a).await.unwrap();
    bank.return_debit(&attempts[0].idempotency_key, "insufficient_funds", false)
        .await;
    let second_store = db.reconnect().await;
    let second = Arc::new(Engine::new(
        second_store,
        gateway,
        Arc::new(clock.clone()),
        policy(url),
        "coll-worker-2",
    ));
    let (x, y) = tokio::join!(first.poll_returns(), second.poll_returns());
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.applied + y.applied, 1, "{x:?} {y:?}");
    let events = store.events(Some(a)).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == "debit_returned").count(),
        1
    );
    let inst = store.installments(a).await.unwrap();
    assert_eq!((inst[0].status.as_str(), inst[0].paid_minor), ("unpaid", 0));
    assert_eq!(
        store
            .attempts_for_installment(inst[0].id)
            .await
            .unwrap()
            .len(),
        2,
        "one retry planned"
    );
}

async fn two_daemons_sandbox(db: TestDb) {
    two_daemons_apply_a_return_once(db, false).await
}
async fn two_daemons_http(db: TestDb) {
    two_daemons_apply_a_return_once(db, true).await
}
both_backends!(two_daemons_on_the_sandbox, super::two_daemons_sandbox);
both_backends!(two_daemons_on_the_http_gateway, super::two_daemons_http);

/// A lender's import file giving two accounts of one customer, the second listed first
/// (`funding_priority`): the debit of the agreement on the first account tries the
/// account with priority 1, finds it short, and takes the money from priority 2.
async fn imported_priorities_are_the_debit_order(db: TestDb) {
    let store = db.store.clone();
    let smtp = SmtpListener::start();
    let (_hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2027, 1, 13, 17, 0));
    let (bank, gateway) = Bank::new(false, &store, &clock).await;
    let engine = engine(&db, gateway, &clock, &smtp, policy(url));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("priorities.csv");
    std::fs::write(
        &file,
        "customer_external_id,customer_name,email,locale,time_zone,account_ref,mandate_ref,\
         mandate_status,funding_priority,agreement_id,currency,principal,schedule\n\
         C-FP,Li Wei,fp@example.com,en,Asia/Shanghai,CN-FP-0001,MND-FP-1,active,2,AGR-FP-1,CNY,500.00,2027-01-15:500.00\n\
         C-FP,Li Wei,fp@example.com,en,Asia/Shanghai,CN-FP-0002,MND-FP-2,active,1,AGR-FP-2,CNY,300.00,2027-03-15:300.00\n",
    )
    .unwrap();
    let s = repayd::import::import_file(
        &store,
        &file,
        None,
        &repayd::import::ImportOptions::default(),
        &repayd::config::ScheduleDefaults::default(),
        &clock,
    )
    .await
    .unwrap();
    assert_eq!(s.funding_orders_set, 1, "{s}");
    let a = store
        .agreement_by_external_id("AGR-FP-1")
        .await
        .unwrap()
        .unwrap();
    let order: Vec<(String, Option<i64>)> = store
        .funding_sources(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.account_ref, f.priority))
        .collect();
    assert_eq!(
        order,
        vec![
            ("CN-FP-0002".to_string(), Some(1)),
            ("CN-FP-0001".to_string(), Some(2))
        ]
    );
    bank.set_balance("CN-FP-0002", 100_00).await;
    bank.set_balance("CN-FP-0001", 1_000_00).await;
    drive(
        &engine,
        &clock,
        local("2027-01-15", 12, 0, SHANGHAI),
        async |_| {},
    )
    .await;
    let jan = store.installments(a.id).await.unwrap()[0].id;
    let attempts = store.attempts_for_installment(jan).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(
        (attempts[0].state.as_str(), attempts[0].amount_minor),
        ("succeeded", 500_00)
    );
    assert_eq!(
        bank.balance("CN-FP-0002").await,
        100_00,
        "priority 1 was short"
    );
    assert_eq!(bank.balance("CN-FP-0001").await, 500_00);
    // The confirmed funds check names the account debited: priority 2.
    let events = store.events(Some(a.id)).await.unwrap();
    let confirmed = events.iter().find(|e| e.kind == "funds_confirmed").unwrap();
    assert!(
        confirmed.detail.contains("\"account\":\"****0001\""),
        "{confirmed:?}"
    );
}
both_backends!(
    imported_funding_priorities_order_the_debit,
    super::imported_priorities_are_the_debit_order
);
