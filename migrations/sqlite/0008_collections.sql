-- Collections (issue 13): funding sources in order, partial debits, returned debits.
--
-- * funding_accounts.priority: a customer's funding sources in the order the customer set
--   (1 first). NULL for an account imported without one: it is used only by the
--   agreements that name it, as before.
-- * debit_attempts.funding_account_id: the account a debit was sent to (an attempt may
--   try several); a re-submission and a return use this one. NULL before the debit.
-- * debit_returns: each return from the gateway's returns feed, applied once (return_id
--   is unique), with what was reversed.
-- * gateway_cursors: where the returns feed was read to, written in the same transaction
--   as the effects of the returns before it.
-- * sandbox_returns: the sandbox bank's own returns feed (seq is the cursor).

ALTER TABLE funding_accounts ADD COLUMN priority INTEGER CHECK (priority IS NULL OR priority >= 1);
CREATE INDEX funding_accounts_customer ON funding_accounts (customer_id, priority);

ALTER TABLE debit_attempts ADD COLUMN funding_account_id INTEGER REFERENCES funding_accounts (id);

CREATE TABLE debit_returns (
    id              INTEGER PRIMARY KEY,
    return_id       TEXT    NOT NULL UNIQUE,
    attempt_id      INTEGER REFERENCES debit_attempts (id),
    installment_id  INTEGER REFERENCES installments (id),
    agreement_id    INTEGER REFERENCES agreements (id),
    idempotency_key TEXT    NOT NULL,
    debit_id        TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    reversed_minor  INTEGER NOT NULL CHECK (reversed_minor >= 0),
    currency        TEXT    NOT NULL,
    reason_code     TEXT    NOT NULL,
    hard            INTEGER NOT NULL CHECK (hard IN (0, 1)),
    applied_at_ms   INTEGER NOT NULL
);
CREATE INDEX debit_returns_agreement ON debit_returns (agreement_id);

CREATE TABLE gateway_cursors (
    name          TEXT    NOT NULL PRIMARY KEY,
    cursor        TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE sandbox_returns (
    seq             INTEGER PRIMARY KEY,
    return_id       TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    gateway_ref     TEXT    NOT NULL,
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT    NOT NULL,
    reason_code     TEXT    NOT NULL,
    hard            INTEGER NOT NULL CHECK (hard IN (0, 1)),
    created_at_ms   INTEGER NOT NULL
);
