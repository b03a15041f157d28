//! The payment gateway: funds confirmation, debit with an idempotency key, and look-up of
//! a debit by that key, and (protocol 1.1) the feed of debits returned after they
//! succeeded. Implementations: [`sandbox`] (an embedded bank, the default) and [`http`]
//! (the JSON-over-HTTPS protocol in `docs/gateway-protocol.md`).

pub mod http;
pub mod income;
pub mod sandbox;

use crate::config::ConfigError;
use crate::domain::Money;
use serde::Deserialize;

/// The answer to "is this amount available on this account now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FundsAnswer {
    Available,
    /// Not enough money. `shortfall` is how much is missing, when the bank says so;
    /// `available` (protocol 1.1) how much could be debited now, when it says so. Without
    /// `available` no partial debit is ever made.
    Insufficient {
        shortfall: Option<Money>,
        available: Option<Money>,
    },
}

/// A debit that succeeded and was later returned (insufficient funds on settlement, a
/// disputed direct debit, a chargeback): protocol 1.1's returns feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitReturn {
    /// The gateway's id of the return: each is applied once.
    pub return_id: String,
    /// The returned debit's id (`debit_id`) and the key it was sent under.
    pub debit_id: String,
    pub idempotency_key: String,
    /// How much came back (at most the debit's amount).
    pub amount: Money,
    pub reason_code: String,
    /// `true`: the lender must not debit again without the customer's action (mandate
    /// cancelled, account closed, disputed); `false`: it may retry by its policy.
    pub hard: bool,
}

/// One page of the returns feed and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnsPage {
    pub returns: Vec<DebitReturn>,
    /// Opaque; sent back as `after` for the next page. The same cursor when nothing is new.
    pub next_cursor: String,
}

/// What a debit request came to, when the gateway gave a definite answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebitOutcome {
    /// Booked: the money has moved. Final.
    Succeeded { gateway_ref: String },
    /// Accepted but not settled (asynchronous rails): look it up later by key.
    Pending { gateway_ref: String },
    /// Refused. `hard` declines (account closed, mandate invalid) must not be retried;
    /// soft ones (temporarily refused) may be, under a new attempt.
    Declined {
        code: String,
        reason: String,
        hard: bool,
    },
}

/// The answer to a look-up by idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The gateway never saw this key: nothing was debited under it.
    NotFound,
    Found(DebitOutcome),
}

/// A debit instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitRequest {
    pub account_ref: String,
    pub mandate_ref: String,
    pub amount: Money,
    pub idempotency_key: String,
    /// Shown on the customer's statement, e.g. the agreement and installment.
    pub reference: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request may or may not have taken effect (timeout, 5xx, connection dropped
    /// after sending, an answer we could not read). Reconcile by key; never re-send under
    /// a new key.
    #[error("outcome unknown: {0}")]
    Ambiguous(String),
    /// The request certainly did not take effect (refused before sending, 4xx validation).
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway answered something this protocol does not allow.
    #[error("gateway protocol violation: {0}")]
    Protocol(String),
    /// The gateway refused the request before acting on it (400, 401, 403, 415, 422): the
    /// request, the token or the settings are wrong. Nothing happened, and sending it again
    /// will not help until a human fixes the cause; never resent automatically. For a
    /// look-up (401, 403) it means only that the bank would not say: the debit's outcome
    /// is still unknown.
    #[error("gateway rejected the request: {0}")]
    Rejected(String),
}

/// HTTP statuses that mean "refused before acting on it; needs a human" for a funds
/// confirmation or a debit (`docs/gateway-protocol.md` §6).
pub const REJECTING_STATUSES: [u16; 5] = [400, 401, 403, 415, 422];

#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    /// Funds confirmation: whether `amount` is available on `account_ref` now.
    async fn check_funds(
        &self,
        account_ref: &str,
        amount: &Money,
    ) -> Result<FundsAnswer, GatewayError>;

    /// Debits under `request.idempotency_key`. The same key twice debits at most once and
    /// answers with the first outcome.
    async fn debit(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError>;

    /// What became of the debit sent under `idempotency_key`.
    async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, GatewayError>;

    /// Returned debits after `cursor` (from the start when `None`), at most `limit`.
    /// `Ok(None)`: this gateway has no returns feed (a protocol 1.0 server).
    async fn returns_after(
        &self,
        _cursor: Option<&str>,
        _limit: u32,
    ) -> Result<Option<ReturnsPage>, GatewayError> {
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    Sandbox,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub kind: GatewayKind,
    #[serde(default)]
    pub sandbox: sandbox::SandboxSettings,
    pub http: Option<http::HttpGatewaySettings>,
}

impl GatewaySettings {
    /// Every problem with the gateway settings, each naming its key.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = self.sandbox.check();
        match (&self.kind, &self.http) {
            (GatewayKind::Http, None) => problems.push(ConfigError::invalid(
                "gateway.http",
                "kind = \"http\" needs a [gateway.http] section with base_url and a token",
            )),
            (GatewayKind::Http, Some(http)) => problems.extend(http.check()),
            (GatewayKind::Sandbox, _) => {}
        }
        problems
    }
}
