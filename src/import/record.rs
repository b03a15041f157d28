//! One agreement record as read from a file, before validation: every value still text,
//! located by CSV line or JSON array index so each error can say where it is.

use super::Format;
use std::fmt;

/// Where in the file a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Location {
    /// The file as a whole (cannot be parsed, wrong top-level shape, bad header).
    File,
    /// A CSV line, counted from 1 (the header is line 1).
    Line(u64),
    /// An element of the JSON array, counted from 0.
    Item(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => f.write_str("file"),
            Location::Line(n) => write!(f, "line {n}"),
            Location::Item(i) => write!(f, "item [{i}]"),
        }
    }
}

/// One problem with an import file: where, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: Location,
    /// The CSV column or JSON path (`customer.email`, `schedule[2].due_date`); empty when
    /// the problem is with the row or file as a whole.
    pub field: String,
    pub reason: String,
}

impl RowError {
    pub fn new(row: Location, field: impl Into<String>, reason: impl Into<String>) -> Self {
        RowError {
            row,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.row, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.row, self.field, self.reason)
        }
    }
}

/// The scalar fields of a record. CSV columns and JSON paths name the same things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    CustomerExternalId,
    CustomerName,
    Email,
    Locale,
    TimeZone,
    AccountRef,
    MandateRef,
    MandateStatus,
    AgreementId,
    Currency,
    Principal,
    Method,
    Installments,
    AnnualRate,
    FeeRate,
    FirstDue,
    Frequency,
    Rounding,
    Remainder,
    BusinessDay,
    /// The explicit schedule (a compact text in CSV, an array in JSON).
    Schedule,
    /// Optional: the order in which debits try the customer's funding accounts (1 first).
    FundingPriority,
}

impl Field {
    pub const ALL: [Field; 22] = [
        Field::CustomerExternalId,
        Field::CustomerName,
        Field::Email,
        Field::Locale,
        Field::TimeZone,
        Field::AccountRef,
        Field::MandateRef,
        Field::MandateStatus,
        Field::AgreementId,
        Field::Currency,
        Field::Principal,
        Field::Method,
        Field::Installments,
        Field::AnnualRate,
        Field::FeeRate,
        Field::FirstDue,
        Field::Frequency,
        Field::Rounding,
        Field::Remainder,
        Field::BusinessDay,
        Field::Schedule,
        Field::FundingPriority,
    ];

    /// The fields that make up generation terms (as opposed to an explicit schedule).
    pub const TERMS: [Field; 9] = [
        Field::Method,
        Field::Installments,
        Field::AnnualRate,
        Field::FeeRate,
        Field::FirstDue,
        Field::Frequency,
        Field::Rounding,
        Field::Remainder,
        Field::BusinessDay,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn csv_column(self) -> &'static str {
        match self {
            Field::CustomerExternalId => "customer_external_id",
            Field::CustomerName => "customer_name",
            Field::Email => "email",
            Field::Locale => "locale",
            Field::TimeZone => "time_zone",
            Field::AccountRef => "account_ref",
            Field::MandateRef => "mandate_ref",
            Field::MandateStatus => "mandate_status",
            Field::AgreementId => "agreement_id",
            Field::Currency => "currency",
            Field::Principal => "principal",
            Field::Method => "method",
            Field::Installments => "installments",
            Field::AnnualRate => "annual_rate",
            Field::FeeRate => "fee_rate",
            Field::FirstDue => "first_due",
            Field::Frequency => "frequency",
            Field::Rounding => "rounding",
            Field::Remainder => "remainder",
            Field::BusinessDay => "business_day",
            Field::Schedule => "schedule",
            Field::FundingPriority => "funding_priority",
        }
    }

    pub fn json_path(self) -> &'static str {
        match self {
            Field::CustomerExternalId => "customer.external_id",
            Field::CustomerName => "customer.name",
            Field::Email => "customer.email",
            Field::Locale => "customer.locale",
            Field::TimeZone => "customer.time_zone",
            Field::AccountRef => "funding_account.ref",
            Field::MandateRef => "funding_account.mandate_ref",
            Field::MandateStatus => "funding_account.mandate_status",
            Field::AgreementId => "agreement_id",
            Field::Currency => "currency",
            Field::Principal => "principal",
            Field::Method => "terms.method",
            Field::Installments => "terms.installments",
            Field::AnnualRate => "terms.annual_rate",
            Field::FeeRate => "terms.fee_rate",
            Field::FirstDue => "terms.first_due",
            Field::Frequency => "terms.frequency",
            Field::Rounding => "terms.rounding",
            Field::Remainder => "terms.remainder",
            Field::BusinessDay => "terms.business_day",
            Field::Schedule => "schedule",
            Field::FundingPriority => "funding_account.priority",
        }
    }

    /// The name of this field in files of `format`.
    pub fn name(self, format: Format) -> &'static str {
        match format {
            Format::Csv => self.csv_column(),
            Format::Json => self.json_path(),
        }
    }

    pub fn from_csv_column(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.csv_column() == name)
    }

    pub fn from_json_path(path: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.json_path() == path)
    }

    /// Columns a CSV header must have (the terms and the schedule columns may be left
    /// out when no row uses them).
    pub fn required_column(self) -> bool {
        self.index() <= Field::Principal.index()
    }
}

/// One line of an explicit schedule as given (JSON form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawInstallment {
    pub seq: Option<String>,
    pub due_date: Option<String>,
    pub principal: Option<String>,
    pub interest: Option<String>,
    pub fee: Option<String>,
}

/// An explicit schedule as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSchedule {
    /// CSV: `due_date:principal[:interest[:fee]]` entries separated by `|`.
    Compact(String),
    /// JSON: an array of objects.
    Entries(Vec<RawInstallment>),
}

/// A record as read: text values by field (absent or empty = `None`), plus problems the
/// reader already found (unknown JSON keys, values of the wrong JSON type).
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub location: Location,
    values: [Option<String>; Field::ALL.len()],
    pub schedule: Option<RawSchedule>,
    pub errors: Vec<RowError>,
    /// False when the reader could not make out the record's fields at all (a CSV line
    /// with the wrong number of fields, a JSON element that is not an object): validation
    /// then reports only the reader's errors instead of every field as missing.
    pub readable: bool,
}

impl RawRecord {
    pub fn new(location: Location) -> Self {
        RawRecord {
            location,
            values: Default::default(),
            schedule: None,
            errors: Vec::new(),
            readable: true,
        }
    }

    pub fn unreadable(location: Location, error: RowError) -> Self {
        let mut r = RawRecord::new(location);
        r.errors.push(error);
        r.readable = false;
        r
    }

    /// The trimmed value, `None` when absent or blank.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.values[field.index()].as_deref()
    }

    pub fn set(&mut self, field: Field, value: &str) {
        let v = value.trim();
        self.values[field.index()] = (!v.is_empty()).then(|| v.to_string());
    }

    pub fn has(&self, field: Field) -> bool {
        self.get(field).is_some()
    }
}

/// At most 60 characters of a value from the file, for an error message: an import file
/// may hold a value of any size, and the message must stay readable.
pub fn echo(text: &str) -> String {
    const MAX_ECHO_CHARS: usize = 60;
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        Some((i, _)) => format!("{}... ({} bytes)", &text[..i], text.len()),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_round_trip_and_all_is_in_declaration_order() {
        for (i, f) in Field::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(Field::from_csv_column(f.csv_column()), Some(f));
            assert_eq!(Field::from_json_path(f.json_path()), Some(f));
        }
        assert!(Field::Principal.required_column());
        assert!(!Field::Method.required_column());
    }

    #[test]
    fn errors_read_as_one_line_each() {
        let e = RowError::new(Location::Line(7), "email", "missing");
        assert_eq!(e.to_string(), "line 7: email: missing");
        let e = RowError::new(Location::Item(0), "", "expected an object");
        assert_eq!(e.to_string(), "item [0]: expected an object");
    }
}
