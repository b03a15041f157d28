//! One integration-test binary (one link, not one per file): real SQLite files, the real
//! PostgreSQL when `REPAYD_TEST_POSTGRES_URL` is set, a real SMTP listener and a real HTTP
//! gateway on loopback.

mod engine;
mod gateway_http;
mod helpers;
mod import;
mod mail;
mod reminders;
mod sandbox;
mod store_contract;
