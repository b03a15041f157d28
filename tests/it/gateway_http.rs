//! The HTTP connector against a real server on loopback that implements
//! `docs/gateway-protocol.md` with an in-memory bank and injects faults on request: slow
//! answers, 5xx, dropped connections and answers lost after the debit was booked. The
//! bank counts the debits it actually books, so a double debit cannot hide. It speaks
//! protocol 1.1 too: `available` in funds confirmations and a returns feed
//! (`GET /v1/returns`), so `tests/it/collections.rs` runs the engine against it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use repayd::domain::{Currency, Money};
use repayd::gateway::http::{HttpGateway, HttpGatewaySettings};
use repayd::gateway::{
    DebitOutcome, DebitRequest, FundsAnswer, GatewayError, LookupOutcome, PaymentGateway,
};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::io::AsyncReadExt;

pub(crate) const TOKEN: &str = "s3cret-test-token";
/// The client's request timeout in these tests.
const TIMEOUT: Duration = Duration::from_millis(250);
/// How long a slow fault holds its answer: well past `TIMEOUT`.
const SLOW: Duration = Duration::from_millis(600);
/// What an injected connection drop panics with; the panic hook keeps it quiet.
const DROP_MARKER: &str = "gateway test: injected connection drop";

/// What the server does to one request (taken in order by whichever request comes next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer this status without doing anything.
    Status(u16),
    /// Wait past the client's timeout, then do the work (if still asked to).
    Slow,
    /// Do the work, then answer this status instead of the result.
    ProcessThenStatus(u16),
    /// Do the work, then wait past the client's timeout: the answer is lost.
    ProcessThenSlow,
    /// Close the connection without answering.
    Drop,
    /// Do the work, then close the connection without answering.
    ProcessThenDrop,
    /// Do the work, then answer 200 with a body that is not JSON.
    ProcessThenGarbage,
    /// Answer exactly this, without doing anything.
    Answer(u16, &'static str),
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Status(_) => "status",
            Fault::Slow => "slow",
            Fault::ProcessThenStatus(_) => "process-then-status",
            Fault::ProcessThenSlow => "process-then-slow",
            Fault::Drop => "drop",
            Fault::ProcessThenDrop => "process-then-drop",
            Fault::ProcessThenGarbage => "process-then-garbage",
            Fault::Answer(..) => "answer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAmount {
    value: String,
    currency: String,
}

impl WireAmount {
    fn parse(&self) -> Option<Money> {
        Money::parse(&self.value, Currency::parse(&self.currency).ok()?).ok()
    }
}

fn wire(m: &Money) -> serde_json::Value {
    json!({"value": m.plain(), "currency": m.currency().code()})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FundsBody {
    account_ref: String,
    amount: WireAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebitBody {
    account_ref: String,
    mandate_ref: String,
    amount: WireAmount,
    reference: String,
}

#[derive(Debug)]
struct BookedDebit {
    body: DebitBody,
    id: String,
    status: &'static str,
    decline_code: Option<&'static str>,
    hard: bool,
    /// Look-ups that still answer "pending" before it settles.
    polls_left: u32,
}

impl BookedDebit {
    fn resource(&self, key: &str) -> serde_json::Value {
        json!({
            "debit_id": self.id,
            "idempotency_key": key,
            "status": self.status,
            "decline_code": self.decline_code,
            "decline_reason": self.decline_code.map(|c| format!("declined: {c}")),
            "hard": self.hard,
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct BankState {
    balances: HashMap<String, Money>,
    pending_accounts: HashSet<String>,
    debits: HashMap<String, BookedDebit>,
    /// Money actually taken, per key: the double-debit detector.
    bookings: HashMap<String, u32>,
    faults: VecDeque<Fault>,
    faults_used: BTreeMap<&'static str, u32>,
    /// Every request that reached the server, authorized or not.
    pub(crate) requests: u32,
    /// The returns feed (protocol 1.1), oldest first; the cursor is the position.
    returns: Vec<serde_json::Value>,
    /// Requests to the returns feed.
    returns_polls: u32,
}

/// The in-memory bank behind the test server.
#[derive(Debug, Clone, Default)]
pub(crate) struct TestBank(Arc<Mutex<BankState>>);

impl TestBank {
    pub(crate) fn with_balance(self, account_ref: &str, balance: Money) -> Self {
        self.state()
            .balances
            .insert(account_ref.to_string(), balance);
        self
    }

    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, BankState> {
        self.0.lock().expect("bank state")
    }

    pub(crate) fn fault(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }

    pub(crate) fn set_balance(&self, account_ref: &str, balance: Money) {
        self.state()
            .balances
            .insert(account_ref.to_string(), balance);
    }

    /// Returns the succeeded debit booked under `key` (protocol 1.1): the money goes back
    /// to the account and the return joins the feed. Panics if there is no such debit.
    pub(crate) fn return_debit(&self, key: &str, reason_code: &str, hard: bool) -> String {
        let mut state = self.state();
        let debit = state.debits.get(key).expect("a booked debit");
        assert_eq!(
            debit.status, "succeeded",
            "only a succeeded debit is returned"
        );
        let amount = debit.body.amount.parse().expect("amount");
        let account = debit.body.account_ref.clone();
        let debit_id = debit.id.clone();
        let return_id = format!("ret_{}", state.returns.len() + 1);
        state.returns.push(json!({
            "return_id": return_id,
            "debit_id": debit_id,
            "idempotency_key": key,
            "amount": wire(&amount),
            "reason_code": reason_code,
            "hard": hard,
            "returned_at": chrono::Utc::now().to_rfc3339(),
        }));
        let balance = state.balances.get_mut(&account).expect("account");
        *balance = Money::from_minor(balance.minor() + amount.minor(), balance.currency());
        return_id
    }

    /// Debits that took money, over every key.
    pub(crate) fn total_bookings(&self) -> u32 {
        self.state().bookings.values().sum()
    }

    pub(crate) fn bookings(&self, key: &str) -> u32 {
        self.state().bookings.get(key).copied().unwrap_or(0)
    }

    pub(crate) fn balance(&self, account_ref: &str) -> Money {
        self.state().balances[account_ref]
    }

    pub(crate) fn top_up(&self, account_ref: &str, amount: &Money) {
        let mut state = self.state();
        let balance = state.balances.get_mut(account_ref).expect("account");
        *balance = Money::from_minor(balance.minor() + amount.minor(), balance.currency());
    }
}

fn error(status: u16, code: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        Json(json!({"error": code, "message": "test server"})),
    )
        .into_response()
}

/// Ends the connection without an answer: the panic unwinds the connection's task, which
/// drops the socket (axum has no other way to hang up from a handler).
fn drop_connection() -> ! {
    std::panic::panic_any(DROP_MARKER)
}

fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&DROP_MARKER) {
                previous(info);
            }
        }));
    });
}

/// Authenticates, applies the next fault around `process`, and answers.
async fn serve(
    bank: &TestBank,
    headers: &HeaderMap,
    process: impl FnOnce(&mut BankState) -> Response,
) -> Response {
    bank.state().requests += 1;
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str());
    if !authorized {
        return error(401, "unauthorized");
    }
    let fault = {
        let mut state = bank.state();
        let fault = state.faults.pop_front();
        if let Some(f) = &fault {
            *state.faults_used.entry(f.kind()).or_default() += 1;
        }
        fault
    };
    match &fault {
        Some(Fault::Status(status)) => return error(*status, "injected"),
        Some(Fault::Answer(status, body)) => {
            return (
                StatusCode::from_u16(*status).expect("status"),
                [(header::CONTENT_TYPE, "application/json")],
                *body,
            )
                .into_response();
        }
        Some(Fault::Drop) => drop_connection(),
        Some(Fault::Slow) => tokio::time::sleep(SLOW).await,
        _ => {}
    }
    let response = process(&mut bank.state());
    match fault {
        Some(Fault::ProcessThenStatus(status)) => error(status, "injected"),
        Some(Fault::ProcessThenSlow) => {
            tokio::time::sleep(SLOW).await;
            response
        }
        Some(Fault::ProcessThenDrop) => drop_connection(),
        Some(Fault::ProcessThenGarbage) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"status\": \"succ",
        )
            .into_response(),
        _ => response,
    }
}

async fn funds(
    State(bank): State<TestBank>,
    headers: HeaderMap,
    Json(body): Json<FundsBody>,
) -> Response {
    serve(&bank, &headers, move |state| {
        let Some(asked) = body.amount.parse() else {
            return error(422, "invalid_amount");
        };
        let shortfall = match state.balances.get(&body.account_ref) {
            Some(b) if b.currency() == asked.currency() => (b.minor() < asked.minor()).then(|| {
                Some(Money::from_minor(
                    asked.minor() - b.minor(),
                    asked.currency(),
                ))
            }),
            // Unknown accounts, or another currency: no, without a shortfall.
            _ => Some(None),
        };
        // Protocol 1.1: a short account also says what could be debited now.
        let available = shortfall
            .flatten()
            .map(|s| Money::from_minor(asked.minor() - s.minor(), asked.currency()));
        Json(json!({
            "funds_available": shortfall.is_none(),
            "shortfall": shortfall.flatten().map(|s| wire(&s)),
            "available": available.map(|a| wire(&a)),
            "checked_at": chrono::Utc::now().to_rfc3339(),
        }))
        .into_response()
    })
    .await
}

async fn debit(
    State(bank): State<TestBank>,
    headers: HeaderMap,
    Json(body): Json<DebitBody>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    serve(&bank, &headers, move |state| {
        let Some(key) = key else {
            return error(400, "idempotency_key_required");
        };
        if let Some(existing) = state.debits.get(&key) {
            if existing.body != body {
                return error(409, "idempotency_mismatch");
            }
            return (
                StatusCode::OK,
                [("idempotent-replayed", "true")],
                Json(existing.resource(&key)),
            )
                .into_response();
        }
        let Some(amount) = body.amount.parse() else {
            return error(422, "invalid_amount");
        };
        let pending = state.pending_accounts.contains(&body.account_ref);
        let (status, decline_code, hard) = match state.balances.get_mut(&body.account_ref) {
            None => ("declined", Some("account_closed"), true),
            Some(b) if b.currency() != amount.currency() => {
                ("declined", Some("currency_mismatch"), true)
            }
            Some(b) if b.minor() < amount.minor() => {
                ("declined", Some("insufficient_funds"), false)
            }
            Some(b) => {
                *b = Money::from_minor(b.minor() - amount.minor(), b.currency());
                *state.bookings.entry(key.clone()).or_default() += 1;
                (if pending { "pending" } else { "succeeded" }, None, false)
            }
        };
        let booked = BookedDebit {
            body,
            id: format!("dbt_{}", state.debits.len() + 1),
            status,
            decline_code,
            hard,
            polls_left: 1,
        };
        let resource = booked.resource(&key);
        state.debits.insert(key, booked);
        (StatusCode::CREATED, Json(resource)).into_response()
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ReturnsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/returns?after=CURSOR&limit=N` (protocol 1.1): the cursor is the number of
/// returns already read.
async fn returns(
    State(bank): State<TestBank>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ReturnsQuery>,
) -> Response {
    serve(&bank, &headers, move |state| {
        state.returns_polls += 1;
        let after = match query.after.as_deref().map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) if n <= state.returns.len() => n,
            Some(_) => return error(422, "invalid_cursor"),
        };
        let limit = query.limit.unwrap_or(100).clamp(1, 1000);
        let page: Vec<_> = state
            .returns
            .iter()
            .skip(after)
            .take(limit)
            .cloned()
            .collect();
        let next = after + page.len();
        Json(json!({"returns": page, "next_cursor": next.to_string()})).into_response()
    })
    .await
}

async fn lookup(
    State(bank): State<TestBank>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    serve(&bank, &headers, move |state| {
        match state.debits.get_mut(&key) {
            None => error(404, "not_found"),
            Some(d) => {
                if d.status == "pending" {
                    if d.polls_left == 0 {
                        d.status = "succeeded";
                    } else {
                        d.polls_left -= 1;
                    }
                }
                Json(d.resource(&key)).into_response()
            }
        }
    })
    .await
}

/// The bank's protocol under `/bank`, to be served over plain HTTP ([`start`]) or TLS.
pub(crate) fn router(bank: &TestBank) -> Router {
    quiet_injected_panics();
    let api = Router::new()
        .route("/v1/funds-confirmations", post(funds))
        .route("/v1/debits", post(debit))
        .route("/v1/debits/by-key/{key}", get(lookup))
        .route("/v1/returns", get(returns))
        .with_state(bank.clone());
    Router::new().nest("/bank", api)
}

/// Starts the test server on 127.0.0.1:0 under `/bank` (so the client's base path is
/// exercised too) and returns its base URL.
pub(crate) async fn start(bank: &TestBank) -> String {
    let app = router(bank);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/bank")
}

fn client_with(base_url: &str, token: &str, retries: u32) -> HttpGateway {
    let mut settings = HttpGatewaySettings::new(base_url, SecretString::from(token.to_string()));
    settings.connect_timeout_ms = 1_000;
    settings.request_timeout_ms = TIMEOUT.as_millis() as u64;
    settings.funds_check_retries = retries;
    HttpGateway::new(&settings).expect("client")
}

/// A client of the loopback bank that reads its returns feed (protocol 1.1).
pub(crate) fn client_v11(base_url: &str) -> HttpGateway {
    let mut settings = HttpGatewaySettings::new(base_url, SecretString::from(TOKEN.to_string()));
    settings.connect_timeout_ms = 1_000;
    settings.request_timeout_ms = TIMEOUT.as_millis() as u64;
    settings.funds_check_retries = 1;
    settings.returns_feed = true;
    HttpGateway::new(&settings).expect("client")
}

fn client(base_url: &str) -> HttpGateway {
    client_with(base_url, TOKEN, 1)
}

pub(crate) fn money(value: &str, currency: &str) -> Money {
    Money::parse(value, Currency::parse(currency).unwrap()).unwrap()
}

pub(crate) fn request(key: &str, account_ref: &str, amount: Money) -> DebitRequest {
    DebitRequest {
        account_ref: account_ref.into(),
        mandate_ref: format!("MND-{account_ref}"),
        amount,
        idempotency_key: key.into(),
        reference: format!("AGR-7 {key}"),
    }
}

#[tokio::test]
async fn funds_confirmations_read_exact_decimal_strings() {
    let bank = TestBank::default()
        .with_balance("ACC-CNY-0001", money("1066.18", "CNY"))
        .with_balance("ACC-JPY-0001", money("5000", "JPY"))
        .with_balance("ACC-KWD-0001", money("10.250", "KWD"));
    let gw = client(&start(&bank).await);
    assert_eq!(
        gw.check_funds("ACC-CNY-0001", &money("1066.18", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Available
    );
    assert_eq!(
        gw.check_funds("ACC-CNY-0001", &money("1066.19", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("0.01", "CNY")),
            available: Some(money("1066.18", "CNY")),
        }
    );
    assert_eq!(
        gw.check_funds("ACC-JPY-0001", &money("7000", "JPY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("2000", "JPY")),
            available: Some(money("5000", "JPY")),
        }
    );
    assert_eq!(
        gw.check_funds("ACC-KWD-0001", &money("10.251", "KWD"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("0.001", "KWD")),
            available: Some(money("10.250", "KWD")),
        }
    );
    assert_eq!(
        gw.check_funds("ACC-UNKNOWN", &money("1.00", "CNY"))
            .await
            .unwrap(),
        FundsAnswer::Insufficient {
            shortfall: None,
            available: None
        }
    );
}

#[tokio::test]
async fn funds_answers_outside_the_protocol_are_protocol_errors() {
    let bank = TestBank::default().with_balance("ACC-0001", money("10.00", "CNY"));
    let gw = client(&start(&bank).await);
    let ask = money("20.00", "CNY");
    let bad: Vec<&'static str> = vec![
        "not json at all",
        // A float where a decimal string belongs.
        r#"{"funds_available":false,"shortfall":{"value":10.0,"currency":"CNY"},"checked_at":"2025-03-01T06:00:00Z"}"#,
        // More digits than CNY has.
        r#"{"funds_available":false,"shortfall":{"value":"10.001","currency":"CNY"},"checked_at":"2025-03-01T06:00:00Z"}"#,
        r#"{"funds_available":false,"shortfall":{"value":"10.00","currency":"USD"},"checked_at":"2025-03-01T06:00:00Z"}"#,
        r#"{"funds_available":true,"shortfall":{"value":"10.00","currency":"CNY"},"checked_at":"2025-03-01T06:00:00Z"}"#,
        r#"{"funds_available":true,"shortfall":null}"#,
        r#"{"funds_available":true,"shortfall":null,"checked_at":"yesterday"}"#,
    ];
    for body in bad {
        bank.fault(Fault::Answer(200, body));
        match gw.check_funds("ACC-0001", &ask).await {
            Err(GatewayError::Protocol(_)) => {}
            other => panic!("{body}: expected a protocol error, got {other:?}"),
        }
    }
    // Unknown fields are ignored; an offset other than Z is fine.
    let body = r#"{"funds_available":false,"shortfall":{"value":"10.00","currency":"CNY"},"checked_at":"2025-03-01T06:00:00+08:00","x_bank_note":1}"#;
    bank.fault(Fault::Answer(200, body));
    assert_eq!(
        gw.check_funds("ACC-0001", &ask).await.unwrap(),
        FundsAnswer::Insufficient {
            shortfall: Some(money("10.00", "CNY")),
            available: None,
        }
    );
}

#[tokio::test]
async fn funds_checks_are_retried_then_unavailable() {
    let bank = TestBank::default().with_balance("ACC-0001", money("10.00", "CNY"));
    let gw = client(&start(&bank).await);
    let ask = money("1.00", "CNY");
    // One retry (funds_check_retries = 1) gets past one failure...
    bank.fault(Fault::Status(503));
    assert_eq!(
        gw.check_funds("ACC-0001", &ask).await.unwrap(),
        FundsAnswer::Available
    );
    bank.fault(Fault::Slow);
    assert_eq!(
        gw.check_funds("ACC-0001", &ask).await.unwrap(),
        FundsAnswer::Available
    );
    // ...not past two.
    bank.fault(Fault::Status(502));
    bank.fault(Fault::Drop);
    assert!(matches!(
        gw.check_funds("ACC-0001", &ask).await,
        Err(GatewayError::Unavailable(_))
    ));
    // A refusal is not retried: it needs a human.
    bank.fault(Fault::Status(400));
    bank.fault(Fault::Status(503));
    assert!(matches!(
        gw.check_funds("ACC-0001", &ask).await,
        Err(GatewayError::Rejected(_))
    ));
    assert_eq!(bank.state().faults.len(), 1, "the 400 was not retried");
}

#[tokio::test]
async fn the_bearer_token_is_required() {
    let bank = TestBank::default().with_balance("ACC-0001", money("100.00", "CNY"));
    let base = start(&bank).await;
    let gw = client_with(&base, "wrong-token", 2);
    let err = gw
        .check_funds("ACC-0001", &money("1.00", "CNY"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Rejected(m) if m.contains("401")),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-token"));
    let err = gw
        .debit(&request("key-1", "ACC-0001", money("1.00", "CNY")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, GatewayError::Rejected(m) if m.contains("401")),
        "{err}"
    );
    // A refused look-up says so (the engine keeps the outcome unknown and alerts once).
    assert!(matches!(
        gw.lookup("key-1").await,
        Err(GatewayError::Rejected(m)) if m.contains("401") && m.contains("look-up refused")
    ));
    assert_eq!(bank.bookings("key-1"), 0);
    assert_eq!(bank.balance("ACC-0001"), money("100.00", "CNY"));
}

#[tokio::test]
async fn a_debit_is_booked_once_and_replayed_by_key() {
    let bank = TestBank::default().with_balance("ACC-0001", money("5000.00", "CNY"));
    let gw = client(&start(&bank).await);
    let req = request("inst-1-attempt-1", "ACC-0001", money("1066.19", "CNY"));
    let first = gw.debit(&req).await.unwrap();
    assert_eq!(
        first,
        DebitOutcome::Succeeded {
            gateway_ref: "dbt_1".into()
        }
    );
    assert_eq!(gw.debit(&req).await.unwrap(), first);
    assert_eq!(
        gw.lookup(&req.idempotency_key).await.unwrap(),
        LookupOutcome::Found(first)
    );
    assert_eq!(
        gw.lookup("inst-1-attempt-2").await.unwrap(),
        LookupOutcome::NotFound
    );
    assert_eq!(bank.bookings(&req.idempotency_key), 1);
    assert_eq!(bank.balance("ACC-0001"), money("3933.81", "CNY"));
}

#[tokio::test]
async fn reusing_a_key_for_another_debit_is_a_hard_decline() {
    let bank = TestBank::default().with_balance("ACC-0001", money("100.00", "CNY"));
    let gw = client(&start(&bank).await);
    let req = request("key-9", "ACC-0001", money("10.00", "CNY"));
    assert!(matches!(
        gw.debit(&req).await.unwrap(),
        DebitOutcome::Succeeded { .. }
    ));
    let other = request("key-9", "ACC-0001", money("11.00", "CNY"));
    match gw.debit(&other).await.unwrap() {
        DebitOutcome::Declined { code, hard, .. } => {
            assert_eq!(code, "idempotency_mismatch");
            assert!(hard);
        }
        outcome => panic!("expected a mismatch, got {outcome:?}"),
    }
    assert_eq!(bank.bookings("key-9"), 1);
    assert_eq!(bank.balance("ACC-0001"), money("90.00", "CNY"));
    // A 409 that is not a mismatch (still in progress) settles nothing.
    bank.fault(Fault::Answer(409, r#"{"error":"request_in_progress"}"#));
    assert!(matches!(
        gw.debit(&req).await,
        Err(GatewayError::Ambiguous(_))
    ));
}

#[tokio::test]
async fn declines_are_final_answers() {
    let bank = TestBank::default().with_balance("ACC-0001", money("5.00", "CNY"));
    let gw = client(&start(&bank).await);
    assert_eq!(
        gw.debit(&request("key-short", "ACC-0001", money("10.00", "CNY")))
            .await
            .unwrap(),
        DebitOutcome::Declined {
            code: "insufficient_funds".into(),
            reason: "declined: insufficient_funds".into(),
            hard: false,
        }
    );
    assert!(matches!(
        gw.debit(&request("key-gone", "ACC-GONE", money("10.00", "CNY")))
            .await
            .unwrap(),
        DebitOutcome::Declined { hard: true, .. }
    ));
    assert_eq!(bank.bookings("key-short"), 0);
}

#[tokio::test]
async fn a_pending_debit_settles_through_lookup() {
    let bank = TestBank::default().with_balance("ACC-ASYNC", money("100.00", "CNY"));
    bank.state().pending_accounts.insert("ACC-ASYNC".into());
    let gw = client(&start(&bank).await);
    let req = request("key-async", "ACC-ASYNC", money("60.00", "CNY"));
    let pending = DebitOutcome::Pending {
        gateway_ref: "dbt_1".into(),
    };
    assert_eq!(gw.debit(&req).await.unwrap(), pending);
    assert_eq!(
        gw.lookup("key-async").await.unwrap(),
        LookupOutcome::Found(pending)
    );
    assert_eq!(
        gw.lookup("key-async").await.unwrap(),
        LookupOutcome::Found(DebitOutcome::Succeeded {
            gateway_ref: "dbt_1".into()
        })
    );
    assert_eq!(bank.bookings("key-async"), 1);
}

#[tokio::test]
async fn each_debit_fault_is_classified_as_documented() {
    let bank = TestBank::default().with_balance("ACC-0001", money("1000.00", "CNY"));
    let gw = client(&start(&bank).await);
    // (fault, booked by the server?) — `None`: a slow request may or may not be processed
    // once the client has given up.
    let cases = [
        (Fault::Status(500), Some(false)),
        (Fault::Status(502), Some(false)),
        (Fault::Status(503), Some(false)),
        (Fault::Status(429), Some(false)),
        (Fault::Slow, None),
        (Fault::ProcessThenStatus(500), Some(true)),
        (Fault::ProcessThenSlow, Some(true)),
        (Fault::Drop, Some(false)),
        (Fault::ProcessThenDrop, Some(true)),
        (Fault::ProcessThenGarbage, Some(true)),
        (
            Fault::Answer(200, r#"{"idempotency_key":"x","status":"succeeded"}"#),
            Some(false),
        ),
    ];
    for (i, (fault, booked)) in cases.into_iter().enumerate() {
        let req = request(&format!("fault-{i}"), "ACC-0001", money("1.00", "CNY"));
        bank.fault(fault.clone());
        match gw.debit(&req).await {
            Err(GatewayError::Ambiguous(_)) => {}
            other => panic!("{fault:?}: expected ambiguous, got {other:?}"),
        }
        if booked.is_none() {
            tokio::time::sleep(SLOW).await;
        }
        let found = gw.lookup(&req.idempotency_key).await.unwrap();
        if let Some(booked) = booked {
            assert_eq!(
                matches!(found, LookupOutcome::Found(_)),
                booked,
                "{fault:?}: {found:?}"
            );
        }
        // Re-sent under the same key, whatever happened: exactly one booking.
        assert!(matches!(
            gw.debit(&req).await.unwrap(),
            DebitOutcome::Succeeded { .. }
        ));
        assert_eq!(bank.bookings(&req.idempotency_key), 1, "{fault:?}");
    }
    // A request the bank refuses as invalid is rejected (a human must act); nothing was
    // booked.
    bank.fault(Fault::Answer(422, r#"{"error":"invalid_amount"}"#));
    assert!(matches!(
        gw.debit(&request("fault-422", "ACC-0001", money("1.00", "CNY")))
            .await,
        Err(GatewayError::Rejected(_))
    ));
    assert_eq!(bank.balance("ACC-0001"), money("989.00", "CNY"));
}

#[tokio::test]
async fn lookup_faults_never_pass_for_not_found() {
    let bank = TestBank::default().with_balance("ACC-0001", money("100.00", "CNY"));
    let gw = client(&start(&bank).await);
    for fault in [Fault::Status(503), Fault::Slow, Fault::Drop] {
        bank.fault(fault.clone());
        assert!(
            matches!(gw.lookup("key-x").await, Err(GatewayError::Unavailable(_))),
            "{fault:?}"
        );
    }
    // A 404 that is not the protocol's (a proxy, a wrong base URL) is not "never seen".
    bank.fault(Fault::Answer(404, "<html>Not Found</html>"));
    assert!(matches!(
        gw.lookup("key-x").await,
        Err(GatewayError::Protocol(_))
    ));
    bank.fault(Fault::Answer(200, "{\"status\":"));
    assert!(matches!(
        gw.lookup("key-x").await,
        Err(GatewayError::Protocol(_))
    ));
    bank.fault(Fault::Answer(
        200,
        r#"{"debit_id":"d1","idempotency_key":"other-key","status":"succeeded"}"#,
    ));
    assert!(matches!(
        gw.lookup("key-x").await,
        Err(GatewayError::Protocol(_))
    ));
    assert_eq!(gw.lookup("key-x").await.unwrap(), LookupOutcome::NotFound);
}

#[tokio::test]
async fn a_server_that_hangs_up_or_is_not_there() {
    // Reads the request, then closes without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = socket.read(&mut buf).await;
            });
        }
    });
    let gw = client(&format!("http://127.0.0.1:{port}"));
    let req = request("key-hangup", "ACC-0001", money("1.00", "CNY"));
    assert!(matches!(
        gw.debit(&req).await,
        Err(GatewayError::Ambiguous(_))
    ));
    assert!(matches!(
        gw.check_funds("ACC-0001", &money("1.00", "CNY")).await,
        Err(GatewayError::Unavailable(_))
    ));
    assert!(matches!(
        gw.lookup("key-hangup").await,
        Err(GatewayError::Unavailable(_))
    ));

    // Nobody listening: the debit certainly was not sent.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = client(&format!("http://127.0.0.1:{closed_port}"));
    let err = gw.debit(&req).await.unwrap_err();
    assert!(matches!(err, GatewayError::Unavailable(_)), "{err}");
    assert!(matches!(
        gw.lookup("key-hangup").await,
        Err(GatewayError::Unavailable(_))
    ));
}

/// What the driver concluded about one debit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Belief {
    Booked { gateway_ref: String },
    NotBooked { code: String },
}

/// Polls a pending debit until it settles.
async fn settle(gw: &HttpGateway, key: &str, outcome: DebitOutcome) -> Belief {
    let mut outcome = outcome;
    for _ in 0..50 {
        match outcome {
            DebitOutcome::Succeeded { gateway_ref } => return Belief::Booked { gateway_ref },
            DebitOutcome::Declined { code, .. } => return Belief::NotBooked { code },
            DebitOutcome::Pending { .. } => match gw.lookup(key).await {
                Ok(LookupOutcome::Found(next)) => outcome = next,
                Ok(LookupOutcome::NotFound) => panic!("{key}: a pending debit vanished"),
                Err(_) => {
                    outcome = DebitOutcome::Pending {
                        gateway_ref: String::new(),
                    }
                }
            },
        }
    }
    panic!("{key}: never settled");
}

/// Drives one debit to a definite outcome the way the engine does: not sent -> send again
/// under the same key; ambiguous -> look up, and send again under the same key only when
/// the bank has never seen it.
async fn drive(gw: &HttpGateway, req: &DebitRequest) -> Belief {
    let key = &req.idempotency_key;
    for _ in 0..40 {
        match gw.debit(req).await {
            Ok(outcome) => return settle(gw, key, outcome).await,
            Err(GatewayError::Unavailable(_)) => continue,
            Err(GatewayError::Ambiguous(_)) => {}
            Err(GatewayError::Protocol(e) | GatewayError::Rejected(e)) => panic!("{key}: {e}"),
        }
        for _ in 0..40 {
            match gw.lookup(key).await {
                Ok(LookupOutcome::NotFound) => break,
                Ok(LookupOutcome::Found(outcome)) => return settle(gw, key, outcome).await,
                // Reconcile again later; never guess.
                Err(_) => continue,
            }
        }
    }
    panic!("{key}: no definite outcome");
}

/// xorshift64, for a reproducible fault plan.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_double_debits_under_random_faults() {
    let faults = [
        Fault::Status(500),
        Fault::Status(502),
        Fault::Status(503),
        Fault::Status(429),
        Fault::Slow,
        Fault::ProcessThenStatus(502),
        Fault::ProcessThenSlow,
        Fault::Drop,
        Fault::ProcessThenDrop,
        Fault::ProcessThenGarbage,
    ];
    let bank = TestBank::default();
    let mut expected_balance: HashMap<String, i64> = HashMap::new();
    for i in 0..10 {
        let account = format!("ACC-R-{i:04}");
        // Every fourth account starts short, so declines and retries happen too.
        let opening = if i % 4 == 0 {
            money("150.00", "CNY")
        } else {
            money("100000.00", "CNY")
        };
        expected_balance.insert(account.clone(), opening.minor());
        let mut state = bank.state();
        state.balances.insert(account.clone(), opening);
        if i % 5 == 1 {
            state.pending_accounts.insert(account);
        }
    }
    let gw = client(&start(&bank).await);
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut beliefs: Vec<(usize, String, Belief)> = Vec::new();

    for installment in 0..50 {
        let account = format!("ACC-R-{:04}", installment % 10);
        let amount = Money::from_minor(
            10_000 + 100 * installment as i64,
            Currency::parse("CNY").unwrap(),
        );
        for attempt in 1..=3 {
            let key = format!("inst-{installment}-attempt-{attempt}");
            for _ in 0..rng.below(3) {
                bank.fault(faults[rng.below(faults.len() as u64) as usize].clone());
            }
            let mut funds = None;
            for _ in 0..20 {
                if let Ok(answer) = gw.check_funds(&account, &amount).await {
                    funds = Some(answer);
                    break;
                }
            }
            if let FundsAnswer::Insufficient { .. } = funds.expect("a funds answer") {
                // The customer tops up; the engine tries again later, under a new key.
                bank.top_up(&account, &amount);
                *expected_balance.get_mut(&account).unwrap() += amount.minor();
                continue;
            }
            let belief = drive(&gw, &request(&key, &account, amount)).await;
            beliefs.push((installment, key, belief.clone()));
            match belief {
                Belief::Booked { .. } => {
                    *expected_balance.get_mut(&account).unwrap() -= amount.minor();
                    break;
                }
                Belief::NotBooked { code } => panic!("{code}: funds were confirmed just before"),
            }
        }
    }

    // Let every slow handler still running finish before counting.
    bank.state().faults.clear();
    tokio::time::sleep(SLOW + Duration::from_millis(300)).await;
    let state = bank.state();
    let mut booked_installments = HashSet::new();
    for (installment, key, belief) in &beliefs {
        let bookings = state.bookings.get(key).copied().unwrap_or(0);
        match belief {
            Belief::Booked { gateway_ref } => {
                assert_eq!(bookings, 1, "{key}: believed booked");
                assert_eq!(&state.debits[key].id, gateway_ref, "{key}");
                assert!(booked_installments.insert(*installment), "{key}: twice");
            }
            Belief::NotBooked { .. } => assert_eq!(bookings, 0, "{key}: believed not booked"),
        }
    }
    assert_eq!(
        booked_installments.len(),
        50,
        "every installment was paid once"
    );
    assert_eq!(
        state.bookings.values().sum::<u32>(),
        50,
        "no booking the client missed"
    );
    for (account, expected) in &expected_balance {
        assert_eq!(state.balances[account].minor(), *expected, "{account}");
    }
    for fault in &faults {
        assert!(
            state.faults_used.get(fault.kind()).is_some_and(|n| *n > 0),
            "{fault:?} was never exercised: {:?}",
            state.faults_used
        );
    }
}

/// Every status the protocol says means "refused before acting; needs a human" is
/// `Rejected` for a funds check and for a debit, names the status and is asked once.
#[tokio::test]
async fn refusals_that_need_a_human_are_rejected_and_asked_once() {
    let bank = TestBank::default().with_balance("ACC-0001", money("100.00", "CNY"));
    let gw = client(&start(&bank).await);
    for status in repayd::gateway::REJECTING_STATUSES {
        let before = bank.state().requests;
        bank.fault(Fault::Answer(status, r#"{"error":"invalid_request"}"#));
        match gw.check_funds("ACC-0001", &money("1.00", "CNY")).await {
            Err(GatewayError::Rejected(m)) => assert!(m.contains(&status.to_string()), "{m}"),
            other => panic!("funds check answered {status}: got {other:?}"),
        }
        assert_eq!(bank.state().requests, before + 1, "{status} was retried");
        let key = format!("rejected-{status}");
        bank.fault(Fault::Answer(status, r#"{"error":"invalid_request"}"#));
        match gw
            .debit(&request(&key, "ACC-0001", money("1.00", "CNY")))
            .await
        {
            Err(GatewayError::Rejected(m)) => {
                assert!(
                    m.contains(&status.to_string()) && m.contains("invalid_request"),
                    "{m}"
                )
            }
            other => panic!("debit answered {status}: got {other:?}"),
        }
        assert_eq!(bank.bookings(&key), 0);
    }
}

/// The engine against the loopback bank: a funds check or a debit answered 400/422 ends
/// the attempt `rejected` with an operations alert; nothing is resent however long the
/// daemon runs; an operator's re-queue (actor and reason in the event log) runs it again
/// under the same key, and it is booked exactly once.
async fn rejected_attempts_stop_until_an_operator_requeues_them(db: crate::helpers::TestDb) {
    use crate::engine::{Spec, load, six_local, test_engine};
    use repayd::clock::{Clock, ManualClock};
    let store = db.store.clone();
    let bank = TestBank::default()
        .with_balance("ACC-F", money("1000.00", "CNY"))
        .with_balance("ACC-D", money("1000.00", "CNY"));
    let gw: Arc<dyn PaymentGateway> = Arc::new(client(&start(&bank).await));
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let due = six_local("2027-01-15", tz);
    let clock = ManualClock::new(due);
    let p = load(
        &store,
        &[
            Spec {
                id: "FUNDS400",
                tz: "Asia/Shanghai",
                currency: "CNY",
                account: "ACC-F",
                mandate: "active",
                installments: &[("2027-01-15", 10_000)],
            },
            Spec {
                id: "DEBIT422",
                tz: "Asia/Shanghai",
                currency: "CNY",
                account: "ACC-D",
                mandate: "active",
                installments: &[("2027-01-16", 20_000)],
            },
        ],
    )
    .await;
    let mut policy = crate::engine::policy();
    policy.overdue.alerts.webhook_url = Some("http://127.0.0.1:9/alerts".into());
    let engine = test_engine(&store, gw, &clock, policy);
    engine.plan().await.unwrap();
    // On the 15th the funds check is refused (400); on the 16th the funds check passes
    // and the debit is refused (422).
    let shutdown = tokio_util::sync::CancellationToken::new();
    bank.fault(Fault::Answer(400, r#"{"error":"invalid_account_ref"}"#));
    let report = engine.run_due(&shutdown).await.unwrap();
    assert_eq!((report.claimed, report.rejected), (1, 1), "{report:?}");
    let due = six_local("2027-01-16", tz);
    clock.set(due);
    bank.fault(Fault::Answer(
        200,
        r#"{"funds_available":true,"checked_at":"2027-01-16T06:00:00+08:00"}"#,
    ));
    bank.fault(Fault::Answer(422, r#"{"error":"invalid_amount"}"#));
    let report = engine.run_due(&shutdown).await.unwrap();
    assert_eq!((report.claimed, report.rejected), (1, 1), "{report:?}");
    let funds = store
        .attempts_for_agreement(p.agreement_ids[0])
        .await
        .unwrap();
    let debit = store
        .attempts_for_agreement(p.agreement_ids[1])
        .await
        .unwrap();
    assert_eq!((funds.len(), debit.len()), (1, 1));
    assert_eq!(funds[0].state, "rejected");
    assert_eq!(
        funds[0].outcome_code.as_deref(),
        Some("funds_check_rejected")
    );
    assert!(funds[0].outcome_detail.as_deref().unwrap().contains("400"));
    assert_eq!(debit[0].state, "rejected");
    assert_eq!(debit[0].outcome_code.as_deref(), Some("debit_rejected"));

    // An operations alert for each, once.
    assert_eq!(engine.enqueue_event_alerts().await.unwrap(), 2);
    assert_eq!(engine.enqueue_event_alerts().await.unwrap(), 0);
    let alerts = store.alerts().await.unwrap();
    assert!(
        alerts.iter().all(|a| a.kind == "debit_rejected"),
        "{alerts:?}"
    );

    // Days go by: nothing is sent again, no new attempt is planned.
    let requests = bank.state().requests;
    for day in 1..=10 {
        clock.set(due + chrono::Duration::days(day));
        engine.plan().await.unwrap();
        let report = engine.run_due(&shutdown).await.unwrap();
        assert_eq!(report.claimed, 0, "day {day}: {report:?}");
    }
    assert_eq!(bank.state().requests, requests);
    assert_eq!(
        store
            .attempts_for_agreement(p.agreement_ids[0])
            .await
            .unwrap()
            .len(),
        1
    );

    // Re-queued after the fix; only a rejected attempt can be.
    let now_ms = repayd::clock::to_epoch_ms(clock.now());
    store
        .requeue_rejected_attempt(debit[0].id, &actor("ops-bob", "debit limit raised"), now_ms)
        .await
        .unwrap();
    let again = store
        .requeue_rejected_attempt(debit[0].id, &actor("ops-bob", "twice"), now_ms)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("not rejected"), "{again}");
    let row = store
        .requeue_rejected_attempt(
            funds[0].id,
            &actor("ops-alice", "account reference corrected"),
            now_ms,
        )
        .await
        .unwrap();
    assert_eq!(
        (row.state.as_str(), row.idempotency_key.as_str()),
        ("scheduled", funds[0].idempotency_key.as_str())
    );
    let report = engine.run_due(&shutdown).await.unwrap();
    assert_eq!(report.succeeded, 2, "{report:?}");
    assert_eq!(bank.bookings(&funds[0].idempotency_key), 1);
    assert_eq!(bank.bookings(&debit[0].idempotency_key), 1);
    let events = store.events(None).await.unwrap();
    let requeued: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "debit_requeued")
        .collect();
    assert_eq!(requeued.len(), 2);
    assert!(
        requeued
            .iter()
            .any(|e| e.detail.contains("ops-alice")
                && e.detail.contains("account reference corrected")),
        "{requeued:?}"
    );
}
crate::both_backends!(
    rejected_attempts_stop_until_an_operator_requeues_them,
    super::rejected_attempts_stop_until_an_operator_requeues_them
);

fn actor(name: &str, reason: &str) -> repayd::domain::Actor {
    repayd::domain::Actor::new(name, reason).unwrap()
}

/// Look-ups answered 401/403: the debit's outcome is still unknown, so the attempt stays
/// `unknown` (never `rejected`, never sent again), is looked up again with backoff, and
/// operations are told once (one `gateway_lookup_refused` alert for the episode); when
/// the bank answers again it settles, booked exactly once.
async fn refused_lookups_keep_the_outcome_unknown_and_alert_once(db: crate::helpers::TestDb) {
    use crate::engine::{Spec, load, six_local, test_engine};
    use repayd::clock::{ManualClock, from_epoch_ms};
    let store = db.store.clone();
    let bank = TestBank::default().with_balance("ACC-L", money("1000.00", "CNY"));
    let gw: Arc<dyn PaymentGateway> = Arc::new(client(&start(&bank).await));
    let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
    let clock = ManualClock::new(six_local("2027-01-15", tz));
    let p = load(
        &store,
        &[Spec {
            id: "LOOKUP401",
            tz: "Asia/Shanghai",
            currency: "CNY",
            account: "ACC-L",
            mandate: "active",
            installments: &[("2027-01-15", 10_000)],
        }],
    )
    .await;
    let mut policy = crate::engine::policy();
    policy.overdue.alerts.webhook_url = Some("http://127.0.0.1:9/alerts".into());
    let engine = test_engine(&store, gw, &clock, policy);
    engine.plan().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The debit is booked but its answer is lost: unknown.
    bank.fault(Fault::Answer(
        200,
        r#"{"funds_available":true,"checked_at":"2027-01-15T06:00:00+08:00"}"#,
    ));
    bank.fault(Fault::ProcessThenSlow);
    let report = engine.run_due(&shutdown).await.unwrap();
    assert_eq!(report.unknown, 1, "{report:?}");
    let agreement_id = p.agreement_ids[0];
    let attempt = move |store: repayd::store::Store| async move {
        let rows = store.attempts_for_agreement(agreement_id).await.unwrap();
        assert_eq!(rows.len(), 1, "no second attempt is ever planned");
        rows.into_iter().next().unwrap()
    };
    let key = attempt(store.clone()).await.idempotency_key;
    assert_eq!(bank.bookings(&key), 1);

    // Three look-ups refused (401, 403, 401): still unknown, detail names the status,
    // spaced by the backoff; one alert for the whole episode.
    let mut waits = Vec::new();
    for status in [401, 403, 401] {
        let row = attempt(store.clone()).await;
        let due = from_epoch_ms(row.scheduled_at_ms);
        clock.set(due);
        bank.fault(Fault::Status(status));
        let report = engine.run_due(&shutdown).await.unwrap();
        assert_eq!((report.claimed, report.unknown), (1, 1), "{report:?}");
        let row = attempt(store.clone()).await;
        assert_eq!(row.state, "unknown");
        let detail = row.outcome_detail.unwrap();
        assert!(
            detail.contains(&format!("HTTP {status}")) && detail.contains("look-up refused"),
            "{detail}"
        );
        waits.push(row.scheduled_at_ms - repayd::clock::to_epoch_ms(due));
    }
    assert!(
        waits[0] > 0 && waits.windows(2).all(|w| w[1] >= w[0]),
        "{waits:?}"
    );
    assert_eq!(engine.enqueue_event_alerts().await.unwrap(), 1);
    assert_eq!(engine.enqueue_event_alerts().await.unwrap(), 0);
    let alerts = store.alerts().await.unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].kind, "gateway_lookup_refused");
    let events = store.events(None).await.unwrap();
    let refused = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        (
            refused("gateway_lookup_refused"),
            refused("debit_lookup_refused")
        ),
        (1, 2)
    );
    assert_eq!(bank.bookings(&key), 1, "nothing was sent again");

    // The bank answers again: settled from the look-up, booked once.
    let row = attempt(store.clone()).await;
    clock.set(from_epoch_ms(row.scheduled_at_ms));
    let report = engine.run_due(&shutdown).await.unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(attempt(store.clone()).await.state, "succeeded");
    assert_eq!(bank.bookings(&key), 1);
    assert_eq!(bank.balance("ACC-L"), money("900.00", "CNY"));
}
crate::both_backends!(
    refused_lookups_keep_the_outcome_unknown_and_alert_once,
    super::refused_lookups_keep_the_outcome_unknown_and_alert_once
);
