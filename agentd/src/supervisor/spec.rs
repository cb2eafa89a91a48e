//! What a run is asked to be: the command, whose it is, where and under which policy.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::plan::Plan;
use crate::policy::Policy;

use super::user::UserSpec;
use crate::layers::protect::{ProtectError, ProtectPlan, ProtectedFile};

/// Everything a run needs before it starts. Built by the CLI (standalone) or by the
/// daemon from a client's request.
pub struct RunSpec {
    /// The run id (the `run` field of its audit records).
    pub id: String,
    pub policy: Policy,
    pub plan: Plan,
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// `argv[0]` as found on the caller's `PATH` (before any restriction); `None`: not
    /// found (exit 127).
    pub program: Option<PathBuf>,
    /// The command's environment, `KEY=VALUE` each.
    pub env: Vec<OsString>,
    /// The directory the command starts in; relative paths in its records are resolved
    /// against it once it is gone. `None`: agentd's own.
    pub cwd: Option<PathBuf>,
    /// The command's umask; `None`: agentd's own.
    pub umask: Option<u32>,
    /// Whom the command runs as; `None`: as agentd (root, with no capabilities).
    pub user: Option<UserSpec>,
    /// The directory `{workspace}` stood for.
    pub workspace: PathBuf,
    /// Upstream resolvers for the run's DNS resolver (empty: /etc/resolv.conf).
    pub dns_upstream: Vec<SocketAddr>,
    /// stdin, stdout and stderr for the command; `None`: agentd's own.
    pub stdio: Option<[OwnedFd; 3]>,
    /// Standalone: the command dies with agentd (PR_SET_PDEATHSIG, the run guard). The
    /// daemon's runs outlive it instead: their kernel-side enforcement is pinned.
    pub tied_to_agentd: bool,
    /// Extra fields for `run_start` (the daemon adds the client's identity).
    pub start_fields: serde_json::Map<String, serde_json::Value>,
    /// agentd's own files (policy, config, signing key): read-only to the run where it
    /// could write them (`layers::protect`).
    pub protect: Vec<ProtectedFile>,
}

impl RunSpec {
    /// Which of [`RunSpec::protect`] the run could write, and the mounts that stop it.
    pub fn protect_plan(&self) -> Result<ProtectPlan, ProtectError> {
        let all_writable = self.plan.landlock.is_none();
        ProtectPlan::build(&self.protect, &self.plan.writable_roots, all_writable)
    }
}

/// What a supervisor is told to do while the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Forward a signal to the command.
    Signal(nix::sys::signal::Signal),
    /// Kill every process of the run (the run exits 137).
    Stop,
    /// Freeze every process of the run.
    Pause,
    /// Thaw a run a budget step or `Pause` froze.
    Resume,
    /// End an attached run without touching its workload (`agentd detach`).
    Detach,
}

/// What the caller learns when the command has started.
#[derive(Debug, Clone)]
pub struct StartedRun {
    pub id: String,
    /// The command's pid.
    pub pid: u32,
}

/// Callbacks into whoever drives the run (the daemon keeps its state files with them).
pub trait RunHooks: Send {
    /// Everything is set up and the command is about to be started. An error stops the
    /// run before the command runs (fail closed).
    fn before_start(&mut self, _run: &PreparedRun) -> Result<(), super::BoxError> {
        Ok(())
    }

    /// The command's process exists and waits just before exec: an error stops it
    /// (the daemon records the pid here, before the command starts).
    fn forked(&mut self, _pid: u32) -> Result<(), super::BoxError> {
        Ok(())
    }

    /// The command runs.
    fn started(&mut self, _run: &StartedRun) {}

    /// About once a second while the run goes on: its budgets and denials.
    fn progress(&mut self, _progress: &super::supervise::RunProgress) {}
}

/// A prepared run about to start, as [`RunHooks::before_start`] sees it.
#[derive(Debug, Clone)]
pub struct PreparedRun {
    /// Every cgroup directory of the run (the v2 identity first).
    pub cgroup_paths: Vec<(String, PathBuf)>,
    /// Its eBPF registration.
    pub bpf: crate::layers::bpf::RunBpfState,
}

/// No callbacks (standalone).
pub struct NoHooks;

impl RunHooks for NoHooks {}

/// Finds CMD like execvp would, with `path` (the caller's `PATH`) and relative to `cwd`,
/// before any restriction applies.
pub fn resolve_command(cmd: &OsString, path: Option<&OsString>, cwd: &Path) -> Option<PathBuf> {
    let p = Path::new(cmd);
    if cmd.as_bytes().contains(&b'/') {
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        };
        return abs.exists().then_some(abs);
    }
    let default = OsString::from("/usr/local/bin:/usr/bin:/bin");
    let path = path.unwrap_or(&default);
    std::env::split_paths(path)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                cwd.join(dir)
            }
        })
        .map(|dir| dir.join(p))
        .find(|c| is_executable_file(c))
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when absent.
pub fn parse_upstream(text: &str) -> Option<std::net::SocketAddr> {
    text.parse().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| (ip, 53).into())
    })
}

/// A fresh run id: 12 hex digits.
pub fn new_run_id() -> String {
    let mut buf = [0u8; 6];
    // SAFETY: getrandom writes at most buf.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Fall back to time and pid; uniqueness, not secrecy, is what matters here.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        return format!(
            "{:012x}",
            (t ^ u64::from(std::process::id()) << 32) & 0xffff_ffff_ffff
        );
    }
    hex::encode(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_like_execvp_would() {
        let cwd = Path::new("/");
        let path = OsString::from("/nonexistent:/usr/bin:/bin");
        assert!(resolve_command(&"true".into(), Some(&path), cwd)
            .unwrap()
            .ends_with("true"));
        assert_eq!(
            resolve_command(&"no-such-command-x".into(), Some(&path), cwd),
            None
        );
        assert_eq!(
            resolve_command(&"usr/bin/true".into(), None, cwd),
            Some(PathBuf::from("/usr/bin/true"))
        );
    }
}
