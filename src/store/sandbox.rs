//! The sandbox bank's ledger.
