//! The daemon: planner, debit worker, reconciler, cron triggers and shutdown.
