//! The sandbox bank on both backends: funds checks, exactly-once debits by key (also under
//! concurrency), declines, pending settlement and the fault switches.

use crate::helpers::TestDb;
use repayd::domain::{Currency, Money};
use repayd::gateway::sandbox::{SandboxBank, SandboxFault, SandboxSettings};
use repayd::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
};
use std::sync::Arc;

fn cny() -> Currency {
    Currency::parse("CNY").unwrap()
}

fn money(value: &str, currency: &str) -> Money {
    Money::parse(value, Currency::parse(currency).unwrap()).unwrap()
}

fn request(key: &str, account_ref: &str, amount: Money) -> DebitRequest {
    DebitRequest {
        account_ref: account_ref.into(),
        mandate_ref: format!("MANDATE-{account_ref}"),
        amount,
        idempotency_key: key.into(),
        reference: "AGR-1 installment 1".into(),
    }
}

async fn bank(db: &TestDb, settings: SandboxSettings) -> SandboxBank {
    SandboxBank::new(db.store.clone(), settings)
        .await
        .expect("sandbox bank")
}

fn is_succeeded(outcome: &DebitOutcome) -> bool {
    matches!(outcome, DebitOutcome::Succeeded { .. })
}

async fn funds_check_answers_available_or_the_exact_shortfall(db: TestDb) {
    let mut settings = SandboxSettings::default();
    settings
        .balances
        .insert("ACC-SHORT-0001".into(), "1066.18".into());
    let bank = bank(&db, settings).await;
    // A newcomer opens with the default 5000.00.
    assert_eq!(
        bank.check_funds("ACC-NEW-0001", &money("5000.00", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Available
    );
    assert_eq!(
        bank.check_funds("ACC-NEW-0001", &money("5000.01", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("0.01", "CNY")),
            available: Some(money("5000.00", "CNY")),
        }
    );
    assert_eq!(
        bank.check_funds("ACC-SHORT-0001", &money("1066.19", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("0.01", "CNY")),
            available: Some(money("1066.18", "CNY")),
        }
    );
    // Zero-digit currency: 5000.00 opens a JPY account with 5000.
    assert_eq!(
        bank.check_funds("ACC-YEN-0001", &money("7000", "JPY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("2000", "JPY")),
            available: Some(money("5000", "JPY")),
        }
    );
    // A funds check reads; it opens nothing.
    assert_eq!(bank.balance("ACC-NEW-0001").await.unwrap(), None);
}
crate::both_backends!(
    funds_check_answers_available_or_the_exact_shortfall,
    super::funds_check_answers_available_or_the_exact_shortfall
);

async fn debit_decrements_the_balance_exactly(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    let outcome = bank
        .debit(&request("key-1", "ACC-0001", money("1066.19", "CNY")))
        .await
        .unwrap();
    let DebitOutcome::Succeeded { gateway_ref } = outcome else {
        panic!("expected success, got {outcome:?}");
    };
    assert!(gateway_ref.starts_with("sbx_"));
    assert_eq!(
        bank.balance("ACC-0001").await.unwrap(),
        Some(500_000 - 106_619)
    );
    assert_eq!(bank.debit_count("ACC-0001").await.unwrap(), 1);
    assert_eq!(
        bank.lookup("key-1").await.unwrap(),
        LookupOutcome::Found(DebitOutcome::Succeeded { gateway_ref })
    );
    assert_eq!(
        bank.lookup("key-never").await.unwrap(),
        LookupOutcome::NotFound
    );
}
crate::both_backends!(
    debit_decrements_the_balance_exactly,
    super::debit_decrements_the_balance_exactly
);

async fn the_same_key_twice_debits_once(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    let req = request("key-twice", "ACC-0002", money("100.00", "CNY"));
    let first = bank.debit(&req).await.unwrap();
    let second = bank.debit(&req).await.unwrap();
    assert!(is_succeeded(&first));
    assert_eq!(first, second, "a replay answers with the first outcome");
    assert_eq!(bank.balance("ACC-0002").await.unwrap(), Some(490_000));
    assert_eq!(bank.debits_for_key("key-twice").await.unwrap(), 1);
    // The same key for another amount is refused hard and changes nothing.
    let other = request("key-twice", "ACC-0002", money("100.01", "CNY"));
    match bank.debit(&other).await.unwrap() {
        DebitOutcome::Declined { code, hard, .. } => {
            assert_eq!(code, "idempotency_mismatch");
            assert!(hard);
        }
        outcome => panic!("expected a mismatch decline, got {outcome:?}"),
    }
    assert_eq!(bank.balance("ACC-0002").await.unwrap(), Some(490_000));
    assert_eq!(bank.debit_count("ACC-0002").await.unwrap(), 1);
}
crate::both_backends!(
    the_same_key_twice_debits_once,
    super::the_same_key_twice_debits_once
);

async fn concurrent_debits_under_one_key_book_once(db: TestDb) {
    let bank = Arc::new(bank(&db, SandboxSettings::default()).await);
    // Opened beforehand, so the racers do not queue on opening it: on PostgreSQL they
    // then meet at the balance update and the key's unique index instead.
    bank.set_balance("ACC-0003", cny(), 500_000).await.unwrap();
    let req = request("key-race", "ACC-0003", money("250.00", "CNY"));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let bank = bank.clone();
            let req = req.clone();
            tokio::spawn(async move { bank.debit(&req).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().expect("every racer gets an answer"));
    }
    assert!(outcomes.iter().all(is_succeeded), "{outcomes:?}");
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "one outcome");
    assert_eq!(bank.debits_for_key("key-race").await.unwrap(), 1);
    assert_eq!(bank.balance("ACC-0003").await.unwrap(), Some(475_000));
}
crate::both_backends!(
    concurrent_debits_under_one_key_book_once,
    super::concurrent_debits_under_one_key_book_once
);

async fn concurrent_debits_never_overdraw(db: TestDb) {
    let mut settings = SandboxSettings::default();
    settings.balances.insert("ACC-0004".into(), "300.00".into());
    let bank = Arc::new(bank(&db, settings).await);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let bank = bank.clone();
            tokio::spawn(async move {
                bank.debit(&request(
                    &format!("key-{i}"),
                    "ACC-0004",
                    money("50.00", "CNY"),
                ))
                .await
            })
        })
        .collect();
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            DebitOutcome::Succeeded { .. } => succeeded += 1,
            DebitOutcome::Declined { code, hard, .. } => {
                assert_eq!(code, "insufficient_funds");
                assert!(!hard);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(succeeded, 6);
    assert_eq!(bank.balance("ACC-0004").await.unwrap(), Some(0));
    assert_eq!(bank.debit_count("ACC-0004").await.unwrap(), 6);
}
crate::both_backends!(
    concurrent_debits_never_overdraw,
    super::concurrent_debits_never_overdraw
);

async fn insufficient_at_debit_time_declines_softly(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    bank.set_balance("ACC-0005", cny(), 1_000).await.unwrap();
    let req = request("key-short", "ACC-0005", money("20.00", "CNY"));
    let declined = bank.debit(&req).await.unwrap();
    assert_eq!(
        declined,
        DebitOutcome::Declined {
            code: "insufficient_funds".into(),
            reason: "balance is below the debit amount".into(),
            hard: false,
        }
    );
    assert_eq!(bank.balance("ACC-0005").await.unwrap(), Some(1_000));
    assert_eq!(bank.debit_count("ACC-0005").await.unwrap(), 0);
    assert_eq!(
        bank.lookup("key-short").await.unwrap(),
        LookupOutcome::Found(declined.clone())
    );
    // A decline is final for its key: topping up does not turn a replay into a debit.
    bank.set_balance("ACC-0005", cny(), 5_000).await.unwrap();
    assert_eq!(bank.debit(&req).await.unwrap(), declined);
    assert_eq!(bank.balance("ACC-0005").await.unwrap(), Some(5_000));
    // A new attempt, under a new key, goes through.
    let retry = request("key-short-2", "ACC-0005", money("20.00", "CNY"));
    assert!(is_succeeded(&bank.debit(&retry).await.unwrap()));
    assert_eq!(bank.balance("ACC-0005").await.unwrap(), Some(3_000));
}
crate::both_backends!(
    insufficient_at_debit_time_declines_softly,
    super::insufficient_at_debit_time_declines_softly
);

async fn closed_accounts_decline_hard_and_frozen_ones_softly(db: TestDb) {
    let settings = SandboxSettings {
        closed: vec!["ACC-CLOSED".into()],
        frozen: vec!["ACC-FROZEN".into()],
        ..SandboxSettings::default()
    };
    let bank = bank(&db, settings).await;
    let amount = money("10.00", "CNY");
    assert_eq!(
        bank.check_funds("ACC-CLOSED", &amount).await.unwrap(),
        FundsAnswer::Insufficient {
            shortfall: None,
            available: None
        }
    );
    assert_eq!(
        bank.check_funds("ACC-FROZEN", &amount).await.unwrap(),
        FundsAnswer::Available
    );
    match bank
        .debit(&request("key-closed", "ACC-CLOSED", amount))
        .await
        .unwrap()
    {
        DebitOutcome::Declined { code, hard, .. } => {
            assert_eq!(code, "account_closed");
            assert!(hard);
        }
        other => panic!("expected a hard decline, got {other:?}"),
    }
    match bank
        .debit(&request("key-frozen", "ACC-FROZEN", amount))
        .await
        .unwrap()
    {
        DebitOutcome::Declined { code, hard, .. } => {
            assert_eq!(code, "account_frozen");
            assert!(!hard);
        }
        other => panic!("expected a soft decline, got {other:?}"),
    }
    assert_eq!(bank.balance("ACC-CLOSED").await.unwrap(), Some(500_000));
    assert_eq!(bank.debit_count("ACC-CLOSED").await.unwrap(), 0);
    // Restarted without the lists, the accounts are open again.
    let reopened = self::bank(&db, SandboxSettings::default()).await;
    let again = request("key-closed-2", "ACC-CLOSED", amount);
    assert!(is_succeeded(&reopened.debit(&again).await.unwrap()));
}
crate::both_backends!(
    closed_accounts_decline_hard_and_frozen_ones_softly,
    super::closed_accounts_decline_hard_and_frozen_ones_softly
);

async fn a_lost_answer_is_booked_and_found_by_lookup(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    bank.inject(SandboxFault::LoseNextDebitAnswer);
    let req = request("key-lost", "ACC-0006", money("99.99", "CNY"));
    assert!(matches!(
        bank.debit(&req).await,
        Err(GatewayError::Ambiguous(_))
    ));
    assert_eq!(bank.debits_for_key("key-lost").await.unwrap(), 1);
    assert_eq!(bank.balance("ACC-0006").await.unwrap(), Some(490_001));
    let LookupOutcome::Found(found) = bank.lookup("key-lost").await.unwrap() else {
        panic!("the booked debit must be found");
    };
    assert!(is_succeeded(&found));
    // Re-sent under the same key: the same answer, no second booking.
    assert_eq!(bank.debit(&req).await.unwrap(), found);
    assert_eq!(bank.balance("ACC-0006").await.unwrap(), Some(490_001));
}
crate::both_backends!(
    a_lost_answer_is_booked_and_found_by_lookup,
    super::a_lost_answer_is_booked_and_found_by_lookup
);

async fn a_failure_before_booking_is_not_found(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    bank.inject(SandboxFault::FailNextDebitBeforeBooking);
    let req = request("key-unsent", "ACC-0007", money("10.00", "CNY"));
    assert!(matches!(
        bank.debit(&req).await,
        Err(GatewayError::Ambiguous(_))
    ));
    assert_eq!(
        bank.lookup("key-unsent").await.unwrap(),
        LookupOutcome::NotFound
    );
    assert_eq!(bank.balance("ACC-0007").await.unwrap(), None);
    // NotFound: re-sent under the same key, it books once.
    assert!(is_succeeded(&bank.debit(&req).await.unwrap()));
    assert_eq!(bank.debits_for_key("key-unsent").await.unwrap(), 1);
}
crate::both_backends!(
    a_failure_before_booking_is_not_found,
    super::a_failure_before_booking_is_not_found
);

async fn injected_declines_and_failures_are_one_shot(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    let amount = money("10.00", "CNY");
    // Queued faults are taken by the calls they apply to, in order.
    bank.inject(SandboxFault::FailNextFundsCheck);
    bank.inject(SandboxFault::DeclineNextDebitHard);
    bank.inject(SandboxFault::DeclineNextDebitSoft);
    bank.inject(SandboxFault::FailNextLookup);
    let hard = bank
        .debit(&request("key-h", "ACC-0008", amount))
        .await
        .unwrap();
    assert!(
        matches!(&hard, DebitOutcome::Declined { code, hard: true, .. } if code == "mandate_invalid")
    );
    assert!(matches!(
        bank.check_funds("ACC-0008", &amount).await,
        Err(GatewayError::Unavailable(_))
    ));
    assert_eq!(
        bank.check_funds("ACC-0008", &amount).await.unwrap(),
        FundsAnswer::Available
    );
    let soft = bank
        .debit(&request("key-s", "ACC-0008", amount))
        .await
        .unwrap();
    assert!(
        matches!(&soft, DebitOutcome::Declined { code, hard: false, .. } if code == "refer_to_payer")
    );
    assert!(matches!(
        bank.lookup("key-h").await,
        Err(GatewayError::Unavailable(_))
    ));
    assert_eq!(
        bank.lookup("key-h").await.unwrap(),
        LookupOutcome::Found(hard)
    );
    assert!(is_succeeded(
        &bank
            .debit(&request("key-ok", "ACC-0008", amount))
            .await
            .unwrap()
    ));
    assert_eq!(bank.debit_count("ACC-0008").await.unwrap(), 1);
}
crate::both_backends!(
    injected_declines_and_failures_are_one_shot,
    super::injected_declines_and_failures_are_one_shot
);

async fn pending_debits_settle_on_the_next_lookup(db: TestDb) {
    let settings = SandboxSettings {
        pending_percent: 100,
        ..SandboxSettings::default()
    };
    let bank = bank(&db, settings).await;
    let req = request("key-pending", "ACC-0009", money("40.00", "CNY"));
    let DebitOutcome::Pending { gateway_ref } = bank.debit(&req).await.unwrap() else {
        panic!("expected pending");
    };
    // The money is taken while pending, and a replay still says pending.
    assert_eq!(bank.balance("ACC-0009").await.unwrap(), Some(496_000));
    assert_eq!(
        bank.debit(&req).await.unwrap(),
        DebitOutcome::Pending {
            gateway_ref: gateway_ref.clone()
        }
    );
    let settled = LookupOutcome::Found(DebitOutcome::Succeeded { gateway_ref });
    assert_eq!(bank.lookup("key-pending").await.unwrap(), settled);
    assert_eq!(bank.lookup("key-pending").await.unwrap(), settled);
    assert_eq!(bank.balance("ACC-0009").await.unwrap(), Some(496_000));
    assert_eq!(bank.debit_count("ACC-0009").await.unwrap(), 1);
}
crate::both_backends!(
    pending_debits_settle_on_the_next_lookup,
    super::pending_debits_settle_on_the_next_lookup
);

/// Which of `keys` lose their answer at 50%, on a fresh bank over `db`.
async fn lost_answers(db: &TestDb, keys: &[String]) -> Vec<bool> {
    let settings = SandboxSettings {
        fault_percent: 50,
        ..SandboxSettings::default()
    };
    let bank = bank(db, settings).await;
    let mut lost = Vec::new();
    for key in keys {
        let req = request(key, "ACC-0010", money("1.00", "CNY"));
        match bank.debit(&req).await {
            Ok(outcome) => {
                assert!(is_succeeded(&outcome));
                lost.push(false);
            }
            Err(GatewayError::Ambiguous(_)) => {
                // Lost answers are booked all the same, and a replay tells the truth.
                assert!(matches!(
                    bank.lookup(key).await.unwrap(),
                    LookupOutcome::Found(DebitOutcome::Succeeded { .. })
                ));
                assert!(is_succeeded(&bank.debit(&req).await.unwrap()));
                lost.push(true);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(
        bank.debit_count("ACC-0010").await.unwrap(),
        keys.len() as i64
    );
    lost
}

async fn fault_percent_is_reproducible_per_key(db: TestDb) {
    let keys: Vec<String> = (0..20).map(|i| format!("inst-{i}-attempt-1")).collect();
    let first = lost_answers(&db, &keys).await;
    let lost = first.iter().filter(|l| **l).count();
    assert!((3..=17).contains(&lost), "{lost} of 20 lost at 50%");
    let other = TestDb::sqlite().await;
    assert_eq!(lost_answers(&other, &keys).await, first);
}
crate::both_backends!(
    fault_percent_is_reproducible_per_key,
    super::fault_percent_is_reproducible_per_key
);

async fn configured_balances_override_at_start(db: TestDb) {
    let bank = bank(&db, SandboxSettings::default()).await;
    bank.debit(&request("key-a", "ACC-0011", money("1.00", "JPY")))
        .await
        .unwrap();
    assert_eq!(bank.balance("ACC-0011").await.unwrap(), Some(4_999));
    let mut settings = SandboxSettings::default();
    settings.balances.insert("ACC-0011".into(), "12.75".into());
    let restarted = self::bank(&db, settings).await;
    // The account keeps its currency; JPY has no minor digits.
    assert_eq!(restarted.balance("ACC-0011").await.unwrap(), Some(12));
    assert_eq!(
        restarted
            .check_funds("ACC-0011", &money("13", "JPY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("1", "JPY")),
            available: Some(money("12", "JPY")),
        }
    );
    assert_eq!(
        restarted
            .check_funds("ACC-0011", &money("13.00", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: None,
            available: None
        },
        "an account held in another currency"
    );
}
crate::both_backends!(
    configured_balances_override_at_start,
    super::configured_balances_override_at_start
);

#[tokio::test]
async fn bad_settings_are_refused_naming_the_key() {
    let db = TestDb::sqlite().await;
    let settings = SandboxSettings {
        fault_percent: 150,
        ..SandboxSettings::default()
    };
    let err = SandboxBank::new(db.store.clone(), settings)
        .await
        .expect_err("150% is refused");
    assert!(
        err.to_string().contains("gateway.sandbox.fault_percent"),
        "{err}"
    );
}

#[tokio::test]
async fn no_call_answers_sooner_than_the_latency() {
    let db = TestDb::sqlite().await;
    let settings = SandboxSettings {
        latency_ms: 30,
        ..SandboxSettings::default()
    };
    let bank = bank(&db, settings).await;
    let started = std::time::Instant::now();
    bank.check_funds("ACC-0012", &money("1.00", "CNY"))
        .await
        .unwrap();
    bank.lookup("nothing").await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(60));
}

/// An income schedule: the balance rises on the payday (the account's local date) and is
/// spent down to what is kept some days later, on the bank's clock.
#[allow(clippy::inconsistent_digit_grouping)]
async fn income_schedule_raises_the_balance_on_the_payday(db: TestDb) {
    use repayd::clock::ManualClock;
    use repayd::store::sandbox::SandboxIncomeRow;
    let cny = Currency::parse("CNY").unwrap();
    let store = db.store.clone();
    store
        .sandbox_set_balance("ACC-INC-1", "CNY", 20_00, "open")
        .await
        .unwrap();
    store
        .sandbox_set_income(
            &[SandboxIncomeRow {
                account_ref: "ACC-INC-1".into(),
                payday: "monthly:10".into(),
                amount_minor: 3_000_00,
                keep_minor: 50_00,
                spent_after_days: 3,
                time_zone: "Asia/Shanghai".into(),
                applied_through: "2027-01-01".into(),
            }],
            &[],
        )
        .await
        .unwrap();
    // 9 Jan 23:30 in Shanghai: not yet.
    let clock = ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2027-01-09T15:30:00Z")
            .unwrap()
            .to_utc(),
    );
    let bank = SandboxBank::new(store.clone(), SandboxSettings::default())
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let ask = Money::from_minor(500_00, cny);
    assert!(matches!(
        bank.check_funds("ACC-INC-1", &ask).await.unwrap(),
        FundsAnswer::Insufficient { .. }
    ));
    // 10 Jan 00:30 local: paid.
    clock.set(
        chrono::DateTime::parse_from_rfc3339("2027-01-09T16:30:00Z")
            .unwrap()
            .to_utc(),
    );
    assert_eq!(
        bank.check_funds("ACC-INC-1", &ask).await.unwrap(),
        FundsAnswer::Available
    );
    assert_eq!(bank.balance("ACC-INC-1").await.unwrap(), Some(3_020_00));
    // 13 Jan: spent down to 50.00.
    clock.set(
        chrono::DateTime::parse_from_rfc3339("2027-01-13T01:00:00Z")
            .unwrap()
            .to_utc(),
    );
    assert!(matches!(
        bank.check_funds("ACC-INC-1", &ask).await.unwrap(),
        FundsAnswer::Insufficient { .. }
    ));
    assert_eq!(bank.balance("ACC-INC-1").await.unwrap(), Some(50_00));
    // The account loses its schedule (an income file's payday `none`): the next payday
    // brings nothing.
    store.sandbox_set_income(&[], &["ACC-INC-1"]).await.unwrap();
    clock.set(
        chrono::DateTime::parse_from_rfc3339("2027-02-10T04:00:00Z")
            .unwrap()
            .to_utc(),
    );
    let bank = SandboxBank::new(store.clone(), SandboxSettings::default())
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    assert!(matches!(
        bank.check_funds("ACC-INC-1", &ask).await.unwrap(),
        FundsAnswer::Insufficient { .. }
    ));
    assert_eq!(bank.balance("ACC-INC-1").await.unwrap(), Some(50_00));
}

crate::both_backends!(
    income_schedule_on_the_payday,
    income_schedule_raises_the_balance_on_the_payday
);
