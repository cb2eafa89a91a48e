//! Standalone `agentd run` is the run's child subreaper: a process of the run whose
//! parent dies (a double fork, a daemon that `setsid`s) is reparented to agentd, not to
//! init, and agentd reaps it once the run is torn down, so when `agentd run` returns no
//! process of the run exists, not even as a zombie.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::{setup_err, SetupError};
use crate::layers::name;

/// `PR_SET_CHILD_SUBREAPER` on this process (fail closed: the run does not start).
pub fn become_subreaper() -> Result<(), SetupError> {
    // SAFETY: prctl with integer arguments only; it changes this process's attribute.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(setup_err(
            name::AGENTD,
            format!(
                "PR_SET_CHILD_SUBREAPER: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

/// Reaps every child left (the run's orphans, dead since teardown killed its cgroup),
/// waiting up to `within` for those still exiting. Returns how many were reaped and
/// whether children are still left.
pub fn reap_orphans(within: Duration) -> (usize, bool) {
    let deadline = Instant::now() + within;
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    return (reaped, true);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(_) => reaped += 1,
            Err(Errno::EINTR) => {}
            // ECHILD: none left.
            Err(_) => return (reaped, false),
        }
    }
}
