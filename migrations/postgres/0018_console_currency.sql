-- The console's pages at 1,000,000 agreements (issue 14, docs/benchmarks.md): the
-- currency the Overdue page's buckets are grouped by, kept on the delinquency row, so the
-- buckets are an index-only scan instead of a join with the agreements table (a hash join
-- over all agreements on PostgreSQL, 205 ms cold at 100,000).
--
-- An agreement's currency never changes, so a copy cannot go stale. Rows written before
-- this migration are filled in here; the daemon writes it with every new delinquency row
-- (store::delinquency), and readers fall back to the agreement's for a row without one.
ALTER TABLE delinquency ADD COLUMN currency TEXT;
UPDATE delinquency d SET currency = a.currency FROM agreements a WHERE a.id = d.agreement_id;
DROP INDEX delinquency_overdue;
CREATE INDEX delinquency_overdue ON delinquency (dpd, credit_flag)
    INCLUDE (currency, bucket_index, bucket, amount_overdue_minor, agreement_id);
