-- The console's Today page (src/console/views.rs): each past day's figures, the
-- installments due that day by currency and by the state of their latest debit attempt,
-- kept in a table so a page view reads a few hundred rows instead of 30 days of
-- installments (about a million at 1,000,000 agreements). The console refreshes them in
-- the background (crate::console::refresh_past_days).
--
-- They are never shown stale: every change to an installment or a debit attempt due up
-- to tomorrow (UTC) is noted in console_day_changes by the triggers below, in the same
-- transaction as the change; a day with a noted change is read live until its figures
-- are refreshed, and the refresh removes the notes it has taken in. An update is noted
-- only when it changes what the figures count. Days after tomorrow
-- are not noted (no day is summarized before it is past), which keeps imports and the
-- planning of future installments free of this bookkeeping.
CREATE TABLE console_days (
    due_date        TEXT    PRIMARY KEY,
    refreshed_at_ms INTEGER NOT NULL
);
CREATE TABLE console_day_figures (
    due_date      TEXT    NOT NULL,
    currency      TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    installments  INTEGER NOT NULL,
    due_minor     INTEGER NOT NULL,
    paid_minor    INTEGER NOT NULL,
    funds_checked INTEGER NOT NULL,
    PRIMARY KEY (due_date, currency, state)
);
-- AUTOINCREMENT: ids only grow, so "every note up to the largest id seen" is exactly the
-- notes committed before the refresh read the day.
CREATE TABLE console_day_changes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    due_date TEXT    NOT NULL
);
CREATE INDEX console_day_changes_day ON console_day_changes (due_date, id);

CREATE TRIGGER console_day_installment_inserted AFTER INSERT ON installments
WHEN NEW.due_date <= date('now', '+1 day')
BEGIN
    INSERT INTO console_day_changes (due_date) VALUES (NEW.due_date);
END;
CREATE TRIGGER console_day_installment_updated
AFTER UPDATE OF due_date, status, total_minor, paid_minor, agreement_id ON installments
WHEN (OLD.due_date IS NOT NEW.due_date OR OLD.status IS NOT NEW.status
      OR OLD.total_minor IS NOT NEW.total_minor OR OLD.paid_minor IS NOT NEW.paid_minor
      OR OLD.agreement_id IS NOT NEW.agreement_id)
    AND (OLD.due_date <= date('now', '+1 day') OR NEW.due_date <= date('now', '+1 day'))
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT OLD.due_date WHERE OLD.due_date <= date('now', '+1 day');
    INSERT INTO console_day_changes (due_date)
    SELECT NEW.due_date WHERE NEW.due_date <> OLD.due_date
        AND NEW.due_date <= date('now', '+1 day');
END;
CREATE TRIGGER console_day_installment_deleted AFTER DELETE ON installments
WHEN OLD.due_date <= date('now', '+1 day')
BEGIN
    INSERT INTO console_day_changes (due_date) VALUES (OLD.due_date);
END;
CREATE TRIGGER console_day_attempt_inserted AFTER INSERT ON debit_attempts
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT due_date FROM installments
    WHERE id = NEW.installment_id AND due_date <= date('now', '+1 day');
END;
CREATE TRIGGER console_day_attempt_updated
AFTER UPDATE OF state, funds_checked_at_ms, attempt_no, installment_id ON debit_attempts
WHEN OLD.state IS NOT NEW.state OR OLD.funds_checked_at_ms IS NOT NEW.funds_checked_at_ms
    OR OLD.attempt_no IS NOT NEW.attempt_no OR OLD.installment_id IS NOT NEW.installment_id
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT due_date FROM installments
    WHERE id IN (OLD.installment_id, NEW.installment_id) AND due_date <= date('now', '+1 day');
END;
CREATE TRIGGER console_day_attempt_deleted AFTER DELETE ON debit_attempts
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT due_date FROM installments
    WHERE id = OLD.installment_id AND due_date <= date('now', '+1 day');
END;

-- The Overdue page's buckets (dpd > 0 by currency and bucket, with amounts) and its
-- credit-warning count read only this index, not a table row per overdue agreement
-- (the rowid, agreement_id, is in every index). Same leading columns as before, so what
-- used it still can.
DROP INDEX delinquency_overdue;
CREATE INDEX delinquency_overdue
    ON delinquency (dpd, credit_flag, bucket_index, bucket, amount_overdue_minor);
