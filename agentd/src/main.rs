//! agentd: confines AI-agent processes with cgroups, capabilities, landlock, seccomp and eBPF.
//!
//! This file only dispatches the command line; each subcommand lives in `cli/`.
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod attach;
mod audit;
mod budgets;
mod cli;
mod daemon;
mod events;
mod heap;
mod launch;
mod layers;
mod learn;
mod metrics;
mod net;
mod plan;
mod policy;
mod probe;
mod run_guard;
mod supervisor;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
