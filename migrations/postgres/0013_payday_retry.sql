-- Payday-aware retries ([retry.payday], docs/retry.md).
--
-- * debit_attempts.retry_reason: why a retry was placed when it was, in words an auditor
--   can read ("payday: funds arrived on the 10th in 3 of the last 4 months ..."); NULL for
--   attempts placed by the fixed offsets (and for first attempts).
-- * sandbox_income: the sandbox bank's income schedules, so balances rise on each
--   customer's payday over simulated time (docs/sandbox.md, "Income schedules").
ALTER TABLE debit_attempts ADD COLUMN retry_reason TEXT;

CREATE TABLE sandbox_income (
    account_ref      TEXT NOT NULL PRIMARY KEY,
    payday           TEXT NOT NULL,
    amount_minor     BIGINT NOT NULL CHECK (amount_minor > 0),
    keep_minor       BIGINT NOT NULL CHECK (keep_minor >= 0),
    spent_after_days INTEGER NOT NULL CHECK (spent_after_days >= 0),
    time_zone        TEXT NOT NULL,
    applied_through  TEXT NOT NULL
);
