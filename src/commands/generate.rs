//! `repayd generate man|completions` (hidden): the man pages and shell completions, made
//! from the same clap definitions as the command line, so they can never disagree with
//! it. Used when packaging (see docs/operations.md, "Building the package").

use crate::cli::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: GenerateWhat,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GenerateWhat {
    /// The man pages (roff): repayd(1) to stdout, or with --out-dir repayd.1 and one
    /// repayd-<subcommand>.1 per subcommand in that directory.
    Man {
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// The completion script for SHELL, to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let cmd = Cli::command();
    match &args.what {
        GenerateWhat::Man { out_dir: None } => {
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout().lock())
                .context("writing the man page")?;
        }
        GenerateWhat::Man { out_dir: Some(dir) } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        GenerateWhat::Completions { shell } => {
            let mut cmd = cmd;
            clap_complete::generate(*shell, &mut cmd, "repayd", &mut std::io::stdout().lock());
        }
    }
    Ok(ExitCode::SUCCESS)
}
