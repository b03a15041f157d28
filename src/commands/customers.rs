//! `repayd customers show ID`: one customer as collections sees them: agreements, arrears
//! by bucket, charges (waived ones marked), funding accounts in the order debits try them,
//! debits planned and done, and the messages sent. Table for people, JSON for programs.
//! Like `agreements show`, customer details are shown (operators need them) but never
//! logged. The reads are the console's customer page's (`store::console`) plus the
//! per-agreement reads `agreements show` uses.

use super::agreements::{amount, rfc3339, table};
use crate::cli::OutputFormat;
use crate::store::Store;
use crate::store::agreements::{AgreementRow, CustomerRow, InstallmentRow};
use crate::store::debits::{AttemptRow, FundingSource};
use crate::store::delinquency::{ChargeRow, DelinquencyRow};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct CustomersArgs {
    #[command(subcommand)]
    pub command: CustomersCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CustomersCommand {
    /// Show one customer: agreements, arrears, charges, funding sources, debits, messages.
    Show(ShowArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// The customer's external id (as imported) or numeric id.
    #[arg(value_name = "CUSTOMER_ID")]
    pub customer: String,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// How many of an agreement's latest events are read for the messages sent (the
/// console's agreement page reads as many).
const EVENT_LIMIT: i64 = 500;

/// One agreement of the customer with everything the page shows about it.
#[derive(Debug, Clone)]
pub struct AgreementView {
    pub agreement: AgreementRow,
    pub installments: Vec<InstallmentRow>,
    pub delinquency: Option<DelinquencyRow>,
    pub charges: Vec<ChargeRow>,
    pub attempts: Vec<AttemptRow>,
}

impl AgreementView {
    fn seq_of(&self, installment_id: i64) -> Option<i64> {
        self.installments
            .iter()
            .find(|i| i.id == installment_id)
            .map(|i| i.seq)
    }

    /// Unpaid installments (cancelled ones aside) plus open charges.
    fn owed_minor(&self) -> i64 {
        let installments: i64 = self
            .installments
            .iter()
            .filter(|i| i.status == "unpaid")
            .map(|i| i.total_minor - i.paid_minor)
            .sum();
        installments + self.charges.iter().map(ChargeRow::open_minor).sum::<i64>()
    }
}

/// A customer email that went out (one row per message: merged reminders share one).
#[derive(Debug, Clone)]
pub struct MessageSent {
    pub agreement_id: i64,
    pub kind: String,
    pub sent_at_ms: i64,
    pub subject: Option<String>,
    pub message_id: String,
}

#[derive(Debug, Clone)]
pub struct CustomerView {
    pub customer: CustomerRow,
    /// Every account of the customer: those with a priority first, in that order.
    pub funding_sources: Vec<FundingSource>,
    pub agreements: Vec<AgreementView>,
    pub messages: Vec<MessageSent>,
}

/// The reason recorded on an attempt for when it was placed (payday-aware retries,
/// docs/retry.md); `None` for attempts placed by the fixed offsets.
fn retry_reason(attempt: &AttemptRow) -> Option<&str> {
    attempt.retry_reason.as_deref()
}

/// Reads everything about a customer; `None` if there is no such customer.
pub async fn load(store: &Store, key: &str) -> anyhow::Result<Option<CustomerView>> {
    let Some(customer) = store.console_customer(key).await? else {
        return Ok(None);
    };
    let (agreements, _) = store.console_customer_holdings(customer.id).await?;
    let funding_sources = store.customer_funding_sources(customer.id).await?;
    let mut views = Vec::with_capacity(agreements.len());
    let mut messages = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for a in agreements {
        let id = a.id;
        // Subjects are kept with the `reminder_sent` event (the email as sent).
        let subjects: BTreeMap<String, String> = store
            .console_events(&[id], EVENT_LIMIT)
            .await?
            .into_iter()
            .filter(|e| e.kind == "reminder_sent")
            .filter_map(|e| {
                let d: serde_json::Value = serde_json::from_str(&e.detail).ok()?;
                Some((
                    d["message_id"].as_str()?.to_string(),
                    d["subject"].as_str()?.to_string(),
                ))
            })
            .collect();
        for r in store.reminders_for_agreement(id).await? {
            let (Some(message_id), Some(sent_at_ms)) = (r.message_id, r.sent_at_ms) else {
                continue;
            };
            if r.state != "sent" || !seen.insert(message_id.clone()) {
                continue;
            }
            messages.push(MessageSent {
                agreement_id: id,
                kind: r.template.unwrap_or(r.kind),
                sent_at_ms,
                subject: subjects.get(&message_id).cloned(),
                message_id,
            });
        }
        views.push(AgreementView {
            installments: store.installments(id).await?,
            delinquency: store.delinquency(id).await?,
            charges: store.charges_for_agreement(id).await?,
            attempts: store.attempts_for_agreement(id).await?,
            agreement: a,
        });
    }
    messages.sort_by_key(|m| (m.sent_at_ms, m.agreement_id));
    Ok(Some(CustomerView {
        customer,
        funding_sources,
        agreements: views,
        messages,
    }))
}

pub async fn run(store: &Store, args: &CustomersArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        CustomersCommand::Show(show) => {
            let Some(view) = load(store, &show.customer).await? else {
                eprintln!(
                    "repayd customers show: no customer with external id or id {:?}",
                    show.customer
                );
                return Ok(ExitCode::FAILURE);
            };
            match show.format {
                OutputFormat::Json => println!("{}", render_json(&view)),
                OutputFormat::Table => print!("{}", render_table(&view)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Overdue amounts by currency and bucket, over the customer's agreements.
fn arrears(view: &CustomerView) -> BTreeMap<(String, i64, String), (usize, i64)> {
    let mut out = BTreeMap::new();
    for v in &view.agreements {
        if let Some(d) = v.delinquency.as_ref().filter(|d| d.dpd > 0) {
            let e = out
                .entry((
                    v.agreement.currency.clone(),
                    d.bucket_index.unwrap_or(-1),
                    d.bucket.clone().unwrap_or_else(|| "-".into()),
                ))
                .or_insert((0, 0));
            e.0 += 1;
            e.1 += d.amount_overdue_minor;
        }
    }
    out
}

/// An attempt is upcoming while nothing has been tried yet.
fn upcoming(a: &AttemptRow) -> bool {
    a.state == "scheduled"
}

#[derive(Serialize)]
struct CustomerJson<'a> {
    customer: CustomerInfoJson<'a>,
    funding_sources: Vec<SourceJson<'a>>,
    arrears: Vec<ArrearsJson>,
    agreements: Vec<AgreementJson<'a>>,
    messages: Vec<MessageJson<'a>>,
}

#[derive(Serialize)]
struct CustomerInfoJson<'a> {
    id: i64,
    external_id: &'a str,
    name: &'a str,
    email: &'a str,
    locale: &'a str,
    time_zone: &'a str,
}

#[derive(Serialize)]
struct SourceJson<'a> {
    /// 1, 2, ...: the order debits try the accounts with a priority; `None` for an
    /// account only its own agreements use.
    priority: Option<i64>,
    id: i64,
    external_ref: &'a str,
    mandate_ref: &'a str,
    mandate_status: &'a str,
}

#[derive(Serialize)]
struct ArrearsJson {
    currency: String,
    bucket: String,
    agreements: usize,
    amount_overdue: String,
}

#[derive(Serialize)]
struct AgreementJson<'a> {
    id: i64,
    external_id: &'a str,
    status: &'a str,
    currency: &'a str,
    total: String,
    paid: String,
    owed: String,
    funding_account_id: i64,
    days_past_due: i64,
    bucket: Option<&'a str>,
    credit_flag: &'a str,
    amount_overdue: String,
    charges: Vec<ChargeJson<'a>>,
    debits: Vec<DebitJson<'a>>,
}

#[derive(Serialize)]
struct ChargeJson<'a> {
    id: i64,
    seq: Option<i64>,
    kind: &'a str,
    amount: String,
    paid: String,
    waived: String,
    status: &'a str,
}

#[derive(Serialize)]
struct DebitJson<'a> {
    id: i64,
    seq: Option<i64>,
    attempt_no: i64,
    upcoming: bool,
    scheduled_at: String,
    amount: String,
    state: &'a str,
    outcome: Option<&'a str>,
    reason: Option<&'a str>,
    retry_reason: Option<&'a str>,
    finished_at: Option<String>,
}

#[derive(Serialize)]
struct MessageJson<'a> {
    agreement: &'a str,
    kind: &'a str,
    sent_at: String,
    subject: Option<&'a str>,
    message_id: &'a str,
}

pub fn render_json(view: &CustomerView) -> String {
    let c = &view.customer;
    let ext_of = |id: i64| {
        view.agreements
            .iter()
            .find(|v| v.agreement.id == id)
            .map_or("", |v| v.agreement.external_id.as_str())
    };
    let json = CustomerJson {
        customer: CustomerInfoJson {
            id: c.id,
            external_id: &c.external_id,
            name: &c.name,
            email: &c.email,
            locale: &c.locale,
            time_zone: &c.time_zone,
        },
        funding_sources: view
            .funding_sources
            .iter()
            .map(|f| SourceJson {
                priority: f.priority,
                id: f.funding_account_id,
                external_ref: &f.account_ref,
                mandate_ref: &f.mandate_ref,
                mandate_status: &f.mandate_status,
            })
            .collect(),
        arrears: arrears(view)
            .into_iter()
            .map(|((cur, _, bucket), (n, minor))| ArrearsJson {
                amount_overdue: amount(minor, &cur),
                currency: cur,
                bucket,
                agreements: n,
            })
            .collect(),
        agreements: view
            .agreements
            .iter()
            .map(|v| {
                let a = &v.agreement;
                let cur = a.currency.as_str();
                let d = v.delinquency.as_ref();
                AgreementJson {
                    id: a.id,
                    external_id: &a.external_id,
                    status: &a.status,
                    currency: cur,
                    total: amount(a.total_minor, cur),
                    paid: amount(v.installments.iter().map(|i| i.paid_minor).sum(), cur),
                    owed: amount(v.owed_minor(), cur),
                    funding_account_id: a.funding_account_id,
                    days_past_due: d.map_or(0, |d| d.dpd),
                    bucket: d.and_then(|d| d.bucket.as_deref()),
                    credit_flag: d.map_or("none", |d| d.credit_flag.as_str()),
                    amount_overdue: amount(d.map_or(0, |d| d.amount_overdue_minor), cur),
                    charges: v
                        .charges
                        .iter()
                        .map(|g| ChargeJson {
                            id: g.id,
                            seq: v.seq_of(g.installment_id),
                            kind: &g.kind,
                            amount: amount(g.amount_minor, cur),
                            paid: amount(g.paid_minor, cur),
                            waived: amount(g.waived_minor, cur),
                            status: &g.status,
                        })
                        .collect(),
                    debits: v
                        .attempts
                        .iter()
                        .map(|t| DebitJson {
                            id: t.id,
                            seq: v.seq_of(t.installment_id),
                            attempt_no: t.attempt_no,
                            upcoming: upcoming(t),
                            scheduled_at: rfc3339(t.scheduled_at_ms),
                            amount: amount(t.amount_minor, &t.currency),
                            state: &t.state,
                            outcome: t.outcome_code.as_deref(),
                            reason: t.outcome_detail.as_deref(),
                            retry_reason: retry_reason(t),
                            finished_at: t.finished_at_ms.map(rfc3339),
                        })
                        .collect(),
                }
            })
            .collect(),
        messages: view
            .messages
            .iter()
            .map(|m| MessageJson {
                agreement: ext_of(m.agreement_id),
                kind: &m.kind,
                sent_at: rfc3339(m.sent_at_ms),
                subject: m.subject.as_deref(),
                message_id: &m.message_id,
            })
            .collect(),
    };
    serde_json::to_string_pretty(&json).expect("plain data always serializes")
}

pub fn render_table(view: &CustomerView) -> String {
    let c = &view.customer;
    let mut out = format!(
        "customer   {} (id {}) {} <{}>, locale {}, time zone {}\n",
        c.external_id, c.id, c.name, c.email, c.locale, c.time_zone
    );
    let arrears = arrears(view);
    if arrears.is_empty() {
        out.push_str("arrears    none\n");
    } else {
        let parts: Vec<String> = arrears
            .iter()
            .map(|((cur, _, bucket), (n, minor))| {
                format!(
                    "bucket {bucket}: {} {cur} ({n} agreement{})",
                    amount(*minor, cur),
                    if *n == 1 { "" } else { "s" }
                )
            })
            .collect();
        out.push_str(&format!("arrears    {}\n", parts.join("; ")));
    }

    out.push_str("\nfunding sources (the order debits try them)\n");
    let rows: Vec<Vec<String>> = view
        .funding_sources
        .iter()
        .map(|f| {
            vec![
                f.priority.map_or("-".into(), |p| p.to_string()),
                f.account_ref.clone(),
                f.mandate_ref.clone(),
                f.mandate_status.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["PRIORITY", "ACCOUNT", "MANDATE", "MANDATE STATUS"],
        &rows,
        &[true, false, false, false],
    ));

    out.push_str("\nagreements\n");
    let rows: Vec<Vec<String>> = view
        .agreements
        .iter()
        .map(|v| {
            let a = &v.agreement;
            let cur = a.currency.as_str();
            let d = v.delinquency.as_ref().filter(|d| d.dpd > 0);
            let account = view
                .funding_sources
                .iter()
                .find(|f| f.funding_account_id == a.funding_account_id)
                .map_or_else(
                    || a.funding_account_id.to_string(),
                    |f| f.account_ref.clone(),
                );
            vec![
                a.external_id.clone(),
                a.status.clone(),
                cur.to_string(),
                amount(a.total_minor, cur),
                amount(v.owed_minor(), cur),
                d.map_or("0".into(), |d| d.dpd.to_string()),
                d.and_then(|d| d.bucket.clone())
                    .unwrap_or_else(|| "-".into()),
                amount(d.map_or(0, |d| d.amount_overdue_minor), cur),
                account,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "AGREEMENT",
            "STATUS",
            "CUR",
            "TOTAL",
            "OWED",
            "DPD",
            "BUCKET",
            "OVERDUE",
            "ACCOUNT",
        ],
        &rows,
        &[false, false, false, true, true, true, false, true, false],
    ));

    let charges: Vec<Vec<String>> = view
        .agreements
        .iter()
        .flat_map(|v| {
            let cur = v.agreement.currency.as_str();
            v.charges.iter().map(move |g| {
                let status = if g.waived_minor > 0 {
                    format!("{} (waived {})", g.status, amount(g.waived_minor, cur))
                } else {
                    g.status.clone()
                };
                vec![
                    v.agreement.external_id.clone(),
                    v.seq_of(g.installment_id)
                        .map_or("-".into(), |s| s.to_string()),
                    g.kind.clone(),
                    amount(g.amount_minor, cur),
                    amount(g.paid_minor, cur),
                    status,
                ]
            })
        })
        .collect();
    if charges.is_empty() {
        out.push_str("\ncharges    none\n");
    } else {
        out.push_str("\ncharges\n");
        out.push_str(&table(
            &["AGREEMENT", "SEQ", "KIND", "AMOUNT", "PAID", "STATUS"],
            &charges,
            &[false, true, false, true, true, false],
        ));
    }

    for (title, want_upcoming) in [("upcoming debits", true), ("past debits", false)] {
        let rows: Vec<Vec<String>> = view
            .agreements
            .iter()
            .flat_map(|v| {
                v.attempts
                    .iter()
                    .filter(move |t| upcoming(t) == want_upcoming)
                    .map(move |t| {
                        let mut reason = t.outcome_detail.clone().unwrap_or_default();
                        if let Some(r) = retry_reason(t) {
                            reason = format!("{reason} (retry: {r})");
                        }
                        vec![
                            v.agreement.external_id.clone(),
                            v.seq_of(t.installment_id)
                                .map_or("-".into(), |s| s.to_string()),
                            t.attempt_no.to_string(),
                            rfc3339(t.scheduled_at_ms),
                            amount(t.amount_minor, &t.currency),
                            t.state.clone(),
                            t.outcome_code.clone().unwrap_or_else(|| "-".into()),
                            reason.trim().to_string(),
                        ]
                    })
            })
            .collect();
        if rows.is_empty() {
            out.push_str(&format!("\n{title}    none\n"));
            continue;
        }
        out.push_str(&format!("\n{title}\n"));
        out.push_str(&table(
            &[
                "AGREEMENT",
                "SEQ",
                "TRY",
                "SCHEDULED",
                "AMOUNT",
                "STATE",
                "OUTCOME",
                "REASON",
            ],
            &rows,
            &[false, true, true, false, true, false, false, false],
        ));
    }

    if view.messages.is_empty() {
        out.push_str("\nmessages sent    none\n");
    } else {
        out.push_str("\nmessages sent\n");
        let ext_of = |id: i64| {
            view.agreements
                .iter()
                .find(|v| v.agreement.id == id)
                .map_or(String::new(), |v| v.agreement.external_id.clone())
        };
        let rows: Vec<Vec<String>> = view
            .messages
            .iter()
            .map(|m| {
                vec![
                    rfc3339(m.sent_at_ms),
                    ext_of(m.agreement_id),
                    m.kind.clone(),
                    m.subject.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.push_str(&table(
            &["SENT", "AGREEMENT", "KIND", "SUBJECT"],
            &rows,
            &[false, false, false, false],
        ));
    }
    out
}
