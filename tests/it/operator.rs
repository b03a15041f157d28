//! Operator actions against real databases: a late fee waived partly then fully (the
//! next debit asks for less, amounts exact to the minor unit), a revoked mandate
//! reinstated (the next attempt planned and collected), a failed email sent again (and
//! one no longer true cancelled by the conversation gate instead), each with its actor
//! and reason in the event log.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::SmtpListener;
use crate::overdue::{SHANGHAI, agreement, drive, local, policy, setup, utc};
use repayd::clock::{Clock, ManualClock};
use repayd::domain::Currency;
use repayd::engine::operator::{self, Actor, OperatorError, RecordRequest};
use repayd::store::Store;

fn ops(reason: &str) -> Actor {
    Actor::new("ops-carol", reason).unwrap()
}

/// The detail of the last event of `kind` on `agreement` (or any, for `None`).
async fn last_event(store: &Store, agreement: Option<i64>, kind: &str) -> serde_json::Value {
    let e = store
        .events(agreement)
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} event"));
    serde_json::from_str(&e.detail).unwrap()
}

async fn late_fee_waived_partly_then_fully(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let cny = Currency::parse("CNY").unwrap();
    let (a, insts) = agreement(store, "WV-1", "Li Wei", "6222020000004444", &["2027-01-20"]).await;
    bank.set_balance("6222020000004444", cny, 0).await.unwrap();
    // 1 DPD on the 24th: a late fee of 25.00.
    drive(&engine, &clock, local("2027-01-24", 2, 0, SHANGHAI)).await;
    let charges = store.charges_for_agreement(a).await.unwrap();
    assert_eq!(charges.len(), 1);
    let fee = charges[0].id;
    assert_eq!(charges[0].open_minor(), 25_00);

    let refused = operator::waive_charge(store, clock.now(), &ops("x"), fee, Some("10.005")).await;
    assert!(
        matches!(&refused, Err(OperatorError::Refused(m)) if m.contains("--amount")),
        "{refused:?}"
    );
    let too_much = operator::waive_charge(store, clock.now(), &ops("x"), fee, Some("25.01")).await;
    assert!(
        matches!(&too_much, Err(OperatorError::Refused(m)) if m.contains("1 to 2500")),
        "{too_much:?}"
    );
    let part = operator::waive_charge(
        store,
        clock.now(),
        &ops("goodwill: first late payment"),
        fee,
        Some("10.00"),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            part.waived.as_str(),
            part.open_before.as_str(),
            part.open_after.as_str()
        ),
        ("10.00", "25.00", "15.00")
    );
    assert_eq!(part.status, "open");
    let detail = last_event(store, Some(a), "charge_waived").await;
    assert_eq!(detail["actor"], "ops-carol");
    assert_eq!(detail["reason"], "goodwill: first late payment");
    assert_eq!(detail["waived_minor"], 10_00);

    let rest = operator::waive_charge(store, clock.now(), &ops("hardship"), fee, None)
        .await
        .unwrap();
    assert_eq!(
        (rest.waived.as_str(), rest.open_after.as_str()),
        ("15.00", "0.00")
    );
    assert_eq!(rest.status, "waived");
    let again = operator::waive_charge(store, clock.now(), &ops("again"), fee, None).await;
    assert!(
        matches!(&again, Err(OperatorError::Refused(m)) if m.contains("nothing is open")),
        "{again:?}"
    );
    let row = store.charge(fee).await.unwrap().unwrap();
    assert_eq!(
        (row.amount_minor, row.paid_minor, row.waived_minor),
        (25_00, 0, 25_00)
    );

    // The next debit takes the installment only: the fee is no longer owed.
    bank.set_balance("6222020000004444", cny, 5_000_00)
        .await
        .unwrap();
    drive(&engine, &clock, local("2027-01-26", 12, 0, SHANGHAI)).await;
    let attempts = store.attempts_for_installment(insts[0]).await.unwrap();
    let last = attempts.last().unwrap();
    assert_eq!(last.state, "succeeded");
    assert_eq!(last.amount_minor, 1_066_19);
    assert_eq!(
        bank.balance("6222020000004444").await.unwrap(),
        Some(5_000_00 - 1_066_19)
    );
}

async fn revoked_mandate_reinstated_and_collected(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let cny = Currency::parse("CNY").unwrap();
    let account = "6222020000005555";
    let (a, insts) = agreement(store, "RI-1", "Li Wei", account, &["2027-01-20"]).await;
    bank.set_balance(account, cny, 0).await.unwrap();
    drive(&engine, &clock, local("2027-01-21", 12, 0, SHANGHAI)).await;
    let p = engine.policy();
    let revoked = operator::revoke_mandate(store, &p, clock.now(), &ops("letter"), account)
        .await
        .unwrap();
    assert_eq!(revoked.agreements, vec![a]);
    assert!(
        store
            .attempts_for_agreement(a)
            .await
            .unwrap()
            .iter()
            .all(|x| x.state != "scheduled")
    );
    let twice = operator::reinstate_mandate(store, &p, clock.now(), &ops("x"), "NO-SUCH").await;
    assert!(matches!(&twice, Err(OperatorError::Refused(m)) if m.contains("not found")));

    let back = operator::reinstate_mandate(
        store,
        &p,
        clock.now(),
        &ops("customer signed a new mandate"),
        account,
    )
    .await
    .unwrap();
    assert_eq!(
        (back.mandate_status.as_str(), back.agreements.clone()),
        ("active", vec![a])
    );
    let detail = last_event(store, None, "mandate_reinstated").await;
    assert_eq!(detail["actor"], "ops-carol");
    assert_eq!(detail["reason"], "customer signed a new mandate");
    let planned: Vec<_> = store
        .attempts_for_agreement(a)
        .await
        .unwrap()
        .into_iter()
        .filter(|x| x.state == "scheduled")
        .collect();
    assert_eq!(planned.len(), 1, "the next attempt is planned again");
    let again = operator::reinstate_mandate(store, &p, clock.now(), &ops("x"), account).await;
    assert!(
        matches!(&again, Err(OperatorError::Refused(m)) if m.contains("not revoked")),
        "{again:?}"
    );
    bank.set_balance(account, cny, 5_000_00).await.unwrap();
    drive(&engine, &clock, local("2027-01-24", 12, 0, SHANGHAI)).await;
    let attempts = store.attempts_for_installment(insts[0]).await.unwrap();
    assert_eq!(attempts.last().unwrap().state, "succeeded", "{attempts:?}");
}

async fn failed_email_resent_through_the_gate(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, _bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let (a, _) = agreement(store, "RS-1", "Li Wei", "6222020000006666", &["2027-01-20"]).await;
    let (b, _) = agreement(
        store,
        "RS-2",
        "Wang Fang",
        "6222020000007777",
        &["2027-01-20"],
    )
    .await;
    // Both 3-day reminders (09:00 on the 17th in Shanghai) are refused for good.
    smtp.reply_to_next_rcpt(550, "5.1.1 mailbox unavailable");
    smtp.reply_to_next_rcpt(550, "5.1.1 mailbox unavailable");
    drive(&engine, &clock, local("2027-01-17", 9, 30, SHANGHAI)).await;
    let upcoming = |agreement: i64| async move {
        store
            .reminders_for_agreement(agreement)
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.kind == "upcoming")
            .unwrap()
    };
    let (r1, r2) = (upcoming(a).await, upcoming(b).await);
    assert_eq!((r1.state.as_str(), r2.state.as_str()), ("failed", "failed"));
    assert!(smtp.messages().is_empty());

    // Not a failed email, or none at all: refused, nothing written.
    let missing = operator::resend_email(store, clock.now(), &ops("x"), 999_999).await;
    assert!(
        matches!(&missing, Err(OperatorError::Refused(m)) if m.contains("not found")),
        "{missing:?}"
    );
    let done = operator::resend_email(store, clock.now(), &ops("mailbox fixed"), r1.id)
        .await
        .unwrap();
    assert_eq!(
        (done.kind.as_str(), done.previous_state.as_str()),
        ("upcoming", "failed")
    );
    assert!(
        done.previous_error.contains("mailbox unavailable"),
        "{done:?}"
    );
    let row = store.reminder(r1.id).await.unwrap().unwrap();
    assert_eq!(row.state, "pending");
    assert_eq!(row.last_error, None);
    assert_eq!(row.scheduled_at_ms, repayd::clock::to_epoch_ms(clock.now()));
    let detail = last_event(store, Some(a), "reminder_requeued").await;
    assert_eq!(detail["actor"], "ops-carol");
    assert_eq!(detail["reason"], "mailbox fixed");
    assert_eq!(detail["reminder_id"], r1.id);
    assert_eq!(detail["previous_state"], "failed");
    let twice = operator::resend_email(store, clock.now(), &ops("again"), r1.id).await;
    assert!(
        matches!(&twice, Err(OperatorError::Refused(m)) if m.contains("is pending")),
        "{twice:?}"
    );

    // RS-2 is paid at the branch before its email is sent again: the reminder would
    // ask for money no longer owed, so the gate cancels it instead.
    let p = engine.policy();
    operator::record_payment(
        store,
        &p,
        clock.now(),
        &ops("paid at the branch"),
        &RecordRequest {
            agreement: "RS-2".into(),
            amount: "1066.19".into(),
            reference: "RS-2-BRANCH".into(),
            received_at: None,
            settle: false,
        },
    )
    .await
    .unwrap();
    operator::resend_email(store, clock.now(), &ops("customer asked"), r2.id)
        .await
        .unwrap();

    drive(&engine, &clock, local("2027-01-17", 10, 0, SHANGHAI)).await;
    let sent = smtp.messages();
    assert_eq!(sent.len(), 1, "only the email still true goes out");
    assert!(
        sent[0].to.iter().any(|t| t.contains("rs-1@example.com")),
        "{:?}",
        sent[0].to
    );
    assert_eq!(store.reminder(r1.id).await.unwrap().unwrap().state, "sent");
    let r2 = store.reminder(r2.id).await.unwrap().unwrap();
    assert_eq!(r2.state, "cancelled");
    assert_eq!(r2.cancel_reason.as_deref(), Some("installment_paid"));
    last_event(store, Some(b), "reminder_cancelled").await;
}

both_backends!(
    failed_email_resent_through_the_gate,
    failed_email_resent_through_the_gate
);
both_backends!(
    late_fee_waived_partly_then_fully,
    late_fee_waived_partly_then_fully
);
both_backends!(
    revoked_mandate_reinstated_and_collected,
    revoked_mandate_reinstated_and_collected
);
