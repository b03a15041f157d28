-- The operations console (/console, src/console/): indexes so each page reads only the
-- rows it shows or counts, never the whole portfolio.

-- Today and the 30-day chart: installments due on one day with what was paid, without
-- touching the table rows.
CREATE INDEX installments_due_figures
    ON installments (due_date, status, agreement_id, total_minor, paid_minor);
-- The latest attempt of an installment, with its state, without the table rows.
CREATE INDEX debit_attempts_latest
    ON debit_attempts (installment_id, attempt_no, state, funds_checked_at_ms);
-- Queues: retries planned by day, rejected attempts waiting for a human.
CREATE INDEX debit_attempts_retries
    ON debit_attempts (scheduled_at_ms, currency, amount_minor)
    WHERE state = 'scheduled' AND attempt_no > 1;
CREATE INDEX debit_attempts_rejected ON debit_attempts (updated_at_ms, id)
    WHERE state = 'rejected';
-- Queues: emails deferred (a transient failure, waiting for a retry) and failed ones.
CREATE INDEX reminders_deferred ON reminders (scheduled_at_ms, id)
    WHERE state = 'pending' AND last_error IS NOT NULL;
CREATE INDEX reminders_failed ON reminders (updated_at_ms, id) WHERE state = 'failed';
-- Overdue: accounts that became overdue since yesterday; moves between buckets.
CREATE INDEX delinquency_overdue_since ON delinquency (overdue_since_ms) WHERE dpd > 0;
CREATE INDEX events_delinquency_moves ON events (at_ms)
    WHERE kind IN ('delinquency_bucket_changed', 'delinquency_cleared');
-- Search and the customer page.
CREATE INDEX customers_name ON customers (name);
CREATE INDEX customers_email ON customers (email);
-- (The customer's funding accounts: funding_accounts_customer of 0008.)
-- The agreement page: its attempts and charges.
CREATE INDEX debit_attempts_agreement ON debit_attempts (agreement_id);
CREATE INDEX charges_agreement ON charges (agreement_id);
