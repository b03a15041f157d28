//! The console's read-only pages: each reads what it shows through
//! [`crate::store::console`] and hands the template formatted figures.

use super::chart::{self, Bar};
use super::i18n::{Lang, word};
use super::{Console, KeyPath, Operator};
use crate::clock::from_epoch_ms;
use crate::domain::money::{Currency, Money};
use crate::mask;
use crate::store::EventRow;
use crate::store::console::{DueFigureRow, RETRY_SLOT_MS};
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Days in the Today page's chart, today included.
pub const CHART_DAYS: u64 = 30;
/// Rows in each list of a queue or of the credit-warning list.
const LIST_LIMIT: i64 = 50;
/// The credit-warning horizon in days.
const CREDIT_WARNING_DAYS: i64 = 14;
const DAY_MS: i64 = 86_400_000;

/// `123456` CNY -> `1,234.56 CNY`.
pub fn money(minor: i64, currency: &str) -> String {
    let plain = match Currency::parse(currency) {
        Ok(c) => Money::from_minor(minor, c).plain(),
        Err(_) => minor.to_string(),
    };
    let (sign, digits) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, format!(".{f}")),
        None => (digits, String::new()),
    };
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    format!("{sign}{grouped}{fraction} {currency}")
}

/// An instant as `2026-11-28 04:10 UTC`.
pub fn when(ms: i64) -> String {
    from_epoch_ms(ms).format("%Y-%m-%d %H:%M UTC").to_string()
}

fn when_opt(ms: Option<i64>) -> String {
    ms.map(when).unwrap_or_default()
}

fn percent(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "-".into();
    }
    // Tenths of a percent, rounded half up, in integers.
    let tenths = (i128::from(part) * 2000 + i128::from(whole)) / (2 * i128::from(whole));
    format!("{}.{} %", tenths / 10, tenths % 10)
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: a database read failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database could not be read; see the daemon's log\n",
    )
        .into_response()
}

/// The Today categories of an attempt state, in the order they are shown.
const CATEGORIES: &[&str] = &[
    "debited", "short", "declined", "pending", "unknown", "not_yet",
];

fn category(state: &str) -> &'static str {
    match state {
        "succeeded" => "debited",
        "insufficient_funds" => "short",
        "declined" | "failed" | "rejected" => "declined",
        "pending" => "pending",
        "unknown" => "unknown",
        _ => "not_yet",
    }
}

/// One currency's figures for one day.
#[derive(Debug, Default, Clone)]
pub struct DayFigures {
    pub due_count: i64,
    pub due_minor: i64,
    pub collected_minor: i64,
    pub funds_checked: i64,
    /// Per category: (count, amount due).
    pub by_category: BTreeMap<&'static str, (i64, i64)>,
}

/// Folds the rows of one day into figures per currency.
pub fn fold_day(rows: &[DueFigureRow]) -> BTreeMap<String, DayFigures> {
    let mut out: BTreeMap<String, DayFigures> = BTreeMap::new();
    for r in rows {
        let f = out.entry(r.currency.clone()).or_default();
        f.due_count += r.installments;
        f.due_minor += r.due_minor;
        f.collected_minor += r.paid_minor;
        f.funds_checked += r.funds_checked;
        let c = f.by_category.entry(category(&r.state)).or_default();
        c.0 += r.installments;
        c.1 += r.due_minor;
    }
    out
}

impl Console {
    /// Today in the operations' time zone (`[console] time_zone`), not UTC: at 01:00 in
    /// Shanghai the UTC date is still yesterday's.
    fn today(&self) -> NaiveDate {
        self.clock
            .now()
            .with_timezone(&self.options.time_zone)
            .date_naive()
    }

    /// The chart's days, oldest first, each with its rows: a past day's kept figures
    /// when they are still true (see [`super::refresh_past_days`]), else read live, as
    /// today's always are.
    async fn chart_rows(
        &self,
        today: NaiveDate,
    ) -> crate::store::Result<Vec<(NaiveDate, Vec<DueFigureRow>)>> {
        let from = today
            .checked_sub_days(Days::new(CHART_DAYS - 1))
            .unwrap_or(today);
        let yesterday = today.pred_opt().unwrap_or(today);
        let mut kept: BTreeMap<String, Vec<DueFigureRow>> = BTreeMap::new();
        for row in self
            .store
            .console_kept_days(&day_key(from), &day_key(yesterday))
            .await?
        {
            let figures = kept.entry(row.due_date.clone()).or_default();
            figures.extend(row.figure());
        }
        let mut days = Vec::with_capacity(CHART_DAYS as usize);
        for day in from.iter_days().take_while(|d| *d <= today) {
            let key = day_key(day);
            let rows = match kept.remove(&key) {
                Some(rows) if day < today => rows,
                _ => self.store.console_due_figures(&key).await?,
            };
            days.push((day, rows));
        }
        Ok(days)
    }
}

/// A date as the database keeps due dates: `YYYY-MM-DD`.
pub fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn signed_in(c: &Console, headers: &HeaderMap) -> Result<Operator, Box<Response>> {
    c.operator(headers)
        .ok_or_else(|| Box::new(c.not_signed_in()))
}

pub(crate) async fn today(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let operator = match signed_in(&c, &headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let lang = operator.lang;
    let today = c.today();
    let days: Vec<_> = match c.chart_rows(today).await {
        Ok(days) => days
            .into_iter()
            .map(|(day, rows)| (day, fold_day(&rows)))
            .collect(),
        Err(e) => return failed(e),
    };
    let (_, figures) = days.last().cloned().unwrap_or((today, BTreeMap::new()));
    let mut currencies: Vec<String> = days.iter().flat_map(|(_, f)| f.keys().cloned()).collect();
    currencies.sort();
    currencies.dedup();
    let mut sections = Vec::new();
    for cur in &currencies {
        let f = figures.get(cur).cloned().unwrap_or_default();
        let mut rows = vec![
            json!({"key": "due", "label": word(lang, "due"), "count": f.due_count, "amount": money(f.due_minor, cur)}),
            json!({"key": "funds_checked", "label": word(lang, "funds_checked"), "count": f.funds_checked, "amount": ""}),
        ];
        for cat in CATEGORIES {
            let (n, amount) = f.by_category.get(cat).copied().unwrap_or((0, 0));
            rows.push(json!({"key": cat, "label": word(lang, cat), "count": n, "amount": money(amount, cur)}));
        }
        rows.push(json!({"key": "collected", "label": word(lang, "collected"), "count": "", "amount": money(f.collected_minor, cur)}));
        let bars: Vec<Bar> = days
            .iter()
            .map(|(day, figs)| {
                let d = figs.get(cur).cloned().unwrap_or_default();
                Bar {
                    label: day.format("%m-%d").to_string(),
                    due_minor: d.due_minor,
                    collected_minor: d.collected_minor,
                    title: format!(
                        "{day}: {} {}, {} {}",
                        word(lang, "due"),
                        money(d.due_minor, cur),
                        word(lang, "collected"),
                        money(d.collected_minor, cur)
                    ),
                }
            })
            .collect();
        let (due30, got30) = days.iter().fold((0, 0), |(d, g), (_, figs)| {
            let x = figs.get(cur).cloned().unwrap_or_default();
            (d + x.due_minor, g + x.collected_minor)
        });
        sections.push(json!({
            "currency": cur,
            "rows": rows,
            "rate": percent(f.collected_minor, f.due_minor),
            "rate_30": percent(got30, due30),
            "due_30": money(due30, cur),
            "collected_30": money(got30, cur),
            "chart": chart::bars(&format!("{cur}: {}", word(lang, "last_30_days")), &bars),
        }));
    }
    c.page(
        "today.html",
        &operator,
        started,
        json!({
            "page": "today", "today": today.to_string(),
            "time_zone": c.options.time_zone.name(), "sections": sections,
        }),
    )
}

pub(crate) async fn overdue(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let operator = match signed_in(&c, &headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let now_ms = crate::clock::to_epoch_ms(c.clock.now());
    let since = now_ms - DAY_MS;
    let buckets = match c.store.console_overdue_buckets().await {
        Ok(b) => b,
        Err(e) => return failed(e),
    };
    let newly = match c.store.console_newly_overdue(since).await {
        Ok(n) => n,
        Err(e) => return failed(e),
    };
    let moves = match c.store.console_moves_since(since).await {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let mut cleared = 0i64;
    let mut into: BTreeMap<String, i64> = BTreeMap::new();
    for m in &moves {
        if m.kind == "delinquency_cleared" {
            cleared += m.moves;
        } else if let Some(to) = &m.bucket {
            *into.entry(to.clone()).or_default() += m.moves;
        }
    }
    let report_after = i64::from(c.options.credit_report_after_days);
    let (warning, warning_total) = if report_after > 0 {
        match c
            .store
            .console_overdue_between(
                (report_after - CREDIT_WARNING_DAYS).max(1),
                report_after - 1,
                LIST_LIMIT,
            )
            .await
        {
            Ok(x) => x,
            Err(e) => return failed(e),
        }
    } else {
        (Vec::new(), 0)
    };
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|b| {
            json!({
                "currency": b.currency,
                "bucket": b.bucket.clone().unwrap_or_else(|| "-".into()),
                "agreements": b.agreements,
                "amount": money(b.amount_minor, &b.currency),
            })
        })
        .collect();
    let warning: Vec<Value> = warning
        .iter()
        .map(|w| {
            json!({
                "agreement": w.agreement_external_id,
                "customer": w.customer_external_id,
                "customer_name": w.customer_name,
                "email": mask::email(&w.customer_email),
                "dpd": w.dpd,
                "reportable_in": report_after - w.dpd,
                "bucket": w.bucket.clone().unwrap_or_default(),
                "amount": money(w.amount_overdue_minor, &w.currency),
            })
        })
        .collect();
    let into: Vec<Value> = into
        .into_iter()
        .map(|(bucket, n)| json!({"bucket": bucket, "count": n}))
        .collect();
    c.page(
        "overdue.html",
        &operator,
        started,
        json!({
            "page": "overdue",
            "buckets": buckets,
            "newly_overdue": newly,
            "cleared": cleared,
            "moved_into": into,
            "credit_on": report_after > 0,
            "warning": warning,
            "warning_total": warning_total,
        }),
    )
}

fn attempt_rows(rows: &[crate::store::console::QueuedAttemptRow]) -> Vec<Value> {
    rows.iter()
        .map(|a| {
            let reason = [
                a.outcome_code.clone().unwrap_or_default(),
                a.outcome_detail
                    .as_deref()
                    .map(mask::emails_in)
                    .unwrap_or_default(),
            ]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
            json!({
                "id": a.id,
                "agreement": a.agreement_external_id,
                "attempt_no": a.attempt_no,
                "key": a.idempotency_key,
                "scheduled": when(a.scheduled_at_ms),
                "updated": when(a.updated_at_ms),
                "amount": money(a.amount_minor, &a.currency),
                "state": a.state,
                "reason": reason,
                "lookups": a.reconcile_count,
            })
        })
        .collect()
}

fn email_rows(rows: &[crate::store::console::QueuedEmailRow]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            json!({
                "id": r.id,
                "agreement": r.agreement_external_id,
                "kind": r.kind,
                "state": r.state,
                "tries": r.tries,
                "scheduled": when(r.scheduled_at_ms),
                "updated": when(r.updated_at_ms),
                "reason": r.last_error.as_deref().map(mask::emails_in).unwrap_or_default(),
            })
        })
        .collect()
}

pub(crate) async fn queues(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let operator = match signed_in(&c, &headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    // The next 14 days in the operations' time zone, from its midnight today.
    let tz = c.options.time_zone;
    let today = c.today();
    let midnight =
        |d: NaiveDate| crate::domain::worktime::local_instant(d, chrono::NaiveTime::MIN, tz);
    let from_ms = crate::clock::to_epoch_ms(midnight(today));
    let to_ms = crate::clock::to_epoch_ms(midnight(today + Days::new(14)));
    let store = &c.store;
    let read = async {
        let retries = store.console_retries_by_slot(from_ms, to_ms).await?;
        let lookups = store.console_lookups(LIST_LIMIT).await?;
        let rejected = store.console_rejected(LIST_LIMIT).await?;
        let deferred = store.console_deferred_emails(LIST_LIMIT).await?;
        let failed_emails = store.console_failed_emails(LIST_LIMIT).await?;
        Ok::<_, crate::store::StoreError>((retries, lookups, rejected, deferred, failed_emails))
    };
    let (retries, lookups, rejected, deferred, failed_emails) = match read.await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let mut by_day: BTreeMap<(NaiveDate, String), (i64, i64)> = BTreeMap::new();
    for r in &retries {
        let day = from_epoch_ms(r.slot * RETRY_SLOT_MS)
            .with_timezone(&tz)
            .date_naive();
        let e = by_day.entry((day, r.currency.clone())).or_default();
        e.0 += r.attempts;
        e.1 += r.amount_minor;
    }
    let retries: Vec<Value> = by_day
        .iter()
        .map(|((day, currency), (attempts, amount))| {
            json!({
                "day": day.to_string(),
                "currency": currency,
                "attempts": attempts,
                "amount": money(*amount, currency),
            })
        })
        .collect();
    c.page(
        "queues.html",
        &operator,
        started,
        json!({
            "page": "queues",
            "retries": retries,
            "lookups": attempt_rows(&lookups.0), "lookups_total": lookups.1,
            "rejected": attempt_rows(&rejected.0), "rejected_total": rejected.1,
            "deferred": email_rows(&deferred.0), "deferred_total": deferred.1,
            "failed": email_rows(&failed_emails.0), "failed_total": failed_emails.1,
            "can_act": operator.csrf.is_some() && c.options.policy.is_some(),
        }),
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

pub(crate) async fn search(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<SearchQuery>,
) -> Response {
    let started = Instant::now();
    let operator = match signed_in(&c, &headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let q: String = query.q.trim().chars().take(200).collect();
    let hits = match c.store.console_search(&q, LIST_LIMIT).await {
        Ok(h) => h,
        Err(e) => return failed(e),
    };
    let hits: Vec<Value> = hits
        .iter()
        .map(|h| {
            json!({
                "agreement": h.agreement_external_id,
                "status": h.agreement_status,
                "total": money(h.total_minor, &h.currency),
                "customer": h.customer_external_id,
                "customer_name": h.customer_name,
                "email": mask::email(&h.customer_email),
            })
        })
        .collect();
    c.page(
        "search.html",
        &operator,
        started,
        json!({"page": "search", "q": q, "searched": !q.is_empty(), "hits": hits}),
    )
}

/// Event kinds with words of their own; any other prints as stored.
fn event_label(lang: Lang, kind: &str) -> String {
    let key = format!("event.{kind}");
    let w = event_word(lang, kind);
    if w == key { kind.replace('_', " ") } else { w }
}

fn event_word(lang: Lang, kind: &str) -> String {
    let (en, zh) = match kind {
        "agreement_imported" => ("agreement imported", "协议导入"),
        "debit_attempt_planned" => ("debit planned", "计划扣款"),
        "funds_checked" => ("funds checked", "已查余额"),
        "debit_succeeded" => ("debited", "扣款成功"),
        "debit_declined" => ("debit declined", "扣款被拒"),
        "insufficient_funds" => ("short of funds", "余额不足"),
        "reminder_sent" => ("email sent", "邮件已发送"),
        "reminder_deferred" => ("email deferred", "邮件延迟"),
        "reminder_failed" => ("email failed", "邮件失败"),
        "reminder_cancelled" => ("email cancelled", "邮件取消"),
        "payment_received" => ("payment received", "收到还款"),
        "late_fee_charged" => ("late fee charged", "收取滞纳金"),
        "delinquency_bucket_changed" => ("overdue bucket changed", "逾期档变化"),
        "delinquency_cleared" => ("no longer overdue", "不再逾期"),
        "credit_flag_changed" => ("credit flag changed", "征信标记变化"),
        "mandate_revoked" => ("mandate revoked", "授权撤销"),
        "debit_requeued" => ("debit re-queued", "重新排队扣款"),
        "mandate_reinstated" => ("mandate reinstated", "授权恢复"),
        "agreement_paused" => ("agreement paused", "协议暂停"),
        "agreement_resumed" => ("agreement resumed", "协议恢复"),
        "charge_waived" => ("fee waived", "费用减免"),
        "reminder_requeued" => ("email re-queued to send again", "邮件重新排队发送"),
        _ => return format!("event.{kind}"),
    };
    match lang {
        Lang::En => en.to_string(),
        Lang::ZhCn => zh.to_string(),
    }
}

/// The timeline entries of some events: when, what, the details as pairs, the operator
/// and reason of an operator's action, and the email as sent.
fn timeline(lang: Lang, events: &[EventRow], agreement_refs: &BTreeMap<i64, String>) -> Vec<Value> {
    events
        .iter()
        .rev()
        .map(|e| {
            let detail: Value = serde_json::from_str(&e.detail).unwrap_or(Value::Null);
            let mut pairs = Vec::new();
            if let Some(map) = detail.as_object() {
                for (k, v) in map {
                    if matches!(k.as_str(), "subject" | "text" | "actor" | "reason") {
                        continue;
                    }
                    let shown = match v {
                        Value::String(s) => mask::emails_in(s),
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    pairs.push(json!({"key": k, "value": shown}));
                }
            }
            json!({
                "id": e.id,
                "when": when(e.at_ms),
                "kind": e.kind,
                "label": event_label(lang, &e.kind),
                "agreement": e.agreement_id.and_then(|id| agreement_refs.get(&id).cloned()),
                "installment_id": e.installment_id,
                "attempt_id": e.attempt_id,
                "pairs": pairs,
                "actor": detail["actor"].as_str(),
                "reason": detail["reason"].as_str(),
                "subject": detail["subject"].as_str(),
                "text": detail["text"].as_str(),
            })
        })
        .collect()
}

/// How many events of one agreement a detail page shows (the latest).
const TIMELINE_LIMIT: i64 = 500;
/// Mandate events are written per account, not per agreement: a detail page looks for
/// its accounts' among the latest this many of them.
const MANDATE_EVENT_SCAN: i64 = 2_000;

pub(crate) async fn agreement(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(key): Path<KeyPath>,
) -> Response {
    let started = Instant::now();
    let operator = match signed_in(&c, &headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let lang = operator.lang;
    let store = &c.store;
    let a = match store.console_agreement(&key.key).await {
        Ok(Some(a)) => a,
        Ok(None) => return not_found(&c, &operator, started),
        Err(e) => return failed(e),
    };
    tracing::info!(actor = %operator.actor, agreement = %a.external_id, customer_id = a.customer_id, "console: agreement page viewed");
    let read = async {
        let customer = store.customer(a.customer_id).await?;
        let account = store.funding_account(a.funding_account_id).await?;
        let installments = store.installments(a.id).await?;
        let charges = store.charges_for_agreement(a.id).await?;
        let attempts = store.attempts_for_agreement(a.id).await?;
        let payments = store.console_payments(a.id).await?;
        let reminders = store.reminders_for_agreement(a.id).await?;
        let delinquency = store.delinquency(a.id).await?;
        let mut events = store.console_events(&[a.id], TIMELINE_LIMIT).await?;
        events.extend(
            store
                .console_mandate_events(&[a.funding_account_id], MANDATE_EVENT_SCAN)
                .await?,
        );
        events.sort_by_key(|e| e.id);
        Ok::<_, crate::store::StoreError>((
            customer,
            account,
            installments,
            charges,
            attempts,
            payments,
            reminders,
            delinquency,
            events,
        ))
    };
    let (
        customer,
        account,
        installments,
        charges,
        attempts,
        payments,
        reminders,
        delinquency,
        events,
    ) = match read.await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let cur = a.currency.as_str();
    let paid_count = installments.iter().filter(|i| i.status == "paid").count();
    let owed: i64 = installments
        .iter()
        .filter(|i| i.status == "unpaid")
        .map(|i| i.total_minor - i.paid_minor)
        .sum();
    let installments_raw = installments;
    let installments: Vec<Value> = installments_raw
        .iter()
        .map(|i| {
            json!({
                "id": i.id, "seq": i.seq, "due_date": i.due_date,
                "total": money(i.total_minor, cur), "paid": money(i.paid_minor, cur),
                "status": i.status, "paid_at": when_opt(i.paid_at_ms),
            })
        })
        .collect();
    let seq_of: BTreeMap<i64, i64> = installments_raw.iter().map(|i| (i.id, i.seq)).collect();
    let charges_raw = charges;
    let charges: Vec<Value> = charges_raw
        .iter()
        .map(|g| {
            json!({
                "id": g.id, "installment_id": g.installment_id,
                "seq": seq_of.get(&g.installment_id), "kind": g.kind,
                "amount": money(g.amount_minor, &g.currency), "paid": money(g.paid_minor, &g.currency),
                "waived": money(g.waived_minor, &g.currency),
                "open": money(g.open_minor(), &g.currency),
                "status": g.status,
            })
        })
        .collect();
    let attempts_raw = attempts;
    let attempts: Vec<Value> = attempts_raw
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "installment_id": d.installment_id, "attempt_no": d.attempt_no,
                "key": d.idempotency_key, "scheduled": when(d.scheduled_at_ms),
                "amount": money(d.amount_minor, &d.currency), "state": d.state,
                "outcome": d.outcome_code.clone().unwrap_or_default(),
                "funds_checked": when_opt(d.funds_checked_at_ms),
            })
        })
        .collect();
    let payments: Vec<Value> = payments
        .iter()
        .map(|p| {
            json!({
                "reference": p.reference, "amount": money(p.amount_minor, &p.currency),
                "received": when(p.received_at_ms), "settlement": p.settlement != 0,
                "waived": money(p.waived_minor, &p.currency),
            })
        })
        .collect();
    let reminders_raw = reminders;
    let reminders: Vec<Value> = reminders_raw
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "kind": r.kind, "state": r.state, "tries": r.tries,
                "scheduled": when(r.scheduled_at_ms), "sent": when_opt(r.sent_at_ms),
                "reason": r.cancel_reason.clone().or(r.last_error.as_deref().map(mask::emails_in)).unwrap_or_default(),
            })
        })
        .collect();
    let rejected: Vec<(i64, i64)> = attempts_raw
        .iter()
        .filter(|d| d.state == "rejected")
        .map(|d| (d.id, d.attempt_no))
        .collect();
    let actions = if operator.csrf.is_some() && c.options.policy.is_some() {
        super::actions::forms(
            &a,
            account.as_ref(),
            &rejected,
            &charges_raw,
            &reminders_raw,
            &seq_of,
        )
    } else {
        Vec::new()
    };
    let refs = BTreeMap::from([(a.id, a.external_id.clone())]);
    let timeline = timeline(lang, &events, &refs);
    let delinquency = delinquency.map(|d| {
        json!({
            "dpd": d.dpd, "bucket": d.bucket.unwrap_or_default(), "credit_flag": d.credit_flag,
            "amount": money(d.amount_overdue_minor, cur),
            "oldest_due_date": d.oldest_due_date.unwrap_or_default(),
        })
    });
    c.page(
        "agreement.html",
        &operator,
        started,
        json!({
            "page": "agreement",
            "a": {
                "id": a.id, "external_id": a.external_id, "status": a.status, "currency": a.currency,
                "principal": money(a.principal_minor, cur), "interest": money(a.total_interest_minor, cur),
                "fees": money(a.total_fee_minor, cur), "total": money(a.total_minor, cur),
                "method": a.method.clone().unwrap_or_default(), "owed": money(owed, cur),
                "paid_count": paid_count,
            },
            "customer": customer.map(|c| json!({
                "external_id": c.external_id, "name": c.name, "email": c.email,
                "locale": c.locale, "time_zone": c.time_zone,
            })),
            "actions": actions,
            "accounts": account.map(|f| vec![json!({
                "id": f.id, "external_ref": f.external_ref, "mandate_ref": f.mandate_ref,
                "mandate_status": f.mandate_status,
            })]).unwrap_or_default(),
            "delinquency": delinquency,
            "installments": installments,
            "charges": charges,
            "attempts": attempts,
            "payments": payments,
            "reminders": reminders,
            "timeline": timeline,
        }),
    )
}

pub(crate) async fn customer(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(key): Path<KeyPath>,
) -> Response {
    let started = Instant::now();
    let operator = match signed_in(&c, &headers) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let store = &c.store;
    let customer = match store.console_customer(&key.key).await {
        Ok(Some(x)) => x,
        Ok(None) => return not_found(&c, &operator, started),
        Err(e) => return failed(e),
    };
    tracing::info!(actor = %operator.actor, customer = %customer.external_id, customer_id = customer.id, "console: customer page viewed");
    let (agreements, accounts) = match store.console_customer_holdings(customer.id).await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let ids: Vec<i64> = agreements.iter().map(|a| a.id).collect();
    let account_ids: Vec<i64> = accounts.iter().map(|f| f.id).collect();
    let read = async {
        let mut events = store.console_events(&ids, TIMELINE_LIMIT).await?;
        events.extend(
            store
                .console_mandate_events(&account_ids, MANDATE_EVENT_SCAN)
                .await?,
        );
        events.sort_by_key(|e| e.id);
        Ok::<_, crate::store::StoreError>(events)
    };
    let events = match read.await {
        Ok(x) => x,
        Err(e) => return failed(e),
    };
    let refs: BTreeMap<i64, String> = agreements
        .iter()
        .map(|a| (a.id, a.external_id.clone()))
        .collect();
    let timeline = timeline(operator.lang, &events, &refs);
    let agreements: Vec<Value> = agreements
        .iter()
        .map(|a| {
            json!({
                "external_id": a.external_id, "status": a.status,
                "total": money(a.total_minor, &a.currency),
            })
        })
        .collect();
    let accounts: Vec<Value> = accounts
        .iter()
        .map(|f| {
            json!({
                "id": f.id, "external_ref": f.external_ref, "mandate_ref": f.mandate_ref,
                "mandate_status": f.mandate_status,
            })
        })
        .collect();
    c.page(
        "customer.html",
        &operator,
        started,
        json!({
            "page": "customer",
            "customer": {
                "id": customer.id, "external_id": customer.external_id, "name": customer.name,
                "email": customer.email, "locale": customer.locale, "time_zone": customer.time_zone,
            },
            "agreements": agreements,
            "accounts": accounts,
            "timeline": timeline,
        }),
    )
}

fn not_found(c: &Console, operator: &Operator, started: Instant) -> Response {
    let mut page = c.page(
        "message.html",
        operator,
        started,
        json!({"page": "", "title": word(operator.lang, "not_found"), "message": ""}),
    );
    *page.status_mut() = StatusCode::NOT_FOUND;
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands_and_keeps_minor_digits() {
        assert_eq!(money(123_456_789, "CNY"), "1,234,567.89 CNY");
        assert_eq!(money(-500, "USD"), "-5.00 USD");
        assert_eq!(money(1000, "JPY"), "1,000 JPY");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
    }

    #[test]
    fn attempt_states_fall_into_the_today_categories() {
        let row = |state: &str, n: i64, due: i64, paid: i64| DueFigureRow {
            currency: "CNY".into(),
            state: state.into(),
            installments: n,
            due_minor: due,
            paid_minor: paid,
            funds_checked: if state == "none" { 0 } else { n },
        };
        let f = fold_day(&[
            row("succeeded", 2, 2000, 2000),
            row("insufficient_funds", 1, 500, 0),
            row("rejected", 1, 300, 0),
            row("none", 3, 900, 100),
        ]);
        let cny = &f["CNY"];
        assert_eq!(
            (cny.due_count, cny.due_minor, cny.collected_minor),
            (7, 3700, 2100)
        );
        assert_eq!(cny.funds_checked, 4);
        assert_eq!(cny.by_category["debited"], (2, 2000));
        assert_eq!(cny.by_category["short"], (1, 500));
        assert_eq!(cny.by_category["declined"], (1, 300));
        assert_eq!(cny.by_category["not_yet"], (3, 900));
        assert_eq!(percent(2100, 3700), "56.8 %");
    }
}
