//! The store's contract for customers, funding accounts, agreements and installments, run
//! against SQLite and PostgreSQL alike: what is written reads back exactly, unique ids are
//! domain conflicts, the event log is append-only and the CHECK constraints hold.

use crate::both_backends;
use crate::helpers::TestDb;
use repayd::store::agreements::{
    AgreementFilter, AgreementWrite, NewAgreement, NewCustomer, NewFundingAccount, NewInstallment,
};
use repayd::store::{NewEvent, Store, StoreError};

const NOW: i64 = 1_795_600_000_000; // 2026-11-25

fn customer(ext: &str) -> NewCustomer {
    NewCustomer {
        external_id: ext.into(),
        name: "李伟".into(),
        email: "li.wei@example.com".into(),
        locale: "zh-CN".into(),
        time_zone: "Asia/Shanghai".into(),
    }
}

fn account(reference: &str) -> NewFundingAccount {
    NewFundingAccount {
        external_ref: reference.into(),
        mandate_ref: "MND-1".into(),
        mandate_status: "active".into(),
    }
}

/// Odd minor amounts on purpose: any float or rounding on the way would show.
fn agreement(ext: &str, customer_id: i64, funding_account_id: i64) -> NewAgreement {
    let installments = vec![
        NewInstallment {
            seq: 1,
            due_date: "2026-12-01".into(),
            principal_minor: 333_334,
            interest_minor: 1_201,
            fee_minor: 7,
        },
        NewInstallment {
            seq: 2,
            due_date: "2027-01-01".into(),
            principal_minor: 333_333,
            interest_minor: 899,
            fee_minor: 7,
        },
        NewInstallment {
            seq: 3,
            due_date: "2027-02-01".into(),
            principal_minor: 333_333,
            interest_minor: 0,
            fee_minor: 7,
        },
    ];
    NewAgreement {
        external_id: ext.into(),
        customer_id,
        funding_account_id,
        currency: "CNY".into(),
        principal_minor: 1_000_000,
        total_interest_minor: 2_100,
        total_fee_minor: 21,
        method: Some("equal-principal".into()),
        terms_json: Some(r#"{"method":"equal-principal"}"#.into()),
        content_hash: "h1".into(),
        installments,
    }
}

/// An installment as (seq, due date, principal, interest, fee, total, paid, status).
type Line<'a> = (i64, &'a str, i64, i64, i64, i64, i64, &'a str);

/// A customer, an account and an agreement; returns their ids.
async fn seed(store: &Store, ext: &str) -> (i64, i64, i64) {
    let c = store
        .insert_customer(&customer(&format!("C-{ext}")), NOW)
        .await
        .expect("customer");
    let f = store
        .insert_funding_account(c, &account(&format!("ACC-{ext}")), NOW)
        .await
        .expect("account");
    let a = store
        .insert_agreement(&agreement(ext, c, f), NOW)
        .await
        .expect("agreement");
    (c, f, a)
}

async fn writes_read_back_exactly(db: TestDb) {
    let store = &db.store;
    let (c, f, a) = seed(store, "A1").await;

    let row = store.customer(c).await.unwrap().expect("customer row");
    assert_eq!(
        (
            row.external_id.as_str(),
            row.name.as_str(),
            row.email.as_str()
        ),
        ("C-A1", "李伟", "li.wei@example.com")
    );
    assert_eq!(
        (row.locale.as_str(), row.time_zone.as_str()),
        ("zh-CN", "Asia/Shanghai")
    );
    assert_eq!((row.created_at_ms, row.updated_at_ms), (NOW, NOW));
    let by_ext = store
        .customers_by_external_ids(&["C-A1", "nobody"])
        .await
        .unwrap();
    assert_eq!(by_ext, vec![row]);

    let acc = store
        .funding_account(f)
        .await
        .unwrap()
        .expect("account row");
    assert_eq!(acc.customer_id, c);
    assert_eq!(acc.external_ref, "ACC-A1");
    assert_eq!(acc.mandate_status, "active");
    let owners = store.funding_accounts_by_refs(&["ACC-A1"]).await.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].customer_external_id, "C-A1");

    let expected = agreement("A1", c, f);
    let row = store.agreement(a).await.unwrap().expect("agreement row");
    assert_eq!(
        row,
        store.agreement_by_external_id("A1").await.unwrap().unwrap()
    );
    assert_eq!(row.principal_minor, 1_000_000);
    assert_eq!(row.total_interest_minor, 2_100);
    assert_eq!(row.total_fee_minor, 21);
    assert_eq!(row.total_minor, 1_002_121);
    assert_eq!(row.method.as_deref(), Some("equal-principal"));
    assert_eq!(row.terms_json, expected.terms_json);
    assert_eq!(row.status, "active");
    assert_eq!(row.content_hash, "h1");

    let lines = store.installments(a).await.unwrap();
    let got: Vec<Line> = lines
        .iter()
        .map(|i| {
            (
                i.seq,
                i.due_date.as_str(),
                i.principal_minor,
                i.interest_minor,
                i.fee_minor,
                i.total_minor,
                i.paid_minor,
                i.status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "2026-12-01", 333_334, 1_201, 7, 334_542, 0, "unpaid"),
            (2, "2027-01-01", 333_333, 899, 7, 334_239, 0, "unpaid"),
            (3, "2027-02-01", 333_333, 0, 7, 333_340, 0, "unpaid"),
        ]
    );
    let sum: i64 = lines.iter().map(|i| i.total_minor).sum();
    assert_eq!(sum, row.total_minor);

    let states = store.agreement_states(&["A1"]).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(
        (
            states[0].id,
            states[0].paid_installments,
            states[0].started_debits
        ),
        (a, 0, 0)
    );

    let events = store.events(Some(a)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "agreement_imported");
    let all: Vec<String> = store
        .events(None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        all,
        [
            "customer_imported",
            "funding_account_imported",
            "agreement_imported"
        ]
    );

    let listed = store
        .list_agreements(&AgreementFilter {
            status: Some("active".into()),
            customer_external_id: Some("C-A1".into()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].installment_count, 3);
    assert_eq!(listed[0].next_due_date.as_deref(), Some("2026-12-01"));
    assert_eq!(listed[0].paid_minor, 0);
    let none = store
        .list_agreements(&AgreementFilter {
            status: Some("completed".into()),
            customer_external_id: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    let detail = store
        .agreement_detail("A1")
        .await
        .unwrap()
        .expect("by external id");
    assert_eq!(detail.installments, lines);
    assert_eq!(detail.customer.id, c);
    assert_eq!(detail.funding_account.id, f);
    let by_id = store
        .agreement_detail(&a.to_string())
        .await
        .unwrap()
        .expect("by id");
    assert_eq!(by_id, detail);
    assert!(store.agreement_detail("nope").await.unwrap().is_none());
}
both_backends!(writes_read_back_exactly, super::writes_read_back_exactly);

async fn unique_ids_are_conflicts(db: TestDb) {
    let store = &db.store;
    let (c, f, _) = seed(store, "U1").await;
    let before = store.table_counts().await.unwrap();

    let err = store
        .insert_customer(&customer("C-U1"), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("C-U1")),
        "{err:?}"
    );
    let err = store
        .insert_funding_account(c, &account("ACC-U1"), NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // The message masks the account number.
    assert!(!err.to_string().contains("ACC-U1"), "{err}");
    let err = store
        .insert_agreement(&agreement("U1", c, f), NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("U1")),
        "{err:?}"
    );

    // A batch with one duplicate writes nothing at all, events included.
    let batch = vec![
        AgreementWrite::Create(agreement("U2", c, f)),
        AgreementWrite::Create(agreement("U1", c, f)),
    ];
    let err = store.write_agreements(&batch, NOW).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.table_counts().await.unwrap(), before);
}
both_backends!(unique_ids_are_conflicts, super::unique_ids_are_conflicts);

async fn events_are_append_only(db: TestDb) {
    let store = &db.store;
    store
        .append_event(&NewEvent {
            at_ms: NOW,
            kind: "test_event",
            agreement_id: None,
            installment_id: None,
            attempt_id: None,
            detail: serde_json::json!({"n": 1}),
        })
        .await
        .unwrap();
    let err = store
        .execute_admin("UPDATE events SET kind = 'rewritten'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = store.execute_admin("DELETE FROM events").await.unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let events = store.events(None).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "test_event");
    assert_eq!(events[0].detail, r#"{"n":1}"#);
}
both_backends!(events_are_append_only, super::events_are_append_only);

async fn check_constraints_hold(db: TestDb) {
    let store = &db.store;
    let (c, _, a) = seed(store, "K1").await;
    let first = store.installments(a).await.unwrap()[0].clone();

    // Paid never exceeds what is owed, and is never negative.
    let over = format!(
        "UPDATE installments SET paid_minor = total_minor + 1 WHERE id = {}",
        first.id
    );
    assert!(store.execute_admin(&over).await.is_err());
    let negative = format!(
        "UPDATE installments SET paid_minor = -1 WHERE id = {}",
        first.id
    );
    assert!(store.execute_admin(&negative).await.is_err());
    let exact = format!(
        "UPDATE installments SET paid_minor = total_minor WHERE id = {}",
        first.id
    );
    store
        .execute_admin(&exact)
        .await
        .expect("paying exactly is fine");
    // A total that is not principal + interest + fee.
    let skewed = format!(
        "UPDATE installments SET total_minor = total_minor + 1 WHERE id = {}",
        first.id
    );
    assert!(store.execute_admin(&skewed).await.is_err());
    assert_eq!(
        store.installments(a).await.unwrap()[0].paid_minor,
        first.total_minor
    );

    // Through the store API: a bad mandate status or a zero principal is an error, not a
    // panic, and nothing of the failed write remains.
    let before = store.table_counts().await.unwrap();
    let mut bad = account("ACC-K2");
    bad.mandate_status = "maybe".into();
    assert!(matches!(
        store.insert_funding_account(c, &bad, NOW).await,
        Err(StoreError::Db(_))
    ));
    let f = store
        .insert_funding_account(c, &account("ACC-K3"), NOW)
        .await
        .unwrap();
    let mut zero = agreement("K-zero", c, f);
    zero.principal_minor = 0;
    zero.installments[0].principal_minor = 0;
    zero.installments.truncate(1);
    assert!(matches!(
        store.insert_agreement(&zero, NOW).await,
        Err(StoreError::Db(_))
    ));
    let after = store.table_counts().await.unwrap();
    assert_eq!(after.agreements, before.agreements);
    assert_eq!(after.funding_accounts, before.funding_accounts + 1);
}
both_backends!(check_constraints_hold, super::check_constraints_hold);

/// A debit attempt row for `installment_id` in `state` (the debit module owns that SQL;
/// this is set-up only).
async fn add_attempt(store: &Store, agreement_id: i64, installment_id: i64, state: &str) {
    let sql = format!(
        "INSERT INTO debit_attempts (installment_id, agreement_id, attempt_no, idempotency_key, \
         scheduled_at_ms, amount_minor, currency, state, created_at_ms, updated_at_ms) \
         VALUES ({installment_id}, {agreement_id}, 1, 'key-{installment_id}-{state}', {NOW}, 1, 'CNY', \
         '{state}', {NOW}, {NOW})"
    );
    store
        .execute_admin(&sql)
        .await
        .expect("insert debit attempt");
}

async fn replacing_refuses_paid_or_debited_agreements(db: TestDb) {
    let store = &db.store;
    let (c, f, a) = seed(store, "R1").await;
    let lines = store.installments(a).await.unwrap();
    add_attempt(store, a, lines[0].id, "scheduled").await;
    add_reminder(store, a, lines[0].id, 7, "sent").await;
    add_reminder(store, a, lines[1].id, 7, "pending").await;

    let mut changed = agreement("R1", c, f);
    changed.content_hash = "h2".into();
    changed.installments[2].due_date = "2027-02-15".into();
    let replace = |expected: &str, agreement: NewAgreement| AgreementWrite::Replace {
        id: a,
        expected_hash: expected.into(),
        agreement,
    };

    // Against a stale hash: someone else changed it first.
    let err = store
        .write_agreements(&[replace("stale", changed.clone())], NOW)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    // Scheduled attempts and reminders do not block; they are removed for the planner
    // to plan again for the new schedule.
    let done = store
        .write_agreements(&[replace("h1", changed.clone())], NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        (
            done.replaced,
            done.installments,
            done.debit_attempts_removed,
            done.reminders_removed
        ),
        (1, 3, 1, 2)
    );
    let counts = store.table_counts().await.unwrap();
    assert_eq!((counts.debit_attempts, counts.reminders), (0, 0));
    let lines = store.installments(a).await.unwrap();
    assert_eq!(lines[2].due_date, "2027-02-15");
    let row = store.agreement(a).await.unwrap().unwrap();
    assert_eq!(
        (row.content_hash.as_str(), row.updated_at_ms),
        ("h2", NOW + 1)
    );
    let kinds: Vec<String> = store
        .events(Some(a))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["agreement_imported", "agreement_updated"]);

    // A started debit blocks.
    add_attempt(store, a, lines[1].id, "claimed").await;
    let mut again = changed.clone();
    again.content_hash = "h3".into();
    let before = store.table_counts().await.unwrap();
    let err = store
        .write_agreements(&[replace("h2", again.clone())], NOW)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("debit")),
        "{err:?}"
    );
    assert_eq!(store.table_counts().await.unwrap(), before);

    // So does money received.
    let (c2, f2, a2) = seed(store, "R2").await;
    let paid = store.installments(a2).await.unwrap()[0].id;
    store
        .execute_admin(&format!(
            "UPDATE installments SET paid_minor = 100 WHERE id = {paid}"
        ))
        .await
        .unwrap();
    let states = store.agreement_states(&["R2"]).await.unwrap();
    assert_eq!(states[0].paid_installments, 1);
    let mut changed = agreement("R2", c2, f2);
    changed.content_hash = "h9".into();
    let err = store
        .write_agreements(
            &[AgreementWrite::Replace {
                id: a2,
                expected_hash: "h1".into(),
                agreement: changed,
            }],
            NOW,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("money received")),
        "{err:?}"
    );

    // And a reminder being sent at this very moment (until it is done).
    let (c3, f3, a3) = seed(store, "R3").await;
    let first = store.installments(a3).await.unwrap()[0].id;
    add_reminder(store, a3, first, 3, "sending").await;
    let states = store.agreement_states(&["R3"]).await.unwrap();
    assert_eq!(states[0].reminders_sending, 1);
    let mut changed = agreement("R3", c3, f3);
    changed.content_hash = "h8".into();
    let err = store
        .write_agreements(
            &[AgreementWrite::Replace {
                id: a3,
                expected_hash: "h1".into(),
                agreement: changed,
            }],
            NOW,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("reminder")),
        "{err:?}"
    );
}

/// Late fees and payments recorded by other means are money facts too: no replacement.
async fn charges_and_payments_block_replacement(db: TestDb) {
    let store = &db.store;
    for (ext, setup, needle) in [
        (
            "P1",
            "INSERT INTO charges (installment_id, agreement_id, kind, accrual_key, amount_minor, \
             currency, created_at_ms, updated_at_ms) VALUES ({i}, {a}, 'late_fee', 5, 2500, 'CNY', 0, 0)",
            "1 charge(s) raised",
        ),
        (
            "P2",
            "INSERT INTO payments (agreement_id, reference, amount_minor, currency, received_at_ms, \
             created_at_ms) VALUES ({a}, 'TRANSFER-{a}', 2500, 'CNY', 0, 0)",
            "1 payment(s) recorded",
        ),
    ] {
        let (c, f, a) = seed(store, ext).await;
        let i = store.installments(a).await.unwrap()[0].id;
        let sql = setup
            .replace("{i}", &i.to_string())
            .replace("{a}", &a.to_string());
        store.execute_admin(&sql).await.expect("set-up row");
        let state = store.agreement_states(&[ext]).await.unwrap().remove(0);
        assert!(
            state.replace_refusal().is_some_and(|r| r.contains(needle)),
            "{state:?}"
        );
        let mut changed = agreement(ext, c, f);
        changed.content_hash = "h7".into();
        let err = store
            .write_agreements(
                &[AgreementWrite::Replace {
                    id: a,
                    expected_hash: "h1".into(),
                    agreement: changed,
                }],
                NOW,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains(needle)),
            "{err:?}"
        );
    }
}
both_backends!(
    charges_and_payments_block_replacement,
    super::charges_and_payments_block_replacement
);

/// A reminder row (set-up only: the reminders module owns that SQL).
async fn add_reminder(
    store: &Store,
    agreement_id: i64,
    installment_id: i64,
    offset: i64,
    state: &str,
) {
    let sql = format!(
        "INSERT INTO reminders (installment_id, agreement_id, kind, offset_key, scheduled_at_ms, \
         state, created_at_ms, updated_at_ms) \
         VALUES ({installment_id}, {agreement_id}, 'upcoming', {offset}, {NOW}, '{state}', {NOW}, {NOW})"
    );
    store.execute_admin(&sql).await.expect("insert reminder");
}
both_backends!(
    replacing_refuses_paid_or_debited_agreements,
    super::replacing_refuses_paid_or_debited_agreements
);

/// `/metrics`' database gauges: the attempts in open states are read on every scrape;
/// the tallies over all history (finished states, amounts) come from the last background
/// read, with its age, and a new read is started once they are due one.
async fn metrics_read_open_work_now_and_tallies_in_the_background(db: TestDb) {
    use repayd::metrics::{DatabaseGauges, Metrics};
    use std::sync::Arc;
    use std::time::Duration;
    let store = &db.store;
    let (_, _, a) = seed(store, "M1").await;
    let (_, _, b) = seed(store, "M2").await;
    let mut lines: Vec<(i64, i64)> = Vec::new();
    for agreement in [a, b] {
        for line in store.installments(agreement).await.unwrap() {
            lines.push((agreement, line.id));
        }
    }
    let add = |n: usize, state: &'static str| add_attempt(store, lines[n].0, lines[n].1, state);
    add(0, "succeeded").await;
    add(1, "scheduled").await;
    let count = |g: &DatabaseGauges, state: &str| {
        g.attempts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };
    let now = chrono::Utc::now();
    let wait = Duration::from_secs(3);

    // Tallies are read again only after 15 s (the default): the second scrape sees the
    // new scheduled attempt at once and the finished one as of the first read.
    let metrics = Arc::new(Metrics::new());
    let first = metrics.database_gauges(store, now, wait).await.unwrap();
    assert_eq!(
        (count(&first, "succeeded"), count(&first, "scheduled")),
        (1, 1)
    );
    assert!(
        first.tallies_age.is_some(),
        "the first scrape waits for its tallies"
    );
    add(2, "succeeded").await;
    add(3, "scheduled").await;
    let second = metrics.database_gauges(store, now, wait).await.unwrap();
    assert_eq!(
        (count(&second, "succeeded"), count(&second, "scheduled")),
        (1, 2)
    );
    assert!(second.tallies_age.unwrap() < Duration::from_secs(15));

    // Once due again, a scrape starts the read and a later one has it.
    let metrics = Arc::new(Metrics::new().with_tally_min_interval(Duration::ZERO));
    metrics.database_gauges(store, now, wait).await.unwrap();
    add(4, "succeeded").await;
    let mut seen = 0;
    for _ in 0..100 {
        let g = metrics.database_gauges(store, now, wait).await.unwrap();
        seen = count(&g, "succeeded");
        if seen == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 3, "the background read never brought the new tally");
}
both_backends!(
    metrics_read_open_work_now_and_tallies_in_the_background,
    super::metrics_read_open_work_now_and_tallies_in_the_background
);
