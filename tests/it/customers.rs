//! `repayd customers show` against a portfolio the engine really worked on (debits that
//! found no money, a late fee partly waived, reminders sent over SMTP), on both
//! databases: the table and the JSON say what the database holds.

use crate::both_backends;
use crate::helpers::TestDb;
use crate::mail::SmtpListener;
use crate::overdue::{SHANGHAI, agreement, drive, local, policy, setup, utc};
use repayd::clock::{Clock, ManualClock};
use repayd::commands::customers::{self, CustomersArgs, CustomersCommand, ShowArgs};
use repayd::domain::Currency;
use repayd::engine::operator::{self, Actor};
use repayd::store::agreements::{NewAgreement, NewFundingAccount, NewInstallment};
use std::collections::BTreeSet;
use std::process::ExitCode;

async fn customer_show_matches_the_database(db: TestDb) {
    let smtp = SmtpListener::start();
    let clock = ManualClock::new(utc(2027, 1, 1, 17, 0));
    let (engine, bank) = setup(&db, &clock, smtp.mailer("[10]"), policy(None, None)).await;
    let store = &db.store;
    let cny = Currency::parse("CNY").unwrap();
    let (a1, _) = agreement(
        store,
        "CS-1",
        "Li Wei",
        "6222020000005555",
        &["2027-01-20", "2027-02-20"],
    )
    .await;
    let row = store.agreement(a1).await.unwrap().unwrap();
    // A second account and a second agreement of the same customer, debited from it.
    let f2 = store
        .insert_funding_account(
            row.customer_id,
            &NewFundingAccount {
                external_ref: "6222020000006666".into(),
                mandate_ref: "MND-CS-2".into(),
                mandate_status: "active".into(),
            },
            0,
        )
        .await
        .unwrap();
    let a2 = store
        .insert_agreement(
            &NewAgreement {
                external_id: "CS-2".into(),
                customer_id: row.customer_id,
                funding_account_id: f2,
                currency: "CNY".into(),
                principal_minor: 500_00,
                total_interest_minor: 0,
                total_fee_minor: 0,
                method: None,
                terms_json: None,
                content_hash: "h-CS-2".into(),
                installments: vec![NewInstallment {
                    seq: 1,
                    due_date: "2027-03-05".into(),
                    principal_minor: 500_00,
                    interest_minor: 0,
                    fee_minor: 0,
                }],
            },
            0,
        )
        .await
        .unwrap();
    store
        .set_funding_order(
            "C-CS-1",
            &["6222020000006666".into(), "6222020000005555".into()],
            "ops-ann",
            "customer's request",
            0,
        )
        .await
        .unwrap();
    bank.set_balance("6222020000005555", cny, 0).await.unwrap();
    bank.set_balance("6222020000006666", cny, 0).await.unwrap();
    // The first installment finds no money; 1 DPD on the 24th: a late fee of 25.00.
    drive(&engine, &clock, local("2027-01-24", 2, 0, SHANGHAI)).await;
    let charges = store.charges_for_agreement(a1).await.unwrap();
    assert_eq!(charges.len(), 1);
    operator::waive_charge(
        store,
        clock.now(),
        &Actor::new("ops-carol", "goodwill").unwrap(),
        charges[0].id,
        Some("10.00"),
    )
    .await
    .unwrap();

    let view = customers::load(store, "C-CS-1").await.unwrap().unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&customers::render_json(&view)).expect("valid JSON");
    assert_eq!(json["customer"]["external_id"], "C-CS-1");
    assert_eq!(json["customer"]["name"], "Li Wei");
    // Funding sources in the order debits try them, with their mandates.
    let sources = json["funding_sources"].as_array().unwrap();
    let order: Vec<(i64, &str, &str)> = sources
        .iter()
        .map(|s| {
            (
                s["priority"].as_i64().unwrap(),
                s["external_ref"].as_str().unwrap(),
                s["mandate_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            (1, "6222020000006666", "active"),
            (2, "6222020000005555", "active")
        ]
    );
    // Arrears by bucket, as assessed.
    let d = store.delinquency(a1).await.unwrap().unwrap();
    assert_eq!(d.dpd, 1);
    let arrears = json["arrears"].as_array().unwrap();
    assert_eq!(arrears.len(), 1, "{arrears:?}");
    assert_eq!(arrears[0]["bucket"], "1-30");
    assert_eq!(arrears[0]["currency"], "CNY");
    assert_eq!(arrears[0]["agreements"], 1);
    assert_eq!(
        arrears[0]["amount_overdue"],
        repayd::domain::Money::from_minor(d.amount_overdue_minor, cny).plain()
    );
    let agreements = json["agreements"].as_array().unwrap();
    assert_eq!(agreements.len(), 2);
    let j1 = &agreements[0];
    assert_eq!(j1["external_id"], "CS-1");
    assert_eq!(j1["days_past_due"], 1);
    assert_eq!(j1["bucket"], "1-30");
    // Owed: both installments and the 15.00 left of the fee.
    assert_eq!(j1["owed"], "2147.38");
    // The charge, with what was waived.
    let ch = &j1["charges"][0];
    assert_eq!(
        (
            ch["amount"].as_str(),
            ch["waived"].as_str(),
            ch["seq"].as_i64()
        ),
        (Some("25.00"), Some("10.00"), Some(1))
    );
    // Every attempt of each agreement, with its outcome as stored.
    for (j, id) in [(j1, a1), (&agreements[1], a2)] {
        let rows = store.attempts_for_agreement(id).await.unwrap();
        let debits = j["debits"].as_array().unwrap();
        assert_eq!(debits.len(), rows.len());
        for (dj, r) in debits.iter().zip(&rows) {
            assert_eq!(dj["id"], r.id);
            assert_eq!(dj["state"], r.state.as_str());
            assert_eq!(dj["outcome"].as_str(), r.outcome_code.as_deref());
            assert_eq!(dj["reason"].as_str(), r.outcome_detail.as_deref());
            assert_eq!(dj["upcoming"], r.state == "scheduled");
        }
    }
    let past: Vec<&serde_json::Value> = j1["debits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["upcoming"] == false)
        .collect();
    assert!(!past.is_empty());
    assert!(
        past.iter().all(|d| d["state"] != "succeeded"),
        "no money, no debit: {past:?}"
    );
    // Messages: one per message id the database recorded as sent, with its subject.
    let mut sent = BTreeSet::new();
    for id in [a1, a2] {
        for r in store.reminders_for_agreement(id).await.unwrap() {
            if r.state == "sent" {
                sent.insert(r.message_id.unwrap());
            }
        }
    }
    let messages = json["messages"].as_array().unwrap();
    assert!(!messages.is_empty());
    let got: BTreeSet<String> = messages
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, sent);
    assert_eq!(messages.len(), sent.len());
    for m in messages {
        assert!(!m["subject"].as_str().unwrap_or_default().is_empty(), "{m}");
        assert!(m["kind"].as_str().is_some());
    }

    let table = customers::render_table(&view);
    assert!(
        table.contains("C-CS-1") && table.contains("Li Wei"),
        "{table}"
    );
    assert!(table.contains("bucket 1-30: "), "{table}");
    assert!(table.contains("(waived 10.00)"), "{table}");
    let sources_at = table.find("funding sources").unwrap();
    let first = table[sources_at..].find("6222020000006666").unwrap();
    let second = table[sources_at..].find("6222020000005555").unwrap();
    assert!(first < second, "{table}");
    assert!(table.contains("upcoming debits"), "{table}");
    assert!(table.contains("past debits"), "{table}");
    let subject = messages[0]["subject"].as_str().unwrap();
    assert!(table.contains(subject), "{table}");

    // By numeric id too; an unknown customer is a clear failure.
    let by_id = customers::load(store, &row.customer_id.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.customer.external_id, "C-CS-1");
    assert!(customers::load(store, "C-NOPE").await.unwrap().is_none());
    let code = customers::run(
        store,
        &CustomersArgs {
            command: CustomersCommand::Show(ShowArgs {
                customer: "C-NOPE".into(),
                format: repayd::cli::OutputFormat::Table,
            }),
        },
    )
    .await
    .unwrap();
    assert_eq!(code, ExitCode::FAILURE);
}

both_backends!(customer_show, customer_show_matches_the_database);
