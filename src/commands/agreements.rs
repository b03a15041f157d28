//! `repayd agreements list|show`: what is held, for operators. Output is a table for
//! people or JSON for programs; amounts are decimal strings in the agreement's currency.
//! Customer details are shown (operators need them) but never logged.

use crate::cli::OutputFormat;
use crate::clock::from_epoch_ms;
use crate::domain::money::{Currency, format_minor};
use crate::store::Store;
use crate::store::agreements::{AgreementDetail, AgreementFilter, AgreementListRow};
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct AgreementsArgs {
    #[command(subcommand)]
    pub command: AgreementsCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgreementsCommand {
    /// List agreements with their progress and next due date, oldest first.
    List(ListArgs),
    /// Show one agreement: customer, funding account and mandate, schedule with payments.
    Show(ShowArgs),
    /// A payment holiday or a new term (a preview unless --apply; see
    /// `commands::reschedule`, dispatched by `commands::mod`).
    Reschedule(crate::commands::reschedule::RescheduleArgs),
    /// pause | resume | cancel (see `commands::lifecycle`; dispatched by `commands::mod`).
    #[command(flatten)]
    Lifecycle(crate::commands::lifecycle::LifecycleCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    Active,
    Paused,
    Cancelled,
    Completed,
}

impl StatusFilter {
    fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Active => "active",
            StatusFilter::Paused => "paused",
            StatusFilter::Cancelled => "cancelled",
            StatusFilter::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only agreements in this status.
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
    /// Only this customer's agreements (the customer's external id).
    #[arg(long, value_name = "EXTERNAL_ID")]
    pub customer: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
    /// At most this many agreements.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// The agreement's external id (as imported) or its numeric id.
    #[arg(value_name = "ID_OR_EXTERNAL_ID")]
    pub agreement: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

pub async fn run(store: &Store, args: &AgreementsArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        AgreementsCommand::List(list) => {
            let filter = AgreementFilter {
                status: list.status.map(|s| s.as_str().to_string()),
                customer_external_id: list.customer.clone(),
                limit: i64::from(list.limit),
            };
            let rows = store.list_agreements(&filter).await?;
            match list.format {
                OutputFormat::Json => println!("{}", render_list_json(&rows)),
                OutputFormat::Table => print!("{}", render_list_table(&rows)),
            }
            Ok(ExitCode::SUCCESS)
        }
        AgreementsCommand::Show(show) => {
            let Some(detail) = store.agreement_detail(&show.agreement).await? else {
                eprintln!(
                    "repayd agreements show: no agreement with external id or id {:?}",
                    show.agreement
                );
                return Ok(ExitCode::FAILURE);
            };
            let standing = standing(store, detail.agreement.id).await?;
            match show.format {
                OutputFormat::Json => println!("{}", render_detail_json(&detail, &standing)),
                OutputFormat::Table => print!("{}", render_detail_table(&detail, &standing)),
            }
            Ok(ExitCode::SUCCESS)
        }
        AgreementsCommand::Lifecycle(_) | AgreementsCommand::Reschedule(_) => {
            anyhow::bail!("agreement life-cycle commands are run by commands::mod")
        }
    }
}

/// A minor-unit amount as a decimal string in `currency` (raw minor units if the stored
/// code is somehow unknown, rather than failing the whole listing).
pub(crate) fn amount(minor: i64, currency: &str) -> String {
    match Currency::parse(currency) {
        Ok(c) => format_minor(minor, c),
        Err(_) => format!("{minor} (minor units)"),
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    from_epoch_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Left-aligned text columns, numbers right-aligned; the last column is not padded.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i == last && !right[i] {
                text.push_str(cell);
            } else if right[i] {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
            if i != last {
                text.push_str("  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[derive(Serialize)]
struct ListItemJson<'a> {
    id: i64,
    external_id: &'a str,
    customer_external_id: &'a str,
    customer_name: &'a str,
    status: &'a str,
    method: Option<&'a str>,
    currency: &'a str,
    principal: String,
    total: String,
    paid: String,
    installments: i64,
    installments_paid: i64,
    next_due_date: Option<&'a str>,
    mandate_status: &'a str,
}

pub fn render_list_json(rows: &[AgreementListRow]) -> String {
    let items: Vec<ListItemJson> = rows
        .iter()
        .map(|r| ListItemJson {
            id: r.id,
            external_id: &r.external_id,
            customer_external_id: &r.customer_external_id,
            customer_name: &r.customer_name,
            status: &r.status,
            method: r.method.as_deref(),
            currency: &r.currency,
            principal: amount(r.principal_minor, &r.currency),
            total: amount(r.total_minor, &r.currency),
            paid: amount(r.paid_minor, &r.currency),
            installments: r.installment_count,
            installments_paid: r.paid_count,
            next_due_date: r.next_due_date.as_deref(),
            mandate_status: &r.mandate_status,
        })
        .collect();
    serde_json::to_string_pretty(&items).expect("plain data always serializes")
}

pub fn render_list_table(rows: &[AgreementListRow]) -> String {
    if rows.is_empty() {
        return "no agreements\n".to_string();
    }
    let header = [
        "ID",
        "AGREEMENT",
        "STATUS",
        "CUR",
        "TOTAL",
        "PAID",
        "PAID/N",
        "NEXT DUE",
        "MANDATE",
        "METHOD",
        "CUSTOMER",
    ];
    let right = [
        true, false, false, false, true, true, true, false, false, false, false,
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.external_id.clone(),
                r.status.clone(),
                r.currency.clone(),
                amount(r.total_minor, &r.currency),
                amount(r.paid_minor, &r.currency),
                format!("{}/{}", r.paid_count, r.installment_count),
                r.next_due_date.clone().unwrap_or_else(|| "-".into()),
                r.mandate_status.clone(),
                r.method.clone().unwrap_or_else(|| "explicit".into()),
                // Last: names may be wide (CJK) and would skew later columns.
                format!("{} {}", r.customer_external_id, r.customer_name),
            ]
        })
        .collect();
    table(&header, &body, &right)
}

/// Where an agreement stands today: its delinquency as last assessed and its charges.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub delinquency: Option<crate::store::delinquency::DelinquencyRow>,
    pub charges: Vec<crate::store::delinquency::ChargeRow>,
    /// The accounts a debit tries, in order (the agreement's own, and the customer's
    /// other accounts with a priority).
    pub funding_sources: Vec<crate::store::debits::FundingSource>,
    /// Debit attempts placed for a stated reason (payday-aware retries), oldest first.
    pub placed_retries: Vec<crate::store::debits::AttemptRow>,
}

impl Standing {
    fn open_charges_minor(&self) -> i64 {
        self.charges.iter().map(|c| c.open_minor()).sum()
    }
}

/// Reads an agreement's standing (delinquency and charges).
pub async fn standing(store: &Store, agreement_id: i64) -> anyhow::Result<Standing> {
    Ok(Standing {
        delinquency: store.delinquency(agreement_id).await?,
        charges: store.charges_for_agreement(agreement_id).await?,
        funding_sources: store.funding_sources(agreement_id).await?,
        placed_retries: store
            .attempts_for_agreement(agreement_id)
            .await?
            .into_iter()
            .filter(|a| a.retry_reason.is_some())
            .collect(),
    })
}

#[derive(Serialize)]
struct DetailJson<'a> {
    agreement: AgreementJson<'a>,
    customer: CustomerJson<'a>,
    funding_account: AccountJson<'a>,
    /// The accounts a debit tries, first to last; revoked or pending mandates are skipped.
    funding_sources: Vec<FundingSourceJson<'a>>,
    standing: StandingJson<'a>,
    charges: Vec<ChargeJson<'a>>,
    installments: Vec<InstallmentJson<'a>>,
    /// Retries placed for a stated reason (payday-aware), with the reason in words.
    placed_retries: Vec<PlacedRetryJson<'a>>,
}

#[derive(Serialize)]
struct PlacedRetryJson<'a> {
    attempt_id: i64,
    seq: Option<i64>,
    attempt_no: i64,
    scheduled_at: String,
    state: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
struct FundingSourceJson<'a> {
    order: usize,
    priority: Option<i64>,
    id: i64,
    external_ref: &'a str,
    mandate_ref: &'a str,
    mandate_status: &'a str,
}

#[derive(Serialize)]
struct StandingJson<'a> {
    days_past_due: i64,
    bucket: Option<&'a str>,
    credit_flag: &'a str,
    amount_overdue: String,
    open_charges: String,
    /// Unpaid installments and open charges: everything still owed.
    total_owed: String,
}

#[derive(Serialize)]
struct ChargeJson<'a> {
    id: i64,
    installment_id: i64,
    seq: Option<i64>,
    kind: &'a str,
    days_past_due: i64,
    amount: String,
    paid: String,
    waived: String,
    status: &'a str,
}

#[derive(Serialize)]
struct AgreementJson<'a> {
    id: i64,
    external_id: &'a str,
    status: &'a str,
    currency: &'a str,
    principal: String,
    total_interest: String,
    total_fee: String,
    total: String,
    paid: String,
    outstanding: String,
    method: Option<&'a str>,
    terms: Option<serde_json::Value>,
    content_hash: &'a str,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct CustomerJson<'a> {
    id: i64,
    external_id: &'a str,
    name: &'a str,
    email: &'a str,
    locale: &'a str,
    time_zone: &'a str,
}

#[derive(Serialize)]
struct AccountJson<'a> {
    id: i64,
    external_ref: &'a str,
    mandate_ref: &'a str,
    mandate_status: &'a str,
}

#[derive(Serialize)]
struct InstallmentJson<'a> {
    id: i64,
    seq: i64,
    due_date: &'a str,
    principal: String,
    interest: String,
    fee: String,
    total: String,
    paid: String,
    status: &'a str,
    paid_at: Option<String>,
}

pub fn render_detail_json(d: &AgreementDetail, standing: &Standing) -> String {
    let a = &d.agreement;
    let cur = a.currency.as_str();
    let paid: i64 = d.installments.iter().map(|i| i.paid_minor).sum();
    let seq_of = |installment_id: i64| {
        d.installments
            .iter()
            .find(|i| i.id == installment_id)
            .map(|i| i.seq)
    };
    let json = DetailJson {
        standing: StandingJson {
            days_past_due: standing.delinquency.as_ref().map_or(0, |x| x.dpd),
            bucket: standing
                .delinquency
                .as_ref()
                .and_then(|x| x.bucket.as_deref()),
            credit_flag: standing
                .delinquency
                .as_ref()
                .map_or("none", |x| x.credit_flag.as_str()),
            amount_overdue: amount(
                standing
                    .delinquency
                    .as_ref()
                    .map_or(0, |x| x.amount_overdue_minor),
                cur,
            ),
            open_charges: amount(standing.open_charges_minor(), cur),
            total_owed: amount(a.total_minor - paid + standing.open_charges_minor(), cur),
        },
        placed_retries: standing
            .placed_retries
            .iter()
            .map(|r| PlacedRetryJson {
                attempt_id: r.id,
                seq: seq_of(r.installment_id),
                attempt_no: r.attempt_no,
                scheduled_at: rfc3339(r.scheduled_at_ms),
                state: &r.state,
                reason: r.retry_reason.as_deref().unwrap_or(""),
            })
            .collect(),
        charges: standing
            .charges
            .iter()
            .map(|c| ChargeJson {
                id: c.id,
                installment_id: c.installment_id,
                seq: seq_of(c.installment_id),
                kind: &c.kind,
                days_past_due: c.accrual_key,
                amount: amount(c.amount_minor, cur),
                paid: amount(c.paid_minor, cur),
                waived: amount(c.waived_minor, cur),
                status: &c.status,
            })
            .collect(),
        agreement: AgreementJson {
            id: a.id,
            external_id: &a.external_id,
            status: &a.status,
            currency: cur,
            principal: amount(a.principal_minor, cur),
            total_interest: amount(a.total_interest_minor, cur),
            total_fee: amount(a.total_fee_minor, cur),
            total: amount(a.total_minor, cur),
            paid: amount(paid, cur),
            outstanding: amount(a.total_minor - paid, cur),
            method: a.method.as_deref(),
            terms: a
                .terms_json
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            content_hash: &a.content_hash,
            created_at: rfc3339(a.created_at_ms),
            updated_at: rfc3339(a.updated_at_ms),
        },
        customer: CustomerJson {
            id: d.customer.id,
            external_id: &d.customer.external_id,
            name: &d.customer.name,
            email: &d.customer.email,
            locale: &d.customer.locale,
            time_zone: &d.customer.time_zone,
        },
        funding_account: AccountJson {
            id: d.funding_account.id,
            external_ref: &d.funding_account.external_ref,
            mandate_ref: &d.funding_account.mandate_ref,
            mandate_status: &d.funding_account.mandate_status,
        },
        funding_sources: standing
            .funding_sources
            .iter()
            .enumerate()
            .map(|(i, f)| FundingSourceJson {
                order: i + 1,
                priority: f.priority,
                id: f.funding_account_id,
                external_ref: &f.account_ref,
                mandate_ref: &f.mandate_ref,
                mandate_status: &f.mandate_status,
            })
            .collect(),
        installments: d
            .installments
            .iter()
            .map(|i| InstallmentJson {
                id: i.id,
                seq: i.seq,
                due_date: &i.due_date,
                principal: amount(i.principal_minor, cur),
                interest: amount(i.interest_minor, cur),
                fee: amount(i.fee_minor, cur),
                total: amount(i.total_minor, cur),
                paid: amount(i.paid_minor, cur),
                status: &i.status,
                paid_at: i.paid_at_ms.map(rfc3339),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&json).expect("plain data always serializes")
}

/// The terms as one readable line, from the stored terms JSON.
fn describe_terms(terms_json: Option<&str>) -> String {
    let Some(terms) = terms_json.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
    else {
        return "explicit schedule (as the upstream system computed it)".into();
    };
    let s = |k: &str| {
        terms
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_string()
    };
    let n = terms
        .get("installments")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let mut text = format!(
        "{}, {n} {} installments from {}, annual rate {}, fee rate {}, rounding {}, \
         remainder on the {}, business days: {}",
        s("method"),
        s("frequency"),
        s("first_due"),
        s("annual_rate"),
        s("fee_rate"),
        s("rounding"),
        s("remainder"),
        s("business_day"),
    );
    if let Some(cal) = terms.get("calendar").and_then(|v| v.as_str()) {
        text.push_str(&format!(" ({cal})"));
    }
    // Left by `agreements reschedule`: where the remaining schedule now sits.
    if let Some(anchor) = terms.get("anchor") {
        let n = |k: &str| anchor.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        text.push_str(&format!(
            "; rescheduled: installment {} on is due in period {} of that schedule",
            n("seq"),
            n("period")
        ));
    }
    text
}

pub fn render_detail_table(d: &AgreementDetail, standing: &Standing) -> String {
    let a = &d.agreement;
    let c = &d.customer;
    let f = &d.funding_account;
    let cur = a.currency.as_str();
    let paid: i64 = d.installments.iter().map(|i| i.paid_minor).sum();
    let mut out = String::new();
    out.push_str(&format!(
        "agreement  {} (id {}), {}\n",
        a.external_id, a.id, a.status
    ));
    out.push_str(&format!(
        "customer   {} {} <{}>, locale {}, time zone {}\n",
        c.external_id, c.name, c.email, c.locale, c.time_zone
    ));
    out.push_str(&format!(
        "account    {}, mandate {} ({})\n",
        f.external_ref, f.mandate_ref, f.mandate_status
    ));
    // Several funding sources: the order a debit tries them in.
    if standing.funding_sources.len() > 1 {
        let order: Vec<String> = standing
            .funding_sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}. {} ({}{})",
                    i + 1,
                    s.account_ref,
                    s.mandate_status,
                    if s.mandate_status == "active" {
                        ""
                    } else {
                        ", skipped"
                    }
                )
            })
            .collect();
        out.push_str(&format!("funding    {}\n", order.join(", ")));
    }
    out.push_str(&format!(
        "amounts    principal {} + interest {} + fees {} = {} {cur}; paid {}, outstanding {}\n",
        amount(a.principal_minor, cur),
        amount(a.total_interest_minor, cur),
        amount(a.total_fee_minor, cur),
        amount(a.total_minor, cur),
        amount(paid, cur),
        amount(a.total_minor - paid, cur),
    ));
    let open_charges = standing.open_charges_minor();
    out.push_str(&format!(
        "owed       {} {cur} ({} of installments + {} of open charges)\n",
        amount(a.total_minor - paid + open_charges, cur),
        amount(a.total_minor - paid, cur),
        amount(open_charges, cur),
    ));
    match &standing.delinquency {
        Some(x) if x.dpd > 0 => out.push_str(&format!(
            "overdue    {} days past due since {}, bucket {}, credit flag {}; {} {cur} overdue (charges included)\n",
            x.dpd,
            x.oldest_due_date.as_deref().unwrap_or("-"),
            x.bucket.as_deref().unwrap_or("-"),
            x.credit_flag,
            amount(x.amount_overdue_minor, cur),
        )),
        _ => out.push_str("overdue    no\n"),
    }
    out.push_str(&format!(
        "terms      {}\n",
        describe_terms(a.terms_json.as_deref())
    ));
    out.push_str(&format!(
        "imported   {}, updated {}\n\n",
        rfc3339(a.created_at_ms),
        rfc3339(a.updated_at_ms)
    ));
    let header = [
        "SEQ",
        "DUE DATE",
        "PRINCIPAL",
        "INTEREST",
        "FEE",
        "TOTAL",
        "PAID",
        "STATUS",
    ];
    let right = [true, false, true, true, true, true, true, false];
    let body: Vec<Vec<String>> = d
        .installments
        .iter()
        .map(|i| {
            vec![
                i.seq.to_string(),
                i.due_date.clone(),
                amount(i.principal_minor, cur),
                amount(i.interest_minor, cur),
                amount(i.fee_minor, cur),
                amount(i.total_minor, cur),
                amount(i.paid_minor, cur),
                i.status.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&header, &body, &right));
    if !standing.charges.is_empty() {
        out.push_str("\ncharges\n");
        let seq_of = |installment_id: i64| {
            d.installments
                .iter()
                .find(|i| i.id == installment_id)
                .map_or("-".to_string(), |i| i.seq.to_string())
        };
        let rows: Vec<Vec<String>> = standing
            .charges
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    seq_of(c.installment_id),
                    c.kind.clone(),
                    c.accrual_key.to_string(),
                    amount(c.amount_minor, cur),
                    amount(c.paid_minor, cur),
                    amount(c.waived_minor, cur),
                    c.status.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ID", "SEQ", "KIND", "AT DPD", "AMOUNT", "PAID", "WAIVED", "STATUS",
            ],
            &rows,
            &[true, true, false, true, true, true, true, false],
        ));
    }
    if !standing.placed_retries.is_empty() {
        out.push_str("\nretries placed by payday\n");
        for r in &standing.placed_retries {
            let seq = d
                .installments
                .iter()
                .find(|i| i.id == r.installment_id)
                .map_or("-".to_string(), |i| i.seq.to_string());
            out.push_str(&format!(
                "  installment {seq}, attempt {} at {} ({}): {}\n",
                r.attempt_no,
                rfc3339(r.scheduled_at_ms),
                r.state,
                r.retry_reason.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_numbers_right_and_text_left() {
        let t = table(
            &["ID", "NAME", "TOTAL"],
            &[
                vec!["1".into(), "a".into(), "10.00".into()],
                vec!["12".into(), "bbb".into(), "1000.00".into()],
            ],
            &[true, false, true],
        );
        assert_eq!(
            t,
            "ID  NAME    TOTAL\n 1  a       10.00\n12  bbb   1000.00\n"
        );
    }

    #[test]
    fn amounts_use_the_currency_digits() {
        assert_eq!(amount(123_456, "CNY"), "1234.56");
        assert_eq!(amount(5000, "JPY"), "5000");
        assert_eq!(amount(5, "XXX?"), "5 (minor units)");
    }
}
