//! The `repayd` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

/// jemalloc for the whole process, SQLite's page caches included (its `malloc` and `free`
/// are jemalloc's): with glibc's allocator, a thread's freed memory stayed in its own
/// arena, and the daemon's threads (the runtime's, one per SQLite connection) kept some
/// 45 MiB beside a live heap of 40-60 MiB during a first planning pass. Its options are
/// compiled in (`.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = repayd::cli::Cli::parse();
    repayd::commands::main(cli)
}
