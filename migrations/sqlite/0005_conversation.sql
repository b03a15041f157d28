-- The customer conversation and identifiers that never repeat.
--
-- deployment: one row, created with the database. Its random id is part of every
-- idempotency key and Message-ID, so a second database (or one recreated after
-- `rm -rf var`) never reuses an identifier a bank or a mail client has already seen.
CREATE TABLE deployment (
    singleton     INTEGER PRIMARY KEY CHECK (singleton = 1),
    id            TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
INSERT INTO deployment (singleton, id, created_at_ms)
VALUES (1, lower(hex(randomblob(6))), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));

-- Every customer message passes one gate that knows the customer: it counts what was sent
-- to them today, and supersedes or merges what is due together.
ALTER TABLE reminders ADD COLUMN customer_id INTEGER REFERENCES customers (id);
UPDATE reminders SET customer_id = (SELECT a.customer_id FROM agreements a WHERE a.id = reminders.agreement_id);
CREATE INDEX reminders_customer ON reminders (customer_id, scheduled_at_ms);
CREATE INDEX reminders_agreement ON reminders (agreement_id, kind);
