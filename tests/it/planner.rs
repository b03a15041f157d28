//! The planner's output, row for row: a small portfolio (time zones on both sides of UTC,
//! a daylight-saving change inside the horizon, a paid and a part-paid installment, due
//! dates past the horizon) planned in two passes ten days apart must give exactly these
//! debit attempts, pre-due reminders and events. The expectation was written from the
//! planner before its write path was made cheaper (issue 10); any change to what it
//! plans shows here.

use crate::both_backends;
use crate::helpers::TestDb;
use chrono::{Duration, TimeZone, Utc};
use repayd::clock::{ManualClock, from_epoch_ms};
use repayd::engine::policy::{DebitPolicy, EnginePolicy, ReminderPolicy, RetryPolicy};
use repayd::engine::{Engine, MailDeps};
use repayd::gateway::sandbox::{SandboxBank, SandboxSettings};
use repayd::mail::{CaptureMailer, Templates};
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use std::collections::HashMap;
use std::sync::Arc;

fn policy() -> EnginePolicy {
    EnginePolicy {
        debit: DebitPolicy {
            local_time: chrono::NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            horizon_days: 20,
            batch_size: 20,
            max_in_flight: 8,
            lease: Duration::seconds(300),
            key_prefix: "gold".into(),
            returns_poll: std::time::Duration::from_secs(300),
            partial: Default::default(),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            insufficient_funds_days: vec![1, 3],
            soft_decline_days: vec![1],
            technical_backoff: vec![Duration::minutes(5)],
            min_spacing_days: 1,
            payday: Default::default(),
        },
        reminders: ReminderPolicy {
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

/// Installments as (due date, amount in minor units).
type Dues = &'static [(&'static str, i64)];

/// (agreement, customer's time zone, currency, installments).
const PORTFOLIO: &[(&str, &str, &str, Dues)] = &[
    (
        "G-NY",
        "America/New_York",
        "USD",
        &[
            ("2027-03-05", 100_00),
            ("2027-03-15", 100_00),
            ("2027-04-05", 100_01),
        ],
    ),
    (
        "G-SH",
        "Asia/Shanghai",
        "CNY",
        &[("2027-03-02", 500_00), ("2027-03-19", 500_00)],
    ),
    (
        "G-SYD",
        "Australia/Sydney",
        "AUD",
        &[("2027-03-10", 70_00), ("2027-04-06", 70_00)],
    ),
    (
        "G-UTC",
        "UTC",
        "GBP",
        &[("2027-03-25", 42_42), ("2027-03-08", 42_42)],
    ),
];

async fn load(store: &Store) -> HashMap<i64, String> {
    let mut names = HashMap::new();
    for (k, (ext, tz, currency, dues)) in PORTFOLIO.iter().enumerate() {
        let customer = store
            .insert_customer(
                &NewCustomer {
                    external_id: format!("C-{ext}"),
                    name: format!("Customer {k}"),
                    email: format!("c{k}@example.com"),
                    locale: "en".into(),
                    time_zone: (*tz).into(),
                },
                0,
            )
            .await
            .unwrap();
        let account = store
            .insert_funding_account(
                customer,
                &NewFundingAccount {
                    external_ref: format!("ACC-{ext}"),
                    mandate_ref: format!("MND-{ext}"),
                    mandate_status: "active".into(),
                },
                0,
            )
            .await
            .unwrap();
        let installments: Vec<NewInstallment> = dues
            .iter()
            .enumerate()
            .map(|(i, (due, amount))| NewInstallment {
                seq: i as i64 + 1,
                due_date: (*due).into(),
                principal_minor: *amount,
                interest_minor: 0,
                fee_minor: 0,
            })
            .collect();
        let agreement = store
            .insert_agreement(
                &NewAgreement {
                    external_id: (*ext).into(),
                    customer_id: customer,
                    funding_account_id: account,
                    currency: (*currency).into(),
                    principal_minor: installments.iter().map(|i| i.principal_minor).sum(),
                    total_interest_minor: 0,
                    total_fee_minor: 0,
                    method: None,
                    terms_json: None,
                    content_hash: format!("hash-{ext}"),
                    installments,
                },
                0,
            )
            .await
            .unwrap();
        for i in store.installments(agreement).await.unwrap() {
            names.insert(i.id, format!("{ext}#{}", i.seq));
        }
    }
    names
}

/// Every attempt, reminder and event, one line each, ids replaced by names.
async fn dump(store: &Store, names: &HashMap<i64, String>, deployment: &str) -> Vec<String> {
    let ms = |at: i64| from_epoch_ms(at).to_rfc3339();
    let mut lines = Vec::new();
    let mut attempt_names = HashMap::new();
    let mut agreements: Vec<i64> = Vec::new();
    for (ext, ..) in PORTFOLIO {
        agreements.push(
            store
                .agreement_by_external_id(ext)
                .await
                .unwrap()
                .unwrap()
                .id,
        );
    }
    for agreement in &agreements {
        for a in store.attempts_for_agreement(*agreement).await.unwrap() {
            let name = &names[&a.installment_id];
            assert_eq!(
                a.idempotency_key,
                Engine::idempotency_key("gold", deployment, a.installment_id, a.attempt_no)
            );
            attempt_names.insert(a.id, format!("{name}/a{}", a.attempt_no));
            lines.push(format!(
                "attempt {name} a{} at {} {} {} {}",
                a.attempt_no,
                ms(a.scheduled_at_ms),
                a.amount_minor,
                a.currency,
                a.state
            ));
        }
        for r in store.reminders_for_agreement(*agreement).await.unwrap() {
            let customer = store.customer(r.customer_id).await.unwrap().unwrap();
            lines.push(format!(
                "reminder {} {}/{} at {} {} {} {}",
                names[&r.installment_id],
                r.kind,
                r.offset_key,
                ms(r.scheduled_at_ms),
                r.state,
                customer.external_id,
                serde_json::from_str::<serde_json::Value>(&r.detail).unwrap()
            ));
        }
    }
    for e in store.events(None).await.unwrap() {
        if e.kind != "debit_attempt_planned" {
            continue;
        }
        let attempt = &attempt_names[&e.attempt_id.unwrap()];
        assert!(attempt.starts_with(&names[&e.installment_id.unwrap()]));
        lines.push(format!(
            "event {} {attempt} at {} {}",
            e.kind,
            ms(e.at_ms),
            serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()
        ));
    }
    lines.sort();
    lines
}

const FIRST_PASS: &[&str] = &[
    "attempt G-NY#1 a1 at 2027-03-05T11:00:00+00:00 10000 USD scheduled",
    "attempt G-NY#2 a1 at 2027-03-15T10:00:00+00:00 7000 USD scheduled",
    "attempt G-SH#1 a1 at 2027-03-01T22:00:00+00:00 50000 CNY scheduled",
    "attempt G-SH#2 a1 at 2027-03-18T22:00:00+00:00 50000 CNY scheduled",
    "attempt G-SYD#1 a1 at 2027-03-09T19:00:00+00:00 7000 AUD scheduled",
    "event debit_attempt_planned G-NY#1/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":10000,\"attempt_no\":1,\"currency\":\"USD\",\"due_date\":\"2027-03-05\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-05T11:00:00+00:00\",\"seq\":1}",
    "event debit_attempt_planned G-NY#2/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":7000,\"attempt_no\":1,\"currency\":\"USD\",\"due_date\":\"2027-03-15\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-15T10:00:00+00:00\",\"seq\":2}",
    "event debit_attempt_planned G-SH#1/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":50000,\"attempt_no\":1,\"currency\":\"CNY\",\"due_date\":\"2027-03-02\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-01T22:00:00+00:00\",\"seq\":1}",
    "event debit_attempt_planned G-SH#2/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":50000,\"attempt_no\":1,\"currency\":\"CNY\",\"due_date\":\"2027-03-19\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-18T22:00:00+00:00\",\"seq\":2}",
    "event debit_attempt_planned G-SYD#1/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":7000,\"attempt_no\":1,\"currency\":\"AUD\",\"due_date\":\"2027-03-10\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-09T19:00:00+00:00\",\"seq\":1}",
    "reminder G-NY#1 upcoming/1 at 2027-03-04T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#1 upcoming/3 at 2027-03-02T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#1 upcoming/7 at 2027-02-26T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#2 upcoming/1 at 2027-03-14T13:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#2 upcoming/3 at 2027-03-12T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#2 upcoming/7 at 2027-03-08T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-SH#1 upcoming/1 at 2027-03-01T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#1 upcoming/3 at 2027-02-27T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#1 upcoming/7 at 2027-02-23T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#2 upcoming/1 at 2027-03-18T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#2 upcoming/3 at 2027-03-16T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#2 upcoming/7 at 2027-03-12T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SYD#1 upcoming/1 at 2027-03-08T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#1 upcoming/3 at 2027-03-06T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#1 upcoming/7 at 2027-03-02T22:00:00+00:00 pending C-G-SYD {}",
];

const SECOND_PASS: &[&str] = &[
    "attempt G-NY#1 a1 at 2027-03-05T11:00:00+00:00 10000 USD scheduled",
    "attempt G-NY#2 a1 at 2027-03-15T10:00:00+00:00 7000 USD scheduled",
    "attempt G-NY#3 a1 at 2027-04-05T10:00:00+00:00 10001 USD scheduled",
    "attempt G-SH#1 a1 at 2027-03-01T22:00:00+00:00 50000 CNY scheduled",
    "attempt G-SH#2 a1 at 2027-03-18T22:00:00+00:00 50000 CNY scheduled",
    "attempt G-SYD#1 a1 at 2027-03-09T19:00:00+00:00 7000 AUD scheduled",
    "attempt G-SYD#2 a1 at 2027-04-05T20:00:00+00:00 7000 AUD scheduled",
    "attempt G-UTC#1 a1 at 2027-03-25T06:00:00+00:00 4242 GBP scheduled",
    "event debit_attempt_planned G-NY#1/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":10000,\"attempt_no\":1,\"currency\":\"USD\",\"due_date\":\"2027-03-05\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-05T11:00:00+00:00\",\"seq\":1}",
    "event debit_attempt_planned G-NY#2/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":7000,\"attempt_no\":1,\"currency\":\"USD\",\"due_date\":\"2027-03-15\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-15T10:00:00+00:00\",\"seq\":2}",
    "event debit_attempt_planned G-NY#3/a1 at 2027-03-17T03:00:00+00:00 {\"amount_minor\":10001,\"attempt_no\":1,\"currency\":\"USD\",\"due_date\":\"2027-04-05\",\"reason\":\"due\",\"scheduled_at\":\"2027-04-05T10:00:00+00:00\",\"seq\":3}",
    "event debit_attempt_planned G-SH#1/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":50000,\"attempt_no\":1,\"currency\":\"CNY\",\"due_date\":\"2027-03-02\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-01T22:00:00+00:00\",\"seq\":1}",
    "event debit_attempt_planned G-SH#2/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":50000,\"attempt_no\":1,\"currency\":\"CNY\",\"due_date\":\"2027-03-19\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-18T22:00:00+00:00\",\"seq\":2}",
    "event debit_attempt_planned G-SYD#1/a1 at 2027-03-01T03:00:00+00:00 {\"amount_minor\":7000,\"attempt_no\":1,\"currency\":\"AUD\",\"due_date\":\"2027-03-10\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-09T19:00:00+00:00\",\"seq\":1}",
    "event debit_attempt_planned G-SYD#2/a1 at 2027-03-17T03:00:00+00:00 {\"amount_minor\":7000,\"attempt_no\":1,\"currency\":\"AUD\",\"due_date\":\"2027-04-06\",\"reason\":\"due\",\"scheduled_at\":\"2027-04-05T20:00:00+00:00\",\"seq\":2}",
    "event debit_attempt_planned G-UTC#1/a1 at 2027-03-17T03:00:00+00:00 {\"amount_minor\":4242,\"attempt_no\":1,\"currency\":\"GBP\",\"due_date\":\"2027-03-25\",\"reason\":\"due\",\"scheduled_at\":\"2027-03-25T06:00:00+00:00\",\"seq\":1}",
    "reminder G-NY#1 upcoming/1 at 2027-03-04T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#1 upcoming/3 at 2027-03-02T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#1 upcoming/7 at 2027-02-26T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#2 upcoming/1 at 2027-03-14T13:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#2 upcoming/3 at 2027-03-12T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#2 upcoming/7 at 2027-03-08T14:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#3 upcoming/1 at 2027-04-04T13:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#3 upcoming/3 at 2027-04-02T13:00:00+00:00 pending C-G-NY {}",
    "reminder G-NY#3 upcoming/7 at 2027-03-29T13:00:00+00:00 pending C-G-NY {}",
    "reminder G-SH#1 upcoming/1 at 2027-03-01T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#1 upcoming/3 at 2027-02-27T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#1 upcoming/7 at 2027-02-23T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#2 upcoming/1 at 2027-03-18T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#2 upcoming/3 at 2027-03-16T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SH#2 upcoming/7 at 2027-03-12T01:00:00+00:00 pending C-G-SH {}",
    "reminder G-SYD#1 upcoming/1 at 2027-03-08T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#1 upcoming/3 at 2027-03-06T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#1 upcoming/7 at 2027-03-02T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#2 upcoming/1 at 2027-04-04T23:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#2 upcoming/3 at 2027-04-02T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-SYD#2 upcoming/7 at 2027-03-29T22:00:00+00:00 pending C-G-SYD {}",
    "reminder G-UTC#1 upcoming/1 at 2027-03-24T09:00:00+00:00 pending C-G-UTC {}",
    "reminder G-UTC#1 upcoming/3 at 2027-03-22T09:00:00+00:00 pending C-G-UTC {}",
    "reminder G-UTC#1 upcoming/7 at 2027-03-18T09:00:00+00:00 pending C-G-UTC {}",
];

async fn planner_plans_the_known_rows_of_a_small_portfolio(db: TestDb) {
    plan_the_small_portfolio(db, None).await
}
both_backends!(
    planner_plans_the_known_rows_of_a_small_portfolio,
    super::planner_plans_the_known_rows_of_a_small_portfolio
);

/// The same rows when every page holds at most two installments read over at most three
/// ids: many pages, each written while the next is read.
async fn planner_plans_the_same_rows_in_small_pages(db: TestDb) {
    plan_the_small_portfolio(db, Some((2, 3))).await
}
both_backends!(
    planner_plans_the_same_rows_in_small_pages,
    super::planner_plans_the_same_rows_in_small_pages
);

async fn plan_the_small_portfolio(db: TestDb, pages: Option<(i64, i64)>) {
    let store = db.store.clone();
    let names = load(&store).await;
    // G-UTC#2 paid by other means before the pass; G-NY#2 paid in part.
    let by_name: HashMap<&str, i64> = names.iter().map(|(id, n)| (n.as_str(), *id)).collect();
    store
        .record_installment_payment(by_name["G-UTC#2"], 42_42, "transfer-1", 0)
        .await
        .unwrap();
    store
        .record_installment_payment(by_name["G-NY#2"], 30_00, "transfer-2", 0)
        .await
        .unwrap();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2027, 3, 1, 3, 0, 0).unwrap());
    let bank = Arc::new(
        SandboxBank::new(store.clone(), SandboxSettings::default())
            .await
            .unwrap(),
    );
    let settings: repayd::mail::MailSettings = toml::from_str(
        r#"
        kind = "outbox"
        from = "Example Finance <repayments@example.com>"
        lender_name = "Example Finance"
        "#,
    )
    .unwrap();
    let mail = MailDeps::new(
        Arc::new(CaptureMailer::new()),
        Templates::load(None).unwrap(),
        settings,
    );
    let engine = Engine::new(
        store.clone(),
        bank,
        Arc::new(clock.clone()),
        policy(),
        "gold",
    )
    .with_mail(mail);
    let engine = match pages {
        Some((page, window)) => engine.with_plan_pages(page, window),
        None => engine,
    };
    let deployment = store.deployment_id().await.unwrap();

    let first = engine.plan().await.unwrap();
    assert_eq!((first.attempts_created, first.reminders_created), (5, 15));
    assert_eq!(dump(&store, &names, &deployment).await, FIRST_PASS);

    clock.set(Utc.with_ymd_and_hms(2027, 3, 17, 3, 0, 0).unwrap());
    let second = engine.plan().await.unwrap();
    assert_eq!((second.attempts_created, second.reminders_created), (3, 9));
    assert_eq!(dump(&store, &names, &deployment).await, SECOND_PASS);
    assert_eq!(engine.plan().await.unwrap().attempts_created, 0);
}
