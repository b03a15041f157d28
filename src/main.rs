//! The `repayd` binary: parse the command line and hand over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = repayd::cli::Cli::parse();
    repayd::commands::main(cli)
}
