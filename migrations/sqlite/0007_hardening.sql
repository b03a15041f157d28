-- A debit attempt the gateway refused before acting on it (400/401/403/415/422) ends in
-- the terminal state `rejected`: nothing is resent until an operator re-queues it.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt (no table refers
-- to debit_attempts and it has no triggers), and every index on it is created again: the
-- one 0002 made and 0006 kept, and the claim indexes of 0006. tests/it/migrations.rs
-- fails if an index declared by any migration (and not dropped) is missing after all ran.
CREATE TABLE debit_attempts_new (
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
                            'cancelled', 'failed', 'rejected')),
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
INSERT INTO debit_attempts_new (id, installment_id, agreement_id, attempt_no, idempotency_key,
    scheduled_at_ms, amount_minor, currency, state, lease_owner, lease_until_ms,
    funds_checked_at_ms, submitted_at_ms, finished_at_ms, outcome_code, outcome_detail,
    gateway_ref, reconcile_count, created_at_ms, updated_at_ms)
SELECT id, installment_id, agreement_id, attempt_no, idempotency_key,
    scheduled_at_ms, amount_minor, currency, state, lease_owner, lease_until_ms,
    funds_checked_at_ms, submitted_at_ms, finished_at_ms, outcome_code, outcome_detail,
    gateway_ref, reconcile_count, created_at_ms, updated_at_ms
FROM debit_attempts;
DROP TABLE debit_attempts;
ALTER TABLE debit_attempts_new RENAME TO debit_attempts;

CREATE INDEX debit_attempts_installment ON debit_attempts (installment_id);
CREATE INDEX debit_attempts_to_run ON debit_attempts (scheduled_at_ms, id)
    WHERE state = 'scheduled';
CREATE INDEX debit_attempts_to_reconcile ON debit_attempts (scheduled_at_ms, id)
    WHERE state IN ('unknown', 'pending');
CREATE INDEX debit_attempts_leased ON debit_attempts (lease_until_ms, id)
    WHERE state IN ('claimed', 'funds_checked', 'submitted');
