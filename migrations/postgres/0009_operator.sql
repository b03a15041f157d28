-- Operator waivers of charges (repayd fees waive): what was waived of a charge, never
-- collected. Open = amount - paid - waived; a charge with nothing open is 'paid' (some
-- of it was paid) or 'waived' (none of it was).
ALTER TABLE charges ADD COLUMN waived_minor BIGINT NOT NULL DEFAULT 0 CHECK (waived_minor >= 0);
ALTER TABLE charges ADD CONSTRAINT charges_paid_waived_within_amount
    CHECK (paid_minor + waived_minor <= amount_minor);
