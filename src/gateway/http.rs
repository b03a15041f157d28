//! The HTTP connector: the JSON-over-HTTPS protocol in `docs/gateway-protocol.md`.
//!
//! The one rule everything here serves: an answer to a debit is believed only when it is
//! a definite protocol answer. Anything after the request may have left this process
//! (timeout, reset, 5xx, 429, an unreadable 2xx) is `Ambiguous`, to be settled by a
//! look-up under the same key; only a request that certainly never left (connect failure)
//! or that the bank refused before acting on it is not. Refusals that need a human
//! (400/401/403/415/422 to a funds check or a debit) are `Rejected`: the engine stops the
//! attempt and alerts operations instead of sending it again.

use crate::config::{ConfigError, resolve_secret};
use crate::domain::{Currency, Money};
use crate::gateway::{
    DebitOutcome, DebitRequest, DebitReturn, FundsAnswer, GatewayError, LookupOutcome,
    PaymentGateway, ReturnsPage,
};
use crate::mask;
use crate::tls::{CaBundle, ClientIdentity, Expiry};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The idempotency-key header of `POST /v1/debits`.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Longest idempotency key the protocol allows.
pub const MAX_KEY_LEN: usize = 255;
/// Longest connect or request timeout the settings accept.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// Most retries of one funds confirmation the settings accept.
const MAX_FUNDS_CHECK_RETRIES: u32 = 10;
/// First pause between funds-confirmation retries; doubles each time, up to the cap.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGatewaySettings {
    /// Where the bank serves the protocol, e.g. `https://bank.example/repay/`; the paths
    /// `v1/...` are appended. `http` only to a loopback address.
    pub base_url: String,
    /// The bearer token, inline (best from `REPAYD__GATEWAY__HTTP__TOKEN`) ...
    #[serde(default)]
    pub token: Option<SecretString>,
    /// ... or in a file (e.g. `$CREDENTIALS_DIRECTORY/gateway-token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// For the whole exchange, answer body included.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Extra tries of a funds confirmation that got no answer (it changes nothing, so
    /// retrying is safe). Debits are never retried here.
    #[serde(default = "default_funds_check_retries")]
    pub funds_check_retries: u32,
    /// Poll the bank's returns feed (`GET /v1/returns`, protocol 1.1). Off by default: a
    /// version 1.0 server has no such endpoint.
    #[serde(default)]
    pub returns_feed: bool,
    /// Mutual TLS: the client certificate this daemon presents (PEM, the certificate
    /// first, then any intermediates), e.g. `$CREDENTIALS_DIRECTORY/gateway-client.crt`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1). Never logged.
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// The CA(s) that sign the bank's server certificate (PEM). When set, only these are
    /// trusted, not the public roots (see docs/tls.md).
    #[serde(default)]
    pub ca_bundle_file: Option<PathBuf>,
}

fn default_connect_timeout_ms() -> u64 {
    3_000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_funds_check_retries() -> u32 {
    2
}

impl HttpGatewaySettings {
    /// Settings with an inline token and the default timeouts.
    pub fn new(base_url: impl Into<String>, token: SecretString) -> Self {
        Self {
            base_url: base_url.into(),
            token: Some(token),
            token_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            funds_check_retries: default_funds_check_retries(),
            returns_feed: false,
            client_cert_file: None,
            client_key_file: None,
            ca_bundle_file: None,
        }
    }

    /// Every problem, each naming its key. Reads `token_file`, if given.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if let Err(reason) = parse_base_url(&self.base_url) {
            problems.push(ConfigError::invalid("gateway.http.base_url", reason));
        }
        if let Err(e) = self.resolve_token() {
            problems.push(e);
        }
        for (key, value) in [
            ("gateway.http.connect_timeout_ms", self.connect_timeout_ms),
            ("gateway.http.request_timeout_ms", self.request_timeout_ms),
        ] {
            if value == 0 || value > MAX_TIMEOUT_MS {
                problems.push(ConfigError::invalid(
                    key,
                    format!("is {value}; must be between 1 and {MAX_TIMEOUT_MS} (10 minutes)"),
                ));
            }
        }
        if self.funds_check_retries > MAX_FUNDS_CHECK_RETRIES {
            problems.push(ConfigError::invalid(
                "gateway.http.funds_check_retries",
                format!("must be at most {MAX_FUNDS_CHECK_RETRIES}"),
            ));
        }
        let (identity, bundle) = self.tls_files();
        problems.extend(identity.err());
        problems.extend(bundle.err());
        problems
    }

    /// The client identity and the CA bundle, each read and checked (`None` when not set).
    fn tls_files(
        &self,
    ) -> (
        Result<Option<ClientIdentity>, ConfigError>,
        Result<Option<CaBundle>, ConfigError>,
    ) {
        let identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => ClientIdentity::load("gateway.http", cert, key).map(Some),
            (Some(_), None) => Err(ConfigError::invalid(
                "gateway.http.client_key_file",
                "client_cert_file is set, so the key is needed too",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "gateway.http.client_cert_file",
                "client_key_file is set, so the certificate is needed too",
            )),
            (None, None) => Ok(None),
        };
        let bundle = self
            .ca_bundle_file
            .as_deref()
            .map(|path| CaBundle::load("gateway.http.ca_bundle_file", path))
            .transpose();
        (identity, bundle)
    }

    /// Expiry of the client certificate (expired: an error; within 30 days: a warning) and
    /// of the CA bundle (warnings). Files that cannot be read are `check()`'s to report.
    pub fn certificate_expiry(&self, now: chrono::DateTime<chrono::Utc>) -> Expiry {
        let mut found = Expiry::default();
        let (identity, bundle) = self.tls_files();
        if let Ok(Some(identity)) = identity {
            found.merge(identity.check_expiry(now));
        }
        if let Ok(Some(bundle)) = bundle {
            found.merge(bundle.check_expiry(now));
        }
        found
    }

    /// The `Authorization` header value, marked sensitive so it is never printed.
    fn resolve_token(&self) -> Result<HeaderValue, ConfigError> {
        let token = resolve_secret(
            "gateway.http.token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )?
        .ok_or_else(|| {
            ConfigError::invalid(
                "gateway.http.token",
                "give the bearer token as `token` or `token_file`",
            )
        })?;
        let token = token.expose_secret();
        if token.is_empty() || !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError::invalid(
                "gateway.http.token",
                "must be non-empty, printable ASCII without spaces (the token is not shown)",
            ));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ConfigError::invalid("gateway.http.token", "is not a valid header value")
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// The base URL with a trailing slash, so `v1/...` joins below it.
fn parse_base_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(
                "must be https (http is allowed only to 127.0.0.1, [::1] or localhost)".into(),
            );
        }
        other => return Err(format!("scheme {other:?} is not https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold credentials; give the token as gateway.http.token".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Whether `key` is a valid idempotency key: 1 to 255 of `A-Z a-z 0-9 - _ . :`.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// An amount on the wire: a decimal string, never a float.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireAmount {
    value: String,
    currency: String,
}

impl WireAmount {
    fn from_money(m: &Money) -> Self {
        WireAmount {
            value: m.plain(),
            currency: m.currency().code().to_string(),
        }
    }

    fn to_money(&self) -> Result<Money, String> {
        let currency = Currency::parse(&self.currency).map_err(|e| e.to_string())?;
        Money::parse(&self.value, currency).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Serialize)]
struct FundsConfirmationRequest<'a> {
    account_ref: &'a str,
    amount: WireAmount,
}

#[derive(Debug, Deserialize)]
struct FundsConfirmationAnswer {
    funds_available: bool,
    #[serde(default)]
    shortfall: Option<WireAmount>,
    /// Protocol 1.1, optional: how much could be debited now.
    #[serde(default)]
    available: Option<WireAmount>,
    checked_at: String,
}

/// One returned debit in `GET /v1/returns` (protocol 1.1).
#[derive(Debug, Deserialize)]
struct WireReturn {
    return_id: String,
    debit_id: String,
    idempotency_key: String,
    amount: WireAmount,
    reason_code: String,
    #[serde(default)]
    hard: bool,
    returned_at: String,
}

#[derive(Debug, Deserialize)]
struct ReturnsAnswer {
    returns: Vec<WireReturn>,
    next_cursor: String,
}

/// Reads a page of the returns feed.
fn parse_returns(body: &[u8]) -> Result<ReturnsPage, String> {
    let answer: ReturnsAnswer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable body: {e}"))?;
    if answer.next_cursor.is_empty() {
        return Err("next_cursor is empty".into());
    }
    let mut returns = Vec::with_capacity(answer.returns.len());
    for (i, r) in answer.returns.into_iter().enumerate() {
        let at = |what: String| format!("returns[{i}]: {what}");
        chrono::DateTime::parse_from_rfc3339(&r.returned_at).map_err(|e| {
            at(format!(
                "returned_at {:?} is not RFC 3339: {e}",
                r.returned_at
            ))
        })?;
        let amount = r
            .amount
            .to_money()
            .map_err(|e| at(format!("amount: {e}")))?;
        if amount.minor() <= 0 {
            return Err(at("amount must be positive".into()));
        }
        if r.return_id.is_empty() || r.debit_id.is_empty() || r.reason_code.is_empty() {
            return Err(at(
                "return_id, debit_id and reason_code must not be empty".into()
            ));
        }
        if !is_valid_key(&r.idempotency_key) {
            return Err(at("idempotency_key is not a valid key".into()));
        }
        returns.push(DebitReturn {
            return_id: r.return_id,
            debit_id: r.debit_id,
            idempotency_key: r.idempotency_key,
            amount,
            reason_code: r.reason_code,
            hard: r.hard,
        });
    }
    Ok(ReturnsPage {
        returns,
        next_cursor: answer.next_cursor,
    })
}

#[derive(Debug, Serialize)]
struct DebitBody<'a> {
    account_ref: &'a str,
    mandate_ref: &'a str,
    amount: WireAmount,
    reference: &'a str,
}

/// The debit resource, as `POST /v1/debits` and the look-up answer it.
#[derive(Debug, Deserialize)]
struct DebitResource {
    #[serde(default)]
    debit_id: Option<String>,
    idempotency_key: String,
    status: String,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    decline_reason: Option<String>,
    #[serde(default)]
    hard: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
}

/// Reads a funds-confirmation answer to a request for `asked`.
fn parse_funds_answer(body: &[u8], asked: &Money) -> Result<FundsAnswer, String> {
    let answer: FundsConfirmationAnswer =
        serde_json::from_slice(body).map_err(|e| format!("unreadable body: {e}"))?;
    chrono::DateTime::parse_from_rfc3339(&answer.checked_at)
        .map_err(|e| format!("checked_at {:?} is not RFC 3339: {e}", answer.checked_at))?;
    let in_asked_currency = |wire: WireAmount, what: &str| -> Result<Money, String> {
        let m = wire.to_money().map_err(|e| format!("{what}: {e}"))?;
        if m.currency() != asked.currency() {
            return Err(format!(
                "{what} is in {}, the request in {}",
                m.currency(),
                asked.currency()
            ));
        }
        Ok(m)
    };
    if answer.funds_available {
        return match (answer.shortfall, answer.available) {
            (None, None) => Ok(FundsAnswer::Available),
            (Some(_), _) => Err("funds_available is true but a shortfall is given".into()),
            (None, Some(_)) => {
                Err("funds_available is true but an available amount is given".into())
            }
        };
    }
    let shortfall = match answer.shortfall {
        None => None,
        Some(wire) => {
            let shortfall = in_asked_currency(wire, "shortfall")?;
            if shortfall.minor() <= 0 || shortfall.minor() > asked.minor() {
                return Err(format!(
                    "shortfall {} is not between zero and the amount asked",
                    shortfall.plain()
                ));
            }
            Some(shortfall)
        }
    };
    let available = match answer.available {
        None => None,
        Some(wire) => {
            let available = in_asked_currency(wire, "available")?;
            if available.minor() < 0 || available.minor() >= asked.minor() {
                return Err(format!(
                    "available {} is not between zero and less than the amount asked",
                    available.plain()
                ));
            }
            if let Some(short) = &shortfall
                && short.minor() + available.minor() != asked.minor()
            {
                return Err(format!(
                    "available {} and shortfall {} do not add up to the amount asked",
                    available.plain(),
                    short.plain()
                ));
            }
            Some(available)
        }
    };
    Ok(FundsAnswer::Insufficient {
        shortfall,
        available,
    })
}

/// Reads a debit resource for `key` (the answer to a debit or to a look-up).
fn parse_debit_resource(body: &[u8], key: &str) -> Result<DebitOutcome, String> {
    let debit: DebitResource =
        serde_json::from_slice(body).map_err(|e| format!("unreadable body: {e}"))?;
    if debit.idempotency_key != key {
        return Err("the answer is for another idempotency key".into());
    }
    let debit_id = || {
        debit
            .debit_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("status {:?} needs a debit_id", debit.status))
    };
    match debit.status.as_str() {
        "succeeded" => Ok(DebitOutcome::Succeeded {
            gateway_ref: debit_id()?,
        }),
        "pending" => Ok(DebitOutcome::Pending {
            gateway_ref: debit_id()?,
        }),
        "declined" => {
            let code = debit
                .decline_code
                .filter(|c| !c.is_empty())
                .ok_or("a decline needs a decline_code")?;
            let hard = debit.hard.ok_or("a decline needs hard: true or false")?;
            Ok(DebitOutcome::Declined {
                code,
                reason: debit.decline_reason.unwrap_or_default(),
                hard,
            })
        }
        other => Err(format!("unknown status {other:?}")),
    }
}

/// The `error` code of an error body, if the body is one.
fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error)
}

/// Describes a status and its error code (never the body itself: it may echo an account).
fn status_text(status: StatusCode, body: &[u8]) -> String {
    match error_code(body) {
        Some(code) => format!("HTTP {} ({code})", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// How far a failed exchange got.
enum Failure {
    /// Certainly never reached the bank.
    NotSent(String),
    /// May have reached it.
    MaybeSent(String),
}

/// An error with its causes, which say what actually happened (reqwest's top line alone
/// says only "error sending request").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn classify(e: reqwest::Error) -> Failure {
    // A connect error (refused, unreachable, TLS handshake, connect timeout) means no byte
    // of the request was written. Everything else may have been.
    if e.is_connect() || e.is_builder() {
        Failure::NotSent(describe(&e))
    } else if let Some(alert) = certificate_refusal(&e) {
        // With TLS 1.3 the client's side of the handshake ends before the bank has checked
        // its certificate, so the request may already be on the wire when the bank says no;
        // but a handshake the bank failed never carried a request it acted on.
        Failure::NotSent(format!(
            "the bank refused this client's TLS certificate ({alert:?}): check \
             gateway.http.client_cert_file and client_key_file; {}",
            describe(&e)
        ))
    } else {
        Failure::MaybeSent(describe(&e))
    }
}

/// The TLS alert, if the bank ended the handshake over the client's certificate (none
/// given, unknown CA, expired, revoked, refused).
fn certificate_refusal(e: &reqwest::Error) -> Option<rustls::AlertDescription> {
    use rustls::AlertDescription as A;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        // io::Error hides the error it wraps from `source()`: look inside it too.
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls
            && matches!(
                alert,
                A::CertificateRequired
                    | A::UnknownCA
                    | A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateExpired
                    | A::CertificateRevoked
                    | A::CertificateUnknown
                    | A::AccessDenied
            )
        {
            return Some(*alert);
        }
        source = cause.source();
    }
    None
}

/// What one funds confirmation came to.
enum FundsTry {
    Answer(FundsAnswer),
    /// No answer (not sent, timed out, 408/429/5xx): worth another try.
    Retry(String),
    /// An answer that another try would not change.
    Fail(GatewayError),
}

/// The client side of the protocol. Its connection (client, TLS identity, token, URLs) is
/// replaced whole by [`HttpGateway::reload`]; a request in flight keeps the one it began
/// with.
pub struct HttpGateway {
    connection: std::sync::RwLock<Arc<Connection>>,
}

// Hand-written: nothing of the token or the TLS key is shown.
impl std::fmt::Debug for HttpGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connection = self.connection();
        f.debug_struct("HttpGateway")
            .field("debits_url", &connection.debits_url.as_str())
            .field("client_certificate", &connection.client_certificate)
            .finish_non_exhaustive()
    }
}

/// A gateway connection built by [`HttpGateway::prepare`], waiting to be installed.
pub struct PreparedConnection(Arc<Connection>);

struct Connection {
    client: reqwest::Client,
    /// The client certificate's file and subject, for logs.
    client_certificate: Option<String>,
    funds_url: Url,
    debits_url: Url,
    by_key_url: Url,
    returns_url: Option<Url>,
    auth: HeaderValue,
    funds_check_retries: u32,
}

impl HttpGateway {
    pub fn new(settings: &HttpGatewaySettings) -> Result<Self, ConfigError> {
        Ok(HttpGateway {
            connection: std::sync::RwLock::new(Arc::new(Connection::new(settings)?)),
        })
    }

    /// Applies new settings (a rotated client certificate or CA bundle, a new token):
    /// everything is read and built first; on any error the connection in force stays and
    /// the error is returned. Requests already in flight finish on the old connection.
    pub fn reload(&self, settings: &HttpGatewaySettings) -> Result<(), ConfigError> {
        let prepared = Self::prepare(settings)?;
        self.install(prepared);
        Ok(())
    }

    /// The first half of a reload: a connection built from `settings`, not yet in use
    /// (so a reload of several parts can build all of them before applying any).
    pub fn prepare(settings: &HttpGatewaySettings) -> Result<PreparedConnection, ConfigError> {
        Ok(PreparedConnection(Arc::new(Connection::new(settings)?)))
    }

    /// The second half: requests from now on use `prepared`.
    pub fn install(&self, prepared: PreparedConnection) {
        let connection = prepared.0;
        tracing::info!(
            client_certificate = connection.client_certificate.as_deref().unwrap_or("none"),
            "gateway connection reloaded"
        );
        *self.connection.write().unwrap_or_else(|e| e.into_inner()) = connection;
    }

    fn connection(&self) -> Arc<Connection> {
        Arc::clone(&self.connection.read().unwrap_or_else(|e| e.into_inner()))
    }

    #[cfg(test)]
    fn lookup_url(&self, key: &str) -> Url {
        self.connection().lookup_url(key)
    }
}

impl Connection {
    fn new(settings: &HttpGatewaySettings) -> Result<Self, ConfigError> {
        let mut problems = settings.check();
        match problems.len() {
            0 => {}
            1 => return Err(problems.remove(0)),
            _ => return Err(ConfigError::Many(problems)),
        }
        let base = parse_base_url(&settings.base_url)
            .map_err(|e| ConfigError::invalid("gateway.http.base_url", e))?;
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| ConfigError::invalid("gateway.http.base_url", e.to_string()))
        };
        let auth = settings.resolve_token()?;
        // reqwest is built without a bundled provider; installing fails harmlessly if one
        // is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            // A redirected debit could be replayed somewhere unexpected: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("repayd/", env!("CARGO_PKG_VERSION")));
        let (identity, bundle) = settings.tls_files();
        let mut client_certificate = None;
        if let Some(identity) = identity? {
            let id = reqwest::Identity::from_pem(identity.pem()).map_err(|e| {
                ConfigError::invalid(
                    "gateway.http.client_key_file",
                    format!(
                        "the certificate and key are not usable together: {}",
                        describe(&e)
                    ),
                )
            })?;
            builder = builder.identity(id);
            client_certificate = Some(format!(
                "{} {}",
                identity.cert_path.display(),
                identity.validity().subject
            ));
        }
        if let Some(bundle) = bundle? {
            let certs = reqwest::Certificate::from_pem_bundle(bundle.pem())
                .map_err(|e| ConfigError::invalid("gateway.http.ca_bundle_file", describe(&e)))?;
            // Only the bank's CA: a certificate for the bank's name from any public CA
            // must not be able to stand in for the bank.
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| ConfigError::invalid("gateway.http", describe(&e)))?;
        Ok(Connection {
            client,
            client_certificate,
            funds_url: join("v1/funds-confirmations")?,
            debits_url: join("v1/debits")?,
            by_key_url: join("v1/debits/by-key/")?,
            returns_url: if settings.returns_feed {
                Some(join("v1/returns")?)
            } else {
                None
            },
            auth,
            funds_check_retries: settings.funds_check_retries,
        })
    }

    fn lookup_url(&self, key: &str) -> Url {
        let mut url = self.by_key_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(key);
        }
        url
    }

    /// Sends and reads the whole answer.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), Failure> {
        let response = request
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        // The request was certainly sent once a status came back.
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::MaybeSent(describe(&e)))?;
        Ok((status, body.to_vec()))
    }

    /// One funds confirmation.
    async fn confirm_funds_once(
        &self,
        body: &FundsConfirmationRequest<'_>,
        amount: &Money,
    ) -> FundsTry {
        let (status, answer) = match self
            .exchange(self.client.post(self.funds_url.clone()).json(body))
            .await
        {
            Ok(exchange) => exchange,
            Err(Failure::NotSent(e) | Failure::MaybeSent(e)) => return FundsTry::Retry(e),
        };
        match status.as_u16() {
            200 => match parse_funds_answer(&answer, amount) {
                Ok(answer) => FundsTry::Answer(answer),
                Err(e) => FundsTry::Fail(GatewayError::Protocol(format!(
                    "funds confirmation answer: {e}"
                ))),
            },
            408 | 429 | 500..=599 => FundsTry::Retry(status_text(status, &answer)),
            401 | 403 => FundsTry::Fail(GatewayError::Rejected(format!(
                "funds confirmation refused, {}: check gateway.http.token",
                status_text(status, &answer)
            ))),
            400 | 415 | 422 => FundsTry::Fail(GatewayError::Rejected(format!(
                "funds confirmation rejected as invalid, {}",
                status_text(status, &answer)
            ))),
            _ => FundsTry::Fail(GatewayError::Protocol(format!(
                "funds confirmation answered {}",
                status_text(status, &answer)
            ))),
        }
    }
}

#[async_trait::async_trait]
impl PaymentGateway for HttpGateway {
    #[tracing::instrument(skip_all, fields(account = %mask::account(account_ref), amount = %amount))]
    async fn check_funds(
        &self,
        account_ref: &str,
        amount: &Money,
    ) -> Result<FundsAnswer, GatewayError> {
        let conn = self.connection();
        let body = FundsConfirmationRequest {
            account_ref,
            amount: WireAmount::from_money(amount),
        };
        let mut retry = 0;
        loop {
            match conn.confirm_funds_once(&body, amount).await {
                FundsTry::Answer(answer) => return Ok(answer),
                FundsTry::Fail(e) => return Err(e),
                FundsTry::Retry(e) if retry < conn.funds_check_retries => {
                    retry += 1;
                    let pause = RETRY_BASE
                        .saturating_mul(1 << (retry - 1).min(8))
                        .min(RETRY_CAP);
                    tracing::warn!(retry, error = %e, "no funds confirmation; trying again");
                    tokio::time::sleep(pause).await;
                }
                // Nothing changes on a funds check, so "no answer" is simply unavailable.
                FundsTry::Retry(e) => {
                    return Err(GatewayError::Unavailable(format!(
                        "no funds confirmation after {} tries: {e}",
                        retry + 1
                    )));
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(
        account = %mask::account(&request.account_ref),
        key = %request.idempotency_key,
        amount = %request.amount,
    ))]
    async fn debit(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        let conn = self.connection();
        let key = &request.idempotency_key;
        if !is_valid_key(key) {
            return Err(GatewayError::Protocol(
                "idempotency key is not 1-255 of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        let body = DebitBody {
            account_ref: &request.account_ref,
            mandate_ref: &request.mandate_ref,
            amount: WireAmount::from_money(&request.amount),
            reference: &request.reference,
        };
        let sent = conn
            .client
            .post(conn.debits_url.clone())
            .header(IDEMPOTENCY_KEY_HEADER, key.as_str())
            .json(&body);
        let (status, answer) = match conn.exchange(sent).await {
            Ok(exchange) => exchange,
            Err(Failure::NotSent(e)) => {
                return Err(GatewayError::Unavailable(format!("debit not sent: {e}")));
            }
            Err(Failure::MaybeSent(e)) => {
                return Err(GatewayError::Ambiguous(format!(
                    "debit sent, no answer: {e}"
                )));
            }
        };
        match status.as_u16() {
            200..=202 => parse_debit_resource(&answer, key).map_err(|e| {
                // The bank may well have booked it: only the look-up can tell.
                GatewayError::Ambiguous(format!("unreadable answer to a debit: {e}"))
            }),
            409 => match error_code(&answer).as_deref() {
                Some("idempotency_mismatch") => {
                    tracing::warn!("idempotency key reused for a different debit");
                    Ok(DebitOutcome::Declined {
                        code: "idempotency_mismatch".into(),
                        reason: "idempotency key was already used for a different debit".into(),
                        hard: true,
                    })
                }
                // `request_in_progress`, or a 409 we cannot read: the first request under
                // this key may still book.
                _ => Err(GatewayError::Ambiguous(format!(
                    "debit answered {}",
                    status_text(status, &answer)
                ))),
            },
            // Refused before anything happened (§4.2 step 1): a human must fix the cause.
            401 | 403 => Err(GatewayError::Rejected(format!(
                "debit refused, {}: check gateway.http.token",
                status_text(status, &answer)
            ))),
            400 | 415 | 422 => Err(GatewayError::Rejected(format!(
                "debit rejected as invalid, {}",
                status_text(status, &answer)
            ))),
            404 | 405 | 413 => Err(GatewayError::Protocol(format!(
                "debit rejected as invalid, {}",
                status_text(status, &answer)
            ))),
            // 408, 429, 5xx, redirects and anything unexpected: not a definite answer.
            _ => Err(GatewayError::Ambiguous(format!(
                "debit answered {}",
                status_text(status, &answer)
            ))),
        }
    }

    #[tracing::instrument(skip_all, fields(key = %idempotency_key))]
    async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, GatewayError> {
        let conn = self.connection();
        if !is_valid_key(idempotency_key) {
            return Err(GatewayError::Protocol(
                "idempotency key is not 1-255 of A-Z a-z 0-9 - _ . :".into(),
            ));
        }
        let sent = conn.client.get(conn.lookup_url(idempotency_key));
        let (status, answer) = match conn.exchange(sent).await {
            Ok(exchange) => exchange,
            Err(Failure::NotSent(e) | Failure::MaybeSent(e)) => {
                return Err(GatewayError::Unavailable(format!("look-up failed: {e}")));
            }
        };
        match status.as_u16() {
            200 => parse_debit_resource(&answer, idempotency_key)
                .map(LookupOutcome::Found)
                .map_err(|e| GatewayError::Protocol(format!("look-up answer: {e}"))),
            // Only the protocol's own body means "never seen": a 404 from a proxy or a
            // wrong base URL must not pass for it.
            404 if error_code(&answer).as_deref() == Some("not_found") => {
                Ok(LookupOutcome::NotFound)
            }
            404 => Err(GatewayError::Protocol(
                "look-up answered 404 without {\"error\":\"not_found\"}: is gateway.http.base_url right?"
                    .into(),
            )),
            408 | 429 | 500..=599 => Err(GatewayError::Unavailable(format!(
                "look-up answered {}",
                status_text(status, &answer)
            ))),
            // The bank will not say until a human fixes the credentials. `Rejected`, so the
            // engine can tell operations; the outcome stays unknown (money may have moved).
            401 | 403 => Err(GatewayError::Rejected(format!(
                "look-up refused, {}: check gateway.http.token and the client certificate",
                status_text(status, &answer)
            ))),
            _ => Err(GatewayError::Protocol(format!(
                "look-up answered {}",
                status_text(status, &answer)
            ))),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn returns_after(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Option<ReturnsPage>, GatewayError> {
        let conn = self.connection();
        let Some(base) = &conn.returns_url else {
            return Ok(None);
        };
        let mut url = base.clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(cursor) = cursor {
                query.append_pair("after", cursor);
            }
            query.append_pair("limit", &limit.to_string());
        }
        let (status, answer) = match conn.exchange(conn.client.get(url)).await {
            Ok(exchange) => exchange,
            Err(Failure::NotSent(e) | Failure::MaybeSent(e)) => {
                return Err(GatewayError::Unavailable(format!("returns feed: {e}")));
            }
        };
        match status.as_u16() {
            200 => parse_returns(&answer)
                .map(Some)
                .map_err(|e| GatewayError::Protocol(format!("returns feed answer: {e}"))),
            408 | 429 | 500..=599 => Err(GatewayError::Unavailable(format!(
                "returns feed answered {}",
                status_text(status, &answer)
            ))),
            _ => Err(GatewayError::Protocol(format!(
                "returns feed answered {}: does the server speak protocol 1.1? (gateway.http.returns_feed)",
                status_text(status, &answer)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> HttpGatewaySettings {
        toml::from_str(toml_text).expect("settings parse")
    }

    fn problems(s: &HttpGatewaySettings) -> Vec<String> {
        s.check().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn defaults_apply_and_unknown_keys_are_rejected() {
        let s = settings("base_url = \"https://bank.example/repay\"\ntoken = \"t0k3n\"");
        assert_eq!(s.connect_timeout_ms, 3_000);
        assert_eq!(s.request_timeout_ms, 10_000);
        assert_eq!(s.funds_check_retries, 2);
        assert!(problems(&s).is_empty(), "{:?}", problems(&s));
        assert!(
            toml::from_str::<HttpGatewaySettings>(
                "base_url = \"https://b.example\"\ntoken = \"t\"\ntimeout_ms = 5"
            )
            .is_err()
        );
    }

    #[test]
    fn base_url_must_be_https_unless_loopback() {
        for ok in [
            "https://bank.example",
            "https://bank.example:8443/api/",
            "http://127.0.0.1:8080",
            "http://localhost/bank",
            "http://[::1]:9000",
        ] {
            assert!(parse_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://bank.example",
            "http://10.0.0.1",
            "ftp://bank.example",
            "https://user:pw@bank.example",
            "https://bank.example/?x=1",
            "bank.example",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_base_url("https://b.example/repay")
                .unwrap()
                .join("v1/debits")
                .unwrap()
                .as_str(),
            "https://b.example/repay/v1/debits"
        );
    }

    #[test]
    fn check_names_each_bad_key_and_never_shows_the_token() {
        let mut s = HttpGatewaySettings::new("http://bank.example", SecretString::from("t"));
        s.token_file = Some(PathBuf::from("/nonexistent/token"));
        s.connect_timeout_ms = 0;
        s.request_timeout_ms = 0;
        s.funds_check_retries = 99;
        let found = problems(&s);
        for key in [
            "gateway.http.base_url",
            "gateway.http.token",
            "gateway.http.connect_timeout_ms",
            "gateway.http.request_timeout_ms",
            "gateway.http.funds_check_retries",
        ] {
            assert!(
                found.iter().any(|p| p.contains(&format!("`{key}`"))),
                "{key} not named in {found:#?}"
            );
        }
        s.token = None;
        assert!(
            problems(&s)
                .iter()
                .any(|p| p.contains("`gateway.http.token_file`"))
        );
        s.token_file = None;
        assert!(
            problems(&s)
                .iter()
                .any(|p| p.contains("`gateway.http.token`"))
        );
        let spaced =
            HttpGatewaySettings::new("https://bank.example", SecretString::from("secret value"));
        let found = problems(&spaced);
        assert_eq!(found.len(), 1);
        assert!(!found[0].contains("secret value"));
    }

    #[test]
    // Minor units written major_minor (`500_00` is 500.00).
    #[allow(clippy::inconsistent_digit_grouping)]
    fn protocol_1_1_available_amounts_and_returns_are_checked() {
        let cny = Currency::parse("CNY").unwrap();
        let asked = Money::from_minor(500_00, cny);
        let answer = |body: &str| parse_funds_answer(body.as_bytes(), &asked);
        assert_eq!(
            answer(
                r#"{"funds_available":false,"shortfall":{"value":"200.00","currency":"CNY"},"available":{"value":"300.00","currency":"CNY"},"checked_at":"2027-01-15T06:00:00+08:00"}"#
            ),
            Ok(FundsAnswer::Insufficient {
                shortfall: Some(Money::from_minor(200_00, cny)),
                available: Some(Money::from_minor(300_00, cny)),
            })
        );
        for bad in [
            // Does not add up.
            r#"{"funds_available":false,"shortfall":{"value":"100.00","currency":"CNY"},"available":{"value":"300.00","currency":"CNY"},"checked_at":"2027-01-15T06:00:00Z"}"#,
            // As much as asked is not short.
            r#"{"funds_available":false,"available":{"value":"500.00","currency":"CNY"},"checked_at":"2027-01-15T06:00:00Z"}"#,
            r#"{"funds_available":false,"available":{"value":"3.00","currency":"USD"},"checked_at":"2027-01-15T06:00:00Z"}"#,
            r#"{"funds_available":false,"available":{"value":300,"currency":"CNY"},"checked_at":"2027-01-15T06:00:00Z"}"#,
            r#"{"funds_available":true,"available":{"value":"300.00","currency":"CNY"},"checked_at":"2027-01-15T06:00:00Z"}"#,
        ] {
            assert!(answer(bad).is_err(), "{bad}");
        }
        let page = parse_returns(
            br#"{"returns":[{"return_id":"ret_1","debit_id":"dbt_7","idempotency_key":"repayd:k-1","amount":{"value":"200.00","currency":"CNY"},"reason_code":"insufficient_funds","hard":false,"returned_at":"2027-01-22T10:00:00+08:00"}],"next_cursor":"c1"}"#,
        )
        .unwrap();
        assert_eq!(page.next_cursor, "c1");
        assert_eq!(page.returns[0].amount, Money::from_minor(200_00, cny));
        assert_eq!(page.returns[0].debit_id, "dbt_7");
        for bad in [
            r#"{"returns":[],"next_cursor":""}"#,
            r#"{"returns":[]}"#,
            r#"{"returns":[{"return_id":"r","debit_id":"d","idempotency_key":"k","amount":{"value":"-1.00","currency":"CNY"},"reason_code":"x","returned_at":"2027-01-22T10:00:00Z"}],"next_cursor":"c"}"#,
            r#"{"returns":[{"return_id":"r","debit_id":"d","idempotency_key":"k k","amount":{"value":"1.00","currency":"CNY"},"reason_code":"x","returned_at":"2027-01-22T10:00:00Z"}],"next_cursor":"c"}"#,
            r#"{"returns":[{"return_id":"r","debit_id":"d","idempotency_key":"k","amount":{"value":"1.00","currency":"CNY"},"reason_code":"x","returned_at":"yesterday"}],"next_cursor":"c"}"#,
        ] {
            assert!(parse_returns(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_may_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-token");
        std::fs::write(&path, "from-file-token\n").unwrap();
        let mut s = HttpGatewaySettings::new("https://bank.example", SecretString::from("x"));
        s.token = None;
        s.token_file = Some(path);
        assert!(problems(&s).is_empty(), "{:?}", problems(&s));
        let header = s.resolve_token().unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header.to_str().unwrap(), "Bearer from-file-token");
        let gateway = HttpGateway::new(&s).unwrap();
        assert!(!format!("{gateway:?}").contains("from-file-token"));
    }

    #[test]
    fn lookup_urls_keep_the_base_path_and_encode_the_key() {
        let s = HttpGatewaySettings::new("http://127.0.0.1:1/bank", SecretString::from("t"));
        let gateway = HttpGateway::new(&s).unwrap();
        assert_eq!(
            gateway.lookup_url("inst-1:attempt-2").as_str(),
            "http://127.0.0.1:1/bank/v1/debits/by-key/inst-1:attempt-2"
        );
        assert!(is_valid_key("repayd:inst-4812:attempt-2:9f1c2e"));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("a/b"));
        assert!(!is_valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
    }

    #[test]
    fn debit_resources_must_say_everything_their_status_needs() {
        let parse = |body: &str| parse_debit_resource(body.as_bytes(), "k1");
        assert_eq!(
            parse(r#"{"debit_id":"d1","idempotency_key":"k1","status":"pending","extra":[1]}"#),
            Ok(DebitOutcome::Pending {
                gateway_ref: "d1".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"idempotency_key":"k1","status":"declined","decline_code":"insufficient_funds","hard":false}"#
            ),
            Ok(DebitOutcome::Declined {
                code: "insufficient_funds".into(),
                reason: String::new(),
                hard: false
            })
        );
        for bad in [
            r#"{"idempotency_key":"k1","status":"succeeded"}"#,
            r#"{"debit_id":"","idempotency_key":"k1","status":"succeeded"}"#,
            r#"{"debit_id":"d1","idempotency_key":"k2","status":"succeeded"}"#,
            r#"{"debit_id":"d1","idempotency_key":"k1","status":"done"}"#,
            r#"{"idempotency_key":"k1","status":"declined","decline_code":"x"}"#,
            r#"{"idempotency_key":"k1","status":"declined","hard":true}"#,
            r#"[]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
    /// The answer decoders never panic on any body; an accepted funds answer's shortfall
    /// is in the asked currency and between zero and the amount asked.
    #[test]
    fn fuzz_gateway_answer_decoders() {
        let seeds: Vec<Vec<u8>> = [
            r#"{"funds_available":false,"shortfall":{"value":"66.19","currency":"CNY"},"checked_at":"2025-03-01T06:00:02+08:00"}"#,
            r#"{"funds_available":true,"shortfall":null,"checked_at":"2025-03-01T06:00:02Z"}"#,
            r#"{"debit_id":"dbt_7Hq2","idempotency_key":"k1","status":"succeeded","decline_code":null,"decline_reason":null,"hard":false}"#,
            r#"{"idempotency_key":"k1","status":"declined","decline_code":"insufficient_funds","hard":false}"#,
            r#"{"debit_id":"d","idempotency_key":"k1","status":"pending"}"#,
            r#"{"error":"not_found","message":"x"}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let asked = Money::parse("1066.19", Currency::parse("CNY").unwrap()).unwrap();
        crate::fuzzing::run("gateway answers", crate::fuzzing::mutated(seeds), |body| {
            if let Ok(FundsAnswer::Insufficient {
                shortfall: Some(s), ..
            }) = parse_funds_answer(&body, &asked)
            {
                proptest::prop_assert_eq!(s.currency(), asked.currency());
                proptest::prop_assert!(s.minor() > 0 && s.minor() <= asked.minor());
            }
            if let Ok(
                DebitOutcome::Succeeded { gateway_ref } | DebitOutcome::Pending { gateway_ref },
            ) = parse_debit_resource(&body, "k1")
            {
                proptest::prop_assert!(!gateway_ref.is_empty());
            }
            let _ = error_code(&body);
            let _ = status_text(StatusCode::BAD_REQUEST, &body);
            Ok(())
        });
    }
}
