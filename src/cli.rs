//! The command line: clap definitions shared by main.rs, the man page and completions.
