//! The bad-input corpus (`tests/corpus/`): configurations, import files, command lines and
//! gateway answers that must each be refused with a message naming what and where, with
//! nothing written and no panic. Every file is one case; `tests/corpus/README.md` says how
//! to add one.

use repayd::gateway::http::{HttpGateway, HttpGatewaySettings};
use repayd::gateway::{DebitRequest, PaymentGateway};
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x != "expect"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no cases in {}", dir.display());
    files
}

/// `# expect: TEXT` lines of a case, or the lines of its `.expect` sidecar (`line:2`
/// meaning `line 2`, `item:[0]` meaning `item [0]`).
fn expectations(case: &Path, text: &str) -> Vec<String> {
    let sidecar = case.with_extension("expect");
    let mut expect: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect();
    if let Ok(more) = std::fs::read_to_string(&sidecar) {
        expect.extend(more.split_whitespace().map(|w| {
            w.strip_prefix("line:")
                .map(|n| format!("line {n}"))
                .or_else(|| w.strip_prefix("item:").map(|n| format!("item {n}")))
                .unwrap_or_else(|| w.to_string())
        }));
    }
    assert!(
        !expect.is_empty(),
        "{}: says nothing it expects",
        case.display()
    );
    expect
}

/// A working configuration with its database and outbox under `dir`.
fn base_config(dir: &Path) -> PathBuf {
    let path = dir.join("repayd.toml");
    std::fs::write(
        &path,
        format!(
            "[database]\nurl = \"sqlite://{d}/var/repayd.db\"\n\n[gateway]\nkind = \"sandbox\"\n\n\
             [mail]\nkind = \"outbox\"\nfrom = \"Repayments <repayments@example.com>\"\n\
             outbox_dir = \"{d}/outbox\"\nlender_name = \"Example Lending\"\n",
            d = dir.display()
        ),
    )
    .expect("write config");
    path
}

fn repayd(config: &Path, args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repayd"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .env_remove("REPAYD_CONFIG")
        .output()
        .expect("run repayd")
}

/// A refusal as the corpus demands: a non-zero exit that is not a crash, every expected
/// text in stderr, and no panic.
fn assert_refused(case: &Path, out: &Output, expect: &[String]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        matches!(code, Some(c) if c != 0 && c != 101),
        "{}: exit {code:?} (a crash or a success), stderr:\n{stderr}",
        case.display()
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{}: panicked:\n{stderr}",
        case.display()
    );
    for e in expect {
        assert!(
            stderr.contains(e.as_str()),
            "{}: stderr does not name {e:?}:\n{stderr}",
            case.display()
        );
    }
    assert!(
        stderr.len() < 4_000,
        "{}: {} bytes of error output",
        case.display(),
        stderr.len()
    );
}

/// Row counts of every table, through a second process (`repayd` itself): what a case
/// must leave unchanged.
async fn table_counts(dir: &Path) -> String {
    let url = format!("sqlite://{}/var/repayd.db", dir.display());
    let store = repayd::store::Store::connect(&SecretString::from(url), 1)
        .await
        .expect("open");
    let counts = store.table_counts().await.expect("counts");
    store.close().await;
    format!("{counts:?}")
}

#[test]
fn bad_configurations_are_refused_naming_the_key() {
    let cases = corpus("config");
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
        let text = std::fs::read_to_string(case).unwrap();
        let config = dir.path().join("repayd.toml");
        std::fs::write(
            &config,
            text.replace("@DIR@", &dir.path().display().to_string()),
        )
        .unwrap();
        let out = repayd(&config, &["check-config".to_string()]);
        assert_refused(case, &out, &expectations(case, &text));
        assert_eq!(out.status.code(), Some(78), "{}", case.display());
        // check-config creates nothing: no database, no outbox.
        assert!(!dir.path().join("var").exists(), "{}", case.display());
    }
    eprintln!("config corpus: {} cases", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_import_files_are_refused_whole_naming_line_and_field() {
    let cases = corpus("import");
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path());
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/agreements.csv");
    let out = repayd(&config, &["import".into(), samples.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = table_counts(dir.path()).await;
    for case in &cases {
        let text = String::from_utf8_lossy(&std::fs::read(case).unwrap()).into_owned();
        for dry_run in [false, true] {
            let mut args = vec!["import".to_string(), case.display().to_string()];
            if dry_run {
                args.push("--dry-run".into());
            }
            let out = repayd(&config, &args);
            assert_refused(case, &out, &expectations(case, &text));
            assert_eq!(out.status.code(), Some(65), "{}", case.display());
        }
        assert_eq!(table_counts(dir.path()).await, before, "{}", case.display());
    }
    eprintln!("import corpus: {} cases", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_command_lines_are_refused_naming_the_argument() {
    let cases = corpus("cli");
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(dir.path());
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/agreements.csv");
    let out = repayd(&config, &["import".into(), samples.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = table_counts(dir.path()).await;
    let corpus_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let line = text.lines().next().expect("an argument line");
        let args: Vec<String> = line
            .split_whitespace()
            .map(|a| {
                a.replace("@DIR@", &dir.path().display().to_string())
                    .replace("@CORPUS@", &corpus_dir.display().to_string())
            })
            .collect();
        let out = repayd(&config, &args);
        assert_refused(case, &out, &expectations(case, &text));
        assert_eq!(table_counts(dir.path()).await, before, "{}", case.display());
    }
    eprintln!("cli corpus: {} cases", cases.len());
}

/// Serves one canned answer to every request.
async fn answering(status: u16, body: String) -> String {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                StatusCode::from_u16(status).expect("status"),
                [("content-type", "application/json")],
                body,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_answers_are_errors_naming_the_operation() {
    let cases = corpus("gateway");
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap();
        let header = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .unwrap_or_else(|| panic!("{}: no `# {key}:` line", case.display()))
                .to_string()
        };
        let body: String = text
            .lines()
            .filter(|l| !l.starts_with("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let status: u16 = header("status").parse().unwrap();
        let base = answering(status, body).await;
        let mut settings = HttpGatewaySettings::new(&base, SecretString::from("corpus-token"));
        settings.funds_check_retries = 0;
        settings.request_timeout_ms = 2_000;
        let gw = HttpGateway::new(&settings).unwrap();
        let cny = repayd::domain::Currency::parse("CNY").unwrap();
        let amount = repayd::domain::Money::parse("10.00", cny).unwrap();
        let result = match header("op").as_str() {
            "funds" => gw
                .check_funds("CN0001", &amount)
                .await
                .map(|a| format!("{a:?}")),
            "debit" => gw
                .debit(&DebitRequest {
                    account_ref: "CN0001".into(),
                    mandate_ref: "MND-1".into(),
                    amount,
                    idempotency_key: "corpus-key".into(),
                    reference: "corpus".into(),
                })
                .await
                .map(|o| format!("{o:?}")),
            "lookup" => gw.lookup("corpus-key").await.map(|o| format!("{o:?}")),
            other => panic!("{}: unknown op {other}", case.display()),
        };
        let err = match result {
            Ok(answer) => panic!("{}: accepted as {answer}", case.display()),
            Err(e) => e.to_string(),
        };
        for e in expectations(case, &text) {
            assert!(
                err.contains(&e),
                "{}: {err:?} does not name {e:?}",
                case.display()
            );
        }
        assert!(!err.contains("corpus-token"), "{}: {err}", case.display());
    }
    eprintln!("gateway corpus: {} cases", cases.len());
}
