//! Money: a `Decimal` amount with an ISO 4217 currency. Stored as integer minor units.

use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("unknown currency code {0:?} (expected an ISO 4217 code such as CNY, USD, JPY)")]
    UnknownCurrency(String),
    #[error("{0:?} is not a decimal amount")]
    NotAnAmount(String),
    #[error("{amount} has more decimal places than {currency} allows ({digits})")]
    TooPrecise {
        amount: String,
        currency: &'static str,
        digits: u32,
    },
    #[error(
        "amount {0} is too large: amounts are limited to 10^13 minor units (100 000 000 000.00 in a two-digit currency)"
    )]
    Overflow(String),
}

/// The largest amount repayd holds, in minor units (10^13: 100 billion CNY or USD, 10
/// trillion JPY). Sums of any schedule, fee or payment stay far inside i64, so no
/// arithmetic on stored amounts can overflow.
pub const MAX_MINOR: i64 = 10_000_000_000_000;

/// Longest decimal text accepted (sign, 29 digits and a point fit well within it).
const MAX_DECIMAL_CHARS: usize = 40;

/// Parses a plain decimal exactly: an optional `-`, digits, optionally `.` and digits.
/// No exponent (`1e3`), no `+`, no spaces or separators, nothing rounded away: `None`
/// for anything else, including more digits than a decimal holds.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    if text.is_empty() || text.len() > MAX_DECIMAL_CHARS {
        return None;
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, frac) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    Decimal::from_str_exact(text).ok()
}

/// A rate as a fraction (`0.12`) or a percentage (`12%`), as import files and `quote`
/// take it; the reason names the problem.
pub fn parse_rate(text: &str) -> Result<Decimal, String> {
    let (number, percent) = match text.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (text, false),
    };
    let value = parse_decimal(number)
        .ok_or_else(|| format!("{:?} is not a rate (write 0.12 or 12%)", bounded(text)))?;
    Ok(if percent {
        value / Decimal::ONE_HUNDRED
    } else {
        value
    })
}

/// An ISO 4217 currency with its minor-unit digits (CNY 2, JPY 0, KWD 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency(iso_currency::Currency);

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        iso_currency::Currency::from_code(&upper)
            .filter(|c| c.exponent().is_some())
            .map(Currency)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    pub fn code(&self) -> &'static str {
        self.0.code()
    }

    /// Digits after the decimal point in the minor unit.
    pub fn minor_digits(&self) -> u32 {
        u32::from(self.0.exponent().unwrap_or(2))
    }

    /// The currency's symbol, for customer-facing text (`¥`, `$`, `€`).
    pub fn symbol(&self) -> String {
        self.0.symbol().to_string()
    }

    /// The smallest amount: 0.01 for CNY, 1 for JPY, 0.001 for KWD.
    pub fn minor_unit(&self) -> Decimal {
        Decimal::new(1, self.minor_digits())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

/// An amount in a currency, always a whole number of minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Parses a decimal string (`"12000.00"`, `"12000"`) exactly; more decimal places than the
    /// currency has is an error, never silently rounded.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let value =
            parse_decimal(amount.trim()).ok_or_else(|| MoneyError::NotAnAmount(bounded(amount)))?;
        Self::from_decimal(value, currency)
    }

    /// Takes an exact decimal; fails if it has more places than the currency allows.
    pub fn from_decimal(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        let digits = currency.minor_digits();
        let normalized = amount.normalize();
        if normalized.scale() > digits {
            return Err(MoneyError::TooPrecise {
                amount: amount.to_string(),
                currency: currency.code(),
                digits,
            });
        }
        let mut amount = normalized;
        amount.rescale(digits);
        let m = Money { amount, currency };
        m.try_minor()?;
        Ok(m)
    }

    pub fn from_minor(minor: i64, currency: Currency) -> Self {
        Money {
            amount: Decimal::new(minor, currency.minor_digits()),
            currency,
        }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::from_minor(0, currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    fn try_minor(&self) -> Result<i64, MoneyError> {
        let overflow = || MoneyError::Overflow(self.amount.to_string());
        let scaled = self
            .amount
            .checked_mul(Decimal::from(10_i64.pow(self.currency.minor_digits())))
            .ok_or_else(overflow)?;
        let minor = i64::try_from(scaled.trunc()).map_err(|_| overflow())?;
        if minor.unsigned_abs() > MAX_MINOR as u64 {
            return Err(overflow());
        }
        Ok(minor)
    }

    /// Integer minor units, the form money takes in the database.
    pub fn minor(&self) -> i64 {
        self.try_minor().expect("checked when constructed")
    }

    /// Plain decimal string with exactly the currency's digits: `"12000.00"`, `"5000"`.
    pub fn plain(&self) -> String {
        format!("{:.*}", self.currency.minor_digits() as usize, self.amount)
    }

    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.plain(), self.currency.code())
    }
}

/// At most 40 characters of `text` for an error message (the input may be huge).
fn bounded(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Formats a minor-unit amount as a plain decimal string in its currency.
pub fn format_minor(minor: i64, currency: Currency) -> String {
    Money::from_minor(minor, currency).plain()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_know_their_minor_digits() {
        assert_eq!(Currency::parse("CNY").unwrap().minor_digits(), 2);
        assert_eq!(Currency::parse("jpy").unwrap().minor_digits(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_digits(), 3);
        assert!(matches!(
            Currency::parse("XYZ"),
            Err(MoneyError::UnknownCurrency(_))
        ));
    }

    #[test]
    fn parses_exactly_and_round_trips_minor_units() {
        let cny = Currency::parse("CNY").unwrap();
        let m = Money::parse("12000", cny).unwrap();
        assert_eq!(m.minor(), 1_200_000);
        assert_eq!(m.plain(), "12000.00");
        assert_eq!(Money::from_minor(1_072, cny).plain(), "10.72");
        assert!(matches!(
            Money::parse("1.005", cny),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert_eq!(Money::parse("1.500", cny).unwrap().minor(), 150);
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(Money::parse("5000", jpy).unwrap().plain(), "5000");
        assert!(Money::parse("abc", cny).is_err());
        assert!(Money::parse("-1.00", cny).unwrap().is_negative());
        assert!(Money::parse("99999999999999999999", cny).is_err());
    }

    #[test]
    fn only_plain_decimals_parse() {
        for ok in ["0", "12", "-1.50", "0.001", "79228162514264337593543950335"] {
            assert!(parse_decimal(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "1e3",
            "1E3",
            "+1",
            " 1",
            "1.",
            ".5",
            "1,000",
            "1_000",
            "--1",
            "0x10",
            "NaN",
            "1.2.3",
            "79228162514264337593543950336",
            "0.00000000000000000000000000001",
        ] {
            assert!(parse_decimal(bad).is_none(), "{bad}");
        }
        let cny = Currency::parse("CNY").unwrap();
        assert!(matches!(
            Money::parse("1e3", cny),
            Err(MoneyError::NotAnAmount(_))
        ));
        let long = "9".repeat(100_000);
        assert!(Money::parse(&long, cny).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn amounts_beyond_the_limit_are_errors_never_panics() {
        let cny = Currency::parse("CNY").unwrap();
        let jpy = Currency::parse("JPY").unwrap();
        for text in [
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7922816251426433759354395033.5",
            "100000000000.01",
        ] {
            assert!(
                matches!(Money::parse(text, cny), Err(MoneyError::Overflow(_))),
                "{text}"
            );
        }
        assert_eq!(
            Money::parse("100000000000.00", cny).unwrap().minor(),
            MAX_MINOR
        );
        assert_eq!(
            Money::parse("10000000000000", jpy).unwrap().minor(),
            MAX_MINOR
        );
        assert!(Money::parse("10000000000001", jpy).is_err());
        let text = Money::parse("79228162514264337593543950335", cny)
            .unwrap_err()
            .to_string();
        assert!(text.contains("10^13 minor units"), "{text}");
    }
    /// Amount and rate parsing never panics; what it accepts is a plain decimal that
    /// prints back to the same value, and money within the limit.
    #[test]
    fn fuzz_amount_and_rate_parsing() {
        let seeds = [
            "0",
            "12000.00",
            "-1.50",
            "79228162514264337593543950335",
            "1e3",
            "12%",
            "0.001",
            "100000000000.00",
            "9999999999999999999999999999.9",
            "-0",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let currencies: Vec<Currency> = ["CNY", "JPY", "KWD", "USD"]
            .iter()
            .map(|c| Currency::parse(c).unwrap())
            .collect();
        crate::fuzzing::run("amounts", crate::fuzzing::mutated(seeds), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Some(d) = parse_decimal(&text) {
                proptest::prop_assert_eq!(Decimal::from_str(&d.to_string()).unwrap(), d);
            }
            let _ = parse_rate(&text);
            for c in &currencies {
                if let Ok(m) = Money::parse(&text, *c) {
                    proptest::prop_assert!(m.minor().unsigned_abs() <= MAX_MINOR as u64);
                    proptest::prop_assert_eq!(Money::parse(&m.plain(), *c).unwrap(), m);
                }
            }
            Ok(())
        });
    }
}
