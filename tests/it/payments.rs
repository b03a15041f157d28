//! Payments and the agreement life cycle against real databases: early settlement with
//! future interest waived, a late fee collected by the next debit and the overdue state
//! cleared by it, pause / resume re-planning the next attempt number, and a mandate
//! revocation stopping debits, emailing the customer once per installment and alerting
//! operations.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use crate::overdue::{SHANGHAI, agreement, drive, hook_server, local, policy, setup, utc};
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::domain::Currency;
use repayd::engine::operator::{
    self, Actor, OperatorError, RecordRequest, record_payment, revoke_mandate,
};

async fn early_settlement_waives_future_interest(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let (a, insts) = agreement(
        store,
        "ST-1",
        "Li Wei",
        "6222020000001111",
        &["2027-01-20", "2027-02-20", "2027-03-20"],
    )
    .await;
    bank.set_balance("6222020000001111", Currency::parse("CNY").unwrap(), 0)
        .await
        .unwrap();
    // 1 Feb: the first installment is 9 days past due (late fee 25.00), the others not due.
    drive(&engine, &clock, local("2027-02-01", 12, 0, SHANGHAI)).await;
    assert_eq!(store.delinquency(a).await.unwrap().unwrap().dpd, 9);
    let p = engine.policy();
    let req = |amount: &str, settle| RecordRequest {
        agreement: "ST-1".into(),
        amount: amount.into(),
        reference: "SETTLE-1".into(),
        received_at: None,
        settle,
    };
    // Owed now: 25.00 + 1066.19 + 2 x 1000.00 principal = 3091.19; 132.38 interest waived.
    let wrong = record_payment(store, &p, clock.now(), &ops(), &req("3223.57", true)).await;
    match &wrong {
        Err(OperatorError::Refused(m)) => {
            assert!(m.contains("3091.19"), "{m}");
            assert!(m.contains("132.38"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        store
            .payment_by_reference("SETTLE-1")
            .await
            .unwrap()
            .is_none()
    );
    let s = record_payment(store, &p, clock.now(), &ops(), &req("3091.19", true))
        .await
        .unwrap();
    assert!(s.settlement && s.agreement_completed && s.delinquency_cleared);
    assert_eq!(s.waived_total, "132.38");
    assert_eq!(s.installments_paid, vec![1, 2, 3]);
    assert_eq!(
        s.allocations
            .iter()
            .map(|x| (x.seq, x.component, x.amount.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, "penalties", "25.00"),
            (1, "interest", "66.19"),
            (1, "principal", "1000.00"),
            (2, "principal", "1000.00"),
            (3, "principal", "1000.00"),
        ]
    );
    let rows = store.installments(a).await.unwrap();
    assert!(rows.iter().all(|i| i.status == "paid"));
    assert_eq!(
        rows.iter().map(|i| i.paid_minor).collect::<Vec<_>>(),
        vec![1_066_19, 1_000_00, 1_000_00]
    );
    for id in &insts {
        assert!(
            store
                .attempts_for_installment(*id)
                .await
                .unwrap()
                .iter()
                .all(|x| x.state != "scheduled")
        );
    }
    assert!(
        store
            .reminders_for_agreement(a)
            .await
            .unwrap()
            .iter()
            .all(|r| r.state != "pending")
    );
    let d = store.delinquency(a).await.unwrap().unwrap();
    assert_eq!((d.dpd, d.credit_flag.as_str()), (0, "none"));
    let allocs = store.payment_allocations(s.payment_id).await.unwrap();
    assert_eq!(
        allocs
            .iter()
            .filter(|x| x.component.starts_with("waived"))
            .map(|x| x.amount_minor)
            .sum::<i64>(),
        132_38
    );
    // Nothing happens any more on a settled agreement.
    let before = smtp.messages().len();
    drive(&engine, &clock, local("2027-04-01", 12, 0, SHANGHAI)).await;
    assert_eq!(smtp.messages().len(), before);
}

async fn late_fee_is_collected_by_the_next_debit_which_clears_the_flags(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let cny = Currency::parse("CNY").unwrap();
    let (a, insts) = agreement(store, "LF-1", "Li Wei", "6222020000002222", &["2027-01-20"]).await;
    bank.set_balance("6222020000002222", cny, 0).await.unwrap();
    // 01:00 on the 24th: 1 DPD, late fee charged, a re-attempt planned for 06:00.
    drive(&engine, &clock, local("2027-01-24", 2, 0, SHANGHAI)).await;
    let d = store.delinquency(a).await.unwrap().unwrap();
    assert_eq!((d.dpd, d.credit_flag.as_str()), (1, "at_risk"));
    bank.set_balance("6222020000002222", cny, 5_000_00)
        .await
        .unwrap();
    drive(&engine, &clock, local("2027-01-26", 12, 0, SHANGHAI)).await;
    let attempts = store.attempts_for_installment(insts[0]).await.unwrap();
    let last = attempts.last().unwrap();
    assert_eq!((last.attempt_no, last.state.as_str()), (4, "succeeded"));
    assert_eq!(
        last.amount_minor,
        1_066_19 + 25_00,
        "installment and late fee"
    );
    assert_eq!(
        from_epoch_ms(last.scheduled_at_ms),
        local("2027-01-24", 6, 0, SHANGHAI)
    );
    let charges = store.charges_for_agreement(a).await.unwrap();
    assert_eq!(charges.len(), 1);
    assert_eq!(
        (charges[0].paid_minor, charges[0].status.as_str()),
        (25_00, "paid")
    );
    let d = store.delinquency(a).await.unwrap().unwrap();
    assert_eq!(
        (d.dpd, d.bucket.clone(), d.credit_flag.as_str()),
        (0, None, "none"),
        "flags cleared once paid"
    );
    // The 09:00 overdue email was cancelled: the debit paid it at 06:00.
    let rows = store.reminders_for_agreement(a).await.unwrap();
    let overdue: Vec<_> = rows.iter().filter(|r| r.kind == "overdue").collect();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].state, "cancelled");
    assert!(smtp.messages().iter().all(|m| {
        !parse(&m.data)
            .header("Message-ID")
            .unwrap()
            .contains(".overdue.")
    }));
}

async fn pause_resume_and_mandate_revocation(db: TestDb) {
    let smtp = SmtpListener::start();
    let (hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(Some(url), None)).await;
    let store = &db.store;
    let (a, insts) = agreement(
        store,
        "LC-1",
        "Li Wei",
        "6222020000003333",
        &["2027-01-20", "2027-02-20"],
    )
    .await;
    bank.set_balance("6222020000003333", Currency::parse("CNY").unwrap(), 0)
        .await
        .unwrap();
    drive(&engine, &clock, local("2027-01-21", 12, 0, SHANGHAI)).await;
    let p = engine.policy();
    let paused = operator::pause_agreement(store, &p, clock.now(), &ops(), "LC-1")
        .await
        .unwrap();
    assert_eq!(
        (paused.previous_status.as_str(), paused.status.as_str()),
        ("active", "paused")
    );
    let event = store
        .events(Some(a))
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.kind == "agreement_paused")
        .expect("pause event");
    let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap();
    assert_eq!(
        (detail["actor"].as_str(), detail["reason"].as_str()),
        (Some("ops-alice"), Some("customer asked for time")),
        "the event log names who paused it and why"
    );
    assert!(
        store
            .attempts_for_agreement(a)
            .await
            .unwrap()
            .iter()
            .all(|x| x.state != "scheduled"),
        "pause cancels planned debits"
    );
    let runs_before = store.attempts_for_agreement(a).await.unwrap();
    drive(&engine, &clock, local("2027-01-25", 12, 0, SHANGHAI)).await;
    assert_eq!(
        store.attempts_for_agreement(a).await.unwrap().len(),
        runs_before.len(),
        "nothing planned or run while paused"
    );
    assert!(
        operator::pause_agreement(store, &p, clock.now(), &ops(), "LC-1")
            .await
            .is_err(),
        "already paused"
    );
    let out = operator::resume_agreement(store, &p, clock.now(), &ops(), "LC-1")
        .await
        .unwrap();
    assert_eq!(out.attempts_planned, 2);
    let planned: Vec<(i64, i64)> = store
        .attempts_for_agreement(a)
        .await
        .unwrap()
        .iter()
        .filter(|x| x.state == "scheduled")
        .map(|x| (x.installment_id, x.attempt_no))
        .collect();
    assert_eq!(
        planned,
        vec![(insts[0], 4), (insts[1], 2)],
        "the next attempt numbers, not attempt 1 again"
    );
    let upcoming: Vec<(i64, String)> = store
        .reminders_for_agreement(a)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.installment_id == insts[1] && r.kind == "upcoming")
        .map(|r| (r.offset_key, r.state))
        .collect();
    assert_eq!(
        upcoming,
        vec![(3, "pending".into())],
        "the second installment's 3-day reminder, stopped by the pause, is back"
    );

    revoke_mandate(store, &p, clock.now(), &ops(), "6222020000003333")
        .await
        .unwrap();
    let attempts = store.attempts_for_agreement(a).await.unwrap();
    assert!(attempts.iter().all(|x| x.state != "scheduled"));
    assert_eq!(
        attempts
            .iter()
            .filter(|x| x.outcome_code.as_deref() == Some("mandate_revoked"))
            .count(),
        2
    );
    assert!(
        revoke_mandate(store, &p, clock.now(), &ops(), "6222020000003333")
            .await
            .is_err(),
        "revoking twice changes nothing"
    );
    let revoked_at_ms = repayd::clock::to_epoch_ms(clock.now());
    drive(&engine, &clock, local("2027-01-27", 12, 0, SHANGHAI)).await;
    let notices: Vec<_> = smtp
        .messages()
        .iter()
        .map(|m| parse(&m.data))
        .filter(|m| m.header("Message-ID").unwrap().contains(".mandate_notice."))
        .collect();
    assert_eq!(
        notices.len(),
        1,
        "one 'pay another way' notice per agreement, not one per installment"
    );
    let text = notices[0].part("text/plain");
    assert!(text.contains("another way"), "{text}");
    assert!(!text.contains("automatically from your account"), "{text}");
    // No reminder promising an automatic collection goes out after the revocation.
    let reminders = store.reminders_for_agreement(a).await.unwrap();
    assert!(
        reminders
            .iter()
            .filter(|r| r.kind == "upcoming" && r.state == "sent")
            .all(|r| r.sent_at_ms.unwrap() < revoked_at_ms),
        "{reminders:?}"
    );
    // Operations heard about the blocked debits, signed.
    let received = hook.received.lock().unwrap().clone();
    let blocked: Vec<_> = received
        .iter()
        .filter(|(v, ok)| *ok && v["kind"] == "debit_blocked")
        .collect();
    assert_eq!(blocked.len(), 2, "{received:?}");
    assert_eq!(blocked[0].0["agreement"], "LC-1");
    // The agreement still becomes overdue (the mandate is gone, the debt is not).
    drive(&engine, &clock, local("2027-02-01", 12, 0, SHANGHAI)).await;
    let d = store.delinquency(a).await.unwrap().unwrap();
    assert_eq!(d.dpd, 9);
    assert!(
        store
            .attempts_for_agreement(a)
            .await
            .unwrap()
            .iter()
            .all(|x| x.state != "scheduled" && x.state != "succeeded"),
        "no debit without a mandate, not even on bucket entry"
    );
    // The second installment's pre-due reminder would promise an automatic collection:
    // when its time comes it is cancelled, with the reason.
    drive(&engine, &clock, local("2027-02-18", 12, 0, SHANGHAI)).await;
    let reminders = store.reminders_for_agreement(a).await.unwrap();
    assert!(
        reminders.iter().any(|r| r.kind == "upcoming"
            && r.installment_id == insts[1]
            && r.state == "cancelled"
            && r.cancel_reason.as_deref() == Some("mandate_revoked")),
        "{reminders:?}"
    );
    assert_eq!(
        reminders
            .iter()
            .filter(|r| r.kind == "mandate_notice" && r.state == "sent")
            .count(),
        1
    );
}

both_backends!(
    early_settlement_waives_future_interest,
    early_settlement_waives_future_interest
);
both_backends!(
    late_fee_is_collected_by_the_next_debit_which_clears_the_flags,
    late_fee_is_collected_by_the_next_debit_which_clears_the_flags
);
both_backends!(
    pause_resume_and_mandate_revocation,
    pause_resume_and_mandate_revocation
);

/// The operator every action in these tests is done by.
fn ops() -> Actor {
    Actor::new("ops-alice", "customer asked for time").unwrap()
}
