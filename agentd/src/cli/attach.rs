//! `agentd attach` and `agentd detach`: thin clients of the daemon. A container is
//! resolved here (with the caller's runtime configuration) to its init pid; the daemon
//! does the rest (see `daemon::attach`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::client::{refused, socket_path, Connection};
use crate::attach::container::{self, Runtime};
use crate::daemon::protocol::{AttachRequest, Op, PolicySource, Response};
use crate::supervisor::EXIT_SETUP_FAILED;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["container", "cgroup", "pid"])))]
pub struct AttachArgs {
    /// A running container (name or id).
    #[arg(long)]
    container: Option<String>,
    /// Which runtime to ask about --container: docker, podman, containerd or auto.
    #[arg(long, default_value = "auto")]
    runtime: String,
    /// An existing cgroup2 directory (absolute, or relative to the cgroup2 mount).
    #[arg(long)]
    cgroup: Option<String>,
    /// A running process: its cgroup2 cgroup is attached.
    #[arg(long)]
    pid: Option<u32>,
    /// The policy file.
    #[arg(long)]
    policy: PathBuf,
    /// Directory that `{workspace}` stands for (default: the current directory).
    #[arg(long)]
    workspace: Option<PathBuf>,
    /// Attach even when the cgroup holds processes outside the given pid's tree.
    #[arg(long)]
    force: bool,
    /// Parts of the policy that cannot be applied to running processes and may be left
    /// out: fs (landlock), syscalls (seccomp), caps, or none. Comma-separated or
    /// repeated. Replaces the policy's `attach.best_effort` list.
    #[arg(long, value_delimiter = ',')]
    best_effort: Option<Vec<String>>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("agentd: attach: {message}");
    ExitCode::from(EXIT_SETUP_FAILED)
}

pub fn attach(args: AttachArgs) -> ExitCode {
    let text = match std::fs::read_to_string(&args.policy) {
        Ok(t) => t,
        Err(e) => return fail(format!("{}: {e}", args.policy.display())),
    };
    let workspace = match args.workspace.map_or_else(std::env::current_dir, Ok) {
        Ok(w) => std::path::absolute(&w).unwrap_or(w),
        Err(e) => return fail(format!("workspace: {e}")),
    };
    let mut pid = args.pid;
    if let Some(c) = &args.container {
        let Some(runtimes) = Runtime::parse(&args.runtime) else {
            return fail(format!(
                "--runtime `{}`: expected docker, podman, containerd or auto",
                args.runtime
            ));
        };
        match container::resolve(c, &runtimes) {
            Ok(p) => pid = Some(p),
            Err(e) => return fail(e),
        }
    }
    let request = AttachRequest {
        policy: PolicySource {
            origin: args.policy.display().to_string(),
            text,
        },
        workspace: workspace.display().to_string(),
        cgroup: args.cgroup,
        pid,
        container: args.container,
        force: args.force,
        best_effort: args.best_effort,
    };
    let path = socket_path();
    let mut conn = match Connection::open(&path) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = conn.send(Op::Attach(request), &[]) {
        return fail(e);
    }
    loop {
        match conn.next() {
            Ok(Some(Response::Message { text })) => eprint!("{text}"),
            Ok(Some(Response::Accepted { .. })) => {}
            Ok(Some(Response::Started { run, pid })) => {
                println!("{run}");
                eprintln!("agentd: attached run {run} (pid {pid})");
                return ExitCode::SUCCESS;
            }
            Ok(Some(Response::Error {
                code,
                message,
                layer,
            })) => return refused("agentd: attach", layer.as_deref(), &message, code),
            Ok(Some(Response::Exited { error, .. })) => {
                return fail(error.unwrap_or_else(|| "the run ended at once".into()))
            }
            Ok(Some(other)) => tracing::debug!("ignored response: {other:?}"),
            Ok(None) => return fail("the daemon closed the connection"),
            Err(e) => return fail(e),
        }
    }
}

/// `agentd detach RUN`.
pub fn detach(run: &str) -> ExitCode {
    match Connection::call(&socket_path(), Op::Detach { run: run.into() }) {
        Ok(Response::Done { run, .. }) => {
            println!("detached run {run}; its processes keep running");
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("agentd: detach: unexpected answer: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("agentd: detach: {e}");
            ExitCode::from(e.code())
        }
    }
}
