-- The auto-debit engine: debit attempts as rows (one per installment and attempt number,
-- each with its idempotency key), leased by workers and fenced on every change; and the
-- sandbox bank's ledger for the embedded default.

CREATE TABLE debit_attempts (
    id                  INTEGER PRIMARY KEY,
    installment_id      INTEGER NOT NULL REFERENCES installments (id),
    agreement_id        INTEGER NOT NULL REFERENCES agreements (id),
    attempt_no          INTEGER NOT NULL CHECK (attempt_no >= 1),
    idempotency_key     TEXT NOT NULL UNIQUE,
    scheduled_at_ms     INTEGER NOT NULL,
    amount_minor        INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency            TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN (
                            'scheduled', 'claimed', 'funds_checked', 'submitted', 'succeeded',
                            'insufficient_funds', 'declined', 'unknown', 'pending',
                            'cancelled', 'failed')),
    lease_owner         TEXT,
    lease_until_ms      INTEGER,
    funds_checked_at_ms INTEGER,
    submitted_at_ms     INTEGER,
    finished_at_ms      INTEGER,
    outcome_code        TEXT,
    outcome_detail      TEXT,
    gateway_ref         TEXT,
    reconcile_count     INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    UNIQUE (installment_id, attempt_no)
);
CREATE INDEX debit_attempts_due ON debit_attempts (state, scheduled_at_ms);
CREATE INDEX debit_attempts_installment ON debit_attempts (installment_id);

-- The sandbox bank: balances and the debits it has booked, keyed by idempotency key.
CREATE TABLE sandbox_accounts (
    account_ref   TEXT NOT NULL PRIMARY KEY,
    currency      TEXT NOT NULL,
    balance_minor INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'frozen', 'closed'))
);

CREATE TABLE sandbox_debits (
    idempotency_key TEXT NOT NULL PRIMARY KEY,
    account_ref     TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('succeeded', 'declined', 'pending')),
    decline_code    TEXT,
    gateway_ref     TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
