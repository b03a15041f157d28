//! The console's words in English and Simplified Chinese. Templates call `t("key")`; a
//! key with no entry prints itself, so a missing translation shows, never breaks a page.

/// The console's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    ZhCn,
}

impl Lang {
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// `zh`, `zh-CN`, `zh-Hans` ... are Chinese; anything else English.
    pub fn from_tag(tag: &str) -> Lang {
        if tag.trim().to_ascii_lowercase().starts_with("zh") {
            Lang::ZhCn
        } else {
            Lang::En
        }
    }

    /// The first language of an `Accept-Language` header the console speaks.
    pub fn from_accept_language(header: &str) -> Lang {
        header
            .split(',')
            .map(|part| part.split(';').next().unwrap_or("").trim())
            .find_map(|tag| {
                let lower = tag.to_ascii_lowercase();
                if lower.starts_with("zh") {
                    Some(Lang::ZhCn)
                } else if lower.starts_with("en") {
                    Some(Lang::En)
                } else {
                    None
                }
            })
            .unwrap_or(Lang::En)
    }
}

/// (key, English, Chinese).
const WORDS: &[(&str, &str, &str)] = &[
    ("console", "repayd console", "repayd 控制台"),
    ("today", "Today", "今日"),
    ("overdue", "Overdue", "逾期"),
    ("queues", "Queues", "队列"),
    ("search", "Search", "搜索"),
    ("sign_in", "Sign in", "登录"),
    ("sign_out", "Sign out", "退出"),
    ("user", "User", "用户"),
    ("password", "Password or token", "密码或令牌"),
    ("signed_in_as", "Signed in as", "当前用户"),
    ("bad_login", "Wrong user or password.", "用户名或密码错误。"),
    ("due_on", "Due on", "到期日"),
    ("currency", "Currency", "币种"),
    ("figure", "Figure", "指标"),
    ("count", "Count", "笔数"),
    ("amount", "Amount", "金额"),
    ("due", "Due", "应收"),
    ("funds_checked", "Funds checked", "已查余额"),
    ("debited", "Debited", "已扣款"),
    ("short", "Short of funds", "余额不足"),
    ("declined", "Declined", "被拒绝"),
    ("pending", "Pending", "处理中"),
    ("unknown", "Unknown (looking up)", "结果未知（查询中）"),
    ("not_yet", "Not attempted yet / other", "尚未扣款 / 其他"),
    ("collected", "Collected", "已收回"),
    ("collection_rate", "Collection rate", "回收率"),
    ("last_30_days", "Last 30 days", "最近 30 天"),
    (
        "chart_legend",
        "bars: due; dark: collected",
        "浅色：应收；深色：已收回",
    ),
    (
        "nothing_due",
        "Nothing falls due on this day.",
        "当日没有到期款项。",
    ),
    ("bucket", "Bucket", "逾期档"),
    ("agreements", "Agreements", "协议"),
    (
        "movement",
        "Movement in the last 24 hours",
        "最近 24 小时变动",
    ),
    ("newly_overdue", "Became overdue", "新增逾期"),
    ("moved_into", "Moved into", "进入"),
    ("cleared", "No longer overdue", "不再逾期"),
    (
        "credit_warning_list",
        "Reportable to the credit bureau within 14 days",
        "14 天内将报送征信",
    ),
    (
        "credit_off",
        "Credit reporting is off (overdue.credit_report_after_days = 0).",
        "未启用征信报送（overdue.credit_report_after_days = 0）。",
    ),
    ("days_past_due", "Days past due", "逾期天数"),
    ("reportable_in", "Reportable in (days)", "距报送（天）"),
    ("customer", "Customer", "客户"),
    ("agreement", "Agreement", "协议"),
    ("email", "Email", "邮箱"),
    ("none", "None.", "无。"),
    ("of_total", "shown of", "条，共"),
    (
        "retries_by_day",
        "Retries planned by day (next 14 days)",
        "按日计划的重试（未来 14 天）",
    ),
    ("day", "Day", "日期"),
    (
        "lookups",
        "Unknown outcomes being looked up",
        "结果未知、正在查询的扣款",
    ),
    (
        "rejected",
        "Rejected attempts waiting for a human",
        "被拒绝、待人工处理的扣款",
    ),
    ("deferred_emails", "Deferred emails", "延迟发送的邮件"),
    ("failed_emails", "Failed emails", "发送失败的邮件"),
    ("attempt", "Attempt", "尝试"),
    ("state", "State", "状态"),
    ("reason", "Reason", "原因"),
    ("when", "When", "时间"),
    ("kind", "Kind", "类型"),
    ("tries", "Tries", "次数"),
    ("debit_key", "Debit key", "扣款键"),
    ("status", "Status", "状态"),
    ("schedule", "Schedule", "还款计划"),
    ("seq", "No.", "期"),
    ("paid", "Paid", "已还"),
    ("unpaid", "Unpaid", "未还"),
    ("charges", "Charges", "费用"),
    (
        "funding_accounts",
        "Funding accounts and mandates",
        "扣款账户与授权",
    ),
    ("account", "Account", "账户"),
    ("mandate", "Mandate", "授权"),
    ("attempts", "Debit attempts", "扣款尝试"),
    ("payments", "Payments", "还款"),
    ("reference", "Reference", "参考号"),
    ("timeline", "Timeline", "时间线"),
    ("email_as_sent", "The email as sent", "已发送的邮件"),
    ("delinquency", "Overdue state", "逾期状态"),
    ("total", "Total", "合计"),
    (
        "search_hint",
        "Customer id, agreement id, name, email or debit key",
        "客户编号、协议编号、姓名、邮箱或扣款键",
    ),
    ("no_hits", "Nothing found.", "未找到。"),
    ("not_found", "Not found.", "未找到。"),
    ("time_zone", "Time zone", "时区"),
    ("locale", "Language", "语言"),
    ("actions", "Actions", "操作"),
    ("confirm", "Confirm", "确认"),
    ("cancel", "Cancel", "取消"),
    ("will_happen", "This will happen", "将执行以下操作"),
    ("reason_required", "A reason is required.", "必须填写原因。"),
    ("done", "Done", "完成"),
    ("failed", "Failed", "失败"),
    ("back", "Back", "返回"),
    ("pause", "Pause agreement", "暂停协议"),
    ("resume", "Resume agreement", "恢复协议"),
    ("record_payment", "Record a payment", "登记还款"),
    ("waive_fee", "Waive fee", "减免费用"),
    ("revoke_mandate", "Revoke mandate", "撤销授权"),
    ("reinstate_mandate", "Reinstate mandate", "恢复授权"),
    ("requeue", "Re-queue attempt", "重新排队扣款"),
    ("resend_email", "Resend email", "重新发送邮件"),
    ("charge", "Charge", "费用项"),
    (
        "amount_optional",
        "Amount (blank: all that is open)",
        "金额（留空：全部未付部分）",
    ),
    ("email_to_resend", "Email", "邮件"),
    ("waived", "Waived", "已减免"),
    ("time_zone_of_day", "operations time zone", "运营时区"),
    ("continue", "Continue", "继续"),
    ("actor", "By", "操作人"),
    ("generated_in", "Page made in", "页面生成用时"),
];

/// The word for `key` in `lang`.
pub fn word(lang: Lang, key: &str) -> String {
    WORDS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, en, zh)| match lang {
            Lang::En => *en,
            Lang::ZhCn => *zh,
        })
        .unwrap_or(key)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_once_and_both_languages_filled() {
        let mut keys: Vec<&str> = WORDS.iter().map(|(k, _, _)| *k).collect();
        keys.sort_unstable();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, keys.len(), "a key appears twice");
        assert!(
            WORDS
                .iter()
                .all(|(_, en, zh)| !en.is_empty() && !zh.is_empty())
        );
        assert_eq!(word(Lang::ZhCn, "today"), "今日");
        assert_eq!(word(Lang::En, "no_such_key"), "no_such_key");
        assert_eq!(
            Lang::from_accept_language("fr, zh-CN;q=0.8, en"),
            Lang::ZhCn
        );
        assert_eq!(Lang::from_accept_language("de"), Lang::En);
    }
}
