//! Customer emails end to end: the engine on a controlled clock plans and sends reminders
//! through a real SMTP listener on loopback, and the tests read what arrived as a mail
//! client would: recipient, subject, language, both MIME parts, Message-ID, amounts, and
//! the local time at which each went out.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::domain::Currency;
use repayd::engine::policy::{DebitPolicy, EnginePolicy, ReminderPolicy, RetryPolicy};
use repayd::engine::{Engine, MailDeps};
use repayd::gateway::sandbox::{SandboxBank, SandboxSettings};
use repayd::mail::{Mailer, Templates};
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) fn policy() -> EnginePolicy {
    EnginePolicy {
        debit: DebitPolicy {
            local_time: chrono::NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            horizon_days: 35,
            batch_size: 20,
            max_in_flight: 8,
            lease: Duration::seconds(300),
            key_prefix: "rem".into(),
            returns_poll: std::time::Duration::from_secs(300),
            partial: Default::default(),
        },
        retry: RetryPolicy {
            max_attempts: 3,
            insufficient_funds_days: vec![1, 3],
            soft_decline_days: vec![1],
            technical_backoff: vec![Duration::minutes(5), Duration::minutes(15)],
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

pub(crate) fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

fn local(date: &str, h: u32, tz: Tz) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    tz.from_local_datetime(&d.and_hms_opt(h, 0, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// One customer with one agreement of one installment; returns (agreement, installment).
#[allow(clippy::too_many_arguments)] // reads as a table row at each call site
pub(crate) async fn customer(
    store: &Store,
    id: &str,
    locale: &str,
    tz: &str,
    currency: &str,
    account: &str,
    due: &str,
    total: i64,
) -> (i64, i64) {
    let c = store
        .insert_customer(
            &NewCustomer {
                external_id: format!("C-{id}"),
                name: if locale == "zh-CN" {
                    "李伟".into()
                } else {
                    "Jane Doe".into()
                },
                email: format!("{}@example.com", id.to_lowercase()),
                locale: locale.into(),
                time_zone: tz.into(),
            },
            0,
        )
        .await
        .unwrap();
    let f = store
        .insert_funding_account(
            c,
            &NewFundingAccount {
                external_ref: account.into(),
                mandate_ref: format!("MND-{id}"),
                mandate_status: "active".into(),
            },
            0,
        )
        .await
        .unwrap();
    let a = store
        .insert_agreement(
            &NewAgreement {
                external_id: id.into(),
                customer_id: c,
                funding_account_id: f,
                currency: currency.into(),
                principal_minor: total,
                total_interest_minor: 0,
                total_fee_minor: 0,
                method: None,
                terms_json: None,
                content_hash: format!("h-{id}"),
                installments: vec![NewInstallment {
                    seq: 1,
                    due_date: due.into(),
                    principal_minor: total,
                    interest_minor: 0,
                    fee_minor: 0,
                }],
            },
            0,
        )
        .await
        .unwrap();
    let inst = store.installments(a).await.unwrap()[0].id;
    (a, inst)
}

pub(crate) async fn setup(
    db: &TestDb,
    clock: &ManualClock,
    mailer: Arc<dyn Mailer>,
    owner: &str,
) -> (Arc<Engine>, Arc<SandboxBank>) {
    setup_with_bank_on(db, db.store.clone(), clock, mailer, owner).await
}

/// [`setup`] with the sandbox bank's ledger on `bank_store` (as `repayd run` gives it
/// its own lane of connections).
pub(crate) async fn setup_with_bank_on(
    db: &TestDb,
    bank_store: Store,
    clock: &ManualClock,
    mailer: Arc<dyn Mailer>,
    owner: &str,
) -> (Arc<Engine>, Arc<SandboxBank>) {
    let bank = Arc::new(
        SandboxBank::new(bank_store, SandboxSettings::default())
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );
    let settings: repayd::mail::MailSettings = toml::from_str(
        r#"
        kind = "outbox"
        from = "Example Finance <repayments@example.com>"
        lender_name = "Example Finance"
        "#,
    )
    .unwrap();
    let mail = MailDeps::new(mailer, Templates::load(None).unwrap(), settings);
    let engine = Arc::new(
        Engine::new(
            db.store.clone(),
            bank.clone(),
            Arc::new(clock.clone()),
            policy(),
            owner,
        )
        .with_mail(mail),
    );
    (engine, bank)
}

/// Moves the clock from one piece of due work to the next (or to the next daily planner
/// run), planning, debiting and sending at each stop.
async fn drive(engine: &Arc<Engine>, clock: &ManualClock, until: DateTime<Utc>) {
    let shutdown = CancellationToken::new();
    let mut next_plan = clock.now();
    loop {
        let store = engine.store();
        let due = [
            store.next_attempt_due_ms().await.unwrap(),
            store.next_reminder_due_ms().await.unwrap(),
        ]
        .into_iter()
        .flatten()
        .map(from_epoch_ms)
        .min();
        let now = match due {
            Some(d) if d < next_plan => d.max(clock.now()),
            _ => next_plan,
        };
        if now > until {
            break;
        }
        clock.set(now);
        if now >= next_plan {
            engine.plan().await.unwrap();
            next_plan = now + Duration::days(1);
        }
        engine.run_due(&shutdown).await.unwrap();
        engine.run_reminders(&shutdown).await.unwrap();
    }
}

async fn reminders_reach_customers_on_time_in_their_language(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
    let shanghai = chrono_tz::Asia::Shanghai;
    let new_york = chrono_tz::America::New_York;
    let (zh_agreement, zh_inst) = customer(
        &db.store,
        "ZH",
        "zh-CN",
        "Asia/Shanghai",
        "CNY",
        "6222020000001234",
        "2027-01-20",
        1_066_19,
    )
    .await;
    let (en_agreement, en_inst) = customer(
        &db.store,
        "EN",
        "en",
        "America/New_York",
        "USD",
        "ACC-NY-9876",
        "2027-01-20",
        250_00,
    )
    .await;
    bank.set_balance(
        "6222020000001234",
        Currency::parse("CNY").unwrap(),
        5_000_00,
    )
    .await
    .unwrap();
    // Short by 150.00 until the day after the due date.
    bank.set_balance("ACC-NY-9876", Currency::parse("USD").unwrap(), 100_00)
        .await
        .unwrap();

    drive(&engine, &clock, local("2027-01-20", 12, new_york)).await;
    bank.set_balance("ACC-NY-9876", Currency::parse("USD").unwrap(), 1_000_00)
        .await
        .unwrap();
    drive(&engine, &clock, utc(2027, 1, 25, 0, 0)).await;

    let dep = db.store.deployment_id().await.unwrap();
    let messages = smtp.messages();
    let for_zh: Vec<_> = messages
        .iter()
        .filter(|m| m.to == vec!["zh@example.com".to_string()])
        .map(|m| parse(&m.data))
        .collect();
    let for_en: Vec<_> = messages
        .iter()
        .filter(|m| m.to == vec!["en@example.com".to_string()])
        .map(|m| parse(&m.data))
        .collect();

    // Shanghai: three pre-due reminders saying the money is there, then a receipt.
    let ids: Vec<String> = for_zh
        .iter()
        .map(|p| p.header("Message-ID").unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("<repayd.{dep}.i{zh_inst}.upcoming.7@example.com>"),
            format!("<repayd.{dep}.i{zh_inst}.upcoming.3@example.com>"),
            format!("<repayd.{dep}.i{zh_inst}.upcoming.1@example.com>"),
            format!("<repayd.{dep}.i{zh_inst}.debit_succeeded.1@example.com>"),
        ]
    );
    for p in &for_zh {
        let text = p.part("text/plain");
        let html = p.part("text/html");
        assert!(text.contains("1,066.19"), "{text}");
        assert!(html.contains("1,066.19"));
        assert!(text.contains("2027年1月20日"), "zh-CN dates: {text}");
        assert!(text.contains("1234"), "account ending named: {text}");
        assert!(
            !text.contains("6222020000001234"),
            "full account number must not be emailed"
        );
    }
    assert!(
        for_zh[0].subject().contains("扣款") && for_zh[0].subject().contains("1,066.19"),
        "Chinese subject: {}",
        for_zh[0].subject()
    );

    // New York: the balance is short: three balance-low emails naming the shortfall and
    // the top-up deadline, a failure notice on the due date, then a receipt.
    let ids: Vec<String> = for_en
        .iter()
        .map(|p| p.header("Message-ID").unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            format!("<repayd.{dep}.i{en_inst}.upcoming.7@example.com>"),
            format!("<repayd.{dep}.i{en_inst}.upcoming.3@example.com>"),
            format!("<repayd.{dep}.i{en_inst}.upcoming.1@example.com>"),
            format!("<repayd.{dep}.i{en_inst}.debit_failed.1@example.com>"),
            format!("<repayd.{dep}.i{en_inst}.debit_succeeded.2@example.com>"),
        ]
    );
    for p in &for_en[..3] {
        let text = p.part("text/plain");
        assert!(text.contains("$150.00"), "shortfall named: {text}");
        assert!(text.contains("$250.00"), "{text}");
        assert!(text.contains("January 2027"), "English dates: {text}");
    }
    assert!(for_en[3].part("text/plain").contains("$250.00"));

    // Sent at 09:00 local, 7, 3 and 1 days before the due date.
    for (agreement, tz) in [(zh_agreement, shanghai), (en_agreement, new_york)] {
        let rows = db.store.reminders_for_agreement(agreement).await.unwrap();
        let upcoming: Vec<_> = rows.iter().filter(|r| r.kind == "upcoming").collect();
        assert_eq!(upcoming.len(), 3);
        for (r, day) in upcoming
            .iter()
            .zip(["2027-01-13", "2027-01-17", "2027-01-19"])
        {
            assert_eq!(r.state, "sent");
            assert_eq!(
                r.sent_at_ms.map(from_epoch_ms),
                Some(local(day, 9, tz)),
                "{r:?}"
            );
        }
    }
    // The receipt after a 06:00 debit waits for the end of quiet hours (08:00 local).
    let zh_rows = db
        .store
        .reminders_for_agreement(zh_agreement)
        .await
        .unwrap();
    let receipt = zh_rows
        .iter()
        .find(|r| r.kind == "debit_succeeded")
        .unwrap();
    assert_eq!(
        receipt.sent_at_ms.map(from_epoch_ms),
        Some(local("2027-01-20", 8, shanghai))
    );
}
both_backends!(
    reminders_reach_customers_on_time_in_their_language,
    super::reminders_reach_customers_on_time_in_their_language
);

async fn a_paid_installment_gets_no_further_reminders(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, _bank) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
    let (agreement, inst) = customer(
        &db.store,
        "PD",
        "en",
        "Europe/London",
        "GBP",
        "ACC-PD-0001",
        "2027-01-20",
        80_00,
    )
    .await;
    // Up to the 7-day reminder only.
    drive(
        &engine,
        &clock,
        local("2027-01-14", 0, chrono_tz::Europe::London),
    )
    .await;
    assert_eq!(smtp.messages().len(), 1);
    // The customer pays by bank transfer; operations record it.
    db.store
        .record_installment_payment(
            inst,
            80_00,
            "BANK-TRANSFER-1",
            repayd::clock::to_epoch_ms(clock.now()),
        )
        .await
        .unwrap();
    drive(&engine, &clock, utc(2027, 1, 31, 0, 0)).await;
    assert_eq!(smtp.messages().len(), 1, "nothing after the payment");
    let rows = db.store.reminders_for_agreement(agreement).await.unwrap();
    let states: Vec<_> = rows
        .iter()
        .map(|r| (r.offset_key, r.state.as_str(), r.cancel_reason.as_deref()))
        .collect();
    assert_eq!(
        states,
        vec![
            (7, "sent", None),
            (3, "cancelled", Some("installment_paid")),
            (1, "cancelled", Some("installment_paid"))
        ]
    );
    let attempts = db.store.attempts_for_installment(inst).await.unwrap();
    assert!(
        attempts.iter().all(|a| a.state == "cancelled"),
        "no debit of a paid installment: {attempts:?}"
    );
}
both_backends!(
    a_paid_installment_gets_no_further_reminders,
    super::a_paid_installment_gets_no_further_reminders
);

async fn repeated_runs_and_restarts_send_each_reminder_once(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 13, 9, 0));
    let (engine, _bank) = setup(&db, &clock, smtp.mailer("[10]"), "first").await;
    customer(
        &db.store,
        "RP",
        "en",
        "UTC",
        "EUR",
        "ACC-RP-0001",
        "2027-01-20",
        10_00,
    )
    .await;
    let token = CancellationToken::new();
    for _ in 0..3 {
        engine.plan().await.unwrap();
        engine.run_reminders(&token).await.unwrap();
    }
    // A restarted daemon plans and sends again at the same instant.
    let (restarted, _) = setup(&db, &clock, smtp.mailer("[10]"), "second").await;
    for _ in 0..3 {
        restarted.plan().await.unwrap();
        restarted.run_reminders(&token).await.unwrap();
    }
    assert_eq!(smtp.messages().len(), 1, "one 7-day reminder, once");
}
both_backends!(
    repeated_runs_and_restarts_send_each_reminder_once,
    super::repeated_runs_and_restarts_send_each_reminder_once
);

async fn an_smtp_outage_delays_but_loses_nothing(db: TestDb) {
    let clock = ManualClock::new(utc(2027, 1, 13, 9, 0));
    // Nothing listens on this port: the relay is down.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down: repayd::mail::MailSettings = toml::from_str(&format!(
        "kind = \"smtp\"\nfrom = \"Example <r@example.com>\"\n[smtp]\nhost = \"127.0.0.1\"\nport = {dead}\ntls = \"none\"\ntimeout_seconds = 2\nretry_delays_ms = [10]\n"
    ))
    .unwrap();
    let (engine, _) = setup(
        &db,
        &clock,
        repayd::mail::build_mailer(&down).unwrap(),
        "during-outage",
    )
    .await;
    let (agreement, _) = customer(
        &db.store,
        "OUT",
        "en",
        "UTC",
        "EUR",
        "ACC-OUT-0001",
        "2027-01-20",
        10_00,
    )
    .await;
    engine.plan().await.unwrap();
    let report = engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.deferred, 1, "{report:?}");
    let r = &db.store.reminders_for_agreement(agreement).await.unwrap()[0];
    assert_eq!((r.state.as_str(), r.tries), ("pending", 1));
    assert!(r.last_error.is_some());

    // The relay is back; after the backoff the reminder goes out, once.
    let smtp = SmtpListener::start();
    let (engine, _) = setup(&db, &clock, smtp.mailer("[10]"), "after-outage").await;
    engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(smtp.messages().len(), 0, "not before the backoff");
    clock.advance(Duration::minutes(5));
    engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(smtp.messages().len(), 1);
    let r = &db.store.reminders_for_agreement(agreement).await.unwrap()[0];
    assert_eq!(r.state, "sent");
}
both_backends!(
    an_smtp_outage_delays_but_loses_nothing,
    super::an_smtp_outage_delays_but_loses_nothing
);

async fn a_late_start_sends_only_what_is_still_useful(db: TestDb) {
    let smtp = SmtpListener::start();
    // The daemon was down from before the 7-day reminder until two days before the due date.
    let clock = ManualClock::new(utc(2027, 1, 18, 12, 0));
    let (engine, _) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
    let (agreement, _) = customer(
        &db.store,
        "LATE",
        "en",
        "UTC",
        "EUR",
        "ACC-LATE-0001",
        "2027-01-20",
        10_00,
    )
    .await;
    engine.plan().await.unwrap();
    engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    let rows = db.store.reminders_for_agreement(agreement).await.unwrap();
    let states: Vec<_> = rows
        .iter()
        .map(|r| (r.offset_key, r.state.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![(7, "cancelled"), (3, "cancelled"), (1, "pending")],
        "the 7-day one is superseded; the 3-day one, a day late, would be followed by the \
         1-day one within a day: the customer hears once, on time, tomorrow morning"
    );
    assert!(
        rows[1]
            .cancel_reason
            .as_deref()
            .is_some_and(|r| r.contains("caught up late")),
        "{rows:?}"
    );
    assert_eq!(smtp.messages().len(), 0);
    clock.set(utc(2027, 1, 19, 9, 0));
    engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(smtp.messages().len(), 1);
}
both_backends!(
    a_late_start_sends_only_what_is_still_useful,
    super::a_late_start_sends_only_what_is_still_useful
);

async fn a_merged_email_counts_every_section_against_the_same_account(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
    // Two agreements of one customer, 200.00 each due the same day, on one account that
    // holds 300.00: enough for one of them, not for both.
    customer(
        &db.store,
        "TWO",
        "en",
        "UTC",
        "EUR",
        "ACC-TWO-0001",
        "2027-01-20",
        200_00,
    )
    .await;
    let first = db.store.agreement_detail("TWO").await.unwrap().unwrap();
    db.store
        .insert_agreement(
            &NewAgreement {
                external_id: "TWO-B".into(),
                customer_id: first.customer.id,
                funding_account_id: first.funding_account.id,
                currency: "EUR".into(),
                principal_minor: 200_00,
                total_interest_minor: 0,
                total_fee_minor: 0,
                method: None,
                terms_json: None,
                content_hash: "h-TWO-B".into(),
                installments: vec![NewInstallment {
                    seq: 1,
                    due_date: "2027-01-20".into(),
                    principal_minor: 200_00,
                    interest_minor: 0,
                    fee_minor: 0,
                }],
            },
            0,
        )
        .await
        .unwrap();
    bank.set_balance("ACC-TWO-0001", Currency::parse("EUR").unwrap(), 300_00)
        .await
        .unwrap();
    engine.plan().await.unwrap();
    // The 7-day reminders of both agreements fall due at 09:00 on 13 January.
    clock.set(utc(2027, 1, 13, 9, 0));
    engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "one email for both");
    let text = parse(&messages[0].data).part("text/plain").to_string();
    assert!(text.contains("2 updates"), "{text}");
    assert_eq!(
        text.matches("has enough for").count(),
        1,
        "only one section may say the money is there: {text}"
    );
    assert!(text.contains("is short by €100.00"), "{text}");
}
both_backends!(
    a_merged_email_counts_every_section_against_the_same_account,
    super::a_merged_email_counts_every_section_against_the_same_account
);
