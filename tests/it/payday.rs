//! Payday-aware retries (`[retry.payday]`, docs/retry.md) through the whole engine, on
//! both databases, against the sandbox bank and the loopback HTTP bank: a customer whose
//! money arrives on the 10th (due on the 5th, retried on the 6th, 8th and 10th for three
//! months) gets December's retry straight on the 10th, with the reason on the attempt, in
//! `agreements show` and in the failure notice; with the feature off the fixed offsets
//! hold as before.

use crate::both_backends;
use crate::collections::{Bank, customer, drive, engine, inbox, policy};
use crate::helpers::TestDb;
use crate::mail::SmtpListener;
use crate::overdue::{hook_server, local, utc};
use chrono::Datelike;
use chrono_tz::Tz;
use repayd::clock::{ManualClock, from_epoch_ms};
use repayd::engine::policy::PaydayPolicy;
use std::collections::HashSet;
use std::sync::Mutex;

const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;
const ACCOUNT: &str = "ACC-PAY-0010";

async fn salary_on_the_10th(db: TestDb, http: bool, payday_aware: bool) {
    let store = db.store.clone();
    let smtp = SmtpListener::start();
    let (_hook, url) = hook_server().await;
    let clock = ManualClock::new(utc(2026, 9, 1, 0, 0));
    let (bank, gateway) = Bank::new(http, &store, &clock).await;
    let mut p = policy(url);
    p.retry.max_attempts = 4;
    p.retry.insufficient_funds_days = vec![1, 3, 5];
    p.retry.payday = PaydayPolicy {
        enabled: payday_aware,
        min_observations: 3,
        lookback_months: 6,
        window_days: 5,
    };
    let engine = engine(&db, gateway, &clock, &smtp, p);
    let a = customer(
        &store,
        "PAY",
        ACCOUNT,
        &["2026-09-05", "2026-10-05", "2026-11-05", "2026-12-05"],
        500_00,
    )
    .await;
    bank.set_balance(ACCOUNT, 100_00).await;

    // The salary: 3,000.00 on the 10th (local), spent down to 100.00 by the 12th.
    let done: Mutex<HashSet<(u32, bool)>> = Mutex::new(HashSet::new());
    drive(
        &engine,
        &clock,
        local("2026-12-11", 12, 0, SHANGHAI),
        async |now| {
            let today = now.with_timezone(&SHANGHAI).date_naive();
            let (month, day) = (today.month(), today.day());
            let act = if day >= 12 {
                Some((false, 100_00))
            } else if day >= 10 {
                Some((true, 3_000_00))
            } else {
                None
            };
            if let Some((paid, balance)) = act
                && done.lock().unwrap().insert((month, paid))
            {
                bank.set_balance(ACCOUNT, balance).await;
            }
        },
    )
    .await;

    let installments = store.installments(a).await.unwrap();
    assert!(
        installments.iter().all(|i| i.status == "paid"),
        "every month collected on the 10th: {installments:?}"
    );
    let december = &installments[3];
    let attempts = store.attempts_for_installment(december.id).await.unwrap();
    let dec_6 = local("2026-12-06", 6, 0, SHANGHAI);
    let dec_10 = local("2026-12-10", 6, 0, SHANGHAI);
    let mail = inbox(&smtp, "pay@example.com");
    let notices: Vec<&(String, String)> = mail
        .iter()
        .filter(|(_, text)| text.contains("We couldn't collect your payment"))
        .collect();
    let december_notice = notices
        .iter()
        .find(|(_, text)| text.contains("5 December 2026"))
        .expect("December's failure notice");
    if payday_aware {
        // Short on the 5th: straight to the 10th, one retry instead of three.
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        let retry = &attempts[1];
        assert_eq!(from_epoch_ms(retry.scheduled_at_ms), dec_10);
        assert_eq!(retry.state, "succeeded");
        assert_eq!(
            retry.retry_reason.as_deref(),
            Some(
                "payday: funds arrived on the 10th in 3 of the last 3 months with a short \
                 balance; retry on Thu 10 Dec 2026, instead of Sun 6 Dec 2026 (fixed offset)"
            )
        );
        assert!(
            december_notice
                .1
                .contains("10 December 2026, after your usual payday."),
            "{}",
            december_notice.1
        );
        // The months before were placed by the fixed offsets, and said nothing of a payday.
        let said: Vec<_> = notices
            .iter()
            .filter(|(_, t)| t.contains("after your usual payday"))
            .collect();
        assert_eq!(said.len(), 1, "only December's notice: {notices:?}");
        let show = repayd::commands::agreements::render_detail_table(
            &store.agreement_detail("PAY").await.unwrap().unwrap(),
            &repayd::commands::agreements::standing(&store, a)
                .await
                .unwrap(),
        );
        assert!(
            show.contains("retries placed by payday\n  installment 4, attempt 2 at 2026-12-09T22:00:00Z (succeeded): payday: funds arrived on the 10th in 3 of the last 3 months"),
            "{show}"
        );
        let view = repayd::commands::customers::load(&store, "C-PAY")
            .await
            .unwrap()
            .unwrap();
        let customer = repayd::commands::customers::render_table(&view);
        assert!(
            customer
                .contains("(retry: payday: funds arrived on the 10th in 3 of the last 3 months"),
            "{customer}"
        );
    } else {
        // Off: the fixed offsets, as before (6th, 8th, 10th), no reason anywhere.
        assert_eq!(attempts.len(), 4, "{attempts:?}");
        assert_eq!(from_epoch_ms(attempts[1].scheduled_at_ms), dec_6);
        assert_eq!(from_epoch_ms(attempts[3].scheduled_at_ms), dec_10);
        assert_eq!(attempts[3].state, "succeeded");
        assert!(attempts.iter().all(|x| x.retry_reason.is_none()));
        assert!(
            notices
                .iter()
                .all(|(_, t)| !t.contains("after your usual payday")),
            "{notices:?}"
        );
        assert!(december_notice.1.contains("6 December 2026."));
    }
}

async fn sandbox_on(db: TestDb) {
    salary_on_the_10th(db, false, true).await
}
async fn sandbox_off(db: TestDb) {
    salary_on_the_10th(db, false, false).await
}
async fn http_on(db: TestDb) {
    salary_on_the_10th(db, true, true).await
}
async fn http_off(db: TestDb) {
    salary_on_the_10th(db, true, false).await
}

both_backends!(payday_retry_on_the_sandbox, sandbox_on);
both_backends!(fixed_offsets_on_the_sandbox_when_off, sandbox_off);
both_backends!(payday_retry_against_the_http_bank, http_on);
both_backends!(fixed_offsets_against_the_http_bank_when_off, http_off);
