//! Debit attempts: planning, claiming with leases, fenced state changes.
