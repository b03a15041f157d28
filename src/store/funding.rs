//! A customer's funding sources in order: which of their accounts a debit tries, first to
//! last. Accounts listed get priorities 1, 2, ...; the customer's other accounts lose
//! theirs (they are then used only by the agreements that name them). Mandates are not
//! touched: a revoked one stays revoked and is skipped when debiting.

use super::debits::FundingSource;
use super::{NewEvent, Result, Store, StoreError, WriteTx};

/// All of a customer's funding accounts, those with a priority first (1, 2, ...), then the
/// others (used only by the agreements that name them) in the order they were added.
const CUSTOMER_SOURCES: &str = "SELECT id AS funding_account_id, external_ref AS account_ref, \
    mandate_ref, mandate_status, priority \
    FROM funding_accounts WHERE customer_id = $1 \
    ORDER BY COALESCE(priority, 1000000000), id";

impl Store {
    /// Sets the order of a customer's funding sources (`refs`, first tried first), with a
    /// `funding_sources_set` event naming the actor and reason, in one transaction. Every
    /// reference must be one of the customer's accounts, each given once.
    pub async fn set_funding_order(
        &self,
        customer_external_id: &str,
        refs: &[String],
        actor: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Vec<FundingSource>> {
        let rows = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let customer: Option<i64> =
                sqlx::query_scalar("SELECT id FROM customers WHERE external_id = $1")
                    .bind(customer_external_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(customer_id) = customer else {
                return Err(StoreError::NotFound {
                    what: "customer",
                    id: customer_external_id.to_string(),
                });
            };
            let accounts: Vec<(i64, String)> = sqlx::query_as(
                "SELECT id, external_ref FROM funding_accounts WHERE customer_id = $1",
            )
            .bind(customer_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut ordered = Vec::with_capacity(refs.len());
            for (i, r) in refs.iter().enumerate() {
                let Some((id, _)) = accounts.iter().find(|(_, ext)| ext == r) else {
                    return Err(StoreError::Conflict(format!(
                        "account {} is not one of customer {customer_external_id}'s funding accounts",
                        crate::mask::account(r)
                    )));
                };
                if refs[..i].contains(r) {
                    return Err(StoreError::Conflict(format!(
                        "account {} is given twice",
                        crate::mask::account(r)
                    )));
                }
                ordered.push(*id);
            }
            sqlx::query(
                "UPDATE funding_accounts SET priority = NULL, updated_at_ms = $1 \
                 WHERE customer_id = $2",
            )
            .bind(now_ms)
            .bind(customer_id)
            .execute(&mut *tx)
            .await?;
            for (i, id) in ordered.iter().enumerate() {
                sqlx::query("UPDATE funding_accounts SET priority = $1 WHERE id = $2")
                    .bind(i as i64 + 1)
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
            }
            insert_event!(
                &mut *tx,
                &NewEvent {
                    at_ms: now_ms,
                    kind: "funding_sources_set",
                    agreement_id: None,
                    installment_id: None,
                    attempt_id: None,
                    detail: serde_json::json!({
                        "customer": customer_external_id,
                        "order": refs.iter().map(|r| crate::mask::account(r)).collect::<Vec<_>>(),
                        "actor": actor,
                        "reason": reason,
                    }),
                }
            )?;
            let rows = sqlx::query_as::<_, FundingSource>(CUSTOMER_SOURCES)
                .bind(customer_id)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            rows
        });
        Ok(rows)
    }

    /// A customer's funding accounts in the order debits try them (see [`CUSTOMER_SOURCES`]):
    /// `repayd customers show`.
    pub async fn customer_funding_sources(&self, customer_id: i64) -> Result<Vec<FundingSource>> {
        let rows = on_read!(self, |pool| {
            sqlx::query_as::<_, FundingSource>(CUSTOMER_SOURCES)
                .bind(customer_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }
}
