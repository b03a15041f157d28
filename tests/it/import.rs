//! Importing agreement files, on SQLite and PostgreSQL: the shipped samples import, a
//! re-import is a no-op, changes need `--update` and nothing paid or debited, and a bad
//! file is rejected whole with every problem named and the database untouched.

use crate::both_backends;
use crate::helpers::TestDb;
use repayd::clock::ManualClock;
use repayd::config::ScheduleDefaults;
use repayd::import::{
    Format, ImportError, ImportOptions, ImportSummary, Location, RowError, import_file,
};
use repayd::store::{Backend, Store};
use std::path::{Path, PathBuf};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples")
}

fn clock() -> ManualClock {
    ManualClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-11-25T09:00:00Z")
            .expect("valid instant")
            .to_utc(),
    )
}

async fn import(
    store: &Store,
    path: &Path,
    options: ImportOptions,
) -> Result<ImportSummary, ImportError> {
    import_file(
        store,
        path,
        None,
        &options,
        &ScheduleDefaults::default(),
        &clock(),
    )
    .await
}

fn update() -> ImportOptions {
    ImportOptions {
        update: true,
        ..Default::default()
    }
}

/// (row, field) of every problem, for exact comparison.
fn places(err: &ImportError) -> Vec<(Location, String)> {
    err.row_errors()
        .iter()
        .map(|e: &RowError| (e.row, e.field.clone()))
        .collect()
}

/// The sample CSV with `edit` applied to its text, written to a temporary file.
fn edited_sample(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(samples().join("agreements.csv")).expect("sample");
    let path = dir.join(name);
    std::fs::write(&path, edit(text)).expect("write edited sample");
    path
}

async fn samples_import_and_reimport_is_a_no_op(db: TestDb) {
    let store = &db.store;
    let csv = samples().join("agreements.csv");
    let first = import(store, &csv, ImportOptions::default())
        .await
        .expect("samples import");
    assert_eq!(
        (
            first.agreements_new,
            first.agreements_unchanged,
            first.agreements_updated
        ),
        (6, 0, 0)
    );
    assert_eq!(first.installments_written, 12 + 6 + 6 + 12 + 3 + 6);
    assert_eq!((first.customers_new, first.accounts_new), (4, 5));
    assert_eq!(first.batches, 1);
    let counts = store.table_counts().await.unwrap();
    assert_eq!(
        (
            counts.customers,
            counts.funding_accounts,
            counts.agreements,
            counts.installments
        ),
        (4, 5, 6, 45)
    );
    assert_eq!(counts.events, 4 + 5 + 6);

    // Every schedule sums exactly, and the explicit one is stored as given.
    for ext in [
        "AGR-2026-0001",
        "AGR-2026-0002",
        "AGR-2026-0003",
        "AGR-2026-0004",
        "AGR-2026-0005",
        "AGR-2026-0006",
    ] {
        let d = store.agreement_detail(ext).await.unwrap().expect(ext);
        let total: i64 = d.installments.iter().map(|i| i.total_minor).sum();
        let principal: i64 = d.installments.iter().map(|i| i.principal_minor).sum();
        assert_eq!(total, d.agreement.total_minor, "{ext}");
        assert_eq!(principal, d.agreement.principal_minor, "{ext}");
    }
    let explicit = store
        .agreement_detail("AGR-2026-0005")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(explicit.agreement.method, None);
    let lines: Vec<(&str, i64, i64)> = explicit
        .installments
        .iter()
        .map(|i| (i.due_date.as_str(), i.principal_minor, i.fee_minor))
        .collect();
    assert_eq!(
        lines,
        [
            ("2026-12-15", 30_000, 500),
            ("2027-01-15", 30_000, 500),
            ("2027-02-15", 30_000, 500)
        ]
    );
    let short = store
        .agreement_detail("AGR-2026-0002")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(short.funding_account.external_ref, "ACC-SHORT-0004");
    assert_eq!(short.customer.external_id, "CUST-1001");
    assert_eq!(short.installments[0].due_date, "2026-11-28");
    assert_eq!(short.customer.locale, "zh-CN");
    let annuity = store
        .agreement_detail("AGR-2026-0001")
        .await
        .unwrap()
        .unwrap();
    let terms: serde_json::Value =
        serde_json::from_str(annuity.agreement.terms_json.as_deref().unwrap()).unwrap();
    assert_eq!(
        terms["rounding"], "half-up",
        "the config default was applied"
    );
    assert_eq!(
        annuity.agreement.created_at_ms,
        repayd::clock::to_epoch_ms(repayd::clock::Clock::now(&clock()))
    );

    // Again, and from the JSON twin: nothing new, nothing written.
    for path in [csv.clone(), samples().join("agreements.json")] {
        let again = import(store, &path, ImportOptions::default())
            .await
            .expect("re-import");
        assert_eq!(
            (
                again.agreements_new,
                again.agreements_unchanged,
                again.agreements_updated
            ),
            (0, 6, 0),
            "{}",
            path.display()
        );
        assert_eq!(again.installments_written, 0);
        assert_eq!(
            (again.customers_unchanged, again.accounts_unchanged),
            (4, 5)
        );
        assert_eq!(store.table_counts().await.unwrap(), counts);
    }
}
both_backends!(
    samples_import_and_reimport_is_a_no_op,
    super::samples_import_and_reimport_is_a_no_op
);

async fn json_samples_import_on_their_own(db: TestDb) {
    let store = &db.store;
    let s = import(
        store,
        &samples().join("agreements.json"),
        ImportOptions::default(),
    )
    .await
    .expect("json samples import");
    assert_eq!((s.agreements_new, s.installments_written), (6, 45));
    let again = import(
        store,
        &samples().join("agreements.csv"),
        ImportOptions::default(),
    )
    .await
    .expect("csv twin");
    assert_eq!(again.agreements_unchanged, 6);
}
both_backends!(
    json_samples_import_on_their_own,
    super::json_samples_import_on_their_own
);

async fn dry_run_writes_nothing(db: TestDb) {
    let store = &db.store;
    let options = ImportOptions {
        dry_run: true,
        ..Default::default()
    };
    let s = import(store, &samples().join("agreements.csv"), options)
        .await
        .expect("dry run");
    assert!(s.dry_run);
    assert_eq!(
        (s.agreements_new, s.installments_written, s.customers_new),
        (6, 45, 4)
    );
    assert_eq!(store.table_counts().await.unwrap(), Default::default());
}
both_backends!(dry_run_writes_nothing, super::dry_run_writes_nothing);

async fn changes_need_update_and_nothing_paid_or_debited(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    import(
        store,
        &samples().join("agreements.csv"),
        ImportOptions::default(),
    )
    .await
    .expect("samples");
    let before = store.table_counts().await.unwrap();

    // AGR-2026-0002 (line 3) grows from 3000.00 to 3600.00.
    let grown = edited_sample(dir.path(), "grown.csv", |t| {
        t.replace("AGR-2026-0002,CNY,3000.00", "AGR-2026-0002,CNY,3600.00")
    });
    let err = import(store, &grown, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        places(&err),
        [(Location::Line(3), "agreement_id".to_string())]
    );
    assert!(err.to_string().contains("--update"), "{err}");
    assert_eq!(err.exit_code(), 65);
    assert_eq!(store.table_counts().await.unwrap(), before);

    // With --update, and a planned (not yet started) debit on it: replaced, debit removed.
    let a2 = store
        .agreement_by_external_id("AGR-2026-0002")
        .await
        .unwrap()
        .unwrap();
    let first = store.installments(a2.id).await.unwrap()[0].id;
    add_attempt(store, a2.id, first, "scheduled").await;
    let s = import(store, &grown, update()).await.expect("update");
    assert_eq!(
        (
            s.agreements_new,
            s.agreements_unchanged,
            s.agreements_updated
        ),
        (0, 5, 1)
    );
    assert_eq!((s.installments_written, s.debit_attempts_removed), (6, 1));
    let lines = store.installments(a2.id).await.unwrap();
    assert!(
        lines.iter().all(|i| i.principal_minor == 60_000),
        "{lines:?}"
    );
    let after = store.table_counts().await.unwrap();
    assert_eq!(
        (after.installments, after.debit_attempts),
        (before.installments, 0)
    );
    let kinds: Vec<String> = store
        .events(Some(a2.id))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["agreement_imported", "agreement_updated"]);
    // The update is now what the database holds: importing it again is a no-op.
    let s = import(store, &grown, update()).await.expect("same again");
    assert_eq!(s.agreements_unchanged, 6);

    // Money received on AGR-2026-0003 (line 4), a debit under way on AGR-2026-0004
    // (line 5): --update refuses both, names both, and writes nothing.
    let a3 = store
        .agreement_by_external_id("AGR-2026-0003")
        .await
        .unwrap()
        .unwrap();
    let i3 = store.installments(a3.id).await.unwrap()[0].id;
    store
        .execute_admin(&format!(
            "UPDATE installments SET paid_minor = 100 WHERE id = {i3}"
        ))
        .await
        .unwrap();
    let a4 = store
        .agreement_by_external_id("AGR-2026-0004")
        .await
        .unwrap()
        .unwrap();
    let i4 = store.installments(a4.id).await.unwrap()[0].id;
    add_attempt(store, a4.id, i4, "submitted").await;
    let both = edited_sample(dir.path(), "both.csv", |t| {
        t.replace("AGR-2026-0002,CNY,3000.00", "AGR-2026-0002,CNY,3600.00")
            .replace("AGR-2026-0003,USD,1500.00", "AGR-2026-0003,USD,1800.00")
            .replace("AGR-2026-0004,GBP,2400.00", "AGR-2026-0004,GBP,2000.00")
    });
    let before = store.table_counts().await.unwrap();
    let err = import(store, &both, update()).await.unwrap_err();
    assert_eq!(
        places(&err),
        [
            (Location::Line(4), "agreement_id".to_string()),
            (Location::Line(5), "agreement_id".to_string())
        ]
    );
    let text = err.to_string();
    assert!(
        text.contains("AGR-2026-0003") && text.contains("money received"),
        "{text}"
    );
    assert!(
        text.contains("AGR-2026-0004") && text.contains("debit"),
        "{text}"
    );
    assert_eq!(store.table_counts().await.unwrap(), before);
}
both_backends!(
    changes_need_update_and_nothing_paid_or_debited,
    super::changes_need_update_and_nothing_paid_or_debited
);

async fn customer_and_mandate_changes_are_updates(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    import(
        store,
        &samples().join("agreements.csv"),
        ImportOptions::default(),
    )
    .await
    .expect("samples");
    let changed = edited_sample(dir.path(), "moved.csv", |t| {
        t.replace(
            "emily.carter@example.com,en-US,America/New_York",
            "emily@example.org,en,America/Chicago",
        )
        .replace("MND-US-0001,active", "MND-US-0002,revoked")
    });
    // A mandate's status changes only with --update.
    let s = import(store, &changed, update()).await.expect("updates");
    assert!(s.refused_changes.is_empty(), "{:?}", s.refused_changes);
    assert_eq!((s.customers_updated, s.customers_unchanged), (1, 3));
    assert_eq!((s.accounts_updated, s.accounts_unchanged), (1, 4));
    assert_eq!(
        (
            s.agreements_unchanged,
            s.agreements_new,
            s.agreements_updated
        ),
        (6, 0, 0)
    );
    let d = store
        .agreement_detail("AGR-2026-0003")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.customer.email, "emily@example.org");
    assert_eq!(d.customer.locale, "en");
    assert_eq!(d.customer.time_zone, "America/Chicago");
    assert_eq!(d.funding_account.mandate_ref, "MND-US-0002");
    assert_eq!(d.funding_account.mandate_status, "revoked");
    let events = store.events(None).await.unwrap();
    let updated: Vec<&str> = events
        .iter()
        .filter(|e| e.kind.ends_with("_updated"))
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(updated, ["customer_updated", "funding_account_updated"]);
    // Events name what changed, never the personal data itself.
    assert!(events.iter().all(|e| !e.detail.contains("emily@")));
    assert!(
        events
            .iter()
            .all(|e| !e.detail.contains("US021000021555012"))
    );
}
both_backends!(
    customer_and_mandate_changes_are_updates,
    super::customer_and_mandate_changes_are_updates
);

/// The faults of `config/samples/bad-agreements.*`, one per record, as (record number
/// counted from 0, field in CSV, field in JSON).
const BAD_FILE_FAULTS: [(u64, &str, &str); 14] = [
    (1, "email", "customer.email"),                           // missing
    (2, "email", "customer.email"),                           // malformed
    (3, "principal", "principal"),                            // negative
    (4, "principal", "principal"),                            // zero
    (5, "currency", "currency"),                              // unknown
    (6, "principal", "principal"),                            // too many decimals for USD
    (7, "first_due", "terms.first_due"),                      // 2026-02-30
    (8, "time_zone", "customer.time_zone"),                   // Mars/Olympus
    (9, "agreement_id", "agreement_id"),                      // duplicate
    (10, "method", "terms.method"),                           // balloon
    (11, "method", "terms.method"),                           // missing terms
    (12, "mandate_status", "funding_account.mandate_status"), // maybe
    (13, "email", "customer.email"),                          // same customer, other email
    (14, "schedule", "schedule"),                             // principals do not add up
];

async fn bad_files_are_rejected_whole_with_every_problem_named(db: TestDb) {
    let store = &db.store;
    let before = store.table_counts().await.unwrap();
    for format in [Format::Csv, Format::Json] {
        let path = match format {
            Format::Csv => samples().join("bad-agreements.csv"),
            Format::Json => samples().join("bad-agreements.json"),
        };
        let err = import(store, &path, ImportOptions::default())
            .await
            .unwrap_err();
        let expected: Vec<(Location, String)> = BAD_FILE_FAULTS
            .iter()
            .map(|(n, csv, json)| match format {
                Format::Csv => (Location::Line(n + 2), csv.to_string()),
                Format::Json => (Location::Item(*n), json.to_string()),
            })
            .collect();
        assert_eq!(places(&err), expected, "{format:?}:\n{err}");
        assert_eq!(err.exit_code(), 65);
        let text = err.to_string();
        assert_eq!(text.lines().count(), BAD_FILE_FAULTS.len(), "{text}");
        for needle in [
            "missing",
            "not a valid email address",
            "greater than zero",
            "unknown currency",
            "more decimal places than USD allows",
            "not a date",
            "unknown time zone",
            "duplicate agreement id \"AGR-B-0001\"",
            "unknown method",
            "missing terms",
            "not a mandate status",
            "with a different",
            "add up to 800.00, not to the principal 900.00",
        ] {
            assert!(
                text.contains(needle),
                "{format:?}: no {needle:?} in\n{text}"
            );
        }
        // Personal data stays out of the messages.
        assert!(!text.contains("grace.example.com"), "{text}");
        assert_eq!(store.table_counts().await.unwrap(), before, "{format:?}");
        assert_eq!(before, Default::default());
    }
}
both_backends!(
    bad_files_are_rejected_whole_with_every_problem_named,
    super::bad_files_are_rejected_whole_with_every_problem_named
);

async fn an_account_cannot_change_hands(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    import(
        store,
        &samples().join("agreements.csv"),
        ImportOptions::default(),
    )
    .await
    .expect("samples");
    let path = dir.path().join("takeover.csv");
    let header = std::fs::read_to_string(samples().join("agreements.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &path,
        format!(
            "{header}\nCUST-9,Mallory,m@example.com,en,Europe/London,GB29NWBK60161331926819,\
             MND-X,active,AGR-9,GBP,100.00,interest-free,2,,,2026-12-01,,,,,\n"
        ),
    )
    .unwrap();
    let before = store.table_counts().await.unwrap();
    let err = import(store, &path, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        places(&err),
        [(Location::Line(2), "account_ref".to_string())]
    );
    assert!(err.to_string().contains("CUST-3001"), "{err}");
    assert!(
        !err.to_string().contains("GB29NWBK60161331926819"),
        "masked: {err}"
    );
    assert_eq!(store.table_counts().await.unwrap(), before);
}
both_backends!(
    an_account_cannot_change_hands,
    super::an_account_cannot_change_hands
);

/// `n` generated agreements over `n / 2` customers, 12 monthly installments each.
fn generated_csv(dir: &Path, n: usize) -> PathBuf {
    use std::io::Write;
    let path = dir.join(format!("generated-{n}.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        f,
        "customer_external_id,customer_name,email,locale,time_zone,account_ref,mandate_ref,\
         mandate_status,agreement_id,currency,principal,method,installments,annual_rate,\
         fee_rate,first_due,frequency"
    )
    .unwrap();
    for i in 0..n {
        let c = i / 2;
        writeln!(
            f,
            "C-{c},Customer {c},c{c}@example.com,en,Europe/London,ACC-{c},MND-{c},active,\
             G-{i:06},GBP,{}.00,annuity,12,0.12,0,2026-12-{:02},monthly",
            1000 + i,
            1 + i % 28
        )
        .unwrap();
    }
    f.flush().unwrap();
    path
}

async fn large_files_go_in_batches_and_a_failed_batch_is_finished_by_rerunning(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    let path = generated_csv(dir.path(), 450);
    // A database that refuses one agreement in the middle of the second batch.
    let (arm, disarm) = match store.backend() {
        Backend::Sqlite => (
            "CREATE TRIGGER refuse_one BEFORE INSERT ON agreements \
             WHEN NEW.external_id = 'G-000150' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                .to_string(),
            "DROP TRIGGER refuse_one".to_string(),
        ),
        Backend::Postgres => (
            "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.external_id = 'G-000150' THEN RAISE EXCEPTION 'refused by test'; END IF; \
             RETURN NEW; END; $$; \
             CREATE TRIGGER refuse_one BEFORE INSERT ON agreements \
             FOR EACH ROW EXECUTE FUNCTION refuse_one()"
                .to_string(),
            "DROP TRIGGER refuse_one ON agreements; DROP FUNCTION refuse_one()".to_string(),
        ),
    };
    store.execute_admin(&arm).await.unwrap();
    let options = ImportOptions {
        batch_size: 100,
        ..Default::default()
    };
    let err = import(store, &path, options.clone()).await.unwrap_err();
    match &err {
        ImportError::WriteFailed {
            stage,
            batch,
            first,
            progress,
            ..
        } => {
            assert_eq!((*stage, *batch), ("agreements", 2));
            assert_eq!(*first, Some(Location::Line(102)));
            assert_eq!((progress.agreements, progress.agreement_batches), (100, 1));
            assert_eq!(progress.customers, 225);
        }
        other => panic!("expected a failed batch, got {other:?}"),
    }
    assert!(
        err.to_string().contains("running the same import again"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 75);
    let counts = store.table_counts().await.unwrap();
    assert_eq!((counts.agreements, counts.installments), (100, 1200));

    store.execute_admin(&disarm).await.unwrap();
    let s = import(store, &path, options)
        .await
        .expect("re-run finishes");
    assert_eq!((s.agreements_new, s.agreements_unchanged), (350, 100));
    assert_eq!((s.installments_written, s.batches), (350 * 12, 4));
    let counts = store.table_counts().await.unwrap();
    assert_eq!(
        (counts.agreements, counts.installments, counts.customers),
        (450, 5400, 225)
    );
}
both_backends!(
    large_files_go_in_batches_and_a_failed_batch_is_finished_by_rerunning,
    super::large_files_go_in_batches_and_a_failed_batch_is_finished_by_rerunning
);

async fn unreadable_and_unknown_files_say_so(db: TestDb) {
    let store = &db.store;
    let err = import(
        store,
        Path::new("/nonexistent/agreements.csv"),
        ImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImportError::Unreadable { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 66);
    let err = import(store, Path::new("agreements.txt"), ImportOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImportError::UnknownFormat { .. }), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let wrapped = dir.path().join("wrapped.json");
    std::fs::write(&wrapped, r#"{"agreements": []}"#).unwrap();
    let err = import(store, &wrapped, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(places(&err), [(Location::File, String::new())]);
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let err = import(store, &empty, ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no agreements"), "{err}");
}
both_backends!(
    unreadable_and_unknown_files_say_so,
    super::unreadable_and_unknown_files_say_so
);

/// A debit attempt row in `state` (set-up only: the debit module owns that SQL).
async fn add_attempt(store: &Store, agreement_id: i64, installment_id: i64, state: &str) {
    let sql = format!(
        "INSERT INTO debit_attempts (installment_id, agreement_id, attempt_no, idempotency_key, \
         scheduled_at_ms, amount_minor, currency, state, created_at_ms, updated_at_ms) \
         VALUES ({installment_id}, {agreement_id}, 1, 'imp-{installment_id}-{state}', 0, 1, \
         'CNY', '{state}', 0, 0)"
    );
    store
        .execute_admin(&sql)
        .await
        .expect("insert debit attempt");
}

/// Consent is never restored by accident: an import changes a mandate's status only with
/// `--update`, never turns `revoked` back into anything, and lists each refused change.
async fn imports_never_restore_a_revoked_mandate(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    let csv = samples().join("agreements.csv");
    import(store, &csv, ImportOptions::default())
        .await
        .expect("samples");
    let account = "US021000021555012";
    store
        .revoke_mandate(
            account,
            true,
            0,
            0,
            &repayd::domain::Actor::new("ops", "customer withdrew consent").unwrap(),
        )
        .await
        .expect("revoke");
    let status = |store: &Store| {
        let store = store.clone();
        async move {
            store
                .agreement_detail("AGR-2026-0003")
                .await
                .unwrap()
                .unwrap()
                .funding_account
                .mandate_status
        }
    };
    assert_eq!(status(store).await, "revoked");

    // The unchanged file again: the mandate stays revoked, and the summary says why.
    let s = import(store, &csv, ImportOptions::default())
        .await
        .expect("re-import");
    assert_eq!(status(store).await, "revoked");
    assert_eq!((s.accounts_updated, s.accounts_unchanged), (0, 5));
    assert_eq!(s.refused_changes.len(), 1, "{:?}", s.refused_changes);
    let refused = &s.refused_changes[0];
    assert!(
        refused.contains("line 4")
            && refused.contains("mandate_status")
            && refused.contains("revoked -> active")
            && refused.contains("never restored")
            && !refused.contains(account),
        "{refused}"
    );
    assert!(s.to_string().contains("refused changes (1)"), "{s}");
    // Not even with --update, nor by way of `pending`.
    let s = import(store, &csv, update())
        .await
        .expect("re-import --update");
    assert_eq!(status(store).await, "revoked");
    assert_eq!(s.refused_changes.len(), 1);
    let pending = edited_sample(dir.path(), "pending.csv", |t| {
        t.replace("MND-US-0001,active", "MND-US-0001,pending")
    });
    let s = import(store, &pending, update()).await.expect("pending");
    assert_eq!(status(store).await, "revoked");
    assert!(s.refused_changes[0].contains("revoked -> pending"));

    // Any other status change needs --update: without it, refused and listed.
    let paused = edited_sample(dir.path(), "paused.csv", |t| {
        t.replace("MND-GB-0001,active", "MND-GB-0001,pending")
    });
    let s = import(store, &paused, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(s.refused_changes.len(), 2, "{:?}", s.refused_changes);
    assert!(
        s.refused_changes
            .iter()
            .any(|r| r.contains("active -> pending") && r.contains("--update")),
        "{:?}",
        s.refused_changes
    );
    let gb = store
        .agreement_detail("AGR-2026-0004")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gb.funding_account.mandate_status, "active");
    let s = import(store, &paused, update())
        .await
        .expect("import --update");
    assert_eq!(s.accounts_updated, 1);
    let gb = store
        .agreement_detail("AGR-2026-0004")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gb.funding_account.mandate_status, "pending");
}
both_backends!(
    imports_never_restore_a_revoked_mandate,
    super::imports_never_restore_a_revoked_mandate
);

/// A changed mandate reference is a different authorization: an import records it only
/// with `--update`; without it the reference stays and the summary lists the refusal.
async fn imports_never_change_a_mandate_reference_without_update(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    import(
        store,
        &samples().join("agreements.csv"),
        ImportOptions::default(),
    )
    .await
    .expect("samples");
    let mandate = |store: &Store| {
        let store = store.clone();
        async move {
            let account = store
                .agreement_detail("AGR-2026-0004")
                .await
                .unwrap()
                .unwrap()
                .funding_account;
            (account.mandate_ref, account.mandate_status)
        }
    };
    let events_before = store.events(None).await.unwrap().len();
    let changed = edited_sample(dir.path(), "new-mandate.csv", |t| {
        t.replace("MND-GB-0001,active", "MND-GB-0009,active")
    });
    let s = import(store, &changed, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(
        mandate(store).await,
        ("MND-GB-0001".to_string(), "active".to_string())
    );
    assert_eq!((s.accounts_updated, s.accounts_unchanged), (0, 5));
    assert_eq!(s.refused_changes.len(), 1, "{:?}", s.refused_changes);
    let refused = &s.refused_changes[0];
    assert!(
        refused.contains("line ")
            && refused.contains("mandate_ref")
            && refused.contains("MND-GB-0001 -> MND-GB-0009")
            && refused.contains("--update"),
        "{refused}"
    );
    assert!(s.to_string().contains("refused changes (1)"), "{s}");
    assert_eq!(store.events(None).await.unwrap().len(), events_before);

    // Reference and status together: both refused, both listed, neither written.
    let both = edited_sample(dir.path(), "both.csv", |t| {
        t.replace("MND-GB-0001,active", "MND-GB-0009,pending")
    });
    let s = import(store, &both, ImportOptions::default())
        .await
        .expect("import");
    assert_eq!(s.refused_changes.len(), 2, "{:?}", s.refused_changes);
    assert_eq!(s.accounts_updated, 0);
    assert_eq!(
        mandate(store).await,
        ("MND-GB-0001".to_string(), "active".to_string())
    );

    // With --update the new reference is recorded.
    let s = import(store, &changed, update()).await.expect("--update");
    assert!(s.refused_changes.is_empty(), "{:?}", s.refused_changes);
    assert_eq!(s.accounts_updated, 1);
    assert_eq!(
        mandate(store).await,
        ("MND-GB-0009".to_string(), "active".to_string())
    );
}
both_backends!(
    imports_never_change_a_mandate_reference_without_update,
    super::imports_never_change_a_mandate_reference_without_update
);

const PRIORITY_HEADER: &str = "customer_external_id,customer_name,email,locale,time_zone,\
    account_ref,mandate_ref,mandate_status,funding_priority,agreement_id,currency,principal,schedule\n";

fn priority_row(account: &str, priority: &str, agreement: &str) -> String {
    format!(
        "C-FP,Li Wei,fp@example.com,en,Asia/Shanghai,{account},MND-{account},active,{priority},\
         {agreement},CNY,500.00,2027-01-15:500.00\n"
    )
}

/// `funding_priority` in CSV and JSON: bad values and clashes named by row and field,
/// nothing written; the order set as `funding-sources set` sets it; a changed order
/// needs `--update`.
async fn imports_set_funding_priorities(db: TestDb) {
    let store = &db.store;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let order = |store: &Store| {
        let store = store.clone();
        async move {
            let c = store.customers_by_external_ids(&["C-FP"]).await.unwrap();
            store
                .customer_funding_sources(c[0].id)
                .await
                .unwrap()
                .into_iter()
                .map(|f| (f.account_ref, f.priority))
                .collect::<Vec<_>>()
        }
    };

    // Not a whole number, zero, and one priority twice for one customer.
    let bad = write(
        "bad.csv",
        format!(
            "{PRIORITY_HEADER}{}{}{}{}",
            priority_row("ACC-FP-1", "first", "AGR-FP-1"),
            priority_row("ACC-FP-2", "0", "AGR-FP-2"),
            priority_row("ACC-FP-3", "1", "AGR-FP-3"),
            priority_row("ACC-FP-4", "1", "AGR-FP-4"),
        ),
    );
    let err = import(store, &bad, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        places(&err),
        vec![
            (Location::Line(2), "funding_priority".to_string()),
            (Location::Line(3), "funding_priority".to_string()),
            (Location::Line(5), "funding_priority".to_string()),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("\"first\""), "{text}");
    assert!(text.contains("priority 1 twice (also at line 4)"), "{text}");
    assert!(
        store
            .customers_by_external_ids(&["C-FP"])
            .await
            .unwrap()
            .is_empty()
    );
    // The same account given two priorities on two rows.
    let twice = write(
        "twice.csv",
        format!(
            "{PRIORITY_HEADER}{}{}",
            priority_row("ACC-FP-1", "1", "AGR-FP-1"),
            priority_row("ACC-FP-1", "2", "AGR-FP-2"),
        ),
    );
    let err = import(store, &twice, ImportOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        places(&err),
        vec![(Location::Line(3), "funding_priority".to_string())]
    );
    // JSON: the field is funding_account.priority; a fraction is refused.
    let json = |p1: &str, p2: &str| {
        let item = |acc: &str, p: &str, agr: &str| {
            format!(
                r#"{{"agreement_id":"{agr}","currency":"CNY","principal":"500.00",
                "customer":{{"external_id":"C-FP","name":"Li Wei","email":"fp@example.com","locale":"en","time_zone":"Asia/Shanghai"}},
                "funding_account":{{"ref":"{acc}","mandate_ref":"MND-{acc}","mandate_status":"active","priority":{p}}},
                "schedule":[{{"due_date":"2027-01-15","principal":"500.00"}}]}}"#
            )
        };
        format!(
            "[{},{}]",
            item("ACC-FP-1", p1, "AGR-FP-1"),
            item("ACC-FP-2", p2, "AGR-FP-2")
        )
    };
    let err = import(
        store,
        &write("bad.json", json("1.5", "2")),
        ImportOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        places(&err),
        vec![(Location::Item(0), "funding_account.priority".to_string())],
        "{err}"
    );

    // Good: account 2 first. Stored as funding-sources set stores it.
    let good = write("good.json", json("2", "1"));
    let s = import(store, &good, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((s.funding_orders_set, s.funding_orders_unchanged), (1, 0));
    assert!(
        s.to_string().contains("funding orders: 1 set, 0 unchanged"),
        "{s}"
    );
    let expected = vec![
        ("ACC-FP-2".to_string(), Some(1)),
        ("ACC-FP-1".to_string(), Some(2)),
    ];
    assert_eq!(order(store).await, expected);
    let set = store
        .events(None)
        .await
        .unwrap()
        .into_iter()
        .rfind(|e| e.kind == "funding_sources_set")
        .unwrap();
    assert!(
        set.detail.contains("\"actor\":\"import\""),
        "{}",
        set.detail
    );
    // Again: unchanged.
    let s = import(store, &good, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!((s.funding_orders_set, s.funding_orders_unchanged), (0, 1));
    // The other order: refused without --update (listed), made with it.
    let swapped = write("swapped.json", json("1", "2"));
    let s = import(store, &swapped, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(s.funding_orders_set, 0);
    assert_eq!(s.refused_changes.len(), 1, "{:?}", s.refused_changes);
    assert!(
        s.refused_changes[0].contains("funding order of customer C-FP")
            && s.refused_changes[0].contains("pass --update"),
        "{:?}",
        s.refused_changes
    );
    assert_eq!(order(store).await, expected);
    let dry = ImportOptions {
        update: true,
        dry_run: true,
        ..Default::default()
    };
    let s = import(store, &swapped, dry).await.unwrap();
    assert_eq!(s.funding_orders_set, 1);
    assert_eq!(order(store).await, expected, "a dry run writes nothing");
    let s = import(store, &swapped, update()).await.unwrap();
    assert_eq!(s.funding_orders_set, 1);
    assert_eq!(
        order(store).await,
        vec![
            ("ACC-FP-1".to_string(), Some(1)),
            ("ACC-FP-2".to_string(), Some(2)),
        ]
    );
}
both_backends!(
    imports_set_funding_priorities,
    super::imports_set_funding_priorities
);
