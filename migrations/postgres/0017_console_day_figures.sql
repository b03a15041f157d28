-- The console's Today page (src/console/views.rs): each past day's figures, the
-- installments due that day by currency and by the state of their latest debit attempt,
-- kept in a table so a page view reads a few hundred rows instead of 30 days of
-- installments (about a million at 1,000,000 agreements). The console refreshes them in
-- the background (crate::console::refresh_past_days).
--
-- They are never shown stale: every change to an installment or a debit attempt due up
-- to tomorrow (UTC) is noted in console_day_changes by the triggers below, in the same
-- transaction as the change; a day with a noted change is read live until its figures
-- are refreshed, and the refresh (one REPEATABLE READ transaction) removes only the notes
-- its snapshot has taken in. Days after tomorrow are not noted (no day is summarized
-- before it is past), which keeps imports and the planning of future installments free of
-- this bookkeeping.
CREATE TABLE console_days (
    due_date        TEXT   PRIMARY KEY,
    refreshed_at_ms BIGINT NOT NULL
);
CREATE TABLE console_day_figures (
    due_date      TEXT   NOT NULL,
    currency      TEXT   NOT NULL,
    state         TEXT   NOT NULL,
    installments  BIGINT NOT NULL,
    due_minor     BIGINT NOT NULL,
    paid_minor    BIGINT NOT NULL,
    funds_checked BIGINT NOT NULL,
    PRIMARY KEY (due_date, currency, state)
);
CREATE TABLE console_day_changes (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    due_date TEXT   NOT NULL
);
CREATE INDEX console_day_changes_day ON console_day_changes (due_date, id);

-- The last day whose changes are noted: tomorrow in UTC (a day ahead of any time zone's
-- today).
CREATE FUNCTION console_day_horizon() RETURNS TEXT LANGUAGE sql STABLE AS $$
    SELECT to_char((now() AT TIME ZONE 'UTC') + interval '1 day', 'YYYY-MM-DD')
$$;

-- Inserts (imports, planning) come in many-row statements: one statement-level trigger
-- each, over the statement's new rows at once. Updates and deletes come a row at a time;
-- an update is noted only when it changes what the figures count.
CREATE FUNCTION console_day_installments_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT DISTINCT due_date FROM new_rows WHERE due_date <= console_day_horizon();
    RETURN NULL;
END
$$;
CREATE TRIGGER console_day_installments_inserted AFTER INSERT ON installments
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION console_day_installments_inserted();

CREATE FUNCTION console_day_attempts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT DISTINCT i.due_date FROM new_rows n JOIN installments i ON i.id = n.installment_id
    WHERE i.due_date <= console_day_horizon();
    RETURN NULL;
END
$$;
CREATE TRIGGER console_day_attempts_inserted AFTER INSERT ON debit_attempts
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION console_day_attempts_inserted();

CREATE FUNCTION console_day_installment_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.due_date <= console_day_horizon() THEN
        INSERT INTO console_day_changes (due_date) VALUES (OLD.due_date);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.due_date <> OLD.due_date AND NEW.due_date <= console_day_horizon() THEN
            INSERT INTO console_day_changes (due_date) VALUES (NEW.due_date);
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER console_day_installment_updated
AFTER UPDATE OF due_date, status, total_minor, paid_minor, agreement_id ON installments
FOR EACH ROW
WHEN (OLD.due_date IS DISTINCT FROM NEW.due_date OR OLD.status IS DISTINCT FROM NEW.status
      OR OLD.total_minor IS DISTINCT FROM NEW.total_minor
      OR OLD.paid_minor IS DISTINCT FROM NEW.paid_minor
      OR OLD.agreement_id IS DISTINCT FROM NEW.agreement_id)
EXECUTE FUNCTION console_day_installment_changed();
CREATE TRIGGER console_day_installment_deleted AFTER DELETE ON installments
FOR EACH ROW EXECUTE FUNCTION console_day_installment_changed();

CREATE FUNCTION console_day_attempt_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO console_day_changes (due_date)
    SELECT due_date FROM installments
    WHERE id = OLD.installment_id AND due_date <= console_day_horizon();
    IF TG_OP = 'UPDATE' THEN
        IF NEW.installment_id <> OLD.installment_id THEN
            INSERT INTO console_day_changes (due_date)
            SELECT due_date FROM installments
            WHERE id = NEW.installment_id AND due_date <= console_day_horizon();
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER console_day_attempt_updated
AFTER UPDATE OF state, funds_checked_at_ms, attempt_no, installment_id ON debit_attempts
FOR EACH ROW
WHEN (OLD.state IS DISTINCT FROM NEW.state
      OR OLD.funds_checked_at_ms IS DISTINCT FROM NEW.funds_checked_at_ms
      OR OLD.attempt_no IS DISTINCT FROM NEW.attempt_no
      OR OLD.installment_id IS DISTINCT FROM NEW.installment_id)
EXECUTE FUNCTION console_day_attempt_changed();
CREATE TRIGGER console_day_attempt_deleted AFTER DELETE ON debit_attempts
FOR EACH ROW EXECUTE FUNCTION console_day_attempt_changed();

-- The Overdue page's buckets (dpd > 0 by currency and bucket, with amounts) and its
-- credit-warning count can read only this index (an index-only scan), not a table row per
-- overdue agreement. Same key as before, so what used it still can.
DROP INDEX delinquency_overdue;
CREATE INDEX delinquency_overdue ON delinquency (dpd, credit_flag)
    INCLUDE (bucket_index, bucket, amount_overdue_minor, agreement_id);

-- A day's installments for the Today page with their ids (to look up each one's latest
-- attempt), so PostgreSQL reads them with an index-only scan, as SQLite does (the rowid is
-- in every SQLite index).
DROP INDEX installments_due_figures;
CREATE INDEX installments_due_figures
    ON installments (due_date, status, agreement_id, total_minor, paid_minor) INCLUDE (id);
