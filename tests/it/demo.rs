//! The README's quick start tells a story: the sample agreements, dated around the day it
//! runs, give a catch-up debit with its receipt, a "balance low" reminder naming the
//! shortfall, and an English reminder for a customer in New York. This runs the story as
//! `repayd run --demo` does (the shipped config, the sandbox bank with its short
//! account), on a controlled clock starting on two different days at two different
//! hours (daytime in Shanghai and night in Shanghai), and checks every part of it arrives
//! within a day, none inside the customer's quiet hours.

use chrono::{DateTime, Duration, TimeZone, Utc};
use repayd::clock::ManualClock;
use repayd::config::Settings;
use repayd::domain::worktime::QuietHours;
use repayd::engine::policy::EnginePolicy;
use repayd::engine::{Engine, MailDeps};
use repayd::gateway::sandbox::SandboxBank;
use repayd::mail::{CaptureMailer, OutgoingEmail};
use repayd::store::Store;
use secrecy::SecretString;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

async fn story(start: DateTime<Utc>) -> (Vec<(DateTime<Utc>, OutgoingEmail)>, Store) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings::load(&root.join("config/repayd.toml")).unwrap();
    let url = SecretString::from(format!("sqlite://{}/repayd.db", dir.path().display()));
    let store = Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let clock = ManualClock::new(start);
    let code = repayd::commands::demo::load(&store, &settings.schedule, &clock)
        .await
        .unwrap();
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let bank = SandboxBank::new(store.clone(), settings.gateway.sandbox.clone())
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let capture = Arc::new(CaptureMailer::new());
    let mail = MailDeps::new(
        capture.clone(),
        settings.mail.templates().unwrap(),
        settings.mail.clone(),
    );
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            Arc::new(bank),
            Arc::new(clock.clone()),
            EnginePolicy::from_settings(&settings).unwrap(),
            "demo",
        )
        .with_mail(mail),
    );
    // The daemon's loop, a minute at a time for the first hour, then every 10 minutes.
    let shutdown = CancellationToken::new();
    let mut sent = Vec::new();
    let mut now = start;
    while now < start + Duration::hours(30) {
        clock.set(now);
        engine.plan().await.unwrap();
        engine.assess_overdue().await.unwrap();
        engine.run_due(&shutdown).await.unwrap();
        engine.run_reminders(&shutdown).await.unwrap();
        for email in capture.take() {
            sent.push((now, email));
        }
        now += if now < start + Duration::hours(1) {
            Duration::minutes(1)
        } else {
            Duration::minutes(10)
        };
    }
    drop(dir);
    (sent, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_story_happens_on_any_day() {
    let shanghai = chrono_tz::Asia::Shanghai;
    let new_york = chrono_tz::America::New_York;
    // 10:30 in Shanghai (night in New York), and 23:00 in Shanghai (morning in New York),
    // months apart.
    for start in [
        Utc.with_ymd_and_hms(2027, 3, 10, 2, 30, 0).unwrap(),
        Utc.with_ymd_and_hms(2027, 9, 21, 15, 0, 0).unwrap(),
    ] {
        let (sent, _store) = story(start).await;
        let quiet = QuietHours::parse("21:00", "08:00").unwrap();
        for (at, email) in &sent {
            let tz = if email.to.contains("emily") {
                new_york
            } else {
                shanghai
            };
            assert!(
                !quiet.is_quiet(at.with_timezone(&tz).time()),
                "{} at {}",
                email.subject,
                at.with_timezone(&tz)
            );
        }
        let find = |to: &str, needle: &str| {
            sent.iter()
                .find(|(_, e)| e.to.starts_with(to) && e.text.contains(needle))
                .unwrap_or_else(|| {
                    panic!(
                        "no email to {to} saying {needle:?} from {start}: {:#?}",
                        sent.iter()
                            .map(|(at, e)| format!("{at} {} {}", e.to, e.subject))
                            .collect::<Vec<_>>()
                    )
                })
        };
        // The catch-up debit of AGR-2026-0006, due five days ago, and its receipt.
        let (_, receipt) = find("wang.fang", "AGR-2026-0006");
        assert!(receipt.subject.contains("还款成功"), "{}", receipt.subject);
        // The short account: a balance-low reminder naming the shortfall and the deadline.
        let (_, low) = find("li.wei", "余额不足");
        assert!(low.text.contains("¥490.00"), "{}", low.text);
        assert!(low.text.contains("AGR-2026-0002"));
        assert!(low.text.contains("06:00（北京时间）"), "{}", low.text);
        // Emily Carter, en-US: month-first dates.
        let (_, emily) = find("emily.carter", "AGR-2026-0003");
        assert_eq!(emily.locale, "en-US");
        assert!(
            emily.text.contains(", 20"),
            "US dates read 'Monday, March 15, 2027': {}",
            emily.text
        );
    }
}
