-- Overdue handling: each agreement's current delinquency state (days past due, bucket,
-- credit flag), late-fee charge lines, payments received by other means with their
-- allocation, and operations alerts as work rows (webhook / email, retried with backoff).
-- Money is integer minor units; instants are UTC epoch milliseconds; dates YYYY-MM-DD.

-- One row per agreement that has ever been assessed overdue. Derived from dates and
-- payments, so it can always be recomputed; every change is also in the event log.
CREATE TABLE delinquency (
    agreement_id         INTEGER NOT NULL PRIMARY KEY REFERENCES agreements (id),
    dpd                  INTEGER NOT NULL CHECK (dpd >= 0),
    bucket_index         INTEGER,
    bucket               TEXT,
    credit_flag          TEXT    NOT NULL DEFAULT 'none'
                         CHECK (credit_flag IN ('none', 'at_risk', 'reportable')),
    oldest_due_date      TEXT,
    amount_overdue_minor INTEGER NOT NULL DEFAULT 0 CHECK (amount_overdue_minor >= 0),
    overdue_since_ms     INTEGER,
    reportable_since_ms  INTEGER,
    assessed_at_ms       INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL
);
CREATE INDEX delinquency_overdue ON delinquency (dpd, credit_flag);

-- Charges beside the schedule (late fees): collected by the installment's next debit or
-- by a payment; never part of installments.total_minor.
CREATE TABLE charges (
    id             INTEGER PRIMARY KEY,
    installment_id INTEGER NOT NULL REFERENCES installments (id),
    agreement_id   INTEGER NOT NULL REFERENCES agreements (id),
    kind           TEXT    NOT NULL CHECK (kind IN ('late_fee')),
    -- The days past due at which this line accrued: one line per assessment that raised
    -- the installment's fee, so re-running an assessment never adds a second one.
    accrual_key    INTEGER NOT NULL,
    amount_minor   INTEGER NOT NULL CHECK (amount_minor > 0),
    paid_minor     INTEGER NOT NULL DEFAULT 0,
    currency       TEXT    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'waived')),
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    settled_at_ms  INTEGER,
    UNIQUE (installment_id, kind, accrual_key),
    CHECK (paid_minor >= 0 AND paid_minor <= amount_minor)
);
CREATE INDEX charges_installment ON charges (installment_id, status);

-- Money received by other means (bank transfer, cash). A reference is accepted once.
CREATE TABLE payments (
    id             INTEGER PRIMARY KEY,
    agreement_id   INTEGER NOT NULL REFERENCES agreements (id),
    reference      TEXT    NOT NULL UNIQUE,
    amount_minor   INTEGER NOT NULL CHECK (amount_minor > 0),
    currency       TEXT    NOT NULL,
    received_at_ms INTEGER NOT NULL,
    settlement     INTEGER NOT NULL DEFAULT 0 CHECK (settlement IN (0, 1)),
    waived_minor   INTEGER NOT NULL DEFAULT 0 CHECK (waived_minor >= 0),
    created_at_ms  INTEGER NOT NULL
);
CREATE INDEX payments_agreement ON payments (agreement_id);

-- Where each payment went: one row per installment component or charge line.
CREATE TABLE payment_allocations (
    id             INTEGER PRIMARY KEY,
    payment_id     INTEGER NOT NULL REFERENCES payments (id),
    installment_id INTEGER NOT NULL REFERENCES installments (id),
    charge_id      INTEGER REFERENCES charges (id),
    component      TEXT    NOT NULL CHECK (component IN (
                       'penalties', 'fees', 'interest', 'principal',
                       'waived_fees', 'waived_interest')),
    amount_minor   INTEGER NOT NULL CHECK (amount_minor > 0)
);
CREATE INDEX payment_allocations_payment ON payment_allocations (payment_id);

-- Operations alerts as work rows: one per (cause, channel), delivered with backoff.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN ('webhook', 'email')),
    dedupe_key      TEXT    NOT NULL UNIQUE,
    agreement_id    INTEGER,
    source_event_id INTEGER,
    payload         TEXT    NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    tries           INTEGER NOT NULL DEFAULT 0,
    scheduled_at_ms INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until_ms  INTEGER,
    last_error      TEXT,
    sent_at_ms      INTEGER,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
CREATE INDEX alerts_due ON alerts (state, scheduled_at_ms);
CREATE INDEX alerts_source_event ON alerts (source_event_id);

-- The alert scanner looks events up by kind.
CREATE INDEX events_kind ON events (kind, id);
