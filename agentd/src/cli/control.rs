//! `agentd stop|pause|resume RUN`: ask the daemon; a run the daemon does not know (or
//! no daemon at all) may be a standalone run, whose agentd is signalled instead.

use std::process::ExitCode;

use crate::budgets::{signal_run, RESUME_SIGNAL, STOP_SIGNAL};

pub fn resume(run: &str) -> ExitCode {
    through_daemon(run, "resume").unwrap_or_else(|| send(run, RESUME_SIGNAL, "resume"))
}

pub fn stop(run: &str) -> ExitCode {
    through_daemon(run, "stop").unwrap_or_else(|| send(run, STOP_SIGNAL, "stop"))
}

pub fn pause(run: &str) -> ExitCode {
    match super::client::control(run, "pause") {
        Ok(Some(code)) => code,
        Ok(None) => {
            eprintln!(
                "agentd: pause: no daemon at {} (pause is for the daemon's runs)",
                super::client::socket_path().display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("agentd: pause: {e}");
            ExitCode::from(e.code())
        }
    }
}

/// `None` when the daemon cannot be reached or does not know the run.
fn through_daemon(run: &str, action: &str) -> Option<ExitCode> {
    match super::client::control(run, action) {
        Ok(Some(code)) => Some(code),
        Ok(None) => None,
        // A token holder acts only through the daemon: its refusal is the answer.
        Err(super::client::ClientError::Refused { .. }) if !super::client::has_token() => None,
        Err(e) => {
            eprintln!("agentd: {action}: {e}");
            Some(ExitCode::from(e.code()))
        }
    }
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
