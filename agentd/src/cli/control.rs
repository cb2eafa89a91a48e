//! `agentd resume RUN` and `agentd stop RUN`: signal the run's agentd process.

use std::process::ExitCode;

use crate::budgets::{signal_run, RESUME_SIGNAL, STOP_SIGNAL};

pub fn resume(run: &str) -> ExitCode {
    send(run, RESUME_SIGNAL, "resume")
}

pub fn stop(run: &str) -> ExitCode {
    send(run, STOP_SIGNAL, "stop")
}

fn send(run: &str, sig: nix::sys::signal::Signal, what: &str) -> ExitCode {
    match signal_run(run, sig) {
        Ok(pid) => {
            println!("asked agentd (pid {pid}) to {what} run {run}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentd: {what}: {e}");
            ExitCode::FAILURE
        }
    }
}
