//! The customers' inboxes over 120 days, read as the customers would read them.
//!
//! The engine runs on a controlled clock (planner and overdue assessment every hour, as
//! the daemon's cron would wake them; debits, emails and alerts whenever due) against the
//! sandbox bank and a real SMTP listener on loopback, through a day with history: five
//! days of downtime, an SMTP outage that ends at 23:00 in Los Angeles, a mandate revoked
//! between two reminders. Six personas:
//!
//! - A: an account that is always short (Shanghai, zh-CN);
//! - B: a due date inside the downtime (New York, en-US);
//! - C: an agreement imported 40 days past due, topped up later (London, en-GB);
//! - D: a mandate revoked between the 7-day and the 3-day reminder (Shanghai, en);
//! - E: a due date inside the SMTP outage (Los Angeles, en-US);
//! - F: three agreements due on the same days (Shanghai, zh-CN).
//!
//! Each email is recorded with what the ledger said when it left (read independently of
//! the engine's own queries); the invariants are then checked on every one of them.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::{SmtpListener, parse};
use crate::overdue::{setup, utc};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use repayd::clock::{Clock, ManualClock, from_epoch_ms};
use repayd::domain::worktime::{self, QuietHours};
use repayd::domain::{Currency, Money};
use repayd::engine::Engine;
use repayd::engine::operator::{Actor, revoke_mandate};
use repayd::engine::policy::{EnginePolicy, RetryPolicy};
use repayd::mail::{Locale, MailError, Mailer, OutgoingEmail};
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Who owns an installment, for reading an email back.
#[derive(Debug, Clone)]
struct Owner {
    customer: String,
    agreement_id: i64,
    tz: Tz,
    locale: Locale,
    currency: Currency,
    account: String,
}

/// What the ledger said when an email left, read with the store's plain row queries.
#[derive(Debug, Clone)]
struct Snapshot {
    /// Unpaid amount of the installment the email is about.
    unpaid_this: i64,
    /// Scheduled debit attempts of the customer's agreements: (installment, at).
    planned: Vec<(i64, DateTime<Utc>)>,
    mandate_status: String,
    due: NaiveDate,
    /// Every message in the email (several when merged): (kind, total to be up to date,
    /// whether the ledger has arrears or charges beyond the installment).
    parts: Vec<(String, i64, bool)>,
}

#[derive(Debug, Clone)]
struct Delivered {
    at: DateTime<Utc>,
    message_id: String,
    kind: String,
    installment_id: i64,
    owner: Owner,
    subject: String,
    text: String,
    /// Several messages merged into one email.
    merged: bool,
    snapshot: Snapshot,
}

/// Forwards to the real SMTP listener, fails with a 421 during the outage, and records
/// each delivered email with a snapshot of the ledger.
#[derive(Debug)]
struct InboxMailer {
    inner: Arc<dyn Mailer>,
    store: Store,
    clock: ManualClock,
    outage: (DateTime<Utc>, DateTime<Utc>),
    owners: Mutex<HashMap<i64, Owner>>,
    log: Mutex<Vec<Delivered>>,
}

#[async_trait::async_trait]
impl Mailer for InboxMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let now = self.clock.now();
        if now >= self.outage.0 && now < self.outage.1 {
            return Err(MailError::Transient(
                "421 4.3.2 service not available (test outage)".into(),
            ));
        }
        // repayd.<deployment>.i<installment>.<kind>.<n>@domain
        let local_part = email.message_id.split('@').next().unwrap();
        let parts: Vec<&str> = local_part.split('.').collect();
        assert_eq!(parts[0], "repayd");
        assert_eq!(parts.len(), 5, "{}", email.message_id);
        let installment_id: i64 = parts[2].trim_start_matches('i').parse().unwrap();
        let kind = parts[3].to_string();
        let (owner, agreements) = {
            let owners = self.owners.lock().unwrap();
            let owner = owners[&installment_id].clone();
            let mut agreements: Vec<i64> = owners
                .values()
                .filter(|o| o.customer == owner.customer)
                .map(|o| o.agreement_id)
                .collect();
            agreements.sort();
            agreements.dedup();
            (owner, agreements)
        };
        let snapshot = snapshot(&self.store, &owner, &agreements, installment_id, now).await;
        self.inner.send(email).await?;
        self.log.lock().unwrap().push(Delivered {
            at: now,
            message_id: email.message_id.clone(),
            kind,
            installment_id,
            owner,
            subject: email.subject.clone(),
            text: email.text.clone(),
            merged: email.text.contains("updates about your payments")
                || email.text.contains("条还款通知"),
            snapshot,
        });
        Ok(())
    }
}

async fn snapshot(
    store: &Store,
    owner: &Owner,
    agreements: &[i64],
    installment_id: i64,
    now: DateTime<Utc>,
) -> Snapshot {
    let today = worktime::local_date(now, owner.tz);
    let installments = store.installments(owner.agreement_id).await.unwrap();
    let this = installments
        .iter()
        .find(|i| i.id == installment_id)
        .unwrap();
    let mut planned = Vec::new();
    for agreement_id in agreements {
        planned.extend(
            store
                .attempts_for_agreement(*agreement_id)
                .await
                .unwrap()
                .iter()
                .filter(|a| a.state == "scheduled")
                .map(|a| (a.installment_id, from_epoch_ms(a.scheduled_at_ms))),
        );
    }
    // The rows being sent right now (one, or several merged), each with its own ledger.
    let mut parts = Vec::new();
    for agreement_id in agreements {
        let installments = store.installments(*agreement_id).await.unwrap();
        let open_charges: i64 = store
            .charges_for_agreement(*agreement_id)
            .await
            .unwrap()
            .iter()
            .filter(|c| c.status == "open")
            .map(|c| c.amount_minor - c.paid_minor)
            .sum();
        for r in store.reminders_for_agreement(*agreement_id).await.unwrap() {
            if r.state != "sending" {
                continue;
            }
            let this = installments
                .iter()
                .find(|i| i.id == r.installment_id)
                .unwrap();
            let others: i64 = installments
                .iter()
                .filter(|i| i.id != r.installment_id && i.status == "unpaid")
                .filter(|i| NaiveDate::parse_from_str(&i.due_date, "%Y-%m-%d").unwrap() < today)
                .map(|i| i.total_minor - i.paid_minor)
                .sum();
            parts.push((
                r.kind.clone(),
                this.total_minor - this.paid_minor + others + open_charges,
                others > 0 || open_charges > 0,
            ));
        }
    }
    let mandate_status = store
        .funding_accounts_by_refs(&[owner.account.as_str()])
        .await
        .unwrap()
        .remove(0)
        .mandate_status;
    Snapshot {
        unpaid_this: this.total_minor - this.paid_minor,
        planned,
        mandate_status,
        due: NaiveDate::parse_from_str(&this.due_date, "%Y-%m-%d").unwrap(),
        parts,
    }
}

/// The daemon's defaults: reminders 7, 3 and 1 days before at 09:00, debits at 06:00,
/// retries 1, 3 and 5 days after a short balance (4 attempts), quiet hours 21:00-08:00,
/// at most 3 emails a customer a day; overdue rules as in the overdue tests (grace 3
/// days, buckets, a 25.00 late fee, credit warning 10 days before day 90).
fn policy() -> EnginePolicy {
    let mut p = crate::overdue::policy(None, None);
    p.debit.key_prefix = "inbox".into();
    p.retry = RetryPolicy {
        max_attempts: 4,
        insufficient_funds_days: vec![1, 3, 5],
        soft_decline_days: vec![1, 3],
        technical_backoff: [5, 15, 60, 240].map(Duration::minutes).to_vec(),
        min_spacing_days: 1,
        payday: Default::default(),
    };
    p.reminders.offsets_days = vec![7, 3, 1];
    p.reminders.quiet = QuietHours::parse("21:00", "08:00").unwrap();
    p.reminders.max_per_customer_per_day = 3;
    p
}

/// One customer with `count` agreements of monthly installments of `amount` minor units.
#[allow(clippy::too_many_arguments)] // reads as a table row at each call site
async fn persona(
    store: &Store,
    mailer: &InboxMailer,
    id: &str,
    locale: &str,
    tz: &str,
    currency: &str,
    account: &str,
    dues: &[&str],
    amount: i64,
    count: usize,
) -> Vec<(i64, Vec<i64>)> {
    let c = store
        .insert_customer(
            &NewCustomer {
                external_id: format!("C-{id}"),
                name: format!("Customer {id}"),
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
    let mut out = Vec::new();
    for k in 0..count {
        let n = dues.len() as i64;
        let external_id = format!("AGR-{id}-{k}");
        let a = store
            .insert_agreement(
                &NewAgreement {
                    external_id: external_id.clone(),
                    customer_id: c,
                    funding_account_id: f,
                    currency: currency.into(),
                    principal_minor: amount * n,
                    total_interest_minor: 0,
                    total_fee_minor: 0,
                    method: None,
                    terms_json: None,
                    content_hash: format!("h-{external_id}"),
                    installments: dues
                        .iter()
                        .enumerate()
                        .map(|(i, due)| NewInstallment {
                            seq: i as i64 + 1,
                            due_date: (*due).into(),
                            principal_minor: amount,
                            interest_minor: 0,
                            fee_minor: 0,
                        })
                        .collect(),
                },
                0,
            )
            .await
            .unwrap();
        let ids: Vec<i64> = store
            .installments(a)
            .await
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect();
        let owner = Owner {
            customer: id.into(),
            agreement_id: a,
            tz: tz.parse().unwrap(),
            locale: Locale::from_tag(locale),
            currency: Currency::parse(currency).unwrap(),
            account: account.into(),
        };
        for i in &ids {
            mailer.owners.lock().unwrap().insert(*i, owner.clone());
        }
        out.push((a, ids));
    }
    out
}

fn at_local(date: &str, h: u32, min: u32, tz: Tz) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    tz.from_local_datetime(&d.and_hms_opt(h, min, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// Runs the engine from the clock's time to `until`: the planner and the overdue
/// assessment every hour, due work at every stop; nothing at all while down.
async fn run(
    engine: &Arc<Engine>,
    clock: &ManualClock,
    until: DateTime<Utc>,
    down: (DateTime<Utc>, DateTime<Utc>),
) {
    let shutdown = CancellationToken::new();
    let mut next_tick = clock.now();
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
        let mut now = match due {
            Some(d) if d < next_tick => d.max(clock.now()),
            _ => next_tick,
        };
        if now >= down.0 && now < down.1 {
            // The daemon is down: nothing runs, and the next start plans at once.
            now = down.1;
            next_tick = down.1;
        }
        if now > until {
            break;
        }
        clock.set(now);
        if now >= next_tick {
            engine.plan().await.unwrap();
            engine.assess_overdue().await.unwrap();
            next_tick = now + Duration::hours(1);
        }
        engine.run_due(&shutdown).await.unwrap();
        engine.run_reminders(&shutdown).await.unwrap();
        engine.run_alerts().await.unwrap();
    }
    clock.set(until);
}

fn money(owner: &Owner, minor: i64) -> String {
    owner
        .locale
        .money(&Money::from_minor(minor, owner.currency))
}

both_backends!(
    every_message_is_true_when_sent_over_120_days,
    every_message_is_true_when_sent_over_120_days
);
async fn every_message_is_true_when_sent_over_120_days(db: TestDb) {
    let smtp = SmtpListener::start();
    let start = utc(2027, 1, 1, 0, 0);
    let clock = ManualClock::new(start);
    let la: Tz = "America/Los_Angeles".parse().unwrap();
    // The relay is down from 08:00 on 4 March to 23:00 on 5 March, Los Angeles time.
    let outage = (
        at_local("2027-03-04", 8, 0, la),
        at_local("2027-03-05", 23, 0, la),
    );
    let mailer = Arc::new(InboxMailer {
        inner: smtp.mailer("[10]"),
        store: db.store.clone(),
        clock: clock.clone(),
        outage,
        owners: Mutex::new(HashMap::new()),
        log: Mutex::new(Vec::new()),
    });
    let (engine, bank) = setup(&db, &clock, mailer.clone(), policy()).await;
    let store = &db.store;
    let months = |day: u32| -> Vec<String> {
        (1..=4)
            .map(|m| format!("2027-{m:02}-{day:02}"))
            .collect::<Vec<_>>()
    };
    let dues = |v: &[String]| v.to_vec();
    let a_dues = dues(&months(10));
    let a_dues: Vec<&str> = a_dues.iter().map(String::as_str).collect();
    let a = persona(
        store,
        &mailer,
        "A",
        "zh-CN",
        "Asia/Shanghai",
        "CNY",
        "ACC-A-0001",
        &a_dues,
        500_00,
        1,
    )
    .await;
    let b_dues = ["2027-02-15", "2027-03-15", "2027-04-15"];
    let b = persona(
        store,
        &mailer,
        "B",
        "en-US",
        "America/New_York",
        "USD",
        "ACC-B-0002",
        &b_dues,
        250_00,
        1,
    )
    .await;
    // Imported on 1 January with its first installment due 40 days before.
    let c_dues = ["2026-11-22", "2026-12-22", "2027-01-22", "2027-02-22"];
    let c = persona(
        store,
        &mailer,
        "C",
        "en-GB",
        "Europe/London",
        "GBP",
        "ACC-C-0003",
        &c_dues,
        300_00,
        1,
    )
    .await;
    let d_dues = ["2027-03-20", "2027-04-20"];
    let d = persona(
        store,
        &mailer,
        "D",
        "en",
        "Asia/Shanghai",
        "CNY",
        "ACC-D-0004",
        &d_dues,
        800_00,
        1,
    )
    .await;
    let e_dues = ["2027-03-05", "2027-04-05"];
    let e = persona(
        store,
        &mailer,
        "E",
        "en-US",
        "America/Los_Angeles",
        "USD",
        "ACC-E-0005",
        &e_dues,
        120_00,
        1,
    )
    .await;
    let f_dues = dues(&months(5)[1..]);
    let f_dues: Vec<&str> = f_dues.iter().map(String::as_str).collect();
    let f = persona(
        store,
        &mailer,
        "F",
        "zh-CN",
        "Asia/Shanghai",
        "CNY",
        "ACC-F-0006",
        &f_dues,
        200_00,
        3,
    )
    .await;
    for (account, code, minor) in [
        ("ACC-A-0001", "CNY", 0),
        ("ACC-B-0002", "USD", 10_000_00),
        ("ACC-C-0003", "GBP", 150_00),
        ("ACC-D-0004", "CNY", 10_000_00),
        ("ACC-E-0005", "USD", 10_000_00),
        ("ACC-F-0006", "CNY", 100_000_00),
    ] {
        bank.set_balance(account, Currency::parse(code).unwrap(), minor)
            .await
            .unwrap();
    }

    // The daemon is down for five days across B's first due date (15 February).
    let down = (utc(2027, 2, 13, 0, 0), utc(2027, 2, 18, 0, 0));
    // C tops up on 20 January; D revokes the mandate on 15 March, between its 7-day
    // (13 March) and 3-day (17 March) reminders.
    run(&engine, &clock, utc(2027, 1, 20, 12, 0), down).await;
    bank.set_balance("ACC-C-0003", Currency::parse("GBP").unwrap(), 5_000_00)
        .await
        .unwrap();
    let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
    run(
        &engine,
        &clock,
        at_local("2027-03-15", 12, 0, shanghai),
        down,
    )
    .await;
    let revoked_at = clock.now();
    let ops = Actor::new("ops-alice", "customer withdrew consent").unwrap();
    revoke_mandate(store, &engine.policy(), revoked_at, &ops, "ACC-D-0004")
        .await
        .unwrap();
    run(&engine, &clock, start + Duration::days(120), down).await;

    let delivered = mailer.log.lock().unwrap().clone();
    assert_eq!(
        smtp.messages().len(),
        delivered.len(),
        "every recorded email reached the SMTP listener"
    );
    let received: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| parse(&m.data).header("Message-ID").unwrap())
        .collect();
    let deployment = store.deployment_id().await.unwrap();
    for m in &delivered {
        assert!(
            received.contains(&format!("<{}>", m.message_id)),
            "{}",
            m.message_id
        );
        assert!(m.message_id.contains(&deployment));
    }
    let mut ids: Vec<&String> = delivered.iter().map(|m| &m.message_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), delivered.len(), "each email once");

    // REPAYD_INBOX_DUMP=FILE writes every inbox as the customers read it, for a person.
    if let Ok(path) = std::env::var("REPAYD_INBOX_DUMP") {
        let mut out = String::new();
        for m in &delivered {
            out.push_str(&format!(
                "==== {} | {} | {}\nSubject: {}\n\n{}\n",
                m.owner.customer,
                m.at.with_timezone(&m.owner.tz)
                    .format("%a %Y-%m-%d %H:%M %Z"),
                m.message_id,
                m.subject,
                m.text
            ));
        }
        std::fs::write(format!("{path}.{:?}", store.backend()), out).unwrap();
    }
    let quiet = QuietHours::parse("21:00", "08:00").unwrap();
    let mut per_day: BTreeMap<(String, NaiveDate), Vec<String>> = BTreeMap::new();
    for m in &delivered {
        let local = m.at.with_timezone(&m.owner.tz);
        let what = format!("{} {} at {local} ({})", m.kind, m.message_id, m.subject);
        // 1. Nothing inside quiet hours, in the customer's time zone.
        assert!(!quiet.is_quiet(local.time()), "inside quiet hours: {what}");
        per_day
            .entry((m.owner.customer.clone(), local.date_naive()))
            .or_default()
            .push(what.clone());
        let s = &m.snapshot;
        let today = local.date_naive();

        // 2. Every amount is the ledger's at the time of sending: each section's "total to
        //    be up to date" equals its installment, the arrears and the open charges.
        let total_label = if m.owner.locale == Locale::ZhCn {
            "合计应还："
        } else {
            "Total to be up to date:"
        };
        let mut printed: Vec<String> = m
            .text
            .lines()
            .filter_map(|l| l.strip_prefix(total_label))
            .map(|v| v.trim().to_string())
            .collect();
        let mut expected: Vec<String> = s
            .parts
            .iter()
            .filter(|(kind, _, has_ledger)| kind != "debit_succeeded" && *has_ledger)
            .map(|(_, total, _)| money(&m.owner, *total))
            .collect();
        printed.sort();
        expected.sort();
        assert_eq!(printed, expected, "totals owed: {what}\n{}", m.text);
        assert_eq!(s.parts.len() > 1, m.merged, "{what}");
        if m.kind != "debit_succeeded" {
            assert!(
                m.text.contains(&money(&m.owner, s.unpaid_this)),
                "the installment's unpaid amount: {what}\n{}",
                m.text
            );
        }

        // 3. Every promised retry exists, at the minute named.
        let promises_retry = m.text.contains("try again at")
            || m.text.contains("collect the payment again at")
            || m.text.contains("再次尝试扣款")
            || m.text.contains("再次扣款");
        if promises_retry {
            let candidates: Vec<DateTime<Utc>> = s
                .planned
                .iter()
                .filter(|(inst, when)| {
                    *when > m.at
                        && (m.kind != "debit_failed" || m.merged || *inst == m.installment_id)
                })
                .map(|(_, when)| *when)
                .collect();
            let named: Vec<&DateTime<Utc>> = candidates
                .iter()
                .filter(|when| {
                    m.text
                        .contains(&m.owner.locale.date_time_at(when.with_timezone(&m.owner.tz)))
                })
                .collect();
            assert!(
                !named.is_empty(),
                "a promised retry that is not planned: {what}\n{}\nplanned: {:?}",
                m.text,
                s.planned
            );
        }

        // 4. Wording follows state.
        if s.due < today {
            assert!(
                !m.text.contains("so it doesn't become overdue") && !m.text.contains("以免逾期。"),
                "an overdue installment called not yet overdue: {what}\n{}",
                m.text
            );
        }
        if m.kind == "upcoming" {
            assert_eq!(
                s.mandate_status, "active",
                "a reminder after revocation: {what}"
            );
            assert!(
                s.due >= today,
                "a pre-due reminder after the due date: {what}"
            );
        }
        if m.text.contains("We'll collect it automatically") || m.text.contains("自动扣款，您无需")
        {
            assert_eq!(s.mandate_status, "active", "{what}");
        }
    }
    // 5. The budget: at most 3 emails a customer a local day.
    for ((customer, day), list) in &per_day {
        assert!(
            list.len() <= 3,
            "{customer} got {} emails on {day}:\n{}",
            list.len(),
            list.join("\n")
        );
    }

    // 5b. One email a local day about an agreement's missing money: a failure notice
    //     does not go out an hour before the overdue escalation that says it all again.
    let mut missing_money: BTreeMap<(i64, NaiveDate), Vec<String>> = BTreeMap::new();
    for m in &delivered {
        if [
            "debit_failed",
            "overdue",
            "credit_warning",
            "mandate_notice",
        ]
        .contains(&m.kind.as_str())
        {
            let local = m.at.with_timezone(&m.owner.tz);
            missing_money
                .entry((m.owner.agreement_id, local.date_naive()))
                .or_default()
                .push(format!("{} {} at {local}", m.kind, m.message_id));
        }
    }
    for ((agreement, day), list) in &missing_money {
        assert!(
            list.len() == 1,
            "agreement {agreement}: {} emails about missing money on {day}:\n{}",
            list.len(),
            list.join("\n")
        );
    }

    // 6. Promised attempts ran at the minute promised, and no installment was tried
    //    twice on one local day (downtime and late import included).
    let all_agreements: Vec<(i64, Tz)> = [
        (&a, "Asia/Shanghai"),
        (&b, "America/New_York"),
        (&c, "Europe/London"),
        (&d, "Asia/Shanghai"),
        (&e, "America/Los_Angeles"),
        (&f, "Asia/Shanghai"),
    ]
    .iter()
    .flat_map(|(list, tz)| list.iter().map(|(id, _)| (*id, tz.parse().unwrap())))
    .collect();
    for (agreement_id, tz) in &all_agreements {
        let attempts = store.attempts_for_agreement(*agreement_id).await.unwrap();
        let mut days: BTreeMap<(i64, NaiveDate), u32> = BTreeMap::new();
        for x in &attempts {
            if let Some(ms) = x.funds_checked_at_ms {
                *days
                    .entry((
                        x.installment_id,
                        worktime::local_date(from_epoch_ms(ms), *tz),
                    ))
                    .or_default() += 1;
                // Run at its planned minute, or later only when the daemon was down.
                let planned = from_epoch_ms(x.scheduled_at_ms);
                let ran = from_epoch_ms(ms);
                // Run at its planned minute; or, when it was due before the agreement was
                // imported or while the daemon was down, at the first run after that.
                let on_time = ran == planned;
                let imported_late = planned < start && ran == start;
                let after_downtime = planned >= down.0 && planned < down.1 && ran == down.1;
                let looked_up = ran >= planned && x.reconcile_count > 0;
                assert!(
                    on_time || imported_late || after_downtime || looked_up,
                    "attempt {} planned {planned} ran {ran}",
                    x.id
                );
            }
        }
        for ((inst, day), n) in days {
            assert_eq!(
                n, 1,
                "installment {inst} tried {n} times on {day}: {attempts:?}"
            );
        }
    }
    for m in delivered.iter().filter(|m| m.kind == "debit_failed") {
        let attempts = store
            .attempts_for_agreement(m.owner.agreement_id)
            .await
            .unwrap();
        for (inst, when) in m
            .snapshot
            .planned
            .iter()
            .filter(|(i, _)| *i == m.installment_id)
        {
            if !m
                .text
                .contains(&m.owner.locale.date_time_at(when.with_timezone(&m.owner.tz)))
            {
                continue;
            }
            let x = attempts
                .iter()
                .find(|x| x.installment_id == *inst && from_epoch_ms(x.scheduled_at_ms) == *when)
                .unwrap();
            let ran = x.funds_checked_at_ms.map(from_epoch_ms);
            assert!(
                ran == Some(*when) || (*when >= down.0 && *when < down.1),
                "promised {when} in {}, ran {ran:?}",
                m.message_id
            );
        }
    }

    // Persona by persona, what the customer read.
    let inbox = |who: &str| -> Vec<&Delivered> {
        delivered
            .iter()
            .filter(|m| m.owner.customer == who)
            .collect()
    };
    // A: short every month: failure notices and escalations, never a flood, and the
    // credit warning before the account becomes reportable.
    let a_sent = sent_rows(store, &a).await;
    for kind in ["debit_failed", "overdue", "credit_warning"] {
        assert!(a_sent.iter().any(|r| r.kind == kind), "{kind}: {a_sent:?}");
    }
    assert!(a_sent.iter().all(|r| r.kind != "debit_succeeded"));
    // B: the due date fell in the downtime: no 1-day reminder after the fact, one catch-up
    // debit, one receipt, nothing sent while down.
    let b_mail = inbox("B");
    assert!(b_mail.iter().all(|m| m.at < down.0 || m.at >= down.1));
    let b_first = b[0].1[0];
    let b_sent = sent_rows(store, &b).await;
    let down_end_ms = repayd::clock::to_epoch_ms(down.1);
    assert_eq!(
        b_sent
            .iter()
            .filter(|r| r.installment_id == b_first && r.kind == "debit_succeeded")
            .count(),
        1
    );
    assert!(
        !b_sent.iter().any(|r| r.installment_id == b_first
            && r.kind == "upcoming"
            && r.sent_at_ms.unwrap() >= down_end_ms),
        "{:?}",
        kinds(&b_mail)
    );
    // C: imported 40 days past due: one attempt a day at most (checked above), a failure
    // notice that names the arrears, and receipts once the money arrived.
    let c_mail = inbox("C");
    assert!(
        sent_rows(store, &c)
            .await
            .iter()
            .any(|r| r.kind == "debit_succeeded"),
        "{:?}",
        kinds(&c_mail)
    );
    let first_day: Vec<&Delivered> = c_mail
        .iter()
        .copied()
        .filter(|m| {
            m.at.with_timezone(&m.owner.tz).date_naive()
                == NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()
        })
        .collect();
    assert!(first_day.len() <= 3, "{:?}", kinds(&first_day));
    // D: no pre-due reminder after the revocation, one "pay another way" notice.
    let d_mail = inbox("D");
    let d_sent = sent_rows(store, &d).await;
    let revoked_ms = repayd::clock::to_epoch_ms(revoked_at);
    assert!(
        d_sent
            .iter()
            .all(|r| r.kind != "upcoming" || r.sent_at_ms.unwrap() < revoked_ms),
        "{:?}",
        kinds(&d_mail)
    );
    assert_eq!(
        d_sent.iter().filter(|r| r.kind == "mandate_notice").count(),
        1,
        "{:?}",
        kinds(&d_mail)
    );
    assert!(
        d_sent
            .iter()
            .any(|r| r.kind == "upcoming" && r.sent_at_ms.unwrap() < revoked_ms)
    );
    // E: the relay came back at 23:00 local: nothing went out in the night; the receipt
    // waited for the morning.
    let e_receipt = sent_rows(store, &e)
        .await
        .into_iter()
        .find(|r| r.kind == "debit_succeeded" && r.installment_id == e[0].1[0])
        .expect("E's receipt, after the outage");
    let e_receipt_at = from_epoch_ms(e_receipt.sent_at_ms.unwrap());
    assert!(e_receipt_at >= outage.1);
    assert_eq!(
        e_receipt_at.with_timezone(&la).time(),
        NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        "at the end of quiet hours"
    );
    // F: three agreements due the same days: each day's messages merged into one email,
    // and every receipt delivered.
    let f_mail = inbox("F");
    let mut f_receipts = 0;
    for (agreement_id, _) in &f {
        f_receipts += store
            .reminders_for_agreement(*agreement_id)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.kind == "debit_succeeded" && r.state == "sent")
            .count();
    }
    assert_eq!(f_receipts, 9);
    let f_merged: Vec<&Delivered> = f_mail.iter().copied().filter(|m| m.merged).collect();
    assert!(f_merged.len() >= 6, "{:?}", kinds(&f_mail));
    for m in &f_merged {
        assert!(m.subject.contains("3条还款通知"), "{}", m.subject);
        for (agreement_id, _) in &f {
            let external = format!("AGR-F-{}", agreement_id - f[0].0);
            assert!(m.text.contains(&external), "{external} in\n{}", m.text);
        }
    }
    let mut f_days: BTreeMap<NaiveDate, u32> = BTreeMap::new();
    for m in &f_mail {
        *f_days
            .entry(m.at.with_timezone(&m.owner.tz).date_naive())
            .or_default() += 1;
    }
    assert!(f_days.values().all(|n| *n == 1), "{f_days:?}");

    // What operations see for the always-short account: days past due, each late fee,
    // and the total owed, equal to the ledger.
    let detail = store.agreement_detail("AGR-A-0").await.unwrap().unwrap();
    let standing = repayd::commands::agreements::standing(store, a[0].0)
        .await
        .unwrap();
    let unpaid: i64 = detail
        .installments
        .iter()
        .map(|i| i.total_minor - i.paid_minor)
        .sum();
    let fees: i64 = store
        .charges_for_agreement(a[0].0)
        .await
        .unwrap()
        .iter()
        .filter(|c| c.status == "open")
        .map(|c| c.amount_minor - c.paid_minor)
        .sum();
    assert!(fees > 0);
    let json: serde_json::Value = serde_json::from_str(
        &repayd::commands::agreements::render_detail_json(&detail, &standing),
    )
    .unwrap();
    let cny = Currency::parse("CNY").unwrap();
    assert_eq!(
        json["standing"]["total_owed"],
        Money::from_minor(unpaid + fees, cny).plain()
    );
    assert!(json["standing"]["days_past_due"].as_i64().unwrap() > 90);
    assert_eq!(json["standing"]["credit_flag"], "reportable");
    assert!(
        json["charges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["kind"] == "late_fee")
    );
    let table = repayd::commands::agreements::render_detail_table(&detail, &standing);
    assert!(table.contains("days past due since 2027-01-10"), "{table}");
    assert!(table.contains("late_fee"), "{table}");
    assert!(
        table.contains(&format!(
            "owed       {} CNY",
            Money::from_minor(unpaid + fees, cny).plain()
        )),
        "{table}"
    );

    // Nothing dropped silently: every cancelled or deferred message says why.
    for (agreement_id, _) in &all_agreements {
        for r in store.reminders_for_agreement(*agreement_id).await.unwrap() {
            if r.state == "cancelled" {
                assert!(r.cancel_reason.is_some(), "{r:?}");
            }
            assert_ne!(r.state, "sending", "{r:?}");
        }
    }
    let events = store.events(None).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "reminder_deferred" && e.detail.contains("quiet hours"))
    );
}

/// The messages sent about these agreements, merged ones included.
async fn sent_rows(
    store: &Store,
    agreements: &[(i64, Vec<i64>)],
) -> Vec<repayd::store::reminders::ReminderRow> {
    let mut rows = Vec::new();
    for (agreement_id, _) in agreements {
        rows.extend(
            store
                .reminders_for_agreement(*agreement_id)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.state == "sent"),
        );
    }
    rows
}

fn kinds(list: &[&Delivered]) -> Vec<String> {
    list.iter()
        .map(|m| {
            format!(
                "{} i{} {}",
                m.kind,
                m.installment_id,
                m.at.with_timezone(&m.owner.tz)
            )
        })
        .collect()
}
