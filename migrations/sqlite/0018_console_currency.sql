-- The console's pages at 1,000,000 agreements (issue 14, docs/benchmarks.md): the
-- currency each figure is grouped by, kept where the page reads, so that no page looks
-- up an agreements row per overdue agreement or per installment due today (on SQLite
-- each such look-up is a b-tree descent in the largest table: 50,000 of them were most of
-- the Overdue page's 100-170 ms).
--
-- An agreement's currency never changes, so a copy cannot go stale. Rows written before
-- this migration are filled in here; the daemon writes it with every new delinquency row
-- (store::delinquency), and readers fall back to the agreement's for a row without one.
ALTER TABLE delinquency ADD COLUMN currency TEXT;
UPDATE delinquency
   SET currency = (SELECT a.currency FROM agreements a WHERE a.id = delinquency.agreement_id);
DROP INDEX delinquency_overdue;
CREATE INDEX delinquency_overdue
    ON delinquency (dpd, credit_flag, currency, bucket_index, bucket, amount_overdue_minor);

-- The Today page's live day reads each installment's latest attempt from this index alone,
-- currency included (a debit attempt is in its agreement's currency), and looks up the
-- agreement only for an installment with no attempt yet.
DROP INDEX debit_attempts_latest;
CREATE INDEX debit_attempts_latest
    ON debit_attempts (installment_id, attempt_no, state, funds_checked_at_ms, currency);
