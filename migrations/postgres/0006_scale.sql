-- Indexes that let each planning page and each claim read only the rows it returns, in
-- index order (no temporary sort, no scan of the backlog):
-- * the planner pages open installments by (due_date, id);
-- * claims take one kind of claimable row at a time, oldest first: in-flight rows whose
--   lease ran out, unknown/pending outcomes to look up, then new work. The partial
--   indexes hold only claimable rows, so they stay small however many rows are done;
--   they replace the (state, scheduled_at_ms) indexes, which an IN list over states
--   could only read with a sort and which every state change had to update.
CREATE INDEX installments_open_due_id ON installments (due_date, id) WHERE status = 'unpaid';

CREATE INDEX debit_attempts_to_run ON debit_attempts (scheduled_at_ms, id)
    WHERE state = 'scheduled';
CREATE INDEX debit_attempts_to_reconcile ON debit_attempts (scheduled_at_ms, id)
    WHERE state IN ('unknown', 'pending');
CREATE INDEX debit_attempts_leased ON debit_attempts (lease_until_ms, id)
    WHERE state IN ('claimed', 'funds_checked', 'submitted');

CREATE INDEX reminders_to_send ON reminders (scheduled_at_ms, id) WHERE state = 'pending';
CREATE INDEX reminders_leased ON reminders (lease_until_ms, id) WHERE state = 'sending';

CREATE INDEX alerts_to_send ON alerts (scheduled_at_ms, id) WHERE state = 'pending';
CREATE INDEX alerts_leased ON alerts (lease_until_ms, id) WHERE state = 'sending';

DROP INDEX debit_attempts_due;
DROP INDEX reminders_due;
DROP INDEX alerts_due;
