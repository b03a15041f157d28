//! SQL of the operator actions that have no older home: charge waivers and mandate
//! reinstatement. Each writes its change and its event (with the actor) in one
//! transaction, fenced on the state it was read in.

use super::delinquency::ChargeRow;
use super::{NewEvent, Result, Store, StoreError};
use crate::domain::Actor;

/// A charge before and after a waiver.
#[derive(Debug, Clone)]
pub struct ChargeWaived {
    pub before: ChargeRow,
    pub after: ChargeRow,
    pub waived_minor: i64,
}

const CHARGE_COLUMNS: &str = "id, installment_id, agreement_id, kind, accrual_key, \
    amount_minor, paid_minor, waived_minor, currency, status";

impl Store {
    /// One charge by id.
    pub async fn charge(&self, charge_id: i64) -> Result<Option<ChargeRow>> {
        let sql = format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE id = $1");
        let row = on_pool!(self, |pool| {
            sqlx::query_as::<_, ChargeRow>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(charge_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Waives `amount_minor` of an open charge (all that is open when `None`). When
    /// nothing is left open the charge becomes `paid` (part of it was paid) or `waived`.
    /// `Conflict` unless the charge is open and the amount is within what is open.
    pub async fn waive_charge(
        &self,
        charge_id: i64,
        amount_minor: Option<i64>,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<ChargeWaived> {
        let select = format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE id = $1");
        let out = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let before = sqlx::query_as::<_, ChargeRow>(sqlx::AssertSqlSafe(select.clone()))
                .bind(charge_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "charge",
                    id: charge_id.to_string(),
                })?;
            let open = before.open_minor();
            if open <= 0 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "charge {charge_id} is {}: nothing is open to waive",
                    before.status
                )));
            }
            let waive = amount_minor.unwrap_or(open);
            if waive <= 0 || waive > open {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "charge {charge_id} has {open} minor units open; a waiver must be 1 to \
                     {open} (asked {waive}); nothing was changed"
                )));
            }
            let n = sqlx::query(
                "UPDATE charges SET waived_minor = waived_minor + $1, \
                    status = CASE WHEN paid_minor + waived_minor + $1 < amount_minor THEN status \
                                  WHEN paid_minor > 0 THEN 'paid' ELSE 'waived' END, \
                    settled_at_ms = CASE WHEN paid_minor + waived_minor + $1 < amount_minor \
                                  THEN settled_at_ms ELSE $2 END, \
                    updated_at_ms = $2 \
                 WHERE id = $3 AND status = 'open' AND paid_minor = $4 AND waived_minor = $5",
            )
            .bind(waive)
            .bind(now_ms)
            .bind(charge_id)
            .bind(before.paid_minor)
            .bind(before.waived_minor)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "the charge changed meanwhile (a payment or another waiver); try again".into(),
                ));
            }
            let after = sqlx::query_as::<_, ChargeRow>(sqlx::AssertSqlSafe(select.clone()))
                .bind(charge_id)
                .fetch_one(&mut *tx)
                .await?;
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: "charge_waived",
                    agreement_id: Some(before.agreement_id),
                    installment_id: Some(before.installment_id),
                    attempt_id: None,
                    detail: actor.stamp(serde_json::json!({
                        "charge_id": charge_id,
                        "charge_kind": before.kind,
                        "waived_minor": waive,
                        "open_before_minor": open,
                        "open_after_minor": after.open_minor(),
                        "currency": before.currency,
                        "status": after.status,
                    })),
                }
            )?;
            tx.commit().await?;
            ChargeWaived {
                before,
                after,
                waived_minor: waive,
            }
        });
        Ok(out)
    }

    /// Makes a revoked mandate active again: the only way one becomes active (imports
    /// never do it). Pending "pay another way" notices not yet sent are cancelled.
    /// Returns the account's active agreements, for the caller to plan their debits.
    /// `Conflict` unless the mandate is revoked.
    pub async fn reinstate_mandate(
        &self,
        account_ref: &str,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Vec<i64>> {
        let out = on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let (account_id, status) = super::account_mandate!(&mut *tx, account_ref);
            if status != "revoked" {
                tx.rollback().await?;
                return Err(StoreError::Conflict(format!(
                    "the mandate is {status}, not revoked: only a revoked mandate can be \
                     reinstated; nothing was changed"
                )));
            }
            let n = sqlx::query(
                "UPDATE funding_accounts SET mandate_status = 'active', updated_at_ms = $1 \
                 WHERE id = $2 AND mandate_status = 'revoked'",
            )
            .bind(now_ms)
            .bind(account_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict(
                    "the mandate changed meanwhile; try again".into(),
                ));
            }
            let cancelled_notices = sqlx::query(
                "UPDATE reminders SET state = 'cancelled', cancel_reason = 'mandate_reinstated', \
                    updated_at_ms = $1 \
                 WHERE state = 'pending' AND kind = 'mandate_notice' AND agreement_id IN \
                    (SELECT id FROM agreements WHERE funding_account_id = $2)",
            )
            .bind(now_ms)
            .bind(account_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let agreements: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM agreements WHERE funding_account_id = $1 AND status = 'active' \
                 ORDER BY id",
            )
            .bind(account_id)
            .fetch_all(&mut *tx)
            .await?;
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: "mandate_reinstated",
                    agreement_id: None,
                    installment_id: None,
                    attempt_id: None,
                    detail: actor.stamp(serde_json::json!({
                        "account": crate::mask::account(account_ref),
                        "funding_account_id": account_id,
                        "agreements": agreements,
                        "cancelled_notices": cancelled_notices,
                    })),
                }
            )?;
            tx.commit().await?;
            agreements
        });
        Ok(out)
    }
}
