//! The real `repayd` binary as operations run it: started with a config file, probed over
//! /readyz and /metrics, reloaded with SIGHUP (a broken template is refused, the old one
//! stays), stopped with SIGTERM while debits are in flight (all recorded, exit 0), and its
//! logs searched for personal data that should have been masked; and `repayd reload`
//! (the unit's ExecReload) against the real daemon's control socket, with what the daemon
//! tells systemd captured on a real notify socket.

use repayd::clock::SystemClock;
use repayd::config::ScheduleDefaults;
use repayd::import::{ImportOptions, import_file};
use repayd::store::Store;
use secrecy::SecretString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sample personal data: none of it may appear whole in a log line.
fn email(i: usize) -> String {
    format!("customer.{i:02}@example.com")
}
fn account(i: usize) -> String {
    format!("CN62220202{i:08}")
}

const HEADER: &str = "customer_external_id,customer_name,email,locale,time_zone,account_ref,mandate_ref,mandate_status,agreement_id,currency,principal,method,installments,annual_rate,fee_rate,first_due,frequency,rounding,remainder,business_day,schedule";

/// Agreements `ids`, each 100.00 CNY in two interest-free installments, the first due
/// today (UTC), so 50.00 is due at once.
fn agreements_csv(dir: &Path, name: &str, ids: std::ops::Range<usize>) -> PathBuf {
    let today = chrono::Utc::now().date_naive();
    let mut csv = format!("{HEADER}\n");
    for i in ids {
        csv.push_str(&format!(
            "CUST-{i:03},Customer {i},{},en,UTC,{},MND-{i:03},active,AGR-{i:03},CNY,100.00,interest-free,2,0,0,{today},monthly,,,,\n",
            email(i),
            account(i)
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

/// Imports through the library, as `repayd import` does, with its own short runtime.
pub(crate) fn import(db_url: &str, file: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(&SecretString::from(db_url.to_string()), 2)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        import_file(
            &store,
            file,
            None,
            &ImportOptions::default(),
            &ScheduleDefaults::default(),
            &SystemClock,
        )
        .await
        .unwrap_or_else(|e| panic!("import {}: {e}", file.display()));
        store.close().await;
    });
}

/// Attempts per state, read from the database file directly.
fn attempt_states(db_url: &str) -> Vec<(String, i64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(&SecretString::from(db_url.to_string()), 1)
            .await
            .unwrap();
        let counts = store.attempt_state_counts().await.unwrap();
        store.close().await;
        counts
    })
}

/// The daemon under test, its output collected line by line as it comes.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        Daemon::start_with(config, &[])
    }

    /// Started with extra environment, e.g. systemd's NOTIFY_SOCKET and RUNTIME_DIRECTORY.
    fn start_with(config: &Path, env: &[(&str, &Path)]) -> Daemon {
        let mut command = Command::new(env!("CARGO_BIN_EXE_repayd"));
        command
            .args(["--config", config.to_str().unwrap(), "run"])
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("JOURNAL_STREAM");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start repayd");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Daemon { child, lines }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits for a log line containing `text`; returns it.
    fn wait_for_line(&mut self, text: &str, timeout: Duration) -> String {
        let found = wait_until(timeout, || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned()
        });
        found.unwrap_or_else(|| {
            let status = self.child.try_wait().ok().flatten();
            panic!(
                "no log line with {text:?} (daemon exited: {status:?}); output:\n{}",
                self.output()
            )
        })
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status = wait_until(timeout, || self.child.try_wait().unwrap());
        status.unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!(
                "repayd did not exit within {timeout:?}; output:\n{}",
                self.output()
            )
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed assertion must not leave a daemon behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `probe` every 50 ms until it gives something or `timeout` passes.
pub(crate) fn wait_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 GET: the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `name` (with its labels, exactly as written) in a scrape.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    body
}

/// Subjects of the receipts (debit succeeded) in the outbox.
fn receipt_subjects(outbox: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(outbox) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.contains(".debit_succeeded.") && name.ends_with(".eml")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

const SUCCEEDED: &str = "repayd_debit_attempts{state=\"succeeded\"}";
const IN_FLIGHT: [&str; 3] = ["claimed", "funds_checked", "submitted"];

#[test]
fn real_binary_serves_metrics_reloads_and_stops_cleanly() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("repayd.db").display());
    let outbox = dir.path().join("outbox");
    let templates = dir.path().join("templates");
    let subject = templates.join("en").join("debit_succeeded.subject.txt");
    std::fs::create_dir_all(subject.parent().unwrap()).unwrap();
    std::fs::write(&subject, "Payment received (template v1)\n").unwrap();
    let config = dir.path().join("repayd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{db_url}"

[log]
format = "json"
level = "info"

[debit]
local_time = "00:00"     # due today means due now
lease_seconds = 30
key_prefix = "it-daemon"

[reminders]
quiet_hours_start = "00:00"   # none: receipts go out whatever the hour of the test
quiet_hours_end = "00:00"

[engine]
planner_cron = "* * * * * *"
poll_seconds = 1
drain_seconds = 20

[gateway]
kind = "sandbox"

[gateway.sandbox]
latency_ms = 150              # slow debits, so SIGTERM finds some in flight

[mail]
kind = "outbox"
from = "Repayments <repayments@example.com>"
outbox_dir = "{outbox}"
templates_dir = "{templates}"
lender_name = "Example Lending"

[http]
listen = "127.0.0.1:0"
"#,
            outbox = outbox.display(),
            templates = templates.display(),
        ),
    )
    .unwrap();

    // Four agreements due now, before the daemon starts.
    import(&db_url, &agreements_csv(dir.path(), "a.csv", 0..4));
    let mut daemon = Daemon::start(&config);

    // Every line is one JSON object (log.format = "json"); one names the bound address.
    let line = daemon.wait_for_line("http server listening", Duration::from_secs(20));
    let json: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let addr: SocketAddr = json["fields"]["addr"].as_str().unwrap().parse().unwrap();

    let ready = wait_until(Duration::from_secs(10), || {
        http_get(addr, "/readyz").ok().filter(|(s, _)| *s == 200)
    });
    let (_, body) = ready.expect("/readyz never answered 200");
    assert!(body.contains("\"database\":\"ok\""), "{body}");
    assert_eq!(http_get(addr, "/healthz").unwrap(), (200, "ok\n".into()));

    // Work done: four debits of 50.00 CNY, with receipts from the v1 template. Finished
    // attempts and amounts are tallies, read again in the background 15 s after the
    // last read at the soonest: give them two of those.
    let metrics = wait_until(Duration::from_secs(45), || {
        let m = scrape(addr);
        (sample(&m, SUCCEEDED) == Some(4.0)).then_some(m)
    })
    .unwrap_or_else(|| panic!("4 succeeded debits never showed:\n{}", scrape(addr)));
    assert_eq!(
        sample(&metrics, "repayd_debited_minor_units{currency=\"CNY\"}"),
        Some(20_000.0)
    );
    assert_eq!(
        sample(&metrics, "repayd_debited_amount{currency=\"CNY\"}"),
        Some(200.0)
    );
    assert!(
        sample(
            &metrics,
            "repayd_gateway_request_duration_seconds_count{operation=\"debit\",result=\"ok\"}"
        )
        .unwrap()
            >= 4.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "repayd_gateway_debit_outcomes_total{outcome=\"succeeded\"}"
        ),
        Some(4.0)
    );
    assert!(metrics.contains("repayd_oldest_due_work_age_seconds{work=\"debit\"}"));
    assert_eq!(sample(&metrics, "repayd_database_up"), Some(1.0));
    wait_until(Duration::from_secs(10), || {
        (receipt_subjects(&outbox).len() == 4).then_some(())
    })
    .expect("4 receipts in the outbox");

    // simulate beside the running daemon: it takes no lock and disturbs nothing.
    let simulated = Command::new(env!("CARGO_BIN_EXE_repayd"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "simulate",
            "--days",
            "2",
        ])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        simulated.status.success(),
        "{}",
        String::from_utf8_lossy(&simulated.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&simulated.stdout).expect("JSON timeline");
    assert_eq!(sample(&scrape(addr), SUCCEEDED), Some(4.0));

    // SIGHUP with a broken override: refused, old templates kept, daemon still serving.
    std::fs::write(&subject, "Payment received {{ broken\n").unwrap();
    daemon.signal("HUP");
    let rejected = daemon.wait_for_line("reload rejected", Duration::from_secs(10));
    assert!(
        rejected.contains("debit_succeeded.subject.txt"),
        "{rejected}"
    );
    assert_eq!(http_get(addr, "/healthz").unwrap().0, 200);
    import(&db_url, &agreements_csv(dir.path(), "b.csv", 4..6));
    wait_until(Duration::from_secs(15), || {
        (receipt_subjects(&outbox).len() == 6).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "6 receipts never showed: {:?}\n{}",
            receipt_subjects(&outbox),
            daemon.output()
        )
    });
    for s in receipt_subjects(&outbox) {
        assert_eq!(s, "Payment received (template v1)");
    }
    // The outbox holds personal data: nothing in it is readable by others, whatever umask
    // the test harness passed on (repayd sets 0027 itself).
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&outbox) & 0o027, 0, "outbox {:o}", mode(&outbox));
        for entry in std::fs::read_dir(&outbox).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(
                mode(&path) & 0o027,
                0,
                "{} {:o}",
                path.display(),
                mode(&path)
            );
        }
    }

    // SIGTERM while debits are in flight: they finish and are recorded; exit code 0.
    import(&db_url, &agreements_csv(dir.path(), "c.csv", 6..22));
    wait_until(Duration::from_secs(15), || {
        let m = scrape(addr);
        IN_FLIGHT
            .iter()
            .any(|s| sample(&m, &format!("repayd_debit_attempts{{state=\"{s}\"}}")) > Some(0.0))
            .then_some(())
    })
    .expect("no debit was ever seen in flight");
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(25));
    let output = daemon.output();
    assert!(status.success(), "exit {status:?}; output:\n{output}");
    assert!(output.contains("stopped cleanly"), "{output}");
    if std::env::var_os("REPAYD_TEST_SHOW_LOGS").is_some() {
        eprintln!("{output}");
    }
    let states = attempt_states(&db_url);
    for (state, n) in &states {
        assert!(
            !IN_FLIGHT.contains(&state.as_str()),
            "{n} attempts left {state} after exit: {states:?}"
        );
    }
    let succeeded = states
        .iter()
        .find(|(s, _)| s == "succeeded")
        .map(|(_, n)| *n);
    assert!(
        succeeded.is_some_and(|n| n > 6),
        "in-flight debits were not recorded: {states:?}"
    );

    // Personal data: masked forms present, whole values absent, in every line.
    assert!(
        output.contains("c***@example.com"),
        "no masked email logged"
    );
    for i in 0..22 {
        assert!(!output.contains(&email(i)), "{} in the logs", email(i));
        assert!(!output.contains(&account(i)), "{} in the logs", account(i));
    }
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A daemon's configuration in `dir` for the kill -9 tests: SQLite file, the sandbox bank
/// (`latency_ms` per call), a file outbox, no HTTP listener, the planner every second;
/// `debit_extra` goes into `[debit]`. Returns the database URL and the config's path.
fn kill_test_config(
    dir: &Path,
    key_prefix: &str,
    latency_ms: u64,
    debit_extra: &str,
) -> (String, PathBuf) {
    let db_url = format!("sqlite://{}", dir.join("repayd.db").display());
    let config = dir.join("repayd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "{db_url}"

[log]
format = "json"

[debit]
local_time = "00:00"
lease_seconds = 300           # far longer than the test: the restart must not wait for it
key_prefix = "{key_prefix}"
{debit_extra}

[engine]
planner_cron = "* * * * * *"
poll_seconds = 1

[gateway]
kind = "sandbox"

[gateway.sandbox]
latency_ms = {latency_ms}

[mail]
kind = "outbox"
from = "Repayments <repayments@example.com>"
outbox_dir = "{outbox}"

[http]
enabled = false
"#,
            outbox = dir.join("outbox").display(),
        ),
    )
    .unwrap();
    (db_url, config)
}

/// Invariant 5 with the real process: `kill -9` while debits are at the bank, restart,
/// and every installment ends debited exactly once (counted at the sandbox bank by key).
#[test]
fn kill_9_mid_debit_then_restart_debits_each_installment_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Each bank call takes a while: kill -9 lands mid-debit.
    let (db_url, config) = kill_test_config(dir.path(), "it-kill", 400, "");
    import(&db_url, &agreements_csv(dir.path(), "k.csv", 0..12));

    let mut first = Daemon::start(&config);
    let in_flight = wait_until(Duration::from_secs(20), || {
        let states = attempt_states(&db_url);
        states
            .iter()
            .any(|(s, n)| s == "submitted" && *n > 0)
            .then_some(states)
    });
    assert!(
        in_flight.is_some(),
        "no debit ever in flight:\n{}",
        first.output()
    );
    first.signal("KILL");
    let status = first.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "killed, not exited");
    let left = attempt_states(&db_url);
    assert!(
        left.iter()
            .any(|(s, n)| IN_FLIGHT.contains(&s.as_str()) && *n > 0),
        "the kill should leave work in flight: {left:?}"
    );

    let mut second = Daemon::start(&config);
    second.wait_for_line("taken over", Duration::from_secs(20));
    let done = wait_until(Duration::from_secs(60), || {
        let states = attempt_states(&db_url);
        // The second installments (next month) stay planned.
        (states == vec![("scheduled".to_string(), 12), ("succeeded".to_string(), 12)]).then_some(())
    });
    assert!(
        done.is_some(),
        "not all 12 debits succeeded: {:?}\n{}",
        attempt_states(&db_url),
        second.output()
    );
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(30)).success());

    // At the bank: one booking per key, twelve in all, 50.00 CNY each.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(&SecretString::from(db_url.clone()), 1)
            .await
            .unwrap();
        for i in 0..12 {
            assert_eq!(
                store.sandbox_debit_count(&account(i)).await.unwrap(),
                1,
                "account {i} debited once"
            );
        }
        store.close().await;
    });
}

/// What the daemon sends to its NOTIFY_SOCKET, one datagram per string.
struct NotifyListener {
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifyListener {
    fn bind(path: &Path) -> NotifyListener {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifyListener { messages }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

fn sha256_12(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))[..12].to_string()
}

fn repayd_reload(socket: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_repayd"))
        .args([
            "reload",
            "--socket",
            socket.to_str().unwrap(),
            "--timeout",
            "20",
        ])
        .env_remove("JOURNAL_STREAM")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn repayd_reload_reports_the_outcome_after_telling_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let notify = NotifyListener::bind(&dir.path().join("notify.sock"));
    let config = dir.path().join("repayd.toml");
    let good = format!(
        r#"
[database]
url = "sqlite://{db}"

[retry]
max_attempts = 4

[gateway]
kind = "sandbox"

[mail]
kind = "outbox"
from = "Repayments <repayments@example.com>"
outbox_dir = "{outbox}"
lender_name = "Example Lending"

[http]
enabled = false
"#,
        db = dir.path().join("repayd.db").display(),
        outbox = dir.path().join("outbox").display(),
    );
    std::fs::write(&config, &good).unwrap();
    let first = sha256_12(&config);
    let mut daemon = Daemon::start_with(
        &config,
        &[
            ("NOTIFY_SOCKET", &dir.path().join("notify.sock")),
            ("RUNTIME_DIRECTORY", &runtime),
        ],
    );
    wait_until(Duration::from_secs(30), || {
        notify
            .all()
            .iter()
            .any(|m| m.contains("READY=1"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no READY=1; output:\n{}", daemon.output()));
    assert!(
        notify.all().iter().any(|m| m.contains(&format!(
            "STATUS=settings in force: {} (sha256 {first})",
            config.display()
        ))),
        "{:?}",
        notify.all()
    );
    let socket = runtime.join("control.sock");

    // A good reload: exit 0, and systemd heard RELOADING=1 with MONOTONIC_USEC, then
    // READY=1 with the new file's digest, before the answer came.
    std::fs::write(
        &config,
        good.replace("max_attempts = 4", "max_attempts = 5"),
    )
    .unwrap();
    let second = sha256_12(&config);
    let before = notify.all().len();
    let (code, stdout, stderr) = repayd_reload(&socket);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("sha256 {second}")), "{stdout}");
    let sent = notify.all()[before..].to_vec();
    assert!(
        sent.len() >= 2
            && sent[0].contains("RELOADING=1")
            && sent[0].contains("MONOTONIC_USEC=")
            && sent[1].contains("READY=1")
            && sent[1].contains(&format!("sha256 {second}")),
        "{sent:?}"
    );

    // A rejected reload: exit 78 with the reason; the previous settings stay in force.
    std::fs::write(
        &config,
        good.replace("max_attempts = 4", "max_attempts = 4\nmax_atempts = 5"),
    )
    .unwrap();
    let before = notify.all().len();
    let (code, stdout, stderr) = repayd_reload(&socket);
    assert_eq!(code, 78, "{stdout}{stderr}");
    assert!(stderr.contains("max_atempts"), "{stderr}");
    let sent = notify.all()[before..].to_vec();
    let last = sent.last().expect("notified");
    assert!(
        last.contains("READY=1")
            && last.contains(&format!("sha256 {second}"))
            && last.contains("rejected"),
        "{sent:?}"
    );
    daemon.wait_for_line("reload rejected", Duration::from_secs(5));

    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
    // Nobody listening any more: the client says so and fails.
    let (code, _, stderr) = repayd_reload(&socket);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("control socket"), "{stderr}");
}

/// One number read from the database file: `sql` is a `SELECT` of one integer.
fn count(db_url: &str, sql: &'static str) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(db_url)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&db).await.unwrap();
        db.close().await;
        n
    })
}

/// Returned debits (protocol 1.1) with the real process: the bank returns 250 debits,
/// three pages of the feed; the daemon is killed with SIGKILL again and again while it
/// reads and applies them, and restarted. After every kill the applied returns are
/// exactly those up to the committed cursor (a page and the cursor's move commit
/// together), and in the end every return is applied once: each installment reopened
/// once (its 50.00 unpaid again, not 100.00), one `debit_returned` event (the operations
/// alert) and one customer notice per return, and a retry planned by policy.
#[test]
fn kill_9_while_applying_returns_applies_each_return_exactly_once() {
    const N: usize = 250;
    let dir = tempfile::tempdir().unwrap();
    let (db_url, config) = kill_test_config(dir.path(), "it-ret", 0, "returns_poll_seconds = 1");
    import(&db_url, &agreements_csv(dir.path(), "r.csv", 0..N));

    // Today's first installments are debited, then the daemon stops.
    let mut first = Daemon::start(&config);
    let debited = wait_until(Duration::from_secs(120), || {
        let states = attempt_states(&db_url);
        states
            .contains(&("succeeded".to_string(), N as i64))
            .then_some(())
    });
    assert!(
        debited.is_some(),
        "not all {N} debited: {:?}\n{}",
        attempt_states(&db_url),
        first.output()
    );
    first.signal("TERM");
    assert!(first.wait_exit(Duration::from_secs(30)).success());

    // The bank returns every one of them (insufficient funds on settlement: soft).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::connect(&SecretString::from(db_url.clone()), 1)
            .await
            .unwrap();
        let db = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&db_url)
            .await
            .unwrap();
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT idempotency_key FROM debit_attempts WHERE state = 'succeeded' ORDER BY id",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        assert_eq!(keys.len(), N);
        let now = repayd::clock::to_epoch_ms(chrono::Utc::now());
        for key in &keys {
            store
                .sandbox_return_debit(key, "insufficient_funds", false, now)
                .await
                .unwrap();
        }
        db.close().await;
        store.close().await;
    });

    // Applied so far, and the returns up to the committed cursor: always equal.
    let applied = || count(&db_url, "SELECT COUNT(*) FROM debit_returns");
    let behind_cursor = || {
        count(
            &db_url,
            "SELECT COUNT(*) FROM sandbox_returns WHERE seq <= \
             COALESCE((SELECT CAST(cursor AS INTEGER) FROM gateway_cursors \
                       WHERE name = 'returns'), 0)",
        )
    };
    let mut seen = Vec::new();
    let mut mid_feed = 0;
    for round in 0..8u64 {
        let mut daemon = Daemon::start(&config);
        // The feed is read as soon as the daemon runs: kills from then on land before,
        // during and after its pages.
        daemon.wait_for_line("repayd is running", Duration::from_secs(20));
        // A page's returns are logged once it is committed, while the next one is read
        // and applied: a kill then lands inside the feed.
        daemon.wait_for_line("debit returned by the bank", Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(round % 4 * 5));
        daemon.signal("KILL");
        assert!(!daemon.wait_exit(Duration::from_secs(10)).success());
        let (a, c) = (applied(), behind_cursor());
        assert_eq!(
            a, c,
            "round {round}: applied returns and the cursor disagree"
        );
        if a > 0 && a < N as i64 {
            mid_feed += 1;
        }
        seen.push(a);
        if a == N as i64 {
            break;
        }
    }
    eprintln!("returns applied after each kill: {seen:?}");

    let mut last = Daemon::start(&config);
    last.wait_for_line("repayd is running", Duration::from_secs(20));
    let all = wait_until(Duration::from_secs(60), || {
        (applied() == N as i64).then_some(())
    });
    if all.is_none() {
        last.signal("KILL");
        let _ = last.wait_exit(Duration::from_secs(10));
        let keep = dir.keep();
        panic!("not all applied ({}):\n{}", keep.display(), last.output());
    }
    // Its notices are written with the returns; give the sender a moment, then stop.
    last.signal("TERM");
    assert!(last.wait_exit(Duration::from_secs(30)).success());

    assert_eq!(behind_cursor(), N as i64);
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(DISTINCT return_id) FROM debit_returns"
        ),
        N as i64
    );
    // Each first installment reopened exactly once: 50.00 owed again, nothing below zero.
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM installments WHERE seq = 1 AND paid_minor = 0 \
             AND status = 'unpaid'"
        ),
        N as i64,
        "every returned installment unpaid again, once"
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM installments WHERE paid_minor < 0"
        ),
        0
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM events WHERE kind = 'debit_returned'"
        ),
        N as i64,
        "one operations alert per return"
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(*) FROM reminders WHERE kind = 'debit_returned'"
        ),
        N as i64,
        "one customer notice per return"
    );
    assert_eq!(
        count(
            &db_url,
            "SELECT COUNT(DISTINCT installment_id) FROM debit_attempts \
             WHERE state = 'scheduled' AND attempt_no = 2"
        ),
        N as i64,
        "a retry planned by policy for each returned installment"
    );
    assert!(mid_feed >= 1, "no kill landed inside the feed: {seen:?}");
}
