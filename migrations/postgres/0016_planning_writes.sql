-- Fewer index writes per planned debit attempt (issue 10: a first planning pass writes
-- over a million attempts). debit_attempts_installment (installment_id) duplicated the
-- leading column of the unique (installment_id, attempt_no) index, which answers every
-- look-up by installment (and debit_attempts_latest leads with the same columns).
DROP INDEX debit_attempts_installment;
