//! repayd keeps installment repayments on track.
//!
//! A tour of the crate, from the pure middle to the I/O edges:
//!
//! - [`domain`]: money, schedules, calendars and policies. Pure and synchronous: no I/O,
//!   no clock. Everything there is unit- and property-tested.
//! - [`clock`]: the only place time comes from ([`clock::SystemClock`] in production,
//!   [`clock::ManualClock`] in tests and `repayd simulate`).
//! - [`config`]: typed settings, layered loading (file, then `REPAYD__SECTION__KEY`),
//!   unknown keys rejected, a semantic `check()` that names the bad key.
//! - [`store`]: every SQL statement, for SQLite (embedded default) and PostgreSQL.
//! - [`import`]: CSV and JSON agreement files, validated as a whole before anything is
//!   written.
//! - [`gateway`]: the `PaymentGateway` trait, the sandbox bank and the HTTP connector.
//! - [`mail`]: the `Mailer` trait, SMTP and the file outbox, templates.
//! - [`tls`]: client certificates and CA bundles read from files and checked (key matches
//!   certificate, expiry) for mutual TLS to the bank and a relay's private CA.
//! - [`engine`]: the daemon: planner, debit worker, reconciler, reminders, overdue
//!   assessment, operations alerts, shutdown.
//! - [`http`] and [`metrics`]: `/healthz`, `/readyz`, `/metrics`; latency histograms
//!   around the gateway and the mailer.
//! - [`console`]: the operations console at `/console` on the same server.
//! - [`commands`]: one function per `repayd` subcommand; `main.rs` only parses and calls.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod console;
pub mod domain;
pub mod engine;
#[cfg(test)]
pub(crate) mod fuzzing;
pub mod gateway;
pub mod http;
pub mod import;
pub mod mail;
pub mod mask;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod tls;
