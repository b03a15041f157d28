//! Calendar coverage: the planner warns once per day when a due date it plans lies in a
//! year no loaded calendar covers; `check-config` warns (and still passes) when the
//! current or next year is not covered.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::SmtpListener;
use crate::overdue::{SHANGHAI, agreement, local, policy, setup};
use repayd::clock::ManualClock;
use repayd::domain::HolidayCalendar;
use std::path::Path;
use std::process::Command;

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/calendars")
        .join(name)
}

async fn planner_warns_once_a_day_about_uncovered_due_dates(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(local("2026-12-28", 12, 0, SHANGHAI));
    let (engine, _bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    agreement(
        store,
        "CAL-1",
        "Li Wei",
        "6222020000006666",
        &["2027-01-04"],
    )
    .await;
    let cal = HolidayCalendar::load(&shipped("cn-2026.toml")).unwrap();
    // Without a calendar, business days are Monday to Friday; with one, its own (payday
    // retries read them): Sat 28 Feb 2026 is a make-up working day in China.
    let make_up_saturday = chrono::NaiveDate::from_ymd_opt(2026, 2, 28).unwrap();
    assert!(!engine.business_days().is_business_day(make_up_saturday));
    engine.set_calendar(Some(&cal));
    assert!(engine.business_days().is_business_day(make_up_saturday));
    let first = engine.plan().await.unwrap();
    assert!(first.attempts_created >= 1);
    assert!(first.calendar_warning, "2027-01-04 is outside cn-2026");
    let again = engine.plan().await.unwrap();
    assert!(!again.calendar_warning, "once per day");
    clock.set(local("2026-12-29", 12, 0, SHANGHAI));
    assert!(
        engine.plan().await.unwrap().calendar_warning,
        "and again the next day"
    );
    // A calendar that covers 2027 (a directory of yearly files) silences it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(shipped("cn-2026.toml"), dir.path().join("cn-2026.toml")).unwrap();
    std::fs::write(
        dir.path().join("x-2027.toml"),
        "name = \"x-2027\"\nholidays = [\"2027-01-01\"]\n",
    )
    .unwrap();
    engine.set_calendar(Some(&HolidayCalendar::load(dir.path()).unwrap()));
    clock.set(local("2026-12-30", 12, 0, SHANGHAI));
    let covered = engine.plan().await.unwrap();
    assert!(!covered.calendar_warning, "{covered:?}");
}

both_backends!(
    planner_warns_once_a_day_about_uncovered_due_dates,
    planner_warns_once_a_day_about_uncovered_due_dates
);

#[test]
fn check_config_warns_when_next_year_is_not_covered() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("repayd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{d}/var/repayd.db\"\n\n[schedule]\ncalendar = \"{c}\"\n\n\
             [gateway]\nkind = \"sandbox\"\n\n\
             [mail]\nkind = \"outbox\"\nfrom = \"Repayments <repayments@example.com>\"\n\
             outbox_dir = \"{d}/outbox\"\nlender_name = \"Example Lending\"\n",
            d = dir.path().display(),
            c = shipped("cn-2026.toml").display(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_repayd"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env_remove("REPAYD_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The shipped file covers 2026 only: whatever this year is, next year is missing.
    assert!(
        stderr.contains("warning: schedule.calendar") && stderr.contains("does not cover"),
        "{stderr}"
    );
}
