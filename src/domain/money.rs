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
    #[error("amount {0} does not fit in minor units")]
    Overflow(String),
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
        let value = Decimal::from_str(amount.trim())
            .map_err(|_| MoneyError::NotAnAmount(amount.to_string()))?;
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
        let scaled = self.amount * Decimal::from(10_i64.pow(self.currency.minor_digits()));
        i64::try_from(scaled.trunc()).map_err(|_| MoneyError::Overflow(self.amount.to_string()))
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
}
