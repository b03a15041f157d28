-- repayd bench, console scenario: a portfolio of {N} agreements x 12 monthly installments
-- written straight into a migrated SQLite file, with the state a running daemon leaves:
-- the last 30 days' installments debited or not (80 % succeeded, 8 % short with a retry
-- planned, 4 % declined, 3 % unknown, 2 % pending, 3 % rejected), every 20th agreement
-- overdue with a bucket move in the last two days, failed and deferred emails.
-- {TODAY} is the run's UTC date, {NOW_MS} its instant.
WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < {N})
INSERT INTO customers (id, external_id, name, email, locale, time_zone, created_at_ms, updated_at_ms)
SELECT n, 'BC-' || n, 'Customer ' || n, 'customer.' || n || '@example.com',
       CASE WHEN n % 2 = 0 THEN 'zh-CN' ELSE 'en' END, 'UTC', {NOW_MS}, {NOW_MS} FROM k;
INSERT INTO funding_accounts (id, customer_id, external_ref, mandate_ref, mandate_status, created_at_ms, updated_at_ms)
SELECT id, id, 'BACC' || id, 'BMND' || id, 'active', {NOW_MS}, {NOW_MS} FROM customers;
INSERT INTO agreements (id, external_id, customer_id, funding_account_id, currency, principal_minor,
    total_interest_minor, total_fee_minor, total_minor, method, terms_json, status, content_hash,
    created_at_ms, updated_at_ms)
SELECT id, 'BA-' || id, id, id, CASE WHEN id % 4 = 0 THEN 'USD' ELSE 'CNY' END, 120000, 0, 0, 120000,
       'interest-free', NULL, 'active', 'bench', {NOW_MS}, {NOW_MS} FROM customers;
WITH RECURSIVE s(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < 12)
INSERT INTO installments (id, agreement_id, seq, due_date, principal_minor, interest_minor, fee_minor,
    total_minor, paid_minor, status, paid_at_ms)
SELECT (a.id - 1) * 12 + s.seq, a.id, s.seq,
       date('{TODAY}', '-' || (a.id % 330) || ' days', '+' || ((s.seq - 1) * 30) || ' days'),
       10000, 0, 0, 10000, 0, 'unpaid', NULL
FROM agreements a, s;
-- Older than 30 days: paid.
UPDATE installments SET status = 'paid', paid_minor = total_minor, paid_at_ms = {NOW_MS}
WHERE due_date < date('{TODAY}', '-29 days');
-- The last 30 days: one attempt each, by id.
INSERT INTO debit_attempts (installment_id, agreement_id, attempt_no, idempotency_key, scheduled_at_ms,
    amount_minor, currency, state, funds_checked_at_ms, finished_at_ms, outcome_code, created_at_ms, updated_at_ms)
SELECT i.id, i.agreement_id, 1, 'bench-' || i.id,
       CAST((julianday(i.due_date) - 2440587.5) * 86400000 AS INTEGER) + 21600000,
       i.total_minor, a.currency,
       CASE WHEN i.id % 100 < 80 THEN 'succeeded' WHEN i.id % 100 < 88 THEN 'insufficient_funds'
            WHEN i.id % 100 < 92 THEN 'declined' WHEN i.id % 100 < 95 THEN 'unknown'
            WHEN i.id % 100 < 97 THEN 'pending' ELSE 'rejected' END,
       CASE WHEN i.id % 100 < 97 THEN CAST((julianday(i.due_date) - 2440587.5) * 86400000 AS INTEGER) + 21601000 END,
       {NOW_MS}, CASE WHEN i.id % 100 BETWEEN 88 AND 91 THEN 'do_not_honor' END, {NOW_MS}, {NOW_MS}
FROM installments i JOIN agreements a ON a.id = i.agreement_id
WHERE i.due_date >= date('{TODAY}', '-29 days') AND i.due_date <= '{TODAY}';
UPDATE installments SET status = 'paid', paid_minor = total_minor, paid_at_ms = {NOW_MS}
WHERE due_date >= date('{TODAY}', '-29 days') AND due_date <= '{TODAY}' AND id % 100 < 80;
-- Short ones: a retry three days later.
INSERT INTO debit_attempts (installment_id, agreement_id, attempt_no, idempotency_key, scheduled_at_ms,
    amount_minor, currency, state, created_at_ms, updated_at_ms)
SELECT installment_id, agreement_id, 2, idempotency_key || '-2', scheduled_at_ms + 3 * 86400000,
       amount_minor, currency, 'scheduled', {NOW_MS}, {NOW_MS}
FROM debit_attempts WHERE state = 'insufficient_funds';
-- Every 20th agreement overdue.
INSERT INTO delinquency (agreement_id, dpd, bucket_index, bucket, credit_flag, oldest_due_date,
    amount_overdue_minor, overdue_since_ms, reportable_since_ms, assessed_at_ms, updated_at_ms,
    currency)
SELECT id, (id / 20) % 100 + 1,
       CASE WHEN (id / 20) % 100 < 30 THEN 0 WHEN (id / 20) % 100 < 60 THEN 1 WHEN (id / 20) % 100 < 90 THEN 2 ELSE 3 END,
       CASE WHEN (id / 20) % 100 < 30 THEN '1-30' WHEN (id / 20) % 100 < 60 THEN '31-60' WHEN (id / 20) % 100 < 90 THEN '61-90' ELSE '90+' END,
       CASE WHEN (id / 20) % 100 >= 90 THEN 'reportable' WHEN (id / 20) % 100 >= 60 THEN 'at_risk' ELSE 'none' END,
       '{TODAY}', 10000, {NOW_MS} - ((id / 20) % 100 + 1) * 86400000, NULL, {NOW_MS}, {NOW_MS},
       currency
FROM agreements WHERE id % 20 = 0;
INSERT INTO events (at_ms, kind, agreement_id, detail)
SELECT {NOW_MS} - (agreement_id % 48) * 3600000, 'delinquency_bucket_changed', agreement_id,
       '{"from": null, "to": "' || bucket || '", "dpd": ' || dpd || '}'
FROM delinquency;
-- Emails: failed, and deferred after a transient failure.
INSERT INTO reminders (installment_id, agreement_id, customer_id, kind, offset_key, scheduled_at_ms, state,
    tries, last_error, created_at_ms, updated_at_ms)
SELECT i.id, i.agreement_id, i.agreement_id, 'upcoming', 3, {NOW_MS},
       CASE WHEN i.id % 2 = 0 THEN 'failed' ELSE 'pending' END, 3,
       '550 mailbox unavailable', {NOW_MS}, {NOW_MS}
FROM installments i WHERE i.id % 500 = 7 AND i.due_date > '{TODAY}';
-- No day's figures are kept yet (console_days is empty), so the notes the triggers of
-- migration 0017 took of the load carry nothing: a daemon's refresh would drop them with
-- its first keeping of each day.
DELETE FROM console_day_changes;
