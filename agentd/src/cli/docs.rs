//! `agentd completions SHELL` and the hidden `agentd man --out DIR` (run by `cargo xtask
//! man`): both are generated from the clap definitions that parse the command line, so
//! they cannot drift from it.

use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

pub fn completions(shell: Shell) -> ExitCode {
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "agentd", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Writes `agentd.1` and one page per visible subcommand (`agentd-run.1`, …) into `out`.
pub fn man(out: &Path) -> ExitCode {
    let written = std::fs::create_dir_all(out)
        .and_then(|()| clap_mangen::generate_to(super::Cli::command(), out));
    match written {
        Ok(()) => {
            println!("wrote the man pages to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentd: man: cannot write {}: {e}", out.display());
            ExitCode::from(1)
        }
    }
}
