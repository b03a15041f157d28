-- Operator waivers of charges (repayd fees waive): what was waived of a charge, never
-- collected. Open = amount - paid - waived; a charge with nothing open is 'paid' (some
-- of it was paid) or 'waived' (none of it was).
ALTER TABLE charges ADD COLUMN waived_minor INTEGER NOT NULL DEFAULT 0 CHECK (waived_minor >= 0);
