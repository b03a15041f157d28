//! The sandbox bank: accounts and balances in the database, for the default setup, demos
//! and tests, with switches for latency and faults.
//!
//! Behaviour, as a bank would document it:
//! - An account never seen before opens on first use with `opening_balance` (or its entry
//!   in `balances`) in the currency of the first debit, so imported sample accounts work.
//!   Funds checks read without opening anything.
//! - At start, `balances` overrides the balance of accounts already opened, and `frozen` /
//!   `closed` set every opened account's status (unlisted ones are open again).
//! - Funds checks: open and frozen accounts are answered from the balance (a frozen
//!   account's debit is then declined softly, `account_frozen`); a closed account, or one
//!   held in another currency, answers "insufficient" with no shortfall. A short open
//!   account also says how much is `available` (protocol 1.1), so partial collection can
//!   be rehearsed.
//! - Income schedules (`repayd sandbox income`, `crate::gateway::income`): an account
//!   with one gains `amount` on each payday and spends down to `keep` some days later,
//!   applied before every funds check and debit on it, on the bank's clock.
//! - Returns (protocol 1.1): `repayd sandbox return KEY` (or [`SandboxBank::return_debit`])
//!   returns a succeeded debit: the money goes back to the account and the return joins
//!   the bank's returns feed, which the daemon polls like a real bank's.
//! - Debits: one transaction per key. A key seen before answers with its recorded outcome
//!   (declines included) and never moves money again; the same key with another account,
//!   amount or currency is declined hard (`idempotency_mismatch`) and recorded nowhere.
//!   Declines: `insufficient_funds` and `account_frozen` (soft), `account_closed` and
//!   `currency_mismatch` (hard); injected ones are `refer_to_payer` (soft) and
//!   `mandate_invalid` (hard).
//! - `pending_percent` of new debits answer Pending; the next look-up settles them.
//! - `fault_percent` of new debits are booked but answer `Ambiguous` (the answer was
//!   lost), and the same share of funds checks fail (`Unavailable` or `Ambiguous`). Which
//!   debits fault is decided by a hash of the idempotency key, so a run is reproducible
//!   per key; funds-check faults follow one generator per bank, reproducible per call
//!   sequence.

use crate::clock::{Clock, SystemClock, to_epoch_ms};
use crate::config::ConfigError;
use crate::domain::{Currency, Money};
use crate::gateway::{
    DebitOutcome, DebitRequest, DebitReturn, FundsAnswer, GatewayError, LookupOutcome,
    PaymentGateway, ReturnsPage,
};
use crate::mask;
use crate::store::sandbox::{
    DEBIT_DECLINED, DEBIT_PENDING, DEBIT_SUCCEEDED, DECLINE_ACCOUNT_CLOSED, DECLINE_ACCOUNT_FROZEN,
    DECLINE_CURRENCY_MISMATCH, DECLINE_INSUFFICIENT_FUNDS, STATUS_CLOSED, STATUS_FROZEN,
    STATUS_OPEN, SandboxBooking, SandboxDebitBooking, SandboxDebitRow, SandboxReturnRow,
};
use crate::store::{Store, StoreError};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Injected soft decline (`SandboxFault::DeclineNextDebitSoft`).
pub const DECLINE_REFER_TO_PAYER: &str = "refer_to_payer";
/// Injected hard decline (`SandboxFault::DeclineNextDebitHard`).
pub const DECLINE_MANDATE_INVALID: &str = "mandate_invalid";
/// The same idempotency key with another account, amount or currency.
pub const DECLINE_IDEMPOTENCY_MISMATCH: &str = "idempotency_mismatch";
/// A debit of zero or less.
pub const DECLINE_INVALID_AMOUNT: &str = "invalid_amount";

/// Whether a decline code means "do not try again" (see the module docs).
pub fn decline_is_hard(code: &str) -> bool {
    matches!(
        code,
        DECLINE_ACCOUNT_CLOSED
            | DECLINE_CURRENCY_MISMATCH
            | DECLINE_MANDATE_INVALID
            | DECLINE_IDEMPOTENCY_MISMATCH
            | DECLINE_INVALID_AMOUNT
    )
}

fn decline_reason(code: &str) -> &'static str {
    match code {
        DECLINE_INSUFFICIENT_FUNDS => "balance is below the debit amount",
        DECLINE_ACCOUNT_FROZEN => "account is frozen",
        DECLINE_ACCOUNT_CLOSED => "account is closed",
        DECLINE_CURRENCY_MISMATCH => "account is held in another currency",
        DECLINE_REFER_TO_PAYER => "refused by the bank (sandbox fault)",
        DECLINE_MANDATE_INVALID => "mandate is not valid (sandbox fault)",
        DECLINE_IDEMPOTENCY_MISMATCH => {
            "idempotency key was already used for another account, amount or currency"
        }
        DECLINE_INVALID_AMOUNT => "amount must be positive",
        _ => "declined",
    }
}

/// Longest simulated latency: more would outlive a debit lease.
const MAX_LATENCY_MS: u64 = 60_000;
/// Balances must fit in `i64` minor units for every currency (up to 4 minor digits).
const MAX_BALANCE: i64 = 100_000_000_000_000;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Balance (decimal string) of an account on first use, in the debit's currency.
    pub opening_balance: String,
    /// Balances by account reference (decimal strings), applied at start.
    pub balances: BTreeMap<String, String>,
    /// Accounts whose debits are declined softly (`account_frozen`).
    pub frozen: Vec<String>,
    /// Accounts whose debits are declined hard (`account_closed`).
    pub closed: Vec<String>,
    /// Each call answers this long after it was made (or when the sandbox's own work
    /// for it, a booking, is done, if that takes longer), to make it feel like a bank.
    pub latency_ms: u64,
    /// Percent (0..=100) of new debits that are booked but answer `Ambiguous`, and of funds
    /// checks that fail.
    pub fault_percent: u32,
    /// Percent (0..=100) of new debits that answer Pending until the next look-up.
    pub pending_percent: u32,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            opening_balance: "5000.00".into(),
            balances: BTreeMap::new(),
            frozen: Vec::new(),
            closed: Vec::new(),
            latency_ms: 0,
            fault_percent: 0,
            pending_percent: 0,
        }
    }
}

impl SandboxSettings {
    /// Every problem, each naming its key.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if let Err(reason) = parse_balance(&self.opening_balance) {
            problems.push(ConfigError::invalid(
                "gateway.sandbox.opening_balance",
                reason,
            ));
        }
        for (account_ref, value) in &self.balances {
            if let Err(reason) = parse_balance(value) {
                problems.push(ConfigError::invalid(
                    format!(
                        "gateway.sandbox.balances.\"{}\"",
                        mask::account(account_ref)
                    ),
                    reason,
                ));
            }
        }
        if let Some(both) = self.frozen.iter().find(|r| self.closed.contains(r)) {
            problems.push(ConfigError::invalid(
                "gateway.sandbox.closed",
                format!(
                    "account {} is listed in both frozen and closed",
                    mask::account(both)
                ),
            ));
        }
        if self.latency_ms > MAX_LATENCY_MS {
            problems.push(ConfigError::invalid(
                "gateway.sandbox.latency_ms",
                format!("must be at most {MAX_LATENCY_MS}"),
            ));
        }
        for (key, value) in [
            ("gateway.sandbox.fault_percent", self.fault_percent),
            ("gateway.sandbox.pending_percent", self.pending_percent),
        ] {
            if value > 100 {
                problems.push(ConfigError::invalid(key, "must be a percentage, 0 to 100"));
            }
        }
        problems
    }

    fn status_of(&self, account_ref: &str) -> &'static str {
        if self.closed.iter().any(|r| r == account_ref) {
            STATUS_CLOSED
        } else if self.frozen.iter().any(|r| r == account_ref) {
            STATUS_FROZEN
        } else {
            STATUS_OPEN
        }
    }
}

fn parse_balance(text: &str) -> Result<Decimal, String> {
    let value = Decimal::from_str(text.trim())
        .map_err(|_| format!("{text:?} is not a decimal amount such as \"5000.00\""))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{text:?} is negative"));
    }
    if value >= Decimal::from(MAX_BALANCE) {
        return Err(format!("{text:?} is too large"));
    }
    Ok(value)
}

/// Minor units of `amount` in `currency`; digits beyond the currency's are dropped, since
/// one configured opening balance serves every currency (5000.50 opens a JPY account
/// with 5000).
fn minor_in(amount: Decimal, currency: Currency) -> i64 {
    let whole = amount.round_dp_with_strategy(currency.minor_digits(), RoundingStrategy::ToZero);
    Money::from_decimal(whole, currency)
        .map(|m| m.minor())
        .unwrap_or(i64::MAX)
}

/// One-shot faults for tests, taken by the next call they apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxFault {
    /// The next debit is processed (booked, or declined) but answers `Ambiguous`.
    LoseNextDebitAnswer,
    /// The next debit answers `Ambiguous` without reaching the ledger.
    FailNextDebitBeforeBooking,
    /// The next funds check answers `Unavailable`.
    FailNextFundsCheck,
    /// The next debit is declined hard (`mandate_invalid`). A replayed key still answers
    /// with its recorded outcome, and uses the fault up.
    DeclineNextDebitHard,
    /// The next debit is declined softly (`refer_to_payer`); replays as above.
    DeclineNextDebitSoft,
    /// The next look-up answers `Unavailable`.
    FailNextLookup,
}

/// A settable account status, for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Open,
    Frozen,
    Closed,
}

impl AccountStatus {
    fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Open => STATUS_OPEN,
            AccountStatus::Frozen => STATUS_FROZEN,
            AccountStatus::Closed => STATUS_CLOSED,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("sandbox bank: {0}")]
    Store(#[from] StoreError),
}

/// xorshift64*: enough randomness for fault switches, reproducible from a seed.
#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn seeded(label: &str, key: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(label.as_bytes())
            .chain_update([0u8])
            .chain_update(key.as_bytes())
            .finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&digest[..8]);
        // Zero is xorshift's one fixed point.
        XorShift(u64::from_le_bytes(seed).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && (self.next() % 100) < u64::from(percent)
    }
}

/// The embedded bank. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SandboxBank {
    store: Store,
    settings: SandboxSettings,
    opening_balance: Decimal,
    balances: BTreeMap<String, Decimal>,
    clock: Arc<dyn Clock>,
    faults: Mutex<VecDeque<SandboxFault>>,
    funds_rng: Mutex<XorShift>,
    /// Whether any account had an income schedule at start (`crate::gateway::income`).
    income: bool,
    /// Business days for `monthly:last-business-day` income (weekends only by default).
    calendar: Arc<crate::domain::HolidayCalendar>,
}

impl SandboxBank {
    /// Checks the settings and applies them to the ledger: configured balances override
    /// those of opened accounts, and every opened account gets its configured status.
    pub async fn new(store: Store, settings: SandboxSettings) -> Result<Self, SandboxError> {
        let mut problems = settings.check();
        match problems.len() {
            0 => {}
            1 => return Err(problems.remove(0).into()),
            _ => return Err(ConfigError::Many(problems).into()),
        }
        // Checked just above, so these parse.
        let opening_balance = parse_balance(&settings.opening_balance).unwrap_or_default();
        let balances: BTreeMap<String, Decimal> = settings
            .balances
            .iter()
            .map(|(r, v)| (r.clone(), parse_balance(v).unwrap_or_default()))
            .collect();
        for (account_ref, amount) in &balances {
            if let Some(account) = store.sandbox_account(account_ref).await? {
                // An account in a currency we no longer know keeps its balance.
                if let Ok(currency) = Currency::parse(&account.currency) {
                    store
                        .sandbox_update_balance(account_ref, minor_in(*amount, currency))
                        .await?;
                }
            }
        }
        for account in store.sandbox_accounts().await? {
            let wanted = settings.status_of(&account.account_ref);
            if account.status != wanted {
                store
                    .sandbox_set_status(&account.account_ref, wanted)
                    .await?;
            }
        }
        let income = store.sandbox_has_income().await?;
        Ok(SandboxBank {
            store,
            settings,
            opening_balance,
            balances,
            clock: Arc::new(SystemClock),
            faults: Mutex::new(VecDeque::new()),
            funds_rng: Mutex::new(XorShift::seeded("funds", "")),
            income,
            calendar: Arc::default(),
        })
    }

    /// Uses `clock` for the booking times recorded in the ledger.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Business days for income paid on the last business day (`schedule.calendar`).
    pub fn with_calendar(mut self, calendar: crate::domain::HolidayCalendar) -> Self {
        self.calendar = Arc::new(calendar);
        self
    }

    /// Queues a one-shot fault; the next call it applies to takes it.
    pub fn inject(&self, fault: SandboxFault) {
        self.faults
            .lock()
            .expect("sandbox fault queue poisoned")
            .push_back(fault);
    }

    /// The account's balance in minor units, or `None` if it has never been used.
    pub async fn balance(&self, account_ref: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .store
            .sandbox_account(account_ref)
            .await?
            .map(|a| a.balance_minor))
    }

    /// Sets (tops up) an account's balance, opening it if needed.
    pub async fn set_balance(
        &self,
        account_ref: &str,
        currency: Currency,
        minor: i64,
    ) -> Result<(), StoreError> {
        self.store
            .sandbox_set_balance(
                account_ref,
                currency.code(),
                minor,
                self.settings.status_of(account_ref),
            )
            .await
    }

    /// Freezes, closes or reopens an account. False if it has never been used.
    pub async fn set_status(
        &self,
        account_ref: &str,
        status: AccountStatus,
    ) -> Result<bool, StoreError> {
        self.store
            .sandbox_set_status(account_ref, status.as_str())
            .await
    }

    /// How many debits took money from the account.
    pub async fn debit_count(&self, account_ref: &str) -> Result<i64, StoreError> {
        self.store.sandbox_debit_count(account_ref).await
    }

    /// How many debits took money under the key: 0 or 1.
    pub async fn debits_for_key(&self, idempotency_key: &str) -> Result<i64, StoreError> {
        self.store.sandbox_debits_for_key(idempotency_key).await
    }

    /// Returns the succeeded debit booked under `idempotency_key` (as a bank does after a
    /// failed settlement or a dispute): the money goes back to the account and the return
    /// joins the returns feed. A debit is returned at most once.
    pub async fn return_debit(
        &self,
        idempotency_key: &str,
        reason_code: &str,
        hard: bool,
    ) -> Result<DebitReturn, StoreError> {
        let row = self
            .store
            .sandbox_return_debit(
                idempotency_key,
                reason_code,
                hard,
                to_epoch_ms(self.clock.now()),
            )
            .await?;
        return_of(&row).map_err(|e| StoreError::Conflict(e.to_string()))
    }

    /// Applies the account's income schedule up to today (its local date), if it has one:
    /// paydays since the last look raise the balance, spending brings it down.
    async fn apply_income(&self, account_ref: &str) -> Result<(), GatewayError> {
        if !self.income {
            return Ok(());
        }
        let ledger = |e: StoreError| GatewayError::Unavailable(format!("sandbox ledger: {e}"));
        let Some(row) = self
            .store
            .sandbox_income(account_ref)
            .await
            .map_err(ledger)?
        else {
            return Ok(());
        };
        // Checked when the schedule was loaded (`repayd sandbox income`).
        let (Ok(payday), Ok(tz), Ok(from)) = (
            row.payday.parse::<crate::domain::payday::Payday>(),
            row.time_zone.parse::<chrono_tz::Tz>(),
            chrono::NaiveDate::parse_from_str(&row.applied_through, "%Y-%m-%d"),
        ) else {
            return Err(GatewayError::Protocol(format!(
                "sandbox income schedule of {} is not valid",
                mask::account(account_ref)
            )));
        };
        let today = crate::domain::worktime::local_date(self.clock.now(), tz);
        if today <= from {
            return Ok(());
        }
        let effect = crate::gateway::income::IncomeSchedule {
            payday,
            amount_minor: row.amount_minor,
            keep_minor: row.keep_minor,
            spent_after_days: u32::try_from(row.spent_after_days).unwrap_or(0),
        }
        .effect(from, today, &self.calendar);
        self.store
            .sandbox_apply_income(
                account_ref,
                &row.applied_through,
                &today.format("%Y-%m-%d").to_string(),
                effect.add,
                effect.cap,
            )
            .await
            .map_err(ledger)?;
        Ok(())
    }

    /// Takes the first queued fault that `applies` accepts.
    fn take_fault(&self, applies: impl Fn(SandboxFault) -> bool) -> Option<SandboxFault> {
        let mut faults = self.faults.lock().expect("sandbox fault queue poisoned");
        let at = faults.iter().position(|f| applies(*f))?;
        faults.remove(at)
    }

    /// What an account not yet opened starts with, in `currency`.
    fn opening_minor(&self, account_ref: &str, currency: Currency) -> i64 {
        let amount = self
            .balances
            .get(account_ref)
            .copied()
            .unwrap_or(self.opening_balance);
        minor_in(amount, currency)
    }
}

fn outcome_of(row: &SandboxDebitRow) -> Result<DebitOutcome, GatewayError> {
    match row.status.as_str() {
        DEBIT_SUCCEEDED => Ok(DebitOutcome::Succeeded {
            gateway_ref: row.gateway_ref.clone(),
        }),
        DEBIT_PENDING => Ok(DebitOutcome::Pending {
            gateway_ref: row.gateway_ref.clone(),
        }),
        DEBIT_DECLINED => {
            let code = row.decline_code.clone().unwrap_or_default();
            Ok(DebitOutcome::Declined {
                reason: decline_reason(&code).to_string(),
                hard: decline_is_hard(&code),
                code,
            })
        }
        other => Err(GatewayError::Protocol(format!(
            "sandbox ledger holds unknown debit status {other:?}"
        ))),
    }
}

fn return_of(row: &SandboxReturnRow) -> Result<DebitReturn, GatewayError> {
    let currency = Currency::parse(&row.currency)
        .map_err(|e| GatewayError::Protocol(format!("sandbox return {}: {e}", row.return_id)))?;
    Ok(DebitReturn {
        return_id: row.return_id.clone(),
        debit_id: row.gateway_ref.clone(),
        idempotency_key: row.idempotency_key.clone(),
        amount: Money::from_minor(row.amount_minor, currency),
        reason_code: row.reason_code.clone(),
        hard: row.hard != 0,
    })
}

fn declined(code: &str) -> DebitOutcome {
    DebitOutcome::Declined {
        code: code.to_string(),
        reason: decline_reason(code).to_string(),
        hard: decline_is_hard(code),
    }
}

/// A stable reference for the booking, as a bank's transaction id.
fn gateway_ref_for(idempotency_key: &str) -> String {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    format!("sbx_{}", hex::encode(&digest[..10]))
}

impl SandboxBank {
    /// Answers `latency_ms` after the call was made, or when `work` is done if that
    /// takes longer: a bank's latency is its whole answer time, its own booking included.
    async fn within_latency<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        if self.settings.latency_ms == 0 {
            return work.await;
        }
        let answer_at =
            tokio::time::Instant::now() + Duration::from_millis(self.settings.latency_ms);
        let answer = work.await;
        tokio::time::sleep_until(answer_at).await;
        answer
    }

    async fn check_funds_now(
        &self,
        account_ref: &str,
        amount: &Money,
    ) -> Result<FundsAnswer, GatewayError> {
        if self
            .take_fault(|f| f == SandboxFault::FailNextFundsCheck)
            .is_some()
        {
            return Err(GatewayError::Unavailable(
                "funds check failed (sandbox fault)".into(),
            ));
        }
        if self.settings.fault_percent > 0 {
            let mut rng = self.funds_rng.lock().expect("sandbox generator poisoned");
            if rng.chance(self.settings.fault_percent) {
                // Both kinds, so callers meet both on a funds check.
                return Err(if rng.next().is_multiple_of(2) {
                    GatewayError::Unavailable("bank unreachable (sandbox fault)".into())
                } else {
                    GatewayError::Ambiguous("funds check timed out (sandbox fault)".into())
                });
            }
        }
        self.apply_income(account_ref).await?;
        let currency = amount.currency();
        let (balance, status, account_currency) =
            match self.store.sandbox_account(account_ref).await {
                Ok(Some(a)) => (a.balance_minor, a.status, a.currency),
                Ok(None) => (
                    self.opening_minor(account_ref, currency),
                    self.settings.status_of(account_ref).to_string(),
                    currency.code().to_string(),
                ),
                Err(e) => return Err(GatewayError::Unavailable(format!("sandbox ledger: {e}"))),
            };
        if status == STATUS_CLOSED || account_currency != currency.code() {
            return Ok(FundsAnswer::Insufficient {
                shortfall: None,
                available: None,
            });
        }
        if balance >= amount.minor() {
            Ok(FundsAnswer::Available)
        } else {
            let available = balance.max(0);
            Ok(FundsAnswer::Insufficient {
                shortfall: Some(Money::from_minor(amount.minor() - available, currency)),
                // A frozen account cannot be debited at all: say nothing about it.
                available: (status == STATUS_OPEN).then(|| Money::from_minor(available, currency)),
            })
        }
    }

    async fn debit_now(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        if request.amount.minor() <= 0 {
            return Ok(declined(DECLINE_INVALID_AMOUNT));
        }
        self.apply_income(&request.account_ref).await?;
        let injected = self.take_fault(|f| {
            matches!(
                f,
                SandboxFault::LoseNextDebitAnswer
                    | SandboxFault::FailNextDebitBeforeBooking
                    | SandboxFault::DeclineNextDebitHard
                    | SandboxFault::DeclineNextDebitSoft
            )
        });
        if injected == Some(SandboxFault::FailNextDebitBeforeBooking) {
            return Err(GatewayError::Ambiguous(
                "request lost before the bank saw it (sandbox fault)".into(),
            ));
        }
        let mut rng = XorShift::seeded("debit", &request.idempotency_key);
        let lose_answer = rng.chance(self.settings.fault_percent);
        let pending = rng.chance(self.settings.pending_percent);
        let currency = request.amount.currency();
        let gateway_ref = gateway_ref_for(&request.idempotency_key);
        let booking = SandboxDebitBooking {
            idempotency_key: &request.idempotency_key,
            account_ref: &request.account_ref,
            amount_minor: request.amount.minor(),
            currency: currency.code(),
            opening_balance_minor: self.opening_minor(&request.account_ref, currency),
            opening_status: self.settings.status_of(&request.account_ref),
            forced_decline: match injected {
                Some(SandboxFault::DeclineNextDebitHard) => Some(DECLINE_MANDATE_INVALID),
                Some(SandboxFault::DeclineNextDebitSoft) => Some(DECLINE_REFER_TO_PAYER),
                _ => None,
            },
            pending,
            gateway_ref: &gateway_ref,
            at_ms: to_epoch_ms(self.clock.now()),
        };
        // Whether the transaction committed is not known when it fails: say so.
        let booked = self
            .store
            .sandbox_book_debit(&booking)
            .await
            .map_err(|e| GatewayError::Ambiguous(format!("sandbox ledger: {e}")))?;
        let (outcome, new) = match &booked {
            SandboxBooking::New(row) => (outcome_of(row)?, true),
            SandboxBooking::Existing(row)
                if row.account_ref == request.account_ref
                    && row.amount_minor == request.amount.minor()
                    && row.currency == currency.code() =>
            {
                (outcome_of(row)?, false)
            }
            SandboxBooking::Existing(_) => {
                tracing::warn!("idempotency key reused for a different debit");
                (declined(DECLINE_IDEMPOTENCY_MISMATCH), false)
            }
        };
        // Random faults hit the first submission only; a replay is answered truthfully.
        if injected == Some(SandboxFault::LoseNextDebitAnswer) || (new && lose_answer) {
            tracing::info!(?outcome, "debit processed, answer lost (sandbox fault)");
            return Err(GatewayError::Ambiguous(
                "answer lost (sandbox fault)".into(),
            ));
        }
        Ok(outcome)
    }

    async fn lookup_now(&self, idempotency_key: &str) -> Result<LookupOutcome, GatewayError> {
        if self
            .take_fault(|f| f == SandboxFault::FailNextLookup)
            .is_some()
        {
            return Err(GatewayError::Unavailable(
                "look-up failed (sandbox fault)".into(),
            ));
        }
        let unavailable = |e: StoreError| GatewayError::Unavailable(format!("sandbox ledger: {e}"));
        let Some(mut row) = self
            .store
            .sandbox_debit(idempotency_key)
            .await
            .map_err(unavailable)?
        else {
            return Ok(LookupOutcome::NotFound);
        };
        if row.status == DEBIT_PENDING {
            // Settled by whichever look-up gets there first; the answer is the same.
            self.store
                .sandbox_settle_pending(idempotency_key)
                .await
                .map_err(unavailable)?;
            row.status = DEBIT_SUCCEEDED.to_string();
        }
        Ok(LookupOutcome::Found(outcome_of(&row)?))
    }

    async fn returns_after_now(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Option<ReturnsPage>, GatewayError> {
        let after: i64 = match cursor {
            None => 0,
            Some(text) => text.parse().map_err(|_| {
                GatewayError::Protocol(format!("sandbox returns cursor {text:?} is not ours"))
            })?,
        };
        let rows = self
            .store
            .sandbox_returns_after(after, i64::from(limit.max(1)))
            .await
            .map_err(|e| GatewayError::Unavailable(format!("sandbox ledger: {e}")))?;
        let next = rows.last().map(|r| r.seq).unwrap_or(after);
        Ok(Some(ReturnsPage {
            returns: rows.iter().map(return_of).collect::<Result<_, _>>()?,
            next_cursor: next.to_string(),
        }))
    }
}

#[async_trait::async_trait]
impl PaymentGateway for SandboxBank {
    #[tracing::instrument(skip_all, fields(account = %mask::account(account_ref), amount = %amount))]
    async fn check_funds(
        &self,
        account_ref: &str,
        amount: &Money,
    ) -> Result<FundsAnswer, GatewayError> {
        self.within_latency(self.check_funds_now(account_ref, amount))
            .await
    }

    #[tracing::instrument(skip_all, fields(
        account = %mask::account(&request.account_ref),
        key = %request.idempotency_key,
        amount = %request.amount,
    ))]
    async fn debit(&self, request: &DebitRequest) -> Result<DebitOutcome, GatewayError> {
        self.within_latency(self.debit_now(request)).await
    }

    #[tracing::instrument(skip_all, fields(key = %idempotency_key))]
    async fn lookup(&self, idempotency_key: &str) -> Result<LookupOutcome, GatewayError> {
        self.within_latency(self.lookup_now(idempotency_key)).await
    }

    async fn returns_after(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Option<ReturnsPage>, GatewayError> {
        self.within_latency(self.returns_after_now(cursor, limit))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_keys_are_rejected() {
        let s: SandboxSettings = toml::from_str("").unwrap();
        assert_eq!(s, SandboxSettings::default());
        assert!(s.check().is_empty());
        assert!(toml::from_str::<SandboxSettings>("fault_pct = 3").is_err());
        let s: SandboxSettings = toml::from_str(
            "opening_balance = \"100\"\nfrozen = [\"A1\"]\n[balances]\n\"ACC-1\" = \"12.50\"",
        )
        .unwrap();
        assert!(s.check().is_empty());
        assert_eq!(s.balances["ACC-1"], "12.50");
    }

    #[test]
    fn check_names_each_bad_key() {
        let mut s = SandboxSettings {
            opening_balance: "lots".into(),
            fault_percent: 101,
            pending_percent: 200,
            latency_ms: MAX_LATENCY_MS + 1,
            frozen: vec!["ACC-000123".into()],
            closed: vec!["ACC-000123".into()],
            ..SandboxSettings::default()
        };
        s.balances.insert("ACC-000999".into(), "-3".into());
        let text: Vec<String> = s.check().iter().map(|e| e.to_string()).collect();
        let keys = [
            "gateway.sandbox.opening_balance",
            "gateway.sandbox.balances.\"****0999\"",
            "gateway.sandbox.closed",
            "gateway.sandbox.latency_ms",
            "gateway.sandbox.fault_percent",
            "gateway.sandbox.pending_percent",
        ];
        assert_eq!(text.len(), keys.len(), "{text:#?}");
        for (line, key) in text.iter().zip(keys) {
            assert!(
                line.contains(&format!("`{key}`")),
                "{line} should name {key}"
            );
        }
        assert!(
            !text.concat().contains("ACC-000"),
            "account refs are masked"
        );
    }

    #[test]
    fn opening_balance_drops_digits_the_currency_does_not_have() {
        let jpy = Currency::parse("JPY").unwrap();
        let cny = Currency::parse("CNY").unwrap();
        assert_eq!(minor_in(Decimal::new(500_050, 2), jpy), 5000);
        assert_eq!(minor_in(Decimal::new(500_050, 2), cny), 500_050);
    }

    #[test]
    fn the_generator_is_reproducible_per_key() {
        let draws = |key: &str| {
            let mut g = XorShift::seeded("debit", key);
            (0..5).map(|_| g.next()).collect::<Vec<_>>()
        };
        assert_eq!(draws("k-1"), draws("k-1"));
        assert_ne!(draws("k-1"), draws("k-2"));
        let hits = (0..1000)
            .filter(|i| XorShift::seeded("debit", &format!("k-{i}")).chance(30))
            .count();
        assert!((200..400).contains(&hits), "{hits} of 1000 at 30%");
        assert!(!XorShift::seeded("debit", "k").chance(0));
        assert!(XorShift::seeded("debit", "k").chance(100));
    }
}
