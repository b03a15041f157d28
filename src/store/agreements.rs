//! Agreements, customers, funding accounts and installments.
