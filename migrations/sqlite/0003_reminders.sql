-- Customer emails as work rows: one per (installment, kind, offset), planned ahead (pre-due
-- reminders) or created with a debit outcome (receipts, failure notices), leased and
-- fenced like debit attempts. offset_key is the days before the due date for upcoming
-- reminders and the attempt number for debit notices.

CREATE TABLE reminders (
    id              INTEGER PRIMARY KEY,
    installment_id  INTEGER NOT NULL REFERENCES installments (id),
    agreement_id    INTEGER NOT NULL REFERENCES agreements (id),
    kind            TEXT NOT NULL,
    offset_key      INTEGER NOT NULL,
    scheduled_at_ms INTEGER NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'cancelled')),
    lease_owner     TEXT,
    lease_until_ms  INTEGER,
    tries           INTEGER NOT NULL DEFAULT 0,
    message_id      TEXT,
    template        TEXT,
    detail          TEXT NOT NULL DEFAULT '{}',
    last_error      TEXT,
    cancel_reason   TEXT,
    sent_at_ms      INTEGER,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    UNIQUE (installment_id, kind, offset_key)
);
CREATE INDEX reminders_due ON reminders (state, scheduled_at_ms);
