//! The console's operator actions, each in two steps: the form on the agreement page
//! posts `step=confirm` and gets a page saying what will happen, whose Confirm button
//! posts `step=run`. Both steps need the session's CSRF token and a reason; the actor is
//! the signed-in operator. The actions themselves are [`crate::engine::operator`]'s
//! functions, the same the command line calls: the console writes nothing itself.

use super::i18n::{Lang, word};
use super::{Console, Operator, refused};
use crate::engine::operator::{self, Actor, OperatorError, RecordRequest};
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
                "what": describe(lang, name, &form),
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
    for (attempt_id, attempt_no) in rejected {
        out.push(json!({
            "name": "requeue", "target": format!("#{attempt_no}"),
            "hidden": hidden(&[("agreement", id.clone()), ("attempt", attempt_id.to_string())]),
            "fields": [],
        }));
    }
    out
}
