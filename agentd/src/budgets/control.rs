//! `agentd resume RUN` / `agentd stop RUN` before the daemon has a socket: the run's
//! agentd writes its pid to `/run/agentd/RUN.pid`, and the commands signal it
//! (SIGUSR1 = resume, SIGUSR2 = stop). Signals to agentd other than these and
//! INT/TERM/HUP (forwarded to the command) are not used.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

/// Directory of the pid files (`AGENTD_RUN_DIR` overrides it, for tests).
const RUN_DIR: &str = "/run/agentd";
pub const RESUME_SIGNAL: Signal = Signal::SIGUSR1;
pub const STOP_SIGNAL: Signal = Signal::SIGUSR2;

fn run_dir() -> PathBuf {
    std::env::var_os("AGENTD_RUN_DIR").map_or_else(|| PathBuf::from(RUN_DIR), PathBuf::from)
}

fn pid_path(run_id: &str) -> PathBuf {
    run_dir().join(format!("{run_id}.pid"))
}

/// `/run/agentd/RUN.pid` for as long as the run lives.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    pub fn create(run_id: &str) -> Result<Self, String> {
        let path = pid_path(run_id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Signals the agentd process of `run_id`; returns its pid.
pub fn signal_run(run_id: &str, sig: Signal) -> Result<i32, String> {
    if run_id.is_empty() || !run_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("invalid run id `{run_id}`"));
    }
    let path = pid_path(run_id);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "no running run `{run_id}` ({} does not exist)",
            path.display()
        ),
        _ => format!("read {}: {e}", path.display()),
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{} does not hold a pid", path.display()))?;
    // The pid must still be an agentd: a stale file must not make us signal a stranger.
    if !is_agentd(pid) {
        return Err(format!(
            "run `{run_id}` is gone (pid {pid} in {} is not agentd)",
            path.display()
        ));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .map_err(|e| format!("signal agentd (pid {pid}): {e}"))?;
    Ok(pid)
}

/// Whether a live agentd owns the run `run_id` (its pid file names a running agentd).
pub fn run_is_live(run_id: &str) -> bool {
    std::fs::read_to_string(pid_path(run_id))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .is_some_and(is_agentd)
}

fn is_agentd(pid: i32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let me = std::env::current_exe().ok();
    match (exe, me) {
        (Some(exe), Some(me)) => exe == me || file_name(&exe) == file_name(&me),
        _ => false,
    }
}

fn file_name(p: &Path) -> Option<&std::ffi::OsStr> {
    p.file_name()
}
