//! The console's operator actions, each in two steps: the form on the agreement page
//! posts `step=confirm` and gets a page saying what will happen, whose Confirm button
//! posts `step=run`. Both steps need the session's CSRF token and a reason; the actor is
//! the signed-in operator. The actions themselves are [`crate::engine::operator`]'s
//! functions, the same the command line calls: the console writes nothing itself.

use super::i18n::{Lang, word};
use super::views::money;
use super::{Console, Operator, refused};
use crate::engine::operator::{self, Actor, OperatorError, RecordRequest};
use crate::mask;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// The actions the console offers, by the name in their URL.
pub const ACTIONS: &[&str] = &[
    "pause",
    "resume",
    "record_payment",
    "revoke_mandate",
    "reinstate_mandate",
    "requeue",
    "waive_fee",
    "resend_email",
];

/// Every field any action's form may carry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub agreement: String,
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub attempt: String,
    #[serde(default)]
    pub amount: String,
    #[serde(default)]
    pub reference: String,
    /// `waive_fee`: the charge's id.
    #[serde(default)]
    pub charge: String,
    /// `resend_email`: the email's (reminder's) id.
    #[serde(default)]
    pub reminder: String,
}

/// What the action will do, in the operator's language.
fn describe(lang: Lang, name: &str, f: &ActionForm) -> String {
    let masked = crate::mask::account(&f.account);
    match (lang, name) {
        (Lang::En, "pause") => format!(
            "Agreement {} goes from active to paused: its scheduled debits and pending reminders are cancelled; overdue state is still tracked.",
            f.agreement
        ),
        (Lang::ZhCn, "pause") => format!(
            "协议 {} 由生效改为暂停：已计划的扣款和待发提醒将被取消；逾期状态仍会跟踪。",
            f.agreement
        ),
        (Lang::En, "resume") => format!(
            "Agreement {} goes from paused to active; debits the pause stopped are planned again.",
            f.agreement
        ),
        (Lang::ZhCn, "resume") => format!(
            "协议 {} 由暂停恢复为生效；暂停期间停止的扣款将重新计划。",
            f.agreement
        ),
        (Lang::En, "record_payment") => format!(
            "A payment of {} with reference {} is recorded against agreement {} and allocated to what is owed, oldest first.",
            f.amount, f.reference, f.agreement
        ),
        (Lang::ZhCn, "record_payment") => format!(
            "为协议 {} 登记一笔金额 {}、参考号 {} 的还款，按最早到期顺序冲抵欠款。",
            f.agreement, f.amount, f.reference
        ),
        (Lang::En, "revoke_mandate") => format!(
            "The debit mandate of account {masked} is revoked: no more debits on it, its scheduled debits fail, and the customer is told to pay another way."
        ),
        (Lang::ZhCn, "revoke_mandate") => format!(
            "撤销账户 {masked} 的扣款授权：不再从该账户扣款，已计划的扣款失败，并通知客户改用其他方式还款。"
        ),
        (Lang::En, "reinstate_mandate") => format!(
            "The revoked debit mandate of account {masked} becomes active again: its agreements' debits are planned again and unsent \"pay another way\" notices are cancelled."
        ),
        (Lang::ZhCn, "reinstate_mandate") => format!(
            "恢复账户 {masked} 已撤销的扣款授权：其协议的扣款重新计划，未发出的“请改用其他方式还款”通知将被取消。"
        ),
        (Lang::En, "requeue") => format!(
            "Rejected debit attempt {} of agreement {} runs again from its funds check, under the same idempotency key.",
            f.attempt, f.agreement
        ),
        (Lang::ZhCn, "requeue") => format!(
            "协议 {} 被拒绝的扣款尝试 {} 将从查余额开始重新执行，使用同一幂等键。",
            f.agreement, f.attempt
        ),
        _ => name.to_string(),
    }
}

/// The fields of `name`'s form that carry its target, as (name, value) pairs.
fn target_fields(name: &str, f: &ActionForm) -> Vec<(&'static str, String)> {
    let mut out = vec![("agreement", f.agreement.clone())];
    match name {
        "record_payment" => {
            out.push(("amount", f.amount.clone()));
            out.push(("reference", f.reference.clone()));
        }
        "revoke_mandate" | "reinstate_mandate" => out.push(("account", f.account.clone())),
        "requeue" => out.push(("attempt", f.attempt.clone())),
        "waive_fee" => {
            out.push(("charge", f.charge.clone()));
            out.push(("amount", f.amount.clone()));
        }
        "resend_email" => out.push(("reminder", f.reminder.clone())),
        _ => {}
    }
    out
}

pub(crate) async fn action(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let started = Instant::now();
    let operator = match c.operator_for_change(&headers, &form.csrf) {
        Ok(o) => o,
        Err(refusal) => return *refusal,
    };
    let Some(name) = ACTIONS.iter().find(|a| **a == name).copied() else {
        return refused(StatusCode::NOT_FOUND, "no such action\n");
    };
    let Some(policy) = c.options.policy.clone() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "actions are not available on this server\n",
        );
    };
    let lang = operator.lang;
    let back = format!(
        "/console/agreements/{}",
        form.agreement.trim().replace(['/', '?', '#'], "")
    );
    let actor = match Actor::new(&operator.actor, &form.reason) {
        Ok(a) => a,
        Err(_) => {
            return message(
                &c,
                &operator,
                started,
                StatusCode::UNPROCESSABLE_ENTITY,
                word(lang, "reason_required"),
                String::new(),
                &back,
            );
        }
    };
    // What will happen, read from the database where the words need it; the same checks
    // (the charge or email belongs to this agreement, is in a state the action takes)
    // guard the run step.
    let what = match preview(&c, lang, name, &form).await {
        Ok(w) => w,
        Err(Preview::Refused(why)) => {
            return message(
                &c,
                &operator,
                started,
                StatusCode::CONFLICT,
                format!("{}: {}", word(lang, "failed"), word(lang, name)),
                why,
                &back,
            );
        }
        Err(Preview::Store(e)) => {
            tracing::error!(actor = %operator.actor, action = name, error = %e, "console: reading for an action failed");
            return message(
                &c,
                &operator,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: {}", word(lang, "failed"), word(lang, name)),
                "the database could not be read; see the daemon's log".into(),
                &back,
            );
        }
    };
    if form.step != "run" {
        let hidden: Vec<_> = target_fields(name, &form)
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        return c.page(
            "confirm.html",
            &operator,
            started,
            json!({
                "page": "",
                "name": name,
                "title": word(lang, name),
                "what": what,
                "reason": actor.reason(),
                "hidden": hidden,
                "back": back,
            }),
        );
    }
    let now = c.clock.now();
    let store = &c.store;
    let target = form.agreement.trim();
    let result: Result<serde_json::Value, OperatorError> = match name {
        "pause" => operator::pause_agreement(store, &policy, now, &actor, target)
            .await
            .map(|r| json!(r)),
        "resume" => operator::resume_agreement(store, &policy, now, &actor, target)
            .await
            .map(|r| json!(r)),
        "record_payment" => {
            let request = RecordRequest {
                agreement: target.to_string(),
                amount: form.amount.trim().to_string(),
                reference: form.reference.trim().to_string(),
                received_at: None,
                settle: false,
            };
            operator::record_payment(store, &policy, now, &actor, &request)
                .await
                .map(|r| json!(r))
        }
        "revoke_mandate" => {
            operator::revoke_mandate(store, &policy, now, &actor, form.account.trim())
                .await
                .map(|r| json!(r))
        }
        "reinstate_mandate" => {
            operator::reinstate_mandate(store, &policy, now, &actor, form.account.trim())
                .await
                .map(|r| json!(r))
        }
        "requeue" => match form.attempt.trim().parse::<i64>() {
            Ok(id) => operator::requeue_attempt(store, now, &actor, id)
                .await
                .map(|r| json!(r)),
            Err(_) => Err(OperatorError::Refused(format!(
                "attempt {:?} is not an attempt id",
                form.attempt
            ))),
        },
        "waive_fee" => match form.charge.trim().parse::<i64>() {
            Ok(id) => {
                let amount = Some(form.amount.trim()).filter(|a| !a.is_empty());
                operator::waive_charge(store, now, &actor, id, amount)
                    .await
                    .map(|r| json!(r))
            }
            Err(_) => Err(OperatorError::Refused(format!(
                "charge {:?} is not a charge id",
                form.charge
            ))),
        },
        "resend_email" => match form.reminder.trim().parse::<i64>() {
            Ok(id) => operator::resend_email(store, now, &actor, id)
                .await
                .map(|r| json!(r)),
            Err(_) => Err(OperatorError::Refused(format!(
                "email {:?} is not an email id",
                form.reminder
            ))),
        },
        _ => Err(OperatorError::Refused("no such action".into())),
    };
    match result {
        Ok(done) => {
            tracing::info!(actor = %operator.actor, action = name, agreement = %target, "console: operator action done");
            message(
                &c,
                &operator,
                started,
                StatusCode::OK,
                format!("{}: {}", word(lang, "done"), word(lang, name)),
                summary(&done),
                &back,
            )
        }
        Err(OperatorError::Refused(why)) => message(
            &c,
            &operator,
            started,
            StatusCode::CONFLICT,
            format!("{}: {}", word(lang, "failed"), word(lang, name)),
            why,
            &back,
        ),
        Err(e) => {
            tracing::error!(actor = %operator.actor, action = name, error = %e, "console: operator action failed");
            message(
                &c,
                &operator,
                started,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{}: {}", word(lang, "failed"), word(lang, name)),
                "the database could not be written; see the daemon's log".into(),
                &back,
            )
        }
    }
}

/// Why an action's confirm page could not be made.
enum Preview {
    /// The target is not this agreement's, or not in a state the action takes.
    Refused(String),
    Store(crate::store::StoreError),
}

impl From<crate::store::StoreError> for Preview {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound { what, id } => {
                Preview::Refused(format!("{what} {id} not found"))
            }
            other => Preview::Store(other),
        }
    }
}

/// What the action will do, in the operator's language. A fee waiver and a resent email
/// read their charge or email (which must belong to the form's agreement); the other
/// actions say it from the form alone (the operator library refuses what does not fit).
async fn preview(c: &Console, lang: Lang, name: &str, f: &ActionForm) -> Result<String, Preview> {
    match name {
        "waive_fee" => preview_waiver(c, lang, f).await,
        "resend_email" => preview_resend(c, lang, f).await,
        _ => Ok(describe(lang, name, f)),
    }
}

async fn agreement_of_form(c: &Console, f: &ActionForm) -> Result<i64, Preview> {
    Ok(c.store.agreement_ref(f.agreement.trim()).await?.id)
}

async fn preview_waiver(c: &Console, lang: Lang, f: &ActionForm) -> Result<String, Preview> {
    let id: i64 = f
        .charge
        .trim()
        .parse()
        .map_err(|_| Preview::Refused(format!("charge {:?} is not a charge id", f.charge)))?;
    let agreement = agreement_of_form(c, f).await?;
    let charge = c
        .store
        .charge(id)
        .await?
        .filter(|g| g.agreement_id == agreement)
        .ok_or_else(|| {
            Preview::Refused(format!(
                "charge {id} is not a charge of agreement {}",
                f.agreement
            ))
        })?;
    let open = charge.open_minor();
    if open <= 0 {
        return Err(Preview::Refused(format!(
            "charge {id} is {}: nothing is open to waive",
            charge.status
        )));
    }
    let waive = match f.amount.trim() {
        "" => open,
        a => {
            let currency = crate::domain::Currency::parse(&charge.currency)
                .map_err(|e| Preview::Refused(e.to_string()))?;
            let m = crate::domain::Money::parse(a, currency)
                .map_err(|e| Preview::Refused(format!("amount {a:?}: {e}")))?;
            if m.minor() <= 0 || m.minor() > open {
                return Err(Preview::Refused(format!(
                    "amount {a}: a waiver of charge {id} must be more than nothing and at most \
                     the {} still open",
                    money(open, &charge.currency)
                )));
            }
            m.minor()
        }
    };
    let cur = charge.currency.as_str();
    let (waive, open_s, left) = (
        money(waive, cur),
        money(open, cur),
        money(open - waive, cur),
    );
    let agreement_id = &f.agreement;
    Ok(match lang {
        Lang::En => format!(
            "Charge {id} ({}, installment {}) of agreement {agreement_id}: {waive} of the {open_s} still open is waived, leaving {left} open. The next debit and every email from now on ask for the smaller amount; the waiver is recorded with your name and reason.",
            charge.kind, charge.installment_id
        ),
        Lang::ZhCn => format!(
            "协议 {agreement_id} 的费用 {id}（{}，分期 {}）：在未付的 {open_s} 中减免 {waive}，剩余 {left}。此后的扣款和邮件都按减免后的金额；减免记录操作人和原因。",
            charge.kind, charge.installment_id
        ),
    })
}

async fn preview_resend(c: &Console, lang: Lang, f: &ActionForm) -> Result<String, Preview> {
    let id: i64 = f
        .reminder
        .trim()
        .parse()
        .map_err(|_| Preview::Refused(format!("email {:?} is not an email id", f.reminder)))?;
    let agreement = agreement_of_form(c, f).await?;
    let r = c
        .store
        .reminder(id)
        .await?
        .filter(|r| r.agreement_id == agreement)
        .ok_or_else(|| {
            Preview::Refused(format!(
                "email {id} is not an email about agreement {}",
                f.agreement
            ))
        })?;
    let deferred = r.state == "pending" && r.last_error.is_some();
    if r.state != "failed" && !deferred {
        return Err(Preview::Refused(format!(
            "email {id} is {}: only a failed email, or one deferred after a mail server failure, can be sent again",
            r.state
        )));
    }
    let ctx = c.store.reminder_context(id).await?;
    let error = r
        .last_error
        .as_deref()
        .map(mask::emails_in)
        .unwrap_or_default();
    let to = mask::email(&ctx.email);
    // What the gate would find untrue now (docs/conversation.md); it checks again when
    // the email leaves, this only warns.
    let untrue = if r.kind != "debit_succeeded" && ctx.installment_status != "unpaid" {
        Some(match lang {
            Lang::En => format!("installment {} is {} now", ctx.seq, ctx.installment_status),
            Lang::ZhCn => format!("第{}期现为 {}", ctx.seq, ctx.installment_status),
        })
    } else if ctx.agreement_status != "active" && r.kind != "debit_succeeded" {
        Some(match lang {
            Lang::En => format!("the agreement is {} now", ctx.agreement_status),
            Lang::ZhCn => format!("协议现为 {}", ctx.agreement_status),
        })
    } else if r.kind == "upcoming" && ctx.mandate_status != "active" {
        Some(match lang {
            Lang::En => format!("the mandate is {} now", ctx.mandate_status),
            Lang::ZhCn => format!("扣款授权现为 {}", ctx.mandate_status),
        })
    } else {
        None
    };
    let (kind, seq, due) = (&r.kind, ctx.seq, &ctx.due_date);
    Ok(match lang {
        Lang::En => {
            let was = if deferred {
                "was deferred after"
            } else {
                "failed with"
            };
            let verdict = match untrue {
                Some(why) => format!(
                    " As things stand it is no longer true ({why}): the gate will cancel it rather than send it, and the timeline will say why."
                ),
                None => {
                    " What it says is still true now; the gate checks again at that moment.".into()
                }
            };
            format!(
                "Email {id} ({kind}, installment {seq} due {due}) to {to}, which {was} \"{error}\", is queued to be sent again now. Before it leaves, the conversation gate checks again what it says: if it is no longer true (the installment paid since, the agreement paused or cancelled, the mandate revoked) it is cancelled with the reason instead of sent. Quiet hours in the customer's time zone and the daily limit still apply, so it may leave later.{verdict}"
            )
        }
        Lang::ZhCn => {
            let was = if deferred {
                "因邮件服务器故障延迟"
            } else {
                "发送失败"
            };
            let verdict = match untrue {
                Some(why) => format!(
                    "按目前情况它已不再属实（{why}）：发送关卡会取消而不是发送，并在时间线上写明原因。"
                ),
                None => "目前内容仍属实；发出时会再次核对。".into(),
            };
            format!(
                "发给 {to} 的邮件 {id}（{kind}，第{seq}期，{due} 到期）{was}（“{error}”），现重新排队立即发送。发出前，发送关卡会再次核对内容：如已不属实（其后已还款、协议已暂停或取消、授权已撤销），则取消并记录原因，不会发送。客户时区的免打扰时段和每日上限仍然适用，因此可能稍后发出。{verdict}"
            )
        }
    })
}

/// A result's top-level fields as `key: value` text.
fn summary(done: &serde_json::Value) -> String {
    done.as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_array() && !v.is_object())
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}: {s}"),
                    other => format!("{k}: {other}"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn message(
    c: &Console,
    operator: &Operator,
    started: Instant,
    code: StatusCode,
    title: String,
    message: String,
    back: &str,
) -> Response {
    let mut page = c.page(
        "message.html",
        operator,
        started,
        json!({"page": "", "title": title, "message": message, "back": back}),
    );
    *page.status_mut() = code;
    page.into_response()
}

/// The action forms of an agreement page for a signed-in operator.
pub(crate) fn forms(
    agreement: &crate::store::agreements::AgreementRow,
    account: Option<&crate::store::agreements::FundingAccountRow>,
    rejected: &[(i64, i64)],
    charges: &[crate::store::delinquency::ChargeRow],
    emails: &[crate::store::reminders::ReminderRow],
    seq_of: &std::collections::BTreeMap<i64, i64>,
) -> Vec<serde_json::Value> {
    let hidden = |pairs: &[(&str, String)]| -> Vec<serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect()
    };
    let id = agreement.external_id.clone();
    let mut out = Vec::new();
    match agreement.status.as_str() {
        "active" => out.push(json!({"name": "pause", "target": id, "hidden": hidden(&[("agreement", id.clone())]), "fields": []})),
        "paused" => out.push(json!({"name": "resume", "target": id, "hidden": hidden(&[("agreement", id.clone())]), "fields": []})),
        _ => {}
    }
    if matches!(agreement.status.as_str(), "active" | "paused") {
        out.push(json!({
            "name": "record_payment", "target": id,
            "hidden": hidden(&[("agreement", id.clone())]),
            "fields": [
                {"name": "amount", "label": "amount", "value": "", "required": true},
                {"name": "reference", "label": "reference", "value": "", "required": true},
            ],
        }));
    }
    if let Some(f) = account {
        let name = match f.mandate_status.as_str() {
            "active" => Some("revoke_mandate"),
            "revoked" => Some("reinstate_mandate"),
            _ => None,
        };
        if let Some(name) = name {
            out.push(json!({
                "name": name, "target": crate::mask::account(&f.external_ref),
                "hidden": hidden(&[("agreement", id.clone()), ("account", f.external_ref.clone())]),
                "fields": [],
            }));
        }
    }
    // The charge picker: every charge with something still open.
    let open: Vec<serde_json::Value> = charges
        .iter()
        .filter(|g| g.open_minor() > 0)
        .map(|g| {
            let seq = seq_of.get(&g.installment_id).copied().unwrap_or_default();
            json!({
                "value": g.id.to_string(),
                "label": format!("#{} {} ({seq}): {}", g.id, g.kind, money(g.open_minor(), &g.currency)),
            })
        })
        .collect();
    if !open.is_empty() {
        out.push(json!({
            "name": "waive_fee", "target": "",
            "hidden": hidden(&[("agreement", id.clone())]),
            "fields": [
                {"name": "charge", "label": "charge", "options": open, "required": true},
                {"name": "amount", "label": "amount_optional", "value": "", "required": false},
            ],
        }));
    }
    // The email picker: failed ones, and those deferred after a mail server failure.
    let resendable: Vec<serde_json::Value> = emails
        .iter()
        .filter(|r| r.state == "failed" || (r.state == "pending" && r.last_error.is_some()))
        .map(|r| {
            let seq = seq_of.get(&r.installment_id).copied().unwrap_or_default();
            json!({
                "value": r.id.to_string(),
                "label": format!("#{} {} ({seq}), {}: {}", r.id, r.kind, r.state,
                    r.last_error.as_deref().map(mask::emails_in).unwrap_or_default()),
            })
        })
        .collect();
    if !resendable.is_empty() {
        out.push(json!({
            "name": "resend_email", "target": "",
            "hidden": hidden(&[("agreement", id.clone())]),
            "fields": [
                {"name": "reminder", "label": "email_to_resend", "options": resendable, "required": true},
            ],
        }));
    }
    for (attempt_id, attempt_no) in rejected {
        out.push(json!({
            "name": "requeue", "target": format!("#{attempt_no}"),
            "hidden": hidden(&[("agreement", id.clone()), ("attempt", attempt_id.to_string())]),
            "fields": [],
        }));
    }
    out
}
