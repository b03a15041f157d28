//! Overdue accounts end to end on a controlled clock: an installment left unpaid walks
//! through grace, each bucket, the credit warning and reportable, with the customer's
//! emails (real SMTP listener) and the operations alerts (a real webhook server on
//! loopback checking the HMAC signature) on the right days; then a payment received by
//! bank transfer brings it back to clean: flags cleared, escalations and debits cancelled.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::commands::overdue::{OverdueReportRow, render_csv, report_rows};
use repayd::domain::Currency;
use repayd::engine::alerts::{AlertSettings, hmac_sha256};
use repayd::engine::operator::{Actor, OperatorError, RecordRequest, record_payment};
use repayd::engine::overdue::{OverduePolicy, OverdueSettings, PaymentSettings};
use repayd::engine::policy::{DebitPolicy, EnginePolicy, ReminderPolicy, RetryPolicy};
use repayd::engine::{Engine, MailDeps};
use repayd::gateway::sandbox::{SandboxBank, SandboxSettings};
use repayd::mail::{Mailer, Templates};
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// (kind, installment, offset, state, sent at) of one escalation email row.
type EmailRow = (String, i64, i64, String, Option<DateTime<Utc>>);

pub(crate) const SECRET: &str = "whsec-test-4f9a";
pub(crate) const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

pub(crate) fn overdue_settings() -> OverdueSettings {
    toml::from_str(
        r#"
        grace_days = 3
        local_time = "00:30"
        credit_report_after_days = 90
        credit_warning_days_before = 10
        [[buckets]]
        name = "1-30"
        from = 1
        [[buckets]]
        name = "31-60"
        from = 31
        alert = true
        [[buckets]]
        name = "61-90"
        from = 61
        alert = true
        [[buckets]]
        name = "90+"
        from = 91
        alert = true
        [late_fee]
        kind = "fixed"
        amount = "25.00"
        "#,
    )
    .expect("overdue settings parse")
}

pub(crate) fn policy(hook_url: Option<String>, ops_email: Option<&str>) -> EnginePolicy {
    let overdue = overdue_settings();
    assert!(overdue.check().is_empty(), "{:?}", overdue.check());
    let alerts: AlertSettings = toml::from_str(&format!(
        r#"
        {}
        webhook_secret = "{SECRET}"
        {}
        backoff_seconds = [30]
        "#,
        hook_url
            .map(|u| format!("webhook_url = \"{u}\""))
            .unwrap_or_default(),
        ops_email
            .map(|e| format!("ops_email = \"{e}\""))
            .unwrap_or_default(),
    ))
    .expect("alert settings parse");
    assert!(alerts.check().is_empty(), "{:?}", alerts.check());
    EnginePolicy {
        debit: DebitPolicy {
            local_time: chrono::NaiveTime::from_hms_opt(6, 0, 0).unwrap(),
            horizon_days: 35,
            batch_size: 20,
            max_in_flight: 8,
            lease: Duration::seconds(300),
            key_prefix: "od".into(),
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
            offsets_days: vec![3],
            local_time: chrono::NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            quiet: repayd::domain::worktime::QuietHours::parse("21:00", "08:00").unwrap(),
            quiet_exempt: Vec::new(),
            merge_window: Duration::minutes(30),
            max_per_customer_per_day: 3,
            max_in_flight: 32,
        },
        overdue: OverduePolicy::from_settings(&overdue, &PaymentSettings::default(), &alerts)
            .unwrap(),
        poll: std::time::Duration::from_secs(1),
        drain: std::time::Duration::from_secs(5),
    }
}

pub(crate) fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

pub(crate) fn local(date: &str, h: u32, min: u32, tz: Tz) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    tz.from_local_datetime(&d.and_hms_opt(h, min, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// One customer in Shanghai with one agreement of installments of 1,066.19 CNY
/// (1,000.00 principal + 66.19 interest) due on `dues`; returns (agreement, installments).
pub(crate) async fn agreement(
    store: &Store,
    id: &str,
    name: &str,
    account: &str,
    dues: &[&str],
) -> (i64, Vec<i64>) {
    let c = store
        .insert_customer(
            &NewCustomer {
                external_id: format!("C-{id}"),
                name: name.into(),
                email: format!("{}@example.com", id.to_lowercase()),
                locale: "en".into(),
                time_zone: "Asia/Shanghai".into(),
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
    let n = dues.len() as i64;
    let a = store
        .insert_agreement(
            &NewAgreement {
                external_id: id.into(),
                customer_id: c,
                funding_account_id: f,
                currency: "CNY".into(),
                principal_minor: 1_000_00 * n,
                total_interest_minor: 66_19 * n,
                total_fee_minor: 0,
                method: None,
                terms_json: None,
                content_hash: format!("h-{id}"),
                installments: dues
                    .iter()
                    .enumerate()
                    .map(|(i, due)| NewInstallment {
                        seq: i as i64 + 1,
                        due_date: (*due).into(),
                        principal_minor: 1_000_00,
                        interest_minor: 66_19,
                        fee_minor: 0,
                    })
                    .collect(),
            },
            0,
        )
        .await
        .unwrap();
    let ids = store
        .installments(a)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    (a, ids)
}

pub(crate) async fn setup(
    db: &TestDb,
    clock: &ManualClock,
    mailer: Arc<dyn Mailer>,
    policy: EnginePolicy,
) -> (Arc<Engine>, Arc<SandboxBank>) {
    let bank = Arc::new(
        SandboxBank::new(db.store.clone(), SandboxSettings::default())
            .await
            .unwrap()
            .with_clock(Arc::new(clock.clone())),
    );
    let settings: repayd::mail::MailSettings = toml::from_str(
        r#"
        kind = "outbox"
        from = "Example Finance <repayments@example.com>"
        lender_name = "Example Finance"
        payment_url = "https://pay.example.com/"
        "#,
    )
    .unwrap();
    let mail = MailDeps::new(mailer, Templates::load(None).unwrap(), settings);
    let engine = Arc::new(
        Engine::new(
            db.store.clone(),
            bank.clone(),
            Arc::new(clock.clone()),
            policy,
            "od-worker",
        )
        .with_mail(mail),
    );
    (engine, bank)
}

/// Moves the clock from one piece of due work to the next, with a daily planner tick at
/// 17:00 UTC (01:00 in Shanghai, just after the 00:30 assessment time) that plans and
/// assesses; debits, emails and alerts run at every stop.
pub(crate) async fn drive(engine: &Arc<Engine>, clock: &ManualClock, until: DateTime<Utc>) {
    let shutdown = CancellationToken::new();
    let now = clock.now();
    let mut next_tick = now.date_naive().and_hms_opt(17, 0, 0).unwrap().and_utc();
    if next_tick < now {
        next_tick += Duration::days(1);
    }
    loop {
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
        let now = match due {
            Some(d) if d < next_tick => d.max(clock.now()),
            _ => next_tick,
        };
        if now > until {
            break;
        }
        clock.set(now);
        if now >= next_tick {
            engine.plan().await.unwrap();
            engine.assess_overdue().await.unwrap();
            next_tick += Duration::days(1);
        }
        engine.run_due(&shutdown).await.unwrap();
        engine.run_reminders(&shutdown).await.unwrap();
        engine.run_alerts().await.unwrap();
    }
    clock.set(until);
}

/// A webhook receiver on 127.0.0.1:0 that checks the signature of every alert; it
/// answers 503 to the first request (to prove retries) and 200 after.
#[derive(Clone, Default)]
pub(crate) struct Hook {
    pub received: Arc<Mutex<Vec<(serde_json::Value, bool)>>>,
    pub requests: Arc<Mutex<u32>>,
    pub refuse_next: Arc<AtomicBool>,
}

async fn receive(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    *hook.requests.lock().unwrap() += 1;
    if hook.refuse_next.swap(false, Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut signed = format!("{}.", header("x-repayd-timestamp")).into_bytes();
    signed.extend_from_slice(&body);
    let expected = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &signed))
    );
    let verified = expected == header("x-repayd-signature");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    hook.received.lock().unwrap().push((json, verified));
    if verified {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

pub(crate) async fn hook_server() -> (Hook, String) {
    let hook = Hook::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(hook.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (hook, format!("http://{addr}/hook"))
}

async fn an_unpaid_installment_walks_to_reportable_and_back(db: TestDb) {
    let smtp = SmtpListener::start();
    let (hook, url) = hook_server().await;
    hook.refuse_next.store(true, Ordering::SeqCst);
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(
        &db,
        &clock,
        smtp.mailer("[10]"),
        policy(Some(url), Some("ops@example.com")),
    )
    .await;
    let store = &db.store;
    let (agreement, insts) = agreement(
        store,
        "OD-1",
        "Doe, Jane \"JD\"",
        "6222020000005678",
        &["2027-01-20", "2027-02-20", "2027-05-20"],
    )
    .await;
    let cny = Currency::parse("CNY").unwrap();
    bank.set_balance("6222020000005678", cny, 0).await.unwrap();

    // Grace: due 20 Jan, grace to the 23rd; 1 DPD from 00:30 Shanghai on the 24th.
    drive(&engine, &clock, utc(2027, 1, 23, 16, 29)).await;
    engine.assess_overdue().await.unwrap();
    assert_eq!(store.delinquency(agreement).await.unwrap(), None);
    clock.set(utc(2027, 1, 23, 16, 30));
    engine.assess_overdue().await.unwrap();
    let d = store.delinquency(agreement).await.unwrap().unwrap();
    assert_eq!(
        (d.dpd, d.bucket.as_deref(), d.credit_flag.as_str()),
        (1, Some("1-30"), "at_risk")
    );
    assert_eq!(
        d.amount_overdue_minor,
        1_066_19 + 25_00,
        "with the late fee"
    );
    // Running it again changes nothing (idempotent).
    let events_before = store.events(Some(agreement)).await.unwrap().len();
    engine.assess_overdue().await.unwrap();
    assert_eq!(
        store.events(Some(agreement)).await.unwrap().len(),
        events_before
    );

    // On to the day it becomes reportable: 20 Jan + 3 + 90 = 23 April.
    drive(&engine, &clock, local("2027-04-23", 14, 0, SHANGHAI)).await;
    let d = store.delinquency(agreement).await.unwrap().unwrap();
    assert_eq!(
        (d.dpd, d.bucket.as_deref(), d.credit_flag.as_str()),
        (90, Some("61-90"), "reportable")
    );
    assert_eq!(d.amount_overdue_minor, 2 * (1_066_19 + 25_00));

    // The bucket changes, flag changes and late fees are in the event log.
    let events = store.events(Some(agreement)).await.unwrap();
    let buckets: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "delinquency_bucket_changed")
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            format!("{}@{}", v["to"].as_str().unwrap(), v["dpd"])
        })
        .collect();
    assert_eq!(buckets, vec!["1-30@1", "31-60@31", "61-90@61"]);
    let flags: Vec<String> = events
        .iter()
        .filter(|e| e.kind == "credit_flag_changed")
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            format!("{}@{}", v["to"].as_str().unwrap(), v["dpd"])
        })
        .collect();
    assert_eq!(flags, vec!["at_risk@1", "reportable@90"]);
    let fees = store.charges_for_agreement(agreement).await.unwrap();
    assert_eq!(
        fees.iter()
            .map(|c| (c.installment_id, c.amount_minor, c.status.as_str()))
            .collect::<Vec<_>>(),
        vec![(insts[0], 25_00, "open"), (insts[1], 25_00, "open")],
        "one fixed fee per overdue installment, never compounding"
    );

    // Customer emails: one per bucket entered and the credit warning, at 09:00 local.
    let rows = store.reminders_for_agreement(agreement).await.unwrap();
    let escalations: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == "overdue" || r.kind == "credit_warning")
        .collect();
    let got: Vec<EmailRow> = escalations
        .iter()
        .map(|r| {
            (
                r.kind.clone(),
                r.installment_id,
                r.offset_key,
                r.state.clone(),
                r.sent_at_ms.map(from_epoch_ms),
            )
        })
        .collect();
    let sent = |kind: &str, off, day| {
        (
            kind.to_string(),
            insts[0],
            off,
            "sent".to_string(),
            Some(local(day, 9, 0, SHANGHAI)),
        )
    };
    assert_eq!(
        got,
        vec![
            sent("overdue", 0, "2027-01-24"),
            sent("overdue", 1, "2027-02-23"),
            sent("overdue", 2, "2027-03-25"),
            sent("credit_warning", 80, "2027-04-13"),
        ]
    );
    let customer_mail: Vec<_> = smtp
        .messages()
        .into_iter()
        .filter(|m| m.to == vec!["od-1@example.com".to_string()])
        .map(|m| parse(&m.data))
        .filter(|p| {
            let id = p.header("Message-ID").unwrap();
            id.contains(".overdue.") || id.contains(".credit_warning.")
        })
        .collect();
    assert_eq!(customer_mail.len(), 4);
    let texts: Vec<&str> = customer_mail.iter().map(|p| p.part("text/plain")).collect();
    assert!(texts[0].contains("1 day overdue"), "{}", texts[0]);
    assert!(
        texts[0].contains("1,091.19"),
        "installment + late fee: {}",
        texts[0]
    );
    assert!(texts[1].contains("31 days overdue"), "{}", texts[1]);
    assert!(texts[2].contains("61 days overdue"), "{}", texts[2]);
    assert!(
        texts[2].contains("2,182.38"),
        "both installments + fees: {}",
        texts[2]
    );
    assert!(texts[3].contains("80 days overdue"), "{}", texts[3]);
    assert!(texts[3].contains("2,182.38"), "{}", texts[3]);
    assert!(
        texts[3].contains("22 April 2027"),
        "pay by the day before: {}",
        texts[3]
    );
    assert!(
        customer_mail[3].subject().contains("credit report"),
        "{}",
        customer_mail[3].subject()
    );
    assert!(texts[3].contains("https://pay.example.com/"));

    // Debits kept being retried by policy (1, 2, 3) and once more on each bucket entry.
    let attempts = store.attempts_for_installment(insts[0]).await.unwrap();
    assert_eq!(attempts.len(), 6, "{attempts:#?}");
    assert!(attempts.iter().all(|a| a.state == "insufficient_funds"));
    assert_eq!(
        from_epoch_ms(attempts[4].scheduled_at_ms),
        local("2027-02-23", 6, 0, SHANGHAI),
        "bucket 31-60 entry re-attempt at the debit time that day"
    );
    assert_eq!(
        attempts[5].amount_minor,
        1_066_19 + 25_00,
        "the debit collects the late fee too"
    );

    // Operations: signed webhook alerts on entry into 31-60 and 61-90 and on reportable
    // (the first delivery was refused and retried), and the same by email.
    let received = hook.received.lock().unwrap().clone();
    let kinds: Vec<(String, Option<String>, bool)> = received
        .iter()
        .map(|(v, ok)| {
            (
                v["kind"].as_str().unwrap().to_string(),
                v["bucket"].as_str().map(String::from),
                *ok,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("overdue_bucket_entered".into(), Some("31-60".into()), true),
            ("overdue_bucket_entered".into(), Some("61-90".into()), true),
            ("account_reportable".into(), Some("61-90".into()), true),
        ]
    );
    assert_eq!(*hook.requests.lock().unwrap(), 4, "one refused, retried");
    assert_eq!(received[2].0["agreement"], "OD-1");
    assert_eq!(received[2].0["amount_overdue"], "2182.38");
    let alerts = store.alerts().await.unwrap();
    assert!(alerts.iter().all(|a| a.state == "sent"), "{alerts:#?}");
    assert_eq!(alerts.iter().filter(|a| a.channel == "email").count(), 3);
    let ops: Vec<_> = smtp
        .messages()
        .into_iter()
        .filter(|m| m.to == vec!["ops@example.com".to_string()])
        .map(|m| parse(&m.data).subject())
        .collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(ops[2].contains("account_reportable") && ops[2].contains("OD-1"));

    // The report: one row, read back from CSV.
    let now = clock.now();
    let rows = report_rows(store, &engine.policy().overdue.rules, now, None)
        .await
        .unwrap();
    let csv_text = render_csv(&rows).unwrap();
    let parsed: Vec<OverdueReportRow> = csv::Reader::from_reader(csv_text.as_bytes())
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(parsed.len(), 1, "{csv_text}");
    let r = &parsed[0];
    assert_eq!(r.as_of, "2027-04-23");
    assert_eq!(r.agreement, "OD-1");
    assert_eq!(r.customer, "C-OD-1");
    assert_eq!(r.customer_name, "Doe, Jane \"JD\"", "quoted, not split");
    assert_eq!(r.currency, "CNY");
    assert_eq!(r.oldest_due_date, "2027-01-20");
    assert_eq!(r.days_past_due, 90);
    assert_eq!(r.bucket, "61-90");
    assert_eq!(r.credit_flag, "reportable");
    assert_eq!(r.installments_overdue, 2);
    assert_eq!(r.amount_overdue, "2132.38");
    assert_eq!(r.charges_overdue, "50.00");
    assert_eq!(r.total_overdue, "2182.38");
    assert_eq!(r.outstanding_balance, "3198.57");
    assert_eq!(r.last_attempt_state, "insufficient_funds");
    assert_eq!(r.last_attempt_outcome, "insufficient_funds");
    assert!(!r.last_attempt_at.is_empty());
    // As of an earlier date: 9 DPD, one installment, first bucket.
    let early = report_rows(
        store,
        &engine.policy().overdue.rules,
        now,
        Some(NaiveDate::from_ymd_opt(2027, 2, 1).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            early[0].days_past_due,
            early[0].bucket.as_str(),
            early[0].credit_flag.as_str(),
            early[0].installments_overdue,
            early[0].total_overdue.as_str()
        ),
        (9, "1-30", "at_risk", 1, "1091.19")
    );

    // Paid by bank transfer: more than owed is refused, then exactly the overdue amount.
    let policy = engine.policy();
    let too_much = record_payment(
        store,
        &policy,
        now,
        &Actor::new("ops-alice", "bank transfer").unwrap(),
        &RecordRequest {
            agreement: "OD-1".into(),
            amount: "9999.00".into(),
            reference: "BANK-TX-1".into(),
            received_at: None,
            settle: false,
        },
    )
    .await;
    assert!(
        matches!(&too_much, Err(OperatorError::Refused(m)) if m.contains("exceeds what is owed")),
        "{too_much:?}"
    );
    let summary = record_payment(
        store,
        &policy,
        now,
        &Actor::new("ops-alice", "bank transfer").unwrap(),
        &RecordRequest {
            agreement: "OD-1".into(),
            amount: "2182.38".into(),
            reference: "BANK-TX-1".into(),
            received_at: None,
            settle: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        summary
            .allocations
            .iter()
            .map(|a| (a.seq, a.component, a.amount.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, "penalties", "25.00"),
            (1, "interest", "66.19"),
            (1, "principal", "1000.00"),
            (2, "penalties", "25.00"),
            (2, "interest", "66.19"),
            (2, "principal", "1000.00"),
        ]
    );
    assert_eq!(summary.installments_paid, vec![1, 2]);
    assert!(summary.delinquency_cleared);
    assert!(!summary.agreement_completed);
    assert_eq!(summary.remaining, "1066.19");
    let again = record_payment(
        store,
        &policy,
        now,
        &Actor::new("ops-alice", "bank transfer").unwrap(),
        &RecordRequest {
            agreement: "OD-1".into(),
            amount: "1.00".into(),
            reference: "BANK-TX-1".into(),
            received_at: None,
            settle: false,
        },
    )
    .await;
    assert!(
        matches!(&again, Err(OperatorError::Refused(m)) if m.contains("already recorded")),
        "{again:?}"
    );

    // Clean: flag and bucket cleared at once (not left set as billing systems do), fees
    // settled, no escalation or debit left planned for the paid installments.
    let d = store.delinquency(agreement).await.unwrap().unwrap();
    assert_eq!(
        (
            d.dpd,
            d.bucket.clone(),
            d.credit_flag.as_str(),
            d.amount_overdue_minor
        ),
        (0, None, "none", 0)
    );
    assert!(
        store
            .charges_for_agreement(agreement)
            .await
            .unwrap()
            .iter()
            .all(|c| c.status == "paid")
    );
    for id in &insts[..2] {
        assert!(
            store
                .attempts_for_installment(*id)
                .await
                .unwrap()
                .iter()
                .all(|a| a.state != "scheduled")
        );
    }
    assert!(
        store
            .events(Some(agreement))
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "delinquency_cleared")
    );

    // And it stays clean: no further escalation while the third installment is not due.
    let sent_before = smtp.messages().len();
    drive(&engine, &clock, local("2027-05-10", 12, 0, SHANGHAI)).await;
    let d = store.delinquency(agreement).await.unwrap().unwrap();
    assert_eq!((d.dpd, d.credit_flag.as_str()), (0, "none"));
    let later: Vec<_> = smtp.messages()[sent_before..]
        .iter()
        .map(|m| parse(&m.data).header("Message-ID").unwrap())
        .collect();
    assert!(
        later
            .iter()
            .all(|id| !id.contains(".overdue.") && !id.contains(".credit_warning.")),
        "{later:?}"
    );
    assert!(
        report_rows(store, &engine.policy().overdue.rules, clock.now(), None)
            .await
            .unwrap()
            .is_empty()
    );
    let rows = store.reminders_for_agreement(agreement).await.unwrap();
    assert!(
        rows.iter()
            .filter(|r| r.kind == "overdue" || r.kind == "credit_warning")
            .all(|r| r.state == "sent")
    );
}

both_backends!(
    an_unpaid_installment_walks_to_reportable_and_back,
    an_unpaid_installment_walks_to_reportable_and_back
);
