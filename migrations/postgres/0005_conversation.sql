-- The customer conversation and identifiers that never repeat.
--
-- deployment: one row, created with the database. Its random id is part of every
-- idempotency key and Message-ID, so a second database (or one recreated after a reset)
-- never reuses an identifier a bank or a mail client has already seen.
CREATE TABLE deployment (
    singleton     INTEGER PRIMARY KEY CHECK (singleton = 1),
    id            TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO deployment (singleton, id, created_at_ms)
VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 12),
        (extract(epoch from clock_timestamp()) * 1000)::BIGINT);

-- Every customer message passes one gate that knows the customer: it counts what was sent
-- to them today, and supersedes or merges what is due together.
ALTER TABLE reminders ADD COLUMN customer_id BIGINT REFERENCES customers (id);
UPDATE reminders SET customer_id = (SELECT a.customer_id FROM agreements a WHERE a.id = reminders.agreement_id);
CREATE INDEX reminders_customer ON reminders (customer_id, scheduled_at_ms);
CREATE INDEX reminders_agreement ON reminders (agreement_id, kind);
