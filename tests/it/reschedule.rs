//! `agreements reschedule` against real databases, the sandbox bank and a real SMTP
//! listener: a payment holiday (New York, across the DST change) and a new term with
//! interest and arrears left in place (Shanghai, zh-CN). Old debits and reminders are
//! cancelled, the planner plans the new dates, the customer gets exactly one
//! schedule-changed email and nothing about the old dates; refused cases change nothing.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use crate::overdue::{drive, local, policy, setup, utc};
use chrono_tz::Tz;
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::config::ScheduleDefaults;
use repayd::domain::{Currency, HolidayCalendar};
use repayd::engine::operator::{self, Actor, OperatorError, RescheduleRequest, RescheduleSummary};
use repayd::import::{ImportOptions, import_file};
use repayd::store::Store;
use repayd::store::agreements::InstallmentRow;

const NEW_YORK: Tz = chrono_tz::America::New_York;
const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

const HEADER: &str = "customer_external_id,customer_name,email,locale,time_zone,account_ref,\
    mandate_ref,mandate_status,agreement_id,currency,principal,method,installments,\
    annual_rate,fee_rate,first_due,frequency,rounding,remainder,business_day,schedule";

/// Imports one agreement through the real import path (terms stored as import stores them).
async fn import(store: &Store, clock: &ManualClock, row: &str) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agreements.csv");
    std::fs::write(&path, format!("{HEADER}\n{row}\n")).unwrap();
    let summary = import_file(
        store,
        &path,
        None,
        &ImportOptions::default(),
        &ScheduleDefaults::default(),
        clock,
    )
    .await
    .unwrap();
    assert_eq!(summary.agreements_new, 1, "{summary:?}");
    let id = row.split(',').nth(8).unwrap();
    store.agreement_ref(id).await.unwrap().id
}

fn ops(reason: &str) -> Actor {
    Actor::new("ops-dana", reason).unwrap()
}

/// (seq, due date, total, status) of every installment.
async fn schedule(store: &Store, a: i64) -> Vec<(i64, String, i64, String)> {
    store
        .installments(a)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.seq, i.due_date, i.total_minor, i.status))
        .collect()
}

fn live(rows: &[InstallmentRow]) -> Vec<&InstallmentRow> {
    rows.iter().filter(|i| i.status != "cancelled").collect()
}

async fn reschedule(
    store: &Store,
    engine: &repayd::engine::Engine,
    clock: &ManualClock,
    actor: &Actor,
    a: &str,
    request: RescheduleRequest,
    apply: bool,
) -> Result<RescheduleSummary, OperatorError> {
    operator::reschedule_agreement(
        store,
        &engine.policy(),
        &HolidayCalendar::default(),
        clock.now(),
        actor,
        a,
        request,
        apply,
    )
    .await
}

async fn a_payment_holiday_moves_the_rest_and_tells_the_customer_once(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let account = "US-ACC-7001";
    let a = import(
        store,
        &clock,
        &format!(
            "C-HOL,Sam Lee,sam@example.com,en,America/New_York,{account},MND-HOL,active,\
             HOL-1,USD,1000.00,interest-free,4,0,0,2027-01-31,monthly,,,,"
        ),
    )
    .await;
    let usd = Currency::parse("USD").unwrap();
    bank.set_balance(account, usd, 10_000_00).await.unwrap();
    // The first installment (31 Jan) is collected; the second (28 Feb) is planned with
    // its reminder.
    drive(&engine, &clock, local("2027-02-10", 12, 0, NEW_YORK)).await;
    let before = schedule(store, a).await;
    assert_eq!(
        before
            .iter()
            .map(|r| (r.1.as_str(), r.2, r.3.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("2027-01-31", 250_00, "paid"),
            ("2027-02-28", 250_00, "unpaid"),
            ("2027-03-31", 250_00, "unpaid"),
            ("2027-04-30", 250_00, "unpaid"),
        ]
    );
    let old_second = store.installments(a).await.unwrap()[1].id;
    let planned = store.attempts_for_installment(old_second).await.unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].state, "scheduled");
    let reminders_before = store.reminders_for_agreement(a).await.unwrap();
    assert!(
        reminders_before
            .iter()
            .any(|r| r.installment_id == old_second
                && r.kind == "upcoming"
                && r.state == "pending")
    );

    // A preview changes nothing.
    let events_before = store.events(Some(a)).await.unwrap().len();
    let preview = reschedule(
        store,
        &engine,
        &clock,
        &ops("preview"),
        "HOL-1",
        RescheduleRequest::Holiday(2),
        false,
    )
    .await
    .unwrap();
    assert!(!preview.applied);
    assert_eq!(
        preview
            .new
            .iter()
            .map(|l| (l.seq, l.due_date.as_str(), l.total.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (5, "2027-04-30", "250.00"),
            (6, "2027-05-31", "250.00"),
            (7, "2027-06-30", "250.00"),
        ]
    );
    assert_eq!(preview.old.len(), 3);
    assert_eq!(
        (preview.old_total.as_str(), preview.new_total.as_str()),
        ("750.00", "750.00")
    );
    assert_eq!(schedule(store, a).await, before);
    assert_eq!(store.events(Some(a)).await.unwrap().len(), events_before);

    let sent_before = smtp.messages().len();
    let done = reschedule(
        store,
        &engine,
        &clock,
        &ops("customer lost their job; two months' holiday"),
        "HOL-1",
        RescheduleRequest::Holiday(2),
        true,
    )
    .await
    .unwrap();
    assert!(done.applied);
    assert_eq!(done.new, preview.new);
    assert_eq!((done.attempts_cancelled, done.reminders_cancelled), (1, 1));
    let after = schedule(store, a).await;
    assert_eq!(
        after
            .iter()
            .map(|r| (r.0, r.1.as_str(), r.2, r.3.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, "2027-01-31", 250_00, "paid"),
            (2, "2027-02-28", 250_00, "cancelled"),
            (3, "2027-03-31", 250_00, "cancelled"),
            (4, "2027-04-30", 250_00, "cancelled"),
            (5, "2027-04-30", 250_00, "unpaid"),
            (6, "2027-05-31", 250_00, "unpaid"),
            (7, "2027-06-30", 250_00, "unpaid"),
        ]
    );
    let attempt = &store.attempts_for_installment(old_second).await.unwrap()[0];
    assert_eq!(
        (attempt.state.as_str(), attempt.outcome_code.as_deref()),
        ("cancelled", Some("schedule_changed"))
    );
    let rows = store.reminders_for_agreement(a).await.unwrap();
    let old_reminder = rows
        .iter()
        .find(|r| r.installment_id == old_second && r.kind == "upcoming")
        .unwrap();
    assert_eq!(
        (
            old_reminder.state.as_str(),
            old_reminder.cancel_reason.as_deref()
        ),
        ("cancelled", Some("schedule_changed"))
    );
    let event = store
        .events(Some(a))
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.kind == "agreement_rescheduled")
        .unwrap();
    let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap();
    assert_eq!(detail["actor"], "ops-dana");
    assert_eq!(
        detail["reason"],
        "customer lost their job; two months' holiday"
    );
    assert_eq!(detail["mode"], "holiday");
    assert_eq!(detail["n"], 2);
    assert_eq!(detail["old_total_minor"], 750_00);
    assert_eq!(detail["new_total_minor"], 750_00);
    let agreement = store.agreement_detail("HOL-1").await.unwrap().unwrap();
    assert_eq!(agreement.agreement.total_minor, 1_000_00);
    assert!(
        agreement
            .agreement
            .terms_json
            .unwrap()
            .contains("\"anchor\"")
    );

    // On to the end: the new dates are planned by the planner and collected at 06:00 in
    // New York (EDT by then: 10:00 UTC), nothing on the old dates.
    drive(&engine, &clock, local("2027-07-02", 12, 0, NEW_YORK)).await;
    let rows = store.installments(a).await.unwrap();
    let new_ids: Vec<i64> = live(&rows).iter().skip(1).map(|i| i.id).collect();
    assert!(live(&rows).iter().all(|i| i.status == "paid"), "{rows:?}");
    for (id, day) in new_ids
        .iter()
        .zip(["2027-04-30", "2027-05-31", "2027-06-30"])
    {
        let attempts = store.attempts_for_installment(*id).await.unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0].state, "succeeded");
        assert_eq!(
            from_epoch_ms(attempts[0].scheduled_at_ms),
            local(day, 6, 0, NEW_YORK)
        );
    }
    for old in rows.iter().filter(|i| i.status == "cancelled") {
        let attempts = store.attempts_for_installment(old.id).await.unwrap();
        assert!(
            attempts.iter().all(|x| x.state == "cancelled"),
            "{attempts:?}"
        );
    }
    assert_eq!(
        bank.balance(account).await.unwrap(),
        Some(10_000_00 - 1_000_00)
    );

    // The inbox after the change: one schedule email, listing the new dates; reminders
    // only for the new dates.
    let later: Vec<_> = smtp.messages()[sent_before..]
        .iter()
        .map(|m| parse(&m.data))
        .collect();
    let changed: Vec<_> = later
        .iter()
        .filter(|m| m.subject().contains("payment schedule has changed"))
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "{:?}",
        later.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    let text = changed[0].part("text/plain");
    for day in ["30 April 2027", "31 May 2027", "30 June 2027"] {
        assert!(text.contains(day), "{text}");
    }
    assert!(
        text.contains("$250.00") && text.contains("$750.00"),
        "{text}"
    );
    assert!(
        changed[0].subject().contains("30 Apr"),
        "{}",
        changed[0].subject()
    );
    for m in &later {
        let body = m.part("text/plain");
        assert!(
            !body.contains("28 February") || m.subject().contains("schedule"),
            "a message about an old date: {}\n{body}",
            m.subject()
        );
        assert!(!m.subject().contains("28 Feb") && !m.subject().contains("31 Mar"));
    }
    let upcoming_subjects: Vec<String> = later
        .iter()
        .map(|m| m.subject())
        .filter(|s| !s.contains("schedule") && !s.to_lowercase().contains("received"))
        .collect();
    assert!(
        upcoming_subjects.iter().any(|s| s.contains("30 Apr")),
        "{upcoming_subjects:?}"
    );
}

async fn a_new_term_respreads_with_interest_and_leaves_arrears(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let account = "6222020000007777";
    let a = import(
        store,
        &clock,
        &format!(
            "C-TRM,李娜,li.na@example.com,zh-CN,Asia/Shanghai,{account},MND-TRM,active,\
             TRM-1,CNY,6000.00,annuity,6,0.12,0,2027-01-29,monthly,,,,"
        ),
    )
    .await;
    let cny = Currency::parse("CNY").unwrap();
    bank.set_balance(account, cny, 0).await.unwrap();
    // The first installment (29 Jan) fails and is overdue on 10 Feb.
    drive(&engine, &clock, local("2027-02-10", 12, 0, SHANGHAI)).await;
    let rows = store.installments(a).await.unwrap();
    // PMT of 6000.00 at 1 % a month over 6: 1035.29; first period 60.00 interest.
    assert_eq!(
        (
            rows[0].total_minor,
            rows[0].interest_minor,
            rows[0].status.as_str()
        ),
        (1_035_29, 60_00, "unpaid")
    );
    let moved_principal: i64 = rows[1..].iter().map(|i| i.principal_minor).sum();
    // Balance after the first installment: 6000.00 - 975.29.
    assert_eq!(moved_principal, 5_024_71);

    // Refused: --term no larger than what is kept (the overdue first installment).
    let bad = reschedule(
        store,
        &engine,
        &clock,
        &ops("x"),
        "TRM-1",
        RescheduleRequest::Term(1),
        true,
    )
    .await;
    assert!(
        matches!(&bad, Err(OperatorError::Refused(m)) if m.contains("--term 1") && m.contains("more than 1")),
        "{bad:?}"
    );
    let bad = reschedule(
        store,
        &engine,
        &clock,
        &ops("x"),
        "TRM-1",
        RescheduleRequest::Holiday(0),
        true,
    )
    .await;
    assert!(
        matches!(&bad, Err(OperatorError::Refused(m)) if m.contains("1 to 120 periods")),
        "{bad:?}"
    );
    let bad = reschedule(
        store,
        &engine,
        &clock,
        &ops("x"),
        "NO-SUCH",
        RescheduleRequest::Holiday(1),
        true,
    )
    .await;
    assert!(
        matches!(&bad, Err(OperatorError::Refused(m)) if m.contains("not found")),
        "{bad:?}"
    );
    // Refused: a debit of a moved installment in flight (claimed by a worker).
    let second = rows[1].id;
    let planned = store.attempts_for_installment(second).await.unwrap();
    assert_eq!(planned[0].state, "scheduled");
    let at = planned[0].scheduled_at_ms;
    let claimed = store
        .claim_due_attempts("other-worker", at, at + 300_000, 10)
        .await
        .unwrap();
    assert!(claimed.iter().any(|c| c.installment_id == second));
    let unchanged = schedule(store, a).await;
    let events = store.events(Some(a)).await.unwrap().len();
    let bad = reschedule(
        store,
        &engine,
        &clock,
        &ops("x"),
        "TRM-1",
        RescheduleRequest::Remaining(10),
        true,
    )
    .await;
    assert!(
        matches!(&bad, Err(OperatorError::Refused(m)) if m.contains("in flight") && m.contains("installment 2")),
        "{bad:?}"
    );
    assert_eq!(schedule(store, a).await, unchanged);
    assert_eq!(store.events(Some(a)).await.unwrap().len(), events);
    // The worker's lease runs out; the attempt is put back as the daemon would after a
    // crash before the funds check (its next pass takes the expired lease over).
    store
        .execute_admin(&format!(
            "UPDATE debit_attempts SET state = 'scheduled', lease_owner = NULL, \
             lease_until_ms = NULL WHERE id = {}",
            planned[0].id
        ))
        .await
        .unwrap();

    let done = reschedule(
        store,
        &engine,
        &clock,
        &ops("hardship plan: 10 smaller payments"),
        "TRM-1",
        RescheduleRequest::Term(11),
        true,
    )
    .await
    .unwrap();
    assert_eq!(done.mode, "term");
    assert_eq!(done.n, 10);
    assert_eq!(done.arrears.len(), 1);
    assert_eq!(done.arrears[0].due_date, "2027-01-29");
    assert_eq!(done.principal_moved, "5024.71");
    let rows = store.installments(a).await.unwrap();
    let new: Vec<&InstallmentRow> = rows.iter().filter(|i| i.seq > 6).collect();
    assert_eq!(new.len(), 10);
    assert_eq!(
        new.iter().map(|i| i.principal_minor).sum::<i64>(),
        moved_principal
    );
    // From the second installment's own date on, the 29th of each month (28 Feb in 2027).
    let dates: Vec<&str> = new.iter().map(|i| i.due_date.as_str()).collect();
    assert_eq!(
        dates,
        vec![
            "2027-02-28",
            "2027-03-29",
            "2027-04-29",
            "2027-05-29",
            "2027-06-29",
            "2027-07-29",
            "2027-08-29",
            "2027-09-29",
            "2027-10-29",
            "2027-11-29",
        ]
    );
    // PMT of 5024.71 at 1 % over 10: 5024.71 x 0.01 x 1.01^10 / (1.01^10 - 1) = 530.519..
    // -> 530.52; interest 50.2471 -> 50.25, principal 480.27, balance 4544.44, whose
    // interest is 45.4444 -> 45.44.
    assert_eq!((new[0].total_minor, new[0].interest_minor), (530_52, 50_25));
    assert_eq!(new[1].interest_minor, 45_44);
    for i in &new {
        assert_eq!(
            i.total_minor,
            i.principal_minor + i.interest_minor + i.fee_minor
        );
    }
    let ag = store
        .agreement_detail("TRM-1")
        .await
        .unwrap()
        .unwrap()
        .agreement;
    let live_rows = live(&rows);
    assert_eq!(
        ag.total_minor,
        live_rows.iter().map(|i| i.total_minor).sum::<i64>()
    );
    assert_eq!(ag.principal_minor, 6_000_00);
    assert_eq!(
        ag.total_interest_minor,
        live_rows.iter().map(|i| i.interest_minor).sum::<i64>()
    );
    // The overdue installment is untouched and still overdue.
    assert_eq!(rows[0].status, "unpaid");
    let d = store.delinquency(a).await.unwrap().unwrap();
    assert!(d.dpd > 0);
    engine.assess_overdue().await.unwrap();
    let d = store.delinquency(a).await.unwrap().unwrap();
    assert_eq!(d.oldest_due_date.as_deref(), Some("2027-01-29"));

    // The customer's email (zh-CN) lists the ten new payments and the arrears apart.
    let sent_before = smtp.messages().len();
    drive(&engine, &clock, local("2027-02-11", 12, 0, SHANGHAI)).await;
    let mails: Vec<_> = smtp.messages()[sent_before..]
        .iter()
        .map(|m| parse(&m.data))
        .collect();
    let changed: Vec<_> = mails
        .iter()
        .filter(|m| m.subject().contains("还款计划已调整"))
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "{:?}",
        mails.iter().map(|m| m.subject()).collect::<Vec<_>>()
    );
    let text = changed[0].part("text/plain");
    assert!(text.contains("分10期偿还"), "{text}");
    assert!(
        text.contains("2027年11月29日") && text.contains("530.52"),
        "{text}"
    );
    assert!(text.contains("已逾期的还款不在本次调整之内"), "{text}");

    // Completed and cancelled agreements are refused.
    operator::cancel_agreement(store, &engine.policy(), clock.now(), &ops("x"), "TRM-1")
        .await
        .unwrap();
    let bad = reschedule(
        store,
        &engine,
        &clock,
        &ops("x"),
        "TRM-1",
        RescheduleRequest::Holiday(1),
        true,
    )
    .await;
    assert!(
        matches!(&bad, Err(OperatorError::Refused(m)) if m.contains("is cancelled")),
        "{bad:?}"
    );
}

both_backends!(
    a_payment_holiday_moves_the_rest_and_tells_the_customer_once,
    a_payment_holiday_moves_the_rest_and_tells_the_customer_once
);
both_backends!(
    a_new_term_respreads_with_interest_and_leaves_arrears,
    a_new_term_respreads_with_interest_and_leaves_arrears
);
