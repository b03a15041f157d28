//! `repayd quote`: renders a previewed schedule as JSON (for programs) or as a table a
//! customer-service agent can read out on a phone call. Nothing is stored.

use crate::domain::BusinessDayRule;
use crate::domain::schedule::{Frequency, Method, Schedule, Terms};
use rust_decimal::Decimal;
use serde::Serialize;

/// The JSON shape of a quote. Amounts are decimal strings with exactly the currency's
/// minor digits ("12000.00", JPY "5000"), so no consumer ever parses money as a float.
#[derive(Serialize)]
struct QuoteJson<'a> {
    currency: &'a str,
    principal: String,
    total_interest: String,
    total_fee: String,
    total: String,
    installments: Vec<InstallmentJson>,
}

#[derive(Serialize)]
struct InstallmentJson {
    seq: u32,
    due_date: String,
    principal: String,
    interest: String,
    fee: String,
    total: String,
    balance_after: String,
}

/// Plain decimal string with exactly `digits` places (schedule amounts are already exact).
fn amount(value: Decimal, digits: u32) -> String {
    format!("{:.*}", digits as usize, value)
}

/// The schedule as pretty-printed JSON, keys in the documented order.
pub fn render_json(schedule: &Schedule) -> String {
    let digits = schedule.currency.minor_digits();
    let quote = QuoteJson {
        currency: schedule.currency.code(),
        principal: amount(schedule.principal, digits),
        total_interest: amount(schedule.total_interest, digits),
        total_fee: amount(schedule.total_fee, digits),
        total: amount(schedule.total, digits),
        installments: schedule
            .installments
            .iter()
            .map(|i| InstallmentJson {
                seq: i.seq,
                due_date: i.due_date.format("%Y-%m-%d").to_string(),
                principal: amount(i.principal, digits),
                interest: amount(i.interest, digits),
                fee: amount(i.fee, digits),
                total: amount(i.total, digits),
                balance_after: amount(i.balance_after, digits),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&quote).expect("strings and integers always serialize")
}

/// A rate as a percentage without trailing zeros: 0.12 -> "12%", 0.006 -> "0.6%".
fn percent(rate: Decimal) -> String {
    format!("{}%", (rate * Decimal::ONE_HUNDRED).normalize())
}

fn period_name(frequency: Frequency) -> &'static str {
    match frequency {
        Frequency::Monthly => "month",
        Frequency::Biweekly => "two weeks",
        Frequency::Weekly => "week",
    }
}

fn business_day_name(rule: BusinessDayRule) -> &'static str {
    match rule {
        BusinessDayRule::None => "not moved for holidays",
        BusinessDayRule::Following => "moved to the next business day",
        BusinessDayRule::Preceding => "moved to the previous business day",
        BusinessDayRule::ModifiedFollowing => {
            "moved to the next business day, or the previous one at month end"
        }
    }
}

/// What the customer is charged for the money, in words.
fn pricing(terms: &Terms) -> String {
    let per = period_name(terms.frequency);
    match terms.method {
        Method::InterestFree => "no interest, no fee".to_string(),
        Method::FlatFee => format!(
            "fee {} of the principal every {per}",
            percent(terms.fee_rate)
        ),
        Method::Annuity | Method::EqualPrincipal => {
            let periodic = terms.annual_rate / Decimal::from(terms.frequency.periods_per_year());
            // 12 % a year is exactly 1 % a month; 12 % over 26 periods is not, so say "about".
            let rounded = periodic.round_dp(6);
            let approx = if rounded == periodic { "" } else { "about " };
            format!(
                "interest {} a year ({approx}{} per {per})",
                percent(terms.annual_rate),
                percent(rounded)
            )
        }
    }
}

/// What the customer pays each time, in one sentence an agent can read out.
fn payment_summary(schedule: &Schedule, digits: u32, code: &str) -> String {
    let totals: Vec<Decimal> = schedule.installments.iter().map(|i| i.total).collect();
    let (Some(first), Some(last)) = (totals.first(), totals.last()) else {
        return String::new();
    };
    let show = |d: Decimal| format!("{} {code}", amount(d, digits));
    // The middle installment is the usual amount; at most one other (the rounding
    // difference) still reads as "each installment".
    let usual = totals[totals.len() / 2];
    let odd: Vec<(usize, Decimal)> = (1..)
        .zip(totals.iter().copied())
        .filter(|(_, t)| *t != usual)
        .collect();
    match odd.as_slice() {
        [] => format!("Each installment: {}", show(usual)),
        [(seq, t)] => format!(
            "Each installment: {}, except installment {seq}: {}",
            show(usual),
            show(*t)
        ),
        _ => format!("First installment: {}, last: {}", show(*first), show(*last)),
    }
}

/// The schedule as an aligned text table with a header describing the terms and a totals
/// line, for reading out on the phone.
pub fn render_table(schedule: &Schedule, terms: &Terms) -> String {
    let digits = schedule.currency.minor_digits();
    let code = schedule.currency.code();
    let mut out = String::new();
    out.push_str(&format!(
        "{} loan of {} {code}: {}, {} installments {}\n",
        terms.method.as_str(),
        amount(schedule.principal, digits),
        pricing(terms),
        schedule.installments.len(),
        terms.frequency.as_str(),
    ));
    out.push_str(&format!(
        "Due dates {}; rounding {}, rounding difference on the {} installment\n",
        business_day_name(terms.business_day),
        terms.rounding.as_str(),
        // An annuity with interest always settles on its last installment.
        if terms.method == Method::Annuity && !terms.annual_rate.is_zero() {
            "last"
        } else {
            terms.remainder.as_str()
        },
    ));
    out.push_str(&payment_summary(schedule, digits, code));
    out.push_str(&format!(". Amounts in {code}.\n\n"));

    let header = [
        "No.",
        "Due date",
        "Principal",
        "Interest",
        "Fee",
        "Total",
        "Balance after",
    ];
    let mut rows: Vec<[String; 7]> = schedule
        .installments
        .iter()
        .map(|i| {
            [
                i.seq.to_string(),
                // The weekday helps on the phone: "Monday the 2nd".
                i.due_date.format("%Y-%m-%d %a").to_string(),
                amount(i.principal, digits),
                amount(i.interest, digits),
                amount(i.fee, digits),
                amount(i.total, digits),
                amount(i.balance_after, digits),
            ]
        })
        .collect();
    let totals = [
        String::new(),
        "Total".to_string(),
        amount(schedule.principal, digits),
        amount(schedule.total_interest, digits),
        amount(schedule.total_fee, digits),
        amount(schedule.total, digits),
        String::new(),
    ];
    rows.push(totals);

    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Number and amounts right-aligned so digits line up; the date left-aligned.
    let line = |cells: [&str; 7]| -> String {
        let mut s = String::new();
        for (k, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if k > 0 {
                s.push_str("  ");
            }
            if k == 1 {
                s.push_str(&format!("{cell:<w$}"));
            } else {
                s.push_str(&format!("{cell:>w$}"));
            }
        }
        s.trim_end().to_string()
    };
    let rule = widths.map(|w| "-".repeat(w));
    let body_rows = rows.len() - 1;
    out.push_str(&line(header));
    out.push('\n');
    out.push_str(&line(rule.each_ref().map(String::as_str)));
    out.push('\n');
    for row in &rows[..body_rows] {
        out.push_str(&line(row.each_ref().map(String::as_str)));
        out.push('\n');
    }
    out.push_str(&line(rule.each_ref().map(String::as_str)));
    out.push('\n');
    out.push_str(&line(rows[body_rows].each_ref().map(String::as_str)));
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::schedule::{RemainderPlacement, RoundingMode, generate};
    use crate::domain::{Currency, HolidayCalendar};
    use chrono::NaiveDate;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("valid test decimal")
    }

    fn terms(code: &str, principal: &str, n: u32, method: Method) -> Terms {
        Terms {
            currency: Currency::parse(code).expect("known currency"),
            principal: dec(principal),
            installments: n,
            method,
            annual_rate: Decimal::ZERO,
            fee_rate: Decimal::ZERO,
            first_due: NaiveDate::from_ymd_opt(2026, 1, 31).expect("valid date"),
            frequency: Frequency::Monthly,
            rounding: RoundingMode::HalfUp,
            remainder: RemainderPlacement::Last,
            business_day: BusinessDayRule::None,
        }
    }

    fn annuity_12000() -> (Terms, Schedule) {
        let mut t = terms("CNY", "12000", 12, Method::Annuity);
        t.annual_rate = dec("0.12");
        let s = generate(&t, &HolidayCalendar::default()).expect("valid terms");
        (t, s)
    }

    #[test]
    fn json_has_the_documented_shape_and_values() {
        let (_, s) = annuity_12000();
        let text = render_json(&s);
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["currency"], "CNY");
        assert_eq!(v["principal"], "12000.00");
        assert_eq!(v["total_interest"], "794.23");
        assert_eq!(v["total_fee"], "0.00");
        assert_eq!(v["total"], "12794.23");
        let rows = v["installments"].as_array().expect("an array");
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[0]["seq"], 1);
        assert_eq!(rows[0]["due_date"], "2026-01-31");
        assert_eq!(rows[0]["principal"], "946.19");
        assert_eq!(rows[0]["interest"], "120.00");
        assert_eq!(rows[0]["fee"], "0.00");
        assert_eq!(rows[0]["total"], "1066.19");
        assert_eq!(rows[0]["balance_after"], "11053.81");
        assert_eq!(rows[1]["due_date"], "2026-02-28");
        assert_eq!(rows[11]["seq"], 12);
        assert_eq!(rows[11]["total"], "1066.14");
        assert_eq!(rows[11]["balance_after"], "0.00");
        // Keys in the documented order, and each row has exactly the documented keys.
        let order = [
            "\"currency\"",
            "\"principal\"",
            "\"total_interest\"",
            "\"total_fee\"",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|k| text.find(k).expect("key present"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let keys: Vec<&str> = rows[0]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "seq",
            "due_date",
            "principal",
            "interest",
            "fee",
            "total",
            "balance_after",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected); // serde_json's map is sorted
    }

    #[test]
    fn json_amounts_use_the_currency_digits() {
        let t = terms("JPY", "5000", 2, Method::InterestFree);
        let s = generate(&t, &HolidayCalendar::default()).expect("valid terms");
        let v: serde_json::Value = serde_json::from_str(&render_json(&s)).expect("valid JSON");
        assert_eq!(v["principal"], "5000");
        assert_eq!(v["installments"][0]["principal"], "2500");
        assert_eq!(v["installments"][0]["interest"], "0");
        let mut t = terms("KWD", "1000", 3, Method::FlatFee);
        t.fee_rate = dec("0.001");
        let s = generate(&t, &HolidayCalendar::default()).expect("valid terms");
        let v: serde_json::Value = serde_json::from_str(&render_json(&s)).expect("valid JSON");
        assert_eq!(v["installments"][2]["principal"], "333.334");
        assert_eq!(v["installments"][0]["fee"], "1.000");
        assert_eq!(v["total_fee"], "3.000");
    }

    #[test]
    fn table_is_aligned_with_header_and_totals() {
        let (t, s) = annuity_12000();
        let table = render_table(&s, &t);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("annuity"), "{table}");
        assert!(lines[0].contains("12000.00 CNY"), "{table}");
        assert!(lines[0].contains("12% a year (1% per month)"), "{table}");
        assert!(lines[0].contains("12 installments monthly"), "{table}");
        assert!(lines[1].contains("half-up"), "{table}");
        assert!(
            lines[2].contains("Each installment: 1066.19 CNY, except installment 12: 1066.14 CNY"),
            "{table}"
        );
        let header = lines
            .iter()
            .position(|l| l.starts_with("No."))
            .expect("header row");
        let rows = &lines[header + 2..header + 14];
        assert_eq!(rows.len(), 12);
        // Every installment row has the same width, so the right-aligned amounts line up.
        let width = rows[0].len();
        assert!(rows.iter().all(|r| r.len() == width), "{table}");
        assert!(rows[0].starts_with("  1  2026-01-31 Sat"), "{table}");
        assert!(rows[0].ends_with("11053.81"), "{table}");
        assert!(rows[11].starts_with(" 12  2026-12-31 Thu"), "{table}");
        assert!(rows[11].ends_with("0.00"), "{table}");
        // The "Total" column ends at the same place in every row and in the totals line.
        let total_end = |l: &str, value: &str| l.find(value).map(|p| p + value.len());
        let end = total_end(rows[0], "1066.19").expect("total in row 1");
        assert_eq!(total_end(rows[11], "1066.14"), Some(end));
        let totals = lines.last().expect("totals line");
        assert!(totals.contains("Total"), "{table}");
        assert!(
            totals.contains("12000.00") && totals.contains("794.23"),
            "{table}"
        );
        assert_eq!(total_end(totals, "12794.23"), Some(end), "{table}");
        assert_eq!(lines[lines.len() - 2], lines[header + 1]); // rules match
    }

    #[test]
    fn table_describes_fees_and_other_frequencies() {
        let mut t = terms("CNY", "12000", 12, Method::FlatFee);
        t.fee_rate = dec("0.006");
        let s = generate(&t, &HolidayCalendar::default()).expect("valid");
        let table = render_table(&s, &t);
        assert!(
            table.contains("fee 0.6% of the principal every month"),
            "{table}"
        );
        assert!(table.contains("Each installment: 1072.00 CNY."), "{table}");
        assert!(table.lines().last().expect("totals").contains("864.00"));

        let mut t = terms("CNY", "12000", 26, Method::EqualPrincipal);
        t.annual_rate = dec("0.12");
        t.frequency = Frequency::Biweekly;
        t.business_day = BusinessDayRule::ModifiedFollowing;
        let s = generate(&t, &HolidayCalendar::default()).expect("valid");
        let table = render_table(&s, &t);
        assert!(table.contains("about 0.4615% per two weeks"), "{table}");
        assert!(table.contains("First installment: "), "{table}");
        assert!(table.contains("previous one at month end"), "{table}");

        let t = terms("JPY", "5000", 2, Method::InterestFree);
        let s = generate(&t, &HolidayCalendar::default()).expect("valid");
        let table = render_table(&s, &t);
        assert!(table.contains("no interest, no fee"), "{table}");
        assert!(table.contains("Each installment: 2500 JPY"), "{table}");
    }
}
