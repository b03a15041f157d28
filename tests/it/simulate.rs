//! `repayd simulate` on the shipped sample data and example config: the timeline says what
//! the policy would do (reminders, funds checks, debits, retries), and the database file
//! is byte-for-byte the same afterwards.

use super::daemon::import;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shipped demo config, with the database and outbox moved into `dir`.
fn simulate(dir: &Path, db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repayd"))
        .arg("--config")
        .arg(manifest("config/repayd.toml"))
        .arg("simulate")
        .args(args)
        .env("REPAYD__DATABASE__URL", db_url)
        .env("REPAYD__MAIL__OUTBOX_DIR", dir.join("outbox"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run repayd simulate")
}

/// A hash of every file in `dir` (name and content), so a write of any kind shows.
fn fingerprint(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                hex::encode(Sha256::digest(&bytes)),
            )
        })
        .collect();
    files.sort();
    files
}

fn events_of<'a>(
    timeline: &'a serde_json::Value,
    kind: &str,
    agreement: &str,
) -> Vec<&'a serde_json::Value> {
    timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind && e["agreement"] == agreement)
        .collect()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "simulate failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn simulate_shows_the_policy_at_work_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("repayd.db").display());
    import(&db_url, &manifest("config/samples/agreements.csv"));
    let before = fingerprint(dir.path());
    assert!(
        before.iter().any(|(name, _)| name == "repayd.db"),
        "{before:?}"
    );

    // 2026-11-20 .. 2026-12-10: the first due dates of the sample agreements.
    let json = stdout_of(&simulate(
        dir.path(),
        &db_url,
        &["--from", "2026-11-20", "--days", "20", "--format", "json"],
    ));
    let timeline: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(timeline["from"], "2026-11-20T00:00:00+00:00");
    assert_eq!(timeline["funds"], "sandbox");

    // ACC-SHORT-0004 holds 10.00 (config): the reminders say the balance is low, no debit
    // happens, and the retry policy (1, 3, 5 days, 4 attempts) runs out.
    let short = "AGR-2026-0002";
    let low = events_of(&timeline, "reminder_sent", short);
    assert!(
        low.iter().any(|e| e["detail"]["template"] == "balance_low"),
        "{low:?}"
    );
    assert_eq!(events_of(&timeline, "funds_insufficient", short).len(), 4);
    assert_eq!(
        events_of(&timeline, "debit_retries_exhausted", short).len(),
        1
    );
    assert!(events_of(&timeline, "debit_succeeded", short).is_empty());
    // ... and the agreement turns overdue (after the grace period), in the timeline too.
    let overdue = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["agreement"] == short)
        .any(|e| {
            let kind = e["kind"].as_str().unwrap_or("");
            kind.contains("delinquency") || kind.contains("overdue")
        });
    assert!(overdue, "no overdue transition for {short}:\n{json}");

    // The others have money (5000.00 opening balance): debited once each, on time.
    for (agreement, local_debit_utc) in [
        // 06:00 in Shanghai is 22:00 UTC the day before.
        ("AGR-2026-0001", "2026-11-30T22:00:00Z"),
        // 06:00 in New York (EST) is 11:00 UTC.
        ("AGR-2026-0003", "2026-12-01T11:00:00Z"),
    ] {
        let debits = events_of(&timeline, "debit_succeeded", agreement);
        assert_eq!(debits.len(), 1, "{agreement}: {debits:?}");
        assert_eq!(debits[0]["at"], local_debit_utc, "{agreement}");
        assert_eq!(debits[0]["installment"], 1);
        let upcoming = events_of(&timeline, "reminder_sent", agreement);
        assert!(upcoming.len() >= 3, "{agreement}: {upcoming:?}");
    }
    // Due after the period: only what comes before it (AGR-2026-0005's 7-day reminder).
    assert!(events_of(&timeline, "funds_confirmed", "AGR-2026-0004").is_empty());
    assert_eq!(
        events_of(&timeline, "reminder_sent", "AGR-2026-0005").len(),
        1
    );
    let debited = &timeline["summary"]["debited"];
    assert!(
        debited["CNY"].as_str().unwrap().starts_with("CNY "),
        "{debited}"
    );
    assert!(debited["USD"].is_string(), "{debited}");
    assert!(debited.get("GBP").is_none(), "{debited}");
    assert!(timeline["summary"]["emails"].as_u64().unwrap() >= 10);
    // Customers' addresses stay out of the output.
    for address in [
        "li.wei@example.com",
        "emily.carter@example.com",
        "oliver.smith@example.co.uk",
    ] {
        assert!(!json.contains(address), "{address} in the timeline");
    }

    // The table says the same for a person, and who funds everything gets debited.
    let table = stdout_of(&simulate(
        dir.path(),
        &db_url,
        &["--from", "2026-11-20", "--days", "20", "--funds", "always"],
    ));
    assert!(table.contains("TIME (UTC)"), "{table}");
    assert!(
        table.contains("nothing was sent, debited or written"),
        "{table}"
    );
    let short_debited = table
        .lines()
        .any(|l| l.contains(short) && l.contains("debit_succeeded"));
    assert!(short_debited, "{table}");
    assert!(!table.contains("funds_insufficient"), "{table}");

    assert_eq!(
        fingerprint(dir.path()),
        before,
        "simulate changed the database"
    );
}

#[test]
fn simulate_refuses_postgresql_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate(
        dir.path(),
        "postgres://postgres@127.0.0.1:5432/postgres",
        &["--days", "1"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("copy of a SQLite database"), "{stderr}");
    assert!(!stderr.contains("postgres@"), "URL printed: {stderr}");
}
