-- Foundation: customers, funding accounts with mandates, agreements, installments and the
-- append-only event log. Money is integer minor units plus an ISO 4217 code; instants are
-- UTC epoch milliseconds; due dates are local calendar dates (YYYY-MM-DD) in the
-- customer's time zone.

CREATE TABLE customers (
    id            INTEGER PRIMARY KEY,
    external_id   TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    locale        TEXT    NOT NULL,
    time_zone     TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE funding_accounts (
    id             INTEGER PRIMARY KEY,
    customer_id    INTEGER NOT NULL REFERENCES customers (id),
    external_ref   TEXT    NOT NULL UNIQUE,
    mandate_ref    TEXT    NOT NULL,
    mandate_status TEXT    NOT NULL CHECK (mandate_status IN ('active', 'pending', 'revoked')),
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL
);

CREATE TABLE agreements (
    id                   INTEGER PRIMARY KEY,
    external_id          TEXT    NOT NULL UNIQUE,
    customer_id          INTEGER NOT NULL REFERENCES customers (id),
    funding_account_id   INTEGER NOT NULL REFERENCES funding_accounts (id),
    currency             TEXT    NOT NULL,
    principal_minor      INTEGER NOT NULL CHECK (principal_minor > 0),
    total_interest_minor INTEGER NOT NULL CHECK (total_interest_minor >= 0),
    total_fee_minor      INTEGER NOT NULL CHECK (total_fee_minor >= 0),
    total_minor          INTEGER NOT NULL,
    method               TEXT,
    terms_json           TEXT,
    status               TEXT    NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'paused', 'cancelled', 'completed')),
    content_hash         TEXT    NOT NULL,
    created_at_ms        INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    CHECK (total_minor = principal_minor + total_interest_minor + total_fee_minor)
);
CREATE INDEX agreements_customer ON agreements (customer_id);
CREATE INDEX agreements_status ON agreements (status);

CREATE TABLE installments (
    id             INTEGER PRIMARY KEY,
    agreement_id   INTEGER NOT NULL REFERENCES agreements (id),
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    due_date       TEXT    NOT NULL,
    principal_minor INTEGER NOT NULL CHECK (principal_minor >= 0),
    interest_minor INTEGER NOT NULL CHECK (interest_minor >= 0),
    fee_minor      INTEGER NOT NULL CHECK (fee_minor >= 0),
    total_minor    INTEGER NOT NULL,
    paid_minor     INTEGER NOT NULL DEFAULT 0,
    status         TEXT    NOT NULL DEFAULT 'unpaid' CHECK (status IN ('unpaid', 'paid', 'cancelled')),
    paid_at_ms     INTEGER,
    UNIQUE (agreement_id, seq),
    CHECK (total_minor = principal_minor + interest_minor + fee_minor),
    CHECK (paid_minor >= 0 AND paid_minor <= total_minor)
);
CREATE INDEX installments_open_by_due ON installments (status, due_date);

-- Append-only: every state change of planned work, with what and why.
CREATE TABLE events (
    id             INTEGER PRIMARY KEY,
    at_ms          INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    agreement_id   INTEGER,
    installment_id INTEGER,
    attempt_id     INTEGER,
    detail         TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX events_agreement ON events (agreement_id, id);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only');
END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events is append-only');
END;
