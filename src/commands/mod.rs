//! One function per `repayd` subcommand. `main.rs` parses and calls these.
