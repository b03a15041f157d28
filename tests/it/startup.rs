//! Start-up against real databases: the Unix-socket URL the operations guide documents
//! connects to the local PostgreSQL, and permanent database errors end the real binary
//! with exit 78 (EX_CONFIG, which the unit does not restart) naming the key the URL came
//! from, while a refused connection stays an ordinary, retried failure.

use crate::helpers::POSTGRES_ENV;
use repayd::store::Store;
use secrecy::SecretString;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// Where Debian's PostgreSQL puts its socket (override with REPAYD_TEST_POSTGRES_SOCKET_DIR).
fn socket_dir() -> Option<String> {
    let dir = std::env::var("REPAYD_TEST_POSTGRES_SOCKET_DIR")
        .unwrap_or_else(|_| "/var/run/postgresql".to_string());
    if Path::new(&dir).join(".s.PGSQL.5432").exists() {
        Some(dir)
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: PostgreSQL socket test (no {dir}/.s.PGSQL.5432)"
        );
        None
    }
}

#[tokio::test]
async fn documented_unix_socket_urls_connect_to_the_local_postgresql() {
    let Some(dir) = socket_dir() else { return };
    for url in [
        // The form in docs/operations.md (libpq's), and the one without a user part.
        format!("postgres://postgres@/postgres?host={dir}"),
        format!("postgres:///postgres?host={dir}&user=postgres"),
    ] {
        let store = Store::connect(&SecretString::from(url.clone()), 1)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        store.ping().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        store.close().await;
        // check-config's probe takes the same URL.
        Store::probe(&SecretString::from(url.clone()))
            .await
            .unwrap_or_else(|e| panic!("probe {url}: {e}"));
    }
    // The socket really is what is used: a directory without one fails, although TCP
    // to localhost would have worked.
    let missing = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://postgres@/postgres?host={}",
        missing.path().display()
    );
    assert!(Store::connect(&SecretString::from(url), 1).await.is_err());
}

/// Runs `repayd migrate` with `[database]` set to `database` and returns (exit code, stderr).
fn migrate_with(dir: &Path, database: &str) -> (i32, String) {
    let config = dir.join("repayd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
{database}

[gateway]
kind = "sandbox"

[mail]
kind = "outbox"
from = "Repayments <repayments@example.com>"
outbox_dir = "{outbox}"
lender_name = "Example Lending"
"#,
            outbox = dir.join("outbox").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_repayd"))
        .args(["--config", config.to_str().unwrap(), "migrate"])
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn permanent_database_errors_exit_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A malformed URL, given inline.
    let (code, err) = migrate_with(
        dir.path(),
        r#"url = "postgres://repayd@db.internal:99999/repayd""#,
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`database.url`"), "{err}");
    // An SQLite file that cannot be created, from a url_file.
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, "sqlite:///proc/repayd-no-such/repayd.db\n").unwrap();
    let (code, err) = migrate_with(
        dir.path(),
        &format!("url_file = \"{}\"", url_file.display()),
    );
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("`database.url_file`"), "{err}");
    assert!(!err.contains("`database.url`"), "{err}");

    let Ok(admin_url) = std::env::var(POSTGRES_ENV) else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: PostgreSQL exit-code cases ({POSTGRES_ENV} is not set)"
        );
        return;
    };
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b.to_string())
        .unwrap();
    // A missing database and a missing role (authentication), from url_file.
    for (url, says) in [
        (format!("{base}/repayd_no_such_database"), "does not exist"),
        (
            base.replacen("postgres@", "repayd_no_such_role@", 1) + "/postgres",
            "repayd_no_such_role",
        ),
    ] {
        std::fs::write(&url_file, format!("{url}\n")).unwrap();
        let (code, err) = migrate_with(
            dir.path(),
            &format!("url_file = \"{}\"", url_file.display()),
        );
        assert_eq!(code, 78, "{url}: {err}");
        assert!(err.contains("`database.url_file`"), "{err}");
        assert!(err.contains(says), "{err}");
    }
    // Nothing listening: may be cured by waiting, so an ordinary failure (restarted).
    let (code, err) = migrate_with(
        dir.path(),
        r#"url = "postgres://postgres@127.0.0.1:1/postgres""#,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("database.url"), "{err}");
}

/// Outside systemd (umask 022 inherited) the database and its directory are still private:
/// repayd sets its own umask (0027) before it creates anything.
#[test]
fn files_are_private_whatever_the_inherited_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("repayd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/repayd.db\"\n\n[gateway]\nkind = \"sandbox\"\n\n\
             [mail]\nkind = \"outbox\"\nfrom = \"r@example.com\"\noutbox_dir = \"{}\"\n",
            state.display(),
            dir.path().join("outbox").display()
        ),
    )
    .unwrap();
    let out = Command::new("sh")
        .args(["-c", "umask 022 && exec \"$0\" --config \"$1\" migrate"])
        .arg(env!("CARGO_BIN_EXE_repayd"))
        .arg(&config)
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o750, "the database directory");
    for entry in std::fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o640, "{}", path.display());
    }
}
