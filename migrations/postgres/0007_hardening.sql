-- A debit attempt the gateway refused before acting on it (400/401/403/415/422) ends in
-- the terminal state `rejected`: nothing is resent until an operator re-queues it.
ALTER TABLE debit_attempts DROP CONSTRAINT debit_attempts_state_check;
ALTER TABLE debit_attempts ADD CONSTRAINT debit_attempts_state_check CHECK (state IN (
    'scheduled', 'claimed', 'funds_checked', 'submitted', 'succeeded',
    'insufficient_funds', 'declined', 'unknown', 'pending',
    'cancelled', 'failed', 'rejected'));
