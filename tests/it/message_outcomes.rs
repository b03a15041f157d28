//! Message outcomes under load: the sender carries many customers at once and records
//! each email's outcomes together (on SQLite in the writer's group commit). Proved here
//! against real databases and a real SMTP listener on loopback: every message is
//! recorded once, with one event, and reaches its customer once; the outcomes of one
//! email are written all or nothing; concurrent outcomes share commits on SQLite; an
//! outcome that cannot be written leaves its message `sending` under its lease, so it is
//! sent again (once, with the same Message-ID) only after the lease ends, as before; and
//! the inboxes are the same whether one customer or sixteen are carried at a time. On
//! PostgreSQL the messages go out while every connection of the main pool is held.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use crate::reminders::{customer, policy, setup, setup_with_bank_on, utc};
use repayd::clock::{ManualClock, to_epoch_ms};
use repayd::store::agreements::{NewAgreement, NewInstallment};
use repayd::store::reminders::{ReminderChange, ReminderOutcome, ReminderRow};
use repayd::store::{Backend, Lane, NewEvent, Store};
use std::collections::{BTreeMap, HashMap};
use tokio_util::sync::CancellationToken;

/// A fresh database on the same backend as `db`.
async fn another(db: &TestDb) -> TestDb {
    match db.store.backend() {
        Backend::Sqlite => TestDb::sqlite().await,
        Backend::Postgres => TestDb::postgres().await.expect("PostgreSQL is configured"),
    }
}

/// `n` customers, each with an agreement of one installment due on 20 January 2027 (in
/// English and Chinese, UTC and Shanghai), every fourth with a second agreement due the
/// same day on the same account (their reminders go out merged in one email). Returns
/// the agreement ids.
async fn portfolio(store: &Store, n: usize) -> Vec<i64> {
    let mut agreements = Vec::new();
    for k in 0..n {
        let id = format!("M{k:03}");
        let (locale, tz) = if k % 2 == 0 {
            ("en", "UTC")
        } else {
            ("zh-CN", "Asia/Shanghai")
        };
        let (a, _) = customer(
            store,
            &id,
            locale,
            tz,
            "EUR",
            &format!("ACC-{id}"),
            "2027-01-20",
            100_00 + k as i64,
        )
        .await;
        agreements.push(a);
        if k % 4 == 0 {
            let first = store.agreement_detail(&id).await.unwrap().unwrap();
            let b = store
                .insert_agreement(
                    &NewAgreement {
                        external_id: format!("{id}-B"),
                        customer_id: first.customer.id,
                        funding_account_id: first.funding_account.id,
                        currency: "EUR".into(),
                        principal_minor: 50_00,
                        total_interest_minor: 0,
                        total_fee_minor: 0,
                        method: None,
                        terms_json: None,
                        content_hash: format!("h-{id}-B"),
                        installments: vec![NewInstallment {
                            seq: 1,
                            due_date: "2027-01-20".into(),
                            principal_minor: 50_00,
                            interest_minor: 0,
                            fee_minor: 0,
                        }],
                    },
                    0,
                )
                .await
                .unwrap();
            agreements.push(b);
        }
    }
    agreements
}

async fn reminders_of(store: &Store, agreements: &[i64]) -> Vec<ReminderRow> {
    let mut rows = Vec::new();
    for a in agreements {
        rows.extend(store.reminders_for_agreement(*a).await.unwrap());
    }
    rows
}

/// How many `kind` events each reminder has.
async fn events_per_reminder(
    store: &Store,
    agreements: &[i64],
    kind: &str,
) -> HashMap<(i64, i64), usize> {
    let mut n = HashMap::new();
    for a in agreements {
        for ev in store.events(Some(*a)).await.unwrap() {
            if ev.kind == kind {
                let detail: serde_json::Value = serde_json::from_str(&ev.detail).unwrap();
                let offset = detail["offset"].as_i64().unwrap_or(-1);
                *n.entry((ev.installment_id.unwrap(), offset)).or_insert(0) += 1;
            }
        }
    }
    n
}

/// Every email as its customer reads it: recipient, then subject and text, in order of
/// arrival per recipient (Message-IDs aside: they carry the database's deployment id).
fn inbox(smtp: &SmtpListener) -> BTreeMap<String, Vec<(String, String)>> {
    let mut by_rcpt: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for m in smtp.messages() {
        let p = parse(&m.data);
        by_rcpt
            .entry(m.to.join(","))
            .or_default()
            .push((p.subject(), p.part("text/plain").to_string()));
    }
    by_rcpt
}

/// Plans `n` customers' reminders, then sends the 7-day ones due at 09:00 on 13 January
/// 2027 with `in_flight` customers at a time. Returns the agreements and the listener.
async fn send_due_reminders(
    db: &TestDb,
    n: usize,
    in_flight: u32,
) -> (
    Vec<i64>,
    SmtpListener,
    repayd::engine::reminders::ReminderReport,
) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, _bank) = setup(db, &clock, smtp.mailer("[10]"), "w").await;
    let mut p = policy();
    p.reminders.max_in_flight = in_flight;
    engine.set_policy(p);
    let agreements = portfolio(&db.store, n).await;
    engine.plan().await.unwrap();
    clock.set(utc(2027, 1, 13, 9, 0));
    let report = engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    (agreements, smtp, report)
}

async fn many_customers_at_once_each_message_recorded_and_received_once(db: TestDb) {
    const N: usize = 40;
    // The same portfolio sent one customer at a time (as the sender did before it
    // carried several), and sixteen at a time, with claims of 20 rows (policy()): rows
    // of a customer whose task is running wait for it.
    let one_db = another(&db).await;
    let (_, one_smtp, _) = send_due_reminders(&one_db, N, 1).await;
    let (agreements, smtp, report) = send_due_reminders(&db, N, 16).await;
    let reminders_due = N + N / 4;

    // `sent` counts emails: the reminders merged into one count once.
    assert_eq!(report.sent as usize, N, "{report:?}");
    assert_eq!(report.claimed as usize, reminders_due, "{report:?}");
    assert_eq!(report.cancelled + report.failed + report.deferred, 0);
    // Each customer got exactly one email (the two reminders of a customer with two
    // agreements merged), the same emails as one at a time.
    let emails = smtp.messages();
    assert_eq!(emails.len(), N);
    let got = inbox(&smtp);
    assert_eq!(got.len(), N, "one recipient per customer");
    assert!(got.values().all(|v| v.len() == 1), "one email each");
    assert_eq!(
        got,
        inbox(&one_smtp),
        "the same inboxes as one customer at a time"
    );

    // Every 7-day reminder is recorded sent once, with one event, under the Message-ID
    // of the email that carried it; the Message-IDs are distinct per email.
    let rows = reminders_of(&db.store, &agreements).await;
    let seven: Vec<&ReminderRow> = rows.iter().filter(|r| r.offset_key == 7).collect();
    assert_eq!(seven.len(), reminders_due);
    let mut ids_in_inbox: HashMap<String, String> = HashMap::new();
    for m in &emails {
        let id = parse(&m.data).header("Message-ID").unwrap();
        let id = id.trim_matches(|c| c == '<' || c == '>').to_string();
        assert!(
            ids_in_inbox.insert(id.clone(), m.to.join(",")).is_none(),
            "Message-ID {id} twice"
        );
    }
    for r in &seven {
        assert_eq!(r.state, "sent", "{r:?}");
        assert_eq!(r.tries, 1, "{r:?}");
        let id = r.message_id.as_deref().unwrap();
        assert!(ids_in_inbox.contains_key(id), "{id} was not received");
    }
    let events = events_per_reminder(&db.store, &agreements, "reminder_sent").await;
    assert_eq!(events.len(), reminders_due);
    assert!(events.values().all(|n| *n == 1), "{events:?}");
    // The later reminders are not due yet and stay pending.
    assert!(
        rows.iter()
            .filter(|r| r.offset_key != 7)
            .all(|r| r.state == "pending")
    );

    // Running again sends nothing more.
    let again = {
        let clock = ManualClock::new(utc(2027, 1, 13, 9, 5));
        let (engine, _) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
        engine
            .run_reminders(&CancellationToken::new())
            .await
            .unwrap()
    };
    assert_eq!(again.sent, 0);
    assert_eq!(smtp.messages().len(), N);
}
both_backends!(
    many_customers_at_once_each_message_recorded_and_received_once,
    super::many_customers_at_once_each_message_recorded_and_received_once
);

/// SQL that makes recording reminder `id` as sent fail (a trigger that raises), and
/// the SQL that removes it.
fn failing_sent_update(backend: Backend, id: i64) -> (Vec<String>, Vec<String>) {
    match backend {
        Backend::Sqlite => (
            vec![format!(
                "CREATE TRIGGER test_fail_sent BEFORE UPDATE OF state ON reminders \
                 WHEN NEW.state = 'sent' AND OLD.id = {id} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )],
            vec!["DROP TRIGGER test_fail_sent".into()],
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION test_fail_sent() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"
                    .into(),
                format!(
                    "CREATE TRIGGER test_fail_sent BEFORE UPDATE ON reminders FOR EACH ROW \
                     WHEN (NEW.state = 'sent' AND OLD.id = {id}) \
                     EXECUTE FUNCTION test_fail_sent()"
                ),
            ],
            vec![
                "DROP TRIGGER test_fail_sent ON reminders".into(),
                "DROP FUNCTION test_fail_sent()".into(),
            ],
        ),
    }
}

async fn run_sql(store: &Store, statements: &[String]) {
    for sql in statements {
        store.execute_admin(sql).await.unwrap();
    }
}

fn sent(r: &ReminderRow, at_ms: i64) -> ReminderOutcome {
    ReminderOutcome {
        reminder_id: r.id,
        change: ReminderChange {
            state: "sent",
            message_id: Some(format!("test-{}@example.com", r.id)),
            sent_at_ms: Some(at_ms),
            bump_tries: true,
            release_lease: true,
            ..Default::default()
        },
        event: Some(NewEvent {
            at_ms,
            kind: "reminder_sent",
            agreement_id: Some(r.agreement_id),
            installment_id: Some(r.installment_id),
            attempt_id: None,
            detail: serde_json::json!({"offset": r.offset_key}),
        }),
    }
}

async fn the_outcomes_of_one_email_are_written_together(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, _bank) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
    let agreements = portfolio(&db.store, 40).await;
    engine.plan().await.unwrap();
    let now = utc(2027, 1, 13, 9, 0);
    let now_ms = to_epoch_ms(now);
    let claimed = db
        .store
        .claim_due_reminders("w", now_ms, now_ms + 300_000, 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 50);
    let state = |id: i64| {
        let store = db.store.clone();
        let agreements = agreements.clone();
        async move {
            reminders_of(&store, &agreements)
                .await
                .into_iter()
                .find(|r| r.id == id)
                .unwrap()
        }
    };

    // A write that fails inside the set (a trigger raises on the second row): nothing of
    // the set is written, both rows stay `sending` under their lease, no event.
    let (a, b, c) = (&claimed[0], &claimed[1], &claimed[2]);
    let (fail, unfail) = failing_sent_update(db.store.backend(), b.id);
    run_sql(&db.store, &fail).await;
    let err = db
        .store
        .apply_reminder_changes("w", vec![sent(a, now_ms), sent(b, now_ms)], now_ms)
        .await;
    assert!(err.is_err(), "{err:?}");
    for id in [a.id, b.id] {
        let r = state(id).await;
        assert_eq!((r.state.as_str(), r.tries), ("sending", 0), "{r:?}");
        assert_eq!(r.lease_owner.as_deref(), Some("w"));
    }
    assert!(
        events_per_reminder(&db.store, &agreements, "reminder_sent")
            .await
            .is_empty()
    );
    run_sql(&db.store, &unfail).await;

    // A row no longer this worker's is left alone; the others of the set are written,
    // each with its one event.
    db.store
        .apply_reminder_change(
            c.id,
            "w",
            &ReminderChange {
                state: "cancelled",
                cancel_reason: Some("test".into()),
                release_lease: true,
                ..Default::default()
            },
            None,
            now_ms,
        )
        .await
        .unwrap();
    let applied = db
        .store
        .apply_reminder_changes(
            "w",
            vec![sent(a, now_ms), sent(c, now_ms), sent(b, now_ms)],
            now_ms,
        )
        .await
        .unwrap();
    assert_eq!(applied, vec![true, false, true]);
    assert_eq!(state(a.id).await.state, "sent");
    assert_eq!(state(b.id).await.state, "sent");
    assert_eq!(state(c.id).await.state, "cancelled");
    let events = events_per_reminder(&db.store, &agreements, "reminder_sent").await;
    assert_eq!(events.len(), 2);
    assert!(events.values().all(|n| *n == 1));
    // Fenced: a single change on a row no longer `sending` says so.
    assert!(
        db.store
            .apply_reminder_change(a.id, "w", &sent(a, now_ms).change, None, now_ms)
            .await
            .is_err()
    );

    // The rest, each email's outcome written by a task of its own, all at once: every
    // one applies once; on SQLite they share group commits (fewer commits than writes).
    let before = db.store.write_groups();
    let mut tasks = tokio::task::JoinSet::new();
    for r in &claimed[3..] {
        let (store, r) = (db.store.clone(), r.clone());
        tasks.spawn(async move {
            store
                .apply_reminder_changes("w", vec![sent(&r, now_ms)], now_ms)
                .await
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap().unwrap(), vec![true]);
    }
    let rows = reminders_of(&db.store, &agreements).await;
    assert_eq!(rows.iter().filter(|r| r.state == "sent").count(), 49);
    let events = events_per_reminder(&db.store, &agreements, "reminder_sent").await;
    assert_eq!(events.len(), 49);
    assert!(events.values().all(|n| *n == 1));
    match (before, db.store.write_groups()) {
        (Some((g0, c0)), Some((g1, c1))) => {
            assert_eq!(c1 - c0, 47, "every outcome in a committed group");
            assert!(
                g1 - g0 < 47,
                "47 concurrent outcomes in {} commits",
                g1 - g0
            );
        }
        (None, None) => assert_eq!(db.store.backend(), Backend::Postgres),
        other => panic!("{other:?}"),
    }
}
both_backends!(
    the_outcomes_of_one_email_are_written_together,
    super::the_outcomes_of_one_email_are_written_together
);

async fn an_outcome_that_cannot_be_written_is_retried_after_the_lease_not_before(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, _bank) = setup(&db, &clock, smtp.mailer("[10]"), "w").await;
    let agreements = portfolio(&db.store, 6).await;
    engine.plan().await.unwrap();
    // Customer M001 (one agreement, one reminder due): recording its email as sent
    // fails, after the relay accepted it.
    let victim = reminders_of(&db.store, &agreements[2..3])
        .await
        .into_iter()
        .find(|r| r.offset_key == 7)
        .unwrap();
    let victim_email = "m001@example.com".to_string();
    let (fail, unfail) = failing_sent_update(db.store.backend(), victim.id);
    run_sql(&db.store, &fail).await;
    clock.set(utc(2027, 1, 13, 9, 0));
    let token = CancellationToken::new();
    let report = engine.run_reminders(&token).await.unwrap();
    // Six customers' emails went out; five are recorded (the other customers' outcomes
    // in the same groups committed), with seven of the eight reminders.
    assert_eq!(smtp.messages().len(), 6);
    assert_eq!(report.sent, 5, "{report:?}");
    let recorded = reminders_of(&db.store, &agreements).await;
    assert_eq!(recorded.iter().filter(|r| r.state == "sent").count(), 7);
    let r = reminders_of(&db.store, &agreements[2..3])
        .await
        .into_iter()
        .find(|r| r.id == victim.id)
        .unwrap();
    assert_eq!(r.state, "sending", "left under its lease: {r:?}");
    assert_eq!(r.tries, 0);
    assert!(r.message_id.is_none());

    // Not sent again while the lease holds, whatever the sender does meanwhile.
    clock.set(utc(2027, 1, 13, 9, 4));
    engine.run_reminders(&token).await.unwrap();
    assert_eq!(smtp.messages().len(), 6);

    // Once the lease (300 s) has ended it is sent again, once, with the same Message-ID
    // (the one repeat a crash between the relay's accept and the commit may cause), and
    // recorded once; nobody else hears twice.
    run_sql(&db.store, &unfail).await;
    clock.set(utc(2027, 1, 13, 9, 6));
    let report = engine.run_reminders(&token).await.unwrap();
    assert_eq!(report.sent, 1, "{report:?}");
    engine.run_reminders(&token).await.unwrap();
    let emails = smtp.messages();
    assert_eq!(emails.len(), 7);
    let to_victim: Vec<String> = emails
        .iter()
        .filter(|m| m.to.join(",") == victim_email)
        .map(|m| parse(&m.data).header("Message-ID").unwrap())
        .collect();
    assert_eq!(to_victim.len(), 2, "{to_victim:?}");
    assert_eq!(to_victim[0], to_victim[1], "the same Message-ID");
    let per_rcpt = inbox(&smtp);
    assert!(
        per_rcpt
            .iter()
            .all(|(to, v)| v.len() == if *to == victim_email { 2 } else { 1 })
    );
    let r = reminders_of(&db.store, &agreements[2..3])
        .await
        .into_iter()
        .find(|r| r.id == victim.id)
        .unwrap();
    assert_eq!(r.state, "sent");
    assert_eq!(
        r.message_id.as_deref().unwrap(),
        to_victim[0].trim_matches(|c| c == '<' || c == '>')
    );
    let events = events_per_reminder(&db.store, &agreements, "reminder_sent").await;
    assert_eq!(events.len(), 8);
    assert!(events.values().all(|n| *n == 1), "{events:?}");
}
both_backends!(
    an_outcome_that_cannot_be_written_is_retried_after_the_lease_not_before,
    super::an_outcome_that_cannot_be_written_is_retried_after_the_lease_not_before
);

/// On PostgreSQL the message loop and the sandbox bank have connections of their own
/// (`Store::lane`, as `repayd run` sets them up). Every connection of the main pool is
/// held here by a statement waiting for a lock, as a due day's debit tasks hold them with
/// their transactions; the due messages still go out, all of them, each saying that the
/// account has the money (the bank answered its funds check), while those statements
/// wait. With one pool for both they would queue behind the held connections until the
/// pool's acquire timeout failed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_messages_go_out_while_every_main_connection_is_held() {
    use sqlx::Connection;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    const N: usize = 12;
    // TestDb::postgres opens the main pool with 8 connections.
    const MAIN_POOL: usize = 8;
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 0, 0));
    let (engine, _bank) = setup_with_bank_on(
        &db,
        db.store.lane(Lane::SandboxBank),
        &clock,
        smtp.mailer("[10]"),
        "w",
    )
    .await;
    let agreements = portfolio(&db.store, N).await;
    engine.plan().await.unwrap();
    clock.set(utc(2027, 1, 13, 9, 0));

    // A lock on a table the message loop never reads, on a connection of the test's own,
    // and every connection of the main pool waiting for it.
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let held: Vec<_> = (0..MAIN_POOL)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move {
                store
                    .execute_admin("SELECT count(*) FROM _sqlx_migrations")
                    .await
            })
        })
        .collect();
    let waiting_sql = "SELECT count(*) FROM pg_locks \
                       WHERE relation = '_sqlx_migrations'::regclass AND NOT granted";
    let mut waiting = 0;
    for _ in 0..200 {
        waiting = sqlx::query_scalar::<_, i64>(waiting_sql)
            .fetch_one(&mut locker)
            .await
            .unwrap();
        if waiting as usize == MAIN_POOL {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(waiting as usize, MAIN_POOL, "the main pool is not all held");

    let report = engine
        .run_reminders(&CancellationToken::new())
        .await
        .unwrap();
    let reminders_due = N + N / 4;
    assert_eq!(report.sent as usize, N, "{report:?}");
    assert_eq!(report.claimed as usize, reminders_due, "{report:?}");
    assert_eq!(report.cancelled + report.failed + report.deferred, 0);
    assert_eq!(smtp.messages().len(), N);
    let got = inbox(&smtp);
    assert_eq!(got.len(), N, "one email to each customer");
    for (to, emails) in &got {
        let text = &emails[0].1;
        assert!(
            text.contains("has enough for") || text.contains("余额充足"),
            "{to}: {text}"
        );
    }
    // The main pool's statements waited all along: the messages did not take their place.
    assert!(held.iter().all(|h| !h.is_finished()));
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    for h in held {
        h.await.unwrap().unwrap();
    }
    // Read on the main pool, so only once the lock is gone.
    let sent = reminders_of(&db.store, &agreements)
        .await
        .into_iter()
        .filter(|r| r.offset_key == 7 && r.state == "sent")
        .count();
    assert_eq!(sent, reminders_due);
}
