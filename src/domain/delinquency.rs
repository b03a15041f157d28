//! Delinquency rules, pure: days past due (DPD) from local dates, buckets, the credit
//! flag, the credit-warning day, late fees, and how money received is allocated over
//! charges and installment components. No I/O, no clock: callers pass the instant.
//!
//! DPD is counted from the end of the grace period: an installment due on D with
//! `grace_days = G` is 1 DPD from `local_time` (e.g. 00:30) in the customer's time zone on
//! day D + G + 1, 2 DPD a day later, and so on. The agreement's DPD is that of its oldest
//! unpaid installment.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// A named range of days past due; a bucket runs from its `from` to the next one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    /// First DPD in this bucket (at least 1).
    pub from: u32,
    /// Email the customer on entry into this bucket.
    pub email: bool,
    /// Alert operations on entry into this bucket.
    pub alert: bool,
}

/// The credit flag of an agreement, in increasing severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditFlag {
    None,
    /// Overdue: it will be reported if it stays unpaid.
    AtRisk,
    /// Past `credit_report_after_days`: the lender may report it to a credit bureau.
    Reportable,
}

impl CreditFlag {
    pub fn as_str(&self) -> &'static str {
        match self {
            CreditFlag::None => "none",
            CreditFlag::AtRisk => "at_risk",
            CreditFlag::Reportable => "reportable",
        }
    }

    pub fn parse(s: &str) -> Option<CreditFlag> {
        match s {
            "none" => Some(CreditFlag::None),
            "at_risk" => Some(CreditFlag::AtRisk),
            "reportable" => Some(CreditFlag::Reportable),
            _ => None,
        }
    }
}

/// The rules an assessment runs by (from `[overdue]`, checked by the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelinquencyRules {
    pub grace_days: u32,
    /// Local time at which the day's assessment counts (an installment becomes 1 DPD at
    /// this time on the day after due date + grace).
    pub local_time: NaiveTime,
    /// Sorted by `from`, strictly increasing, the first from at least 1.
    pub buckets: Vec<Bucket>,
    /// DPD from which the flag is `at_risk`; `None`: never.
    pub at_risk_after_days: Option<u32>,
    /// DPD from which the flag is `reportable`; `None`: never.
    pub credit_report_after_days: Option<u32>,
    /// How many days before it becomes reportable the customer is warned.
    pub credit_warning_days_before: u32,
}

/// What an agreement's (or an installment's) state is on one assessment date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub dpd: u32,
    pub bucket_index: Option<usize>,
    pub flag: CreditFlag,
}

impl DelinquencyRules {
    /// The latest local date whose assessment time has passed at `now` in `tz`: before
    /// 00:30 on the 21st it is still the 20th.
    pub fn assessment_date(&self, now: DateTime<Utc>, tz: Tz) -> NaiveDate {
        let local = now.with_timezone(&tz).naive_local();
        if local.time() >= self.local_time {
            local.date()
        } else {
            local.date() - Duration::days(1)
        }
    }

    /// Days past due of an installment due on `due`, as of the assessment date `on`.
    pub fn days_past_due(&self, due: NaiveDate, on: NaiveDate) -> u32 {
        let days = (on - due).num_days() - i64::from(self.grace_days);
        u32::try_from(days.max(0)).unwrap_or(u32::MAX)
    }

    /// The bucket a DPD falls in: the last whose `from` it has reached.
    pub fn bucket(&self, dpd: u32) -> Option<usize> {
        if dpd == 0 {
            return None;
        }
        self.buckets.iter().rposition(|b| dpd >= b.from)
    }

    pub fn flag(&self, dpd: u32) -> CreditFlag {
        if dpd == 0 {
            CreditFlag::None
        } else if self.credit_report_after_days.is_some_and(|r| dpd >= r) {
            CreditFlag::Reportable
        } else if self.at_risk_after_days.is_some_and(|r| dpd >= r) {
            CreditFlag::AtRisk
        } else {
            CreditFlag::None
        }
    }

    /// The DPD on which the credit warning goes out, if reporting is configured.
    pub fn credit_warning_dpd(&self) -> Option<u32> {
        self.credit_report_after_days
            .map(|r| r.saturating_sub(self.credit_warning_days_before).max(1))
    }

    /// The local date on which an installment due on `due` becomes reportable; the
    /// customer must pay before that day's assessment time (the email says: by the end
    /// of the day before).
    pub fn reportable_on(&self, due: NaiveDate) -> Option<NaiveDate> {
        self.credit_report_after_days
            .map(|r| due + Duration::days(i64::from(self.grace_days) + i64::from(r)))
    }

    /// The state of an agreement whose oldest unpaid installment is due on `oldest_due`.
    pub fn assess(&self, oldest_due: Option<NaiveDate>, on: NaiveDate) -> Assessment {
        let dpd = oldest_due.map_or(0, |d| self.days_past_due(d, on));
        Assessment {
            dpd,
            bucket_index: self.bucket(dpd),
            flag: self.flag(dpd),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Late fees.

/// How a late fee is computed for one overdue installment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateFeeKind {
    /// A fixed amount, once, when the installment becomes overdue.
    Fixed(Decimal),
    /// A fraction of the overdue amount (0.05 = 5 %), once.
    Percent(Decimal),
    /// A fraction of the overdue amount per day past due (0.0005 = 0.05 % a day).
    DailyRate(Decimal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateFeeRule {
    pub kind: LateFeeKind,
    /// The most one installment is ever charged in late fees, in major units.
    pub cap: Option<Decimal>,
    /// Daily rate only: charge the rate on the fees already charged too. Off by default.
    pub compound: bool,
}

/// Rounds a non-negative decimal amount to whole minor units (half away from zero), at
/// most [`MAX_MINOR`](super::money::MAX_MINOR): a fee never overflows a sum.
fn to_minor(amount: Decimal, minor_digits: u32) -> i64 {
    let max = super::money::MAX_MINOR;
    let Some(scaled) = amount.checked_mul(Decimal::from(10_i64.pow(minor_digits))) else {
        return max;
    };
    let scaled = scaled.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(scaled).unwrap_or(max).clamp(0, max)
}

impl LateFeeRule {
    /// The total late fee an installment should have been charged by `dpd` days past
    /// due, when `overdue_minor` of it is unpaid: the caller charges the difference to
    /// what was charged already (never less: fees are not refunded by this rule). Capped.
    pub fn total_due(&self, overdue_minor: i64, dpd: u32, minor_digits: u32) -> i64 {
        if dpd == 0 || overdue_minor <= 0 {
            return 0;
        }
        let unit = Decimal::new(1, minor_digits);
        let base = Decimal::from(overdue_minor) * unit;
        // The most any fee can be (MAX_MINOR); every step is checked, so settings at the
        // edge of their range saturate there instead of overflowing.
        let ceiling = Decimal::from(super::money::MAX_MINOR) * unit;
        let amount = match &self.kind {
            LateFeeKind::Fixed(a) => *a,
            LateFeeKind::Percent(r) => base.checked_mul(*r).unwrap_or(ceiling),
            LateFeeKind::DailyRate(r) if self.compound => {
                // base * ((1 + r)^dpd - 1), exact decimal steps.
                let mut grown = base;
                for _ in 0..dpd {
                    grown = match grown.checked_mul(*r).and_then(|g| grown.checked_add(g)) {
                        Some(g) => g,
                        None => break,
                    };
                    if self.cap.is_some_and(|cap| grown - base >= cap) || grown - base >= ceiling {
                        break;
                    }
                }
                grown - base
            }
            LateFeeKind::DailyRate(r) => base
                .checked_mul(*r)
                .and_then(|x| x.checked_mul(Decimal::from(dpd)))
                .unwrap_or(ceiling),
        };
        let amount = match self.cap {
            Some(cap) => amount.min(cap),
            None => amount,
        };
        to_minor(amount.max(Decimal::ZERO), minor_digits)
    }
}

// ---------------------------------------------------------------------------------------
// Allocation of money received.

/// The parts money owed on an installment is made of, in the names of
/// `payments.allocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Late fees and other charge lines.
    Penalties,
    Fees,
    Interest,
    Principal,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Penalties,
        Component::Fees,
        Component::Interest,
        Component::Principal,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Component::Penalties => "penalties",
            Component::Fees => "fees",
            Component::Interest => "interest",
            Component::Principal => "principal",
        }
    }

    pub fn parse(s: &str) -> Option<Component> {
        Component::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// One open installment as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInstallment {
    pub installment_id: i64,
    pub due_date: NaiveDate,
    pub principal_minor: i64,
    pub interest_minor: i64,
    pub fee_minor: i64,
    pub paid_minor: i64,
    /// Open charge lines of this installment: (charge id, still owed), oldest first.
    pub charges: Vec<(i64, i64)>,
}

/// Open amount per schedule component (fees, interest, principal) of an installment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ComponentsOpen {
    pub fees: i64,
    pub interest: i64,
    pub principal: i64,
}

impl ComponentsOpen {
    pub fn total(&self) -> i64 {
        self.fees + self.interest + self.principal
    }

    fn get_mut(&mut self, c: Component) -> Option<&mut i64> {
        match c {
            Component::Fees => Some(&mut self.fees),
            Component::Interest => Some(&mut self.interest),
            Component::Principal => Some(&mut self.principal),
            Component::Penalties => None,
        }
    }
}

impl OpenInstallment {
    /// What is still open of each component. The store keeps one `paid_minor` per
    /// installment, so earlier payments are taken to have gone in the same `order`.
    pub fn components_open(&self, order: &[Component]) -> ComponentsOpen {
        let mut open = ComponentsOpen {
            fees: self.fee_minor,
            interest: self.interest_minor,
            principal: self.principal_minor,
        };
        let mut paid = self.paid_minor;
        for c in order {
            if let Some(slot) = open.get_mut(*c) {
                let take = paid.min(*slot);
                *slot -= take;
                paid -= take;
            }
        }
        open
    }

    pub fn charges_open(&self) -> i64 {
        self.charges.iter().map(|(_, m)| *m).sum()
    }
}

/// One slice of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocation {
    pub installment_id: i64,
    pub charge_id: Option<i64>,
    pub component: Component,
    pub amount_minor: i64,
}

/// Allocates `amount_minor` over `installments` oldest due date first, within each in the
/// component `order` (charges are `penalties`). Returns the slices and what is left over.
pub fn allocate(
    order: &[Component],
    installments: &[OpenInstallment],
    amount_minor: i64,
) -> (Vec<Allocation>, i64) {
    let mut sorted: Vec<&OpenInstallment> = installments.iter().collect();
    sorted.sort_by_key(|i| (i.due_date, i.installment_id));
    let mut left = amount_minor.max(0);
    let mut out = Vec::new();
    for inst in sorted {
        let mut open = inst.components_open(order);
        for c in order {
            if left == 0 {
                break;
            }
            if *c == Component::Penalties {
                for (charge_id, owed) in &inst.charges {
                    let take = left.min(*owed);
                    if take > 0 {
                        out.push(Allocation {
                            installment_id: inst.installment_id,
                            charge_id: Some(*charge_id),
                            component: Component::Penalties,
                            amount_minor: take,
                        });
                        left -= take;
                    }
                }
            } else if let Some(slot) = open.get_mut(*c) {
                let take = left.min(*slot);
                if take > 0 {
                    out.push(Allocation {
                        installment_id: inst.installment_id,
                        charge_id: None,
                        component: *c,
                        amount_minor: take,
                    });
                    *slot -= take;
                    left -= take;
                }
            }
        }
    }
    (out, left)
}

/// What settling an agreement early costs on `today` (the customer's local date): every
/// open charge, everything of installments already due, the principal of installments
/// not yet due, and the interest accrued since the last due date when the policy asks for
/// it (`accrued_minor`, see `domain::settlement`). The rest of the future interest and
/// fees is waived.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SettlementQuote {
    pub charges_minor: i64,
    pub due_minor: i64,
    pub future_principal_minor: i64,
    /// Accrued interest charged: the accrual asked for, capped at the interest the
    /// schedule still holds for the installments not yet due (a settlement never costs
    /// more interest than paying on schedule would).
    pub accrued_interest_minor: i64,
    pub waived_interest_minor: i64,
    pub waived_fees_minor: i64,
}

impl SettlementQuote {
    pub fn total_minor(&self) -> i64 {
        self.charges_minor
            + self.due_minor
            + self.future_principal_minor
            + self.accrued_interest_minor
    }

    pub fn waived_minor(&self) -> i64 {
        self.waived_interest_minor + self.waived_fees_minor
    }
}

/// Installments not yet due on `today`, oldest first.
fn not_yet_due(installments: &[OpenInstallment], today: NaiveDate) -> Vec<&OpenInstallment> {
    let mut future: Vec<&OpenInstallment> =
        installments.iter().filter(|i| i.due_date > today).collect();
    future.sort_by_key(|i| (i.due_date, i.installment_id));
    future
}

/// Open principal of the installments not yet due on `today`: what accrued interest runs on.
pub fn outstanding_future_principal(
    order: &[Component],
    installments: &[OpenInstallment],
    today: NaiveDate,
) -> i64 {
    not_yet_due(installments, today)
        .iter()
        .map(|i| i.components_open(order).principal)
        .sum()
}

pub fn settlement_quote(
    order: &[Component],
    installments: &[OpenInstallment],
    today: NaiveDate,
    accrued_minor: i64,
) -> SettlementQuote {
    let mut q = SettlementQuote::default();
    let mut future_interest = 0;
    for inst in installments {
        q.charges_minor += inst.charges_open();
        let open = inst.components_open(order);
        if inst.due_date <= today {
            q.due_minor += open.total();
        } else {
            q.future_principal_minor += open.principal;
            future_interest += open.interest;
            q.waived_fees_minor += open.fees;
        }
    }
    q.accrued_interest_minor = accrued_minor.clamp(0, future_interest);
    q.waived_interest_minor = future_interest - q.accrued_interest_minor;
    q
}

/// Allocation for an early settlement: installments already due in full (in `order`),
/// then the principal of future ones and the accrued interest (on their interest, oldest
/// first, capped as in [`settlement_quote`]); the rest of their interest and fees is
/// returned as waived slices (`Component::Interest` / `Component::Fees` in the second
/// list).
pub fn allocate_settlement(
    order: &[Component],
    installments: &[OpenInstallment],
    today: NaiveDate,
    accrued_minor: i64,
) -> (Vec<Allocation>, Vec<Allocation>) {
    let mut paid = Vec::new();
    let mut waived = Vec::new();
    let mut sorted: Vec<&OpenInstallment> = installments.iter().collect();
    sorted.sort_by_key(|i| (i.due_date, i.installment_id));
    let mut accrued_left = accrued_minor.max(0);
    for inst in sorted {
        let open = inst.components_open(order);
        let total = open.total() + inst.charges_open();
        if inst.due_date <= today {
            let (slices, _) = allocate(order, std::slice::from_ref(inst), total);
            paid.extend(slices);
        } else {
            for (charge_id, owed) in &inst.charges {
                if *owed > 0 {
                    paid.push(Allocation {
                        installment_id: inst.installment_id,
                        charge_id: Some(*charge_id),
                        component: Component::Penalties,
                        amount_minor: *owed,
                    });
                }
            }
            if open.principal > 0 {
                paid.push(Allocation {
                    installment_id: inst.installment_id,
                    charge_id: None,
                    component: Component::Principal,
                    amount_minor: open.principal,
                });
            }
            let interest_paid = accrued_left.min(open.interest);
            accrued_left -= interest_paid;
            if interest_paid > 0 {
                paid.push(Allocation {
                    installment_id: inst.installment_id,
                    charge_id: None,
                    component: Component::Interest,
                    amount_minor: interest_paid,
                });
            }
            for (c, m) in [
                (Component::Interest, open.interest - interest_paid),
                (Component::Fees, open.fees),
            ] {
                if m > 0 {
                    waived.push(Allocation {
                        installment_id: inst.installment_id,
                        charge_id: None,
                        component: c,
                        amount_minor: m,
                    });
                }
            }
        }
    }
    (paid, waived)
}

#[cfg(test)]
// Amounts in minor units are written major_minor (`1_066_19` is 1066.19) on purpose.
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn rules() -> DelinquencyRules {
        let b = |name: &str, from| Bucket {
            name: name.into(),
            from,
            email: true,
            alert: from >= 31,
        };
        DelinquencyRules {
            grace_days: 3,
            local_time: NaiveTime::from_hms_opt(0, 30, 0).unwrap(),
            buckets: vec![b("1-30", 1), b("31-60", 31), b("61-90", 61), b("90+", 91)],
            at_risk_after_days: Some(1),
            credit_report_after_days: Some(90),
            credit_warning_days_before: 10,
        }
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn dpd_starts_at_the_local_assessment_time_after_grace() {
        let r = rules();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let due = d("2027-01-20");
        // Grace covers the 21st to the 23rd; 1 DPD from 00:30 Shanghai on the 24th.
        let before = DateTime::parse_from_rfc3339("2027-01-23T16:29:00Z")
            .unwrap()
            .with_timezone(&Utc); // 00:29 on the 24th in Shanghai
        let at = before + Duration::minutes(1);
        assert_eq!(r.days_past_due(due, r.assessment_date(before, tz)), 0);
        assert_eq!(r.days_past_due(due, r.assessment_date(at, tz)), 1);
        assert_eq!(r.days_past_due(due, d("2027-02-22")), 30);
        // The same instant in New York is still the 23rd: 0 DPD.
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(r.days_past_due(due, r.assessment_date(at, ny)), 0);
    }

    #[test]
    fn buckets_flags_and_warning_day() {
        let r = rules();
        assert_eq!(r.bucket(0), None);
        assert_eq!(r.bucket(1), Some(0));
        assert_eq!(r.bucket(30), Some(0));
        assert_eq!(r.bucket(31), Some(1));
        assert_eq!(r.bucket(90), Some(2));
        assert_eq!(r.bucket(91), Some(3));
        assert_eq!(r.bucket(5000), Some(3));
        assert_eq!(r.flag(0), CreditFlag::None);
        assert_eq!(r.flag(1), CreditFlag::AtRisk);
        assert_eq!(r.flag(89), CreditFlag::AtRisk);
        assert_eq!(r.flag(90), CreditFlag::Reportable);
        assert_eq!(r.credit_warning_dpd(), Some(80));
        assert_eq!(r.reportable_on(d("2027-01-20")), Some(d("2027-04-23")));
        assert_eq!(
            r.days_past_due(d("2027-01-20"), d("2027-04-23")),
            90,
            "reportable_on is the day DPD reaches credit_report_after_days"
        );
        let none = DelinquencyRules {
            at_risk_after_days: None,
            credit_report_after_days: None,
            ..rules()
        };
        assert_eq!(none.flag(400), CreditFlag::None);
        assert_eq!(none.credit_warning_dpd(), None);
    }

    #[test]
    fn late_fees_fixed_percent_daily_with_caps_exact() {
        let fixed = LateFeeRule {
            kind: LateFeeKind::Fixed(dec("25.00")),
            cap: None,
            compound: false,
        };
        assert_eq!(fixed.total_due(1_066_19, 0, 2), 0, "not overdue yet");
        assert_eq!(fixed.total_due(1_066_19, 1, 2), 25_00);
        assert_eq!(fixed.total_due(1_066_19, 40, 2), 25_00, "once, not per day");
        let capped_fixed = LateFeeRule {
            cap: Some(dec("10")),
            ..fixed.clone()
        };
        assert_eq!(capped_fixed.total_due(1_066_19, 1, 2), 10_00);

        let pct = LateFeeRule {
            kind: LateFeeKind::Percent(dec("0.05")),
            cap: Some(dec("50.00")),
            compound: false,
        };
        // 5 % of 1066.19 = 53.3095 -> capped at 50.00
        assert_eq!(pct.total_due(1_066_19, 3, 2), 50_00);
        // 5 % of 333.33 = 16.6665 -> 16.67 (half away from zero)
        assert_eq!(pct.total_due(333_33, 3, 2), 16_67);

        let daily = LateFeeRule {
            kind: LateFeeKind::DailyRate(dec("0.0005")),
            cap: Some(dec("20.00")),
            compound: false,
        };
        // 0.05 % a day of 1066.19 = 0.533095 a day
        assert_eq!(daily.total_due(1_066_19, 1, 2), 53);
        assert_eq!(daily.total_due(1_066_19, 10, 2), 5_33); // 5.33095
        assert_eq!(daily.total_due(1_066_19, 30, 2), 15_99); // 15.99285
        assert_eq!(daily.total_due(1_066_19, 38, 2), 20_00); // 20.25761 -> cap
        assert_eq!(daily.total_due(1_066_19, 365, 2), 20_00);

        let compound = LateFeeRule {
            kind: LateFeeKind::DailyRate(dec("0.01")),
            cap: None,
            compound: true,
        };
        // 1000.00 * (1.01^2 - 1) = 20.10 ; simple would be 20.00
        assert_eq!(compound.total_due(1_000_00, 2, 2), 20_10);
        assert_eq!(
            LateFeeRule {
                compound: false,
                ..compound.clone()
            }
            .total_due(1_000_00, 2, 2),
            20_00
        );
        // JPY: no minor digits. 3 % of 10001 = 300.03 -> 300
        let jpy = LateFeeRule {
            kind: LateFeeKind::Percent(dec("0.03")),
            cap: None,
            compound: false,
        };
        assert_eq!(jpy.total_due(10_001, 1, 0), 300);
    }

    fn inst(id: i64, due: &str, p: i64, i: i64, f: i64, paid: i64) -> OpenInstallment {
        OpenInstallment {
            installment_id: id,
            due_date: d(due),
            principal_minor: p,
            interest_minor: i,
            fee_minor: f,
            paid_minor: paid,
            charges: vec![],
        }
    }

    const ORDER: [Component; 4] = [
        Component::Penalties,
        Component::Fees,
        Component::Interest,
        Component::Principal,
    ];

    #[test]
    fn allocation_oldest_first_in_configured_order_exact() {
        let mut a = inst(1, "2027-01-20", 900_00, 50_00, 10_00, 0);
        a.charges = vec![(7, 25_00)];
        let b = inst(2, "2027-02-20", 900_00, 45_00, 10_00, 0);
        // 25 + 10 + 50 + 900 = 985 clears #1; 15.00 left goes to #2's fee then interest.
        let (slices, left) = allocate(&ORDER, &[b.clone(), a.clone()], 1_000_00);
        assert_eq!(left, 0);
        let got: Vec<_> = slices
            .iter()
            .map(|s| (s.installment_id, s.charge_id, s.component, s.amount_minor))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, Some(7), Component::Penalties, 25_00),
                (1, None, Component::Fees, 10_00),
                (1, None, Component::Interest, 50_00),
                (1, None, Component::Principal, 900_00),
                (2, None, Component::Fees, 10_00),
                (2, None, Component::Interest, 5_00),
            ]
        );
        // Principal first: a partial payment goes to principal before interest.
        let order = [
            Component::Principal,
            Component::Interest,
            Component::Fees,
            Component::Penalties,
        ];
        let (slices, left) = allocate(&order, &[a.clone()], 950_00);
        assert_eq!(left, 0);
        assert_eq!(
            slices
                .iter()
                .map(|s| (s.component, s.amount_minor))
                .collect::<Vec<_>>(),
            vec![(Component::Principal, 900_00), (Component::Interest, 50_00)]
        );
        // More than owed: the rest is reported, not swallowed.
        let (_, left) = allocate(&ORDER, &[a], 2_000_00);
        assert_eq!(left, 2_000_00 - 985_00);
    }

    #[test]
    fn earlier_payments_count_in_the_same_order() {
        let a = inst(1, "2027-01-20", 900_00, 50_00, 10_00, 30_00);
        assert_eq!(
            a.components_open(&ORDER),
            ComponentsOpen {
                fees: 0,
                interest: 30_00,
                principal: 900_00
            }
        );
    }

    #[test]
    fn settlement_waives_future_interest_and_fees_only() {
        let mut due = inst(1, "2027-01-20", 900_00, 50_00, 10_00, 0);
        due.charges = vec![(3, 12_50)];
        let future = inst(2, "2027-02-20", 900_00, 45_00, 10_00, 0);
        let today = d("2027-02-01");
        let q = settlement_quote(&ORDER, &[due.clone(), future.clone()], today, 0);
        assert_eq!(q.charges_minor, 12_50);
        assert_eq!(q.due_minor, 960_00);
        assert_eq!(q.future_principal_minor, 900_00);
        assert_eq!(q.waived_interest_minor, 45_00);
        assert_eq!(q.waived_fees_minor, 10_00);
        assert_eq!(q.total_minor(), 1_872_50);
        let (paid, waived) = allocate_settlement(&ORDER, &[future, due], today, 0);
        assert_eq!(
            paid.iter().map(|s| s.amount_minor).sum::<i64>(),
            q.total_minor()
        );
        assert_eq!(
            waived.iter().map(|s| s.amount_minor).sum::<i64>(),
            q.waived_minor()
        );
        assert!(waived.iter().all(|s| s.installment_id == 2));
    }

    #[test]
    fn settlement_charges_accrued_interest_capped_at_the_schedule() {
        let a = inst(1, "2027-02-20", 900_00, 45_00, 10_00, 0);
        let b = inst(2, "2027-03-20", 900_00, 40_00, 10_00, 0);
        let today = d("2027-02-01");
        assert_eq!(
            outstanding_future_principal(&ORDER, &[a.clone(), b.clone()], today),
            1_800_00
        );
        let q = settlement_quote(&ORDER, &[a.clone(), b.clone()], today, 12_34);
        assert_eq!(q.accrued_interest_minor, 12_34);
        assert_eq!(q.waived_interest_minor, 85_00 - 12_34);
        assert_eq!(q.total_minor(), 1_800_00 + 12_34);
        let (paid, waived) = allocate_settlement(&ORDER, &[b.clone(), a.clone()], today, 12_34);
        let interest: Vec<(i64, i64)> = paid
            .iter()
            .filter(|s| s.component == Component::Interest)
            .map(|s| (s.installment_id, s.amount_minor))
            .collect();
        assert_eq!(interest, vec![(1, 12_34)]);
        assert_eq!(
            paid.iter().map(|s| s.amount_minor).sum::<i64>(),
            q.total_minor()
        );
        assert_eq!(
            waived.iter().map(|s| s.amount_minor).sum::<i64>(),
            q.waived_minor()
        );
        // More than the first installment's interest spills onto the next; more than
        // all of it is capped.
        let (paid, _) = allocate_settlement(&ORDER, &[a.clone(), b.clone()], today, 50_00);
        let interest: Vec<(i64, i64)> = paid
            .iter()
            .filter(|s| s.component == Component::Interest)
            .map(|s| (s.installment_id, s.amount_minor))
            .collect();
        assert_eq!(interest, vec![(1, 45_00), (2, 5_00)]);
        let q = settlement_quote(&ORDER, &[a, b], today, 1_000_00);
        assert_eq!(
            (q.accrued_interest_minor, q.waived_interest_minor),
            (85_00, 0)
        );
    }

    proptest! {
        #[test]
        fn allocation_never_exceeds_what_is_owed_and_conserves_money(
            parts in proptest::collection::vec((0i64..100_000, 0i64..10_000, 0i64..5_000, 0i64..3_000), 1..6),
            amount in 0i64..1_000_000,
        ) {
            let insts: Vec<OpenInstallment> = parts.iter().enumerate().map(|(n, (p, i, f, c))| {
                let total = p + i + f;
                OpenInstallment {
                    installment_id: n as i64 + 1,
                    due_date: d("2027-01-01") + Duration::days(30 * n as i64),
                    principal_minor: *p, interest_minor: *i, fee_minor: *f,
                    paid_minor: total / 3,
                    charges: if *c > 0 { vec![(n as i64 + 100, *c)] } else { vec![] },
                }
            }).collect();
            let owed: i64 = insts.iter().map(|i| i.components_open(&ORDER).total() + i.charges_open()).sum();
            let (slices, left) = allocate(&ORDER, &insts, amount);
            let allocated: i64 = slices.iter().map(|s| s.amount_minor).sum();
            prop_assert_eq!(allocated + left, amount);
            prop_assert_eq!(allocated, amount.min(owed));
            prop_assert!(slices.iter().all(|s| s.amount_minor > 0));
            // Oldest first: no slice of a later installment before an earlier one is cleared.
            for inst in &insts {
                let to_this: i64 = slices.iter().filter(|s| s.installment_id == inst.installment_id).map(|s| s.amount_minor).sum();
                prop_assert!(to_this <= inst.components_open(&ORDER).total() + inst.charges_open());
            }
        }

        #[test]
        fn settlement_is_principal_outstanding_plus_accrued_plus_charges(
            parts in proptest::collection::vec((0i64..100_000, 0i64..10_000, 0i64..5_000, 0i64..3_000, 0i64..4), 1..6),
            today_off in 0i64..200,
            accrued in 0i64..50_000,
        ) {
            let insts: Vec<OpenInstallment> = parts.iter().enumerate().map(|(n, (p, i, f, c, k))| {
                let total = p + i + f;
                OpenInstallment {
                    installment_id: n as i64 + 1,
                    due_date: d("2027-01-01") + Duration::days(30 * n as i64),
                    principal_minor: *p, interest_minor: *i, fee_minor: *f,
                    paid_minor: total * k / 4,
                    charges: if *c > 0 { vec![(n as i64 + 100, *c)] } else { vec![] },
                }
            }).collect();
            let today = d("2026-12-15") + Duration::days(today_off);
            let q = settlement_quote(&ORDER, &insts, today, accrued);
            let charges: i64 = insts.iter().map(|i| i.charges_open()).sum();
            let due: i64 = insts.iter().filter(|i| i.due_date <= today).map(|i| i.components_open(&ORDER).total()).sum();
            let principal = outstanding_future_principal(&ORDER, &insts, today);
            let future_interest: i64 = insts.iter().filter(|i| i.due_date > today).map(|i| i.components_open(&ORDER).interest).sum();
            prop_assert_eq!(q.accrued_interest_minor, accrued.min(future_interest));
            prop_assert_eq!(q.total_minor(), due + principal + q.accrued_interest_minor + charges);
            let (paid, waived) = allocate_settlement(&ORDER, &insts, today, accrued);
            prop_assert_eq!(paid.iter().map(|s| s.amount_minor).sum::<i64>(), q.total_minor());
            prop_assert_eq!(waived.iter().map(|s| s.amount_minor).sum::<i64>(), q.waived_minor());
            prop_assert!(paid.iter().chain(&waived).all(|s| s.amount_minor > 0));
            // Paid and waived together close exactly what is owed.
            let owed: i64 = insts.iter().map(|i| i.components_open(&ORDER).total() + i.charges_open()).sum();
            prop_assert_eq!(q.total_minor() + q.waived_minor(), owed);
        }

        #[test]
        fn dpd_is_monotonic_and_buckets_follow(due_off in 0i64..400, a in 0i64..500, b in 0i64..500) {
            let r = rules();
            let due = d("2027-01-01") + Duration::days(due_off);
            let (x, y) = (d("2027-01-01") + Duration::days(a.min(b)), d("2027-01-01") + Duration::days(a.max(b)));
            let (dx, dy) = (r.days_past_due(due, x), r.days_past_due(due, y));
            prop_assert!(dx <= dy);
            prop_assert!(r.bucket(dx) <= r.bucket(dy));
            prop_assert!(r.flag(dx) <= r.flag(dy));
        }

        #[test]
        fn late_fees_never_exceed_the_cap_and_grow_with_days(base in 1i64..10_000_000, d1 in 0u32..400, d2 in 0u32..400, compound: bool) {
            let rule = LateFeeRule { kind: LateFeeKind::DailyRate(dec("0.001")), cap: Some(dec("30.00")), compound };
            let (lo, hi) = (d1.min(d2), d1.max(d2));
            let (f1, f2) = (rule.total_due(base, lo, 2), rule.total_due(base, hi, 2));
            prop_assert!(f1 <= f2);
            prop_assert!(f2 <= 30_00);
        }
    }
}
