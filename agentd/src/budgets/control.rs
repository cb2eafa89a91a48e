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
        if let Some(dir) = path.parent() {
            let removed = sweep_stale(dir);
            if removed > 0 {
                tracing::debug!("removed {removed} stale pid file(s) in {}", dir.display());
            }
        }
        Ok(Self { path })
    }
}

/// Removes the pid files in `dir` whose pid is no live agentd: left by runs whose agentd
/// was killed (SIGKILL skips the drop that removes them). `signal_run` already refuses
/// them; this keeps them from piling up. A file that does not hold a pid is left alone.
/// Returns how many were removed.
fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "pid") || !e.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if !is_agentd(pid) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A pid file of a process that is gone goes; this agentd's own, a file that holds
    /// no pid, and other files stay.
    #[test]
    fn stale_pid_files_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let file = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        file("dead.pid", format!("{dead}\n"));
        file("live.pid", format!("{}\n", std::process::id()));
        file("garbage.pid", "not a pid\n".into());
        file("notes.txt", format!("{dead}\n"));
        assert_eq!(sweep_stale(dir.path()), 1);
        assert!(!dir.path().join("dead.pid").exists());
        for kept in ["live.pid", "garbage.pid", "notes.txt"] {
            assert!(dir.path().join(kept).exists(), "{kept}");
        }
    }
}
