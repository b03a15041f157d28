//! What the planner asks about due dates for the holiday-calendar coverage warning.

use super::{Result, Store};

impl Store {
    /// The latest due date (YYYY-MM-DD) of an unpaid installment due on or before
    /// `horizon`: with today, the span of years the planner is working in. One backwards
    /// step on the due-date index.
    pub async fn latest_unpaid_due_date(&self, horizon: &str) -> Result<Option<String>> {
        let row = on_read!(self, |pool| {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT MAX(due_date) FROM installments \
                 WHERE status = 'unpaid' AND due_date <= $1",
            )
            .bind(horizon)
            .fetch_one(pool)
            .await?
        });
        Ok(row)
    }
}
