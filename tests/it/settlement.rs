//! Early settlement by policy (`[payments.settlement]`) against real databases: quotes
//! exact to the minor unit before the first due date, on a due date, between due dates,
//! across 29 February, for an interest-free agreement, under each day count and under
//! `principal_only`; then a settlement recorded with the accrued interest, its allocation
//! and what the database holds afterwards.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::overdue::{SHANGHAI, local, policy};
use chrono::NaiveDate;
use repayd::domain::schedule::{RemainderPlacement, RoundingMode, generate};
use repayd::domain::settlement::{DayCount, SettlementInterest, SettlementPolicy};
use repayd::domain::{BusinessDayRule, Currency, Frequency, HolidayCalendar, Method, Terms};
use repayd::engine::operator::{
    Actor, OperatorError, RecordRequest, record_payment, settlement_quote,
};
use repayd::engine::policy::EnginePolicy;
use repayd::store::Store;
use repayd::store::agreements::{NewAgreement, NewCustomer, NewFundingAccount, NewInstallment};
use rust_decimal::Decimal;
use std::str::FromStr;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A generated agreement of 12 (or `n`) monthly installments, stored with its terms as
/// an import stores them.
async fn generated(
    store: &Store,
    id: &str,
    method: Method,
    principal: &str,
    rate: &str,
    first_due: &str,
    n: u32,
) -> i64 {
    let terms = Terms {
        currency: Currency::parse("CNY").unwrap(),
        principal: Decimal::from_str(principal).unwrap(),
        installments: n,
        method,
        annual_rate: Decimal::from_str(rate).unwrap(),
        fee_rate: Decimal::ZERO,
        first_due: date(first_due),
        frequency: Frequency::Monthly,
        rounding: RoundingMode::HalfUp,
        remainder: RemainderPlacement::Last,
        business_day: BusinessDayRule::None,
    };
    let s = generate(&terms, &HolidayCalendar::default()).unwrap();
    let minor = |d: Decimal| (d * Decimal::ONE_HUNDRED).try_into().unwrap();
    let c = store
        .insert_customer(
            &NewCustomer {
                external_id: format!("C-{id}"),
                name: "Li Wei".into(),
                email: format!("{}@example.com", id.to_lowercase()),
                locale: "en".into(),
                time_zone: "Asia/Shanghai".into(),
            },
            0,
        )
        .await
        .unwrap();
    let f = store
        .insert_funding_account(
            c,
            &NewFundingAccount {
                external_ref: format!("ACC-{id}"),
                mandate_ref: format!("MND-{id}"),
                mandate_status: "active".into(),
            },
            0,
        )
        .await
        .unwrap();
    let terms_json = serde_json::json!({
        "method": method.as_str(), "installments": n, "annual_rate": rate, "fee_rate": "0",
        "first_due": first_due, "frequency": "monthly", "rounding": "half-up",
        "remainder": "last", "business_day": "none",
    });
    store
        .insert_agreement(
            &NewAgreement {
                external_id: id.into(),
                customer_id: c,
                funding_account_id: f,
                currency: "CNY".into(),
                principal_minor: minor(s.principal),
                total_interest_minor: minor(s.total_interest),
                total_fee_minor: 0,
                method: Some(method.as_str().into()),
                terms_json: Some(terms_json.to_string()),
                content_hash: format!("h-{id}"),
                installments: s
                    .installments
                    .iter()
                    .map(|i| NewInstallment {
                        seq: i64::from(i.seq),
                        due_date: i.due_date.format("%Y-%m-%d").to_string(),
                        principal_minor: minor(i.principal),
                        interest_minor: minor(i.interest),
                        fee_minor: 0,
                    })
                    .collect(),
            },
            0,
        )
        .await
        .unwrap()
}

fn with(interest: SettlementInterest, day_count: DayCount) -> EnginePolicy {
    let mut p = policy(None, None);
    p.overdue.settlement = SettlementPolicy {
        interest,
        day_count,
    };
    p
}

/// (total, accrued, days, from) of a quote.
async fn quote(
    store: &Store,
    p: &EnginePolicy,
    id: &str,
    on: &str,
) -> (String, String, i64, String) {
    let q = settlement_quote(store, p, local(on, 12, 0, SHANGHAI), id, Some(date(on)))
        .await
        .unwrap();
    assert_eq!(q.accrual.policy, p.overdue.settlement.interest.as_str());
    assert_eq!(q.accrual.day_count, p.overdue.settlement.day_count.as_str());
    (
        q.total,
        q.accrual.accrued_interest,
        q.accrual.days,
        q.accrual.from,
    )
}

async fn settlement_quotes_and_records_accrued_interest(db: TestDb) {
    let store = &db.store;
    // 12,000.00 at 12%, 12 monthly installments of 1,066.19 from 31 Jan 2027.
    let a = generated(
        store,
        "S-ANN",
        Method::Annuity,
        "12000",
        "0.12",
        "2027-01-31",
        12,
    )
    .await;
    generated(
        store,
        "S-LEAP",
        Method::Annuity,
        "12000",
        "0.12",
        "2028-03-15",
        12,
    )
    .await;
    generated(
        store,
        "S-FREE",
        Method::InterestFree,
        "1200",
        "0",
        "2027-01-31",
        3,
    )
    .await;
    let act365 = with(SettlementInterest::Accrued, DayCount::Act365);
    let act360 = with(SettlementInterest::Accrued, DayCount::Act360);
    let t360 = with(SettlementInterest::Accrued, DayCount::Thirty360);
    let principal_only = with(SettlementInterest::PrincipalOnly, DayCount::Act365);

    // Before the first due date: from the start of the first period (31 Dec), 10 days on
    // 12,000.00: 1,200,000 x 0.12 x 10 / 365 = 3,945.2 -> 39.45.
    assert_eq!(
        quote(store, &act365, "S-ANN", "2027-01-10").await,
        ("12039.45".into(), "39.45".into(), 10, "2026-12-31".into())
    );
    // On a due date: that installment in full, nothing accrued yet.
    assert_eq!(
        quote(store, &act365, "S-ANN", "2027-01-31").await,
        ("12120.00".into(), "0.00".into(), 0, "2027-01-31".into())
    );
    // 15 days after it, on 11,053.81: act/365 54.51, act/360 55.27; 30/360 counts the
    // 31st as the 30th: 15 days too.
    assert_eq!(
        quote(store, &act365, "S-ANN", "2027-02-15").await,
        ("12174.51".into(), "54.51".into(), 15, "2027-01-31".into())
    );
    assert_eq!(
        quote(store, &act360, "S-ANN", "2027-02-15").await,
        ("12175.27".into(), "55.27".into(), 15, "2027-01-31".into())
    );
    assert_eq!(
        quote(store, &t360, "S-ANN", "2027-02-15").await,
        ("12175.27".into(), "55.27".into(), 15, "2027-01-31".into())
    );
    // Month end to month end: 28 Feb is a due date; 31 Mar is too.
    assert_eq!(
        quote(store, &t360, "S-ANN", "2027-03-31").await.1,
        "0.00".to_string()
    );
    // principal_only: the remaining principal settles.
    assert_eq!(
        quote(store, &principal_only, "S-ANN", "2027-02-15").await,
        ("12120.00".into(), "0.00".into(), 15, "2027-01-31".into())
    );
    // Across 29 February 2028: 15 Feb -> 1 Mar is 15 actual days (14 in a common year):
    // 1,200,000 x 0.12 x 15 / 365 = 5,917.8 -> 59.18; 30/360 counts 16 days: 64.00.
    assert_eq!(
        quote(store, &act365, "S-LEAP", "2028-03-01").await,
        ("12059.18".into(), "59.18".into(), 15, "2028-02-15".into())
    );
    assert_eq!(
        quote(store, &t360, "S-LEAP", "2028-03-01").await,
        ("12064.00".into(), "64.00".into(), 16, "2028-02-15".into())
    );
    // No interest, nothing accrues.
    assert_eq!(
        quote(store, &act365, "S-FREE", "2027-01-10").await,
        ("1200.00".into(), "0.00".into(), 10, "2026-12-31".into())
    );

    // Recorded on 15 Feb: the principal-only figure is refused, the quoted one taken.
    let now = local("2027-02-15", 12, 0, SHANGHAI);
    let actor = Actor::new("ops-alice", "customer settles early").unwrap();
    let req = |amount: &str| RecordRequest {
        agreement: "S-ANN".into(),
        amount: amount.into(),
        reference: "SETTLE-ANN".into(),
        received_at: None,
        settle: true,
    };
    match record_payment(store, &act365, now, &actor, &req("12120.00")).await {
        Err(OperatorError::Refused(m)) => {
            assert!(m.contains("12174.51"), "{m}");
            assert!(m.contains("accrued interest 54.51"), "{m}");
            assert!(
                m.contains("accrued, act/365, 15 days from 2027-01-31"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    let s = record_payment(store, &act365, now, &actor, &req("12174.51"))
        .await
        .unwrap();
    assert!(s.settlement && s.agreement_completed);
    let accrual = s.accrual.as_ref().unwrap();
    assert_eq!(
        (
            accrual.policy,
            accrual.day_count,
            accrual.accrued_interest.as_str()
        ),
        ("accrued", "act/365", "54.51")
    );
    // The accrued interest pays the next installment's interest; the rest is waived:
    // 794.23 of interest - 120.00 (installment 1, due) - 54.51 = 619.72.
    assert!(
        s.allocations
            .iter()
            .any(|x| (x.seq, x.component, x.amount.as_str()) == (2, "interest", "54.51")),
        "{:?}",
        s.allocations
    );
    assert_eq!(s.waived_total, "619.72");
    let rows = store.installments(a).await.unwrap();
    assert!(rows.iter().all(|i| i.status == "paid"));
    assert_eq!(rows.iter().map(|i| i.paid_minor).sum::<i64>(), 12_174_51);
    assert_eq!(rows[1].paid_minor, rows[1].principal_minor + 54_51);
    let p = store
        .payment_by_reference("SETTLE-ANN")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((p.amount_minor, p.waived_minor), (12_174_51, 619_72));
}

both_backends!(
    settlement_by_policy,
    settlement_quotes_and_records_accrued_interest
);
