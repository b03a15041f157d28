//! The operations console in a real browser: the real `repayd run --demo` (the sample
//! agreements dated around today, the sandbox bank, the file outbox) with an `http.token`,
//! driven by Debian's headless Chromium through chromedriver (WebDriver, `fantoccini`).
//! Each page's figures are compared with the database file itself; sign-in, the session
//! cookie and the CSRF token are checked by sending what a browser would not.
//!
//! Without `chromedriver` and `chromium` on the PATH the test prints SKIPPED and passes
//! (CI installs both: `.ci/run`). With `REPAYD_CONSOLE_SCREENSHOTS=DIR` it saves the Today
//! and Agreement pages as PNG files there (the README's pictures).

use fantoccini::{Client, ClientBuilder, Locator};
use sqlx::Row;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "console-test-token";
/// How long the test waits for an element, a log line or a database state: generous,
/// since ~6 test runs may share two cores. Every wait polls a condition; none sleeps
/// for a fixed time.
const PAGE_WAIT: Duration = Duration::from_secs(45);
const DAEMON_WAIT: Duration = Duration::from_secs(120);

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Polls `probe` every 100 ms until it gives something or `timeout` passes.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A raw HTTP/1.1 request: (status, headers and body as one text).
async fn raw(port: u16, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// The daemon under test, with its output collected.
struct Daemon {
    _child: Killed,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(dir: &Path, port: u16) -> Daemon {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = std::fs::read_to_string(root.join("config/repayd.toml"))
            .unwrap()
            .replace(
                "listen = \"127.0.0.1:9464\"",
                &format!("listen = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\""),
            )
            // The operations' date in Shanghai, whatever the machine's zone.
            .replace(
                "# time_zone = \"Asia/Shanghai\"",
                "time_zone = \"Asia/Shanghai\"",
            )
            // No quiet hours (start = end): the test reads the receipt the demo's catch-up
            // debit sends, which the shipped 21:00-08:00 would hold until morning in the
            // customer's zone whenever the test runs in the evening there (13:00-24:00
            // UTC for Shanghai).
            .replace("quiet_hours_end = \"08:00\"", "quiet_hours_end = \"21:00\"");
        assert!(
            config.contains(TOKEN)
                && config.contains("\ntime_zone = \"Asia/Shanghai\"")
                && config.contains("quiet_hours_start = \"21:00\"")
                && config.contains("quiet_hours_end = \"21:00\""),
            "the shipped config's [http], [console] or quiet hours changed"
        );
        std::fs::write(dir.join("repayd.toml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_repayd"))
            .args(["--config", "repayd.toml", "run", "--demo"])
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
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
        Daemon {
            _child: Killed(child),
            lines,
        }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait_for_line(&self, text: &str) {
        let found = wait_for(DAEMON_WAIT, || async {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(text))
                .then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "no log line with {text:?}; output:\n{}",
            self.output()
        );
    }
}

async fn browser(driver_port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    let mut args = vec![
        "--headless=new",
        "--disable-gpu",
        "--window-size=1280,1400",
        "--lang=en-US",
    ];
    // Root (CI, the machines here) cannot run Chromium's sandbox.
    if rustix_is_root() {
        args.push("--no-sandbox");
    }
    let mut options = serde_json::json!({ "args": args });
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = "/usr/bin/chromium".into();
    }
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{driver_port}");
    wait_for(DAEMON_WAIT, || {
        let caps = caps.clone();
        let connector = connector.clone();
        let url = url.clone();
        async move {
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await
    .expect("a WebDriver session from chromedriver")
}

fn rustix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn text(client: &Client, css: &str) -> String {
    // A click or a submit may return before the next page is there: wait for it.
    let found = wait_for(PAGE_WAIT, || async {
        client.find(Locator::Css(css)).await.ok()
    })
    .await;
    match found {
        Some(element) => element.text().await.unwrap(),
        None => panic!(
            "{css}: not on the page {}",
            client
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default()
        ),
    }
}

/// `1,234.56 CNY` as minor units (two digits: the demo's currencies).
fn minor(shown: &str) -> i64 {
    let number = shown.split_whitespace().next().unwrap().replace(',', "");
    let (whole, fraction) = number.split_once('.').unwrap_or((&number, "00"));
    whole.parse::<i64>().unwrap() * 100 + fraction.parse::<i64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium_shows_the_database() {
    if !on_path("chromedriver") || !(on_path("chromium") || on_path("google-chrome")) {
        println!(
            "SKIPPED: chromedriver and chromium are not installed (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let daemon = Daemon::start(dir.path(), port);
    daemon.wait_for_line("repayd is running").await;
    // The demo's story: the catch-up debit and its receipt.
    daemon.wait_for_line("debit succeeded").await;
    daemon.wait_for_line("reminder sent").await;

    let db_url = format!("sqlite://{}/var/repayd.db?mode=ro", dir.path().display());
    let db = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .unwrap();
    // The log line may come before its commit: wait for the database itself. The
    // catch-up debit must be committed before Today is first viewed (a past day's
    // figures are then kept for 10 minutes), and no debit be in flight.
    let settled = wait_for(DAEMON_WAIT, || async {
        let paid: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM installments i JOIN agreements a ON a.id = i.agreement_id \
             WHERE a.external_id = 'AGR-2026-0006' AND i.status = 'paid'",
        )
        .fetch_one(&db)
        .await
        .ok()?;
        let in_flight: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM debit_attempts \
             WHERE state IN ('claimed', 'funds_checked', 'submitted')",
        )
        .fetch_one(&db)
        .await
        .ok()?;
        (paid >= 1 && in_flight == 0).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the demo's catch-up debit never settled:\n{}",
        daemon.output()
    );
    // The assessment after it clears the overdue flag (on the next planner tick, every
    // minute): wait for it so the Overdue page and the table are read in the same state.
    // If the demo's dates leave it overdue, the comparison below still holds.
    let _ = wait_for(DAEMON_WAIT, || async {
        let overdue: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM delinquency d JOIN agreements a ON a.id = d.agreement_id \
             WHERE a.external_id = 'AGR-2026-0006' AND d.dpd > 0",
        )
        .fetch_one(&db)
        .await
        .ok()?;
        (overdue == 0).then_some(())
    })
    .await;

    // Refusals, as a browser would never send them.
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
    };
    let (status, response) = raw(port, &get("/console/today", "")).await;
    assert_eq!(status, 303, "{response}");
    assert!(response.contains("location: /console/login"), "{response}");
    assert!(response.contains("content-security-policy: default-src 'none'"));
    let (status, _) = raw(port, &get("/console/agreements/AGR-2026-0006", "")).await;
    assert_eq!(status, 303, "a detail page without signing in");
    let post = |path: &str, cookie: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, _) = raw(port, &post("/console/logout", "", "csrf=x")).await;
    assert_eq!(status, 401, "a change without a session");
    let (status, _) = raw(
        port,
        &post("/console/login", "", "user=mallory&password=wrong"),
    )
    .await;
    assert_eq!(status, 401, "a wrong password");
    // The bearer token may read.
    let (status, body) = raw(
        port,
        &get(
            "/console/today",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The browser.
    let driver_port = free_port();
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let client = browser(driver_port).await;
    let result = drive(&client, &base, port, &db, &daemon).await;
    let _ = client.close().await;
    if let Err(e) = result {
        panic!("{e}\ndaemon output:\n{}", daemon.output());
    }
}

async fn drive(
    client: &Client,
    base: &str,
    port: u16,
    db: &sqlx::SqlitePool,
    daemon: &Daemon,
) -> Result<(), String> {
    // Sign in: a wrong token is refused, the right one lands on Today.
    client
        .goto(&format!("{base}/console/today"))
        .await
        .map_err(|e| e.to_string())?;
    let url = client.current_url().await.map_err(|e| e.to_string())?;
    assert!(url.path().ends_with("/console/login"), "{url}");
    sign_in(client, "alice", "not-the-token").await;
    assert!(text(client, "#login-error").await.contains("Wrong"));
    sign_in(client, "alice", TOKEN).await;
    assert_eq!(text(client, "#actor").await, "alice");
    let url = client.current_url().await.map_err(|e| e.to_string())?;
    assert!(url.path().ends_with("/console/today"), "{url}");
    if let Ok(dir) = std::env::var("REPAYD_CONSOLE_SCREENSHOTS") {
        let png = client.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(Path::new(&dir).join("console-today.png"), png).unwrap();
    }

    // Today: the 30-day figures of each currency against the installments table, on the
    // operations' date (`[console] time_zone`), not UTC's.
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    assert_eq!(text(client, "#today").await, today.to_string());
    assert_eq!(text(client, "#today-zone").await, "Asia/Shanghai");
    let from = today - chrono::Days::new(29);
    let rows = sqlx::query(
        "SELECT a.currency, SUM(i.total_minor) AS due, SUM(i.paid_minor) AS paid, \
                SUM(CASE WHEN i.due_date = ?2 THEN i.total_minor ELSE 0 END) AS due_today \
         FROM installments i JOIN agreements a ON a.id = i.agreement_id \
         WHERE i.due_date >= ?1 AND i.due_date <= ?2 AND i.status <> 'cancelled' \
         GROUP BY a.currency",
    )
    .bind(from.to_string())
    .bind(today.to_string())
    .fetch_all(db)
    .await
    .unwrap();
    assert!(
        !rows.is_empty(),
        "the demo has installments due in the last 30 days"
    );
    for row in &rows {
        let currency: String = row.get("currency");
        let (due, paid, due_today): (i64, i64, i64) =
            (row.get("due"), row.get("paid"), row.get("due_today"));
        let caption = text(client, &format!("#today-{currency} figcaption")).await;
        assert!(
            caption.contains(&repayd_money(due, &currency))
                && caption.contains(&repayd_money(paid, &currency)),
            "{currency}: caption {caption:?}, database due {due} collected {paid}"
        );
        let shown = text(
            client,
            &format!("#today-{currency} tr[data-figure=due] .amount"),
        )
        .await;
        assert_eq!(minor(&shown), due_today, "{currency} due today");
        let svg = client
            .find(Locator::Css(&format!("#today-{currency} svg.chart")))
            .await
            .map_err(|e| e.to_string())?;
        let bars = svg
            .find_all(Locator::Css("rect"))
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(bars.len(), 60, "two bars for each of 30 days");
    }

    // Overdue: buckets against the delinquency table.
    client
        .goto(&format!("{base}/console/overdue"))
        .await
        .map_err(|e| e.to_string())?;
    let rows = sqlx::query(
        "SELECT a.currency, d.bucket, COUNT(*) AS n, SUM(d.amount_overdue_minor) AS amount \
         FROM delinquency d JOIN agreements a ON a.id = d.agreement_id WHERE d.dpd > 0 \
         GROUP BY a.currency, d.bucket",
    )
    .fetch_all(db)
    .await
    .unwrap();
    // The demo's overdue agreement is cleared once its catch-up debit is assessed: the
    // page shows exactly the buckets the table holds, none or some.
    let shown = client
        .find_all(Locator::Css("#buckets tr[data-bucket]"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(shown.len(), rows.len(), "bucket rows");
    for row in &rows {
        let currency: String = row.get("currency");
        let bucket: String = row.get("bucket");
        let (n, amount): (i64, i64) = (row.get("n"), row.get("amount"));
        let css = format!("#buckets tr[data-currency='{currency}'][data-bucket='{bucket}']");
        assert_eq!(text(client, &format!("{css} .count")).await, n.to_string());
        assert_eq!(
            minor(&text(client, &format!("{css} .amount")).await),
            amount
        );
    }
    let newly: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM delinquency WHERE dpd > 0 AND overdue_since_ms >= ?1",
    )
    .bind(chrono::Utc::now().timestamp_millis() - 86_400_000)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(text(client, "#newly-overdue").await, newly.to_string());

    // Queues: each total against the attempts and reminders tables.
    client
        .goto(&format!("{base}/console/queues"))
        .await
        .map_err(|e| e.to_string())?;
    for (id, sql) in [
        (
            "lookups",
            "SELECT COUNT(*) FROM debit_attempts WHERE state IN ('unknown', 'pending')",
        ),
        (
            "rejected",
            "SELECT COUNT(*) FROM debit_attempts WHERE state = 'rejected'",
        ),
        (
            "deferred",
            "SELECT COUNT(*) FROM reminders WHERE state = 'pending' AND last_error IS NOT NULL",
        ),
        (
            "failed",
            "SELECT COUNT(*) FROM reminders WHERE state = 'failed'",
        ),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(db).await.unwrap();
        assert_eq!(
            text(client, &format!("#{id}-total")).await,
            n.to_string(),
            "{id}"
        );
    }

    // Search by name: the email is masked in the list.
    client
        .goto(&format!("{base}/console/search?q=Emily"))
        .await
        .map_err(|e| e.to_string())?;
    let hit = text(client, "#hits tr[data-agreement='AGR-2026-0003']").await;
    assert!(
        hit.contains("Emily Carter") && hit.contains("e***@example.com"),
        "{hit}"
    );
    let source = client.source().await.map_err(|e| e.to_string())?;
    assert!(
        !source.contains("emily.carter@"),
        "an unmasked email in a list"
    );
    // By debit key.
    let key: String =
        sqlx::query_scalar("SELECT idempotency_key FROM debit_attempts ORDER BY id LIMIT 1")
            .fetch_one(db)
            .await
            .unwrap();
    let agreement: String = sqlx::query_scalar(
        "SELECT a.external_id FROM debit_attempts d JOIN agreements a ON a.id = d.agreement_id \
         WHERE d.idempotency_key = ?1",
    )
    .bind(&key)
    .fetch_one(db)
    .await
    .unwrap();
    client
        .goto(&format!("{base}/console/search?q={key}"))
        .await
        .map_err(|e| e.to_string())?;
    text(client, &format!("#hits tr[data-agreement='{agreement}']")).await;

    // The agreement that was debited: schedule, attempts and the receipt as sent.
    client
        .goto(&format!("{base}/console/agreements/AGR-2026-0006"))
        .await
        .map_err(|e| e.to_string())?;
    let paid: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM installments i JOIN agreements a ON a.id = i.agreement_id \
         WHERE a.external_id = 'AGR-2026-0006' AND i.status = 'paid'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert!(paid >= 1, "the demo's catch-up debit paid an installment");
    if let Ok(dir) = std::env::var("REPAYD_CONSOLE_SCREENSHOTS") {
        let png = client.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(Path::new(&dir).join("console-agreement.png"), png).unwrap();
    }
    assert_eq!(text(client, "#paid-count").await, paid.to_string());
    let paid_rows = client
        .find_all(Locator::Css("#schedule tr[data-status=paid]"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(paid_rows.len() as i64, paid);
    let succeeded = client
        .find_all(Locator::Css("#attempts tr[data-state=succeeded]"))
        .await
        .map_err(|e| e.to_string())?;
    assert!(!succeeded.is_empty());
    let receipt = client
        .find(Locator::Css(
            "#timeline li[data-kind=reminder_sent] details.email",
        ))
        .await
        .map_err(|e| e.to_string())?;
    receipt
        .find(Locator::Css("summary"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let body = receipt.text().await.map_err(|e| e.to_string())?;
    assert!(body.contains("AGR-2026-0006"), "the email as sent: {body}");
    // Personal data in full on the detail page; the view is logged with the operator.
    let email: String = sqlx::query_scalar(
        "SELECT c.email FROM customers c JOIN agreements a ON a.customer_id = c.id \
         WHERE a.external_id = 'AGR-2026-0006'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(text(client, "#customer-email").await, email);
    daemon.wait_for_line("console: agreement page viewed").await;
    assert!(
        daemon
            .output()
            .lines()
            .any(|l| l.contains("agreement page viewed") && l.contains("alice"))
    );

    // The customer page: every agreement of the customer.
    client
        .find(Locator::Css("#customer-link"))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM agreements WHERE customer_id = \
         (SELECT customer_id FROM agreements WHERE external_id = 'AGR-2026-0006')",
    )
    .fetch_one(db)
    .await
    .unwrap();
    let listed = client
        .find_all(Locator::Css("#customer-agreements tbody tr"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(listed.len() as i64, n);
    daemon.wait_for_line("console: customer page viewed").await;

    // Chinese.
    client
        .goto(&format!("{base}/console/lang?to=zh-CN&back=/console/today"))
        .await
        .map_err(|e| e.to_string())?;
    assert!(text(client, "h1").await.contains("今日"));

    // A form posted with the session cookie but without its CSRF token is refused.
    let cookie = client
        .get_named_cookie("repayd_console")
        .await
        .map_err(|e| e.to_string())?;
    let header = format!("Cookie: repayd_console={}\r\n", cookie.value());
    let body = "csrf=forged";
    let (status, response) = raw(
        port,
        &format!(
            "POST /console/logout HTTP/1.1\r\nHost: x\r\n{header}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("CSRF"), "{response}");
    // The session still stands.
    client
        .goto(&format!("{base}/console/today"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(text(client, "#actor").await, "alice");

    client
        .goto(&format!("{base}/console/lang?to=en&back=/console/today"))
        .await
        .map_err(|e| e.to_string())?;
    // An action posted without the CSRF token changes nothing; one without a reason
    // neither; one without a session is refused.
    let status_of = |db: &sqlx::SqlitePool| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT status FROM agreements WHERE external_id = 'AGR-2026-0001'",
            )
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    client
        .goto(&format!("{base}/console/agreements/AGR-2026-0001"))
        .await
        .map_err(|e| e.to_string())?;
    let csrf = client
        .find(Locator::Css("form.action input[name=csrf]"))
        .await
        .map_err(|e| e.to_string())?
        .attr("value")
        .await
        .map_err(|e| e.to_string())?
        .unwrap();
    for (body, expected) in [
        (
            "step=run&agreement=AGR-2026-0001&reason=forged".to_string(),
            403,
        ),
        (
            format!("csrf={csrf}&step=run&agreement=AGR-2026-0001&reason="),
            422,
        ),
    ] {
        let (status, response) = raw(
            port,
            &format!(
                "POST /console/actions/pause HTTP/1.1\r\nHost: x\r\n{header}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert_eq!(status, expected, "{response}");
    }
    let (status, _) = raw(
        port,
        "POST /console/actions/pause HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\nConnection: close\r\n\r\nstep=run&",
    )
    .await;
    assert_eq!(status, 401, "an action without a session");
    assert_eq!(status_of(db).await, "active");

    // Each action: the form, the confirm page saying what will happen, the change in the
    // database, and the event in the timeline with the operator and the reason.
    let what = act(
        client,
        base,
        "AGR-2026-0001",
        "pause",
        &[],
        "customer asked for a week",
    )
    .await?;
    assert!(what.contains("paused"), "{what}");
    assert_eq!(status_of(db).await, "paused");
    assert_eq!(text(client, "#agreement-status").await, "paused");
    in_timeline(client, "agreement_paused", "customer asked for a week").await?;

    act(client, base, "AGR-2026-0001", "resume", &[], "week is over").await?;
    assert_eq!(status_of(db).await, "active");
    in_timeline(client, "agreement_resumed", "week is over").await?;

    let what = act(
        client,
        base,
        "AGR-2026-0001",
        "record_payment",
        &[("amount", "100.00"), ("reference", "CONSOLE-PAY-1")],
        "paid at the branch",
    )
    .await?;
    assert!(what.contains("CONSOLE-PAY-1"), "{what}");
    let paid: i64 =
        sqlx::query_scalar("SELECT amount_minor FROM payments WHERE reference = 'CONSOLE-PAY-1'")
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(paid, 100_00);
    in_timeline(client, "payment_received", "paid at the branch").await?;

    act(
        client,
        base,
        "AGR-2026-0001",
        "revoke_mandate",
        &[],
        "customer withdrew consent",
    )
    .await?;
    let mandate: String = sqlx::query_scalar(
        "SELECT f.mandate_status FROM funding_accounts f JOIN agreements a \
         ON a.funding_account_id = f.id WHERE a.external_id = 'AGR-2026-0001'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(mandate, "revoked");
    in_timeline(client, "mandate_revoked", "customer withdrew consent").await?;

    // The revoked mandate's form is now the reinstatement (the only way back to active).
    act(
        client,
        base,
        "AGR-2026-0001",
        "reinstate_mandate",
        &[],
        "customer signed a new mandate",
    )
    .await?;
    let mandate: String = sqlx::query_scalar(
        "SELECT f.mandate_status FROM funding_accounts f JOIN agreements a \
         ON a.funding_account_id = f.id WHERE a.external_id = 'AGR-2026-0001'",
    )
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(mandate, "active");
    in_timeline(
        client,
        "mandate_reinstated",
        "customer signed a new mandate",
    )
    .await?;

    // A rejected attempt (made so here: the demo's sandbox bank never rejects) is listed
    // on Queues and re-queued from its agreement's page.
    let rw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db_url_rw(db).await)
        .await
        .unwrap();
    let attempt: i64 = sqlx::query_scalar(
        "UPDATE debit_attempts SET state = 'rejected', outcome_code = 'account_closed' \
         WHERE id = (SELECT d.id FROM debit_attempts d JOIN agreements a ON a.id = d.agreement_id \
                     WHERE a.external_id = 'AGR-2026-0003' AND d.state = 'scheduled' \
                     ORDER BY d.id LIMIT 1) RETURNING id",
    )
    .fetch_one(&rw)
    .await
    .unwrap();
    rw.close().await;
    client
        .goto(&format!("{base}/console/queues"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(text(client, "#rejected-total").await, "1");
    act(
        client,
        base,
        "AGR-2026-0003",
        "requeue",
        &[],
        "account reopened",
    )
    .await?;
    // Back to `scheduled`, due now: the daemon (passing every 5 s) may already have
    // claimed it again, so any state but `rejected` with the requeue's own marks.
    let (state, reconciled, outcome): (String, i64, Option<String>) = sqlx::query_as(
        "SELECT state, reconcile_count, outcome_code FROM debit_attempts WHERE id = ?1",
    )
    .bind(attempt)
    .fetch_one(db)
    .await
    .unwrap();
    assert_ne!(state, "rejected");
    assert_eq!(reconciled, 0);
    assert_ne!(outcome.as_deref(), Some("account_closed"), "state {state}");
    in_timeline(client, "debit_requeued", "account reopened").await?;

    // A late fee (made so here: no demo agreement is overdue long enough to keep one) is
    // waived in part from the agreement page's charge picker.
    let rw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&db_url_rw(db).await)
        .await
        .unwrap();
    let charge: i64 = sqlx::query_scalar(
        "INSERT INTO charges (installment_id, agreement_id, kind, accrual_key, amount_minor, \
             paid_minor, currency, status, created_at_ms, updated_at_ms) \
         SELECT i.id, a.id, 'late_fee', 1, 2500, 0, a.currency, 'open', 0, 0 \
         FROM installments i JOIN agreements a ON a.id = i.agreement_id \
         WHERE a.external_id = 'AGR-2026-0001' AND i.status = 'unpaid' \
         ORDER BY i.seq LIMIT 1 RETURNING id",
    )
    .fetch_one(&rw)
    .await
    .unwrap();
    // A failed email about an installment paid since (made so: the demo's outbox never
    // refuses): sent again, the conversation gate must cancel it, not send it.
    let email: i64 = sqlx::query_scalar(
        "INSERT INTO reminders (installment_id, agreement_id, customer_id, kind, offset_key, \
             scheduled_at_ms, state, tries, last_error, created_at_ms, updated_at_ms) \
         SELECT i.id, a.id, a.customer_id, 'debit_failed', 99, 0, 'failed', 1, \
                '550 5.1.1 <wang.fang@example.com>: mailbox unavailable', 0, 0 \
         FROM installments i JOIN agreements a ON a.id = i.agreement_id \
         WHERE a.external_id = 'AGR-2026-0006' AND i.status = 'paid' \
         ORDER BY i.seq LIMIT 1 RETURNING id",
    )
    .fetch_one(&rw)
    .await
    .unwrap();
    rw.close().await;
    let charge_row = |db: &sqlx::SqlitePool| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (i64, String)>(
                "SELECT waived_minor, status FROM charges WHERE id = ?1",
            )
            .bind(charge)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    let email_row = |db: &sqlx::SqlitePool| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT state, cancel_reason FROM reminders WHERE id = ?1",
            )
            .bind(email)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };

    // Without the session's CSRF token, neither action does anything.
    for (action, body) in [
        (
            "waive_fee",
            format!("step=run&agreement=AGR-2026-0001&charge={charge}&reason=forged"),
        ),
        (
            "resend_email",
            format!("step=run&agreement=AGR-2026-0006&reminder={email}&reason=forged"),
        ),
    ] {
        for body in [body.clone(), format!("csrf=forged&{body}")] {
            let (status, response) = raw(
                port,
                &format!(
                    "POST /console/actions/{action} HTTP/1.1\r\nHost: x\r\n{header}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
            .await;
            assert_eq!(status, 403, "{action} without the CSRF token: {response}");
        }
    }
    assert_eq!(charge_row(db).await, (0, "open".to_string()));
    assert_eq!(email_row(db).await.0, "failed");

    let charge_id = charge.to_string();
    let what = act(
        client,
        base,
        "AGR-2026-0001",
        "waive_fee",
        &[("charge", &charge_id), ("amount", "10.00")],
        "goodwill: first late payment",
    )
    .await?;
    assert!(
        what.contains("10.00") && what.contains("25.00") && what.contains("15.00"),
        "the confirm page names what is waived and what stays open: {what}"
    );
    assert_eq!(charge_row(db).await, (10_00, "open".to_string()));
    in_timeline(client, "charge_waived", "goodwill: first late payment").await?;
    let shown = text(
        client,
        &format!("#charges tr[data-charge='{charge}'] .waived"),
    )
    .await;
    assert_eq!(minor(&shown), 10_00);

    // The failed email is listed on Queues and sent again from there.
    client
        .goto(&format!("{base}/console/queues"))
        .await
        .map_err(|e| e.to_string())?;
    let failed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reminders WHERE state = 'failed'")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(text(client, "#failed-total").await, failed.to_string());
    let listed = text(client, &format!("#failed tr[data-reminder='{email}']")).await;
    assert!(
        listed.contains("w***@example.com") && !listed.contains("wang.fang@"),
        "the address is masked in the list: {listed}"
    );
    let what = act_on(
        client,
        base,
        "/console/queues",
        &format!("#failed tr[data-reminder='{email}'] form.action"),
        "AGR-2026-0006",
        "resend_email",
        &[],
        "customer fixed the mailbox",
    )
    .await?;
    assert!(
        what.contains("conversation gate") && what.contains("no longer true"),
        "the confirm page says the gate will cancel it: {what}"
    );
    // The daemon's message loop takes it through the gate (it polls every few seconds).
    let decided = wait_for(DAEMON_WAIT, || async {
        let (state, why) = email_row(db).await;
        (state != "pending" && state != "sending").then_some((state, why))
    })
    .await;
    assert_eq!(
        decided,
        Some((
            "cancelled".to_string(),
            Some("installment_paid".to_string())
        )),
        "the gate cancels an email that is no longer true"
    );
    client
        .goto(&format!("{base}/console/agreements/AGR-2026-0006"))
        .await
        .map_err(|e| e.to_string())?;
    in_timeline(client, "reminder_requeued", "customer fixed the mailbox").await?;
    let cancelled = client
        .find_all(Locator::Css("#timeline li[data-kind=reminder_cancelled]"))
        .await
        .map_err(|e| e.to_string())?;
    let mut says_why = false;
    for entry in cancelled {
        says_why |= entry
            .text()
            .await
            .map_err(|e| e.to_string())?
            .contains("installment_paid");
    }
    assert!(says_why, "the timeline says why the email was not sent");
    Ok(())
}

/// Fills and posts one action's form on the agreement page, reads what the confirm page
/// says will happen, confirms, and goes back to the agreement page.
async fn act(
    client: &Client,
    base: &str,
    agreement: &str,
    action: &str,
    fields: &[(&str, &str)],
    reason: &str,
) -> Result<String, String> {
    act_on(
        client,
        base,
        &format!("/console/agreements/{agreement}"),
        &format!("form.action:has(button[data-action={action}])"),
        agreement,
        action,
        fields,
        reason,
    )
    .await
}

/// [`act`] with the form `form_css` on the page at `page`.
#[allow(clippy::too_many_arguments)]
async fn act_on(
    client: &Client,
    base: &str,
    page: &str,
    form_css: &str,
    agreement: &str,
    action: &str,
    fields: &[(&str, &str)],
    reason: &str,
) -> Result<String, String> {
    let e = |e: fantoccini::error::CmdError| format!("{action}: {e}");
    client.goto(&format!("{base}{page}")).await.map_err(e)?;
    let form = client.form(Locator::Css(form_css)).await.map_err(e)?;
    for (name, value) in fields {
        form.set_by_name(name, value).await.map_err(e)?;
    }
    form.set_by_name("reason", reason).await.map_err(e)?;
    form.submit().await.map_err(e)?;
    let what = text(client, "#what").await;
    assert_eq!(text(client, "#confirm-reason").await, reason);
    client
        .find(Locator::Css("#confirm"))
        .await
        .map_err(e)?
        .click()
        .await
        .map_err(e)?;
    text(client, "#message").await;
    let title = text(client, "h1").await;
    if !title.starts_with("Done") {
        return Err(format!("{action}: {title}: {}", text(client, "main").await));
    }
    client
        .goto(&format!("{base}/console/agreements/{agreement}"))
        .await
        .map_err(e)?;
    Ok(what)
}

/// The timeline of the page shows an event of `kind` by alice with `reason`.
async fn in_timeline(client: &Client, kind: &str, reason: &str) -> Result<(), String> {
    let entries = client
        .find_all(Locator::Css(&format!("#timeline li[data-kind={kind}]")))
        .await
        .map_err(|e| e.to_string())?;
    for entry in entries {
        let shown = entry.text().await.map_err(|e| e.to_string())?;
        if shown.contains("alice") && shown.contains(reason) {
            return Ok(());
        }
    }
    Err(format!(
        "no {kind} event by alice with reason {reason:?} in the timeline"
    ))
}

/// The database file of `db` opened for writing.
async fn db_url_rw(db: &sqlx::SqlitePool) -> String {
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(db)
            .await
            .unwrap();
    format!("sqlite://{file}")
}

async fn sign_in(client: &Client, user: &str, password: &str) {
    let form = client.form(Locator::Css("form")).await.unwrap();
    form.set_by_name("user", user).await.unwrap();
    form.set_by_name("password", password).await.unwrap();
    form.set_by_name("lang", "en").await.unwrap();
    form.submit().await.unwrap();
}

/// How the console prints an amount (two minor digits, thousands grouped).
fn repayd_money(minor: i64, currency: &str) -> String {
    let whole = (minor / 100).to_string();
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{grouped}.{:02} {currency}", minor % 100)
}

/// Today and the Queues page's days are the operations' local dates (`[console]
/// time_zone`), not UTC: at 01:30 in Shanghai on the 18th it is still the 17th in UTC.
/// The operations server in this process on a manual clock, both backends, read with
/// the bearer token.
async fn today_is_the_operations_local_date(db: crate::helpers::TestDb) {
    use crate::overdue::{SHANGHAI, agreement, local, utc};
    use repayd::clock::{ManualClock, to_epoch_ms};
    let store = &db.store;
    let (a, insts) = agreement(store, "TZ-1", "Li Wei", "6222020000008888", &["2027-01-18"]).await;
    agreement(
        store,
        "TZ-2",
        "Wang Fang",
        "6222020000009999",
        &["2027-01-17", "2027-01-17"],
    )
    .await;
    // A retry at 04:00 on the 19th in Shanghai: still the 18th in UTC.
    let retry_at = local("2027-01-19", 4, 0, SHANGHAI);
    store
        .insert_attempt(
            &repayd::store::debits::NewAttempt {
                installment_id: insts[0],
                agreement_id: a,
                attempt_no: 2,
                idempotency_key: "tz-test-i1-a2".into(),
                scheduled_at_ms: to_epoch_ms(retry_at),
                amount_minor: 1_066_19,
                currency: "CNY".into(),
                retry_reason: None,
            },
            &repayd::store::NewEvent {
                at_ms: 0,
                kind: "debit_attempt_planned",
                agreement_id: Some(a),
                installment_id: Some(insts[0]),
                attempt_id: None,
                detail: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    let clock = ManualClock::new(utc(2027, 1, 17, 17, 30));
    for (zone, today, due_count, due_amount, retry_day) in [
        (SHANGHAI, "2027-01-18", "1", "1,066.19 CNY", "2027-01-19"),
        (
            chrono_tz::UTC,
            "2027-01-17",
            "2",
            "2,132.38 CNY",
            "2027-01-18",
        ),
    ] {
        let settings = repayd::http::HttpSettings {
            listen: "127.0.0.1:0".into(),
            token: Some(TOKEN.to_string().into()),
            ..repayd::http::HttpSettings::default()
        };
        let state = repayd::http::HttpState {
            store: store.clone(),
            metrics: Arc::new(repayd::metrics::Metrics::new()),
            clock: Arc::new(clock.clone()),
            gateway: "sandbox".into(),
            mailer: "outbox".into(),
            stopping: tokio_util::sync::CancellationToken::new(),
            console: repayd::console::ConsoleOptions {
                time_zone: zone,
                ..Default::default()
            },
        };
        let server = repayd::http::HttpServer::start(&settings, state)
            .await
            .unwrap();
        let port = server.local_addr().port();
        let get = |path: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
        };
        let (status, page) = raw(port, &get("/console/today")).await;
        assert_eq!(status, 200, "{page}");
        assert!(
            page.contains(&format!("<span id=\"today\">{today}</span>")),
            "{zone}: {page}"
        );
        // minijinja escapes the slash of `Asia/Shanghai` in HTML.
        let shown_zone = zone.name().replace('/', "&#x2f;");
        assert!(
            page.contains(&format!("<span id=\"today-zone\">{shown_zone}</span>")),
            "{zone}: {page}"
        );
        let due_row = page
            .split("data-figure=\"due\"")
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_else(|| panic!("{zone}: no due row in {page}"));
        assert!(
            due_row.contains(&format!("<td class=\"num count\">{due_count}</td>"))
                && due_row.contains(due_amount),
            "{zone}: {due_row}"
        );
        let (status, page) = raw(port, &get("/console/queues")).await;
        assert_eq!(status, 200, "{page}");
        let retries = page
            .split("id=\"retries\"")
            .nth(1)
            .and_then(|rest| rest.split("</table>").next())
            .unwrap();
        assert!(
            retries.contains(&format!("<td>{retry_day}</td>")),
            "{zone}: {retries}"
        );
        server.stop().await;
    }
}

crate::both_backends!(
    today_is_the_operations_local_date,
    today_is_the_operations_local_date
);

/// The Today chart's past days are kept in a table (migration 0017) and never shown
/// stale: a kept day equals the day read live; once a debit due that day changes state or
/// a payment lands, the day is no longer taken as kept (the page reads it live) until the
/// next refresh keeps it again, equal to the live figures. Then the page itself, served
/// with its own background refresh, against the database. Both backends, on today's
/// dates (the database notes changes up to its own tomorrow).
async fn kept_past_days_match_the_live_figures(db: crate::helpers::TestDb) {
    use crate::overdue::agreement;
    use repayd::clock::{ManualClock, to_epoch_ms};
    use repayd::store::debits::{AttemptChange, Effects, Fence, NewAttempt, PaymentApplied};
    let store = &db.store;
    let now = chrono::Utc::now();
    let today = now.date_naive();
    let day = |back: u64| (today - chrono::Days::new(back)).to_string();
    let (a, insts) = agreement(
        store,
        "KEEP-1",
        "Li Wei",
        "6222020000007777",
        &[&day(3), &day(2)],
    )
    .await;
    agreement(store, "KEEP-2", "Wang Fang", "6222020000006666", &[&day(2)]).await;
    let planned = |attempt_no: i64, key: &str| NewAttempt {
        installment_id: insts[0],
        agreement_id: a,
        attempt_no,
        idempotency_key: key.into(),
        scheduled_at_ms: to_epoch_ms(now) - 3_600_000,
        amount_minor: 1_066_19,
        currency: "CNY".into(),
        retry_reason: None,
    };
    let event = repayd::store::NewEvent {
        at_ms: to_epoch_ms(now),
        kind: "debit_attempt_planned",
        agreement_id: Some(a),
        installment_id: Some(insts[0]),
        attempt_id: None,
        detail: serde_json::json!({}),
    };
    store
        .insert_attempt(&planned(1, "keep-test-1"), &event)
        .await
        .unwrap();
    let clock = ManualClock::new(now);
    let window = |back: u64| (today - chrono::Days::new(back)).to_string();
    let kept = || async {
        let mut days: std::collections::BTreeMap<String, Vec<_>> = Default::default();
        for row in store
            .console_kept_days(&window(29), &window(1))
            .await
            .unwrap()
        {
            days.entry(row.due_date.clone())
                .or_default()
                .extend(row.figure());
        }
        days
    };
    let same_as_live = |kept: std::collections::BTreeMap<String, Vec<_>>| async move {
        for (d, figures) in &kept {
            assert_eq!(
                figures,
                &store.console_due_figures(d).await.unwrap(),
                "{d}: kept and live figures"
            );
        }
    };

    // The first refresh keeps all 29 past days, equal to the live figures.
    let refreshed = repayd::console::refresh_past_days(store, &clock, chrono_tz::UTC)
        .await
        .unwrap();
    assert_eq!(refreshed, 29);
    let days = kept().await;
    assert_eq!(days.len(), 29, "{days:?}");
    assert_eq!(days[&day(3)].len(), 1, "one installment, attempt scheduled");
    assert_eq!(days[&day(3)][0].state, "scheduled");
    assert_eq!(days[&day(2)][0].installments, 2);
    same_as_live(days).await;
    assert_eq!(
        repayd::console::refresh_past_days(store, &clock, chrono_tz::UTC)
            .await
            .unwrap(),
        0,
        "nothing changed, nothing to refresh"
    );

    // The debit is claimed: its day is no longer taken as kept, the others are.
    let claimed = store
        .claim_due_attempts("keep-test", to_epoch_ms(now), to_epoch_ms(now) + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let days = kept().await;
    assert!(!days.contains_key(&day(3)), "a changed day is read live");
    assert!(days.contains_key(&day(2)));
    // It succeeds and pays the installment.
    store
        .apply_attempt_change(
            &Fence {
                attempt_id: claimed[0].id,
                expected_state: "claimed".into(),
                owner: "keep-test".into(),
            },
            &AttemptChange {
                state: "succeeded",
                funds_checked_at_ms: Some(to_epoch_ms(now)),
                finished_at_ms: Some(to_epoch_ms(now)),
                release_lease: true,
                ..Default::default()
            },
            &Effects {
                payment: Some(PaymentApplied {
                    installment_id: insts[0],
                    agreement_id: a,
                    amount_minor: 1_066_19,
                    at_ms: to_epoch_ms(now),
                }),
                ..Default::default()
            },
            to_epoch_ms(now),
        )
        .await
        .unwrap();
    // A payment by other means on the other day.
    store
        .record_installment_payment(insts[1], 500_00, "KEEP-TRANSFER", to_epoch_ms(now))
        .await
        .unwrap();
    let days = kept().await;
    assert!(!days.contains_key(&day(3)) && !days.contains_key(&day(2)));
    assert_eq!(days.len(), 27);
    assert_eq!(
        repayd::console::refresh_past_days(store, &clock, chrono_tz::UTC)
            .await
            .unwrap(),
        2,
        "the two changed days"
    );
    let days = kept().await;
    assert_eq!(days.len(), 29);
    let debited = &days[&day(3)];
    assert_eq!(
        (
            debited[0].state.as_str(),
            debited[0].paid_minor,
            debited[0].funds_checked
        ),
        ("succeeded", 1_066_19, 1)
    );
    assert_eq!(
        days[&day(2)].iter().map(|f| f.paid_minor).sum::<i64>(),
        500_00
    );
    same_as_live(days).await;

    // A change after the last refresh, then the page (its server refreshes beside it):
    // the 30 days' totals are the database's.
    store
        .insert_attempt(&planned(2, "keep-test-2"), &event)
        .await
        .unwrap();
    store
        .record_installment_payment(insts[1], 100_00, "KEEP-TRANSFER-2", to_epoch_ms(now))
        .await
        .unwrap();
    let settings = repayd::http::HttpSettings {
        listen: "127.0.0.1:0".into(),
        token: Some(TOKEN.to_string().into()),
        ..repayd::http::HttpSettings::default()
    };
    let state = repayd::http::HttpState {
        store: store.clone(),
        metrics: Arc::new(repayd::metrics::Metrics::new()),
        clock: Arc::new(clock.clone()),
        gateway: "sandbox".into(),
        mailer: "outbox".into(),
        stopping: tokio_util::sync::CancellationToken::new(),
        console: repayd::console::ConsoleOptions::default(),
    };
    let server = repayd::http::HttpServer::start(&settings, state)
        .await
        .unwrap();
    // What the three installments came to: all due, one debited, 600.00 transferred.
    let (due, paid) = (3 * 1_066_19, 1_066_19 + 600_00);
    let (status, page) = raw(
        server.local_addr().port(),
        &format!(
            "GET /console/today HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let caption = page
        .split("<figcaption>")
        .nth(1)
        .and_then(|rest| rest.split("</figcaption>").next())
        .unwrap_or_else(|| panic!("no chart caption in {page}"));
    assert!(
        caption.contains(&repayd_money(due, "CNY")) && caption.contains(&repayd_money(paid, "CNY")),
        "{caption}"
    );
    server.stop().await;
}

crate::both_backends!(
    kept_past_days_match_the_live_figures,
    kept_past_days_match_the_live_figures
);
