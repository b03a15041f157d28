//! The migrations as a whole, on both backends: an index created by any migration still
//! exists after all of them ran (0007 rebuilds `debit_attempts` on SQLite to change a CHECK
//! constraint, and a rebuilt table loses the indexes it does not create again).

use crate::both_backends;
use crate::helpers::TestDb;
use repayd::store::Backend;
use std::collections::BTreeMap;
use std::path::Path;

/// `(table, index)` for every `CREATE [UNIQUE] INDEX [IF NOT EXISTS] name ON table` in the
/// backend's migrations, minus those a later `DROP INDEX` removed.
fn declared_indexes(backend: Backend) -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    });
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut indexes = BTreeMap::new();
    for file in files {
        let sql = std::fs::read_to_string(&file).expect("migration");
        let words: Vec<String> = sql
            .lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .map(|w| w.trim_end_matches(';').to_string())
            .collect();
        for (i, w) in words.iter().enumerate() {
            let upper = |j: usize| words.get(j).map(|w| w.to_ascii_uppercase());
            if w.eq_ignore_ascii_case("CREATE") {
                let mut j = i + 1;
                if upper(j).as_deref() == Some("UNIQUE") {
                    j += 1;
                }
                if upper(j).as_deref() != Some("INDEX") {
                    continue;
                }
                j += 1;
                if upper(j).as_deref() == Some("IF") {
                    j += 3;
                }
                let name = words[j].clone();
                assert_eq!(upper(j + 1).as_deref(), Some("ON"), "{file:?}: {name}");
                let table = words[j + 2].split('(').next().unwrap_or("").to_string();
                indexes.insert(name, table);
            } else if w.eq_ignore_ascii_case("DROP") && upper(i + 1).as_deref() == Some("INDEX") {
                let mut j = i + 2;
                if upper(j).as_deref() == Some("IF") {
                    j += 2;
                }
                indexes.remove(&words[j]);
            }
        }
    }
    indexes
}

async fn every_declared_index_survives_all_migrations(db: TestDb) {
    let declared = declared_indexes(db.store.backend());
    assert!(
        declared.contains_key("debit_attempts_to_run"),
        "parser found {declared:?}"
    );
    // Dropped by 0016: the parser follows DROP INDEX too.
    assert!(!declared.contains_key("debit_attempts_installment"));
    for (index, table) in &declared {
        let present = db.store.index_names(table).await.unwrap();
        assert!(
            present.contains(index),
            "index {index} on {table} is missing after all migrations ({present:?})"
        );
    }
}
both_backends!(
    every_declared_index_survives_all_migrations,
    super::every_declared_index_survives_all_migrations
);
