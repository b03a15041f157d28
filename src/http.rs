//! The operations endpoint of `repayd run`: `/healthz` (the process answers), `/readyz`
//! (the database is reachable and migrated, the gateway and mailer are built, the daemon
//! is not stopping) and `/metrics` (Prometheus text format, see [`crate::metrics`]).
//!
//! Bound to 127.0.0.1 by default. With a token (`http.token` / `http.token_file`),
//! `/readyz` and `/metrics` need `Authorization: Bearer <token>`; `/healthz` never does,
//! since it says nothing but "alive" and probes rarely carry secrets.
//!
//! Bounded, so a client cannot take the daemon's file descriptors or memory: at most
//! `http.max_connections` connections are open (further clients wait in the kernel's
//! accept queue, holding no descriptor of ours); a connection that does not deliver a
//! request's headers within `http.header_read_timeout_seconds` (a slow client, or an idle
//! keep-alive connection) is closed; headers are at most 16 KiB; a request with a body is
//! refused (413): every endpoint is a GET.

use crate::clock::Clock;
use crate::config::ConfigError;
use crate::console::{ConsoleAuth, ConsoleOptions};
use crate::metrics::Metrics;
use crate::store::Store;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a readiness or metrics query may take before the answer is "not ready":
/// a hung database must not hang the probe.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `[http]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Serve /healthz, /readyz and /metrics while `repayd run` runs.
    pub enabled: bool,
    /// Address and port, e.g. `127.0.0.1:9464`; port 0 picks a free one (it is logged).
    pub listen: String,
    /// Bearer token for /readyz and /metrics; best given as `token_file`.
    pub token: Option<SecretString>,
    /// A file holding the token, e.g. `$CREDENTIALS_DIRECTORY/http-token`.
    pub token_file: Option<PathBuf>,
    /// Connections open at the same time (1 to 1024); further ones wait to be accepted.
    pub max_connections: u32,
    /// Seconds a connection may take to send a request's headers, and may stay idle
    /// between requests (1 to 300).
    pub header_read_timeout_seconds: u32,
    /// Serve the operations console at /console (see [`crate::console`]).
    pub console: bool,
    /// The console's one user; with `console_password` (or `console_password_file`) only
    /// this user signs in. Without them, `token` is the console's password.
    pub console_user: Option<String>,
    pub console_password: Option<SecretString>,
    /// A file holding the console password, e.g. `$CREDENTIALS_DIRECTORY/console-password`.
    pub console_password_file: Option<PathBuf>,
}

/// The largest request head (request line and headers) read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            token: None,
            token_file: None,
            max_connections: 64,
            header_read_timeout_seconds: 10,
            console: true,
            console_user: None,
            console_password: None,
            console_password_file: None,
        }
    }
}

impl HttpSettings {
    /// Every problem, each naming its key.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = self.listen_addr() {
            problems.push(e);
        }
        problems.extend(crate::config::out_of_range(
            "http.max_connections",
            self.max_connections,
            1,
            1024,
        ));
        problems.extend(crate::config::out_of_range(
            "http.header_read_timeout_seconds",
            self.header_read_timeout_seconds,
            1,
            300,
        ));
        match self.token() {
            Ok(Some(t)) if t.expose_secret().trim().is_empty() => problems.push(
                ConfigError::invalid("http.token", "is empty; leave it out for no token"),
            ),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
        match (
            self.console_user.as_deref().map(str::trim),
            self.console_password(),
        ) {
            (Some(""), _) => problems.push(ConfigError::invalid(
                "http.console_user",
                "is empty; leave it out for no console user",
            )),
            (Some(_), Ok(None)) => problems.push(ConfigError::invalid(
                "http.console_user",
                "needs http.console_password or http.console_password_file",
            )),
            (None, Ok(Some(_))) => problems.push(ConfigError::invalid(
                "http.console_password",
                "needs http.console_user",
            )),
            (_, Ok(Some(p))) if p.expose_secret().trim().is_empty() => {
                problems.push(ConfigError::invalid("http.console_password", "is empty"))
            }
            (_, Err(e)) => problems.push(e),
            _ => {}
        }
        problems
    }

    /// The console password from `console_password` or `console_password_file`.
    pub fn console_password(&self) -> Result<Option<SecretString>, ConfigError> {
        crate::config::resolve_secret(
            "http.console_password",
            self.console_password.as_ref(),
            self.console_password_file.as_deref(),
        )
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "http.listen",
                format!(
                    "{:?} is not an address and port such as \"127.0.0.1:9464\"",
                    self.listen
                ),
            )
        })
    }

    /// The token from `token` or `token_file`.
    pub fn token(&self) -> Result<Option<SecretString>, ConfigError> {
        crate::config::resolve_secret(
            "http.token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} (http.listen): {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Names of the built gateway and mailer, shown by /readyz.
    pub gateway: String,
    pub mailer: String,
    /// Cancelled when the daemon starts stopping: /readyz then answers 503.
    pub stopping: CancellationToken,
    /// What the console reads from the rest of the configuration.
    pub console: ConsoleOptions,
}

/// The running server.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// The console's refresh of past days' figures ([`crate::console::spawn_refresher`]).
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds (so a taken port fails the start, before READY=1) and serves in a task.
    pub async fn start(settings: &HttpSettings, state: HttpState) -> Result<Self, HttpError> {
        let addr = settings.listen_addr()?;
        let token = settings.token()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| HttpError::Bind {
                addr,
                reason: e.to_string(),
            })?;
        let addr = listener.local_addr().map_err(|e| HttpError::Bind {
            addr,
            reason: e.to_string(),
        })?;
        if token.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "http.listen is not loopback and no http.token is set: /metrics is open to the network");
        }
        let console = settings.console.then(|| ConsoleAuth {
            token: token.clone(),
            user: settings
                .console_user
                .clone()
                .map(|u| u.trim().to_string())
                .zip(settings.console_password().ok().flatten()),
            public_address: !addr.ip().is_loopback(),
        });
        let stop = CancellationToken::new();
        // The Today page's past days are kept up to date beside the console.
        let refresher = settings.console.then(|| {
            crate::console::spawn_refresher(
                state.store.clone(),
                Arc::clone(&state.clock),
                state.console.time_zone,
                stop.clone(),
            )
        });
        let router = router(Arc::new(Shared { state, token }), console);
        let limits = Limits {
            connections: Arc::new(tokio::sync::Semaphore::new(
                settings.max_connections.max(1) as usize
            )),
            header_read_timeout: Duration::from_secs(u64::from(
                settings.header_read_timeout_seconds.max(1),
            )),
        };
        let task = tokio::spawn(serve(listener, router, limits, stop.clone()));
        tracing::info!(addr = %addr, console = settings.console, "http server listening (/healthz, /readyz, /metrics, /console)");
        Ok(Self {
            addr,
            stop,
            task,
            refresher,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in progress finish (at most a few seconds).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        if let Some(refresher) = self.refresher {
            // A refresh in progress is one day's read and a short write: let it finish.
            let _ = tokio::time::timeout(Duration::from_secs(5), refresher).await;
        }
    }
}

/// What bounds the server's use of descriptors and memory.
#[derive(Debug, Clone)]
struct Limits {
    connections: Arc<tokio::sync::Semaphore>,
    header_read_timeout: Duration,
}

/// Accepts while a connection slot is free, serves each connection with the limits, and
/// on `stop` closes idle connections and lets requests in progress finish.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A slot first: while all are taken, nothing is accepted and no descriptor used.
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = Arc::clone(&limits.connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (socket, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let header_read_timeout = limits.header_read_timeout;
        let stop = stop.clone();
        connections.spawn(async move {
            let _permit = permit;
            let io = hyper_util::rt::TokioIo::new(socket);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(io, service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

#[derive(Debug)]
struct Shared {
    state: HttpState,
    token: Option<SecretString>,
}

fn router(shared: Arc<Shared>, console: Option<ConsoleAuth>) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&shared));
    if let Some(auth) = console {
        let state = &shared.state;
        router = router.merge(crate::console::router(
            state.store.clone(),
            Arc::clone(&state.clock),
            auth,
            state.console.clone(),
        ));
    }
    router.layer(axum::middleware::from_fn(no_request_bodies))
}

/// Every endpoint but the console's forms is a GET without a body: a request that
/// carries one is refused before any of it is read. A console form (a POST under
/// /console/) may carry a body of a known length up to
/// [`crate::console::MAX_FORM_BYTES`].
async fn no_request_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|v| v.parse::<usize>().ok()));
    let console_form = request.method() == axum::http::Method::POST
        && request.uri().path().starts_with("/console/")
        && !request.headers().contains_key(header::TRANSFER_ENCODING)
        && matches!(length, Some(Some(n)) if n <= crate::console::MAX_FORM_BYTES);
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body && !console_form {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "requests carry no body here\n",
        )
            .into_response();
    }
    next.run(request).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Whether the request carries the configured token (always, when none is configured).
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    // The scheme name is case-insensitive (RFC 9110); the token is not.
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes())
}

/// Compares without stopping at the first difference, so timing does not leak the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a bearer token is required (http.token)\n",
    )
        .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let state = &shared.state;
    let database = match tokio::time::timeout(DATABASE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: no answer within 3 s".to_string(),
    };
    let migrations =
        match tokio::time::timeout(DATABASE_TIMEOUT, state.store.migrations_current()).await {
            Ok(Ok(true)) => "ok".to_string(),
            Ok(Ok(false)) => "behind: run `repayd migrate` or restart".to_string(),
            Ok(Err(e)) => format!("unknown: {e}"),
            Err(_) => "unknown: no answer within 3 s".to_string(),
        };
    let stopping = state.stopping.is_cancelled();
    let ready = database == "ok" && migrations == "ok" && !stopping;
    let body = serde_json::json!({
        "status": if ready { "ready" } else if stopping { "stopping" } else { "not ready" },
        "checks": {
            "database": database,
            "migrations": migrations,
            "gateway": state.gateway,
            "mailer": state.mailer,
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let state = &shared.state;
    let now = state.clock.now();
    let mut out = String::with_capacity(8 * 1024);
    state.metrics.render_process(&mut out);
    let gauges = state
        .metrics
        .database_gauges(&state.store, now, DATABASE_TIMEOUT)
        .await;
    let up = match gauges {
        Ok(gauges) => {
            gauges.render(&mut out, now);
            1
        }
        Err(e) => {
            // The process metrics still go out: they say most about why the database is not.
            tracing::warn!(error = %e, "metrics: cannot read the database");
            0
        }
    };
    out.push_str("# HELP repayd_database_up Whether this scrape could read the database.\n");
    out.push_str("# TYPE repayd_database_up gauge\n");
    out.push_str(&format!("repayd_database_up {up}\n"));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_and_check_names_the_key() {
        let s = HttpSettings::default();
        assert!(s.enabled);
        assert!(s.listen_addr().unwrap().ip().is_loopback());
        assert!(s.check().is_empty());
        let bad = HttpSettings {
            listen: "localhost".into(),
            ..HttpSettings::default()
        };
        let problems = bad.check();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].to_string().contains("http.listen"));
    }

    /// A raw HTTP/1.1 GET, with an optional Authorization header: (status, body).
    async fn get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    #[tokio::test]
    async fn token_guards_readyz_and_metrics_and_stopping_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&SecretString::from(url), 2).await.unwrap();
        store.migrate().await.unwrap();
        let stopping = CancellationToken::new();
        let settings = HttpSettings {
            listen: "127.0.0.1:0".into(),
            token: Some(SecretString::from("s3cret")),
            ..HttpSettings::default()
        };
        let state = HttpState {
            store,
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(crate::clock::SystemClock),
            gateway: "sandbox".into(),
            mailer: "outbox".into(),
            stopping: stopping.clone(),
            console: ConsoleOptions::default(),
        };
        let server = HttpServer::start(&settings, state).await.unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz", None).await, (200, "ok\n".into()));
        assert_eq!(get(addr, "/metrics", None).await.0, 401);
        assert_eq!(get(addr, "/readyz", Some("Bearer wrong")).await.0, 401);
        let (status, body) = get(addr, "/metrics", Some("bearer s3cret")).await;
        assert_eq!(status, 200);
        assert!(body.contains("repayd_database_up 1"), "{body}");
        assert!(body.contains("repayd_debit_attempts{state=\"scheduled\"} 0"));
        let (status, body) = get(addr, "/readyz", Some("Bearer s3cret")).await;
        assert_eq!(status, 200, "{body}");
        stopping.cancel();
        let (status, body) = get(addr, "/readyz", Some("Bearer s3cret")).await;
        assert_eq!(status, 503);
        assert!(body.contains("\"status\":\"stopping\""), "{body}");
        server.stop().await;
    }

    /// The TCP connections this process has accepted on `port`: sockets in
    /// /proc/net/tcp{,6} with that local port that are not the listener and have an
    /// inode (a connection still in the kernel's accept queue has none until accepted).
    /// Counting /proc/self/fd instead counted every other test's files and sockets in the
    /// same process, which made this test fail when they ran beside it.
    fn accepted_connections(port: u16) -> usize {
        let port = format!(":{port:04X}");
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .flat_map(|table| {
                table
                    .lines()
                    .skip(1)
                    .map(|line| {
                        line.split_whitespace()
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|fields| {
                fields.len() > 9
                    && fields[1].ends_with(&port)
                    && fields[3] != "0A"
                    && fields[9] != "0"
            })
            .count()
    }

    /// Idle and slow clients cannot take the daemon's descriptors: past max_connections
    /// nothing more is accepted, idle connections are closed after the header-read
    /// timeout, and then /healthz answers again; a request with a body or huge headers is
    /// refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_bounded_and_timed_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&SecretString::from(url), 2).await.unwrap();
        store.migrate().await.unwrap();
        let settings = HttpSettings {
            listen: "127.0.0.1:0".into(),
            max_connections: 4,
            header_read_timeout_seconds: 1,
            ..HttpSettings::default()
        };
        let state = HttpState {
            store,
            metrics: Arc::new(Metrics::new()),
            clock: Arc::new(crate::clock::SystemClock),
            gateway: "sandbox".into(),
            mailer: "outbox".into(),
            stopping: CancellationToken::new(),
            console: ConsoleOptions::default(),
        };
        let server = HttpServer::start(&settings, state).await.unwrap();
        let addr = server.local_addr();
        assert_eq!(get(addr, "/healthz", None).await.0, 200);

        // 200 idle clients: the server accepts at most 4 of them (the rest wait in the
        // kernel's accept queue), so it holds at most 4 connection descriptors.
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let accepted = accepted_connections(addr.port());
        assert!(
            (1..=4).contains(&accepted),
            "server accepted {accepted} of 200 idle connections"
        );

        // The idle ones are closed after the header-read timeout (1 s), slot by slot, so a
        // real request gets through; the first four see their connection closed.
        let mut first = idle.remove(0);
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        drop(idle);
        let answered =
            tokio::time::timeout(Duration::from_secs(10), get(addr, "/healthz", None)).await;
        assert_eq!(answered.expect("answered once slots freed").0, 200);

        // A slow client that never finishes its headers is cut off too.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let cut = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        assert!(cut.is_ok(), "a slow client kept its connection");

        // Bodies and oversized heads are refused.
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        assert!(response.starts_with("HTTP/1.1 413"), "{response}");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let huge = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let _ = stream.write_all(huge.as_bytes()).await;
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
        server.stop().await;
    }

    #[test]
    fn limits_are_checked_naming_the_key() {
        let bad = HttpSettings {
            max_connections: 0,
            header_read_timeout_seconds: 100_000,
            ..HttpSettings::default()
        };
        let text: Vec<String> = bad.check().iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains("http.max_connections")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("http.header_read_timeout_seconds")),
            "{text:?}"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
