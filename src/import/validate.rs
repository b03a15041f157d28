//! Validation of one record, with no I/O: every field checked, every problem named, and a
//! valid record turned into the normalized agreement (schedule generated or checked) with
//! its content hash.

use super::Format;
use super::record::{Field, Location, RawInstallment, RawRecord, RawSchedule, RowError};
use crate::domain::schedule::{self, ScheduleError};
use crate::domain::{
    BusinessDayRule, Currency, Frequency, HolidayCalendar, Method, Money, MoneyError,
    RemainderPlacement, RoundingMode, Terms,
};
use crate::store::agreements::{NewCustomer, NewFundingAccount, NewInstallment};
use chrono::NaiveDate;
use clap::ValueEnum;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// At most this many installments per agreement, as for generated schedules.
const MAX_INSTALLMENTS: usize = 600;
const MAX_ID_CHARS: usize = 100;
const MAX_REF_CHARS: usize = 64;
const MAX_NAME_CHARS: usize = 200;
const MAX_EMAIL_CHARS: usize = 254;

/// What validation needs besides the record: the file's format (to name fields) and the
/// schedule defaults of the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub format: Format,
    pub rounding: RoundingMode,
    pub remainder: RemainderPlacement,
    pub business_day: BusinessDayRule,
    pub calendar: HolidayCalendar,
    /// The calendar's name, recorded in the terms when it moved a date.
    pub calendar_name: Option<String>,
}

/// A fully valid agreement, normalized, ready to be written once the customer and the
/// funding account have database ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidAgreement {
    pub location: Location,
    pub external_id: String,
    pub customer_external_id: String,
    pub account_ref: String,
    pub currency: String,
    pub principal_minor: i64,
    pub total_interest_minor: i64,
    pub total_fee_minor: i64,
    pub method: Option<String>,
    pub terms_json: Option<String>,
    pub content_hash: String,
    pub installments: Vec<NewInstallment>,
}

/// The outcome of checking one record. The parts that are valid on their own are kept
/// even when others are not, so cross-record checks (duplicate ids, conflicting customer
/// details) can still run and the operator sees every problem in one go.
#[derive(Debug, Clone)]
pub struct Checked {
    pub location: Location,
    pub agreement_id: Option<String>,
    pub customer: Option<NewCustomer>,
    /// The account and the external id of the customer it belongs to.
    pub account: Option<(NewFundingAccount, String)>,
    /// The account's place in the order debits try the customer's accounts (1 first).
    pub funding_priority: Option<i64>,
    pub agreement: Option<ValidAgreement>,
    pub errors: Vec<RowError>,
}

/// Collects errors for one record, naming fields the way its format does.
struct Report {
    location: Location,
    format: Format,
    errors: Vec<RowError>,
}

impl Report {
    fn fail(&mut self, field: Field, reason: impl Into<String>) {
        self.errors.push(RowError::new(
            self.location,
            field.name(self.format),
            reason,
        ));
    }

    fn fail_at(&mut self, field: String, reason: impl Into<String>) {
        self.errors
            .push(RowError::new(self.location, field, reason));
    }

    /// A required text field: present, within `max` characters, no control characters
    /// (names and ids end up in email headers and logs).
    fn text(&mut self, raw: &RawRecord, field: Field, max: usize) -> Option<String> {
        let Some(v) = raw.get(field) else {
            self.fail(field, "missing");
            return None;
        };
        if v.chars().count() > max {
            self.fail(field, format!("longer than {max} characters"));
            return None;
        }
        if v.chars().any(char::is_control) {
            self.fail(field, "contains control characters (line breaks, tabs)");
            return None;
        }
        Some(v.to_string())
    }

    /// A required reference (account numbers): no spaces at all, so the bank and repayd
    /// always spell it the same way.
    fn reference(&mut self, raw: &RawRecord, field: Field) -> Option<String> {
        let v = self.text(raw, field, MAX_REF_CHARS)?;
        if v.chars().any(char::is_whitespace) {
            self.fail(field, "contains spaces (write the reference without them)");
            return None;
        }
        Some(v)
    }
}

/// Checks one record against `rules`.
pub fn check(raw: &RawRecord, rules: &Rules) -> Checked {
    let mut report = Report {
        location: raw.location,
        format: rules.format,
        errors: raw.errors.clone(),
    };
    if !raw.readable {
        return Checked {
            location: raw.location,
            agreement_id: None,
            customer: None,
            account: None,
            funding_priority: None,
            agreement: None,
            errors: report.errors,
        };
    }

    let customer = check_customer(raw, &mut report);
    let account = check_account(raw, &mut report);
    let funding_priority = check_priority(raw, &mut report);
    let agreement_id = report.text(raw, Field::AgreementId, MAX_ID_CHARS);
    let currency = match raw.get(Field::Currency) {
        None => {
            report.fail(Field::Currency, "missing");
            None
        }
        Some(code) => match Currency::parse(code) {
            Ok(c) => Some(c),
            Err(_) => {
                report.fail(
                    Field::Currency,
                    format!("unknown currency {code:?} (expected an ISO 4217 code such as CNY, USD, GBP)"),
                );
                None
            }
        },
    };
    let principal = check_principal(raw, currency, &mut report);
    let lines = check_schedule_or_terms(raw, rules, currency, principal, &mut report);

    let account_with_owner = match (&account, &customer) {
        (Some(a), Some(c)) => Some((a.clone(), c.external_id.clone())),
        _ => None,
    };
    let agreement = match (
        &agreement_id,
        &customer,
        &account,
        currency,
        principal,
        lines,
    ) {
        (Some(id), Some(c), Some(a), Some(cur), Some(p), Some(plan))
            if report.errors.is_empty() =>
        {
            Some(finish(raw.location, id, c, a, cur, p, plan))
        }
        _ => None,
    };
    Checked {
        location: raw.location,
        agreement_id,
        customer,
        account: account_with_owner,
        funding_priority,
        agreement,
        errors: report.errors,
    }
}

fn check_customer(raw: &RawRecord, report: &mut Report) -> Option<NewCustomer> {
    let external_id = report.text(raw, Field::CustomerExternalId, MAX_ID_CHARS);
    let name = report.text(raw, Field::CustomerName, MAX_NAME_CHARS);
    let email = report
        .text(raw, Field::Email, MAX_EMAIL_CHARS)
        .and_then(|e| match check_email(&e) {
            Ok(()) => Some(e),
            Err(reason) => {
                report.fail(Field::Email, reason);
                None
            }
        });
    let locale = match raw.get(Field::Locale) {
        None => {
            report.fail(Field::Locale, "missing");
            None
        }
        Some(tag) => match normalize_locale(tag) {
            Some(l) => Some(l),
            None => {
                report.fail(
                    Field::Locale,
                    format!("{tag:?} is not a language tag (expected e.g. en, en-GB, zh-CN)"),
                );
                None
            }
        },
    };
    let time_zone = match raw.get(Field::TimeZone) {
        None => {
            report.fail(Field::TimeZone, "missing");
            None
        }
        Some(tz) => match chrono_tz::Tz::from_str(tz) {
            Ok(tz) => Some(tz.name().to_string()),
            Err(_) => {
                report.fail(
                    Field::TimeZone,
                    format!(
                        "unknown time zone {tz:?} (expected an IANA name such as Europe/London)"
                    ),
                );
                None
            }
        },
    };
    Some(NewCustomer {
        external_id: external_id?,
        name: name?,
        email: email?,
        locale: locale?,
        time_zone: time_zone?,
    })
}

/// The address must be one the mailer can send to. The value itself is never repeated in
/// the reason: it is personal data and errors may end up in logs.
fn check_email(email: &str) -> Result<(), &'static str> {
    let Ok(address) = lettre::Address::from_str(email) else {
        return Err("not a valid email address (expected name@example.com)");
    };
    if !address.domain().contains('.') {
        return Err("not a valid email address: the domain has no dot");
    }
    Ok(())
}

/// A BCP 47-like tag (`en`, `en-GB`, `zh-Hans-CN`), normalized to the usual case:
/// language lower, script title, region upper. `_` is taken for `-`. Tags repayd has no
/// templates for are accepted: the mailer falls back to its default language.
pub fn normalize_locale(tag: &str) -> Option<String> {
    let parts: Vec<&str> = tag.split(['-', '_']).collect();
    let (language, rest) = parts.split_first()?;
    if !(2..=3).contains(&language.len()) || !language.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    if tag.len() > 35 {
        return None;
    }
    let mut out = language.to_ascii_lowercase();
    for (i, sub) in rest.iter().enumerate() {
        if sub.is_empty() || sub.len() > 8 || !sub.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        out.push('-');
        let alpha = sub.chars().all(|c| c.is_ascii_alphabetic());
        if i == 0 && sub.len() == 4 && alpha {
            let (first, tail) = sub.split_at(1);
            out.push_str(&first.to_ascii_uppercase());
            out.push_str(&tail.to_ascii_lowercase());
        } else if (sub.len() == 2 && alpha)
            || (sub.len() == 3 && sub.chars().all(|c| c.is_ascii_digit()))
        {
            out.push_str(&sub.to_ascii_uppercase());
        } else {
            out.push_str(&sub.to_ascii_lowercase());
        }
    }
    Some(out)
}

/// Highest funding priority accepted: a customer with more accounts than this is not a
/// customer, it is a data error.
const MAX_FUNDING_PRIORITY: i64 = 99;

/// The optional `funding_priority`: a whole number, 1 (tried first) to 99.
fn check_priority(raw: &RawRecord, report: &mut Report) -> Option<i64> {
    let v = raw.get(Field::FundingPriority)?;
    match v.parse::<i64>() {
        Ok(n) if (1..=MAX_FUNDING_PRIORITY).contains(&n) => Some(n),
        _ => {
            report.fail(
                Field::FundingPriority,
                format!(
                    "must be a whole number from 1 (tried first) to {MAX_FUNDING_PRIORITY}, got {:?}",
                    super::record::echo(v)
                ),
            );
            None
        }
    }
}

fn check_account(raw: &RawRecord, report: &mut Report) -> Option<NewFundingAccount> {
    let external_ref = report.reference(raw, Field::AccountRef);
    let mandate_ref = report.text(raw, Field::MandateRef, MAX_ID_CHARS);
    let mandate_status = match raw.get(Field::MandateStatus) {
        None => {
            report.fail(Field::MandateStatus, "missing");
            None
        }
        Some(s) => {
            let lower = s.to_ascii_lowercase();
            if ["active", "pending", "revoked"].contains(&lower.as_str()) {
                Some(lower)
            } else {
                report.fail(
                    Field::MandateStatus,
                    format!("{s:?} is not a mandate status (expected active, pending or revoked)"),
                );
                None
            }
        }
    };
    Some(NewFundingAccount {
        external_ref: external_ref?,
        mandate_ref: mandate_ref?,
        mandate_status: mandate_status?,
    })
}

/// Parses an amount exactly in `currency`; the reason names the problem.
fn parse_amount(text: &str, currency: Option<Currency>) -> Result<Decimal, String> {
    let value = crate::domain::parse_decimal(text).ok_or_else(|| {
        format!(
            "{:?} is not a decimal amount (digits, optionally a point and digits; no exponent)",
            crate::import::record::echo(text)
        )
    })?;
    let Some(currency) = currency else {
        // Without a valid currency the places cannot be checked; the currency's own
        // error is reported.
        return Ok(value);
    };
    match Money::from_decimal(value, currency) {
        Ok(m) => Ok(m.amount()),
        Err(MoneyError::TooPrecise {
            currency, digits, ..
        }) => Err(format!(
            "{text} has more decimal places than {currency} allows ({digits})"
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn check_principal(
    raw: &RawRecord,
    currency: Option<Currency>,
    report: &mut Report,
) -> Option<Decimal> {
    let Some(text) = raw.get(Field::Principal) else {
        report.fail(Field::Principal, "missing");
        return None;
    };
    match parse_amount(text, currency) {
        Ok(v) if v <= Decimal::ZERO => {
            report.fail(
                Field::Principal,
                format!("must be greater than zero, got {text}"),
            );
            None
        }
        Ok(v) => currency.map(|_| v),
        Err(reason) => {
            report.fail(Field::Principal, reason);
            None
        }
    }
}

/// The schedule to store: lines in minor units, plus how it came about.
struct Plan {
    method: Option<Method>,
    terms_json: Option<String>,
    lines: Vec<NewInstallment>,
}

fn check_schedule_or_terms(
    raw: &RawRecord,
    rules: &Rules,
    currency: Option<Currency>,
    principal: Option<Decimal>,
    report: &mut Report,
) -> Option<Plan> {
    let given_terms: Vec<Field> = Field::TERMS.into_iter().filter(|f| raw.has(*f)).collect();
    match (&raw.schedule, given_terms.is_empty()) {
        (Some(_), false) => {
            report.fail(
                Field::Schedule,
                format!(
                    "give either terms or an explicit schedule, not both (terms given: {})",
                    given_terms
                        .iter()
                        .map(|f| f.name(rules.format))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            None
        }
        (Some(schedule), true) => check_explicit(schedule, currency, principal, report),
        (None, _) if !raw.has(Field::Method) && given_terms.is_empty() => {
            report.fail(
                Field::Method,
                "missing terms: give method, installments and first_due (and rates), \
                 or an explicit schedule",
            );
            None
        }
        (None, _) => check_terms(raw, rules, currency, principal, report),
    }
}

/// Parses a `ValueEnum` value, accepting `_` for `-` and any case.
fn parse_choice<T: ValueEnum>(text: &str) -> Result<T, String> {
    T::from_str(&text.replace('_', "-"), true).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("{text:?} is not one of {}", names.join(", "))
    })
}

fn choice_name<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// A rate as a fraction (`0.12`) or a percentage (`12%`).
fn parse_rate(text: &str) -> Result<Decimal, String> {
    crate::domain::parse_rate(text)
}

fn parse_date(text: &str) -> Result<NaiveDate, String> {
    // chrono accepts unpadded fields with %m/%d; insist on the one canonical spelling.
    let ok_shape = text.len() == 10
        && text.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) if ok_shape => Ok(d),
        _ => Err(format!("{text:?} is not a date in YYYY-MM-DD form")),
    }
}

fn check_terms(
    raw: &RawRecord,
    rules: &Rules,
    currency: Option<Currency>,
    principal: Option<Decimal>,
    report: &mut Report,
) -> Option<Plan> {
    let method = match raw.get(Field::Method) {
        None => {
            report.fail(
                Field::Method,
                "missing (or give an explicit schedule instead)",
            );
            None
        }
        Some(m) => parse_choice::<Method>(m)
            .map_err(|reason| report.fail(Field::Method, format!("unknown method: {reason}")))
            .ok(),
    };
    let installments = match raw.get(Field::Installments) {
        None => {
            report.fail(Field::Installments, "missing");
            None
        }
        Some(n) => match n.parse::<u32>() {
            Ok(n) if (1..=MAX_INSTALLMENTS as u32).contains(&n) => Some(n),
            _ => {
                report.fail(
                    Field::Installments,
                    format!("{n:?} is not a whole number from 1 to {MAX_INSTALLMENTS}"),
                );
                None
            }
        },
    };
    let mut rate = |field: Field| match raw.get(field) {
        None => Some(Decimal::ZERO),
        Some(text) => parse_rate(text)
            .map_err(|reason| report.fail(field, reason))
            .ok(),
    };
    let annual_rate = rate(Field::AnnualRate);
    let fee_rate = rate(Field::FeeRate);
    let first_due = match raw.get(Field::FirstDue) {
        None => {
            report.fail(Field::FirstDue, "missing");
            None
        }
        Some(text) => parse_date(text)
            .map_err(|reason| report.fail(Field::FirstDue, reason))
            .ok(),
    };
    let frequency = parse_or(raw, report, Field::Frequency, Frequency::Monthly);
    let rounding = parse_or(raw, report, Field::Rounding, rules.rounding);
    let remainder = parse_or(raw, report, Field::Remainder, rules.remainder);
    let business_day = parse_or(raw, report, Field::BusinessDay, rules.business_day);

    let terms = Terms {
        currency: currency?,
        principal: principal?,
        installments: installments?,
        method: method?,
        annual_rate: annual_rate?,
        fee_rate: fee_rate?,
        first_due: first_due?,
        frequency: frequency?,
        rounding: rounding?,
        remainder: remainder?,
        business_day: business_day?,
    };
    let generated = match schedule::generate(&terms, &rules.calendar) {
        Ok(s) => s,
        Err(e) => {
            report.fail(schedule_error_field(&e), e.to_string());
            return None;
        }
    };
    if !generated.sums_exactly() || generated.principal != terms.principal {
        report.fail(
            Field::Method,
            "the generated schedule does not add up (a bug in repayd: please report it)",
        );
        return None;
    }
    let minor = |d: Decimal| Money::from_decimal(d, terms.currency).map(|m| m.minor());
    let mut lines = Vec::with_capacity(generated.installments.len());
    for i in &generated.installments {
        let (Ok(p), Ok(int), Ok(fee)) = (minor(i.principal), minor(i.interest), minor(i.fee))
        else {
            report.fail(
                Field::Principal,
                "an installment amount does not fit in minor units",
            );
            return None;
        };
        lines.push(NewInstallment {
            seq: i64::from(i.seq),
            due_date: i.due_date.format("%Y-%m-%d").to_string(),
            principal_minor: p,
            interest_minor: int,
            fee_minor: fee,
        });
    }
    // The terms as applied, defaults resolved, so a later reader (or a re-import) sees
    // exactly what produced the schedule.
    let calendar = (terms.business_day != BusinessDayRule::None)
        .then(|| rules.calendar_name.clone())
        .flatten();
    let terms_json = serde_json::json!({
        "method": choice_name(&terms.method),
        "installments": terms.installments,
        "annual_rate": terms.annual_rate.normalize().to_string(),
        "fee_rate": terms.fee_rate.normalize().to_string(),
        "first_due": terms.first_due.format("%Y-%m-%d").to_string(),
        "frequency": choice_name(&terms.frequency),
        "rounding": choice_name(&terms.rounding),
        "remainder": choice_name(&terms.remainder),
        "business_day": choice_name(&terms.business_day),
        "calendar": calendar,
    });
    Some(Plan {
        method: Some(terms.method),
        terms_json: Some(terms_json.to_string()),
        lines,
    })
}

/// Parses an optional choice, `default` when absent; `None` (reported) when invalid.
fn parse_or<T: ValueEnum>(
    raw: &RawRecord,
    report: &mut Report,
    field: Field,
    default: T,
) -> Option<T> {
    match raw.get(field) {
        None => Some(default),
        Some(t) => parse_choice::<T>(t)
            .map_err(|reason| report.fail(field, reason))
            .ok(),
    }
}

/// The field a schedule generation error is about. Variants beyond the basic ones are
/// placed by the field their message names, so new variants land somewhere sensible.
fn schedule_error_field(e: &ScheduleError) -> Field {
    match e {
        ScheduleError::NonPositivePrincipal(_) | ScheduleError::PrincipalTooPrecise { .. } => {
            Field::Principal
        }
        ScheduleError::BadInstallmentCount(_) => Field::Installments,
        ScheduleError::BadRate { field, .. } if *field == "fee_rate" => Field::FeeRate,
        ScheduleError::BadRate { .. } => Field::AnnualRate,
        ScheduleError::DateOutOfRange => Field::FirstDue,
        _ => {
            let text = e.to_string();
            [Field::FeeRate, Field::AnnualRate, Field::Principal]
                .into_iter()
                .find(|f| text.contains(f.csv_column()))
                .unwrap_or(Field::Installments)
        }
    }
}

/// Where a problem with explicit schedule entry `k` (1-based) is reported: CSV has one
/// `schedule` cell, so the entry goes in the reason; JSON has a path to the value.
fn entry_error(report: &mut Report, k: usize, part: &str, reason: impl Into<String>) {
    match report.format {
        Format::Csv => report.fail(
            Field::Schedule,
            format!("entry {k} ({part}): {}", reason.into()),
        ),
        Format::Json => report.fail_at(format!("schedule[{}].{part}", k - 1), reason),
    }
}

/// Splits the CSV form `due_date:principal[:interest[:fee]]|...` into entries.
fn split_compact(text: &str, report: &mut Report) -> Option<Vec<RawInstallment>> {
    let mut entries = Vec::new();
    let mut ok = true;
    for (i, entry) in text.split('|').enumerate() {
        let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
        if !(2..=4).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            report.fail(
                Field::Schedule,
                format!(
                    "entry {}: {:?} is not due_date:principal[:interest[:fee]]",
                    i + 1,
                    entry.trim()
                ),
            );
            ok = false;
            continue;
        }
        entries.push(RawInstallment {
            seq: None,
            due_date: Some(parts[0].to_string()),
            principal: Some(parts[1].to_string()),
            interest: parts.get(2).map(|s| s.to_string()),
            fee: parts.get(3).map(|s| s.to_string()),
        });
    }
    ok.then_some(entries)
}

fn check_explicit(
    schedule: &RawSchedule,
    currency: Option<Currency>,
    principal: Option<Decimal>,
    report: &mut Report,
) -> Option<Plan> {
    let entries = match schedule {
        RawSchedule::Compact(text) => split_compact(text, report)?,
        RawSchedule::Entries(e) => e.clone(),
    };
    if entries.is_empty() || entries.len() > MAX_INSTALLMENTS {
        report.fail(
            Field::Schedule,
            format!(
                "needs 1 to {MAX_INSTALLMENTS} installments, has {}",
                entries.len()
            ),
        );
        return None;
    }
    let errors_before = report.errors.len();
    let mut lines = Vec::with_capacity(entries.len());
    let mut previous_due: Option<NaiveDate> = None;
    let mut principal_sum = Decimal::ZERO;
    for (i, e) in entries.iter().enumerate() {
        let k = i + 1;
        if let Some(seq) = &e.seq
            && seq.parse::<usize>() != Ok(k)
        {
            entry_error(
                report,
                k,
                "seq",
                format!("is {seq}, expected {k}: seqs run 1, 2, 3... in order, without gaps"),
            );
        }
        let due = match &e.due_date {
            None => {
                entry_error(report, k, "due_date", "missing");
                None
            }
            Some(t) => parse_date(t)
                .map_err(|reason| entry_error(report, k, "due_date", reason))
                .ok(),
        };
        if let (Some(d), Some(prev)) = (due, previous_due)
            && d <= prev
        {
            entry_error(
                report,
                k,
                "due_date",
                format!("{d} is not after the previous installment's {prev}"),
            );
        }
        if due.is_some() {
            previous_due = due;
        }
        let mut amount = |part: &str, text: &Option<String>, required: bool| -> Option<Decimal> {
            match text {
                None if required => {
                    entry_error(report, k, part, "missing");
                    None
                }
                None => Some(Decimal::ZERO),
                Some(t) => match parse_amount(t, currency) {
                    Ok(v) if v < Decimal::ZERO => {
                        entry_error(report, k, part, format!("must not be negative, got {t}"));
                        None
                    }
                    Ok(v) => Some(v),
                    Err(reason) => {
                        entry_error(report, k, part, reason);
                        None
                    }
                },
            }
        };
        let p = amount("principal", &e.principal, true);
        let int = amount("interest", &e.interest, false);
        let fee = amount("fee", &e.fee, false);
        if let (Some(p), Some(int), Some(fee)) = (p, int, fee) {
            if (p + int + fee).is_zero() {
                entry_error(report, k, "principal", "the installment is zero");
            }
            principal_sum += p;
            if let (Some(cur), Some(d)) = (currency, due) {
                let minor = |v: Decimal| Money::from_decimal(v, cur).map(|m| m.minor());
                if let (Ok(p), Ok(int), Ok(fee)) = (minor(p), minor(int), minor(fee)) {
                    lines.push(NewInstallment {
                        seq: k as i64,
                        due_date: d.format("%Y-%m-%d").to_string(),
                        principal_minor: p,
                        interest_minor: int,
                        fee_minor: fee,
                    });
                }
            }
        }
    }
    if report.errors.len() > errors_before {
        return None;
    }
    let (currency, principal) = (currency?, principal?);
    if principal_sum != principal {
        report.fail(
            Field::Schedule,
            format!(
                "the installments' principals add up to {}, not to the principal {}",
                Money::from_decimal(principal_sum, currency)
                    .map(|m| m.plain())
                    .unwrap_or_else(|_| principal_sum.to_string()),
                Money::from_decimal(principal, currency)
                    .map(|m| m.plain())
                    .unwrap_or_else(|_| principal.to_string()),
            ),
        );
        return None;
    }
    (lines.len() == entries.len()).then_some(Plan {
        method: None,
        terms_json: None,
        lines,
    })
}

fn finish(
    location: Location,
    external_id: &str,
    customer: &NewCustomer,
    account: &NewFundingAccount,
    currency: Currency,
    principal: Decimal,
    plan: Plan,
) -> ValidAgreement {
    let principal_minor = Money::from_decimal(principal, currency)
        .map(|m| m.minor())
        .unwrap_or_default();
    let total_interest_minor = plan.lines.iter().map(|l| l.interest_minor).sum();
    let total_fee_minor = plan.lines.iter().map(|l| l.fee_minor).sum();
    let method = plan.method.map(|m| choice_name(&m));
    let mut agreement = ValidAgreement {
        location,
        external_id: external_id.to_string(),
        customer_external_id: customer.external_id.clone(),
        account_ref: account.external_ref.clone(),
        currency: currency.code().to_string(),
        principal_minor,
        total_interest_minor,
        total_fee_minor,
        method,
        terms_json: plan.terms_json,
        content_hash: String::new(),
        installments: plan.lines,
    };
    agreement.content_hash = content_hash(&agreement);
    agreement
}

/// SHA-256 of the normalized agreement: ids, links, money in minor units, the terms as
/// applied and every schedule line. The same agreement gives the same hash from CSV or
/// JSON; customer details and mandates are not part of it (they are updated on their
/// own, without `--update`).
pub fn content_hash(a: &ValidAgreement) -> String {
    let mut h = Sha256::new();
    // Values never hold control characters (checked), so newline-separated is unambiguous.
    h.update(b"repayd-agreement-v1\n");
    for part in [
        a.external_id.as_str(),
        a.customer_external_id.as_str(),
        a.account_ref.as_str(),
        a.currency.as_str(),
        &a.principal_minor.to_string(),
        a.method.as_deref().unwrap_or("explicit"),
        a.terms_json.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    for l in &a.installments {
        h.update(
            format!(
                "{}|{}|{}|{}|{}\n",
                l.seq, l.due_date, l.principal_minor, l.interest_minor, l.fee_minor
            )
            .as_bytes(),
        );
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(format: Format) -> Rules {
        Rules {
            format,
            rounding: RoundingMode::HalfUp,
            remainder: RemainderPlacement::Last,
            business_day: BusinessDayRule::None,
            calendar: HolidayCalendar::default(),
            calendar_name: None,
        }
    }

    fn base() -> RawRecord {
        let mut r = RawRecord::new(Location::Line(2));
        for (f, v) in [
            (Field::CustomerExternalId, "C1"),
            (Field::CustomerName, "Ann Lee"),
            (Field::Email, "ann@example.com"),
            (Field::Locale, "en"),
            (Field::TimeZone, "Europe/London"),
            (Field::AccountRef, "GB29NWBK60161331926819"),
            (Field::MandateRef, "M-1"),
            (Field::MandateStatus, "active"),
            (Field::AgreementId, "A1"),
            (Field::Currency, "GBP"),
            (Field::Principal, "300.00"),
        ] {
            r.set(f, v);
        }
        r
    }

    fn fields(c: &Checked) -> Vec<String> {
        c.errors.iter().map(|e| e.field.clone()).collect()
    }

    #[test]
    fn locales_are_normalized_and_garbage_is_refused() {
        assert_eq!(normalize_locale("zh-cn").as_deref(), Some("zh-CN"));
        assert_eq!(
            normalize_locale("zh_hans_cn").as_deref(),
            Some("zh-Hans-CN")
        );
        assert_eq!(normalize_locale("EN").as_deref(), Some("en"));
        assert_eq!(normalize_locale("es-419").as_deref(), Some("es-419"));
        assert_eq!(normalize_locale("english"), None);
        assert_eq!(normalize_locale("en-"), None);
        assert_eq!(normalize_locale("e1"), None);
    }

    #[test]
    fn explicit_schedule_in_csv_form_is_checked_and_converted() {
        let mut r = base();
        r.schedule = Some(RawSchedule::Compact(
            "2026-12-15:100.00:0:5.00|2027-01-15:100.00|2027-02-15:100.00:1.50".into(),
        ));
        let c = check(&r, &rules(Format::Csv));
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let a = c.agreement.expect("valid");
        assert_eq!(a.principal_minor, 30_000);
        assert_eq!(a.total_fee_minor, 500);
        assert_eq!(a.total_interest_minor, 150);
        assert_eq!(a.method, None);
        assert_eq!(a.installments[2].due_date, "2027-02-15");
        assert_eq!(a.installments[2].interest_minor, 150);
        assert_eq!(a.content_hash.len(), 64);
    }

    #[test]
    fn explicit_schedule_faults_are_each_named() {
        let mut r = base();
        r.schedule = Some(RawSchedule::Entries(vec![
            RawInstallment {
                seq: Some("1".into()),
                due_date: Some("2027-01-15".into()),
                principal: Some("100.001".into()),
                ..Default::default()
            },
            RawInstallment {
                seq: Some("3".into()),
                due_date: Some("2027-01-10".into()),
                principal: Some("-1".into()),
                ..Default::default()
            },
        ]));
        let c = check(&r, &rules(Format::Json));
        assert_eq!(
            fields(&c),
            [
                "schedule[0].principal",
                "schedule[1].seq",
                "schedule[1].due_date",
                "schedule[1].principal"
            ]
        );
        assert!(c.agreement.is_none());
        // The parts that are fine on their own are kept for cross-record checks.
        assert_eq!(c.agreement_id.as_deref(), Some("A1"));
        assert!(c.customer.is_some());
    }

    #[test]
    fn explicit_principals_must_add_up() {
        let mut r = base();
        r.schedule = Some(RawSchedule::Compact("2026-12-15:100|2027-01-15:100".into()));
        let c = check(&r, &rules(Format::Csv));
        assert_eq!(fields(&c), ["schedule"]);
        assert!(c.errors[0].reason.contains("200.00"), "{:?}", c.errors);
    }

    #[test]
    fn terms_and_schedule_together_or_neither_are_refused() {
        let mut r = base();
        r.set(Field::Method, "annuity");
        r.schedule = Some(RawSchedule::Compact("2026-12-15:300".into()));
        assert_eq!(fields(&check(&r, &rules(Format::Csv))), ["schedule"]);
        let c = check(&base(), &rules(Format::Json));
        assert_eq!(fields(&c), ["terms.method"]);
        assert!(c.errors[0].reason.contains("missing terms"));
    }

    #[test]
    fn customer_and_account_faults_are_named() {
        let mut r = base();
        r.set(Field::Email, "ann(at)example.com");
        r.set(Field::TimeZone, "Mars/Olympus");
        r.set(Field::MandateStatus, "maybe");
        r.set(Field::AccountRef, "GB29 NWBK");
        r.set(Field::Currency, "XYZ");
        r.set(Field::Method, "balloon");
        r.set(Field::Installments, "3");
        r.set(Field::FirstDue, "2026-02-30");
        let c = check(&r, &rules(Format::Csv));
        assert_eq!(
            fields(&c),
            [
                "email",
                "time_zone",
                "account_ref",
                "mandate_status",
                "currency",
                "method",
                "first_due"
            ]
        );
        assert!(c.customer.is_none() && c.account.is_none());
    }

    #[test]
    fn dates_must_be_canonical() {
        assert!(parse_date("2026-12-01").is_ok());
        assert!(parse_date("2026-2-1").is_err());
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("01/12/2026").is_err());
    }

    #[test]
    fn rates_take_fractions_or_percentages() {
        assert_eq!(parse_rate("0.12").unwrap(), Decimal::new(12, 2));
        assert_eq!(parse_rate("12%").unwrap(), Decimal::new(12, 2));
        assert!(parse_rate("twelve").is_err());
    }
}
