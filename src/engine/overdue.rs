//! The delinquency assessment, a periodic job: for every agreement with an unpaid
//! installment past its grace period (or still flagged), compute days past due in the
//! customer's local date, the bucket and the credit flag, late fees, and write what
//! changed with its events, escalation emails and operations alerts in one fenced
//! transaction. It computes state from dates, so it is idempotent: safe to run on every
//! planner tick, and a day missed while the daemon was down is caught up (with one email
//! for the bucket the account is in now, not one per bucket it passed).

use super::{Engine, EngineError, parse_date, parse_tz};
use crate::clock::to_epoch_ms;
use crate::config::ConfigError;
use crate::domain::delinquency::{
    Bucket, Component, CreditFlag, DelinquencyRules, LateFeeKind, LateFeeRule, OpenInstallment,
};
use crate::domain::settlement::{DayCount, SettlementInterest, SettlementPolicy};
use crate::domain::{Currency, Money, worktime};
use crate::store::NewEvent;
use crate::store::delinquency::{
    DelinquencyCandidate, DelinquencyChange, DelinquencyState, NewCharge, PreviousState,
};
use crate::store::reminders::NewReminder;
use crate::store::{StoreError, debits::NewAttempt};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;

/// `[overdue]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverdueSettings {
    /// Run the delinquency assessment at all.
    pub enabled: bool,
    /// Days after the due date before an unpaid installment counts as overdue.
    pub grace_days: u32,
    /// Local time (customer's zone) at which a new day past due starts, e.g. "00:30".
    pub local_time: String,
    /// `[[overdue.buckets]]`, ascending by `from`.
    pub buckets: Vec<BucketSettings>,
    /// DPD from which the account is flagged `at_risk` (0: never).
    pub at_risk_after_days: u32,
    /// DPD from which the account is `reportable` to a credit bureau (0: never, and no
    /// credit warning is sent).
    pub credit_report_after_days: u32,
    /// The credit warning goes out this many days before it becomes reportable.
    pub credit_warning_days_before: u32,
    /// On entry into a bucket, plan one more debit attempt for the oldest overdue
    /// installment if its retries were used up after a short balance.
    pub retry_on_bucket_entry: bool,
    /// `[overdue.late_fee]`: none means no late fees.
    pub late_fee: Option<LateFeeSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSettings {
    pub name: String,
    pub from: u32,
    /// Email the customer on entry (default true).
    #[serde(default = "yes")]
    pub email: bool,
    /// Alert operations on entry (default false).
    #[serde(default)]
    pub alert: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LateFeeKindSetting {
    Fixed,
    Percent,
    Daily,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LateFeeSettings {
    /// fixed | percent | daily
    pub kind: LateFeeKindSetting,
    /// Fixed: the amount in major units of the agreement's currency, e.g. "25.00".
    #[serde(default)]
    pub amount: Option<String>,
    /// Percent: fraction of the overdue amount once ("0.05"); daily: per day ("0.0005").
    #[serde(default)]
    pub rate: Option<String>,
    /// The most one installment is charged in late fees, major units.
    #[serde(default)]
    pub cap: Option<String>,
    /// Daily only: compound on fees already charged. Default false.
    #[serde(default)]
    pub compound: bool,
}

/// `[payments]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// Order in which money received pays an installment's parts, oldest installment
    /// first: a permutation of penalties, fees, interest, principal.
    pub allocation: Vec<String>,
    /// `[payments.settlement]`: what an early settlement charges for the current period.
    pub settlement: SettlementSettings,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            allocation: ["penalties", "fees", "interest", "principal"]
                .map(String::from)
                .to_vec(),
            settlement: SettlementSettings::default(),
        }
    }
}

/// `[payments.settlement]` (see `domain::settlement`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementSettings {
    /// `principal_only` (the default) or `accrued`.
    pub interest: String,
    /// `act/365` (the default), `act/360` or `30/360`.
    pub day_count: String,
}

impl Default for SettlementSettings {
    fn default() -> Self {
        Self {
            interest: "principal_only".into(),
            day_count: "act/365".into(),
        }
    }
}

impl SettlementSettings {
    /// The policy, or the problems naming each bad key.
    pub fn policy(&self) -> Result<SettlementPolicy, Vec<ConfigError>> {
        let interest = SettlementInterest::parse(self.interest.trim());
        let day_count = DayCount::parse(self.day_count.trim());
        let mut problems = Vec::new();
        if interest.is_none() {
            problems.push(ConfigError::invalid(
                "payments.settlement.interest",
                format!(
                    "{:?} is not a settlement interest policy; expected one of {}",
                    self.interest,
                    SettlementInterest::NAMES.join(", ")
                ),
            ));
        }
        if day_count.is_none() {
            problems.push(ConfigError::invalid(
                "payments.settlement.day_count",
                format!(
                    "{:?} is not a day count; expected one of {}",
                    self.day_count,
                    DayCount::NAMES.join(", ")
                ),
            ));
        }
        match (interest, day_count) {
            (Some(interest), Some(day_count)) => Ok(SettlementPolicy {
                interest,
                day_count,
            }),
            _ => Err(problems),
        }
    }
}

impl PaymentSettings {
    pub fn order(&self) -> Vec<Component> {
        self.allocation
            .iter()
            .filter_map(|s| Component::parse(s))
            .collect()
    }

    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = self.settlement.policy().err().unwrap_or_default();
        problems.extend(self.check_allocation());
        problems
    }

    fn check_allocation(&self) -> Vec<ConfigError> {
        let order = self.order();
        let mut sorted: Vec<&str> = order.iter().map(|c| c.as_str()).collect();
        sorted.sort_unstable();
        if order.len() != self.allocation.len()
            || sorted != ["fees", "interest", "penalties", "principal"]
        {
            vec![ConfigError::invalid(
                "payments.allocation",
                format!(
                    "must name each of penalties, fees, interest, principal exactly once; got {:?}",
                    self.allocation
                ),
            )]
        } else {
            Vec::new()
        }
    }
}

impl Default for OverdueSettings {
    fn default() -> Self {
        let b = |name: &str, from, alert| BucketSettings {
            name: name.into(),
            from,
            email: true,
            alert,
        };
        Self {
            enabled: true,
            grace_days: 3,
            local_time: "00:30".into(),
            buckets: vec![
                b("1-30", 1, false),
                b("31-60", 31, true),
                b("61-90", 61, true),
                b("90+", 91, true),
            ],
            at_risk_after_days: 1,
            credit_report_after_days: 0,
            credit_warning_days_before: 10,
            retry_on_bucket_entry: true,
            late_fee: None,
        }
    }
}

/// The largest late-fee amount or cap, in major units: 10^13 minor units of a currency
/// with three decimals (the limit on every amount, `domain::MAX_MINOR`).
pub const MAX_LATE_FEE: i64 = 10_000_000_000;

fn decimal(key: &str, value: Option<&String>, problems: &mut Vec<ConfigError>) -> Option<Decimal> {
    let text = value?;
    match crate::domain::parse_decimal(text.trim()).ok_or(()) {
        Ok(d) if d < Decimal::ZERO => {
            problems.push(ConfigError::invalid(key, "must not be negative"));
            None
        }
        Ok(d) if d > Decimal::from(MAX_LATE_FEE) => {
            problems.push(ConfigError::invalid(
                key,
                format!("is {d}; must be at most {MAX_LATE_FEE}"),
            ));
            None
        }
        Ok(d) => Some(d),
        Err(()) => {
            problems.push(ConfigError::invalid(
                key,
                format!("{text:?} is not a decimal number (write it as a string, e.g. \"25.00\")"),
            ));
            None
        }
    }
}

impl LateFeeSettings {
    fn rule(&self, problems: &mut Vec<ConfigError>) -> Option<LateFeeRule> {
        let cap = decimal("overdue.late_fee.cap", self.cap.as_ref(), problems);
        let kind = match self.kind {
            LateFeeKindSetting::Fixed => {
                let Some(a) = decimal("overdue.late_fee.amount", self.amount.as_ref(), problems)
                else {
                    if self.amount.is_none() {
                        problems.push(ConfigError::invalid(
                            "overdue.late_fee.amount",
                            "is required with kind = \"fixed\"",
                        ));
                    }
                    return None;
                };
                LateFeeKind::Fixed(a)
            }
            LateFeeKindSetting::Percent | LateFeeKindSetting::Daily => {
                let Some(r) = decimal("overdue.late_fee.rate", self.rate.as_ref(), problems) else {
                    if self.rate.is_none() {
                        problems.push(ConfigError::invalid(
                            "overdue.late_fee.rate",
                            "is required with kind = \"percent\" or \"daily\"",
                        ));
                    }
                    return None;
                };
                if r > Decimal::ONE {
                    problems.push(ConfigError::invalid(
                        "overdue.late_fee.rate",
                        "is a fraction (0.05 = 5 %); above 1 is surely a mistake",
                    ));
                    return None;
                }
                if self.kind == LateFeeKindSetting::Percent {
                    LateFeeKind::Percent(r)
                } else {
                    LateFeeKind::DailyRate(r)
                }
            }
        };
        if self.compound && self.kind != LateFeeKindSetting::Daily {
            problems.push(ConfigError::invalid(
                "overdue.late_fee.compound",
                "only applies to kind = \"daily\"",
            ));
        }
        Some(LateFeeRule {
            kind,
            cap,
            compound: self.compound,
        })
    }
}

impl OverdueSettings {
    pub fn check(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        if let Err(e) = worktime::parse_local_time(&self.local_time) {
            problems.push(ConfigError::invalid("overdue.local_time", e.to_string()));
        }
        if self.enabled && self.buckets.is_empty() {
            problems.push(ConfigError::invalid(
                "overdue.buckets",
                "needs at least one bucket, e.g. { name = \"1-30\", from = 1 }",
            ));
        }
        let mut previous = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            if b.name.trim().is_empty() {
                problems.push(ConfigError::invalid(
                    format!("overdue.buckets[{i}].name"),
                    "must not be empty",
                ));
            }
            if b.from == 0 {
                problems.push(ConfigError::invalid(
                    format!("overdue.buckets[{i}].from"),
                    "must be at least 1 (days past due)",
                ));
            } else if b.from <= previous {
                problems.push(ConfigError::invalid(
                    format!("overdue.buckets[{i}].from"),
                    format!(
                        "must be greater than the previous bucket's from ({previous}): buckets ascend"
                    ),
                ));
            }
            previous = previous.max(b.from);
        }
        if self.credit_report_after_days > 0
            && self.credit_warning_days_before >= self.credit_report_after_days
        {
            problems.push(ConfigError::invalid(
                "overdue.credit_warning_days_before",
                format!(
                    "must be less than overdue.credit_report_after_days ({})",
                    self.credit_report_after_days
                ),
            ));
        }
        if self.grace_days > 60 {
            problems.push(ConfigError::invalid(
                "overdue.grace_days",
                "must be at most 60",
            ));
        }
        for (key, value) in [
            ("overdue.at_risk_after_days", self.at_risk_after_days),
            (
                "overdue.credit_report_after_days",
                self.credit_report_after_days,
            ),
            (
                "overdue.credit_warning_days_before",
                self.credit_warning_days_before,
            ),
        ] {
            problems.extend(crate::config::out_of_range(key, value, 0, 3_650));
        }
        for (i, b) in self.buckets.iter().enumerate() {
            problems.extend(crate::config::out_of_range(
                &format!("overdue.buckets[{i}].from"),
                b.from,
                0,
                3_650,
            ));
        }
        if let Some(fee) = &self.late_fee {
            fee.rule(&mut problems);
        }
        problems
    }
}

/// What the engine runs the assessment by.
#[derive(Debug, Clone)]
pub struct OverduePolicy {
    pub enabled: bool,
    pub rules: DelinquencyRules,
    pub late_fee: Option<LateFeeRule>,
    pub retry_on_bucket_entry: bool,
    pub allocation: Vec<Component>,
    /// What an early settlement charges for the current period.
    pub settlement: SettlementPolicy,
    pub alerts: super::alerts::AlertPolicy,
}

impl Default for OverduePolicy {
    /// Disabled: an engine built without overdue settings assesses nothing.
    fn default() -> Self {
        Self {
            enabled: false,
            rules: DelinquencyRules {
                grace_days: 3,
                local_time: chrono::NaiveTime::from_hms_opt(0, 30, 0).expect("valid"),
                buckets: Vec::new(),
                at_risk_after_days: None,
                credit_report_after_days: None,
                credit_warning_days_before: 0,
            },
            late_fee: None,
            retry_on_bucket_entry: false,
            allocation: PaymentSettings::default().order(),
            settlement: SettlementPolicy::default(),
            alerts: Default::default(),
        }
    }
}

impl OverduePolicy {
    /// Assumes the settings passed `check()`.
    pub fn from_settings(
        overdue: &OverdueSettings,
        payments: &PaymentSettings,
        alerts: &super::alerts::AlertSettings,
    ) -> anyhow::Result<Self> {
        let mut problems = Vec::new();
        let late_fee = overdue
            .late_fee
            .as_ref()
            .and_then(|f| f.rule(&mut problems));
        if let Some(p) = problems.into_iter().next() {
            return Err(p.into());
        }
        let nonzero = |d: u32| (d > 0).then_some(d);
        Ok(Self {
            enabled: overdue.enabled,
            rules: DelinquencyRules {
                grace_days: overdue.grace_days,
                local_time: worktime::parse_local_time(&overdue.local_time)?,
                buckets: overdue
                    .buckets
                    .iter()
                    .map(|b| Bucket {
                        name: b.name.clone(),
                        from: b.from,
                        email: b.email,
                        alert: b.alert,
                    })
                    .collect(),
                at_risk_after_days: nonzero(overdue.at_risk_after_days),
                credit_report_after_days: nonzero(overdue.credit_report_after_days),
                credit_warning_days_before: overdue.credit_warning_days_before,
            },
            late_fee,
            retry_on_bucket_entry: overdue.retry_on_bucket_entry,
            allocation: payments.order(),
            settlement: payments
                .settlement
                .policy()
                .map_err(|p| anyhow::Error::from(p.into_iter().next().expect("a problem")))?,
            alerts: super::alerts::AlertPolicy::from_settings(alerts),
        })
    }
}

/// What one assessment pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OverdueReport {
    pub examined: u64,
    pub changed: u64,
    pub cleared: u64,
    pub lost_race: u64,
}

/// The latest due date that can be overdue on any local date at `now`: local dates run at
/// most a day ahead of UTC.
pub fn overdue_cutoff(now: DateTime<Utc>, grace_days: u32) -> NaiveDate {
    now.date_naive() - Duration::days(i64::from(grace_days))
}

impl Engine {
    /// Assesses every agreement that may be overdue or is still flagged. Idempotent.
    #[tracing::instrument(skip_all, fields(owner = %self.owner))]
    pub async fn assess_overdue(&self) -> Result<OverdueReport, EngineError> {
        let policy = self.policy();
        let mut report = OverdueReport::default();
        if !policy.overdue.enabled {
            return Ok(report);
        }
        let now = self.clock.now();
        let cutoff = overdue_cutoff(now, policy.overdue.rules.grace_days)
            .format("%Y-%m-%d")
            .to_string();
        let mut after = 0_i64;
        loop {
            let batch = self
                .store
                .delinquency_candidates(&cutoff, after, 200)
                .await?;
            let Some(last) = batch.last() else { break };
            after = last.agreement_id;
            for c in batch {
                report.examined += 1;
                match self.assess_agreement(&c, now).await {
                    Ok(Some(cleared)) => {
                        report.changed += 1;
                        report.cleared += u64::from(cleared);
                    }
                    Ok(None) => {}
                    Err(EngineError::Store(StoreError::Fenced { .. })) => report.lost_race += 1,
                    Err(e) if e.is_retryable() => return Err(e),
                    Err(e) => {
                        tracing::error!(agreement_id = c.agreement_id, error = %e, "agreement could not be assessed; the others go on")
                    }
                }
            }
        }
        if report.changed > 0 {
            tracing::info!(
                examined = report.examined,
                changed = report.changed,
                cleared = report.cleared,
                "overdue assessment"
            );
        }
        Ok(report)
    }

    /// Assesses one agreement; `Some(cleared)` when its state changed.
    async fn assess_agreement(
        &self,
        c: &DelinquencyCandidate,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>, EngineError> {
        let policy = self.policy();
        let op = &policy.overdue;
        let rules = &op.rules;
        let now_ms = to_epoch_ms(now);
        let tz = parse_tz(&c.time_zone)?;
        let currency =
            Currency::parse(&c.currency).map_err(|e| EngineError::Data(e.to_string()))?;
        let on = rules.assessment_date(now, tz);
        let live = c.agreement_status == "active" || c.agreement_status == "paused";
        let open = if live {
            self.store.open_installments(c.agreement_id).await?
        } else {
            Vec::new()
        };
        let charges = if live && !open.is_empty() {
            self.store.charges_for_agreement(c.agreement_id).await?
        } else {
            Vec::new()
        };

        // Per installment: DPD, amount overdue, late fee to add.
        let mut amount_overdue = 0_i64;
        let mut oldest: Option<(NaiveDate, i64)> = None;
        let mut new_charges = Vec::new();
        let mut events = Vec::new();
        for inst in &open {
            let due = parse_date(&inst.due_date)?;
            let dpd = rules.days_past_due(due, on);
            if dpd == 0 {
                continue;
            }
            if oldest.is_none_or(|(d, _)| due < d) {
                oldest = Some((due, inst.id));
            }
            let unpaid = inst.total_minor - inst.paid_minor;
            let mut charges_open: i64 = charges
                .iter()
                .filter(|g| g.installment_id == inst.id)
                .map(|g| g.open_minor())
                .sum();
            if let Some(rule) = &op.late_fee {
                let charged: i64 = charges
                    .iter()
                    .filter(|g| g.installment_id == inst.id && g.kind == "late_fee")
                    .map(|g| g.amount_minor)
                    .sum();
                let target = rule.total_due(unpaid, dpd, currency.minor_digits());
                if target > charged {
                    let amount = target - charged;
                    new_charges.push(NewCharge {
                        installment_id: inst.id,
                        agreement_id: c.agreement_id,
                        kind: "late_fee",
                        accrual_key: i64::from(dpd),
                        amount_minor: amount,
                        currency: c.currency.clone(),
                    });
                    events.push(NewEvent {
                        at_ms: now_ms,
                        kind: "late_fee_charged",
                        agreement_id: Some(c.agreement_id),
                        installment_id: Some(inst.id),
                        attempt_id: None,
                        detail: serde_json::json!({
                            "dpd": dpd,
                            "amount": Money::from_minor(amount, currency).plain(),
                            "total_charged": Money::from_minor(target, currency).plain(),
                            "currency": currency.code(),
                        }),
                    });
                    charges_open += amount;
                }
            }
            amount_overdue += unpaid + charges_open;
        }
        let assessment = rules.assess(oldest.map(|(d, _)| d), on);
        let bucket_index = assessment.bucket_index.map(|i| i as i64);
        let next = DelinquencyState {
            dpd: i64::from(assessment.dpd),
            bucket_index,
            bucket: assessment
                .bucket_index
                .map(|i| rules.buckets[i].name.clone()),
            credit_flag: assessment.flag.as_str(),
            oldest_due_date: oldest.map(|(d, _)| d.format("%Y-%m-%d").to_string()),
            amount_overdue_minor: amount_overdue,
        };
        let previous = c.dpd.map(|dpd| PreviousState {
            dpd,
            bucket_index: c.bucket_index,
            credit_flag: c.credit_flag.clone().unwrap_or_else(|| "none".into()),
        });
        let prev_flag = previous
            .as_ref()
            .and_then(|p| CreditFlag::parse(&p.credit_flag))
            .unwrap_or(CreditFlag::None);
        let prev_dpd = previous.as_ref().map_or(0, |p| p.dpd);
        let prev_bucket = previous.as_ref().and_then(|p| p.bucket_index);
        let unchanged = match &previous {
            None => next.dpd == 0,
            Some(p) => {
                p.dpd == next.dpd
                    && p.bucket_index == next.bucket_index
                    && p.credit_flag == next.credit_flag
                    && c.amount_overdue_minor == Some(next.amount_overdue_minor)
            }
        };
        if unchanged && new_charges.is_empty() {
            return Ok(None);
        }

        let ev = |kind: &'static str, installment_id: Option<i64>, detail| NewEvent {
            at_ms: now_ms,
            kind,
            agreement_id: Some(c.agreement_id),
            installment_id,
            attempt_id: None,
            detail,
        };
        let oldest_id = oldest.map(|(_, id)| id);
        let bucket_name = |i: Option<i64>| {
            i.and_then(|i| rules.buckets.get(i as usize))
                .map(|b| b.name.clone())
        };
        let mut reminders = Vec::new();
        let mut alerts = Vec::new();
        let cleared = prev_dpd > 0 && next.dpd == 0
            || (prev_flag != CreditFlag::None && assessment.flag == CreditFlag::None);
        if cleared {
            events.push(ev(
                "delinquency_cleared",
                None,
                serde_json::json!({
                    "previous_dpd": prev_dpd, "previous_bucket": bucket_name(prev_bucket),
                    "previous_credit_flag": prev_flag.as_str(),
                }),
            ));
        }
        let entered_bucket = match (prev_bucket, bucket_index) {
            (_, None) => None,
            (None, Some(n)) => Some(n),
            (Some(p), Some(n)) if n > p => Some(n),
            _ => None,
        };
        if prev_bucket != bucket_index && next.dpd > 0 {
            events.push(ev(
                "delinquency_bucket_changed",
                oldest_id,
                serde_json::json!({
                    "from": bucket_name(prev_bucket), "to": next.bucket, "dpd": next.dpd,
                    "amount_overdue": Money::from_minor(amount_overdue, currency).plain(),
                    "currency": currency.code(),
                }),
            ));
        }
        if prev_flag != assessment.flag && assessment.flag != CreditFlag::None {
            events.push(ev(
                "credit_flag_changed",
                oldest_id,
                serde_json::json!({
                    "from": prev_flag.as_str(), "to": assessment.flag.as_str(), "dpd": next.dpd,
                }),
            ));
        }
        // When to email: the reminder local time today, out of quiet hours, never before now.
        let send_at = {
            let today = worktime::local_date(now, tz);
            let at = worktime::local_instant(today, policy.reminders.local_time, tz).max(now);
            to_epoch_ms(policy.reminders.quiet.next_allowed(at, tz))
        };
        let payload = |kind: &str| {
            serde_json::json!({
                "kind": kind,
                "at": now.to_rfc3339(),
                "agreement": c.agreement_external_id,
                "agreement_id": c.agreement_id,
                "dpd": next.dpd,
                "bucket": next.bucket,
                "credit_flag": next.credit_flag,
                "amount_overdue": Money::from_minor(amount_overdue, currency).plain(),
                "currency": currency.code(),
                "oldest_due_date": next.oldest_due_date,
            })
        };
        if let (Some(idx), Some(inst_id)) = (entered_bucket, oldest_id) {
            let bucket = &rules.buckets[idx as usize];
            if bucket.email && self.mail.is_some() && c.agreement_status == "active" {
                reminders.push(NewReminder {
                    installment_id: inst_id,
                    agreement_id: c.agreement_id,
                    kind: "overdue",
                    offset_key: idx,
                    scheduled_at_ms: send_at,
                    detail: serde_json::json!({"bucket": bucket.name, "dpd": next.dpd}),
                });
            }
            if bucket.alert {
                alerts.extend(op.alerts.rows(
                    "overdue_bucket_entered",
                    &format!("bucket-a{}-i{inst_id}-b{idx}", c.agreement_id),
                    Some(c.agreement_id),
                    None,
                    payload("overdue_bucket_entered"),
                    now_ms,
                ));
            }
        }
        if let (Some(warn_dpd), Some(inst_id)) = (rules.credit_warning_dpd(), oldest_id)
            && next.dpd >= i64::from(warn_dpd)
            && assessment.flag != CreditFlag::Reportable
            && self.mail.is_some()
            && c.agreement_status == "active"
        {
            reminders.push(NewReminder {
                installment_id: inst_id,
                agreement_id: c.agreement_id,
                kind: "credit_warning",
                offset_key: i64::from(warn_dpd),
                scheduled_at_ms: send_at,
                detail: serde_json::json!({"dpd": next.dpd}),
            });
        }
        if assessment.flag == CreditFlag::Reportable
            && prev_flag != CreditFlag::Reportable
            && op.alerts.on_reportable
            && let Some(inst_id) = oldest_id
        {
            alerts.extend(op.alerts.rows(
                "account_reportable",
                &format!("reportable-a{}-i{inst_id}", c.agreement_id),
                Some(c.agreement_id),
                None,
                payload("account_reportable"),
                now_ms,
            ));
        }
        let change = DelinquencyChange {
            agreement_id: c.agreement_id,
            previous,
            next: next.clone(),
            events,
            reminders,
            charges: new_charges,
            alerts,
            cancel_escalations: next.dpd == 0,
            now_ms,
        };
        self.store.apply_delinquency(&change).await?;
        if prev_bucket != bucket_index {
            tracing::info!(
                agreement_id = c.agreement_id,
                dpd = next.dpd,
                bucket = next.bucket.as_deref().unwrap_or("current"),
                credit_flag = next.credit_flag,
                "delinquency changed"
            );
        }
        if let (Some(bucket), Some(inst_id)) = (entered_bucket, oldest_id)
            && op.retry_on_bucket_entry
            && c.agreement_status == "active"
        {
            self.retry_on_bucket_entry(c, inst_id, bucket, now).await?;
        }
        Ok(Some(cleared))
    }

    /// Plans one more attempt for an installment whose retries ran out on a short balance
    /// (its last attempt ended `insufficient_funds` and nothing is planned): the customer
    /// may have topped up since. Never after a hard decline, a blocked debit or while one
    /// is in flight.
    async fn retry_on_bucket_entry(
        &self,
        c: &DelinquencyCandidate,
        installment_id: i64,
        bucket_index: i64,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let attempts = self.store.attempts_for_installment(installment_id).await?;
        let Some(last) = attempts.last() else {
            return Ok(());
        };
        if last.state != "insufficient_funds" {
            return Ok(());
        }
        let policy = self.policy();
        let tz = parse_tz(&c.time_zone)?;
        let today = worktime::local_date(now, tz);
        let mut at = worktime::local_instant(today, policy.debit.local_time, tz);
        if at < now {
            at = worktime::local_instant(today + Duration::days(1), policy.debit.local_time, tz);
        }
        let open = self.store.open_installments(c.agreement_id).await?;
        let Some(inst) = open.iter().find(|i| i.id == installment_id) else {
            return Ok(());
        };
        let attempt_no = last.attempt_no + 1;
        let attempt = NewAttempt {
            installment_id,
            agreement_id: c.agreement_id,
            attempt_no,
            idempotency_key: Self::idempotency_key(
                &policy.debit.key_prefix,
                self.deployment_id().await?,
                installment_id,
                attempt_no,
            ),
            scheduled_at_ms: to_epoch_ms(at),
            amount_minor: inst.total_minor - inst.paid_minor,
            currency: c.currency.clone(),
            retry_reason: None,
        };
        let event = NewEvent {
            at_ms: to_epoch_ms(now),
            kind: "debit_attempt_planned",
            agreement_id: Some(c.agreement_id),
            installment_id: Some(installment_id),
            attempt_id: None,
            detail: serde_json::json!({
                "attempt_no": attempt_no, "scheduled_at": at.to_rfc3339(),
                "reason": "overdue_bucket_entered", "bucket_index": bucket_index,
            }),
        };
        self.store.insert_attempt(&attempt, &event).await?;
        Ok(())
    }
}

/// Builds the allocator's view of an agreement's open installments and charges.
pub fn open_for_allocation(
    open: &[crate::store::delinquency::OpenInstallmentRow],
    charges: &[crate::store::delinquency::ChargeRow],
) -> Result<Vec<OpenInstallment>, EngineError> {
    open.iter()
        .map(|i| {
            Ok(OpenInstallment {
                installment_id: i.id,
                due_date: parse_date(&i.due_date)?,
                principal_minor: i.principal_minor,
                interest_minor: i.interest_minor,
                fee_minor: i.fee_minor,
                paid_minor: i.paid_minor,
                charges: charges
                    .iter()
                    .filter(|g| g.installment_id == i.id && g.status == "open")
                    .map(|g| (g.id, g.open_minor()))
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(problems: Vec<ConfigError>) -> Vec<String> {
        problems
            .into_iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key,
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn defaults_pass_and_bad_buckets_are_named() {
        assert!(OverdueSettings::default().check().is_empty());
        assert!(PaymentSettings::default().check().is_empty());
        let mut s = OverdueSettings::default();
        s.buckets[2].from = 20;
        s.buckets[0].from = 0;
        s.credit_report_after_days = 10;
        s.credit_warning_days_before = 10;
        s.late_fee = Some(LateFeeSettings {
            kind: LateFeeKindSetting::Percent,
            amount: None,
            rate: Some("five".into()),
            cap: None,
            compound: false,
        });
        assert_eq!(
            keys(s.check()),
            vec![
                "overdue.buckets[0].from",
                "overdue.buckets[2].from",
                "overdue.credit_warning_days_before",
                "overdue.late_fee.rate",
            ]
        );
        let p = PaymentSettings {
            allocation: vec!["principal".into(), "principal".into(), "fees".into()],
            ..Default::default()
        };
        assert_eq!(keys(p.check()), vec!["payments.allocation"]);
        let p: PaymentSettings =
            toml::from_str("[settlement]\ninterest = \"accrue\"\nday_count = \"ACT/365\"").unwrap();
        let text: Vec<String> = p.check().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            keys(p.check()),
            vec![
                "payments.settlement.interest",
                "payments.settlement.day_count"
            ]
        );
        assert!(
            text[0].contains("\"accrue\"") && text[0].contains("accrued, principal_only"),
            "{text:?}"
        );
        assert!(text[1].contains("act/365, act/360, 30/360"), "{text:?}");
        let p: PaymentSettings =
            toml::from_str("[settlement]\ninterest = \"accrued\"\nday_count = \"30/360\"").unwrap();
        assert!(p.check().is_empty());
        assert_eq!(
            p.settlement.policy().unwrap(),
            SettlementPolicy {
                interest: SettlementInterest::Accrued,
                day_count: DayCount::Thirty360
            }
        );
        assert!(toml::from_str::<PaymentSettings>("[settlement]\ndays = \"x\"").is_err());
    }
}
