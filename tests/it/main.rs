//! One integration-test binary (one link, not one per file): real SQLite files, the real
//! PostgreSQL when `REPAYD_TEST_POSTGRES_URL` is set, a real SMTP listener and a real HTTP
//! gateway on loopback.

// Amounts in minor units are written major_minor (`1_066_19` is 1066.19) on purpose.
#![allow(clippy::inconsistent_digit_grouping)]

mod calendar;
mod collections;
mod console;
mod corpus;
mod customers;
mod daemon;
mod demo;
mod engine;
mod gateway_http;
mod helpers;
mod import;
mod inbox;
mod mail;
mod message_outcomes;
mod migrations;
mod operator;
mod overdue;
mod payday;
mod payments;
mod planner;
mod reminders;
mod reschedule;
mod sandbox;
mod settlement;
mod simulate;
mod startup;
mod store_contract;
mod tls;
mod write_path;
